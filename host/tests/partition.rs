//! A network partition of a 3-replica cluster, on a small real network: each replica process
//! runs in its own network namespace with one veth into a bridge that lives in a "switch"
//! namespace, and every client command runs in a fourth namespace on that bridge (the root
//! namespace's networking is never touched). Every link carries a `tc` qdisc: `netem delay`,
//! or on a kernel built without netem a `tbf` rate limit.
//!
//! The primary is cut off with a `tc` qdisc that drops every packet, on both ends of its veth.
//! Then the majority elects a new primary and keeps acknowledging writes made through
//! `client.toml`, while a client inside the cut-off primary's namespace, configured with that
//! replica only, gets no write acknowledged: once right after the cut (the old primary still
//! believes it leads) and once after the election. After the partition heals the old primary
//! rejoins: all replicas agree on the committed op, the minority's rows are nowhere, every
//! acknowledged row is there, and after a clean stop every replica's log segments are
//! byte-identical and `kimberlite verify` passes on each.
//!
//! Needs root (CAP_NET_ADMIN) and iproute2; without them it prints `skipped: …` and passes.
//! Every wait has a named bound and fails saying what it waited for, with each replica's log.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_kimberlite");
const REPLICAS: u8 = 3;
/// The test network's /24: replica `i` is `.i+1`, the client host is `.100`.
const SUBNET: &str = "10.231.0";
const SUBNET_PREFIX_BITS: u8 = 24;
const CLIENT_HOST_OCTET: u8 = 100;
/// Every namespace has its own ports, so a fixed base port collides with nothing.
const BASE_PORT: u16 = 7400;
/// Small VSR sizes, so the run crosses checkpoints while the old primary is cut off.
const CHECKPOINT_INTERVAL_OPS: u64 = 8;
const JOURNAL_SLOTS: u64 = 32;
const TENANT: &str = "clinic";
const REASON: &str = "partition test";
/// Inserts before the cut, while the primary is cut off, and after the heal; each one must be
/// acknowledged.
const WRITES_BEFORE_CUT: i64 = 10;
const WRITES_DURING_CUT: i64 = 8;
const WRITES_AFTER_HEAL: i64 = 5;
/// Rows the cut-off primary is asked to write: never acknowledged, never stored.
const MARKER_RIGHT_AFTER_CUT: i64 = 1_000_001;
const MARKER_AFTER_ELECTION: i64 = 1_000_002;

/// Bound on the first election and the admin token's bootstrap.
const SERVING_WAIT_MAX: Duration = Duration::from_secs(60);
/// Bound on the majority electing a new primary once the old one is cut off.
const ELECTION_WAIT_MAX: Duration = Duration::from_secs(60);
/// Bound on every replica agreeing on the committed op (after the heal, before the stop).
const CONVERGENCE_WAIT_MAX: Duration = Duration::from_secs(60);
/// One CLI command through `client.toml`: above the client's own failover bound (60 s).
const COMMAND_WAIT_MAX: Duration = Duration::from_secs(75);
/// One `cluster status`: a replica that is cut off costs its 5 s connect timeout.
const STATUS_WAIT_MAX: Duration = Duration::from_secs(30);
/// The minority's write: the replica answers within its own 10 s request timeout, or never
/// (then the client is killed at this bound, and the write counts as not acknowledged).
const MINORITY_WRITE_WAIT_MAX: Duration = Duration::from_secs(30);
/// One `ip`, `tc` or `cluster init` command.
const SETUP_COMMAND_WAIT_MAX: Duration = Duration::from_secs(20);
/// SIGTERM to exit: the replica syncs its logs and signs its checkpoints.
const STOP_WAIT_MAX: Duration = Duration::from_secs(30);
/// One offline `kimberlite verify`.
const VERIFY_WAIT_MAX: Duration = Duration::from_secs(60);
/// Pause between two looks while waiting.
const POLL_PAUSE: Duration = Duration::from_millis(250);
/// Lines of each replica's log a failure shows.
const LOG_TAIL_LINES: usize = 40;

