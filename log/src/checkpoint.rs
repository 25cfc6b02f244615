//! Signed checkpoints: the node's Ed25519 signature over a [`TreeHead`] of the partition —
//! (partition, position, Merkle root, chain head, timestamp). A checkpoint *is* a
//! [`SignedTreeHead`] ([`Checkpoint::tree_head`]): the signed message is exactly
//! [`TreeHead::signed_message`] (documented in `kimberlite_merkle`), so a client checks a
//! checkpoint with `kimberlite_merkle` alone.
//!
//! Checkpoints are not records: they live in an append-only side file, `checkpoints`, in the
//! partition directory, so the log itself stays byte-identical across replicas that sign with
//! different node keys. Each entry is fixed-size and CRC-protected (version 2):
//!
//! | offset | bytes | field |
//! |---:|---:|---|
//! | 0 | 4 | magic `KCKP` |
//! | 4 | 1 | version (2) |
//! | 5 | 3 | reserved, 0 |
//! | 8 | 8 | partition (tenant id) |
//! | 16 | 8 | position: exclusive end of the records covered (the tree size) |
//! | 24 | 32 | chain head: hash of record `position - 1` (zeros when `position` is 0) |
//! | 56 | 8 | timestamp ns of record `position - 1` (0 when `position` is 0) |
//! | 64 | 32 | tree root: RFC 9162 root of records `0..position` (`SHA-256("")` when 0) |
//! | 96 | 64 | Ed25519 signature over [`TreeHead::signed_message`] |
//! | 160 | 4 | CRC32 of bytes 0..160 |
//!
//! Integers are little-endian. Version 1 entries (132 bytes, no tree root, signed under the
//! domain `kimberlite/checkpoint/v1`) are refused with a message that says so: they predate
//! Merkle roots, no production data holds them, and a root cannot be added to a signature
//! after the fact (the node would have to re-sign history).

use ed25519_dalek::VerifyingKey;
use kimberlite_merkle::{SignedTreeHead, TREE_HEAD_MESSAGE_BYTES, TreeHead};

use crate::keys::NodeKey;
use crate::storage::StorageFile;
use crate::types::{Hash, Position};

/// Name of the checkpoint side file in a partition directory.
pub const CHECKPOINT_FILE: &str = "checkpoints";
pub(crate) const CHECKPOINT_ENTRY_BYTES: usize = 164;
/// Bytes covered by an entry's CRC: all but the CRC.
const CRC_OFFSET: usize = CHECKPOINT_ENTRY_BYTES - 4;
const CHECKPOINT_MAGIC: [u8; 4] = *b"KCKP";
const CHECKPOINT_VERSION: u8 = 2;

/// A signed statement by a node: "partition `partition` holds records `0..position`; the
/// RFC 9162 root of their Merkle tree is `tree_root` and the last of them has hash
/// `chain_head`" — a [`SignedTreeHead`] ([`Checkpoint::tree_head`]).
///
/// `timestamp_ns` is the timestamp of the last covered record (assigned by the primary), not
/// the signing time: replicas that checkpoint the same position then sign the same message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub partition: u64,
    /// Exclusive end of the records covered: the tree size.
    pub position: Position,
    pub chain_head: Hash,
    pub timestamp_ns: u64,
    /// The RFC 9162 root of the tree of records `0..position`.
    pub tree_root: Hash,
    pub signature: [u8; 64],
}

impl Checkpoint {
    /// Signs `head` with the node key.
    pub(crate) fn sign(node_key: &NodeKey, head: TreeHead) -> Checkpoint {
        let signature = node_key.sign(&head.signed_message());
        Checkpoint::from_tree_head(SignedTreeHead { head, signature })
    }

    /// The checkpoint that is this signed tree head.
    pub fn from_tree_head(signed: SignedTreeHead) -> Checkpoint {
        let SignedTreeHead { head, signature } = signed;
        Checkpoint {
            partition: head.partition,
            position: head.size,
            chain_head: head.chain_head,
            timestamp_ns: head.timestamp_ns,
            tree_root: head.root,
            signature,
        }
    }

    /// This checkpoint as the signed tree head it is, for a client to check with
    /// `kimberlite_merkle` ([`SignedTreeHead::verify`]).
    pub fn tree_head(&self) -> SignedTreeHead {
        SignedTreeHead {
            head: TreeHead {
                partition: self.partition,
                size: self.position,
                root: self.tree_root,
                chain_head: self.chain_head,
                timestamp_ns: self.timestamp_ns,
            },
            signature: self.signature,
        }
    }

    /// What the signature covers: exactly [`TreeHead::signed_message`] of
    /// [`Checkpoint::tree_head`] (domain tag `kimberlite/tree-head/v1`, then partition,
    /// position, tree root, chain head and timestamp).
    pub fn signed_message(&self) -> [u8; TREE_HEAD_MESSAGE_BYTES] {
        self.tree_head().signed_message()
    }

