//! The kernel as the state machine of a VSR cluster: [`KernelStateMachine`] implements
//! [`kimberlite_consensus::StateMachine`] over the kernel, each tenant's [`PartitionLog`] and
//! the [`ViewStore`], so that every replica that commits the same ops writes byte-identical
//! tenant logs and reaches an equal kernel.
//!
//! # What flows in
//!
//! A client (the host on the primary, on behalf of an authenticated user) encodes a kernel
//! [`Command`] with [`encode_command`] and submits the bytes through
//! `kimberlite_consensus::driver::ReplicaDriver::submit`. The encoding is a format byte
//! ([`COMMAND_FORMAT`]) followed by MessagePack of a mirror of the command (the kernel's
//! `Command` does not derive serde, and a mirror keeps the replicated format stable when the
//! kernel type changes: a new shape gets a new format byte; a primary may submit it only once
//! every replica runs a build that reads it, or an old replica would refuse what a new one
//! executes). Only tenant, principal, reason and body travel: each committed op supplies the
//! rest —
//! - `timestamp_ns` is the primary's timestamp in the prepare header (cluster time, strictly
//!   increasing per op); the kernel never lets a partition's timestamps go backwards;
//! - `client_id` and `request` are the VSR client session and request number, so the log's
//!   exactly-once fields are the ones the replicated sessions enforce;
//! - `op` goes into every record's `RecordMeta::op`, which the log stores in clear.
//!
//! The reply ([`CommitReply`], at most a few KiB: [`REFUSAL_MESSAGE_BYTES_MAX`] bounds the
//! only free text) says what was written (outcome, rows affected, positions) or why the
//! kernel refused. It enters the replicated reply cache, so it must be — and is — a function
//! of the op alone.
//!
//! # Determinism
//!
//! Everything that ends up in a log record must be equal on every replica:
//! - **Data keys.** A single node wraps a random data key per tenant under its own master key
//!   (`keys.rs`); replicas doing that would encrypt the same record into different bytes.
//!   Here a tenant's data key is *derived* from a secret every replica of the cluster holds
//!   ([`ClusterSecret`]), the cluster id, the tenant id and the key id (BLAKE3 `derive_key`,
//!   see [`ClusterKeys`]). Why derive rather than carry a random key in the `CreateTenant`
//!   command: the VSR journal and checkpoints are stored in clear and shipped to peers, so a
//!   key in a command would sit (wrapped at best under yet another shared key) in every
//!   journal; a derived key is never written anywhere, a restarted or rebuilt replica needs
//!   no key file, and a later key rotation is a logged key id, not a key distribution. The
//!   price: one tenant's key cannot be destroyed alone. Crypto-shredding a tenant needs a
//!   destroyable per-tenant input: a random data key, carried in `CreateTenant` wrapped under
//!   a key derived as here, kept by each replica in its `keys.json`, deleted everywhere by a
//!   logged erasure (and gone from the journal once its slot is reused).
//! - **Nonces** are derived by the log from (key id, position), so equal keys and positions
//!   give equal ciphertext.
//! - **Time, identity, op** come from the committed op (above). Token secrets and module
//!   checks happen on the submitting host; only their results (a hash, a described schema)
//!   are in the command.
//! - **Segment boundaries** depend on [`LogConfig`], which must be equal on every replica.
//! - **Checkpoints of the log** (signed with each node's own key) live beside the log in the
//!   `checkpoints` file, not in it; they differ per node by design.
//!
//! # Durability and restart
//!
//! The VSR journal is durable (a quorum wrote it) before an op commits, so `commit` appends
//! records without an fsync and commits the view store without one (redb
//! `Durability::None`). [`StateMachine::snapshot`], called by the replica at every VSR
//! checkpoint, makes both durable (one `fdatasync` per partition written since the last
//! checkpoint, then a durable view-store commit) and returns: the last op applied, each
//! partition's end and chain head, and the kernel snapshot. The replica stores that, and
//! overwrites journal slots only for ops at or below it.
//!
//! After a crash the replica restores the state machine from its checkpoint (`restore`) and
//! commits the journal's ops after the checkpoint again. On disk, each log holds *at least*
//! the checkpoint's records (they were synced before it was written) and perhaps more —
//! records of ops committed after it, written by this very replica. The view store is at its
//! last durable commit or later, which is at or after the checkpoint too. Restore therefore:
//! 1. opens every log (a torn tail is cut off) and checks it covers the checkpoint: its end
//!    is at or past the checkpoint's end, and the record just before that end has the
//!    checkpoint's chain head. A log that does not is refused (see "not yet" below);
//! 2. takes the kernel from the checkpoint, and the view store as it is if, for every
//!    partition, checkpoint end ≤ applied ≤ log end; otherwise it rebuilds the view store
//!    from the logs up to the checkpoint (and asserts the replayed kernel equals the
//!    checkpoint's: `execute` and `apply_record` agree);
//! 3. re-commits the following ops as usual, except that records the log already holds are
//!    *compared* with what the kernel produced instead of appended (a mismatch stops the
//!    replica: its log contradicts the committed history), and rows the view store already
//!    holds are not written again: while a partition's view is ahead of the kernel, the
//!    kernel reads rows as of its own position from the versioned store (plus what the
//!    current command wrote), so the re-executed commands see exactly the state they saw the
//!    first time, and reply the same.
//!
//! A replica's data directory has no `keys.json` files (keys are derived) and its view store
//! no kernel snapshot (the VSR checkpoint holds it), so a single node's `Node::open` refuses
//! it rather than misread it.
//!
//! A storage failure inside `commit` (a full disk, an I/O error) cannot be answered with an
//! error: the other replicas applied the op. The replica stops (panics on its thread, which
//! the driver reports as stopped); a restart recovers as above.
//!
//! A replica whose logs end *before* a checkpoint it must install — one brought up from an
//! empty disk (`StartMode::Recover`) or far enough behind that VSR sends it a checkpoint
//! (state transfer) — fetches the missing records from its peers through its [`LogFetcher`]
//! (the node's: `crate::cluster`), imports them (every frame checked: CRC, position, hash
//! link, hash) and checks the record before each partition's end against the checkpoint's
//! chain head before it goes on. Without a fetcher it stops with a message saying so.
//!
//! Not yet: a fetched batch that imports cleanly but ends on a chain head other than the
//! checkpoint's (a peer on a forked history) is refused only at that end: the log then holds
//! records it cannot keep, and there is no `truncate` to cut them (the replica stops).

use crate::node::Layout;
use anyhow::{Context, bail};
use kimberlite_consensus::StateMachine;
use kimberlite_kernel::{
    AppendEvent, Catalog, Command, CommandBody, ErrorClass, Kernel, KernelError, Outcome, Row,
    RowStore, SUBJECT_KEY_ID_FIRST, SYSTEM_TENANT, StoreError, TableId, TenantId, Value,
    ViewSchema,
};
use kimberlite_log::{
    DataKey, FrameBatch, GENESIS_HASH, Hash, KeyRing, LogConfig, LogReader, NewRecord, NodeKey,
    PartitionLog, Position,
};
use kimberlite_projections::{ViewRead, ViewStore, ViewWrite};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use zeroize::Zeroizing;

/// First byte of an encoded command: the layout of what follows.
pub const COMMAND_FORMAT: u8 = 1;
/// First byte of an encoded reply.
pub const REPLY_FORMAT: u8 = 1;
/// Layout of the state machine's part of a VSR checkpoint.
pub const SNAPSHOT_FORMAT: u32 = 1;
/// A refusal's message is cut to this many bytes (at a character boundary), so a reply stays
/// far below `kimberlite_consensus::constants::reply_bytes_max` whatever the kernel said.
pub const REFUSAL_MESSAGE_BYTES_MAX: usize = 4 << 10;
/// Records read from a log per step, when comparing re-committed records with the log and
/// when rebuilding the view store.
const LOG_READ_RECORDS_MAX: usize = 1_024;
/// BLAKE3 `derive_key` contexts: fixed forever, or every derived key changes.
const TENANT_KEK_CONTEXT: &str = "kimberlite 2026-11 cluster tenant key-encryption key v2";
const DATA_KEY_CONTEXT: &str = "kimberlite 2026-11 cluster tenant data key v2";
/// Bytes of a [`ClusterSecret`].
pub const CLUSTER_SECRET_BYTES: usize = 32;

