//! Where a [`MerkleTree`](crate::MerkleTree) keeps its node hashes: the [`NodeStore`] trait,
//! its post-order layout, and two stores.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use crate::hash::{HASH_BYTES, Hash};

/// An append-only array of node hashes. The tree decides what goes where; a store only keeps
/// bytes.
///
/// # Layout
///
/// The node at level `k`, index `j` is the root of the perfect subtree over leaves
/// `[j·2^k, (j+1)·2^k)`; level 0 holds the leaf hashes. A tree of `n` leaves has
/// `floor(n / 2^k)` nodes at level `k`: `2n - popcount(n)` in all.
///
/// They are stored in **post-order**, each node as soon as it is complete: leaf `L`, then the
/// `trailing_ones(L)` parents it completes, lowest first. Four leaves are stored as
///
/// ```text
/// position:  0      1      2         3      4      5         6
/// node:      leaf0  leaf1  node(1,0) leaf2  leaf3  node(1,1) node(2,0)
/// ```
///
/// So appending never rewrites anything: a batch of leaves is one write at the end, and a file
/// holding the array (a [`FileNodeStore`]) needs no header and no index. The node at level `k`,
/// index `j` sits at position `2L - popcount(L) + k`, where `L = (j+1)·2^k - 1` is its last
/// leaf.
///
/// A crash can leave a torn tail: a leaf without all of the parents it completes.
/// [`MerkleTree::open`](crate::MerkleTree::open) computes them from the stored nodes.
///
/// # Contract
///
/// Contract: `read(position)` returns exactly what was appended at `position`, for every
/// `position < node_count()`, and a successful `append(hashes)` adds `hashes.len()` to
/// `node_count()`. After a failed append a store may hold any prefix of `hashes`, as a crash
/// would leave it; [`MerkleTree::open`](crate::MerkleTree::open) recovers from that.
pub trait NodeStore {
    /// The number of hashes stored.
    fn node_count(&self) -> u64;

    /// The hash at `position`, which must be below [`NodeStore::node_count`].
    fn read(&self, position: u64) -> io::Result<Hash>;

    /// Stores `hashes` at positions `node_count()..node_count() + hashes.len()`.
    fn append(&mut self, hashes: &[Hash]) -> io::Result<()>;
}

/// A [`NodeStore`] in memory: 32 bytes per node, about 64 bytes per leaf.
#[derive(Clone, Default)]
pub struct MemoryNodeStore {
    hashes: Vec<Hash>,
}

impl MemoryNodeStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl fmt::Debug for MemoryNodeStore {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("MemoryNodeStore")
            .field("node_count", &self.hashes.len())
            .finish()
    }
}

impl NodeStore for MemoryNodeStore {
    fn node_count(&self) -> u64 {
        self.hashes.len() as u64
    }

    fn read(&self, position: u64) -> io::Result<Hash> {
        assert!(
            position < self.node_count(),
            "read past the end: position {position}"
        );
        Ok(self.hashes[position as usize])
    }

    fn append(&mut self, hashes: &[Hash]) -> io::Result<()> {
        self.hashes.extend_from_slice(hashes);
        Ok(())
    }
}

/// A [`NodeStore`] in one append-only file: the post-order array of 32-byte hashes (see
/// [`NodeStore`]), nothing else. One file per tree (per tenant partition); the version of the layout belongs in the
/// file's name.
///
/// Appends are `write`s at the end of the file and are not durable until [`FileNodeStore::sync`].
/// Since every node is a function of the leaves, the log is the source of truth: after a crash
/// the host reopens the tree and appends the log's records from
/// [`MerkleTree::size`](crate::MerkleTree::size) onward.
pub struct FileNodeStore {
    file: File,
    path: PathBuf,
    node_count: u64,
}

impl FileNodeStore {
    /// Opens the store at `path`, creating an empty one if there is none.
    ///
    /// A partial hash at the end of the file (a torn write) is cut off. Syncing the parent
    /// directory after creating the file is the caller's decision.
    pub fn open(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)?;
        let bytes = file.metadata()?.len();
        let torn_bytes = bytes % HASH_BYTES as u64;
        if torn_bytes != 0 {
            file.set_len(bytes - torn_bytes)?;
        }
        Ok(Self {
            file,
            path,
            node_count: bytes / HASH_BYTES as u64,
        })
    }

    /// Makes every appended hash durable (`fdatasync`).
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl fmt::Debug for FileNodeStore {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("FileNodeStore")
            .field("path", &self.path)
            .field("node_count", &self.node_count)
            .finish()
    }
}

