//! The simulator as a test: a fixed range of seeds passes, runs replay exactly, and a known
//! protocol bug is caught.

use kimberlite_consensus::KnownBug;
use kimberlite_consensus::simulator::{RunOptions, run_catching};

fn options(seed: u64, ticks: u64, known_bug: Option<KnownBug>) -> RunOptions {
    RunOptions {
        seed,
        ticks,
        known_bug,
        log_every_ticks: 0,
    }
}

#[test]
fn fixed_seeds_pass() {
    for seed in 0..12 {
        let outcome = run_catching(&options(seed, 2_000, None));
        assert!(
            outcome.failure.is_none(),
            "seed {seed}: {:?} ({})",
            outcome.failure,
            outcome.summary
        );
        assert!(
            outcome.commits > 0,
            "seed {seed} committed nothing: {}",
            outcome.summary
        );
    }
}

#[test]
fn same_seed_same_trace() {
    for seed in [3, 17] {
        let first = run_catching(&options(seed, 1_500, None));
        let second = run_catching(&options(seed, 1_500, None));
        assert_eq!(first.trace, second.trace, "seed {seed} did not replay");
        assert_eq!(
            (first.ticks, first.commits, first.replies),
            (second.ticks, second.commits, second.replies)
        );
    }
    let other = run_catching(&options(4, 1_500, None));
    assert_ne!(other.trace, run_catching(&options(3, 1_500, None)).trace);
}

#[test]
fn commit_without_quorum_is_caught() {
    // Seed 13 reproduces it: `vopr --seed 13 --ticks 3000 --bug commit-without-quorum` ends with
    // "agreement: op 266 committed as … by replica 1 but as … before".
    let caught = (10..30).find(|&seed| {
        let outcome = run_catching(&options(seed, 3_000, Some(KnownBug::CommitWithoutQuorum)));
        outcome.failure.is_some_and(|failure| {
            failure.contains("agreement") || failure.contains("linearizability")
        })
    });
    assert_eq!(
        caught,
        Some(13),
        "the VOPR should catch a primary committing without a quorum"
    );
    // And the same seeds pass without the bug.
    for seed in [13, 14] {
        let outcome = run_catching(&options(seed, 3_000, None));
        assert!(
            outcome.failure.is_none(),
            "seed {seed}: {:?}",
            outcome.failure
        );
    }
}
