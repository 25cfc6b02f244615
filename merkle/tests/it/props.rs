//! Properties: every proof the tree produces verifies, and any single change to a proof, a
//! hash, an index or a size makes verification fail. Random input never panics.

use kimberlite_merkle::{
    Hash, PROOF_HASHES_MAX, ProofError, TREE_LEAVES_MAX, TreeError, leaf_hash, verify_consistency,
    verify_inclusion,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

use super::{record_hash, tree_of};

/// The largest tree the properties build.
const LEAVES_MAX: u64 = 600;

fn config() -> Config {
    Config {
        cases: 256,
        rng_seed: RngSeed::Fixed(0x4d45_524b),
        failure_persistence: None,
        ..Config::default()
    }
}

fn flip_bit(hash: &Hash, bit: usize) -> Hash {
    let mut flipped = *hash;
    flipped[bit / 8 % 32] ^= 1 << (bit % 8);
    flipped
}

/// Another value than `value`: `seed` picks it near `value`, anywhere up to `near_max`, or
/// anywhere in `u64`.
fn other_than(value: u64, seed: u64, near_max: u64) -> u64 {
    let other = match seed % 3 {
        0 => value
            .wrapping_add(1 + seed / 3 % 4)
            .wrapping_sub(2 + (seed >> 8) % 2),
        1 => seed / 3 % (near_max + 1),
        _ => seed,
    };
    if other == value {
        value.wrapping_add(1)
    } else {
        other
    }
}

/// (tree size, size asked about, leaf index).
fn tree_size_index() -> impl Strategy<Value = (u64, u64, u64)> {
    (1..=LEAVES_MAX)
        .prop_flat_map(|leaves| (Just(leaves), 1..=leaves))
        .prop_flat_map(|(leaves, size)| (Just(leaves), Just(size), 0..size))
}

/// (tree size, old size, new size).
fn tree_old_new() -> impl Strategy<Value = (u64, u64, u64)> {
    (1..=LEAVES_MAX)
        .prop_flat_map(|leaves| (Just(leaves), 0..=leaves))
        .prop_flat_map(|(leaves, new_size)| (Just(leaves), 0..=new_size, Just(new_size)))
}

/// Sizes a hostile peer might send.
fn hostile_size() -> impl Strategy<Value = u64> {
    prop_oneof![
        0..80u64,
        any::<u64>(),
        TREE_LEAVES_MAX - 80..=TREE_LEAVES_MAX + 80,
        Just(u64::MAX),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn inclusion_proofs_verify_and_any_change_fails(
        (leaves, size, index) in tree_size_index(),
        bit in 0..256usize,
        index_seed in any::<u64>(),
        size_seed in any::<u64>(),
    ) {
        let tree = tree_of(leaves);
        let root = tree.root(size).unwrap();
        let leaf = leaf_hash(&record_hash(index));
        let proof = tree.inclusion_proof(index, size).unwrap();
        prop_assert_eq!(verify_inclusion(&leaf, index, size, &proof, &root), Ok(()));

        for position in 0..proof.len() {
            let mut changed = proof.clone();
            changed[position] = flip_bit(&changed[position], bit + position);
            let result = verify_inclusion(&leaf, index, size, &changed, &root);
            prop_assert!(matches!(result, Err(ProofError::RootMismatch { .. })), "{:?}", result);
        }
        let changed_leaf = flip_bit(&leaf, bit);
        prop_assert!(verify_inclusion(&changed_leaf, index, size, &proof, &root).is_err());
        let changed_root = flip_bit(&root, bit);
        prop_assert!(verify_inclusion(&leaf, index, size, &proof, &changed_root).is_err());

        let other_index = other_than(index, index_seed, size + 2);
        prop_assert!(
            verify_inclusion(&leaf, other_index, size, &proof, &root).is_err(),
            "index {} verified as {}", index, other_index
        );
        // A size is bound by its root only (see `a_proof_binds_its_size_only_through_the_root`):
        // change the size together with its root, as another authentic tree head.
        let other_size = 1 + other_than(size, size_seed, leaves - 1) % leaves;
        if other_size != size {
            let other_root = tree.root(other_size).unwrap();
            prop_assert!(
                verify_inclusion(&leaf, index, other_size, &proof, &other_root).is_err(),
                "size {} verified as {}", size, other_size
            );
        }

        let mut longer = proof.clone();
        longer.push(root);
        prop_assert!(verify_inclusion(&leaf, index, size, &longer, &root).is_err());
        let mut prefixed = proof.clone();
        prefixed.insert(0, leaf);
        prop_assert!(verify_inclusion(&leaf, index, size, &prefixed, &root).is_err());
        if let Some((_, shorter)) = proof.split_last() {
            prop_assert!(verify_inclusion(&leaf, index, size, shorter, &root).is_err());
        }
    }

    #[test]
    fn consistency_proofs_verify_and_any_change_fails(
        (leaves, old_size, new_size) in tree_old_new(),
        bit in 0..256usize,
        old_seed in any::<u64>(),
        new_seed in any::<u64>(),
    ) {
        let tree = tree_of(leaves);
        let old_root = tree.root(old_size).unwrap();
        let new_root = tree.root(new_size).unwrap();
        let proof = tree.consistency_proof(old_size, new_size).unwrap();
        prop_assert_eq!(
            verify_consistency(old_size, new_size, &old_root, &new_root, &proof),
            Ok(())
        );

        for position in 0..proof.len() {
            let mut changed = proof.clone();
            changed[position] = flip_bit(&changed[position], bit + position);
            let result = verify_consistency(old_size, new_size, &old_root, &new_root, &changed);
            prop_assert!(
                matches!(
                    result,
                    Err(ProofError::OldRootMismatch { .. } | ProofError::NewRootMismatch { .. })
                ),
                "{:?}", result
            );
        }
        let changed_old_root = flip_bit(&old_root, bit);
        prop_assert!(
            verify_consistency(old_size, new_size, &changed_old_root, &new_root, &proof).is_err()
        );
        // From the empty tree nothing about the new root is provable.
        if old_size > 0 || new_size == 0 {
            let changed_new_root = flip_bit(&new_root, bit);
            prop_assert!(
                verify_consistency(old_size, new_size, &old_root, &changed_new_root, &proof)
                    .is_err()
            );
        }
        if old_root != new_root {
            prop_assert!(
                verify_consistency(old_size, new_size, &new_root, &old_root, &proof).is_err()
            );
        }

        // Sizes change together with their roots, as other authentic tree heads.
        let other_old_size = other_than(old_size, old_seed, new_size) % (new_size + 1);
        if other_old_size != old_size {
            let other_old_root = tree.root(other_old_size).unwrap();
            let result =
                verify_consistency(other_old_size, new_size, &other_old_root, &new_root, &proof);
            // Every tree extends the empty one: its proof is empty, like the equal sizes' one.
            let trivially_true = proof.is_empty() && other_old_size == 0;
            prop_assert!(
                result.is_err() || trivially_true,
                "old size {} verified as {}", old_size, other_old_size
            );
        }
        let other_new_size = old_size + other_than(new_size, new_seed, leaves) % (leaves - old_size + 1);
        if other_new_size != new_size {
            let other_new_root = tree.root(other_new_size).unwrap();
            let result =
                verify_consistency(old_size, other_new_size, &old_root, &other_new_root, &proof);
            prop_assert!(
                result.is_err() || old_size == 0,
                "new size {} verified as {}", new_size, other_new_size
            );
        }

        let mut longer = proof.clone();
        longer.push(new_root);
        prop_assert!(
            verify_consistency(old_size, new_size, &old_root, &new_root, &longer).is_err()
        );
        let mut prefixed = proof.clone();
        prefixed.insert(0, old_root);
        prop_assert!(
            verify_consistency(old_size, new_size, &old_root, &new_root, &prefixed).is_err()
        );
        if let Some((_, shorter)) = proof.split_last() {
            prop_assert!(
                verify_consistency(old_size, new_size, &old_root, &new_root, shorter).is_err()
            );
        }
    }

    #[test]
    fn random_inclusion_input_is_rejected_without_panicking(
        index in hostile_size(),
        size in hostile_size(),
        proof in vec(any::<Hash>(), 0..=PROOF_HASHES_MAX + 8),
        leaf in any::<Hash>(),
        root in any::<Hash>(),
    ) {
        let result = verify_inclusion(&leaf, index, size, &proof, &root);
        prop_assert!(result.is_err());
        if proof.len() > PROOF_HASHES_MAX {
            prop_assert!(matches!(result, Err(ProofError::ProofTooLong { .. })), "{:?}", result);
        }
    }

    #[test]
    fn random_consistency_input_is_rejected_without_panicking(
        old_size in hostile_size(),
        new_size in hostile_size(),
        proof in vec(any::<Hash>(), 0..=PROOF_HASHES_MAX + 8),
        old_root in any::<Hash>(),
        new_root in any::<Hash>(),
    ) {
        let result = verify_consistency(old_size, new_size, &old_root, &new_root, &proof);
        prop_assert!(result.is_err());
        if proof.len() > PROOF_HASHES_MAX {
            prop_assert!(matches!(result, Err(ProofError::ProofTooLong { .. })), "{:?}", result);
        }
    }

    #[test]
    fn random_tree_queries_answer_or_refuse_without_panicking(
        leaves in 0..40u64,
        first in hostile_size(),
        second in hostile_size(),
    ) {
        let tree = tree_of(leaves);
        match tree.root(first) {
            Ok(_) => prop_assert!(first <= leaves),
            Err(error) => prop_assert!(
                matches!(error, TreeError::SizeOutOfRange { .. }), "{}", error
            ),
        }
        match tree.inclusion_proof(first, second) {
            Ok(_) => prop_assert!(first < second && second <= leaves),
            Err(error) => prop_assert!(
                matches!(
                    error,
                    TreeError::SizeOutOfRange { .. } | TreeError::IndexOutOfRange { .. }
                ),
                "{}", error
            ),
        }
        match tree.consistency_proof(first, second) {
            Ok(_) => prop_assert!(first <= second && second <= leaves),
            Err(error) => prop_assert!(
                matches!(
                    error,
                    TreeError::SizeOutOfRange { .. } | TreeError::SizesReversed { .. }
                ),
                "{}", error
            ),
        }
    }
}
