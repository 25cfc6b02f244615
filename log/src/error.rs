//! What can go wrong, said for the operator who reads it.

use std::io;
use std::path::PathBuf;

use crate::types::{Hash, Position};

/// Every error the log returns. Messages say what was wrong, where, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error(
        "could not {action} {path}: {source}; check that the disk is present, writable and not full"
    )]
    Io {
        path: PathBuf,
        /// What the log was doing: "write", "fdatasync", "read", ...
        action: &'static str,
        #[source]
        source: io::Error,
    },

    #[error(
        "log corrupt in {file} at byte offset {offset} ({}): {reason}; this partition is not \
         served until it is repaired from a replica or a backup",
        describe_position(*position)
    )]
    Corrupt {
        file: PathBuf,
        /// The position at which the log stops being trustworthy: the record that is bad, or
        /// the one expected where the damage is. `None` when the damage has no position (a
        /// misnamed file, a checkpoint entry whose CRC fails).
        position: Option<Position>,
        offset: u64,
        reason: String,
    },

    #[error(
        "the record at position {position} is encrypted under data key {key_id}, which is not in \
         the key ring (rotated out or shredded); add that key to read it"
    )]
    KeyUnavailable { position: Position, key_id: u32 },

    #[error(
        "the payload of the record at position {position} did not authenticate under data key \
         {key_id}: the key ring holds different bytes for that id, or the record was altered"
    )]
    Decrypt { position: Position, key_id: u32 },

    #[error(
        "record {index} of the batch: {field} is {bytes} bytes, more than the maximum of \
         {bytes_max} bytes; shorten it or split the payload across records"
    )]
    RecordTooLarge {
        /// Index of the offending record in the slice given to `append`.
        index: usize,
        field: &'static str,
        bytes: u64,
        bytes_max: u64,
    },

    #[error(
        "the batch encodes to {bytes} bytes, more than the maximum of {bytes_max} bytes per \
         append; append it in smaller batches"
    )]
    BatchTooLarge { bytes: u64, bytes_max: u64 },

    #[error(
        "record {index} of the batch has timestamp {timestamp_ns} ns, earlier than the previous \
         record's {previous_ns} ns; timestamps must be non-decreasing within a partition"
    )]
    TimestampRegression {
        index: usize,
        timestamp_ns: u64,
        previous_ns: u64,
    },

    #[error(
        "the log of this partition stopped accepting writes after an earlier failure ({reason}); \
         what reached the disk is unknown, so reopen the partition to recover it"
    )]
    Poisoned { reason: String },

    #[error(
        "refused a shipped frame batch at position {position} (byte {offset} of the batch): \
         {fault}; nothing was written: fetch the records from position {next}, from another \
         replica if this one keeps sending bad batches"
    )]
    FrameImport {
        /// The record at fault, or where the batch starts for faults of the whole batch.
        position: Position,
        /// Byte offset of that record in the batch.
        offset: u64,
        /// The log's next position, unchanged: where the next batch must start.
        next: Position,
        fault: ImportFault,
    },

    #[error(
        "the log ends at position {end} with chain head {}, but the anchor says position \
         {expected_end} with chain head {}: its records are not the ones the anchor was taken \
         from; do not serve this partition, fetch its records again from another replica",
        hex::encode(head),
        hex::encode(expected_head)
    )]
    AnchorMismatch {
        expected_end: Position,
        expected_head: Hash,
        end: Position,
        head: Hash,
    },

    #[error(
        "tree size {size} is beyond the {tree_size} records the Merkle tree covers (the log's \
         durable end); ask for a size of at most {tree_size}"
    )]
    BeyondTree { size: u64, tree_size: u64 },

    #[error(
        "position {position} is not in the tree of the first {size} records; a proof exists only \
         for positions below the tree size"
    )]
    OutsideTree { position: Position, size: u64 },

    #[error(
        "old tree size {old_size} is larger than new tree size {new_size}; a consistency proof \
         goes from the older, smaller tree to the newer one"
    )]
    TreeSizesReversed { old_size: u64, new_size: u64 },

    #[error("invalid log configuration: {reason}")]
    InvalidConfig { reason: String },

    #[error("node key {path}: {reason}")]
    NodeKey { path: PathBuf, reason: String },
}

/// What is wrong with a shipped frame batch ([`LogError::FrameImport`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ImportFault {
    #[error("the batch does not start at the log's next position")]
    NotNext,

    #[error("the batch holds {bytes} bytes, more than the maximum of {bytes_max} bytes")]
    BatchTooLarge { bytes: u64, bytes_max: u64 },

    #[error("the batch ends inside this record (a truncated frame)")]
    Truncated,

    /// Bad magic, version, length, CRC or header field.
    #[error("the record is malformed: {reason}")]
    Malformed { reason: String },

    #[error("the record holds position {found}")]
    WrongPosition { found: Position },

    #[error(
        "its prev_hash {} is not the hash {} of the record before it (a broken chain link)",
        hex::encode(found),
        hex::encode(expected)
    )]
    BrokenChain { expected: Hash, found: Hash },

    #[error("its stored hash is not the SHA-256 of its header and ciphertext")]
    HashMismatch,

    #[error(
        "its timestamp {timestamp_ns} ns is earlier than the previous record's {previous_ns} ns"
    )]
    TimestampRegression { timestamp_ns: u64, previous_ns: u64 },

    #[error("the batch says its records end at position {claimed}, but they end here")]
    EndMismatch { claimed: Position },
}

impl LogError {
    pub(crate) fn io(
        path: impl Into<PathBuf>,
        action: &'static str,
        source: io::Error,
    ) -> LogError {
        LogError::Io {
            path: path.into(),
            action,
            source,
        }
    }
}

/// "position 7", or "position unknown".
pub(crate) fn describe_position(position: Option<Position>) -> String {
    match position {
        Some(position) => format!("position {position}"),
        None => "position unknown".into(),
    }
}
