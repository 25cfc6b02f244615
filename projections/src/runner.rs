//! One step of a Wasm projection version over its tenant's log.
//!
//! A projection *version* is one deploy: `(tenant, version)`, where `version` is the log
//! position of its deploy record. Its view tables are store tables with ids the caller
//! gives ([`ViewTables`]). The host runs every deployed version in a background thread
//! and calls [`step`] in a loop; each call:
//!
//! 1. reads the version's [`ProjectionProgress`] and, from the same snapshot, the rows
//!    the projection reads ([`StoreLookup`]: only the runner writes these tables, so the
//!    snapshot is the state at the batch start);
//! 2. reads the log from `applied_end`: at most `batch_events_max` event records (other
//!    records — DDL, deploys, catalog — are skipped, and still advance `applied_end`),
//!    at most [`STEP_RECORDS_MAX`] records and about [`STEP_PAYLOAD_BYTES_MAX`] bytes of
//!    payload;
//! 3. applies the events and writes every change at its event's position, so a view
//!    read `AS OF POSITION p` is exact;
//! 4. commits the rows, the new digest and `applied_end` in one transaction: after a
//!    crash the version resumes where its last commit left it, so no event is applied
//!    twice or skipped. Durable or not, per the caller (views are derived: a lost
//!    non-durable commit is applied again from the log).
//!
//! A fault is recorded like progress (the changes before it, then `fault` with
//! `applied_end` at the fault position); a faulted version's later steps do nothing.
//! Every step is deterministic in what it commits: the same log gives the same rows,
//! digest and fault on every replica, however the steps were cut.
//!
//! **Architecture invariant:** the runner does no I/O but the log reader's and the view
//! store's, and reads no clock; when and how often to step is the host's business.

use crate::encoding;
use crate::store::{
    PROGRESS_FAULT_MESSAGE_BYTES_MAX, ProjectionProgress, ViewRead, ViewStore, ViewWrite,
};
use crate::wasm::{
    ApplyError, Change, Event, EventChanges, FaultKind, ProjectionModule, ViewDigest, ViewLookup,
    ViewTable, event_from_record,
};
use kimberlite_kernel::{Position, Row, RowStore, StoreError, TableId, TenantId, Value};
use kimberlite_log::{LogError, LogReader, RecordKind};
use std::collections::HashSet;
use std::sync::Arc;

/// Log records one step reads at most, events and skipped records together: a long run
/// of records the projection does not see still ends the step in bounded time.
pub const STEP_RECORDS_MAX: usize = 4_096;

/// Event payload bytes after which a step stops reading (it always takes at least one
/// event). The batch is copied into the guest's memory (`wasm_memory_bytes_max`), and
/// the host holds it while the guest runs.
pub const STEP_PAYLOAD_BYTES_MAX: usize = 8 << 20;

/// A projection version's tables: each described table with the store table id its
/// rows are kept under. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ViewTables {
    tables: Arc<[(TableId, ViewTable)]>,
}

impl ViewTables {
    /// `tables` must name each table once and give each its own id.
    pub fn new(tables: impl IntoIterator<Item = (TableId, ViewTable)>) -> ViewTables {
        let tables: Vec<(TableId, ViewTable)> = tables.into_iter().collect();
        for (index, (id, table)) in tables.iter().enumerate() {
            for (other_id, other) in &tables[..index] {
                assert_ne!(id, other_id, "two view tables with store table id {id}");
                assert_ne!(table.name, other.name, "view table `{}` twice", table.name);
            }
        }
        ViewTables {
            tables: tables.into(),
        }
    }

    /// The store table id and schema of the table named `name`.
    pub fn get(&self, name: &str) -> Option<(TableId, &ViewTable)> {
        self.tables
            .iter()
            .find(|(_, table)| table.name == name)
            .map(|(id, table)| (*id, table))
    }

    pub fn iter(&self) -> impl Iterator<Item = (TableId, &ViewTable)> {
        self.tables.iter().map(|(id, table)| (*id, table))
    }

    pub fn len(&self) -> usize {
        self.tables.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }
}

/// What a projection reads during `apply`: the current rows of its version's tables in
/// one view-store snapshot of one tenant.
#[derive(Debug)]
pub struct StoreLookup {
    read: ViewRead,
    tenant: TenantId,
    tables: ViewTables,
}

impl StoreLookup {
    pub fn new(read: ViewRead, tenant: TenantId, tables: ViewTables) -> StoreLookup {
        StoreLookup {
            read,
            tenant,
            tables,
        }
    }
}

