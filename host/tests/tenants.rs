//! Tenants as a node shares them. Regions: a node creates and serves tenants of its own
//! region (and tenants without one), and refuses, with a message naming both regions, a
//! tenant whose data must live elsewhere: at creation, and after a restart in another
//! region. Quotas: a tenant over a quota is refused with `QuotaExceeded` naming the quota
//! and its value, while another tenant is not; quotas survive a restart.

use kimberlite::{EmbeddedServer, NodeOptions};
use kimberlite_client::{Client, ClientError, ErrorCode};
use std::path::Path;

async fn start(dir: &Path, region: Option<&str>) -> EmbeddedServer {
    let options = NodeOptions {
        region: region.map(str::to_string),
        ..NodeOptions::new(dir)
    };
    EmbeddedServer::start(options, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("node starts")
}

fn denied(result: Result<impl std::fmt::Debug, ClientError>) -> String {
    let error = result.expect_err("refused");
    assert_eq!(error.code(), Some(ErrorCode::PermissionDenied), "{error}");
    error.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_holds_only_tenants_of_its_region() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Some("eu")).await;
    let client = Client::connect(server.client_config(), None).await.unwrap();
    client
        .create_tenant_in("clinic", Some("eu"), "eu data")
        .await
        .unwrap();
    client.create_tenant("anywhere", "no region").await.unwrap();
    let message = denied(client.create_tenant_in("shop", Some("us"), "us data").await);
    assert!(
        message.contains("must live in region `us`") && message.contains("runs in region `eu`"),
        "{message}"
    );
    let bad = client
        .create_tenant_in("odd", Some("no spaces"), "x")
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("region"), "{bad}");
    client
        .sql("clinic", "CREATE TABLE t (id BIGINT PRIMARY KEY)", &[], "")
        .await
        .unwrap();
    let tenants = client.list_tenants().await.unwrap();
    assert!(!tenants.iter().any(|tenant| tenant.name == "shop"));
    client.close().await;
    server.stop().await.unwrap();

    // The same data, a node in another region (or none): the eu tenant is not served.
    for region in [Some("us"), None] {
        let server = start(dir.path(), region).await;
        let client = Client::connect(server.client_config(), None).await.unwrap();
        let message = denied(client.sql("clinic", "SELECT * FROM t", &[], "").await);
        assert!(
            message.contains("may not serve tenant `clinic`")
                && message.contains("must live in region `eu`"),
            "{message}"
        );
        client.sql("anywhere", "SELECT 1", &[], "").await.unwrap();
        client.close().await;
        server.stop().await.unwrap();
    }
    let server = start(dir.path(), Some("eu")).await;
    let client = Client::connect(server.client_config(), None).await.unwrap();
    client
        .sql("clinic", "SELECT * FROM t", &[], "")
        .await
        .unwrap();
    client.close().await;
    server.stop().await.unwrap();
}

fn exceeded(result: Result<impl std::fmt::Debug, ClientError>) -> String {
    let error = result.expect_err("over quota");
    assert_eq!(error.code(), Some(ErrorCode::QuotaExceeded), "{error}");
    error.to_string()
}

