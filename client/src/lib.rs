//! Kimberlite's Rust client: a small async SDK over QUIC.
//!
//! ```no_run
//! # async fn example() -> Result<(), kimberlite_client::ClientError> {
//! use kimberlite_client::{Client, ClientConfig};
//! let config = ClientConfig::load("data/client.toml".as_ref())?;
//! let client = Client::connect(&config, None).await?;
//! client.sql("clinic", "SELECT * FROM patients", &[], "").await?;
//! # Ok(()) }
//! ```
//!
//! This crate knows no server internals (no wasmtime, no storage): it is the wire
//! protocol ([`protocol`]) plus a connection.

pub mod config;
pub mod proof;
pub mod protocol;
pub mod tls;

pub use config::{ClientConfig, ConfigError};
pub use protocol::{
    AsOf, ClientId, ErrorCode, LogRecord, ModuleKind, ReplicaStatus, Request, Response, ResultSet,
    SYSTEM_PARTITION_NAME, TenantInfo, WireColumn, WireError, WireEvent, WireValue,
};

use protocol::{
    FRAME_BYTES_MAX, FRAME_HEADER_BYTES, FrameError, PROTOCOL_VERSION, RequestFrame, ResponseFrame,
};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How long a client waits for a node to answer the QUIC handshake.
pub const CONNECT_TIMEOUT_MS: u64 = 5_000;

/// A connection idle this long is closed by QUIC (keep-alives keep a live one open).
pub const IDLE_TIMEOUT_MS: u32 = 60_000;

/// Keep-alive interval, well under the idle timeout.
pub const KEEP_ALIVE_MS: u64 = 10_000;

/// What can go wrong talking to a node.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot connect to {address}: {message}")]
    Connect { address: String, message: String },
    #[error("no token: pass --token or set KIMBERLITE_TOKEN (the config has no admin token)")]
    NoToken,
    #[error("connection to the node failed: {0}")]
    Transport(String),
    #[error("the node sent an invalid response: {0}")]
    Protocol(#[from] FrameError),
    #[error("the node answered {request} with an unexpected {response}")]
    Unexpected {
        request: &'static str,
        response: String,
    },
    /// The node refused or failed the request; `error.code` says what kind.
    #[error("{0}")]
    Server(WireError),
    /// What the node proved did not check out: nothing it said is believed.
    #[error("proof rejected: {0}")]
    Proof(#[from] proof::ProofFailure),
}

impl ClientError {
    /// The server's error code, if the server answered with an error.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server(error) => Some(error.code),
            _ => None,
        }
    }
}

/// Options of a SQL request beyond the statement and its parameters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SqlOptions {
    /// Why: recorded with a write.
    pub reason: String,
    /// Time travel for tables without their own AS OF.
    pub as_of: Option<AsOf>,
    /// The purpose of a read, for masking policies.
    pub purpose: Option<String>,
    /// Read-your-writes on views: wait until they applied the log through this position.
    pub after: Option<u64>,
    /// Break-glass reason for a read (see `Request::Sql`): recorded in the access trail.
    pub emergency: Option<String>,
}

/// What a write did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteOutcome {
    pub summary: String,
    pub rows_affected: u64,
    /// `[first, last]` log positions written, if any.
    pub positions: Option<(u64, u64)>,
}

/// The answer to one SQL statement.
#[derive(Clone, Debug, PartialEq)]
pub enum SqlOutcome {
    Rows(ResultSet),
    Written(WriteOutcome),
}

/// A connection to one node (or to the primary of a cluster), authenticated by one token.
/// Cheap to share (`&self` methods; requests run concurrently on their own QUIC streams).
///
/// With a cluster config (`replicas` in client.toml) a request that meets a backup
/// (`NotPrimary`), a lost connection or no answer is sent again, unchanged (same client id
/// and request number), to the next replica until one answers or [`FAILOVER_WAIT_MS`]
/// passed: the cluster executes a retried write at most once.
#[derive(Debug)]
pub struct Client {
    endpoint: quinn::Endpoint,
    endpoints: Vec<config::ReplicaEndpoint>,
    server_name: String,
    /// The replica talked to, and the connection to it.
    current: std::sync::Mutex<(usize, quinn::Connection)>,
    token: String,
    client_id: ClientId,
    request_number: AtomicU64,
    /// Node keys whose tree heads are believed.
    trusted_keys: Vec<[u8; 32]>,
    /// The last head checked per tenant name: every later proof must extend it.
    trusted: std::sync::Mutex<std::collections::HashMap<String, proof::TrustedHead>>,
}

