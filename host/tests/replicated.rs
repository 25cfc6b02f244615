//! The kernel as a VSR state machine (`kimberlite::replicated`).
//!
//! First without a network: a replica restored from a checkpoint re-commits the ops after it
//! with the same replies and the same log bytes as a replica that never stopped. Then three
//! real `ReplicaDriver`s on loopback (mutual TLS with pinned certificates, as in the consensus
//! crate's loopback test), each with its own `KernelStateMachine` in its own directory: a
//! client writes tenants, tables, rows and events through the primary, the primary crashes,
//! writing goes on through the new primary, the old one restarts from its data and catches up,
//! and in the end every replica's tenant logs are byte-identical, its kernel equal, its tables
//! equal and `kimberlite verify` passes on its data directory.
//!
//! Outcomes are asserted, never timings: every wait has a generous bound and fails with what it
//! was waiting for.

#![allow(non_upper_case_globals)]

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::RwLock;
use std::time::Duration;

use kimberlite::replicated::{
    ClusterKeys, ClusterSecret, CommitReply, KernelStateMachine, LogFetcher, ReplicatedOptions,
    ReplyOutcome, Written, decode_command, encode_command,
};
use kimberlite_consensus::Config;
use kimberlite_consensus::StateMachine;
use kimberlite_consensus::driver::{
    DriverConfig, DriverStatus, ReplicaDriver, Reply, StartMode, SubmitError,
};
use kimberlite_consensus::transport::{CertificateFingerprint, ReplicaIdentity};
use kimberlite_kernel::{AppendEvent, Command, CommandBody, SYSTEM_TENANT, TenantId, Value};
use kimberlite_log::LogConfig;

/// Bound on any single wait of these tests.
const wait_max: Duration = Duration::from_secs(60);
/// How long a client waits for one replica before trying another.
const attempt_timeout: Duration = Duration::from_secs(3);
const cluster_id: u128 = 0x6b69_6d62_7673_7231;
/// Ops between VSR checkpoints in the cluster test: small enough that the run crosses several.
const checkpoint_interval_ops: u64 = 16;

fn keys() -> ClusterKeys {
    ClusterKeys::new(cluster_id, ClusterSecret::new([7; 32]))
}

/// Small segments, so the logs span several files and their boundaries are compared too.
fn log_config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 4 << 10,
        ..LogConfig::default()
    }
}

fn options(data_dir: &Path) -> ReplicatedOptions {
    ReplicatedOptions {
        node_key_dir: None,
        data_dir: data_dir.to_path_buf(),
        log: log_config(),
        keys: keys(),
    }
}

fn command(tenant: TenantId, body: CommandBody) -> Command {
    Command {
        tenant,
        // Replaced by the committed op's: these must not matter.
        client_id: 99,
        request: 99,
        timestamp_ns: 99,
        principal: "admin".into(),
        reason: "replication test".into(),
        body,
    }
}

fn create_tenant(name: &str) -> Command {
    command(
        SYSTEM_TENANT,
        CommandBody::CreateTenant {
            name: name.into(),
            region: None,
        },
    )
}

fn sql(tenant: TenantId, text: &str) -> Command {
    command(
        tenant,
        CommandBody::Sql {
            sql: text.into(),
            params: Vec::new(),
        },
    )
}

fn append(tenant: TenantId, stream: &str, count: usize) -> Command {
    let events = (0..count)
        .map(|index| AppendEvent {
            subject: None,
            stream: stream.into(),
            event_type: "Deposited".into(),
            payload: format!("{{\"amount\": {index}}}").into_bytes(),
        })
        .collect();
    command(tenant, CommandBody::Append { events })
}

fn insert(tenant: TenantId, id: i64) -> Command {
    sql(
        tenant,
        &format!("INSERT INTO patients VALUES ({id}, 'patient {id}', 'eu')"),
    )
}

