//! Offline verification of a partition directory, without any data key: the chain covers
//! ciphertext, so an auditor (or `kimberlite verify`) checks everything but the plaintext.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;
use kimberlite_merkle::{HASH_BYTES, MerkleTree, NodeStore, TreeError, nodes_for_leaves};

use crate::checkpoint::{Checkpoint, read_checkpoints};
use crate::error::describe_position;
use crate::partition::check_checkpoint_entries;
use crate::scan::{self, ChunkReader, ScanError, ScanOptions, TornTail};
use crate::storage::{FileRef, FsStorage, Storage};
use crate::types::{Hash, Position};

/// Bytes of the Merkle tree file read at once.
const TREE_CHUNK_BYTES: usize = 64 * 1024;

/// What a successful verification covered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    pub records: u64,
    /// Bytes of valid records.
    pub bytes: u64,
    pub segments: u64,
    pub checkpoints: u64,
    /// Hash of the last record ([`GENESIS_HASH`](crate::GENESIS_HASH) for an empty log).
    pub head: Hash,
    /// A torn, unacknowledged write at the end of the last segment (left by a crash; the next
    /// `open` cuts it off). Not part of the chain, so not a failure.
    pub torn_tail: Option<TornTail>,
    /// Likewise, a torn last entry of the checkpoint file.
    pub torn_checkpoint: Option<TornTail>,
    /// The RFC 9162 Merkle root of all the records, recomputed from them: what a checkpoint
    /// of the whole log signs.
    pub root: Hash,
    /// Leaves of the Merkle tree file found equal to the records' (the file may hold fewer
    /// than the log: the next open appends the rest).
    pub tree_leaves: u64,
    /// A tail of the Merkle tree file, past the nodes the last checkpoint made durable, that
    /// does not match the records: unsynced writes left by a crash. The next open cuts and
    /// rebuilds it, so it is not a failure.
    pub torn_tree: Option<TornTail>,
}

/// The first thing found wrong: which file, which position (if the damage has one), which
/// byte offset in the file, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyFailure {
    pub file: PathBuf,
    pub position: Option<Position>,
    pub offset: u64,
    pub reason: String,
}

impl fmt::Display for VerifyFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}, byte offset {}: {}",
            self.file.display(),
            describe_position(self.position),
            self.offset,
            self.reason
        )
    }
}

impl std::error::Error for VerifyFailure {}

