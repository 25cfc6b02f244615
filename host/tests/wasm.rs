//! Tenants' Wasm as a user meets it, through the real QUIC server and client: the sample
//! projections and policies built by `cargo xtask build-guests`, deployed, rebuilt,
//! swapped, rolled back, and the hostile ones faulted while everything else goes on.

use kimberlite::{EmbeddedServer, NodeOptions};
use kimberlite_client::{
    AsOf, Client, ClientError, ErrorCode, ModuleKind, ResultSet, SqlOptions, SqlOutcome, WireEvent,
    WireValue,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a test waits for a projection to reach a state before it fails.
const WAIT_MS: u64 = 60_000;

fn guest(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/guests/wasm32-unknown-unknown/release")
        .join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|error| {
        panic!(
            "{}: {error}; build the samples first (`cargo xtask build-guests`)",
            path.display()
        )
    })
}

async fn start(dir: &std::path::Path) -> EmbeddedServer {
    EmbeddedServer::start(NodeOptions::new(dir), "127.0.0.1:0".parse().unwrap())
        .await
        .expect("node starts")
}

fn texts(result: &ResultSet) -> Vec<Vec<String>> {
    result
        .rows
        .iter()
        .map(|row| {
            row.iter()
                .map(|value| match value {
                    WireValue::Null => "NULL".to_string(),
                    WireValue::Integer(value) => value.to_string(),
                    WireValue::Text(value) => value.clone(),
                    other => format!("{other:?}"),
                })
                .collect()
        })
        .collect()
}

fn server_error(result: Result<impl std::fmt::Debug, ClientError>) -> (ErrorCode, String) {
    match result {
        Err(ClientError::Server(error)) => (error.code, error.message),
        other => panic!("expected a server error, got {other:?}"),
    }
}

async fn select(client: &Client, tenant: &str, sql: &str, options: &SqlOptions) -> ResultSet {
    match client.sql_with(tenant, sql, &[], options).await {
        Ok(SqlOutcome::Rows(rows)) => rows,
        other => panic!("{sql}: {other:?}"),
    }
}

