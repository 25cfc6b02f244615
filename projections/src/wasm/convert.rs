//! WIT values ⇄ Kimberlite values, at the engine boundary (so the SQL side only ever
//! sees `kimberlite_kernel::Value`).

use super::bindings::projection::kimberlite::projection::types as wit;
use kimberlite_kernel::{ColumnType, Value};

pub(crate) fn value_from_wit(value: wit::Value) -> Value {
    match value {
        wit::Value::Null => Value::Null,
        wit::Value::Boolean(value) => Value::Boolean(value),
        wit::Value::Integer(value) => Value::Integer(value),
        wit::Value::Real(value) => Value::Real(value),
        wit::Value::Text(value) => Value::Text(value),
        wit::Value::Bytes(value) => Value::Bytes(value),
        wit::Value::Timestamp(value) => Value::Timestamp(value),
    }
}

pub(crate) fn value_to_wit(value: Value) -> wit::Value {
    match value {
        Value::Null => wit::Value::Null,
        Value::Boolean(value) => wit::Value::Boolean(value),
        Value::Integer(value) => wit::Value::Integer(value),
        Value::Real(value) => wit::Value::Real(value),
        Value::Text(value) => wit::Value::Text(value),
        Value::Bytes(value) => wit::Value::Bytes(value),
        Value::Timestamp(value) => wit::Value::Timestamp(value),
    }
}

pub(crate) fn column_type_from_wit(ty: wit::ColumnType) -> ColumnType {
    match ty {
        wit::ColumnType::Bigint => ColumnType::BigInt,
        wit::ColumnType::Double => ColumnType::Double,
        wit::ColumnType::Text => ColumnType::Text,
        wit::ColumnType::Boolean => ColumnType::Boolean,
        wit::ColumnType::Timestamp => ColumnType::Timestamp,
        wit::ColumnType::Bytes => ColumnType::Bytes,
    }
}

/// The type of a WIT value, `None` for null (mirrors `Value::column_type`).
pub(crate) fn wit_value_type(value: &wit::Value) -> Option<ColumnType> {
    match value {
        wit::Value::Null => None,
        wit::Value::Boolean(_) => Some(ColumnType::Boolean),
        wit::Value::Integer(_) => Some(ColumnType::BigInt),
        wit::Value::Real(_) => Some(ColumnType::Double),
        wit::Value::Text(_) => Some(ColumnType::Text),
        wit::Value::Bytes(_) => Some(ColumnType::Bytes),
        wit::Value::Timestamp(_) => Some(ColumnType::Timestamp),
    }
}

/// How a value's type reads in an error message.
pub(crate) fn type_name(ty: Option<ColumnType>) -> &'static str {
    ty.map_or("NULL", ColumnType::sql_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_through_wit() {
        let values = [
            Value::Null,
            Value::Boolean(true),
            Value::Integer(-7),
            Value::Real(2.5),
            Value::Text("Ada".into()),
            Value::Bytes(vec![0, 255]),
            Value::Timestamp(-1),
        ];
        for value in values {
            let wit = value_to_wit(value.clone());
            assert_eq!(wit_value_type(&wit), value.column_type());
            assert_eq!(value_from_wit(wit), value);
        }
    }
}