/// What a checked proof established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proven {
    /// The head now trusted for the tenant.
    pub head: proof::TrustedHead,
    /// The head trusted before, which `head` was proven to extend.
    pub previous: Option<proof::TrustedHead>,
    /// `head` as the node signed it (signature and public key), for others to check again.
    pub signed: protocol::WireTreeHead,
    /// The record asked for, proven to be at its position in `head`.
    pub record: Option<LogRecord>,
    /// Hashes in the inclusion and consistency proofs that were checked.
    pub inclusion_hashes: usize,
    pub consistency_hashes: usize,
}

/// How long a request to a cluster keeps looking for a primary that answers.
pub const FAILOVER_WAIT_MS: u64 = 60_000;
/// Pause between two replicas tried, so a view change in progress is not flooded.
pub const FAILOVER_BACKOFF_MS: u64 = 100;
/// Connecting to one replica of a cluster gives up after this long (then the next is tried).
pub const CLUSTER_CONNECT_TIMEOUT_MS: u64 = 2_000;
/// A request to a cluster without an answer for this long is tried elsewhere. Above the
/// replicas' own request timeout (10 s), which answers a request stuck in consensus.
pub const CLUSTER_ATTEMPT_TIMEOUT_MS: u64 = 12_000;

fn transport_error(error: impl std::fmt::Display) -> ClientError {
    ClientError::Transport(error.to_string())
}

impl Client {
    /// Connects to the node of `config` (the first replica of a cluster that answers);
    /// `token` defaults to the config's admin token.
    pub async fn connect(
        config: &ClientConfig,
        token: Option<String>,
    ) -> Result<Client, ClientError> {
        let token = token
            .or_else(|| config.admin_token.clone())
            .ok_or(ClientError::NoToken)?;
        let endpoints = config.endpoints();
        let first = resolve(&endpoints[0].address).await?;
        let bind: SocketAddr = if first.is_ipv6() {
            "[::]:0".parse().expect("valid")
        } else {
            "0.0.0.0:0".parse().expect("valid")
        };
        let endpoint = quinn::Endpoint::client(bind).map_err(|error| ClientError::Connect {
            address: endpoints[0].address.clone(),
            message: error.to_string(),
        })?;
        let trusted_keys = config
            .node_public_keys
            .iter()
            .filter_map(|key| hex::decode(key).ok()?.try_into().ok())
            .collect();
        let timeout_ms = if endpoints.len() > 1 {
            CLUSTER_CONNECT_TIMEOUT_MS
        } else {
            CONNECT_TIMEOUT_MS
        };
        let mut errors = Vec::new();
        for (index, target) in endpoints.iter().enumerate() {
            match open(&endpoint, target, &config.server_name, timeout_ms).await {
                Ok(connection) => {
                    return Ok(Client {
                        endpoint,
                        endpoints,
                        server_name: config.server_name.clone(),
                        current: std::sync::Mutex::new((index, connection)),
                        token,
                        client_id: ClientId(rand::random()),
                        request_number: AtomicU64::new(1),
                        trusted_keys,
                        trusted: std::sync::Mutex::new(std::collections::HashMap::new()),
                    });
                }
                Err(error) => errors.push(error),
            }
        }
        match errors.len() {
            1 => Err(errors.remove(0)),
            _ => Err(ClientError::Connect {
                address: format!("{} replicas", endpoints.len()),
                message: errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            }),
        }
    }

    /// This client's session id, recorded in the log with its writes.
    pub fn client_id(&self) -> ClientId {
        self.client_id
    }

