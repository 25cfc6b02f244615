//! Stores: the file store, crashes through the storage trait against a model, and a virtual
//! store of 2^58 leaves that shows reads stay logarithmic.

use std::cell::Cell;
use std::fs::OpenOptions;
use std::io::{self, Write as _};

use kimberlite_merkle::{
    FileNodeStore, Hash, MerkleTree, NodeStore, TREE_LEAVES_MAX, TreeError, leaf_hash, node_hash,
    verify_consistency, verify_inclusion,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

use super::{assert_same_answers, nodes_for_leaves, record_hash, reference, tree_of};

const HASH_BYTES: u64 = 32;

fn file_tree(path: &std::path::Path) -> MerkleTree<FileNodeStore> {
    MerkleTree::open(FileNodeStore::open(path).unwrap()).unwrap()
}

#[test]
fn file_store_reopens_to_the_same_tree() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("merkle-v1.hashes");
    let mut tree = file_tree(&path);
    assert_eq!(tree.size(), 0);
    for batch in [1, 2, 3, 10, 33] {
        let start = tree.size();
        tree.append_batch((start..start + batch).map(record_hash))
            .unwrap();
    }
    tree.store().sync().unwrap();
    let size = tree.size();
    assert_eq!(size, 49);
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        nodes_for_leaves(size) * HASH_BYTES
    );
    drop(tree);

    let reopened = file_tree(&path);
    assert_same_answers(&reopened, &tree_of(size));
}

#[test]
fn file_store_cuts_a_torn_hash_and_completes_a_torn_leaf() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("merkle-v1.hashes");
    let mut tree = file_tree(&path);
    // Leaf 7 completes three parents: the last write is 4 hashes.
    tree.append_batch((0..8).map(record_hash)).unwrap();
    drop(tree);

    // A crash in the middle of the last write: the leaf, one parent and 5 bytes are stored.
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len((nodes_for_leaves(8) - 2) * HASH_BYTES + 5)
        .unwrap();
    drop(file);

    let tree = file_tree(&path);
    assert_same_answers(&tree, &tree_of(8));
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        nodes_for_leaves(8) * HASH_BYTES
    );
}

#[test]
fn a_stored_parent_that_does_not_match_its_children_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("merkle-v1.hashes");
    let mut tree = file_tree(&path);
    tree.append_batch((0..7).map(record_hash)).unwrap();
    drop(tree);
    // Leaf 7 and a wrong first parent, without the two parents above.
    let mut file = OpenOptions::new().append(true).open(&path).unwrap();
    file.write_all(&leaf_hash(&record_hash(7))).unwrap();
    file.write_all(&[0xee; 32]).unwrap();
    drop(file);

    let error = MerkleTree::open(FileNodeStore::open(&path).unwrap()).unwrap_err();
    assert!(
        matches!(&error, TreeError::Corrupt { reason } if reason.contains("level 1, index 3")),
        "{error}"
    );
}

/// A memory store that fails one append, after storing only a prefix of it (a torn write).
#[derive(Debug, Default)]
struct FaultyStore {
    hashes: Vec<Hash>,
    /// Successful appends left before the failing one; `None` never fails.
    appends_before_fault: Option<usize>,
    /// How many hashes of the failing append are stored anyway.
    torn_hashes: usize,
}

impl NodeStore for FaultyStore {
    fn node_count(&self) -> u64 {
        self.hashes.len() as u64
    }

    fn read(&self, position: u64) -> io::Result<Hash> {
        Ok(self.hashes[position as usize])
    }

    fn append(&mut self, hashes: &[Hash]) -> io::Result<()> {
        match self.appends_before_fault {
            Some(0) => {
                self.appends_before_fault = None;
                let torn = self.torn_hashes.min(hashes.len());
                self.hashes.extend_from_slice(&hashes[..torn]);
                Err(io::Error::other("injected fault"))
            }
            Some(ref mut left) => {
                *left -= 1;
                self.hashes.extend_from_slice(hashes);
                Ok(())
            }
            None => {
                self.hashes.extend_from_slice(hashes);
                Ok(())
            }
        }
    }
}

proptest! {
    #![proptest_config(Config {
        cases: 128,
        rng_seed: RngSeed::Fixed(0x4641_554c),
        failure_persistence: None,
        ..Config::default()
    })]

    /// Appends in batches until an injected fault, then reopens: the tree holds every
    /// acknowledged leaf and a prefix of the failed batch, and is exactly the reference tree of
    /// those leaves; appending the rest gives the tree of all of them.
    #[test]
    fn a_failed_append_reopens_to_a_prefix_of_the_leaves(
        batches in vec(1..12u64, 1..12),
        appends_before_fault in 0..12usize,
        torn_hashes in 0..40usize,
    ) {
        let store = FaultyStore {
            appends_before_fault: Some(appends_before_fault),
            torn_hashes,
            ..FaultyStore::default()
        };
        let mut tree = MerkleTree::open(store).unwrap();
        let total: u64 = batches.iter().sum();
        let mut acknowledged = 0;
        let mut attempted = 0;
        for batch in &batches {
            attempted += batch;
            match tree.append_batch((acknowledged..attempted).map(record_hash)) {
                Ok(()) => acknowledged = attempted,
                Err(error) => {
                    prop_assert!(matches!(error, TreeError::Io(_)), "{}", error);
                    let again = tree.append(&record_hash(attempted));
                    prop_assert!(matches!(again, Err(TreeError::AppendFailed)), "{:?}", again);
                    break;
                }
            }
            prop_assert_eq!(tree.size(), acknowledged);
        }

        let mut tree = MerkleTree::open(tree.into_store()).unwrap();
        let size = tree.size();
        prop_assert!(acknowledged <= size && size <= attempted);
        let leaves: Vec<Hash> = (0..total).map(|index| leaf_hash(&record_hash(index))).collect();
        prop_assert_eq!(tree.root(size).unwrap(), reference::root(&leaves[..size as usize]));

        tree.append_batch((size..total).map(record_hash)).unwrap();
        prop_assert_eq!(tree.root(total).unwrap(), reference::root(&leaves));
        let memory = tree_of(total);
        assert_same_answers(&tree, &memory);
    }
}

