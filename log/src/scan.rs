//! Reading a partition directory front to back: shared by recovery (`PartitionLog::open`) and
//! offline verification (`verify_partition`), so both judge damage by the same rules.

use std::io;
use std::path::{Path, PathBuf};

use crate::checkpoint::{CHECKPOINT_FILE, Checkpoint};
use crate::codec::{self, FrameError, PREFIX_BYTES, RECORD_BYTES_MAX, START_MAGIC};
use crate::storage::{FileRef, Storage, StorageFile};
use crate::tree::TREE_FILE;
use crate::types::{GENESIS_HASH, Hash, Position};

/// Segment files are named by their first position, zero-padded so names sort by position.
pub const SEGMENT_SUFFIX: &str = ".seg";
const SEGMENT_NAME_DIGITS: usize = 20;

/// Bytes read at once while scanning a segment; holds at least one record of maximum size.
const SCAN_CHUNK_BYTES: usize = 4 * 1024 * 1024;
const _: () = assert!(SCAN_CHUNK_BYTES >= RECORD_BYTES_MAX);

/// How often (in bytes scanned) `progress` is called.
const PROGRESS_INTERVAL_BYTES: u64 = 1024 * 1024;

pub(crate) fn segment_file_name(first: Position) -> String {
    format!(
        "{first:0width$}{SEGMENT_SUFFIX}",
        width = SEGMENT_NAME_DIGITS
    )
}

fn parse_segment_name(name: &str) -> Option<Position> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != SEGMENT_NAME_DIGITS || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// What is wrong, and where.
#[derive(Debug)]
pub(crate) struct Damage {
    pub(crate) file: PathBuf,
    /// The record that is bad, or the one expected where the damage is; `None` when the damage
    /// is not tied to a position (a checkpoint entry whose CRC fails).
    pub(crate) position: Option<Position>,
    pub(crate) offset: u64,
    pub(crate) reason: String,
}

#[derive(Debug)]
pub(crate) enum ScanError {
    Io {
        path: PathBuf,
        action: &'static str,
        source: io::Error,
    },
    Damage(Damage),
}

impl ScanError {
    fn io(path: &Path, action: &'static str, source: io::Error) -> ScanError {
        ScanError::Io {
            path: path.to_owned(),
            action,
            source,
        }
    }

    pub(crate) fn damage(
        file: &Path,
        position: impl Into<Option<Position>>,
        offset: u64,
        reason: impl Into<String>,
    ) -> ScanError {
        ScanError::Damage(Damage {
            file: file.to_owned(),
            position: position.into(),
            offset,
            reason: reason.into(),
        })
    }
}

/// The files of a partition directory, sorted.
#[derive(Debug)]
pub(crate) struct Listing {
    /// (first position, path), ascending.
    pub(crate) segments: Vec<(Position, PathBuf)>,
    pub(crate) checkpoints: Option<PathBuf>,
    /// The Merkle tree side file, if there is one.
    pub(crate) tree: Option<PathBuf>,
}

pub(crate) fn list(storage: &dyn Storage, dir: &Path) -> Result<Listing, ScanError> {
    let names = storage
        .list(dir)
        .map_err(|source| ScanError::io(dir, "list", source))?;
    let mut segments = Vec::new();
    let mut checkpoints = None;
    let mut tree = None;
    for name in names {
        let path = dir.join(&name);
        if name == CHECKPOINT_FILE {
            checkpoints = Some(path);
        } else if name == TREE_FILE {
            tree = Some(path);
        } else if name.ends_with(SEGMENT_SUFFIX) {
            let Some(first) = parse_segment_name(&name) else {
                return Err(ScanError::damage(
                    &path,
                    None,
                    0,
                    format!(
                        "misnamed segment file: expected {SEGMENT_NAME_DIGITS} digits of its \
                         first position and {SEGMENT_SUFFIX}"
                    ),
                ));
            };
            segments.push((first, path));
        }
        // Other files (temporary files of other tools, editor backups) are not the log's.
    }
    segments.sort();
    Ok(Listing {
        segments,
        checkpoints,
        tree,
    })
}

