//! A replica of a Kimberlite cluster as a process, and the files that make a cluster.
//!
//! `kimberlite cluster init --replicas N --data-dir BASE` writes, for each replica `i`,
//! `BASE/replica-i/` holding:
//! - `cluster.toml` ([`ClusterFile`]): the cluster id, this replica's index, every replica's
//!   replica-to-replica and client addresses and both certificate pins, the VSR sizes (equal on
//!   every replica) and the SHA-256 of the first admin token;
//! - `cluster.secret` (0600): the secret tenant data keys are derived from
//!   ([`ClusterSecret`]) — the same file on every replica;
//! - `replica-tls/` (this replica's certificate for mutual TLS between replicas) and `tls/` (its
//!   certificate for clients).
//!
//! and `BASE/client.toml` naming every replica (with the admin token), which clients use to
//! find the primary. `kimberlite start --replica I --data-dir BASE/replica-I` then runs one
//! replica: its state machine ([`KernelStateMachine`]) in `node/`, its VSR files in `vsr/`.
//! `kimberlite cluster up` does both for a local cluster of processes on loopback.
//!
//! # Writes and exactly-once
//!
//! Only the primary answers clients ([`ErrorCode::NotPrimary`] elsewhere; the Rust client
//! moves on to the next replica), and it answers a read only after a read barrier
//! (`ReplicaDriver::read_barrier`: a quorum vouched for its view, and it applied every op
//! that could have committed before the read arrived). A write becomes one VSR request of the client's own session
//! (client id = the session): VSR numbers a session's requests 1, 2, … with one in flight and
//! caches the last reply, while the client numbers every request it sends, reads included. So
//! the primary keeps, per client, the next VSR number, serializes the client's writes, and puts
//! the client's own request number in the command (and from there in the log and the reply).
//! After a view change the new primary does not know the next number: it submits 1 and learns
//! it from the answer (`Stale { last }`, or a cached reply), then resubmits `last`: the cached
//! reply of that request answers it, and if that reply carries this very client request
//! number, the write had committed before the change and its reply is returned instead of
//! writing twice. This covers a client's latest write — the one a client retries.
//!
//! # State transfer
//!
//! A replica brought to a checkpoint its logs do not reach fetches the missing records from its
//! peers' client endpoints ([`Request::FetchFrames`], authenticated by a token derived from the
//! cluster secret) and imports them after checking every frame and the checkpoint's chain head
//! (see [`LogFetcher`]).

use crate::files::write_atomic;
use crate::node::{Node, ReplicatedWrites, WriteReply, Written};
use crate::replicated::{
    ClusterKeys, ClusterSecret, CommitReply, KernelStateMachine, LogFetcher, ReplicatedOptions,
    encode_command,
};
use crate::tls::TlsIdentity;
use anyhow::{Context, bail};
use kimberlite_client::config::ReplicaEndpoint;
use kimberlite_client::protocol::{ErrorCode, Request, Response, WireError};
use kimberlite_client::{Client, ClientConfig};
use kimberlite_consensus::Config;
use kimberlite_consensus::driver::{DriverConfig, ReplicaDriver, StartMode, SubmitError};
use kimberlite_consensus::transport::{CertificateFingerprint, ReplicaIdentity};
use kimberlite_kernel::{Command, TenantId};
use kimberlite_log::{FrameBatch, LogConfig, Position};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// A replica's cluster description, in its data directory.
pub const CLUSTER_FILE: &str = "cluster.toml";
/// The cluster secret (64 hex digits, mode 0600), in each replica's data directory.
pub const SECRET_FILE: &str = "cluster.secret";
/// This replica's TLS identity towards the other replicas.
const REPLICA_TLS_DIR: &str = "replica-tls";
/// The state machine's directory (tenant logs, views, node signing key).
pub const NODE_DIR: &str = "node";
/// The VSR replica's files (superblock, journal, checkpoints).
pub const VSR_DIR: &str = "vsr";
/// First port `cluster init` hands out: replica `i` gets `BASE + 2i` (replicas) and
/// `BASE + 2i + 1` (clients).
pub const BASE_PORT_DEFAULT: u16 = 7400;
/// Replica counts a cluster may have (the consensus crate's bound).
pub const REPLICAS_MAX: u8 = kimberlite_consensus::constants::replicas_max as u8;
/// Clients whose next VSR request number the primary remembers; past it, one is forgotten and
/// relearned on its next write (one extra round trip, never a wrong answer).
pub const SESSIONS_CACHED_MAX: usize = 16_384;
/// Submissions of one write before the primary gives up (each learns something: a session
/// registered, the next number, a busy slot freed).
const WRITE_ATTEMPTS_MAX: usize = 8;
/// Pause before resubmitting when a client's earlier submission still occupies its session.
const CLIENT_BUSY_RETRY_MS: u64 = 50;
/// How long a read waits for its barrier: the replica's own barrier timeout (500 ms) plus
/// applying the ops in flight when it began.
const READ_BARRIER_WAIT_MS: u64 = 2_000;
/// Bytes of record frames per fetch answer: well under the protocol's frame bound.
pub const FETCH_BYTES_MAX: usize = 4 << 20;
/// A fetch of missing records keeps trying peers for this long before the replica gives up.
pub const FETCH_WAIT_MS: u64 = 120_000;
/// One fetch request to one peer gives up after this long.
const FETCH_ATTEMPT_TIMEOUT_MS: u64 = 10_000;
/// Pause after every peer failed one fetch, before the next round.
const FETCH_ROUND_PAUSE_MS: u64 = 500;
/// How often a new primary checks whether the first admin token exists yet.
const ADMIN_BOOTSTRAP_POLL_MS: u64 = 200;
/// BLAKE3 `derive_key` context of the peer token: fixed forever.
const PEER_TOKEN_CONTEXT: &str = "kimberlite 2026-11 cluster peer fetch token v1";
/// Prefix of the peer token, so it is recognisable in a leak scan like API tokens.
const PEER_TOKEN_PREFIX: &str = "kbp_";