fn event(n: usize) -> kimberlite_client::WireEvent {
    kimberlite_client::WireEvent {
        subject: None,
        stream: "s".into(),
        event_type: "E".into(),
        payload: format!("{{\"n\":{n}}}").into_bytes(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_over_its_quota_is_refused_and_the_others_are_not() {
    // Small rates, so that what refills while the test runs (and while the node holds a
    // refused connection for QUOTA_PAUSE_MS) stays far below what the checks need.
    const QUERIES_PER_SECOND: u64 = 2;
    const APPENDS_PER_SECOND: u64 = 20;
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), None).await;
    let client = Client::connect(server.client_config(), None).await.unwrap();
    for name in ["noisy", "quiet"] {
        client.create_tenant(name, "quota test").await.unwrap();
    }
    let set = client
        .set_quota(
            "noisy",
            None,
            Some(APPENDS_PER_SECOND),
            Some(QUERIES_PER_SECOND),
            None,
            "noisy neighbour",
        )
        .await
        .unwrap();
    assert!(set.summary.contains("QUOTA SET"), "{}", set.summary);
    let zero = client
        .set_quota("quiet", Some(0), None, None, None, "x")
        .await
        .unwrap_err();
    assert!(
        zero.to_string().contains("would refuse everything"),
        "{zero}"
    );

    // Queries: a burst of one second's worth, then refusals; the other tenant is untouched.
    let mut refused = Vec::new();
    for _ in 0..3 * QUERIES_PER_SECOND {
        if let Err(error) = client.sql("noisy", "SELECT 1", &[], "").await {
            refused.push(error);
        }
        client.sql("quiet", "SELECT 1", &[], "").await.unwrap();
    }
    assert!(
        refused.len() as u64 >= QUERIES_PER_SECOND,
        "{} refused",
        refused.len()
    );
    let message = exceeded(Err::<(), _>(refused.remove(0)));
    assert!(
        message.contains(&format!("queries_per_second = {QUERIES_PER_SECOND}")),
        "{message}"
    );

    // Appends: n events count n; more than a second's worth at once is refused outright.
    let too_many = (0..=APPENDS_PER_SECOND as usize).map(event).collect();
    let message = exceeded(client.append("noisy", too_many, "").await);
    assert!(message.contains("split the request"), "{message}");
    let second = (0..APPENDS_PER_SECOND as usize).map(event).collect();
    client.append("noisy", second, "").await.unwrap();
    // Another second's worth right after: it needs the full bucket back (one second away).
    let again = (0..APPENDS_PER_SECOND as usize).map(event).collect();
    let message = exceeded(client.append("noisy", again, "").await);
    assert!(message.contains("appends_per_second = 20"), "{message}");
    client.append("quiet", vec![event(0)], "").await.unwrap();

    // Stored bytes: writes stop once the log holds the quota.
    client
        .set_quota("quiet", Some(1), None, None, None, "full")
        .await
        .unwrap();
    let message = exceeded(client.append("quiet", vec![event(1)], "").await);
    assert!(message.contains("stored_bytes = 1"), "{message}");
    client.sql("quiet", "SELECT 1", &[], "").await.unwrap();
    client.close().await;
    server.stop().await.unwrap();

    // The quotas are catalog state: they survive a restart.
    let server = start(dir.path(), None).await;
    let client = Client::connect(server.client_config(), None).await.unwrap();
    exceeded(client.append("quiet", vec![event(2)], "").await);
    client.close().await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masking_policies_over_their_fuel_quota_refuse_queries() {
    let guests = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/guests/wasm32-unknown-unknown/release");
    let module = std::fs::read(guests.join("phi_mask.wasm"))
        .expect("build the samples first (`cargo xtask build-guests`)");
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), None).await;
    let admin = Client::connect(server.client_config(), None).await.unwrap();
    admin.create_tenant("clinic", "fuel test").await.unwrap();
    admin
        .sql(
            "clinic",
            "CREATE TABLE patients (id BIGINT PRIMARY KEY, name TEXT, ssn TEXT)",
            &[],
            "",
        )
        .await
        .unwrap();
    admin
        .sql(
            "clinic",
            "INSERT INTO patients VALUES (1, 'Ada Lovelace', '123-45-6789')",
            &[],
            "",
        )
        .await
        .unwrap();
    admin
        .deploy(
            "clinic",
            kimberlite_client::ModuleKind::Policy,
            "phi",
            module,
            Vec::new(),
            "mask PHI",
        )
        .await
        .unwrap();
    let (token, _) = admin
        .create_token("clinic", Some("rita"), &["reader".into()], &[], "desk")
        .await
        .unwrap();
    let reader = Client::connect(server.client_config(), Some(token))
        .await
        .unwrap();
    let masked = reader
        .query("clinic", "SELECT name FROM patients", &[])
        .await
        .unwrap();
    assert!(!masked.masked_by.is_empty(), "{masked:?}");
    // One fuel per second: the next masked query's policy call overdraws the bucket, and
    // the one after it is refused until the bucket refills.
    admin
        .set_quota("clinic", None, None, None, Some(1), "tight")
        .await
        .unwrap();
    reader
        .query("clinic", "SELECT name FROM patients", &[])
        .await
        .unwrap();
    let message = exceeded(
        reader
            .query("clinic", "SELECT name FROM patients", &[])
            .await,
    );
    assert!(message.contains("fuel_per_second = 1"), "{message}");
    reader.close().await;
    admin.close().await;
    server.stop().await.unwrap();
}