// ---------------------------------------------------------------------------------------------
// Commands with a bound.

/// A command's outcome: its exit status (`None`: killed at its bound), output and duration.
struct Run {
    what: String,
    status: Option<ExitStatus>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl Run {
    fn succeeded(&self) -> bool {
        self.status.is_some_and(|status| status.success())
    }

    fn describe(&self) -> String {
        let ended = match self.status {
            Some(status) => format!("exited with {status}"),
            None => "was killed at its bound".to_string(),
        };
        format!(
            "`{}` {ended} after {:.1?}\n  stdout: {}\n  stderr: {}",
            self.what,
            self.elapsed,
            self.stdout.trim(),
            self.stderr.trim()
        )
    }
}

/// A command started and not waited for yet.
struct Pending {
    what: String,
    child: Child,
    stdout: JoinHandle<String>,
    stderr: JoinHandle<String>,
    started: Instant,
}

fn spawn(mut command: Command) -> std::io::Result<Pending> {
    let what = std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let started = Instant::now();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped")));
    Ok(Pending {
        what,
        child,
        stdout,
        stderr,
        started,
    })
}

impl Pending {
    /// Waits until the command exits, or kills it `wait_max` after it started.
    fn finish(mut self, wait_max: Duration) -> Run {
        let deadline = self.started + wait_max;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for a child") {
                break Some(status);
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Run {
            what: self.what,
            status,
            stdout: self.stdout.join().unwrap_or_default(),
            stderr: self.stderr.join().unwrap_or_default(),
            elapsed: self.started.elapsed(),
        }
    }
}

fn run(command: Command, wait_max: Duration) -> std::io::Result<Run> {
    Ok(spawn(command)?.finish(wait_max))
}

fn command(program: &str, args: &[&str]) -> Command {
    let mut command = Command::new(program);
    command.args(args);
    command
}

// ---------------------------------------------------------------------------------------------
// The network.

/// How links are shaped: `netem` where the kernel has it, else a token bucket (`tbf`).
#[derive(Clone, Copy, Debug)]
enum Shaping {
    Netem,
    TokenBucket,
}

impl Shaping {
    /// The qdisc of a healthy link.
    fn healthy(self) -> &'static [&'static str] {
        match self {
            Shaping::Netem => &["netem", "delay", "2ms"],
            Shaping::TokenBucket => &["tbf", "rate", "100mbit", "burst", "64kb", "latency", "20ms"],
        }
    }

    /// The qdisc of a cut link: every packet is dropped.
    fn cut(self) -> &'static [&'static str] {
        match self {
            Shaping::Netem => &["netem", "loss", "100%"],
            // A one-byte bucket: tbf drops every packet larger than its bucket, and a
            // segmented one finds a one-byte queue.
            Shaping::TokenBucket => &["tbf", "rate", "8bit", "burst", "1b", "limit", "1"],
        }
    }
}

/// A host on the test network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Host {
    Replica(u8),
    Client,
}

const HOSTS: [Host; REPLICAS as usize + 1] = [
    Host::Replica(0),
    Host::Replica(1),
    Host::Replica(2),
    Host::Client,
];

/// The namespaces of one test run, deleted (with their veths and the bridge) on drop.
struct Network {
    /// `kbpart<pid>`: every namespace name starts with it.
    tag: String,
    /// Created so far, deleted in reverse order.
    namespaces: Vec<String>,
    shaping: Shaping,
}

/// The veth end inside every host's namespace.
const HOST_INTERFACE: &str = "eth0";
const BRIDGE: &str = "br0";

impl Network {
    fn switch(&self) -> String {
        format!("{}-switch", self.tag)
    }

    fn namespace(&self, host: Host) -> String {
        match host {
            Host::Replica(replica) => format!("{}-r{replica}", self.tag),
            Host::Client => format!("{}-client", self.tag),
        }
    }

