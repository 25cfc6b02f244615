//! The wire protocol: the one place its types live (`host` and `client` both use it).
//!
//! Transport: QUIC with TLS 1.3, ALPN [`ALPN`]. One bidirectional stream per request:
//! the client writes one request frame and finishes its side; the server answers
//! with one response frame and finishes. A frame is a big-endian `u32` length
//! followed by a MessagePack body (maps with field names, so SDKs in other
//! languages stay small and fields can be added). Every frame carries
//! [`PROTOCOL_VERSION`] and is bounded by [`FRAME_BYTES_MAX`].

use serde::{Deserialize, Serialize};
use std::fmt;

/// The QUIC application protocol name.
pub const ALPN: &[u8] = b"kimberlite/1";

/// Bumped on any incompatible change; a server refuses other versions with a clear error.
pub const PROTOCOL_VERSION: u16 = 1;

/// The largest frame either side sends or accepts (length prefix excluded).
pub const FRAME_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Length prefix size.
pub const FRAME_HEADER_BYTES: usize = 4;

/// The largest number of events one `Append` request may carry.
pub const APPEND_EVENTS_MAX: usize = 10_000;

/// The largest number of records one `ReadLog` request returns.
pub const READ_LOG_RECORDS_MAX: u32 = 10_000;
/// The name `Proof` takes for the node's system partition (tenants, tokens, quotas, tenant
/// erasures), for node admins only. No tenant can have it: tenant names start with a letter
/// or digit.
pub const SYSTEM_PARTITION_NAME: &str = "_system";

/// A client session id: a `u128` in Rust, 16 big-endian bytes (MessagePack bin) on the
/// wire, so SDKs in languages without 128-bit integers carry it as bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub u128);

impl Serialize for ClientId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0.to_be_bytes())
    }
}

impl<'de> Deserialize<'de> for ClientId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes = serde_bytes::ByteBuf::deserialize(deserializer)?;
        let array: [u8; 16] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| serde::de::Error::invalid_length(bytes.len(), &"16 bytes"))?;
        Ok(ClientId(u128::from_be_bytes(array)))
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// A request as sent by a client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestFrame {
    pub version: u16,
    /// The bearer token; every request is scoped to its tenant.
    pub token: String,
    /// The client session (random per client) and its request number, recorded in the
    /// log with every write (exactly-once once sessions are replicated).
    pub client_id: ClientId,
    pub request_number: u64,
    pub request: Request,
}

