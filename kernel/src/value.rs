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
        assert_eq!(Value::Integer(2).total_cmp(&Value::Real(1.5)), Ordering::Greater);
        assert_eq!(Value::Real(f64::NAN).total_cmp(&Value::Real(f64::NAN)), Ordering::Equal);
        assert_eq!(
            Value::Text("a".into()).total_cmp(&Value::Integer(9)),
            Ordering::Greater
        );
    }
}