// ---------------------------------------------------------------------------------------------
// Files.

/// `cluster.toml`: what every replica must agree on, plus which one this is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterFile {
    /// 32 hex digits.
    pub cluster_id: String,
    /// This replica's index.
    pub replica: u8,
    /// VSR journal size and checkpoint interval, equal on every replica.
    pub journal_slots: u64,
    pub checkpoint_interval_ops: u64,
    /// SHA-256 (hex) of the first admin token: the first primary creates it.
    pub admin_token_sha256: String,
    /// The region the cluster runs in: its replicas create and serve tenants of this region
    /// and tenants without one (none: only tenants without a region).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    pub replicas: Vec<ReplicaEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaEntry {
    /// Replica-to-replica QUIC address (mutual TLS).
    pub replica_address: SocketAddr,
    /// Client QUIC address.
    pub client_address: SocketAddr,
    /// SHA-256 of the replica's replica-to-replica certificate.
    pub replica_certificate_sha256: String,
    /// SHA-256 of the replica's client-facing certificate.
    pub client_certificate_sha256: String,
}

impl ClusterFile {
    pub fn load(dir: &Path) -> anyhow::Result<ClusterFile> {
        let path = dir.join(CLUSTER_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read {} (create the cluster with `kimberlite cluster init`)",
                path.display()
            )
        })?;
        let file: ClusterFile =
            toml::from_str(&text).with_context(|| format!("{} is not valid", path.display()))?;
        file.cluster()
            .with_context(|| format!("{} is not valid", path.display()))?;
        if file.replicas.is_empty() || file.replicas.len() > REPLICAS_MAX as usize {
            bail!(
                "{} lists {} replicas; a cluster has 1..={REPLICAS_MAX}",
                path.display(),
                file.replicas.len()
            );
        }
        if file.replica as usize >= file.replicas.len() {
            bail!(
                "{} says this is replica {} of {}",
                path.display(),
                file.replica,
                file.replicas.len()
            );
        }
        Ok(file)
    }

    pub fn cluster(&self) -> anyhow::Result<u128> {
        u128::from_str_radix(&self.cluster_id, 16)
            .with_context(|| format!("cluster_id `{}` is not 32 hex digits", self.cluster_id))
    }

    /// The client config that finds this cluster's primary.
    pub fn client_config(
        &self,
        admin_token: Option<String>,
        node_public_keys: Vec<String>,
    ) -> ClientConfig {
        let replicas: Vec<ReplicaEndpoint> = self
            .replicas
            .iter()
            .map(|replica| ReplicaEndpoint {
                address: replica.client_address.to_string(),
                certificate_sha256: replica.client_certificate_sha256.clone(),
            })
            .collect();
        ClientConfig {
            address: replicas[0].address.clone(),
            server_name: kimberlite_client::config::SERVER_NAME_DEFAULT.to_string(),
            certificate_sha256: replicas[0].certificate_sha256.clone(),
            admin_token,
            replicas,
            node_public_keys,
        }
    }
}

