//! `cargo xtask …`: the project's build, test and demo orchestration, in Rust so it
//! runs wherever cargo does.
//!
//! - `cargo xtask test`      build the Wasm guests, then run every test of the workspace
//!   and a fixed VOPR seed range (the README's test command; `.ci/run` runs it too)
//! - `cargo xtask demo`      build the guests and run `kimberlite demo` (release)
//! - `cargo xtask build-guests`
//! - `cargo xtask vopr [--seed S | --seeds N] [--ticks T]`  the consensus simulator

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

mod guests;

/// The VOPR seeds every test run checks: the fixed range `0..TEST_VOPR_SEEDS`, the same on
/// every run, so a red test run is a regression and not the luck of the draw. Random
/// seeds run with `cargo xtask vopr --seeds N` (no `--start`), which prints its first seed
/// and a one-line reproduction for each failure.
const TEST_VOPR_SEEDS: u64 = 200;

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
    command
        .current_dir(root)
        .args([
            "run",
            "--release",
            "--quiet",
            "-p",
            "kimberlite-consensus",
            "--bin",
            "vopr",
            "--",
        ])
        .args(arguments);
    run(command)
}

fn main() -> ExitCode {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root();
    let result = match arguments.first().map(String::as_str) {
        Some("test") => build_guests(&root).and_then(|()| {
            let mut command = cargo();
            command.current_dir(&root).args(["test", "--workspace"]).args(&arguments[1..]);
            run(command)?;
            vopr(
                &root,
                &[
                    "--seeds".to_string(),
                    TEST_VOPR_SEEDS.to_string(),
                    "--start".to_string(),
                    "0".to_string(),
                ],
            )
        }),
        Some("demo") => build_guests(&root).and_then(|()| {
            let mut command = cargo();
            command
                .current_dir(&root)
                .args(["run", "--release", "--quiet", "-p", "kimberlite", "--", "demo"])
                .args(&arguments[1..]);
            run(command)
        }),
        Some("build-guests") => build_guests(&root),
        Some("vopr") => vopr(&root, &arguments[1..]),
        _ => Err("usage: cargo xtask test | demo | build-guests | vopr [--seed S | --seeds N] [--ticks T]".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: {error}");
            ExitCode::FAILURE
        }
    }
}