/// What a client asks for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Request {
    /// Node admin only.
    TenantCreate {
        name: String,
        reason: String,
        /// Where the tenant's data must live: only a node of that region creates or serves
        /// it (`kimberlite start --region`).
        #[serde(default)]
        region: Option<String>,
    },
    /// Replica to replica (state transfer): the stored frames of a partition's records from
    /// `from` up to `end` (exclusive), as they are on disk. The token is the cluster's peer
    /// token; clients never send this.
    FetchFrames { tenant: u64, from: u64, end: u64 },
    /// Where this replica of a cluster stands (any replica answers, any valid token).
    ReplicaStatus,
    /// A signed head of the tenant's Merkle tree (its current durable size), with a
    /// consistency proof from `trusted_size` (a head the client trusted before) and, if
    /// `position` is given, the record there and its inclusion proof. Auditor or admin.
    Proof {
        tenant: String,
        position: Option<u64>,
        trusted_size: Option<u64>,
    },
    /// Node admin sees every tenant; a tenant token sees its own.
    TenantList,
    TokenCreate {
        tenant: String,
        /// The principal name recorded with every write made with the token.
        name: Option<String>,
        roles: Vec<String>,
        attributes: Vec<(String, String)>,
        reason: String,
    },
    /// One SQL statement. DDL/DML is written to the log with `reason`; SELECT is read.
    Sql {
        tenant: String,
        sql: String,
        params: Vec<WireValue>,
        reason: String,
        /// Time travel for every table of the query that has no AS OF of its own.
        as_of: Option<AsOf>,
        /// Why the caller reads (masking policies see it, e.g. `treatment`).
        #[serde(default)]
        purpose: Option<String>,
        /// Read-your-writes for views: wait until every view of the tenant has applied
        /// the log up to this position (inclusive) before answering.
        #[serde(default)]
        after: Option<u64>,
        /// Break-glass: why this read needs more than the token's grants allow. A SELECT
        /// with a reason bypasses table grants and row filters (never the tenant boundary)
        /// for this request only, and is written to the access trail (`kimberlite.access`)
        /// before it is answered. Only for tokens that may break the glass (role `admin`,
        /// or attribute `break_glass=true`).
        #[serde(default)]
        emergency: Option<String>,
    },
    /// Deploys a projection or a masking policy (admin). A projection's first version
    /// serves at once; a new version builds in the background and replaces the active
    /// one once it has caught up. A policy version is active from its deploy on.
    ModuleDeploy {
        tenant: String,
        kind: ModuleKind,
        name: String,
        #[serde(with = "serde_bytes")]
        module: Vec<u8>,
        /// Deploy-time configuration handed to the module (often JSON); may be empty.
        #[serde(with = "serde_bytes")]
        config: Vec<u8>,
        reason: String,
    },
    /// Projection: cancels a pending build, or returns to the previous version.
    /// Policy: makes the previous version active again.
    ModuleRollback {
        tenant: String,
        kind: ModuleKind,
        name: String,
        reason: String,
    },
    /// Raw application events on named streams.
    Append {
        tenant: String,
        events: Vec<WireEvent>,
        reason: String,
    },
    /// Records of a tenant's log, decrypted, from a position.
    ReadLog {
        tenant: String,
        from: u64,
        limit: u32,
    },
    /// Starts a new data key for the tenant's new records (admin); older records keep the
    /// key they were written under. The rotation is a record of the log.
    KeyRotate { tenant: String, reason: String },
    /// Erases a data subject (GDPR art. 17; admin): destroys the subject's key (the records
    /// stay, their payloads become unreadable), writes an erasure record, and removes the
    /// subject's rows from every table and every version. Answered like a write; the
    /// erasure record's position is what `Proof` then attests.
    Erase {
        tenant: String,
        subject: String,
        reason: String,
    },
    /// Erases a whole tenant (node admin): destroys its key-encryption key and every data and
    /// subject key, removes its rows from every table and view, writes a `TenantErased`
    /// record in the system partition (its position is the answer's; `Proof` of
    /// [`SYSTEM_PARTITION_NAME`] attests it) and refuses the tenant and its tokens after.
    TenantErase { tenant: String, reason: String },
    /// Sets a tenant's quotas (node admin); each `None` is unlimited. Logged.
    TenantQuota {
        tenant: String,
        stored_bytes: Option<u64>,
        appends_per_second: Option<u64>,
        queries_per_second: Option<u64>,
        reason: String,
        #[serde(default)]
        fuel_per_second: Option<u64>,
    },
}

impl Request {
    /// A short name for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Request::TenantCreate { .. } => "tenant-create",
            Request::TenantList => "tenant-list",
            Request::FetchFrames { .. } => "fetch-frames",
            Request::ReplicaStatus => "replica-status",
            Request::Proof { .. } => "proof",
            Request::TokenCreate { .. } => "token-create",
            Request::Sql { .. } => "sql",
            Request::Append { .. } => "append",
            Request::ReadLog { .. } => "read-log",
            Request::ModuleDeploy { .. } => "module-deploy",
            Request::ModuleRollback { .. } => "module-rollback",
            Request::KeyRotate { .. } => "key-rotate",
            Request::Erase { .. } => "erase",
            Request::TenantErase { .. } => "tenant-erase",
            Request::TenantQuota { .. } => "tenant-quota",
        }
    }
}

/// What kind of Wasm module a deploy or rollback is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModuleKind {
    Projection,
    Policy,
}

impl ModuleKind {
    pub fn name(self) -> &'static str {
        match self {
            ModuleKind::Projection => "projection",
            ModuleKind::Policy => "policy",
        }
    }
}

/// Time travel target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AsOf {
    /// The state after applying every record at positions `<=` this one.
    Position(u64),
    /// Nanoseconds since the Unix epoch, UTC.
    TimestampNs(i64),
}

/// An application event to append.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireEvent {
    pub stream: String,
    pub event_type: String,
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    /// The data subject the event is about (a patient, a customer): encrypted under the
    /// subject's own key, so `kimberlite erase` can shred it.
    #[serde(default)]
    pub subject: Option<String>,
}

/// A value on the wire (the kernel's `Value`, mirrored so clients need no server crates).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum WireValue {
    Null,
    Boolean(bool),
    Integer(i64),
    Real(f64),
    Text(String),
    Bytes(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Nanoseconds since the Unix epoch, UTC.
    Timestamp(i64),
}

