//! Kimberlite's log: one durable, hash-chained, encrypted, append-only log per tenant
//! partition.
//!
//! - [`PartitionLog`] appends records (encrypt → chain → CRC → one write per batch) and makes
//!   them durable with [`PartitionLog::sync`], one `fdatasync` per group of appends: the
//!   group-commit point. Nothing is visible to readers before it is durable.
//! - [`LogReader`] reads durable records concurrently with appends, checking the CRC and the
//!   SHA-256 hash of every record it returns.
//! - [`PartitionLog::open`] recovers a partition: a torn tail of the last segment is cut off
//!   and reported; any other damage refuses to open with [`LogError::Corrupt`].
//! - [`Checkpoint`]s, signed with the node's Ed25519 [`NodeKey`], live beside the log.
//! - [`verify_partition`] checks a partition offline with no data key.
//!
//! The record layout is documented in the `codec` module, the checkpoint entry in the
//! `checkpoint` module; both are summarised in ARCHITECTURE.md.
//!
//! **Architecture invariant:** this crate knows nothing of consensus, SQL or Wasm.

mod checkpoint;
mod codec;
mod error;
mod keys;
mod partition;
mod scan;
mod storage;
pub mod types;
mod verify;

#[cfg(test)]
mod tests;

pub use checkpoint::{CHECKPOINT_FILE, Checkpoint};
pub use codec::{
    EVENT_TYPE_BYTES_MAX, PAYLOAD_BYTES_MAX, PRINCIPAL_BYTES_MAX, REASON_BYTES_MAX,
    RECORD_BYTES_MAX, RECORD_BYTES_MIN, RECORD_FORMAT_VERSION, STREAM_BYTES_MAX,
};
pub use error::LogError;
pub use keys::{DATA_KEY_BYTES, DataKey, KeyRing, NODE_KEY_FILE, NODE_PUBLIC_KEY_FILE, NodeKey};
pub use partition::{
    APPEND_BYTES_MAX, CHECKPOINT_INTERVAL_RECORDS_DEFAULT, INDEX_INTERVAL_RECORDS_DEFAULT,
    LogConfig, LogReader, PartitionLog, READ_BYTES_MAX, RecoveryReport, SEGMENT_BYTES_MAX_DEFAULT,
};
pub use scan::{SEGMENT_SUFFIX, TornTail};
pub use types::{
    GENESIS_HASH, Hash, NewRecord, Position, Record, RecordHeader, RecordKind, RecordMeta,
};
pub use verify::{VerifyFailure, VerifyReport, verify_partition};

/// Re-exported so callers name the node's public key type without depending on the crate.
pub use ed25519_dalek::VerifyingKey;
