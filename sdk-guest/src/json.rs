//! JSON payloads → typed values.
//!
//! SQL row events (`RowInserted`, `RowUpdated`, `RowDeleted`) carry a JSON object
//! column → value: BIGINT and DOUBLE as numbers, TEXT as strings, BOOLEAN as bools,
//! TIMESTAMP as integer nanoseconds, BYTES as a hex string, NULL as null.

use crate::{ColumnType, Value};

/// Decodes one JSON cell of a SQL row event as a value of column type `ty`.
pub fn json_to_value(json: &serde_json::Value, ty: ColumnType) -> Result<Value, String> {
    use serde_json::Value as Json;
    let value = match (json, ty) {
        (Json::Null, _) => Value::Null,
        (Json::Bool(value), ColumnType::Boolean) => Value::Boolean(*value),
        (Json::Number(number), ColumnType::Bigint) => {
            Value::Integer(number.as_i64().ok_or_else(|| {
                format!("{number} is not a BIGINT (a whole number within 64 bits)")
            })?)
        }
        (Json::Number(number), ColumnType::Double) => Value::Real(
            number
                .as_f64()
                .ok_or_else(|| format!("{number} is not a DOUBLE"))?,
        ),
        (Json::Number(number), ColumnType::Timestamp) => {
            Value::Timestamp(number.as_i64().ok_or_else(|| {
                format!("{number} is not a TIMESTAMP (whole nanoseconds since 1970)")
            })?)
        }
        (Json::String(text), ColumnType::Text) => Value::Text(text.clone()),
        (Json::String(hex), ColumnType::Bytes) => Value::Bytes(parse_hex(hex)?),
        (other, ty) => return Err(format!("JSON {other} is not a value of type {ty:?}")),
    };
    Ok(value)
}

/// Decodes lowercase or uppercase hex, as BYTES appear in row events.
pub fn parse_hex(hex: &str) -> Result<Vec<u8>, String> {
    if !hex.len().is_multiple_of(2) {
        return Err(format!("hex string of odd length {}", hex.len()));
    }
    hex.as_bytes()
        .chunks(2)
        .map(|pair| {
            let digits = std::str::from_utf8(pair).map_err(|_| "hex string is not ASCII")?;
            u8::from_str_radix(digits, 16).map_err(|_| format!("`{digits}` is not a hex byte"))
        })
        .collect()
}