/// Verifies one partition directory without any data key: every record's frame and CRC, its
/// recomputed SHA-256 hash, the prev_hash chain, dense positions, non-decreasing timestamps;
/// every checkpoint's Ed25519 signature against `node_public_key`, its partition, and that its
/// chain head, timestamp and Merkle root are the log's at its position (the root recomputed
/// from the records, in `O(log n)` memory); and every node of the Merkle tree file against the
/// tree of the records. Reads only; changes nothing.
///
/// `progress(bytes_done, bytes_total)` is called about every MiB and at the end.
pub fn verify_partition(
    dir: &Path,
    partition: u64,
    node_public_key: &VerifyingKey,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<VerifyReport, VerifyFailure> {
    verify_with(&FsStorage, dir, partition, node_public_key, progress)
}

pub(crate) fn verify_with(
    storage: &dyn Storage,
    dir: &Path,
    partition: u64,
    node_public_key: &VerifyingKey,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<VerifyReport, VerifyFailure> {
    let listing = scan::list(storage, dir).map_err(failure)?;
    let checkpoint_path = dir.join(crate::checkpoint::CHECKPOINT_FILE);
    let mut entries = Vec::new();
    let mut torn_checkpoint = None;
    if let Some(path) = &listing.checkpoints {
        let io = |source: std::io::Error| VerifyFailure {
            file: path.clone(),
            position: None,
            offset: 0,
            reason: format!("could not read: {source}"),
        };
        let file = storage.open_read(path).map_err(io)?;
        let read = read_checkpoints(file.as_ref())
            .map_err(io)?
            .map_err(|damage| VerifyFailure {
                file: path.clone(),
                position: None,
                offset: damage.offset,
                reason: damage.reason,
            })?;
        if read.valid_bytes < read.file_bytes {
            torn_checkpoint = Some(TornTail {
                file: path.clone(),
                offset: read.valid_bytes,
                bytes_dropped: read.file_bytes - read.valid_bytes,
                reason: "partial or damaged last checkpoint entry".into(),
            });
        }
        entries = check_checkpoint_entries(path, partition, &read.entries).map_err(failure)?;
        for (offset, checkpoint) in &entries {
            if !checkpoint.verify(node_public_key) {
                return Err(VerifyFailure {
                    file: path.clone(),
                    position: Some(checkpoint.position),
                    offset: *offset,
                    reason: format!(
                        "checkpoint signature does not verify against node key {}: forged, \
                         altered, or signed by another node",
                        hex::encode(node_public_key.as_bytes())
                    ),
                });
            }
        }
    }
    let tree_path = dir.join(crate::tree::TREE_FILE);
    let (tree_file, tree_bytes) = match &listing.tree {
        Some(path) => {
            let io = |source: io::Error| VerifyFailure {
                file: path.clone(),
                position: None,
                offset: 0,
                reason: format!("could not read: {source}"),
            };
            let file = storage.open_read(path).map_err(io)?;
            let bytes = file.len().map_err(io)?;
            (Some(file), bytes)
        }
        None => (None, 0),
    };
    // Nodes of the tree file that a checkpoint's sync made durable; any after may be a torn,
    // unsynced tail.
    let synced_nodes = nodes_for_leaves(entries.last().map_or(0, |(_, last)| last.position));
    let mut tree = MerkleTree::open(TreeFileCheck::new(tree_file.as_ref(), tree_bytes))
        .expect("an empty check opens");
    let mut roots = entries.iter().peekable();
    check_roots(&tree, &mut roots, &checkpoint_path).map_err(failure)?;
    let scanned = scan::scan(
        storage,
        &listing,
        ScanOptions {
            read_only: true,
            recompute_hashes: true,
            // Verification needs no index beyond the first record of each segment.
            index_interval_records: u64::MAX,
            checkpoints: &entries,
            checkpoint_path: checkpoint_path.clone(),
            progress,
            on_record: &mut |_, hash| {
                tree.append(hash).map_err(|error| match error {
                    TreeError::Io(source) => ScanError::Io {
                        path: tree_path.clone(),
                        action: "read",
                        source,
                    },
                    other => panic!("appending to a tree that keeps nothing failed: {other}"),
                })?;
                check_roots(&tree, &mut roots, &checkpoint_path)
            },
        },
    )
    .map_err(failure)?;

    let root = tree
        .root(tree.size())
        .expect("the current root is in memory");
    let check = tree.into_store();
    let tree_nodes_max = nodes_for_leaves(scanned.end);
    if check.file_nodes > tree_nodes_max {
        return Err(VerifyFailure {
            file: tree_path,
            position: Some(scanned.end),
            offset: tree_nodes_max * HASH_BYTES as u64,
            reason: format!(
                "the Merkle tree holds a leaf for position {} or later, but the log ends there: \
                 leaves are written only for durable records, so durable records are missing \
                 from the log (or the tree file is not this log's)",
                scanned.end
            ),
        });
    }
    let mut torn_tree = None;
    let tree_leaves = match check.difference {
        Some(difference) if difference.node < synced_nodes => {
            return Err(VerifyFailure {
                file: tree_path,
                position: Some(difference.position),
                offset: difference.node * HASH_BYTES as u64,
                reason: format!(
                    "Merkle tree node {} is {} but the records give {}: the tree file is damaged \
                     where a checkpoint made it durable; remove {} and reopen to rebuild it from \
                     the log",
                    difference.node,
                    hex::encode(difference.stored),
                    hex::encode(difference.computed),
                    crate::tree::TREE_FILE
                ),
            });
        }
        Some(difference) => {
            torn_tree = Some(TornTail {
                file: tree_path,
                offset: difference.node * HASH_BYTES as u64,
                bytes_dropped: tree_bytes - difference.node * HASH_BYTES as u64,
                reason: format!(
                    "Merkle tree node {} does not match the records, after the nodes the last \
                     checkpoint made durable: an unsynced write left by a crash",
                    difference.node
                ),
            });
            difference.position
        }
        None => {
            if !tree_bytes.is_multiple_of(HASH_BYTES as u64) {
                let offset = check.file_nodes * HASH_BYTES as u64;
                torn_tree = Some(TornTail {
                    file: tree_path,
                    offset,
                    bytes_dropped: tree_bytes - offset,
                    reason: "partial last hash of the Merkle tree file".into(),
                });
            }
            leaves_within(check.file_nodes)
        }
    };
    Ok(VerifyReport {
        records: scanned.end,
        bytes: scanned.bytes,
        segments: scanned.segments.len() as u64,
        checkpoints: entries.len() as u64,
        head: scanned.head,
        torn_tail: scanned.torn,
        torn_checkpoint,
        root,
        tree_leaves,
        torn_tree,
    })
}

/// Holds every checkpoint at the tree's size against the tree's root.
fn check_roots<'a>(
    tree: &MerkleTree<TreeFileCheck<'_>>,
    roots: &mut std::iter::Peekable<impl Iterator<Item = &'a (u64, Checkpoint)>>,
    checkpoint_path: &Path,
) -> Result<(), ScanError> {
    let size = tree.size();
    while let Some((offset, checkpoint)) = roots.next_if(|(_, next)| next.position <= size) {
        assert_eq!(
            checkpoint.position, size,
            "checkpoints are checked in order"
        );
        let root = tree.root(size).expect("the current root is in memory");
        if root != checkpoint.tree_root {
            return Err(ScanError::damage(
                checkpoint_path,
                checkpoint.position,
                *offset,
                format!(
                    "checkpoint signs Merkle root {} for records 0..{size}, but the records hash \
                     to root {}: the signed root does not match the records",
                    hex::encode(checkpoint.tree_root),
                    hex::encode(root)
                ),
            ));
        }
    }
    Ok(())
}

/// The number of whole leaves among the first `nodes` nodes of a tree file.
fn leaves_within(nodes: u64) -> u64 {
    // `nodes_for_leaves` is increasing: the largest `leaves` with `nodes_for_leaves(leaves) <=
    // nodes`, at least nodes / 2.
    let (mut low, mut high) = (nodes / 2, nodes);
    while low < high {
        let middle = low + (high - low).div_ceil(2);
        if nodes_for_leaves(middle) <= nodes {
            low = middle;
        } else {
            high = middle - 1;
        }
    }
    low
}

/// The first node of the tree file that differs from the records' tree.
#[derive(Clone, Copy, Debug)]
struct Difference {
    node: u64,
    /// The record whose leaf (or a parent it completes) the node is.
    position: Position,
    stored: Hash,
    computed: Hash,
}

/// A [`NodeStore`] that keeps nothing: each node the records' tree appends is held against
/// the tree file's node at the same position, and the first difference is kept.
///
/// Verification only appends and asks for the root of the current size, which the tree keeps
/// in memory: it never reads a node back, so `read` fails.
struct TreeFileCheck<'a> {
    file: Option<ChunkReader<'a>>,
    /// Whole nodes in the tree file.
    file_nodes: u64,
    node_count: u64,
    leaves: u64,
    difference: Option<Difference>,
}