    /// Sends one request and waits for its response (following the primary of a cluster).
    pub async fn request(&self, request: Request) -> Result<Response, ClientError> {
        let frame = RequestFrame {
            version: PROTOCOL_VERSION,
            token: self.token.clone(),
            client_id: self.client_id,
            request_number: self.request_number.fetch_add(1, Ordering::Relaxed),
            request,
        };
        let bytes = protocol::encode_frame(&frame)?;
        if self.endpoints.len() == 1 {
            let connection = self.current.lock().expect("connection lock").1.clone();
            return decode_answer(&exchange(&connection, &bytes).await?);
        }
        let deadline = tokio::time::Instant::now() + Duration::from_millis(FAILOVER_WAIT_MS);
        loop {
            let (index, connection) = self.current.lock().expect("connection lock").clone();
            let attempt = tokio::time::timeout(
                Duration::from_millis(CLUSTER_ATTEMPT_TIMEOUT_MS),
                exchange(&connection, &bytes),
            )
            .await;
            let error = match attempt {
                Ok(Ok(answer)) => match decode_answer(&answer) {
                    Err(ClientError::Server(error)) if error.code == ErrorCode::NotPrimary => {
                        ClientError::Server(error)
                    }
                    other => return other,
                },
                Ok(Err(error)) => error,
                Err(_) => ClientError::Transport(format!(
                    "no answer from {} within {CLUSTER_ATTEMPT_TIMEOUT_MS} ms",
                    self.endpoints[index].address
                )),
            };
            tracing::debug!(replica = index, %error, "trying another replica");
            if tokio::time::Instant::now() >= deadline {
                return Err(error);
            }
            tokio::time::sleep(Duration::from_millis(FAILOVER_BACKOFF_MS)).await;
            self.switch_from(index).await;
        }
    }

    /// Moves to the next replica after `index` that accepts a connection (unless another
    /// request moved already).
    async fn switch_from(&self, index: usize) {
        if self.current.lock().expect("connection lock").0 != index {
            return;
        }
        let count = self.endpoints.len();
        for step in 1..=count {
            let next = (index + step) % count;
            let target = &self.endpoints[next];
            match open(
                &self.endpoint,
                target,
                &self.server_name,
                CLUSTER_CONNECT_TIMEOUT_MS,
            )
            .await
            {
                Ok(connection) => {
                    *self.current.lock().expect("connection lock") = (next, connection);
                    return;
                }
                Err(error) => tracing::debug!(replica = next, %error, "replica unreachable"),
            }
        }
    }

    /// Sends arbitrary bytes as a request stream and returns the raw answer. For protocol
    /// conformance tests (malformed frames must get an error answer, never a crash).
    #[doc(hidden)]
    pub async fn exchange_raw(&self, bytes: &[u8]) -> Result<Vec<u8>, ClientError> {
        let connection = self.current.lock().expect("connection lock").1.clone();
        exchange(&connection, bytes).await
    }

    /// Runs one SQL statement: rows for a SELECT, a write outcome for DDL/DML.
    pub async fn sql(
        &self,
        tenant: &str,
        sql: &str,
        params: &[WireValue],
        reason: &str,
    ) -> Result<SqlOutcome, ClientError> {
        self.sql_request(tenant, sql, params, reason, None).await
    }

    /// Runs a SELECT as of a past position or time (tables with their own AS OF keep it).
    pub async fn sql_as_of(
        &self,
        tenant: &str,
        sql: &str,
        params: &[WireValue],
        as_of: AsOf,
    ) -> Result<ResultSet, ClientError> {
        match self
            .sql_request(tenant, sql, params, "", Some(as_of))
            .await?
        {
            SqlOutcome::Rows(rows) => Ok(rows),
            SqlOutcome::Written(outcome) => Err(ClientError::Unexpected {
                request: "sql-as-of",
                response: format!("write ({})", outcome.summary),
            }),
        }
    }

    /// Runs a SELECT and returns its rows (an error if the statement was a write).
    pub async fn query(
        &self,
        tenant: &str,
        sql: &str,
        params: &[WireValue],
    ) -> Result<ResultSet, ClientError> {
        match self.sql(tenant, sql, params, "").await? {
            SqlOutcome::Rows(rows) => Ok(rows),
            SqlOutcome::Written(outcome) => Err(ClientError::Unexpected {
                request: "query",
                response: format!("write ({})", outcome.summary),
            }),
        }
    }

    async fn sql_request(
        &self,
        tenant: &str,
        sql: &str,
        params: &[WireValue],
        reason: &str,
        as_of: Option<AsOf>,
    ) -> Result<SqlOutcome, ClientError> {
        let options = SqlOptions {
            reason: reason.into(),
            as_of,
            ..SqlOptions::default()
        };
        self.sql_with(tenant, sql, params, &options).await
    }