    /// Whether the signature is `node_public_key`'s over this checkpoint (`verify_strict`).
    pub fn verify(&self, node_public_key: &VerifyingKey) -> bool {
        self.tree_head().verify(node_public_key.as_bytes()).is_ok()
    }

    pub(crate) fn encode(&self) -> [u8; CHECKPOINT_ENTRY_BYTES] {
        let mut entry = [0u8; CHECKPOINT_ENTRY_BYTES];
        entry[0..4].copy_from_slice(&CHECKPOINT_MAGIC);
        entry[4] = CHECKPOINT_VERSION;
        entry[8..16].copy_from_slice(&self.partition.to_le_bytes());
        entry[16..24].copy_from_slice(&self.position.to_le_bytes());
        entry[24..56].copy_from_slice(&self.chain_head);
        entry[56..64].copy_from_slice(&self.timestamp_ns.to_le_bytes());
        entry[64..96].copy_from_slice(&self.tree_root);
        entry[96..160].copy_from_slice(&self.signature);
        let crc = crc32fast::hash(&entry[..CRC_OFFSET]);
        entry[CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
        entry
    }

    pub(crate) fn decode(entry: &[u8]) -> Result<Checkpoint, String> {
        assert_eq!(entry.len(), CHECKPOINT_ENTRY_BYTES);
        if entry[0..4] != CHECKPOINT_MAGIC {
            return Err("bad checkpoint magic".into());
        }
        let stored = u32::from_le_bytes(entry[CRC_OFFSET..].try_into().expect("4 bytes"));
        let computed = crc32fast::hash(&entry[..CRC_OFFSET]);
        if stored != computed {
            return Err(format!(
                "checkpoint CRC mismatch: stored {stored:08x}, computed {computed:08x}"
            ));
        }
        if entry[4] != CHECKPOINT_VERSION || entry[5..8] != [0, 0, 0] {
            return Err(format!("unknown checkpoint version {}", entry[4]));
        }
        let u64_at = |offset: usize| {
            u64::from_le_bytes(entry[offset..offset + 8].try_into().expect("8 bytes"))
        };
        Ok(Checkpoint {
            partition: u64_at(8),
            position: u64_at(16),
            chain_head: entry[24..56].try_into().expect("32 bytes"),
            timestamp_ns: u64_at(56),
            tree_root: entry[64..96].try_into().expect("32 bytes"),
            signature: entry[96..160].try_into().expect("64 bytes"),
        })
    }
}

/// The version-1 refusal: checkpoints from before Merkle roots.
const VERSION_1_REASON: &str = "the checkpoint file holds version 1 entries (from before \
     checkpoints carried a Merkle root); this version reads only version 2. Move the file \
     `checkpoints` aside (the log itself is unchanged and still verifies by its hash chain) and \
     reopen: new checkpoints are signed from the current head";

/// The entries of a checkpoint file, and where a torn last entry begins, if any.
#[derive(Debug)]
pub(crate) struct CheckpointFile {
    pub(crate) entries: Vec<Checkpoint>,
    /// Bytes of whole, valid entries.
    pub(crate) valid_bytes: u64,
    pub(crate) file_bytes: u64,
}

/// A checkpoint entry that is bad and followed by a valid one (not a torn write), or a file of
/// version 1 entries. `reason` is the whole explanation.
#[derive(Debug)]
pub(crate) struct CheckpointDamage {
    pub(crate) offset: u64,
    pub(crate) reason: String,
}

/// Reads every entry. A bad or partial entry with no valid entry after it is a torn tail
/// (`valid_bytes < file_bytes`); a bad entry followed by a valid one is damage.
pub(crate) fn read_checkpoints(
    file: &dyn StorageFile,
) -> std::io::Result<Result<CheckpointFile, CheckpointDamage>> {
    let file_bytes = file.len()?;
    let mut bytes = vec![0u8; file_bytes as usize];
    file.read_at(&mut bytes, 0)?;
    // Entries of another size would read as one torn tail and be cut off: refuse first.
    if bytes.len() > 4 && bytes[0..4] == CHECKPOINT_MAGIC && bytes[4] == 1 {
        return Ok(Err(CheckpointDamage {
            offset: 0,
            reason: VERSION_1_REASON.into(),
        }));
    }
    let mut entries = Vec::new();
    let mut chunks = bytes.chunks_exact(CHECKPOINT_ENTRY_BYTES).enumerate();
    while let Some((index, chunk)) = chunks.next() {
        match Checkpoint::decode(chunk) {
            Ok(checkpoint) => entries.push(checkpoint),
            Err(reason) => {
                if chunks.any(|(_, later)| Checkpoint::decode(later).is_ok()) {
                    return Ok(Err(CheckpointDamage {
                        offset: (index * CHECKPOINT_ENTRY_BYTES) as u64,
                        reason: format!("{reason}, and valid checkpoints follow"),
                    }));
                }
                break;
            }
        }
    }
    Ok(Ok(CheckpointFile {
        valid_bytes: (entries.len() * CHECKPOINT_ENTRY_BYTES) as u64,
        entries,
        file_bytes,
    }))
}