/// A server's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResponseFrame {
    pub version: u16,
    pub result: Result<Response, WireError>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Response {
    TenantCreated {
        tenant: String,
        id: u64,
    },
    Tenants {
        tenants: Vec<TenantInfo>,
    },
    TokenCreated {
        /// The secret: shown once, stored only as a hash.
        token: String,
        principal: String,
    },
    /// A SELECT's result.
    Rows(ResultSet),
    /// A write was durable and applied: what it did and where in the log it went.
    Written {
        summary: String,
        rows_affected: u64,
        /// Log positions `[first, last]` written by this request; `None` if nothing was written.
        positions: Option<(u64, u64)>,
    },
    Log {
        records: Vec<LogRecord>,
        /// The log's end (exclusive) when read.
        end: u64,
    },
    /// Answer to `Proof`.
    Proof(ProofBundle),
    /// A replica's view of the cluster (answer to `ReplicaStatus`).
    ReplicaStatus(ReplicaStatus),
    /// Stored record frames of positions `first..end` (answer to `FetchFrames`).
    Frames {
        first: u64,
        end: u64,
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantInfo {
    pub id: u64,
    pub name: String,
    pub created_at_ns: u64,
    /// Records in the tenant's log.
    pub log_end: u64,
    /// The position of its erasure in the system partition: its log stays (verifiable),
    /// unreadable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erased_at: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResultSet {
    pub columns: Vec<WireColumn>,
    pub rows: Vec<Vec<WireValue>>,
    /// The resolved log position when the query travelled in time.
    pub as_of: Option<u64>,
    /// `policy@version` of each masking policy that masked rows of this result.
    #[serde(default)]
    pub masked_by: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireColumn {
    pub name: String,
    /// SQL type name (`BIGINT`, `TEXT`, …); `None` when the expression's type is unknown (e.g. NULL).
    pub ty: Option<String>,
}

/// A node's signed statement about a tenant's log: "its first `size` records form the
/// RFC 9162 Merkle tree with this root, the last of them has hash `chain_head`".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireTreeHead {
    /// The tenant id.
    pub partition: u64,
    pub size: u64,
    #[serde(with = "serde_bytes")]
    pub root: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub chain_head: Vec<u8>,
    /// Timestamp of record `size - 1`.
    pub timestamp_ns: u64,
    /// Ed25519 over the head (see `kimberlite_merkle::TreeHead::signed_message`).
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
    /// The signing node's public key (the client checks it is one it trusts).
    #[serde(with = "serde_bytes")]
    pub public_key: Vec<u8>,
}

/// Answer to [`Request::Proof`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProofBundle {
    pub head: WireTreeHead,
    /// Hashes proving the trusted head is a prefix of `head` (empty without `trusted_size`).
    pub consistency: Vec<WireHash>,
    /// The record asked for, and the hashes proving it is in `head`.
    pub record: Option<LogRecord>,
    pub inclusion: Vec<WireHash>,
}

/// A 32-byte hash on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireHash(#[serde(with = "serde_bytes")] pub Vec<u8>);

/// One replica's view of its cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    pub replica: u8,
    pub replica_count: u8,
    /// `normal`, `view_change` or `recovering`.
    pub status: String,
    pub view: u64,
    /// The primary of `view`.
    pub primary: u8,
    /// Whether this replica takes requests (the primary, in normal status).
    pub accepting_requests: bool,
    /// Highest op in its journal, and ops committed (applied) here.
    pub op: u64,
    pub commit: u64,
    pub checkpoint_op: u64,
}

/// One record of a tenant's log as a client sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    pub position: u64,
    pub timestamp_ns: u64,
    pub record_kind: String,
    pub event_type: String,
    pub stream: String,
    pub principal: String,
    pub reason: String,
    pub client_id: ClientId,
    pub request_number: u64,
    /// Empty when `redacted`.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub hash: Vec<u8>,
    /// The payload was withheld: the token may read the audit trail but holds no grant on
    /// the record's table (nor on `kimberlite.log`). The hash still proves the record.
    #[serde(default)]
    pub redacted: bool,
    /// The record's data subject was erased: its key is destroyed and the payload is gone
    /// for good. The hash still proves the record.
    #[serde(default)]
    pub erased: bool,
}

