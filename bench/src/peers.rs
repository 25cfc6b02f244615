//! Peers (PostgreSQL, etcd) started by the scripts in bench/peers/ and stopped when the
//! guard drops. The scripts also watch this process: if it dies without dropping the
//! guard (a kill), they stop the peer and delete its data themselves.

use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Ports tried when looking for a free block on loopback.
const PORT_ATTEMPTS_MAX: usize = 100;
const PORT_FIRST: u16 = 20_000;
const PORT_SPAN: u16 = 30_000;

/// A running peer; stopping it deletes its data.
#[derive(Debug)]
pub struct Peer {
    script: PathBuf,
    dir: String,
}

impl Peer {
    /// Runs `bench/peers/<script> check`: `Ok` if the peer is installed or the script can
    /// install it (root with apt-get), else the reason it cannot run, as the script says it.
    pub fn check(script: &str) -> Result<(), String> {
        let script = scripts_dir().join(script);
        let output = Command::new("bash")
            .arg(&script)
            .arg("check")
            .output()
            .map_err(|error| format!("cannot run {}: {error}", script.display()))?;
        if output.status.success() {
            return Ok(());
        }
        let said = String::from_utf8_lossy(&output.stderr);
        Err(said
            .lines()
            .last()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| format!("{} check failed with {}", script.display(), output.status)))
    }

    /// Runs `bench/peers/<script> start <port> <our pid>`; the script prints the peer's data
    /// directory on its last line.
    pub fn start(script: &str, port: u16) -> anyhow::Result<Peer> {
        let script = scripts_dir().join(script);
        let output = Command::new("bash")
            .arg(&script)
            .arg("start")
            .arg(port.to_string())
            .arg(std::process::id().to_string())
            .stderr(std::process::Stdio::inherit())
            .output()
            .with_context(|| format!("cannot run {}", script.display()))?;
        if !output.status.success() {
            anyhow::bail!(
                "{} start failed with {} (its messages are above)",
                script.display(),
                output.status
            );
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let dir = stdout
            .lines()
            .last()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .with_context(|| format!("{} printed no data directory", script.display()))?
            .to_string();
        Ok(Peer { script, dir })
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let status = Command::new("bash")
            .arg(&self.script)
            .arg("stop")
            .arg(&self.dir)
            .status();
        if !matches!(status, Ok(status) if status.success()) {
            eprintln!(
                "warning: `{} stop {}` failed ({status:?}); stop the peer and delete the directory by hand",
                self.script.display(),
                self.dir
            );
        }
    }
}

/// bench/peers/, found next to this crate's sources (the binary is run from the workspace)
/// or through $KIMBERLITE_BENCH_PEERS.
pub fn scripts_dir() -> PathBuf {
    std::env::var_os("KIMBERLITE_BENCH_PEERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("peers"))
}

/// A `base` such that every `base + offset` is a free TCP port on loopback.
pub fn free_ports(offsets: &[u16]) -> anyhow::Result<u16> {
    let seed = std::process::id() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos() as u64;
    for attempt in 0..PORT_ATTEMPTS_MAX as u64 {
        let base = PORT_FIRST
            + ((seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(attempt * 7919))
                % PORT_SPAN as u64) as u16;
        let free = offsets
            .iter()
            .all(|offset| std::net::TcpListener::bind(("127.0.0.1", base + offset)).is_ok());
        if free {
            return Ok(base);
        }
    }
    anyhow::bail!("found no free block of loopback ports in {PORT_ATTEMPTS_MAX} attempts")
}
