//! `kimberlite.projections` and `kimberlite.policies`: the deployed Wasm of a tenant,
//! from the catalog (what was deployed, which version serves) and the view store (how far
//! each version has applied the log, its digest, its fault). `kimberlite.grants` and
//! `kimberlite.row_filters`: who may read what (`GRANT`, `CREATE POLICY`).
//! `kimberlite.access`: the access trail, from the log.
//!
//! All of them show the present, whatever AS OF the query asks for: they describe this
//! node's derived state and today's rules, not the tenant's data.

use crate::query::{LOG_READ_BATCH_RECORDS, QUERY_BUFFER_ROWS_MAX, QueryContext, QueryError};
use kimberlite_kernel::modules::{Policy, Projection, ProjectionVersion};
use kimberlite_kernel::{Column, ColumnType, Row, Value};
use kimberlite_log::RecordKind;

/// Hex digits of a module's BLAKE3 shown in the system views (the full id is in the log).
const MODULE_ID_SHOWN_HEX: usize = 16;

fn column(name: &str, ty: ColumnType, nullable: bool) -> Column {
    Column {
        name: name.to_string(),
        ty,
        nullable,
    }
}

fn integer(n: u64) -> Value {
    Value::Integer(i64::try_from(n).unwrap_or(i64::MAX))
}

/// One row per live or past version of every projection.
pub fn projections_columns() -> Vec<Column> {
    vec![
        column("name", ColumnType::Text, false),
        column("version", ColumnType::BigInt, false),
        column("state", ColumnType::Text, false),
        column("module", ColumnType::Text, false),
        column("module_bytes", ColumnType::BigInt, false),
        column("tables", ColumnType::Text, false),
        column("applied", ColumnType::BigInt, false),
        column("events", ColumnType::BigInt, false),
        column("lag", ColumnType::BigInt, false),
        column("digest", ColumnType::Text, true),
        column("fault_position", ColumnType::BigInt, true),
        column("fault", ColumnType::Text, true),
        column("deployed_by", ColumnType::Text, false),
    ]
}

/// `active` (serves queries), `building` (will replace the active one once caught up),
/// `faulted`, or `retired`.
pub fn version_state(projection: &Projection, version: &ProjectionVersion) -> &'static str {
    if version.fault.is_some() {
        "faulted"
    } else if projection.active == Some(version.version) {
        "active"
    } else if projection.target == Some(version.version) {
        "building"
    } else {
        "retired"
    }
}

pub fn projections_rows(ctx: &QueryContext<'_>) -> Result<Vec<Row>, QueryError> {
    let Some(tenant) = ctx.catalog.tenant(ctx.tenant) else {
        return Ok(Vec::new());
    };
    let end = ctx.log.end();
    let mut rows = Vec::new();
    for projection in tenant.projections() {
        for version in &projection.versions {
            let progress = ctx.views.progress(ctx.tenant, version.version)?;
            let applied = progress.as_ref().map_or(0, |p| p.applied_end);
            let tables: Vec<&str> = version.tables.iter().map(|t| t.name.as_str()).collect();
            rows.push(vec![
                Value::Text(projection.name.clone()),
                integer(version.version),
                Value::Text(version_state(projection, version).to_string()),
                Value::Text(version.module.blake3[..MODULE_ID_SHOWN_HEX].to_string()),
                integer(version.module.bytes),
                Value::Text(tables.join(", ")),
                integer(applied),
                integer(progress.as_ref().map_or(0, |p| p.events_applied)),
                integer(end.saturating_sub(applied)),
                progress.as_ref().map_or(Value::Null, |p| {
                    Value::Text(crate::wasm::ViewDigest(p.digest).to_hex())
                }),
                version
                    .fault
                    .as_ref()
                    .map_or(Value::Null, |fault| integer(fault.position)),
                version
                    .fault
                    .as_ref()
                    .map_or(Value::Null, |fault| Value::Text(fault.message.clone())),
                Value::Text(version.deployed_by.clone()),
            ]);
        }
    }
    Ok(rows)
}

/// One row per version of every masking policy.
pub fn policies_columns() -> Vec<Column> {
    vec![
        column("name", ColumnType::Text, false),
        column("version", ColumnType::BigInt, false),
        column("state", ColumnType::Text, false),
        column("module", ColumnType::Text, false),
        column("module_bytes", ColumnType::BigInt, false),
        column("covers", ColumnType::Text, false),
        column("deployed_by", ColumnType::Text, false),
    ]
}

pub fn policies_rows(ctx: &QueryContext<'_>) -> Vec<Row> {
    let Some(tenant) = ctx.catalog.tenant(ctx.tenant) else {
        return Vec::new();
    };
    tenant
        .policies()
        .flat_map(|policy: &Policy| {
            policy.versions.iter().map(move |version| {
                let state = if policy.active == Some(version.version) {
                    "active"
                } else {
                    "inactive"
                };
                vec![
                    Value::Text(policy.name.clone()),
                    integer(version.version),
                    Value::Text(state.to_string()),
                    Value::Text(version.module.blake3[..MODULE_ID_SHOWN_HEX].to_string()),
                    integer(version.module.bytes),
                    Value::Text(version.covers.join(", ")),
                    Value::Text(version.deployed_by.clone()),
                ]
            })
        })
        .collect()
}

