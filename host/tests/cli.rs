//! The command line as a user types it (README "Using it"), against a real node process.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use support::{BINARY, Node, kimberlite, ok};

#[test]
fn a_session_at_the_shell() {
    let dir = tempfile::tempdir().unwrap();
    let _node = Node::start(dir.path());
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

/// Runs a client command with `input` on stdin.
fn ok_with_stdin(dir: &Path, arguments: &[&str], input: &str) -> String {
    use std::io::Write as _;
    let mut child = Command::new(BINARY)
        .args(arguments)
        .env("KIMBERLITE_CONFIG", dir.join("client.toml"))
        .env_remove("KIMBERLITE_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_string();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()).unwrap());
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "kimberlite {arguments:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The Wasm issue's first "done when", typed at the shell: deploy account-balances,
/// append 10,000 events (one, then a batch from stdin), read the view now and in the past.
#[test]
fn a_projection_at_the_shell() {
    let guests = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/guests/wasm32-unknown-unknown/release");
    let module = guests.join("account_balances.wasm");
    assert!(
        module.exists(),
        "{} is missing: build the samples first (`cargo xtask build-guests`)",
        module.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let _node = Node::start(dir.path());
    let data = dir.path();
    ok(data, &["tenant", "create", "bank"]);
    let deployed = ok(
        data,
        &[
            "projection",
            "deploy",
            "--tenant",
            "bank",
            "--name",
            "balances",
            "--reason",
            "ledger view",
            module.to_str().unwrap(),
        ],
    );
    assert!(
        deployed.contains("DEPLOY PROJECTION balances"),
        "{deployed}"
    );
    assert!(deployed.contains("serves queries"), "{deployed}");
    let one = ok(
        data,
        &[
            "append",
            "--tenant",
            "bank",
            "--stream",
            "accounts",
            "--kind",
            "Deposited",
            "--reason",
            "opening",
            r#"{"account":"a1","amount":100}"#,
        ],
    );
    assert!(one.contains("APPEND 1"), "{one}");
    const BATCH_EVENTS: u64 = 9_999;
    let lines: String = (0..BATCH_EVENTS)
        .map(|index| {
            format!(
                "{{\"account\":\"a{}\",\"amount\":{}}}\n",
                index % 10,
                index % 7 + 1
            )
        })
        .collect();
    let appended = ok_with_stdin(
        data,
        &[
            "append",
            "--tenant",
            "bank",
            "--stream",
            "accounts",
            "--kind",
            "Deposited",
            "--reason",
            "import",
            "-",
        ],
        &lines,
    );
    assert!(appended.contains("appended 9999 events"), "{appended}");
    let last: u64 = appended
        .trim()
        .rsplit(' ')
        .next()
        .unwrap()
        .trim_end_matches(')')
        .parse()
        .unwrap();
    let mut expected = [0i64; 10];
    expected[1] += 100;
    for index in 0..BATCH_EVENTS {
        expected[(index % 10) as usize] += (index % 7 + 1) as i64;
    }
    let total: i64 = expected.iter().sum();
    let after = last.to_string();
    let sums = ok(
        data,
        &[
            "sql",
            "--tenant",
            "bank",
            "--after",
            &after,
            "--format",
            "csv",
            "SELECT COUNT(*), SUM(balance) FROM balances",
        ],
    );
    assert!(sums.contains(&format!("10,{total}")), "{sums}");
    // Position of the single Deposited event: the module's chunks and deploy record come first.
    let past = ok(
        data,
        &[
            "sql",
            "--tenant",
            "bank",
            "--format",
            "csv",
            "--as-of-position",
            "2",
            "SELECT account, balance FROM balances",
        ],
    );
    assert!(past.contains("a1,100"), "{past}");
    let status = ok(data, &["projection", "status", "--tenant", "bank"]);
    assert!(status.contains("active"), "{status}");
}
