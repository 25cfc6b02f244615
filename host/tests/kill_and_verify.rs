//! The real binary, as an operator runs it: `kimberlite start` in its own process,
//! `kill -9` in the middle of a stream of acknowledged inserts, a restart, and
//! `kimberlite verify` on the stopped data directory — untouched, then with one byte
//! flipped.

use kimberlite_client::{Client, ClientConfig, WireValue};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_kimberlite");
/// How long a started node may take to print its listening line.
const START_TIMEOUT_MS: u64 = 30_000;
/// Inserts acknowledged before the kill.
const ACKNOWLEDGED_BEFORE_KILL: i64 = 300;

struct Running {
    child: Child,
    config: ClientConfig,
}

fn start(dir: &Path) -> Running {
    let mut child = Command::new(BINARY)
        .args(["start", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the kimberlite binary starts");
    let stdout = child.stdout.take().unwrap();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("Kimberlite listening on") {
                let _ = sender.send(());
            }
        }
    });
    receiver
        .recv_timeout(Duration::from_millis(START_TIMEOUT_MS))
        .expect("the node prints its listening line");
    let config = ClientConfig::load(&dir.join("client.toml")).unwrap();
    Running { child, config }
}

fn stop_gracefully(mut running: Running) {
    let status = Command::new("kill")
        .args(["-TERM", &running.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_millis(START_TIMEOUT_MS);
    loop {
        if let Some(status) = running.child.try_wait().unwrap() {
            assert!(status.success(), "a clean shutdown exits 0, got {status}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the node did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn verify(dir: &Path) -> (bool, String) {
    let output = Command::new(BINARY)
        .args(["verify", "--data-dir"])
        .arg(dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn kill_9_loses_no_acknowledged_insert_and_verify_catches_a_flipped_byte() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();

    let mut running = start(dir.path());
    let acknowledged = runtime.block_on(async {
        let client = Client::connect(&running.config, None).await.unwrap();
        client.create_tenant("clinic", "").await.unwrap();
        client
            .sql("clinic", "CREATE TABLE visits (id BIGINT PRIMARY KEY, note TEXT)", &[], "")
            .await
            .unwrap();
        // Keep inserting from a second task while this one kills the node.
        let config = running.config.clone();
        let writer = tokio::spawn(async move {
            let client = Client::connect(&config, None).await.unwrap();
            let mut acknowledged = Vec::new();
            for id in 0.. {
                let result = client
                    .sql(
                        "clinic",
                        "INSERT INTO visits VALUES ($1, $2)",
                        &[WireValue::Integer(id), WireValue::Text(format!("visit {id}"))],
                        "check-in",
                    )
                    .await;
                match result {
                    Ok(_) => acknowledged.push(id),
                    Err(_) => break,
                }
            }
            acknowledged
        });
        loop {
            let rows = client.query("clinic", "SELECT COUNT(*) FROM visits", &[]).await.unwrap();
            if matches!(rows.rows[0][0], WireValue::Integer(count) if count >= ACKNOWLEDGED_BEFORE_KILL) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        running.child.kill().unwrap(); // SIGKILL: no shutdown path runs
        running.child.wait().unwrap();
        writer.await.unwrap()
    });
    assert!(acknowledged.len() as i64 >= ACKNOWLEDGED_BEFORE_KILL);

    let running = start(dir.path());
    runtime.block_on(async {
        let client = Client::connect(&running.config, None).await.unwrap();
        let rows = client
            .query("clinic", "SELECT id FROM visits ORDER BY id", &[])
            .await
            .unwrap();
        let present: std::collections::BTreeSet<i64> = rows
            .rows
            .iter()
            .map(|row| match row[0] {
                WireValue::Integer(id) => id,
                ref other => panic!("id {other:?}"),
            })
            .collect();
        let missing: Vec<&i64> = acknowledged
            .iter()
            .filter(|id| !present.contains(id))
            .collect();
        assert!(
            missing.is_empty(),
            "acknowledged inserts lost after kill -9: {missing:?}"
        );
        // Writes continue after recovery.
        client
            .sql(
                "clinic",
                "INSERT INTO visits VALUES (-1, 'after restart')",
                &[],
                "",
            )
            .await
            .unwrap();
        client.close().await;
    });
    stop_gracefully(running);

    let (held, output) = verify(dir.path());
    assert!(held, "verify of an untouched data dir must pass:\n{output}");

    // Flip one byte in the middle of the tenant's first segment.
    let log_dir = dir.path().join("tenants/1/log");
    let mut segments: Vec<_> = std::fs::read_dir(&log_dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "seg"))
        .collect();
    segments.sort();
    let mut bytes = std::fs::read(&segments[0]).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&segments[0], bytes).unwrap();
    let (held, output) = verify(dir.path());
    assert!(!held, "verify must fail after a flipped byte:\n{output}");
    assert!(output.contains("FAILED"), "{output}");
    assert!(
        output.contains("position"),
        "verify names the position:\n{output}"
    );
}