/// A store that claims to hold `node_count` nodes of a real tree whose even leaves hash to
/// `EVEN_LEAF` and odd leaves to `ODD_LEAF`, so that every perfect subtree of a level has the
/// same hash; it makes each node up from its position and counts reads. A tree of 2^58 leaves
/// without the memory, for bounds and cost; correctness is the exhaustive tests' job.
#[derive(Debug)]
struct VirtualStore {
    node_count: u64,
    reads: Cell<u64>,
}

const EVEN_LEAF: Hash = [0x0e; 32];
const ODD_LEAF: Hash = [0x0d; 32];

impl VirtualStore {
    fn with_leaves(leaves: u64) -> Self {
        Self {
            node_count: nodes_for_leaves(leaves),
            reads: Cell::new(0),
        }
    }

    /// The hash of leaf `index`.
    fn leaf(index: u64) -> Hash {
        if index.is_multiple_of(2) {
            EVEN_LEAF
        } else {
            ODD_LEAF
        }
    }

    /// The hash of every perfect subtree at `level` (at least 1).
    fn perfect(level: u64) -> Hash {
        let mut hash = node_hash(&EVEN_LEAF, &ODD_LEAF);
        for _ in 1..level {
            hash = node_hash(&hash, &hash);
        }
        hash
    }
}

impl NodeStore for VirtualStore {
    fn node_count(&self) -> u64 {
        self.node_count
    }

    fn read(&self, position: u64) -> io::Result<Hash> {
        assert!(position < self.node_count);
        self.reads.set(self.reads.get() + 1);
        // The node at `position` is the leaf `last_leaf` or the parent it completes at `level`.
        let (mut low, mut high) = (0, position);
        while low < high {
            let middle = low + (high - low).div_ceil(2);
            if nodes_for_leaves(middle) <= position {
                low = middle;
            } else {
                high = middle - 1;
            }
        }
        let (last_leaf, level) = (low, position - nodes_for_leaves(low));
        Ok(match level {
            0 => Self::leaf(last_leaf),
            _ => Self::perfect(level),
        })
    }

    fn append(&mut self, hashes: &[Hash]) -> io::Result<()> {
        self.node_count += hashes.len() as u64;
        Ok(())
    }
}

/// Sizes whose right edges are long: all ones, single bits, and mixtures, up to the limit.
const LARGE_SIZES: [u64; 7] = [
    TREE_LEAVES_MAX,
    TREE_LEAVES_MAX - 1,
    TREE_LEAVES_MAX / 2 + 1,
    (1 << 40) - 1,
    (1 << 40) + 1,
    0x2aa_aaaa_aaaa_aaab,
    1_000_000_007,
];

#[test]
fn huge_trees_answer_with_logarithmic_reads_and_their_proofs_verify() {
    // Each proof hash is one read, plus at most 58 for the one right-edge subtree among them.
    let reads_max = 59 + 58;
    let tree = MerkleTree::open(VirtualStore::with_leaves(TREE_LEAVES_MAX)).unwrap();
    let reads = || tree.store().reads.get();
    let mut reads_before = reads();
    let mut reads_taken = || {
        let taken = reads() - reads_before;
        reads_before = reads();
        taken
    };
    reads_taken();

    for new_size in LARGE_SIZES {
        let new_root = tree.root(new_size).unwrap();
        assert!(reads_taken() <= 58);
        for index in [0, 1, new_size / 3, new_size - 2, new_size - 1] {
            let proof = tree.inclusion_proof(index, new_size).unwrap();
            assert!(reads_taken() <= reads_max);
            let leaf = VirtualStore::leaf(index);
            assert_eq!(
                verify_inclusion(&leaf, index, new_size, &proof, &new_root),
                Ok(())
            );
        }
        for old_size in [1, 2, 3, new_size / 2, new_size - 1, new_size] {
            let proof = tree.consistency_proof(old_size, new_size).unwrap();
            assert!(reads_taken() <= reads_max + 1);
            let old_root = tree.root(old_size).unwrap();
            reads_taken();
            assert_eq!(
                verify_consistency(old_size, new_size, &old_root, &new_root, &proof),
                Ok(())
            );
        }
    }
}

#[test]
fn a_full_tree_refuses_more_leaves_but_keeps_those_before_the_limit() {
    let mut tree = MerkleTree::open(VirtualStore::with_leaves(TREE_LEAVES_MAX - 2)).unwrap();
    let error = tree.append_batch((0..5).map(record_hash)).unwrap_err();
    assert_eq!(
        error.to_string(),
        "the tree is full at 288230376151711744 leaves; the leaves before the limit were appended"
    );
    assert_eq!(tree.size(), TREE_LEAVES_MAX);
    let reopened = MerkleTree::open(tree.into_store()).unwrap();
    assert_eq!(reopened.size(), TREE_LEAVES_MAX);

    let too_many = VirtualStore {
        node_count: nodes_for_leaves(TREE_LEAVES_MAX) + 1,
        reads: Cell::new(0),
    };
    let error = MerkleTree::open(too_many).unwrap_err();
    assert!(matches!(error, TreeError::Corrupt { .. }), "{error}");
}
