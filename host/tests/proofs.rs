//! Proofs a client can check, through the real protocol: a record's inclusion in a signed
//! Merkle tree head, each new head's consistency with the one trusted before; a tampered
//! proof, an untrusted signer and a node showing a forked history are all rejected with a
//! message saying what did not hold; a tenant's token cannot prove another tenant's log.

use kimberlite::{EmbeddedServer, NodeOptions};
use kimberlite_client::proof::{self, ProofFailure};
use kimberlite_client::protocol::{ProofBundle, Request, Response, WireHash};
use kimberlite_client::{Client, ClientConfig, ClientError, ErrorCode, WireEvent};
use std::path::Path;

const TENANT: &str = "ledger";

async fn start(dir: &Path) -> EmbeddedServer {
    EmbeddedServer::start(NodeOptions::new(dir), "127.0.0.1:0".parse().unwrap())
        .await
        .expect("node starts")
}

async fn append(client: &Client, tag: &str, count: usize) {
    let events = (0..count)
        .map(|index| WireEvent {
            subject: None,
            stream: "accounts".into(),
            event_type: "Deposited".into(),
            payload: format!("{{\"tag\":\"{tag}\",\"n\":{index}}}").into_bytes(),
        })
        .collect();
    client.append(TENANT, events, "proof test").await.unwrap();
}

async fn bundle(client: &Client, position: Option<u64>, trusted_size: Option<u64>) -> ProofBundle {
    let request = Request::Proof {
        tenant: TENANT.into(),
        position,
        trusted_size,
    };
    match client.request(request).await.unwrap() {
        Response::Proof(bundle) => bundle,
        other => panic!("a proof request answered {other:?}"),
    }
}

fn key_of(config: &ClientConfig) -> [u8; 32] {
    hex::decode(&config.node_public_keys[0])
        .unwrap()
        .try_into()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inclusion_and_consistency_proofs_check_and_tampering_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let config = server.client_config().clone();
    let client = Client::connect(&config, None).await.unwrap();
    client.create_tenant(TENANT, "proof test").await.unwrap();
    append(&client, "a", 37).await;

    // First contact: trusted on the signature; the record is in the tree.
    let first = client.prove(TENANT, Some(5)).await.unwrap();
    assert!(first.previous.is_none());
    let size = first.head.size;
    assert!(size >= 37, "{size}");
    assert_eq!(first.record.as_ref().unwrap().position, 5);
    assert!(first.inclusion_hashes > 0);

    // The log grows; every later head must extend the trusted one, for every position.
    append(&client, "b", 50).await;
    for position in [0, 36, 37, 86] {
        let proven = client.prove(TENANT, Some(position)).await.unwrap();
        assert_eq!(proven.head.size, size + 50);
        assert_eq!(proven.record.unwrap().position, position);
    }
    let later = client.trusted_head(TENANT).unwrap();
    assert_eq!(later.size, size + 50);
    let previous = proof::TrustedHead {
        ..first.head.clone()
    };
    let keys = [key_of(&config)];

    // Untouched, the bundle checks; each tampering is refused with what failed.
    let good = bundle(&client, Some(40), Some(previous.size)).await;
    proof::check(&good, &keys, Some(&previous), Some(40)).unwrap();

    let mut tampered = good.clone();
    tampered.inclusion[0].0[3] ^= 1;
    assert!(matches!(
        proof::check(&tampered, &keys, Some(&previous), Some(40)),
        Err(ProofFailure::NotIncluded { position: 40, .. })
    ));
    let mut tampered = good.clone();
    tampered.record.as_mut().unwrap().hash[0] ^= 1;
    assert!(matches!(
        proof::check(&tampered, &keys, Some(&previous), Some(40)),
        Err(ProofFailure::NotIncluded { .. })
    ));
    let mut tampered = good.clone();
    tampered.consistency.push(WireHash(vec![7; 32]));
    assert!(matches!(
        proof::check(&tampered, &keys, Some(&previous), Some(40)),
        Err(ProofFailure::Forked { .. })
    ));
    let mut tampered = good.clone();
    tampered.head.size += 1;
    assert!(matches!(
        proof::check(&tampered, &keys, Some(&previous), Some(40)),
        Err(ProofFailure::BadSignature(_))
    ));
    let mut tampered = good.clone();
    tampered.head.root[0] ^= 1;
    assert!(matches!(
        proof::check(&tampered, &keys, Some(&previous), Some(40)),
        Err(ProofFailure::BadSignature(_))
    ));
    let stranger = [9u8; 32];
    let error = proof::check(&good, &[stranger], Some(&previous), Some(40)).unwrap_err();
    assert!(
        matches!(error, ProofFailure::UntrustedKey { .. }),
        "{error}"
    );
    let error = proof::check(&good, &[], None, None).unwrap_err();
    assert!(error.to_string().contains("node_public_keys"), "{error}");
    // A head smaller than the trusted one is a rollback.
    let mut bigger = later.clone();
    bigger.size = 1_000;
    let error = proof::check(&good, &keys, Some(&bigger), None).unwrap_err();
    assert!(matches!(error, ProofFailure::Shrunk { .. }), "{error}");

    // A position past the durable tree is a clear error, not a proof.
    let error = client.prove(TENANT, Some(10_000)).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::NotFound), "{error}");

    // Another tenant's token cannot prove (or learn of) this tenant's log.
    client.create_tenant("other", "proof test").await.unwrap();
    let (token, _) = client
        .create_token("other", None, &["auditor".to_string()], &[], "proof test")
        .await
        .unwrap();
    let outsider = Client::connect(&config, Some(token)).await.unwrap();
    let error = outsider.prove(TENANT, Some(0)).await.unwrap_err();
    assert!(
        matches!(
            error.code(),
            Some(ErrorCode::PermissionDenied | ErrorCode::NotFound)
        ),
        "{error}"
    );
    server.stop().await.unwrap();
}