/// Every `*.seg` file of every partition, by path relative to the data directory.
fn log_files(data_dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    for partition in kimberlite::verify::partitions(data_dir).unwrap() {
        for entry in std::fs::read_dir(&partition.log_dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|extension| extension == "seg") {
                let relative = path.strip_prefix(data_dir).unwrap().to_path_buf();
                files.insert(relative, std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

/// Every current row of every table of every tenant, from the view store.
fn table_rows(machine: &KernelStateMachine) -> BTreeMap<(TenantId, String), Vec<Vec<Value>>> {
    let read = machine.views().read().unwrap();
    let catalog = machine.catalog();
    let mut tables = BTreeMap::new();
    for tenant in catalog.tenants() {
        for table in catalog.tables(tenant.id, None) {
            let mut rows = Vec::new();
            read.scan(tenant.id, table.id, None, &mut |row| {
                rows.push(row);
                true
            })
            .unwrap();
            tables.insert((tenant.id, table.name.clone()), rows);
        }
    }
    tables
}

fn written(reply: &CommitReply) -> &Written {
    match reply {
        CommitReply::Written(written) => written,
        CommitReply::Refused(refusal) => panic!("refused: {refusal:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Without a network.

/// The ops of the restart test: a tenant, a table, rows, events; after op `checkpoint_op` more
/// of each, including what only the state *at that op* decides (a duplicate key, an UPDATE and
/// a DELETE over a scan, a second tenant).
fn workload() -> Vec<Command> {
    let clinic = 1;
    let mut ops = vec![
        create_tenant("clinic"),
        sql(
            clinic,
            "CREATE TABLE patients (id BIGINT PRIMARY KEY, name TEXT NOT NULL, region TEXT)",
        ),
    ];
    ops.extend((1..=6).map(|id| insert(clinic, id)));
    ops.push(append(clinic, "deposits", 3));
    ops.push(insert(clinic, 7));
    // The checkpoint is taken here, after op 10.
    ops.push(insert(clinic, 3)); // refused: duplicate key, as of the op
    ops.push(sql(
        clinic,
        "UPDATE patients SET region = 'us' WHERE id > 4",
    ));
    ops.push(sql(clinic, "DELETE FROM patients WHERE id = 2"));
    ops.push(insert(clinic, 2)); // accepted: deleted one op before
    ops.push(append(clinic, "deposits", 2));
    ops.push(create_tenant("bank"));
    ops.push(sql(
        2,
        "CREATE TABLE accounts (id BIGINT PRIMARY KEY, owner TEXT NOT NULL)",
    ));
    ops.push(sql(2, "INSERT INTO accounts VALUES (1, 'ada'), (2, 'bob')"));
    ops.push(sql(clinic, "DROP TABLE missing")); // refused
    ops
}

const checkpoint_op: u64 = 10;

fn commit(machine: &mut KernelStateMachine, op: u64, command: &Command) -> CommitReply {
    let bytes = machine.commit(
        op,
        1_000_000 + op * 1_000,
        0xc1,
        op,
        &encode_command(command),
    );
    CommitReply::decode(&bytes).unwrap()
}

#[derive(Debug, Clone, Copy)]
enum Restart {
    /// The replica restores its checkpoint; its logs and view store hold ops past it.
    FromCheckpoint,
    /// Likewise, but the view store file is gone: rebuilt from the logs.
    ViewsLost,
    /// No checkpoint was written before the crash: the journal is committed from op 1.
    NoCheckpoint,
}

#[test]
fn a_restarted_replica_recommits_the_ops_after_its_checkpoint_identically() {
    let ops = workload();
    let extra = [insert(1, 50), append(2, "ledger", 4), insert(1, 2)];
    for restart in [
        Restart::FromCheckpoint,
        Restart::ViewsLost,
        Restart::NoCheckpoint,
    ] {
        let directory = tempfile::tempdir().unwrap();
        let steady_dir = directory.path().join("steady");
        let crashed_dir = directory.path().join("crashed");
        let mut steady = KernelStateMachine::open(options(&steady_dir)).unwrap();
        let mut crashed = KernelStateMachine::open(options(&crashed_dir)).unwrap();
        let mut replies = Vec::new();
        let mut snapshot = None;
        for (index, command) in ops.iter().enumerate() {
            let op = index as u64 + 1;
            let reply = commit(&mut steady, op, command);
            assert_eq!(commit(&mut crashed, op, command), reply, "op {op}");
            replies.push(reply);
            if op == checkpoint_op {
                let bytes = steady.snapshot();
                assert_eq!(
                    crashed.snapshot(),
                    bytes,
                    "checkpoints differ across replicas"
                );
                snapshot = Some(bytes);
            }
        }
        assert!(
            matches!(replies[10], CommitReply::Refused(_)),
            "{replies:?}"
        );
        assert!(
            matches!(replies[18], CommitReply::Refused(_)),
            "{replies:?}"
        );
        assert_eq!(
            written(&replies[11]).outcome,
            ReplyOutcome::RowsAffected { count: 3 }
        );
        // The crash: nothing is closed (the view store's own drop still commits what redb
        // holds; a real crash loses that tail, which FromCheckpoint covers from the other side).
        drop(crashed);
        if let Restart::ViewsLost = restart {
            std::fs::remove_file(crashed_dir.join("views.redb")).unwrap();
        }
        let mut restarted = KernelStateMachine::open(options(&crashed_dir)).unwrap();
        let from = match restart {
            Restart::FromCheckpoint | Restart::ViewsLost => {
                restarted.restore(snapshot.as_ref().unwrap());
                checkpoint_op
            }
            Restart::NoCheckpoint => 0,
        };
        let report = restarted.recovery_report().clone();
        assert!(report.records_to_verify > 0, "{restart:?}: {report:?}");
        assert_eq!(
            report.views_rebuilt,
            matches!(restart, Restart::ViewsLost),
            "{restart:?}: {report:?}"
        );
        for (index, command) in ops.iter().enumerate().skip(from as usize) {
            let op = index as u64 + 1;
            assert_eq!(
                commit(&mut restarted, op, command),
                replies[index],
                "{restart:?}: op {op} replied otherwise when committed again"
            );
        }
        for (index, command) in extra.iter().enumerate() {
            let op = ops.len() as u64 + index as u64 + 1;
            let reply = commit(&mut steady, op, command);
            assert_eq!(
                commit(&mut restarted, op, command),
                reply,
                "{restart:?}: op {op}"
            );
        }
        assert_eq!(restarted.kernel(), steady.kernel(), "{restart:?}");
        assert_eq!(restarted.snapshot(), steady.snapshot(), "{restart:?}");
        assert_eq!(table_rows(&restarted), table_rows(&steady), "{restart:?}");
        let rows = table_rows(&steady);
        assert_eq!(rows[&(1, "patients".to_string())].len(), 8, "{rows:?}");
        restarted.close().unwrap();
        steady.close().unwrap();
        let files = log_files(&steady_dir);
        assert!(files.len() > 2, "small segments make several files");
        assert_eq!(log_files(&crashed_dir), files, "{restart:?}: logs differ");
        for dir in [&steady_dir, &crashed_dir] {
            assert!(kimberlite::verify::run(dir, None, false).unwrap());
        }
    }
}

/// Fetches from another replica's logs in this process, optionally flipping one byte of
/// every batch (a lying or damaged peer).
struct LocalPeer {
    readers: BTreeMap<TenantId, kimberlite_log::LogReader>,
    corrupt: bool,
}

impl LogFetcher for LocalPeer {
    fn fetch(
        &mut self,
        tenant: TenantId,
        from: u64,
        end: u64,
    ) -> anyhow::Result<kimberlite_log::FrameBatch> {
        let reader = self
            .readers
            .get(&tenant)
            .ok_or_else(|| anyhow::anyhow!("no partition {tenant}"))?;
        // Small batches, so a transfer takes several.
        let mut batch = reader.read_frames(from..end, 512)?;
        if self.corrupt && !batch.bytes.is_empty() {
            let middle = batch.bytes.len() / 2;
            batch.bytes[middle] ^= 0x20;
        }
        Ok(batch)
    }
}

/// A replica whose logs end before a checkpoint it must install (state transfer, or a lost
/// disk) fetches the missing records from a peer, checks them and goes on as if it had
/// committed those ops itself; without a peer, or with a peer whose records do not check, it
/// stops with a message saying so rather than diverge.
#[test]
fn a_replica_behind_a_checkpoint_fetches_the_records_from_a_peer() {
    let ops = workload();
    let directory = tempfile::tempdir().unwrap();
    let mut ahead = KernelStateMachine::open(options(&directory.path().join("ahead"))).unwrap();
    let open_behind = |name: &str| {
        let mut behind = KernelStateMachine::open(options(&directory.path().join(name))).unwrap();
        for (index, command) in ops.iter().enumerate().take(checkpoint_op as usize / 2) {
            commit(&mut behind, index as u64 + 1, command);
        }
        behind
    };
    let mut replies = Vec::new();
    for (index, command) in ops.iter().enumerate().take(checkpoint_op as usize) {
        replies.push(commit(&mut ahead, index as u64 + 1, command));
    }
    let transferred = ahead.snapshot();
    let readers: BTreeMap<TenantId, kimberlite_log::LogReader> =
        ahead.readers().into_iter().collect();

    let restore_fails = |mut behind: KernelStateMachine| {
        let stopped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            behind.restore(&transferred);
        }))
        .expect_err("the restore stops the replica");
        stopped
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default()
    };
    let message = restore_fails(open_behind("alone"));
    assert!(message.contains("no peers to fetch them from"), "{message}");
    let mut lied_to = open_behind("lied-to");
    lied_to.set_fetcher(Box::new(LocalPeer {
        readers: readers.clone(),
        corrupt: true,
    }));
    let message = restore_fails(lied_to);
    assert!(
        message.contains("fetched from a peer were refused"),
        "{message}"
    );

    let mut behind = open_behind("behind");
    behind.set_fetcher(Box::new(LocalPeer {
        readers,
        corrupt: false,
    }));
    behind.restore(&transferred);
    assert!(behind.recovery_report().records_fetched > 0);
    for (index, command) in ops.iter().enumerate().skip(checkpoint_op as usize) {
        let op = index as u64 + 1;
        assert_eq!(
            commit(&mut behind, op, command),
            commit(&mut ahead, op, command)
        );
    }
    assert_eq!(behind.kernel(), ahead.kernel());
    let (behind_dir, ahead_dir) = (
        behind.data_dir().to_path_buf(),
        ahead.data_dir().to_path_buf(),
    );
    behind.close().unwrap();
    ahead.close().unwrap();
    assert_eq!(log_files(&behind_dir), log_files(&ahead_dir));
    assert!(kimberlite::verify::run(&behind_dir, None, false).unwrap());
}

/// Re-committing after a restart compares what the kernel produces with what the log already
/// holds: a log that contradicts the committed history (nondeterminism, or another history)
/// stops the replica instead of being extended.
#[test]
fn a_log_that_contradicts_the_committed_history_stops_the_replica() {
    let ops = workload();
    let directory = tempfile::tempdir().unwrap();
    let data_dir = directory.path().join("replica");
    let mut machine = KernelStateMachine::open(options(&data_dir)).unwrap();
    let mut snapshot = Vec::new();
    for (index, command) in ops.iter().enumerate() {
        let op = index as u64 + 1;
        commit(&mut machine, op, command);
        if op == checkpoint_op {
            snapshot = machine.snapshot();
        }
    }
    drop(machine);
    let mut restarted = KernelStateMachine::open(options(&data_dir)).unwrap();
    restarted.restore(&snapshot);
    let other = insert(1, 99);
    let stopped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        commit(&mut restarted, checkpoint_op + 1, &other);
    }))
    .expect_err("a record unlike the log's stops the replica");
    let message = stopped
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        message.contains("the log contradicts the committed history"),
        "{message}"
    );
}

