//! Real replicas over real QUIC on loopback: [`ReplicaDriver`]s with [`FileStorage`] in
//! temporary directories, mutual TLS with pinned certificates, a model state machine.
//!
//! Outcomes are asserted, never timings: every wait has a generous bound and fails with what it
//! was waiting for.

#![allow(non_upper_case_globals)]

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use kimberlite_consensus::Config;
use kimberlite_consensus::StateMachine;
use kimberlite_consensus::driver::{
    DriverConfig, DriverStatus, ReplicaDriver, Reply, StartMode, SubmitError,
};
use kimberlite_consensus::transport::{CertificateFingerprint, ReplicaIdentity};
use sha2::{Digest, Sha256};

/// Bound on any single wait of these tests.
const wait_max: Duration = Duration::from_secs(30);
/// How long a client waits for one replica before trying another.
const attempt_timeout: Duration = Duration::from_secs(3);

/// The model state machine: an append-only list of commands, hash-chained. The reply to a
/// command is its op and the chain hash after it, so a client can check what it was told
/// against every replica's history.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Log {
    entries: Vec<Entry>,
    head: [u8; 32],
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    op: u64,
    timestamp_ns: u64,
    client: u128,
    request: u64,
    command: Vec<u8>,
    hash: [u8; 32],
}

fn reply_body(op: u64, hash: &[u8; 32]) -> Vec<u8> {
    let mut body = op.to_le_bytes().to_vec();
    body.extend_from_slice(hash);
    body
}

impl StateMachine for Log {
    fn commit(
        &mut self,
        op: u64,
        timestamp_ns: u64,
        client: u128,
        request: u64,
        command: &[u8],
    ) -> Vec<u8> {
        if let Some(last) = self.entries.last() {
            assert!(op > last.op && timestamp_ns > last.timestamp_ns);
        }
        let mut hasher = Sha256::new();
        hasher.update(self.head);
        hasher.update(op.to_le_bytes());
        hasher.update(command);
        self.head = hasher.finalize().into();
        self.entries.push(Entry {
            op,
            timestamp_ns,
            client,
            request,
            command: command.to_vec(),
            hash: self.head,
        });
        reply_body(op, &self.head)
    }

