//! One embedded node: recovery on open, the single writer (group commit), and the
//! request handlers.
//!
//! Write path (one thread, so the kernel sees one total order):
//! requests → bounded queue → the writer takes a batch → `Kernel::execute` for each
//! command (validation, records, native table rows into one view-store transaction)
//! → one `append` per touched partition → one `sync` (fdatasync) per touched
//! partition → the view transaction commits (not fsynced; a durable commit every
//! `VIEW_DURABLE_BATCHES_MAX` batches or `VIEW_DURABLE_INTERVAL_MS`) → every request
//! of the batch is answered. Nothing is acknowledged before its records are durable.
//!
//! Read path: any number of concurrent queries, each on a redb read snapshot plus the
//! catalog published by the last committed batch; log reads see durable records only.
//!
//! Recovery: the view store holds, committed atomically with the rows, each
//! partition's applied end and the kernel snapshot. After a crash it is at its last
//! durable commit; the logs hold more. `Node::open` replays the log suffix through
//! `Kernel::apply_record` — the same state change `execute` made — so the kernel,
//! the tables and the logs agree again before the first request is served.

use crate::convert;
use crate::keys::{self, MasterKey, TenantKeys};
use crate::modules::{self, Modules, PolicyMasker, Report};
use anyhow::{Context, bail};
use kimberlite_client::protocol::{
    ErrorCode, LogRecord, ModuleKind, Request, RequestFrame, Response, ResultSet, TenantInfo,
    WireError, WireEvent,
};
use kimberlite_kernel::access::{LOG_GRANT_NAME, Privilege};
use kimberlite_kernel::catalog::{Action, Catalog, Token};
use kimberlite_kernel::sql::{self, Requirement, Statement};
use kimberlite_kernel::{
    AppendEvent, Command, CommandBody, Kernel, KernelError, Outcome, SYSTEM_TENANT, TenantId,
};
use kimberlite_log::{LogConfig, LogReader, NewRecord, NodeKey, PartitionLog, Position};
use kimberlite_projections::ViewStore;
use kimberlite_projections::query::{self, QueryContext};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::oneshot;

/// Write jobs waiting for the writer; a full queue answers `Unavailable` (back-pressure)
/// instead of growing without bound.
pub const WRITE_QUEUE_JOBS_MAX: usize = 4_096;

/// Jobs the writer folds into one group commit (one fdatasync per touched partition).
pub const BATCH_JOBS_MAX: usize = 1_024;

/// The view store is fsynced at least every this many batches …
pub const VIEW_DURABLE_BATCHES_MAX: u32 = 256;

/// … and at least this often while writes come in (bounding replay after a crash).
pub const VIEW_DURABLE_INTERVAL_MS: u64 = 1_000;

/// The projection runner waits at most this long for new records before it looks again
/// (it is woken at once after every committed batch).
pub const RUNNER_IDLE_MS: u64 = 200;

/// The runner commits view progress durably at least this often (between, commits are
/// visible but not fsynced; a crash re-applies from the last durable one).
pub const RUNNER_DURABLE_INTERVAL_MS: u64 = 1_000;

/// How long a query with `after` waits for the views to apply that position.
pub const READ_YOUR_WRITES_WAIT_MS: u64 = 10_000;

/// How often a waiting query looks at the views' progress again.
const READ_YOUR_WRITES_POLL_MS: u64 = 5;

/// Prefix of every token secret, so a leaked one is easy to recognise and scan for.
pub const TOKEN_PREFIX: &str = "kbt_";

/// Random bytes in a token secret.
const TOKEN_SECRET_BYTES: usize = 32;

/// Where things live under the data directory.
#[derive(Clone, Debug)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn system_dir(&self) -> PathBuf {
        self.root.join("system")
    }
    pub fn tenant_dir(&self, tenant: TenantId) -> PathBuf {
        if tenant == SYSTEM_TENANT {
            self.system_dir()
        } else {
            self.root.join("tenants").join(tenant.to_string())
        }
    }
    pub fn log_dir(&self, tenant: TenantId) -> PathBuf {
        self.tenant_dir(tenant).join("log")
    }
    pub fn views(&self) -> PathBuf {
        self.root.join("views.redb")
    }
    pub fn client_config(&self) -> PathBuf {
        self.root.join("client.toml")
    }
}

#[derive(Clone, Debug)]
pub struct NodeOptions {
    pub data_dir: PathBuf,
    pub log: LogConfig,
    /// The region this node runs in: it creates and serves tenants of its region and tenants
    /// created without one, never a tenant of another region. `None`: only tenants without a
    /// region.
    pub region: Option<String>,
}

impl NodeOptions {
    pub fn new(data_dir: impl Into<PathBuf>) -> NodeOptions {
        NodeOptions {
            data_dir: data_dir.into(),
            log: LogConfig::default(),
            region: None,
        }
    }
}

/// What the writer answers one job with.
pub(crate) type WriteReply = Result<Written, WireError>;

/// The effect of a write job.
#[derive(Debug)]
pub(crate) struct Written {
    pub(crate) outcomes: Vec<Outcome>,
    pub(crate) rows_affected: u64,
    pub(crate) positions: Option<(Position, Position)>,
}

struct WriteJob {
    commands: Vec<Command>,
    reply: oneshot::Sender<WriteReply>,
}

/// State every request handler reads.
struct Shared {
    layout: Layout,
    views: ViewStore,
    catalog: RwLock<Arc<Catalog>>,
    readers: RwLock<BTreeMap<TenantId, LogReader>>,
    /// Set when the writer stopped after an I/O failure: writes are refused with this.
    failure: Mutex<Option<String>>,
    /// Compiled Wasm of the tenants' projections and policies.
    modules: Modules,
    /// Bumped after every committed batch; the runner sleeps on it.
    batches: (Mutex<u64>, Condvar),
    /// Tells the runner to stop.
    stopping: AtomicBool,
    /// The key this node signs tree heads with (`DATA/node.pub`).
    node_public_key: [u8; 32],
    /// This node's region (`NodeOptions::region`).
    region: Option<String>,
    /// The tenants' rate buckets.
    quotas: crate::quota::Quotas,
}

/// How a replica of a cluster writes: through consensus (see `crate::cluster`). The node
/// only needs these three things of it.
pub(crate) trait ReplicatedWrites: Send + Sync {
    /// Commits one command through the cluster and answers what it did.
    fn write(
        self: Arc<Self>,
        command: Command,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = WriteReply> + Send>>;
    /// `Ok` while this replica is the primary in normal status; else the error that sends a
    /// client to the primary.
    fn serving(&self) -> Result<(), WireError>;
    /// Resolves once a read may be answered here: a quorum confirmed this replica still
    /// leads its view, and it applied every op that could have committed before the call.
    fn confirm_read(
        self: Arc<Self>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), WireError>> + Send>>;
    /// Whether `token` is the cluster's peer token (replicas fetching records for a state
    /// transfer).
    fn is_peer(&self, token: &str) -> bool;
    /// Where this replica stands.
    fn status(&self) -> Result<kimberlite_client::ReplicaStatus, WireError>;
}

impl Shared {
    fn new(
        layout: Layout,
        views: ViewStore,
        catalog: Catalog,
        readers: BTreeMap<TenantId, LogReader>,
        node_public_key: [u8; 32],
        region: Option<String>,
    ) -> anyhow::Result<Arc<Shared>> {
        let engine = kimberlite_projections::wasm::Engine::new()
            .map_err(|error| anyhow::anyhow!("cannot start the Wasm engine: {error}"))?;
        Ok(Arc::new(Shared {
            layout,
            views,
            catalog: RwLock::new(Arc::new(catalog)),
            readers: RwLock::new(readers),
            failure: Mutex::new(None),
            modules: Modules::new(engine),
            batches: (Mutex::new(0), Condvar::new()),
            stopping: AtomicBool::new(false),
            node_public_key,
            region,
            quotas: crate::quota::Quotas::default(),
        }))
    }

    /// Starts the projection runner thread; `submit` commits its reports.
    fn spawn_runner(
        self: &Arc<Shared>,
        submit: impl Fn(Command) -> Option<Result<(), WireError>> + Send + 'static,
    ) -> anyhow::Result<std::thread::JoinHandle<()>> {
        let shared = self.clone();
        std::thread::Builder::new()
            .name("kimberlite-projections".into())
            .spawn(move || run_projections(&shared, &submit))
            .context("cannot start the projection runner thread")
    }
}

/// A running node: cheap to share across request handlers.
pub struct Node {
    shared: Arc<Shared>,
    /// Set on a replica of a cluster: writes go through consensus, not the local writer.
    replicated: Option<Arc<dyn ReplicatedWrites>>,
    writes: Mutex<Option<SyncSender<WriteJob>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    runner: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("data_dir", &self.shared.layout.root)
            .finish()
    }
}

/// What `Node::open` found and did.
#[derive(Debug, Default)]
pub struct OpenReport {
    pub partitions: usize,
    pub records_replayed: u64,
    pub notes: Vec<String>,
}

