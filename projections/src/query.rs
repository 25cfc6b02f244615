//! The query executor: a `sql::Select` over the view store and the log, now or in the past.
//!
//! ## Plan
//!
//! Tables are joined left to right in nested loops. For each table the executor looks for
//! a primary-key access path: when the WHERE and ON conditions pin every key column to
//! constants, parameters or columns of the tables to its left (`id = 5`,
//! `id IN (1, 2)`, `v.patient = p.id`), the table is read by point lookups; otherwise it
//! is scanned (the first table as a stream, later ones once, into memory). WHERE terms
//! are checked as soon as the columns they read are bound. `kimberlite.log` is read in
//! batches over the position range its WHERE allows, backwards for
//! `ORDER BY position DESC`. An ORDER BY that the read order already satisfies (the
//! primary key ascending, or the log position) is not sorted again, so a LIMIT stops
//! reading early.
//!
//! ## Time travel
//!
//! `AS OF POSITION p` shows the state after applying the records at positions `<= p` of
//! the tenant's log: the tables as the catalog had them then (a table dropped since is
//! still readable; one created later "did not exist at position p") and the row
//! versions alive at `p`. A position beyond the last one of the log is refused, naming
//! both. `AS OF TIMESTAMP t` resolves to the last position with a timestamp `<= t`; a
//! timestamp before the first record is refused (no table existed then). A table without
//! its own AS OF uses the query's (`QueryContext::as_of`, from the protocol), if any.
//!
//! ## Row filters
//!
//! Every table and view read for a `Reader::Caller` gets the row filters (`CREATE POLICY`)
//! that apply to the caller's roles, compiled for its attributes and purpose against the
//! columns of the version read (so also under AS OF), and checked on every row of that table
//! before any ON, WHERE, join or aggregate sees it: on the scan, on key lookups and on the
//! rows buffered for a join. A table a masking policy covers is filtered on its clear values,
//! then masked. A filter that no longer compiles against the version read refuses the query.
//!
//! ## Bounds
//!
//! A result without LIMIT may hold `QUERY_ROWS_MAX` rows; rows held in memory for
//! sorting, grouping, DISTINCT or a joined table are bounded by `QUERY_BUFFER_ROWS_MAX`.

use crate::log_source::LogSource;
use crate::store::ViewRead;
use kimberlite_kernel::access::FilterKind;
use kimberlite_kernel::catalog::{Catalog, TableDef};
use kimberlite_kernel::expr::{
    self, Aggregate, Columns, Expr, ExprError, KeyLookup, NoColumns, Scope, Session,
};
use kimberlite_kernel::sql::{self, FromItem, OrderItem, Select, SelectItem, ast};
use kimberlite_kernel::store::OrderedKey;
use kimberlite_kernel::{
    Column, ColumnType, ErrorClass, Position, Row, StoreError, TenantId, Value,
};
use kimberlite_log::RecordHeader;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

pub use kimberlite_kernel::sql::AsOf;

/// Rows a result without LIMIT may have.
pub const QUERY_ROWS_MAX: usize = 100_000;
/// Rows a query may hold in memory at once: a sort's input, groups, DISTINCT's seen rows,
/// a joined table that has no key access path.
pub const QUERY_BUFFER_ROWS_MAX: usize = 1_000_000;
/// Keys one access path may look up (an IN list, or a product of them) before the
/// executor scans instead.
pub const QUERY_KEY_LOOKUPS_MAX: usize = 10_000;
/// Record headers read from the log per call for `kimberlite.log`.
pub const LOG_READ_BATCH_RECORDS: usize = 1_024;

/// Everything a query reads.
pub struct QueryContext<'a> {
    pub tenant: TenantId,
    pub catalog: &'a Catalog,
    pub views: &'a ViewRead,
    pub log: &'a dyn LogSource,
    /// `$1` is `params[0]`.
    pub params: &'a [Value],
    /// The point in time for every table without its own AS OF (the protocol's `sql-as-of`).
    pub as_of: Option<AsOf>,
    /// The tenant's masking policies for this caller; `None`: nothing is masked.
    pub masker: Option<&'a dyn Masker>,
    /// Whose read this is, for row filters.
    pub reader: Reader<'a>,
}

/// Whose read a query is, for row filters (`CREATE POLICY`).
#[derive(Clone, Copy, Debug)]
pub enum Reader<'a> {
    /// No row filter applies: a break-glass read (the host records it first), or a read the
    /// node makes on its own behalf (tests, tools).
    Unfiltered,
    /// A token's read: each table's filters that apply to `roles` (none for an admin), with
    /// `current_attribute(…)` and `current_purpose()` read from here.
    Caller {
        roles: &'a [String],
        attributes: &'a [(String, String)],
        purpose: Option<&'a str>,
    },
}

/// Masks the rows of covered tables and views before the query sees them, so filters,
/// joins and aggregates only ever work on what the caller may see (a `WHERE ssn = …` on
/// a masked column cannot probe the clear value).
pub trait Masker {
    /// Whether a policy masks the table or view `name`.
    fn covers(&self, name: &str) -> bool;
    /// The rows as the caller may see them: as many rows, of the same arity and column
    /// types (a cell may become NULL). An error fails the query: nothing unmasked leaves.
    fn mask(&self, table: &str, columns: &[String], rows: Vec<Row>) -> Result<Vec<Row>, String>;
}

impl std::fmt::Debug for QueryContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryContext")
            .field("tenant", &self.tenant)
            .field("params", &self.params)
            .field("as_of", &self.as_of)
            .finish_non_exhaustive()
    }
}

/// What the executor read, for tests and EXPLAIN-like diagnostics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueryStats {
    /// Rows and row versions read from the view store by scans.
    pub rows_scanned: u64,
    /// Primary-key lookups made.
    pub key_lookups: u64,
    /// Record headers read from the log.
    pub log_headers_read: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ResultSet {
    /// Name and type of each column; the type is `None` for an always-NULL expression.
    pub columns: Vec<(String, Option<ColumnType>)>,
    pub rows: Vec<Row>,
    /// The position read at, when the query travelled in time (the first table's, if
    /// tables were read at different points).
    pub as_of: Option<Position>,
    pub stats: QueryStats,
    /// `table.filter` of every row filter that restricted the read (for the access trail).
    pub row_filters: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Expr(#[from] ExprError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("unknown table `{name}` ({available})")]
    UnknownTable { name: String, available: String },
    #[error("table `{name}` did not exist at position {position}")]
    NotAtPosition { name: String, position: Position },
    #[error(
        "unknown system view `kimberlite.{name}` (system views: kimberlite.log, kimberlite.tables, kimberlite.projections, kimberlite.policies, kimberlite.access, kimberlite.grants, kimberlite.row_filters)"
    )]
    UnknownSystemView { name: String },
    #[error("table name `{0}` appears twice in FROM; give one of them an alias")]
    DuplicateTable(String),
    #[error("AS OF POSITION {position} is beyond the end of the log ({})", last.map_or("the log is empty".to_string(), |last| format!("last position: {last}")))]
    BeyondLog {
        position: Position,
        last: Option<Position>,
    },
    #[error("AS OF TIMESTAMP '{}' is before the first record of the log", kimberlite_kernel::timestamp::format(*.0))]
    BeforeLog(i64),
    #[error("masking policy failed, so the read was refused: {0}")]
    Policy(String),
    #[error(
        "row filter `{filter}` cannot be applied to `{table}` as read here ({why}), so the read was refused"
    )]
    RowFilter {
        filter: String,
        table: String,
        why: String,
    },
    #[error(
        "view `{view}` has applied the log up to position {applied_end} (exclusive); AS OF POSITION {position} is not there yet; retry shortly"
    )]
    ViewBehind {
        view: String,
        position: Position,
        applied_end: Position,
    },
    #[error("AS OF POSITION {position} is not yet applied to this node's views (applied through {}); retry shortly", applied_end.checked_sub(1).map_or("none".to_string(), |last| last.to_string()))]
    NotApplied {
        position: Position,
        applied_end: Position,
    },
    #[error(
        "the result has more than query_rows_max ({max}) rows; add a LIMIT or narrow the WHERE"
    )]
    TooManyRows { max: usize },
    #[error(
        "the query holds more than query_buffer_rows_max ({max}) rows in memory (sorting, grouping, DISTINCT or a join without a key); narrow it"
    )]
    BufferFull { max: usize },
    #[error("cannot read the log: {0}")]
    Log(String),
    #[error("{clause} must be a non-negative BIGINT, got {got}")]
    BadLimit { clause: &'static str, got: String },
    #[error("{clause} {ordinal} is not a column of the select list (1 to {columns})")]
    BadOrdinal {
        clause: &'static str,
        ordinal: i64,
        columns: usize,
    },
    #[error("SELECT * cannot be combined with GROUP BY or aggregates; list the columns")]
    WildcardWithGroup,
}