// ---------------------------------------------------------------------------------------------
// Keys.

/// The secret every replica of a cluster holds, from which tenant data keys are derived.
/// Generated once per cluster (`cluster up` writes it beside each replica's data, mode 0600);
/// it never travels in a command, a journal entry or a checkpoint.
#[derive(Clone)]
pub struct ClusterSecret(Zeroizing<[u8; CLUSTER_SECRET_BYTES]>);

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
}

impl ClusterSecret {
    pub fn new(bytes: [u8; CLUSTER_SECRET_BYTES]) -> ClusterSecret {
        ClusterSecret(Zeroizing::new(bytes))
    }

    /// A fresh secret from the OS CSPRNG.
    pub fn generate() -> ClusterSecret {
        ClusterSecret::new(rand::random())
    }

    /// From 64 hex digits (surrounding whitespace ignored).
    pub fn from_hex(text: &str) -> anyhow::Result<ClusterSecret> {
        let bytes = Zeroizing::new(hex::decode(text.trim()).context("not hex")?);
        let bytes: [u8; CLUSTER_SECRET_BYTES] = bytes.as_slice().try_into().map_err(|_| {
            anyhow::anyhow!(
                "expected {} hex digits, found {}",
                CLUSTER_SECRET_BYTES * 2,
                text.trim().len()
            )
        })?;
        Ok(ClusterSecret::new(bytes))
    }

    /// The 64 hex digits `from_hex` reads, for writing the secret file.
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.0.as_slice()))
    }
}

/// Where every partition's data keys come from on a replica: derived, so equal on all of them.
#[derive(Clone, Debug)]
pub struct ClusterKeys {
    cluster: u128,
    secret: ClusterSecret,
}

impl ClusterKeys {
    pub fn new(cluster: u128, secret: ClusterSecret) -> ClusterKeys {
        ClusterKeys { cluster, secret }
    }

    /// Data key `key_id` of `tenant`'s partition (the system partition is tenant 0), the same
    /// hierarchy as a single node's, derived instead of stored: the tenant's KEK is BLAKE3
    /// `derive_key(KEK context, secret ‖ cluster ‖ tenant)`, and data key `k` is
    /// `derive_key(data key context, KEK ‖ k)`, integers little-endian. A data subject's key
    /// (ids from `SUBJECT_KEY_ID_FIRST`) is never derived: derived keys cannot be destroyed.
    pub fn data_key(&self, tenant: TenantId, key_id: u32) -> Option<DataKey> {
        if key_id >= SUBJECT_KEY_ID_FIRST {
            return None;
        }
        let mut material = Zeroizing::new(Vec::with_capacity(CLUSTER_SECRET_BYTES + 16 + 8));
        material.extend_from_slice(self.secret.0.as_slice());
        material.extend_from_slice(&self.cluster.to_le_bytes());
        material.extend_from_slice(&tenant.to_le_bytes());
        let kek = Zeroizing::new(blake3::derive_key(TENANT_KEK_CONTEXT, &material));
        let mut material = Zeroizing::new(Vec::with_capacity(kek.len() + 4));
        material.extend_from_slice(kek.as_slice());
        material.extend_from_slice(&key_id.to_le_bytes());
        let key = Zeroizing::new(blake3::derive_key(DATA_KEY_CONTEXT, &material));
        Some(DataKey::new(key_id, *key))
    }

    /// The key ring a partition's log is opened with: it derives whichever data key a record
    /// names, so a rotation needs no key distribution.
    pub fn ring(&self, tenant: TenantId) -> KeyRing {
        let keys = self.clone();
        KeyRing::derived(Arc::new(move |key_id| keys.data_key(tenant, key_id)))
    }
}

// ---------------------------------------------------------------------------------------------
// Commands.