/// Two nodes with the same signing key and certificate but different histories of the same
/// tenant: a client that trusted one's head catches the other's fork.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_showing_a_forked_history_is_caught() {
    let honest_dir = tempfile::tempdir().unwrap();
    let forked_dir = tempfile::tempdir().unwrap();
    let honest = start(honest_dir.path()).await;
    let honest_config = honest.client_config().clone();
    let client = Client::connect(&honest_config, None).await.unwrap();
    client.create_tenant(TENANT, "proof test").await.unwrap();
    append(&client, "honest", 20).await;
    let trusted = client.prove(TENANT, Some(3)).await.unwrap().head;
    honest.stop().await.unwrap();

    // The forger holds the honest node's identity (key and certificate) and rewrites history.
    for file in ["node.key", "node.pub", "master.key"] {
        std::fs::copy(honest_dir.path().join(file), forked_dir.path().join(file)).unwrap();
    }
    std::fs::create_dir_all(forked_dir.path().join("tls")).unwrap();
    for file in ["cert.der", "key.der"] {
        std::fs::copy(
            honest_dir.path().join("tls").join(file),
            forked_dir.path().join("tls").join(file),
        )
        .unwrap();
    }
    let forged = start(forked_dir.path()).await;
    let forged_config = forged.client_config().clone();
    assert_eq!(
        forged_config.node_public_keys,
        honest_config.node_public_keys
    );
    assert_eq!(
        forged_config.certificate_sha256,
        honest_config.certificate_sha256
    );
    let forger = Client::connect(&forged_config, None).await.unwrap();
    forger.create_tenant(TENANT, "forgery").await.unwrap();
    append(&forger, "forged", 25).await;

    let victim = Client::connect(&forged_config, None).await.unwrap();
    victim.trust(TENANT, trusted.clone());
    let error = victim.prove(TENANT, Some(3)).await.unwrap_err();
    match &error {
        ClientError::Proof(ProofFailure::Forked { trusted, shown, .. }) if *shown > *trusted => {}
        other => panic!("a fork must be caught, got {other:?}"),
    }
    assert!(error.to_string().contains("forked history"), "{error}");
    // The trusted head is unchanged by the rejected proof.
    assert_eq!(victim.trusted_head(TENANT), Some(trusted));
    forged.stop().await.unwrap();
}
