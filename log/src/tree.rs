//! The partition's Merkle tree: an RFC 9162 tree (`kimberlite_merkle`) over the durable
//! records, kept incrementally in a side file, from which readers prove inclusion and
//! consistency in `O(log n)`.
//!
//! # File and leaves
//!
//! Leaf `p` is record `p`; its leaf input is the record's 32-byte hash (the chain hash the
//! codec computes, which commits to its header and ciphertext). The tree's nodes live in
//! [`TREE_FILE`] beside the segments: `kimberlite_merkle`'s post-order array of 32-byte hashes,
//! no header (the layout version is in the name; [`kimberlite_merkle::FileNodeStore`] reads the
//! same file). The file is a function of the records alone, so it is identical on every replica
//! that holds the same log; like `checkpoints` it is a side file, and the segments stay
//! byte-identical whatever happens to it.
//!
//! # When it is written, and what is durable
//!
//! - `sync`: after the segment's `fdatasync`, the leaves of the records that just became
//!   durable are appended: one `write` of about 64 bytes per record, **no fsync**. A leaf is
//!   never written for a record that is not durable, so the tree can never hold a leaf the log
//!   may lose.
//! - `checkpoint`: the tree file is `fdatasync`ed *before* the checkpoint entry is written, so
//!   every node of the tree a checkpoint signs is durable once the checkpoint is. With the
//!   default interval that is one extra fsync per 4096 records (and one at `close`).
//! - `open`: nodes past those of the last checkpoint may be missing, torn or garbage after a
//!   power loss (they were never synced); they are cut, and the leaves from there to the end of
//!   the log are appended again from the records' hashes (read from the segments). The tree's
//!   root at the last checkpoint is then held against the checkpoint's signed root. A tree that
//!   holds a leaf past the end of the log refuses to open: a durable record is missing.
//!
//! Lazy durability is safe because the tree is derived: the log is the source of truth and
//! rebuilds any unsynced suffix. It keeps the group-commit path at one fsync per `sync`.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use kimberlite_merkle::{HASH_BYTES, MerkleTree, NodeStore, TreeError, TreeHead};

use crate::error::LogError;
use crate::storage::{FileRef, Storage};
use crate::types::{Hash, Position};

/// Name of the Merkle tree side file in a partition directory.
pub const TREE_FILE: &str = "merkle-v1";

/// A [`NodeStore`] in one file of the log's [`Storage`], so the crash tests reach it: the same
/// layout as [`kimberlite_merkle::FileNodeStore`], plus truncation (recovery cuts an unsynced
/// suffix) and a handle to sync the file without holding the tree's lock.
pub(crate) struct StorageNodeStore {
    file: FileRef,
    path: PathBuf,
    node_count: u64,
}

impl StorageNodeStore {
    /// Opens `file`, cutting a partial hash at its end (a torn write).
    pub(crate) fn open(file: FileRef, path: &Path) -> io::Result<StorageNodeStore> {
        let bytes = file.len()?;
        let torn_bytes = bytes % HASH_BYTES as u64;
        if torn_bytes != 0 {
            file.set_len(bytes - torn_bytes)?;
        }
        Ok(StorageNodeStore {
            file,
            path: path.to_owned(),
            node_count: bytes / HASH_BYTES as u64,
        })
    }

    /// Opens the tree file in `dir`, creating it if missing. Returns whether it was created
    /// (the caller syncs the directory).
    pub(crate) fn open_in(
        storage: &dyn Storage,
        path: &Path,
        exists: bool,
    ) -> Result<(StorageNodeStore, bool), LogError> {
        let file = if exists {
            storage.open(path)
        } else {
            storage.create(path)
        }
        .map_err(|source| LogError::io(path, if exists { "open" } else { "create" }, source))?;
        let store = StorageNodeStore::open(file, path)
            .map_err(|source| LogError::io(path, "read", source))?;
        Ok((store, !exists))
    }

    /// Keeps only the first `nodes` nodes. Not durable until synced; only ever cuts nodes that
    /// were never synced, so a crash that loses the cut is harmless.
    pub(crate) fn truncate(&mut self, nodes: u64) -> io::Result<()> {
        assert!(nodes <= self.node_count);
        self.file.set_len(nodes * HASH_BYTES as u64)?;
        self.node_count = nodes;
        Ok(())
    }

    /// The file, to `fdatasync` without holding the tree's lock.
    pub(crate) fn file(&self) -> FileRef {
        self.file.clone()
    }
}

impl fmt::Debug for StorageNodeStore {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("StorageNodeStore")
            .field("path", &self.path)
            .field("node_count", &self.node_count)
            .finish()
    }
}

impl NodeStore for StorageNodeStore {
    fn node_count(&self) -> u64 {
        self.node_count
    }