/// Why bytes are not a command, reply or snapshot of this build.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("empty {what}")]
    Empty { what: &'static str },
    #[error("{what} has format {found}; this build reads format {supported}")]
    UnknownFormat {
        what: &'static str,
        found: u32,
        supported: u32,
    },
    #[error("{what} does not decode: {why}")]
    Decode { what: &'static str, why: String },
}

/// The replicated shape of a kernel command (format [`COMMAND_FORMAT`]). Field names are part
/// of the format: MessagePack maps with named fields, so a field may be added with
/// `#[serde(default)]` without a new format byte.
#[derive(Serialize, Deserialize)]
struct CommandV1 {
    tenant: TenantId,
    /// The client's own request number (recorded in the log; the VSR session numbers its
    /// commands separately). 0: use the VSR request number.
    #[serde(default)]
    request: u64,
    principal: String,
    reason: String,
    body: BodyV1,
}

#[derive(Serialize, Deserialize)]
enum BodyV1 {
    CreateTenant {
        name: String,
        #[serde(default)]
        region: Option<String>,
    },
    CreateToken {
        tenant: TenantId,
        name: String,
        #[serde(with = "serde_bytes")]
        secret_hash: Vec<u8>,
        roles: Vec<String>,
        attributes: Vec<(String, String)>,
    },
    Sql {
        sql: String,
        params: Vec<Value>,
    },
    Append {
        events: Vec<EventV1>,
    },
    DeployProjection {
        name: String,
        #[serde(with = "serde_bytes")]
        module: Vec<u8>,
        #[serde(with = "serde_bytes")]
        config: Vec<u8>,
        tables: Vec<ViewSchemaV1>,
    },
    ActivateProjection {
        name: String,
        version: Position,
    },
    FaultProjection {
        name: String,
        version: Position,
        position: Position,
        message: String,
    },
    RollbackProjection {
        name: String,
    },
    DeployPolicy {
        name: String,
        #[serde(with = "serde_bytes")]
        module: Vec<u8>,
        #[serde(with = "serde_bytes")]
        config: Vec<u8>,
        covers: Vec<String>,
    },
    RollbackPolicy {
        name: String,
    },
    RecordAccess {
        tables: Vec<String>,
        policies: Vec<String>,
        purpose: Option<String>,
        #[serde(default)]
        row_filters: Vec<String>,
        #[serde(default)]
        emergency: Option<String>,
    },
    RotateKey,
    Erase {
        subject: String,
    },
    SetQuota {
        target: TenantId,
        quota: kimberlite_kernel::Quota,
    },
    EraseTenant {
        target: TenantId,
    },
}

#[derive(Serialize, Deserialize)]
struct EventV1 {
    stream: String,
    event_type: String,
    #[serde(with = "serde_bytes")]
    payload: Vec<u8>,
    #[serde(default)]
    subject: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct ViewSchemaV1 {
    name: String,
    columns: Vec<kimberlite_kernel::Column>,
    primary_key: Vec<usize>,
}

/// A replica's kernel: per-subject keys are refused (see `ClusterKeys::data_key`).
fn cluster_kernel(mut kernel: Kernel) -> Kernel {
    kernel.refuse_subject_keys();
    kernel
}

/// The bytes to submit for `command`. Its `timestamp_ns`, `client_id` and `request` are not
/// encoded: the committed op supplies them (see the module docs).
pub fn encode_command(command: &Command) -> Vec<u8> {
    let body = match command.body.clone() {
        CommandBody::CreateTenant { name, region } => BodyV1::CreateTenant { name, region },
        CommandBody::CreateToken {
            tenant,
            name,
            secret_hash,
            roles,
            attributes,
        } => BodyV1::CreateToken {
            tenant,
            name,
            secret_hash: secret_hash.to_vec(),
            roles,
            attributes,
        },
        CommandBody::Sql { sql, params } => BodyV1::Sql { sql, params },
        CommandBody::Append { events } => BodyV1::Append {
            events: events
                .into_iter()
                .map(|event| EventV1 {
                    stream: event.stream,
                    event_type: event.event_type,
                    payload: event.payload,
                    subject: event.subject,
                })
                .collect(),
        },
        CommandBody::DeployProjection {
            name,
            module,
            config,
            tables,
        } => BodyV1::DeployProjection {
            name,
            module,
            config,
            tables: tables
                .into_iter()
                .map(|table| ViewSchemaV1 {
                    name: table.name,
                    columns: table.columns,
                    primary_key: table.primary_key,
                })
                .collect(),
        },
        CommandBody::ActivateProjection { name, version } => {
            BodyV1::ActivateProjection { name, version }
        }
        CommandBody::FaultProjection {
            name,
            version,
            position,
            message,
        } => BodyV1::FaultProjection {
            name,
            version,
            position,
            message,
        },
        CommandBody::RollbackProjection { name } => BodyV1::RollbackProjection { name },
        CommandBody::DeployPolicy {
            name,
            module,
            config,
            covers,
        } => BodyV1::DeployPolicy {
            name,
            module,
            config,
            covers,
        },
        CommandBody::RollbackPolicy { name } => BodyV1::RollbackPolicy { name },
        CommandBody::RecordAccess {
            tables,
            policies,
            purpose,
            row_filters,
            emergency,
        } => BodyV1::RecordAccess {
            tables,
            policies,
            purpose,
            row_filters,
            emergency,
        },
        CommandBody::RotateKey => BodyV1::RotateKey,
        CommandBody::Erase { subject } => BodyV1::Erase { subject },
        CommandBody::EraseTenant { target } => BodyV1::EraseTenant { target },
        CommandBody::SetQuota { target, quota } => BodyV1::SetQuota { target, quota },
    };
    let mirror = CommandV1 {
        tenant: command.tenant,
        request: command.request,
        principal: command.principal.clone(),
        reason: command.reason.clone(),
        body,
    };
    let mut bytes = vec![COMMAND_FORMAT];
    rmp_serde::encode::write_named(&mut bytes, &mirror).expect("a command always serializes");
    bytes
}

/// The kernel command committed as `bytes`, stamped with the op's time and session.
pub fn decode_command(
    bytes: &[u8],
    timestamp_ns: u64,
    client_id: u128,
    request: u64,
) -> Result<Command, FormatError> {
    const WHAT: &str = "command";
    let mirror: CommandV1 = decode_versioned(WHAT, bytes, COMMAND_FORMAT)?;
    let body = match mirror.body {
        BodyV1::CreateTenant { name, region } => CommandBody::CreateTenant { name, region },
        BodyV1::CreateToken {
            tenant,
            name,
            secret_hash,
            roles,
            attributes,
        } => CommandBody::CreateToken {
            tenant,
            name,
            secret_hash: secret_hash
                .as_slice()
                .try_into()
                .map_err(|_| FormatError::Decode {
                    what: WHAT,
                    why: format!(
                        "secret_hash has {} bytes, not 32 (SHA-256)",
                        secret_hash.len()
                    ),
                })?,
            roles,
            attributes,
        },
        BodyV1::Sql { sql, params } => CommandBody::Sql { sql, params },
        BodyV1::Append { events } => CommandBody::Append {
            events: events
                .into_iter()
                .map(|event| AppendEvent {
                    stream: event.stream,
                    event_type: event.event_type,
                    payload: event.payload,
                    subject: event.subject,
                })
                .collect(),
        },
        BodyV1::DeployProjection {
            name,
            module,
            config,
            tables,
        } => CommandBody::DeployProjection {
            name,
            module,
            config,
            tables: tables
                .into_iter()
                .map(|table| ViewSchema {
                    name: table.name,
                    columns: table.columns,
                    primary_key: table.primary_key,
                })
                .collect(),
        },
        BodyV1::ActivateProjection { name, version } => {
            CommandBody::ActivateProjection { name, version }
        }
        BodyV1::FaultProjection {
            name,
            version,
            position,
            message,
        } => CommandBody::FaultProjection {
            name,
            version,
            position,
            message,
        },
        BodyV1::RollbackProjection { name } => CommandBody::RollbackProjection { name },
        BodyV1::DeployPolicy {
            name,
            module,
            config,
            covers,
        } => CommandBody::DeployPolicy {
            name,
            module,
            config,
            covers,
        },
        BodyV1::RollbackPolicy { name } => CommandBody::RollbackPolicy { name },
        BodyV1::RecordAccess {
            tables,
            policies,
            purpose,
            row_filters,
            emergency,
        } => CommandBody::RecordAccess {
            tables,
            policies,
            purpose,
            row_filters,
            emergency,
        },
        BodyV1::RotateKey => CommandBody::RotateKey,
        BodyV1::Erase { subject } => CommandBody::Erase { subject },
        BodyV1::EraseTenant { target } => CommandBody::EraseTenant { target },
        BodyV1::SetQuota { target, quota } => CommandBody::SetQuota { target, quota },
    };
    Ok(Command {
        tenant: mirror.tenant,
        client_id,
        request: if mirror.request == 0 {
            request
        } else {
            mirror.request
        },
        timestamp_ns,
        principal: mirror.principal,
        reason: mirror.reason,
        body,
    })
}

fn decode_versioned<T: serde::de::DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
    format: u8,
) -> Result<T, FormatError> {
    let (&found, rest) = bytes.split_first().ok_or(FormatError::Empty { what })?;
    if found != format {
        return Err(FormatError::UnknownFormat {
            what,
            found: found as u32,
            supported: format as u32,
        });
    }
    rmp_serde::from_slice(rest).map_err(|error| FormatError::Decode {
        what,
        why: error.to_string(),
    })
}

// ---------------------------------------------------------------------------------------------
// Replies.

/// What a committed command did, as every replica computes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum CommitReply {
    Written(Written),
    /// The kernel refused the command (or its bytes were not a command): nothing was written.
    Refused(Refusal),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Written {
    /// The client's request number this answers (see [`CommitReply::request`]).
    #[serde(default)]
    pub request: u64,
    pub outcome: ReplyOutcome,
    pub rows_affected: u64,
    /// First and last position written in the command's own partition, if any.
    pub positions: Option<(Position, Position)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// The client's request number this answers (see [`CommitReply::request`]).
    #[serde(default)]
    pub request: u64,
    pub class: RefusalClass,
    /// At most [`REFUSAL_MESSAGE_BYTES_MAX`] bytes.
    pub message: String,
}

/// [`Outcome`], in the reply's format. New variants go last (`AccessChanged` came with
/// GRANT/REVOKE/CREATE POLICY: a replica of an older build cannot decode it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplyOutcome {
    TenantCreated {
        tenant: TenantId,
        name: String,
    },
    TokenCreated {
        tenant: TenantId,
        name: String,
    },
    TableCreated {
        table: String,
    },
    TableDropped {
        table: String,
    },
    RowsAffected {
        count: u64,
    },
    Appended {
        count: u64,
    },
    ProjectionDeployed {
        name: String,
    },
    ProjectionActivated {
        name: String,
        version: Position,
    },
    ProjectionFaulted {
        name: String,
        version: Position,
    },
    ProjectionRolledBack {
        name: String,
        to: Option<Position>,
    },
    PolicyDeployed {
        name: String,
    },
    PolicyRolledBack {
        name: String,
        to: Position,
    },
    AccessRecorded,
    Skipped {
        notice: String,
    },
    AccessChanged {
        summary: String,
    },
    KeyRotated {
        key_id: u32,
    },
    SubjectErased {
        subject: String,
        key_id: u32,
    },
    QuotaSet {
        tenant: TenantId,
    },
    TenantErased {
        tenant: TenantId,
        name: String,
        records: Position,
    },
}

