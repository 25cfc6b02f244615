//! Log shipping: the stored bytes of consecutive records, read from one replica's log with
//! [`LogReader::read_frames`](crate::LogReader::read_frames) and imported into another's with
//! [`PartitionLog::import_frames`](crate::PartitionLog::import_frames), so that a replica that
//! is far behind, or lost its disk, catches up with segment files byte-identical to its peers'.
//!
//! A batch is a run of whole records back to back, exactly as stored, with no segment
//! boundaries: the importer lays them out with `append`'s own rule (same `LogConfig`, same
//! files). The importer checks the whole batch before writing anything — frame, CRC, header
//! fields, position, prev_hash link, recomputed SHA-256 hash, timestamp order, batch size —
//! so a peer can corrupt nothing. No data key is needed: the chain covers the ciphertext.
//!
//! A chain that is consistent in itself can still be another chain (a peer on a fork). Only
//! an anchor taken elsewhere settles that: after importing up to a VSR checkpoint's end, hold
//! the log against the checkpoint's chain head with
//! [`PartitionLog::check_head`](crate::PartitionLog::check_head).

use std::fmt;

use crate::codec::{self, FrameError, RECORD_BYTES_MAX};
use crate::error::{ImportFault, LogError};
use crate::partition::APPEND_BYTES_MAX;
use crate::types::{Hash, Position};

/// The most bytes one [`FrameBatch`] may hold: `read_frames` never returns more (it clamps
/// the caller's bound to this), `import_frames` refuses more. At least one record of maximum
/// size, so "at least one record per batch" never breaks the bound.
pub const FRAME_BATCH_BYTES_MAX: usize = 4 * 1024 * 1024;
const _: () = assert!(FRAME_BATCH_BYTES_MAX >= RECORD_BYTES_MAX);
const _: () = assert!(FRAME_BATCH_BYTES_MAX as u64 <= APPEND_BYTES_MAX);

/// Records `first..end` of a partition as stored: whole frames, back to back.
///
/// What a peer sends is untrusted: [`PartitionLog::import_frames`](crate::PartitionLog::import_frames)
/// checks every field against every byte, so the fields are public for the transport to fill.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct FrameBatch {
    /// Position of the first record in `bytes`.
    pub first: Position,
    /// Exclusive end of the records in `bytes`.
    pub end: Position,
    pub bytes: Vec<u8>,
}

impl FrameBatch {
    /// Number of records the batch says it holds.
    pub fn records(&self) -> u64 {
        self.end.saturating_sub(self.first)
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

impl fmt::Debug for FrameBatch {
    /// Lengths, not megabytes of ciphertext.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameBatch")
            .field("first", &self.first)
            .field("end", &self.end)
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

/// Where the log stands: what a batch must continue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tip {
    pub(crate) next: Position,
    pub(crate) head: Hash,
    pub(crate) last_timestamp_ns: Option<u64>,
}

/// Checks every frame of `batch` against the log at `tip`, reading only; returns the tip the
/// log has once the batch is written.
pub(crate) fn check_batch(batch: &FrameBatch, tip: Tip) -> Result<Tip, LogError> {
    let refuse = |position: Position, offset: usize, fault: ImportFault| LogError::FrameImport {
        position,
        offset: offset as u64,
        next: tip.next,
        fault,
    };
    let bytes = &batch.bytes;
    if bytes.len() > FRAME_BATCH_BYTES_MAX {
        return Err(refuse(
            batch.first,
            0,
            ImportFault::BatchTooLarge {
                bytes: bytes.len() as u64,
                bytes_max: FRAME_BATCH_BYTES_MAX as u64,
            },
        ));
    }
    if batch.first != tip.next {
        return Err(refuse(batch.first, 0, ImportFault::NotNext));
    }
    let mut offset = 0;
    let mut position = batch.first;
    let mut head = tip.head;
    let mut last_timestamp_ns = tip.last_timestamp_ns;
    while offset < bytes.len() {
        let refuse = |fault| refuse(position, offset, fault);
        let record_bytes = codec::check_frame(&bytes[offset..]).map_err(|error| match error {
            FrameError::Incomplete => refuse(ImportFault::Truncated),
            FrameError::Invalid(reason) => refuse(ImportFault::Malformed { reason }),
        })?;
        let record = &bytes[offset..offset + record_bytes];
        codec::check_header(record).map_err(|reason| refuse(ImportFault::Malformed { reason }))?;
        let found = codec::position_of(record);
        if found != position {
            return Err(refuse(ImportFault::WrongPosition { found }));
        }
        let prev_hash = codec::prev_hash_of(record);
        if prev_hash != head {
            return Err(refuse(ImportFault::BrokenChain {
                expected: head,
                found: prev_hash,
            }));
        }
        if !codec::hash_matches(record) {
            return Err(refuse(ImportFault::HashMismatch));
        }
        let timestamp_ns = codec::timestamp_of(record);
        if let Some(previous_ns) = last_timestamp_ns
            && timestamp_ns < previous_ns
        {
            return Err(refuse(ImportFault::TimestampRegression {
                timestamp_ns,
                previous_ns,
            }));
        }
        head = codec::stored_hash_of(record);
        last_timestamp_ns = Some(timestamp_ns);
        offset += record_bytes;
        position += 1;
    }
    if position != batch.end {
        return Err(refuse(
            position,
            offset,
            ImportFault::EndMismatch { claimed: batch.end },
        ));
    }
    Ok(Tip {
        next: position,
        head,
        last_timestamp_ns,
    })
}

/// The frames of bytes that [`check_batch`] passed: (byte offset, record bytes).
pub(crate) fn frames(bytes: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let mut offset = 0;
    std::iter::from_fn(move || {
        if offset == bytes.len() {
            return None;
        }
        let record_bytes = codec::frame_bytes(&bytes[offset..]).expect("a checked batch frames");
        let frame = (offset, &bytes[offset..offset + record_bytes]);
        offset += record_bytes;
        Some(frame)
    })
}
