//! Hostile and degenerate input, as a table: input → the exact answer, errors included.

use std::fmt::{Debug, Display};

use expect_test::{Expect, expect};
use kimberlite_merkle::{
    Hash, PROOF_HASHES_MAX, TREE_LEAVES_MAX, empty_root, leaf_hash, verify_consistency,
    verify_inclusion,
};

use super::{record_hash, tree_of};

fn check<T: Debug, E: Display>(result: Result<T, E>, expect: &Expect) {
    let actual = match result {
        Ok(value) => format!("ok: {value:?}"),
        Err(error) => format!("error: {error}"),
    };
    expect.assert_eq(&actual);
}

const SOME_HASH: Hash = [0xab; 32];
const OTHER_HASH: Hash = [0xcd; 32];

#[test]
fn inclusion_verification() {
    let leaf = leaf_hash(b"record");
    let none: &[Hash] = &[];
    let check_inclusion = |index, size, proof: &[Hash], root: &Hash, expect: &Expect| {
        check(verify_inclusion(&leaf, index, size, proof, root), expect);
    };

    // A one-leaf tree's root is its leaf hash, with an empty proof.
    check_inclusion(0, 1, none, &leaf, &expect![[r#"ok: ()"#]]);
    check_inclusion(
        0,
        1,
        none,
        &SOME_HASH,
        &expect![
            "error: the proof leads to root e610a112edd75ddb57ea4d2ed191a086bc913ce590bb8f2b6db95d3cc3fe2e0e but the tree's root is abababababababababababababababababababababababababababababababab"
        ],
    );
    check_inclusion(
        0,
        1,
        &[SOME_HASH],
        &leaf,
        &expect!["error: the proof has 1 hashes but a proof for these sizes has exactly 0"],
    );
    // Nothing is in the empty tree.
    check_inclusion(
        0,
        0,
        none,
        &empty_root(),
        &expect![
            "error: leaf index 0 is outside a tree of 0 leaves; indexes run from 0 to size - 1"
        ],
    );
    check_inclusion(
        5,
        5,
        &[SOME_HASH; 3],
        &SOME_HASH,
        &expect![
            "error: leaf index 5 is outside a tree of 5 leaves; indexes run from 0 to size - 1"
        ],
    );
    check_inclusion(
        u64::MAX,
        10,
        &[SOME_HASH; 4],
        &SOME_HASH,
        &expect![
            "error: leaf index 18446744073709551615 is outside a tree of 10 leaves; indexes run from 0 to size - 1"
        ],
    );
    // Sizes past the limit, however large.
    check_inclusion(
        0,
        TREE_LEAVES_MAX + 1,
        &[SOME_HASH; 59],
        &SOME_HASH,
        &expect![
            "error: tree size 288230376151711745 is larger than the maximum of 288230376151711744 leaves"
        ],
    );
    check_inclusion(
        u64::MAX - 1,
        u64::MAX,
        none,
        &SOME_HASH,
        &expect![
            "error: tree size 18446744073709551615 is larger than the maximum of 288230376151711744 leaves"
        ],
    );
    // The largest tree: 58 levels, so 58 hashes, no more, no fewer.
    check_inclusion(
        0,
        TREE_LEAVES_MAX,
        none,
        &SOME_HASH,
        &expect!["error: the proof has 0 hashes but a proof for these sizes has exactly 58"],
    );
    check_inclusion(
        0,
        TREE_LEAVES_MAX,
        &[SOME_HASH; 58],
        &SOME_HASH,
        &expect![
            "error: the proof leads to root 668f295a9dd7e6f7da2ce86a94b60376b32efb94c3fcccdf882ba25e683894c6 but the tree's root is abababababababababababababababababababababababababababababababab"
        ],
    );
    check_inclusion(
        TREE_LEAVES_MAX - 1,
        TREE_LEAVES_MAX,
        &[SOME_HASH; 59],
        &SOME_HASH,
        &expect!["error: the proof has 59 hashes but a proof for these sizes has exactly 58"],
    );
    // Too long to look at.
    check_inclusion(
        0,
        2,
        &[SOME_HASH; PROOF_HASHES_MAX + 1],
        &SOME_HASH,
        &expect!["error: the proof has 65 hashes, more than the maximum of 64"],
    );
    check_inclusion(
        0,
        2,
        &vec![SOME_HASH; 100_000],
        &SOME_HASH,
        &expect!["error: the proof has 100000 hashes, more than the maximum of 64"],
    );
    // Right length, wrong hashes.
    check_inclusion(
        3,
        7,
        &[SOME_HASH; 3],
        &OTHER_HASH,
        &expect![
            "error: the proof leads to root ae492072cfb36144b89c70d46125c9858aa484cd9b034417047551661852a8e3 but the tree's root is cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd"
        ],
    );
}

#[test]
fn consistency_verification() {
    let empty = empty_root();
    let none: &[Hash] = &[];
    let check_consistency =
        |old_size, new_size, old_root: &Hash, new_root: &Hash, proof: &[Hash], expect: &Expect| {
            check(
                verify_consistency(old_size, new_size, old_root, new_root, proof),
                expect,
            );
        };

    // From the empty tree: always consistent, provided the old root is the empty root.
    check_consistency(0, 0, &empty, &empty, none, &expect!["ok: ()"]);
    check_consistency(0, 9, &empty, &SOME_HASH, none, &expect!["ok: ()"]);
    check_consistency(
        0,
        9,
        &SOME_HASH,
        &SOME_HASH,
        none,
        &expect![
            "error: the proof leads to old root e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 but the trusted old root is abababababababababababababababababababababababababababababababab"
        ],
    );
    check_consistency(
        0,
        0,
        &empty,
        &SOME_HASH,
        none,
        &expect![
            "error: the proof leads to new root e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 but the new root given is abababababababababababababababababababababababababababababababab"
        ],
    );
    check_consistency(
        0,
        9,
        &empty,
        &SOME_HASH,
        &[SOME_HASH],
        &expect!["error: the proof has 1 hashes but a proof for these sizes has exactly 0"],
    );
    // Equal sizes: equal roots and an empty proof.
    check_consistency(4, 4, &SOME_HASH, &SOME_HASH, none, &expect!["ok: ()"]);
    check_consistency(
        4,
        4,
        &SOME_HASH,
        &OTHER_HASH,
        none,
        &expect![
            "error: two different roots for the same tree size 4: they cannot both be the log's"
        ],
    );
    check_consistency(
        4,
        4,
        &SOME_HASH,
        &SOME_HASH,
        &[SOME_HASH],
        &expect!["error: the proof has 1 hashes but a proof for these sizes has exactly 0"],
    );
    // Logs never shrink.
    check_consistency(
        5,
        4,
        &SOME_HASH,
        &OTHER_HASH,
        &[SOME_HASH],
        &expect![
            "error: old size 5 is larger than new size 4; a log never shrinks, so the newer tree head is the one with the smaller size"
        ],
    );
    check_consistency(
        u64::MAX,
        0,
        &SOME_HASH,
        &OTHER_HASH,
        none,
        &expect![
            "error: old size 18446744073709551615 is larger than new size 0; a log never shrinks, so the newer tree head is the one with the smaller size"
        ],
    );
    // Growth needs a proof of exactly the right length.
    check_consistency(
        1,
        2,
        &SOME_HASH,
        &OTHER_HASH,
        none,
        &expect!["error: the proof has 0 hashes but a proof for these sizes has exactly 1"],
    );
    check_consistency(
        3,
        7,
        &SOME_HASH,
        &OTHER_HASH,
        &[SOME_HASH; 2],
        &expect!["error: the proof has 2 hashes but a proof for these sizes has exactly 4"],
    );
    check_consistency(
        3,
        7,
        &SOME_HASH,
        &OTHER_HASH,
        &[SOME_HASH; 3],
        &expect!["error: the proof has 3 hashes but a proof for these sizes has exactly 4"],
    );
    // Right length, wrong hashes: the old root is checked first.
    check_consistency(
        3,
        7,
        &SOME_HASH,
        &OTHER_HASH,
        &[SOME_HASH; 4],
        &expect![
            "error: the proof leads to old root 761c93d6e4be1fffc15da12ee1dc892b255cac44f24bf769a7aac1522c826b6a but the trusted old root is abababababababababababababababababababababababababababababababab"
        ],
    );
    // Sizes at and past the limit.
    check_consistency(
        1,
        TREE_LEAVES_MAX + 1,
        &SOME_HASH,
        &OTHER_HASH,
        none,
        &expect![
            "error: tree size 288230376151711745 is larger than the maximum of 288230376151711744 leaves"
        ],
    );
    check_consistency(
        TREE_LEAVES_MAX - 1,
        TREE_LEAVES_MAX,
        &SOME_HASH,
        &OTHER_HASH,
        &[SOME_HASH; 59],
        &expect![
            "error: the proof leads to old root 12bfb052b37b6b7dbd0035d09956f49b40c5d2788b9db855e8239c1d06e5b53d but the trusted old root is abababababababababababababababababababababababababababababababab"
        ],
    );
    check_consistency(
        3,
        TREE_LEAVES_MAX,
        &SOME_HASH,
        &OTHER_HASH,
        &[SOME_HASH; 59],
        &expect![
            "error: the proof leads to old root 761c93d6e4be1fffc15da12ee1dc892b255cac44f24bf769a7aac1522c826b6a but the trusted old root is abababababababababababababababababababababababababababababababab"
        ],
    );
    check_consistency(
        1,
        2,
        &SOME_HASH,
        &OTHER_HASH,
        &[SOME_HASH; PROOF_HASHES_MAX + 1],
        &expect!["error: the proof has 65 hashes, more than the maximum of 64"],
    );
}

#[test]
fn tree_queries() {
    let tree = tree_of(5);
    let proof_length = |result: Result<Vec<Hash>, _>| result.map(|proof| proof.len());

    check(tree.root(5).map(|_| ()), &expect!["ok: ()"]);
    check(
        tree.root(6),
        &expect![
            "error: tree size 6 is beyond the 5 leaves appended so far; ask for a size of at most 5"
        ],
    );
    check(
        tree.root(u64::MAX),
        &expect![
            "error: tree size 18446744073709551615 is beyond the 5 leaves appended so far; ask for a size of at most 5"
        ],
    );
    check(proof_length(tree.inclusion_proof(4, 5)), &expect!["ok: 1"]);
    check(
        proof_length(tree.inclusion_proof(5, 5)),
        &expect![
            "error: leaf index 5 is outside a tree of 5 leaves; indexes run from 0 to size - 1"
        ],
    );
    check(
        proof_length(tree.inclusion_proof(0, 0)),
        &expect![
            "error: leaf index 0 is outside a tree of 0 leaves; indexes run from 0 to size - 1"
        ],
    );
    check(
        proof_length(tree.inclusion_proof(0, 6)),
        &expect![
            "error: tree size 6 is beyond the 5 leaves appended so far; ask for a size of at most 5"
        ],
    );
    check(
        proof_length(tree.inclusion_proof(u64::MAX, u64::MAX)),
        &expect![
            "error: tree size 18446744073709551615 is beyond the 5 leaves appended so far; ask for a size of at most 5"
        ],
    );
    check(
        proof_length(tree.consistency_proof(0, 5)),
        &expect!["ok: 0"],
    );
    check(
        proof_length(tree.consistency_proof(2, 5)),
        &expect!["ok: 2"],
    );
    check(
        proof_length(tree.consistency_proof(5, 5)),
        &expect!["ok: 0"],
    );
    check(
        proof_length(tree.consistency_proof(5, 3)),
        &expect![
            "error: old size 5 is larger than new size 3; a consistency proof goes from an older, smaller tree to a newer one"
        ],
    );
    check(
        proof_length(tree.consistency_proof(0, 6)),
        &expect![
            "error: tree size 6 is beyond the 5 leaves appended so far; ask for a size of at most 5"
        ],
    );
    check(
        proof_length(tree.consistency_proof(u64::MAX, 5)),
        &expect![
            "error: old size 18446744073709551615 is larger than new size 5; a consistency proof goes from an older, smaller tree to a newer one"
        ],
    );
}

/// RFC 9162 proofs bind the tree size only through the root: the same hashes in the same order
/// verify for any `(index, size)` whose path has the same shape. Harmless when the client pairs
/// a size with the root it was authenticated with (it must, see the crate documentation); this
/// test pins the behaviour so that nobody relies on the size alone.
#[test]
fn a_proof_binds_its_size_only_through_the_root() {
    let tree = tree_of(8);
    let first = leaf_hash(&record_hash(0));
    let root_7 = tree.root(7).unwrap();
    let proof = tree.inclusion_proof(0, 7).unwrap();
    assert_eq!(verify_inclusion(&first, 0, 7, &proof, &root_7), Ok(()));
    // Leaf 0's path is "sibling on the right" three times in trees of 5 to 8 leaves.
    assert_eq!(verify_inclusion(&first, 0, 8, &proof, &root_7), Ok(()));
    // With the root that size 8 was authenticated with, it fails.
    let root_8 = tree.root(8).unwrap();
    assert!(verify_inclusion(&first, 0, 8, &proof, &root_8).is_err());

    // Leaf 4 of 5 and leaf 2 of 3 both have one sibling, on the left.
    let fifth = leaf_hash(&record_hash(4));
    let root_5 = tree.root(5).unwrap();
    let proof = tree.inclusion_proof(4, 5).unwrap();
    assert_eq!(verify_inclusion(&fifth, 2, 3, &proof, &root_5), Ok(()));
}
