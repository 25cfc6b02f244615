//! `cargo xtask …`: the project's build, test and demo orchestration, in Rust so it
//! runs wherever cargo does.
//!
//! - `cargo xtask test`      build the Wasm guests, then run every test of the workspace, the
//!   VOPR's bug-detection test, a fixed VOPR seed range and a few random seeds (the README's
//!   test command; `.ci/run` runs it too)
//! - `cargo xtask test-vopr` only the VOPR part of `cargo xtask test`
//! - `cargo xtask demo`      build the guests and run `kimberlite demo` (release)
//! - `cargo xtask build-guests`
//! - `cargo xtask vopr [--seed S | --seeds N [--start S0]] [--ticks T] [--verbose] [--bug NAME]`
//!   the consensus simulator (`--bug` builds it with the test-only `vopr-bugs` feature)

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

mod guests;

/// The VOPR seeds every test run checks: the fixed range `0..TEST_VOPR_SEEDS`, the same on
/// every run, so a red test run is a regression and not the luck of the draw ...
const TEST_VOPR_SEEDS: u64 = 200;
/// ... then this many fresh seeds from a random first seed, which `vopr` prints along with a
/// one-line reproduction for each failure (it replays each failure to be sure it reproduces).
/// More random seeds: `cargo xtask vopr --seeds N`.
const TEST_VOPR_RANDOM_SEEDS: u64 = 16;
/// The feature that compiles the deliberate protocol bugs in (never on in a normal build).
const VOPR_BUGS_FEATURE: &str = "vopr-bugs";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn run(mut command: Command) -> Result<(), String> {
    eprintln!("xtask: running {command:?}");
    let status = command
        .status()
        .map_err(|error| format!("cannot run {command:?}: {error}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{command:?} failed with {status}"))
    }
}

fn build_guests(root: &Path) -> Result<(), String> {
    let built = guests::build_guests(root)?;
    eprintln!("xtask: built {} guest module(s)", built.len());
    Ok(())
}

fn vopr(root: &Path, arguments: &[String]) -> Result<(), String> {
    let mut command = cargo();
    command.current_dir(root).args([
        "run",
        "--release",
        "--quiet",
        "-p",
        "kimberlite-consensus",
        "--bin",
        "vopr",
    ]);
    if arguments.iter().any(|argument| argument == "--bug") {
        command.args(["--features", VOPR_BUGS_FEATURE]);
    }
    command.arg("--").args(arguments);
    run(command)
}

/// The VOPR part of `cargo xtask test`, each step timed: the checkers catch every deliberate
/// bug (a test behind the `vopr-bugs` feature, printing each bug's seed and reproduction
/// line), then the fixed seed range, then random seeds.
fn vopr_test(root: &Path) -> Result<(), String> {
    let started = Instant::now();
    let mut bugs = cargo();
    bugs.current_dir(root).args([
        "test",
        "-p",
        "kimberlite-consensus",
        "--features",
        VOPR_BUGS_FEATURE,
        "--test",
        "vopr_bugs",
        "--",
        "--nocapture",
    ]);
    run(bugs)?;
    eprintln!("xtask: VOPR bug detection took {:.1?}", started.elapsed());
    let fixed = Instant::now();
    let seeds = |count: u64| vec!["--seeds".to_string(), count.to_string()];
    let mut range = seeds(TEST_VOPR_SEEDS);
    range.extend(["--start".to_string(), "0".to_string()]);
    vopr(root, &range)?;
    eprintln!(
        "xtask: VOPR seeds 0..{TEST_VOPR_SEEDS} took {:.1?}",
        fixed.elapsed()
    );
    let random = Instant::now();
    vopr(root, &seeds(TEST_VOPR_RANDOM_SEEDS))?;
    eprintln!(
        "xtask: VOPR {TEST_VOPR_RANDOM_SEEDS} random seeds took {:.1?}; VOPR steps {:.1?} in all",
        random.elapsed(),
        started.elapsed()
    );
    Ok(())
}

fn main() -> ExitCode {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root();
    let result = match arguments.first().map(String::as_str) {
        Some("test") => build_guests(&root).and_then(|()| {
            let mut command = cargo();
            command.current_dir(&root).args(["test", "--workspace"]).args(&arguments[1..]);
            run(command)?;
            vopr_test(&root)
        }),
        Some("demo") => build_guests(&root).and_then(|()| {
            let mut command = cargo();
            command
                .current_dir(&root)
                .args(["run", "--release", "--quiet", "-p", "kimberlite", "--", "demo"])
                .args(&arguments[1..]);
            run(command)
        }),
        Some("test-vopr") => vopr_test(&root),
        Some("build-guests") => build_guests(&root),
        Some("vopr") => vopr(&root, &arguments[1..]),
        _ => Err("usage: cargo xtask test | test-vopr | demo | build-guests | vopr [--seed S | --seeds N [--start S0]] [--ticks T] [--bug NAME]".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: {error}");
            ExitCode::FAILURE
        }
    }
}