/// A sparse index entry: where record `position` starts, and its timestamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub(crate) position: Position,
    /// Index into the partition's segment list.
    pub(crate) segment: usize,
    pub(crate) offset: u64,
    pub(crate) timestamp_ns: u64,
}

/// Buffered positional reads of one file, for front-to-back scans.
pub(crate) struct ChunkReader<'a> {
    file: &'a dyn StorageFile,
    file_bytes: u64,
    chunk_bytes: usize,
    buffer: Vec<u8>,
    buffer_offset: u64,
}

impl<'a> ChunkReader<'a> {
    pub(crate) fn new(file: &'a dyn StorageFile, file_bytes: u64, chunk_bytes: usize) -> Self {
        ChunkReader {
            file,
            file_bytes,
            chunk_bytes,
            buffer: Vec::new(),
            buffer_offset: 0,
        }
    }

    /// The bytes at `offset`: `want` of them, or fewer if the file ends first.
    pub(crate) fn get(&mut self, offset: u64, want: usize) -> io::Result<&[u8]> {
        assert!(offset <= self.file_bytes);
        let available = (self.file_bytes - offset).min(want as u64) as usize;
        let buffer_end = self.buffer_offset + self.buffer.len() as u64;
        if offset < self.buffer_offset || offset + available as u64 > buffer_end {
            let read = (self.file_bytes - offset).min(want.max(self.chunk_bytes) as u64) as usize;
            self.buffer.resize(read, 0);
            self.file.read_at(&mut self.buffer, offset)?;
            self.buffer_offset = offset;
        }
        let start = (offset - self.buffer_offset) as usize;
        Ok(&self.buffer[start..start + available])
    }

    /// The record at `offset`, framed and CRC-checked.
    pub(crate) fn frame(&mut self, offset: u64) -> io::Result<Result<&[u8], FrameError>> {
        let prefix = self.get(offset, PREFIX_BYTES)?;
        let total = match codec::frame_bytes(prefix) {
            Ok(total) => total,
            Err(error) => return Ok(Err(error)),
        };
        let bytes = self.get(offset, total)?;
        Ok(codec::check_frame(bytes).map(|total| &bytes[..total]))
    }
}

/// One scanned segment.
#[derive(Debug)]
pub(crate) struct ScannedSegment {
    pub(crate) first: Position,
    pub(crate) path: PathBuf,
    pub(crate) file: FileRef,
    /// Bytes of whole, valid records (the file is longer only if its tail is torn).
    pub(crate) valid_bytes: u64,
}

/// A torn tail: an incomplete or damaged last record with nothing valid after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    pub file: PathBuf,
    /// Where the torn bytes start (the file is cut here).
    pub offset: u64,
    pub bytes_dropped: u64,
    pub reason: String,
}

#[derive(Debug)]
pub(crate) struct Scan {
    pub(crate) segments: Vec<ScannedSegment>,
    pub(crate) index: Vec<IndexEntry>,
    pub(crate) end: Position,
    pub(crate) head: Hash,
    pub(crate) last_timestamp_ns: Option<u64>,
    pub(crate) bytes: u64,
    pub(crate) torn: Option<TornTail>,
}

pub(crate) struct ScanOptions<'a> {
    pub(crate) read_only: bool,
    /// Recompute SHA-256 of every record (verify) instead of trusting the CRC (open).
    pub(crate) recompute_hashes: bool,
    pub(crate) index_interval_records: u64,
    /// Checkpoints to hold against the chain, with their byte offsets, ascending by position.
    pub(crate) checkpoints: &'a [(u64, Checkpoint)],
    pub(crate) checkpoint_path: PathBuf,
    pub(crate) progress: &'a mut dyn FnMut(u64, u64),
    /// Called with each valid record's position and stored hash, in order, after the
    /// checkpoints that end at it are held against the chain.
    pub(crate) on_record: &'a mut OnRecord<'a>,
}

