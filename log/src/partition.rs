//! One tenant's log: segment files, recovery, group commit, the sparse index and readers.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use kimberlite_merkle::{APPEND_CHUNK_LEAVES_MAX, MerkleTree, NodeStore as _, SignedTreeHead};

use crate::checkpoint::{CHECKPOINT_ENTRY_BYTES, CHECKPOINT_FILE, Checkpoint, read_checkpoints};
use crate::codec::{self, Cipher, FrameError, PREFIX_BYTES};
use crate::error::LogError;
use crate::keys::{KeyRing, NodeKey};
use crate::scan::{self, ChunkReader, IndexEntry, ScanError, ScanOptions, TornTail};
use crate::ship::{self, FRAME_BATCH_BYTES_MAX, FrameBatch, Tip};
use crate::storage::{FileRef, FsStorage, Storage};
use crate::tree::{
    CountingStore, DurableTree, StorageNodeStore, TREE_FILE, check_not_past_log, tree_error,
};
use crate::types::{Hash, NewRecord, Position, Record, RecordHeader};

/// Production defaults of [`LogConfig`].
pub const SEGMENT_BYTES_MAX_DEFAULT: u64 = 64 * 1024 * 1024;
pub const INDEX_INTERVAL_RECORDS_DEFAULT: u64 = 256;
pub const CHECKPOINT_INTERVAL_RECORDS_DEFAULT: u64 = 4096;

/// The most bytes one `append` may encode to: bounds the write buffer.
pub const APPEND_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// A read stops once it has collected this many bytes of records (it returns at least one).
pub const READ_BYTES_MAX: u64 = 16 * 1024 * 1024;
/// Bytes a reader fetches at once; most records are far smaller, so one pread serves many.
const READ_CHUNK_BYTES: usize = 64 * 1024;

#[derive(Clone, Debug)]
pub struct LogConfig {
    /// A new segment starts when the next record would take the current one past this.
    /// A record larger than this gets a segment of its own.
    pub segment_bytes_max: u64,
    /// Every this many positions (and at the first record of each segment) the sparse index
    /// keeps the record's offset and timestamp. A read from any position scans at most this
    /// many records after an O(log n) lookup.
    pub index_interval_records: u64,
    /// `sync` signs a checkpoint once this many records are durable past the last one.
    pub checkpoint_interval_records: u64,
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            segment_bytes_max: SEGMENT_BYTES_MAX_DEFAULT,
            index_interval_records: INDEX_INTERVAL_RECORDS_DEFAULT,
            checkpoint_interval_records: CHECKPOINT_INTERVAL_RECORDS_DEFAULT,
        }
    }
}

impl LogConfig {
    fn check(&self) -> Result<(), LogError> {
        let fields = [
            ("segment_bytes_max", self.segment_bytes_max),
            ("index_interval_records", self.index_interval_records),
            (
                "checkpoint_interval_records",
                self.checkpoint_interval_records,
            ),
        ];
        for (name, value) in fields {
            if value == 0 {
                return Err(LogError::InvalidConfig {
                    reason: format!("{name} is 0; it must be at least 1"),
                });
            }
        }
        Ok(())
    }
}

/// What `open` found and repaired.
#[derive(Clone, Debug)]
pub struct RecoveryReport {
    pub dir: PathBuf,
    pub records: u64,
    /// Bytes of valid records.
    pub bytes: u64,
    pub segments: u64,
    pub checkpoints: u64,
    /// The torn end of the last segment that was cut off, if any.
    pub torn_tail: Option<TornTail>,
    /// The torn last entry of the checkpoint file that was cut off, if any.
    pub torn_checkpoint: Option<TornTail>,
    /// Leaves of the Merkle tree appended from the log's records on open: those of the
    /// records after the last checkpoint (their nodes were never synced), or all of them for
    /// a directory without a tree file. 0 after a clean close.
    pub tree_leaves_rebuilt: u64,
}

impl RecoveryReport {
    /// Whether recovery cut off anything (a torn log tail or a torn checkpoint entry): worth
    /// a line in the operator's log.
    pub fn truncated(&self) -> bool {
        self.torn_tail.is_some() || self.torn_checkpoint.is_some()
    }
}

impl fmt::Display for RecoveryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "log {}: {} records ({} bytes) in {} segments, {} checkpoints",
            self.dir.display(),
            self.records,
            self.bytes,
            self.segments,
            self.checkpoints
        )?;
        if self.tree_leaves_rebuilt > 0 {
            write!(
                f,
                "; appended {} Merkle tree leaves from the log",
                self.tree_leaves_rebuilt
            )?;
        }
        for (what, torn) in [
            ("log", &self.torn_tail),
            ("checkpoint file", &self.torn_checkpoint),
        ] {
            if let Some(torn) = torn {
                write!(
                    f,
                    "; cut a torn {what} tail from {} at byte {} ({} bytes dropped: {})",
                    torn.file.display(),
                    torn.offset,
                    torn.bytes_dropped,
                    torn.reason
                )?;
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug)]
struct SegmentView {
    first: Position,
    path: PathBuf,
    file: FileRef,
    /// For readers: bytes of published records. For the writer: bytes written.
    bytes: u64,
}

/// What readers see: records published by `sync` (durable) or by `publish_unsynced`.
#[derive(Debug)]
struct ReadState {
    segments: Vec<SegmentView>,
    index: Vec<IndexEntry>,
    end: Position,
}

#[derive(Debug)]
struct Shared {
    state: RwLock<ReadState>,
    keys: RwLock<Arc<KeyRing>>,
    /// The tree of the durable records: appended by the writer's `sync`, read by readers'
    /// proofs. Never locked together with `state`.
    tree: RwLock<DurableTree>,
    tree_path: PathBuf,
    partition: u64,
    /// Signs the heads readers hand out.
    node_key: Arc<NodeKey>,
}