impl Node {
    /// Opens (or creates) the node in `options.data_dir`, recovering every partition.
    pub fn open(options: NodeOptions) -> anyhow::Result<(Node, OpenReport)> {
        let layout = Layout {
            root: options.data_dir.clone(),
        };
        std::fs::create_dir_all(&layout.root).with_context(|| {
            format!("cannot create the data directory {}", layout.root.display())
        })?;
        let node_key = Arc::new(
            NodeKey::load_or_create(&layout.root).context("cannot load the node signing key")?,
        );
        let master = MasterKey::load_or_create(&layout.root)?;
        let views = ViewStore::open(&layout.views())
            .with_context(|| format!("cannot open the view store {}", layout.views().display()))?;
        let (applied, snapshot) = views
            .applied()
            .context("cannot read the view store's applied positions")?;
        let mut kernel = match snapshot {
            Some(bytes) => Kernel::restore(&bytes)
                .context("the kernel snapshot in the view store is damaged")?,
            None => Kernel::new(),
        };

        let mut report = OpenReport::default();
        let mut logs = BTreeMap::new();
        let mut tenant_keys = BTreeMap::new();
        let mut transaction = views
            .begin()
            .context("cannot begin the recovery transaction")?;
        // The system partition first: replaying it may add tenants whose logs open next.
        let mut pending: Vec<TenantId> = vec![SYSTEM_TENANT];
        while let Some(tenant) = pending.pop() {
            let (log, keys, recovery) =
                open_partition(&layout, &master, &node_key, &options.log, tenant)?;
            tenant_keys.insert(tenant, keys);
            if let Some(note) = recovery {
                report.notes.push(note);
            }
            let from = applied.get(&tenant).copied().unwrap_or(0);
            let replayed = replay(&mut kernel, &mut transaction, tenant, &log, from)?;
            report.records_replayed += replayed;
            transaction.set_applied(tenant, log.next_position())?;
            assert_eq!(
                kernel.next_position(tenant),
                log.next_position(),
                "kernel and log disagree on the end of partition {tenant} after recovery"
            );
            logs.insert(tenant, log);
            if tenant == SYSTEM_TENANT {
                pending.extend(kernel.catalog().tenants().map(|tenant| tenant.id));
            }
        }
        report.notes.extend(finish_interrupted_erasures(
            kernel.catalog(),
            &mut tenant_keys,
            &mut logs,
        )?);
        transaction.set_kernel_snapshot(&kernel.snapshot())?;
        transaction
            .commit(true)
            .context("cannot commit the recovered state")?;
        report.partitions = logs.len();

        let readers = logs
            .iter()
            .map(|(tenant, log)| (*tenant, log.reader()))
            .collect();
        let shared = Shared::new(
            layout.clone(),
            views,
            kernel.catalog().clone(),
            readers,
            node_key.public_key().to_bytes(),
            options.region.clone(),
        )?;
        let (sender, receiver) = std::sync::mpsc::sync_channel(WRITE_QUEUE_JOBS_MAX);
        let writer = Writer {
            shared: shared.clone(),
            kernel,
            logs,
            keys: tenant_keys,
            master,
            node_key,
            log_config: options.log,
            batches_since_durable: 0,
            last_durable: Instant::now(),
        };
        let thread = std::thread::Builder::new()
            .name("kimberlite-writer".into())
            .spawn(move || writer.run(&receiver))
            .context("cannot start the writer thread")?;
        let runner = {
            let sender = sender.clone();
            shared.spawn_runner(move |command| {
                let (reply, answer) = oneshot::channel();
                let job = WriteJob {
                    commands: vec![command],
                    reply,
                };
                sender.send(job).ok()?;
                answer.blocking_recv().ok().map(|reply| reply.map(drop))
            })?
        };
        Ok((
            Node {
                shared,
                replicated: None,
                writes: Mutex::new(Some(sender)),
                writer: Mutex::new(Some(thread)),
                runner: Mutex::new(Some(runner)),
            },
            report,
        ))
    }

    /// A replica's node: queries, log reads and the projection runner over the state
    /// machine's view store and logs, writes through `writes`. Returns the observer the
    /// state machine must be given (`KernelStateMachine::set_observer`), which publishes each
    /// commit to the handlers.
    pub(crate) fn open_replica(
        root: &Path,
        views: ViewStore,
        writes: Arc<dyn ReplicatedWrites>,
        runtime: tokio::runtime::Handle,
        region: Option<String>,
    ) -> anyhow::Result<(Node, Box<dyn crate::replicated::CommitObserver>)> {
        let shared = Shared::new(
            Layout {
                root: root.to_path_buf(),
            },
            views,
            Catalog::default(),
            BTreeMap::new(),
            NodeKey::load_public_key(root)
                .context("cannot read the node public key")?
                .to_bytes(),
            // The cluster's region (cluster.toml): every replica holds the same tenants.
            region,
        )?;
        let runner = {
            let writes = writes.clone();
            shared.spawn_runner(move |command| {
                // Backups derive the same views but leave reporting to the primary: its
                // reports are the ones that commit.
                if writes.serving().is_err() {
                    return Some(Ok(()));
                }
                Some(runtime.block_on(writes.clone().write(command)).map(drop))
            })?
        };
        let observer = Box::new(Publisher {
            shared: shared.clone(),
        });
        Ok((
            Node {
                shared,
                replicated: Some(writes),
                writes: Mutex::new(None),
                writer: Mutex::new(None),
                runner: Mutex::new(Some(runner)),
            },
            observer,
        ))
    }

    pub fn layout(&self) -> &Layout {
        &self.shared.layout
    }

