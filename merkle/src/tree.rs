//! The incremental tree: appends leaves and answers roots and proofs for any past size.

use std::fmt;
use std::io;

use crate::TREE_LEAVES_MAX;
use crate::hash::{Hash, empty_root, hex, leaf_hash, node_hash, split};
use crate::store::{MemoryNodeStore, NodeStore, leaves_for_nodes, nodes_for_leaves, position};

/// The most leaves hashed into one store write by [`MerkleTree::append_batch`]: bounds the
/// write to about `2 × 4096 × 32` bytes (256 KiB) and the memory it is built in.
pub const APPEND_CHUNK_LEAVES_MAX: usize = 4096;

/// Why a [`MerkleTree`] could not answer or append.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// A size beyond the tree's current size.
    #[error(
        "tree size {size} is beyond the {tree_size} leaves appended so far; ask for a size of at \
         most {tree_size}"
    )]
    SizeOutOfRange { size: u64, tree_size: u64 },
    /// A leaf index at or past the size of the tree asked about.
    #[error(
        "leaf index {index} is outside a tree of {size} leaves; indexes run from 0 to size - 1"
    )]
    IndexOutOfRange { index: u64, size: u64 },
    /// A consistency proof asked from a larger tree to a smaller one.
    #[error(
        "old size {old_size} is larger than new size {new_size}; a consistency proof goes from an \
         older, smaller tree to a newer one"
    )]
    SizesReversed { old_size: u64, new_size: u64 },
    /// The tree holds [`TREE_LEAVES_MAX`] leaves; none was appended past it.
    #[error("the tree is full at {leaves_max} leaves; the leaves before the limit were appended")]
    Full { leaves_max: u64 },
    /// An earlier append failed: the store may hold part of it, which only
    /// [`MerkleTree::open`] reconciles.
    #[error(
        "an earlier append failed and the store may hold part of it; reopen the tree with \
         MerkleTree::open, then append again from MerkleTree::size"
    )]
    AppendFailed,
    /// The store's contents cannot be a tree built by this crate.
    #[error("the node store is corrupt: {reason}; rebuild it from the log")]
    Corrupt { reason: String },
    /// The store failed to read or write.
    #[error("node store I/O failed: {0}")]
    Io(#[from] io::Error),
}

/// An RFC 9162 Merkle tree that grows by appending leaves, and proves inclusion and consistency
/// for every size it has had.
///
/// Every perfect subtree hash is kept in the [`NodeStore`], which describes the layout; the root
/// of any size `m` and every proof are built from `O(log n)` of them.
///
/// # Cost
///
/// For a tree of `n` leaves:
/// - append: one leaf hash plus `trailing_ones(n)` node hashes (two hashes per leaf on
///   average), and one store write per chunk of up to [`APPEND_CHUNK_LEAVES_MAX`] leaves. The
///   right edge of the tree (at most 58 hashes) lives in memory, so appends read nothing.
/// - `root(n)` for the current size: at most 57 hashes, no reads. `root(m)` for `m < n`: at
///   most 58 reads and 57 hashes.
/// - a proof: one read per proof hash, plus at most 58 reads and 57 hashes for the one proof
///   hash that covers a subtree on the right edge of the tree of size `m` (not a perfect one).
///
/// Append only records that the log has made durable: the store is append-only, so the tree
/// must never run ahead of the log. After a crash, [`MerkleTree::open`] the store and append the
/// log's records from [`MerkleTree::size`] onward.
pub struct MerkleTree<S = MemoryNodeStore> {
    store: S,
    size: u64,
    /// Roots of the perfect subtrees the tree of `size` leaves is made of, left (largest) to
    /// right: one per set bit of `size`.
    frontier: Vec<Hash>,
    /// Nodes of the chunk being appended, kept to reuse its allocation.
    pending: Vec<Hash>,
    append_failed: bool,
}

impl MerkleTree<MemoryNodeStore> {
    /// An empty tree in memory.
    pub fn new() -> Self {
        Self::open(MemoryNodeStore::new()).expect("an empty memory store opens")
    }
}

impl Default for MerkleTree<MemoryNodeStore> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> fmt::Debug for MerkleTree<S> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("MerkleTree")
            .field("size", &self.size)
            .field("root", &hex(&frontier_root(&self.frontier)))
            .field("append_failed", &self.append_failed)
            .finish_non_exhaustive()
    }
}

