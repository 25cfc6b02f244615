//! The payloads of the records the kernel writes: the one place their JSON is defined.
//!
//! JSON so that tenants' Wasm projections, the CLI and auditors decode them with any
//! JSON library. Keys appear in a fixed order (columns in table order), so the same
//! change always produces the same bytes on every replica.
//!
//! ## Values
//!
//! | column type | JSON                                                         |
//! |-------------|--------------------------------------------------------------|
//! | NULL        | `null`                                                       |
//! | BIGINT      | number, an integer (`42`)                                    |
//! | DOUBLE      | number (`1.5`, `1.0`); NaN and infinities as the strings `"NaN"`, `"Infinity"`, `"-Infinity"` |
//! | TEXT        | string                                                       |
//! | BOOLEAN     | `true` / `false`                                             |
//! | TIMESTAMP   | number: integer nanoseconds since the Unix epoch, UTC        |
//! | BYTES       | string of lowercase hex digits (`"00ff"`)                    |
//!
//! ## Records (`RecordMeta.event_type`, stream, payload)
//!
//! - `RowInserted`, `RowUpdated` (kind `Event`, stream = table name): the full new row,
//!   `{"id":1,"name":"Ada","region":"eu"}`.
//! - `RowDeleted` (kind `Event`, stream = table name): the primary-key columns,
//!   `{"id":1}`. An UPDATE that changes a row's primary key writes `RowDeleted` for the
//!   old key and `RowInserted` for the new row, so every record names one key.
//! - `CreateTable` (kind `Ddl`, stream = table name):
//!   `{"table":"patients","columns":[{"name":"id","type":"BIGINT","nullable":false},…],"primary_key":["id"]}`.
//! - `DropTable` (kind `Ddl`, stream = table name): `{"table":"patients","table_id":3}`.
//! - `TenantCreated` (kind `Catalog`, system partition, stream `tenants`):
//!   `{"tenant":1,"name":"clinic"}`.
//! - `QuotaSet` (kind `Catalog`, system partition, stream `tenants`): a tenant's quotas,
//!   `{"tenant":1,"quota":{"queries_per_second":50}}` (an absent limit is unlimited).
//! - `TokenCreated` (kind `Catalog`, system partition, stream `tokens`):
//!   `{"token":1,"tenant":1,"name":"alice","secret_hash":"<64 hex digits>","roles":["writer"],"attributes":[["ward","3"]]}`.
//!   The secret itself is never in the log, only its SHA-256.
//! - `Grant`, `Revoke` (kind `Ddl`, stream = table name, or `kimberlite.log`): one record per
//!   table of the statement, `{"table":"patients","privileges":["SELECT"],"roles":["analyst"]}`.
//! - `CreatePolicy` (kind `Ddl`, stream = table name): a row filter,
//!   `{"table":"patients","name":"eu","kind":"permissive","roles":["reader"],"using":"region = current_attribute('region')"}`.
//! - `DropPolicy` (kind `Ddl`, stream = table name): `{"table":"patients","name":"eu"}`.
//! - `Read` (kind `Access`, stream `kimberlite.access`): a read that a masking policy
//!   covered, a row filter restricted, or that broke the glass,
//!   `{"tables":["patients"],"policies":["phi@12"],"purpose":"treatment"}`, plus
//!   `"row_filters":["patients.eu"]` and `"emergency":"…"` when there are any.
//! - `KeyRotated` (kind `KeyRotation`, stream `kimberlite.keys`): the partition's records
//!   after this one are encrypted under data key `key_id`, `{"key_id":2,"previous":1}`.
//!   The record itself is still under `previous`; key bytes are never in the log.
//! - `SubjectKeyCreated` (kind `KeyRotation`, stream `kimberlite.keys`): the first record
//!   naming a data subject gets its own key, `{"subject":"patient-7","key_id":2147483648}`;
//!   records naming the subject (rows of a table `WITH (subject = 'column')`, events
//!   appended with a subject) are encrypted under it.
//! - `SubjectErased` (kind `Erasure`, stream `kimberlite.keys`): the subject's key is
//!   destroyed; its records read as erased from then on (tables, views, log, AS OF),
//!   `{"subject":"patient-7","key_id":2147483648}`.
//! - Application events appended with `Append` are stored as given.

use crate::value::{Column, ColumnType, Position, Row, TenantId, Value};
use serde::{Deserialize, Serialize};
use std::io::Write as _;