impl Shared {
    fn state(&self) -> std::sync::RwLockReadGuard<'_, ReadState> {
        // A panic while holding the lock leaves the state as consistent as the panicking
        // writer left it; publishing is the only writer and never panics half-way.
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn tree(&self) -> std::sync::RwLockReadGuard<'_, DurableTree> {
        // Likewise: an append that fails leaves the tree at its last whole size.
        self.tree.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn tree_mut(&self) -> std::sync::RwLockWriteGuard<'_, DurableTree> {
        self.tree.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One tenant's append-only log. See the crate documentation for the durability contract.
pub struct PartitionLog {
    shared: Arc<Shared>,
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    partition: u64,
    node_key: Arc<NodeKey>,
    config: LogConfig,
    /// One cipher per data key appends have used (built from the ring on first use).
    ciphers: BTreeMap<u32, Cipher>,
    /// Every segment; the last one is written to.
    segments: Vec<SegmentView>,
    /// Index entries of records appended but not yet published to readers.
    pending_index: Vec<IndexEntry>,
    next_position: Position,
    head_hash: Hash,
    last_timestamp_ns: Option<u64>,
    durable_end: Position,
    durable_head: Hash,
    durable_timestamp_ns: Option<u64>,
    /// The last segment has writes that are not yet synced.
    dirty: bool,
    /// Reused across appends: one buffer, one write per segment touched.
    buffer: Vec<u8>,
    checkpoint_path: PathBuf,
    checkpoint_file: FileRef,
    checkpoint_bytes: u64,
    last_checkpoint: Option<Checkpoint>,
    /// Hashes of the records appended or imported but not yet durable: the leaves the next
    /// `sync` appends to the tree.
    pending_leaves: Vec<Hash>,
    /// The tree file, to sync without holding the tree's lock.
    tree_file: FileRef,
    /// The tree file has writes that are not yet synced.
    tree_dirty: bool,
    /// Set when a write or sync failed: what reached the disk is unknown, so every later
    /// write is refused until the partition is reopened (and recovered).
    poisoned: Option<String>,
}

impl fmt::Debug for PartitionLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartitionLog")
            .field("dir", &self.dir)
            .field("partition", &self.partition)
            .field("next_position", &self.next_position)
            .field("durable_end", &self.durable_end)
            .field("segments", &self.segments.len())
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

impl PartitionLog {
    /// Opens (creating if needed) the partition in `dir` and recovers it: every record's frame
    /// and CRC, dense positions and prev_hash links are checked, a torn tail of the last
    /// segment is cut off (and reported), and any other damage fails with
    /// [`LogError::Corrupt`].
    ///
    /// `partition` is the tenant id; it is signed into checkpoints so a checkpoint of one
    /// tenant never validates another's log.
    pub fn open(
        dir: &Path,
        partition: u64,
        keys: KeyRing,
        node_key: Arc<NodeKey>,
        config: LogConfig,
    ) -> Result<(PartitionLog, RecoveryReport), LogError> {
        PartitionLog::open_with(Arc::new(FsStorage), dir, partition, keys, node_key, config)
    }

    pub(crate) fn open_with(
        storage: Arc<dyn Storage>,
        dir: &Path,
        partition: u64,
        keys: KeyRing,
        node_key: Arc<NodeKey>,
        config: LogConfig,
    ) -> Result<(PartitionLog, RecoveryReport), LogError> {
        config.check()?;
        storage
            .create_dir_all(dir)
            .map_err(|source| LogError::io(dir, "create directory", source))?;
        let listing = scan::list(storage.as_ref(), dir).map_err(corrupt)?;
        let mut created = false;

        let checkpoint_path = dir.join(CHECKPOINT_FILE);
        let (checkpoint_file, checkpoints) = match &listing.checkpoints {
            Some(path) => {
                let file = storage
                    .open(path)
                    .map_err(|source| LogError::io(path, "open", source))?;
                let read = read_checkpoints(file.as_ref())
                    .map_err(|source| LogError::io(path, "read", source))?
                    .map_err(|damage| LogError::Corrupt {
                        file: path.clone(),
                        position: None,
                        offset: damage.offset,
                        reason: damage.reason,
                    })?;
                (file, read)
            }
            None => {
                let file = storage
                    .create(&checkpoint_path)
                    .map_err(|source| LogError::io(&checkpoint_path, "create", source))?;
                created = true;
                let read = read_checkpoints(file.as_ref())
                    .map_err(|source| LogError::io(&checkpoint_path, "read", source))?
                    .expect("an empty checkpoint file has no damage");
                (file, read)
            }
        };
        let entries = check_checkpoint_entries(&checkpoint_path, partition, &checkpoints.entries)
            .map_err(corrupt)?;

        let scanned = scan::scan(
            storage.as_ref(),
            &listing,
            ScanOptions {
                read_only: false,
                recompute_hashes: false,
                index_interval_records: config.index_interval_records,
                checkpoints: &entries,
                checkpoint_path: checkpoint_path.clone(),
                progress: &mut |_, _| {},
                on_record: &mut |_, _| Ok(()),
            },
        )
        .map_err(corrupt)?;

        if let Some(torn) = &scanned.torn {
            let segment = scanned
                .segments
                .last()
                .expect("a torn tail is in a segment");
            segment
                .file
                .set_len(torn.offset)
                .and_then(|()| segment.file.sync_data())
                .map_err(|source| LogError::io(&torn.file, "truncate", source))?;
            tracing::warn!(
                file = %torn.file.display(),
                offset = torn.offset,
                bytes_dropped = torn.bytes_dropped,
                reason = %torn.reason,
                "cut off a torn, unacknowledged write at the end of the log"
            );
        }
        let torn_checkpoint = if checkpoints.valid_bytes < checkpoints.file_bytes {
            checkpoint_file
                .set_len(checkpoints.valid_bytes)
                .and_then(|()| checkpoint_file.sync_data())
                .map_err(|source| LogError::io(&checkpoint_path, "truncate", source))?;
            let torn = TornTail {
                file: checkpoint_path.clone(),
                offset: checkpoints.valid_bytes,
                bytes_dropped: checkpoints.file_bytes - checkpoints.valid_bytes,
                reason: "partial or damaged last checkpoint entry".into(),
            };
            tracing::warn!(
                file = %torn.file.display(),
                offset = torn.offset,
                bytes_dropped = torn.bytes_dropped,
                "cut off a torn checkpoint entry"
            );
            Some(torn)
        } else {
            None
        };

        let mut segments: Vec<SegmentView> = scanned
            .segments
            .into_iter()
            .map(|segment| SegmentView {
                first: segment.first,
                path: segment.path,
                file: segment.file,
                bytes: segment.valid_bytes,
            })
            .collect();
        if segments.is_empty() {
            segments.push(create_segment(storage.as_ref(), dir, 0)?);
            created = true;
        }

        // The Merkle tree (see the `tree` module): keep the nodes the last checkpoint's sync
        // made durable, cut the unsynced rest, append the missing leaves from the log below.
        let tree_path = dir.join(TREE_FILE);
        let (mut store, tree_created) =
            StorageNodeStore::open_in(storage.as_ref(), &tree_path, listing.tree.is_some())?;
        created |= tree_created;
        check_not_past_log(&tree_path, store.node_count(), scanned.end)?;
        let last_checkpoint = checkpoints.entries.last().cloned();
        let synced_nodes = kimberlite_merkle::nodes_for_leaves(
            last_checkpoint.as_ref().map_or(0, |last| last.position),
        );
        let mut tree_dirty = false;
        if store.node_count() > synced_nodes {
            store
                .truncate(synced_nodes)
                .map_err(|source| LogError::io(&tree_path, "truncate", source))?;
            tree_dirty = true;
        }
        let tree_file = store.file();
        let tree = MerkleTree::open(store).map_err(|error| tree_error(&tree_path, error))?;
        let tree_leaves_kept = tree.size();
        if tree_leaves_kept < scanned.end {
            // Leaves are about to be written for the recovered records: those must be durable
            // first. After a crash of the process alone, the end of the last segment may still
            // be only in the page cache (sealed segments were synced by their roll).
            let last = segments.last().expect("a partition always has a segment");
            last.file
                .sync_data()
                .map_err(|source| LogError::io(&last.path, "fdatasync", source))?;
        }
        if created {
            storage
                .sync_dir(dir)
                .map_err(|source| LogError::io(dir, "fsync directory", source))?;
        }

        let shared = Arc::new(Shared {
            state: RwLock::new(ReadState {
                segments: segments.clone(),
                index: scanned.index,
                end: scanned.end,
            }),
            keys: RwLock::new(Arc::new(keys)),
            tree: RwLock::new(DurableTree {
                tree,
                chain_head: crate::GENESIS_HASH,
                timestamp_ns: 0,
            }),
            tree_path: tree_path.clone(),
            partition,
            node_key: node_key.clone(),
        });
        let tree_leaves_rebuilt = LogReader {
            shared: shared.clone(),
        }
        .extend_tree_to(
            scanned.end,
            scanned.head,
            scanned.last_timestamp_ns.unwrap_or(0),
        )?;
        tree_dirty |= tree_leaves_rebuilt > 0;
        if let Some(last) = &last_checkpoint {
            LogReader {
                shared: shared.clone(),
            }
            .check_tree_root(
                last,
                &checkpoint_path,
                (checkpoints.entries.len() - 1) as u64 * CHECKPOINT_ENTRY_BYTES as u64,
            )?;
        }
        if tree_leaves_rebuilt > 0 {
            tracing::info!(
                file = %tree_path.display(),
                from = tree_leaves_kept,
                leaves = tree_leaves_rebuilt,
                "appended the Merkle tree leaves of records after the last checkpoint from the log"
            );
        }

        let report = RecoveryReport {
            dir: dir.to_owned(),
            records: scanned.end,
            bytes: scanned.bytes,
            segments: segments.len() as u64,
            checkpoints: checkpoints.entries.len() as u64,
            torn_tail: scanned.torn,
            torn_checkpoint,
            tree_leaves_rebuilt,
        };
        let log = PartitionLog {
            shared,
            storage,
            dir: dir.to_owned(),
            partition,
            node_key,
            ciphers: BTreeMap::new(),
            config,
            segments,
            pending_index: Vec::new(),
            next_position: scanned.end,
            head_hash: scanned.head,
            last_timestamp_ns: scanned.last_timestamp_ns,
            durable_end: scanned.end,
            durable_head: scanned.head,
            durable_timestamp_ns: scanned.last_timestamp_ns,
            dirty: false,
            buffer: Vec::new(),
            checkpoint_path,
            checkpoint_file,
            checkpoint_bytes: checkpoints.valid_bytes,
            last_checkpoint,
            pending_leaves: Vec::new(),
            tree_file,
            tree_dirty,
            poisoned: None,
        };
        Ok((log, report))
    }

