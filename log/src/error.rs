//! What can go wrong, said for the operator who reads it.

use std::io;
use std::path::PathBuf;

use crate::types::Position;

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

    #[error("invalid log configuration: {reason}")]
    InvalidConfig { reason: String },

    #[error("node key {path}: {reason}")]
    NodeKey { path: PathBuf, reason: String },
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