/// What `cluster init` sets up.
#[derive(Clone, Debug)]
pub struct InitOptions {
    pub replicas: u8,
    pub base: PathBuf,
    /// One address for every replica, or one per replica (replicas on several hosts, or in
    /// network namespaces).
    pub hosts: Vec<IpAddr>,
    pub base_port: u16,
    pub journal_slots: u64,
    pub checkpoint_interval_ops: u64,
    /// The region of every replica (`cluster init --region`).
    pub region: Option<String>,
}

/// The data directory of replica `replica` under `base`.
pub fn replica_dir(base: &Path, replica: u8) -> PathBuf {
    base.join(format!("replica-{replica}"))
}

/// Where `cluster init` writes the cluster's client config.
pub fn client_config_path(base: &Path) -> PathBuf {
    base.join("client.toml")
}

/// Creates every replica's directory, identities, secret and `cluster.toml`, and
/// `BASE/client.toml` with a new admin token. Refuses a base that already holds a cluster.
pub fn init(options: &InitOptions) -> anyhow::Result<ClientConfig> {
    if options.replicas == 0 || options.replicas > REPLICAS_MAX {
        bail!(
            "a cluster has 1..={REPLICAS_MAX} replicas (3 survive 1 failure, 5 survive 2), not {}",
            options.replicas
        );
    }
    let client_path = client_config_path(&options.base);
    if client_path.exists() || replica_dir(&options.base, 0).join(CLUSTER_FILE).exists() {
        bail!(
            "{} already holds a cluster; start it with `kimberlite cluster up` or pick another --data-dir",
            options.base.display()
        );
    }
    let host = |replica: u8| -> anyhow::Result<IpAddr> {
        match options.hosts.as_slice() {
            [one] => Ok(*one),
            hosts if hosts.len() == options.replicas as usize => Ok(hosts[replica as usize]),
            hosts => bail!(
                "give one host for every replica or one per replica, not {} for {} replicas",
                hosts.len(),
                options.replicas
            ),
        }
    };
    host(0)?; // Refuse a wrong host list before writing anything.
    let port = |offset: u32| -> anyhow::Result<u16> {
        u16::try_from(options.base_port as u32 + offset).with_context(|| {
            format!(
                "--base-port {} leaves no room for {} replicas",
                options.base_port, options.replicas
            )
        })
    };
    let secret = ClusterSecret::generate();
    let (admin_token, admin_hash) = crate::node::new_token();
    let mut entries = Vec::new();
    let mut node_public_keys = Vec::new();
    for replica in 0..options.replicas {
        let dir = replica_dir(&options.base, replica);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        // Made now, so client.toml can name every key that signs tree heads. It lives beside
        // the certificates (the replica's identity), not in node/ (its state).
        let node_key = kimberlite_log::NodeKey::load_or_create(&dir)
            .context("cannot create the replica's node signing key")?;
        node_public_keys.push(hex::encode(node_key.public_key().as_bytes()));
        let identity = replica_identity(&dir)?;
        let client_identity = TlsIdentity::load_or_create(&dir)?;
        write_atomic(&dir.join(SECRET_FILE), secret.to_hex().as_bytes(), true)
            .with_context(|| format!("cannot write {}", dir.join(SECRET_FILE).display()))?;
        entries.push(ReplicaEntry {
            replica_address: SocketAddr::new(host(replica)?, port(2 * replica as u32)?),
            client_address: SocketAddr::new(host(replica)?, port(2 * replica as u32 + 1)?),
            replica_certificate_sha256: identity.fingerprint().to_string(),
            client_certificate_sha256: client_identity.fingerprint(),
        });
    }
    let cluster: u128 = rand::random();
    for replica in 0..options.replicas {
        let file = ClusterFile {
            cluster_id: format!("{cluster:032x}"),
            replica,
            journal_slots: options.journal_slots,
            checkpoint_interval_ops: options.checkpoint_interval_ops,
            admin_token_sha256: hex::encode(admin_hash),
            region: options.region.clone(),
            replicas: entries.clone(),
        };
        let path = replica_dir(&options.base, replica).join(CLUSTER_FILE);
        let text = toml::to_string_pretty(&file).expect("a cluster file always serializes");
        write_atomic(&path, text.as_bytes(), false)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let file = ClusterFile::load(&replica_dir(&options.base, 0))?;
    let config = file.client_config(Some(admin_token), node_public_keys);
    config.save(&client_path)?;
    Ok(config)
}

/// The replica's node signing key lives in its directory (`cluster init` puts it there; a
/// cluster made before kept it in `node/`, from where it is copied once). Its public half
/// is also written to `node/node.pub`, where `kimberlite verify --data-dir …/node` and the
/// node serving the replica read it.
fn replica_node_key(dir: &Path, node_dir: &Path) -> anyhow::Result<()> {
    let key_file = dir.join(kimberlite_log::NODE_KEY_FILE);
    let old_key_file = node_dir.join(kimberlite_log::NODE_KEY_FILE);
    if !key_file.exists() && old_key_file.exists() {
        let bytes = zeroize::Zeroizing::new(
            std::fs::read(&old_key_file)
                .with_context(|| format!("cannot read {}", old_key_file.display()))?,
        );
        write_atomic(&key_file, &bytes, true)
            .with_context(|| format!("cannot write {}", key_file.display()))?;
    }
    let node_key = kimberlite_log::NodeKey::load_or_create(dir)
        .context("cannot load the replica's node signing key")?;
    std::fs::create_dir_all(node_dir)
        .with_context(|| format!("cannot create {}", node_dir.display()))?;
    let public = format!("{}\n", hex::encode(node_key.public_key().as_bytes()));
    let public_file = node_dir.join(kimberlite_log::NODE_PUBLIC_KEY_FILE);
    if std::fs::read_to_string(&public_file).ok().as_deref() != Some(public.as_str()) {
        write_atomic(&public_file, public.as_bytes(), false)
            .with_context(|| format!("cannot write {}", public_file.display()))?;
    }
    Ok(())
}

/// Loads `DIR/replica-tls/{cert,key}.der`, creating them if absent.
fn replica_identity(dir: &Path) -> anyhow::Result<ReplicaIdentity> {
    let tls = dir.join(REPLICA_TLS_DIR);
    let certificate_path = tls.join("cert.der");
    let key_path = tls.join("key.der");
    if !certificate_path.exists() {
        std::fs::create_dir_all(&tls)
            .with_context(|| format!("cannot create {}", tls.display()))?;
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
            .context("cannot generate the replica certificate")?;
        write_atomic(&key_path, &generated.signing_key.serialize_der(), true)
            .with_context(|| format!("cannot write {}", key_path.display()))?;
        write_atomic(&certificate_path, generated.cert.der(), false)
            .with_context(|| format!("cannot write {}", certificate_path.display()))?;
    }
    Ok(ReplicaIdentity {
        certificate_der: std::fs::read(&certificate_path)
            .with_context(|| format!("cannot read {}", certificate_path.display()))?,
        private_key_der: std::fs::read(&key_path)
            .with_context(|| format!("cannot read {}", key_path.display()))?,
    })
}

fn peer_token(secret: &ClusterSecret) -> String {
    let key = blake3::derive_key(PEER_TOKEN_CONTEXT, secret.to_hex().as_bytes());
    format!("{PEER_TOKEN_PREFIX}{}", hex::encode(key))
}

// ---------------------------------------------------------------------------------------------
// The write path of a replica.

type Driver = ReplicaDriver<KernelStateMachine>;

/// A replica's [`ReplicatedWrites`]: client sessions over the VSR driver.
struct ReplicaWrites {
    /// Set once the replica started; taken at a clean stop.
    driver: RwLock<Option<Driver>>,
    /// Per client: the next VSR request number, if known. The async mutex serializes a
    /// client's writes (VSR takes one request in flight per session).
    sessions: Mutex<HashMap<u128, Arc<tokio::sync::Mutex<Option<u64>>>>>,
    /// The session of this process's own commands (projection reports, the first admin token):
    /// fresh per process, so its request numbers never meet an earlier process's.
    node_client: u128,
    node_requests: AtomicU64,
    peer_token: String,
    client_addresses: Vec<SocketAddr>,
}

impl std::fmt::Debug for ReplicaWrites {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaWrites")
            .field("node_client", &self.node_client)
            .finish_non_exhaustive()
    }
}