    /// Encrypts, chains and writes `records` at the next positions, in one write per segment
    /// touched (one in the common case). Not durable and not visible to readers until
    /// [`PartitionLog::sync`]. Returns the positions assigned.
    ///
    /// The whole batch is checked first (field bounds, non-decreasing timestamps, batch size):
    /// a rejected batch leaves no trace.
    pub fn append(&mut self, records: &[NewRecord]) -> Result<Range<Position>, LogError> {
        self.check_poisoned()?;
        let first = self.next_position;
        let mut batch_bytes = 0u64;
        let mut previous_ns = self.last_timestamp_ns;
        for (index, record) in records.iter().enumerate() {
            codec::check_bounds(index, record)?;
            let timestamp_ns = record.meta.timestamp_ns;
            if let Some(previous_ns) = previous_ns
                && timestamp_ns < previous_ns
            {
                return Err(LogError::TimestampRegression {
                    index,
                    timestamp_ns,
                    previous_ns,
                });
            }
            previous_ns = Some(timestamp_ns);
            batch_bytes += codec::record_bytes(record) as u64;
            self.cipher_for(first + index as u64, record.key_id)?;
        }
        if batch_bytes > APPEND_BYTES_MAX {
            return Err(LogError::BatchTooLarge {
                bytes: batch_bytes,
                bytes_max: APPEND_BYTES_MAX,
            });
        }
        let Some(last) = records.last() else {
            return Ok(first..first);
        };

        self.buffer.clear();
        self.buffer
            .reserve(batch_bytes.min(self.config.segment_bytes_max) as usize);
        let mut buffer_first = first;
        let mut position = first;
        let mut head = self.head_hash;
        for record in records {
            let record_bytes = codec::record_bytes(record) as u64;
            if self.rolls_before(self.buffer.len() as u64, record_bytes) {
                self.flush(buffer_first)?;
                self.roll(position)?;
                buffer_first = position;
            }
            self.index_if_due(position, self.buffer.len() as u64, record.meta.timestamp_ns);
            let cipher = &self.ciphers[&record.key_id];
            head = codec::encode(&mut self.buffer, position, &head, record, cipher);
            self.pending_leaves.push(head);
            position += 1;
        }
        self.flush(buffer_first)?;
        self.next_position = position;
        self.head_hash = head;
        self.last_timestamp_ns = Some(last.meta.timestamp_ns);
        Ok(first..position)
    }