pub const EVENT_ROW_INSERTED: &str = "RowInserted";
pub const EVENT_ROW_UPDATED: &str = "RowUpdated";
pub const EVENT_ROW_DELETED: &str = "RowDeleted";
pub const EVENT_CREATE_TABLE: &str = "CreateTable";
pub const EVENT_DROP_TABLE: &str = "DropTable";
pub const EVENT_TENANT_CREATED: &str = "TenantCreated";
pub const EVENT_TOKEN_CREATED: &str = "TokenCreated";
pub const EVENT_READ: &str = "Read";
pub const EVENT_GRANT: &str = "Grant";
pub const EVENT_REVOKE: &str = "Revoke";
pub const EVENT_CREATE_POLICY: &str = "CreatePolicy";
pub const EVENT_DROP_POLICY: &str = "DropPolicy";
pub const EVENT_KEY_ROTATED: &str = "KeyRotated";
pub const EVENT_QUOTA_SET: &str = "QuotaSet";
pub const EVENT_SUBJECT_KEY_CREATED: &str = "SubjectKeyCreated";
pub const EVENT_SUBJECT_ERASED: &str = "SubjectErased";
pub const EVENT_TENANT_ERASED: &str = "TenantErased";
pub const STREAM_ACCESS: &str = "kimberlite.access";
pub const STREAM_KEYS: &str = "kimberlite.keys";
pub const STREAM_TENANTS: &str = "tenants";
pub const STREAM_TOKENS: &str = "tokens";

/// A payload that does not decode: only a corrupted or foreign log produces one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PayloadError(pub String);

/// `{"col":value,…}` over the given columns of a row, in the given order.
pub fn encode_row(
    columns: &[Column],
    indices: impl IntoIterator<Item = usize>,
    row: &[Value],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 * columns.len() + 2);
    out.push(b'{');
    for (n, index) in indices.into_iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        write_json_string(&mut out, &columns[index].name);
        out.push(b':');
        write_value(&mut out, &row[index]);
    }
    out.push(b'}');
    out
}

fn write_json_string(out: &mut Vec<u8>, text: &str) {
    serde_json::to_writer(out, text).expect("writing JSON to a Vec cannot fail");
}

fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Boolean(true) => out.extend_from_slice(b"true"),
        Value::Boolean(false) => out.extend_from_slice(b"false"),
        Value::Integer(number) | Value::Timestamp(number) => {
            write!(out, "{number}").expect("writing to a Vec cannot fail")
        }
        Value::Real(number) if number.is_nan() => out.extend_from_slice(b"\"NaN\""),
        Value::Real(number) if number.is_infinite() => out.extend_from_slice(if *number > 0.0 {
            b"\"Infinity\""
        } else {
            b"\"-Infinity\""
        }),
        // serde_json prints the shortest text that parses back to the same f64.
        Value::Real(number) => {
            serde_json::to_writer(out, number).expect("writing JSON to a Vec cannot fail")
        }
        Value::Text(text) => write_json_string(out, text),
        Value::Bytes(bytes) => {
            out.push(b'"');
            out.extend_from_slice(crate::hex::encode(bytes).as_bytes());
            out.push(b'"');
        }
    }
}

/// Decodes the given columns (all must be present; others are refused) from a row payload
/// into a full-width row, the missing columns NULL.
pub fn decode_row(
    columns: &[Column],
    indices: &[usize],
    payload: &[u8],
) -> Result<Row, PayloadError> {
    let object: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(payload)
        .map_err(|error| PayloadError(format!("not a JSON object: {error}")))?;
    if object.len() != indices.len() {
        let expected: Vec<&str> = indices
            .iter()
            .map(|&index| columns[index].name.as_str())
            .collect();
        let got: Vec<&str> = object.keys().map(String::as_str).collect();
        return Err(PayloadError(format!(
            "expected the columns {expected:?}, got {got:?}"
        )));
    }
    let mut row = vec![Value::Null; columns.len()];
    for &index in indices {
        let column = &columns[index];
        let json = object
            .get(&column.name)
            .ok_or_else(|| PayloadError(format!("column `{}` is missing", column.name)))?;
        row[index] = decode_value(column.ty, json).map_err(|PayloadError(why)| {
            PayloadError(format!("column `{}`: {why}", column.name))
        })?;
        if row[index].is_null() && !column.nullable {
            return Err(PayloadError(format!(
                "column `{}` is NOT NULL but the payload has null",
                column.name
            )));
        }
    }
    Ok(row)
}

