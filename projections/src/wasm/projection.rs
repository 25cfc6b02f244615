//! Projections: deploy (compile, check exports, describe), and `apply` with faults that
//! are the same on every replica.

use super::bindings::projection::kimberlite::projection::types as wit;
use super::bindings::projection::{Projection, ProjectionPre};
use super::convert::{column_type_from_wit, type_name, value_from_wit, wit_value_type};
use super::digest::{encode_values, key_bytes};
use super::engine::{Engine, HostState, HostStop, ViewAccess, World, check_key};
use super::limits::Limits;
use super::{DeployError, Event, ModuleId};
use kimberlite_kernel::{Column, Position, Row, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex};

/// A table a projection maintains, as it described it at deploy (checked: unique
/// names, a non-empty primary key of existing, NOT NULL columns).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewTable {
    pub name: String,
    pub columns: Vec<Column>,
    pub primary_key: Vec<String>,
    /// Positions of the key columns in a row, in key order.
    pub key_positions: Vec<usize>,
}

impl ViewTable {
    /// The key of a full row of this table.
    pub fn key_of(&self, row: &[Value]) -> Vec<Value> {
        assert_eq!(
            row.len(),
            self.columns.len(),
            "row of the wrong arity for `{}`",
            self.name
        );
        self.key_positions
            .iter()
            .map(|position| row[*position].clone())
            .collect()
    }
}

/// One change a projection made, checked against its table's schema.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// Insert or replace the full row (its key is `ViewTable::key_of(row)`).
    Upsert { table: String, row: Row },
    /// Delete the row with this primary key (a no-op when there is none).
    Remove { table: String, key: Vec<Value> },
}

impl Change {
    pub fn table(&self) -> &str {
        match self {
            Change::Upsert { table, .. } | Change::Remove { table, .. } => table,
        }
    }
}

/// The changes one event made, to be stored at its log position: a view read
/// `AS OF POSITION p` shows the changes of exactly the events at positions `<= p`.
#[derive(Clone, Debug, PartialEq)]
pub struct EventChanges {
    /// Log position of the event.
    pub position: Position,
    /// Never empty: events that changed nothing are left out. In the order they apply.
    pub changes: Vec<Change>,
}

/// Reads a projection's current rows: the view store, including changes of earlier
/// `apply` calls of the same uncommitted batch.
pub trait ViewLookup: Send + Sync {
    /// The row of `table` with primary key `key` (values in key order, already checked
    /// against the schema). `Err` is a storage failure: the call is abandoned with
    /// `ApplyError::View`, and the projection is *not* faulted.
    fn get(&self, table: &str, key: &[Value]) -> Result<Option<Row>, String>;
}

/// A projection stopped at an event. Deterministic: the same module, configuration,
/// limits and log give the same fault, at the same position, on every run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// Log position of the event the fault is attributed to.
    pub position: Position,
    pub kind: FaultKind,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "faulted at position {}: {}", self.position, self.kind)
    }
}