impl NodeStore for FileNodeStore {
    fn node_count(&self) -> u64 {
        self.node_count
    }

    fn read(&self, position: u64) -> io::Result<Hash> {
        assert!(
            position < self.node_count,
            "read past the end: position {position}"
        );
        let mut hash = [0; HASH_BYTES];
        self.file
            .read_exact_at(&mut hash, position * HASH_BYTES as u64)?;
        Ok(hash)
    }

    fn append(&mut self, hashes: &[Hash]) -> io::Result<()> {
        // On failure the file may hold part of `hashes`; `node_count` stays at what is known to
        // be whole, and reads below it stay valid.
        self.file.write_all(hashes.as_flattened())?;
        self.node_count += hashes.len() as u64;
        Ok(())
    }
}

/// The number of nodes a [`NodeStore`] holds for a tree of `leaves` leaves:
/// `2·leaves - popcount(leaves)`. The node stored next after them is leaf `leaves`, so a store
/// holding more nodes than this holds (at least part of) more than `leaves` leaves.
///
/// Panics above [`TREE_LEAVES_MAX`](crate::TREE_LEAVES_MAX).
pub fn nodes_for_leaves(leaves: u64) -> u64 {
    assert!(leaves <= crate::TREE_LEAVES_MAX);
    2 * leaves - u64::from(leaves.count_ones())
}

/// The position of the node at `level`, `index` (see [`NodeStore`]'s layout).
pub(crate) fn position(level: u32, index: u64) -> u64 {
    let last_leaf = ((index + 1) << level) - 1;
    nodes_for_leaves(last_leaf) + u64::from(level)
}

/// The size of the largest whole tree that `nodes` stored nodes hold, and how many nodes
/// beyond it are stored (a torn tail: a leaf and some, not all, of its parents).
pub(crate) fn leaves_for_nodes(nodes: u64) -> (u64, u64) {
    assert!(nodes <= nodes_for_leaves(crate::TREE_LEAVES_MAX));
    // `nodes_for_leaves` is strictly increasing and at least `leaves`: search `0..=nodes`.
    let (mut low, mut high) = (0, nodes.min(crate::TREE_LEAVES_MAX));
    while low < high {
        let middle = low + (high - low).div_ceil(2);
        if nodes_for_leaves(middle) <= nodes {
            low = middle;
        } else {
            high = middle - 1;
        }
    }
    (low, nodes - nodes_for_leaves(low))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The post-order positions, enumerated the slow way: replay appends leaf by leaf.
    fn positions_by_replay(leaves: u64) -> Vec<(u32, u64)> {
        let mut order = Vec::new();
        for leaf in 0..leaves {
            order.push((0, leaf));
            for level in 1..=leaf.trailing_ones() {
                order.push((level, leaf >> level));
            }
        }
        order
    }

    #[test]
    fn positions_match_the_append_order() {
        let order = positions_by_replay(300);
        assert_eq!(order.len() as u64, nodes_for_leaves(300));
        for (expected, &(level, index)) in order.iter().enumerate() {
            assert_eq!(
                position(level, index),
                expected as u64,
                "node ({level}, {index})"
            );
        }
    }

    #[test]
    fn node_counts_invert() {
        for leaves in 0..300 {
            let nodes = nodes_for_leaves(leaves);
            assert_eq!(leaves_for_nodes(nodes), (leaves, 0));
            // Every count up to the next whole tree is this tree plus a torn tail.
            for extra in 1..1 + u64::from(leaves.trailing_ones()) {
                assert_eq!(leaves_for_nodes(nodes + extra), (leaves, extra));
            }
            assert_eq!(
                nodes_for_leaves(leaves + 1),
                nodes + 1 + u64::from(leaves.trailing_ones())
            );
        }
        let nodes_max = nodes_for_leaves(crate::TREE_LEAVES_MAX);
        assert_eq!(leaves_for_nodes(nodes_max), (crate::TREE_LEAVES_MAX, 0));
        assert_eq!(position(0, crate::TREE_LEAVES_MAX - 1), nodes_max - 59);
        assert!(nodes_max.checked_mul(HASH_BYTES as u64).is_some());
    }
}
