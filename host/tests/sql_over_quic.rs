//! The foundation as a user meets it: a node with its real QUIC server on loopback, and
//! the real client SDK.

use kimberlite::{EmbeddedServer, NodeOptions};
use kimberlite_client::protocol::{self, PROTOCOL_VERSION, Request, RequestFrame, ResponseFrame};
use kimberlite_client::{AsOf, Client, ClientError, ErrorCode, ResultSet, SqlOutcome, WireValue};

const TENANT: &str = "clinic";

async fn start(dir: &std::path::Path) -> EmbeddedServer {
    EmbeddedServer::start(NodeOptions::new(dir), "127.0.0.1:0".parse().unwrap())
        .await
        .expect("node starts")
}

async fn write(client: &Client, sql: &str, reason: &str) -> (u64, u64) {
    match client.sql(TENANT, sql, &[], reason).await.expect(sql) {
        SqlOutcome::Written(written) => written.positions.expect("a write has positions"),
        SqlOutcome::Rows(rows) => panic!("{sql} returned rows {rows:?}"),
    }
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

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_travel_and_the_audit_trail() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let admin = Client::connect(server.client_config(), None).await.unwrap();
    admin.create_tenant(TENANT, "onboarding").await.unwrap();
    write(
        &admin,
        "CREATE TABLE patients (id BIGINT PRIMARY KEY, name TEXT, region TEXT)",
        "schema",
    )
    .await;
    let (_, inserted) = write(
        &admin,
        "INSERT INTO patients (id, name, region) VALUES (1, 'Ada', 'north'), (2, 'Alan', 'east')",
        "admission",
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let between = now_ns();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    write(
        &admin,
        "UPDATE patients SET region = 'south' WHERE id = 1",
        "moved",
    )
    .await;
    write(&admin, "DELETE FROM patients WHERE id = 2", "duplicate").await;

    let present = admin
        .query(
            TENANT,
            "SELECT id, name, region FROM patients ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(texts(&present), vec![vec!["1", "Ada", "south"]]);

    let past = admin
        .sql_as_of(
            TENANT,
            "SELECT id, name, region FROM patients ORDER BY id",
            &[],
            AsOf::Position(inserted),
        )
        .await
        .unwrap();
    assert_eq!(
        texts(&past),
        vec![vec!["1", "Ada", "north"], vec!["2", "Alan", "east"]]
    );
    assert_eq!(past.as_of, Some(inserted));

    let by_time = admin
        .sql_as_of(
            TENANT,
            "SELECT id, name, region FROM patients ORDER BY id",
            &[],
            AsOf::TimestampNs(between),
        )
        .await
        .unwrap();
    assert_eq!(texts(&by_time), texts(&past));

    let in_sql = admin
        .query(
            TENANT,
            &format!("SELECT name FROM patients AS OF POSITION {inserted} WHERE id = $1"),
            &[WireValue::Integer(2)],
        )
        .await
        .unwrap();
    assert_eq!(texts(&in_sql), vec![vec!["Alan"]]);

    let trail = admin
        .query(
            TENANT,
            "SELECT kind, stream, client, reason FROM kimberlite.log ORDER BY position",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        texts(&trail),
        vec![
            vec!["CreateTable", "patients", "admin", "schema"],
            vec!["RowInserted", "patients", "admin", "admission"],
            vec!["RowInserted", "patients", "admin", "admission"],
            vec!["RowUpdated", "patients", "admin", "moved"],
            vec!["RowDeleted", "patients", "admin", "duplicate"],
        ]
    );

    // Beyond the end of the log is an error that says so.
    let (code, message) = server_error(
        admin
            .sql_as_of(TENANT, "SELECT * FROM patients", &[], AsOf::Position(1_000))
            .await,
    );
    assert_eq!(code, ErrorCode::BadRequest, "{message}");
    assert!(message.contains("1000"), "{message}");

    // The log as a client reads it: decrypted payloads, reasons, the writer's session.
    let (records, end) = admin.read_log(TENANT, 0, 100).await.unwrap();
    assert_eq!(end, 5);
    assert_eq!(records.len(), 5);
    assert_eq!(records[3].reason, "moved");
    assert_eq!(records[3].client_id, admin.client_id());
    assert!(String::from_utf8_lossy(&records[3].payload).contains("south"));

    admin.close().await;
    server.stop().await.unwrap();

    // A restart recovers everything, and the past is still there.
    let server = start(dir.path()).await;
    let admin = Client::connect(server.client_config(), None).await.unwrap();
    let past = admin
        .sql_as_of(
            TENANT,
            "SELECT id, name, region FROM patients ORDER BY id",
            &[],
            AsOf::Position(inserted),
        )
        .await
        .unwrap();
    assert_eq!(
        texts(&past),
        vec![vec!["1", "Ada", "north"], vec!["2", "Alan", "east"]]
    );
    admin.close().await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors_and_the_node_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let admin = Client::connect(server.client_config(), None).await.unwrap();
    admin.create_tenant(TENANT, "").await.unwrap();
    admin.create_tenant("bank", "").await.unwrap();
    write(
        &admin,
        "CREATE TABLE patients (id BIGINT PRIMARY KEY, name TEXT)",
        "",
    )
    .await;
    write(&admin, "INSERT INTO patients VALUES (1, 'Ada')", "").await;

    let (code, message) = server_error(admin.sql(TENANT, "SELEC * FROM patients", &[], "").await);
    assert_eq!(code, ErrorCode::BadSql, "{message}");

    let (code, message) = server_error(
        admin
            .sql(TENANT, "SELECT * FROM nothing_here", &[], "")
            .await,
    );
    assert_eq!(code, ErrorCode::NotFound, "{message}");
    assert!(message.contains("nothing_here"), "{message}");

    let (code, message) = server_error(
        admin
            .sql(TENANT, "INSERT INTO patients VALUES (1, 'Twin')", &[], "")
            .await,
    );
    assert_eq!(code, ErrorCode::Conflict, "{message}");

    let (code, message) = server_error(
        admin
            .sql(
                TENANT,
                "INSERT INTO patients VALUES ('x', 'Wrong')",
                &[],
                "",
            )
            .await,
    );
    assert_eq!(code, ErrorCode::BadSql, "{message}");

    // A wrong token.
    let stranger = Client::connect(server.client_config(), Some("kbt_not_a_real_token".into()))
        .await
        .unwrap();
    let (code, _) = server_error(stranger.query(TENANT, "SELECT * FROM patients", &[]).await);
    assert_eq!(code, ErrorCode::Unauthenticated);

    // A reader may read but not write.
    let (token, _) = admin
        .create_token(TENANT, Some("front-desk"), &["reader".to_string()], &[], "")
        .await
        .unwrap();
    let reader = Client::connect(server.client_config(), Some(token))
        .await
        .unwrap();
    assert_eq!(
        texts(
            &reader
                .query(TENANT, "SELECT name FROM patients", &[])
                .await
                .unwrap()
        ),
        vec![vec!["Ada"]]
    );
    let (code, message) = server_error(
        reader
            .sql(TENANT, "INSERT INTO patients VALUES (2, 'Eve')", &[], "")
            .await,
    );
    assert_eq!(code, ErrorCode::PermissionDenied, "{message}");
    assert!(message.contains("front-desk"), "{message}");

    // A tenant token cannot reach another tenant, nor learn whether it exists.
    let (code, other) = server_error(reader.query("bank", "SELECT 1", &[]).await);
    assert_eq!(code, ErrorCode::PermissionDenied);
    let (code, missing) = server_error(reader.query("no-such-tenant", "SELECT 1", &[]).await);
    assert_eq!(code, ErrorCode::PermissionDenied);
    assert_eq!(
        other.replace("bank", "X"),
        missing.replace("no-such-tenant", "X")
    );

    // Frames of random bytes, a truncated frame, an oversized length, a wrong version:
    // each gets an error answer on its stream.
    let mut seed = 0x2545_F491_4F6C_DD1D_u64;
    for length in [0usize, 1, 3, 4, 17, 200, 4_096] {
        let garbage: Vec<u8> = (0..length)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        let answer = admin.exchange_raw(&garbage).await.unwrap();
        let response: ResponseFrame = protocol::decode_frame(&answer, "response").unwrap();
        let error = response.result.unwrap_err();
        assert_eq!(error.code, ErrorCode::BadFrame, "{length} bytes: {error}");
    }
    let answer = admin.exchange_raw(&u32::MAX.to_be_bytes()).await.unwrap();
    let response: ResponseFrame = protocol::decode_frame(&answer, "response").unwrap();
    assert!(
        response
            .result
            .unwrap_err()
            .message
            .contains("over the limit")
    );
    let frame = protocol::encode_frame(&RequestFrame {
        version: PROTOCOL_VERSION + 1,
        token: String::new(),
        client_id: kimberlite_client::ClientId(1),
        request_number: 1,
        request: Request::TenantList,
    })
    .unwrap();
    let response: ResponseFrame =
        protocol::decode_frame(&admin.exchange_raw(&frame).await.unwrap(), "response").unwrap();
    assert_eq!(response.result.unwrap_err().code, ErrorCode::BadVersion);

    // Still serving, and nothing was written by any of it.
    let rows = admin
        .query(TENANT, "SELECT id, name FROM patients", &[])
        .await
        .unwrap();
    assert_eq!(texts(&rows), vec![vec!["1", "Ada"]]);
    let (_, end) = admin.read_log(TENANT, 0, 0).await.unwrap();
    assert_eq!(end, 2);

    for client in [admin, stranger, reader] {
        client.close().await;
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_share_group_commits_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let admin = Client::connect(server.client_config(), None).await.unwrap();
    admin.create_tenant(TENANT, "").await.unwrap();
    write(
        &admin,
        "CREATE TABLE t (id BIGINT PRIMARY KEY, writer BIGINT)",
        "",
    )
    .await;
    const WRITERS: i64 = 16;
    const ROWS_PER_WRITER: i64 = 25;
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let config = server.client_config().clone();
        tasks.push(tokio::spawn(async move {
            let client = Client::connect(&config, None).await.unwrap();
            for row in 0..ROWS_PER_WRITER {
                let id = writer * ROWS_PER_WRITER + row;
                client
                    .sql(
                        TENANT,
                        "INSERT INTO t (id, writer) VALUES ($1, $2)",
                        &[WireValue::Integer(id), WireValue::Integer(writer)],
                        "",
                    )
                    .await
                    .unwrap();
            }
            client.close().await;
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let counted = admin
        .query(TENANT, "SELECT COUNT(*), SUM(id) FROM t", &[])
        .await
        .unwrap();
    let total = WRITERS * ROWS_PER_WRITER;
    assert_eq!(
        counted.rows,
        vec![vec![
            WireValue::Integer(total),
            WireValue::Integer(total * (total - 1) / 2)
        ]]
    );
    admin.close().await;
    server.stop().await.unwrap();
}