    /// Writes records shipped from another replica's log ([`LogReader::read_frames`]) at the
    /// next positions, byte for byte: with the same `LogConfig`, the segment files, their
    /// rolls and the sparse index come out exactly as if this log had appended the records
    /// itself. Returns the positions written. Like `append`: not durable and not visible to
    /// readers until [`PartitionLog::sync`] (or [`PartitionLog::publish_unsynced`]).
    ///
    /// The whole batch is checked before anything is written (see [`ImportFault`]): it must
    /// start at [`PartitionLog::next_position`] and hold at most [`FRAME_BATCH_BYTES_MAX`]
    /// bytes; every record must frame, pass its CRC and header checks, hold its position, link
    /// to the record before it (this log's head for the first), hash to its stored hash, and
    /// keep timestamps non-decreasing; the records must end at `batch.end`. A refused batch
    /// leaves no trace ([`LogError::FrameImport`]).
    ///
    /// No data key is involved (the chain covers the ciphertext); reading the records back
    /// needs the keys they were written under.
    ///
    /// [`ImportFault`]: crate::ImportFault
    pub fn import_frames(&mut self, batch: &FrameBatch) -> Result<Range<Position>, LogError> {
        self.check_poisoned()?;
        let tip = ship::check_batch(batch, self.tip())?;
        let first = batch.first;
        let mut position = first;
        // Bytes of the batch before `written` are in the segment files.
        let mut written = 0;
        let mut written_first = first;
        for (offset, record) in ship::frames(&batch.bytes) {
            let record_bytes = record.len() as u64;
            if self.rolls_before((offset - written) as u64, record_bytes) {
                self.write_records(&batch.bytes[written..offset], written_first)?;
                self.roll(position)?;
                written = offset;
                written_first = position;
            }
            self.index_if_due(
                position,
                (offset - written) as u64,
                codec::timestamp_of(record),
            );
            self.pending_leaves.push(codec::stored_hash_of(record));
            position += 1;
        }
        self.write_records(&batch.bytes[written..], written_first)?;
        assert_eq!(position, tip.next);
        self.next_position = tip.next;
        self.head_hash = tip.head;
        self.last_timestamp_ns = tip.last_timestamp_ns;
        Ok(first..position)
    }

    /// Makes everything appended so far durable (one fdatasync: the group-commit point) and
    /// visible to readers. Signs a checkpoint when `checkpoint_interval_records` more records
    /// became durable since the last one. Returns the durable end (exclusive).
    ///
    /// Then appends the newly durable records to the Merkle tree: one more `write` (about 64
    /// bytes per record) and about two SHA-256 of 65 bytes per record, no fsync: the tree
    /// file is synced by the next checkpoint, and rebuilt from the log after a crash (see the
    /// `tree` module).
    pub fn sync(&mut self) -> Result<Position, LogError> {
        self.check_poisoned()?;
        if self.dirty {
            let segment = self.current().clone();
            segment
                .file
                .sync_data()
                .map_err(|source| self.poison(&segment.path, "fdatasync", source))?;
            self.dirty = false;
        }
        self.durable_end = self.next_position;
        self.durable_head = self.head_hash;
        self.durable_timestamp_ns = self.last_timestamp_ns;
        // Readers see the records before the tree covers them, never after: a reader that
        // holds a head of the tree can read every record under it.
        self.publish();
        self.grow_tree()?;
        let checkpointed = self
            .last_checkpoint
            .as_ref()
            .map_or(0, |last| last.position);
        if self.durable_end - checkpointed >= self.config.checkpoint_interval_records {
            self.checkpoint()?;
        }
        Ok(self.durable_end)
    }

    /// Makes every record appended or imported so far visible to readers now, before it is
    /// durable. Returns the end visible to readers (the next position).
    ///
    /// The contract: call this only when the records are durable elsewhere and a crash
    /// rebuilds them byte for byte — a replica whose records come from VSR ops that a quorum
    /// wrote to its journal before they committed. A crash of this process can then lose
    /// records that readers (projections, queries, peers fetching with `read_frames`) have
    /// already seen; after reopening, the log ends at what reached the disk, and the caller
    /// must append (or import) the rest again before serving reads past that end. Without
    /// such a source, use [`PartitionLog::sync`]: acknowledged means durable.
    ///
    /// Durability is unchanged: [`PartitionLog::durable_position`] moves only on `sync`, and
    /// signed checkpoints cover only what `sync` made durable. Readers read published bytes
    /// through the page cache like any others, with the same CRC, chain and hash checks.
    ///
    /// Refused after a failed write ([`LogError::Poisoned`]): what the file holds is unknown.
    pub fn publish_unsynced(&mut self) -> Result<Position, LogError> {
        self.check_poisoned()?;
        self.publish();
        Ok(self.next_position)
    }

    /// Checks that the log ends at `end` and that the hash of its last record is `chain_head`
    /// ([`GENESIS_HASH`](crate::GENESIS_HASH) for `end` 0): the anchor a VSR checkpoint gives
    /// for this partition, held against what was appended or imported (durable or not).
    /// Fails with [`LogError::AnchorMismatch`].
    pub fn check_head(&self, end: Position, chain_head: &Hash) -> Result<(), LogError> {
        if self.next_position == end && self.head_hash == *chain_head {
            return Ok(());
        }
        Err(LogError::AnchorMismatch {
            expected_end: end,
            expected_head: *chain_head,
            end: self.next_position,
            head: self.head_hash,
        })
    }

    /// The next position `append` assigns.
    pub fn next_position(&self) -> Position {
        self.next_position
    }

    /// Exclusive end of the durable records.
    pub fn durable_position(&self) -> Position {
        self.durable_end
    }

    /// Hash of the last appended record; [`GENESIS_HASH`](crate::GENESIS_HASH) if the log is
    /// empty.
    pub fn head_hash(&self) -> Hash {
        self.head_hash
    }

    /// Timestamp of the last appended record, if any.
    pub fn last_timestamp_ns(&self) -> Option<u64> {
        self.last_timestamp_ns
    }