fn not_primary(message: String) -> WireError {
    WireError {
        code: ErrorCode::NotPrimary,
        message,
    }
}

impl ReplicaWrites {
    fn session(&self, client: u128) -> Arc<tokio::sync::Mutex<Option<u64>>> {
        let mut sessions = self.sessions.lock().expect("sessions lock");
        if sessions.len() >= SESSIONS_CACHED_MAX && !sessions.contains_key(&client) {
            // Forget an idle one; it relearns its number on its next write.
            let idle = sessions
                .iter()
                .find(|(_, session)| Arc::strong_count(session) == 1)
                .map(|(client, _)| *client);
            if let Some(idle) = idle {
                sessions.remove(&idle);
            }
        }
        sessions.entry(client).or_default().clone()
    }

    fn driver_status(&self) -> Option<kimberlite_consensus::driver::DriverStatus> {
        self.driver
            .read()
            .expect("driver lock")
            .as_ref()
            .map(ReplicaDriver::status)
    }

    fn primary_hint(&self) -> String {
        match self.driver_status() {
            // A timed-out write on the replica that still believes it leads: it cannot reach
            // a quorum (cut off, or its view is being replaced), so naming itself would send
            // the client straight back.
            Some(status) if status.primary == status.replica => format!(
                "replica {} leads view {} ({:?}) but cannot reach a quorum of replicas: it may be cut off from them, or a view change is under way; try another replica",
                status.replica, status.view, status.status
            ),
            Some(status) => {
                let primary = self
                    .client_addresses
                    .get(status.primary as usize)
                    .map_or_else(|| "?".to_string(), ToString::to_string);
                format!(
                    "replica {} is not the primary (view {}, {:?}); the primary is replica {} at {primary}",
                    status.replica, status.view, status.status, status.primary
                )
            }
            None => "this replica is still starting".to_string(),
        }
    }

