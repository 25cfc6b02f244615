//! The view store: versioned rows of the native SQL tables in one redb file.
//!
//! ## Layout
//!
//! Every version of a row holds the positions `[created_at, deleted_at)` of the records
//! that started and ended it. Keys start with `tenant ‖ table` (8 bytes big-endian each)
//! followed by the memcomparable primary key (`crate::encoding`):
//!
//! - `current`: `tenant ‖ table ‖ key` → `created_at ‖ row`. The live version of each
//!   row: current-state reads are one lookup, scans one range.
//! - `history`: `tenant ‖ table ‖ key ‖ created_at` → `deleted_at ‖ row`
//!   (`deleted_at = u64::MAX` while the version is live). `AS OF POSITION p` of one key
//!   is one reverse seek to the last version with `created_at <= p`; of a table, one range
//!   scan. Nothing is replayed.
//! - `applied`: tenant → the exclusive end of the positions applied to the store.
//! - `progress`: `tenant ‖ version` (8 bytes big-endian each) → a Wasm projection
//!   version's [`ProjectionProgress`] (see [`ProjectionProgress::encode`]): how far the
//!   runner applied the tenant's log into that version's tables, and its fault. Those
//!   tables' rows live in `current`/`history` like any other table's.
//! - `meta`: the kernel snapshot committed with them, and the layout's format.
//!
//! Positions are 8 bytes big-endian, so byte order is position order. (`progress` came
//! after the first stores of format `kimberlite-views-1`; it is created on open, and a
//! store without it simply has no projection progress yet, so the format is unchanged.)
//!
//! ## Exactly once, and crashes
//!
//! Rows, applied positions and the kernel snapshot change in one write transaction, so
//! they always agree. The host commits most batches with `commit(false)` (redb
//! `Durability::None`: visible at once, not yet on disk) and every N batches or T ms with
//! `commit(true)`. After a crash the store is at its last durable commit, with the
//! applied positions and kernel snapshot of that commit: the host restores the kernel
//! from the snapshot and replays each tenant's log from its applied position
//! (`Kernel::apply_record` into a `ViewWrite`), which brings rows and kernel to where
//! the log ends. Views are derived, so losing the non-durable tail loses nothing.
//!
//! A Wasm projection version's rows and its progress commit in one transaction too
//! (`ViewWrite::set_progress`), so after a crash its runner resumes at `applied_end`:
//! no event is applied twice or skipped.

use crate::encoding;
use kimberlite_kernel::{Position, Row, RowStore, StoreError, TableId, TenantId, Value};
use redb::{Database, Durability, ReadOnlyTable, ReadableDatabase, ReadableTable, TableDefinition};
use std::collections::BTreeMap;
use std::path::Path;

const CURRENT: TableDefinition<'static, &[u8], &[u8]> = TableDefinition::new("current");
const HISTORY: TableDefinition<'static, &[u8], &[u8]> = TableDefinition::new("history");
const APPLIED: TableDefinition<'static, u64, u64> = TableDefinition::new("applied");
const META: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("meta");
const PROGRESS: TableDefinition<'static, &[u8], &[u8]> = TableDefinition::new("progress");
/// Per tenant: how many times its views were reset (an erasure). A runner step computed
/// before a reset must not commit after it, even when the progress it read looks the same.
const RESETS: TableDefinition<'static, u64, u64> = TableDefinition::new("view_resets");

const META_FORMAT: &str = "format";
const META_KERNEL_SNAPSHOT: &str = "kernel_snapshot";
/// The layout described in the module docs; a store of another format is refused.
const FORMAT: &[u8] = b"kimberlite-views-1";
/// The page cache `open` gives redb (redb's own default).
pub const VIEW_CACHE_BYTES_DEFAULT: usize = 1 << 30;
/// `deleted_at` of a live version.
const OPEN: Position = u64::MAX;

fn backend(error: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(error.to_string())
}

/// `tenant ‖ table`: the prefix of every key of one table.
fn table_prefix(tenant: TenantId, table: TableId) -> Vec<u8> {
    let mut prefix = Vec::with_capacity(48);
    prefix.extend_from_slice(&tenant.to_be_bytes());
    prefix.extend_from_slice(&table.to_be_bytes());
    prefix
}

/// `tenant ‖ table ‖ key`: a row's key in `current`, and the prefix of its versions.
fn row_key(tenant: TenantId, table: TableId, key: &[Value]) -> Vec<u8> {
    assert!(!key.is_empty(), "primary keys are never empty");
    let mut bytes = table_prefix(tenant, table);
    encoding::encode_key(key, &mut bytes);
    bytes
}