    /// The veth end in the switch namespace (names there are private to this run).
    fn port(host: Host) -> String {
        match host {
            Host::Replica(replica) => format!("port-r{replica}"),
            Host::Client => "port-client".to_string(),
        }
    }

    fn address(host: Host) -> String {
        match host {
            Host::Replica(replica) => format!("{SUBNET}.{}", replica + 1),
            Host::Client => format!("{SUBNET}.{CLIENT_HOST_OCTET}"),
        }
    }

    /// Builds the network, or says why this process cannot (then the test is skipped).
    fn create() -> Result<Network, String> {
        if !running_as_root() {
            return Err("not root: network namespaces need CAP_NET_ADMIN".into());
        }
        let mut network = Network {
            tag: format!("kbpart{}", std::process::id()),
            namespaces: Vec::new(),
            shaping: Shaping::Netem,
        };
        let switch = network.switch();
        let probe = run(
            command("ip", &["netns", "add", &switch]),
            SETUP_COMMAND_WAIT_MAX,
        )
        .map_err(|error| format!("cannot run `ip` (install iproute2): {error}"))?;
        if !probe.succeeded() {
            return Err(format!("`ip netns add` failed: {}", probe.describe()));
        }
        network.namespaces.push(switch.clone());
        network.ip(&[
            "-n", &switch, "link", "add", "name", BRIDGE, "type", "bridge",
        ]);
        network.ip(&["-n", &switch, "link", "set", BRIDGE, "up"]);
        for host in HOSTS {
            let namespace = network.namespace(host);
            network.ip(&["netns", "add", &namespace]);
            network.namespaces.push(namespace.clone());
            let port = Network::port(host);
            network.ip(&[
                "-n",
                &switch,
                "link",
                "add",
                "name",
                &port,
                "type",
                "veth",
                "peer",
                "name",
                HOST_INTERFACE,
                "netns",
                &namespace,
            ]);
            network.ip(&["-n", &switch, "link", "set", &port, "master", BRIDGE]);
            network.ip(&["-n", &switch, "link", "set", &port, "up"]);
            let address = format!("{}/{SUBNET_PREFIX_BITS}", Network::address(host));
            network.ip(&[
                "-n",
                &namespace,
                "addr",
                "add",
                &address,
                "dev",
                HOST_INTERFACE,
            ]);
            network.ip(&["-n", &namespace, "link", "set", HOST_INTERFACE, "up"]);
            network.ip(&["-n", &namespace, "link", "set", "lo", "up"]);
        }
        let first = network.namespace(HOSTS[0]);
        let netem = network.tc(&first, HOST_INTERFACE, "add", Shaping::Netem.healthy());
        if !netem.succeeded() {
            eprintln!(
                "partition: this kernel has no netem ({}); links are shaped with tbf instead",
                netem.stderr.trim()
            );
            network.shaping = Shaping::TokenBucket;
        }
        for host in HOSTS {
            let namespace = network.namespace(host);
            let healthy = network.shaping.healthy();
            if host != HOSTS[0] || !netem.succeeded() {
                network.tc_or_panic(&namespace, HOST_INTERFACE, "add", healthy);
            }
            network.tc_or_panic(&switch, &Network::port(host), "add", healthy);
        }
        Ok(network)
    }

    fn ip(&self, args: &[&str]) {
        let done = run(command("ip", args), SETUP_COMMAND_WAIT_MAX).expect("run ip");
        assert!(
            done.succeeded(),
            "setting up the network: {}",
            done.describe()
        );
    }

    fn tc(&self, namespace: &str, device: &str, verb: &str, qdisc: &[&str]) -> Run {
        let mut args = vec!["-n", namespace, "qdisc", verb, "dev", device, "root"];
        args.extend_from_slice(qdisc);
        run(command("tc", &args), SETUP_COMMAND_WAIT_MAX).expect("run tc")
    }

