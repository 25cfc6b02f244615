//! Proofs a client can check: an RFC 9162 (Certificate Transparency v2, section 2.1) Merkle
//! tree over a tenant's log records.
//!
//! The leaves are the records in log order; a leaf's input is the record's 32-byte SHA-256
//! chain hash, which commits to the record's bytes. From a tree of `n` leaves the server can
//! prove, in `O(log n)` hashes:
//!
//! - **inclusion**: "record `index` is leaf `index` of the tree of `size` leaves whose root is
//!   `root`" ([`MerkleTree::inclusion_proof`], checked by [`verify_inclusion`]);
//! - **consistency**: "the tree of `new_size` leaves extends the tree of `old_size` leaves:
//!   nothing was rewritten, only appended" ([`MerkleTree::consistency_proof`], checked by
//!   [`verify_consistency`]).
//!
//! ```
//! use kimberlite_merkle::{MerkleTree, leaf_hash, verify_consistency, verify_inclusion};
//!
//! let record_hashes: Vec<[u8; 32]> = (0..10).map(|byte| [byte; 32]).collect();
//! let mut tree = MerkleTree::new();
//! tree.append_batch(&record_hashes[..6])?;
//! // The client's trusted tree head.
//! let (old_size, old_root) = (tree.size(), tree.root(tree.size())?);
//! tree.append_batch(&record_hashes[6..])?;
//! let (new_size, new_root) = (tree.size(), tree.root(tree.size())?);
//!
//! // Server side: proofs. Client side: checks, with no tree.
//! let proof = tree.consistency_proof(old_size, new_size)?;
//! verify_consistency(old_size, new_size, &old_root, &new_root, &proof)?;
//! let proof = tree.inclusion_proof(3, new_size)?;
//! verify_inclusion(&leaf_hash(&record_hashes[3]), 3, new_size, &proof, &new_root)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Hashing
//!
//! A leaf hash is `SHA-256(0x00 || input)` ([`leaf_hash`]), an interior node
//! `SHA-256(0x01 || left || right)` ([`node_hash`]), and the root of the empty tree is
//! `SHA-256("")` ([`empty_root`]). The tree of `n > 1` leaves splits at the largest power of two
//! smaller than `n` (RFC 9162 2.1.1), so its shape depends only on `n`.
//!
//! The one-byte prefixes are domain separation. Without them, the 64 bytes `left || right` of
//! an interior node would also be a valid leaf input with the same hash, so a server could
//! present a node as a leaf and "prove" a record that was never written (a second preimage of
//! the root for a different leaf list). With distinct prefixes a leaf hash and a node hash can
//! collide only if SHA-256 does.
//!
//! # What a client keeps
//!
//! Per tenant, a client keeps one thing: the last **trusted tree head** `(size, root)`, taken
//! from an authenticated source: a [`SignedTreeHead`] (a head signed by the node's Ed25519 key;
//! the log's signed checkpoints are such heads) checked with [`SignedTreeHead::verify`]. Then:
//!
//! 1. On seeing a newer authenticated head `(new_size, new_root)`, it asks for
//!    `consistency_proof(size, new_size)`, checks it with [`verify_consistency`], and only then
//!    replaces its trusted head. A failure with two authenticated heads is evidence that the
//!    log's history was rewritten (or that the server shows different clients different logs).
//! 2. To check a record, it hashes it, asks for `inclusion_proof(index, size)` against its
//!    trusted head, and checks it with [`verify_inclusion`] (or [`verify_record_in_head`],
//!    which takes the record's hash and the signed head).
//!
//! A proof binds `(index, size)` only through the root: the same proof can verify for another
//! `(index, size)` pair paired with the same root (the leaf 4 of a 5-leaf tree and the leaf 2 of
//! a 3-leaf tree take the same path). Always verify against a `(size, root)` pair that was
//! authenticated together, never a root from one head and a size from another.
//!
//! # Storage
//!
//! [`MerkleTree`] keeps every perfect subtree hash (about `2n` hashes, 64 bytes per leaf) in a
//! [`NodeStore`]: a flat, append-only array of hashes in post-order, so that appending a leaf is
//! one write at the end ([`MemoryNodeStore`], [`FileNodeStore`]). [`NodeStore`] describes the
//! layout.
//!
//! # Signed tree heads
//!
//! [`TreeHead`] is what a node signs about a partition's tree (partition, size, root, chain
//! head, last timestamp) and [`SignedTreeHead`] the signed statement; the `head` module
//! documents the signed message byte by byte. Verification is here so that a client needs
//! this crate and no other part of the server.
//!
//! **Architecture invariant:** this crate knows nothing of record formats, consensus, key
//! storage or the network; it never reads a clock and never signs (it only verifies
//! signatures). It has no serde: clients map their wire types onto [`SignedTreeHead`]. Its only
//! file is the one a [`FileNodeStore`] is given.

mod hash;
mod head;
mod store;
mod tree;
mod verify;

pub use hash::{HASH_BYTES, Hash, empty_root, leaf_hash, node_hash};
pub use head::{
    HeadError, PUBLIC_KEY_BYTES, SIGNATURE_BYTES, SignedTreeHead, TREE_HEAD_DOMAIN,
    TREE_HEAD_MESSAGE_BYTES, TreeHead, verify_record_in_head,
};
pub use store::{FileNodeStore, MemoryNodeStore, NodeStore, nodes_for_leaves};
pub use tree::{APPEND_CHUNK_LEAVES_MAX, MerkleTree, TreeError};
pub use verify::{ProofError, verify_consistency, verify_inclusion};

/// The most leaves a tree may hold, and the largest tree size a verifier accepts.
///
/// 2^58 leaves keep every node position (`< 2^59`) and every byte offset of a
/// [`FileNodeStore`] (`< 2^64`) in a `u64`, and every proof within [`PROOF_HASHES_MAX`].
pub const TREE_LEAVES_MAX: u64 = 1 << 58;

/// The most hashes a verifier accepts in one proof, checked before any hashing.
///
/// A tree of at most [`TREE_LEAVES_MAX`] leaves is at most 58 levels deep: an inclusion proof
/// holds at most 58 hashes, a consistency proof at most 59.
pub const PROOF_HASHES_MAX: usize = 64;

/// Levels below the root of the largest tree: the length of its longest inclusion proof.
const TREE_DEPTH_MAX: usize = TREE_LEAVES_MAX.ilog2() as usize;
/// The longest consistency proof: a seed hash plus one hash per level.
const CONSISTENCY_PROOF_HASHES_MAX: usize = TREE_DEPTH_MAX + 1;
const _: () = assert!(CONSISTENCY_PROOF_HASHES_MAX <= PROOF_HASHES_MAX);