fn version_key(row_key: &[u8], created_at: Position) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(row_key.len() + 8);
    bytes.extend_from_slice(row_key);
    bytes.extend_from_slice(&created_at.to_be_bytes());
    bytes
}

/// `position ‖ row` values of both tables.
fn positioned(position: Position, row: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(8 + row.len());
    bytes.extend_from_slice(&position.to_be_bytes());
    bytes.extend_from_slice(row);
    bytes
}

fn split_positioned(bytes: &[u8]) -> Result<(Position, &[u8]), StoreError> {
    let (position, row) = bytes
        .split_first_chunk::<8>()
        .ok_or_else(|| StoreError::Corrupt("value shorter than its position".into()))?;
    Ok((u64::from_be_bytes(*position), row))
}

fn encode_row(row: &[Value]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(16 * row.len());
    encoding::encode_row(row, &mut bytes);
    bytes
}

/// `tenant ‖ version`: a projection version's key in `progress`.
fn progress_key(tenant: TenantId, version: u64) -> [u8; 16] {
    let mut key = [0; 16];
    key[..8].copy_from_slice(&tenant.to_be_bytes());
    key[8..].copy_from_slice(&version.to_be_bytes());
    key
}

/// Longest fault message kept in a projection's progress (a guest's `err` string can be
/// as long as its memory); the runner cuts longer ones at a character boundary.
pub const PROGRESS_FAULT_MESSAGE_BYTES_MAX: usize = 4 << 10;

/// The encoding of `ProjectionProgress` this build writes (its first byte).
const PROGRESS_FORMAT: u8 = 1;
/// Format byte, `applied_end`, `events_applied`, digest, fault flag.
const PROGRESS_FIXED_BYTES: usize = 1 + 8 + 8 + 32 + 1;

/// How far a Wasm projection version (a deploy, identified by its tenant and the log
/// position of its deploy record) has applied its tenant's log. Committed with the
/// rows it describes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectionProgress {
    /// Every position below this one is applied (exclusive end); a faulted version stops
    /// at its fault position.
    pub applied_end: Position,
    /// Event records applied so far (other records are skipped and not counted).
    pub events_applied: u64,
    /// The view digest (`wasm::ViewDigest`) after them.
    pub digest: [u8; 32],
    /// Where the projection faulted, and why. At most
    /// `PROGRESS_FAULT_MESSAGE_BYTES_MAX` bytes of message.
    pub fault: Option<(Position, String)>,
}

impl ProjectionProgress {
    /// The progress of a version that has applied nothing.
    pub const GENESIS: ProjectionProgress = ProjectionProgress {
        applied_end: 0,
        events_applied: 0,
        digest: [0; 32],
        fault: None,
    };

    /// The stored bytes, big-endian:
    ///
    /// ```text
    /// format (1 byte, = 1) ‖ applied_end (u64) ‖ events_applied (u64) ‖ digest (32 bytes)
    /// ‖ fault flag (1 byte: 0 none, 1 faulted)
    /// [‖ fault position (u64) ‖ message length (u32) ‖ message (UTF-8)]   when faulted
    /// ```
    pub fn encode(&self) -> Vec<u8> {
        let message = self.fault.as_ref().map_or("", |(_, message)| message);
        assert!(
            message.len() <= PROGRESS_FAULT_MESSAGE_BYTES_MAX,
            "fault message of {} bytes, past progress_fault_message_bytes_max = {PROGRESS_FAULT_MESSAGE_BYTES_MAX}",
            message.len()
        );
        let mut bytes = Vec::with_capacity(PROGRESS_FIXED_BYTES + 12 + message.len());
        bytes.push(PROGRESS_FORMAT);
        bytes.extend_from_slice(&self.applied_end.to_be_bytes());
        bytes.extend_from_slice(&self.events_applied.to_be_bytes());
        bytes.extend_from_slice(&self.digest);
        match &self.fault {
            None => bytes.push(0),
            Some((position, message)) => {
                bytes.push(1);
                bytes.extend_from_slice(&position.to_be_bytes());
                bytes.extend_from_slice(&(message.len() as u32).to_be_bytes());
                bytes.extend_from_slice(message.as_bytes());
            }
        }
        bytes
    }