    async fn submit(&self, mut command: Command) -> WriteReply {
        let client = if command.client_id == 0 {
            command.request = self.node_requests.fetch_add(1, Ordering::Relaxed) + 1;
            self.node_client
        } else {
            command.client_id
        };
        let wanted = command.request;
        let bytes = encode_command(&command);
        let session = self.session(client);
        let mut next = session.lock().await;
        for _ in 0..WRITE_ATTEMPTS_MAX {
            let request = next.unwrap_or(1);
            let submitted = self
                .driver
                .read()
                .expect("driver lock")
                .as_ref()
                .map(|driver| driver.submit(client, request, bytes.clone()));
            let Some(submitted) = submitted else {
                return Err(not_primary(self.primary_hint()));
            };
            match submitted.await {
                Ok(reply) => {
                    let reply = CommitReply::decode(&reply.body).map_err(|error| WireError {
                        code: ErrorCode::Internal,
                        message: format!(
                            "the cluster answered with a reply this build cannot read: {error}"
                        ),
                    })?;
                    *next = Some(request + 1);
                    if reply.request() == wanted {
                        return answer(reply);
                    }
                    // The cached reply of an earlier request: the session was further on.
                }
                Err(SubmitError::Stale { last, .. }) => *next = Some(last),
                Err(SubmitError::Evicted { .. }) => {
                    let registered = self
                        .driver
                        .read()
                        .expect("driver lock")
                        .as_ref()
                        .map(|driver| driver.register(client));
                    let Some(registered) = registered else {
                        return Err(not_primary(self.primary_hint()));
                    };
                    registered.await.map_err(|error| self.submit_error(error))?;
                    *next = Some(1);
                }
                Err(SubmitError::ClientBusy { .. }) => {
                    tokio::time::sleep(Duration::from_millis(CLIENT_BUSY_RETRY_MS)).await;
                }
                Err(error) => {
                    *next = None;
                    return Err(self.submit_error(error));
                }
            }
        }
        Err(WireError {
            code: ErrorCode::Unavailable,
            message: format!(
                "the write of client {client:x} request {wanted} found no free session slot after {WRITE_ATTEMPTS_MAX} tries; retry"
            ),
        })
    }

    fn submit_error(&self, error: SubmitError) -> WireError {
        match error {
            SubmitError::NotPrimary { .. }
            | SubmitError::OutcomeUnknown { .. }
            | SubmitError::TimedOut { .. }
            | SubmitError::Stopped { .. } => {
                not_primary(format!("{error}; {}", self.primary_hint()))
            }
            SubmitError::TooLarge { bytes } => WireError {
                code: ErrorCode::TooLarge,
                message: format!(
                    "a replicated command is at most {} bytes and this one is {bytes} (a module that large cannot be deployed to a cluster yet)",
                    kimberlite_consensus::constants::command_bytes_max
                ),
            },
            SubmitError::Busy { .. } => WireError {
                code: ErrorCode::Unavailable,
                message: error.to_string(),
            },
            other => WireError {
                code: ErrorCode::Internal,
                message: other.to_string(),
            },
        }
    }
}

