//! Shared by the tests that drive the `kimberlite` binary as a user does at the shell: a
//! node process and client commands against it. (Each test file includes this module and
//! uses part of it, hence the allowance below.)
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

pub const BINARY: &str = env!("CARGO_BIN_EXE_kimberlite");
/// How long a started node may take to write its client config.
pub const START_TIMEOUT_MS: u64 = 30_000;
/// How long a node may take to stop after SIGTERM.
pub const STOP_TIMEOUT_MS: u64 = 30_000;

pub struct Node {
    child: Child,
}

impl Node {
    pub fn start(dir: &Path) -> Node {
        let config = dir.join("client.toml");
        // A restarted node rewrites client.toml (new port, the same admin token).
        let modified = || std::fs::metadata(&config).and_then(|m| m.modified()).ok();
        let before = modified();
        let child = Command::new(BINARY)
            .args(["start", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_millis(START_TIMEOUT_MS);
        while modified().is_none() || modified() == before {
            assert!(
                std::time::Instant::now() < deadline,
                "the node never wrote client.toml"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Node { child }
    }

    /// SIGTERM, then wait: a clean shutdown signs the final checkpoints.
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").arg(&pid).status().unwrap().success());
        let deadline = std::time::Instant::now() + Duration::from_millis(STOP_TIMEOUT_MS);
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "the node did not stop"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a client command against the node of `dir`; returns (success, stdout, stderr).
pub fn kimberlite(dir: &Path, arguments: &[&str]) -> (bool, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(BINARY)
        .args(arguments)
        .env("KIMBERLITE_CONFIG", dir.join("client.toml"))
        .env_remove("KIMBERLITE_TOKEN")
        .output()
        .unwrap();
    (
        status.success(),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

pub fn ok(dir: &Path, arguments: &[&str]) -> String {
    let (success, stdout, stderr) = kimberlite(dir, arguments);
    assert!(
        success,
        "kimberlite {arguments:?} failed:\n{stdout}\n{stderr}"
    );
    stdout
}

/// The command fails; returns its stderr.
pub fn refused(dir: &Path, arguments: &[&str]) -> String {
    let (success, stdout, stderr) = kimberlite(dir, arguments);
    assert!(!success, "kimberlite {arguments:?} succeeded:\n{stdout}");
    stderr
}
