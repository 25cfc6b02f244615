//! Signed tree heads: what a node signs about a partition's tree, and how a client checks it.
//!
//! A [`TreeHead`] says "partition `partition` holds `size` records; the RFC 9162 root of their
//! tree is `root`; the last of them has hash `chain_head` and timestamp `timestamp_ns`". A
//! [`SignedTreeHead`] adds the node's Ed25519 signature over [`TreeHead::signed_message`].
//! The log's signed checkpoints are signed tree heads: the same message, the same signature.
//!
//! # The signed message
//!
//! [`TREE_HEAD_MESSAGE_BYTES`] (112) bytes, integers little-endian:
//!
//! | offset | bytes | field |
//! |---:|---:|---|
//! | 0 | 24 | domain tag `kimberlite/tree-head/v1\0` ([`TREE_HEAD_DOMAIN`]) |
//! | 24 | 8 | partition (tenant id) |
//! | 32 | 8 | size: records covered, `0..size` |
//! | 40 | 32 | root: RFC 9162 root of the tree of those records ([`empty_root`](crate::empty_root) for size 0) |
//! | 72 | 32 | chain head: hash of record `size - 1` (zeros for size 0) |
//! | 104 | 8 | timestamp ns of record `size - 1` (0 for size 0) |
//!
//! The domain tag keeps a tree-head signature from meaning anything else the node key signs;
//! its version changes with the layout. The partition makes one tenant's head worthless for
//! another's log. The timestamp is the last record's (assigned by the VSR primary), not the
//! signing time, so every replica that signs the same size signs the same message.

use ed25519_dalek::{Signature, VerifyingKey};

use crate::hash::{HASH_BYTES, Hash};
use crate::verify::{ProofError, verify_inclusion};

/// The domain tag that starts every signed tree-head message.
pub const TREE_HEAD_DOMAIN: &[u8; 24] = b"kimberlite/tree-head/v1\0";

/// Bytes of [`TreeHead::signed_message`].
pub const TREE_HEAD_MESSAGE_BYTES: usize = TREE_HEAD_DOMAIN.len() + 8 + 8 + 2 * HASH_BYTES + 8;

/// Bytes of an Ed25519 signature.
pub const SIGNATURE_BYTES: usize = 64;

/// Bytes of an Ed25519 public key.
pub const PUBLIC_KEY_BYTES: usize = 32;

/// A partition's tree at one size: what a node signs. See the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TreeHead {
    /// The tenant id.
    pub partition: u64,
    /// The number of records (leaves) covered: positions `0..size`.
    pub size: u64,
    /// The RFC 9162 root of the tree of the first `size` records.
    pub root: Hash,
    /// The hash of record `size - 1` (zeros when `size` is 0).
    pub chain_head: Hash,
    /// The timestamp of record `size - 1` (0 when `size` is 0).
    pub timestamp_ns: u64,
}

impl TreeHead {
    /// The bytes a node signs: the domain tag, then every field (see the module
    /// documentation for the layout).
    pub fn signed_message(&self) -> [u8; TREE_HEAD_MESSAGE_BYTES] {
        let mut message = [0u8; TREE_HEAD_MESSAGE_BYTES];
        let fields: [&[u8]; 6] = [
            TREE_HEAD_DOMAIN,
            &self.partition.to_le_bytes(),
            &self.size.to_le_bytes(),
            &self.root,
            &self.chain_head,
            &self.timestamp_ns.to_le_bytes(),
        ];
        let mut offset = 0;
        for field in fields {
            message[offset..offset + field.len()].copy_from_slice(field);
            offset += field.len();
        }
        assert_eq!(offset, TREE_HEAD_MESSAGE_BYTES);
        message
    }
}

/// A [`TreeHead`] with the node's Ed25519 signature over [`TreeHead::signed_message`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignedTreeHead {
    pub head: TreeHead,
    pub signature: [u8; SIGNATURE_BYTES],
}

/// Why a signed tree head was not believed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// The 32 bytes given as the node's public key are not an Ed25519 public key.
    #[error("the node public key is not a valid Ed25519 public key")]
    PublicKey,
    /// The signature is not the key's over this head: forged, altered, or signed by another
    /// node.
    #[error(
        "the signature over the tree head of partition {partition} (size {size}) does not \
         verify against the node public key: forged, altered, or signed by another node"
    )]
    Signature { partition: u64, size: u64 },
}

impl SignedTreeHead {
    /// The bytes the signature covers: [`TreeHead::signed_message`].
    pub fn signed_message(&self) -> [u8; TREE_HEAD_MESSAGE_BYTES] {
        self.head.signed_message()
    }