impl ViewLookup for StoreLookup {
    fn get(&self, table: &str, key: &[Value]) -> Result<Option<Row>, String> {
        let Some((id, _)) = self.tables.get(table) else {
            return Err(format!(
                "table `{table}` is not one of this projection version's tables"
            ));
        };
        self.read
            .get(self.tenant, id, key, None)
            .map_err(|error| error.to_string())
    }
}

/// What one step did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepOutcome {
    /// The version's applied end (exclusive) after the step.
    pub applied_end: Position,
    /// Event records applied by this step.
    pub events: u64,
    /// No fault, and `applied_end` reached the `end` the step was given.
    pub caught_up: bool,
    /// The version's fault (position and message), found now or by an earlier step.
    pub fault: Option<(Position, String)>,
}

/// Why a step committed nothing. All of these are retried by stepping again later.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("reading the log failed: {0}")]
    Log(#[from] LogError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The view store failed while the guest read it: not the projection's fault.
    #[error("the view store failed while the projection read it: {0}")]
    View(String),
    /// Another step of the same version committed while this one ran (the host runs one
    /// runner per version; this is what two would run into instead of corrupting it), or
    /// an erasure reset the tenant's views meanwhile (the step may hold erased data).
    #[error(
        "the progress of projection version {version} of tenant {tenant} changed during the step (another runner, or an erasure reset the views): nothing was written"
    )]
    Concurrent { tenant: TenantId, version: u64 },
}

/// Applies the next batch of `tenant`'s log below `end` to projection version `version`
/// and commits it with the version's progress (see the module docs). `tables` must be
/// the module's described tables, with their store table ids.
#[allow(
    clippy::too_many_arguments,
    reason = "the host's call: one version (module, tenant, version, tables), its log and end, its store and durability"
)]
pub fn step(
    module: &ProjectionModule,
    tenant: TenantId,
    version: u64,
    tables: &ViewTables,
    log: &LogReader,
    end: Position,
    store: &ViewStore,
    durable: bool,
) -> Result<StepOutcome, RunnerError> {
    let computed = compute(module, tenant, version, tables, log, end, store)?;
    commit(computed, tenant, version, tables, store, durable)
}

/// Reads the next batch and applies it in the module: the step up to its commit.
fn compute(
    module: &ProjectionModule,
    tenant: TenantId,
    version: u64,
    tables: &ViewTables,
    log: &LogReader,
    end: Position,
    store: &ViewStore,
) -> Result<Computed, RunnerError> {
    assert_tables_match(module, tables);
    let read = store.read()?;
    let stored = read.progress(tenant, version)?;
    let resets = read.view_resets(tenant)?;
    let start = stored.clone().unwrap_or(ProjectionProgress::GENESIS);
    if let Some(fault) = start.fault {
        return Ok(Computed::Nothing(StepOutcome {
            applied_end: start.applied_end,
            events: 0,
            caught_up: false,
            fault: Some(fault),
        }));
    }

    let batch = read_batch(
        log,
        start.applied_end,
        end,
        module.limits().batch_events_max,
    )?;
    if batch.end == start.applied_end {
        return Ok(Computed::Nothing(StepOutcome {
            applied_end: start.applied_end,
            events: 0,
            caught_up: start.applied_end >= end,
            fault: None,
        }));
    }
    let (applied, fault, applied_end) = if batch.events.is_empty() {
        (Vec::new(), None, batch.end)
    } else {
        let lookup: Arc<dyn ViewLookup> = Arc::new(StoreLookup::new(read, tenant, tables.clone()));
        match module.apply(&batch.events, &lookup) {
            Ok(applied) => (applied, None, batch.end),
            Err(ApplyError::Faulted { fault, applied }) => {
                assert!(
                    (start.applied_end..batch.end).contains(&fault.position),
                    "fault at {} outside the batch {}..{}",
                    fault.position,
                    start.applied_end,
                    batch.end
                );
                let message = fault_message(&fault.kind);
                (applied, Some((fault.position, message)), fault.position)
            }
            Err(ApplyError::View(message)) => return Err(RunnerError::View(message)),
        }
    };
    let events = batch
        .events
        .iter()
        .take_while(|event| event.position < applied_end)
        .count() as u64;
    let progress = ProjectionProgress {
        applied_end,
        events_applied: start.events_applied + events,
        digest: ViewDigest(start.digest).chain(&applied).0,
        fault: fault.clone(),
    };

    Ok(Computed::Changes(Box::new(Changes {
        stored,
        resets,
        applied,
        progress,
        outcome: StepOutcome {
            applied_end,
            events,
            caught_up: fault.is_none() && applied_end >= end,
            fault,
        },
    })))
}

/// What a step computed, before it is committed.
enum Computed {
    /// Nothing to write (faulted before, or nothing new below `end`).
    Nothing(StepOutcome),
    Changes(Box<Changes>),
}

