//! A 3-replica cluster of real `kimberlite start --replica` processes on loopback, as an
//! operator runs it: a client writes in a loop through all of it while the primary is
//! `kill -9`ed and restarted with its data, then a backup is killed, its data wiped and it is
//! started with `--recover` (it takes the state and the logs from its peers). Writes go on
//! after each view change; at the end every acknowledged row is there once, every replica's
//! log segments are byte-identical and `kimberlite verify` passes on each data directory.
//!
//! Outcomes are asserted, never timings: every wait has a generous bound and says what it was
//! waiting for.

use kimberlite_client::{Client, ClientConfig, ErrorCode, SqlOutcome, WireValue};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_kimberlite");
const REPLICAS: u8 = 3;
/// Bound on any single wait of this test.
const WAIT_MAX: Duration = Duration::from_secs(120);
/// Acknowledged inserts between two disruptions.
const WRITES_PER_PHASE: usize = 40;
/// How often a paused writer looks whether it may write again.
const WRITER_PAUSE_POLL_MS: u64 = 10;
/// Small VSR sizes, so the run crosses many checkpoints and the wiped replica needs a state
/// transfer (its peers' journals no longer hold op 1).
const CHECKPOINT_INTERVAL_OPS: u64 = 8;
const JOURNAL_SLOTS: u64 = 32;

struct Cluster {
    base: PathBuf,
    processes: Vec<Option<Child>>,
    _directory: tempfile::TempDir,
}

/// A base port whose 2 × REPLICAS ports are free now (bound and released).
fn free_base_port() -> u16 {
    for _ in 0..100 {
        let base: u16 = 20_000 + (rand_u16() % 20_000);
        let free = (0..2 * REPLICAS as u16).all(|offset| {
            std::net::UdpSocket::bind(("127.0.0.1", base + offset)).is_ok()
                && std::net::TcpListener::bind(("127.0.0.1", base + offset)).is_ok()
        });
        if free {
            return base;
        }
    }
    panic!("no free port range found");
}

fn rand_u16() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    (nanos ^ std::process::id().rotate_left(16)) as u16
}

impl Cluster {
    fn init() -> Cluster {
        Cluster::init_with(&[])
    }

