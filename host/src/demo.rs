//! `kimberlite demo`: the whole mission in one narrated run, on a temporary directory,
//! through the same QUIC protocol and client a user has.

use crate::embedded::EmbeddedServer;
use crate::node::NodeOptions;
use crate::render::{self, Format};
use anyhow::Context;
use kimberlite_client::{AsOf, Client, ClientError, ModuleKind, SqlOptions, SqlOutcome};
use std::path::{Path, PathBuf};
use std::time::Duration;

const TENANT: &str = "clinic";

/// Wraps `text` in an ANSI style when stdout is a terminal (plain text in pipes and logs).
fn styled(code: &str, text: &str) -> String {
    use std::io::IsTerminal;
    static COLOR: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *COLOR.get_or_init(|| std::io::stdout().is_terminal()) {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

fn chapter(title: &str) {
    println!("\n{}", styled("1", &format!("== {title}")));
}

fn say(text: &str) {
    println!("{text}");
}

fn show_sql(sql: &str, reason: &str) {
    if reason.is_empty() {
        println!("{}", styled("36", &format!("> {sql}")));
    } else {
        println!(
            "{}   {}",
            styled("36", &format!("> {sql}")),
            styled("2", &format!("-- reason: {reason}"))
        );
    }
}

async fn sql(client: &Client, sql: &str, reason: &str) -> anyhow::Result<SqlOutcome> {
    show_sql(sql, reason);
    let outcome = client
        .sql(TENANT, sql, &[], reason)
        .await
        .with_context(|| format!("demo statement failed: {sql}"))?;
    print!(
        "{}",
        crate::cli::render_outcome(outcome.clone(), Format::Table)
    );
    Ok(outcome)
}

async fn query_as_of(client: &Client, sql: &str, as_of: AsOf) -> anyhow::Result<()> {
    let label = match as_of {
        AsOf::Position(position) => format!("as of position {position}"),
        AsOf::TimestampNs(nanoseconds) => format!("as of {}", render::timestamp(nanoseconds)),
    };
    println!(
        "{}   {}",
        styled("36", &format!("> {sql}")),
        styled("2", &format!("-- {label}"))
    );
    let rows = client.sql_as_of(TENANT, sql, &[], as_of).await?;
    print!("{}", render::result_set(&rows, Format::Table));
    Ok(())
}

fn last_position(outcome: &SqlOutcome) -> anyhow::Result<u64> {
    match outcome {
        SqlOutcome::Written(written) => written
            .positions
            .map(|(_, last)| last)
            .context("the write reported no log position"),
        SqlOutcome::Rows(_) => anyhow::bail!("expected a write"),
    }
}

/// Where the sample guests are when none is given: next to the binary's target
/// directory (`target/release/kimberlite` → `target/guests/…`), else under `./target`.
pub fn default_guests_dir() -> PathBuf {
    const RELATIVE: &str = "guests/wasm32-unknown-unknown/release";
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join(RELATIVE)))
        .filter(|dir| dir.is_dir())
        .unwrap_or_else(|| PathBuf::from("target").join(RELATIVE))
}

fn read_guest(dir: &Path, name: &str) -> anyhow::Result<Vec<u8>> {
    let path = dir.join(format!("{name}.wasm"));
    std::fs::read(&path).with_context(|| {
        format!(
            "cannot read the sample module {} (build the samples with `cargo xtask build-guests`, or pass --guests DIR)",
            path.display()
        )
    })
}

async fn select_as(
    client: &Client,
    who: &str,
    sql: &str,
    options: &SqlOptions,
) -> anyhow::Result<()> {
    println!(
        "{}   {}",
        styled("36", &format!("> {sql}")),
        styled("2", &format!("-- as {who}"))
    );
    match client.sql_with(TENANT, sql, &[], options).await? {
        SqlOutcome::Rows(rows) => {
            print!("{}", render::result_set(&rows, Format::Table));
            if !rows.masked_by.is_empty() {
                say(&styled(
                    "2",
                    &format!("(policy applied: {})", rows.masked_by.join(", ")),
                ));
            }
        }
        SqlOutcome::Written(_) => anyhow::bail!("expected rows"),
    }
    Ok(())
}

