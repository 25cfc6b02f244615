//! The VOPR catches deliberate protocol bugs (needs the test-only `vopr-bugs` feature;
//! `cargo xtask test` runs this file). For each [`KnownBug`]: some seed of a bounded range
//! fails a checker, the failure replays exactly from its printed reproduction line, and the
//! same seed passes without the bug, so the bug and not the seed is what failed.

// Bounds are named like values, unit last, as in the crate (STYLE.md).
#![allow(non_upper_case_globals)]

use kimberlite_consensus::KnownBug;
use kimberlite_consensus::simulator::{Outcome, RunOptions, run_catching};

/// Seeds tried per bug: the checkers must catch each bug within this many.
const bug_seeds_max: u64 = 256;
/// Safety-phase ticks per seed, shorter than `vopr`'s default: these bugs show early.
const bug_ticks: u64 = 3_000;

fn run(seed: u64, bug: Option<KnownBug>) -> Outcome {
    let mut options = RunOptions::new(seed, bug_ticks);
    options.known_bug = bug;
    run_catching(&options)
}

/// The safety checkers, by the word that starts (or is in) their failure messages. A liveness
/// failure or a replica's own assertion would not show that the checkers see the bug.
const safety_checkers: [&str; 7] = [
    "agreement",
    "stale read",
    "durability",
    "linearizability",
    "chain",
    "exactly-once",
    "executed op",
];

/// `bug` is caught by a safety checker within `bug_seeds_max` seeds. (Seeds before it may
/// fail otherwise, by liveness or a replica's assertion; those are printed, not counted.)
fn check_caught(bug: KnownBug) {
    let name = bug.name();
    let caught = (0..bug_seeds_max).find_map(|seed| {
        let outcome = run(seed, Some(bug));
        let failure = outcome.failure.clone()?;
        if safety_checkers
            .iter()
            .any(|checker| failure.contains(checker))
        {
            Some((seed, outcome, failure))
        } else {
            println!("{name}: seed {seed} failed, not by a safety checker: {failure}");
            None
        }
    });
    let Some((seed, outcome, failure)) = caught else {
        panic!("{name}: no seed in 0..{bug_seeds_max} was caught by {safety_checkers:?}");
    };
    println!("{name}: caught by seed {seed} of 0..{bug_seeds_max}: {failure}");
    println!("  reproduce: cargo xtask vopr --seed {seed} --ticks {bug_ticks} --bug {name}");
    let again = run(seed, Some(bug));
    assert_eq!(
        (again.trace, again.ticks, again.failure.as_deref()),
        (outcome.trace, outcome.ticks, Some(failure.as_str())),
        "{name}: seed {seed} did not replay"
    );
    let clean = run(seed, None);
    assert_eq!(
        clean.failure, None,
        "{name}: seed {seed} fails without the bug too"
    );
}

#[test]
fn commit_without_quorum_is_caught() {
    check_caught(KnownBug::CommitWithoutQuorum);
}

#[test]
fn prepare_ok_before_write_is_caught() {
    check_caught(KnownBug::PrepareOkBeforeWrite);
}

#[test]
fn read_without_quorum_is_caught() {
    check_caught(KnownBug::ReadWithoutQuorum);
}