impl std::error::Error for Fault {}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// The guest trapped (a panic in a Rust guest, `unreachable`, a bad memory access).
    Trap {
        message: String,
    },
    /// `apply` returned `err(message)`.
    Rejected {
        message: String,
    },
    FuelExhausted {
        fuel_per_event_max: u64,
    },
    MemoryLimit {
        requested_bytes: usize,
        wasm_memory_bytes_max: usize,
    },
    TableLimit {
        requested_elements: usize,
        wasm_table_elements_max: usize,
    },
    TooManyChanges {
        changes: usize,
        changes_per_event_max: usize,
    },
    TooManyViewReads {
        view_reads_per_event_max: usize,
    },
    /// `view.get` on a table that is not the projection's, or with a malformed key.
    BadViewRead {
        message: String,
    },
    /// A change that does not fit the described schema.
    BadOutput {
        message: String,
    },
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FaultKind::Trap { message } => write!(f, "the module trapped: {message}"),
            FaultKind::Rejected { message } => write!(f, "apply returned an error: {message}"),
            FaultKind::FuelExhausted { fuel_per_event_max } => write!(
                f,
                "ran out of fuel (fuel_per_event_max = {fuel_per_event_max}); the module loops or does too much work per event"
            ),
            FaultKind::MemoryLimit {
                requested_bytes,
                wasm_memory_bytes_max,
            } => write!(
                f,
                "memory limit: linear memory would grow to {requested_bytes} bytes, past wasm_memory_bytes_max = {wasm_memory_bytes_max}"
            ),
            FaultKind::TableLimit {
                requested_elements,
                wasm_table_elements_max,
            } => write!(
                f,
                "table limit: a table would grow to {requested_elements} elements, past wasm_table_elements_max = {wasm_table_elements_max}"
            ),
            FaultKind::TooManyChanges {
                changes,
                changes_per_event_max,
            } => write!(
                f,
                "output limit: {changes} changes for one event, past changes_per_event_max = {changes_per_event_max}"
            ),
            FaultKind::TooManyViewReads {
                view_reads_per_event_max,
            } => write!(
                f,
                "more than view_reads_per_event_max = {view_reads_per_event_max} view reads for one event"
            ),
            FaultKind::BadViewRead { message } => write!(f, "bad view read: {message}"),
            FaultKind::BadOutput { message } => write!(f, "bad output: {message}"),
        }
    }
}

/// Why `apply` produced no changes.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ApplyError {
    /// The projection is faulted at `fault.position`; changes of the events before it
    /// are in `applied` (apply them, then record the fault).
    #[error("{fault}")]
    Faulted {
        fault: Fault,
        applied: Vec<EventChanges>,
    },
    /// The view store failed during a read: not the projection's fault, retry later.
    #[error("reading the view failed: {0}")]
    View(String),
}

/// A deployed projection: compiled, checked, described. Cheap to clone; `apply` may be
/// called from several threads at once (each call has its own instance).
#[derive(Clone)]
pub struct ProjectionModule {
    inner: Arc<ProjectionInner>,
}

struct ProjectionInner {
    id: ModuleId,
    engine: Engine,
    pre: ProjectionPre<HostState>,
    config: Arc<[u8]>,
    tables: Arc<[ViewTable]>,
    /// Fuel burnt by every call so far (the host meters it against a fuel/s quota).
    fuel_used: std::sync::atomic::AtomicU64,
}

impl fmt::Debug for ProjectionModule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProjectionModule")
            .field("id", &self.inner.id)
            .field("tables", &self.inner.tables)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Deploys a projection: `bytes` is a core module built with `kimberlite-guest` (made
    /// a component here) or a ready component; `config` is handed to the guest.
    pub fn load_projection(
        &self,
        bytes: &[u8],
        config: &[u8],
    ) -> Result<ProjectionModule, DeployError> {
        let limits = self.limits().clone();
        if config.len() > limits.config_bytes_max {
            return Err(DeployError::ConfigTooLarge {
                bytes: config.len(),
                config_bytes_max: limits.config_bytes_max,
            });
        }
        let (id, component) = self.compile(bytes, World::Projection)?;
        let instance_pre = self
            .inner
            .projection_linker
            .instantiate_pre(&component)
            .map_err(|error| DeployError::Invalid(format!("{error:#}")))?;
        let pre =
            ProjectionPre::new(instance_pre).map_err(|error| DeployError::MissingExports {
                world: World::Projection,
                message: format!("{error:#}"),
            })?;
        let config: Arc<[u8]> = Arc::from(config);

        let state = HostState::new(&limits, config.clone(), None);
        let mut store = self.store(World::Projection, state, limits.fuel_per_describe_max);
        let described = pre
            .instantiate(&mut store)
            .and_then(|instance| instance.call_describe(&mut store))
            .map_err(|error| DeployError::Describe(format!("{error:#}")))?;
        let tables = check_tables(described).map_err(DeployError::Describe)?;

        Ok(ProjectionModule {
            inner: Arc::new(ProjectionInner {
                id,
                engine: self.clone(),
                pre,
                config,
                tables: tables.into(),
                fuel_used: std::sync::atomic::AtomicU64::new(0),
            }),
        })
    }
}