impl ReplyOutcome {
    /// Back to the kernel's type, for the host's response builders.
    pub fn into_outcome(self) -> Outcome {
        match self {
            ReplyOutcome::TenantCreated { tenant, name } => Outcome::TenantCreated { tenant, name },
            ReplyOutcome::TokenCreated { tenant, name } => Outcome::TokenCreated { tenant, name },
            ReplyOutcome::TableCreated { table } => Outcome::TableCreated { table },
            ReplyOutcome::TableDropped { table } => Outcome::TableDropped { table },
            ReplyOutcome::RowsAffected { count } => Outcome::RowsAffected { count },
            ReplyOutcome::Appended { count } => Outcome::Appended { count },
            ReplyOutcome::ProjectionDeployed { name } => Outcome::ProjectionDeployed { name },
            ReplyOutcome::ProjectionActivated { name, version } => {
                Outcome::ProjectionActivated { name, version }
            }
            ReplyOutcome::ProjectionFaulted { name, version } => {
                Outcome::ProjectionFaulted { name, version }
            }
            ReplyOutcome::ProjectionRolledBack { name, to } => {
                Outcome::ProjectionRolledBack { name, to }
            }
            ReplyOutcome::PolicyDeployed { name } => Outcome::PolicyDeployed { name },
            ReplyOutcome::PolicyRolledBack { name, to } => Outcome::PolicyRolledBack { name, to },
            ReplyOutcome::AccessRecorded => Outcome::AccessRecorded,
            ReplyOutcome::Skipped { notice } => Outcome::Skipped { notice },
            ReplyOutcome::AccessChanged { summary } => Outcome::AccessChanged { summary },
            ReplyOutcome::KeyRotated { key_id } => Outcome::KeyRotated { key_id },
            ReplyOutcome::SubjectErased { subject, key_id } => {
                Outcome::SubjectErased { subject, key_id }
            }
            ReplyOutcome::QuotaSet { tenant } => Outcome::QuotaSet { tenant },
            ReplyOutcome::TenantErased {
                tenant,
                name,
                records,
            } => Outcome::TenantErased {
                tenant,
                name,
                records,
            },
        }
    }
}

impl From<Outcome> for ReplyOutcome {
    fn from(outcome: Outcome) -> ReplyOutcome {
        match outcome {
            Outcome::TenantCreated { tenant, name } => ReplyOutcome::TenantCreated { tenant, name },
            Outcome::TokenCreated { tenant, name } => ReplyOutcome::TokenCreated { tenant, name },
            Outcome::TableCreated { table } => ReplyOutcome::TableCreated { table },
            Outcome::TableDropped { table } => ReplyOutcome::TableDropped { table },
            Outcome::RowsAffected { count } => ReplyOutcome::RowsAffected { count },
            Outcome::Appended { count } => ReplyOutcome::Appended { count },
            Outcome::ProjectionDeployed { name } => ReplyOutcome::ProjectionDeployed { name },
            Outcome::ProjectionActivated { name, version } => {
                ReplyOutcome::ProjectionActivated { name, version }
            }
            Outcome::ProjectionFaulted { name, version } => {
                ReplyOutcome::ProjectionFaulted { name, version }
            }
            Outcome::ProjectionRolledBack { name, to } => {
                ReplyOutcome::ProjectionRolledBack { name, to }
            }
            Outcome::PolicyDeployed { name } => ReplyOutcome::PolicyDeployed { name },
            Outcome::PolicyRolledBack { name, to } => ReplyOutcome::PolicyRolledBack { name, to },
            Outcome::AccessRecorded => ReplyOutcome::AccessRecorded,
            Outcome::Skipped { notice } => ReplyOutcome::Skipped { notice },
            Outcome::AccessChanged { summary } => ReplyOutcome::AccessChanged { summary },
            Outcome::KeyRotated { key_id } => ReplyOutcome::KeyRotated { key_id },
            Outcome::SubjectErased { subject, key_id } => {
                ReplyOutcome::SubjectErased { subject, key_id }
            }
            Outcome::QuotaSet { tenant } => ReplyOutcome::QuotaSet { tenant },
            Outcome::TenantErased {
                tenant,
                name,
                records,
            } => ReplyOutcome::TenantErased {
                tenant,
                name,
                records,
            },
        }
    }
}

/// [`ErrorClass`], in the reply's format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefusalClass {
    NotFound,
    BadSql,
    BadRequest,
    Conflict,
    TooLarge,
    PermissionDenied,
    PolicyFailed,
    Internal,
}

impl RefusalClass {
    /// Back to the kernel's class (the host maps it to a wire error code).
    pub fn class(self) -> ErrorClass {
        match self {
            RefusalClass::NotFound => ErrorClass::NotFound,
            RefusalClass::BadSql => ErrorClass::BadSql,
            RefusalClass::BadRequest => ErrorClass::BadRequest,
            RefusalClass::Conflict => ErrorClass::Conflict,
            RefusalClass::TooLarge => ErrorClass::TooLarge,
            RefusalClass::PermissionDenied => ErrorClass::PermissionDenied,
            RefusalClass::PolicyFailed => ErrorClass::PolicyFailed,
            RefusalClass::Internal => ErrorClass::Internal,
        }
    }
}

impl From<ErrorClass> for RefusalClass {
    fn from(class: ErrorClass) -> RefusalClass {
        match class {
            ErrorClass::NotFound => RefusalClass::NotFound,
            ErrorClass::BadSql => RefusalClass::BadSql,
            ErrorClass::BadRequest => RefusalClass::BadRequest,
            ErrorClass::Conflict => RefusalClass::Conflict,
            ErrorClass::TooLarge => RefusalClass::TooLarge,
            ErrorClass::PermissionDenied => RefusalClass::PermissionDenied,
            ErrorClass::PolicyFailed => RefusalClass::PolicyFailed,
            ErrorClass::Internal => RefusalClass::Internal,
        }
    }
}

impl CommitReply {
    fn refused(class: ErrorClass, message: &str) -> CommitReply {
        let mut end = message.len().min(REFUSAL_MESSAGE_BYTES_MAX);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        CommitReply::Refused(Refusal {
            request: 0,
            class: class.into(),
            message: message[..end].to_string(),
        })
    }

    /// The client request number of the command this answers. A host that resubmits a
    /// client's retried request compares it with the session's cached reply: equal means the
    /// request already committed and this is its answer (exactly once across view changes).
    pub fn request(&self) -> u64 {
        match self {
            CommitReply::Written(written) => written.request,
            CommitReply::Refused(refusal) => refusal.request,
        }
    }

    fn with_request(mut self, request: u64) -> CommitReply {
        match &mut self {
            CommitReply::Written(written) => written.request = request,
            CommitReply::Refused(refusal) => refusal.request = request,
        }
        self
    }

    /// [`REPLY_FORMAT`] and the MessagePack of the reply.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = vec![REPLY_FORMAT];
        rmp_serde::encode::write_named(&mut bytes, self).expect("a reply always serializes");
        bytes
    }

    pub fn decode(bytes: &[u8]) -> Result<CommitReply, FormatError> {
        decode_versioned("reply", bytes, REPLY_FORMAT)
    }
}

// ---------------------------------------------------------------------------------------------
// Snapshot.

/// The state machine's part of a VSR checkpoint (format [`SNAPSHOT_FORMAT`]): small (the
/// kernel's catalog plus a few words per partition); the records stay in the logs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Snapshot {
    format: u32,
    /// The last op applied (ops without a state-machine command, such as registrations,
    /// never reach it).
    op: u64,
    /// Every partition the kernel knows, by tenant.
    partitions: Vec<PartitionEnd>,
    #[serde(with = "serde_bytes")]
    kernel: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct PartitionEnd {
    tenant: TenantId,
    /// Exclusive end of the partition's records at the checkpoint.
    end: Position,
    /// Hash of the record before `end` ([`GENESIS_HASH`] for an empty partition): what a
    /// replica checks its own log (or, later, a shipped one) against.
    #[serde(with = "serde_bytes")]
    head: Vec<u8>,
}