    /// Reads what `encode` wrote; anything else is `StoreError::Corrupt`.
    pub fn decode(bytes: &[u8]) -> Result<ProjectionProgress, StoreError> {
        let corrupt =
            |what: &str| StoreError::Corrupt(format!("projection progress record: {what}"));
        let (fixed, rest) = bytes
            .split_at_checked(PROGRESS_FIXED_BYTES)
            .ok_or_else(|| corrupt(&format!("{} bytes is too short", bytes.len())))?;
        if fixed[0] != PROGRESS_FORMAT {
            return Err(corrupt(&format!(
                "format {}; this build reads format {PROGRESS_FORMAT}",
                fixed[0]
            )));
        }
        let u64_at =
            |at: usize| u64::from_be_bytes(fixed[at..at + 8].try_into().expect("eight bytes"));
        let applied_end = u64_at(1);
        let events_applied = u64_at(9);
        let digest: [u8; 32] = fixed[17..49].try_into().expect("32 bytes");
        let fault = match fixed[49] {
            0 if rest.is_empty() => None,
            0 => return Err(corrupt("bytes after an unfaulted record")),
            1 => {
                let (position, rest) = rest
                    .split_first_chunk::<8>()
                    .ok_or_else(|| corrupt("fault position cut short"))?;
                let (length, message) = rest
                    .split_first_chunk::<4>()
                    .ok_or_else(|| corrupt("fault message length cut short"))?;
                let length = u32::from_be_bytes(*length) as usize;
                if length > PROGRESS_FAULT_MESSAGE_BYTES_MAX || length != message.len() {
                    return Err(corrupt(&format!(
                        "fault message of {length} bytes in {} bytes",
                        message.len()
                    )));
                }
                let message = std::str::from_utf8(message)
                    .map_err(|_| corrupt("fault message is not UTF-8"))?;
                Some((u64::from_be_bytes(*position), message.to_owned()))
            }
            flag => return Err(corrupt(&format!("fault flag {flag}"))),
        };
        if let Some((position, _)) = &fault
            && *position != applied_end
        {
            return Err(corrupt(&format!(
                "faulted at {position} but applied to {applied_end}; a faulted version stops at its fault"
            )));
        }
        if events_applied > applied_end {
            return Err(corrupt(&format!(
                "{events_applied} events applied below position {applied_end}"
            )));
        }
        Ok(ProjectionProgress {
            applied_end,
            events_applied,
            digest,
            fault,
        })
    }
}

/// Each tenant's applied position (exclusive end), and the kernel snapshot committed with them.
pub type Applied = (BTreeMap<TenantId, Position>, Option<Vec<u8>>);

/// The redb file of the views.
/// Cheap to clone: clones share one database (a replica's state machine writes it while the
/// node's query handlers and projection runner read and write it too).
#[derive(Debug, Clone)]
pub struct ViewStore {
    db: std::sync::Arc<Database>,
}

impl ViewStore {
    /// Opens (or creates) the store at `path`; recovers it to its last durable commit.
    pub fn open(path: &Path) -> Result<ViewStore, StoreError> {
        ViewStore::open_with_cache(path, VIEW_CACHE_BYTES_DEFAULT)
    }

    /// Like `open`, with redb's page cache bounded at `cache_bytes` (allocated as pages
    /// are read, not up front). Past-state lookups stay fast while the `history` table's
    /// hot pages fit: about 100 bytes a row version.
    pub fn open_with_cache(path: &Path, cache_bytes: usize) -> Result<ViewStore, StoreError> {
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(path)
            .map_err(|error| {
                StoreError::Backend(format!(
                    "cannot open the view store {}: {error}",
                    path.display()
                ))
            })?;
        ViewStore::init(db)
    }

    /// Opens a store over any redb backend: `redb::backends::InMemoryBackend` for tests
    /// and tools, a fault-injecting one for crash tests.
    pub fn with_backend(backend: impl redb::StorageBackend) -> Result<ViewStore, StoreError> {
        let db = Database::builder()
            .create_with_backend(backend)
            .map_err(self::backend)?;
        ViewStore::init(db)
    }

    fn init(db: Database) -> Result<ViewStore, StoreError> {
        let txn = db.begin_write().map_err(backend)?;
        {
            let mut meta = txn.open_table(META).map_err(backend)?;
            let format = meta
                .get(META_FORMAT)
                .map_err(backend)?
                .map(|value| value.value().to_vec());
            match format {
                None => {
                    meta.insert(META_FORMAT, FORMAT).map_err(backend)?;
                }
                Some(format) if format == FORMAT => {}
                Some(other) => {
                    return Err(StoreError::Corrupt(format!(
                        "the view store has format {:?}; this build reads {:?}",
                        String::from_utf8_lossy(&other),
                        String::from_utf8_lossy(FORMAT)
                    )));
                }
            }
            // Create the tables, so readers can open them before the first write.
            txn.open_table(CURRENT).map_err(backend)?;
            txn.open_table(HISTORY).map_err(backend)?;
            txn.open_table(APPLIED).map_err(backend)?;
            txn.open_table(PROGRESS).map_err(backend)?;
            txn.open_table(RESETS).map_err(backend)?;
        }
        txn.commit().map_err(backend)?;
        Ok(ViewStore {
            db: std::sync::Arc::new(db),
        })
    }

