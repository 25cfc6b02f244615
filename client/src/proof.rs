//! Checking what a node proves about a tenant's log, without trusting the node.
//!
//! A node answers [`Request::Proof`](crate::Request::Proof) with a signed tree head (the
//! RFC 9162 Merkle root of the tenant's first `size` records, signed with the node's Ed25519
//! key), a consistency proof from the last head this client trusted, and optionally a record
//! with its inclusion proof. [`check`] verifies every link before anything is believed:
//! 1. the head is signed by a key the client trusts (`node_public_keys` in client.toml);
//! 2. it is about the same tenant as the trusted head, and does not shrink it;
//! 3. the trusted head's tree is a prefix of the new one (consistency proof) — a node that
//!    shows a forked history fails here, however well it signs;
//! 4. the record's hash is the leaf at its position in the new tree (inclusion proof).
//!
//! What is proven is the record's hash (which commits to its stored, encrypted bytes) and its
//! position. The payload shown beside it is the node's decryption: the client holds no tenant
//! data key to check that part.

use crate::protocol::{ProofBundle, WireHash, WireTreeHead};
use kimberlite_merkle::{Hash, SignedTreeHead, TreeHead};

/// A head the client has checked and now trusts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedHead {
    pub partition: u64,
    pub size: u64,
    pub root: Hash,
    pub chain_head: Hash,
    pub timestamp_ns: u64,
}

/// Why a proof was not believed. Each says what did not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofFailure {
    #[error(
        "no node public key to check signatures with: add node_public_keys to client.toml (DATA/node.pub of each node)"
    )]
    NoTrustedKey,
    #[error("the tree head is signed by {key}, which is not a trusted node key")]
    UntrustedKey { key: String },
    #[error("the tree head's signature does not verify: {0}")]
    BadSignature(String),
    #[error("malformed proof: {0}")]
    Malformed(String),
    #[error("the head is about partition {shown}, but this tenant is partition {trusted}")]
    WrongPartition { trusted: u64, shown: u64 },
    #[error(
        "the node shows a tree of {shown} records, smaller than the {trusted} it signed before: a rolled-back or forked history"
    )]
    Shrunk { trusted: u64, shown: u64 },
    #[error(
        "forked history: the trusted head of {trusted} records is not a prefix of the node's {shown} records ({detail})"
    )]
    Forked {
        trusted: u64,
        shown: u64,
        detail: String,
    },
    #[error("record {position} is not in the signed tree of {size} records: {detail}")]
    NotIncluded {
        position: u64,
        size: u64,
        detail: String,
    },
}

fn hash(bytes: &[u8], what: &str) -> Result<Hash, ProofFailure> {
    bytes
        .try_into()
        .map_err(|_| ProofFailure::Malformed(format!("{what} has {} bytes, not 32", bytes.len())))
}

fn path(hashes: &[WireHash], what: &str) -> Result<Vec<Hash>, ProofFailure> {
    hashes.iter().map(|wire| hash(&wire.0, what)).collect()
}

fn signed_head(wire: &WireTreeHead) -> Result<SignedTreeHead, ProofFailure> {
    Ok(SignedTreeHead {
        head: TreeHead {
            partition: wire.partition,
            size: wire.size,
            root: hash(&wire.root, "the root")?,
            chain_head: hash(&wire.chain_head, "the chain head")?,
            timestamp_ns: wire.timestamp_ns,
        },
        signature: wire.signature.as_slice().try_into().map_err(|_| {
            ProofFailure::Malformed(format!(
                "the signature has {} bytes, not 64",
                wire.signature.len()
            ))
        })?,
    })
}

/// Checks `bundle` (see the module docs) against the keys the client trusts and the head it
/// trusted before (`None`: the first contact: the head is trusted on its signature alone).
/// `position`: the record asked for, if any. Returns the new head to trust.
pub fn check(
    bundle: &ProofBundle,
    trusted_keys: &[[u8; 32]],
    previous: Option<&TrustedHead>,
    position: Option<u64>,
) -> Result<TrustedHead, ProofFailure> {
    if trusted_keys.is_empty() {
        return Err(ProofFailure::NoTrustedKey);
    }
    let key: [u8; 32] = bundle.head.public_key.as_slice().try_into().map_err(|_| {
        ProofFailure::Malformed(format!(
            "the public key has {} bytes, not 32",
            bundle.head.public_key.len()
        ))
    })?;
    if !trusted_keys.contains(&key) {
        return Err(ProofFailure::UntrustedKey {
            key: hex::encode(key),
        });
    }
    let signed = signed_head(&bundle.head)?;
    signed
        .verify(&key)
        .map_err(|error| ProofFailure::BadSignature(error.to_string()))?;
    let head = signed.head;
    if let Some(previous) = previous {
        if previous.partition != head.partition {
            return Err(ProofFailure::WrongPartition {
                trusted: previous.partition,
                shown: head.partition,
            });
        }
        if head.size < previous.size {
            return Err(ProofFailure::Shrunk {
                trusted: previous.size,
                shown: head.size,
            });
        }
        let proof = path(&bundle.consistency, "a consistency hash")?;
        kimberlite_merkle::verify_consistency(
            previous.size,
            head.size,
            &previous.root,
            &head.root,
            &proof,
        )
        .map_err(|error| ProofFailure::Forked {
            trusted: previous.size,
            shown: head.size,
            detail: error.to_string(),
        })?;
    }
    if let Some(position) = position {
        let record = bundle.record.as_ref().ok_or_else(|| {
            ProofFailure::Malformed(format!("record {position} was asked for but not sent"))
        })?;
        if record.position != position {
            return Err(ProofFailure::Malformed(format!(
                "record {} was sent for position {position}",
                record.position
            )));
        }
        let leaf = kimberlite_merkle::leaf_hash(&hash(&record.hash, "the record hash")?);
        let proof = path(&bundle.inclusion, "an inclusion hash")?;
        kimberlite_merkle::verify_inclusion(&leaf, position, head.size, &proof, &head.root)
            .map_err(|error| ProofFailure::NotIncluded {
                position,
                size: head.size,
                detail: error.to_string(),
            })?;
    }
    Ok(TrustedHead {
        partition: head.partition,
        size: head.size,
        root: head.root,
        chain_head: head.chain_head,
        timestamp_ns: head.timestamp_ns,
    })
}