/// Commands round-trip through their replicated encoding, stamped with the op's time and
/// session; bytes that are not a command are refused without touching anything.
#[test]
fn commands_round_trip_and_garbage_is_refused() {
    let original = append(3, "s", 2);
    // The client's own request number travels; without one, the session's is recorded.
    for (own, recorded) in [(original.request, original.request), (0, 7)] {
        let command = Command {
            request: own,
            ..original.clone()
        };
        let decoded = decode_command(&encode_command(&command), 5, 6, 7).unwrap();
        assert_eq!(
            decoded,
            Command {
                timestamp_ns: 5,
                client_id: 6,
                request: recorded,
                ..original.clone()
            }
        );
    }
    let directory = tempfile::tempdir().unwrap();
    let mut machine = KernelStateMachine::open(options(directory.path())).unwrap();
    for (op, garbage) in [&b""[..], &[1, 0xc1][..], &[9, 1, 2][..]]
        .into_iter()
        .enumerate()
    {
        let op = op as u64 + 1;
        let reply = CommitReply::decode(&machine.commit(op, op, 1, op, garbage)).unwrap();
        assert!(matches!(reply, CommitReply::Refused(_)), "{reply:?}");
    }
    // (Compared as snapshots: a replica's kernel also refuses subject keys, a setting.)
    assert_eq!(
        machine.kernel().snapshot(),
        kimberlite_kernel::Kernel::new().snapshot()
    );
}