    /// Removes every row, version, applied position and projection progress in one durable
    /// transaction: the store is as if just created, and every clone sees it so. For a
    /// replica that rebuilds its views from its logs while the node keeps serving.
    pub fn clear(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(backend)?;
        for table in [CURRENT, HISTORY, PROGRESS] {
            txn.delete_table(table).map_err(backend)?;
            txn.open_table(table).map_err(backend)?;
        }
        txn.delete_table(APPLIED).map_err(backend)?;
        txn.open_table(APPLIED).map_err(backend)?;
        txn.open_table(META)
            .map_err(backend)?
            .remove(META_KERNEL_SNAPSHOT)
            .map_err(backend)?;
        txn.commit().map_err(backend)?;
        Ok(())
    }

    /// One write transaction. It implements `RowStore` (reads see its own writes); nothing
    /// is visible to readers until `commit`, and dropping it uncommitted discards it.
    pub fn begin(&self) -> Result<ViewWrite<'_>, StoreError> {
        let txn = self.db.begin_write().map_err(backend)?;
        // Taken while this transaction holds the write lock, so no commit comes between:
        // the snapshot is exactly the state the transaction starts from.
        let base = self
            .db
            .begin_read()
            .map_err(backend)?
            .open_table(CURRENT)
            .map_err(backend)?;
        Ok(ViewWrite {
            txn,
            base,
            current: BTreeMap::new(),
            history: BTreeMap::new(),
            _store: self,
        })
    }

    /// A consistent snapshot of the last commit, for queries.
    pub fn read(&self) -> Result<ViewRead, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let current = txn.open_table(CURRENT).map_err(backend)?;
        let history = txn.open_table(HISTORY).map_err(backend)?;
        let applied = txn.open_table(APPLIED).map_err(backend)?;
        let applied = applied
            .iter()
            .map_err(backend)?
            .map(|entry| {
                entry
                    .map(|(tenant, end)| (tenant.value(), end.value()))
                    .map_err(backend)
            })
            .collect::<Result<BTreeMap<TenantId, Position>, StoreError>>()?;
        let progress = txn.open_table(PROGRESS).map_err(backend)?;
        let resets = txn.open_table(RESETS).map_err(backend)?;
        Ok(ViewRead {
            current,
            history,
            applied,
            progress,
            resets,
        })
    }

    /// The applied position (exclusive end) of each tenant and the kernel snapshot, as
    /// last committed together with the rows.
    pub fn applied(&self) -> Result<Applied, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let meta = txn.open_table(META).map_err(backend)?;
        let snapshot = meta
            .get(META_KERNEL_SNAPSHOT)
            .map_err(backend)?
            .map(|value| value.value().to_vec());
        let applied = txn.open_table(APPLIED).map_err(backend)?;
        let applied = applied
            .iter()
            .map_err(backend)?
            .map(|entry| {
                entry
                    .map(|(tenant, end)| (tenant.value(), end.value()))
                    .map_err(backend)
            })
            .collect::<Result<BTreeMap<TenantId, Position>, StoreError>>()?;
        Ok((applied, snapshot))
    }
}

/// One write transaction of the view store.
///
/// Row changes are buffered in memory and written at `commit`, with each table opened
/// once and keys in order: a kernel step touches rows one at a time, and opening redb
/// tables per row would cost more than the writes. Reads see the buffer first, then the
/// committed state the transaction started from.
pub struct ViewWrite<'store> {
    txn: redb::WriteTransaction,
    /// `current` as of `begin`.
    base: ReadOnlyTable<&'static [u8], &'static [u8]>,
    /// Changed `current` entries: `Some(created_at ‖ row)`, or `None` for a removed row.
    current: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// `history` entries to write (new versions, and ended ones rewritten).
    history: BTreeMap<Vec<u8>, Vec<u8>>,
    _store: &'store ViewStore,
}

impl std::fmt::Debug for ViewWrite<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewWrite").finish_non_exhaustive()
    }
}