    fn tc_or_panic(&self, namespace: &str, device: &str, verb: &str, qdisc: &[&str]) {
        let done = self.tc(namespace, device, verb, qdisc);
        assert!(done.succeeded(), "shaping a link: {}", done.describe());
    }

    /// Sets the qdisc of both ends of `host`'s veth: what it sends, and what it receives.
    fn shape(&self, host: Host, qdisc: &[&str]) {
        self.tc_or_panic(&self.namespace(host), HOST_INTERFACE, "replace", qdisc);
        self.tc_or_panic(&self.switch(), &Network::port(host), "replace", qdisc);
    }

    fn cut(&self, host: Host) {
        self.shape(host, self.shaping.cut());
    }

    fn heal(&self, host: Host) {
        self.shape(host, self.shaping.healthy());
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for namespace in self.namespaces.iter().rev() {
            let deleted = run(
                command("ip", &["netns", "del", namespace]),
                SETUP_COMMAND_WAIT_MAX,
            );
            if !deleted.as_ref().is_ok_and(Run::succeeded) {
                eprintln!("partition: could not delete network namespace {namespace}");
            }
        }
    }
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

// ---------------------------------------------------------------------------------------------
// The cluster.

/// One replica as `kimberlite cluster status` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Standing {
    replica: u8,
    /// `primary` for the replica accepting requests, else its VSR status.
    status: String,
    view: u64,
    primary: u8,
    op: u64,
    committed: u64,
}

/// What `cluster status` said of one replica: its standing, or why it could not be reached.
type Seen = (u8, Result<Standing, String>);

fn parse_status(stdout: &str) -> Result<Vec<Seen>, String> {
    let mut seen = Vec::new();
    for line in stdout
        .lines()
        .skip(1)
        .filter(|line| !line.trim().is_empty())
    {
        let unreadable = || format!("unreadable status line `{line}`");
        let fields: Vec<&str> = line.split_whitespace().collect();
        let replica: u8 = fields
            .first()
            .and_then(|field| field.parse().ok())
            .ok_or_else(unreadable)?;
        if let Some((_, error)) = line.split_once(" down: ") {
            seen.push((replica, Err(error.to_string())));
            continue;
        }
        let [_, _, status, view, primary, op, committed] = fields[..] else {
            return Err(unreadable());
        };
        let number = |field: &str| field.parse::<u64>().map_err(|_| unreadable());
        seen.push((
            replica,
            Ok(Standing {
                replica,
                status: status.to_string(),
                view: number(view)?,
                primary: primary.parse().map_err(|_| unreadable())?,
                op: number(op)?,
                committed: number(committed)?,
            }),
        ));
    }
    if seen.len() != REPLICAS as usize {
        return Err(format!("status lists {} replicas: {stdout}", seen.len()));
    }
    Ok(seen)
}

/// Every replica answered, exactly one accepts requests, and all are in its view with the same
/// op, all of it committed: `(primary, view, committed)`.
fn agreement(seen: &[Seen]) -> Result<(u8, u64, u64), String> {
    let standings: Vec<&Standing> = seen
        .iter()
        .filter_map(|(_, standing)| standing.as_ref().ok())
        .collect();
    let primaries: Vec<&&Standing> = standings
        .iter()
        .filter(|standing| standing.status == "primary")
        .collect();
    // Agreement on (view, primary, op, committed): nothing uncommitted is left anywhere.
    let positions: BTreeSet<(u64, u8, u64, u64)> = standings
        .iter()
        .map(|standing| {
            (
                standing.view,
                standing.primary,
                standing.op,
                standing.committed,
            )
        })
        .collect();
    match (primaries.as_slice(), positions.len()) {
        ([primary], 1) if standings.len() == REPLICAS as usize => {
            Ok((primary.replica, primary.view, primary.committed))
        }
        _ => Err(format!("{seen:?}")),
    }
}