    fn snapshot(&self) -> Vec<u8> {
        let mut bytes = self.head.to_vec();
        for entry in &self.entries {
            bytes.extend_from_slice(&entry.op.to_le_bytes());
            bytes.extend_from_slice(&entry.timestamp_ns.to_le_bytes());
            bytes.extend_from_slice(&entry.client.to_le_bytes());
            bytes.extend_from_slice(&entry.request.to_le_bytes());
            bytes.extend_from_slice(&entry.hash);
            bytes.extend_from_slice(&(entry.command.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&entry.command);
        }
        bytes
    }

    fn restore(&mut self, snapshot: &[u8]) {
        let mut rest = snapshot;
        let mut take = |count: usize| {
            let (head, tail) = rest.split_at(count);
            rest = tail;
            head.to_vec()
        };
        self.head = take(32).try_into().unwrap();
        self.entries.clear();
        let mut remaining = snapshot.len() - 32;
        while remaining > 0 {
            let op = u64::from_le_bytes(take(8).try_into().unwrap());
            let timestamp_ns = u64::from_le_bytes(take(8).try_into().unwrap());
            let client = u128::from_le_bytes(take(16).try_into().unwrap());
            let request = u64::from_le_bytes(take(8).try_into().unwrap());
            let hash = take(32).try_into().unwrap();
            let length = u32::from_le_bytes(take(4).try_into().unwrap()) as usize;
            let command = take(length);
            remaining -= 8 + 8 + 16 + 8 + 32 + 4 + length;
            self.entries.push(Entry {
                op,
                timestamp_ns,
                client,
                request,
                command,
                hash,
            });
        }
    }
}

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
    drivers: Vec<RwLock<Option<ReplicaDriver<Log>>>>,
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
        let configs: Vec<DriverConfig> = (0..replica_count)
            .map(|replica| {
                let mut protocol = Config::new(0x6b696d62, replica_count, replica);
                // Small enough that the run crosses several checkpoints, and formatting (one
                // fdatasync per slot half) stays quick.
                protocol.journal_slots = 64;
                protocol.checkpoint_interval_ops = 16;
                DriverConfig {
                    protocol,
                    addresses: addresses.clone(),
                    identity: identities[replica as usize].clone(),
                    fingerprints: fingerprints.clone(),
                    data_dir: directory.path().join(format!("replica-{replica}")),
                    start: StartMode::Format,
                }
            })
            .collect();
        let drivers = configs
            .iter()
            .map(|config| {
                let driver = ReplicaDriver::start(config, Log::default())
                    .unwrap_or_else(|error| panic!("cannot start: {error}"));
                RwLock::new(Some(driver))
            })
            .collect();
        Cluster {
            configs,
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
                 {:?}",
                &errors[errors.len().saturating_sub(5)..]
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

    async fn restart(&self, index: u8, start: StartMode) {
        let mut config = self.configs[index as usize].clone();
        config.start = start;
        let driver = tokio::task::spawn_blocking(move || {
            ReplicaDriver::start(&config, Log::default())
                .unwrap_or_else(|error| panic!("cannot restart replica {index}: {error}"))
        })
        .await
        .unwrap();
        *self.drivers[index as usize].write().unwrap() = Some(driver);
    }

    async fn shutdown(&self) -> Vec<Log> {
        let mut logs = Vec::new();
        for (index, driver) in self.drivers.iter().enumerate() {
            let driver = driver.write().unwrap().take().expect("running");
            let log = tokio::task::spawn_blocking(move || driver.shutdown())
                .await
                .unwrap()
                .unwrap_or_else(|error| panic!("replica {index} failed: {error}"));
            logs.push(log);
        }
        logs
    }
}

/// What a client was told: (client, request) → reply.
type Acknowledged = Arc<Mutex<BTreeMap<(u128, u64), Reply>>>;

fn command_of(client: u128, request: u64) -> Vec<u8> {
    format!("client {client:x} request {request}").into_bytes()
}

async fn client_loop(
    cluster: Arc<Cluster>,
    client: u128,
    stop: Arc<AtomicBool>,
    acknowledged: Acknowledged,
) {
    cluster.call(client, 0, &[]).await;
    let mut request = 1;
    while !stop.load(Ordering::Relaxed) {
        let command = command_of(client, request);
        let reply = cluster.call(client, request, &command).await;
        acknowledged
            .lock()
            .unwrap()
            .insert((client, request), reply);
        request += 1;
    }
}

/// The acceptance test of the driver: three replicas, clients writing in a loop, the primary
/// crashes (its driver dropped mid-run), the other two elect a new primary and keep committing,
/// the crashed replica restarts from its data directory and catches up; then a backup loses its
/// disk and rejoins from an empty directory. In the end all three hold the same history, which
/// contains every acknowledged write exactly once, as acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_survive_a_primary_crash_and_restart() {
    let cluster = Arc::new(Cluster::start(3));
    let acknowledged: Acknowledged = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (1..=3u128)
        .map(|client| {
            tokio::spawn(client_loop(
                cluster.clone(),
                client << 64 | 0xc1,
                stop.clone(),
                acknowledged.clone(),
            ))
        })
        .collect();
    let count = || acknowledged.lock().unwrap().len();
    wait_until("30 acknowledged writes", || {
        (count() < 30).then(|| format!("{} acknowledged, {:?}", count(), cluster.statuses()))
    })
    .await;

    // A backup refuses a request without doing anything, naming the primary.
    let (primary, view) = cluster.primary().expect("a primary");
    let backup = (primary + 1) % 3;
    let refused = cluster.ask(backup, 0xbac, 1, b"x").unwrap().await;
    match refused {
        Err(SubmitError::NotPrimary {
            primary: named,
            view: backup_view,
            ..
        }) if backup_view < view || named == primary => {}
        other => panic!("a backup answered {other:?}"),
    }

    cluster.crash(primary).await;
    let at_crash = count();
    wait_until(
        "a new primary and 30 more writes without the old one",
        || {
            let elected = cluster
                .primary()
                .is_some_and(|(new, new_view)| new != primary && new_view > view);
            (!elected || count() < at_crash + 30)
                .then(|| format!("{} acknowledged, {:?}", count(), cluster.statuses()))
        },
    )
    .await;

    cluster.restart(primary, StartMode::Open).await;
    let at_restart = count();
    wait_until("30 more writes with the old primary back", || {
        (count() < at_restart + 30).then(|| format!("{} acknowledged", count()))
    })
    .await;