/// A committed reply as the node's write answer.
fn answer(reply: CommitReply) -> WriteReply {
    match reply {
        CommitReply::Written(written) => Ok(Written {
            outcomes: vec![written.outcome.into_outcome()],
            rows_affected: written.rows_affected,
            positions: written.positions,
        }),
        CommitReply::Refused(refusal) => Err(WireError {
            code: crate::convert::error_code(refusal.class.class()),
            message: refusal.message,
        }),
    }
}

impl ReplicatedWrites for ReplicaWrites {
    fn write(
        self: Arc<Self>,
        command: Command,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = WriteReply> + Send>> {
        Box::pin(async move { self.submit(command).await })
    }

    fn serving(&self) -> Result<(), WireError> {
        match self.driver_status() {
            Some(status) if status.accepting_requests => Ok(()),
            _ => Err(not_primary(self.primary_hint())),
        }
    }

    fn confirm_read(
        self: Arc<Self>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), WireError>> + Send>> {
        let barrier = self
            .driver
            .read()
            .expect("driver lock")
            .as_ref()
            .map(ReplicaDriver::read_barrier);
        Box::pin(async move {
            let Some(barrier) = barrier else {
                return Err(not_primary(self.primary_hint()));
            };
            match tokio::time::timeout(Duration::from_millis(READ_BARRIER_WAIT_MS), barrier).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(error)) => Err(self.submit_error(error)),
                Err(_) => Err(not_primary(format!(
                    "this replica could not confirm within {READ_BARRIER_WAIT_MS} ms that it still leads its view and has applied every committed write; {}",
                    self.primary_hint()
                ))),
            }
        })
    }

    fn status(&self) -> Result<kimberlite_client::ReplicaStatus, WireError> {
        let status = self
            .driver_status()
            .ok_or_else(|| not_primary("this replica is still starting".into()))?;
        Ok(kimberlite_client::ReplicaStatus {
            replica: status.replica,
            replica_count: self.client_addresses.len() as u8,
            status: format!("{:?}", status.status).to_lowercase(),
            view: status.view,
            primary: status.primary,
            accepting_requests: status.accepting_requests,
            op: status.op,
            commit: status.commit_min,
            checkpoint_op: status.checkpoint_op,
        })
    }

    fn is_peer(&self, token: &str) -> bool {
        use subtle_compare::equal;
        equal(token.as_bytes(), self.peer_token.as_bytes())
    }
}

