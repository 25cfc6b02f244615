//! `kimberlite proof` and `kimberlite verify --remote`: proofs checked on the client, with the
//! heads it trusted kept between runs in `trust.toml` beside the client config.

use crate::cli::{Connection, describe_record};
use crate::files::write_atomic;
use anyhow::Context;
use kimberlite_client::proof::TrustedHead;
use kimberlite_client::{Client, Proven};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The file, beside the client config, that keeps the last trusted head per tenant.
pub const TRUST_FILE: &str = "trust.toml";

#[derive(Default, Serialize, Deserialize)]
struct TrustFile {
    #[serde(default)]
    tenants: BTreeMap<String, SavedHead>,
}

#[derive(Serialize, Deserialize)]
struct SavedHead {
    partition: u64,
    size: u64,
    root: String,
    chain_head: String,
    timestamp_ns: u64,
}

fn trust_path(connection: &Connection) -> PathBuf {
    connection.config_path().with_file_name(TRUST_FILE)
}

fn load(connection: &Connection) -> anyhow::Result<TrustFile> {
    let path = trust_path(connection);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            toml::from_str(&text).with_context(|| format!("{} is not valid", path.display()))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(TrustFile::default()),
        Err(error) => Err(error).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn hash(text: &str, what: &str) -> anyhow::Result<[u8; 32]> {
    hex::decode(text)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .with_context(|| format!("{what} in {TRUST_FILE} is not 64 hex digits"))
}

/// Connects, and trusts the head saved for `tenant` (if any): proofs must extend it.
async fn connect(connection: &Connection, tenant: &str) -> anyhow::Result<Client> {
    let client = connection.connect().await?;
    if let Some(saved) = load(connection)?.tenants.get(tenant) {
        client.trust(
            tenant,
            TrustedHead {
                partition: saved.partition,
                size: saved.size,
                root: hash(&saved.root, "root")?,
                chain_head: hash(&saved.chain_head, "chain_head")?,
                timestamp_ns: saved.timestamp_ns,
            },
        );
    }
    Ok(client)
}

fn save(connection: &Connection, tenant: &str, head: &TrustedHead) -> anyhow::Result<()> {
    let mut file = load(connection)?;
    file.tenants.insert(
        tenant.to_string(),
        SavedHead {
            partition: head.partition,
            size: head.size,
            root: hex::encode(head.root),
            chain_head: hex::encode(head.chain_head),
            timestamp_ns: head.timestamp_ns,
        },
    );
    let path = trust_path(connection);
    let text = toml::to_string_pretty(&file).expect("a trust file always serializes");
    write_atomic(&path, text.as_bytes(), false)
        .with_context(|| format!("cannot write {}", path.display()))
}

fn describe_head(tenant: &str, proven: &Proven) -> String {
    let head = &proven.head;
    let extends = match &proven.previous {
        Some(previous) => format!(
            "extends the head trusted before ({} records; consistency proof of {} hashes checked)",
            previous.size, proven.consistency_hashes
        ),
        None => "first contact: trusted on the node's signature alone".to_string(),
    };
    format!(
        "tenant `{tenant}` (partition {}): {} records, Merkle root {}, chain head {}\n  signed by a trusted node key; {extends}",
        head.partition,
        head.size,
        hex::encode(head.root),
        hex::encode(head.chain_head),
    )
}

pub async fn verify_remote(connection: &Connection, tenant: &str) -> anyhow::Result<()> {
    let client = connect(connection, tenant).await?;
    let proven = client.prove(tenant, None).await?;
    println!("ok  {}", describe_head(tenant, &proven));
    save(connection, tenant, &proven.head)?;
    println!("trusted head saved in {}", trust_path(connection).display());
    Ok(())
}

/// `kimberlite erase`: the erasure, then its attestation (proven here, printed as JSON).
pub async fn erase(
    connection: &Connection,
    tenant: &str,
    subject: &str,
    reason: &str,
) -> anyhow::Result<()> {
    let client = connect(connection, tenant).await?;
    let written = client.erase(tenant, subject, reason).await?;
    eprintln!("{}", written.summary);
    let erased = Erasure {
        attestation: "kimberlite-erasure-v1",
        tenant,
        partition_name: tenant,
        event_type: "SubjectErased",
        name_field: "subject",
        name: subject,
        copied: &[("key_id", "key_id")],
    };
    attest(connection, &client, &written, &erased).await
}

/// `kimberlite tenant erase`: the tenant's erasure, then its attestation: the
/// `TenantErased` record proven in the system partition's signed tree.
pub async fn erase_tenant(
    connection: &Connection,
    tenant: &str,
    reason: &str,
) -> anyhow::Result<()> {
    let system = kimberlite_client::SYSTEM_PARTITION_NAME;
    let client = connect(connection, system).await?;
    let written = client.erase_tenant(tenant, reason).await?;
    eprintln!("{}", written.summary);
    let erased = Erasure {
        attestation: "kimberlite-tenant-erasure-v1",
        tenant,
        partition_name: system,
        event_type: "TenantErased",
        name_field: "name",
        name: tenant,
        copied: &[("tenant_id", "tenant"), ("records", "records")],
    };
    attest(connection, &client, &written, &erased).await
}

/// What an erasure's attestation proves and prints.
struct Erasure<'a> {
    attestation: &'static str,
    /// The tenant the erasure is of or in.
    tenant: &'a str,
    /// The partition (`Proof` name) holding the erasure record.
    partition_name: &'a str,
    event_type: &'static str,
    /// The payload field naming what was erased, and its expected value.
    name_field: &'static str,
    name: &'a str,
    /// Payload fields copied into the attestation, as (attestation field, payload field).
    copied: &'static [(&'static str, &'static str)],
}