impl<S: NodeStore> MerkleTree<S> {
    /// Opens the tree a store holds, completing a torn tail: if a crash stored a leaf but not
    /// all the parents it completes, they are computed and appended, and the stored ones are
    /// checked against their children.
    ///
    /// Reads at most 59 hashes plus the torn tail's.
    pub fn open(store: S) -> Result<Self, TreeError> {
        let nodes = store.node_count();
        let nodes_max = nodes_for_leaves(TREE_LEAVES_MAX);
        if nodes > nodes_max {
            return Err(TreeError::Corrupt {
                reason: format!(
                    "it holds {nodes} hashes, more than the {nodes_max} of a full tree of \
                     {TREE_LEAVES_MAX} leaves"
                ),
            });
        }
        let (size, torn_nodes) = leaves_for_nodes(nodes);
        let mut frontier = Vec::with_capacity(size.count_ones() as usize + 1);
        let mut start = 0;
        for level in (0..u64::BITS).rev() {
            if size >> level & 1 == 1 {
                frontier.push(store.read(position(level, start >> level))?);
                start += 1 << level;
            }
        }
        let mut tree = Self {
            store,
            size,
            frontier,
            pending: Vec::new(),
            append_failed: false,
        };
        if torn_nodes > 0 {
            tree.complete_torn_tail(torn_nodes)?;
        }
        Ok(tree)
    }

    /// Completes leaf `size`, of which only the first `torn_nodes` nodes (the leaf and
    /// `torn_nodes - 1` parents) are stored.
    fn complete_torn_tail(&mut self, torn_nodes: u64) -> Result<(), TreeError> {
        let leaf = self.size;
        let parents = leaf.trailing_ones();
        assert!(1 <= torn_nodes && torn_nodes <= u64::from(parents));
        let mut frontier = self.frontier.clone();
        let mut node = self.store.read(position(0, leaf))?;
        self.pending.clear();
        for level in 1..=parents {
            let left = frontier
                .pop()
                .expect("leaf `size` completes one frontier subtree per trailing one of `size`");
            node = node_hash(&left, &node);
            let index = leaf >> level;
            if u64::from(level) < torn_nodes {
                let stored = self.store.read(position(level, index))?;
                if stored != node {
                    return Err(TreeError::Corrupt {
                        reason: format!(
                            "the node at level {level}, index {index} is {} but its children \
                             hash to {}",
                            hex(&stored),
                            hex(&node)
                        ),
                    });
                }
            } else {
                self.pending.push(node);
            }
        }
        frontier.push(node);
        self.store.append(&self.pending)?;
        assert_eq!(self.store.node_count(), nodes_for_leaves(leaf + 1));
        self.size = leaf + 1;
        self.frontier = frontier;
        Ok(())
    }

    /// The number of leaves appended.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The store, e.g. to [`FileNodeStore::sync`](crate::FileNodeStore::sync) it.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Gives the store back.
    pub fn into_store(self) -> S {
        self.store
    }

    /// Appends one leaf, whose input is `leaf_input` (a record's 32-byte chain hash).
    pub fn append(&mut self, leaf_input: &[u8]) -> Result<(), TreeError> {
        self.append_batch([leaf_input])
    }

