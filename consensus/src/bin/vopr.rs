//! `vopr [--seed S | --seeds N [--start S0]] [--ticks T] [--verbose] [--log TICKS] [--bug commit-without-quorum]`
//!
//! Runs the deterministic simulator. Without `--seed` or `--start`, the first seed is random
//! (printed), so CI can mix a fixed range with fresh seeds. Exits non-zero if any seed failed,
//! printing for each a one-line reproduction.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use kimberlite_consensus::KnownBug;
use kimberlite_consensus::simulator::{RunOptions, Stats, run_catching, ticks_default};

fn usage() -> ExitCode {
    eprintln!(
        "usage: vopr [--seed S | --seeds N [--start S0]] [--ticks T] [--verbose] [--log TICKS] [--bug commit-without-quorum]"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut seed: Option<u64> = None;
    let mut seeds: Option<u64> = None;
    let mut start: Option<u64> = None;
    let mut ticks = ticks_default;
    let mut verbose = false;
    let mut bug = None;
    let mut log_every_ticks = 0;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = |args: &mut dyn Iterator<Item = String>| {
            args.next().and_then(|v| v.parse::<u64>().ok())
        };
        match arg.as_str() {
            "--seed" => seed = value(&mut args),
            "--seeds" => seeds = value(&mut args),
            "--start" => start = value(&mut args),
            "--ticks" => match value(&mut args) {
                Some(t) => ticks = t,
                None => return usage(),
            },
            "--verbose" => verbose = true,
            "--log" => match value(&mut args) {
                Some(t) => log_every_ticks = t,
                None => return usage(),
            },
            "--bug" => match args.next().as_deref() {
                Some("commit-without-quorum") => bug = Some(KnownBug::CommitWithoutQuorum),
                _ => return usage(),
            },
            _ => return usage(),
        }
    }
    let (first, count) = match (seed, seeds) {
        (Some(seed), None) => (seed, 1),
        (None, Some(count)) => {
            let first = start.unwrap_or_else(|| {
                // Only the binary may read the wall clock: it picks a fresh first seed.
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                let random = (now.as_nanos() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 16;
                println!("random first seed: {random}");
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
    let mut stats = Stats::default();
    for index in 0..count {
        let seed = first.wrapping_add(index);
        let outcome = run_catching(&RunOptions {
            seed,
            ticks,
            known_bug: bug,
            log_every_ticks,
        });
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
        if let Some(failure) = &outcome.failure {
            failed += 1;
            let bug_flag = if bug.is_some() {
                " --bug commit-without-quorum"
            } else {
                ""
            };
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
        "injected: {} crashes ({} torn mid-write), {} disks lost, {} corruptions, {} partitions, {} clock jumps; exercised: {} view changes, {} state transfers, {} evictions",
        stats.crashes,
        stats.crashes_torn,
        stats.disk_losses,
        stats.corruptions,
        stats.partitions,
        stats.clock_jumps,
        stats.view_changes,
        stats.state_transfers,
        stats.evictions
    );
    println!("{count} seeds, {failed} failed, {:.1?}", started.elapsed());
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
