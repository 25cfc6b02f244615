//! `kimberlite-bench`: every speed claim, measured against the machine's own limit or a
//! real peer in the same run (these machines are noisy: read ratios, not absolutes).
//!
//! Each suite prints a readable table and, as its last line, one JSON object
//! `{"suite": …, "ratios": {…}, "figures": {…}}`. See bench/README.md for the method of
//! each suite.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::time::{Duration, Instant};

mod append;
mod cluster;
mod limit;
mod peers;
mod postgres;
mod projection;
mod query;
mod quota;
mod replicated;
mod stats;
mod verify;

#[derive(Debug, Parser)]
#[command(
    name = "kimberlite-bench",
    about = "Kimberlite benchmarks (see bench/README.md)"
)]
struct Cli {
    /// A small version of each suite, well under a minute (smoke checks, CI).
    #[arg(long, global = true)]
    quick: bool,
    /// Directory for benchmark data (default: a temporary directory on the same disk as /tmp).
    #[arg(long, global = true)]
    dir: Option<std::path::PathBuf>,
    #[command(subcommand)]
    suite: Suite,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
enum Suite {
    /// The machine's ceiling for the durable append path, with no database.
    Limit,
    /// Durable appends to one embedded node: direct log API and over QUIC.
    Append,
    /// The append and point-in-time workloads on PostgreSQL with an audit-chain trigger.
    Postgres,
    /// Point lookups, current vs AS OF POSITION at several depths of history, over QUIC.
    Query,
    /// Offline verification throughput of a partition, vs the limit's hashing rate.
    Verify,
    /// The account-balances projection as Wasm vs the same logic as native Rust.
    Projection,
    /// The VSR replica driver, 3 replicas vs 1, next to a 3-member etcd cluster.
    Replicated,
    /// The `kimberlite` binary: a single node vs a cluster of 3 replica processes.
    Cluster,
    /// One tenant flooding a node, another's lookup latency, with and without quotas.
    Quota,
    /// Every suite whose prerequisites are present.
    All,
}

/// Shared settings of a run.
#[derive(Debug, Clone)]
pub struct Settings {
    pub quick: bool,
    pub dir: std::path::PathBuf,
}

/// How long each measured phase runs, full and quick.
const PHASE_FULL_MS: u64 = 8_000;
const PHASE_QUICK_MS: u64 = 1_500;
/// Rounds per paired phase, full and quick (a phase's time is split over its rounds).
const ROUNDS_FULL: usize = 8;
const ROUNDS_QUICK: usize = 3;

impl Settings {
    /// How long each measured phase runs.
    pub fn phase(&self) -> Duration {
        Duration::from_millis(if self.quick {
            PHASE_QUICK_MS
        } else {
            PHASE_FULL_MS
        })
    }

    /// Rounds of the suites that alternate slices of two systems (or of a system and the
    /// limit), so that the noise of this shared machine falls on both sides of a ratio.
    pub fn rounds(&self) -> usize {
        self.pick(ROUNDS_FULL, ROUNDS_QUICK)
    }

    /// How long each side runs in one round.
    pub fn slice(&self) -> Duration {
        self.phase() / self.rounds() as u32
    }

    /// `full` in a full run, `quick` with `--quick`.
    pub fn pick<T>(&self, full: T, quick: T) -> T {
        if self.quick { quick } else { full }
    }
}

/// The record size every append-path suite uses.
pub const EVENT_BYTES: usize = 256;

/// Prints a suite's machine-readable summary line (the last line of every suite), keys in
/// the order the issue gives them: `{"suite": …, "ratios": {…}, "figures": {…}}`.
pub fn summary(
    suite: &str,
    ratios: impl Into<serde_json::Value>,
    figures: impl Into<serde_json::Value>,
) {
    let (ratios, figures): (serde_json::Value, serde_json::Value) = (ratios.into(), figures.into());
    println!(
        "{{\"suite\":{},\"ratios\":{ratios},\"figures\":{figures}}}",
        serde_json::Value::from(suite)
    );
}

/// Runs `step` repeatedly for about `phase`; returns (iterations, elapsed).
pub fn run_for(
    phase: Duration,
    mut step: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<(u64, Duration)> {
    let start = Instant::now();
    let mut iterations = 0;
    while start.elapsed() < phase {
        step()?;
        iterations += 1;
    }
    Ok((iterations, start.elapsed()))
}

/// A multi-threaded runtime for the suites that talk to servers.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let temporary;
    let dir = match cli.dir {
        Some(dir) => dir,
        None => {
            temporary = tempfile::Builder::new()
                .prefix("kimberlite-bench-")
                .tempdir()?;
            temporary.path().to_path_buf()
        }
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let settings = Settings {
        quick: cli.quick,
        dir,
    };
    eprintln!(
        "machine: {} cores, {}; data on {}{}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        memory_description(),
        settings.dir.display(),
        if settings.quick { "; --quick" } else { "" }
    );
    let suites: &[Suite] = match cli.suite {
        Suite::All => &[
            Suite::Limit,
            Suite::Append,
            Suite::Postgres,
            Suite::Query,
            Suite::Verify,
            Suite::Projection,
            Suite::Replicated,
            Suite::Cluster,
            Suite::Quota,
        ],
        ref one => std::slice::from_ref(one),
    };
    // The ceiling of this run is measured once, by the first suite that needs it.
    let mut ceiling: Option<limit::Ceiling> = None;
    let mut ceiling = |settings: &Settings| -> anyhow::Result<limit::Ceiling> {
        if ceiling.is_none() {
            ceiling = Some(limit::run(settings)?);
        }
        Ok(ceiling.clone().expect("measured above"))
    };
    let mut failed = Vec::new();
    for &suite in suites {
        let started = Instant::now();
        let result = match suite {
            Suite::Limit | Suite::All => ceiling(&settings).map(drop),
            Suite::Append => {
                ceiling(&settings).and_then(|ceiling| append::run(&settings, &ceiling))
            }
            Suite::Postgres => postgres::run(&settings),
            Suite::Query => query::run(&settings),
            Suite::Verify => {
                ceiling(&settings).and_then(|ceiling| verify::run(&settings, &ceiling))
            }
            Suite::Projection => projection::run(&settings),
            Suite::Replicated => replicated::run(&settings),
            Suite::Cluster => cluster::run(&settings),
            Suite::Quota => quota::run(&settings),
        };
        match result {
            Ok(()) => eprintln!(
                "  ({suite:?} took {:.0} s)",
                started.elapsed().as_secs_f64()
            ),
            // In `all`, one failing suite must not hide the others' results.
            Err(error) if suites.len() > 1 => {
                eprintln!("suite {suite:?} failed: {error:#}");
                failed.push(format!("{suite:?}"));
            }
            Err(error) => return Err(error),
        }
    }
    if !failed.is_empty() {
        anyhow::bail!(
            "suites failed: {} (their errors are above)",
            failed.join(", ")
        );
    }
    Ok(())
}

/// "23.4 GiB memory", from /proc/meminfo.
pub fn memory_description() -> String {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|line| line.starts_with("MemTotal:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<u64>().ok())
        })
        .map(|kib| format!("{:.1} GiB memory", kib as f64 / 1024.0 / 1024.0))
        .unwrap_or_else(|| "memory unknown".into())
}

/// A line saying a suite was skipped, and why (also as its summary line, so a reader of the
/// JSON lines sees the gap).
pub fn skip(suite: &str, reason: &str) {
    println!("\nsuite {suite}: skipped: {reason}");
    summary(
        suite,
        serde_json::json!({}),
        serde_json::json!({"skipped": reason}),
    );
}
