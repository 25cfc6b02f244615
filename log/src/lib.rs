//! Kimberlite's log: one durable, hash-chained, encrypted, append-only log per tenant
//! partition.
//!
//! - [`PartitionLog`] appends records (encrypt → chain → CRC → one write per batch) and makes
//!   them durable with [`PartitionLog::sync`], one `fdatasync` per group of appends: the
//!   group-commit point. Nothing is visible to readers before it is durable, unless the caller
//!   holds it durable elsewhere (a VSR journal) and says so with
//!   [`PartitionLog::publish_unsynced`].
//! - [`LogReader`] reads published records concurrently with appends, checking the CRC and
//!   the SHA-256 hash of every record it returns.
//! - Log shipping: [`LogReader::read_frames`] hands out records exactly as stored, and
//!   [`PartitionLog::import_frames`] checks and writes them on another replica, whose segment
//!   files then match byte for byte; [`PartitionLog::check_head`] holds the result against an
//!   anchor (a VSR checkpoint's chain head).
//! - [`PartitionLog::open`] recovers a partition: a torn tail of the last segment is cut off
//!   and reported; any other damage refuses to open with [`LogError::Corrupt`].
//! - Proofs a client can check: an RFC 9162 Merkle tree (`kimberlite_merkle`) over the
//!   durable records, leaf `p` = the hash of record `p`, kept incrementally in the side file
//!   [`TREE_FILE`]. [`LogReader::signed_head`] signs the current [`TreeHead`] with the node key;
//!   [`LogReader::inclusion_proof`] and [`LogReader::consistency_proof`] answer in `O(log n)`.
//! - [`Checkpoint`]s, signed with the node's Ed25519 [`NodeKey`], live beside the log; each is
//!   a [`SignedTreeHead`] ([`Checkpoint::tree_head`]), Merkle root included.
//! - [`verify_partition`] checks a partition offline with no data key, Merkle roots and tree
//!   file included.
//!
//! The record layout is documented in the `codec` module, the checkpoint entry in the
//! `checkpoint` module, the tree file and when it is synced in the `tree` module; all are
//! summarised in ARCHITECTURE.md.
//!
//! **Architecture invariant:** this crate knows nothing of consensus, SQL or Wasm.
//! **Architecture invariant:** the segments are the only source of truth; `checkpoints` and
//! the Merkle tree file are side files, and the tree is rebuilt from the segments.

mod checkpoint;
mod codec;
mod error;
mod keys;
mod partition;
mod scan;
mod ship;
mod storage;
mod tree;
pub mod types;
mod verify;

#[cfg(test)]
mod tests;

pub use checkpoint::{CHECKPOINT_FILE, Checkpoint};
pub use codec::{
    EVENT_TYPE_BYTES_MAX, PAYLOAD_BYTES_MAX, PRINCIPAL_BYTES_MAX, REASON_BYTES_MAX,
    RECORD_BYTES_MAX, RECORD_BYTES_MIN, RECORD_FORMAT_VERSION, STREAM_BYTES_MAX,
};
pub use error::{ImportFault, LogError};
pub use keys::{
    DATA_KEY_BYTES, DataKey, DeriveKey, KeyRing, NODE_KEY_FILE, NODE_PUBLIC_KEY_FILE, NodeKey,
};
pub use partition::{
    APPEND_BYTES_MAX, CHECKPOINT_INTERVAL_RECORDS_DEFAULT, INDEX_INTERVAL_RECORDS_DEFAULT,
    LogConfig, LogReader, PartitionLog, READ_BYTES_MAX, RecoveryReport, SEGMENT_BYTES_MAX_DEFAULT,
};
pub use scan::{SEGMENT_SUFFIX, TornTail};
pub use ship::{FRAME_BATCH_BYTES_MAX, FrameBatch};
pub use tree::TREE_FILE;
pub use types::{
    GENESIS_HASH, Hash, NewRecord, Position, Record, RecordHeader, RecordKind, RecordMeta,
};
pub use verify::{VerifyFailure, VerifyReport, verify_partition};

/// Re-exported so callers name the node's public key type without depending on the crate.
pub use ed25519_dalek::VerifyingKey;
/// Re-exported: what [`LogReader::signed_head`] returns and [`Checkpoint::tree_head`] is.
pub use kimberlite_merkle::{SignedTreeHead, TreeHead};