/// One value of the given column type, as `encode_row` writes it.
pub fn decode_value(ty: ColumnType, json: &serde_json::Value) -> Result<Value, PayloadError> {
    use serde_json::Value as Json;
    let wrong = || PayloadError(format!("expected {ty}, got {json}"));
    Ok(match (ty, json) {
        (_, Json::Null) => Value::Null,
        (ColumnType::BigInt, Json::Number(number)) => {
            Value::Integer(number.as_i64().ok_or_else(wrong)?)
        }
        (ColumnType::Timestamp, Json::Number(number)) => {
            Value::Timestamp(number.as_i64().ok_or_else(wrong)?)
        }
        (ColumnType::Double, Json::Number(number)) => {
            Value::Real(number.as_f64().ok_or_else(wrong)?)
        }
        (ColumnType::Double, Json::String(text)) => Value::Real(match text.as_str() {
            "NaN" => f64::NAN,
            "Infinity" => f64::INFINITY,
            "-Infinity" => f64::NEG_INFINITY,
            _ => return Err(wrong()),
        }),
        (ColumnType::Text, Json::String(text)) => Value::Text(text.clone()),
        (ColumnType::Boolean, Json::Bool(value)) => Value::Boolean(*value),
        (ColumnType::Bytes, Json::String(text)) => {
            Value::Bytes(crate::hex::decode(text).ok_or_else(wrong)?)
        }
        _ => return Err(wrong()),
    })
}

/// The payload of an access record (kind `Access`, event `Read`, stream
/// `kimberlite.access`): `{"tables":["patients"],"policies":["phi@12"],"purpose":"treatment"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Access {
    pub tables: Vec<String>,
    pub policies: Vec<String>,
    pub purpose: Option<String>,
    /// `table.filter` of each row filter that restricted the read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub row_filters: Vec<String>,
    /// The reason of a break-glass read (grants and row filters were bypassed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emergency: Option<String>,
}

/// The payload of `QuotaSet`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaSet {
    pub tenant: TenantId,
    pub quota: crate::catalog::Quota,
}

/// The payload of `KeyRotated`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRotated {
    pub key_id: u32,
    pub previous: u32,
}

/// The payload of `SubjectKeyCreated` and `SubjectErased`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectKey {
    pub subject: String,
    pub key_id: u32,
}

/// The payload of `Grant` and `Revoke`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    pub table: String,
    pub privileges: Vec<crate::access::Privilege>,
    pub roles: Vec<String>,
}

/// The payload of `CreatePolicy`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatePolicy {
    pub table: String,
    pub name: String,
    pub kind: crate::access::FilterKind,
    pub roles: Vec<String>,
    pub using: String,
}

/// The payload of `DropPolicy`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropPolicy {
    pub table: String,
    pub name: String,
}

/// The payload of `CreateTable`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSchema {
    pub table: String,
    pub columns: Vec<ColumnSchema>,
    pub primary_key: Vec<String>,
    /// The column naming each row's data subject (`WITH (subject = 'column')`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnSchema {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
    pub nullable: bool,
}

impl TableSchema {
    pub fn new(table: &str, columns: &[Column], primary_key: &[usize]) -> TableSchema {
        TableSchema {
            table: table.to_string(),
            columns: columns
                .iter()
                .map(|column| ColumnSchema {
                    name: column.name.clone(),
                    ty: column.ty.sql_name().to_string(),
                    nullable: column.nullable,
                })
                .collect(),
            primary_key: primary_key
                .iter()
                .map(|&index| columns[index].name.clone())
                .collect(),
            subject: None,
        }
    }

    /// The index of the subject column, refused if it is not a column.
    pub fn subject_index(&self, columns: &[Column]) -> Result<Option<usize>, PayloadError> {
        self.subject
            .as_ref()
            .map(|name| {
                columns
                    .iter()
                    .position(|column| &column.name == name)
                    .ok_or_else(|| PayloadError(format!("subject column `{name}` is not a column")))
            })
            .transpose()
    }

    /// The columns and key indices; refuses a schema no `CREATE TABLE` could have written.
    pub fn decode(&self) -> Result<(Vec<Column>, Vec<usize>), PayloadError> {
        let columns = self
            .columns
            .iter()
            .map(|column| {
                let ty = crate::sql::column_type_from_name(&column.ty)
                    .ok_or_else(|| PayloadError(format!("unknown column type {:?}", column.ty)))?;
                Ok(Column {
                    name: column.name.clone(),
                    ty,
                    nullable: column.nullable,
                })
            })
            .collect::<Result<Vec<Column>, PayloadError>>()?;
        let primary_key = self
            .primary_key
            .iter()
            .map(|name| {
                columns
                    .iter()
                    .position(|column| &column.name == name)
                    .ok_or_else(|| {
                        PayloadError(format!("primary key column `{name}` is not a column"))
                    })
            })
            .collect::<Result<Vec<usize>, PayloadError>>()?;
        if primary_key.is_empty() {
            return Err(PayloadError("the primary key is empty".to_string()));
        }
        Ok((columns, primary_key))
    }
}

/// The payload of `DropTable`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropTable {
    pub table: String,
    pub table_id: u64,
}

