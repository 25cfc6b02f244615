//! The typed values every layer agrees on: SQL tables, Wasm views, query results.
//!
//! This is the shared vocabulary of `kernel`, `projections` and (through a
//! conversion in `host`) the wire protocol. Keep it small and total: every
//! value has exactly one encoding and one ordering.

use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::fmt;

/// A tenant: the unit of isolation, keys, placement and quota.
/// `SYSTEM_TENANT` is the node's own partition (tenants, tokens).
pub type TenantId = u64;

/// The node's own catalog partition. No user data ever lives here.
pub const SYSTEM_TENANT: TenantId = 0;

/// A dense, per-tenant log position (the log's own type).
pub use kimberlite_log::Position;

/// A table's identity: the log position of the `CREATE TABLE` record that made it,
/// so a table dropped and re-created under the same name is a different table.
pub type TableId = u64;

/// The SQL column types Kimberlite stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ColumnType {
    BigInt,
    Text,
    Boolean,
    Double,
    /// Nanoseconds since the Unix epoch, UTC.
    Timestamp,
    Bytes,
}

impl ColumnType {
    /// The SQL spelling, as `CREATE TABLE` accepts it and `.schema` prints it.
    pub fn sql_name(self) -> &'static str {
        match self {
            ColumnType::BigInt => "BIGINT",
            ColumnType::Text => "TEXT",
            ColumnType::Boolean => "BOOLEAN",
            ColumnType::Double => "DOUBLE",
            ColumnType::Timestamp => "TIMESTAMP",
            ColumnType::Bytes => "BYTES",
        }
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.sql_name())
    }
}

/// One cell.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Value {
    Null,
    Boolean(bool),
    Integer(i64),
    Real(f64),
    Text(String),
    Bytes(Vec<u8>),
    /// Nanoseconds since the Unix epoch, UTC (negative before 1970).
    Timestamp(i64),
}

impl Value {
    /// The column type this value belongs to; `None` for NULL, which fits any nullable column.
    pub fn column_type(&self) -> Option<ColumnType> {
        match self {
            Value::Null => None,
            Value::Boolean(_) => Some(ColumnType::Boolean),
            Value::Integer(_) => Some(ColumnType::BigInt),
            Value::Real(_) => Some(ColumnType::Double),
            Value::Text(_) => Some(ColumnType::Text),
            Value::Bytes(_) => Some(ColumnType::Bytes),
            Value::Timestamp(_) => Some(ColumnType::Timestamp),
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// A total order used for ORDER BY, GROUP BY and primary keys: NULL first, then by
    /// type rank, then by value (`f64::total_cmp` for reals, so NaN has a place).
    /// Integers and reals compare numerically with each other.
    pub fn total_cmp(&self, other: &Value) -> Ordering {
        use Value::*;
        match (self, other) {
            (Null, Null) => Ordering::Equal,
            (Null, _) => Ordering::Less,
            (_, Null) => Ordering::Greater,
            (Boolean(a), Boolean(b)) => a.cmp(b),
            (Integer(a), Integer(b)) => a.cmp(b),
            (Real(a), Real(b)) => a.total_cmp(b),
            (Integer(a), Real(b)) => (*a as f64).total_cmp(b),
            (Real(a), Integer(b)) => a.total_cmp(&(*b as f64)),
            (Text(a), Text(b)) => a.cmp(b),
            (Bytes(a), Bytes(b)) => a.cmp(b),
            (Timestamp(a), Timestamp(b)) => a.cmp(b),
            (a, b) => a.type_rank().cmp(&b.type_rank()),
        }
    }

    fn type_rank(&self) -> u8 {
        match self {
            Value::Null => 0,
            Value::Boolean(_) => 1,
            Value::Integer(_) | Value::Real(_) => 2,
            Value::Text(_) => 3,
            Value::Bytes(_) => 4,
            Value::Timestamp(_) => 5,
        }
    }
}

impl Value {
    /// The SQL name of this value's type (`NULL` for NULL), as error messages show it.
    pub fn type_name(&self) -> &'static str {
        self.column_type().map_or("NULL", ColumnType::sql_name)
    }

    /// The value as a SQL literal that reads back as the same value: `'it''s'`,
    /// `X'00ff'`, `TIMESTAMP '2024-01-15 10:30:00'`, `1.5`, `NULL`, `TRUE`.
    /// Error messages quote values this way (a duplicate key, a bad cast).
    pub fn to_sql(&self) -> String {
        match self {
            Value::Null => "NULL".to_string(),
            Value::Boolean(true) => "TRUE".to_string(),
            Value::Boolean(false) => "FALSE".to_string(),
            Value::Integer(_) | Value::Real(_) => self.to_string(),
            Value::Text(text) => format!("'{}'", text.replace('\'', "''")),
            Value::Bytes(bytes) => format!("X'{}'", crate::hex::encode(bytes)),
            Value::Timestamp(nanos) => format!("TIMESTAMP '{}'", crate::timestamp::format(*nanos)),
        }
    }
}

/// The plain rendering of query results: `NULL`, `true`, `42`, `1.5`, text as is,
/// bytes as `\x00ff`, timestamps as `YYYY-MM-DD HH:MM:SS[.fraction]` (UTC).
/// Reals always show a fraction or an exponent (`1.0`, `1e300`), so they never read
/// as integers; the non-finite ones are `NaN`, `Infinity`, `-Infinity`.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("NULL"),
            Value::Boolean(value) => write!(f, "{value}"),
            Value::Integer(value) => write!(f, "{value}"),
            Value::Real(value) if value.is_infinite() => f.write_str(if *value > 0.0 {
                "Infinity"
            } else {
                "-Infinity"
            }),
            Value::Real(value) => write!(f, "{value:?}"),
            Value::Text(text) => f.write_str(text),
            Value::Bytes(bytes) => write!(f, "\\x{}", crate::hex::encode(bytes)),
            Value::Timestamp(nanos) => f.write_str(&crate::timestamp::format(*nanos)),
        }
    }
}

/// A column of a table or view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    pub ty: ColumnType,
    pub nullable: bool,
}

/// A row: one value per column, in the table's column order.
pub type Row = Vec<Value>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn total_order_puts_null_first_and_compares_numbers_across_types() {
        assert_eq!(Value::Null.total_cmp(&Value::Integer(-5)), Ordering::Less);
        assert_eq!(
            Value::Integer(2).total_cmp(&Value::Real(1.5)),
            Ordering::Greater
        );
        assert_eq!(
            Value::Real(f64::NAN).total_cmp(&Value::Real(f64::NAN)),
            Ordering::Equal
        );
        assert_eq!(
            Value::Text("a".into()).total_cmp(&Value::Integer(9)),
            Ordering::Greater
        );
    }
}