    /// The catalog as of the last committed batch.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.shared.catalog.read().expect("catalog lock").clone()
    }

    /// Stops taking writes, waits for the writer to finish its batch, writes a signed
    /// checkpoint per partition and commits the views durably.
    pub fn shutdown(&self) {
        // The runner first: it holds a sender of the write queue.
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.batches.1.notify_all();
        if let Some(thread) = self.runner.lock().expect("runner lock").take()
            && thread.join().is_err()
        {
            tracing::error!("the projection runner panicked");
        }
        drop(self.writes.lock().expect("writes lock").take());
        if let Some(thread) = self.writer.lock().expect("writer lock").take()
            && thread.join().is_err()
        {
            tracing::error!("the writer thread panicked during shutdown");
        }
    }

    /// A replica's answer to a peer fetching the stored frames of `tenant`'s records
    /// `from..end` (at most `cluster::FETCH_BYTES_MAX` bytes of them).
    async fn fetch_frames(
        &self,
        tenant: TenantId,
        from: Position,
        end: Position,
    ) -> Result<Response, WireError> {
        let reader = self.reader(tenant)?;
        tokio::task::spawn_blocking(move || {
            if from >= end || from >= reader.end() {
                return Err(unavailable(format!(
                    "partition {tenant} holds {} records here, none from {from} below {end}",
                    reader.end()
                )));
            }
            let batch = reader
                .read_frames(from..end, crate::cluster::FETCH_BYTES_MAX)
                .map_err(|error| internal(format!("cannot read partition {tenant}: {error}")))?;
            Ok(Response::Frames {
                first: batch.first,
                end: batch.end,
                bytes: batch.bytes,
            })
        })
        .await
        .map_err(|error| internal(format!("fetch task failed: {error}")))?
    }

    /// Creates an admin token with this hash unless the node has a token (a cluster's first
    /// primary does this with the hash `cluster init` wrote; a single node at its first start).
    pub(crate) async fn create_admin_token(&self, hash: [u8; 32]) -> Result<(), WireError> {
        if self.catalog().tokens().next().is_some() {
            return Ok(());
        }
        let command = self.command(
            SYSTEM_TENANT,
            0,
            0,
            "kimberlite",
            "first start: admin token",
            CommandBody::CreateToken {
                tenant: SYSTEM_TENANT,
                name: "admin".into(),
                secret_hash: hash,
                roles: vec!["admin".into()],
                attributes: Vec::new(),
            },
        );
        self.write(vec![command]).await.map(drop)
    }

    /// Creates the node-admin token if the node has none (first start); returns it.
    pub async fn bootstrap_admin_token(&self) -> anyhow::Result<Option<String>> {
        if self.catalog().tokens().next().is_some() {
            return Ok(None);
        }
        let (token, hash) = new_token();
        self.create_admin_token(hash)
            .await
            .map_err(|error| anyhow::anyhow!("{error}"))?;
        Ok(Some(token))
    }

    fn command(
        &self,
        tenant: TenantId,
        client_id: u128,
        request: u64,
        principal: &str,
        reason: &str,
        body: CommandBody,
    ) -> Command {
        Command {
            tenant,
            client_id,
            request,
            // The writer stamps the real time when it sequences the batch.
            timestamp_ns: 0,
            principal: principal.to_string(),
            reason: reason.to_string(),
            body,
        }
    }

    /// Before a read on a replica: a read barrier, so a primary cut off from its quorum (it
    /// still believes it leads until it abdicates) answers no read with state that misses
    /// writes a new primary acknowledged. A single node has nothing to confirm.
    async fn confirm_read(&self) -> Result<(), WireError> {
        match &self.replicated {
            Some(replicated) => replicated.clone().confirm_read().await,
            None => Ok(()),
        }
    }

    /// One command, written, answered as a write.
    async fn write_one(&self, command: Command) -> Result<Response, WireError> {
        Ok(written_response(&self.write(vec![command]).await?))
    }

    async fn write(&self, commands: Vec<Command>) -> WriteReply {
        if let Some(replicated) = &self.replicated {
            // One op per command: each is its own atomic unit, as in a local batch.
            let mut written = Written {
                outcomes: Vec::new(),
                rows_affected: 0,
                positions: None,
            };
            for command in commands {
                let one = replicated.clone().write(command).await?;
                written.outcomes.extend(one.outcomes);
                written.rows_affected += one.rows_affected;
                written.positions = match (written.positions, one.positions) {
                    (Some((first, _)), Some((_, last))) => Some((first, last)),
                    (before, now) => now.or(before),
                };
            }
            return Ok(written);
        }
        if let Some(failure) = self.shared.failure.lock().expect("failure lock").clone() {
            return Err(unavailable(failure));
        }
        let (reply, answer) = oneshot::channel();
        let sender = self.writes.lock().expect("writes lock").clone();
        let Some(sender) = sender else {
            return Err(unavailable("the node is shutting down".into()));
        };
        match sender.try_send(WriteJob { commands, reply }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(unavailable(format!(
                    "the write queue is full ({WRITE_QUEUE_JOBS_MAX} requests waiting); retry shortly"
                )));
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(unavailable("the node is shutting down".into()));
            }
        }
        answer
            .await
            .unwrap_or_else(|_| Err(unavailable("the writer stopped before answering".into())))
    }

    /// Answers one request. Never panics on client input.
    pub async fn handle(&self, frame: RequestFrame) -> Result<Response, WireError> {
        if let Some(replicated) = &self.replicated {
            if let Request::FetchFrames { tenant, from, end } = frame.request {
                if !replicated.is_peer(&frame.token) {
                    return Err(WireError {
                        code: ErrorCode::Unauthenticated,
                        message: "fetch-frames needs the cluster's peer token".into(),
                    });
                }
                return self.fetch_frames(tenant, from, end).await;
            }
            if let Request::ReplicaStatus = frame.request {
                authenticate(&self.catalog(), &frame.token)?;
                return replicated.status().map(Response::ReplicaStatus);
            }
            // Only the primary answers: its state holds every acknowledged write.
            replicated.serving()?;
        }
        let catalog = self.catalog();
        let token = authenticate(&catalog, &frame.token)?;
        let client = (frame.client_id.0, frame.request_number);
        match frame.request {
            Request::TenantCreate {
                name,
                reason,
                region,
            } => {
                require(
                    &token,
                    SYSTEM_TENANT,
                    Action::ManageTenants,
                    "create tenants",
                )?;
                if !may_hold(region.as_deref(), self.shared.region.as_deref()) {
                    return Err(region_refused(
                        &format!("cannot create tenant `{name}`"),
                        region.as_deref(),
                        self.shared.region.as_deref(),
                    ));
                }
                let command = self.command(
                    SYSTEM_TENANT,
                    client.0,
                    client.1,
                    &token.name,
                    &reason,
                    CommandBody::CreateTenant {
                        name: name.clone(),
                        region,
                    },
                );
                let written = self.write(vec![command]).await?;
                match written.outcomes.first() {
                    Some(Outcome::TenantCreated { tenant, name }) => Ok(Response::TenantCreated {
                        tenant: name.clone(),
                        id: *tenant,
                    }),
                    other => Err(internal(format!("tenant create answered {other:?}"))),
                }
            }
            Request::FetchFrames { .. } | Request::ReplicaStatus => Err(bad_request(format!(
                "{} is for replicas of a cluster; this node is a single node",
                frame.request.name()
            ))),
            Request::TenantList => {
                self.confirm_read().await?;
                let system = self.reader(SYSTEM_TENANT)?;
                let readers = self.shared.readers.read().expect("readers lock").clone();
                let visible: Vec<(TenantId, String, Position, Option<Position>)> = catalog
                    .tenants()
                    .filter(|tenant| token.tenant == SYSTEM_TENANT || token.tenant == tenant.id)
                    .map(|tenant| {
                        (
                            tenant.id,
                            tenant.name.clone(),
                            tenant.created_at,
                            tenant.erased_at,
                        )
                    })
                    .collect();
                tokio::task::spawn_blocking(move || {
                    let mut tenants = Vec::with_capacity(visible.len());
                    for (id, name, created_at, erased_at) in visible {
                        // The creation time is the timestamp of the tenant's record in the
                        // system partition: one header read, no decryption.
                        let created_at_ns = system
                            .read_headers(created_at, 1)
                            .map_err(|error| {
                                internal(format!("cannot read the system log: {error}"))
                            })?
                            .first()
                            .map(|header| header.meta.timestamp_ns)
                            .unwrap_or(0);
                        tenants.push(TenantInfo {
                            id,
                            name,
                            created_at_ns,
                            log_end: readers.get(&id).map(LogReader::end).unwrap_or(0),
                            erased_at,
                        });
                    }
                    Ok(Response::Tenants { tenants })
                })
                .await
                .map_err(|error| internal(format!("tenant list task failed: {error}")))?
            }
            Request::TokenCreate {
                tenant,
                name,
                roles,
                attributes,
                reason,
            } => {
                let tenant_id = self.resolve_tenant(&catalog, &token, &tenant)?;
                require(&token, tenant_id, Action::ManageTokens, "create tokens")?;
                if roles.is_empty() {
                    return Err(bad_request(
                        "a token needs at least one role (--role admin|writer|reader|auditor, or a tenant-defined role)".into(),
                    ));
                }
                let (secret, hash) = new_token();
                let principal =
                    name.unwrap_or_else(|| format!("token-{}", &hex::encode(hash)[..8]));
                let command = self.command(
                    SYSTEM_TENANT,
                    client.0,
                    client.1,
                    &token.name,
                    &reason,
                    CommandBody::CreateToken {
                        tenant: tenant_id,
                        name: principal.clone(),
                        secret_hash: hash,
                        roles,
                        attributes,
                    },
                );
                self.write(vec![command]).await?;
                Ok(Response::TokenCreated {
                    token: secret,
                    principal,
                })
            }
            Request::Sql {
                tenant,
                sql,
                params,
                reason,
                as_of,
                purpose,
                after,
                emergency,
            } => {
                let tenant_id = self.resolve_tenant(&catalog, &token, &tenant)?;
                let statement = sql::parse(&sql).map_err(|error| WireError {
                    code: ErrorCode::BadSql,
                    message: error.to_string(),
                })?;
                if let Some(why) = &emergency {
                    check_emergency(&token, &statement, why)?;
                }
                authorize(&catalog, &token, tenant_id, &statement, emergency.is_some())?;
                let params: Vec<_> = params.into_iter().map(convert::from_wire).collect();
                match &statement {
                    Statement::Select(_) => self.admit_query(&catalog, tenant_id, &tenant)?,
                    _ => self.admit_write(&catalog, tenant_id, &tenant, 1)?,
                }
                match statement {
                    Statement::Select(select) => {
                        if !reason.is_empty() {
                            tracing::debug!(%reason, "reason given for a read");
                        }
                        let reads_views = catalog.tenant(tenant_id).is_some_and(|state| {
                            select
                                .from
                                .iter()
                                .any(|item| state.view(&item.table.name).is_some())
                        });
                        let after = match (after, erased_through(&catalog, tenant_id)) {
                            (after, Some(erased)) if reads_views => {
                                Some(after.map_or(erased, |after| after.max(erased)))
                            }
                            (after, _) => after,
                        };
                        self.confirm_read().await?;
                        if let Some(after) = after {
                            self.wait_for_views(tenant_id, after).await?;
                        }
                        // The catalog again: the views (and grants) may have moved while we
                        // waited; the query runs under this one, so it is checked again.
                        let catalog = self.catalog();
                        let statement = Statement::Select(select);
                        authorize(&catalog, &token, tenant_id, &statement, emergency.is_some())?;
                        let Statement::Select(select) = statement else {
                            unreachable!("wrapped above")
                        };
                        if let Some(why) = &emergency {
                            // Break-glass: recorded before the query runs, so even a read that
                            // then fails is in the trail, and nothing is answered unrecorded.
                            let (tables, policies) = emergency_scope(&catalog, tenant_id, &select);
                            let command = self.command(
                                tenant_id,
                                client.0,
                                client.1,
                                &token.name,
                                why,
                                CommandBody::RecordAccess {
                                    tables,
                                    policies,
                                    purpose: purpose.clone(),
                                    row_filters: Vec::new(),
                                    emergency: Some(why.clone()),
                                },
                            );
                            self.write(vec![command]).await?;
                        }
                        let caller = kimberlite_projections::wasm::Caller {
                            principal: token.name.clone(),
                            roles: token.roles.clone(),
                            attributes: token.attributes.clone(),
                            purpose: purpose.clone(),
                        };
                        let read_as = ReadAs {
                            caller,
                            row_filtered: emergency.is_none(),
                        };
                        let (response, audited) = self
                            .query(tenant_id, catalog, select, params, as_of, read_as)
                            .await?;
                        if let Some(audited) = audited.filter(|_| emergency.is_none()) {
                            // A masked or row-filtered read is answered only once its access
                            // record is durable: an unaudited read of protected data is not
                            // served.
                            let why = purpose.clone().unwrap_or_default();
                            let command = self.command(
                                tenant_id,
                                client.0,
                                client.1,
                                &token.name,
                                &why,
                                CommandBody::RecordAccess {
                                    tables: audited.tables,
                                    policies: audited.policies,
                                    purpose,
                                    row_filters: audited.row_filters,
                                    emergency: None,
                                },
                            );
                            self.write(vec![command]).await?;
                        }
                        Ok(response)
                    }
                    _ => {
                        if as_of.is_some() {
                            return Err(bad_request(
                                "AS OF applies to queries, not to writes".into(),
                            ));
                        }
                        self.write_one(self.command(
                            tenant_id,
                            client.0,
                            client.1,
                            &token.name,
                            &reason,
                            CommandBody::Sql { sql, params },
                        ))
                        .await
                    }
                }
            }
            Request::Append {
                tenant,
                events,
                reason,
            } => {
                let tenant_id = self.resolve_tenant(&catalog, &token, &tenant)?;
                require(&token, tenant_id, Action::Write, "append events")?;
                if events.is_empty() {
                    return Err(bad_request("an append needs at least one event".into()));
                }
                self.admit_write(&catalog, tenant_id, &tenant, events.len() as u64)?;
                if events.len() > kimberlite_client::protocol::APPEND_EVENTS_MAX {
                    return Err(WireError {
                        code: ErrorCode::TooLarge,
                        message: format!(
                            "{} events in one append; the limit is {}",
                            events.len(),
                            kimberlite_client::protocol::APPEND_EVENTS_MAX
                        ),
                    });
                }
                let events: Vec<AppendEvent> = events
                    .into_iter()
                    .map(
                        |WireEvent {
                             stream,
                             event_type,
                             payload,
                             subject,
                         }| AppendEvent {
                            stream,
                            event_type,
                            payload,
                            subject,
                        },
                    )
                    .collect();
                let count = events.len() as u64;
                // One command: the events are written all or none.
                let command = self.command(
                    tenant_id,
                    client.0,
                    client.1,
                    &token.name,
                    &reason,
                    CommandBody::Append { events },
                );
                let written = self.write(vec![command]).await?;
                Ok(Response::Written {
                    summary: format!("APPEND {count}"),
                    rows_affected: count,
                    positions: written.positions,
                })
            }
            Request::ModuleDeploy {
                tenant,
                kind,
                name,
                module,
                config,
                reason,
            } => {
                let tenant_id = self.resolve_tenant(&catalog, &token, &tenant)?;
                require(
                    &token,
                    tenant_id,
                    Action::Ddl,
                    "deploy projections or policies (requires role admin)",
                )?;
                let engine = self.shared.modules.engine().clone();
                // Compiling is CPU work: off the async threads.
                let body = tokio::task::spawn_blocking(move || {
                    check_module(&engine, kind, name, module, config)
                })
                .await
                .map_err(|error| internal(format!("deploy task failed: {error}")))??;
                let command =
                    self.command(tenant_id, client.0, client.1, &token.name, &reason, body);
                Ok(written_response(&self.write(vec![command]).await?))
            }
            Request::ModuleRollback {
                tenant,
                kind,
                name,
                reason,
            } => {
                let tenant_id = self.resolve_tenant(&catalog, &token, &tenant)?;
                require(
                    &token,
                    tenant_id,
                    Action::Ddl,
                    "roll back projections or policies (requires role admin)",
                )?;
                let body = match kind {
                    ModuleKind::Projection => CommandBody::RollbackProjection { name },
                    ModuleKind::Policy => CommandBody::RollbackPolicy { name },
                };
                let command =
                    self.command(tenant_id, client.0, client.1, &token.name, &reason, body);
                Ok(written_response(&self.write(vec![command]).await?))
            }
            Request::TenantQuota {
                tenant,
                stored_bytes,
                appends_per_second,
                queries_per_second,
                fuel_per_second,
                reason,
            } => {
                require(
                    &token,
                    SYSTEM_TENANT,
                    Action::ManageTenants,
                    "set tenant quotas",
                )?;
                let target = resolve_tenant(&catalog, &token, &tenant)?;
                let command = self.command(
                    SYSTEM_TENANT,
                    client.0,
                    client.1,
                    &token.name,
                    &reason,
                    CommandBody::SetQuota {
                        target,
                        quota: kimberlite_kernel::Quota {
                            stored_bytes,
                            appends_per_second,
                            queries_per_second,
                            fuel_per_second,
                        },
                    },
                );
                Ok(written_response(&self.write(vec![command]).await?))
            }
            Request::Erase {
                tenant,
                subject,
                reason,
            } => {
                let tenant_id = self.resolve_tenant(&catalog, &token, &tenant)?;
                require(
                    &token,
                    tenant_id,
                    Action::Ddl,
                    "erase a data subject (requires role admin)",
                )?;
                require_reason(&reason, "an erasure")?;
                self.write_one(self.command(
                    tenant_id,
                    client.0,
                    client.1,
                    &token.name,
                    &reason,
                    CommandBody::Erase { subject },
                ))
                .await
            }
            Request::TenantErase { tenant, reason } => {
                require(
                    &token,
                    SYSTEM_TENANT,
                    Action::ManageTenants,
                    "erase a tenant (requires a node-admin token)",
                )?;
                let target = self.resolve_tenant(&catalog, &token, &tenant)?;
                require_reason(&reason, "erasing a tenant")?;
                self.write_one(self.command(
                    SYSTEM_TENANT,
                    client.0,
                    client.1,
                    &token.name,
                    &reason,
                    CommandBody::EraseTenant { target },
                ))
                .await
            }
            Request::KeyRotate { tenant, reason } => {
                let tenant_id = self.resolve_tenant(&catalog, &token, &tenant)?;
                require(
                    &token,
                    tenant_id,
                    Action::Ddl,
                    "rotate the tenant's data key (requires role admin)",
                )?;
                self.write_one(self.command(
                    tenant_id,
                    client.0,
                    client.1,
                    &token.name,
                    &reason,
                    CommandBody::RotateKey,
                ))
                .await
            }
            Request::ReadLog {
                tenant,
                from,
                limit,
            } => {
                self.confirm_read().await?;
                let tenant_id = self.resolve_tenant(&catalog, &token, &tenant)?;
                require(&token, tenant_id, Action::Audit, "read the log")?;
                let limit = limit.min(kimberlite_client::protocol::READ_LOG_RECORDS_MAX) as usize;
                let reader = self.reader(tenant_id)?;
                tokio::task::spawn_blocking(move || {
                    let end = reader.end();
                    let records = reader.read(from, limit).map_err(|error| WireError {
                        code: ErrorCode::Internal,
                        message: format!("cannot read the log of tenant `{tenant}`: {error}"),
                    })?;
                    let records = records
                        .into_iter()
                        .map(|record| redact(&catalog, &token, tenant_id, wire_record(record)))
                        .collect();
                    Ok(Response::Log { records, end })
                })
                .await
                .map_err(|error| internal(format!("log read task failed: {error}")))?
            }
            Request::Proof {
                tenant,
                position,
                trusted_size,
            } => {
                self.confirm_read().await?;
                let tenant_id = if tenant == kimberlite_client::SYSTEM_PARTITION_NAME {
                    require(
                        &token,
                        SYSTEM_TENANT,
                        Action::ManageTenants,
                        "read proofs of the system partition (requires a node-admin token)",
                    )?;
                    SYSTEM_TENANT
                } else {
                    self.resolve_tenant(&catalog, &token, &tenant)?
                };
                require(&token, tenant_id, Action::Audit, "read proofs of the log")?;
                let reader = self.reader(tenant_id)?;
                let public_key = self.shared.node_public_key;
                tokio::task::spawn_blocking(move || {
                    let mut proof = prove(&reader, public_key, position, trusted_size)?;
                    if let Response::Proof(bundle) = &mut proof {
                        bundle.record = bundle
                            .record
                            .take()
                            .map(|record| redact(&catalog, &token, tenant_id, record));
                    }
                    Ok(proof)
                })
                .await
                .map_err(|error| internal(format!("proof task failed: {error}")))?
            }
        }
    }

    fn reader(&self, tenant: TenantId) -> Result<LogReader, WireError> {
        self.shared
            .readers
            .read()
            .expect("readers lock")
            .get(&tenant)
            .cloned()
            .ok_or_else(|| unavailable(format!("tenant {tenant} has no open log")))
    }

    async fn query(
        &self,
        tenant: TenantId,
        catalog: Arc<Catalog>,
        select: sql::Select,
        params: Vec<kimberlite_kernel::Value>,
        as_of: Option<kimberlite_client::AsOf>,
        read_as: ReadAs,
    ) -> Result<(Response, Option<AuditedRead>), WireError> {
        let reader = self.reader(tenant)?;
        let ReadAs {
            caller,
            row_filtered,
        } = read_as;
        // Row filters read the caller's roles, attributes and purpose (unless broken glass).
        let filter_caller = row_filtered.then(|| caller.clone());
        let shared = self.shared.clone();
        let has_policies = catalog
            .tenant(tenant)
            .is_some_and(|state| state.policies().next().is_some());
        let quota = catalog
            .tenant(tenant)
            .map(|state| (state.name.clone(), state.quota.clone()));
        if has_policies && let Some((name, quota)) = &quota {
            self.shared.quotas.check_fuel(tenant, name, quota)?;
        }
        let masker = has_policies.then(|| PolicyMasker {
            tenant,
            catalog: catalog.clone(),
            modules: self.shared.modules.clone(),
            log: reader.clone(),
            caller,
            used: Mutex::new(Vec::new()),
            fuel: std::sync::atomic::AtomicU64::new(0),
        });
        tokio::task::spawn_blocking(move || {
            let views = shared
                .views
                .read()
                .map_err(|error| internal(error.to_string()))?;
            let as_of = as_of.map(|as_of| match as_of {
                kimberlite_client::AsOf::Position(position) => query::AsOf::Position(position),
                kimberlite_client::AsOf::TimestampNs(nanoseconds) => {
                    query::AsOf::Timestamp(nanoseconds)
                }
            });
            let context = QueryContext {
                tenant,
                catalog: &catalog,
                views: &views,
                log: &reader,
                params: &params,
                as_of,
                masker: masker.as_ref().map(|masker| masker as &dyn query::Masker),
                reader: match &filter_caller {
                    Some(caller) => query::Reader::Caller {
                        roles: &caller.roles,
                        attributes: &caller.attributes,
                        purpose: caller.purpose.as_deref(),
                    },
                    None => query::Reader::Unfiltered,
                },
            };
            let result = query::execute(&select, &context);
            if let (Some(masker), Some((_, quota))) = (&masker, &quota) {
                let burnt = masker.fuel.load(std::sync::atomic::Ordering::Relaxed);
                shared.quotas.charge_fuel(tenant, quota, burnt);
            }
            let result = result.map_err(|error| WireError {
                code: query_error_code(&error),
                message: error.to_string(),
            })?;
            let used = masker
                .map(|masker| masker.used.into_inner().expect("used lock"))
                .unwrap_or_default();
            let mut tables: Vec<String> = used.iter().map(|(table, _, _)| table.clone()).collect();
            tables.dedup();
            let mut policies: Vec<String> = used
                .iter()
                .map(|(_, policy, version)| format!("{policy}@{version}"))
                .collect();
            policies.sort();
            policies.dedup();
            // Row filters restrict a table's rows: the read is audited like a masked one.
            for filter in &result.row_filters {
                let table = filter
                    .rsplit_once('.')
                    .map_or(filter.as_str(), |(table, _)| table);
                if !tables.iter().any(|known| known == table) {
                    tables.push(table.to_string());
                }
            }
            let audited =
                (!used.is_empty() || !result.row_filters.is_empty()).then(|| AuditedRead {
                    tables,
                    policies: policies.clone(),
                    row_filters: result.row_filters.clone(),
                });
            let response = Response::Rows(ResultSet {
                columns: result
                    .columns
                    .into_iter()
                    .map(|(name, ty)| convert::column(name, ty))
                    .collect(),
                rows: result
                    .rows
                    .into_iter()
                    .map(|row| row.into_iter().map(convert::to_wire).collect())
                    .collect(),
                as_of: result.as_of,
                masked_by: policies,
            });
            Ok((response, audited))
        })
        .await
        .map_err(|error| internal(format!("query task failed: {error}")))?
    }
}