struct Changes {
    /// The progress and reset count the step began from: the commit's compare-and-set.
    stored: Option<ProjectionProgress>,
    resets: u64,
    applied: Vec<EventChanges>,
    progress: ProjectionProgress,
    outcome: StepOutcome,
}

/// Commits what a step computed, unless the version's progress or the tenant's views (an
/// erasure resets them) changed since it began.
fn commit(
    computed: Computed,
    tenant: TenantId,
    version: u64,
    tables: &ViewTables,
    store: &ViewStore,
    durable: bool,
) -> Result<StepOutcome, RunnerError> {
    let changes = match computed {
        Computed::Nothing(outcome) => return Ok(outcome),
        Computed::Changes(changes) => changes,
    };
    let mut write = store.begin()?;
    if write.progress(tenant, version)? != changes.stored
        || write.view_resets(tenant)? != changes.resets
    {
        return Err(RunnerError::Concurrent { tenant, version });
    }
    let mut scratch = Scratch::default();
    for event in &changes.applied {
        write_event(&mut write, tenant, tables, event, &mut scratch)?;
    }
    write.set_progress(tenant, version, &changes.progress)?;
    write.commit(durable)?;
    Ok(changes.outcome)
}

/// `tables` holds the module's described tables, no more and no fewer: the caller builds
/// both from one deploy, so a mismatch is a bug.
fn assert_tables_match(module: &ProjectionModule, tables: &ViewTables) {
    assert_eq!(
        tables.len(),
        module.describe().len(),
        "view tables do not match the module's described tables"
    );
    for described in module.describe() {
        let (_, table) = tables
            .get(&described.name)
            .unwrap_or_else(|| panic!("no store table for view table `{}`", described.name));
        assert_eq!(table, described, "view table `{}` differs", described.name);
    }
}

/// The events of one step, and the end (exclusive) of the records it consumed.
struct Batch {
    events: Vec<Event>,
    end: Position,
}

fn read_batch(
    log: &LogReader,
    from: Position,
    end: Position,
    events_max: usize,
) -> Result<Batch, LogError> {
    let mut events = Vec::new();
    let mut position = from;
    let mut records = 0;
    let mut payload_bytes = 0;
    'read: while position < end && events.len() < events_max && records < STEP_RECORDS_MAX {
        // Each record is at most one event, so asking for no more records than events
        // still wanted never reads a record that this step then leaves for the next.
        let wanted = (end - position)
            .min((events_max - events.len()) as u64)
            .min((STEP_RECORDS_MAX - records) as u64) as usize;
        let read = log.read(position, wanted)?;
        if read.is_empty() {
            // The log is not yet readable up to `end`.
            break;
        }
        for record in read {
            assert_eq!(
                record.header.position, position,
                "log reads are dense and in order"
            );
            position += 1;
            records += 1;
            // An erased subject's events are gone for projections too (their key is
            // destroyed): a version built after the erasure never sees them.
            if record.header.meta.kind == RecordKind::Event && !record.erased {
                payload_bytes += record.payload.len();
                events.push(event_from_record(&record));
                if payload_bytes >= STEP_PAYLOAD_BYTES_MAX {
                    break 'read;
                }
            }
        }
    }
    assert!(events.len() <= events_max && records <= STEP_RECORDS_MAX);
    Ok(Batch {
        events,
        end: position,
    })
}

/// A fault's message as stored: cut at `PROGRESS_FAULT_MESSAGE_BYTES_MAX` bytes (on a
/// character boundary, so the same on every replica).
fn fault_message(kind: &FaultKind) -> String {
    const ELLIPSIS: char = '…';
    let mut message = kind.to_string();
    if message.len() > PROGRESS_FAULT_MESSAGE_BYTES_MAX {
        let mut cut = PROGRESS_FAULT_MESSAGE_BYTES_MAX - ELLIPSIS.len_utf8();
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push(ELLIPSIS);
    }
    message
}

/// Per-step buffers of `write_event`, reused across events.
#[derive(Default)]
struct Scratch {
    /// (table, encoded key) of the rows already written for the current event.
    seen: HashSet<(TableId, Vec<u8>)>,
    /// Whether each change of the current event is its row's last.
    last: Vec<bool>,
}