impl ViewWrite<'_> {
    /// Records that `tenant`'s positions below `end` are applied, in this transaction.
    pub fn set_applied(&mut self, tenant: TenantId, end: Position) -> Result<(), StoreError> {
        let mut applied = self.txn.open_table(APPLIED).map_err(backend)?;
        let previous = applied
            .get(tenant)
            .map_err(backend)?
            .map(|value| value.value());
        assert!(
            previous.is_none_or(|previous| previous <= end),
            "applied positions only grow"
        );
        applied.insert(tenant, end).map_err(backend)?;
        Ok(())
    }

    /// Records a projection version's progress, in this transaction: it commits with the
    /// rows written alongside, or not at all.
    pub fn set_progress(
        &mut self,
        tenant: TenantId,
        version: u64,
        progress: &ProjectionProgress,
    ) -> Result<(), StoreError> {
        let bytes = progress.encode();
        // Paired with the check on read: what is written must read back.
        assert_eq!(
            ProjectionProgress::decode(&bytes).as_ref(),
            Ok(progress),
            "progress encoding does not round-trip"
        );
        let mut table = self.txn.open_table(PROGRESS).map_err(backend)?;
        table
            .insert(progress_key(tenant, version).as_slice(), bytes.as_slice())
            .map_err(backend)?;
        Ok(())
    }

    /// How many times `tenant`'s views were reset, as this transaction sees it.
    pub fn view_resets(&self, tenant: TenantId) -> Result<u64, StoreError> {
        let table = self.txn.open_table(RESETS).map_err(backend)?;
        let count = table
            .get(tenant)
            .map_err(backend)?
            .map_or(0, |value| value.value());
        Ok(count)
    }

    /// Counts a reset of `tenant`'s views (their rows purged, their progress restarted, by
    /// an erasure) in this transaction: a runner step that read the views before it fails
    /// its compare-and-set instead of writing rows derived from what was erased.
    pub fn reset_views(&mut self, tenant: TenantId) -> Result<(), StoreError> {
        let count = self.view_resets(tenant)?;
        let mut table = self.txn.open_table(RESETS).map_err(backend)?;
        table.insert(tenant, count + 1).map_err(backend)?;
        Ok(())
    }

    /// A projection version's progress as this transaction sees it (what the last commit
    /// left, or what `set_progress` set in this transaction).
    pub fn progress(
        &self,
        tenant: TenantId,
        version: u64,
    ) -> Result<Option<ProjectionProgress>, StoreError> {
        let table = self.txn.open_table(PROGRESS).map_err(backend)?;
        let value = table
            .get(progress_key(tenant, version).as_slice())
            .map_err(backend)?;
        value
            .map(|value| ProjectionProgress::decode(value.value()))
            .transpose()
    }

    /// Ends the current version of `key` at `position` if there is one; `false` (and no
    /// change) if there is none. For Wasm views, where removing an absent row is a no-op
    /// by contract; SQL tables use `RowStore::remove`, for which it is an error.
    pub fn remove_if_present(
        &mut self,
        tenant: TenantId,
        table: TableId,
        key: &[Value],
        position: Position,
    ) -> Result<bool, StoreError> {
        let row_key = row_key(tenant, table, key);
        if !self.end_live(&row_key, position)? {
            return Ok(false);
        }
        self.current.insert(row_key, None);
        Ok(true)
    }

    /// Stores the kernel snapshot that matches the applied positions, in this transaction.
    pub fn set_kernel_snapshot(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        let mut meta = self.txn.open_table(META).map_err(backend)?;
        meta.insert(META_KERNEL_SNAPSHOT, bytes).map_err(backend)?;
        Ok(())
    }

    /// Commits rows, applied positions and snapshot together. `durable = false` uses
    /// redb's `Durability::None`: readers see the commit at once, but a crash before the
    /// next durable commit loses it (see the module docs for how the host recovers);
    /// `durable = true` syncs it, and everything before it, to disk.
    pub fn commit(self, durable: bool) -> Result<(), StoreError> {
        let mut txn = self.txn;
        {
            let mut current = txn.open_table(CURRENT).map_err(backend)?;
            for (key, value) in &self.current {
                match value {
                    Some(value) => current.insert(key.as_slice(), value.as_slice()).map(drop),
                    None => current.remove(key.as_slice()).map(drop),
                }
                .map_err(backend)?;
            }
            let mut history = txn.open_table(HISTORY).map_err(backend)?;
            for (key, value) in &self.history {
                history
                    .insert(key.as_slice(), value.as_slice())
                    .map_err(backend)?;
            }
        }
        let durability = if durable {
            Durability::Immediate
        } else {
            Durability::None
        };
        txn.set_durability(durability).map_err(backend)?;
        txn.commit().map_err(backend)
    }
}