impl Node {
    /// A query of `tenant` within its `queries_per_second` quota.
    fn admit_query(
        &self,
        catalog: &Catalog,
        tenant: TenantId,
        name: &str,
    ) -> Result<(), WireError> {
        match catalog.tenant(tenant) {
            Some(state) if !state.quota.is_unlimited() => {
                self.shared
                    .quotas
                    .take(tenant, name, &state.quota, crate::quota::Rate::Queries, 1)
            }
            _ => Ok(()),
        }
    }

    /// A write of `records` records to `tenant` within its `stored_bytes` and
    /// `appends_per_second` quotas.
    fn admit_write(
        &self,
        catalog: &Catalog,
        tenant: TenantId,
        name: &str,
        records: u64,
    ) -> Result<(), WireError> {
        let Some(state) = catalog
            .tenant(tenant)
            .filter(|state| !state.quota.is_unlimited())
        else {
            return Ok(());
        };
        if state.quota.stored_bytes.is_some() {
            let stored = self.reader(tenant)?.stored_bytes();
            self.shared
                .quotas
                .check_stored(name, &state.quota, stored)?;
        }
        self.shared.quotas.take(
            tenant,
            name,
            &state.quota,
            crate::quota::Rate::Appends,
            records,
        )
    }

    /// The tenant a request names ([`resolve_tenant`]), refused if its region is not this
    /// node's: a node never serves data that must live elsewhere.
    fn resolve_tenant(
        &self,
        catalog: &Catalog,
        token: &Token,
        name: &str,
    ) -> Result<TenantId, WireError> {
        let id = resolve_tenant(catalog, token, name)?;
        let region = catalog
            .tenant(id)
            .and_then(|tenant| tenant.region.as_deref());
        if !may_hold(region, self.shared.region.as_deref()) {
            return Err(region_refused(
                &format!("this node may not serve tenant `{name}`"),
                region,
                self.shared.region.as_deref(),
            ));
        }
        Ok(id)
    }