/// Token comparison without an early exit on the first differing byte.
mod subtle_compare {
    pub fn equal(a: &[u8], b: &[u8]) -> bool {
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

// ---------------------------------------------------------------------------------------------
// Fetching records from peers.

/// Fetches record frames from the peers' client endpoints (see the module docs).
struct PeerFetcher {
    peers: Vec<ClientConfig>,
    token: String,
    runtime: tokio::runtime::Handle,
    clients: HashMap<usize, Client>,
    /// The peer that answered last: asked first next time.
    preferred: usize,
}

impl PeerFetcher {
    async fn ask(
        &mut self,
        index: usize,
        tenant: TenantId,
        from: Position,
        end: Position,
    ) -> anyhow::Result<FrameBatch> {
        if !self.clients.contains_key(&index) {
            let client = Client::connect(&self.peers[index], Some(self.token.clone())).await?;
            self.clients.insert(index, client);
        }
        let client = &self.clients[&index];
        let request = Request::FetchFrames { tenant, from, end };
        let response = tokio::time::timeout(
            Duration::from_millis(FETCH_ATTEMPT_TIMEOUT_MS),
            client.request(request),
        )
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {FETCH_ATTEMPT_TIMEOUT_MS} ms"))?;
        match response {
            Ok(Response::Frames { first, end, bytes }) => Ok(FrameBatch { first, end, bytes }),
            Ok(other) => bail!("answered a fetch with {other:?}"),
            Err(error) => {
                // A broken connection is made anew next time.
                self.clients.remove(&index);
                Err(error.into())
            }
        }
    }
}

impl LogFetcher for PeerFetcher {
    fn fetch(
        &mut self,
        tenant: TenantId,
        from: Position,
        end: Position,
    ) -> anyhow::Result<FrameBatch> {
        let deadline = std::time::Instant::now() + Duration::from_millis(FETCH_WAIT_MS);
        let runtime = self.runtime.clone();
        let count = self.peers.len();
        loop {
            let mut errors = Vec::new();
            for step in 0..count {
                let index = (self.preferred + step) % count;
                match runtime.block_on(self.ask(index, tenant, from, end)) {
                    Ok(batch) => {
                        self.preferred = index;
                        return Ok(batch);
                    }
                    Err(error) => errors.push(format!("{}: {error:#}", self.peers[index].address)),
                }
            }
            if std::time::Instant::now() >= deadline {
                bail!(
                    "no peer could give partition {tenant} from {from} within {FETCH_WAIT_MS} ms: {}",
                    errors.join("; ")
                );
            }
            tracing::warn!(tenant, from, errors = ?errors, "no peer could give the records yet");
            std::thread::sleep(Duration::from_millis(FETCH_ROUND_PAUSE_MS));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A running replica.

/// How `kimberlite start --replica` was asked to run.
#[derive(Clone, Debug)]
pub struct ReplicaOptions {
    pub data_dir: PathBuf,
    pub replica: u8,
    /// `--cluster`: the replica addresses, checked against `cluster.toml`.
    pub addresses: Option<Vec<SocketAddr>>,
    /// `--recover`: this replica's disk was lost; rejoin from the peers.
    pub recover: bool,
}

/// One replica: VSR driver, state machine, node and client endpoint.
pub struct ReplicaServer {
    node: Arc<Node>,
    writes: Arc<ReplicaWrites>,
    file: ClusterFile,
    shutdown: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for ReplicaServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaServer")
            .field("replica", &self.file.replica)
            .finish_non_exhaustive()
    }
}

impl ReplicaServer {
    pub async fn start(options: ReplicaOptions) -> anyhow::Result<ReplicaServer> {
        let dir = options.data_dir.clone();
        let file = ClusterFile::load(&dir)?;
        if file.replica != options.replica {
            bail!(
                "{} belongs to replica {}, not {} (--replica)",
                dir.display(),
                file.replica,
                options.replica
            );
        }
        let replica_addresses: Vec<SocketAddr> = file
            .replicas
            .iter()
            .map(|entry| entry.replica_address)
            .collect();
        if let Some(addresses) = &options.addresses
            && *addresses != replica_addresses
        {
            bail!(
                "--cluster lists {addresses:?} but {} has {replica_addresses:?}",
                dir.join(CLUSTER_FILE).display()
            );
        }
        let cluster = file.cluster()?;
        let secret_path = dir.join(SECRET_FILE);
        let secret =
            ClusterSecret::from_hex(&std::fs::read_to_string(&secret_path).with_context(|| {
                format!("cannot read the cluster secret {}", secret_path.display())
            })?)
            .with_context(|| format!("{} is not a cluster secret", secret_path.display()))?;
        let fingerprints = file
            .replicas
            .iter()
            .map(|entry| {
                CertificateFingerprint::from_hex(&entry.replica_certificate_sha256).map_err(
                    |error| anyhow::anyhow!("{}: {error}", dir.join(CLUSTER_FILE).display()),
                )
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let vsr_dir = dir.join(VSR_DIR);
        let node_dir = dir.join(NODE_DIR);
        // The node directory may hold only the signing key `cluster init` made; its state
        // starts with the system log.
        let node_state = node_dir.join("system");
        let start = if options.recover {
            if vsr_dir.exists() || node_state.exists() {
                bail!(
                    "--recover rejoins a replica whose disk was lost, but {} or {} exists: move them away first (never recover a replica over its own data)",
                    vsr_dir.display(),
                    node_dir.display()
                );
            }
            StartMode::Recover
        } else if vsr_dir.exists() {
            StartMode::Open
        } else if node_state.exists() {
            bail!(
                "{} exists without {}: this replica's VSR state is lost; move {} away and start with --recover",
                node_dir.display(),
                vsr_dir.display(),
                node_dir.display()
            );
        } else {
            StartMode::Format
        };
        let mut protocol = Config::new(cluster, file.replicas.len() as u8, file.replica);
        protocol.journal_slots = file.journal_slots;
        protocol.checkpoint_interval_ops = file.checkpoint_interval_ops;
        let driver_config = DriverConfig {
            protocol,
            addresses: replica_addresses,
            identity: replica_identity(&dir)?,
            fingerprints,
            data_dir: vsr_dir,
            start,
        };

        replica_node_key(&dir, &node_dir)?;
        let mut machine = KernelStateMachine::open(ReplicatedOptions {
            data_dir: node_dir.clone(),
            log: LogConfig::default(),
            keys: ClusterKeys::new(cluster, secret.clone()),
            node_key_dir: Some(dir.clone()),
        })?;
        let token = peer_token(&secret);
        let writes = Arc::new(ReplicaWrites {
            driver: RwLock::new(None),
            sessions: Mutex::new(HashMap::new()),
            node_client: rand::random::<u128>() | 1,
            node_requests: AtomicU64::new(0),
            peer_token: token.clone(),
            client_addresses: file
                .replicas
                .iter()
                .map(|entry| entry.client_address)
                .collect(),
        });
        let runtime = tokio::runtime::Handle::current();
        let (node, observer) = Node::open_replica(
            &node_dir,
            machine.views().clone(),
            writes.clone(),
            runtime.clone(),
            file.region.clone(),
        )?;
        machine.set_observer(observer);
        let peers = file
            .replicas
            .iter()
            .enumerate()
            .filter(|(index, _)| *index != file.replica as usize)
            .map(|(_, entry)| ClientConfig {
                address: entry.client_address.to_string(),
                server_name: kimberlite_client::config::SERVER_NAME_DEFAULT.to_string(),
                certificate_sha256: entry.client_certificate_sha256.clone(),
                admin_token: None,
                replicas: Vec::new(),
                node_public_keys: Vec::new(),
            })
            .collect();
        machine.set_fetcher(Box::new(PeerFetcher {
            peers,
            token,
            runtime,
            clients: HashMap::new(),
            preferred: 0,
        }));
        let node = Arc::new(node);

        // The client endpoint first: peers that need records from this replica while it
        // restores (or they do) can ask.
        let identity = TlsIdentity::load_or_create(&dir)?;
        let listen = file.replicas[file.replica as usize].client_address;
        let endpoint = quinn::Endpoint::server(identity.quic_server_config()?, listen)
            .with_context(|| format!("cannot listen for clients on {listen}"))?;
        let (shutdown, receiver) = tokio::sync::watch::channel(false);
        let mut tasks = vec![tokio::spawn(crate::server::serve(
            endpoint,
            node.clone(),
            receiver,
        ))];

        let driver =
            tokio::task::spawn_blocking(move || ReplicaDriver::start(&driver_config, machine))
                .await
                .context("the replica start task failed")?
                .context("cannot start the replica")?;
        *writes.driver.write().expect("driver lock") = Some(driver);
        let admin_hash: [u8; 32] = hex::decode(&file.admin_token_sha256)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .with_context(|| {
                format!(
                    "admin_token_sha256 in {} is not 64 hex digits",
                    dir.join(CLUSTER_FILE).display()
                )
            })?;
        tasks.push(tokio::spawn(bootstrap_admin(
            node.clone(),
            writes.clone(),
            admin_hash,
            shutdown.subscribe(),
        )));
        Ok(ReplicaServer {
            node,
            writes,
            file,
            shutdown,
            tasks,
        })
    }

    pub fn replica(&self) -> u8 {
        self.file.replica
    }

    pub fn client_address(&self) -> SocketAddr {
        self.file.replicas[self.file.replica as usize].client_address
    }

    /// Stops serving, stops the replica cleanly and closes its logs (synced, checkpointed).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
        let node = self.node.clone();
        tokio::task::spawn_blocking(move || node.shutdown())
            .await
            .context("the node shutdown task failed")?;
        let driver = self.writes.driver.write().expect("driver lock").take();
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let Some(driver) = driver else {
                return Ok(());
            };
            let machine = driver
                .shutdown()
                .context("the replica stopped with an error")?;
            machine.close()
        })
        .await
        .context("the replica shutdown task failed")?
    }
}

/// Creates the first admin token once this replica leads a cluster that has none.
async fn bootstrap_admin(
    node: Arc<Node>,
    writes: Arc<ReplicaWrites>,
    hash: [u8; 32],
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        if node.catalog().tokens().next().is_some() {
            return;
        }
        if writes.serving().is_ok()
            && let Err(error) = node.create_admin_token(hash).await
        {
            tracing::debug!(%error, "first admin token not created yet");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(ADMIN_BOOTSTRAP_POLL_MS)) => {}
            _ = shutdown.changed() => return,
        }
    }
}