impl QueryError {
    /// The class of this refusal, for the wire protocol.
    pub fn code(&self) -> ErrorClass {
        match self {
            QueryError::Expr(error) => error.code(),
            QueryError::Store(_) | QueryError::Log(_) => ErrorClass::Internal,
            QueryError::UnknownTable { .. }
            | QueryError::NotAtPosition { .. }
            | QueryError::UnknownSystemView { .. } => ErrorClass::NotFound,
            QueryError::DuplicateTable(_)
            | QueryError::BadLimit { .. }
            | QueryError::BadOrdinal { .. }
            | QueryError::WildcardWithGroup => ErrorClass::BadSql,
            QueryError::BeyondLog { .. }
            | QueryError::BeforeLog(_)
            | QueryError::NotApplied { .. }
            | QueryError::ViewBehind { .. } => ErrorClass::BadRequest,
            QueryError::Policy(_) => ErrorClass::PolicyFailed,
            QueryError::RowFilter { .. } => ErrorClass::PermissionDenied,
            QueryError::TooManyRows { .. } | QueryError::BufferFull { .. } => ErrorClass::TooLarge,
        }
    }
}

/// The columns of `kimberlite.log`: one row per record, without its payload.
pub fn log_columns() -> Vec<Column> {
    let column = |name: &str, ty, nullable| Column {
        name: name.to_string(),
        ty,
        nullable,
    };
    vec![
        column("position", ColumnType::BigInt, false),
        column("timestamp", ColumnType::Timestamp, false),
        column("kind", ColumnType::Text, false),
        column("record_kind", ColumnType::Text, false),
        column("stream", ColumnType::Text, false),
        column("client", ColumnType::Text, false),
        column("client_id", ColumnType::Text, false),
        column("request", ColumnType::BigInt, false),
        // NULL when the caller gave no reason.
        column("reason", ColumnType::Text, true),
    ]
}

/// The columns of `kimberlite.tables`: every version of every table, dropped ones too.
pub fn tables_columns() -> Vec<Column> {
    let column = |name: &str, ty, nullable| Column {
        name: name.to_string(),
        ty,
        nullable,
    };
    vec![
        column("name", ColumnType::Text, false),
        column("columns", ColumnType::Text, false),
        column("primary_key", ColumnType::Text, false),
        column("created_at", ColumnType::BigInt, false),
        column("dropped_at", ColumnType::BigInt, true),
    ]
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn log_row(header: &RecordHeader) -> Row {
    let meta = &header.meta;
    vec![
        Value::Integer(to_i64(header.position)),
        Value::Timestamp(to_i64(meta.timestamp_ns)),
        Value::Text(meta.event_type.clone()),
        Value::Text(meta.kind.name().to_string()),
        Value::Text(meta.stream.clone()),
        Value::Text(meta.principal.clone()),
        Value::Text(format!("{:032x}", meta.client_id)),
        Value::Integer(to_i64(meta.request)),
        if meta.reason.is_empty() {
            Value::Null
        } else {
            Value::Text(meta.reason.clone())
        },
    ]
}

/// The version of a table as `kimberlite.tables` shows it at `at`.
fn tables_row(table: &TableDef, at: Option<Position>) -> Row {
    let dropped = table
        .dropped_at
        .filter(|dropped| at.is_none_or(|at| *dropped <= at));
    vec![
        Value::Text(table.name.clone()),
        Value::Text(table.describe_columns()),
        Value::Text(table.describe_primary_key()),
        Value::Integer(to_i64(table.created_at)),
        dropped.map_or(Value::Null, |dropped| Value::Integer(to_i64(dropped))),
    ]
}

enum SourceKind<'a> {
    Table(&'a TableDef),
    Log,
    Tables,
    /// A system view computed when the query starts (`kimberlite.projections`, …).
    Computed(Vec<Row>),
}

/// One table of the FROM clause, resolved.
struct Source<'a> {
    qualifier: String,
    kind: SourceKind<'a>,
    /// `None`: the present.
    at: Option<Position>,
    columns: Vec<Column>,
    /// The index of its first column in a joined row.
    offset: usize,
    /// The caller's row filters of this table, combined, over the table's own row.
    row_filter: Option<Expr>,
    /// Their `table.filter` names.
    row_filter_names: Vec<String>,
}

impl Source<'_> {
    fn end(&self) -> usize {
        self.offset + self.columns.len()
    }
}

/// How one table of the join is read.
enum Access {
    /// Point lookups by primary key (falls back to `Scan` above `QUERY_KEY_LOOKUPS_MAX` keys).
    Lookup(KeyLookup),
    /// A scan of the table (streamed for the first table, read once for later ones).
    Scan,
    /// `kimberlite.log` positions `[from, to)`, backwards when `descending`; the first
    /// read asks for `first_batch` headers, later ones for twice as many each time, up to
    /// `LOG_READ_BATCH_RECORDS` (a LIMIT then reads little more than it returns).
    Log {
        from: Position,
        to: Position,
        descending: bool,
        first_batch: usize,
    },
}

struct Step<'a> {
    source: Source<'a>,
    on: Option<Expr>,
    /// WHERE terms that can be checked once this step's columns are bound.
    filters: Vec<Expr>,
    access: Access,
    /// For a table read after the first: its rows, read once.
    rows: Option<Vec<Row>>,
    /// Checked on each row of this table before anything else (see the module docs);
    /// `None` once `rows` were filtered already.
    row_filter: Option<Expr>,
}

