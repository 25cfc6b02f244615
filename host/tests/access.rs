//! Access control as a client meets it, through the real QUIC server: table grants, row
//! filters on token attributes, the auditor's view of the trail, break-glass reads, and the
//! tenant boundary under hostile requests.

use kimberlite::{EmbeddedServer, NodeOptions};
use kimberlite_client::protocol::{ModuleKind, Request};
use kimberlite_client::{
    AsOf, Client, ClientError, ErrorCode, ResultSet, SqlOptions, SqlOutcome, WireValue,
};

async fn start(dir: &std::path::Path) -> EmbeddedServer {
    EmbeddedServer::start(NodeOptions::new(dir), "127.0.0.1:0".parse().unwrap())
        .await
        .expect("node starts")
}

async fn write(client: &Client, tenant: &str, sql: &str) -> (u64, u64) {
    match client
        .sql(tenant, sql, &[], "access test")
        .await
        .expect(sql)
    {
        SqlOutcome::Written(written) => written.positions.unwrap_or((0, 0)),
        SqlOutcome::Rows(rows) => panic!("{sql} returned rows {rows:?}"),
    }
}

/// A client with a new token of `tenant`.
async fn connect_as(
    server: &EmbeddedServer,
    admin: &Client,
    tenant: &str,
    name: &str,
    roles: &[&str],
    attributes: &[(&str, &str)],
) -> Client {
    let roles: Vec<String> = roles.iter().map(|role| role.to_string()).collect();
    let attributes: Vec<(String, String)> = attributes
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect();
    let (token, _) = admin
        .create_token(tenant, Some(name), &roles, &attributes, "access test")
        .await
        .unwrap();
    Client::connect(server.client_config(), Some(token))
        .await
        .unwrap()
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

async fn select(
    client: &Client,
    sql: &str,
    options: &SqlOptions,
) -> Result<ResultSet, ClientError> {
    match client.sql_with("clinic", sql, &[], options).await? {
        SqlOutcome::Rows(rows) => Ok(rows),
        SqlOutcome::Written(written) => panic!("{sql} wrote {written:?}"),
    }
}

async fn names(client: &Client, options: &SqlOptions) -> Result<Vec<String>, ClientError> {
    let rows = select(client, "SELECT name FROM patients ORDER BY id", options).await?;
    Ok(texts(&rows).into_iter().map(|row| row[0].clone()).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_row_filters_break_glass_and_the_auditor() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let admin = Client::connect(server.client_config(), None).await.unwrap();
    admin.create_tenant("clinic", "onboarding").await.unwrap();
    write(
        &admin,
        "clinic",
        "CREATE TABLE patients (id BIGINT PRIMARY KEY, name TEXT, region TEXT)",
    )
    .await;
    let (_, inserted) = write(
        &admin,
        "clinic",
        "INSERT INTO patients VALUES (1, 'Ada', 'eu'), (2, 'Bo', 'us'), (3, 'Cy', 'eu')",
    )
    .await;
    let now = SqlOptions::default();
    let reader = connect_as(&server, &admin, "clinic", "front-desk", &["reader"], &[]).await;
    let analyst = connect_as(&server, &admin, "clinic", "analyst", &["analyst"], &[]).await;
    let eu = connect_as(
        &server,
        &admin,
        "clinic",
        "eu-nurse",
        &["clinician"],
        &[("region", "eu")],
    )
    .await;
    let us = connect_as(
        &server,
        &admin,
        "clinic",
        "us-nurse",
        &["clinician"],
        &[("region", "us")],
    )
    .await;
    let nowhere = connect_as(&server, &admin, "clinic", "no-region", &["clinician"], &[]).await;
    let medic = connect_as(
        &server,
        &admin,
        "clinic",
        "er-medic",
        &["clinician"],
        &[("region", "us"), ("break_glass", "true")],
    )
    .await;
    let auditor = connect_as(&server, &admin, "clinic", "inspector", &["auditor"], &[]).await;

    // Built-in reader: the default list lets it read every table. A tenant-defined role
    // without a grant is refused, naming the table, the privilege and its roles; a table
    // that does not exist gets the same answer (nothing to learn from the refusal).
    assert_eq!(names(&reader, &now).await.unwrap(), ["Ada", "Bo", "Cy"]);
    let (code, refused) = server_error(names(&analyst, &now).await);
    assert_eq!(code, ErrorCode::PermissionDenied, "{refused}");
    assert_eq!(
        refused,
        "principal `analyst` (roles: analyst) has no SELECT privilege on `patients`; an admin grants it with GRANT SELECT ON patients TO <role>"
    );
    let (_, missing) = server_error(select(&analyst, "SELECT * FROM ghosts", &now).await);
    assert_eq!(
        refused.replace("patients", "X"),
        missing.replace("ghosts", "X")
    );

    // REVOKE closes the table to readers; GRANT opens it; REVOKE closes it again.
    write(&admin, "clinic", "REVOKE SELECT ON patients FROM reader").await;
    let (code, message) = server_error(names(&reader, &now).await);
    assert_eq!(code, ErrorCode::PermissionDenied);
    assert!(
        message.contains("front-desk") && message.contains("reader"),
        "{message}"
    );
    write(
        &admin,
        "clinic",
        "GRANT SELECT ON patients TO reader, analyst",
    )
    .await;
    assert_eq!(names(&reader, &now).await.unwrap(), ["Ada", "Bo", "Cy"]);
    assert_eq!(names(&analyst, &now).await.unwrap(), ["Ada", "Bo", "Cy"]);
    write(&admin, "clinic", "REVOKE SELECT ON patients FROM reader").await;
    assert_eq!(
        server_error(names(&reader, &now).await).0,
        ErrorCode::PermissionDenied
    );
    // Only an admin changes grants.
    let (code, _) = server_error(
        analyst
            .sql("clinic", "GRANT SELECT ON patients TO reader", &[], "")
            .await,
    );
    assert_eq!(code, ErrorCode::PermissionDenied);

    // ABAC: each region's clinician sees only its rows, now and AS OF; no attribute, no rows.
    write(&admin, "clinic", "GRANT SELECT ON patients TO clinician").await;
    write(
        &admin,
        "clinic",
        "CREATE POLICY home ON patients FOR SELECT TO clinician USING (region = current_attribute('region'))",
    )
    .await;
    assert_eq!(names(&eu, &now).await.unwrap(), ["Ada", "Cy"]);
    assert_eq!(names(&us, &now).await.unwrap(), ["Bo"]);
    assert!(names(&nowhere, &now).await.unwrap().is_empty());
    let past = SqlOptions {
        as_of: Some(AsOf::Position(inserted)),
        ..SqlOptions::default()
    };
    assert_eq!(names(&eu, &past).await.unwrap(), ["Ada", "Cy"]);
    assert_eq!(names(&us, &past).await.unwrap(), ["Bo"]);
    let count = select(
        &us,
        "SELECT COUNT(*) FROM patients WHERE region = 'eu'",
        &now,
    )
    .await
    .unwrap();
    assert_eq!(texts(&count), [["0"]]);
    // The filter is not theirs to lift: writes that reach rows by WHERE are refused.
    write(&admin, "clinic", "GRANT DELETE ON patients TO clinician").await;
    let (code, message) = server_error(
        us.sql("clinic", "DELETE FROM patients WHERE id = 1", &[], "")
            .await,
    );
    assert_eq!(code, ErrorCode::PermissionDenied, "{message}");
    assert!(message.contains("row filter home"), "{message}");

    // Break-glass: only a token allowed to, only for reads, and it sees everything.
    let emergency = SqlOptions {
        emergency: Some("unconscious patient in the ER".into()),
        ..SqlOptions::default()
    };
    assert_eq!(names(&medic, &now).await.unwrap(), ["Bo"]);
    assert_eq!(
        names(&medic, &emergency).await.unwrap(),
        ["Ada", "Bo", "Cy"]
    );
    let (code, message) = server_error(names(&us, &emergency).await);
    assert_eq!(code, ErrorCode::PermissionDenied);
    assert!(message.contains("break_glass=true"), "{message}");
    let (code, _) = server_error(
        medic
            .sql_with(
                "clinic",
                "INSERT INTO patients VALUES (9, 'Zed', 'us')",
                &[],
                &emergency,
            )
            .await,
    );
    assert_eq!(code, ErrorCode::BadRequest);
    // It widens that query only.
    assert_eq!(names(&medic, &now).await.unwrap(), ["Bo"]);

    // The auditor: the access trail of both regions and the emergency, but no table data.
    let (code, _) = server_error(names(&auditor, &now).await);
    assert_eq!(code, ErrorCode::PermissionDenied);
    let trail = select(
        &auditor,
        "SELECT principal, tables, row_filters, emergency FROM kimberlite.access ORDER BY position",
        &now,
    )
    .await
    .unwrap();
    let trail = texts(&trail);
    for principal in ["eu-nurse", "us-nurse", "no-region"] {
        assert!(
            trail.contains(&vec![
                principal.to_string(),
                "patients".to_string(),
                "patients.home".to_string(),
                "NULL".to_string()
            ]),
            "{principal} missing from {trail:?}"
        );
    }
    let emergencies: Vec<&Vec<String>> = trail.iter().filter(|row| row[3] != "NULL").collect();
    assert_eq!(
        emergencies,
        [&vec![
            "er-medic".to_string(),
            "patients".to_string(),
            "NULL".to_string(),
            "unconscious patient in the ER".to_string()
        ]]
    );
    let policies = select(
        &auditor,
        "SELECT table_name, name, kind, roles, condition FROM kimberlite.row_filters",
        &now,
    )
    .await
    .unwrap();
    assert_eq!(
        texts(&policies),
        [[
            "patients",
            "home",
            "permissive",
            "clinician",
            "region = current_attribute('region')"
        ]]
    );
    let grants = select(
        &auditor,
        "SELECT role, privileges, source FROM kimberlite.grants WHERE table_name = 'patients'",
        &now,
    )
    .await
    .unwrap();
    assert_eq!(
        texts(&grants),
        [
            ["analyst", "SELECT", "granted"],
            ["clinician", "SELECT, DELETE", "granted"],
            ["writer", "SELECT, INSERT, UPDATE, DELETE", "granted"]
        ]
    );

    // Log reads and proofs: row events of `patients` come without payload, other records
    // (schema, grants, access records) with theirs; the proof still checks.
    let (records, _) = auditor.read_log("clinic", 0, 100).await.unwrap();
    let rows: Vec<_> = records
        .iter()
        .filter(|record| record.record_kind == "event")
        .collect();
    assert_eq!(rows.len(), 3);
    assert!(
        rows.iter()
            .all(|record| record.redacted && record.payload.is_empty())
    );
    assert!(
        records
            .iter()
            .filter(|record| record.record_kind != "event")
            .all(|record| !record.redacted && !record.payload.is_empty())
    );
    let proven = auditor.prove("clinic", Some(inserted)).await.unwrap();
    let record = proven.record.unwrap();
    assert!(record.redacted && record.payload.is_empty());
    let (records, _) = admin.read_log("clinic", inserted, 1).await.unwrap();
    assert!(!records[0].redacted);
    assert!(String::from_utf8_lossy(&records[0].payload).contains("Cy"));
    // A grant on the table shows its payloads to the auditor.
    write(&admin, "clinic", "GRANT SELECT ON patients TO auditor").await;
    let (records, _) = auditor.read_log("clinic", inserted, 1).await.unwrap();
    assert!(!records[0].redacted);
    assert!(String::from_utf8_lossy(&records[0].payload).contains("Cy"));
    let proven = auditor.prove("clinic", Some(inserted)).await.unwrap();
    assert!(!proven.record.unwrap().redacted);

    // DROP POLICY lifts the filter.
    write(&admin, "clinic", "DROP POLICY home ON patients").await;
    assert_eq!(names(&us, &now).await.unwrap(), ["Ada", "Bo", "Cy"]);

    // Everything survives a restart: grants and filters are replayed from the log.
    write(
        &admin,
        "clinic",
        "CREATE POLICY home ON patients FOR SELECT TO clinician USING (region = current_attribute('region'))",
    )
    .await;
    for client in [reader, analyst, eu, us, nowhere, medic, auditor, admin] {
        client.close().await;
    }
    server.stop().await.unwrap();
    let server = start(dir.path()).await;
    let admin = Client::connect(server.client_config(), None).await.unwrap();
    let reader = connect_as(&server, &admin, "clinic", "front-desk-2", &["reader"], &[]).await;
    assert_eq!(
        server_error(names(&reader, &now).await).0,
        ErrorCode::PermissionDenied
    );
    let eu = connect_as(
        &server,
        &admin,
        "clinic",
        "eu-2",
        &["clinician"],
        &[("region", "eu")],
    )
    .await;
    assert_eq!(names(&eu, &now).await.unwrap(), ["Ada", "Cy"]);
    for client in [reader, eu, admin] {
        client.close().await;
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_read_write_prove_or_name_another() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let root = Client::connect(server.client_config(), None).await.unwrap();
    root.create_tenant("clinic", "").await.unwrap();
    let bank_id = root.create_tenant("bank", "").await.unwrap();
    write(
        &root,
        "bank",
        "CREATE TABLE accounts (id BIGINT PRIMARY KEY, owner TEXT)",
    )
    .await;
    write(&root, "bank", "INSERT INTO accounts VALUES (1, 'Eve')").await;
    write(
        &root,
        "clinic",
        "CREATE TABLE patients (id BIGINT PRIMARY KEY)",
    )
    .await;
    // The clinic's own admin and auditor: the most a tenant token can be.
    let admin = connect_as(&server, &root, "clinic", "clinic-admin", &["admin"], &[]).await;
    let auditor = connect_as(
        &server,
        &root,
        "clinic",
        "clinic-auditor",
        &["auditor"],
        &[],
    )
    .await;

    /// The answers for the bank and for a tenant that does not exist must be the same,
    /// but for the name itself.
    fn same(existing: &(ErrorCode, String), missing: &(ErrorCode, String)) {
        assert_eq!(existing.0, ErrorCode::PermissionDenied, "{}", existing.1);
        assert_eq!(
            (existing.0, existing.1.replace("bank", "X")),
            (missing.0, missing.1.replace("no-such-bank", "X"))
        );
    }

    // The tenant field of every kind of frame.
    for client in [&admin, &auditor] {
        let (bank, missing) = ("bank", "no-such-bank");
        {
            let sql = |tenant: &str| Request::Sql {
                tenant: tenant.into(),
                sql: "SELECT * FROM accounts".into(),
                params: Vec::new(),
                reason: String::new(),
                as_of: None,
                purpose: None,
                after: None,
                emergency: Some("hostile".into()),
            };
            same(
                &server_error(client.request(sql(bank)).await),
                &server_error(client.request(sql(missing)).await),
            );
            same(
                &server_error(client.read_log(bank, 0, 10).await),
                &server_error(client.read_log(missing, 0, 10).await),
            );
            same(
                &server_error(client.prove(bank, Some(0)).await),
                &server_error(client.prove(missing, Some(0)).await),
            );
            let append = |tenant: &str| Request::Append {
                tenant: tenant.into(),
                events: vec![kimberlite_client::WireEvent {
                    subject: None,
                    stream: "accounts-x".into(),
                    event_type: "Stolen".into(),
                    payload: b"{}".to_vec(),
                }],
                reason: String::new(),
            };
            same(
                &server_error(client.request(append(bank)).await),
                &server_error(client.request(append(missing)).await),
            );
            let token = |tenant: &str| Request::TokenCreate {
                tenant: tenant.into(),
                name: Some("mole".into()),
                roles: vec!["admin".into()],
                attributes: Vec::new(),
                reason: String::new(),
            };
            same(
                &server_error(client.request(token(bank)).await),
                &server_error(client.request(token(missing)).await),
            );
            let rollback = |tenant: &str| Request::ModuleRollback {
                tenant: tenant.into(),
                kind: ModuleKind::Policy,
                name: "phi".into(),
                reason: String::new(),
            };
            same(
                &server_error(client.request(rollback(bank)).await),
                &server_error(client.request(rollback(missing)).await),
            );
        }
        // The bank's id where a name belongs is just another name nobody has.
        let (code, _) = server_error(client.read_log(&bank_id.to_string(), 0, 10).await);
        assert_eq!(code, ErrorCode::PermissionDenied);
        // Replica-to-replica frames carry tenant ids; a single node answers none of them.
        let (code, _) = server_error(
            client
                .request(Request::FetchFrames {
                    tenant: bank_id,
                    from: 0,
                    end: 10,
                })
                .await,
        );
        assert_eq!(code, ErrorCode::BadRequest);
        // Only its own tenant is listed.
        let tenants: Vec<String> = client
            .list_tenants()
            .await
            .unwrap()
            .into_iter()
            .map(|tenant| tenant.name)
            .collect();
        assert_eq!(tenants, ["clinic"]);
    }

    // SQL naming the bank's tables from the clinic: an unknown table, exactly as for a
    // table nobody has; a qualified name is an unknown schema, exactly as for any schema.
    let clinic_admin = &admin;
    let in_clinic = |sql: &'static str| async move {
        server_error(clinic_admin.sql("clinic", sql, &[], "").await)
    };
    let (code, accounts) = in_clinic("SELECT * FROM accounts").await;
    assert_eq!(code, ErrorCode::NotFound);
    let (_, ghosts) = in_clinic("SELECT * FROM ghosts").await;
    assert_eq!(
        accounts.replace("accounts", "X"),
        ghosts.replace("ghosts", "X")
    );
    assert!(!accounts.contains("bank"), "{accounts}");
    for (bank, nobody) in [
        (
            "SELECT * FROM bank.accounts",
            "SELECT * FROM nobody.accounts",
        ),
        (
            "INSERT INTO bank.accounts VALUES (2, 'x')",
            "INSERT INTO nobody.accounts VALUES (2, 'x')",
        ),
        (
            "GRANT SELECT ON bank.accounts TO reader",
            "GRANT SELECT ON nobody.accounts TO reader",
        ),
        ("DELETE FROM bank.accounts", "DELETE FROM nobody.accounts"),
    ] {
        let (code, bank) = in_clinic(bank).await;
        let (other, nobody) = in_clinic(nobody).await;
        assert_eq!(code, other);
        assert_eq!(bank.replace("bank", "X"), nobody.replace("nobody", "X"));
        assert!(bank.contains("unknown schema"), "{bank}");
    }
    let (code, _) = in_clinic("GRANT SELECT ON accounts TO reader").await;
    assert_eq!(code, ErrorCode::NotFound);
    let (code, _) = in_clinic("INSERT INTO accounts VALUES (2, 'x')").await;
    assert_eq!(code, ErrorCode::NotFound);
    // The system views are the clinic's own: its log, none of the bank's records.
    let log = admin
        .query(
            "clinic",
            "SELECT COUNT(*), MAX(stream) FROM kimberlite.log",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(texts(&log), [["1", "patients"]]);
    let tables = admin
        .query("clinic", "SELECT name FROM kimberlite.tables", &[])
        .await
        .unwrap();
    assert_eq!(texts(&tables), [["patients"]]);

    // Nothing of the above reached the bank.
    let (records, end) = root.read_log("bank", 0, 100).await.unwrap();
    assert_eq!(end, 2);
    assert!(records.iter().all(|record| record.principal == "admin"));
    for client in [admin, auditor, root] {
        client.close().await;
    }
    server.stop().await.unwrap();
}