struct Cluster {
    base: PathBuf,
    processes: Vec<Option<Child>>,
    /// Dropped after the processes are killed (fields drop after `Drop::drop`).
    network: Network,
    _directory: tempfile::TempDir,
}

impl Cluster {
    fn init(network: Network) -> Cluster {
        let directory = tempfile::tempdir().expect("a temporary directory");
        let base = directory.path().join("cluster");
        let hosts: Vec<String> = (0..REPLICAS)
            .map(|replica| Network::address(Host::Replica(replica)))
            .collect();
        let mut init = command(BINARY, &["cluster", "init"]);
        init.args(["--replicas", &REPLICAS.to_string()])
            .args(["--host", &hosts.join(",")])
            .args(["--base-port", &BASE_PORT.to_string()])
            .args([
                "--checkpoint-interval-ops",
                &CHECKPOINT_INTERVAL_OPS.to_string(),
            ])
            .args(["--journal-slots", &JOURNAL_SLOTS.to_string()])
            .arg("--data-dir")
            .arg(&base);
        let done = run(init, SETUP_COMMAND_WAIT_MAX).expect("run cluster init");
        assert!(done.succeeded(), "{}", done.describe());
        Cluster {
            base,
            processes: (0..REPLICAS).map(|_| None).collect(),
            network,
            _directory: directory,
        }
    }

    fn dir(&self, replica: u8) -> PathBuf {
        self.base.join(format!("replica-{replica}"))
    }

    /// `client.toml` of `cluster init`: every replica, and the admin token.
    fn cluster_config(&self) -> PathBuf {
        self.base.join("client.toml")
    }

    /// A client config naming `replica` alone (its address and certificate pin).
    fn single_replica_config(&self, replica: u8) -> PathBuf {
        let text = std::fs::read_to_string(self.cluster_config()).expect("read client.toml");
        let config: toml::Table = text.parse().expect("client.toml is TOML");
        let endpoint = &config["replicas"].as_array().expect("replicas")[replica as usize];
        let mut single = toml::Table::new();
        single.insert("address".into(), endpoint["address"].clone());
        single.insert("server_name".into(), "localhost".into());
        single.insert(
            "certificate_sha256".into(),
            endpoint["certificate_sha256"].clone(),
        );
        single.insert("admin_token".into(), config["admin_token"].clone());
        let path = self.base.join(format!("replica-{replica}-only.toml"));
        std::fs::write(&path, toml::to_string(&single).expect("TOML")).expect("write config");
        path
    }