    // A backup loses its disk: it rejoins from an empty directory and the cluster refills it.
    let (current, _) = cluster.primary().expect("a primary");
    // Preferably one that has not crashed yet.
    let lost = (0..3)
        .find(|&replica| replica != current && replica != primary)
        .unwrap_or((current + 1) % 3);
    cluster.crash(lost).await;
    std::fs::remove_dir_all(&cluster.configs[lost as usize].data_dir).unwrap();
    cluster.restart(lost, StartMode::Recover).await;
    let at_recover = count();
    wait_until(
        "30 more writes after a backup rejoined without its disk",
        || (count() < at_recover + 30).then(|| format!("{} acknowledged", count())),
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }

    wait_until("every replica to commit the same last op", || {
        let statuses = cluster.statuses();
        let converged = statuses.iter().all(|status| {
            status.as_ref().is_some_and(|status| {
                status.commit_min == status.op
                    && Some(status.commit_min) == statuses[0].as_ref().map(|first| first.commit_min)
            })
        });
        (!converged).then(|| format!("{statuses:?}"))
    })
    .await;
    let restarted = cluster.statuses()[primary as usize].clone().unwrap();
    let logs = cluster.shutdown().await;

    for (index, log) in logs.iter().enumerate() {
        assert_eq!(
            log, &logs[0],
            "replica {index}'s history differs from replica 0's"
        );
    }
    let history = &logs[0];
    let acknowledged = acknowledged.lock().unwrap();
    let by_op: BTreeMap<u64, &Entry> = history.entries.iter().map(|e| (e.op, e)).collect();
    for ((client, request), reply) in acknowledged.iter() {
        let entry = by_op.get(&reply.op).unwrap_or_else(|| {
            panic!(
                "acknowledged request {request} of {client:x} at op {} is lost",
                reply.op
            )
        });
        assert_eq!(
            (entry.client, entry.request, &entry.command),
            (*client, *request, &command_of(*client, *request)),
            "op {} holds another command than acknowledged",
            reply.op
        );
        assert_eq!(reply.body, reply_body(entry.op, &entry.hash));
    }
    let mut executed = BTreeSet::new();
    for entry in &history.entries {
        assert!(
            executed.insert((entry.client, entry.request)),
            "request {} of client {:x} executed twice",
            entry.request,
            entry.client
        );
    }
    assert!(acknowledged.len() >= 90);
    eprintln!(
        "{} writes acknowledged, {} committed; replica {primary} crashed in view {view}, \
         restarted and caught up to op {}; replica {lost} recovered its disk",
        acknowledged.len(),
        history.entries.len(),
        restarted.commit_min
    );
}

/// A cluster of one runs the same code without a network: it commits, keeps its history
/// across a clean restart, answers a retried request from its reply cache (exactly once), and
/// its `committed` waiter resolves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_of_one_restarts_with_its_history_and_answers_retries_once() {
    let cluster = Cluster::start(1);
    let client = 0x51;
    cluster.call(client, 0, &[]).await;
    let mut replies = Vec::new();
    for request in 1..=20 {
        replies.push(
            cluster
                .call(client, request, &command_of(client, request))
                .await,
        );
    }
    let last = replies.last().unwrap().clone();
    let committed = {
        let guard = cluster.drivers[0].read().unwrap();
        let driver = guard.as_ref().unwrap();
        assert_eq!(
            driver.local_address(),
            None,
            "a cluster of one binds no port"
        );
        driver.committed(last.op)
    };
    tokio::time::timeout(wait_max, committed)
        .await
        .expect("committed() resolves for a committed op")
        .unwrap();
    let before = cluster.shutdown().await.remove(0);
    assert_eq!(before.entries.len(), 20);

    cluster.restart(0, StartMode::Open).await;
    // The restarted replica answers the last request again from its cache, without executing.
    let retried = cluster.call(client, 20, &command_of(client, 20)).await;
    assert_eq!((retried.op, &retried.body), (last.op, &last.body));
    let next = cluster.call(client, 21, &command_of(client, 21)).await;
    assert!(next.op > last.op);
    let stale = cluster.ask(0, client, 5, b"old").unwrap().await;
    assert!(
        matches!(stale, Err(SubmitError::Stale { last: 21, .. })),
        "{stale:?}"
    );
    let anonymous = cluster.ask(0, 0, 1, b"x").unwrap().await;
    assert!(
        matches!(anonymous, Err(SubmitError::Invalid(_))),
        "{anonymous:?}"
    );
    let oversized = vec![0; kimberlite_consensus::constants::command_bytes_max + 1];
    let oversized = cluster.ask(0, client, 22, &oversized).unwrap().await;
    assert!(
        matches!(oversized, Err(SubmitError::TooLarge { .. })),
        "{oversized:?}"
    );
    let after = cluster.shutdown().await.remove(0);
    assert_eq!(&after.entries[..20], &before.entries[..]);
    assert_eq!(after.entries.len(), 21);
}