/// Runs one SELECT.
pub fn execute(select: &Select, ctx: &QueryContext<'_>) -> Result<ResultSet, QueryError> {
    let mut stats = QueryStats::default();
    let mut sources = Vec::with_capacity(select.from.len());
    let mut scope = Columns::new();
    let mut as_of = None;
    let mut row_filters: Vec<String> = Vec::new();
    for item in &select.from {
        let mut source = resolve_source(item, ctx)?;
        if sources
            .iter()
            .any(|other: &Source<'_>| other.qualifier == source.qualifier)
        {
            return Err(QueryError::DuplicateTable(source.qualifier));
        }
        source.offset = scope.push_table(&source.qualifier, &source.columns);
        as_of = as_of.or(source.at);
        for name in &source.row_filter_names {
            if !row_filters.contains(name) {
                row_filters.push(name.clone());
            }
        }
        sources.push(source);
    }
    let filter = select
        .selection
        .as_ref()
        .map(|expr| expr::compile_condition(expr, &scope, ctx.params, "WHERE"))
        .transpose()?;
    let terms: Vec<&Expr> = filter.as_ref().map(Expr::conjuncts).unwrap_or_default();
    let projection = Projection::plan(select, &scope, &sources, ctx.params)?;
    let limit = bound(select.limit.as_ref(), "LIMIT", ctx.params)?;
    let offset = bound(select.offset.as_ref(), "OFFSET", ctx.params)?.unwrap_or(0);

    let mut steps = Vec::with_capacity(sources.len());
    let mut assigned = vec![false; terms.len()];
    for (index, mut source) in sources.into_iter().enumerate() {
        let end = source.end();
        let row_filter = source.row_filter.take();
        // An ON condition sees the tables up to its own, not the ones joined after it.
        let prefix = Columns {
            columns: scope.columns[..end].to_vec(),
        };
        let on = select.from[index]
            .on
            .as_ref()
            .map(|on| expr::compile_condition(on, &prefix, ctx.params, "ON"))
            .transpose()?;
        let mut filters = Vec::new();
        for (term, done) in terms.iter().zip(assigned.iter_mut()) {
            if !*done && term.reads_only(&|column| column < end) {
                filters.push((*term).clone());
                *done = true;
            }
        }
        let mut pins: Vec<&Expr> = on.as_ref().map(Expr::conjuncts).unwrap_or_default();
        pins.extend(terms.iter().copied());
        let descending = index == 0
            && projection
                .order_starts_with(source.offset)
                .is_some_and(|descending| descending);
        let access = plan_access(&source, &pins, descending, ctx);
        steps.push(Step {
            source,
            on,
            filters,
            access,
            rows: None,
            row_filter,
        });
    }
    assert!(
        assigned.iter().all(|done| *done) || steps.is_empty(),
        "every WHERE term has a step"
    );
    let loose_filters: Vec<Expr> = if steps.is_empty() {
        terms.iter().map(|term| (*term).clone()).collect()
    } else {
        Vec::new()
    };

    // Tables a policy masks are read whole and masked before anything looks at them.
    let mut masked = false;
    if let Some(masker) = ctx.masker {
        for step in &mut steps {
            let SourceKind::Table(table) = step.source.kind else {
                continue;
            };
            if !masker.covers(&table.name) {
                continue;
            }
            step.access = Access::Scan;
            // Filtered on the clear values, then masked.
            let rows = filter_rows(step.row_filter.take(), read_all(step, ctx, &mut stats)?)?;
            let names: Vec<String> = table.columns.iter().map(|c| c.name.clone()).collect();
            let count = rows.len();
            let rows = masker
                .mask(&table.name, &names, rows)
                .map_err(QueryError::Policy)?;
            if rows.len() != count {
                return Err(QueryError::Policy(format!(
                    "the policy returned {} rows for {count}",
                    rows.len()
                )));
            }
            step.rows = Some(rows);
            masked = true;
        }
    }

    // Rows of later tables without a key path are read once, before the loops.
    for step in steps.iter_mut().skip(1) {
        if step.rows.is_none() && !matches!(step.access, Access::Lookup(_)) {
            let rows = read_all(step, ctx, &mut stats)?;
            step.rows = Some(filter_rows(step.row_filter.take(), rows)?);
        }
    }

    // Masking may change key columns, so masked rows are not known to be in key order.
    let presorted = !masked && projection.presorted(&steps);
    if let ([step], true, false, Some(limit)) =
        (steps.as_mut_slice(), presorted, select.distinct, limit)
        && let Access::Log { first_batch, .. } = &mut step.access
        && !projection.grouped
    {
        *first_batch = offset
            .saturating_add(limit)
            .clamp(1, LOG_READ_BATCH_RECORDS);
    }
    let mut collector = Collector::new(
        !presorted && !projection.order.is_empty(),
        select.distinct,
        offset,
        limit,
    );
    let run = Run { ctx, steps: &steps };
    if projection.grouped {
        let mut groups = Groups::new(&projection);
        run.join(&loose_filters, &mut stats, &mut |row| groups.add(row))?;
        groups.finish(&projection, &mut collector)?;
    } else {
        run.join(&loose_filters, &mut stats, &mut |row| {
            let (keys, output) = projection.output(row)?;
            collector.push(keys, output)
        })?;
    }
    let rows = collector.finish(&projection.order)?;
    Ok(ResultSet {
        columns: projection.columns.clone(),
        rows,
        as_of,
        stats,
        row_filters,
    })
}

/// The rows a step's row filter admits (all of them without one).
fn filter_rows(filter: Option<Expr>, rows: Vec<Row>) -> Result<Vec<Row>, QueryError> {
    let Some(filter) = filter else {
        return Ok(rows);
    };
    let mut kept = Vec::with_capacity(rows.len());
    for row in rows {
        if filter.matches(&row)? {
            kept.push(row);
        }
    }
    Ok(kept)
}

/// The row filters of table or view `name` for the query's reader, compiled against the
/// columns of the version read and combined: (any permissive, or true without one) and
/// every restrictive. Returns the combined condition and the filters' names.
fn row_filter(
    name: &str,
    columns: &[Column],
    ctx: &QueryContext<'_>,
) -> Result<(Option<Expr>, Vec<String>), QueryError> {
    let Reader::Caller {
        roles,
        attributes,
        purpose,
    } = ctx.reader
    else {
        return Ok((None, Vec::new()));
    };
    let filters = ctx.catalog.row_filters_for(ctx.tenant, name, roles);
    if filters.is_empty() {
        return Ok((None, Vec::new()));
    }
    let mut scope = Columns::new();
    scope.push_table(name, columns);
    let session = Session {
        attributes,
        purpose,
    };
    let combine = |left: Option<Expr>, op, right: Expr| match left {
        None => right,
        Some(left) => Expr::Binary {
            op,
            left: Box::new(left),
            right: Box::new(right),
        },
    };
    let mut permissive = None;
    let mut restrictive = Vec::new();
    let mut names = Vec::with_capacity(filters.len());
    for filter in filters {
        let compiled = sql::parse_expr(&filter.using)
            .map_err(ExprError::from)
            .and_then(|condition| expr::compile_filter(&condition, &scope, session))
            .map_err(|error| QueryError::RowFilter {
                filter: filter.qualified_name(),
                table: name.to_string(),
                why: error.to_string(),
            })?;
        match filter.kind {
            FilterKind::Permissive => {
                permissive = Some(combine(permissive, expr::BinaryOp::Or, compiled))
            }
            FilterKind::Restrictive => restrictive.push(compiled),
        }
        names.push(filter.qualified_name());
    }
    let mut combined = permissive;
    for condition in restrictive {
        combined = Some(combine(combined, expr::BinaryOp::And, condition));
    }
    Ok((combined, names))
}

/// LIMIT or OFFSET: a literal or parameter, a non-negative BIGINT; NULL means none.
fn bound(
    expr: Option<&ast::Expr>,
    clause: &'static str,
    params: &[Value],
) -> Result<Option<usize>, QueryError> {
    let Some(expr) = expr else {
        return Ok(None);
    };
    match expr::compile(expr, &NoColumns, params)?.expr.eval(&[])? {
        Value::Null => Ok(None),
        Value::Integer(n) if n >= 0 => Ok(Some(usize::try_from(n).unwrap_or(usize::MAX))),
        other => Err(QueryError::BadLimit {
            clause,
            got: format!("{} {}", other.type_name(), other.to_sql()),
        }),
    }
}

fn resolve_source<'a>(item: &FromItem, ctx: &QueryContext<'a>) -> Result<Source<'a>, QueryError> {
    let as_of = match &item.as_of {
        Some(expr) => Some(sql::resolve_as_of(expr, ctx.params)?),
        None => ctx.as_of,
    };
    let at = as_of
        .map(|as_of| resolve_position(as_of, ctx))
        .transpose()?;
    let qualifier = item.qualifier().to_string();
    if item.table.is_system() {
        let (kind, columns) = match item.table.name.as_str() {
            "log" => (SourceKind::Log, log_columns()),
            "tables" => (SourceKind::Tables, tables_columns()),
            "projections" => (
                SourceKind::Computed(crate::system_views::projections_rows(ctx)?),
                crate::system_views::projections_columns(),
            ),
            "policies" => (
                SourceKind::Computed(crate::system_views::policies_rows(ctx)),
                crate::system_views::policies_columns(),
            ),
            "access" => (
                SourceKind::Computed(crate::system_views::access_rows(ctx)?),
                crate::system_views::access_columns(),
            ),
            "grants" => (
                SourceKind::Computed(crate::system_views::grants_rows(ctx)),
                crate::system_views::grants_columns(),
            ),
            "row_filters" => (
                SourceKind::Computed(crate::system_views::row_filters_rows(ctx)),
                crate::system_views::row_filters_columns(),
            ),
            other => {
                return Err(QueryError::UnknownSystemView {
                    name: other.to_string(),
                });
            }
        };
        return Ok(Source {
            qualifier,
            kind,
            at,
            columns,
            offset: 0,
            row_filter: None,
            row_filter_names: Vec::new(),
        });
    }
    let name = &item.table.name;
    if let Some((_, version, table)) = ctx.catalog.view(ctx.tenant, name) {
        if let Some(position) = at {
            // A view is as far as its projection has applied the log; rows of later
            // positions would be silently missing.
            let applied_end = ctx
                .views
                .progress(ctx.tenant, version.version)?
                .map_or(0, |progress| progress.applied_end);
            if position >= applied_end {
                return Err(QueryError::ViewBehind {
                    view: name.clone(),
                    position,
                    applied_end,
                });
            }
        }
        let (row_filter, row_filter_names) = row_filter(name, &table.columns, ctx)?;
        return Ok(Source {
            qualifier,
            kind: SourceKind::Table(table),
            at,
            columns: table.columns.clone(),
            offset: 0,
            row_filter,
            row_filter_names,
        });
    }
    let Some(table) = ctx.catalog.table_at(ctx.tenant, name, at) else {
        let ever = ctx
            .catalog
            .tenant(ctx.tenant)
            .is_some_and(|tenant| tenant.ever_had_table(name));
        return Err(match at {
            Some(position) if ever => QueryError::NotAtPosition {
                name: name.clone(),
                position,
            },
            _ => QueryError::UnknownTable {
                name: name.clone(),
                available: kimberlite_kernel::describe_tables(&ctx.catalog.tables(ctx.tenant, at)),
            },
        });
    };
    if let Some(position) = at {
        // Rows of a position the views have not applied yet would be silently missing.
        let applied_end = ctx.views.applied(ctx.tenant);
        if position >= applied_end {
            return Err(QueryError::NotApplied {
                position,
                applied_end,
            });
        }
    }
    let (row_filter, row_filter_names) = row_filter(name, &table.columns, ctx)?;
    Ok(Source {
        qualifier,
        kind: SourceKind::Table(table),
        at,
        columns: table.columns.clone(),
        offset: 0,
        row_filter,
        row_filter_names,
    })
}