impl ProjectionModule {
    /// BLAKE3 of the deployed bytes.
    /// Fuel burnt by this module's calls since it was loaded.
    pub fn fuel_used(&self) -> u64 {
        self.inner
            .fuel_used
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn id(&self) -> ModuleId {
        self.inner.id
    }

    /// The tables this projection maintains.
    pub fn describe(&self) -> &[ViewTable] {
        &self.inner.tables
    }

    pub fn table(&self, name: &str) -> Option<&ViewTable> {
        self.inner.tables.iter().find(|table| table.name == name)
    }

    /// The limits of the engine that runs this module (`batch_events_max` cuts batches).
    pub fn limits(&self) -> &Limits {
        self.inner.engine.limits()
    }

    /// Applies `events` (in log order, at most `batch_events_max`) and returns, for each
    /// event that changed something, its changes in order, to apply to the view that
    /// `view` reads at the event's position.
    ///
    /// The guest returns one list per event; a result with another number of lists is
    /// `BadOutput`, and each list is held to the per-event bounds
    /// (`changes_per_event_max`) on its own.
    ///
    /// Reference semantics are one event per call: each event gets the full budget
    /// (fuel, memory, changes, view reads) in a fresh instance. A batch is an
    /// optimization — one call, one instance, one budget for all its events. When a batch
    /// fails for any reason, it is re-run one event per call and that run decides: the
    /// first event that fails alone is the fault, and the changes of the events before it
    /// are returned with it. So a fault never depends on how the log was cut into
    /// batches, and a fresh instance per call means no guest state survives a call.
    pub fn apply(
        &self,
        events: &[Event],
        view: &Arc<dyn ViewLookup>,
    ) -> Result<Vec<EventChanges>, ApplyError> {
        let limits = self.inner.engine.limits();
        assert!(
            events.len() <= limits.batch_events_max,
            "apply got {} events; the runner must cut batches at batch_events_max = {}",
            events.len(),
            limits.batch_events_max
        );
        assert!(
            events
                .windows(2)
                .all(|pair| pair[0].position < pair[1].position),
            "apply got events out of log order"
        );
        if events.is_empty() {
            return Ok(Vec::new());
        }
        match self.call(events, view.clone()) {
            Ok(changes) => Ok(changes),
            Err(CallError::View(message)) => Err(ApplyError::View(message)),
            Err(CallError::Fault(kind)) if events.len() == 1 => Err(ApplyError::Faulted {
                fault: Fault {
                    position: events[0].position,
                    kind,
                },
                applied: Vec::new(),
            }),
            Err(CallError::Fault(_)) => self.apply_one_by_one(events, view),
        }
    }

    fn apply_one_by_one(
        &self,
        events: &[Event],
        view: &Arc<dyn ViewLookup>,
    ) -> Result<Vec<EventChanges>, ApplyError> {
        let overlay = Arc::new(Overlay {
            base: view.clone(),
            tables: self.inner.tables.clone(),
            pending: Mutex::new(BTreeMap::new()),
        });
        let overlay_view: Arc<dyn ViewLookup> = overlay.clone();
        let mut applied = Vec::new();
        for event in events {
            match self.call(std::slice::from_ref(event), overlay_view.clone()) {
                Ok(changes) => {
                    for event in &changes {
                        overlay.record(&event.changes);
                    }
                    applied.extend(changes);
                }
                Err(CallError::View(message)) => return Err(ApplyError::View(message)),
                Err(CallError::Fault(kind)) => {
                    return Err(ApplyError::Faulted {
                        fault: Fault {
                            position: event.position,
                            kind,
                        },
                        applied,
                    });
                }
            }
        }
        Ok(applied)
    }

    /// One guest call in a fresh instance.
    fn call(
        &self,
        events: &[Event],
        view: Arc<dyn ViewLookup>,
    ) -> Result<Vec<EventChanges>, CallError> {
        let engine = &self.inner.engine;
        let limits = engine.limits();
        let access = ViewAccess {
            lookup: view,
            tables: self.inner.tables.clone(),
            reads: 0,
            reads_max: limits.view_reads_per_event_max,
            storage_error: None,
        };
        let state = HostState::new(limits, self.inner.config.clone(), Some(access));
        let mut store = engine.store(World::Projection, state, limits.fuel_per_event_max);
        let result = self
            .inner
            .pre
            .instantiate(&mut store)
            .and_then(|instance: Projection| instance.call_apply(&mut store, events));
        let burnt = limits.fuel_per_event_max - store.get_fuel().unwrap_or(0);
        self.inner
            .fuel_used
            .fetch_add(burnt, std::sync::atomic::Ordering::Relaxed);
        if let Some(message) = store.data_mut().take_view_error() {
            return Err(CallError::View(message));
        }
        let lists = match result {
            Ok(Ok(lists)) => lists,
            Ok(Err(message)) => return Err(CallError::Fault(FaultKind::Rejected { message })),
            Err(error) => {
                return Err(CallError::Fault(fault_of(
                    &error,
                    limits.fuel_per_event_max,
                )));
            }
        };
        check_output(&self.inner.tables, limits, events, lists).map_err(CallError::Fault)
    }
}

/// The guest's answer for `events`, checked and converted: one list per event, each
/// within the per-event bounds and the schema. Events without changes are dropped.
fn check_output(
    tables: &[ViewTable],
    limits: &Limits,
    events: &[Event],
    lists: Vec<Vec<wit::Change>>,
) -> Result<Vec<EventChanges>, FaultKind> {
    if lists.len() != events.len() {
        return Err(FaultKind::BadOutput {
            message: format!(
                "apply returned {} change lists for {} events; the contract is one list per event, in event order",
                lists.len(),
                events.len()
            ),
        });
    }
    // Bounds first, for every event, before converting anything: a flood is refused
    // without copying it.
    if let Some(list) = lists
        .iter()
        .find(|list| list.len() > limits.changes_per_event_max)
    {
        return Err(FaultKind::TooManyChanges {
            changes: list.len(),
            changes_per_event_max: limits.changes_per_event_max,
        });
    }
    let mut checked = Vec::with_capacity(events.len());
    for (event, list) in events.iter().zip(lists) {
        if list.is_empty() {
            continue;
        }
        let mut changes = Vec::with_capacity(list.len());
        for (index, change) in list.into_iter().enumerate() {
            let change = check_change(tables, change, limits.row_bytes_max).map_err(|message| {
                FaultKind::BadOutput {
                    message: format!(
                        "change {index} of the event at position {}: {message}",
                        event.position
                    ),
                }
            })?;
            changes.push(change);
        }
        checked.push(EventChanges {
            position: event.position,
            changes,
        });
    }
    Ok(checked)
}

enum CallError {
    Fault(FaultKind),
    View(String),
}

/// Classifies a failed guest call. Host-imposed stops carry their own error; fuel is a
/// wasmtime trap code; anything else is the guest's own trap.
pub(crate) fn fault_of(error: &wasmtime::Error, fuel_max: u64) -> FaultKind {
    if let Some(stop) = error.downcast_ref::<HostStop>() {
        return match stop.clone() {
            HostStop::Memory {
                requested_bytes,
                wasm_memory_bytes_max,
            } => FaultKind::MemoryLimit {
                requested_bytes,
                wasm_memory_bytes_max,
            },
            HostStop::Table {
                requested_elements,
                wasm_table_elements_max,
            } => FaultKind::TableLimit {
                requested_elements,
                wasm_table_elements_max,
            },
            HostStop::TooManyViewReads {
                view_reads_per_event_max,
            } => FaultKind::TooManyViewReads {
                view_reads_per_event_max,
            },
            HostStop::BadViewRead(message) => FaultKind::BadViewRead { message },
            // Storage errors are taken out of the store before classification.
            HostStop::Storage(message) => FaultKind::Trap { message },
        };
    }
    match error.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::OutOfFuel) => FaultKind::FuelExhausted {
            fuel_per_event_max: fuel_max,
        },
        Some(trap) => FaultKind::Trap {
            message: trap_message(trap, error),
        },
        None => FaultKind::Trap {
            message: format!("{error:#}"),
        },
    }
}