impl ViewWrite<'_> {
    /// The live `created_at ‖ row` of a row key, buffered or committed.
    fn live(&self, row_key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(buffered) = self.current.get(row_key) {
            return Ok(buffered.clone());
        }
        Ok(self
            .base
            .get(row_key)
            .map_err(backend)?
            .map(|value| value.value().to_vec()))
    }

    /// Ends the live version of `row_key` at `position`, if there is one.
    fn end_live(&mut self, row_key: &[u8], position: Position) -> Result<bool, StoreError> {
        let Some(live) = self.live(row_key)? else {
            return Ok(false);
        };
        let (created_at, row) = split_positioned(&live)?;
        assert!(
            created_at < position,
            "positions only grow: {created_at} then {position}"
        );
        self.history
            .insert(version_key(row_key, created_at), positioned(position, row));
        Ok(true)
    }
}

impl RowStore for ViewWrite<'_> {
    fn get(
        &self,
        tenant: TenantId,
        table: TableId,
        key: &[Value],
    ) -> Result<Option<Row>, StoreError> {
        let live = self.live(&row_key(tenant, table, key))?;
        live.map(|value| split_positioned(&value).and_then(|(_, row)| encoding::decode_row(row)))
            .transpose()
    }

    fn scan(
        &self,
        tenant: TenantId,
        table: TableId,
        visit: &mut dyn FnMut(&Row) -> bool,
    ) -> Result<(), StoreError> {
        let prefix = table_prefix(tenant, table);
        let mut committed = self
            .base
            .range(prefix.as_slice()..)
            .map_err(backend)?
            .peekable();
        let mut buffered = self.current.range(prefix.clone()..).peekable();
        // A merge of the committed rows and the buffer, in key order; the buffer wins.
        loop {
            let next_committed = match committed.peek() {
                Some(Ok((key, _))) if key.value().starts_with(&prefix) => {
                    Some(key.value().to_vec())
                }
                Some(Ok(_)) | None => None,
                Some(Err(_)) => {
                    return Err(backend(
                        committed
                            .next()
                            .and_then(Result::err)
                            .expect("peeked an error"),
                    ));
                }
            };
            let next_buffered = buffered
                .peek()
                .filter(|(key, _)| key.starts_with(&prefix))
                .map(|(key, _)| (*key).clone());
            let value = match (next_committed, next_buffered) {
                (None, None) => return Ok(()),
                (Some(committed_key), Some(buffered_key)) if buffered_key <= committed_key => {
                    if buffered_key == committed_key {
                        committed.next();
                    }
                    buffered.next().and_then(|(_, value)| value.clone())
                }
                (Some(_), _) => {
                    let (_, value) = committed.next().expect("peeked").map_err(backend)?;
                    Some(value.value().to_vec())
                }
                (None, Some(_)) => buffered.next().and_then(|(_, value)| value.clone()),
            };
            if let Some(value) = value {
                let (_, row) = split_positioned(&value)?;
                if !visit(&encoding::decode_row(row)?) {
                    return Ok(());
                }
            }
        }
    }

    fn upsert(
        &mut self,
        tenant: TenantId,
        table: TableId,
        key: &[Value],
        row: Row,
        position: Position,
    ) -> Result<(), StoreError> {
        let row_key = row_key(tenant, table, key);
        let row_bytes = encode_row(&row);
        self.end_live(&row_key, position)?;
        self.history.insert(
            version_key(&row_key, position),
            positioned(OPEN, &row_bytes),
        );
        self.current
            .insert(row_key, Some(positioned(position, &row_bytes)));
        Ok(())
    }

    fn remove(
        &mut self,
        tenant: TenantId,
        table: TableId,
        key: &[Value],
        position: Position,
    ) -> Result<(), StoreError> {
        if !self.remove_if_present(tenant, table, key, position)? {
            return Err(StoreError::MissingRow {
                tenant,
                table,
                key: format!("{key:?}"),
            });
        }
        Ok(())
    }

    fn purge(
        &mut self,
        tenant: TenantId,
        table: TableId,
        matches: &dyn Fn(&Row) -> bool,
    ) -> Result<u64, StoreError> {
        let prefix = table_prefix(tenant, table);
        let row_matches = |value: &[u8]| -> Result<bool, StoreError> {
            let (_, row) = split_positioned(value)?;
            Ok(matches(&encoding::decode_row(row)?))
        };
        let mut purged = 0u64;
        // Live versions: committed ones not changed in this transaction, then buffered ones.
        let mut gone = Vec::new();
        for entry in self.base.range(prefix.as_slice()..).map_err(backend)? {
            let (key, value) = entry.map_err(backend)?;
            if !key.value().starts_with(&prefix) {
                break;
            }
            if !self.current.contains_key(key.value()) && row_matches(value.value())? {
                gone.push(key.value().to_vec());
            }
        }
        for (key, value) in self.current.range(prefix.clone()..) {
            if !key.starts_with(&prefix) {
                break;
            }
            if let Some(value) = value
                && row_matches(value)?
            {
                gone.push(key.clone());
            }
        }
        purged += gone.len() as u64;
        for key in gone {
            self.current.insert(key, None);
        }
        // Past versions: buffered ones, then committed ones (deleted in the transaction).
        let mut buffered_gone = Vec::new();
        for (key, value) in self.history.range(prefix.clone()..) {
            if !key.starts_with(&prefix) {
                break;
            }
            if row_matches(value)? {
                buffered_gone.push(key.clone());
            }
        }
        let mut history = self.txn.open_table(HISTORY).map_err(backend)?;
        let mut committed_gone = Vec::new();
        for entry in history.range(prefix.as_slice()..).map_err(backend)? {
            let (key, value) = entry.map_err(backend)?;
            if !key.value().starts_with(&prefix) {
                break;
            }
            if row_matches(value.value())? {
                committed_gone.push(key.value().to_vec());
            }
        }
        for key in &committed_gone {
            history.remove(key.as_slice()).map_err(backend)?;
        }
        drop(history);
        for key in &buffered_gone {
            self.history.remove(key);
        }
        // A version both buffered (rewritten) and committed counts once.
        let committed: std::collections::BTreeSet<&Vec<u8>> = committed_gone.iter().collect();
        purged += committed_gone.len() as u64
            + buffered_gone
                .iter()
                .filter(|key| !committed.contains(key))
                .count() as u64;
        Ok(purged)
    }
}

