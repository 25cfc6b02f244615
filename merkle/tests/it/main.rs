//! Integration tests of kimberlite-merkle's public API: one test binary, one module per theme.

mod against_reference;
mod hostile;
mod props;
mod reference;
mod stores;
mod vectors;

use kimberlite_merkle::{Hash, MerkleTree, NodeStore};

/// A hash from 64 hexadecimal digits.
fn hash(text: &str) -> Hash {
    hex::decode(text)
        .expect("hexadecimal")
        .try_into()
        .expect("32 bytes")
}

/// The leaf input of leaf `index` in the generated trees: a stand-in for a record's 32-byte
/// chain hash.
fn record_hash(index: u64) -> Hash {
    let mut input = [0x5a; 32];
    input[..8].copy_from_slice(&index.to_le_bytes());
    input
}

/// A memory tree of `leaves` generated leaves.
fn tree_of(leaves: u64) -> MerkleTree {
    let mut tree = MerkleTree::new();
    tree.append_batch((0..leaves).map(record_hash)).unwrap();
    tree
}

/// The stored node count of a tree of `leaves` leaves (see the `store` module's layout).
fn nodes_for_leaves(leaves: u64) -> u64 {
    2 * leaves - u64::from(leaves.count_ones())
}

/// Every root, inclusion proof and consistency proof of `tree` agrees with `other`'s.
fn assert_same_answers<S: NodeStore, T: NodeStore>(tree: &MerkleTree<S>, other: &MerkleTree<T>) {
    assert_eq!(tree.size(), other.size());
    let size = tree.size();
    for old_size in 0..=size {
        assert_eq!(tree.root(old_size).unwrap(), other.root(old_size).unwrap());
        assert_eq!(
            tree.consistency_proof(old_size, size).unwrap(),
            other.consistency_proof(old_size, size).unwrap()
        );
    }
    for index in 0..size {
        assert_eq!(
            tree.inclusion_proof(index, size).unwrap(),
            other.inclusion_proof(index, size).unwrap()
        );
    }
}