impl Snapshot {
    fn genesis() -> Snapshot {
        Snapshot {
            format: SNAPSHOT_FORMAT,
            op: 0,
            partitions: Vec::new(),
            kernel: Kernel::new().snapshot(),
        }
    }

    fn encode(&self) -> Vec<u8> {
        rmp_serde::to_vec(self).expect("a snapshot always serializes")
    }

    fn decode(bytes: &[u8]) -> Result<Snapshot, FormatError> {
        let snapshot: Snapshot =
            rmp_serde::from_slice(bytes).map_err(|error| FormatError::Decode {
                what: "state machine snapshot",
                why: error.to_string(),
            })?;
        if snapshot.format != SNAPSHOT_FORMAT {
            return Err(FormatError::UnknownFormat {
                what: "state machine snapshot",
                found: snapshot.format,
                supported: SNAPSHOT_FORMAT,
            });
        }
        Ok(snapshot)
    }

    fn end(&self, tenant: TenantId) -> Position {
        self.partitions
            .iter()
            .find(|partition| partition.tenant == tenant)
            .map_or(0, |partition| partition.end)
    }
}

// ---------------------------------------------------------------------------------------------
// The state machine.

/// How to open a replica's state machine.
#[derive(Clone, Debug)]
pub struct ReplicatedOptions {
    /// Holds `system/`, `tenants/`, `views.redb` and the node signing key, as a single node's
    /// data directory does. The VSR files (`ReplicaDriver`'s data directory) belong elsewhere,
    /// e.g. `DATA/vsr`.
    pub data_dir: PathBuf,
    /// Must be equal on every replica: segment boundaries are part of the identical bytes.
    pub log: LogConfig,
    pub keys: ClusterKeys,
    /// Where the node signing key lives (`None`: in `data_dir`). A cluster keeps it beside
    /// the replica's certificates, outside the state a lost disk takes with it, so a replica
    /// rebuilt with `--recover` signs with the key clients already trust.
    pub node_key_dir: Option<PathBuf>,
}

/// What opening found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Partitions opened.
    pub partitions: usize,
    /// Whether the view store was rebuilt from the logs (it was missing, damaged, or not
    /// between the checkpoint and the logs' ends).
    pub views_rebuilt: bool,
    /// Records replayed into a rebuilt view store.
    pub records_replayed: u64,
    /// Records past the checkpoint already in the logs: the following ops are compared with
    /// them instead of appended.
    pub records_to_verify: u64,
    /// Records the checkpoint needed that were fetched from peers (and checked).
    pub records_fetched: u64,
    /// Notes from log recovery (a torn tail cut off).
    pub notes: Vec<String>,
}

/// Hears what a replica's state machine committed: the node serving the replica publishes it
/// to its query handlers and projection runner (they read the catalog, the log readers and the
/// view store, as on a single node).
pub trait CommitObserver: Send {
    /// After every committed op: the new catalog if the op changed it, and the reader of a
    /// partition it created.
    fn committed(&self, catalog: Option<&Catalog>, opened: Option<(TenantId, LogReader)>);
    /// After a restore (start, or a state transfer): everything may have changed.
    fn restored(&self, catalog: &Catalog, readers: Vec<(TenantId, LogReader)>);
}

/// Where a replica gets the records a checkpoint names but its logs lack (it was far behind,
/// or its disk was lost): the logs of its peers, which hold byte-identical records.
pub trait LogFetcher: Send {
    /// Records of `tenant` from `from`, at most up to `end` (exclusive): at least one record
    /// unless none can be had. The caller checks every frame (CRC, positions, hash chain) and
    /// the chain head at `end` against the checkpoint, so a fetcher needs no trust in peers.
    fn fetch(
        &mut self,
        tenant: TenantId,
        from: Position,
        end: Position,
    ) -> anyhow::Result<FrameBatch>;
}

/// The kernel, the tenant logs and the view store of one replica. See the module docs.
pub struct KernelStateMachine {
    layout: Layout,
    log_config: LogConfig,
    keys: ClusterKeys,
    node_key: Arc<NodeKey>,
    kernel: Kernel,
    /// In a cell because `StateMachine::snapshot` takes `&self` and must sync them.
    logs: RefCell<BTreeMap<TenantId, PartitionLog>>,
    /// Shared with the node serving this replica (a rebuild clears it in place).
    views: ViewStore,
    /// Partitions whose view store is ahead of the kernel (after a restart): the exclusive end
    /// of what the store holds. Empty in steady state.
    views_ahead: BTreeMap<TenantId, Position>,
    last_op: u64,
    report: RecoveryReport,
    observer: Option<Box<dyn CommitObserver>>,
    fetcher: Option<Box<dyn LogFetcher>>,
}

impl std::fmt::Debug for KernelStateMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelStateMachine")
            .field("data_dir", &self.layout.root)
            .field("last_op", &self.last_op)
            .field("partitions", &self.logs.borrow().len())
            .field("views_ahead", &self.views_ahead)
            .finish_non_exhaustive()
    }
}

/// A storage failure while applying a committed op: this replica cannot go on (see the module
/// docs), so its thread stops here.
fn storage_failure(what: &str, error: impl std::fmt::Display) -> ! {
    panic!(
        "{what}: {error}. A replica cannot refuse an op the cluster committed, so this one stops; \
         restart it once the disk is healthy: it recovers from its checkpoint and journal"
    )
}

impl KernelStateMachine {
    /// Opens (or creates) the state machine in `options.data_dir`, at its genesis: every log
    /// opened and recovered, the kernel empty. The replica then restores its checkpoint, if it
    /// has one, and commits the journal from there (`ReplicaDriver::start` does both).
    pub fn open(options: ReplicatedOptions) -> anyhow::Result<KernelStateMachine> {
        let layout = Layout {
            root: options.data_dir.clone(),
        };
        std::fs::create_dir_all(&layout.root).with_context(|| {
            format!("cannot create the data directory {}", layout.root.display())
        })?;
        let node_key_dir = options.node_key_dir.as_deref().unwrap_or(&layout.root);
        let node_key = Arc::new(
            NodeKey::load_or_create(node_key_dir).context("cannot load the node signing key")?,
        );
        let views = ViewStore::open(&layout.views())
            .with_context(|| format!("cannot open the view store {}", layout.views().display()))?;
        let mut machine = KernelStateMachine {
            layout,
            log_config: options.log,
            keys: options.keys,
            node_key,
            kernel: cluster_kernel(Kernel::new()),
            logs: RefCell::new(BTreeMap::new()),
            views,
            views_ahead: BTreeMap::new(),
            last_op: 0,
            report: RecoveryReport::default(),
            observer: None,
            fetcher: None,
        };
        machine.recover_to(&Snapshot::genesis())?;
        Ok(machine)
    }

    pub fn kernel(&self) -> &Kernel {
        &self.kernel
    }

    /// Tells `observer` about every commit and restore from now on (and about the current
    /// state at once). Records become readable as soon as their op commits (see
    /// `PartitionLog::publish_unsynced`): the VSR journal, written by a quorum, is what makes
    /// a committed op durable; the logs catch up on disk at each checkpoint.
    pub fn set_observer(&mut self, observer: Box<dyn CommitObserver>) {
        observer.restored(self.kernel.catalog(), self.readers());
        self.observer = Some(observer);
    }

    /// Where to fetch records a checkpoint needs and the logs lack (see [`LogFetcher`]).
    /// Without one, such a checkpoint stops the replica with a message saying so.
    pub fn set_fetcher(&mut self, fetcher: Box<dyn LogFetcher>) {
        self.fetcher = Some(fetcher);
    }

    /// A reader of every open partition.
    pub fn readers(&self) -> Vec<(TenantId, LogReader)> {
        self.logs
            .borrow()
            .iter()
            .map(|(tenant, log)| (*tenant, log.reader()))
            .collect()
    }

    pub fn catalog(&self) -> &Catalog {
        self.kernel.catalog()
    }

    pub fn views(&self) -> &ViewStore {
        &self.views
    }

    pub fn data_dir(&self) -> &std::path::Path {
        &self.layout.root
    }