    /// Appends leaves in order, with one store write per [`APPEND_CHUNK_LEAVES_MAX`] leaves.
    ///
    /// On an error, some prefix of the batch may be stored: the tree refuses further appends
    /// ([`TreeError::AppendFailed`]) until it is reopened with [`MerkleTree::open`], which says
    /// how many leaves it holds. Reads and proofs for sizes up to [`MerkleTree::size`] stay
    /// valid.
    pub fn append_batch<I>(&mut self, leaf_inputs: I) -> Result<(), TreeError>
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        if self.append_failed {
            return Err(TreeError::AppendFailed);
        }
        let mut leaf_inputs = leaf_inputs.into_iter().peekable();
        while leaf_inputs.peek().is_some() {
            if self.size == TREE_LEAVES_MAX {
                return Err(TreeError::Full {
                    leaves_max: TREE_LEAVES_MAX,
                });
            }
            let leaves_room = TREE_LEAVES_MAX - self.size;
            let chunk_leaves = leaves_room.min(APPEND_CHUNK_LEAVES_MAX as u64) as usize;
            let mut frontier = self.frontier.clone();
            let mut size = self.size;
            self.pending.clear();
            for leaf_input in leaf_inputs.by_ref().take(chunk_leaves) {
                let mut node = leaf_hash(leaf_input.as_ref());
                self.pending.push(node);
                for _ in 0..size.trailing_ones() {
                    let left = frontier
                        .pop()
                        .expect("one frontier subtree per trailing one of `size`");
                    node = node_hash(&left, &node);
                    self.pending.push(node);
                }
                frontier.push(node);
                size += 1;
            }
            let nodes_before = nodes_for_leaves(self.size);
            assert_eq!(self.store.node_count(), nodes_before);
            assert_eq!(
                self.pending.len() as u64,
                nodes_for_leaves(size) - nodes_before
            );
            if let Err(error) = self.store.append(&self.pending) {
                self.append_failed = true;
                return Err(error.into());
            }
            assert_eq!(self.store.node_count(), nodes_for_leaves(size));
            assert_eq!(frontier.len(), size.count_ones() as usize);
            self.size = size;
            self.frontier = frontier;
        }
        Ok(())
    }

    /// The root of the tree of the first `size` leaves (RFC 9162 2.1.1 `MTH`).
    pub fn root(&self, size: u64) -> Result<Hash, TreeError> {
        self.check_size(size)?;
        if size == self.size {
            return Ok(frontier_root(&self.frontier));
        }
        if size == 0 {
            return Ok(empty_root());
        }
        Ok(self.range_root(0, size)?)
    }

    /// The inclusion proof of leaf `index` in the tree of the first `size` leaves (RFC 9162
    /// 2.1.3.1 `PATH`): the sibling hashes from the leaf up to the root. Check it with
    /// [`verify_inclusion`](crate::verify_inclusion).
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, TreeError> {
        self.check_size(size)?;
        if index >= size {
            return Err(TreeError::IndexOutOfRange { index, size });
        }
        // Walk down from the root to the leaf; the proof lists siblings bottom-up.
        let mut proof = Vec::with_capacity(proof_capacity(size));
        let (mut start, mut end) = (0, size);
        while end - start > 1 {
            let middle = start + split(end - start);
            if index < middle {
                proof.push(self.range_root(middle, end)?);
                end = middle;
            } else {
                proof.push(self.range_root(start, middle)?);
                start = middle;
            }
        }
        proof.reverse();
        Ok(proof)
    }

    /// The consistency proof from the tree of the first `old_size` leaves to the tree of the
    /// first `new_size` leaves (RFC 9162 2.1.4.1 `PROOF`). Check it with
    /// [`verify_consistency`](crate::verify_consistency).
    ///
    /// Empty when `old_size` is 0 or equals `new_size`: nothing needs proving.
    pub fn consistency_proof(&self, old_size: u64, new_size: u64) -> Result<Vec<Hash>, TreeError> {
        self.check_size(new_size)?;
        if old_size > new_size {
            return Err(TreeError::SizesReversed { old_size, new_size });
        }
        let mut proof = Vec::new();
        if old_size == 0 || old_size == new_size {
            return Ok(proof);
        }
        proof.reserve_exact(proof_capacity(new_size) + 1);
        // RFC 9162 SUBPROOF(m, D[start:end], b), walked from the root down; `old_root_known`
        // is `b`: whether this subtree is the whole old tree, whose root the verifier has.
        let (mut start, mut end, mut old_root_known) = (0, new_size, true);
        loop {
            if old_size == end {
                if !old_root_known {
                    proof.push(self.range_root(start, end)?);
                }
                break;
            }
            let middle = start + split(end - start);
            if old_size <= middle {
                proof.push(self.range_root(middle, end)?);
                end = middle;
            } else {
                proof.push(self.range_root(start, middle)?);
                start = middle;
                old_root_known = false;
            }
        }
        proof.reverse();
        Ok(proof)
    }

    fn check_size(&self, size: u64) -> Result<(), TreeError> {
        if size > self.size {
            return Err(TreeError::SizeOutOfRange {
                size,
                tree_size: self.size,
            });
        }
        Ok(())
    }

    /// `MTH(D[start:end])`, for a range that is a subtree of some tree: `start` is a multiple
    /// of the smallest power of two at least `end - start`. The range is made of the perfect
    /// subtrees of its set bits, largest first; they are stored, and folded right to left.
    fn range_root(&self, start: u64, end: u64) -> io::Result<Hash> {
        let leaves = end - start;
        assert!(0 < leaves && end <= self.size);
        assert_eq!(
            start % leaves.next_power_of_two(),
            0,
            "range {start}..{end}"
        );
        let mut root: Option<Hash> = None;
        let mut subtree_end = end;
        for level in 0..u64::BITS {
            if leaves >> level & 1 == 1 {
                let subtree_start = subtree_end - (1 << level);
                let subtree_root = self.store.read(position(level, subtree_start >> level))?;
                root = Some(match root {
                    None => subtree_root,
                    Some(right) => node_hash(&subtree_root, &right),
                });
                subtree_end = subtree_start;
            }
        }
        Ok(root.expect("a range of at least one leaf"))
    }
}

/// The root of the tree made of `frontier`'s perfect subtrees, largest first.
fn frontier_root(frontier: &[Hash]) -> Hash {
    frontier
        .iter()
        .rev()
        .copied()
        .reduce(|right, left| node_hash(&left, &right))
        .unwrap_or_else(empty_root)
}

/// The depth of the tree of `size` leaves: the length of its longest inclusion proof.
fn proof_capacity(size: u64) -> usize {
    size.next_power_of_two().ilog2() as usize
}