    /// Checks the signature against the node's Ed25519 public key, strictly (RFC 8032 with
    /// `verify_strict`: no small-order keys or non-canonical signatures).
    ///
    /// A verified head is an authenticated `(size, root)` pair: check proofs against it with
    /// [`verify_record_in_head`] and [`verify_consistency`](crate::verify_consistency).
    pub fn verify(&self, public_key: &[u8; PUBLIC_KEY_BYTES]) -> Result<(), HeadError> {
        let key = VerifyingKey::from_bytes(public_key).map_err(|_| HeadError::PublicKey)?;
        let signature = Signature::from_bytes(&self.signature);
        key.verify_strict(&self.signed_message(), &signature)
            .map_err(|_| HeadError::Signature {
                partition: self.head.partition,
                size: self.head.size,
            })
    }
}

/// Checks that the record whose 32-byte hash is `record_hash` is record `position` of the tree
/// `head` signs: [`verify_inclusion`] of its [`leaf_hash`](crate::leaf_hash) against the
/// head's own `(size, root)`, so the two always come from one authenticated head.
///
/// Checks the proof, not the signature: verify the head once with [`SignedTreeHead::verify`].
pub fn verify_record_in_head(
    record_hash: &Hash,
    position: u64,
    proof: &[Hash],
    head: &SignedTreeHead,
) -> Result<(), ProofError> {
    verify_inclusion(
        &crate::leaf_hash(record_hash),
        position,
        head.head.size,
        proof,
        &head.head.root,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    fn head() -> TreeHead {
        TreeHead {
            partition: 0x0102_0304_0506_0708,
            size: 0x1112_1314_1516_1718,
            root: [0xaa; 32],
            chain_head: [0xbb; 32],
            timestamp_ns: 0x2122_2324_2526_2728,
        }
    }

    #[test]
    fn the_message_is_the_documented_layout() {
        let message = head().signed_message();
        assert_eq!(message.len(), 112);
        assert_eq!(&message[..24], b"kimberlite/tree-head/v1\0");
        assert_eq!(message[24..32], 0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(message[32..40], 0x1112_1314_1516_1718u64.to_le_bytes());
        assert_eq!(message[40..72], [0xaa; 32]);
        assert_eq!(message[72..104], [0xbb; 32]);
        assert_eq!(message[104..112], 0x2122_2324_2526_2728u64.to_le_bytes());
    }

    #[test]
    fn a_signature_verifies_only_for_its_head_and_key() {
        let key = SigningKey::from_bytes(&[3; 32]);
        let public = key.verifying_key().to_bytes();
        let signed = SignedTreeHead {
            head: head(),
            signature: key.sign(&head().signed_message()).to_bytes(),
        };
        assert_eq!(signed.verify(&public), Ok(()));

        let other = SigningKey::from_bytes(&[4; 32]).verifying_key().to_bytes();
        let refused = Err(HeadError::Signature {
            partition: head().partition,
            size: head().size,
        });
        assert_eq!(signed.verify(&other), refused);
        let changes: [fn(&mut SignedTreeHead); 6] = [
            |signed| signed.head.partition ^= 1,
            |signed| signed.head.size ^= 1,
            |signed| signed.head.root[31] ^= 1,
            |signed| signed.head.chain_head[0] ^= 1,
            |signed| signed.head.timestamp_ns ^= 1,
            |signed| signed.signature[5] ^= 1,
        ];
        for change in changes {
            let mut altered = signed;
            change(&mut altered);
            assert!(altered.verify(&public).is_err(), "{altered:?}");
        }
        // y = 2 is not the y coordinate of a point on the curve.
        let mut not_a_key = [0; 32];
        not_a_key[0] = 2;
        assert_eq!(signed.verify(&not_a_key), Err(HeadError::PublicKey));
        // The identity point is a key, of small order: `verify_strict` refuses it.
        let mut identity = [0; 32];
        identity[0] = 1;
        assert!(matches!(
            signed.verify(&identity),
            Err(HeadError::Signature { .. })
        ));
    }

    #[test]
    fn a_record_is_checked_against_the_heads_own_size_and_root() {
        let records: Vec<Hash> = (0..7u8).map(|byte| [byte; 32]).collect();
        let mut tree = crate::MerkleTree::new();
        tree.append_batch(&records).unwrap();
        let signed = SignedTreeHead {
            head: TreeHead {
                size: 7,
                root: tree.root(7).unwrap(),
                chain_head: records[6],
                ..head()
            },
            signature: [0; 64],
        };
        let proof = tree.inclusion_proof(3, 7).unwrap();
        assert_eq!(
            verify_record_in_head(&records[3], 3, &proof, &signed),
            Ok(())
        );
        assert!(verify_record_in_head(&records[4], 3, &proof, &signed).is_err());
        assert!(verify_record_in_head(&records[3], 4, &proof, &signed).is_err());
        // A proof for another size does not fit this head.
        let proof = tree.inclusion_proof(3, 6).unwrap();
        assert!(verify_record_in_head(&records[3], 3, &proof, &signed).is_err());
    }
}