    /// The last op applied.
    pub fn last_op(&self) -> u64 {
        self.last_op
    }

    /// What the last open or restore found.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// Clean shutdown (after `ReplicaDriver::shutdown` handed the state machine back): syncs
    /// and checkpoints every log, and commits the view store durably.
    pub fn close(self) -> anyhow::Result<()> {
        let logs = self.logs.into_inner();
        for (tenant, log) in logs {
            log.close()
                .with_context(|| format!("cannot close the log of partition {tenant}"))?;
        }
        self.views
            .begin()
            .and_then(|write| write.commit(true))
            .context("cannot commit the view store")?;
        Ok(())
    }

    /// Opens `tenant`'s partition if it is not open yet.
    fn ensure_open(&mut self, tenant: TenantId) -> anyhow::Result<()> {
        let logs = self.logs.get_mut();
        if logs.contains_key(&tenant) {
            return Ok(());
        }
        let log_dir = self.layout.log_dir(tenant);
        std::fs::create_dir_all(&log_dir)
            .with_context(|| format!("cannot create {}", log_dir.display()))?;
        let (log, recovery) = PartitionLog::open(
            &log_dir,
            tenant,
            self.keys.ring(tenant),
            self.node_key.clone(),
            self.log_config.clone(),
        )
        .with_context(|| format!("cannot open the log of partition {tenant}"))?;
        if recovery.truncated() {
            let note = format!("partition {tenant}: {recovery}");
            tracing::warn!("{note}");
            self.report.notes.push(note);
        }
        logs.insert(tenant, log);
        Ok(())
    }

    /// Brings logs, view store and kernel to `snapshot` (see "Durability and restart").
    fn recover_to(&mut self, snapshot: &Snapshot) -> anyhow::Result<()> {
        // Notes of logs opened earlier (at `open`, before the replica restores) stay.
        let notes = std::mem::take(&mut self.report.notes);
        self.report = RecoveryReport {
            notes,
            ..RecoveryReport::default()
        };
        // After appends in this process (a restore while running), make them readable: the
        // comparison below reads them back.
        for (tenant, log) in self.logs.get_mut().iter_mut() {
            log.sync()
                .with_context(|| format!("cannot sync partition {tenant}"))?;
        }
        let kernel = cluster_kernel(
            Kernel::restore(&snapshot.kernel).context("the checkpoint's kernel is damaged")?,
        );
        let (applied, _) = self
            .views()
            .applied()
            .context("cannot read the view store's applied positions")?;
        let mut partitions: BTreeSet<TenantId> = BTreeSet::from([SYSTEM_TENANT]);
        partitions.extend(kernel.catalog().tenants().map(|tenant| tenant.id));
        partitions.extend(snapshot.partitions.iter().map(|partition| partition.tenant));
        partitions.extend(applied.keys().copied());
        for &tenant in &partitions {
            self.ensure_open(tenant)?;
        }
        for partition in &snapshot.partitions {
            assert_eq!(
                kernel.next_position(partition.tenant),
                partition.end,
                "a checkpoint's partition ends are its kernel's"
            );
            let logs = self.logs.get_mut();
            let log = &logs[&partition.tenant];
            if log.next_position() < partition.end {
                self.fetch_missing(partition.tenant, partition.end, snapshot.op)?;
            }
            let logs = self.logs.get_mut();
            let log = &logs[&partition.tenant];
            let head = head_at(log, partition.end)
                .with_context(|| format!("cannot read partition {}", partition.tenant))?;
            if head.as_slice() != partition.head.as_slice() {
                bail!(
                    "partition {} diverges from the checkpoint at op {}: the record before \
                     position {} has hash {} here, {} in the checkpoint",
                    partition.tenant,
                    snapshot.op,
                    partition.end,
                    hex::encode(head),
                    hex::encode(&partition.head)
                );
            }
        }
        let logs = self.logs.get_mut();
        let usable = partitions.iter().all(|tenant| {
            let applied = applied.get(tenant).copied().unwrap_or(0);
            snapshot.end(*tenant) <= applied && applied <= logs[tenant].next_position()
        });
        self.views_ahead = if usable {
            applied
                .iter()
                .filter(|&(&tenant, &end)| end > snapshot.end(tenant))
                .map(|(&tenant, &end)| (tenant, end))
                .collect()
        } else {
            self.rebuild_views(snapshot, &kernel)?;
            BTreeMap::new()
        };
        let logs = self.logs.get_mut();
        self.report.partitions = logs.len();
        self.report.records_to_verify = logs
            .iter()
            .map(|(tenant, log)| log.next_position() - kernel.next_position(*tenant))
            .sum();
        self.kernel = kernel;
        self.last_op = snapshot.op;
        Ok(())
    }

    /// Brings `tenant`'s log up to `end` with records fetched from peers (see [`LogFetcher`]);
    /// each batch is checked frame by frame as it is imported, the head at `end` by the caller.
    fn fetch_missing(&mut self, tenant: TenantId, end: Position, op: u64) -> anyhow::Result<()> {
        let Some(fetcher) = self.fetcher.as_mut() else {
            bail!(
                "partition {tenant} holds {} records but the checkpoint at op {op} needs {end}, \
                 and this replica has no peers to fetch them from",
                self.logs.get_mut()[&tenant].next_position()
            );
        };
        let log = self
            .logs
            .get_mut()
            .get_mut(&tenant)
            .with_context(|| format!("partition {tenant} is not open"))?;
        let start = log.next_position();
        tracing::info!(
            tenant,
            from = start,
            end,
            op,
            "fetching records the checkpoint needs from peers"
        );
        while log.next_position() < end {
            let from = log.next_position();
            let batch = fetcher.fetch(tenant, from, end).with_context(|| {
                format!("cannot fetch partition {tenant} from position {from} for the checkpoint at op {op}")
            })?;
            if batch.first != from || batch.end <= from {
                bail!(
                    "a peer answered a fetch of partition {tenant} from {from} with positions \
                     {}..{}",
                    batch.first,
                    batch.end
                );
            }
            log.import_frames(&batch).with_context(|| {
                format!("records of partition {tenant} fetched from a peer were refused")
            })?;
        }
        log.sync()
            .with_context(|| format!("cannot sync partition {tenant}"))?;
        let fetched = log.next_position() - start;
        tracing::info!(tenant, fetched, "records fetched and checked");
        self.report.records_fetched += fetched;
        Ok(())
    }

    /// Replaces the view store with one replayed from the logs up to the checkpoint.
    fn rebuild_views(&mut self, snapshot: &Snapshot, expected: &Kernel) -> anyhow::Result<()> {
        let path = self.layout.views();
        tracing::warn!(path = %path.display(), "rebuilding the view store from the logs");
        // Cleared in place, not replaced: the node's query handlers share this store.
        let views = &self.views;
        views
            .clear()
            .with_context(|| format!("cannot clear the view store {}", path.display()))?;
        let logs = self.logs.get_mut();
        let mut kernel = cluster_kernel(Kernel::new());
        let mut write = views.begin()?;
        let mut replayed = 0;
        // The system partition first: it creates the tenants whose records follow.
        let mut pending = vec![SYSTEM_TENANT];
        while let Some(tenant) = pending.pop() {
            let end = snapshot.end(tenant);
            let log = logs
                .get(&tenant)
                .with_context(|| format!("partition {tenant} is not open"))?;
            let reader = log.reader();
            let mut position = 0;
            while position < end {
                let limit = LOG_READ_RECORDS_MAX.min((end - position) as usize);
                let records = reader.read(position, limit).with_context(|| {
                    format!("cannot read partition {tenant} at position {position}")
                })?;
                assert!(!records.is_empty(), "the log ends before its recovered end");
                for record in &records {
                    kernel
                        .apply_record(tenant, record, &mut write)
                        .with_context(|| {
                            format!("cannot replay partition {tenant} at position {position}")
                        })?;
                    position += 1;
                }
            }
            replayed += end;
            write.set_applied(tenant, end)?;
            if tenant == SYSTEM_TENANT {
                pending.extend(kernel.catalog().tenants().map(|tenant| tenant.id));
            }
        }
        write.commit(true)?;
        assert!(
            kernel == *expected,
            "replaying the logs up to the checkpoint gives another kernel than the checkpoint's: \
             `Kernel::execute` and `Kernel::apply_record` disagree"
        );
        self.report.views_rebuilt = true;
        self.report.records_replayed = replayed;
        Ok(())
    }