    pub fn partition(&self) -> u64 {
        self.partition
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The last checkpoint written (by this process or found on open).
    pub fn last_checkpoint(&self) -> Option<&Checkpoint> {
        self.last_checkpoint.as_ref()
    }

    pub fn reader(&self) -> LogReader {
        LogReader {
            shared: self.shared.clone(),
        }
    }

    /// Signs the durable tree head now — (partition, durable end, Merkle root, chain head,
    /// timestamp of the last record) — and appends the checkpoint to the checkpoint file.
    /// If the last checkpoint already covers the durable head, returns it without writing.
    ///
    /// Two fdatasyncs: the Merkle tree file first (so every node under the signed root is
    /// durable before the checkpoint is), then the checkpoint file.
    pub fn checkpoint(&mut self) -> Result<Checkpoint, LogError> {
        self.check_poisoned()?;
        let head = {
            let durable = self.shared.tree();
            assert_eq!(durable.tree.size(), self.durable_end);
            assert_eq!(durable.chain_head, self.durable_head);
            durable.head(self.partition)
        };
        if let Some(last) = &self.last_checkpoint
            && last.position == self.durable_end
        {
            assert_eq!(last.chain_head, self.durable_head);
            assert_eq!(last.tree_root, head.root);
            return Ok(last.clone());
        }
        if self.tree_dirty {
            let path = self.shared.tree_path.clone();
            self.tree_file
                .sync_data()
                .map_err(|source| self.poison(&path, "fdatasync", source))?;
            self.tree_dirty = false;
        }
        let checkpoint = Checkpoint::sign(&self.node_key, head);
        let entry = checkpoint.encode();
        assert_eq!(Checkpoint::decode(&entry).as_ref(), Ok(&checkpoint));
        let path = self.checkpoint_path.clone();
        let file = self.checkpoint_file.clone();
        file.write_at(&entry, self.checkpoint_bytes)
            .and_then(|()| file.sync_data())
            .map_err(|source| self.poison(&path, "write", source))?;
        self.checkpoint_bytes += CHECKPOINT_ENTRY_BYTES as u64;
        self.last_checkpoint = Some(checkpoint.clone());
        Ok(checkpoint)
    }

    /// Clean shutdown: sync, then sign a checkpoint of the head.
    pub fn close(mut self) -> Result<(), LogError> {
        self.sync()?;
        self.checkpoint()?;
        Ok(())
    }

    /// Replaces the key ring: appends use its current key from now on; readers (including
    /// existing ones) decrypt with it.
    pub fn set_keys(&mut self, keys: KeyRing) {
        // A key id keeps its bytes for life, except a shredded key, which must not encrypt
        // again: drop every cipher the new ring no longer backs.
        self.ciphers.retain(|id, _| keys.get(*id).is_some());
        *self
            .shared
            .keys
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(keys);
    }

    /// Makes sure appends can encrypt under `key_id` (checked before anything is written).
    fn cipher_for(&mut self, position: Position, key_id: u32) -> Result<(), LogError> {
        if self.ciphers.contains_key(&key_id) {
            return Ok(());
        }
        let keys = self
            .shared
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let key = keys
            .get(key_id)
            .ok_or(LogError::KeyUnavailable { position, key_id })?;
        self.ciphers.insert(key_id, Cipher::new(&key));
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn segments_len(&self) -> usize {
        self.segments.len()
    }

    fn tip(&self) -> Tip {
        Tip {
            next: self.next_position,
            head: self.head_hash,
            last_timestamp_ns: self.last_timestamp_ns,
        }
    }

    /// The segment rolling rule, shared by `append` and `import_frames` so that both lay out
    /// the same records in the same files: a new segment starts when the next record (of
    /// `record_bytes`, after `unwritten` bytes of its batch not yet written) would take the
    /// current one past `segment_bytes_max`. A record larger than that, in an empty segment,
    /// keeps it to itself.
    fn rolls_before(&self, unwritten: u64, record_bytes: u64) -> bool {
        let segment_bytes = self.current().bytes + unwritten;
        segment_bytes > 0 && segment_bytes + record_bytes > self.config.segment_bytes_max
    }

    /// The sparse index rule, shared like [`PartitionLog::rolls_before`]: the first record of
    /// a segment and every `index_interval_records`-th position (as `scan` rebuilds it).
    fn index_if_due(&mut self, position: Position, unwritten: u64, timestamp_ns: u64) {
        let offset = self.current().bytes + unwritten;
        if offset == 0 || position.is_multiple_of(self.config.index_interval_records) {
            self.pending_index.push(IndexEntry {
                position,
                segment: self.segments.len() - 1,
                offset,
                timestamp_ns,
            });
        }
    }

    fn current(&self) -> &SegmentView {
        self.segments
            .last()
            .expect("a partition always has a segment")
    }

    fn check_poisoned(&self) -> Result<(), LogError> {
        match &self.poisoned {
            Some(reason) => Err(LogError::Poisoned {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    fn poison(&mut self, path: &Path, action: &'static str, source: std::io::Error) -> LogError {
        let error = LogError::io(path, action, source);
        tracing::error!(%error, "log write failed; refusing further writes until reopened");
        self.poisoned = Some(error.to_string());
        error
    }

    /// Appends the leaves of the records that `sync` just made durable to the Merkle tree, and
    /// moves its head to the durable head. One store write; no fsync (see the `tree` module).
    fn grow_tree(&mut self) -> Result<(), LogError> {
        if self.pending_leaves.is_empty() {
            return Ok(());
        }
        let appended = {
            let mut durable = self.shared.tree_mut();
            let appended = durable.tree.append_batch(&self.pending_leaves);
            if appended.is_ok() {
                assert_eq!(durable.tree.size(), self.durable_end);
                durable.chain_head = self.durable_head;
                durable.timestamp_ns = self.durable_timestamp_ns.unwrap_or(0);
            }
            appended
        };
        self.pending_leaves.clear();
        if let Err(error) = appended {
            let error = tree_error(&self.shared.tree_path, error);
            tracing::error!(%error, "Merkle tree append failed; refusing further writes until reopened");
            self.poisoned = Some(error.to_string());
            return Err(error);
        }
        self.tree_dirty = true;
        Ok(())
    }

    /// Writes the buffer (records from `first`) at the end of the current segment.
    fn flush(&mut self, first: Position) -> Result<(), LogError> {
        let buffer = std::mem::take(&mut self.buffer);
        let written = self.write_records(&buffer, first);
        self.buffer = buffer;
        self.buffer.clear();
        written
    }

    /// Writes `records` (whole records from `first`) at the end of the current segment.
    fn write_records(&mut self, records: &[u8], first: Position) -> Result<(), LogError> {
        if records.is_empty() {
            return Ok(());
        }
        // Paired with the read-back check of every read: these bytes are what we meant.
        assert_frames(records, first);
        let segment = self.current().clone();
        segment
            .file
            .write_at(records, segment.bytes)
            .map_err(|source| self.poison(&segment.path, "write", source))?;
        self.segments.last_mut().expect("a segment").bytes += records.len() as u64;
        self.dirty = true;
        Ok(())
    }

    /// Seals the current segment (fdatasync, so a crash can never leave a torn record in a
    /// segment that is not the last) and starts a new one at `first`.
    fn roll(&mut self, first: Position) -> Result<(), LogError> {
        let sealed = self.current().clone();
        if self.dirty {
            sealed
                .file
                .sync_data()
                .map_err(|source| self.poison(&sealed.path, "fdatasync", source))?;
            self.dirty = false;
        }
        let segment = create_segment(self.storage.as_ref(), &self.dir, first)
            .and_then(|segment| {
                self.storage
                    .sync_dir(&self.dir)
                    .map_err(|source| LogError::io(&self.dir, "fsync directory", source))?;
                Ok(segment)
            })
            .inspect_err(|error| {
                self.poisoned = Some(error.to_string());
            })?;
        self.segments.push(segment);
        Ok(())
    }

    /// Shows readers everything written: `sync` calls it once that is durable,
    /// `publish_unsynced` before.
    fn publish(&mut self) {
        let mut state = self
            .shared
            .state
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let known = state.segments.len();
        assert!(known >= 1 && known <= self.segments.len());
        state.segments[known - 1].bytes = self.segments[known - 1].bytes;
        state.segments.extend_from_slice(&self.segments[known..]);
        state.index.append(&mut self.pending_index);
        assert!(self.next_position >= state.end);
        assert!(self.next_position >= self.durable_end);
        state.end = self.next_position;
    }
}

/// Creates an empty segment file and makes it durable; the caller syncs the directory.
fn create_segment(
    storage: &dyn Storage,
    dir: &Path,
    first: Position,
) -> Result<SegmentView, LogError> {
    let path = dir.join(scan::segment_file_name(first));
    let file = storage
        .create(&path)
        .map_err(|source| LogError::io(&path, "create", source))?;
    file.sync_data()
        .map_err(|source| LogError::io(&path, "fdatasync", source))?;
    Ok(SegmentView {
        first,
        path,
        file,
        bytes: 0,
    })
}

/// Checks partition and order of checkpoint entries; returns them with their byte offsets.
pub(crate) fn check_checkpoint_entries(
    path: &Path,
    partition: u64,
    entries: &[Checkpoint],
) -> Result<Vec<(u64, Checkpoint)>, ScanError> {
    let mut previous = 0;
    let mut checked = Vec::with_capacity(entries.len());
    for (index, checkpoint) in entries.iter().enumerate() {
        let offset = (index * CHECKPOINT_ENTRY_BYTES) as u64;
        if checkpoint.partition != partition {
            return Err(ScanError::damage(
                path,
                checkpoint.position,
                offset,
                format!(
                    "checkpoint is for partition {}, not partition {partition}: this directory \
                     holds another tenant's checkpoints",
                    checkpoint.partition
                ),
            ));
        }
        if checkpoint.position < previous {
            return Err(ScanError::damage(
                path,
                checkpoint.position,
                offset,
                format!(
                    "checkpoint position {} is before the previous checkpoint's {previous}",
                    checkpoint.position
                ),
            ));
        }
        previous = checkpoint.position;
        checked.push((offset, checkpoint.clone()));
    }
    Ok(checked)
}

fn corrupt(error: ScanError) -> LogError {
    match error {
        ScanError::Io {
            path,
            action,
            source,
        } => LogError::Io {
            path,
            action,
            source,
        },
        ScanError::Damage(damage) => LogError::Corrupt {
            file: damage.file,
            position: damage.position,
            offset: damage.offset,
            reason: damage.reason,
        },
    }
}

/// Asserts that `bytes` are whole, CRC-valid records at dense positions from `first`.
fn assert_frames(bytes: &[u8], first: Position) {
    let mut offset = 0;
    let mut position = first;
    while offset < bytes.len() {
        let total = codec::check_frame(&bytes[offset..])
            .unwrap_or_else(|error| panic!("encoded record {position} does not frame: {error:?}"));
        assert_eq!(codec::position_of(&bytes[offset..]), position);
        offset += total;
        position += 1;
    }
}

/// Called by `LogReader::walk` with each record, its file and byte offset; returns whether
/// to go on.
type Visit<'a> = dyn FnMut(&[u8], &Path, u64) -> Result<bool, LogError> + 'a;

/// Reads published records (durable ones, see [`PartitionLog::publish_unsynced`] for the
/// exception), concurrently with appends. Cheap to clone, `Send + Sync`.
/// Every record returned has passed its CRC and SHA-256 check (read-back check).
#[derive(Clone, Debug)]
pub struct LogReader {
    shared: Arc<Shared>,
}

impl LogReader {
    /// Up to `limit` records from `from`, decrypted. Fewer at the visible end, or once
    /// [`READ_BYTES_MAX`] bytes are collected (always at least one record if any is there).
    pub fn read(&self, from: Position, limit: usize) -> Result<Vec<Record>, LogError> {
        let keys = self
            .shared
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut ciphers = Vec::new();
        let mut records = Vec::new();
        let mut bytes = 0u64;
        self.walk(
            from,
            Position::MAX,
            &mut |record, path, offset| {
                let header = checked_header(record, path, offset)?;
                let (payload, erased) = if keys.is_destroyed(header.key_id) {
                    (Vec::new(), true)
                } else {
                    (codec::decrypt(record, &header, &keys, &mut ciphers)?, false)
                };
                records.push(Record {
                    header,
                    payload,
                    erased,
                });
                bytes += record.len() as u64;
                Ok(records.len() < limit && bytes < READ_BYTES_MAX)
            },
            limit,
        )?;
        Ok(records)
    }

    /// Like [`LogReader::read`], without decrypting: no key needed.
    pub fn read_headers(
        &self,
        from: Position,
        limit: usize,
    ) -> Result<Vec<RecordHeader>, LogError> {
        let mut headers = Vec::new();
        let mut bytes = 0u64;
        self.walk(
            from,
            Position::MAX,
            &mut |record, path, offset| {
                headers.push(checked_header(record, path, offset)?);
                bytes += record.len() as u64;
                Ok(headers.len() < limit && bytes < READ_BYTES_MAX)
            },
            limit,
        )?;
        Ok(headers)
    }

    /// The sparse index as readers see it.
    #[cfg(test)]
    pub(crate) fn index(&self) -> Vec<IndexEntry> {
        self.shared.state().index.clone()
    }

    /// Bytes of the published records in the segment files (what the partition stores).
    pub fn stored_bytes(&self) -> u64 {
        self.shared
            .state()
            .segments
            .iter()
            .map(|segment| segment.bytes)
            .sum()
    }

    /// The visible end (exclusive): what `sync` made durable, or what
    /// [`PartitionLog::publish_unsynced`] published.
    pub fn end(&self) -> Position {
        self.shared.state().end
    }

    /// The stored bytes of the records in `positions`, for
    /// [`PartitionLog::import_frames`] on another replica: whole records, back to back,
    /// exactly as in the segment files.
    ///
    /// Stops at the visible end, and before a record that would take the batch past
    /// `bytes_max` (clamped to [`FRAME_BATCH_BYTES_MAX`]), but holds at least one record if
    /// `positions.start` is below both ends. Empty (`first == end == positions.start`) if
    /// not. To ship up to an anchor (a VSR checkpoint's end for this partition), ask for
    /// `next..anchor_end` and continue from the returned `end`.
    ///
    /// Each record is framed, CRC-checked, at its position and linked to the one before it
    /// (the read-back check); the importer checks everything again, hashes included.
    pub fn read_frames(
        &self,
        positions: Range<Position>,
        bytes_max: usize,
    ) -> Result<FrameBatch, LogError> {
        let bytes_max = bytes_max.min(FRAME_BATCH_BYTES_MAX);
        let mut batch = FrameBatch {
            first: positions.start,
            end: positions.start,
            bytes: Vec::new(),
        };
        if positions.is_empty() {
            return Ok(batch);
        }
        self.walk(
            positions.start,
            positions.end,
            &mut |record, _, _| {
                if !batch.bytes.is_empty() && batch.bytes.len() + record.len() > bytes_max {
                    return Ok(false);
                }
                batch.bytes.extend_from_slice(record);
                batch.end += 1;
                Ok(batch.bytes.len() < bytes_max)
            },
            usize::MAX,
        )?;
        assert!(batch.bytes.len() <= FRAME_BATCH_BYTES_MAX);
        Ok(batch)
    }

    /// The number of records the Merkle tree covers: the durable end as of the last `sync`.
    /// Never above [`LogReader::end`] (which runs ahead with
    /// [`PartitionLog::publish_unsynced`]): every record under a head can be read. Proofs are
    /// for sizes up to this.
    pub fn tree_size(&self) -> u64 {
        self.shared.tree().tree.size()
    }

    /// The current tree head — (partition, [`LogReader::tree_size`], its Merkle root, the
    /// hash and timestamp of its last record) — signed now with the node key. Not written
    /// anywhere; for a given size it is the same statement, with the same signature, as a
    /// checkpoint at that position. A client checks it with
    /// [`SignedTreeHead::verify`](kimberlite_merkle::SignedTreeHead::verify).
    ///
    /// Costs one Ed25519 signature; reads nothing from disk.
    pub fn signed_head(&self) -> Result<SignedTreeHead, LogError> {
        let head = self.shared.tree().head(self.shared.partition);
        let signature = self.shared.node_key.sign(&head.signed_message());
        Ok(SignedTreeHead { head, signature })
    }

    /// The RFC 9162 inclusion proof of the record at `position` in the tree of the first
    /// `size` records: check it with
    /// [`verify_record_in_head`](kimberlite_merkle::verify_record_in_head) (or
    /// `verify_inclusion` of the leaf hash of the record's hash) against a signed head of that
    /// size. At most 58 hashes, one tree-file read each, plus at most 58 reads for the one
    /// that covers an incomplete subtree.
    ///
    /// Refused for a `size` above [`LogReader::tree_size`] ([`LogError::BeyondTree`]) or a
    /// `position` at or past `size` ([`LogError::OutsideTree`]).
    pub fn inclusion_proof(&self, position: Position, size: u64) -> Result<Vec<Hash>, LogError> {
        let durable = self.shared.tree();
        durable.check_size(size)?;
        if position >= size {
            return Err(LogError::OutsideTree { position, size });
        }
        durable
            .tree
            .inclusion_proof(position, size)
            .map_err(|error| tree_error(&self.shared.tree_path, error))
    }

    /// The RFC 9162 consistency proof that the tree of the first `new_size` records extends
    /// the tree of the first `old_size`: check it with `kimberlite_merkle::verify_consistency`
    /// against two signed heads. Empty when `old_size` is 0 or equals `new_size`. At most 59
    /// hashes; same cost as [`LogReader::inclusion_proof`].
    ///
    /// Refused for a `new_size` above [`LogReader::tree_size`] ([`LogError::BeyondTree`]) or
    /// `old_size > new_size` ([`LogError::TreeSizesReversed`]).
    pub fn consistency_proof(&self, old_size: u64, new_size: u64) -> Result<Vec<Hash>, LogError> {
        let durable = self.shared.tree();
        durable.check_size(new_size)?;
        if old_size > new_size {
            return Err(LogError::TreeSizesReversed { old_size, new_size });
        }
        durable
            .tree
            .consistency_proof(old_size, new_size)
            .map_err(|error| tree_error(&self.shared.tree_path, error))
    }

    /// Appends the leaves of records `tree size..end` (read back from the segments) to the
    /// tree, whose head becomes (`end`, `chain_head`, `timestamp_ns`). Recovery only: the
    /// records must be durable. Returns the number of leaves appended.
    fn extend_tree_to(
        &self,
        end: Position,
        chain_head: Hash,
        timestamp_ns: u64,
    ) -> Result<u64, LogError> {
        let path = &self.shared.tree_path;
        let mut durable = self.shared.tree_mut();
        let start = durable.tree.size();
        assert!(start <= end);
        let mut leaves: Vec<Hash> =
            Vec::with_capacity(((end - start) as usize).min(APPEND_CHUNK_LEAVES_MAX));
        self.walk(
            start,
            end,
            &mut |record, _, _| {
                leaves.push(codec::stored_hash_of(record));
                if leaves.len() == APPEND_CHUNK_LEAVES_MAX {
                    durable
                        .tree
                        .append_batch(&leaves)
                        .map_err(|error| tree_error(path, error))?;
                    leaves.clear();
                }
                Ok(true)
            },
            usize::MAX,
        )?;
        durable
            .tree
            .append_batch(&leaves)
            .map_err(|error| tree_error(path, error))?;
        assert_eq!(
            durable.tree.size(),
            end,
            "the walk reads every record to the end"
        );
        durable.chain_head = chain_head;
        durable.timestamp_ns = timestamp_ns;
        Ok(end - start)
    }

    /// Holds the tree's root at `checkpoint` against the root it signs (recovery). On a
    /// mismatch, recomputes the root from the records to say which side is wrong.
    fn check_tree_root(
        &self,
        checkpoint: &Checkpoint,
        checkpoint_path: &Path,
        checkpoint_offset: u64,
    ) -> Result<(), LogError> {
        let tree_path = &self.shared.tree_path;
        let position = checkpoint.position;
        let tree_root = self
            .shared
            .tree()
            .tree
            .root(position)
            .map_err(|error| tree_error(tree_path, error))?;
        if tree_root == checkpoint.tree_root {
            return Ok(());
        }
        let mut records =
            MerkleTree::open(CountingStore::default()).expect("an empty counting store opens");
        self.walk(
            0,
            position,
            &mut |record, _, _| {
                records
                    .append(&codec::stored_hash_of(record))
                    .expect("a counting store never fails");
                Ok(true)
            },
            usize::MAX,
        )?;
        assert_eq!(records.size(), position);
        let records_root = records
            .root(position)
            .expect("the current root is in memory");
        let (file, offset, reason) = if records_root == checkpoint.tree_root {
            (
                tree_path.as_path(),
                0,
                format!(
                    "the Merkle tree file gives root {} to records 0..{position}, but they hash \
                     to root {}, which the last checkpoint signs: the tree file is damaged; \
                     remove {TREE_FILE} and reopen to rebuild it from the log",
                    hex::encode(tree_root),
                    hex::encode(records_root)
                ),
            )
        } else {
            (
                checkpoint_path,
                checkpoint_offset,
                format!(
                    "records 0..{position} hash to Merkle root {}, but the last checkpoint signs \
                     root {}: the checkpoint does not describe these records; run verify",
                    hex::encode(records_root),
                    hex::encode(checkpoint.tree_root)
                ),
            )
        };
        Err(LogError::Corrupt {
            file: file.to_path_buf(),
            position: Some(position),
            offset,
            reason,
        })
    }

    /// The last position whose timestamp is at most `timestamp_ns`; `None` if the log is
    /// empty or starts later. A binary search of the sparse index, then a scan of at most
    /// `index_interval_records` records.
    ///
    /// A record that fails its read-back check during the scan is logged and answered with
    /// `None`; callers that must tell "no such position" from "the log is damaged" use
    /// [`LogReader::try_position_at_timestamp`].
    pub fn position_at_timestamp(&self, timestamp_ns: u64) -> Option<Position> {
        self.try_position_at_timestamp(timestamp_ns)
            .unwrap_or_else(|error| {
                tracing::error!(%error, timestamp_ns, "could not resolve a timestamp to a position");
                None
            })
    }

    /// [`LogReader::position_at_timestamp`], with read errors reported.
    pub fn try_position_at_timestamp(
        &self,
        timestamp_ns: u64,
    ) -> Result<Option<Position>, LogError> {
        let (start, stop) = {
            let state = self.shared.state();
            let after = state
                .index
                .partition_point(|entry| entry.timestamp_ns <= timestamp_ns);
            if after == 0 {
                return Ok(None);
            }
            let stop = state
                .index
                .get(after)
                .map_or(state.end, |entry| entry.position);
            (state.index[after - 1].position, stop)
        };
        let mut found = start;
        self.walk(
            start,
            stop,
            &mut |record, _, _| {
                let record_ns = codec::timestamp_of(record);
                if record_ns <= timestamp_ns {
                    found = codec::position_of(record);
                }
                Ok(record_ns <= timestamp_ns)
            },
            usize::MAX,
        )?;
        Ok(Some(found))
    }

    /// Calls `visit` with each visible record in `from..to` (framed, CRC-checked, at its
    /// expected position, linked to the one before), until `visit` returns false or `limit`
    /// records were visited.
    fn walk(
        &self,
        from: Position,
        to: Position,
        visit: &mut Visit<'_>,
        limit: usize,
    ) -> Result<(), LogError> {
        if limit == 0 {
            return Ok(());
        }
        let (mut segment_index, mut segment, entry, end) = {
            let state = self.shared.state();
            if from >= state.end {
                return Ok(());
            }
            let entry =
                state.index[state.index.partition_point(|entry| entry.position <= from) - 1];
            (
                entry.segment,
                state.segments[entry.segment].clone(),
                entry,
                state.end,
            )
        };
        let to = to.min(end);
        let mut position = entry.position;
        let mut offset = entry.offset;
        let mut previous_hash: Option<Hash> = None;
        let mut reader = ChunkReader::new(segment.file.as_ref(), segment.bytes, READ_CHUNK_BYTES);
        while position < to {
            if offset == segment.bytes {
                segment_index += 1;
                segment = self.shared.state().segments[segment_index].clone();
                offset = 0;
                reader = ChunkReader::new(segment.file.as_ref(), segment.bytes, READ_CHUNK_BYTES);
                if segment.first != position {
                    return Err(read_corrupt(
                        &segment.path,
                        position,
                        0,
                        format!(
                            "segment starts at position {} where position {position} belongs",
                            segment.first
                        ),
                    ));
                }
            }
            let path = &segment.path;
            let io = |source| LogError::io(path, "read", source);
            if position < from {
                // Skipping to `from`: only the lengths are needed; the record at `from` is
                // checked for its position, which catches a wrong skip.
                let prefix = reader.get(offset, PREFIX_BYTES).map_err(io)?;
                let total = codec::frame_bytes(prefix)
                    .map_err(|error| read_corrupt(path, position, offset, frame_reason(error)))?;
                if offset + total as u64 > segment.bytes {
                    return Err(read_corrupt(
                        path,
                        position,
                        offset,
                        "record length runs past the visible end of the segment".into(),
                    ));
                }
                offset += total as u64;
                position += 1;
                continue;
            }
            let record = reader
                .frame(offset)
                .map_err(io)?
                .map_err(|error| read_corrupt(path, position, offset, frame_reason(error)))?;
            if codec::position_of(record) != position {
                return Err(read_corrupt(
                    path,
                    position,
                    offset,
                    format!(
                        "record holds position {} where position {position} belongs",
                        codec::position_of(record)
                    ),
                ));
            }
            if let Some(previous_hash) = previous_hash
                && codec::prev_hash_of(record) != previous_hash
            {
                return Err(read_corrupt(
                    path,
                    position,
                    offset,
                    "prev_hash does not match the hash of the record before it".into(),
                ));
            }
            previous_hash = Some(codec::stored_hash_of(record));
            let total = record.len() as u64;
            let keep_going = visit(record, path, offset)?;
            offset += total;
            position += 1;
            if !keep_going || (position - from) as usize >= limit {
                break;
            }
        }
        Ok(())
    }
}

/// The read-back check of a returned record: its fields parse and its hash holds.
fn checked_header(record: &[u8], path: &Path, offset: u64) -> Result<RecordHeader, LogError> {
    let position = codec::position_of(record);
    let header = codec::parse_header(record)
        .map_err(|reason| read_corrupt(path, position, offset, reason))?;
    if !codec::hash_matches(record) {
        return Err(read_corrupt(
            path,
            position,
            offset,
            "stored hash is not the SHA-256 of the record's header and ciphertext".into(),
        ));
    }
    Ok(header)
}

fn frame_reason(error: FrameError) -> String {
    match error {
        FrameError::Incomplete => "record is cut short".into(),
        FrameError::Invalid(reason) => reason,
    }
}

fn read_corrupt(path: &Path, position: Position, offset: u64, reason: String) -> LogError {
    LogError::Corrupt {
        file: path.to_owned(),
        position: Some(position),
        offset,
        reason,
    }
}