fn resolve_position(as_of: AsOf, ctx: &QueryContext<'_>) -> Result<Position, QueryError> {
    let end = ctx.log.end();
    match as_of {
        AsOf::Position(position) => {
            if position >= end {
                return Err(QueryError::BeyondLog {
                    position,
                    last: end.checked_sub(1),
                });
            }
            Ok(position)
        }
        AsOf::Timestamp(nanos) => {
            let found = u64::try_from(nanos)
                .ok()
                .and_then(|nanos| ctx.log.position_at_timestamp(nanos));
            // The log's index may know a position its durable end does not yet include.
            found
                .map(|position| position.min(end.saturating_sub(1)))
                .ok_or(QueryError::BeforeLog(nanos))
        }
    }
}

fn plan_access(
    source: &Source<'_>,
    pins: &[&Expr],
    descending: bool,
    ctx: &QueryContext<'_>,
) -> Access {
    match &source.kind {
        SourceKind::Table(table) => {
            let key_columns: Vec<usize> = table
                .primary_key
                .iter()
                .map(|&index| source.offset + index)
                .collect();
            let key_types: Vec<ColumnType> = table
                .primary_key
                .iter()
                .map(|&index| table.columns[index].ty)
                .collect();
            let bound = source.offset;
            match KeyLookup::plan(pins, &key_columns, &key_types, &|column| column < bound) {
                Some(lookup) => Access::Lookup(lookup),
                None => Access::Scan,
            }
        }
        SourceKind::Log => {
            let (from, mut to) = position_range(pins, source.offset);
            to = to.min(ctx.log.end());
            if let Some(at) = source.at {
                to = to.min(at + 1);
            }
            Access::Log {
                from,
                to,
                descending,
                first_batch: LOG_READ_BATCH_RECORDS,
            }
        }
        SourceKind::Tables | SourceKind::Computed(_) => Access::Scan,
    }
}

/// The positions `[from, to)` that `position` comparisons with constants allow.
fn position_range(terms: &[&Expr], column: usize) -> (Position, Position) {
    let (mut from, mut to) = (0i128, i128::from(u64::MAX));
    let mut narrow = |op: expr::BinaryOp, n: i64| {
        let n = i128::from(n);
        match op {
            expr::BinaryOp::Eq => {
                from = from.max(n);
                to = to.min(n + 1);
            }
            expr::BinaryOp::Gt => from = from.max(n + 1),
            expr::BinaryOp::GtEq => from = from.max(n),
            expr::BinaryOp::Lt => to = to.min(n),
            expr::BinaryOp::LtEq => to = to.min(n + 1),
            _ => {}
        }
    };
    let flip = |op: expr::BinaryOp| match op {
        expr::BinaryOp::Gt => expr::BinaryOp::Lt,
        expr::BinaryOp::GtEq => expr::BinaryOp::LtEq,
        expr::BinaryOp::Lt => expr::BinaryOp::Gt,
        expr::BinaryOp::LtEq => expr::BinaryOp::GtEq,
        other => other,
    };
    for term in terms {
        match term {
            Expr::Binary { op, left, right } => match (&**left, &**right) {
                (Expr::Column(c), Expr::Literal(Value::Integer(n))) if *c == column => {
                    narrow(*op, *n)
                }
                (Expr::Literal(Value::Integer(n)), Expr::Column(c)) if *c == column => {
                    narrow(flip(*op), *n)
                }
                _ => {}
            },
            Expr::Between {
                expr,
                low,
                high,
                negated: false,
            } => {
                if let (
                    Expr::Column(c),
                    Expr::Literal(Value::Integer(low)),
                    Expr::Literal(Value::Integer(high)),
                ) = (&**expr, &**low, &**high)
                    && *c == column
                {
                    narrow(expr::BinaryOp::GtEq, *low);
                    narrow(expr::BinaryOp::LtEq, *high);
                }
            }
            _ => {}
        }
    }
    let clamp = |n: i128| n.clamp(0, i128::from(u64::MAX)) as u64;
    (clamp(from), clamp(to.max(from)))
}

/// Reads a whole source into memory (a later table of a join without a key path).
fn read_all(
    step: &Step<'_>,
    ctx: &QueryContext<'_>,
    stats: &mut QueryStats,
) -> Result<Vec<Row>, QueryError> {
    let mut rows = Vec::new();
    let mut full = false;
    stream(step, ctx, stats, &mut |row| {
        if rows.len() == QUERY_BUFFER_ROWS_MAX {
            full = true;
            return Ok(false);
        }
        rows.push(row);
        Ok(true)
    })?;
    if full {
        return Err(QueryError::BufferFull {
            max: QUERY_BUFFER_ROWS_MAX,
        });
    }
    Ok(rows)
}

