//! `cluster`: the real `kimberlite` binary as processes, a single node next to a cluster of
//! 3 replicas on loopback, in the same run.
//!
//! The single node is `kimberlite start --data-dir DIR --listen 127.0.0.1:0` (one process,
//! embedded node, group commit); the cluster is `kimberlite cluster init --replicas 3` then
//! `kimberlite start --replica I` per replica (three processes, VSR between them over
//! mutual-TLS QUIC). Both are driven by the real `kimberlite_client::Client` over QUIC (the
//! cluster's clients find and follow its primary), with a tenant and a table created the
//! same way on each. Workloads, each run on both systems in alternating slices (round k:
//! single node then cluster, round k + 1: the other way round):
//!
//! - 1 client, single-row `INSERT`s one after another: commit latency;
//! - `CLIENTS_CONCURRENT` clients (one `Client`, i.e. one connection and one session,
//!   each), single-row `INSERT`s, one in flight per client: throughput under concurrency;
//! - 1 client, appends of `REQUEST_EVENTS` events per request.
//!
//! Every answer is checked (one row written, or all the events appended). Processes are
//! stopped with SIGTERM at the end and must exit cleanly; on an error or a panic they are
//! killed when their guard drops.

use crate::append::{Slice, event};
use crate::stats::Latencies;
use crate::{EVENT_BYTES, Settings, summary};
use anyhow::{Context, bail};
use kimberlite_client::{Client, ClientConfig, ErrorCode, SqlOutcome, WireEvent, WireValue};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

/// Replicas of the cluster.
const REPLICAS: u8 = 3;
/// Concurrent clients of the many-clients workload.
pub const CLIENTS_CONCURRENT: usize = 16;
/// Events per request of the batched workload.
pub const REQUEST_EVENTS: usize = 64;
/// Rounds, and the length of each system's slice in a round, full and quick.
const ROUNDS_FULL: usize = 4;
const ROUNDS_QUICK: usize = 3;
const SLICE_FULL_MS: u64 = 5_000;
const SLICE_QUICK_MS: u64 = 1_000;
/// How long a system may take to start and serve its first write (election included).
const START_WAIT_MS: u64 = 60_000;
/// How long a process may take to exit after SIGTERM.
const STOP_WAIT_MS: u64 = 30_000;
/// Pause between two checks while waiting for a process.
const POLL_MS: u64 = 50;
/// Pause between two attempts to reach a system that is still starting.
const RETRY_MS: u64 = 200;
/// Lines of a process's log shown when it fails.
const LOG_TAIL_LINES: usize = 30;
/// Attempts at finding a block of free UDP ports on loopback for the cluster.
const PORT_ATTEMPTS_MAX: u64 = 100;
const PORT_FIRST: u16 = 20_000;
const PORT_SPAN: u16 = 30_000;
/// Clock ticks per second of `utime`/`stime` in /proc/PID/stat (Linux's USER_HZ, fixed by its
/// ABI).
const USER_HZ: u64 = 100;
/// The line `kimberlite start` prints once it serves.
const LISTENING: &str = "Kimberlite listening on";
/// The benchmark's tenant.
const TENANT: &str = "bench";
/// Statement of the INSERT workloads: one row about `EVENT_BYTES` wide, as parameters.
const INSERT: &str = "INSERT INTO events (id, body) VALUES ($1, $2)";
const LOOKUP: &str = "SELECT body FROM events WHERE id = $1";

/// The two systems, in the order of their columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Single,
    Replicated,
}

impl Shape {
    const ALL: [Shape; 2] = [Shape::Single, Shape::Replicated];

    fn key(self) -> &'static str {
        match self {
            Shape::Single => "single_node",
            Shape::Replicated => "3_replicas",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Shape::Single => "single node",
            Shape::Replicated => "3 replicas",
        }
    }
}

/// One workload on one system, its slices added up.
#[derive(Debug, Default)]
struct Measured {
    slice: Slice,
    /// CPU time of the system's server processes (user + system, all threads) during the
    /// slices: the benchmark's own client side is not counted.
    cpu: Duration,
}