    /// Runs one SQL statement with every option of the protocol.
    pub async fn sql_with(
        &self,
        tenant: &str,
        sql: &str,
        params: &[WireValue],
        options: &SqlOptions,
    ) -> Result<SqlOutcome, ClientError> {
        let request = Request::Sql {
            tenant: tenant.into(),
            sql: sql.into(),
            params: params.to_vec(),
            reason: options.reason.clone(),
            as_of: options.as_of,
            purpose: options.purpose.clone(),
            after: options.after,
            emergency: options.emergency.clone(),
        };
        match self.request(request).await? {
            Response::Rows(rows) => Ok(SqlOutcome::Rows(rows)),
            Response::Written {
                summary,
                rows_affected,
                positions,
            } => Ok(SqlOutcome::Written(WriteOutcome {
                summary,
                rows_affected,
                positions,
            })),
            other => Err(unexpected("sql", &other)),
        }
    }

    /// Deploys a projection or masking policy module (admin).
    pub async fn deploy(
        &self,
        tenant: &str,
        kind: ModuleKind,
        name: &str,
        module: Vec<u8>,
        config: Vec<u8>,
        reason: &str,
    ) -> Result<WriteOutcome, ClientError> {
        let request = Request::ModuleDeploy {
            tenant: tenant.into(),
            kind,
            name: name.into(),
            module,
            config,
            reason: reason.into(),
        };
        self.write_request("deploy", request).await
    }

    /// Rolls a projection or policy back (see `Request::ModuleRollback`).
    pub async fn rollback(
        &self,
        tenant: &str,
        kind: ModuleKind,
        name: &str,
        reason: &str,
    ) -> Result<WriteOutcome, ClientError> {
        let request = Request::ModuleRollback {
            tenant: tenant.into(),
            kind,
            name: name.into(),
            reason: reason.into(),
        };
        self.write_request("rollback", request).await
    }

    /// Starts a new data key for the tenant's new records (see `Request::KeyRotate`).
    pub async fn rotate_key(
        &self,
        tenant: &str,
        reason: &str,
    ) -> Result<WriteOutcome, ClientError> {
        let request = Request::KeyRotate {
            tenant: tenant.into(),
            reason: reason.into(),
        };
        self.write_request("key-rotate", request).await
    }

    /// Sets a tenant's quotas (node admin; `None`: unlimited). See `Request::TenantQuota`.
    #[allow(clippy::too_many_arguments)] // one argument per quota, each optional
    pub async fn set_quota(
        &self,
        tenant: &str,
        stored_bytes: Option<u64>,
        appends_per_second: Option<u64>,
        queries_per_second: Option<u64>,
        fuel_per_second: Option<u64>,
        reason: &str,
    ) -> Result<WriteOutcome, ClientError> {
        let request = Request::TenantQuota {
            tenant: tenant.into(),
            stored_bytes,
            appends_per_second,
            queries_per_second,
            fuel_per_second,
            reason: reason.into(),
        };
        self.write_request("tenant-quota", request).await
    }

    /// Erases a data subject (see `Request::Erase`); the outcome's position is the erasure
    /// record's.
    pub async fn erase(
        &self,
        tenant: &str,
        subject: &str,
        reason: &str,
    ) -> Result<WriteOutcome, ClientError> {
        let request = Request::Erase {
            tenant: tenant.into(),
            subject: subject.into(),
            reason: reason.into(),
        };
        self.write_request("erase", request).await
    }

    /// Erases a whole tenant (see `Request::TenantErase`); the outcome's position is the
    /// `TenantErased` record's, in the system partition.
    pub async fn erase_tenant(
        &self,
        tenant: &str,
        reason: &str,
    ) -> Result<WriteOutcome, ClientError> {
        let request = Request::TenantErase {
            tenant: tenant.into(),
            reason: reason.into(),
        };
        self.write_request("tenant erase", request).await
    }

    async fn write_request(
        &self,
        what: &'static str,
        request: Request,
    ) -> Result<WriteOutcome, ClientError> {
        match self.request(request).await? {
            Response::Written {
                summary,
                rows_affected,
                positions,
            } => Ok(WriteOutcome {
                summary,
                rows_affected,
                positions,
            }),
            other => Err(unexpected(what, &other)),
        }
    }