/// A typed error: the code for programs, the message for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    pub code: ErrorCode,
    pub message: String,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The frame could not be decoded or is over a bound.
    BadFrame,
    /// The protocol version is not supported.
    BadVersion,
    /// Unknown or malformed token.
    Unauthenticated,
    /// The token may not do this (role, or another tenant).
    PermissionDenied,
    /// Unknown tenant, table, column.
    NotFound,
    /// SQL that does not parse or does not type-check.
    BadSql,
    /// A request whose arguments are invalid.
    BadRequest,
    /// Duplicate primary key, existing name.
    Conflict,
    /// Over a size bound.
    TooLarge,
    /// A masking policy failed; the read was refused rather than answered unmasked.
    PolicyFailed,
    /// The node cannot take writes right now (read-only after an I/O failure, shutting down).
    Unavailable,
    /// This replica is not the cluster's primary (or is in a view change): nothing was done;
    /// ask another replica (the message names the primary when known).
    NotPrimary,
    /// A bug: the server logged details.
    Internal,
    /// The tenant is over one of its quotas (the message names it, its value, and when to
    /// retry for a rate); nothing was done.
    QuotaExceeded,
}

impl ErrorCode {
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "bad frame",
            ErrorCode::BadVersion => "bad protocol version",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::PermissionDenied => "permission denied",
            ErrorCode::NotFound => "not found",
            ErrorCode::BadSql => "bad SQL",
            ErrorCode::BadRequest => "bad request",
            ErrorCode::Conflict => "conflict",
            ErrorCode::TooLarge => "too large",
            ErrorCode::PolicyFailed => "policy failed",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::NotPrimary => "not the primary",
            ErrorCode::Internal => "internal error",
            ErrorCode::QuotaExceeded => "quota exceeded",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a frame could not be read or decoded.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {bytes} bytes is over the limit of {FRAME_BYTES_MAX} bytes")]
    TooLarge { bytes: usize },
    #[error("frame is truncated: expected {expected} bytes, got {got}")]
    Truncated { expected: usize, got: usize },
    #[error("frame body is not a valid {what}: {message}")]
    Decode { what: &'static str, message: String },
    #[error("could not encode frame: {0}")]
    Encode(String),
}

/// Encodes a message as one frame: length prefix plus MessagePack body.
pub fn encode_frame<T: Serialize>(message: &T) -> Result<Vec<u8>, FrameError> {
    let mut frame = vec![0u8; FRAME_HEADER_BYTES];
    rmp_serde::encode::write_named(&mut frame, message)
        .map_err(|error| FrameError::Encode(error.to_string()))?;
    let body_bytes = frame.len() - FRAME_HEADER_BYTES;
    if body_bytes > FRAME_BYTES_MAX {
        return Err(FrameError::TooLarge { bytes: body_bytes });
    }
    let length = u32::try_from(body_bytes).expect("bounded by FRAME_BYTES_MAX");
    frame[..FRAME_HEADER_BYTES].copy_from_slice(&length.to_be_bytes());
    Ok(frame)
}

/// Reads the length prefix of a frame, refusing lengths over the bound before any allocation.
pub fn decode_frame_length(header: [u8; FRAME_HEADER_BYTES]) -> Result<usize, FrameError> {
    let bytes = u32::from_be_bytes(header) as usize;
    if bytes > FRAME_BYTES_MAX {
        return Err(FrameError::TooLarge { bytes });
    }
    Ok(bytes)
}

/// Decodes a whole frame (prefix included) — used by tests and by stream readers after
/// they have read exactly the prefixed length.
pub fn decode_frame<T: for<'de> Deserialize<'de>>(
    frame: &[u8],
    what: &'static str,
) -> Result<T, FrameError> {
    if frame.len() < FRAME_HEADER_BYTES {
        return Err(FrameError::Truncated {
            expected: FRAME_HEADER_BYTES,
            got: frame.len(),
        });
    }
    let mut header = [0u8; FRAME_HEADER_BYTES];
    header.copy_from_slice(&frame[..FRAME_HEADER_BYTES]);
    let expected = decode_frame_length(header)?;
    let body = &frame[FRAME_HEADER_BYTES..];
    if body.len() != expected {
        return Err(FrameError::Truncated {
            expected,
            got: body.len(),
        });
    }
    decode_body(body, what)
}

/// Decodes a frame body (without prefix).
pub fn decode_body<T: for<'de> Deserialize<'de>>(
    body: &[u8],
    what: &'static str,
) -> Result<T, FrameError> {
    rmp_serde::from_slice(body).map_err(|error| FrameError::Decode {
        what,
        message: error.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_round_trip(request: Request) {
        let frame = RequestFrame {
            version: PROTOCOL_VERSION,
            token: "kbt_secret".into(),
            client_id: ClientId(u128::MAX - 7),
            request_number: 42,
            request,
        };
        let bytes = encode_frame(&frame).unwrap();
        let back: RequestFrame = decode_frame(&bytes, "request").unwrap();
        assert_eq!(back, frame);
    }

    #[test]
    fn every_request_round_trips() {
        check_round_trip(Request::TenantCreate {
            region: None,
            name: "clinic".into(),
            reason: "onboarding".into(),
        });
        check_round_trip(Request::TenantList);
        check_round_trip(Request::TokenCreate {
            tenant: "clinic".into(),
            name: Some("nurse".into()),
            roles: vec!["reader".into(), "clinician".into()],
            attributes: vec![("purpose".into(), "treatment".into())],
            reason: String::new(),
        });
        check_round_trip(Request::Sql {
            tenant: "clinic".into(),
            sql: "SELECT * FROM t WHERE id = $1".into(),
            params: vec![
                WireValue::Integer(-1),
                WireValue::Real(0.5),
                WireValue::Null,
                WireValue::Bytes(vec![0, 255]),
                WireValue::Timestamp(-5),
                WireValue::Text("é".into()),
                WireValue::Boolean(true),
            ],
            reason: "audit".into(),
            as_of: Some(AsOf::TimestampNs(1_700_000_000_000_000_000)),
            purpose: Some("treatment".into()),
            after: Some(42),
            emergency: Some("patient unconscious in ER".into()),
        });
        check_round_trip(Request::ModuleDeploy {
            tenant: "clinic".into(),
            kind: ModuleKind::Policy,
            name: "phi".into(),
            module: b"\0asm\x01\0\0\0".to_vec(),
            config: b"{}".to_vec(),
            reason: "mask".into(),
        });
        check_round_trip(Request::ModuleRollback {
            tenant: "clinic".into(),
            kind: ModuleKind::Projection,
            name: "census".into(),
            reason: String::new(),
        });
        check_round_trip(Request::Append {
            tenant: "bank".into(),
            events: vec![WireEvent {
                subject: None,
                stream: "accounts".into(),
                event_type: "Deposited".into(),
                payload: br#"{"account":"a1","amount":100}"#.to_vec(),
            }],
            reason: "teller".into(),
        });
        check_round_trip(Request::ReadLog {
            tenant: "bank".into(),
            from: 3,
            limit: 10,
        });
    }

    #[test]
    fn responses_with_client_ids_round_trip() {
        let response = ResponseFrame {
            version: PROTOCOL_VERSION,
            result: Ok(Response::Log {
                records: vec![LogRecord {
                    position: 1,
                    timestamp_ns: 2,
                    record_kind: "event".into(),
                    event_type: "RowInserted".into(),
                    stream: "patients".into(),
                    principal: "admin".into(),
                    reason: "admission".into(),
                    client_id: ClientId(u128::MAX),
                    request_number: 3,
                    payload: b"{}".to_vec(),
                    hash: vec![7; 32],
                    redacted: false,
                    erased: false,
                }],
                end: 2,
            }),
        };
        let bytes = encode_frame(&response).unwrap();
        assert_eq!(
            decode_frame::<ResponseFrame>(&bytes, "response").unwrap(),
            response
        );
    }

    #[test]
    fn oversized_and_truncated_frames_are_refused_before_allocation() {
        let too_large = ((FRAME_BYTES_MAX + 1) as u32).to_be_bytes();
        assert!(matches!(
            decode_frame_length(too_large),
            Err(FrameError::TooLarge { .. })
        ));
        let mut frame = encode_frame(&Request::TenantList).unwrap();
        frame.pop();
        let error = decode_frame::<Request>(&frame, "request").unwrap_err();
        assert!(error.to_string().contains("truncated"), "{error}");
    }

    #[test]
    fn random_bytes_are_a_decode_error_not_a_panic() {
        let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
        for length in 0..512 {
            let body: Vec<u8> = (0..length)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            // Any outcome but a panic is fine; almost all are errors.
            let _ = decode_body::<RequestFrame>(&body, "request");
        }
        let error = decode_body::<RequestFrame>(b"\xc1garbage", "request").unwrap_err();
        assert!(error.to_string().contains("not a valid request"), "{error}");
    }
}