// ---------------------------------------------------------------------------------------------
// Three replicas on loopback.

fn identity() -> ReplicaIdentity {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    ReplicaIdentity {
        certificate_der: generated.cert.der().to_vec(),
        private_key_der: generated.signing_key.serialize_der(),
    }
}

/// Distinct free UDP ports on loopback: bind them all to port 0, note them, release them.
fn free_addresses(count: usize) -> Vec<SocketAddr> {
    let sockets: Vec<std::net::UdpSocket> = (0..count)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    sockets
        .iter()
        .map(|socket| socket.local_addr().unwrap())
        .collect()
}

/// Poll `condition` every 20 ms until it holds; fail with `what` after [`wait_max`].
async fn wait_until(what: &str, mut condition: impl FnMut() -> Option<String>) {
    let deadline = tokio::time::Instant::now() + wait_max;
    loop {
        match condition() {
            None => return,
            Some(state) if tokio::time::Instant::now() >= deadline => {
                panic!("waited {wait_max:?} for {what}; state: {state}")
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

type ReplyFuture = Pin<Box<dyn Future<Output = Result<Reply, SubmitError>> + Send>>;

struct Cluster {
    configs: Vec<DriverConfig>,
    /// Each replica's state machine directory (its VSR files are in `vsr/` below it).
    data_dirs: Vec<PathBuf>,
    drivers: Vec<RwLock<Option<ReplicaDriver<KernelStateMachine>>>>,
    _directory: tempfile::TempDir,
}

impl Cluster {
    fn start(replica_count: u8) -> Cluster {
        let directory = tempfile::tempdir().unwrap();
        let identities: Vec<ReplicaIdentity> = (0..replica_count).map(|_| identity()).collect();
        let fingerprints: Vec<CertificateFingerprint> = identities
            .iter()
            .map(ReplicaIdentity::fingerprint)
            .collect();
        let addresses = free_addresses(replica_count as usize);
        let data_dirs: Vec<PathBuf> = (0..replica_count)
            .map(|replica| directory.path().join(format!("replica-{replica}")))
            .collect();
        let configs: Vec<DriverConfig> = (0..replica_count)
            .map(|replica| {
                let mut protocol = Config::new(cluster_id, replica_count, replica);
                // Small enough that the run crosses several checkpoints (so restarts restore
                // one), and formatting stays quick.
                protocol.journal_slots = 4 * checkpoint_interval_ops;
                protocol.checkpoint_interval_ops = checkpoint_interval_ops;
                DriverConfig {
                    protocol,
                    addresses: addresses.clone(),
                    identity: identities[replica as usize].clone(),
                    fingerprints: fingerprints.clone(),
                    data_dir: data_dirs[replica as usize].join("vsr"),
                    start: StartMode::Format,
                }
            })
            .collect();
        let drivers = configs
            .iter()
            .zip(&data_dirs)
            .map(|(config, data_dir)| {
                let machine = KernelStateMachine::open(options(data_dir)).unwrap();
                let driver = ReplicaDriver::start(config, machine)
                    .unwrap_or_else(|error| panic!("cannot start: {error}"));
                RwLock::new(Some(driver))
            })
            .collect();
        Cluster {
            configs,
            data_dirs,
            drivers,
            _directory: directory,
        }
    }

    fn statuses(&self) -> Vec<Option<DriverStatus>> {
        self.drivers
            .iter()
            .map(|driver| driver.read().unwrap().as_ref().map(ReplicaDriver::status))
            .collect()
    }

    fn primary(&self) -> Option<(u8, u64)> {
        self.statuses()
            .into_iter()
            .flatten()
            .filter(|status| status.accepting_requests)
            .max_by_key(|status| status.view)
            .map(|status| (status.replica, status.view))
    }

    /// Ask replica `target`; `None` if it is down.
    fn ask(&self, target: u8, client: u128, request: u64, command: &[u8]) -> Option<ReplyFuture> {
        let guard = self.drivers[target as usize].read().unwrap();
        let driver = guard.as_ref()?;
        Some(if request == 0 {
            let registered = driver.register(client);
            Box::pin(async move {
                registered.await.map(|session| Reply {
                    op: session,
                    view: 0,
                    body: Vec::new(),
                })
            })
        } else {
            Box::pin(driver.submit(client, request, command.to_vec()))
        })
    }

    /// What a client library does: send to the presumed primary, follow `NotPrimary` hints,
    /// and on an unknown outcome resubmit the same request number elsewhere.
    async fn call(&self, client: u128, request: u64, command: &[u8]) -> Reply {
        let count = self.drivers.len() as u8;
        let mut target = self.primary().map_or(0, |(primary, _)| primary);
        let deadline = tokio::time::Instant::now() + wait_max;
        let mut errors: Vec<String> = Vec::new();
        loop {
            assert!(
                tokio::time::Instant::now() < deadline,
                "client {client:x} request {request}: no reply within {wait_max:?}; last errors: \
                 {:?}; {:?}",
                &errors[errors.len().saturating_sub(5)..],
                self.statuses()
            );
            let Some(reply) = self.ask(target, client, request, command) else {
                errors.push(format!("replica {target} is down"));
                target = (target + 1) % count;
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            match tokio::time::timeout(attempt_timeout, reply).await {
                Ok(Ok(reply)) => return reply,
                Ok(Err(error)) => {
                    errors.push(error.to_string());
                    target = match error {
                        SubmitError::NotPrimary { primary, .. } if primary != target => primary,
                        SubmitError::OutcomeUnknown { primary, .. } if primary != target => primary,
                        SubmitError::NotPrimary { .. }
                        | SubmitError::OutcomeUnknown { .. }
                        | SubmitError::TimedOut { .. }
                        | SubmitError::Stopped { .. }
                        | SubmitError::Busy { .. } => (target + 1) % count,
                        other => panic!("client {client:x} request {request}: {other}"),
                    };
                    // While a view change runs every replica may refuse; do not spin.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(_elapsed) => {
                    errors.push(format!(
                        "replica {target}: no answer in {attempt_timeout:?}"
                    ));
                    target = (target + 1) % count;
                }
            }
        }
    }

    /// Crash replica `index`: drop its driver without a clean shutdown.
    async fn crash(&self, index: u8) {
        let driver = self.drivers[index as usize].write().unwrap().take();
        tokio::task::spawn_blocking(move || drop(driver))
            .await
            .unwrap();
    }

    /// Restart replica `index` from its data directories.
    async fn restart(&self, index: u8) {
        let mut config = self.configs[index as usize].clone();
        config.start = StartMode::Open;
        let data_dir = self.data_dirs[index as usize].clone();
        let driver = tokio::task::spawn_blocking(move || {
            let machine = KernelStateMachine::open(options(&data_dir)).unwrap();
            ReplicaDriver::start(&config, machine)
                .unwrap_or_else(|error| panic!("cannot restart replica {index}: {error}"))
        })
        .await
        .unwrap();
        *self.drivers[index as usize].write().unwrap() = Some(driver);
    }

    /// Waits until every replica is up, in normal status, and has applied the same last op.
    async fn converge(&self) -> u64 {
        wait_until("every replica to commit the same last op", || {
            let statuses = self.statuses();
            let first = statuses[0].as_ref().map(|status| status.commit_min);
            let converged = statuses.iter().all(|status| {
                status.as_ref().is_some_and(|status| {
                    !status.stopped
                        && status.commit_min == status.op
                        && Some(status.commit_min) == first
                })
            });
            (!converged).then(|| format!("{statuses:?}"))
        })
        .await;
        self.statuses()[0].as_ref().unwrap().commit_min
    }

    async fn shutdown(&self) -> Vec<KernelStateMachine> {
        let mut machines = Vec::new();
        for (index, driver) in self.drivers.iter().enumerate() {
            let driver = driver.write().unwrap().take().expect("running");
            let machine = tokio::task::spawn_blocking(move || driver.shutdown())
                .await
                .unwrap()
                .unwrap_or_else(|error| panic!("replica {index} failed: {error}"));
            machines.push(machine);
        }
        machines
    }
}

/// One client's session: registers, then numbers its requests.
struct Session {
    client: u128,
    request: u64,
}

impl Session {
    async fn open(cluster: &Cluster, client: u128) -> Session {
        cluster.call(client, 0, &[]).await;
        Session { client, request: 0 }
    }

    async fn run(&mut self, cluster: &Cluster, command: &Command) -> CommitReply {
        self.request += 1;
        let reply = cluster
            .call(self.client, self.request, &encode_command(command))
            .await;
        CommitReply::decode(&reply.body).unwrap()
    }

    /// Runs `command` and requires it to be written.
    async fn write(&mut self, cluster: &Cluster, command: &Command) -> Written {
        match self.run(cluster, command).await {
            CommitReply::Written(written) => written,
            CommitReply::Refused(refusal) => {
                panic!("request {} refused: {refusal:?}", self.request)
            }
        }
    }
}

/// The acceptance test of this increment: three replicas apply the same committed commands
/// and write byte-identical tenant logs, across a primary crash and its restart from disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_write_identical_tenant_logs_across_a_primary_crash_and_restart() {
    let cluster = Cluster::start(3);
    let mut session = Session::open(&cluster, 0xc11e47).await;

    let created = session.write(&cluster, &create_tenant("clinic")).await;
    let ReplyOutcome::TenantCreated { tenant: clinic, .. } = created.outcome else {
        panic!("{created:?}")
    };
    session
        .write(
            &cluster,
            &sql(
                clinic,
                "CREATE TABLE patients (id BIGINT PRIMARY KEY, name TEXT NOT NULL, region TEXT)",
            ),
        )
        .await;
    let mut next_id = 1;
    for round in 0..12 {
        let inserted = session.write(&cluster, &insert(clinic, next_id)).await;
        assert_eq!(inserted.rows_affected, 1);
        next_id += 1;
        if round % 3 == 0 {
            let appended = session.write(&cluster, &append(clinic, "visits", 2)).await;
            assert_eq!(appended.outcome, ReplyOutcome::Appended { count: 2 });
        }
    }
    // A refusal is an answer too, the same from every replica.
    let duplicate = session.run(&cluster, &insert(clinic, 1)).await;
    assert!(
        matches!(duplicate, CommitReply::Refused(_)),
        "{duplicate:?}"
    );
    let before_crash = cluster.converge().await;

    assert!(
        before_crash > checkpoint_interval_ops,
        "the primary has a checkpoint"
    );

    let (primary, view) = cluster.primary().expect("a primary");
    cluster.crash(primary).await;
    // FIXME(log shipping): stay below the cluster's next checkpoint while the old primary is
    // down. Past it, VSR may bring the restarted replica up by state transfer, which carries
    // the kernel but not the tenant logs, and the replica stops (see the module docs of
    // `kimberlite::replicated`; `a_replica_missing_log_records_stops_at_state_transfer`).
    let next_checkpoint = (before_crash / checkpoint_interval_ops + 1) * checkpoint_interval_ops;
    let budget = next_checkpoint - before_crash - 2;
    for round in 0..budget - 1 {
        if round % 4 == 0 {
            session.write(&cluster, &append(clinic, "visits", 3)).await;
        } else {
            session.write(&cluster, &insert(clinic, next_id)).await;
            next_id += 1;
        }
    }
    session
        .write(
            &cluster,
            &sql(clinic, "UPDATE patients SET region = 'us' WHERE id > 10"),
        )
        .await;
    let (new_primary, new_view) = cluster.primary().expect("a primary");
    assert!(new_primary != primary && new_view > view);

    cluster.restart(primary).await;
    // Two ops a round: well past two more checkpoints.
    let accounts = checkpoint_interval_ops + 2;
    let restarted = cluster.statuses()[primary as usize].clone().unwrap();
    assert!(
        restarted.checkpoint_op > 0,
        "restarts from a checkpoint: {restarted:?}"
    );
    let caught_up = cluster.converge().await;
    assert!(caught_up < next_checkpoint, "{caught_up}");
    let bank = {
        let created = session.write(&cluster, &create_tenant("bank")).await;
        let ReplyOutcome::TenantCreated { tenant, .. } = created.outcome else {
            panic!("{created:?}")
        };
        tenant
    };
    session
        .write(
            &cluster,
            &sql(
                bank,
                "CREATE TABLE accounts (id BIGINT PRIMARY KEY, owner TEXT NOT NULL)",
            ),
        )
        .await;
    // Now with every replica up.
    for round in 0..accounts {
        session.write(&cluster, &insert(clinic, next_id)).await;
        next_id += 1;
        session
            .write(
                &cluster,
                &sql(
                    bank,
                    &format!("INSERT INTO accounts VALUES ({round}, 'owner {round}')"),
                ),
            )
            .await;
    }
    session
        .write(&cluster, &sql(clinic, "DELETE FROM patients WHERE id = 2"))
        .await;
    let last = cluster.converge().await;
    assert!(
        last > caught_up + 2 * checkpoint_interval_ops,
        "{caught_up} then {last}"
    );

    let machines = cluster.shutdown().await;
    // The restarted replica's logs held records past its checkpoint: it compared them.
    let report = machines[primary as usize].recovery_report().clone();
    assert!(
        report.records_to_verify > 0 && !report.views_rebuilt,
        "{report:?}"
    );
    let reference = &machines[0];
    assert_eq!(reference.last_op(), last);
    let rows = table_rows(reference);
    assert_eq!(
        rows[&(clinic, "patients".to_string())].len() as i64,
        next_id - 2,
        "every acknowledged insert, less the deleted row"
    );
    assert_eq!(
        rows[&(bank, "accounts".to_string())].len(),
        accounts as usize
    );
    for (index, machine) in machines.iter().enumerate() {
        assert_eq!(machine.kernel(), reference.kernel(), "replica {index}");
        assert_eq!(machine.snapshot(), reference.snapshot(), "replica {index}");
        assert_eq!(table_rows(machine), rows, "replica {index}");
    }
    let data_dirs = cluster.data_dirs.clone();
    for machine in machines {
        machine.close().unwrap();
    }
    let files = log_files(&data_dirs[0]);
    assert!(
        files.keys().any(|path| path.starts_with("tenants")),
        "{files:?}"
    );
    for (index, data_dir) in data_dirs.iter().enumerate() {
        let replica_files = log_files(data_dir);
        assert_eq!(
            replica_files.keys().collect::<Vec<_>>(),
            files.keys().collect::<Vec<_>>(),
            "replica {index} has other segment files"
        );
        for (path, bytes) in &replica_files {
            assert!(
                bytes == &files[path],
                "replica {index}: {} differs from replica 0's",
                path.display()
            );
        }
        assert!(
            kimberlite::verify::run(data_dir, None, false).unwrap(),
            "kimberlite verify fails on replica {index}"
        );
    }
    eprintln!(
        "{} segment files identical on 3 replicas; replica {primary} crashed in view {view}, \
         restarted from checkpoint {} and caught up to op {caught_up}; {last} ops in all",
        files.len(),
        restarted.checkpoint_op
    );
}