    /// Appends application events; durable when this returns.
    pub async fn append(
        &self,
        tenant: &str,
        events: Vec<WireEvent>,
        reason: &str,
    ) -> Result<WriteOutcome, ClientError> {
        let request = Request::Append {
            tenant: tenant.into(),
            events,
            reason: reason.into(),
        };
        self.write_request("append", request).await
    }

    /// Reads up to `limit` records from `from`; returns them and the log's end.
    pub async fn read_log(
        &self,
        tenant: &str,
        from: u64,
        limit: u32,
    ) -> Result<(Vec<LogRecord>, u64), ClientError> {
        let request = Request::ReadLog {
            tenant: tenant.into(),
            from,
            limit,
        };
        match self.request(request).await? {
            Response::Log { records, end } => Ok((records, end)),
            other => Err(unexpected("read-log", &other)),
        }
    }

    /// Creates a tenant (node admin only); returns its id.
    pub async fn create_tenant(&self, name: &str, reason: &str) -> Result<u64, ClientError> {
        self.create_tenant_in(name, None, reason).await
    }

    /// Creates a tenant whose data must live in `region` (node admin only); returns its id.
    pub async fn create_tenant_in(
        &self,
        name: &str,
        region: Option<&str>,
        reason: &str,
    ) -> Result<u64, ClientError> {
        let request = Request::TenantCreate {
            region: region.map(str::to_string),
            name: name.into(),
            reason: reason.into(),
        };
        match self.request(request).await? {
            Response::TenantCreated { id, .. } => Ok(id),
            other => Err(unexpected("tenant-create", &other)),
        }
    }

    pub async fn list_tenants(&self) -> Result<Vec<TenantInfo>, ClientError> {
        match self.request(Request::TenantList).await? {
            Response::Tenants { tenants } => Ok(tenants),
            other => Err(unexpected("tenant-list", &other)),
        }
    }

    /// Creates a token for a tenant; returns `(token, principal)`. The token is shown once.
    pub async fn create_token(
        &self,
        tenant: &str,
        name: Option<&str>,
        roles: &[String],
        attributes: &[(String, String)],
        reason: &str,
    ) -> Result<(String, String), ClientError> {
        let request = Request::TokenCreate {
            tenant: tenant.into(),
            name: name.map(str::to_string),
            roles: roles.to_vec(),
            attributes: attributes.to_vec(),
            reason: reason.into(),
        };
        match self.request(request).await? {
            Response::TokenCreated { token, principal } => Ok((token, principal)),
            other => Err(unexpected("token-create", &other)),
        }
    }

    /// Asks the node for a signed head of `tenant`'s Merkle tree (and, with `position`, that
    /// record and its inclusion proof), checks every link against the trusted node keys and
    /// the head trusted before (see [`proof::check`]), then trusts the new head.
    pub async fn prove(&self, tenant: &str, position: Option<u64>) -> Result<Proven, ClientError> {
        let previous = self.trusted_head(tenant);
        let request = Request::Proof {
            tenant: tenant.to_string(),
            position,
            trusted_size: previous.as_ref().map(|head| head.size),
        };
        let bundle = match self.request(request).await? {
            Response::Proof(bundle) => bundle,
            other => return Err(unexpected("proof", &other)),
        };
        let head = proof::check(&bundle, &self.trusted_keys, previous.as_ref(), position)?;
        {
            let mut trusted = self.trusted.lock().expect("trust lock");
            let keep = trusted
                .get(tenant)
                .is_some_and(|current| current.size > head.size);
            if !keep {
                trusted.insert(tenant.to_string(), head.clone());
            }
        }
        Ok(Proven {
            head,
            previous,
            signed: bundle.head.clone(),
            record: bundle.record,
            inclusion_hashes: bundle.inclusion.len(),
            consistency_hashes: bundle.consistency.len(),
        })
    }

    /// The head trusted for `tenant`, if any.
    pub fn trusted_head(&self, tenant: &str) -> Option<proof::TrustedHead> {
        self.trusted
            .lock()
            .expect("trust lock")
            .get(tenant)
            .cloned()
    }

    /// Trusts `head` for `tenant` (e.g. one saved by an earlier run): later proofs must
    /// extend it.
    pub fn trust(&self, tenant: &str, head: proof::TrustedHead) {
        self.trusted
            .lock()
            .expect("trust lock")
            .insert(tenant.to_string(), head);
    }