/// One row per audited read — one a masking policy covered, a row filter restricted, or that
/// broke the glass: who, when, which tables, which policy versions and row filters, for
/// what purpose, and the emergency reason.
pub fn access_columns() -> Vec<Column> {
    vec![
        column("position", ColumnType::BigInt, false),
        column("timestamp", ColumnType::Timestamp, false),
        column("principal", ColumnType::Text, false),
        column("tables", ColumnType::Text, false),
        column("policies", ColumnType::Text, false),
        column("purpose", ColumnType::Text, true),
        // `table.filter, …`; NULL when no row filter restricted the read.
        column("row_filters", ColumnType::Text, true),
        // The reason of a break-glass read; NULL for an ordinary read.
        column("emergency", ColumnType::Text, true),
    ]
}

/// Reads the trail from the log: headers to find the access records (no decryption),
/// then each one's payload. Bounded like any buffered query result.
pub fn access_rows(ctx: &QueryContext<'_>) -> Result<Vec<Row>, QueryError> {
    let end = ctx.log.end();
    let mut rows = Vec::new();
    let mut position = 0;
    while position < end {
        let headers = ctx
            .log
            .headers(position, LOG_READ_BATCH_RECORDS)
            .map_err(QueryError::Log)?;
        let Some(last) = headers.last() else {
            break;
        };
        position = last.position + 1;
        for header in headers.iter().filter(|h| h.meta.kind == RecordKind::Access) {
            if rows.len() == QUERY_BUFFER_ROWS_MAX {
                return Err(QueryError::BufferFull {
                    max: QUERY_BUFFER_ROWS_MAX,
                });
            }
            let bytes = ctx.log.payload(header.position).map_err(QueryError::Log)?;
            let access: kimberlite_kernel::payload::Access =
                kimberlite_kernel::payload::from_json("Access", &bytes).map_err(|error| {
                    QueryError::Log(format!(
                        "the access record at position {} does not decode: {error}",
                        header.position
                    ))
                })?;
            rows.push(vec![
                integer(header.position),
                Value::Timestamp(i64::try_from(header.meta.timestamp_ns).unwrap_or(i64::MAX)),
                Value::Text(header.meta.principal.clone()),
                Value::Text(access.tables.join(", ")),
                Value::Text(access.policies.join(", ")),
                access.purpose.map_or(Value::Null, Value::Text),
                if access.row_filters.is_empty() {
                    Value::Null
                } else {
                    Value::Text(access.row_filters.join(", "))
                },
                access.emergency.map_or(Value::Null, Value::Text),
            ]);
        }
    }
    Ok(rows)
}

/// One row per (table or view, role) with privileges: the stored access lists, and the
/// default one of every current table and view that has none.
pub fn grants_columns() -> Vec<Column> {
    vec![
        column("table_name", ColumnType::Text, false),
        column("role", ColumnType::Text, false),
        column("privileges", ColumnType::Text, false),
        // `default` (no GRANT or REVOKE on the name yet) or `granted`.
        column("source", ColumnType::Text, false),
    ]
}

pub fn grants_rows(ctx: &QueryContext<'_>) -> Vec<Row> {
    let Some(tenant) = ctx.catalog.tenant(ctx.tenant) else {
        return Vec::new();
    };
    let mut lists: std::collections::BTreeMap<String, (kimberlite_kernel::access::Acl, &str)> =
        tenant
            .grants()
            .map(|(name, acl)| (name.clone(), (acl.clone(), "granted")))
            .collect();
    let views = tenant
        .projections()
        .filter_map(|projection| projection.active_version())
        .flat_map(|version| version.tables.iter().map(|table| table.name.clone()));
    let tables = tenant
        .tables(None)
        .into_iter()
        .map(|table| table.name.clone());
    for name in tables.chain(views) {
        lists
            .entry(name.clone())
            .or_insert_with(|| (tenant.acl(&name).into_owned(), "default"));
    }
    let mut rows = Vec::new();
    for (name, (acl, source)) in lists {
        for (role, privileges) in &acl.roles {
            rows.push(vec![
                Value::Text(name.clone()),
                Value::Text(role.clone()),
                Value::Text(kimberlite_kernel::access::describe_privileges(privileges)),
                Value::Text(source.to_string()),
            ]);
        }
    }
    rows
}

/// One row per row filter (`CREATE POLICY`).
pub fn row_filters_columns() -> Vec<Column> {
    vec![
        column("table_name", ColumnType::Text, false),
        column("name", ColumnType::Text, false),
        column("kind", ColumnType::Text, false),
        column("roles", ColumnType::Text, false),
        column("condition", ColumnType::Text, false),
        column("created_at", ColumnType::BigInt, false),
        column("created_by", ColumnType::Text, false),
    ]
}

pub fn row_filters_rows(ctx: &QueryContext<'_>) -> Vec<Row> {
    let Some(tenant) = ctx.catalog.tenant(ctx.tenant) else {
        return Vec::new();
    };
    tenant
        .row_filters()
        .map(|filter| {
            vec![
                Value::Text(filter.table.clone()),
                Value::Text(filter.name.clone()),
                Value::Text(filter.kind.name().to_string()),
                Value::Text(filter.roles.join(", ")),
                Value::Text(filter.using.clone()),
                integer(filter.created_at),
                Value::Text(filter.created_by.clone()),
            ]
        })
        .collect()
}
