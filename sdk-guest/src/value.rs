//! Conveniences on the WIT-generated types: building values, rows and tables, reading
//! events and callers.

use crate::{Caller, Column, ColumnType, Event, Table, Value};
use serde::de::DeserializeOwned;

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    pub fn as_integer(&self) -> Option<i64> {
        match self {
            Value::Integer(value) => Some(*value),
            _ => None,
        }
    }

    pub fn as_real(&self) -> Option<f64> {
        match self {
            Value::Real(value) => Some(*value),
            _ => None,
        }
    }

    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Text(value) => Some(value),
            _ => None,
        }
    }

    pub fn as_boolean(&self) -> Option<bool> {
        match self {
            Value::Boolean(value) => Some(*value),
            _ => None,
        }
    }

    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(value) => Some(value),
            _ => None,
        }
    }

    pub fn as_timestamp(&self) -> Option<i64> {
        match self {
            Value::Timestamp(value) => Some(*value),
            _ => None,
        }
    }

    /// Appends a canonical, injective encoding (a tag byte, then the value) used to key
    /// the batch's pending rows. Reals encode their bits, so `-0.0` and `0.0` differ, as
    /// they do in the host's key comparison.
    pub(crate) fn encode_key(&self, out: &mut Vec<u8>) {
        match self {
            Value::Null => out.push(0),
            Value::Boolean(value) => out.extend_from_slice(&[1, u8::from(*value)]),
            Value::Integer(value) => {
                out.push(2);
                out.extend_from_slice(&value.to_le_bytes());
            }
            Value::Real(value) => {
                out.push(3);
                out.extend_from_slice(&value.to_bits().to_le_bytes());
            }
            Value::Text(value) => {
                out.push(4);
                out.extend_from_slice(&(value.len() as u64).to_le_bytes());
                out.extend_from_slice(value.as_bytes());
            }
            Value::Bytes(value) => {
                out.push(5);
                out.extend_from_slice(&(value.len() as u64).to_le_bytes());
                out.extend_from_slice(value);
            }
            Value::Timestamp(value) => {
                out.push(6);
                out.extend_from_slice(&value.to_le_bytes());
            }
        }
    }
}

impl From<i64> for Value {
    fn from(value: i64) -> Value {
        Value::Integer(value)
    }
}

impl From<f64> for Value {
    fn from(value: f64) -> Value {
        Value::Real(value)
    }
}

impl From<bool> for Value {
    fn from(value: bool) -> Value {
        Value::Boolean(value)
    }
}

impl From<&str> for Value {
    fn from(value: &str) -> Value {
        Value::Text(value.to_owned())
    }
}

impl From<String> for Value {
    fn from(value: String) -> Value {
        Value::Text(value)
    }
}

impl From<Vec<u8>> for Value {
    fn from(value: Vec<u8>) -> Value {
        Value::Bytes(value)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(value: Option<T>) -> Value {
        value.map_or(Value::Null, Into::into)
    }
}

impl Table {
    /// A table with no columns yet; add them with [`Table::column`].
    pub fn new(name: &str) -> Table {
        Table {
            name: name.to_owned(),
            columns: Vec::new(),
            primary_key: Vec::new(),
        }
    }

    /// Adds a NOT NULL column.
    pub fn column(mut self, name: &str, ty: ColumnType) -> Table {
        self.columns.push(Column {
            name: name.to_owned(),
            ty,
            nullable: false,
        });
        self
    }

    /// Adds a column that may hold NULL.
    pub fn nullable_column(mut self, name: &str, ty: ColumnType) -> Table {
        self.columns.push(Column {
            name: name.to_owned(),
            ty,
            nullable: true,
        });
        self
    }

    /// Sets the primary key (column names, in key order).
    pub fn primary_key(mut self, columns: &[&str]) -> Table {
        self.primary_key = columns.iter().map(|name| (*name).to_owned()).collect();
        self
    }
}

impl Event {
    /// The payload decoded as JSON into `T`. The error names the event, so a projection
    /// can return it as is.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_slice(&self.payload).map_err(|error| {
            format!(
                "event {} at position {} on stream `{}`: payload is not the expected JSON: {error}",
                self.event_type, self.position, self.stream
            )
        })
    }

    /// The event's timestamp as a TIMESTAMP value. Log timestamps are assigned by the
    /// host from its clock and stay far below `i64::MAX` ns (year 2262).
    pub fn timestamp(&self) -> Value {
        Value::Timestamp(i64::try_from(self.timestamp_ns).unwrap_or(i64::MAX))
    }
}

impl Caller {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|held| held == role)
    }

    /// The value of a token attribute, e.g. `attribute("department")`.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The purpose of the read: the one the request declared, else the token's
    /// `purpose` attribute.
    pub fn purpose(&self) -> Option<&str> {
        self.purpose
            .as_deref()
            .or_else(|| self.attribute("purpose"))
    }
}
