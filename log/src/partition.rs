//! One tenant's log: segment files, recovery, group commit, the sparse index and readers.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use crate::checkpoint::{CHECKPOINT_ENTRY_BYTES, CHECKPOINT_FILE, Checkpoint, read_checkpoints};
use crate::codec::{self, Cipher, FrameError, PREFIX_BYTES};
use crate::error::LogError;
use crate::keys::{KeyRing, NodeKey};
use crate::scan::{self, ChunkReader, IndexEntry, ScanError, ScanOptions, TornTail};
use crate::storage::{FileRef, FsStorage, Storage};
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
    /// For readers: bytes of durable records. For the writer: bytes written.
    bytes: u64,
}

/// What readers see: durable records only.
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
}

impl Shared {
    fn state(&self) -> std::sync::RwLockReadGuard<'_, ReadState> {
        // A panic while holding the lock leaves the state as consistent as the panicking
        // writer left it; publishing is the only writer and never panics half-way.
        self.state.read().unwrap_or_else(PoisonError::into_inner)
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
    cipher: Cipher,
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
                        reason: format!("{}, and valid checkpoints follow", damage.reason),
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
        if created {
            storage
                .sync_dir(dir)
                .map_err(|source| LogError::io(dir, "fsync directory", source))?;
        }

        let report = RecoveryReport {
            dir: dir.to_owned(),
            records: scanned.end,
            bytes: scanned.bytes,
            segments: segments.len() as u64,
            checkpoints: checkpoints.entries.len() as u64,
            torn_tail: scanned.torn,
            torn_checkpoint,
        };
        let cipher = Cipher::new(keys.current());
        let shared = Arc::new(Shared {
            state: RwLock::new(ReadState {
                segments: segments.clone(),
                index: scanned.index,
                end: scanned.end,
            }),
            keys: RwLock::new(Arc::new(keys)),
        });
        let log = PartitionLog {
            shared,
            storage,
            dir: dir.to_owned(),
            partition,
            node_key,
            cipher,
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
            last_checkpoint: checkpoints.entries.last().cloned(),
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
            let segment_bytes = self.current().bytes + self.buffer.len() as u64;
            if segment_bytes > 0 && segment_bytes + record_bytes > self.config.segment_bytes_max {
                self.flush(buffer_first)?;
                self.roll(position)?;
                buffer_first = position;
            }
            let offset = self.current().bytes + self.buffer.len() as u64;
            if offset == 0 || position.is_multiple_of(self.config.index_interval_records) {
                self.pending_index.push(IndexEntry {
                    position,
                    segment: self.segments.len() - 1,
                    offset,
                    timestamp_ns: record.meta.timestamp_ns,
                });
            }
            head = codec::encode(&mut self.buffer, position, &head, record, &self.cipher);
            position += 1;
        }
        self.flush(buffer_first)?;
        self.next_position = position;
        self.head_hash = head;
        self.last_timestamp_ns = Some(last.meta.timestamp_ns);
        Ok(first..position)
    }

    /// Makes everything appended so far durable (one fdatasync: the group-commit point) and
    /// visible to readers. Signs a checkpoint when `checkpoint_interval_records` more records
    /// became durable since the last one. Returns the durable end (exclusive).
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
        let checkpointed = self
            .last_checkpoint
            .as_ref()
            .map_or(0, |last| last.position);
        if self.durable_end - checkpointed >= self.config.checkpoint_interval_records {
            self.checkpoint()?;
        }
        self.publish();
        Ok(self.durable_end)
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

    /// Signs the durable head now and appends the checkpoint to the checkpoint file (fsynced).
    /// If the last checkpoint already covers the durable head, returns it without writing.
    pub fn checkpoint(&mut self) -> Result<Checkpoint, LogError> {
        self.check_poisoned()?;
        if let Some(last) = &self.last_checkpoint
            && last.position == self.durable_end
        {
            assert_eq!(last.chain_head, self.durable_head);
            return Ok(last.clone());
        }
        let checkpoint = Checkpoint::sign(
            &self.node_key,
            self.partition,
            self.durable_end,
            self.durable_head,
            self.durable_timestamp_ns.unwrap_or(0),
        );
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
        self.cipher = Cipher::new(keys.current());
        *self
            .shared
            .keys
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(keys);
    }

    #[cfg(test)]
    pub(crate) fn segments_len(&self) -> usize {
        self.segments.len()
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

    /// Writes the buffer (records from `first`) at the end of the current segment.
    fn flush(&mut self, first: Position) -> Result<(), LogError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        // Paired with the read-back check of every read: these bytes are what we meant.
        assert_frames(&self.buffer, first);
        let segment = self.current().clone();
        segment
            .file
            .write_at(&self.buffer, segment.bytes)
            .map_err(|source| self.poison(&segment.path, "write", source))?;
        self.segments.last_mut().expect("a segment").bytes += self.buffer.len() as u64;
        self.buffer.clear();
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

    /// Shows readers everything up to the durable end.
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
        assert!(self.durable_end >= state.end);
        state.end = self.durable_end;
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

/// Reads durable records, concurrently with appends. Cheap to clone, `Send + Sync`.
/// Every record returned has passed its CRC and SHA-256 check (read-back check).
#[derive(Clone, Debug)]
pub struct LogReader {
    shared: Arc<Shared>,
}

impl LogReader {
    /// Up to `limit` records from `from`, decrypted. Fewer at the durable end, or once
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
                let payload = codec::decrypt(record, &header, &keys, &mut ciphers)?;
                records.push(Record { header, payload });
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

    /// The durable end (exclusive).
    pub fn end(&self) -> Position {
        self.shared.state().end
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

    /// Calls `visit` with each durable record in `from..to` (framed, CRC-checked, at its
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
                        "record length runs past the durable end of the segment".into(),
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