    /// Read-your-writes on views: waits until every live, healthy projection version of
    /// `tenant` has applied the log through `after`.
    async fn wait_for_views(&self, tenant: TenantId, after: Position) -> Result<(), WireError> {
        let deadline = Instant::now() + Duration::from_millis(READ_YOUR_WRITES_WAIT_MS);
        loop {
            let catalog = self.catalog();
            let read = self
                .shared
                .views
                .read()
                .map_err(|error| internal(error.to_string()))?;
            let mut behind = None;
            if let Some(state) = catalog.tenant(tenant) {
                for projection in state.projections() {
                    let Some(version) = projection.active_version() else {
                        continue;
                    };
                    if let Some(fault) = &version.fault {
                        return Err(WireError {
                            code: ErrorCode::Unavailable,
                            message: format!(
                                "projection `{}` (version {}) faulted at position {}: {}; deploy a fixed version",
                                projection.name, version.version, fault.position, fault.message
                            ),
                        });
                    }
                    let applied = read
                        .progress(tenant, version.version)
                        .map_err(|error| internal(error.to_string()))?
                        .map_or(0, |progress| progress.applied_end);
                    if applied <= after {
                        behind = Some((projection.name.clone(), applied));
                        break;
                    }
                }
            }
            let Some((name, applied)) = behind else {
                return Ok(());
            };
            if Instant::now() >= deadline {
                return Err(WireError {
                    code: ErrorCode::Unavailable,
                    message: format!(
                        "projection `{name}` has applied the log up to position {applied} (exclusive), not yet {after}, after {READ_YOUR_WRITES_WAIT_MS} ms; retry later"
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(READ_YOUR_WRITES_POLL_MS)).await;
        }
    }
}

/// Compiles and checks a module for a deploy; the command that records it.
fn check_module(
    engine: &kimberlite_projections::wasm::Engine,
    kind: ModuleKind,
    name: String,
    module: Vec<u8>,
    config: Vec<u8>,
) -> Result<CommandBody, WireError> {
    let refused = |error: kimberlite_projections::wasm::DeployError| WireError {
        code: ErrorCode::BadRequest,
        message: format!("{} `{name}` refused: {error}", kind.name()),
    };
    match kind {
        ModuleKind::Projection => {
            let loaded = engine.load_projection(&module, &config).map_err(refused)?;
            let tables = loaded
                .describe()
                .iter()
                .map(|table| kimberlite_kernel::ViewSchema {
                    name: table.name.clone(),
                    columns: table.columns.clone(),
                    primary_key: table.key_positions.clone(),
                })
                .collect();
            Ok(CommandBody::DeployProjection {
                name,
                module,
                config,
                tables,
            })
        }
        ModuleKind::Policy => {
            let loaded = engine.load_policy(&module, &config).map_err(refused)?;
            Ok(CommandBody::DeployPolicy {
                covers: loaded.covers().to_vec(),
                name,
                module,
                config,
            })
        }
    }
}

/// The projection runner thread: steps every live projection version over its tenant's
/// durable log, and reports activations and faults through the write queue.
/// `submit` commits one report; `None` means the node is stopping.
fn run_projections(shared: &Shared, submit: &dyn Fn(Command) -> Option<Result<(), WireError>>) {
    let mut failing = std::collections::HashMap::new();
    let mut last_durable = Instant::now();
    let mut seen_batches = 0u64;
    while !shared.stopping.load(Ordering::SeqCst) {
        let catalog = shared.catalog.read().expect("catalog lock").clone();
        let readers = shared.readers.read().expect("readers lock").clone();
        let durable = last_durable.elapsed() >= Duration::from_millis(RUNNER_DURABLE_INTERVAL_MS);
        let (busy, reports) = modules::run_pass(
            &catalog,
            &readers,
            &shared.modules,
            &shared.views,
            durable,
            &mut failing,
            &shared.quotas,
        );
        if durable {
            last_durable = Instant::now();
        }
        for report in reports {
            let (tenant, body, reason) = match report {
                Report::Activate {
                    tenant,
                    name,
                    version,
                } => (
                    tenant,
                    CommandBody::ActivateProjection { name, version },
                    "projection runner: the new version caught up with the log",
                ),
                Report::Fault {
                    tenant,
                    name,
                    version,
                    position,
                    message,
                } => (
                    tenant,
                    CommandBody::FaultProjection {
                        name,
                        version,
                        position,
                        message,
                    },
                    "projection runner: the module faulted",
                ),
            };
            let command = Command {
                tenant,
                client_id: 0,
                request: 0,
                timestamp_ns: 0,
                principal: "kimberlite".into(),
                reason: reason.into(),
                body,
            };
            match submit(command) {
                Some(Ok(())) => {}
                Some(Err(error)) => {
                    tracing::warn!(%error.message, "projection runner report refused")
                }
                None => return,
            }
        }
        if !busy {
            let (lock, signal) = &shared.batches;
            let mut batches = lock.lock().expect("batches lock");
            if *batches == seen_batches && !shared.stopping.load(Ordering::SeqCst) {
                batches = signal
                    .wait_timeout(batches, Duration::from_millis(RUNNER_IDLE_MS))
                    .expect("batches lock")
                    .0;
            }
            seen_batches = *batches;
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A log record as the wire shows it.
fn wire_record(record: kimberlite_log::Record) -> LogRecord {
    LogRecord {
        position: record.header.position,
        timestamp_ns: record.header.meta.timestamp_ns,
        record_kind: record.header.meta.kind.name().to_string(),
        event_type: record.header.meta.event_type,
        stream: record.header.meta.stream,
        principal: record.header.meta.principal,
        reason: record.header.meta.reason,
        client_id: kimberlite_client::ClientId(record.header.meta.client_id),
        request_number: record.header.meta.request,
        payload: record.payload,
        hash: record.header.hash.to_vec(),
        redacted: false,
        erased: record.erased,
    }
}

/// A signed head of the partition's tree, the consistency proof from `trusted_size` and the
/// record at `position` with its inclusion proof.
fn prove(
    reader: &LogReader,
    public_key: [u8; 32],
    position: Option<Position>,
    trusted_size: Option<u64>,
) -> Result<Response, WireError> {
    let failed = |error: kimberlite_log::LogError| internal(format!("cannot prove: {error}"));
    let signed = reader.signed_head().map_err(failed)?;
    let size = signed.head.size;
    let wire_hashes = |hashes: Vec<kimberlite_log::Hash>| {
        hashes
            .into_iter()
            .map(|hash| kimberlite_client::protocol::WireHash(hash.to_vec()))
            .collect::<Vec<_>>()
    };
    // A trusted size above ours gets no proof: the client sees the smaller head and refuses
    // it (a node never shrinks a tree it signed).
    let consistency = match trusted_size {
        Some(trusted) if trusted > 0 && trusted <= size => {
            wire_hashes(reader.consistency_proof(trusted, size).map_err(failed)?)
        }
        _ => Vec::new(),
    };
    let (record, inclusion) = match position {
        None => (None, Vec::new()),
        Some(position) if position >= size => {
            return Err(WireError {
                code: ErrorCode::NotFound,
                message: format!(
                    "position {position} is not in the signed tree yet (it holds {size} durable records)"
                ),
            });
        }
        Some(position) => {
            let record = reader
                .read(position, 1)
                .map_err(failed)?
                .into_iter()
                .next()
                .ok_or_else(|| internal(format!("record {position} cannot be read")))?;
            let path = reader.inclusion_proof(position, size).map_err(failed)?;
            (Some(wire_record(record)), wire_hashes(path))
        }
    };
    Ok(Response::Proof(kimberlite_client::protocol::ProofBundle {
        head: kimberlite_client::protocol::WireTreeHead {
            partition: signed.head.partition,
            size,
            root: signed.head.root.to_vec(),
            chain_head: signed.head.chain_head.to_vec(),
            timestamp_ns: signed.head.timestamp_ns,
            signature: signed.signature.to_vec(),
            public_key: public_key.to_vec(),
        },
        consistency,
        record,
        inclusion,
    }))
}

/// Publishes a replica's commits to the node's handlers and runner.
struct Publisher {
    shared: Arc<Shared>,
}

impl Publisher {
    fn wake_runner(&self) {
        let (lock, signal) = &self.shared.batches;
        *lock.lock().expect("batches lock") += 1;
        signal.notify_all();
    }
}

impl crate::replicated::CommitObserver for Publisher {
    fn committed(&self, catalog: Option<&Catalog>, opened: Option<(TenantId, LogReader)>) {
        if let Some((tenant, reader)) = opened {
            self.shared
                .readers
                .write()
                .expect("readers lock")
                .insert(tenant, reader);
        }
        if let Some(catalog) = catalog {
            *self.shared.catalog.write().expect("catalog lock") = Arc::new(catalog.clone());
        }
        self.wake_runner();
    }

    fn restored(&self, catalog: &Catalog, readers: Vec<(TenantId, LogReader)>) {
        *self.shared.readers.write().expect("readers lock") = readers.into_iter().collect();
        *self.shared.catalog.write().expect("catalog lock") = Arc::new(catalog.clone());
        self.wake_runner();
    }
}

/// Who reads: the caller masking policies see, and whether row filters apply (not to a
/// break-glass read).
struct ReadAs {
    caller: kimberlite_projections::wasm::Caller,
    row_filtered: bool,
}

/// What the access trail says about a read that masking policies covered or row filters
/// restricted.
struct AuditedRead {
    tables: Vec<String>,
    /// `policy@version` of each masking policy used.
    policies: Vec<String>,
    /// `table.filter` of each row filter that applied.
    row_filters: Vec<String>,
}

/// A new token secret and the hash the catalog keeps.
pub(crate) fn new_token() -> (String, [u8; 32]) {
    let secret: [u8; TOKEN_SECRET_BYTES] = rand::random();
    let token = format!("{TOKEN_PREFIX}{}", hex::encode(secret));
    let hash = token_hash(&token);
    (token, hash)
}

pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn authenticate(catalog: &Catalog, token: &str) -> Result<Token, WireError> {
    if token.is_empty() {
        return Err(WireError {
            code: ErrorCode::Unauthenticated,
            message: "no token was sent (pass --token or set KIMBERLITE_TOKEN)".into(),
        });
    }
    let token = catalog
        .token_by_hash(&token_hash(token))
        .cloned()
        .ok_or_else(|| WireError {
            code: ErrorCode::Unauthenticated,
            message: "the token is not known to this node (mistyped, or made for another node)"
                .into(),
        })?;
    if let Some(tenant) = catalog.tenant(token.tenant)
        && let Some(erased_at) = tenant.erased_at
    {
        return Err(WireError {
            code: ErrorCode::Unauthenticated,
            message: format!(
                "the token `{}` belongs to tenant `{}`, which was erased at position {erased_at} of the system log",
                token.name, tenant.name
            ),
        });
    }
    Ok(token)
}

/// Erasures must say why: the reason is part of the record auditors see.
fn require_reason(reason: &str, what: &str) -> Result<(), WireError> {
    if reason.trim().is_empty() {
        return Err(bad_request(format!(
            "{what} needs a reason (--reason): it is part of the record auditors see"
        )));
    }
    Ok(())
}

fn require(token: &Token, tenant: TenantId, action: Action, what: &str) -> Result<(), WireError> {
    if token.allows(tenant, action) {
        Ok(())
    } else {
        Err(WireError {
            code: ErrorCode::PermissionDenied,
            message: format!(
                "principal `{}` (roles: {}) may not {what}",
                token.name,
                if token.roles.is_empty() {
                    "none".to_string()
                } else {
                    token.roles.join(", ")
                }
            ),
        })
    }
}

/// Checks every requirement of `statement` (see `Statement::requirements`) for `token` in
/// `tenant`. `emergency`: a break-glass read, which needs no SELECT privilege (the caller
/// checked that it may break the glass and the statement is a SELECT).
fn authorize(
    catalog: &Catalog,
    token: &Token,
    tenant: TenantId,
    statement: &Statement,
    emergency: bool,
) -> Result<(), WireError> {
    for requirement in statement.requirements() {
        match requirement {
            Requirement::Action(action) => {
                require(token, tenant, action, describe_action(action))?;
            }
            Requirement::Privilege { .. } if emergency => {}
            Requirement::Privilege { table, privilege } => {
                if !catalog.may(token, tenant, &table, privilege) {
                    return Err(WireError {
                        code: ErrorCode::PermissionDenied,
                        message: format!(
                            "principal `{}` (roles: {}) has no {} privilege on `{table}`; an admin grants it with GRANT {} ON {table} TO <role>",
                            token.name,
                            describe_roles(token),
                            privilege.name(),
                            privilege.name()
                        ),
                    });
                }
            }
        }
    }
    // Row filters cover reads. An UPDATE or DELETE reaches rows by its WHERE, hidden ones
    // too, so a role a filter applies to may not run one on that table.
    let written = match statement {
        Statement::Update(update) => Some(&update.table),
        Statement::Delete(delete) => Some(&delete.table),
        _ => None,
    };
    if let Some(table) = written {
        let filters: Vec<String> = catalog
            .row_filters_for(tenant, table, &token.roles)
            .iter()
            .map(|filter| filter.name.clone())
            .collect();
        if !filters.is_empty() {
            return Err(WireError {
                code: ErrorCode::PermissionDenied,
                message: format!(
                    "row filter{} {} on `{table}` appl{} to principal `{}` (roles: {}): row filters cover reads, so UPDATE and DELETE of `{table}` are refused to a filtered role",
                    if filters.len() == 1 { "" } else { "s" },
                    filters.join(", "),
                    if filters.len() == 1 { "ies" } else { "y" },
                    token.name,
                    describe_roles(token)
                ),
            });
        }
    }
    Ok(())
}

/// A break-glass request must be a read, by a token that may break the glass, with a reason.
fn check_emergency(token: &Token, statement: &Statement, why: &str) -> Result<(), WireError> {
    if !statement.is_query() {
        return Err(bad_request(
            "an emergency reason widens reads (SELECT) only; a write needs a grant".into(),
        ));
    }
    if why.trim().is_empty() {
        return Err(bad_request(
            "an emergency read needs a reason saying why (it goes into the access trail)".into(),
        ));
    }
    if !token.may_break_glass() {
        return Err(WireError {
            code: ErrorCode::PermissionDenied,
            message: format!(
                "principal `{}` (roles: {}) may not break the glass: an admin creates such tokens with the attribute {}=true",
                token.name,
                describe_roles(token),
                kimberlite_kernel::access::BREAK_GLASS_ATTRIBUTE
            ),
        });
    }
    Ok(())
}

/// The tables a break-glass SELECT names and the `policy@version`s that mask them.
fn emergency_scope(
    catalog: &Catalog,
    tenant: TenantId,
    select: &sql::Select,
) -> (Vec<String>, Vec<String>) {
    let mut tables: Vec<String> = Vec::new();
    let mut policies: Vec<String> = Vec::new();
    for item in select.from.iter().filter(|item| !item.table.is_system()) {
        let name = &item.table.name;
        if !tables.contains(name) {
            tables.push(name.clone());
        }
        if let Some((policy, version)) = catalog
            .tenant(tenant)
            .and_then(|state| state.policy_covering(name))
        {
            let used = format!("{}@{}", policy.name, version.version);
            if !policies.contains(&used) {
                policies.push(used);
            }
        }
    }
    policies.sort();
    (tables, policies)
}

/// A log record as `token` may see it: an event's payload is withheld unless the token may
/// read its table unfiltered, or holds SELECT on `kimberlite.log` (admins see everything).
/// Other records (schema, grants, deploys, access records) carry no table data.
fn redact(catalog: &Catalog, token: &Token, tenant: TenantId, mut record: LogRecord) -> LogRecord {
    if record.record_kind != kimberlite_log::RecordKind::Event.name()
        || catalog.may(token, tenant, LOG_GRANT_NAME, Privilege::Select)
    {
        return record;
    }
    let visible = catalog.may(token, tenant, &record.stream, Privilege::Select)
        && catalog
            .row_filters_for(tenant, &record.stream, &token.roles)
            .is_empty();
    if !visible {
        record.payload = Vec::new();
        record.redacted = true;
    }
    record
}

fn describe_roles(token: &Token) -> String {
    if token.roles.is_empty() {
        "none".to_string()
    } else {
        token.roles.join(", ")
    }
}

fn describe_action(action: Action) -> &'static str {
    match action {
        Action::ManageTenants => "create tenants",
        Action::ManageTokens => "create tokens",
        Action::Ddl => "change the schema, grants or row filters (requires role admin)",
        Action::Write => "write (requires role writer or admin)",
        Action::Read => "read tables (requires role reader, writer or admin)",
        Action::Audit => "read the audit trail (requires role auditor or admin)",
    }
}

/// Resolves a tenant name for a token. A tenant token naming another tenant is refused
/// without saying whether that tenant exists.
/// Whether a node of region `node` may hold a tenant of region `tenant`: a tenant without a
/// region may live anywhere; one with a region only on nodes of that region.
fn may_hold(tenant: Option<&str>, node: Option<&str>) -> bool {
    tenant.is_none() || tenant == node
}

/// A tenant in one region may be held only by a node of that region.
fn region_refused(what: &str, tenant: Option<&str>, node: Option<&str>) -> WireError {
    let describe = |region: Option<&str>| match region {
        Some(region) => format!("region `{region}`"),
        None => "no region".to_string(),
    };
    WireError {
        code: ErrorCode::PermissionDenied,
        message: format!(
            "{what}: the tenant's data must live in {}, and this node runs in {} (start a node with --region {} for it)",
            describe(tenant),
            describe(node),
            tenant.unwrap_or("…")
        ),
    }
}

fn resolve_tenant(catalog: &Catalog, token: &Token, name: &str) -> Result<TenantId, WireError> {
    let found = catalog.tenant_by_name(name).map(|tenant| tenant.id);
    if token.tenant != SYSTEM_TENANT && found != Some(token.tenant) {
        return Err(WireError {
            code: ErrorCode::PermissionDenied,
            message: format!("this token is scoped to another tenant and cannot act on `{name}`"),
        });
    }
    let id = found.ok_or_else(|| WireError {
        code: ErrorCode::NotFound,
        message: format!(
            "no tenant named `{name}` (create it with `kimberlite tenant create {name}`)"
        ),
    })?;
    if let Some(erased_at) = catalog.tenant(id).and_then(|tenant| tenant.erased_at) {
        return Err(WireError {
            code: ErrorCode::Conflict,
            message: format!(
                "tenant `{name}` was erased at position {erased_at} of the system log: its keys are destroyed and its data can no longer be read, written or proven"
            ),
        });
    }
    Ok(id)
}

/// The answer to a write: what it did and where in the log it went.
fn written_response(written: &Written) -> Response {
    Response::Written {
        summary: summarize(written),
        rows_affected: written.rows_affected,
        positions: written.positions,
    }
}

fn summarize(written: &Written) -> String {
    match written.outcomes.first() {
        Some(Outcome::TableCreated { table }) => format!("CREATE TABLE {table}"),
        Some(Outcome::TableDropped { table }) => format!("DROP TABLE {table}"),
        Some(Outcome::RowsAffected { count }) => {
            format!("{count} row{} affected", if *count == 1 { "" } else { "s" })
        }
        Some(Outcome::Skipped { notice }) => notice.clone(),
        Some(Outcome::AccessChanged { summary }) => summary.clone(),
        Some(Outcome::QuotaSet { tenant }) => format!("QUOTA SET for tenant {tenant}"),
        Some(Outcome::SubjectErased { subject, key_id }) => format!(
            "ERASE {subject}: key {key_id} destroyed; its rows left every table (now and AS OF), its log records read as erased"
        ),
        Some(Outcome::TenantErased { name, records, .. }) => format!(
            "ERASE TENANT {name}: its key-encryption key and every data key are destroyed; its {records} records read as erased, its tables and views are empty, its tokens are refused"
        ),
        Some(Outcome::KeyRotated { key_id }) => format!(
            "KEY ROTATE: data key {key_id} encrypts the tenant's records from here on (older records keep their key)"
        ),
        Some(Outcome::ProjectionDeployed { name }) => match written.positions {
            Some((_, version)) => format!(
                "DEPLOY PROJECTION {name} version {version} (builds from position 0 in the background; see kimberlite.projections)"
            ),
            None => format!("DEPLOY PROJECTION {name}"),
        },
        Some(Outcome::PolicyDeployed { name }) => match written.positions {
            Some((_, version)) => {
                format!(
                    "DEPLOY POLICY {name} version {version} (active for every query from now on)"
                )
            }
            None => format!("DEPLOY POLICY {name}"),
        },
        Some(Outcome::ProjectionRolledBack { name, to: Some(to) }) => {
            format!("ROLLBACK PROJECTION {name}: version {to} catches up, then serves again")
        }
        Some(Outcome::ProjectionRolledBack { name, to: None }) => {
            format!("ROLLBACK PROJECTION {name}: the pending build is cancelled")
        }
        Some(Outcome::PolicyRolledBack { name, to }) => {
            format!("ROLLBACK POLICY {name}: version {to} is active again")
        }
        Some(other) => format!("{other:?}"),
        None => "nothing written".into(),
    }
}

fn kernel_error(error: &KernelError) -> WireError {
    WireError {
        code: kernel_error_code(error),
        message: error.to_string(),
    }
}

fn kernel_error_code(error: &KernelError) -> ErrorCode {
    convert::error_code(error.code())
}

fn query_error_code(error: &query::QueryError) -> ErrorCode {
    convert::error_code(error.code())
}

fn unavailable(message: String) -> WireError {
    WireError {
        code: ErrorCode::Unavailable,
        message,
    }
}

fn bad_request(message: String) -> WireError {
    WireError {
        code: ErrorCode::BadRequest,
        message,
    }
}

fn internal(message: String) -> WireError {
    tracing::error!(%message, "internal error");
    WireError {
        code: ErrorCode::Internal,
        message,
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos() as u64)
        .unwrap_or(0)
}

/// Opens one partition's log with its keys; a message if recovery did something.
fn open_partition(
    layout: &Layout,
    master: &MasterKey,
    node_key: &Arc<NodeKey>,
    config: &LogConfig,
    tenant: TenantId,
) -> anyhow::Result<(PartitionLog, TenantKeys, Option<String>)> {
    let tenant_dir = layout.tenant_dir(tenant);
    let log_dir = layout.log_dir(tenant);
    std::fs::create_dir_all(&log_dir)
        .with_context(|| format!("cannot create {}", log_dir.display()))?;
    let keys = tenant_keys(master, tenant, &tenant_dir, &log_dir)?;
    let (log, recovery) = PartitionLog::open(
        &log_dir,
        tenant,
        keys.ring(),
        node_key.clone(),
        config.clone(),
    )
    .with_context(|| format!("refusing to serve partition {tenant}: its log cannot be opened"))?;
    let note = recovery
        .truncated()
        .then(|| format!("partition {tenant}: {recovery}"));
    if let Some(note) = &note {
        tracing::warn!("{note}");
    }
    Ok((log, keys, note))
}

/// Loads a partition's data keys, creating them for a partition whose log is empty.
fn tenant_keys(
    master: &MasterKey,
    tenant: TenantId,
    tenant_dir: &Path,
    log_dir: &Path,
) -> anyhow::Result<TenantKeys> {
    if keys::key_file_path(tenant_dir).exists() {
        return TenantKeys::load(master, tenant, tenant_dir);
    }
    let log_is_empty = std::fs::read_dir(log_dir)
        .with_context(|| format!("cannot list {}", log_dir.display()))?
        .next()
        .is_none();
    if !log_is_empty {
        bail!(
            "partition {tenant} has a log but no key file {}: its data cannot be read (restore the file from a backup)",
            keys::key_file_path(tenant_dir).display()
        );
    }
    TenantKeys::create(master, tenant, tenant_dir)
}

/// Changes `tenant`'s key store (durably) and hands the new ring to its log.
fn change_keys(
    keys: &mut BTreeMap<TenantId, TenantKeys>,
    logs: &mut BTreeMap<TenantId, PartitionLog>,
    tenant: TenantId,
    change: impl FnOnce(&mut TenantKeys) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let keys = keys
        .get_mut(&tenant)
        .with_context(|| format!("partition {tenant} has no keys"))?;
    change(keys)?;
    logs.get_mut(&tenant)
        .with_context(|| format!("partition {tenant} has no log"))?
        .set_keys(keys.ring());
    Ok(())
}

/// A crash between an erasure record becoming durable and its keys being destroyed leaves
/// the keys: destroys them now, before anything reads (a subject's key, or every key of an
/// erased tenant). Returns a note per erasure finished.
fn finish_interrupted_erasures(
    catalog: &Catalog,
    keys: &mut BTreeMap<TenantId, TenantKeys>,
    logs: &mut BTreeMap<TenantId, PartitionLog>,
) -> anyhow::Result<Vec<String>> {
    let mut notes = Vec::new();
    for state in catalog.tenants() {
        let Some(held) = keys.get(&state.id) else {
            continue;
        };
        if let Some(erased_at) = state.erased_at {
            if !held.is_erased() {
                change_keys(keys, logs, state.id, |keys| keys.erase(erased_at))?;
                notes.push(format!(
                    "partition {}: destroyed the keys of tenant `{}`, whose erasure was interrupted by a crash",
                    state.id, state.name
                ));
            }
            continue;
        }
        let pending: Vec<u32> = state
            .subjects()
            .filter(|(_, subject)| {
                subject.erased_at.is_some() && !held.is_destroyed(subject.key_id)
            })
            .map(|(_, subject)| subject.key_id)
            .collect();
        for key_id in pending {
            change_keys(keys, logs, state.id, |keys| keys.destroy(key_id))?;
            notes.push(format!(
                "partition {}: destroyed key {key_id} of an erasure interrupted by a crash",
                state.id
            ));
        }
    }
    Ok(notes)
}

/// After an erasure (of a subject, or of the whole tenant): every version of every projection
/// of `tenant` in `catalog` loses its rows and starts over from position 0 (retired versions
/// too: their rows would keep what was erased, and a rollback rebuilds them), in the
/// erasure's own transaction, and the tenant's view-reset count moves so that a runner step
/// computed before cannot commit after. Projections see no event under a destroyed key, so
/// rebuilt views hold nothing derived from it, at any position; view queries wait for the
/// rebuild (see `erased_through`). For a tenant's erasure `catalog` is the one from before
/// it (the erased tenant has no projections any more).
fn reset_views(
    catalog: &Catalog,
    tenant: TenantId,
    write: &mut kimberlite_projections::ViewWrite<'_>,
) -> Result<(), kimberlite_kernel::StoreError> {
    write.reset_views(tenant)?;
    let Some(state) = catalog.tenant(tenant) else {
        return Ok(());
    };
    for projection in state.projections() {
        for version in &projection.versions {
            for table in &version.tables {
                kimberlite_kernel::RowStore::purge(write, tenant, table.id, &|_| true)?;
            }
            write.set_progress(
                tenant,
                version.version,
                &kimberlite_projections::ProjectionProgress::GENESIS,
            )?;
        }
    }
    Ok(())
}

/// The position of the tenant's last erasure, if any: view queries wait until the views have
/// been rebuilt past it, so none answers with rows derived from an erased subject.
fn erased_through(catalog: &Catalog, tenant: TenantId) -> Option<Position> {
    catalog
        .tenant(tenant)?
        .subjects()
        .filter_map(|(_, subject)| subject.erased_at)
        .max()
}

/// Re-applies the records of `log` from `from` to its end. Returns how many.
fn replay(
    kernel: &mut Kernel,
    rows: &mut kimberlite_projections::ViewWrite<'_>,
    tenant: TenantId,
    log: &PartitionLog,
    from: Position,
) -> anyhow::Result<u64> {
    /// Records read from the log per step of the replay.
    const REPLAY_BATCH_RECORDS: usize = 4_096;
    let reader = log.reader();
    let end = log.next_position();
    assert!(
        from <= end,
        "the view store is ahead of the log of partition {tenant}: {from} > {end}"
    );
    assert_eq!(
        kernel.next_position(tenant).max(from),
        from,
        "the kernel snapshot is ahead of the applied position of partition {tenant}"
    );
    let mut position = from;
    while position < end {
        let records = reader
            .read(position, REPLAY_BATCH_RECORDS)
            .with_context(|| {
                format!("cannot read partition {tenant} at position {position} for replay")
            })?;
        assert!(
            !records.is_empty(),
            "the log reader returned nothing before the end"
        );
        for record in &records {
            assert_eq!(record.header.position, position);
            kernel.apply_record(tenant, record, rows).with_context(|| {
                format!("cannot replay partition {tenant} at position {position}")
            })?;
            position += 1;
        }
    }
    Ok(end - from)
}

/// The single writer: owns the kernel and the logs.
struct Writer {
    shared: Arc<Shared>,
    kernel: Kernel,
    logs: BTreeMap<TenantId, PartitionLog>,
    /// Each partition's keys; a change is stored before a record that needs it is appended.
    keys: BTreeMap<TenantId, TenantKeys>,
    master: MasterKey,
    node_key: Arc<NodeKey>,
    log_config: LogConfig,
    batches_since_durable: u32,
    last_durable: Instant,
}

impl Writer {
    fn run(mut self, jobs: &Receiver<WriteJob>) {
        loop {
            let first = match jobs.recv_timeout(Duration::from_millis(VIEW_DURABLE_INTERVAL_MS)) {
                Ok(job) => job,
                Err(RecvTimeoutError::Timeout) => {
                    if let Err(error) = self.flush_views_if_due(true) {
                        self.fail(
                            &format!("cannot make the view store durable: {error:#}"),
                            Vec::new(),
                        );
                        return;
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut batch = vec![first];
            while batch.len() < BATCH_JOBS_MAX {
                match jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            if let Err((error, batch)) = self.run_batch(batch) {
                self.fail(&error, batch);
                return;
            }
        }
        self.close();
    }

    /// Stops taking writes after an I/O failure: the kernel may be ahead of what is
    /// durable, so only a restart (which recovers from the logs) may write again.
    fn fail(&self, error: &str, batch: Vec<WriteJob>) {
        tracing::error!(%error, "the writer stopped; writes are refused until the node restarts");
        let message =
            format!("writes are unavailable after a storage failure ({error}); restart the node");
        *self.shared.failure.lock().expect("failure lock") = Some(message.clone());
        for job in batch {
            let _ = job.reply.send(Err(unavailable(message.clone())));
        }
    }

    fn close(mut self) {
        let result = (|| -> anyhow::Result<()> {
            self.flush_views_if_due(true)?;
            for (tenant, log) in std::mem::take(&mut self.logs) {
                log.close()
                    .with_context(|| format!("cannot close the log of partition {tenant}"))?;
            }
            Ok(())
        })();
        match result {
            Ok(()) => tracing::info!("writer stopped cleanly; checkpoints signed"),
            Err(error) => tracing::error!("{error:#}"),
        }
    }

    fn flush_views_if_due(&mut self, force: bool) -> anyhow::Result<()> {
        if self.batches_since_durable == 0 {
            return Ok(());
        }
        let due = force
            || self.batches_since_durable >= VIEW_DURABLE_BATCHES_MAX
            || self.last_durable.elapsed() >= Duration::from_millis(VIEW_DURABLE_INTERVAL_MS);
        if due {
            let transaction = self.shared.views.begin()?;
            transaction.commit(true)?;
            self.batches_since_durable = 0;
            self.last_durable = Instant::now();
        }
        Ok(())
    }

    /// One group commit. On a storage error returns it with the jobs not yet answered.
    fn run_batch(&mut self, batch: Vec<WriteJob>) -> Result<(), (String, Vec<WriteJob>)> {
        let timestamp_ns = now_ns();
        // A handle of our own: the transaction borrows it, not `self`.
        let shared = self.shared.clone();
        let mut transaction = match shared.views.begin() {
            Ok(transaction) => transaction,
            Err(error) => return Err((format!("cannot begin a view transaction: {error}"), batch)),
        };
        let mut pending: BTreeMap<TenantId, Vec<NewRecord>> = BTreeMap::new();
        let mut replies = Vec::with_capacity(batch.len());
        let mut catalog_changed = false;
        let mut failure = None;
        // Subject keys to destroy once the erasure records are durable (destroying first
        // and crashing would shred data with no record saying why).
        let mut erasures: Vec<(TenantId, u32)> = Vec::new();
        // Tenants whose keys all go once their erasure record is durable, with its position.
        let mut tenant_erasures: Vec<(TenantId, Position)> = Vec::new();
        for job in &batch {
            let mut written = Written {
                outcomes: Vec::new(),
                rows_affected: 0,
                positions: None,
            };
            let mut job_error = None;
            for command in &job.commands {
                let mut command = command.clone();
                command.timestamp_ns = timestamp_ns;
                let effects = match self.kernel.execute(&command, &mut transaction) {
                    Ok(effects) => effects,
                    Err(KernelError::Store(error)) => {
                        failure = Some(format!("the view store failed: {error}"));
                        break;
                    }
                    Err(error) => {
                        job_error = Some(kernel_error(&error));
                        break;
                    }
                };
                let mut written_here = 0u64;
                for (tenant, record) in effects.records {
                    if tenant == command.tenant {
                        written_here += 1;
                    }
                    // A rotated data key or a new subject's key: created (and stored)
                    // before the first record under it is appended.
                    if failure.is_none()
                        && let Err(error) = self.add_key(tenant, record.key_id)
                    {
                        failure = Some(format!("{error:#}"));
                    }
                    pending.entry(tenant).or_default().push(record);
                }
                if written_here > 0 {
                    let last = effects.first_position + written_here - 1;
                    written.positions = Some(match written.positions {
                        Some((first, _)) => (first, last),
                        None => (effects.first_position, last),
                    });
                }
                match &effects.outcome {
                    Outcome::RowsAffected { count } => written.rows_affected += count,
                    Outcome::TenantCreated { tenant, .. } => {
                        catalog_changed = true;
                        if let Err(error) = self.open_new_tenant(*tenant) {
                            failure = Some(format!(
                                "cannot create the log of tenant {tenant}: {error:#}"
                            ));
                        }
                    }
                    Outcome::SubjectErased { key_id, .. } => {
                        erasures.push((effects.partition, *key_id));
                        if let Err(error) =
                            reset_views(self.kernel.catalog(), effects.partition, &mut transaction)
                        {
                            failure = Some(format!("the view store failed: {error}"));
                        }
                    }
                    Outcome::TenantErased { tenant, .. } => {
                        catalog_changed = true;
                        tenant_erasures.push((*tenant, effects.first_position));
                        // The views' definitions left the kernel's catalog with the
                        // tenant; the published one (before this batch) still has them.
                        let before = shared.catalog.read().expect("catalog lock").clone();
                        if let Err(error) = reset_views(&before, *tenant, &mut transaction) {
                            failure = Some(format!("the view store failed: {error}"));
                        }
                    }
                    Outcome::TokenCreated { .. }
                    | Outcome::TableCreated { .. }
                    | Outcome::TableDropped { .. }
                    | Outcome::ProjectionDeployed { .. }
                    | Outcome::ProjectionActivated { .. }
                    | Outcome::ProjectionFaulted { .. }
                    | Outcome::ProjectionRolledBack { .. }
                    | Outcome::PolicyDeployed { .. }
                    | Outcome::PolicyRolledBack { .. }
                    | Outcome::AccessChanged { .. } => {
                        catalog_changed = true;
                    }
                    Outcome::Appended { .. }
                    | Outcome::AccessRecorded
                    | Outcome::KeyRotated { .. }
                    | Outcome::Skipped { .. } => {}
                    Outcome::QuotaSet { .. } => catalog_changed = true,
                }
                written.outcomes.push(effects.outcome);
                if failure.is_some() {
                    break;
                }
            }
            if failure.is_some() {
                break;
            }
            replies.push(match job_error {
                Some(error) => Err(error),
                None => Ok(written),
            });
        }
        if let Some(failure) = failure {
            return Err((failure, batch));
        }
        if let Err(error) = self.make_durable(&pending, &mut transaction) {
            return Err((error, batch));
        }
        for (tenant, key_id) in erasures {
            if let Err(error) = self.destroy_key(tenant, key_id) {
                return Err((format!("{error:#}"), batch));
            }
        }
        for (tenant, erased_at) in tenant_erasures {
            if let Err(error) = self.change_keys(tenant, |keys| keys.erase(erased_at)) {
                return Err((format!("{error:#}"), batch));
            }
        }
        if let Err(error) = transaction.set_kernel_snapshot(&self.kernel.snapshot()) {
            return Err((format!("cannot store the kernel snapshot: {error}"), batch));
        }
        self.batches_since_durable += 1;
        let durable = self.batches_since_durable >= VIEW_DURABLE_BATCHES_MAX
            || self.last_durable.elapsed() >= Duration::from_millis(VIEW_DURABLE_INTERVAL_MS);
        if let Err(error) = transaction.commit(durable) {
            return Err((format!("cannot commit the view store: {error}"), batch));
        }
        if durable {
            self.batches_since_durable = 0;
            self.last_durable = Instant::now();
        }
        if catalog_changed {
            *self.shared.catalog.write().expect("catalog lock") =
                Arc::new(self.kernel.catalog().clone());
        }
        {
            let (lock, signal) = &self.shared.batches;
            *lock.lock().expect("batches lock") += 1;
            signal.notify_all();
        }
        for (job, reply) in batch.into_iter().zip(replies) {
            // A client that went away no longer needs its answer; its write stands.
            let _ = job.reply.send(reply);
        }
        Ok(())
    }

    /// Appends every pending record (one write per partition) and syncs each touched
    /// partition once: the group commit.
    fn make_durable(
        &mut self,
        pending: &BTreeMap<TenantId, Vec<NewRecord>>,
        transaction: &mut kimberlite_projections::ViewWrite<'_>,
    ) -> Result<(), String> {
        for (tenant, records) in pending {
            let log = self.logs.get_mut(tenant).unwrap_or_else(|| {
                panic!("the kernel wrote to partition {tenant}, which has no open log")
            });
            let expected = self.kernel.next_position(*tenant) - records.len() as u64;
            let positions = log
                .append(records)
                .map_err(|error| format!("cannot append to partition {tenant}: {error}"))?;
            assert_eq!(
                positions.start, expected,
                "log and kernel disagree on positions of partition {tenant}"
            );
        }
        let touched: BTreeSet<TenantId> = pending.keys().copied().collect();
        for tenant in touched {
            let log = self.logs.get_mut(&tenant).expect("opened above");
            let end = log
                .sync()
                .map_err(|error| format!("cannot sync partition {tenant}: {error}"))?;
            assert_eq!(end, self.kernel.next_position(tenant));
            transaction
                .set_applied(tenant, end)
                .map_err(|error| format!("cannot record the applied position: {error}"))?;
        }
        Ok(())
    }

    /// Destroys key `key_id` of `tenant` (crypto-shredding) in its key file and its log's ring.
    fn destroy_key(&mut self, tenant: TenantId, key_id: u32) -> anyhow::Result<()> {
        self.change_keys(tenant, |keys| keys.destroy(key_id))
    }

    /// Makes sure `tenant` holds key `key_id`: creates and stores it if new and gives it to
    /// the partition's log, before any record encrypted under it is appended.
    fn add_key(&mut self, tenant: TenantId, key_id: u32) -> anyhow::Result<()> {
        if self.keys.get(&tenant).is_some_and(|keys| keys.has(key_id)) {
            return Ok(());
        }
        self.change_keys(tenant, |keys| keys.add_key(key_id))
    }

    /// Changes `tenant`'s key store (durably) and hands the new ring to its log.
    fn change_keys(
        &mut self,
        tenant: TenantId,
        change: impl FnOnce(&mut TenantKeys) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        change_keys(&mut self.keys, &mut self.logs, tenant, change)
    }

    fn open_new_tenant(&mut self, tenant: TenantId) -> anyhow::Result<()> {
        let (log, keys, _) = open_partition(
            &self.shared.layout,
            &self.master,
            &self.node_key,
            &self.log_config,
            tenant,
        )?;
        assert_eq!(log.next_position(), 0, "a new tenant's log must be empty");
        self.shared
            .readers
            .write()
            .expect("readers lock")
            .insert(tenant, log.reader());
        self.logs.insert(tenant, log);
        self.keys.insert(tenant, keys);
        Ok(())
    }
}