/// Transport security: replicas pinned to each other connect and deliver; a process presenting
/// a certificate the cluster does not pin for its index is refused on both sides, whichever
/// side dials. Corrupt frames and frames claiming another sender are dropped without harming
/// the connection.
#[test]
fn only_pinned_replicas_connect_and_only_valid_frames_are_delivered() {
    use kimberlite_consensus::Message;
    use kimberlite_consensus::transport::{Transport, TransportConfig};

    let cluster = 0x7e57;
    let identities: Vec<ReplicaIdentity> = (0..3).map(|_| identity()).collect();
    let fingerprints: Vec<CertificateFingerprint> = identities
        .iter()
        .map(ReplicaIdentity::fingerprint)
        .collect();
    let addresses = free_addresses(3);
    // Replica 2's address is taken by an impostor with its own certificate, whose own
    // configuration pins that certificate for index 2.
    let impostor = identity();
    let mut impostor_fingerprints = fingerprints.clone();
    impostor_fingerprints[2] = impostor.fingerprint();

    let delivered: Arc<Vec<AtomicU64>> = Arc::new((0..9).map(|_| AtomicU64::new(0)).collect());
    let start = |replica: u8, identity: ReplicaIdentity, fingerprints: Vec<_>| {
        let delivered = delivered.clone();
        let config = TransportConfig {
            cluster,
            replica,
            addresses: addresses.clone(),
            identity,
            fingerprints,
        };
        Transport::start(
            &config,
            Arc::new(move |from: u8, message: Message, _bytes: usize| {
                assert!(matches!(message, Message::Ping { .. }), "{message:?}");
                delivered[replica as usize * 3 + from as usize].fetch_add(1, Ordering::Relaxed);
            }),
        )
        .unwrap()
    };
    let transports = [
        start(0, identities[0].clone(), fingerprints.clone()),
        start(1, identities[1].clone(), fingerprints.clone()),
        start(2, impostor, impostor_fingerprints),
    ];
    let ping = |replica: u8| {
        Message::Ping {
            replica,
            view: 0,
            normal: true,
            ping_monotonic_ns: 1,
        }
        .encode(cluster)
    };
    let deliveries = |to: usize, from: usize| delivered[to * 3 + from].load(Ordering::Relaxed);
    let deadline = std::time::Instant::now() + wait_max;
    while deliveries(0, 1) < 3 || deliveries(1, 0) < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "pinned replicas 0 and 1 did not exchange pings: {:?} {:?}",
            transports[0].stats(),
            transports[1].stats()
        );
        for (from, transport) in transports.iter().enumerate() {
            for to in (0..3u8).filter(|&to| to as usize != from) {
                transport.send(to, ping(from as u8));
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // On the established connection: a corrupt frame, a frame claiming to come from replica 2,
    // then a valid one. Frames on a connection arrive in order, so once the valid one is
    // delivered the other two were seen, and dropped.
    let before = deliveries(1, 0);
    let mut corrupt = ping(0);
    corrupt[10] ^= 1;
    transports[0].send(1, corrupt);
    transports[0].send(1, ping(2));
    transports[0].send(1, ping(0));
    while deliveries(1, 0) == before {
        assert!(
            std::time::Instant::now() < deadline,
            "the frame after a corrupt one was not delivered: {:?}",
            transports[1].stats()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Give the impostor's connections every chance: a few more rounds of dialing.
    for _ in 0..20 {
        for to in [0u8, 1] {
            transports[2].send(to, ping(2));
        }
        transports[0].send(2, ping(0));
        transports[1].send(2, ping(1));
        std::thread::sleep(Duration::from_millis(50));
    }
    for (to, from) in [(0, 2), (1, 2), (2, 0), (2, 1)] {
        assert_eq!(
            deliveries(to, from),
            0,
            "replica {to} received from {from} across an unpinned certificate"
        );
    }
    for stats in [&transports[0].stats()[2], &transports[1].stats()[2]] {
        assert_eq!(
            (stats.connected, stats.connections),
            (false, 0),
            "{stats:?}"
        );
    }
    let stats = transports[1].stats()[0].clone();
    assert_eq!(stats.frames_rejected, 2, "{stats:?}");
    let [first, second, third] = transports;
    first.shutdown();
    second.shutdown();
    drop(third);
}