impl Measured {
    fn add(&mut self, slice: Slice, cpu: Duration) {
        self.slice.add(slice);
        self.cpu += cpu;
    }

    /// Server CPU per request, in microseconds.
    fn cpu_per_request_us(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.slice.latencies.len().max(1) as f64
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workload {
    InsertOneClient,
    InsertManyClients,
    AppendBatched,
    /// Point lookups of rows written before: on a cluster each pays the read barrier.
    LookupOneClient,
}

impl Workload {
    const ALL: [Workload; 4] = [
        Workload::InsertOneClient,
        Workload::InsertManyClients,
        Workload::AppendBatched,
        Workload::LookupOneClient,
    ];

    fn key(self) -> String {
        match self {
            Workload::InsertOneClient => "insert_1_client".into(),
            Workload::InsertManyClients => format!("insert_{CLIENTS_CONCURRENT}_clients"),
            Workload::AppendBatched => format!("append_{REQUEST_EVENTS}_events_1_client"),
            Workload::LookupOneClient => "lookup_1_client".into(),
        }
    }

    fn name(self) -> String {
        match self {
            Workload::InsertOneClient => "INSERT 1 row, 1 client".into(),
            Workload::InsertManyClients => format!("INSERT 1 row, {CLIENTS_CONCURRENT} clients"),
            Workload::AppendBatched => format!("append {REQUEST_EVENTS} events, 1 client"),
            Workload::LookupOneClient => "SELECT 1 row by key, 1 client".into(),
        }
    }
}

pub fn run(settings: &Settings) -> anyhow::Result<()> {
    let binary = binary()?;
    let (rounds, slice) = (
        settings.pick(ROUNDS_FULL, ROUNDS_QUICK),
        Duration::from_millis(settings.pick(SLICE_FULL_MS, SLICE_QUICK_MS)),
    );
    let directory = tempfile::Builder::new()
        .prefix("cluster-")
        .tempdir_in(&settings.dir)?;
    let runtime = crate::runtime()?;
    let (rows, view_changes) = runtime.block_on(async {
        let mut single = System::start_single(&binary, &directory.path().join("single")).await?;
        let mut replicated =
            System::start_cluster(&binary, &directory.path().join("cluster")).await?;
        let view_before = replicated.view().await?;
        let measured = measure(&mut single, &mut replicated, rounds, slice).await;
        let measured = match measured {
            Ok(measured) => measured,
            Err(error) => {
                let exited = single.exited() + &replicated.exited();
                return Err(if exited.is_empty() {
                    error
                } else {
                    error.context(exited)
                });
            }
        };
        let view_after = replicated.view().await?;
        single.stop().await?;
        replicated.stop().await?;
        anyhow::Ok((measured, view_after.saturating_sub(view_before)))
    })?;
    report(rows, view_changes, rounds, slice, &binary);
    Ok(())
}

/// The `kimberlite` binary next to this benchmark's (same target directory, same profile).
fn binary() -> anyhow::Result<PathBuf> {
    let bench = std::env::current_exe().context("cannot locate the benchmark's own binary")?;
    let binary = bench
        .parent()
        .context("the benchmark's binary has no directory")?
        .join("kimberlite");
    if !binary.is_file() {
        bail!(
            "the cluster suite runs the real `kimberlite` binary, and there is none at {}: build it \
             into the same target directory with `cargo build --release -p kimberlite` (same \
             CARGO_TARGET_DIR as the benchmark)",
            binary.display()
        );
    }
    Ok(binary)
}

/// Every workload on both systems: (workload, per system in `Shape::ALL` order).
async fn measure(
    single: &mut System,
    replicated: &mut System,
    rounds: usize,
    slice: Duration,
) -> anyhow::Result<Vec<(Workload, [Measured; 2])>> {
    let mut rows = Vec::new();
    for workload in Workload::ALL {
        let mut totals = [Measured::default(), Measured::default()];
        for round in 0..rounds {
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for index in order {
                let system = if index == 0 {
                    &mut *single
                } else {
                    &mut *replicated
                };
                let cpu_before = system.cpu()?;
                let measured = system.run(workload, slice).await.with_context(|| {
                    format!("{} on the {}", workload.name(), system.shape.name())
                })?;
                totals[index].add(measured, system.cpu()?.saturating_sub(cpu_before));
            }
        }
        rows.push((workload, totals));
    }
    Ok(rows)
}

fn report(
    mut rows: Vec<(Workload, [Measured; 2])>,
    view_changes: u64,
    rounds: usize,
    slice: Duration,
    binary: &Path,
) {
    println!(
        "\nsuite cluster: the `kimberlite` binary as processes on loopback, QUIC clients; a single \
         node vs 3 replicas (VSR), alternating slices ({rounds} rounds of {} ms per system); \
         rows and events of ~{EVENT_BYTES} bytes; binary {}",
        slice.as_millis(),
        binary.display()
    );
    println!(
        "  {:<30} {:<12} {:>10} {:>9} {:>9} {:>12}",
        "workload", "system", "ops/s", "p50 us", "p99 us", "CPU us/req"
    );
    let mut ratios = serde_json::Map::new();
    let mut figures = serde_json::Map::new();
    for (workload, slices) in &mut rows {
        let mut per_shape = Vec::new();
        for (shape, measured) in Shape::ALL.iter().zip(slices.iter_mut()) {
            let cpu = measured.cpu_per_request_us();
            let measured = &mut measured.slice;
            let rate = measured.events_per_second();
            let (p50, p99) = (
                measured.latencies.quantile_us(0.5),
                measured.latencies.quantile_us(0.99),
            );
            println!(
                "  {:<30} {:<12} {:>10.0} {:>9.0} {:>9.0} {:>12.0}",
                workload.name(),
                shape.name(),
                rate,
                p50,
                p99,
                cpu
            );
            let key = format!("{}_{}", workload.key(), shape.key());
            figures.insert(format!("{key}_per_second"), rate.into());
            figures.insert(format!("{key}_p50_us"), p50.into());
            figures.insert(format!("{key}_p99_us"), p99.into());
            figures.insert(format!("{key}_requests"), measured.latencies.len().into());
            figures.insert(format!("{key}_server_cpu_us_per_request"), cpu.into());
            per_shape.push((rate, p50, p99));
        }
        let ((rate_1, p50_1, p99_1), (rate_3, p50_3, p99_3)) = (per_shape[0], per_shape[1]);
        let (throughput, p50, p99) = (rate_3 / rate_1, p50_1 / p50_3, p99_1 / p99_3);
        println!(
            "  {:<30} {:<12} 3/1 throughput {throughput:.2}, 1/3 latency p50 {p50:.2} p99 {p99:.2}",
            "", "ratios"
        );
        let key = workload.key();
        ratios.insert(format!("{key}_throughput_3_over_1"), throughput.into());
        ratios.insert(format!("{key}_p50_1_over_3"), p50.into());
        ratios.insert(format!("{key}_p99_1_over_3"), p99.into());
    }
    figures.insert("view_changes".into(), view_changes.into());
    println!(
        "  ops/s = rows or events committed (rows read, for SELECT) per second; a cluster's \
         SELECT waits for a read barrier first; latency per request (a batched \
         request carries {REQUEST_EVENTS} events); CPU us/req = CPU time of the system's server \
         processes (all replicas) per request; 1/3 latency below 1 = the cluster is slower; \
         view changes during the run: {view_changes}"
    );
    summary("cluster", ratios, figures);
}

/// One system under test: its processes, its connected clients, the next row id.
struct System {
    shape: Shape,
    /// Dropped (killed, if still running) before the directory they write in goes away.
    processes: Vec<Process>,
    /// Client 0 also runs the single-client workloads.
    clients: Vec<Arc<Client>>,
    next_id: Arc<AtomicI64>,
}

impl System {
    async fn start_single(binary: &Path, dir: &Path) -> anyhow::Result<System> {
        std::fs::create_dir_all(dir)?;
        let mut command = Command::new(binary);
        command
            .args(["start", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir);
        let mut process = Process::spawn("single node", command, &dir.join("node.log"))?;
        let deadline = Instant::now() + Duration::from_millis(START_WAIT_MS);
        while !process.log().contains(LISTENING) {
            process.check_running()?;
            if Instant::now() > deadline {
                bail!(
                    "the single node did not print `{LISTENING}` within {START_WAIT_MS} ms; its log:\n{}",
                    process.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
        }
        System::connect(Shape::Single, vec![process], &dir.join("client.toml")).await
    }

    async fn start_cluster(binary: &Path, base: &Path) -> anyhow::Result<System> {
        let base_port = free_udp_ports(2 * REPLICAS as u16)?;
        let output = Command::new(binary)
            .args(["cluster", "init", "--replicas", &REPLICAS.to_string()])
            .args(["--base-port", &base_port.to_string()])
            .arg("--data-dir")
            .arg(base)
            .output()
            .with_context(|| format!("cannot run {}", binary.display()))?;
        if !output.status.success() {
            bail!(
                "`kimberlite cluster init` failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let mut processes = Vec::new();
        for replica in 0..REPLICAS {
            let dir = base.join(format!("replica-{replica}"));
            let mut command = Command::new(binary);
            command
                .args(["start", "--replica", &replica.to_string(), "--data-dir"])
                .arg(&dir);
            processes.push(Process::spawn(
                &format!("replica {replica}"),
                command,
                &dir.join("replica.log"),
            )?);
        }
        System::connect(Shape::Replicated, processes, &base.join("client.toml")).await
    }

    /// Connects the first client as soon as the system takes a write (the tenant), creates
    /// the table, then connects the other clients; every client writes one row before the
    /// clock starts (it finds the primary and opens its session there).
    async fn connect(
        shape: Shape,
        mut processes: Vec<Process>,
        config: &Path,
    ) -> anyhow::Result<System> {
        let deadline = Instant::now() + Duration::from_millis(START_WAIT_MS);
        let first = loop {
            let attempt = async {
                let config = ClientConfig::load(config)?;
                let client = Client::connect(&config, None).await?;
                match client.create_tenant(TENANT, "benchmark").await {
                    Ok(_) => anyhow::Ok(client),
                    // An earlier attempt created it and its answer was lost.
                    Err(error) if error.code() == Some(ErrorCode::Conflict) => Ok(client),
                    Err(error) => Err(error.into()),
                }
            };
            let error = match tokio::time::timeout_at(deadline.into(), attempt).await {
                Ok(Ok(client)) => break client,
                Ok(Err(error)) => error,
                Err(_) => anyhow::anyhow!("no answer"),
            };
            for process in &mut processes {
                process.check_running()?;
            }
            if Instant::now() > deadline {
                bail!(
                    "the {} took no write within {START_WAIT_MS} ms: {error:#}; logs:\n{}",
                    shape.name(),
                    processes
                        .iter()
                        .map(Process::log_tail)
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(RETRY_MS)).await;
        };
        first
            .sql(
                TENANT,
                "CREATE TABLE events (id BIGINT PRIMARY KEY, body TEXT)",
                &[],
                "schema",
            )
            .await
            .context("creating the table")?;
        let config = ClientConfig::load(config)?;
        let mut clients = vec![Arc::new(first)];
        for _ in 1..CLIENTS_CONCURRENT {
            clients.push(Arc::new(Client::connect(&config, None).await?));
        }
        let system = System {
            shape,
            processes,
            clients,
            next_id: Arc::new(AtomicI64::new(0)),
        };
        for client in &system.clients {
            insert(client, &system.next_id, &body()).await?;
        }
        Ok(system)
    }

    /// Runs `workload` for about `slice`.
    async fn run(&mut self, workload: Workload, slice: Duration) -> anyhow::Result<Slice> {
        let clients = match workload {
            Workload::InsertOneClient => 1,
            Workload::InsertManyClients => CLIENTS_CONCURRENT,
            Workload::AppendBatched => {
                return append_batched(&self.clients[0], slice).await;
            }
            Workload::LookupOneClient => {
                let written = self.next_id.load(Ordering::Relaxed);
                return lookups(&self.clients[0], written, slice).await;
            }
        };
        let start = Instant::now();
        let mut tasks = Vec::new();
        for client in &self.clients[..clients] {
            let (client, next_id) = (client.clone(), self.next_id.clone());
            tasks.push(tokio::spawn(async move {
                let body = body();
                let mut latencies = Latencies::default();
                while start.elapsed() < slice {
                    let sent = Instant::now();
                    insert(&client, &next_id, &body).await?;
                    latencies.record(sent.elapsed());
                }
                anyhow::Ok(latencies)
            }));
        }
        let mut latencies = Latencies::default();
        for task in tasks {
            latencies.extend(task.await??);
        }
        Ok(Slice {
            events: latencies.len(),
            elapsed: start.elapsed(),
            latencies,
        })
    }

    /// The view of the replica client 0 talks to (the primary); 0 for a single node.
    async fn view(&self) -> anyhow::Result<u64> {
        match self.shape {
            Shape::Single => Ok(0),
            Shape::Replicated => Ok(self.clients[0].replica_status().await?.view),
        }
    }

    /// CPU time used so far by the system's processes.
    fn cpu(&self) -> anyhow::Result<Duration> {
        let mut total = Duration::ZERO;
        for process in &self.processes {
            total += process.cpu()?;
        }
        Ok(total)
    }

    /// Which processes exited, with their logs (for an error message); empty if none did.
    fn exited(&mut self) -> String {
        let mut said = String::new();
        for process in &mut self.processes {
            if let Some(status) = process.try_wait() {
                said += &format!(
                    "the {} exited ({status}); its log:\n{}\n",
                    process.name,
                    process.log_tail()
                );
            }
        }
        said
    }

    /// Closes the clients, then stops every process with SIGTERM (all at once, so replicas
    /// do not elect a new primary one by one) and requires a clean exit of each.
    async fn stop(self) -> anyhow::Result<()> {
        for client in self.clients {
            if let Ok(client) = Arc::try_unwrap(client) {
                client.close().await;
            }
        }
        for process in &self.processes {
            process.terminate()?;
        }
        for process in self.processes {
            process.wait_clean().await?;
        }
        Ok(())
    }
}

/// A row body of about `EVENT_BYTES` bytes with its id.
fn body() -> String {
    "y".repeat(EVENT_BYTES - 16)
}

/// Inserts one row with the next id; the answer must say one row was written.
async fn insert(client: &Client, next_id: &AtomicI64, body: &str) -> anyhow::Result<()> {
    let id = next_id.fetch_add(1, Ordering::Relaxed);
    let params = [WireValue::Integer(id), WireValue::Text(body.to_string())];
    match client.sql(TENANT, INSERT, &params, "").await? {
        SqlOutcome::Written(outcome) if outcome.rows_affected == 1 => Ok(()),
        other => bail!("inserting row {id} answered {other:?}"),
    }
}

/// One client looking rows up by key (ids below `written`, spread by a fixed stride) for
/// about `slice`; each answer must be the one row.
async fn lookups(client: &Client, written: i64, slice: Duration) -> anyhow::Result<Slice> {
    /// Coprime with any table size here: successive lookups land on unrelated rows.
    const LOOKUP_STRIDE: i64 = 7_919;
    let mut latencies = Latencies::default();
    let start = Instant::now();
    let mut id = 0;
    while start.elapsed() < slice {
        id = (id + LOOKUP_STRIDE) % written.max(1);
        let sent = Instant::now();
        let outcome = client
            .sql(TENANT, LOOKUP, &[WireValue::Integer(id)], "")
            .await?;
        latencies.record(sent.elapsed());
        match outcome {
            SqlOutcome::Rows(rows) if rows.rows.len() == 1 => {}
            other => bail!("looking up row {id} answered {other:?}"),
        }
    }
    Ok(Slice {
        events: latencies.len(),
        elapsed: start.elapsed(),
        latencies,
    })
}

/// One client appending `REQUEST_EVENTS` events per request for about `slice`.
async fn append_batched(client: &Client, slice: Duration) -> anyhow::Result<Slice> {
    let batch: Vec<WireEvent> = (0..REQUEST_EVENTS).map(|_| event()).collect();
    let mut latencies = Latencies::default();
    let start = Instant::now();
    let mut events = 0;
    while start.elapsed() < slice {
        let sent = Instant::now();
        let outcome = client.append(TENANT, batch.clone(), "").await?;
        latencies.record(sent.elapsed());
        if outcome.rows_affected != REQUEST_EVENTS as u64 {
            bail!("an append of {REQUEST_EVENTS} events answered {outcome:?}");
        }
        events += REQUEST_EVENTS;
    }
    Ok(Slice {
        events,
        elapsed: start.elapsed(),
        latencies,
    })
}

/// A `base` such that `base .. base + count` are free UDP ports on loopback now (QUIC).
fn free_udp_ports(count: u16) -> anyhow::Result<u16> {
    let seed = u64::from(std::process::id())
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos() as u64;
    for attempt in 0..PORT_ATTEMPTS_MAX {
        let base = PORT_FIRST
            + (seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(attempt * 7919)
                % u64::from(PORT_SPAN)) as u16;
        let free = (0..count)
            .all(|offset| std::net::UdpSocket::bind(("127.0.0.1", base + offset)).is_ok());
        if free {
            return Ok(base);
        }
    }
    bail!("found no block of {count} free UDP ports on loopback in {PORT_ATTEMPTS_MAX} attempts")
}

/// A `kimberlite` process writing its stdout and stderr to a log file; killed if dropped
/// while still running.
struct Process {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Process {
    fn spawn(name: &str, mut command: Command, log: &Path) -> anyhow::Result<Process> {
        let file = std::fs::File::create(log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let child = command
            // Plain logs: they are read back into error messages.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(file.try_clone()?))
            .stderr(Stdio::from(file))
            .spawn()
            .with_context(|| format!("cannot start the {name}: {command:?}"))?;
        Ok(Process {
            name: name.to_string(),
            child: Some(child),
            log: log.to_path_buf(),
        })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let text = self.log();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "--- {} ({})\n{}",
            self.name,
            self.log.display(),
            lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
        )
    }

    fn child(&self) -> &Child {
        self.child.as_ref().expect("a process is waited for once")
    }

    /// The exit status, if the process has exited.
    fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .expect("a process is waited for once")
            .try_wait()
            .ok()
            .flatten()
    }

    /// An error with its log if the process has exited.
    fn check_running(&mut self) -> anyhow::Result<()> {
        match self.try_wait() {
            Some(status) => bail!(
                "the {} exited ({status}); its log:\n{}",
                self.name,
                self.log_tail()
            ),
            None => Ok(()),
        }
    }

    /// CPU time (user + system, all its threads, live and exited) from /proc/PID/stat.
    fn cpu(&self) -> anyhow::Result<Duration> {
        let path = format!("/proc/{}/stat", self.child().id());
        let stat = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {path} (the {} exited?)", self.name))?;
        // After the command name in parentheses: state is field 3, utime 14, stime 15.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |index: usize| -> anyhow::Result<u64> {
            fields
                .get(index - 3)
                .and_then(|field| field.parse().ok())
                .with_context(|| format!("{path} has no field {index}: {stat}"))
        };
        let ticks = ticks(14)? + ticks(15)?;
        Ok(Duration::from_millis(ticks * 1000 / USER_HZ))
    }

    /// Sends SIGTERM (a clean stop: synced logs, signed checkpoints).
    fn terminate(&self) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child().id().to_string()])
            .status()
            .context("cannot run `kill`")?;
        if !status.success() {
            bail!("`kill -TERM` of the {} failed ({status})", self.name);
        }
        Ok(())
    }

    /// Waits for the exit that `terminate` asked for; it must be a success.
    async fn wait_clean(mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_millis(STOP_WAIT_MS);
        loop {
            if let Some(status) = self.try_wait() {
                self.child = None;
                if !status.success() {
                    bail!(
                        "the {} did not stop cleanly ({status}); its log:\n{}",
                        self.name,
                        self.log_tail()
                    );
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the {} did not exit within {STOP_WAIT_MS} ms of SIGTERM; its log:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