/// The trap and where it happened (the Wasm backtrace is deterministic for one module).
pub(crate) fn trap_message(trap: &wasmtime::Trap, error: &wasmtime::Error) -> String {
    match error.downcast_ref::<wasmtime::WasmBacktrace>() {
        Some(backtrace) => {
            let frames: Vec<String> = backtrace
                .frames()
                .iter()
                .take(4)
                .map(|frame| match frame.func_name() {
                    Some(name) => name.to_string(),
                    None => format!("function #{}", frame.func_index()),
                })
                .collect();
            format!("{trap} (in {})", frames.join(" ← "))
        }
        None => trap.to_string(),
    }
}

/// The describe answer, checked and converted.
fn check_tables(described: Vec<wit::Table>) -> Result<Vec<ViewTable>, String> {
    use super::limits::{COLUMNS_PER_TABLE_MAX, NAME_BYTES_MAX, TABLES_PER_PROJECTION_MAX};
    if described.is_empty() {
        return Err("describe returned no tables; a projection maintains at least one".into());
    }
    if described.len() > TABLES_PER_PROJECTION_MAX {
        return Err(format!(
            "describe returned {} tables, past tables_per_projection_max = {TABLES_PER_PROJECTION_MAX}",
            described.len()
        ));
    }
    let mut names = BTreeSet::new();
    let mut tables = Vec::with_capacity(described.len());
    for table in described {
        check_name(&table.name, "table", NAME_BYTES_MAX)?;
        if !names.insert(table.name.clone()) {
            return Err(format!("table `{}` is described twice", table.name));
        }
        if table.columns.is_empty() || table.columns.len() > COLUMNS_PER_TABLE_MAX {
            return Err(format!(
                "table `{}` has {} columns; between 1 and columns_per_table_max = {COLUMNS_PER_TABLE_MAX} are allowed",
                table.name,
                table.columns.len()
            ));
        }
        let mut columns = Vec::with_capacity(table.columns.len());
        for column in &table.columns {
            check_name(
                &column.name,
                &format!("column of `{}`", table.name),
                NAME_BYTES_MAX,
            )?;
            if columns.iter().any(|seen: &Column| seen.name == column.name) {
                return Err(format!(
                    "table `{}` has column `{}` twice",
                    table.name, column.name
                ));
            }
            columns.push(Column {
                name: column.name.clone(),
                ty: column_type_from_wit(column.ty),
                nullable: column.nullable,
            });
        }
        if table.primary_key.is_empty() {
            return Err(format!("table `{}` has no primary key", table.name));
        }
        let mut key_positions = Vec::with_capacity(table.primary_key.len());
        for key in &table.primary_key {
            let position = columns
                .iter()
                .position(|column| &column.name == key)
                .ok_or_else(|| {
                    format!(
                        "primary key column `{key}` of `{}` is not a column",
                        table.name
                    )
                })?;
            if columns[position].nullable {
                return Err(format!(
                    "primary key column `{key}` of `{}` is nullable; key columns must be NOT NULL",
                    table.name
                ));
            }
            if key_positions.contains(&position) {
                return Err(format!(
                    "primary key of `{}` names `{key}` twice",
                    table.name
                ));
            }
            key_positions.push(position);
        }
        tables.push(ViewTable {
            name: table.name,
            columns,
            primary_key: table.primary_key,
            key_positions,
        });
    }
    Ok(tables)
}