/// A read snapshot of the view store: what queries read.
pub struct ViewRead {
    current: ReadOnlyTable<&'static [u8], &'static [u8]>,
    history: ReadOnlyTable<&'static [u8], &'static [u8]>,
    applied: BTreeMap<TenantId, Position>,
    progress: ReadOnlyTable<&'static [u8], &'static [u8]>,
    resets: ReadOnlyTable<u64, u64>,
}

impl std::fmt::Debug for ViewRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewRead")
            .field("applied", &self.applied)
            .finish_non_exhaustive()
    }
}

impl ViewRead {
    /// The exclusive end of `tenant`'s positions applied in this snapshot (0: none).
    pub fn applied(&self, tenant: TenantId) -> Position {
        self.applied.get(&tenant).copied().unwrap_or(0)
    }

    /// How many times `tenant`'s views were reset (`ViewWrite::reset_views`) in this snapshot.
    pub fn view_resets(&self, tenant: TenantId) -> Result<u64, StoreError> {
        Ok(self
            .resets
            .get(tenant)
            .map_err(backend)?
            .map_or(0, |value| value.value()))
    }

    /// A Wasm projection version's progress in this snapshot (`None`: never stepped).
    pub fn progress(
        &self,
        tenant: TenantId,
        version: u64,
    ) -> Result<Option<ProjectionProgress>, StoreError> {
        let value = self
            .progress
            .get(progress_key(tenant, version).as_slice())
            .map_err(backend)?;
        value
            .map(|value| ProjectionProgress::decode(value.value()))
            .transpose()
    }

    /// The row with this key now (`at = None`) or in the state after the positions
    /// `<= at`: one lookup either way.
    pub fn get(
        &self,
        tenant: TenantId,
        table: TableId,
        key: &[Value],
        at: Option<Position>,
    ) -> Result<Option<Row>, StoreError> {
        let row_key = row_key(tenant, table, key);
        let Some(at) = at else {
            let value = self.current.get(row_key.as_slice()).map_err(backend)?;
            return value
                .map(|value| {
                    split_positioned(value.value()).and_then(|(_, row)| encoding::decode_row(row))
                })
                .transpose();
        };
        // One seek from the back: the last entry at or before `row_key ‖ at` is this key's
        // last version created at or before `at`, if it belongs to this key at all.
        let end = version_key(&row_key, at);
        let mut versions = self.history.range(..=end.as_slice()).map_err(backend)?;
        let Some(entry) = versions.next_back() else {
            return Ok(None);
        };
        let (key, value) = entry.map_err(backend)?;
        if key.value().len() != end.len() || !key.value().starts_with(&row_key) {
            return Ok(None);
        }
        let (deleted_at, row) = split_positioned(value.value())?;
        if deleted_at <= at {
            return Ok(None);
        }
        encoding::decode_row(row).map(Some)
    }