    /// Where the replica this client talks to stands (a cluster's replicas only).
    pub async fn replica_status(&self) -> Result<ReplicaStatus, ClientError> {
        match self.request(Request::ReplicaStatus).await? {
            Response::ReplicaStatus(status) => Ok(status),
            other => Err(unexpected("replica-status", &other)),
        }
    }

    /// Closes the connection politely (the node sees a clean close, not a timeout).
    pub async fn close(self) {
        let connection = self.current.lock().expect("connection lock").1.clone();
        connection.close(0u32.into(), b"bye");
        self.endpoint.wait_idle().await;
    }
}

async fn resolve(address: &str) -> Result<SocketAddr, ClientError> {
    let connect_error = |message: String| ClientError::Connect {
        address: address.to_string(),
        message,
    };
    tokio::net::lookup_host(address)
        .await
        .map_err(|error| connect_error(error.to_string()))?
        .next()
        .ok_or_else(|| connect_error("the address resolves to nothing".into()))
}

/// A QUIC connection to `target`, trusting only its pinned certificate.
async fn open(
    endpoint: &quinn::Endpoint,
    target: &config::ReplicaEndpoint,
    server_name: &str,
    timeout_ms: u64,
) -> Result<quinn::Connection, ClientError> {
    let connect_error = |message: String| ClientError::Connect {
        address: target.address.clone(),
        message,
    };
    let address = resolve(&target.address).await?;
    let provider = tls::crypto_provider();
    let mut tls_config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|error| connect_error(error.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(tls::PinnedCertificate::new(
            &target.certificate_sha256,
            provider,
        )))
        .with_no_client_auth();
    tls_config.alpn_protocols = vec![protocol::ALPN.to_vec()];
    let quic_config = quinn::crypto::rustls::QuicClientConfig::try_from(tls_config)
        .map_err(|error| connect_error(error.to_string()))?;
    let mut client_config = quinn::ClientConfig::new(Arc::new(quic_config));
    client_config.transport_config(Arc::new(transport_config()));
    let connecting = endpoint
        .connect_with(client_config, address, server_name)
        .map_err(|error| connect_error(error.to_string()))?;
    tokio::time::timeout(Duration::from_millis(timeout_ms), connecting)
        .await
        .map_err(|_| {
            connect_error(format!(
                "no answer within {timeout_ms} ms (is `kimberlite start` running there?)"
            ))
        })?
        .map_err(|error| connect_error(error.to_string()))
}

/// One request stream: the frame out, the whole answer back.
async fn exchange(connection: &quinn::Connection, bytes: &[u8]) -> Result<Vec<u8>, ClientError> {
    let (mut send, mut receive) = connection.open_bi().await.map_err(transport_error)?;
    send.write_all(bytes).await.map_err(transport_error)?;
    send.finish().map_err(transport_error)?;
    receive
        .read_to_end(FRAME_HEADER_BYTES + FRAME_BYTES_MAX)
        .await
        .map_err(transport_error)
}

fn decode_answer(answer: &[u8]) -> Result<Response, ClientError> {
    let response: ResponseFrame = protocol::decode_frame(answer, "response")?;
    if response.version != PROTOCOL_VERSION {
        return Err(ClientError::Transport(format!(
            "node speaks protocol version {}, this client {}",
            response.version, PROTOCOL_VERSION
        )));
    }
    response.result.map_err(ClientError::Server)
}

fn unexpected(request: &'static str, response: &Response) -> ClientError {
    let name = match response {
        Response::TenantCreated { .. } => "tenant-created",
        Response::Tenants { .. } => "tenants",
        Response::TokenCreated { .. } => "token-created",
        Response::Rows(_) => "rows",
        Response::Written { .. } => "written",
        Response::Log { .. } => "log",
        Response::Frames { .. } => "frames",
        Response::ReplicaStatus(_) => "replica-status",
        Response::Proof(_) => "proof",
    };
    ClientError::Unexpected {
        request,
        response: name.to_string(),
    }
}

/// QUIC transport settings shared by client and server.
pub fn transport_config() -> quinn::TransportConfig {
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(quinn::VarInt::from_u32(IDLE_TIMEOUT_MS).into()));
    transport.keep_alive_interval(Some(Duration::from_millis(KEEP_ALIVE_MS)));
    transport
}