pub async fn run(keep: Option<PathBuf>, guests: Option<PathBuf>) -> anyhow::Result<()> {
    let guests = guests.unwrap_or_else(default_guests_dir);
    let census_module = read_guest(&guests, "patient_census")?;
    let mask_module = read_guest(&guests, "phi_mask")?;
    let strict_module = read_guest(&guests, "phi_mask_strict")?;
    let temporary;
    let data_dir: PathBuf = match keep {
        Some(path) => path,
        None => {
            temporary = tempfile::Builder::new()
                .prefix("kimberlite-demo-")
                .tempdir()
                .context("cannot create a temporary directory")?;
            temporary.path().to_path_buf()
        }
    };
    println!(
        "{}: a clinic keeps patient records it must be able to account for.",
        styled("1", "Kimberlite demo")
    );
    say("Every write is an immutable, hash-chained, encrypted log record with who, when and why;");
    say("tables are views derived from that log, readable at any past point.");

    chapter("1. Start an embedded node");
    let server = EmbeddedServer::start(NodeOptions::new(&data_dir), "127.0.0.1:0".parse()?).await?;
    say(&format!(
        "node listening on {} (QUIC + TLS 1.3), data in {}",
        server.address(),
        data_dir.display()
    ));
    say(
        "first start created: a node signing key, a master key, a self-signed certificate, and client.toml with an admin token",
    );
    let admin = Client::connect(server.client_config(), None).await?;

    chapter("2. Create a tenant");
    let id = admin.create_tenant(TENANT, "onboarding the clinic").await?;
    say(&format!(
        "tenant `{TENANT}` (id {id}): its own log partition and its own AES-256-GCM data key"
    ));

    chapter("3. A table, and writes that carry their reason");
    sql(
        &admin,
        "CREATE TABLE patients (id BIGINT PRIMARY KEY, name TEXT NOT NULL, region TEXT)",
        "intake schema v1",
    )
    .await?;
    let inserted = sql(
        &admin,
        "INSERT INTO patients (id, name, region) VALUES (1, 'Ada Lovelace', 'north'), (2, 'Alan Turing', 'east')",
        "admission",
    )
    .await?;
    let before_changes = last_position(&inserted)?;
    say(&format!(
        "-> remember position {before_changes}: both patients as admitted"
    ));
    // Timestamps are nanoseconds; a short pause makes "between the writes" unambiguous.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let between = now_ns();
    tokio::time::sleep(Duration::from_millis(20)).await;
    sql(
        &admin,
        "UPDATE patients SET region = 'south' WHERE id = 1",
        "patient moved (letter of 2024-01-15)",
    )
    .await?;
    sql(
        &admin,
        "DELETE FROM patients WHERE id = 2",
        "duplicate record, merged into another chart",
    )
    .await?;

    chapter("4. The present, and the past");
    sql(&admin, "SELECT * FROM patients ORDER BY id", "").await?;
    say("Nothing was overwritten. The state before the update and the delete is one query away:");
    query_as_of(
        &admin,
        "SELECT * FROM patients ORDER BY id",
        AsOf::Position(before_changes),
    )
    .await?;
    query_as_of(
        &admin,
        "SELECT * FROM patients ORDER BY id",
        AsOf::TimestampNs(between),
    )
    .await?;
    say("The same in SQL itself:");
    sql(
        &admin,
        &format!("SELECT name, region FROM patients AS OF POSITION {before_changes} WHERE id = 1"),
        "",
    )
    .await?;

    chapter("5. Who may do what");
    let (reader_token, principal) = admin
        .create_token(
            TENANT,
            Some("front-desk"),
            &["reader".to_string()],
            &[],
            "front desk terminal",
        )
        .await?;
    say(&format!(
        "created a reader token for principal `{principal}`"
    ));
    let reader = Client::connect(server.client_config(), Some(reader_token)).await?;
    show_sql(
        "INSERT INTO patients VALUES (3, 'Grace Hopper', 'west')",
        "as front-desk",
    );
    match reader
        .sql(
            TENANT,
            "INSERT INTO patients VALUES (3, 'Grace Hopper', 'west')",
            &[],
            "",
        )
        .await
    {
        Err(ClientError::Server(error)) => say(&format!("refused: {error}")),
        other => anyhow::bail!("a reader's INSERT should be refused, got {other:?}"),
    }
    show_sql("SELECT * FROM no_such_table", "");
    match admin
        .sql(TENANT, "SELECT * FROM no_such_table", &[], "")
        .await
    {
        Err(ClientError::Server(error)) => say(&format!("refused: {error}")),
        other => anyhow::bail!("an unknown table should be an error, got {other:?}"),
    }

    chapter("6. A tenant-defined view: a WebAssembly projection");
    say(
        "The clinic deploys its own code: `patient-census` turns the table's row events into a view.",
    );
    say(&format!(
        "$ kimberlite projection deploy --tenant {TENANT} --name census patient_census.wasm"
    ));
    let deployed = admin
        .deploy(
            TENANT,
            ModuleKind::Projection,
            "census",
            census_module,
            Vec::new(),
            "regional census for the board",
        )
        .await?;
    say(&deployed.summary);
    let census_sql = "SELECT region, patients FROM census ORDER BY region";
    let end = last_position(&sql(&admin, "INSERT INTO patients VALUES (3, 'Grace Hopper', 'west'), (4, 'Edsger Dijkstra', 'west')", "admission").await?)?;
    let now = SqlOptions {
        after: Some(end),
        ..SqlOptions::default()
    };
    select_as(
        &admin,
        "admin (waiting until the view has applied the insert)",
        census_sql,
        &now,
    )
    .await?;
    say(
        "The view was built from the whole log, deterministically, so it travels in time like a table:",
    );
    query_as_of(&admin, census_sql, AsOf::Position(before_changes)).await?;

    chapter("7. Masking policies, swapped while queries run");
    let (clinician_token, _) = admin
        .create_token(
            TENANT,
            Some("dr-hopper"),
            &["reader".to_string(), "clinician".to_string()],
            &[("purpose".to_string(), "treatment".to_string())],
            "ward doctor",
        )
        .await?;
    let clinician = Client::connect(server.client_config(), Some(clinician_token)).await?;
    say(&format!(
        "$ kimberlite policy deploy --tenant {TENANT} --name phi phi_mask.wasm"
    ));
    let deployed = admin
        .deploy(
            TENANT,
            ModuleKind::Policy,
            "phi",
            mask_module,
            Vec::new(),
            "HIPAA minimum necessary",
        )
        .await?;
    say(&deployed.summary);
    let patients_sql = "SELECT id, name, region FROM patients ORDER BY id";
    select_as(
        &reader,
        "front-desk (role reader)",
        patients_sql,
        &SqlOptions::default(),
    )
    .await?;
    select_as(
        &clinician,
        "dr-hopper (role clinician, purpose=treatment)",
        patients_sql,
        &SqlOptions::default(),
    )
    .await?;
    say("A stricter version hides the region too. It replaces the old one atomically, no restart:");
    let deployed = admin
        .deploy(
            TENANT,
            ModuleKind::Policy,
            "phi",
            strict_module,
            Vec::new(),
            "regions are identifying in small towns",
        )
        .await?;
    say(&deployed.summary);
    select_as(&reader, "front-desk", patients_sql, &SqlOptions::default()).await?;
    sql(&admin, "SELECT name, version, state, covers, deployed_by FROM kimberlite.policies ORDER BY version", "").await?;
    say("Every read a policy covered is itself on the record:");
    sql(
        &admin,
        "SELECT position, principal, tables, policies, purpose FROM kimberlite.access ORDER BY position",
        "",
    )
    .await?;
    reader.close().await;
    clinician.close().await;

    chapter("8. The audit trail is a table too");
    sql(
        &admin,
        "SELECT position, timestamp, kind, stream, client, reason FROM kimberlite.log WHERE kind <> 'ModuleChunk' ORDER BY position",
        "",
    )
    .await?;
    let counted = admin
        .query(
            TENANT,
            "SELECT kind, COUNT(*) AS records FROM kimberlite.log GROUP BY kind ORDER BY kind",
            &[],
        )
        .await?;
    print!("{}", render::result_set(&counted, Format::Table));

    chapter("9. Prove nothing was altered");
    admin.close().await;
    server.stop().await?;
    say(
        "node stopped cleanly (each partition's chain head was signed with the node's Ed25519 key)",
    );
    say(&format!(
        "$ kimberlite verify --data-dir {}",
        data_dir.display()
    ));
    let held = crate::verify::run(&data_dir, None, false)?;
    anyhow::ensure!(held, "verify failed on an untouched data directory");
    say("Now an attacker flips one byte in the middle of the clinic's log …");
    let tampered = tamper_copy(&data_dir, id)?;
    say(&format!(
        "$ kimberlite verify --data-dir {}",
        tampered.path().display()
    ));
    let held = crate::verify::run(tampered.path(), None, false)?;
    anyhow::ensure!(!held, "verify should have caught the flipped byte");
    say("… and verify names the record that no longer matches its hash chain.");

    println!(
        "\n{} Next: `kimberlite start`, then `kimberlite repl --tenant {TENANT}`.",
        styled("1", "That was Kimberlite.")
    );
    Ok(())
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos() as i64)
        .unwrap_or(0)
}

/// Copies the data directory and flips one byte in the middle of a tenant's first segment.
fn tamper_copy(data_dir: &Path, tenant: u64) -> anyhow::Result<tempfile::TempDir> {
    let copy = tempfile::Builder::new()
        .prefix("kimberlite-tampered-")
        .tempdir()?;
    copy_dir(data_dir, copy.path())?;
    let log_dir = copy
        .path()
        .join("tenants")
        .join(tenant.to_string())
        .join("log");
    let mut segments: Vec<PathBuf> = std::fs::read_dir(&log_dir)?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "seg"))
        .collect();
    segments.sort();
    let segment = segments.first().context("the tenant has no segment")?;
    let mut bytes = std::fs::read(segment)?;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(segment, bytes)?;
    Ok(copy)
}

fn copy_dir(source: &Path, target: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(target)?;
    for entry in std::fs::read_dir(source)? {
        let entry = entry?;
        let destination = target.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &destination)?;
        } else {
            std::fs::copy(entry.path(), &destination)?;
        }
    }
    Ok(())
}
