//! The command line as a user types it (README "Using it"), against a real node process.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const BINARY: &str = env!("CARGO_BIN_EXE_kimberlite");
/// How long a started node may take to write its client config.
const START_TIMEOUT_MS: u64 = 30_000;

struct Node {
    child: Child,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &Path) -> Node {
    let child = Command::new(BINARY)
        .args(["start", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let config = dir.join("client.toml");
    let deadline = std::time::Instant::now() + Duration::from_millis(START_TIMEOUT_MS);
    while !config.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the node never wrote client.toml"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Node { child }
}

/// Runs a client command against the node of `dir`; returns (success, stdout, stderr).
fn kimberlite(dir: &Path, arguments: &[&str]) -> (bool, String, String) {
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

fn ok(dir: &Path, arguments: &[&str]) -> String {
    let (success, stdout, stderr) = kimberlite(dir, arguments);
    assert!(
        success,
        "kimberlite {arguments:?} failed:\n{stdout}\n{stderr}"
    );
    stdout
}

#[test]
fn a_session_at_the_shell() {
    let dir = tempfile::tempdir().unwrap();
    let _node = start(dir.path());
    let data = dir.path();

    assert!(ok(data, &["tenant", "create", "clinic"]).contains("created tenant `clinic`"));
    assert!(ok(data, &["tenant", "list"]).contains("clinic"));
    assert!(
        ok(
            data,
            &[
                "sql",
                "--tenant",
                "clinic",
                "--reason",
                "schema",
                "CREATE TABLE patients (id BIGINT PRIMARY KEY, name TEXT, region TEXT)",
            ]
        )
        .contains("CREATE TABLE patients")
    );
    let inserted = ok(
        data,
        &[
            "sql",
            "--tenant",
            "clinic",
            "--reason",
            "admission",
            "INSERT INTO patients VALUES (1, 'Ada', 'north'), (2, 'Alan', 'east')",
        ],
    );
    assert!(
        inserted.contains("2 rows affected (log positions 1..=2)"),
        "{inserted}"
    );
    ok(
        data,
        &[
            "sql",
            "--tenant",
            "clinic",
            "--reason",
            "moved",
            "UPDATE patients SET region = 'south' WHERE id = 1",
        ],
    );
    ok(
        data,
        &[
            "sql",
            "--tenant",
            "clinic",
            "--reason",
            "duplicate",
            "DELETE FROM patients WHERE id = $1",
            "--param",
            "2",
        ],
    );

    let present = ok(
        data,
        &[
            "sql",
            "--tenant",
            "clinic",
            "--format",
            "csv",
            "SELECT * FROM patients ORDER BY id",
        ],
    );
    assert_eq!(present, "id,name,region\n1,Ada,south\n");
    let past = ok(
        data,
        &[
            "sql",
            "--tenant",
            "clinic",
            "--format",
            "csv",
            "--as-of-position",
            "2",
            "SELECT * FROM patients ORDER BY id",
        ],
    );
    assert_eq!(past, "id,name,region\n1,Ada,north\n2,Alan,east\n");
    let json = ok(
        data,
        &[
            "sql",
            "--tenant",
            "clinic",
            "--format",
            "json",
            "SELECT position, kind, client, reason FROM kimberlite.log WHERE position >= 3 ORDER BY position",
        ],
    );
    assert_eq!(
        json,
        "{\"client\":\"admin\",\"kind\":\"RowUpdated\",\"position\":3,\"reason\":\"moved\"}\n\
         {\"client\":\"admin\",\"kind\":\"RowDeleted\",\"position\":4,\"reason\":\"duplicate\"}\n"
    );

    let log = ok(
        data,
        &[
            "log",
            "read",
            "--tenant",
            "clinic",
            "--from",
            "3",
            "--payloads",
        ],
    );
    assert!(
        log.contains("RowUpdated") && log.contains("reason=\"moved\"") && log.contains("south"),
        "{log}"
    );

    // A token made at the shell, used at the shell.
    let token = ok(
        data,
        &[
            "token",
            "create",
            "--tenant",
            "clinic",
            "--role",
            "reader",
            "--name",
            "front-desk",
        ],
    );
    let token = token.trim();
    assert!(token.starts_with("kbt_"), "{token}");
    let (success, _, stderr) = kimberlite(
        data,
        &[
            "--token",
            token,
            "sql",
            "--tenant",
            "clinic",
            "INSERT INTO patients VALUES (9, 'Eve', 'x')",
        ],
    );
    assert!(!success);
    assert!(
        stderr.contains("permission denied") && stderr.contains("front-desk"),
        "{stderr}"
    );
    let read = ok(
        data,
        &[
            "--token",
            token,
            "sql",
            "--tenant",
            "clinic",
            "--format",
            "csv",
            "SELECT name FROM patients",
        ],
    );
    assert_eq!(read, "name\nAda\n");

    // Errors name what was wrong and exit non-zero.
    let (success, _, stderr) =
        kimberlite(data, &["sql", "--tenant", "clinic", "SELECT * FROM nope"]);
    assert!(!success && stderr.contains("nope"), "{stderr}");
    let (success, _, stderr) = kimberlite(data, &["sql", "--tenant", "nowhere", "SELECT 1"]);
    assert!(!success && stderr.contains("nowhere"), "{stderr}");

    let appended = ok(
        data,
        &[
            "append",
            "--tenant",
            "clinic",
            "--stream",
            "visits",
            "--kind",
            "CheckedIn",
            "--reason",
            "walk-in",
            "{\"patient\":1}",
        ],
    );
    assert!(appended.contains("position 5"), "{appended}");
}