    /// `cluster init` with `extra` arguments.
    fn init_with(extra: &[&str]) -> Cluster {
        let directory = tempfile::tempdir().unwrap();
        let base = directory.path().join("cluster");
        let output = Command::new(BINARY)
            .args(["cluster", "init", "--replicas", &REPLICAS.to_string()])
            .args(["--base-port", &free_base_port().to_string()])
            .args([
                "--checkpoint-interval-ops",
                &CHECKPOINT_INTERVAL_OPS.to_string(),
            ])
            .args(["--journal-slots", &JOURNAL_SLOTS.to_string()])
            .args(extra)
            .arg("--data-dir")
            .arg(&base)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "cluster init failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Cluster {
            base,
            processes: (0..REPLICAS).map(|_| None).collect(),
            _directory: directory,
        }
    }

    fn dir(&self, replica: u8) -> PathBuf {
        self.base.join(format!("replica-{replica}"))
    }

    fn config(&self) -> ClientConfig {
        ClientConfig::load(&self.base.join("client.toml")).unwrap()
    }

    fn start(&mut self, replica: u8, recover: bool) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir(replica).join("replica.log"))
            .unwrap();
        let mut command = Command::new(BINARY);
        command
            .args(["start", "--replica", &replica.to_string(), "--data-dir"])
            .arg(self.dir(replica))
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        if recover {
            command.arg("--recover");
        }
        self.processes[replica as usize] = Some(command.spawn().unwrap());
    }

    /// `kill -9`: no clean shutdown, whatever was not durable is gone.
    fn kill(&mut self, replica: u8) {
        let mut child = self.processes[replica as usize].take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM, and the process must exit 0 (synced logs, signed checkpoints).
    fn stop(&mut self, replica: u8) {
        let mut child = self.processes[replica as usize].take().unwrap();
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + WAIT_MAX;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "replica {replica} did not stop cleanly ({status}); its log:\n{}",
                    self.log_tail(replica)
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "replica {replica} ignored SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_tail(&self, replica: u8) -> String {
        let text =
            std::fs::read_to_string(self.dir(replica).join("replica.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// (replica, committed op, is primary) of every replica that answers.
    async fn statuses(&self) -> Vec<(u8, u64, bool)> {
        let config = self.config();
        let mut statuses = Vec::new();
        for endpoint in config.endpoints() {
            let single = ClientConfig {
                address: endpoint.address.clone(),
                certificate_sha256: endpoint.certificate_sha256.clone(),
                replicas: Vec::new(),
                ..config.clone()
            };
            let Ok(Ok(client)) =
                tokio::time::timeout(Duration::from_secs(3), Client::connect(&single, None)).await
            else {
                continue;
            };
            if let Ok(Ok(status)) =
                tokio::time::timeout(Duration::from_secs(3), client.replica_status()).await
            {
                statuses.push((status.replica, status.commit, status.accepting_requests));
            }
        }
        statuses
    }

    async fn primary(&self) -> u8 {
        let deadline = Instant::now() + WAIT_MAX;
        loop {
            if let Some((replica, _, _)) = self
                .statuses()
                .await
                .into_iter()
                .find(|(_, _, primary)| *primary)
            {
                return replica;
            }
            assert!(Instant::now() < deadline, "no primary within {WAIT_MAX:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until every replica answers and has committed the same op.
    async fn converged(&self) -> u64 {
        let deadline = Instant::now() + WAIT_MAX;
        loop {
            let statuses = self.statuses().await;
            let commits: BTreeSet<u64> = statuses.iter().map(|(_, commit, _)| *commit).collect();
            if statuses.len() == REPLICAS as usize && commits.len() == 1 {
                return *commits.first().unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "replicas did not converge within {WAIT_MAX:?}: {statuses:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.processes.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What the writer saw: ids acknowledged, ids whose outcome is unknown (an error after
/// sending), and any answer that shows a write executed twice.
#[derive(Default)]
struct Writes {
    acknowledged: BTreeSet<i64>,
    uncertain: BTreeSet<i64>,
    duplicates: Vec<String>,
}

async fn wait_for_writes(writes: &Mutex<Writes>, count: usize, cluster: &Cluster) {
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        let acknowledged = writes.lock().unwrap().acknowledged.len();
        if acknowledged >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {acknowledged} of {count} writes acknowledged within {WAIT_MAX:?}; logs:\n{}",
            (0..REPLICAS)
                .map(|replica| format!("--- replica {replica}\n{}", cluster.log_tail(replica)))
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn segments(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        for entry in std::fs::read_dir(&path).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|extension| extension == "seg") {
                found.push((
                    path.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&path).unwrap(),
                ));
            }
        }
    }
    found.sort();
    found
}

/// Regions: a cluster initialised with `--region eu` holds tenants of `eu` and tenants without
/// a region, and refuses another region's, naming both, on whichever replica is primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_in_a_region_creates_only_tenants_of_its_region() {
    let mut cluster = Cluster::init_with(&["--region", "eu"]);
    for replica in 0..REPLICAS {
        cluster.start(replica, false);
    }
    let config = cluster.config();
    let client = tokio::time::timeout(WAIT_MAX, async {
        loop {
            if let Ok(client) = Client::connect(&config, None).await
                && client
                    .create_tenant_in("clinic", Some("eu"), "eu data")
                    .await
                    .is_ok()
            {
                return client;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("the cluster serves within the bound");
    client.create_tenant("anywhere", "no region").await.unwrap();
    let refused = client
        .create_tenant_in("shop", Some("us"), "us data")
        .await
        .expect_err("another region's tenant is refused");
    assert_eq!(
        refused.code(),
        Some(ErrorCode::PermissionDenied),
        "{refused}"
    );
    let message = refused.to_string();
    assert!(
        message.contains("must live in region `us`") && message.contains("runs in region `eu`"),
        "{message}"
    );
    let names: Vec<String> = client
        .list_tenants()
        .await
        .unwrap()
        .into_iter()
        .map(|tenant| tenant.name)
        .collect();
    assert_eq!(names, ["clinic", "anywhere"]);
    // Erasing a tenant needs destroyable keys, which a cluster does not have yet: refused,
    // saying why, and the tenant stays.
    let erase = client
        .erase_tenant("anywhere", "contract ended")
        .await
        .expect_err("a cluster refuses tenant erasure");
    assert!(
        erase.to_string().contains("not available in a cluster"),
        "{erase}"
    );
    client
        .sql(
            "anywhere",
            "CREATE TABLE t (id BIGINT PRIMARY KEY)",
            &[],
            "",
        )
        .await
        .unwrap();
    client.close().await;
    for replica in 0..REPLICAS {
        cluster.stop(replica);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_survives_a_killed_primary_and_a_wiped_backup() {
    let mut cluster = Cluster::init();
    for replica in 0..REPLICAS {
        cluster.start(replica, false);
    }
    let config = cluster.config();
    let client = Arc::new(
        tokio::time::timeout(WAIT_MAX, async {
            loop {
                if let Ok(client) = Client::connect(&config, None).await
                    && client.create_tenant("clinic", "cluster test").await.is_ok()
                {
                    return client;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await
        .expect("the cluster serves within the bound"),
    );
    client
        .sql(
            "clinic",
            "CREATE TABLE visits (id BIGINT PRIMARY KEY, note TEXT)",
            &[],
            "cluster test",
        )
        .await
        .unwrap();

    let writes = Arc::new(Mutex::new(Writes::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Held while the test waits for the replicas to agree mid-run: under writes at full
    // speed the backups learn each commit one message later, so "every replica at the same
    // commit" is never true at the instant of a poll.
    let paused = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (client, writes, stop, paused) =
            (client.clone(), writes.clone(), stop.clone(), paused.clone());
        tokio::spawn(async move {
            let mut id = 0i64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                if paused.load(std::sync::atomic::Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(WRITER_PAUSE_POLL_MS)).await;
                    continue;
                }
                id += 1;
                let answer = client
                    .sql(
                        "clinic",
                        "INSERT INTO visits VALUES ($1, $2)",
                        &[
                            WireValue::Integer(id),
                            WireValue::Text(format!("visit {id}")),
                        ],
                        "cluster test",
                    )
                    .await;
                let mut writes = writes.lock().unwrap();
                match answer {
                    Ok(SqlOutcome::Written(outcome)) if outcome.rows_affected == 1 => {
                        writes.acknowledged.insert(id);
                    }
                    Ok(other) => writes.duplicates.push(format!("id {id}: {other:?}")),
                    Err(error) if error.code() == Some(ErrorCode::Conflict) => {
                        // The row exists: this very request executed before its answer was
                        // lost, and ran again.
                        writes.duplicates.push(format!("id {id}: {error}"));
                    }
                    Err(_) => {
                        writes.uncertain.insert(id);
                    }
                }
            }
        })
    };

    wait_for_writes(&writes, WRITES_PER_PHASE, &cluster).await;
    let primary = cluster.primary().await;
    cluster.kill(primary);
    wait_for_writes(&writes, 2 * WRITES_PER_PHASE, &cluster).await;
    cluster.start(primary, false);
    wait_for_writes(&writes, 3 * WRITES_PER_PHASE, &cluster).await;
    paused.store(true, std::sync::atomic::Ordering::SeqCst);
    cluster.converged().await;
    paused.store(false, std::sync::atomic::Ordering::SeqCst);
    // The primary signs tree heads with its own node key, one of those client.toml trusts;
    // the heads of its (synced) log prove records like a single node's.
    let proven = client.prove("clinic", Some(0)).await.unwrap();
    assert!(
        proven.head.size > 0 && proven.inclusion_hashes > 0,
        "{proven:?}"
    );

    let primary = cluster.primary().await;
    let backup = (primary + 1) % REPLICAS;
    let public_key = std::fs::read_to_string(cluster.dir(backup).join("node/node.pub")).unwrap();
    cluster.kill(backup);
    for lost in ["node", "vsr"] {
        std::fs::remove_dir_all(cluster.dir(backup).join(lost)).unwrap();
    }
    wait_for_writes(&writes, 4 * WRITES_PER_PHASE, &cluster).await;
    cluster.start(backup, true);
    wait_for_writes(&writes, 5 * WRITES_PER_PHASE, &cluster).await;

    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.await.unwrap();
    cluster.converged().await;
    let rows = match client
        .sql("clinic", "SELECT id FROM visits", &[], "")
        .await
        .unwrap()
    {
        SqlOutcome::Rows(rows) => rows,
        other => panic!("a query answered {other:?}"),
    };
    let stored: BTreeSet<i64> = rows
        .rows
        .iter()
        .map(|row| match row[0] {
            WireValue::Integer(id) => id,
            ref other => panic!("id {other:?}"),
        })
        .collect();
    let writes = writes.lock().unwrap();
    assert!(writes.duplicates.is_empty(), "{:?}", writes.duplicates);
    let lost: Vec<&i64> = writes.acknowledged.difference(&stored).collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    let unexplained: Vec<&i64> = stored
        .difference(&writes.acknowledged)
        .filter(|id| !writes.uncertain.contains(id))
        .collect();
    assert!(unexplained.is_empty(), "rows nobody wrote: {unexplained:?}");

    for replica in 0..REPLICAS {
        cluster.stop(replica);
    }
    // The rebuilt replica signs with the key client.toml names (it is not part of the state
    // a lost disk takes).
    assert_eq!(
        std::fs::read_to_string(cluster.dir(backup).join("node/node.pub")).unwrap(),
        public_key
    );
    assert!(
        cluster
            .config()
            .node_public_keys
            .contains(&public_key.trim().to_string())
    );
    let reference = segments(&cluster.dir(0).join("node"));
    assert!(
        reference.len() >= 2,
        "system and tenant logs: {reference:?}"
    );
    for replica in 0..REPLICAS {
        let node = cluster.dir(replica).join("node");
        let here = segments(&node);
        assert_eq!(
            here.iter().map(|(path, _)| path).collect::<Vec<_>>(),
            reference.iter().map(|(path, _)| path).collect::<Vec<_>>(),
            "replica {replica} has other segment files"
        );
        for ((path, bytes), (_, expected)) in here.iter().zip(&reference) {
            assert!(
                bytes == expected,
                "replica {replica}: {} differs from replica 0's",
                path.display()
            );
        }
        let output = Command::new(BINARY)
            .args(["verify", "--data-dir"])
            .arg(&node)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "verify of replica {replica} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