/// See [`ScanOptions::on_record`].
pub(crate) type OnRecord<'a> = dyn FnMut(Position, &Hash) -> Result<(), ScanError> + 'a;

/// Reads every segment: frames, CRCs, dense positions, prev_hash links, non-decreasing
/// timestamps, and the chain head at every checkpoint. Builds the sparse index.
///
/// Only the end of the last segment may be torn (reported in `torn`, not repaired here);
/// any other damage is an error naming file, position and offset.
pub(crate) fn scan(
    storage: &dyn Storage,
    listing: &Listing,
    options: ScanOptions<'_>,
) -> Result<Scan, ScanError> {
    let ScanOptions {
        read_only,
        recompute_hashes,
        index_interval_records,
        checkpoints,
        checkpoint_path,
        progress,
        on_record,
    } = options;
    let mut files = Vec::with_capacity(listing.segments.len());
    let mut bytes_total = 0;
    for (first, path) in &listing.segments {
        let file = if read_only {
            storage.open_read(path)
        } else {
            storage.open(path)
        }
        .map_err(|source| ScanError::io(path, "open", source))?;
        let file_bytes = file
            .len()
            .map_err(|source| ScanError::io(path, "stat", source))?;
        bytes_total += file_bytes;
        files.push((*first, path, file, file_bytes));
    }

    let mut checkpoints = checkpoints.iter().peekable();
    let mut check_checkpoints = |end: Position, head: &Hash, timestamp_ns: Option<u64>| {
        while let Some((offset, checkpoint)) = checkpoints.next_if(|(_, c)| c.position <= end) {
            assert_eq!(checkpoint.position, end, "checkpoints are checked in order");
            if checkpoint.chain_head != *head {
                return Err(ScanError::damage(
                    &checkpoint_path,
                    checkpoint.position,
                    *offset,
                    format!(
                        "checkpoint chain head {} does not match the log's hash {} at position {}",
                        hex::encode(checkpoint.chain_head),
                        hex::encode(head),
                        checkpoint.position
                    ),
                ));
            }
            if checkpoint.timestamp_ns != timestamp_ns.unwrap_or(0) {
                return Err(ScanError::damage(
                    &checkpoint_path,
                    checkpoint.position,
                    *offset,
                    format!(
                        "checkpoint timestamp {} ns is not the timestamp {} ns of the last record \
                         it covers",
                        checkpoint.timestamp_ns,
                        timestamp_ns.unwrap_or(0)
                    ),
                ));
            }
        }
        Ok::<(), ScanError>(())
    };

    let mut scanned = Scan {
        segments: Vec::with_capacity(files.len()),
        index: Vec::new(),
        end: 0,
        head: GENESIS_HASH,
        last_timestamp_ns: None,
        bytes: 0,
        torn: None,
    };
    check_checkpoints(0, &GENESIS_HASH, None)?;
    let mut bytes_done = 0u64;
    let mut bytes_reported = 0u64;
    let segment_count = files.len();
    for (segment_index, (first, path, file, file_bytes)) in files.into_iter().enumerate() {
        let is_last = segment_index + 1 == segment_count;
        if first != scanned.end {
            return Err(ScanError::damage(
                path,
                scanned.end,
                0,
                format!(
                    "segment is named for position {first}, but the segments before it end at \
                     position {}: a segment is missing, misnamed or extra",
                    scanned.end
                ),
            ));
        }
        let mut reader = ChunkReader::new(file.as_ref(), file_bytes, SCAN_CHUNK_BYTES);
        let mut offset = 0u64;
        while offset < file_bytes {
            let position = scanned.end;
            let frame = reader
                .frame(offset)
                .map_err(|source| ScanError::io(path, "read", source))?;
            let record = match frame {
                Ok(record) => record,
                Err(error) => {
                    let reason = match error {
                        FrameError::Incomplete => {
                            format!("record is cut short: the file ends at byte {file_bytes}")
                        }
                        FrameError::Invalid(reason) => reason,
                    };
                    if is_last && !valid_record_after(file.as_ref(), offset, file_bytes, path)? {
                        scanned.torn = Some(TornTail {
                            file: path.clone(),
                            offset,
                            bytes_dropped: file_bytes - offset,
                            reason,
                        });
                        break;
                    }
                    let reason = if is_last {
                        format!("{reason}, and valid records follow (not a torn write)")
                    } else {
                        format!("{reason}, in a sealed segment (not a torn write)")
                    };
                    return Err(ScanError::damage(path, position, offset, reason));
                }
            };
            let damage = |reason: String| ScanError::damage(path, position, offset, reason);
            codec::check_header(record).map_err(damage)?;
            let stored_position = codec::position_of(record);
            if stored_position != position {
                return Err(damage(format!(
                    "record holds position {stored_position} where position {position} belongs \
                     (records missing, repeated or reordered)"
                )));
            }
            if codec::prev_hash_of(record) != scanned.head {
                return Err(damage(format!(
                    "prev_hash {} does not match the hash {} of the record before it",
                    hex::encode(codec::prev_hash_of(record)),
                    hex::encode(scanned.head)
                )));
            }
            let timestamp_ns = codec::timestamp_of(record);
            if let Some(previous_ns) = scanned.last_timestamp_ns
                && timestamp_ns < previous_ns
            {
                return Err(damage(format!(
                    "timestamp {timestamp_ns} ns is earlier than the previous record's \
                     {previous_ns} ns"
                )));
            }
            if recompute_hashes && !codec::hash_matches(record) {
                return Err(damage(
                    "stored hash is not the SHA-256 of the record's header and ciphertext".into(),
                ));
            }
            if offset == 0 || position.is_multiple_of(index_interval_records) {
                scanned.index.push(IndexEntry {
                    position,
                    segment: segment_index,
                    offset,
                    timestamp_ns,
                });
            }
            let record_bytes = record.len() as u64;
            scanned.head = codec::stored_hash_of(record);
            scanned.last_timestamp_ns = Some(timestamp_ns);
            scanned.end += 1;
            scanned.bytes += record_bytes;
            offset += record_bytes;
            bytes_done += record_bytes;
            check_checkpoints(scanned.end, &scanned.head, scanned.last_timestamp_ns)?;
            on_record(position, &scanned.head)?;
            if bytes_done - bytes_reported >= PROGRESS_INTERVAL_BYTES {
                progress(bytes_done, bytes_total);
                bytes_reported = bytes_done;
            }
        }
        bytes_done += file_bytes - offset;
        scanned.segments.push(ScannedSegment {
            first,
            path: path.clone(),
            file,
            valid_bytes: offset,
        });
    }
    progress(bytes_done, bytes_total);
    if let Some((offset, checkpoint)) = checkpoints.next() {
        return Err(ScanError::damage(
            &checkpoint_path,
            checkpoint.position,
            *offset,
            format!(
                "checkpoint covers records up to position {} but the log ends at position {}: \
                 signed records are missing",
                checkpoint.position, scanned.end
            ),
        ));
    }
    Ok(scanned)
}

/// Whether any whole, CRC-valid record starts after `offset`: if so, the damage at `offset`
/// is not a torn write (a torn write loses only the end of what was being written).
fn valid_record_after(
    file: &dyn StorageFile,
    offset: u64,
    file_bytes: u64,
    path: &Path,
) -> Result<bool, ScanError> {
    let mut rest = vec![0u8; (file_bytes - offset) as usize];
    file.read_at(&mut rest, offset)
        .map_err(|source| ScanError::io(path, "read", source))?;
    Ok((1..rest.len()).any(|start| {
        rest[start..].starts_with(&START_MAGIC) && codec::check_frame(&rest[start..]).is_ok()
    }))
}