/// Proves the erasure record `written` points at (inclusion proof in a tree head signed by
/// a trusted node key, consistent with the head trusted before), checks it is the erasure
/// asked for, and prints the attestation as JSON.
async fn attest(
    connection: &Connection,
    client: &Client,
    written: &kimberlite_client::WriteOutcome,
    erasure: &Erasure<'_>,
) -> anyhow::Result<()> {
    let (_, position) = written
        .positions
        .context("the node answered the erasure without its record's position")?;
    let proven = client.prove(erasure.partition_name, Some(position)).await?;
    let record = proven.record.as_ref().context("the node sent no record")?;
    let payload: serde_json::Value = serde_json::from_slice(&record.payload)
        .context("the erasure record's payload is not JSON")?;
    if record.event_type != erasure.event_type || payload[erasure.name_field] != erasure.name {
        anyhow::bail!(
            "the record at position {position} is not the erasure of `{}`: {}",
            erasure.name,
            describe_record(record, true)
        );
    }
    save(connection, erasure.partition_name, &proven.head)?;
    let mut attestation = serde_json::json!({
        "attestation": erasure.attestation,
        "tenant": erasure.tenant,
        "partition_name": erasure.partition_name,
        "partition": proven.signed.partition,
        erasure.name_field: erasure.name,
        "reason": record.reason,
        "erased_by": record.principal,
        "position": position,
        "timestamp_ns": record.timestamp_ns,
        "record_hash": hex::encode(&record.hash),
        "tree_size": proven.signed.size,
        "root": hex::encode(&proven.signed.root),
        "chain_head": hex::encode(&proven.signed.chain_head),
        "head_timestamp_ns": proven.signed.timestamp_ns,
        "node_public_key": hex::encode(&proven.signed.public_key),
        "signature": hex::encode(&proven.signed.signature),
        "inclusion_proof_hashes": proven.inclusion_hashes,
    });
    for (field, from) in erasure.copied {
        attestation[*field] = payload[*from].clone();
    }
    println!("{}", serde_json::to_string_pretty(&attestation)?);
    eprintln!(
        "ok  erasure record {position} is in the signed tree of {} records (inclusion proof of {} hashes checked)",
        proven.signed.size, proven.inclusion_hashes
    );
    Ok(())
}

pub async fn prove(connection: &Connection, tenant: &str, position: u64) -> anyhow::Result<()> {
    let client = connect(connection, tenant).await?;
    let proven = client.prove(tenant, Some(position)).await?;
    let record = proven.record.as_ref().context("the node sent no record")?;
    println!("{}", describe_record(record, true));
    println!(
        "ok  record {position} (hash {}) is in the signed tree: inclusion proof of {} hashes checked",
        hex::encode(&record.hash),
        proven.inclusion_hashes
    );
    println!("    {}", describe_head(tenant, &proven));
    save(connection, tenant, &proven.head)?;
    Ok(())
}
