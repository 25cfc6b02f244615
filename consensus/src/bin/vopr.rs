//! `vopr [--seed S | --seeds N [--start S0]] [--ticks T] [--verbose] [--log TICKS] [--bug NAME]`
//!
//! Runs the deterministic simulator. Without `--seed` or `--start`, the first seed is random
//! (printed), so CI can mix a fixed range with fresh seeds. Exits non-zero if any seed failed,
//! printing for each a one-line reproduction.
//!
//! Replay is checked, not assumed: a single `--seed` runs twice and must give the same trace
//! hash and outcome, and every failing seed of a range is run again the same way, so each
//! printed reproduction line is known to reproduce.
//!
//! `--bug NAME` injects a deliberate protocol bug (`commit-without-quorum`,
//! `prepare-ok-before-write`); it exists only in builds with the test-only `vopr-bugs` feature
//! (`cargo xtask vopr --bug NAME …` turns it on).

use std::process::ExitCode;
use std::time::{Duration, Instant};

#[cfg(feature = "vopr-bugs")]
use kimberlite_consensus::KnownBug;
use kimberlite_consensus::simulator::{Outcome, RunOptions, Stats, run_catching, ticks_default};

/// A bug to inject: none can exist without the `vopr-bugs` feature.
#[cfg(feature = "vopr-bugs")]
type Bug = KnownBug;
#[cfg(not(feature = "vopr-bugs"))]
type Bug = std::convert::Infallible;

#[cfg(feature = "vopr-bugs")]
fn bug_parse(name: &str) -> Result<Bug, String> {
    KnownBug::from_name(name).ok_or_else(|| {
        let known: Vec<&str> = KnownBug::all.iter().map(|bug| bug.name()).collect();
        format!("unknown bug {name:?}: known bugs are {}", known.join(", "))
    })
}

#[cfg(not(feature = "vopr-bugs"))]
fn bug_parse(name: &str) -> Result<Bug, String> {
    Err(format!(
        "--bug {name}: this vopr was built without the test-only `vopr-bugs` feature, so it \
         has no deliberate bugs; run `cargo xtask vopr --bug {name} …`, or build with \
         `cargo build --release -p kimberlite-consensus --features vopr-bugs --bin vopr`"
    ))
}

#[cfg(feature = "vopr-bugs")]
fn bug_name(bug: Bug) -> &'static str {
    bug.name()
}

#[cfg(not(feature = "vopr-bugs"))]
fn bug_name(bug: Bug) -> &'static str {
    match bug {}
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: vopr [--seed S | --seeds N [--start S0]] [--ticks T] [--verbose] [--log TICKS] [--bug NAME]"
    );
    ExitCode::from(2)
}

fn options(seed: u64, ticks: u64, log_every_ticks: u64, bug: Option<Bug>) -> RunOptions {
    let mut options = RunOptions::new(seed, ticks);
    options.log_every_ticks = log_every_ticks;
    #[cfg(feature = "vopr-bugs")]
    {
        options.known_bug = bug;
    }
    #[cfg(not(feature = "vopr-bugs"))]
    if let Some(bug) = bug {
        match bug {}
    }
    options
}

/// Run the seed again and compare: `None` if it replayed exactly, else what differed.
fn replay_differs(first: &Outcome, options: &RunOptions) -> Option<String> {
    let mut quiet = options.clone();
    quiet.log_every_ticks = 0;
    let second = run_catching(&quiet);
    let same =
        (first.trace, first.ticks, &first.failure) == (second.trace, second.ticks, &second.failure);
    (!same).then(|| {
        format!(
            "nondeterminism: seed {} replayed as trace={:016x} ticks={} failure={:?}, first run trace={:016x} ticks={} failure={:?}",
            options.seed,
            second.trace,
            second.ticks,
            second.failure,
            first.trace,
            first.ticks,
            first.failure
        )
    })
}