    /// The rows now (`at = None`) or after the positions `<= at`, in key order; `visit`
    /// returns `false` to stop. A past scan reads every version of the table once.
    pub fn scan(
        &self,
        tenant: TenantId,
        table: TableId,
        at: Option<Position>,
        visit: &mut dyn FnMut(Row) -> bool,
    ) -> Result<(), StoreError> {
        let prefix = table_prefix(tenant, table);
        let Some(at) = at else {
            for entry in self.current.range(prefix.as_slice()..).map_err(backend)? {
                let (key, value) = entry.map_err(backend)?;
                if !key.value().starts_with(&prefix) {
                    break;
                }
                let (_, row) = split_positioned(value.value())?;
                if !visit(encoding::decode_row(row)?) {
                    break;
                }
            }
            return Ok(());
        };
        for entry in self.history.range(prefix.as_slice()..).map_err(backend)? {
            let (key, value) = entry.map_err(backend)?;
            let key = key.value();
            if !key.starts_with(&prefix) {
                break;
            }
            let created_at = u64::from_be_bytes(
                key[key.len() - 8..]
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("short history key".into()))?,
            );
            // Versions of one key never overlap, so at most one is alive at `at`.
            if created_at > at {
                continue;
            }
            let (deleted_at, row) = split_positioned(value.value())?;
            if deleted_at > at && !visit(encoding::decode_row(row)?) {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projection_progress_round_trips_and_refuses_damage() {
        let faulted = ProjectionProgress {
            applied_end: 1_500,
            events_applied: 1_200,
            digest: [7; 32],
            fault: Some((1_500, "the module trapped: wasm `unreachable` ✗".into())),
        };
        for progress in [ProjectionProgress::GENESIS, faulted.clone()] {
            assert_eq!(ProjectionProgress::decode(&progress.encode()), Ok(progress));
        }
        assert_eq!(
            ProjectionProgress::GENESIS.encode().len(),
            PROGRESS_FIXED_BYTES
        );

        let bytes = faulted.encode();
        let corrupt = |bytes: &[u8]| match ProjectionProgress::decode(bytes) {
            Err(StoreError::Corrupt(message)) => message,
            other => panic!("expected corruption, got {other:?}"),
        };
        assert_eq!(
            corrupt(&bytes[..bytes.len() - 1]),
            "projection progress record: fault message of 42 bytes in 41 bytes"
        );
        assert_eq!(
            corrupt(&bytes[..10]),
            "projection progress record: 10 bytes is too short"
        );
        let mut other_format = bytes.clone();
        other_format[0] = 2;
        assert_eq!(
            corrupt(&other_format),
            "projection progress record: format 2; this build reads format 1"
        );
        let mut moved = faulted.clone();
        moved.applied_end = 1_600;
        assert_eq!(
            corrupt(&moved.encode()),
            "projection progress record: faulted at 1500 but applied to 1600; a faulted version stops at its fault"
        );
    }

    #[test]
    fn progress_commits_with_the_rows_or_not_at_all() {
        let store = ViewStore::with_backend(redb::backends::InMemoryBackend::new()).unwrap();
        let progress = ProjectionProgress {
            applied_end: 3,
            events_applied: 2,
            digest: [1; 32],
            fault: None,
        };
        let row = |n: i64| vec![Value::Integer(n), Value::Text("x".into())];
        // Dropped uncommitted: neither row nor progress.
        let mut write = store.begin().unwrap();
        write.upsert(1, 9, &row(1)[..1], row(1), 2).unwrap();
        write.set_progress(1, 9, &progress).unwrap();
        assert_eq!(write.progress(1, 9).unwrap(), Some(progress.clone()));
        drop(write);
        let read = store.read().unwrap();
        assert_eq!(read.progress(1, 9).unwrap(), None);
        assert_eq!(read.get(1, 9, &row(1)[..1], None).unwrap(), None);
        drop(read);

        let mut write = store.begin().unwrap();
        write.upsert(1, 9, &row(1)[..1], row(1), 2).unwrap();
        // Removing an absent row is a no-op on this path, an error on the SQL one.
        assert!(!write.remove_if_present(1, 9, &row(2)[..1], 2).unwrap());
        assert!(matches!(
            write.remove(1, 9, &row(2)[..1], 2),
            Err(StoreError::MissingRow { .. })
        ));
        write.set_progress(1, 9, &progress).unwrap();
        write.commit(false).unwrap();
        let read = store.read().unwrap();
        assert_eq!(read.progress(1, 9).unwrap(), Some(progress));
        // Another tenant, another version: separate keys.
        assert_eq!(read.progress(2, 9).unwrap(), None);
        assert_eq!(read.progress(1, 10).unwrap(), None);
        assert_eq!(read.get(1, 9, &row(1)[..1], None).unwrap(), Some(row(1)));
        assert_eq!(read.get(1, 9, &row(2)[..1], None).unwrap(), None);
    }
}
