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
//! - `meta`: the kernel snapshot committed with them, and the layout's format.
//!
//! Positions are 8 bytes big-endian, so byte order is position order.
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

use crate::encoding;
use kimberlite_kernel::{Position, Row, RowStore, StoreError, TableId, TenantId, Value};
use redb::{Database, Durability, ReadOnlyTable, ReadableDatabase, ReadableTable, TableDefinition};
use std::collections::BTreeMap;
use std::path::Path;

const CURRENT: TableDefinition<'static, &[u8], &[u8]> = TableDefinition::new("current");
const HISTORY: TableDefinition<'static, &[u8], &[u8]> = TableDefinition::new("history");
const APPLIED: TableDefinition<'static, u64, u64> = TableDefinition::new("applied");
const META: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("meta");

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

/// Each tenant's applied position (exclusive end), and the kernel snapshot committed with them.
pub type Applied = (BTreeMap<TenantId, Position>, Option<Vec<u8>>);

/// The redb file of the views.
#[derive(Debug)]
pub struct ViewStore {
    db: Database,
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
        }
        txn.commit().map_err(backend)?;
        Ok(ViewStore { db })
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
        Ok(ViewRead {
            current,
            history,
            applied,
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
        let row_key = row_key(tenant, table, key);
        if !self.end_live(&row_key, position)? {
            return Err(StoreError::MissingRow {
                tenant,
                table,
                key: format!("{key:?}"),
            });
        }
        self.current.insert(row_key, None);
        Ok(())
    }
}

/// A read snapshot of the view store: what queries read.
pub struct ViewRead {
    current: ReadOnlyTable<&'static [u8], &'static [u8]>,
    history: ReadOnlyTable<&'static [u8], &'static [u8]>,
    applied: BTreeMap<TenantId, Position>,
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