pub(crate) fn check_name(name: &str, what: &str, bytes_max: usize) -> Result<(), String> {
    let plain = name
        .chars()
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !plain || name.len() > bytes_max {
        return Err(format!(
            "{what} name `{name}` must be 1 to {bytes_max} ASCII letters, digits or `_`, not starting with a digit"
        ));
    }
    Ok(())
}

/// One guest change, checked against the schema and converted.
fn check_change(
    tables: &[ViewTable],
    change: wit::Change,
    row_bytes_max: usize,
) -> Result<Change, String> {
    let (table_name, values, is_upsert) = match change {
        wit::Change::Upsert(upsert) => (upsert.table, upsert.row, true),
        wit::Change::Remove(removal) => (removal.table, removal.key, false),
    };
    let Some(table) = tables.iter().find(|table| table.name == table_name) else {
        return Err(format!(
            "unknown table `{table_name}`; this projection's tables are {}",
            tables
                .iter()
                .map(|table| format!("`{}`", table.name))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    };
    if is_upsert {
        if values.len() != table.columns.len() {
            return Err(format!(
                "upsert into `{table_name}` has {} values for {} columns",
                values.len(),
                table.columns.len()
            ));
        }
        for (value, column) in values.iter().zip(&table.columns) {
            let ty = wit_value_type(value);
            match ty {
                None if column.nullable => {}
                None => {
                    return Err(format!(
                        "upsert into `{table_name}`: column `{}` is NOT NULL but the value is NULL",
                        column.name
                    ));
                }
                Some(ty) if ty == column.ty => {}
                Some(_) => {
                    return Err(format!(
                        "upsert into `{table_name}`: column `{}` is {} but the value is {}",
                        column.name,
                        column.ty,
                        type_name(ty)
                    ));
                }
            }
        }
    } else {
        check_key(table, &values)
            .map_err(|reason| format!("remove from `{table_name}`: {reason}"))?;
    }
    let values: Vec<Value> = values.into_iter().map(value_from_wit).collect();
    let mut encoded = Vec::new();
    encode_values(&values, &mut encoded);
    if encoded.len() > row_bytes_max {
        return Err(format!(
            "a row of `{table_name}` of {} bytes, past row_bytes_max = {row_bytes_max}",
            encoded.len()
        ));
    }
    Ok(if is_upsert {
        Change::Upsert {
            table: table_name,
            row: values,
        }
    } else {
        Change::Remove {
            table: table_name,
            key: values,
        }
    })
}

/// (table, encoded key) → row after the re-run so far (None: removed).
type PendingRows = BTreeMap<(String, Vec<u8>), Option<Row>>;

/// The caller's view plus the changes of the events already re-run one by one.
struct Overlay {
    base: Arc<dyn ViewLookup>,
    tables: Arc<[ViewTable]>,
    pending: Mutex<PendingRows>,
}

impl Overlay {
    fn record(&self, changes: &[Change]) {
        let mut pending = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for change in changes {
            match change {
                Change::Upsert { table, row } => {
                    let schema = self
                        .tables
                        .iter()
                        .find(|candidate| &candidate.name == table)
                        .expect("changes were checked against the schema");
                    let key = key_bytes(&schema.key_of(row));
                    pending.insert((table.clone(), key), Some(row.clone()));
                }
                Change::Remove { table, key } => {
                    pending.insert((table.clone(), key_bytes(key)), None);
                }
            }
        }
    }
}

impl ViewLookup for Overlay {
    fn get(&self, table: &str, key: &[Value]) -> Result<Option<Row>, String> {
        let pending = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(row) = pending.get(&(table.to_owned(), key_bytes(key))) {
            return Ok(row.clone());
        }
        drop(pending);
        self.base.get(table, key)
    }
}

/// Converts a log record into the event a projection sees.
pub fn event_from_record(record: &kimberlite_log::Record) -> Event {
    let meta = &record.header.meta;
    Event {
        position: record.header.position,
        timestamp_ns: meta.timestamp_ns,
        stream: meta.stream.clone(),
        event_type: meta.event_type.clone(),
        payload: record.payload.clone(),
        principal: meta.principal.clone(),
        reason: (!meta.reason.is_empty()).then(|| meta.reason.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kimberlite_kernel::ColumnType;

    fn balances() -> Vec<ViewTable> {
        let table = wit::Table {
            name: "balances".into(),
            columns: vec![
                wit::Column {
                    name: "account".into(),
                    ty: wit::ColumnType::Text,
                    nullable: false,
                },
                wit::Column {
                    name: "balance".into(),
                    ty: wit::ColumnType::Bigint,
                    nullable: false,
                },
                wit::Column {
                    name: "note".into(),
                    ty: wit::ColumnType::Text,
                    nullable: true,
                },
            ],
            primary_key: vec!["account".into()],
        };
        check_tables(vec![table]).expect("a valid schema")
    }

    fn upsert(table: &str, row: Vec<wit::Value>) -> wit::Change {
        wit::Change::Upsert(wit::RowUpsert {
            table: table.into(),
            row,
        })
    }

    fn remove(table: &str, key: Vec<wit::Value>) -> wit::Change {
        wit::Change::Remove(wit::RowRemoval {
            table: table.into(),
            key,
        })
    }

    fn text(value: &str) -> wit::Value {
        wit::Value::Text(value.into())
    }

    #[test]
    fn guest_output_is_checked_against_the_schema() {
        let tables = balances();
        assert_eq!(tables[0].key_positions, vec![0]);
        assert_eq!(tables[0].columns[1].ty, ColumnType::BigInt);
        let check = |change| check_change(&tables, change, 64).map(|_| ());
        let cases: Vec<(wit::Change, Result<(), &str>)> = vec![
            (
                upsert(
                    "balances",
                    vec![text("a1"), wit::Value::Integer(5), wit::Value::Null],
                ),
                Ok(()),
            ),
            (remove("balances", vec![text("a1")]), Ok(())),
            (
                upsert("ledger", vec![text("a1")]),
                Err("unknown table `ledger`; this projection's tables are `balances`"),
            ),
            (
                upsert("balances", vec![text("a1"), wit::Value::Integer(5)]),
                Err("upsert into `balances` has 2 values for 3 columns"),
            ),
            (
                upsert("balances", vec![text("a1"), text("5"), wit::Value::Null]),
                Err("upsert into `balances`: column `balance` is BIGINT but the value is TEXT"),
            ),
            (
                upsert(
                    "balances",
                    vec![wit::Value::Null, wit::Value::Integer(5), wit::Value::Null],
                ),
                Err("upsert into `balances`: column `account` is NOT NULL but the value is NULL"),
            ),
            (
                remove("balances", vec![]),
                Err("remove from `balances`: 0 values for a primary key of 1 columns (account)"),
            ),
            (
                remove("balances", vec![wit::Value::Integer(1)]),
                Err("remove from `balances`: key column `account` is TEXT but the value is BIGINT"),
            ),
            (
                upsert(
                    "balances",
                    vec![
                        text(&"x".repeat(100)),
                        wit::Value::Integer(5),
                        wit::Value::Null,
                    ],
                ),
                Err("a row of `balances` of 123 bytes, past row_bytes_max = 64"),
            ),
        ];
        for (change, expected) in cases {
            let description = format!("{change:?}");
            assert_eq!(
                check(change),
                expected.map_err(str::to_owned),
                "{description}"
            );
        }
    }

    fn event(position: Position) -> Event {
        Event {
            position,
            timestamp_ns: 0,
            stream: "s".into(),
            event_type: "E".into(),
            payload: Vec::new(),
            principal: "p".into(),
            reason: None,
        }
    }

    #[test]
    fn guest_output_has_one_list_per_event_each_within_the_per_event_bounds() {
        let tables = balances();
        let limits = Limits {
            changes_per_event_max: 2,
            ..Limits::default()
        };
        let events = [event(3), event(5), event(9)];
        let row = |account: &str| vec![text(account), wit::Value::Integer(1), wit::Value::Null];
        let check = |lists: Vec<Vec<wit::Change>>| check_output(&tables, &limits, &events, lists);

        // Two changes at 3, none at 5 (left out), one at 9: three in the batch, past the
        // per-event bound of two, which holds per event.
        let checked = check(vec![
            vec![upsert("balances", row("a")), upsert("balances", row("b"))],
            vec![],
            vec![remove("balances", vec![text("a")])],
        ])
        .expect("valid output");
        let shape: Vec<_> = checked
            .iter()
            .map(|event| (event.position, event.changes.len()))
            .collect();
        assert_eq!(shape, vec![(3, 2), (9, 1)]);

        let bad = |message: &str| {
            Err(FaultKind::BadOutput {
                message: message.into(),
            })
        };
        assert_eq!(
            check(vec![vec![], vec![]]),
            bad(
                "apply returned 2 change lists for 3 events; the contract is one list per event, in event order"
            )
        );
        assert_eq!(
            check(vec![vec![]; 4]),
            bad(
                "apply returned 4 change lists for 3 events; the contract is one list per event, in event order"
            )
        );
        assert_eq!(
            check(vec![vec![], vec![upsert("balances", row("a")); 3], vec![]]),
            Err(FaultKind::TooManyChanges {
                changes: 3,
                changes_per_event_max: 2
            })
        );
        assert_eq!(
            check(vec![vec![], vec![], vec![upsert("ledger", row("a"))]]),
            bad(
                "change 0 of the event at position 9: unknown table `ledger`; this projection's tables are `balances`"
            )
        );
    }

    #[test]
    fn described_schemas_are_checked_at_deploy() {
        let column = |name: &str, nullable| wit::Column {
            name: name.into(),
            ty: wit::ColumnType::Text,
            nullable,
        };
        let table = |name: &str, columns, key: &[&str]| wit::Table {
            name: name.into(),
            columns,
            primary_key: key.iter().map(|k| (*k).to_owned()).collect(),
        };
        let cases: Vec<(Vec<wit::Table>, &str)> = vec![
            (
                vec![],
                "describe returned no tables; a projection maintains at least one",
            ),
            (
                vec![table("t", vec![column("a", false)], &[])],
                "table `t` has no primary key",
            ),
            (
                vec![table("t", vec![column("a", false)], &["b"])],
                "primary key column `b` of `t` is not a column",
            ),
            (
                vec![table("t", vec![column("a", true)], &["a"])],
                "primary key column `a` of `t` is nullable; key columns must be NOT NULL",
            ),
            (
                vec![table(
                    "t",
                    vec![column("a", false), column("a", false)],
                    &["a"],
                )],
                "table `t` has column `a` twice",
            ),
            (
                vec![
                    table("t", vec![column("a", false)], &["a"]),
                    table("t", vec![column("a", false)], &["a"]),
                ],
                "table `t` is described twice",
            ),
            (
                vec![table("drop table", vec![column("a", false)], &["a"])],
                "table name `drop table` must be 1 to 128 ASCII letters, digits or `_`, not starting with a digit",
            ),
        ];
        for (tables, expected) in cases {
            assert_eq!(check_tables(tables).unwrap_err(), expected);
        }
    }
}