    fn start(&mut self, replica: u8) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir(replica).join("replica.log"))
            .expect("open the replica log");
        let namespace = self.network.namespace(Host::Replica(replica));
        let mut start = command("ip", &["netns", "exec", &namespace, BINARY, "start"]);
        start
            .args(["--replica", &replica.to_string(), "--data-dir"])
            .arg(self.dir(replica))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("clone the log file")))
            .stderr(Stdio::from(log));
        // `ip netns exec` execs the command: the child is the replica itself.
        self.processes[replica as usize] = Some(start.spawn().expect("start a replica"));
    }

    /// SIGTERM, and the replica must exit 0 (synced logs, signed checkpoints).
    fn stop(&mut self, replica: u8) {
        let mut child = self.processes[replica as usize]
            .take()
            .expect("a running replica");
        let signal = run(
            command("kill", &["-TERM", &child.id().to_string()]),
            SETUP_COMMAND_WAIT_MAX,
        )
        .expect("run kill");
        assert!(signal.succeeded(), "{}", signal.describe());
        let deadline = Instant::now() + STOP_WAIT_MAX;
        loop {
            if let Some(status) = child.try_wait().expect("wait for a replica") {
                if !status.success() {
                    self.fail(&format!(
                        "replica {replica} did not stop cleanly after SIGTERM ({status})"
                    ));
                }
                return;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                self.fail(&format!(
                    "replica {replica} did not exit within {STOP_WAIT_MAX:?} of SIGTERM"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn logs(&self) -> String {
        (0..REPLICAS)
            .map(|replica| {
                let text = std::fs::read_to_string(self.dir(replica).join("replica.log"))
                    .unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                format!(
                    "--- replica {replica} (last {LOG_TAIL_LINES} lines of its log)\n{}",
                    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn fail(&self, message: &str) -> ! {
        panic!("{message}\n{}", self.logs())
    }

    /// Starts `kimberlite --config CONFIG ARGS…` inside `host`'s namespace.
    fn cli(&self, host: Host, config: &Path, args: &[&str]) -> Pending {
        let namespace = self.network.namespace(host);
        let mut cli = command("ip", &["netns", "exec", &namespace, BINARY, "--config"]);
        cli.arg(config).args(args);
        spawn(cli).expect("run the kimberlite CLI")
    }

    /// `cluster status` from the client's namespace.
    fn status(&self) -> Result<Vec<Seen>, String> {
        let done = self
            .cli(Host::Client, &self.cluster_config(), &["cluster", "status"])
            .finish(STATUS_WAIT_MAX);
        if !done.succeeded() {
            return Err(done.describe());
        }
        parse_status(&done.stdout)
    }

    /// One SQL statement through `client.toml` from the client's namespace.
    fn sql(&self, statement: &str) -> Run {
        self.cli(
            Host::Client,
            &self.cluster_config(),
            &["sql", "--tenant", TENANT, "--reason", REASON, statement],
        )
        .finish(COMMAND_WAIT_MAX)
    }

    /// Inserts row `id` through `client.toml`; the write must be acknowledged.
    fn insert_acknowledged(&self, id: i64, when: &str) {
        let done = self.sql(&insert_statement(id, "majority"));
        if !done.succeeded() {
            self.fail(&format!(
                "insert {id} {when} was not acknowledged: {}",
                done.describe()
            ));
        }
    }

    /// Polls `check` until it gives a value, at most `bound`; fails with `what` and the last
    /// observation.
    fn wait_for<T>(
        &self,
        what: &str,
        bound: Duration,
        mut check: impl FnMut() -> Result<T, String>,
    ) -> T {
        let deadline = Instant::now() + bound;
        loop {
            match check() {
                Ok(value) => return value,
                Err(last) if Instant::now() >= deadline => {
                    self.fail(&format!("waited {bound:?} for {what}; last seen: {last}"))
                }
                Err(_) => std::thread::sleep(POLL_PAUSE),
            }
        }
    }

    /// Waits until every replica answers the client, in one view, at one committed op.
    fn converged(&self, when: &str) -> (u8, u64, u64) {
        self.wait_for(
            &format!("all replicas to agree on the primary, view and committed op {when}"),
            CONVERGENCE_WAIT_MAX,
            || agreement(&self.status()?),
        )
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

fn insert_statement(id: i64, side: &str) -> String {
    format!("INSERT INTO visits VALUES ({id}, '{side} {id}')")
}

fn segments(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        for entry in std::fs::read_dir(&path).expect("read a data directory") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|extension| extension == "seg") {
                found.push((
                    path.strip_prefix(dir).expect("under dir").to_path_buf(),
                    std::fs::read(&path).expect("read a segment"),
                ));
            }
        }
    }
    found.sort();
    found
}

// ---------------------------------------------------------------------------------------------
// The test.

#[test]
fn a_cut_off_primary_is_replaced_and_its_minority_acknowledges_no_write() {
    let started = Instant::now();
    let network = match Network::create() {
        Ok(network) => network,
        Err(reason) => {
            eprintln!("skipped: partition test: {reason}");
            return;
        }
    };
    eprintln!(
        "partition: network {} up ({:?} links)",
        network.tag, network.shaping
    );
    let mut cluster = Cluster::init(network);
    for replica in 0..REPLICAS {
        cluster.start(replica);
    }
    let config = cluster.cluster_config();
    cluster.wait_for(
        "the cluster to serve the admin (`tenant list` through client.toml)",
        SERVING_WAIT_MAX,
        || {
            let done = cluster
                .cli(Host::Client, &config, &["tenant", "list"])
                .finish(COMMAND_WAIT_MAX);
            if done.succeeded() {
                Ok(())
            } else {
                Err(done.describe())
            }
        },
    );
    let tenant = cluster
        .cli(
            Host::Client,
            &config,
            &["tenant", "create", TENANT, "--reason", REASON],
        )
        .finish(COMMAND_WAIT_MAX);
    if !tenant.succeeded() {
        cluster.fail(&tenant.describe());
    }
    let table = cluster.sql("CREATE TABLE visits (id BIGINT PRIMARY KEY, note TEXT)");
    if !table.succeeded() {
        cluster.fail(&table.describe());
    }
    let mut acknowledged = BTreeSet::new();
    for id in 1..=WRITES_BEFORE_CUT {
        cluster.insert_acknowledged(id, "before the cut");
        acknowledged.insert(id);
    }
    let (old_primary, old_view, _) = cluster.converged("before the cut");
    eprintln!(
        "partition: serving after {:.1?}; replica {old_primary} leads view {old_view}",
        started.elapsed()
    );

    // Cut the primary off, and ask it for a write at once, while it still believes it leads.
    cluster.network.cut(Host::Replica(old_primary));
    let cut_at = Instant::now();
    let minority_config = cluster.single_replica_config(old_primary);
    let minority_sql = |id: i64| {
        cluster.cli(
            Host::Replica(old_primary),
            &minority_config,
            &[
                "sql",
                "--tenant",
                TENANT,
                "--reason",
                REASON,
                &insert_statement(id, "minority"),
            ],
        )
    };
    let right_after_cut = minority_sql(MARKER_RIGHT_AFTER_CUT);

    // (a) The majority elects another primary and keeps acknowledging writes.
    let (new_primary, new_view) = cluster.wait_for(
        &format!(
            "the majority to elect a primary other than {old_primary} in a view after {old_view}, \
             with replica {old_primary} down from the client's namespace"
        ),
        ELECTION_WAIT_MAX,
        || {
            let seen = cluster.status()?;
            let old_down = seen
                .iter()
                .any(|(replica, standing)| *replica == old_primary && standing.is_err());
            seen.iter()
                .filter_map(|(_, standing)| standing.as_ref().ok())
                .find(|standing| {
                    old_down
                        && standing.status == "primary"
                        && standing.replica != old_primary
                        && standing.view > old_view
                })
                .map(|standing| (standing.replica, standing.view))
                .ok_or_else(|| format!("{seen:?}"))
        },
    );
    eprintln!(
        "partition: replica {new_primary} leads view {new_view} {:.1?} after the cut",
        cut_at.elapsed()
    );
    for id in WRITES_BEFORE_CUT + 1..=WRITES_BEFORE_CUT + WRITES_DURING_CUT {
        cluster.insert_acknowledged(id, "while the old primary is cut off");
        acknowledged.insert(id);
    }
    eprintln!(
        "partition: {WRITES_DURING_CUT} writes acknowledged by the majority {:.1?} after the cut",
        cut_at.elapsed()
    );

    // (b) The minority acknowledges no write: neither the one sent right after the cut nor
    // one sent after the election.
    let minority_writes = [
        ("right after the cut", right_after_cut),
        ("after the election", minority_sql(MARKER_AFTER_ELECTION)),
    ];
    for (when, pending) in minority_writes {
        let done = pending.finish(MINORITY_WRITE_WAIT_MAX);
        if done.succeeded() {
            cluster.fail(&format!(
                "the cut-off replica {old_primary} acknowledged a write sent {when}: {}",
                done.describe()
            ));
        }
        eprintln!(
            "partition: minority write {when} refused: {}",
            done.describe()
        );
    }

    // (b') Nor does it answer a read: it still believes it leads, but no quorum vouches for
    // its view, so it cannot know that it has every acknowledged write (it has not: the
    // majority acknowledged WRITES_DURING_CUT more).
    let minority_read = cluster
        .cli(
            Host::Replica(old_primary),
            &minority_config,
            &[
                "sql",
                "--tenant",
                TENANT,
                "--format",
                "csv",
                "SELECT count(*) FROM visits",
            ],
        )
        .finish(MINORITY_WRITE_WAIT_MAX);
    if minority_read.succeeded() {
        cluster.fail(&format!(
            "the cut-off replica {old_primary} answered a read with state missing acknowledged writes: {}",
            minority_read.describe()
        ));
    }
    eprintln!(
        "partition: minority read refused: {}",
        minority_read.describe()
    );

    // (c) Heal: the old primary rejoins and every replica agrees.
    cluster.network.heal(Host::Replica(old_primary));
    let healed_at = Instant::now();
    let (primary, view, committed) = cluster.converged("after the heal");
    eprintln!(
        "partition: healed; replica {primary} leads view {view}, all at committed op {committed} \
         {:.1?} after the heal",
        healed_at.elapsed()
    );
    let first_after_heal = WRITES_BEFORE_CUT + WRITES_DURING_CUT + 1;
    for id in first_after_heal..first_after_heal + WRITES_AFTER_HEAL {
        cluster.insert_acknowledged(id, "after the heal");
        acknowledged.insert(id);
    }
    cluster.converged("after the writes that follow the heal");

    let select = cluster
        .cli(
            Host::Client,
            &config,
            &[
                "sql",
                "--tenant",
                TENANT,
                "--format",
                "csv",
                "SELECT id FROM visits",
            ],
        )
        .finish(COMMAND_WAIT_MAX);
    if !select.succeeded() {
        cluster.fail(&select.describe());
    }
    let stored: BTreeSet<i64> = select
        .stdout
        .lines()
        .skip(1)
        .map(|line| {
            line.trim()
                .parse()
                .unwrap_or_else(|_| panic!("an id, not `{line}`"))
        })
        .collect();
    for marker in [MARKER_RIGHT_AFTER_CUT, MARKER_AFTER_ELECTION] {
        assert!(
            !stored.contains(&marker),
            "the minority's row {marker} is in the table: {stored:?}"
        );
    }
    let lost: Vec<&i64> = acknowledged.difference(&stored).collect();
    assert!(lost.is_empty(), "acknowledged rows lost: {lost:?}");
    let unexplained: Vec<&i64> = stored.difference(&acknowledged).collect();
    assert!(unexplained.is_empty(), "rows nobody wrote: {unexplained:?}");

    for replica in 0..REPLICAS {
        cluster.stop(replica);
    }
    let reference = segments(&cluster.dir(0).join("node"));
    assert!(
        reference.len() >= 2,
        "system and tenant logs: {:?}",
        reference.iter().map(|(path, _)| path).collect::<Vec<_>>()
    );
    for replica in 0..REPLICAS {
        let node = cluster.dir(replica).join("node");
        let here = segments(&node);
        assert_eq!(
            here.iter().map(|(path, _)| path).collect::<Vec<_>>(),
            reference.iter().map(|(path, _)| path).collect::<Vec<_>>(),
            "replica {replica} has other segment files than replica 0"
        );
        for ((path, bytes), (_, expected)) in here.iter().zip(&reference) {
            assert!(
                bytes == expected,
                "replica {replica}: {} differs from replica 0's",
                path.display()
            );
        }
        let mut verify = command(BINARY, &["verify", "--data-dir"]);
        verify.arg(&node);
        let done = run(verify, VERIFY_WAIT_MAX).expect("run verify");
        assert!(
            done.succeeded(),
            "verify of replica {replica}: {}",
            done.describe()
        );
    }
    eprintln!(
        "partition: passed in {:.1?} ({} rows, segments identical, verify clean)",
        started.elapsed(),
        stored.len()
    );
}