/// Streams a source's rows (a scan, or the log range), ignoring key lookups.
fn stream(
    step: &Step<'_>,
    ctx: &QueryContext<'_>,
    stats: &mut QueryStats,
    visit: &mut dyn FnMut(Row) -> Result<bool, QueryError>,
) -> Result<bool, QueryError> {
    let source = &step.source;
    match (&source.kind, &step.access) {
        (SourceKind::Table(table), _) => {
            let mut failure = None;
            let mut go_on = true;
            ctx.views
                .scan(ctx.tenant, table.id, source.at, &mut |row| {
                    stats.rows_scanned += 1;
                    match visit(row) {
                        Ok(more) => go_on = more,
                        Err(error) => {
                            failure = Some(error);
                            go_on = false;
                        }
                    }
                    go_on
                })?;
            match failure {
                Some(error) => Err(error),
                None => Ok(go_on),
            }
        }
        (SourceKind::Computed(rows), _) => {
            for row in rows {
                if !visit(row.clone())? {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        (SourceKind::Tables, _) => {
            let history = ctx.catalog.table_history(ctx.tenant);
            for table in history
                .into_iter()
                .filter(|table| source.at.is_none_or(|at| table.created_at <= at))
            {
                if !visit(tables_row(table, source.at))? {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        (
            SourceKind::Log,
            Access::Log {
                from,
                to,
                descending,
                first_batch,
            },
        ) => {
            let (from, to) = (*from, *to);
            let mut batch = *first_batch as u64;
            if *descending {
                let mut high = to;
                while high > from {
                    let low = high.saturating_sub(batch).max(from);
                    for header in read_headers(ctx.log, low, high, stats)?.iter().rev() {
                        if !visit(log_row(header))? {
                            return Ok(false);
                        }
                    }
                    high = low;
                    batch = (batch * 2).min(LOG_READ_BATCH_RECORDS as u64);
                }
            } else {
                let mut low = from;
                while low < to {
                    let high = low.saturating_add(batch).min(to);
                    let headers = read_headers(ctx.log, low, high, stats)?;
                    if headers.is_empty() {
                        break;
                    }
                    for header in &headers {
                        if !visit(log_row(header))? {
                            return Ok(false);
                        }
                    }
                    low = high;
                    batch = (batch * 2).min(LOG_READ_BATCH_RECORDS as u64);
                }
            }
            Ok(true)
        }
        (SourceKind::Log, _) => unreachable!("a log source is always read by position range"),
    }
}

/// The headers `[from, to)`, however the log splits its answers.
fn read_headers(
    log: &dyn LogSource,
    from: Position,
    to: Position,
    stats: &mut QueryStats,
) -> Result<Vec<RecordHeader>, QueryError> {
    let mut headers = Vec::with_capacity((to - from) as usize);
    let mut next = from;
    while next < to {
        let batch = log
            .headers(next, (to - next) as usize)
            .map_err(QueryError::Log)?;
        let Some(last) = batch.last() else {
            break;
        };
        assert_eq!(
            batch[0].position, next,
            "the log answers from the position asked"
        );
        next = last.position + 1;
        stats.log_headers_read += batch.len() as u64;
        headers.extend(batch.into_iter().filter(|header| header.position < to));
    }
    Ok(headers)
}

/// The nested loops over the steps.
struct Run<'r, 'a> {
    ctx: &'r QueryContext<'a>,
    steps: &'r [Step<'a>],
}

type Sink<'s> = dyn FnMut(&Row) -> Result<bool, QueryError> + 's;

impl Run<'_, '_> {
    /// Feeds every joined row that passes all ON and WHERE terms to `sink`.
    fn join(
        &self,
        loose_filters: &[Expr],
        stats: &mut QueryStats,
        sink: &mut Sink<'_>,
    ) -> Result<(), QueryError> {
        if self.steps.is_empty() {
            // `SELECT 1 [WHERE …]`: one empty row.
            for filter in loose_filters {
                if !filter.matches(&[])? {
                    return Ok(());
                }
            }
            sink(&Vec::new())?;
            return Ok(());
        }
        let mut row = Vec::new();
        self.step(0, &mut row, stats, sink)?;
        Ok(())
    }

    fn step(
        &self,
        index: usize,
        row: &mut Row,
        stats: &mut QueryStats,
        sink: &mut Sink<'_>,
    ) -> Result<bool, QueryError> {
        let step = &self.steps[index];
        if let Access::Lookup(lookup) = &step.access
            && let Some(keys) = lookup.keys(row, QUERY_KEY_LOOKUPS_MAX)?
        {
            let SourceKind::Table(table) = step.source.kind else {
                unreachable!("lookups are for tables")
            };
            for key in keys {
                stats.key_lookups += 1;
                if let Some(found) =
                    self.ctx
                        .views
                        .get(self.ctx.tenant, table.id, &key, step.source.at)?
                    && !self.candidate(index, row, &found, stats, sink)?
                {
                    return Ok(false);
                }
            }
            return Ok(true);
        }
        if let Some(rows) = &step.rows {
            for found in rows {
                if !self.candidate(index, row, found, stats, sink)? {
                    return Ok(false);
                }
            }
            return Ok(true);
        }
        // The first table (or a lookup with too many keys): stream it. `stream` borrows the
        // stats, so this step's reads are counted in a local and added after.
        let mut local = QueryStats::default();
        let mut inner = QueryStats::default();
        let result = stream(step, self.ctx, &mut local, &mut |found| {
            self.candidate(index, row, &found, &mut inner, sink)
        });
        stats.rows_scanned += local.rows_scanned + inner.rows_scanned;
        stats.key_lookups += local.key_lookups + inner.key_lookups;
        stats.log_headers_read += local.log_headers_read + inner.log_headers_read;
        result
    }

    fn candidate(
        &self,
        index: usize,
        row: &mut Row,
        found: &[Value],
        stats: &mut QueryStats,
        sink: &mut Sink<'_>,
    ) -> Result<bool, QueryError> {
        let step = &self.steps[index];
        if let Some(filter) = &step.row_filter
            && !filter.matches(found)?
        {
            return Ok(true);
        }
        row.truncate(step.source.offset);
        row.extend_from_slice(found);
        if let Some(on) = &step.on
            && !on.matches(row)?
        {
            return Ok(true);
        }
        for filter in &step.filters {
            if !filter.matches(row)? {
                return Ok(true);
            }
        }
        if index + 1 == self.steps.len() {
            sink(row)
        } else {
            self.step(index + 1, row, stats, sink)
        }
    }
}

/// How a sort key is computed.
#[derive(Clone, Debug)]
enum SortKey {
    /// The select list's column.
    Output(usize),
    /// An expression over the joined (or grouped) row.
    Expr(Expr),
}

struct OrderKey {
    key: SortKey,
    descending: bool,
    nulls_first: Option<bool>,
}

/// One aggregate call of a grouped query.
struct AggregateCall {
    function: Aggregate,
    arg: Option<Expr>,
    ty: Option<ColumnType>,
}

/// The select list, ORDER BY and grouping of a query, compiled.
struct Projection {
    columns: Vec<(String, Option<ColumnType>)>,
    /// Over the joined row, or over the group row (`group keys ‖ aggregates`) when grouped.
    outputs: Vec<Expr>,
    order: Vec<OrderKey>,
    grouped: bool,
    group_keys: Vec<Expr>,
    aggregates: Vec<AggregateCall>,
    having: Option<Expr>,
}

fn output_name(expr: &ast::Expr) -> String {
    match expr {
        ast::Expr::Identifier(ident) => sql::normalize(ident),
        ast::Expr::CompoundIdentifier(parts) => {
            parts.last().map(sql::normalize).unwrap_or_default()
        }
        ast::Expr::Nested(inner) | ast::Expr::Cast { expr: inner, .. } => output_name(inner),
        ast::Expr::Function(function) => function.name.to_string().to_lowercase(),
        other => other.to_string(),
    }
}

fn strip_nested(expr: &ast::Expr) -> &ast::Expr {
    match expr {
        ast::Expr::Nested(inner) => strip_nested(inner),
        other => other,
    }
}

/// The scope of a grouped query's select list, HAVING and ORDER BY: the group keys and
/// the aggregates, nothing else.
struct GroupedScope<'a> {
    source: &'a Columns,
    group_exprs: &'a [ast::Expr],
    /// The source column each group key is, when it is a plain column.
    group_columns: Vec<Option<usize>>,
    group_types: Vec<Option<ColumnType>>,
    aggregate_exprs: &'a [ast::Expr],
    aggregate_types: Vec<Option<ColumnType>>,
}

impl Scope for GroupedScope<'_> {
    fn column(
        &self,
        qualifier: Option<&str>,
        name: &str,
    ) -> Result<(usize, ColumnType), ExprError> {
        let (index, ty) = self.source.column(qualifier, name)?;
        match self
            .group_columns
            .iter()
            .position(|column| *column == Some(index))
        {
            Some(group) => Ok((group, ty)),
            None => Err(ExprError::NotGrouped {
                column: qualifier.map_or_else(
                    || name.to_string(),
                    |qualifier| format!("{qualifier}.{name}"),
                ),
            }),
        }
    }

    fn computed(&self, expr: &ast::Expr) -> Result<Option<(usize, Option<ColumnType>)>, ExprError> {
        let expr = strip_nested(expr);
        if let Some(group) = self
            .group_exprs
            .iter()
            .position(|group| strip_nested(group) == expr)
        {
            return Ok(Some((group, self.group_types[group])));
        }
        if let Some(aggregate) = self
            .aggregate_exprs
            .iter()
            .position(|aggregate| aggregate == expr)
        {
            return Ok(Some((
                self.group_exprs.len() + aggregate,
                self.aggregate_types[aggregate],
            )));
        }
        Ok(None)
    }
}

impl Projection {
    fn plan(
        select: &Select,
        scope: &Columns,
        sources: &[Source<'_>],
        params: &[Value],
    ) -> Result<Projection, QueryError> {
        // Aggregates anywhere in the select list, HAVING or ORDER BY make the query grouped.
        let mut aggregate_exprs: Vec<&ast::Expr> = Vec::new();
        for item in &select.items {
            if let SelectItem::Expr { expr, .. } = item {
                expr::collect_aggregates(expr, &mut aggregate_exprs)?;
            }
        }
        if let Some(having) = &select.having {
            expr::collect_aggregates(having, &mut aggregate_exprs)?;
        }
        for item in &select.order_by {
            expr::collect_aggregates(&item.expr, &mut aggregate_exprs)?;
        }
        let grouped =
            !select.group_by.is_empty() || !aggregate_exprs.is_empty() || select.having.is_some();
        if !grouped {
            return Projection::plan_plain(select, scope, sources, params);
        }
        let aggregate_exprs: Vec<ast::Expr> = aggregate_exprs.into_iter().cloned().collect();
        // GROUP BY 2 and GROUP BY alias name select-list items.
        let group_exprs: Vec<ast::Expr> = select
            .group_by
            .iter()
            .map(|expr| resolve_output_reference(expr, select, scope))
            .collect::<Result<_, _>>()?;
        let mut group_keys = Vec::with_capacity(group_exprs.len());
        let mut group_columns = Vec::with_capacity(group_exprs.len());
        let mut group_types = Vec::with_capacity(group_exprs.len());
        for expr in &group_exprs {
            let typed = expr::compile(expr, scope, params)?;
            group_columns.push(match typed.expr {
                Expr::Column(index) => Some(index),
                _ => None,
            });
            group_types.push(typed.ty);
            group_keys.push(typed.expr);
        }
        let mut aggregates = Vec::with_capacity(aggregate_exprs.len());
        for call in &aggregate_exprs {
            let (function, arg) = expr::aggregate_call(call)?.expect("collected as an aggregate");
            let arg = arg
                .map(|arg| expr::compile(arg, scope, params))
                .transpose()?;
            let arg_ty = arg.as_ref().and_then(|arg| arg.ty);
            let numeric = matches!(arg_ty, None | Some(ColumnType::BigInt | ColumnType::Double));
            let ty = match function {
                Aggregate::CountStar | Aggregate::Count => Some(ColumnType::BigInt),
                Aggregate::Sum | Aggregate::Avg if !numeric => {
                    return Err(ExprError::TypeMismatch {
                        expr: call.to_string(),
                        detail: format!(
                            "{} needs numbers, got {}",
                            function.name(),
                            arg_ty.map_or("NULL", ColumnType::sql_name)
                        ),
                    }
                    .into());
                }
                Aggregate::Sum => Some(arg_ty.unwrap_or(ColumnType::BigInt)),
                Aggregate::Avg => Some(ColumnType::Double),
                Aggregate::Min | Aggregate::Max => arg_ty,
            };
            aggregates.push(AggregateCall {
                function,
                arg: arg.map(|arg| arg.expr),
                ty,
            });
        }
        let grouped_scope = GroupedScope {
            source: scope,
            group_exprs: &group_exprs,
            group_columns,
            group_types,
            aggregate_exprs: &aggregate_exprs,
            aggregate_types: aggregates.iter().map(|aggregate| aggregate.ty).collect(),
        };
        let mut columns = Vec::new();
        let mut aliases = Vec::new();
        let mut outputs = Vec::new();
        for item in &select.items {
            match item {
                SelectItem::Wildcard | SelectItem::QualifiedWildcard(_) => {
                    return Err(QueryError::WildcardWithGroup);
                }
                SelectItem::Expr { expr, alias } => {
                    let typed = expr::compile(expr, &grouped_scope, params)?;
                    columns.push((alias.clone().unwrap_or_else(|| output_name(expr)), typed.ty));
                    aliases.push(alias.clone());
                    outputs.push(typed.expr);
                }
            }
        }
        let having = select
            .having
            .as_ref()
            .map(|having| expr::compile_condition(having, &grouped_scope, params, "HAVING"))
            .transpose()?;
        let order = order_keys(&select.order_by, &columns, &aliases, &grouped_scope, params)?;
        Ok(Projection {
            columns,
            outputs,
            order,
            grouped: true,
            group_keys,
            aggregates,
            having,
        })
    }

    fn plan_plain(
        select: &Select,
        scope: &Columns,
        sources: &[Source<'_>],
        params: &[Value],
    ) -> Result<Projection, QueryError> {
        let mut columns = Vec::new();
        let mut aliases = Vec::new();
        let mut outputs = Vec::new();
        let push_source = |source: &Source<'_>,
                           columns: &mut Vec<(String, Option<ColumnType>)>,
                           aliases: &mut Vec<Option<String>>,
                           outputs: &mut Vec<Expr>| {
            for (index, column) in source.columns.iter().enumerate() {
                columns.push((column.name.clone(), Some(column.ty)));
                aliases.push(None);
                outputs.push(Expr::Column(source.offset + index));
            }
        };
        for item in &select.items {
            match item {
                SelectItem::Wildcard => {
                    for source in sources {
                        push_source(source, &mut columns, &mut aliases, &mut outputs);
                    }
                }
                SelectItem::QualifiedWildcard(qualifier) => {
                    let source = sources
                        .iter()
                        .find(|source| &source.qualifier == qualifier)
                        .ok_or_else(|| ExprError::UnknownQualifier {
                            qualifier: qualifier.clone(),
                            column: "*".to_string(),
                            available: sources
                                .iter()
                                .map(|s| s.qualifier.as_str())
                                .collect::<Vec<_>>()
                                .join(", "),
                        })?;
                    push_source(source, &mut columns, &mut aliases, &mut outputs);
                }
                SelectItem::Expr { expr, alias } => {
                    let typed = expr::compile(expr, scope, params)?;
                    columns.push((alias.clone().unwrap_or_else(|| output_name(expr)), typed.ty));
                    aliases.push(alias.clone());
                    outputs.push(typed.expr);
                }
            }
        }
        let order = order_keys(&select.order_by, &columns, &aliases, scope, params)?;
        Ok(Projection {
            columns,
            outputs,
            order,
            grouped: false,
            group_keys: Vec::new(),
            aggregates: Vec::new(),
            having: None,
        })
    }

    /// The select list's values and the sort keys of one (joined or group) row.
    fn output(&self, row: &[Value]) -> Result<(Vec<Value>, Row), QueryError> {
        let output = self
            .outputs
            .iter()
            .map(|expr| expr.eval(row))
            .collect::<Result<Row, _>>()?;
        let keys = self
            .order
            .iter()
            .map(|order| match &order.key {
                SortKey::Output(index) => Ok(output[*index].clone()),
                SortKey::Expr(expr) => expr.eval(row),
            })
            .collect::<Result<Vec<Value>, _>>()?;
        Ok((keys, output))
    }

    /// The column an ORDER BY starts with, if it is one plain column: `Some(descending)`
    /// when that column is `column`.
    fn order_starts_with(&self, column: usize) -> Option<bool> {
        let first = self.order.first()?;
        (self.sort_column(&first.key) == Some(column)).then_some(first.descending)
    }

    fn sort_column(&self, key: &SortKey) -> Option<usize> {
        match key {
            SortKey::Expr(Expr::Column(column)) => Some(*column),
            SortKey::Output(index) => match &self.outputs[*index] {
                Expr::Column(column) => Some(*column),
                _ => None,
            },
            SortKey::Expr(_) => None,
        }
    }

    /// Whether rows already arrive in ORDER BY order: one table read in primary-key order
    /// with the ORDER BY a prefix of the key, ascending; or the log ordered by position.
    fn presorted(&self, steps: &[Step<'_>]) -> bool {
        if self.order.is_empty() {
            return true;
        }
        let [step] = steps else {
            return false;
        };
        if self.grouped {
            return false;
        }
        match (&step.source.kind, &step.access) {
            (SourceKind::Table(table), Access::Lookup(_) | Access::Scan) => self
                .order
                .iter()
                .zip(&table.primary_key)
                .all(|(order, &key)| {
                    !order.descending
                        && self.sort_column(&order.key) == Some(step.source.offset + key)
                }),
            // Positions are unique, so the first key decides the whole order.
            (SourceKind::Log, Access::Log { descending, .. }) => {
                self.order_starts_with(step.source.offset) == Some(*descending)
                    && self.order[0].nulls_first.is_none()
            }
            _ => false,
        }
    }
}

/// `GROUP BY 2` / `GROUP BY alias` → the select-list expression it names.
fn resolve_output_reference(
    expr: &ast::Expr,
    select: &Select,
    scope: &Columns,
) -> Result<ast::Expr, QueryError> {
    let items: Vec<(&ast::Expr, Option<&String>)> = select
        .items
        .iter()
        .filter_map(|item| match item {
            SelectItem::Expr { expr, alias } => Some((expr, alias.as_ref())),
            _ => None,
        })
        .collect();
    if let Some(ordinal) = integer_literal(expr) {
        let index = usize::try_from(ordinal)
            .ok()
            .filter(|&n| n >= 1 && n <= items.len());
        return index
            .map(|n| items[n - 1].0.clone())
            .ok_or(QueryError::BadOrdinal {
                clause: "GROUP BY",
                ordinal,
                columns: items.len(),
            });
    }
    if let ast::Expr::Identifier(ident) = expr {
        let name = sql::normalize(ident);
        // A column of that name wins over an alias, as in PostgreSQL's GROUP BY.
        if scope.column(None, &name).is_err()
            && let Some((item, _)) = items
                .iter()
                .find(|(_, alias)| alias.is_some_and(|alias| *alias == name))
        {
            return Ok((*item).clone());
        }
    }
    Ok(expr.clone())
}

fn integer_literal(expr: &ast::Expr) -> Option<i64> {
    match expr {
        ast::Expr::Value(value) => match &value.value {
            ast::Value::Number(text, _) if !text.contains(['.', 'e', 'E']) => text.parse().ok(),
            _ => None,
        },
        _ => None,
    }
}

/// ORDER BY items: an ordinal (`ORDER BY 2`), a select-list alias, or an expression over
/// the row (the joined row, or the group row of a grouped query).
fn order_keys(
    items: &[OrderItem],
    columns: &[(String, Option<ColumnType>)],
    aliases: &[Option<String>],
    scope: &dyn Scope,
    params: &[Value],
) -> Result<Vec<OrderKey>, QueryError> {
    assert_eq!(columns.len(), aliases.len());
    items
        .iter()
        .map(|item| {
            let key = if let Some(ordinal) = integer_literal(&item.expr) {
                let index = usize::try_from(ordinal)
                    .ok()
                    .filter(|&n| n >= 1 && n <= columns.len());
                let bad = QueryError::BadOrdinal {
                    clause: "ORDER BY",
                    ordinal,
                    columns: columns.len(),
                };
                SortKey::Output(index.ok_or(bad)? - 1)
            } else if let ast::Expr::Identifier(ident) = &item.expr
                && let Some(index) = aliases
                    .iter()
                    .position(|alias| alias.as_ref() == Some(&sql::normalize(ident)))
            {
                // An alias comes first for a bare name, as in PostgreSQL.
                SortKey::Output(index)
            } else {
                SortKey::Expr(expr::compile(&item.expr, scope, params)?.expr)
            };
            Ok(OrderKey {
                key,
                descending: item.descending,
                nulls_first: item.nulls_first,
            })
        })
        .collect()
}

fn compare_sort_keys(order: &[OrderKey], left: &[Value], right: &[Value]) -> Ordering {
    for ((key, a), b) in order.iter().zip(left).zip(right) {
        let ordering = match (a.is_null(), b.is_null(), key.nulls_first) {
            (true, false, Some(first)) => {
                if first {
                    Ordering::Less
                } else {
                    Ordering::Greater
                }
            }
            (false, true, Some(first)) => {
                if first {
                    Ordering::Greater
                } else {
                    Ordering::Less
                }
            }
            _ => {
                let ordering = a.total_cmp(b);
                if key.descending {
                    ordering.reverse()
                } else {
                    ordering
                }
            }
        };
        if ordering != Ordering::Equal {
            return ordering;
        }
    }
    Ordering::Equal
}

/// Collects output rows: DISTINCT, and either streaming OFFSET/LIMIT or a sort at the end.
struct Collector {
    sort: bool,
    distinct: Option<BTreeSet<OrderedKey>>,
    offset: usize,
    limit: Option<usize>,
    skipped: usize,
    rows: Vec<(Vec<Value>, Row)>,
}

impl Collector {
    fn new(sort: bool, distinct: bool, offset: usize, limit: Option<usize>) -> Collector {
        Collector {
            sort,
            distinct: distinct.then(BTreeSet::new),
            offset,
            limit,
            skipped: 0,
            rows: Vec::new(),
        }
    }

    /// Takes one output row; `Ok(false)` when no more are needed.
    fn push(&mut self, keys: Vec<Value>, row: Row) -> Result<bool, QueryError> {
        if let Some(seen) = &mut self.distinct {
            if !seen.insert(OrderedKey(row.clone())) {
                return Ok(true);
            }
            if seen.len() > QUERY_BUFFER_ROWS_MAX {
                return Err(QueryError::BufferFull {
                    max: QUERY_BUFFER_ROWS_MAX,
                });
            }
        }
        if self.sort {
            if self.rows.len() == QUERY_BUFFER_ROWS_MAX {
                return Err(QueryError::BufferFull {
                    max: QUERY_BUFFER_ROWS_MAX,
                });
            }
            self.rows.push((keys, row));
            return Ok(true);
        }
        if self.limit.is_some_and(|limit| self.rows.len() >= limit) {
            return Ok(false);
        }
        if self.skipped < self.offset {
            self.skipped += 1;
            return Ok(true);
        }
        self.rows.push((Vec::new(), row));
        self.check_size()?;
        Ok(self.limit.is_none_or(|limit| self.rows.len() < limit))
    }

    fn check_size(&self) -> Result<(), QueryError> {
        let cap = if self.limit.is_some() {
            QUERY_BUFFER_ROWS_MAX
        } else {
            QUERY_ROWS_MAX
        };
        if self.rows.len() > cap {
            return Err(if self.limit.is_some() {
                QueryError::BufferFull {
                    max: QUERY_BUFFER_ROWS_MAX,
                }
            } else {
                QueryError::TooManyRows {
                    max: QUERY_ROWS_MAX,
                }
            });
        }
        Ok(())
    }

    fn finish(mut self, order: &[OrderKey]) -> Result<Vec<Row>, QueryError> {
        if self.sort {
            // Stable: equal keys keep the read order, which is deterministic.
            self.rows
                .sort_by(|(a, _), (b, _)| compare_sort_keys(order, a, b));
            let limit = self.limit.unwrap_or(usize::MAX);
            self.rows = self
                .rows
                .into_iter()
                .skip(self.offset)
                .take(limit)
                .collect();
            self.check_size()?;
        }
        Ok(self.rows.into_iter().map(|(_, row)| row).collect())
    }
}

/// An aggregate's running state.
#[derive(Clone, Debug)]
enum Accumulator {
    Count(i64),
    SumInteger(Option<i64>),
    SumReal(Option<f64>),
    Min(Option<Value>),
    Max(Option<Value>),
    Avg {
        integers: i128,
        reals: f64,
        count: i64,
    },
}

impl Accumulator {
    fn new(call: &AggregateCall) -> Accumulator {
        match call.function {
            Aggregate::CountStar | Aggregate::Count => Accumulator::Count(0),
            Aggregate::Sum if call.ty == Some(ColumnType::Double) => Accumulator::SumReal(None),
            Aggregate::Sum => Accumulator::SumInteger(None),
            Aggregate::Min => Accumulator::Min(None),
            Aggregate::Max => Accumulator::Max(None),
            Aggregate::Avg => Accumulator::Avg {
                integers: 0,
                reals: 0.0,
                count: 0,
            },
        }
    }

    fn add(&mut self, call: &AggregateCall, row: &[Value]) -> Result<(), QueryError> {
        let Some(arg) = &call.arg else {
            if let Accumulator::Count(count) = self {
                *count += 1;
            }
            return Ok(());
        };
        let value = arg.eval(row)?;
        if value.is_null() {
            return Ok(());
        }
        match (self, value) {
            (Accumulator::Count(count), _) => *count += 1,
            (Accumulator::SumInteger(sum), Value::Integer(n)) => {
                let total = sum.unwrap_or(0);
                *sum = Some(total.checked_add(n).ok_or(ExprError::Overflow {
                    left: total,
                    op: "+",
                    right: n,
                })?);
            }
            (Accumulator::SumReal(sum), Value::Real(x)) => *sum = Some(sum.unwrap_or(0.0) + x),
            (Accumulator::SumReal(sum), Value::Integer(n)) => {
                *sum = Some(sum.unwrap_or(0.0) + n as f64)
            }
            (Accumulator::Min(best), value) => {
                if best
                    .as_ref()
                    .is_none_or(|best| expr::compare(&value, best) == Some(Ordering::Less))
                {
                    *best = Some(value);
                }
            }
            (Accumulator::Max(best), value) => {
                if best
                    .as_ref()
                    .is_none_or(|best| expr::compare(&value, best) == Some(Ordering::Greater))
                {
                    *best = Some(value);
                }
            }
            (
                Accumulator::Avg {
                    integers, count, ..
                },
                Value::Integer(n),
            ) => {
                *integers += i128::from(n);
                *count += 1;
            }
            (Accumulator::Avg { reals, count, .. }, Value::Real(x)) => {
                *reals += x;
                *count += 1;
            }
            (accumulator, value) => unreachable!("type-checked: {accumulator:?} of {value:?}"),
        }
        Ok(())
    }

    fn finish(self) -> Value {
        match self {
            Accumulator::Count(count) => Value::Integer(count),
            Accumulator::SumInteger(sum) => sum.map_or(Value::Null, Value::Integer),
            Accumulator::SumReal(sum) => sum.map_or(Value::Null, Value::Real),
            Accumulator::Min(best) | Accumulator::Max(best) => best.unwrap_or(Value::Null),
            Accumulator::Avg { count: 0, .. } => Value::Null,
            Accumulator::Avg {
                integers,
                reals,
                count,
            } => Value::Real((integers as f64 + reals) / count as f64),
        }
    }
}

/// The groups of a grouped query, in group-key order.
struct Groups<'p> {
    projection: &'p Projection,
    groups: BTreeMap<OrderedKey, Vec<Accumulator>>,
}

impl<'p> Groups<'p> {
    fn new(projection: &'p Projection) -> Groups<'p> {
        let mut groups = BTreeMap::new();
        if projection.group_keys.is_empty() {
            // Aggregates without GROUP BY give one row, even over no rows (COUNT(*) = 0).
            groups.insert(
                OrderedKey(Vec::new()),
                projection.aggregates.iter().map(Accumulator::new).collect(),
            );
        }
        Groups { projection, groups }
    }

    fn add(&mut self, row: &Row) -> Result<bool, QueryError> {
        let key = self
            .projection
            .group_keys
            .iter()
            .map(|expr| expr.eval(row))
            .collect::<Result<Vec<_>, _>>()?;
        let key = OrderedKey(key);
        if !self.groups.contains_key(&key) {
            if self.groups.len() == QUERY_BUFFER_ROWS_MAX {
                return Err(QueryError::BufferFull {
                    max: QUERY_BUFFER_ROWS_MAX,
                });
            }
            self.groups.insert(
                key.clone(),
                self.projection
                    .aggregates
                    .iter()
                    .map(Accumulator::new)
                    .collect(),
            );
        }
        let accumulators = self.groups.get_mut(&key).expect("inserted above");
        for (accumulator, call) in accumulators.iter_mut().zip(&self.projection.aggregates) {
            accumulator.add(call, row)?;
        }
        Ok(true)
    }

    fn finish(self, projection: &Projection, collector: &mut Collector) -> Result<(), QueryError> {
        for (key, accumulators) in self.groups {
            let mut row = key.0;
            row.extend(accumulators.into_iter().map(Accumulator::finish));
            if let Some(having) = &projection.having
                && !having.matches(&row)?
            {
                continue;
            }
            let (keys, output) = projection.output(&row)?;
            if !collector.push(keys, output)? {
                break;
            }
        }
        Ok(())
    }
}