/// The payload of `TenantCreated`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantCreated {
    pub tenant: TenantId,
    pub name: String,
    /// Where the tenant's data must live (`tenant create --region`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

/// The payload of `TenantErased` (a record of the system partition): which tenant, and how
/// many records its log held when its keys were destroyed (the log stays, unreadable).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantErased {
    pub tenant: TenantId,
    pub name: String,
    pub records: Position,
}

/// The payload of `TokenCreated`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenCreated {
    pub token: u64,
    pub tenant: TenantId,
    pub name: String,
    pub secret_hash: String,
    pub roles: Vec<String>,
    pub attributes: Vec<(String, String)>,
}

/// Serializes a payload struct (fields in declaration order: deterministic bytes).
pub fn to_json<T: Serialize>(payload: &T) -> Vec<u8> {
    serde_json::to_vec(payload).expect("payload structs always serialize")
}

/// Parses a payload struct, naming the record kind on failure.
pub fn from_json<'a, T: Deserialize<'a>>(what: &str, payload: &'a [u8]) -> Result<T, PayloadError> {
    serde_json::from_slice(payload)
        .map_err(|error| PayloadError(format!("{what} payload: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;

    #[test]
    fn every_type_round_trips_through_the_documented_json() {
        let columns: Vec<Column> = [
            ("b", ColumnType::BigInt),
            ("d", ColumnType::Double),
            ("nan", ColumnType::Double),
            ("inf", ColumnType::Double),
            ("t", ColumnType::Text),
            ("ok", ColumnType::Boolean),
            ("at", ColumnType::Timestamp),
            ("raw", ColumnType::Bytes),
            ("none", ColumnType::Text),
        ]
        .into_iter()
        .map(|(name, ty)| Column {
            name: name.to_string(),
            ty,
            nullable: true,
        })
        .collect();
        let row = vec![
            Value::Integer(-42),
            Value::Real(0.1),
            Value::Real(f64::NAN),
            Value::Real(f64::NEG_INFINITY),
            Value::Text("a \"quoted\" ü".to_string()),
            Value::Boolean(true),
            Value::Timestamp(1_705_314_600_000_000_001),
            Value::Bytes(vec![0, 255]),
            Value::Null,
        ];
        let payload = encode_row(&columns, 0..columns.len(), &row);
        expect![[r#"{"b":-42,"d":0.1,"nan":"NaN","inf":"-Infinity","t":"a \"quoted\" ü","ok":true,"at":1705314600000000001,"raw":"00ff","none":null}"#]]
            .assert_eq(std::str::from_utf8(&payload).unwrap());
        let all: Vec<usize> = (0..columns.len()).collect();
        let decoded = decode_row(&columns, &all, &payload).unwrap();
        assert_eq!(format!("{decoded:?}"), format!("{row:?}"));
    }

    #[test]
    fn reals_round_trip_exactly() {
        let columns = [Column {
            name: "x".to_string(),
            ty: ColumnType::Double,
            nullable: false,
        }];
        for x in [
            0.1 + 0.2,
            -0.0,
            f64::MIN_POSITIVE,
            f64::MAX,
            1e-300,
            123_456_789.123_456_78,
        ] {
            let payload = encode_row(&columns, [0], &[Value::Real(x)]);
            let decoded = decode_row(&columns, &[0], &payload).unwrap();
            assert!(
                matches!(decoded[0], Value::Real(y) if y.to_bits() == x.to_bits()),
                "{x}"
            );
        }
    }

    #[test]
    fn refuses_payloads_that_do_not_fit_the_schema() {
        let columns = [
            Column {
                name: "id".to_string(),
                ty: ColumnType::BigInt,
                nullable: false,
            },
            Column {
                name: "name".to_string(),
                ty: ColumnType::Text,
                nullable: true,
            },
        ];
        let check = |payload: &str, expected: expect_test::Expect| {
            let error = decode_row(&columns, &[0, 1], payload.as_bytes()).unwrap_err();
            expected.assert_eq(&error.to_string());
        };
        check(
            r#"{"id":1}"#,
            expect![[r#"expected the columns ["id", "name"], got ["id"]"#]],
        );
        check(
            r#"{"id":1.5,"name":"x"}"#,
            expect!["column `id`: expected BIGINT, got 1.5"],
        );
        check(
            r#"{"id":null,"name":"x"}"#,
            expect!["column `id` is NOT NULL but the payload has null"],
        );
        check(r#"{"id":1,"nom":"x"}"#, expect!["column `name` is missing"]);
        check(
            "[1]",
            expect!["not a JSON object: invalid type: sequence, expected a map at line 1 column 0"],
        );
    }
}