    /// Executes one committed command: records to the log, rows to the view store.
    fn execute(&mut self, op: u64, command: &Command) -> CommitReply {
        // Partitions whose view caught up with the kernel leave the as-of mode.
        let kernel = &self.kernel;
        self.views_ahead.retain(|tenant, applied| {
            let position = kernel.next_position(*tenant);
            assert!(
                position <= *applied,
                "partition {tenant} passed the view store's end {applied} inside one op"
            );
            position < *applied
        });
        let views = &self.views;
        let mut write = views
            .begin()
            .unwrap_or_else(|error| storage_failure("cannot begin a view transaction", error));
        let behind = (!self.views_ahead.is_empty()).then(|| {
            let read = views
                .read()
                .unwrap_or_else(|error| storage_failure("cannot read the view store", error));
            let tenants = self
                .views_ahead
                .iter()
                .map(|(&tenant, &applied)| {
                    let primary_keys = kernel
                        .catalog()
                        .table_history(tenant)
                        .into_iter()
                        .map(|table| (table.id, table.primary_key.clone()))
                        .collect();
                    let lag = Lag {
                        at: kernel.next_position(tenant).checked_sub(1),
                        applied,
                        primary_keys,
                    };
                    (tenant, lag)
                })
                .collect();
            Behind {
                read,
                tenants,
                overlay: BTreeMap::new(),
            }
        });
        let mut rows = Rows {
            write: &mut write,
            behind,
        };
        let effects = match self.kernel.execute(command, &mut rows) {
            Ok(effects) => effects,
            Err(KernelError::Store(error)) => storage_failure("the view store failed", error),
            Err(error) => return CommitReply::refused(error.code(), &error.to_string()),
        };
        drop(rows);
        let partition = effects.partition;
        let mut records: Vec<NewRecord> = Vec::with_capacity(effects.records.len());
        for (tenant, mut record) in effects.records {
            assert_eq!(tenant, partition, "one command writes one partition");
            record.meta.op = op;
            records.push(record);
        }
        let count = records.len() as u64;
        if count > 0 {
            write_records(
                self.logs.get_mut(),
                partition,
                effects.first_position,
                &records,
            );
        }
        match self.views_ahead.get(&partition) {
            Some(&applied) => {
                // The rows are in the store already; the transaction holds nothing.
                assert!(
                    effects.first_position + count <= applied,
                    "an op straddles the view store's end of partition {partition}"
                );
                drop(write);
            }
            None if count > 0 => {
                write
                    .set_applied(partition, effects.first_position + count)
                    .unwrap_or_else(|error| {
                        storage_failure("cannot record the applied position", error)
                    });
                write
                    .commit(false)
                    .unwrap_or_else(|error| storage_failure("cannot commit the view store", error));
            }
            None => drop(write),
        }
        if count > 0 {
            // Readable now: the quorum's journals hold the op (see `set_observer`).
            self.logs
                .get_mut()
                .get_mut(&partition)
                .expect("written above")
                .publish_unsynced()
                .unwrap_or_else(|error| {
                    storage_failure(&format!("cannot publish partition {partition}"), error)
                });
        }
        let mut opened = None;
        if let Outcome::TenantCreated { tenant, .. } = &effects.outcome {
            self.ensure_open(*tenant).unwrap_or_else(|error| {
                storage_failure(&format!("cannot open the log of tenant {tenant}"), error)
            });
            opened = Some((*tenant, self.logs.get_mut()[tenant].reader()));
        }
        if let Some(observer) = &self.observer {
            let catalog_changed = !matches!(
                effects.outcome,
                Outcome::RowsAffected { .. }
                    | Outcome::Appended { .. }
                    | Outcome::AccessRecorded
                    | Outcome::KeyRotated { .. }
                    | Outcome::Skipped { .. }
            );
            observer.committed(catalog_changed.then(|| self.kernel.catalog()), opened);
        }
        let positions = (partition == command.tenant && count > 0)
            .then(|| (effects.first_position, effects.first_position + count - 1));
        let rows_affected = match &effects.outcome {
            Outcome::RowsAffected { count } | Outcome::Appended { count } => *count,
            _ => 0,
        };
        CommitReply::Written(Written {
            request: command.request,
            outcome: effects.outcome.into(),
            rows_affected,
            positions,
        })
    }
}

/// Appends `records` at `first` — or, where this replica's log already holds those
/// positions (re-committing after a restart), checks they are the same records.
fn write_records(
    logs: &mut BTreeMap<TenantId, PartitionLog>,
    tenant: TenantId,
    first: Position,
    records: &[NewRecord],
) {
    let log = logs
        .get_mut(&tenant)
        .unwrap_or_else(|| panic!("the kernel wrote to partition {tenant}, which is not open"));
    let length = log.next_position();
    assert!(
        first <= length,
        "partition {tenant} ends at {length}, before the kernel's next position {first}"
    );
    let held = ((length - first) as usize).min(records.len());
    if held > 0 {
        compare_with_log(log, tenant, first, &records[..held]);
    }
    if held < records.len() {
        let written = log.append(&records[held..]).unwrap_or_else(|error| {
            storage_failure(&format!("cannot append to partition {tenant}"), error)
        });
        assert_eq!(
            written.start,
            first + held as u64,
            "log and kernel disagree on positions of partition {tenant}"
        );
    }
}

/// Panics unless the log holds exactly `records` from `first` (header fields and plaintext;
/// with equal keys and positions the ciphertext, hash and chain follow).
fn compare_with_log(log: &PartitionLog, tenant: TenantId, first: Position, records: &[NewRecord]) {
    let reader = log.reader();
    let mut position = first;
    let mut expected = records.iter();
    while position < first + records.len() as u64 {
        let limit = LOG_READ_RECORDS_MAX.min((first + records.len() as u64 - position) as usize);
        let stored = reader.read(position, limit).unwrap_or_else(|error| {
            storage_failure(
                &format!("cannot read partition {tenant} at position {position}"),
                error,
            )
        });
        assert!(
            !stored.is_empty(),
            "partition {tenant}: position {position} was on disk at open but cannot be read"
        );
        for record in stored {
            let new = expected.next().expect("no more records than asked for");
            assert!(
                record.header.meta == new.meta && record.payload == new.payload,
                "partition {tenant} position {position}: op {} re-executed to another record \
                 than this replica's log holds (stored {:?}, now {:?}): the log contradicts \
                 the committed history",
                new.meta.op,
                record.header.meta,
                new.meta
            );
            position += 1;
        }
    }
}

/// The hash of the record before `end` in `log`.
fn head_at(log: &PartitionLog, end: Position) -> anyhow::Result<Hash> {
    if end == 0 {
        return Ok(GENESIS_HASH);
    }
    if end == log.next_position() {
        return Ok(log.head_hash());
    }
    let headers = log.reader().read_headers(end - 1, 1)?;
    let header = headers
        .first()
        .with_context(|| format!("position {} cannot be read", end - 1))?;
    Ok(header.hash)
}

impl StateMachine for KernelStateMachine {
    fn commit(
        &mut self,
        op: u64,
        timestamp_ns: u64,
        client: u128,
        request: u64,
        command: &[u8],
    ) -> Vec<u8> {
        assert!(
            op > self.last_op,
            "op {op} committed after op {}",
            self.last_op
        );
        let reply = match decode_command(command, timestamp_ns, client, request) {
            Ok(command) => {
                let reply = self.execute(op, &command);
                reply.with_request(command.request)
            }
            Err(error) => CommitReply::refused(ErrorClass::BadRequest, &error.to_string()),
        };
        self.last_op = op;
        let bytes = reply.encode();
        // Paired with the client's decode: what is replicated must read back.
        debug_assert_eq!(CommitReply::decode(&bytes).as_ref(), Ok(&reply));
        bytes
    }