    fn read(&self, position: u64) -> io::Result<kimberlite_merkle::Hash> {
        assert!(
            position < self.node_count,
            "read past the end: node {position} of {}",
            self.node_count
        );
        let mut hash = [0; HASH_BYTES];
        self.file.read_at(&mut hash, position * HASH_BYTES as u64)?;
        Ok(hash)
    }

    fn append(&mut self, hashes: &[kimberlite_merkle::Hash]) -> io::Result<()> {
        // On failure the file may hold part of `hashes`; `node_count` stays at what is whole.
        self.file
            .write_at(hashes.as_flattened(), self.node_count * HASH_BYTES as u64)?;
        self.node_count += hashes.len() as u64;
        Ok(())
    }
}

/// A [`NodeStore`] that keeps no node, only their count: for a tree whose only use is the root
/// of its current size, which [`MerkleTree`] keeps in memory (`O(log n)` memory for any
/// number of leaves). It is never read: `read` fails.
#[derive(Debug, Default)]
pub(crate) struct CountingStore {
    node_count: u64,
}

impl NodeStore for CountingStore {
    fn node_count(&self) -> u64 {
        self.node_count
    }

    fn read(&self, position: u64) -> io::Result<kimberlite_merkle::Hash> {
        Err(io::Error::other(format!(
            "a counting store keeps no nodes (node {position} was asked for)"
        )))
    }

    fn append(&mut self, hashes: &[kimberlite_merkle::Hash]) -> io::Result<()> {
        self.node_count += hashes.len() as u64;
        Ok(())
    }
}

/// The tree of the durable records, and the head it has: what readers prove from and sign.
#[derive(Debug)]
pub(crate) struct DurableTree {
    pub(crate) tree: MerkleTree<StorageNodeStore>,
    /// Hash of record `tree.size() - 1`: the tree's last leaf input (zeros when empty).
    pub(crate) chain_head: Hash,
    /// Timestamp of record `tree.size() - 1` (0 when empty).
    pub(crate) timestamp_ns: u64,
}

impl DurableTree {
    /// The head of the whole tree, unsigned. No I/O: the root of the current size is kept in
    /// memory.
    pub(crate) fn head(&self, partition: u64) -> TreeHead {
        let size = self.tree.size();
        TreeHead {
            partition,
            size,
            root: self
                .tree
                .root(size)
                .expect("the root of the current size is computed in memory"),
            chain_head: self.chain_head,
            timestamp_ns: self.timestamp_ns,
        }
    }

    /// The size the caller may ask about: at most the tree's.
    pub(crate) fn check_size(&self, size: u64) -> Result<(), LogError> {
        let tree_size = self.tree.size();
        if size > tree_size {
            return Err(LogError::BeyondTree { size, tree_size });
        }
        Ok(())
    }
}

/// The log's error for a tree that failed, in the tree file at `path`.
pub(crate) fn tree_error(path: &Path, error: TreeError) -> LogError {
    match error {
        TreeError::Io(source) => LogError::io(path, "read or write", source),
        TreeError::SizeOutOfRange { size, tree_size } => LogError::BeyondTree { size, tree_size },
        TreeError::IndexOutOfRange { index, size } => LogError::OutsideTree {
            position: index,
            size,
        },
        TreeError::SizesReversed { old_size, new_size } => {
            LogError::TreeSizesReversed { old_size, new_size }
        }
        TreeError::AppendFailed => LogError::Poisoned {
            reason: format!(
                "an earlier append to the Merkle tree {} failed",
                path.display()
            ),
        },
        corrupt @ (TreeError::Corrupt { .. } | TreeError::Full { .. }) => LogError::Corrupt {
            file: path.to_owned(),
            position: None,
            offset: 0,
            reason: format!(
                "Merkle tree: {corrupt}; the tree is derived from the log: remove {TREE_FILE} and \
                 reopen to rebuild it"
            ),
        },
    }
}

/// The tree of `nodes` stored nodes refuses to open if it holds a leaf for a position at or
/// past `log_end`: leaves are written only for durable records, so a durable record is gone.
pub(crate) fn check_not_past_log(
    path: &Path,
    nodes: u64,
    log_end: Position,
) -> Result<(), LogError> {
    let nodes_max = kimberlite_merkle::nodes_for_leaves(log_end);
    if nodes > nodes_max {
        return Err(LogError::Corrupt {
            file: path.to_owned(),
            position: Some(log_end),
            offset: nodes_max * HASH_BYTES as u64,
            reason: format!(
                "the Merkle tree holds a leaf for position {log_end} or later, but the log ends \
                 at position {log_end}: leaves are written only for durable records, so durable \
                 records are missing from the log (or this tree file is not this log's); restore \
                 the log from a replica or a backup"
            ),
        });
    }
    Ok(())
}
