//! Between the kernel's values and the wire's (the client crate mirrors the type so it
//! needs no server crates).

use kimberlite_client::{WireColumn, WireValue};
use kimberlite_kernel::{ColumnType, Value};

pub fn to_wire(value: Value) -> WireValue {
    match value {
        Value::Null => WireValue::Null,
        Value::Boolean(value) => WireValue::Boolean(value),
        Value::Integer(value) => WireValue::Integer(value),
        Value::Real(value) => WireValue::Real(value),
        Value::Text(value) => WireValue::Text(value),
        Value::Bytes(value) => WireValue::Bytes(value),
        Value::Timestamp(value) => WireValue::Timestamp(value),
    }
}

pub fn from_wire(value: WireValue) -> Value {
    match value {
        WireValue::Null => Value::Null,
        WireValue::Boolean(value) => Value::Boolean(value),
        WireValue::Integer(value) => Value::Integer(value),
        WireValue::Real(value) => Value::Real(value),
        WireValue::Text(value) => Value::Text(value),
        WireValue::Bytes(value) => Value::Bytes(value),
        WireValue::Timestamp(value) => Value::Timestamp(value),
    }
}

pub fn column(name: String, ty: Option<ColumnType>) -> WireColumn {
    WireColumn {
        name,
        ty: ty.map(|ty| ty.sql_name().to_string()),
    }
}

/// The kernel's and executor's error classes, as wire error codes.
pub fn error_code(class: kimberlite_kernel::ErrorClass) -> kimberlite_client::ErrorCode {
    use kimberlite_client::ErrorCode;
    use kimberlite_kernel::ErrorClass;
    match class {
        ErrorClass::NotFound => ErrorCode::NotFound,
        ErrorClass::BadSql => ErrorCode::BadSql,
        ErrorClass::BadRequest => ErrorCode::BadRequest,
        ErrorClass::Conflict => ErrorCode::Conflict,
        ErrorClass::TooLarge => ErrorCode::TooLarge,
        ErrorClass::PermissionDenied => ErrorCode::PermissionDenied,
        ErrorClass::PolicyFailed => ErrorCode::PolicyFailed,
        ErrorClass::Internal => ErrorCode::Internal,
    }
}