/// Waits until `sql` (one row, one column) returns `want`.
async fn wait_for(client: &Client, tenant: &str, sql: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_millis(WAIT_MS);
    loop {
        let rows = texts(&select(client, tenant, sql, &SqlOptions::default()).await);
        if rows.first().map(|row| row[0].as_str()) == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "`{sql}` still returns {rows:?}, not {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn event(kind: &str, payload: &serde_json::Value) -> WireEvent {
    WireEvent {
        subject: None,
        stream: "accounts".into(),
        event_type: kind.into(),
        payload: payload.to_string().into_bytes(),
    }
}

/// 10,000 account events; the balances a correct projection derives after each one.
fn account_events() -> (Vec<WireEvent>, Vec<BTreeMap<String, i64>>) {
    const EVENTS: usize = 10_000;
    const ACCOUNTS: usize = 50;
    let mut balances = BTreeMap::new();
    let mut events = Vec::with_capacity(EVENTS);
    let mut after = Vec::with_capacity(EVENTS);
    let mut seed: u64 = 0x5eed;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..EVENTS {
        let account = format!("a{:02}", next() as usize % ACCOUNTS);
        let amount = (next() % 500) as i64 + 1;
        match next() % 3 {
            0 => {
                *balances.entry(account.clone()).or_insert(0) += amount;
                events.push(event(
                    "Deposited",
                    &serde_json::json!({"account": account, "amount": amount}),
                ));
            }
            1 => {
                *balances.entry(account.clone()).or_insert(0) -= amount;
                events.push(event(
                    "Withdrawn",
                    &serde_json::json!({"account": account, "amount": amount}),
                ));
            }
            _ => {
                let to = format!("a{:02}", next() as usize % ACCOUNTS);
                *balances.entry(account.clone()).or_insert(0) -= amount;
                *balances.entry(to.clone()).or_insert(0) += amount;
                events.push(event(
                    "Transferred",
                    &serde_json::json!({"from": account, "to": to, "amount": amount}),
                ));
            }
        }
        after.push(balances.clone());
    }
    (events, after)
}

fn balances_rows(balances: &BTreeMap<String, i64>) -> Vec<Vec<String>> {
    balances
        .iter()
        .map(|(account, balance)| vec![account.clone(), balance.to_string()])
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_balances_deploy_rebuild_swap_and_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let admin = Client::connect(server.client_config(), None).await.unwrap();
    admin.create_tenant("bank", "onboarding").await.unwrap();
    let deployed = admin
        .deploy(
            "bank",
            ModuleKind::Projection,
            "balances",
            guest("account_balances"),
            Vec::new(),
            "balances for the ledger",
        )
        .await
        .unwrap();
    assert!(deployed.summary.starts_with("DEPLOY PROJECTION balances"));
    let (_, v1) = deployed.positions.unwrap();

    let (events, expected) = account_events();
    let mut first_position = None;
    let mut last = 0;
    for batch in events.chunks(1_000) {
        let written = admin
            .append("bank", batch.to_vec(), "ledger import")
            .await
            .unwrap();
        let (first, end) = written.positions.unwrap();
        first_position.get_or_insert(first);
        last = end;
    }
    let first_position = first_position.unwrap();
    let now = SqlOptions {
        after: Some(last),
        ..SqlOptions::default()
    };
    let sql = "SELECT account, balance FROM balances ORDER BY account";
    let rows = select(&admin, "bank", sql, &now).await;
    assert_eq!(texts(&rows), balances_rows(expected.last().unwrap()));

    // Time travel on the view, at positions inside and between append batches.
    for index in [0, 1, 499, 4_321, 9_998] {
        let position = first_position + index as u64;
        let options = SqlOptions {
            as_of: Some(AsOf::Position(position)),
            ..SqlOptions::default()
        };
        let rows = select(&admin, "bank", sql, &options).await;
        assert_eq!(
            texts(&rows),
            balances_rows(&expected[index]),
            "AS OF POSITION {position}"
        );
    }
    // Aggregates and filters work on views like on tables.
    let total: i64 = expected.last().unwrap().values().sum();
    let rows = select(
        &admin,
        "bank",
        "SELECT COUNT(*), SUM(balance) FROM balances WHERE balance <> 0 OR balance = 0",
        &SqlOptions::default(),
    )
    .await;
    assert_eq!(
        texts(&rows),
        vec![vec![
            expected.last().unwrap().len().to_string(),
            total.to_string()
        ]]
    );

    // A new version (another configuration) builds in the background, then swaps.
    let v2 = admin
        .deploy(
            "bank",
            ModuleKind::Projection,
            "balances",
            guest("account_balances"),
            br#"{"reject_overdraft": false}"#.to_vec(),
            "explicit configuration",
        )
        .await
        .unwrap()
        .positions
        .unwrap()
        .1;
    // The old version keeps serving right after the deploy.
    let rows = select(&admin, "bank", sql, &SqlOptions::default()).await;
    assert_eq!(texts(&rows), balances_rows(expected.last().unwrap()));
    wait_for(
        &admin,
        "bank",
        &format!("SELECT state FROM kimberlite.projections WHERE version = {v2}"),
        "active",
    )
    .await;
    let rows = select(
        &admin,
        "bank",
        &format!("SELECT state FROM kimberlite.projections WHERE version = {v1}"),
        &SqlOptions::default(),
    )
    .await;
    assert_eq!(texts(&rows), vec![vec!["retired".to_string()]]);
    let rows = select(&admin, "bank", sql, &SqlOptions::default()).await;
    assert_eq!(texts(&rows), balances_rows(expected.last().unwrap()));

    // Both versions applied the same log: the same digest.
    let digests = select(
        &admin,
        "bank",
        "SELECT digest FROM kimberlite.projections ORDER BY version",
        &SqlOptions::default(),
    )
    .await;
    let digests = texts(&digests);
    assert_eq!(digests.len(), 2);
    assert_eq!(digests[0], digests[1], "two runs over one log, two digests");
    let rolled = admin
        .rollback("bank", ModuleKind::Projection, "balances", "back to v1")
        .await
        .unwrap();
    assert!(
        rolled.summary.contains(&format!("version {v1}")),
        "{rolled:?}"
    );
    wait_for(
        &admin,
        "bank",
        &format!("SELECT state FROM kimberlite.projections WHERE version = {v1}"),
        "active",
    )
    .await;
    let rows = select(&admin, "bank", sql, &SqlOptions::default()).await;
    assert_eq!(texts(&rows), balances_rows(expected.last().unwrap()));

    // Deploys, the swap and the rollback are in the audit trail.
    let trail = select(
        &admin,
        "bank",
        "SELECT record_kind, kind FROM kimberlite.log WHERE record_kind = 'deploy-projection' AND kind <> 'ModuleChunk' ORDER BY position",
        &SqlOptions::default(),
    )
    .await;
    let trail: Vec<String> = texts(&trail)
        .into_iter()
        .map(|row| row[1].clone())
        .collect();
    assert_eq!(
        trail,
        [
            "ProjectionDeployed",
            "ProjectionDeployed",
            "ProjectionActivated",
            "ProjectionRolledBack",
            "ProjectionActivated"
        ]
    );

    // After a restart the views resume where they were (no re-apply, no skip).
    server.stop().await.unwrap();
    let server = start(dir.path()).await;
    let admin = Client::connect(server.client_config(), None).await.unwrap();
    let rows = select(&admin, "bank", sql, &now).await;
    assert_eq!(texts(&rows), balances_rows(expected.last().unwrap()));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masking_policy_per_caller_and_hot_swap_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let admin = Client::connect(server.client_config(), None).await.unwrap();
    admin.create_tenant("clinic", "onboarding").await.unwrap();
    admin
        .sql(
            "clinic",
            "CREATE TABLE patients (id BIGINT PRIMARY KEY, name TEXT NOT NULL, ssn TEXT, region TEXT)",
            &[],
            "schema",
        )
        .await
        .unwrap();
    admin
        .sql(
            "clinic",
            "INSERT INTO patients VALUES (1, 'Ada Lovelace', '123-45-6789', 'north'), (2, 'Alan Turing', '987-65-4321', 'east')",
            &[],
            "admission",
        )
        .await
        .unwrap();
    // The census projection over the table's own row events.
    admin
        .deploy(
            "clinic",
            ModuleKind::Projection,
            "census",
            guest("patient_census"),
            Vec::new(),
            "census",
        )
        .await
        .unwrap();
    let phi = admin
        .deploy(
            "clinic",
            ModuleKind::Policy,
            "phi",
            guest("phi_mask"),
            Vec::new(),
            "mask PHI",
        )
        .await
        .unwrap();
    assert!(phi.summary.starts_with("DEPLOY POLICY phi"), "{phi:?}");

    let (reader_token, _) = admin
        .create_token(
            "clinic",
            Some("rita"),
            &["reader".into()],
            &[],
            "front desk",
        )
        .await
        .unwrap();
    let (clinician_token, _) = admin
        .create_token(
            "clinic",
            Some("dr-who"),
            &["reader".into(), "clinician".into()],
            &[("purpose".into(), "treatment".into())],
            "ward doctor",
        )
        .await
        .unwrap();
    let reader = Client::connect(server.client_config(), Some(reader_token))
        .await
        .unwrap();
    let clinician = Client::connect(server.client_config(), Some(clinician_token))
        .await
        .unwrap();
    let sql = "SELECT id, name, ssn, region FROM patients ORDER BY id";
    let masked = select(&reader, "clinic", sql, &SqlOptions::default()).await;
    assert_eq!(
        texts(&masked),
        vec![
            vec!["1", "A. L.", "***-**-6789", "north"],
            vec!["2", "A. T.", "***-**-4321", "east"]
        ]
    );
    assert_eq!(masked.masked_by.len(), 1, "{:?}", masked.masked_by);
    // A filter sees the masked value only: the clear SSN cannot be probed.
    let probe = select(
        &reader,
        "clinic",
        "SELECT id FROM patients WHERE ssn = '123-45-6789'",
        &SqlOptions::default(),
    )
    .await;
    assert!(probe.rows.is_empty());
    let clear = select(&clinician, "clinic", sql, &SqlOptions::default()).await;
    assert_eq!(
        texts(&clear),
        vec![
            vec!["1", "Ada Lovelace", "123-45-6789", "north"],
            vec!["2", "Alan Turing", "987-65-4321", "east"]
        ]
    );
    // A declared purpose other than treatment masks even for a clinician.
    let billing = SqlOptions {
        purpose: Some("billing".into()),
        ..SqlOptions::default()
    };
    let rows = select(&clinician, "clinic", sql, &billing).await;
    assert_eq!(texts(&rows)[0][1], "A. L.");

    // Hot swap while a reader queries in a loop: no query fails, and every answer is
    // masked by one version or the other, never clear.
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let looping = {
        let stop = stop.clone();
        let answered = answered.clone();
        tokio::spawn(async move {
            let mut strict_seen = false;
            while !stop.load(Ordering::SeqCst) {
                let rows = select(&reader, "clinic", sql, &SqlOptions::default()).await;
                let rows = texts(&rows);
                assert_eq!(rows[0][1], "A. L.", "a query returned clear data");
                strict_seen |= rows[0][3] != "north";
                answered.fetch_add(1, Ordering::SeqCst);
            }
            strict_seen
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let strict = admin
        .deploy(
            "clinic",
            ModuleKind::Policy,
            "phi",
            guest("phi_mask_strict"),
            Vec::new(),
            "mask regions too",
        )
        .await
        .unwrap();
    assert!(strict.summary.starts_with("DEPLOY POLICY phi"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let strict_seen = looping.await.expect("no query failed during the swap");
    assert!(strict_seen, "the strict version never answered");
    assert!(answered.load(Ordering::SeqCst) > 2);

    let policies = select(
        &admin,
        "clinic",
        "SELECT name, state FROM kimberlite.policies ORDER BY version",
        &SqlOptions::default(),
    )
    .await;
    assert_eq!(
        texts(&policies),
        vec![vec!["phi", "inactive"], vec!["phi", "active"]]
    );
    let trail = select(
        &admin,
        "clinic",
        "SELECT COUNT(*) FROM kimberlite.log WHERE kind = 'PolicyDeployed'",
        &SqlOptions::default(),
    )
    .await;
    assert_eq!(texts(&trail), vec![vec!["2"]]);
    // Every covered read left an access record: who, which tables, which policy version,
    // for what purpose.
    let access = select(
        &admin,
        "clinic",
        "SELECT principal, tables, policies, purpose FROM kimberlite.access WHERE principal = 'dr-who' ORDER BY position",
        &SqlOptions::default(),
    )
    .await;
    let phi_v1 = format!("phi@{}", phi.positions.unwrap().1);
    assert_eq!(
        texts(&access),
        vec![
            vec!["dr-who", "patients", phi_v1.as_str(), "NULL"],
            vec!["dr-who", "patients", phi_v1.as_str(), "billing"]
        ]
    );
    let readers = select(
        &admin,
        "clinic",
        "SELECT COUNT(*) FROM kimberlite.access WHERE principal = 'rita'",
        &SqlOptions::default(),
    )
    .await;
    let reads: u64 = texts(&readers)[0][0].parse().unwrap();
    assert!(
        reads >= answered.load(Ordering::SeqCst),
        "{reads} access records"
    );
    let back = admin
        .rollback("clinic", ModuleKind::Policy, "phi", "too strict")
        .await
        .unwrap();
    assert!(back.summary.contains("ROLLBACK POLICY phi"), "{back:?}");

    // The census view follows the table.
    admin
        .sql(
            "clinic",
            "UPDATE patients SET region = 'north' WHERE id = 2",
            &[],
            "moved",
        )
        .await
        .unwrap();
    let written = admin
        .sql(
            "clinic",
            "INSERT INTO patients VALUES (3, 'Grace Hopper', NULL, 'west')",
            &[],
            "admission",
        )
        .await
        .unwrap();
    let SqlOutcome::Written(written) = written else {
        panic!("an insert writes")
    };
    let census = select(
        &admin,
        "clinic",
        "SELECT region, patients FROM census ORDER BY region",
        &SqlOptions {
            after: written.positions.map(|(_, last)| last),
            ..SqlOptions::default()
        },
    )
    .await;
    assert_eq!(texts(&census), vec![vec!["north", "2"], vec!["west", "1"]]);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_modules_are_refused_or_faulted_and_others_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let admin = Client::connect(server.client_config(), None).await.unwrap();
    admin.create_tenant("bank", "onboarding").await.unwrap();
    admin
        .deploy(
            "bank",
            ModuleKind::Projection,
            "balances",
            guest("account_balances"),
            Vec::new(),
            "",
        )
        .await
        .unwrap();

    // Not Wasm, and the wrong world: refused at deploy with a clear message.
    let (code, message) = server_error(
        admin
            .deploy(
                "bank",
                ModuleKind::Projection,
                "junk",
                b"not wasm at all".to_vec(),
                Vec::new(),
                "",
            )
            .await,
    );
    assert_eq!(code, ErrorCode::BadRequest);
    assert!(message.contains("not a WebAssembly module"), "{message}");
    let (code, message) = server_error(
        admin
            .deploy(
                "bank",
                ModuleKind::Projection,
                "wrong-world",
                guest("phi_mask"),
                Vec::new(),
                "",
            )
            .await,
    );
    assert_eq!(code, ErrorCode::BadRequest);
    assert!(message.contains("projection"), "{message}");

    let hostile = [
        ("hostile_loop", "Spin", "fuel"),
        ("hostile_memory", "Hoard", "memory limit"),
        ("hostile_output", "Flood", "changes_per_event_max"),
        ("hostile_trap", "Explode", "trapped"),
    ];
    for (module, _, _) in hostile {
        let tenant = module.replace('_', "-");
        admin.create_tenant(&tenant, "hostile").await.unwrap();
        admin
            .deploy(
                &tenant,
                ModuleKind::Projection,
                module,
                guest(module),
                Vec::new(),
                "hostile",
            )
            .await
            .unwrap();
    }
    let mut fault_positions = BTreeMap::new();
    for (module, kind, _) in hostile {
        let tenant = module.replace('_', "-");
        let calm = WireEvent {
            subject: None,
            stream: "s".into(),
            event_type: "Calm".into(),
            payload: b"{}".to_vec(),
        };
        let bad = WireEvent {
            subject: None,
            event_type: kind.into(),
            ..calm.clone()
        };
        let written = admin
            .append(&tenant, vec![calm.clone(), calm.clone(), bad, calm], "")
            .await
            .unwrap();
        fault_positions.insert(module, written.positions.unwrap().0 + 2);
    }
    // Meanwhile the bank's projection keeps advancing.
    let (events, expected) = account_events();
    let mut last = 0;
    for batch in events[..2_000].chunks(500) {
        last = admin
            .append("bank", batch.to_vec(), "")
            .await
            .unwrap()
            .positions
            .unwrap()
            .1;
    }
    let rows = select(
        &admin,
        "bank",
        "SELECT account, balance FROM balances ORDER BY account",
        &SqlOptions {
            after: Some(last),
            ..SqlOptions::default()
        },
    )
    .await;
    assert_eq!(texts(&rows), balances_rows(&expected[1_999]));

    for (module, _, words) in hostile {
        let tenant = module.replace('_', "-");
        wait_for(
            &admin,
            &tenant,
            "SELECT state FROM kimberlite.projections",
            "faulted",
        )
        .await;
        let status = select(
            &admin,
            &tenant,
            "SELECT fault_position, fault FROM kimberlite.projections",
            &SqlOptions::default(),
        )
        .await;
        let status = texts(&status);
        assert_eq!(
            status[0][0],
            fault_positions[module].to_string(),
            "{module}"
        );
        assert!(status[0][1].contains(words), "{module}: {}", status[0][1]);
        // The events before the fault are in the view; a read-your-writes query says
        // plainly that the projection faulted.
        let seen = select(
            &admin,
            &tenant,
            "SELECT COUNT(*) FROM seen",
            &SqlOptions::default(),
        )
        .await;
        assert_eq!(texts(&seen), vec![vec!["2"]], "{module}");
        let (code, message) = server_error(
            admin
                .sql_with(
                    &tenant,
                    "SELECT * FROM seen",
                    &[],
                    &SqlOptions {
                        after: Some(fault_positions[module] + 1),
                        ..SqlOptions::default()
                    },
                )
                .await,
        );
        assert_eq!(code, ErrorCode::Unavailable);
        assert!(message.contains("faulted"), "{message}");
    }
    // A policy that never returns fails the query closed, with a clear error.
    admin.create_tenant("ward", "hostile policy").await.unwrap();
    admin
        .sql(
            "ward",
            "CREATE TABLE patients (id BIGINT PRIMARY KEY, name TEXT)",
            &[],
            "",
        )
        .await
        .unwrap();
    admin
        .sql("ward", "INSERT INTO patients VALUES (1, 'Ada')", &[], "")
        .await
        .unwrap();
    admin
        .deploy(
            "ward",
            ModuleKind::Policy,
            "spin",
            guest("hostile_loop"),
            Vec::new(),
            "hostile",
        )
        .await
        .unwrap();
    let (code, message) = server_error(
        admin
            .sql_with(
                "ward",
                "SELECT * FROM patients",
                &[],
                &SqlOptions::default(),
            )
            .await,
    );
    assert_eq!(code, ErrorCode::PolicyFailed);
    assert!(message.contains("policy `spin`"), "{message}");

    // The node stays healthy: the bank still writes and reads.
    let written = admin
        .append("bank", events[2_000..2_100].to_vec(), "")
        .await
        .unwrap();
    let rows = select(
        &admin,
        "bank",
        "SELECT account, balance FROM balances ORDER BY account",
        &SqlOptions {
            after: Some(written.positions.unwrap().1),
            ..SqlOptions::default()
        },
    )
    .await;
    assert_eq!(texts(&rows), balances_rows(&expected[2_099]));
    server.stop().await.unwrap();
}