    fn snapshot(&self) -> Vec<u8> {
        let mut logs = self.logs.borrow_mut();
        // The checkpoint names these ends: they must survive a crash before it is written.
        for (tenant, log) in logs.iter_mut() {
            log.sync().unwrap_or_else(|error| {
                storage_failure(&format!("cannot sync partition {tenant}"), error)
            });
        }
        self.views()
            .begin()
            .and_then(|write| write.commit(true))
            .unwrap_or_else(|error| storage_failure("cannot make the view store durable", error));
        let mut tenants = vec![SYSTEM_TENANT];
        tenants.extend(self.kernel.catalog().tenants().map(|tenant| tenant.id));
        let partitions = tenants
            .into_iter()
            .map(|tenant| {
                let end = self.kernel.next_position(tenant);
                let log = logs
                    .get(&tenant)
                    .unwrap_or_else(|| panic!("partition {tenant} is not open"));
                let head = head_at(log, end).unwrap_or_else(|error| {
                    storage_failure(&format!("cannot read partition {tenant}"), error)
                });
                PartitionEnd {
                    tenant,
                    end,
                    head: head.to_vec(),
                }
            })
            .collect();
        let snapshot = Snapshot {
            format: SNAPSHOT_FORMAT,
            op: self.last_op,
            partitions,
            kernel: self.kernel.snapshot(),
        };
        let bytes = snapshot.encode();
        assert_eq!(Snapshot::decode(&bytes).as_ref(), Ok(&snapshot));
        bytes
    }

    fn restore(&mut self, snapshot: &[u8]) {
        let snapshot = Snapshot::decode(snapshot)
            .unwrap_or_else(|error| panic!("a checksummed checkpoint does not decode: {error}"));
        if let Err(error) = self.recover_to(&snapshot) {
            panic!(
                "replica state in {} cannot be brought to the checkpoint at op {}: {error:#}",
                self.layout.root.display(),
                snapshot.op
            );
        }
        if let Some(observer) = &self.observer {
            observer.restored(self.kernel.catalog(), self.readers());
        }
        tracing::info!(
            op = snapshot.op,
            report = ?self.report,
            "state machine restored from its checkpoint"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Rows while the view store is ahead of the kernel.

/// The kernel's `RowStore` for one command: the view transaction, except for partitions whose
/// view store is ahead of the kernel, which are read as of the kernel's position and whose
/// writes (already in the store) stay in an overlay.
struct Rows<'write, 'store> {
    write: &'write mut ViewWrite<'store>,
    behind: Option<Behind>,
}

struct Behind {
    read: ViewRead,
    tenants: BTreeMap<TenantId, Lag>,
    /// What this command wrote in lagging partitions: `None` removes the row.
    overlay: BTreeMap<(TenantId, TableId, Vec<u8>), Option<Row>>,
}

struct Lag {
    /// The kernel's last position (`None`: the partition is empty).
    at: Option<Position>,
    /// The view store's end: every write must fall below it.
    applied: Position,
    /// Every table's primary-key columns: a scan's rows are merged with the overlay by key.
    primary_keys: BTreeMap<TableId, Vec<usize>>,
}

fn encoded_key(key: &[Value]) -> Vec<u8> {
    let mut bytes = Vec::new();
    kimberlite_projections::encoding::encode_key(key, &mut bytes);
    bytes
}

impl Rows<'_, '_> {
    fn lagging(&self, tenant: TenantId) -> Option<(&Behind, &Lag)> {
        let behind = self.behind.as_ref()?;
        Some((behind, behind.tenants.get(&tenant)?))
    }
}

impl RowStore for Rows<'_, '_> {
    fn get(
        &self,
        tenant: TenantId,
        table: TableId,
        key: &[Value],
    ) -> Result<Option<Row>, StoreError> {
        let Some((behind, lag)) = self.lagging(tenant) else {
            return self.write.get(tenant, table, key);
        };
        if let Some(row) = behind.overlay.get(&(tenant, table, encoded_key(key))) {
            return Ok(row.clone());
        }
        match lag.at {
            Some(at) => behind.read.get(tenant, table, key, Some(at)),
            None => Ok(None),
        }
    }

    fn scan(
        &self,
        tenant: TenantId,
        table: TableId,
        visit: &mut dyn FnMut(&Row) -> bool,
    ) -> Result<(), StoreError> {
        let Some((behind, lag)) = self.lagging(tenant) else {
            return self.write.scan(tenant, table, visit);
        };
        let mut base = Vec::new();
        if let Some(at) = lag.at {
            behind.read.scan(tenant, table, Some(at), &mut |row| {
                base.push(row);
                true
            })?;
        }
        let key_columns = lag.primary_keys.get(&table).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "table {table} of tenant {tenant} is not in the catalog"
            ))
        })?;
        // Key order, as the view store scans: its keys are these encodings.
        let mut rows: BTreeMap<Vec<u8>, Row> = BTreeMap::new();
        for row in base {
            let key: Option<Vec<Value>> = key_columns
                .iter()
                .map(|&index| row.get(index).cloned())
                .collect();
            let key = key.ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "a row of table {table} of tenant {tenant} is narrower than its key"
                ))
            })?;
            rows.insert(encoded_key(&key), row);
        }
        let from = (tenant, table, Vec::new());
        for ((_, _, key), row) in
            behind
                .overlay
                .range(from..)
                .take_while(|((overlay_tenant, overlay_table, _), _)| {
                    (*overlay_tenant, *overlay_table) == (tenant, table)
                })
        {
            match row {
                Some(row) => rows.insert(key.clone(), row.clone()),
                None => rows.remove(key),
            };
        }
        for row in rows.values() {
            if !visit(row) {
                break;
            }
        }
        Ok(())
    }

    fn upsert(
        &mut self,
        tenant: TenantId,
        table: TableId,
        key: &[Value],
        row: Row,
        position: Position,
    ) -> Result<(), StoreError> {
        let Some(behind) = self
            .behind
            .as_mut()
            .filter(|behind| behind.tenants.contains_key(&tenant))
        else {
            return self.write.upsert(tenant, table, key, row, position);
        };
        assert!(
            position < behind.tenants[&tenant].applied,
            "a row change at {position} past the view store's end"
        );
        behind
            .overlay
            .insert((tenant, table, encoded_key(key)), Some(row));
        Ok(())
    }

    fn remove(
        &mut self,
        tenant: TenantId,
        table: TableId,
        key: &[Value],
        position: Position,
    ) -> Result<(), StoreError> {
        if self.lagging(tenant).is_none() {
            return self.write.remove(tenant, table, key, position);
        }
        if self.get(tenant, table, key)?.is_none() {
            return Err(StoreError::MissingRow {
                tenant,
                table,
                key: format!("{key:?}"),
            });
        }
        let behind = self.behind.as_mut().expect("lagging");
        assert!(
            position < behind.tenants[&tenant].applied,
            "a row change at {position} past the view store's end"
        );
        behind
            .overlay
            .insert((tenant, table, encoded_key(key)), None);
        Ok(())
    }

    fn purge(
        &mut self,
        tenant: TenantId,
        table: TableId,
        matches: &dyn Fn(&Row) -> bool,
    ) -> Result<u64, StoreError> {
        // Erasure is refused in a cluster (`Kernel::refuse_subject_keys`); were it not, a
        // partition whose views lag could not be purged through the overlay.
        if self
            .behind
            .as_ref()
            .is_some_and(|behind| behind.tenants.contains_key(&tenant))
        {
            return Err(StoreError::Backend(format!(
                "cannot erase rows of partition {tenant} while its view store is behind the log"
            )));
        }
        self.write.purge(tenant, table, matches)
    }
}
