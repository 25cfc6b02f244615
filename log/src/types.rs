//! The record vocabulary shared with the kernel and the host.
//!
//! These names are a contract between crates: extend them, but rename only with
//! every user in the same change.

use std::fmt;

/// A dense, per-partition position; the first record of a partition is 0.
pub type Position = u64;

/// A SHA-256 digest: record hashes and chain heads.
pub type Hash = [u8; 32];

/// The `prev_hash` of the first record of every partition.
pub const GENESIS_HASH: Hash = [0; 32];

/// What a record is, structurally. Stored as one byte; values never change meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum RecordKind {
    /// An application event or a row change of a SQL table.
    Event = 1,
    /// A schema change (CREATE/DROP TABLE, CREATE INDEX).
    Ddl = 2,
    DeployProjection = 3,
    DeployPolicy = 4,
    KeyRotation = 5,
    Erasure = 6,
    /// Reserved: checkpoints live beside the log (see `checkpoint`), so logs stay
    /// byte-identical across replicas that sign with different node keys.
    Checkpoint = 7,
    /// A change to the node catalog (tenant created, token created) in the system partition.
    Catalog = 8,
    /// A read of data a masking policy covers: who read which tables, under which policy
    /// versions, for what purpose (`kimberlite.access`).
    Access = 9,
}

impl RecordKind {
    pub const ALL: [RecordKind; 9] = [
        RecordKind::Event,
        RecordKind::Ddl,
        RecordKind::DeployProjection,
        RecordKind::DeployPolicy,
        RecordKind::KeyRotation,
        RecordKind::Erasure,
        RecordKind::Checkpoint,
        RecordKind::Catalog,
        RecordKind::Access,
    ];

    pub fn from_u8(byte: u8) -> Option<RecordKind> {
        RecordKind::ALL.into_iter().find(|kind| *kind as u8 == byte)
    }

    /// The lowercase name shown in `kimberlite.log` and `log read`.
    pub fn name(self) -> &'static str {
        match self {
            RecordKind::Event => "event",
            RecordKind::Ddl => "ddl",
            RecordKind::DeployProjection => "deploy-projection",
            RecordKind::DeployPolicy => "deploy-policy",
            RecordKind::KeyRotation => "key-rotation",
            RecordKind::Erasure => "erasure",
            RecordKind::Checkpoint => "checkpoint",
            RecordKind::Catalog => "catalog",
            RecordKind::Access => "access",
        }
    }
}

impl fmt::Display for RecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the writer says about a record. The log adds position, key id, prev_hash and hash.
/// All of it is stored in clear (it is what auditors query); only the payload is encrypted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordMeta {
    pub kind: RecordKind,
    /// The tenant-level event type: `Deposited`, `RowInserted`, `CreateTable`, `TenantCreated`.
    pub event_type: String,
    /// The VSR op that carried this record (0 before replication exists).
    pub op: u64,
    /// Assigned by the primary, non-decreasing per partition.
    pub timestamp_ns: u64,
    /// The client session and its request number (exactly-once).
    pub client_id: u128,
    pub request: u64,
    /// The stream (a SQL table's name for row changes).
    pub stream: String,
    /// Who: the authenticated principal that caused the record.
    pub principal: String,
    /// Why: the caller's reason; empty when none was given.
    pub reason: String,
}

/// A record to append: metadata plus its plaintext payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRecord {
    pub meta: RecordMeta,
    /// The data key that encrypts the payload: the tenant's current data key, or the key of
    /// the data subject the record names (so erasing the subject shreds it). The writer
    /// decides; the log refuses a batch naming a key its ring does not hold.
    pub key_id: u32,
    pub payload: Vec<u8>,
}

/// A stored record's header, readable without the tenant's key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    pub position: Position,
    pub meta: RecordMeta,
    /// The data key the payload is encrypted under.
    pub key_id: u32,
    pub flags: u8,
    pub prev_hash: Hash,
    /// SHA-256 over the header bytes and the ciphertext.
    pub hash: Hash,
    /// Ciphertext length in bytes (plaintext plus the AES-GCM tag).
    pub ciphertext_len: u32,
}

/// A stored record with its payload decrypted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub header: RecordHeader,
    /// Empty when `erased`.
    pub payload: Vec<u8>,
    /// The record's key was destroyed (crypto-shredding: an erased data subject's key); its
    /// payload is gone for good, while its header and hash still chain.
    pub erased: bool,
}
