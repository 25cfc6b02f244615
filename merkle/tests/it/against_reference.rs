//! The incremental tree against the literal RFC transcription, for every size up to 70.

use kimberlite_merkle::{
    APPEND_CHUNK_LEAVES_MAX, Hash, MerkleTree, leaf_hash, verify_consistency, verify_inclusion,
};

use super::{assert_same_answers, record_hash, reference, tree_of};

const LEAVES_MAX: u64 = 70;

fn leaf_hashes(leaves: u64) -> Vec<Hash> {
    (0..leaves)
        .map(|index| leaf_hash(&record_hash(index)))
        .collect()
}

#[test]
fn every_root_and_proof_up_to_70_leaves_matches_the_reference() {
    let leaves = leaf_hashes(LEAVES_MAX);
    let tree = tree_of(LEAVES_MAX);
    for new_size in 0..=LEAVES_MAX {
        let new_leaves = &leaves[..new_size as usize];
        let new_root = tree.root(new_size).unwrap();
        assert_eq!(new_root, reference::root(new_leaves), "root({new_size})");
        for index in 0..new_size {
            let proof = tree.inclusion_proof(index, new_size).unwrap();
            assert_eq!(
                proof,
                reference::inclusion_proof(index as usize, new_leaves),
                "inclusion_proof({index}, {new_size})"
            );
            assert_eq!(
                verify_inclusion(&leaves[index as usize], index, new_size, &proof, &new_root),
                Ok(())
            );
        }
        for old_size in 0..=new_size {
            let proof = tree.consistency_proof(old_size, new_size).unwrap();
            assert_eq!(
                proof,
                reference::consistency_proof(old_size as usize, new_leaves),
                "consistency_proof({old_size}, {new_size})"
            );
            let old_root = tree.root(old_size).unwrap();
            assert_eq!(
                verify_consistency(old_size, new_size, &old_root, &new_root, &proof),
                Ok(())
            );
        }
    }
}

#[test]
fn one_append_at_a_time_batches_and_reopening_give_the_same_tree() {
    let batched = tree_of(LEAVES_MAX);
    let mut single = MerkleTree::new();
    for index in 0..LEAVES_MAX {
        single.append(&record_hash(index)).unwrap();
        assert_eq!(
            single.root(index + 1).unwrap(),
            batched.root(index + 1).unwrap()
        );
    }
    assert_same_answers(&single, &batched);
    let reopened = MerkleTree::open(batched.store().clone()).unwrap();
    assert_same_answers(&reopened, &batched);
}

#[test]
fn batches_across_chunk_boundaries_match_the_reference() {
    let leaves = 2 * APPEND_CHUNK_LEAVES_MAX as u64 + 5;
    let tree = tree_of(leaves);
    let hashes = leaf_hashes(leaves);
    for size in [
        leaves,
        leaves - 1,
        APPEND_CHUNK_LEAVES_MAX as u64,
        APPEND_CHUNK_LEAVES_MAX as u64 + 1,
        1000,
    ] {
        assert_eq!(
            tree.root(size).unwrap(),
            reference::root(&hashes[..size as usize])
        );
    }
    let reopened = MerkleTree::open(tree.store().clone()).unwrap();
    assert_eq!(reopened.size(), leaves);
    assert_eq!(reopened.root(leaves).unwrap(), tree.root(leaves).unwrap());
}