impl<'a> TreeFileCheck<'a> {
    fn new(file: Option<&'a FileRef>, file_bytes: u64) -> Self {
        TreeFileCheck {
            file: file.map(|file| ChunkReader::new(file.as_ref(), file_bytes, TREE_CHUNK_BYTES)),
            file_nodes: file_bytes / HASH_BYTES as u64,
            node_count: 0,
            leaves: 0,
            difference: None,
        }
    }
}

impl NodeStore for TreeFileCheck<'_> {
    fn node_count(&self) -> u64 {
        self.node_count
    }

    fn read(&self, position: u64) -> io::Result<Hash> {
        Err(io::Error::other(format!(
            "verification keeps no tree nodes (node {position} was asked for)"
        )))
    }

    fn append(&mut self, hashes: &[Hash]) -> io::Result<()> {
        // One leaf per append (verification appends record by record): the leaf, then the
        // parents it completes.
        let position = self.leaves;
        assert_eq!(
            hashes.len() as u64,
            1 + u64::from(position.trailing_ones()),
            "one leaf per append"
        );
        for (node, computed) in (self.node_count..).zip(hashes) {
            if self.difference.is_some() || node >= self.file_nodes {
                break;
            }
            let file = self.file.as_mut().expect("file_nodes is 0 without a file");
            let stored: Hash = file
                .get(node * HASH_BYTES as u64, HASH_BYTES)?
                .try_into()
                .expect("a whole node below file_nodes");
            if stored != *computed {
                self.difference = Some(Difference {
                    node,
                    position,
                    stored,
                    computed: *computed,
                });
            }
        }
        self.node_count += hashes.len() as u64;
        self.leaves += 1;
        Ok(())
    }
}

fn failure(error: ScanError) -> VerifyFailure {
    match error {
        ScanError::Io {
            path,
            action,
            source,
        } => VerifyFailure {
            file: path,
            position: None,
            offset: 0,
            reason: format!("could not {action}: {source}"),
        },
        ScanError::Damage(damage) => VerifyFailure {
            file: damage.file,
            position: damage.position,
            offset: damage.offset,
            reason: damage.reason,
        },
    }
}