/// Writes one event's changes at its position. A row's version at a position is its
/// state after the whole event, and a row has one version per position: when an event
/// changes a row twice (a transfer from an account to itself), only the last change is
/// written. Removing a row that is not there does nothing (the WIT contract).
fn write_event(
    write: &mut ViewWrite<'_>,
    tenant: TenantId,
    tables: &ViewTables,
    event: &EventChanges,
    scratch: &mut Scratch,
) -> Result<(), StoreError> {
    let table_of = |name: &str| {
        tables
            .get(name)
            .expect("changes are checked against the module's tables")
    };
    let keyed = |change: &Change| -> (TableId, Vec<Value>) {
        match change {
            Change::Upsert { table, row } => {
                let (id, schema) = table_of(table);
                (id, schema.key_of(row))
            }
            Change::Remove { table, key } => (table_of(table).0, key.clone()),
        }
    };
    scratch.seen.clear();
    scratch.last.clear();
    scratch.last.resize(event.changes.len(), true);
    if event.changes.len() > 1 {
        for (index, change) in event.changes.iter().enumerate().rev() {
            let (id, key) = keyed(change);
            let mut bytes = Vec::new();
            encoding::encode_key(&key, &mut bytes);
            scratch.last[index] = scratch.seen.insert((id, bytes));
        }
    }
    for (change, last) in event.changes.iter().zip(&scratch.last) {
        if !last {
            continue;
        }
        let (id, key) = keyed(change);
        match change {
            Change::Upsert { row, .. } => {
                write.upsert(tenant, id, &key, row.clone(), event.position)?;
            }
            Change::Remove { .. } => {
                write.remove_if_present(tenant, id, &key, event.position)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Against a real log (encrypted, on disk), a real redb file and the real sample
    //! guests (`cargo xtask build-guests`), compared with the reference: the same events
    //! applied to a `MemoryView` in one go.

    use super::*;
    use crate::wasm::{Engine, MemoryView};
    use kimberlite_kernel::store::compare_keys;
    use kimberlite_log::{
        DataKey, KeyRing, LogConfig, NewRecord, NodeKey, PartitionLog, RecordMeta,
    };
    use std::path::{Path, PathBuf};
    use std::sync::OnceLock;

    const TENANT: TenantId = 7;
    /// The test logs hold a deploy record at this position.
    const VERSION: u64 = 3;
    /// Bound on the steps of one test run (a runner that never catches up fails).
    const TEST_STEPS_MAX: usize = 1_000;
    const START_NS: u64 = 1_700_000_000_000_000_000;

    fn guest(name: &str) -> Vec<u8> {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../target/guests/wasm32-unknown-unknown/release")
            .join(format!("{name}.wasm"));
        std::fs::read(&path).unwrap_or_else(|error| {
            panic!(
                "guest module {} is missing ({error}): run `cargo xtask build-guests` first",
                path.display()
            )
        })
    }

    fn engine() -> &'static Engine {
        static ENGINE: OnceLock<Engine> = OnceLock::new();
        ENGINE.get_or_init(|| Engine::new().expect("engine"))
    }

    fn module(name: &str) -> ProjectionModule {
        engine().load_projection(&guest(name), b"").expect("deploy")
    }

    /// The version's tables under the ids the kernel gives them.
    fn tables_of(module: &ProjectionModule) -> ViewTables {
        ViewTables::new(
            module
                .describe()
                .iter()
                .enumerate()
                .map(|(index, table)| (VERSION + ((index as u64) << 48), table.clone())),
        )
    }

    fn record(kind: RecordKind, stream: &str, event_type: &str, payload: &str) -> NewRecord {
        NewRecord {
            key_id: 1,
            meta: RecordMeta {
                kind,
                event_type: event_type.into(),
                op: 0,
                timestamp_ns: 0,
                client_id: 1,
                request: 0,
                stream: stream.into(),
                principal: "writer".into(),
                reason: String::new(),
            },
            payload: payload.as_bytes().to_vec(),
        }
    }

    /// A tenant log in `dir` holding `records` (timestamps one second apart), durable.
    fn write_log(dir: &Path, records: Vec<NewRecord>) -> PartitionLog {
        let node_key = Arc::new(NodeKey::load_or_create(&dir.join("node")).expect("node key"));
        let keys = KeyRing::new(DataKey::generate(1));
        let (mut log, _) = PartitionLog::open(
            &dir.join("log"),
            TENANT,
            keys,
            node_key,
            LogConfig::default(),
        )
        .expect("open log");
        let records: Vec<NewRecord> = records
            .into_iter()
            .enumerate()
            .map(|(position, mut record)| {
                record.meta.timestamp_ns = START_NS + position as u64 * 1_000_000_000;
                record
            })
            .collect();
        for chunk in records.chunks(1_000) {
            log.append(chunk).expect("append");
        }
        log.sync().expect("sync");
        log
    }

    /// `events` account movements over 40 accounts (self-transfers and other streams
    /// included), with a DDL record first, the deploy record at `VERSION`, and a catalog
    /// record every 97 positions: records the runner skips.
    fn account_records(events: usize) -> Vec<NewRecord> {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |bound: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % bound
        };
        let mut records = vec![record(RecordKind::Ddl, "accounts", "CreateTable", "{}")];
        let mut made = 0;
        while made < events {
            let position = records.len();
            if position == VERSION as usize {
                records.push(record(RecordKind::DeployProjection, "", "Deploy", "{}"));
                continue;
            }
            if position % 97 == 0 {
                records.push(record(RecordKind::Catalog, "", "TokenCreated", "{}"));
                continue;
            }
            let account = next(40);
            let amount = next(500) + 1;
            let (stream, event_type, payload) = match next(10) {
                0..=4 => (
                    "accounts",
                    "Deposited",
                    format!(r#"{{"account":"a{account}","amount":{amount}}}"#),
                ),
                5..=6 => (
                    "accounts",
                    "Withdrawn",
                    format!(r#"{{"account":"a{account}","amount":{amount}}}"#),
                ),
                // From an account to itself on one in four transfers: two changes of one
                // row at one position.
                7..=8 => {
                    let to = if next(4) == 0 { account } else { next(40) };
                    (
                        "accounts",
                        "Transferred",
                        format!(r#"{{"from":"a{account}","to":"a{to}","amount":{amount}}}"#),
                    )
                }
                _ => (
                    "audit",
                    "Deposited",
                    format!(r#"{{"account":"a{account}","amount":{amount}}}"#),
                ),
            };
            records.push(record(RecordKind::Event, stream, event_type, &payload));
            made += 1;
        }
        records
    }

    /// Every event record of the log, as the projection sees it.
    fn all_events(log: &LogReader) -> Vec<Event> {
        let mut events = Vec::new();
        let mut position = 0;
        while position < log.end() {
            let records = log.read(position, 1_000).expect("read");
            position += records.len() as u64;
            events.extend(
                records
                    .iter()
                    .filter(|record| record.header.meta.kind == RecordKind::Event)
                    .map(event_from_record),
            );
        }
        events
    }

    /// The reference: all events applied to a memory view in batches of 500 (cut
    /// elsewhere than the runner cuts). Returns the view, every event's changes, the
    /// digest, and the fault (position, message) if any.
    struct Reference {
        view: MemoryView,
        changes: Vec<EventChanges>,
        digest: ViewDigest,
        fault: Option<(Position, String)>,
    }

    fn reference(module: &ProjectionModule, log: &LogReader) -> Reference {
        let view = MemoryView::new(module.describe());
        let lookup: Arc<dyn ViewLookup> = Arc::new(view.clone());
        let mut changes = Vec::new();
        let mut fault = None;
        for batch in all_events(log).chunks(500) {
            let applied = match module.apply(batch, &lookup) {
                Ok(applied) => applied,
                Err(ApplyError::Faulted {
                    fault: found,
                    applied,
                }) => {
                    fault = Some((found.position, fault_message(&found.kind)));
                    applied
                }
                Err(ApplyError::View(message)) => panic!("memory view failed: {message}"),
            };
            view.apply_events(&applied);
            changes.extend(applied);
            if fault.is_some() {
                break;
            }
        }
        let digest = ViewDigest::GENESIS.chain(&changes);
        Reference {
            view,
            changes,
            digest,
            fault,
        }
    }

    /// Steps until caught up to `end` or faulted; `durable` says which steps sync.
    fn run_steps(
        module: &ProjectionModule,
        log: &LogReader,
        end: Position,
        store: &ViewStore,
        durable: impl Fn(usize) -> bool,
    ) -> Vec<StepOutcome> {
        let tables = tables_of(module);
        let mut outcomes = Vec::new();
        for index in 0..TEST_STEPS_MAX {
            let outcome = step(
                module,
                TENANT,
                VERSION,
                &tables,
                log,
                end,
                store,
                durable(index),
            )
            .expect("step");
            let done = outcome.caught_up || outcome.fault.is_some();
            outcomes.push(outcome);
            if done {
                return outcomes;
            }
        }
        panic!("not caught up after {TEST_STEPS_MAX} steps: {outcomes:?}");
    }

    fn progress(store: &ViewStore) -> ProjectionProgress {
        store
            .read()
            .unwrap()
            .progress(TENANT, VERSION)
            .unwrap()
            .expect("progress")
    }

    fn sorted(mut rows: Vec<Row>) -> Vec<Row> {
        rows.sort_by(|left, right| compare_keys(left, right));
        rows
    }

    /// The rows of view table `name` in the store, now or as of `at`, in key order.
    fn store_rows(
        store: &ViewStore,
        module: &ProjectionModule,
        name: &str,
        at: Option<Position>,
    ) -> Vec<Row> {
        let (id, _) = tables_of(module)
            .get(name)
            .map(|(id, t)| (id, t.clone()))
            .unwrap();
        let mut rows = Vec::new();
        store
            .read()
            .unwrap()
            .scan(TENANT, id, at, &mut |row| {
                rows.push(row);
                true
            })
            .unwrap();
        sorted(rows)
    }

    /// The memory view after the reference's changes at positions `<= at`.
    fn reference_at(module: &ProjectionModule, reference: &Reference, at: Position) -> MemoryView {
        let view = MemoryView::new(module.describe());
        let upto = reference
            .changes
            .partition_point(|event| event.position <= at);
        view.apply_events(&reference.changes[..upto]);
        view
    }

    fn assert_same_balances(store: &ViewStore, module: &ProjectionModule, reference: &Reference) {
        let rows = store_rows(store, module, "balances", None);
        assert!(rows.len() > 30, "{} accounts", rows.len());
        assert_eq!(rows, sorted(reference.view.rows("balances")));
    }

    #[test]
    fn steps_over_thousands_of_events_equal_one_memory_run() {
        let dir = tempfile::tempdir().unwrap();
        let log = write_log(dir.path(), account_records(3_000));
        let reader = log.reader();
        let module = module("account_balances");
        let store = ViewStore::open(&dir.path().join("views.redb")).unwrap();

        let outcomes = run_steps(&module, &reader, reader.end(), &store, |_| false);
        let events: u64 = outcomes.iter().map(|outcome| outcome.events).sum();
        assert_eq!(events, 3_000);
        // 1,024 events a step (`batch_events_max`), then the rest.
        let per_step: Vec<u64> = outcomes.iter().map(|outcome| outcome.events).collect();
        assert_eq!(per_step, vec![1_024, 1_024, 952]);
        assert_eq!(outcomes.last().unwrap().applied_end, reader.end());

        let reference = reference(&module, &reader);
        assert_eq!(reference.fault, None);
        assert_same_balances(&store, &module, &reference);
        let stored = progress(&store);
        assert_eq!(
            stored,
            ProjectionProgress {
                applied_end: reader.end(),
                events_applied: 3_000,
                digest: reference.digest.0,
                fault: None,
            }
        );

        // Caught up: another step reads nothing and commits nothing.
        let again = run_steps(&module, &reader, reader.end(), &store, |_| true);
        assert_eq!(
            again,
            vec![StepOutcome {
                applied_end: reader.end(),
                events: 0,
                caught_up: true,
                fault: None,
            }]
        );
        assert_eq!(progress(&store), stored);
    }

    /// An erasure resets the tenant's views (rows purged, progress back to genesis) while a
    /// step is between its read and its commit: the step must not write what it computed
    /// (it may hold the erased events), even though the progress it began from (genesis)
    /// is the progress it finds again.
    #[test]
    fn a_step_computed_before_a_reset_of_the_views_commits_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let log = write_log(dir.path(), account_records(100));
        let reader = log.reader();
        let module = module("account_balances");
        let tables = tables_of(&module);
        let store = ViewStore::open(&dir.path().join("views.redb")).unwrap();
        // Restarted before (an earlier erasure): the step begins from a stored genesis, the
        // very progress the reset below writes again.
        let restart = |store: &ViewStore| {
            let mut write = store.begin().unwrap();
            write.reset_views(TENANT).unwrap();
            write
                .set_progress(TENANT, VERSION, &ProjectionProgress::GENESIS)
                .unwrap();
            write.commit(true).unwrap();
        };
        restart(&store);

        let computed = compute(
            &module,
            TENANT,
            VERSION,
            &tables,
            &reader,
            reader.end(),
            &store,
        )
        .unwrap();
        restart(&store);
        let error = commit(computed, TENANT, VERSION, &tables, &store, true).unwrap_err();
        assert!(matches!(error, RunnerError::Concurrent { .. }), "{error}");
        assert!(store_rows(&store, &module, "balances", None).is_empty());
        assert_eq!(progress(&store), ProjectionProgress::GENESIS);

        // The next step starts over from the reset views.
        let outcomes = run_steps(&module, &reader, reader.end(), &store, |_| false);
        assert_eq!(outcomes.last().unwrap().applied_end, reader.end());
        assert!(!store_rows(&store, &module, "balances", None).is_empty());
    }

    #[test]
    fn a_reopened_store_resumes_without_applying_twice_or_skipping() {
        let dir = tempfile::tempdir().unwrap();
        let log = write_log(dir.path(), account_records(3_000));
        let reader = log.reader();
        let module = module("account_balances");
        let path = dir.path().join("views.redb");

        // Three lives of the store, each ending at a cut that is not a batch boundary;
        // the last commit of each is durable, as the host's shutdown makes it.
        let mut events = 0;
        let mut applied_end = 0;
        for end in [1_500, 2_222, reader.end()] {
            let store = ViewStore::open(&path).unwrap();
            assert_eq!(
                store
                    .read()
                    .unwrap()
                    .progress(TENANT, VERSION)
                    .unwrap()
                    .map_or(0, |progress| progress.applied_end),
                applied_end,
                "resumes where the last life committed"
            );
            let outcomes = run_steps(&module, &reader, end, &store, |_| true);
            events += outcomes.iter().map(|outcome| outcome.events).sum::<u64>();
            applied_end = outcomes.last().unwrap().applied_end;
            assert_eq!(applied_end, end);
        }
        assert_eq!(events, 3_000, "every event applied once");

        let store = ViewStore::open(&path).unwrap();
        let reference = reference(&module, &reader);
        assert_same_balances(&store, &module, &reference);
        assert_eq!(progress(&store).digest, reference.digest.0);
        assert_eq!(progress(&store).events_applied, 3_000);
    }

    #[test]
    fn a_non_durable_commit_lost_in_a_crash_is_applied_again() {
        let dir = tempfile::tempdir().unwrap();
        let log = write_log(dir.path(), account_records(3_000));
        let reader = log.reader();
        let module = module("account_balances");
        let path = dir.path().join("views.redb");
        let crashed = dir.path().join("crashed.redb");

        let store = ViewStore::open(&path).unwrap();
        run_steps(&module, &reader, 1_200, &store, |_| true);
        // The disk as a crash right now would leave it: the last durable commit.
        std::fs::copy(&path, &crashed).unwrap();
        let outcomes = run_steps(&module, &reader, reader.end(), &store, |_| false);
        assert!(outcomes.len() >= 2);
        let uncrashed = progress(&store);
        assert_eq!(uncrashed.applied_end, reader.end());
        drop(store);

        let store = ViewStore::open(&crashed).unwrap();
        assert_eq!(
            progress(&store).applied_end,
            1_200,
            "the non-durable commits are lost"
        );
        let outcomes = run_steps(&module, &reader, reader.end(), &store, |_| false);
        assert_eq!(
            outcomes.iter().map(|outcome| outcome.events).sum::<u64>(),
            3_000 - progress_events_below(&reader, 1_200)
        );
        assert_eq!(progress(&store), uncrashed);
        assert_same_balances(&store, &module, &reference(&module, &reader));
    }

    fn progress_events_below(log: &LogReader, end: Position) -> u64 {
        all_events(log)
            .iter()
            .filter(|event| event.position < end)
            .count() as u64
    }

    #[test]
    fn a_hostile_module_faults_at_the_same_position_on_every_run() {
        let dir = tempfile::tempdir().unwrap();
        const EXPLODE: Position = 1_500;
        let records = (0..2_000u64)
            .map(|position| match position {
                VERSION => record(RecordKind::DeployProjection, "", "Deploy", "{}"),
                EXPLODE => record(RecordKind::Event, "anything", "Explode", "{}"),
                _ => record(RecordKind::Event, "anything", "Plain", "{}"),
            })
            .collect();
        let log = write_log(dir.path(), records);
        let reader = log.reader();

        let mut runs = Vec::new();
        for run in 0..2 {
            // A fresh engine each run: nothing cached carries the fault over.
            let engine = Engine::new().unwrap();
            let module = engine.load_projection(&guest("hostile_trap"), b"").unwrap();
            let store = ViewStore::open(&dir.path().join(format!("views-{run}.redb"))).unwrap();
            let outcomes = run_steps(&module, &reader, reader.end(), &store, |_| false);
            let last = outcomes.last().unwrap().clone();
            let (position, message) = last.fault.clone().expect("faulted");
            assert_eq!(position, EXPLODE);
            assert_eq!(last.applied_end, EXPLODE);
            assert!(!last.caught_up);
            assert!(message.contains("unreachable"), "{message}");
            let stored = progress(&store);
            assert_eq!(stored.fault, last.fault);
            assert_eq!(stored.applied_end, EXPLODE);
            // Everything before the fault is applied, nothing after.
            assert_eq!(stored.events_applied, EXPLODE - 1);
            let seen = store_rows(&store, &module, "seen", None);
            assert_eq!(seen.len() as u64, EXPLODE - 1);
            assert_eq!(seen.last().unwrap()[0], Value::Integer(EXPLODE as i64 - 1));
            let reference = reference(&module, &reader);
            assert_eq!(reference.fault, last.fault);
            assert_eq!(stored.digest, reference.digest.0);

            // A faulted version stays put: later steps report the fault, commit nothing.
            let tables = tables_of(&module);
            let again = step(
                &module,
                TENANT,
                VERSION,
                &tables,
                &reader,
                reader.end(),
                &store,
                true,
            )
            .unwrap();
            assert_eq!(again, StepOutcome { events: 0, ..last });
            assert_eq!(progress(&store), stored);
            runs.push(stored);
        }
        assert_eq!(runs[0], runs[1]);
    }

    #[test]
    fn as_of_a_position_inside_a_batch_is_the_view_after_the_events_up_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let log = write_log(dir.path(), account_records(1_200));
        let reader = log.reader();
        let module = module("account_balances");
        let store = ViewStore::open(&dir.path().join("views.redb")).unwrap();
        let outcomes = run_steps(&module, &reader, reader.end(), &store, |_| false);
        assert_eq!(outcomes.len(), 2);
        let reference = reference(&module, &reader);

        // Positions where one event changed a row twice (a self-transfer).
        let doubled: Vec<Position> = reference
            .changes
            .iter()
            .filter(|event| event.changes.len() == 2 && event.changes[0].table() == "balances")
            .filter(|event| {
                let Change::Upsert { row: first, .. } = &event.changes[0] else {
                    return false;
                };
                let Change::Upsert { row: second, .. } = &event.changes[1] else {
                    return false;
                };
                first[0] == second[0]
            })
            .map(|event| event.position)
            .collect();
        assert!(doubled.len() >= 5, "{doubled:?}");

        // Every position of the first batch (1,024 events), a self-transfer and its
        // neighbours, and positions of the second batch.
        let mut positions: Vec<Position> = (0..1_040).collect();
        for position in &doubled {
            positions.extend([position.saturating_sub(1), *position, position + 1]);
        }
        positions.extend([1_100, 1_150, reader.end() - 1, reader.end() + 10]);
        for at in positions {
            let expected = sorted(reference_at(&module, &reference, at).rows("balances"));
            assert_eq!(
                store_rows(&store, &module, "balances", Some(at)),
                expected,
                "AS OF POSITION {at}"
            );
        }

        // One lookup agrees with the scan, for a self-transferred account.
        let at = doubled[0];
        let view = reference_at(&module, &reference, at);
        let Change::Upsert { row, .. } = &reference
            .changes
            .iter()
            .find(|event| event.position == at)
            .unwrap()
            .changes[1]
        else {
            unreachable!("checked above");
        };
        let (id, _) = tables_of(&module)
            .get("balances")
            .map(|(id, t)| (id, t.clone()))
            .unwrap();
        let read = store.read().unwrap();
        let key = [row[0].clone()];
        assert_eq!(
            read.get(TENANT, id, &key, Some(at)).unwrap().as_ref(),
            Some(row)
        );
        assert_eq!(
            read.get(TENANT, id, &key, Some(at)).unwrap(),
            view.get("balances", &key).unwrap()
        );
    }

    #[test]
    fn removing_a_row_that_is_not_there_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let records = vec![
            record(RecordKind::Ddl, "patients", "CreateTable", "{}"),
            record(
                RecordKind::Event,
                "patients",
                "RowInserted",
                r#"{"id":1,"name":"Ada","region":"north"}"#,
            ),
            // Never inserted: the census removes a row that is not there.
            record(RecordKind::Event, "patients", "RowDeleted", r#"{"id":9}"#),
            record(RecordKind::DeployProjection, "", "Deploy", "{}"),
            record(RecordKind::Event, "patients", "RowDeleted", r#"{"id":1}"#),
            record(RecordKind::Event, "patients", "RowDeleted", r#"{"id":1}"#),
        ];
        let log = write_log(dir.path(), records);
        let reader = log.reader();
        let module = module("patient_census");
        let store = ViewStore::open(&dir.path().join("views.redb")).unwrap();
        let outcomes = run_steps(&module, &reader, reader.end(), &store, |_| true);
        assert_eq!(outcomes.last().unwrap().fault, None);
        let reference = reference(&module, &reader);
        for at in 0..reader.end() {
            let view = reference_at(&module, &reference, at);
            for table in ["census", "census_patients"] {
                assert_eq!(
                    store_rows(&store, &module, table, Some(at)),
                    sorted(view.rows(table)),
                    "{table} AS OF POSITION {at}"
                );
            }
        }
        assert_eq!(
            store_rows(&store, &module, "census_patients", Some(1)),
            vec![vec![Value::Integer(1), Value::Text("north".into())]]
        );
        assert!(store_rows(&store, &module, "census_patients", None).is_empty());
        assert_eq!(progress(&store).digest, reference.digest.0);
    }
}