fn main() -> ExitCode {
    let mut seed: Option<u64> = None;
    let mut seeds: Option<u64> = None;
    let mut start: Option<u64> = None;
    let mut ticks = ticks_default;
    let mut verbose = false;
    let mut bug: Option<Bug> = None;
    let mut log_every_ticks = 0;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = |args: &mut dyn Iterator<Item = String>| {
            args.next().and_then(|v| v.parse::<u64>().ok())
        };
        match arg.as_str() {
            "--seed" => match value(&mut args) {
                Some(s) => seed = Some(s),
                None => return usage(),
            },
            "--seeds" => match value(&mut args) {
                Some(n) => seeds = Some(n),
                None => return usage(),
            },
            "--start" => match value(&mut args) {
                Some(s) => start = Some(s),
                None => return usage(),
            },
            "--ticks" => match value(&mut args) {
                Some(t) => ticks = t,
                None => return usage(),
            },
            "--verbose" => verbose = true,
            "--log" => match value(&mut args) {
                Some(t) => log_every_ticks = t,
                None => return usage(),
            },
            "--bug" => match args.next().as_deref().map(bug_parse) {
                Some(Ok(parsed)) => bug = Some(parsed),
                Some(Err(message)) => {
                    eprintln!("vopr: {message}");
                    return ExitCode::from(2);
                }
                None => return usage(),
            },
            _ => return usage(),
        }
    }
    let bug_flag = bug
        .map(|bug| format!(" --bug {}", bug_name(bug)))
        .unwrap_or_default();
    let (first, count) = match (seed, seeds) {
        (Some(seed), None) => (seed, 1),
        (None, Some(count)) => {
            let first = start.unwrap_or_else(|| {
                // Only the binary may read the wall clock: it picks a fresh first seed.
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                let random = (now.as_nanos() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 16;
                println!(
                    "random first seed: {random} (this range again: cargo xtask vopr --seeds {count} --start {random} --ticks {ticks}{bug_flag})"
                );
                random
            });
            (first, count)
        }
        (None, None) => (start.unwrap_or(0), 1),
        (Some(_), Some(_)) => return usage(),
    };
    let started = Instant::now();
    let mut last_progress = Instant::now();
    let mut failed = 0u64;
    let mut nondeterministic = 0u64;
    let mut stats = Stats::default();
    for index in 0..count {
        let seed = first.wrapping_add(index);
        let options = options(seed, ticks, log_every_ticks, bug);
        let outcome = run_catching(&options);
        if verbose || count == 1 {
            println!(
                "seed {seed}: {} trace={:016x} ticks={} {}",
                if outcome.failure.is_some() {
                    "FAIL"
                } else {
                    "ok"
                },
                outcome.trace,
                outcome.ticks,
                outcome.summary
            );
        }
        stats.add(&outcome.stats);
        // Same seed, same run: always for a single seed, and for every failure (so that the
        // reproduction line printed below is known to reproduce).
        if count == 1 || outcome.failure.is_some() {
            match replay_differs(&outcome, &options) {
                Some(difference) => {
                    nondeterministic += 1;
                    println!("FAILED {difference}");
                }
                None if count == 1 => {
                    println!(
                        "replay: seed {seed} ran twice with the same trace {:016x}",
                        outcome.trace
                    );
                }
                None => {}
            }
        }
        if let Some(failure) = &outcome.failure {
            failed += 1;
            println!("FAILED seed {seed}: {failure}");
            println!("  reproduce: cargo xtask vopr --seed {seed} --ticks {ticks}{bug_flag}");
        }
        if last_progress.elapsed() >= Duration::from_secs(5) {
            last_progress = Instant::now();
            println!(
                "progress: {}/{count} seeds, {failed} failed, {:.0?} elapsed",
                index + 1,
                started.elapsed()
            );
        }
    }
    println!(
        "injected: {} crashes ({} torn mid-write), {} disks lost, {} corruptions, {} partitions, {} clock jumps; exercised: {} view changes, {} state transfers, {} evictions, {} reads confirmed",
        stats.crashes,
        stats.crashes_torn,
        stats.disk_losses,
        stats.corruptions,
        stats.partitions,
        stats.clock_jumps,
        stats.view_changes,
        stats.state_transfers,
        stats.evictions,
        stats.reads_confirmed
    );
    println!(
        "{count} seeds from {first}{bug_flag}, {failed} failed, {nondeterministic} did not replay, {:.1?}",
        started.elapsed()
    );
    if failed > 0 || nondeterministic > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
