//! Signed checkpoints: the node's Ed25519 signature over (partition, position, chain head,
//! timestamp).
//!
//! Checkpoints are not records: they live in an append-only side file, `checkpoints`, in the
//! partition directory, so the log itself stays byte-identical across replicas that sign with
//! different node keys. Each entry is fixed-size and CRC-protected:
//!
//! | offset | bytes | field |
//! |---:|---:|---|
//! | 0 | 4 | magic `KCKP` |
//! | 4 | 1 | version (1) |
//! | 5 | 3 | reserved, 0 |
//! | 8 | 8 | partition (tenant id) |
//! | 16 | 8 | position: exclusive end of the records covered |
//! | 24 | 32 | chain head: hash of record `position - 1` (zeros when `position` is 0) |
//! | 56 | 8 | timestamp ns of record `position - 1` (0 when `position` is 0) |
//! | 64 | 64 | Ed25519 signature over [`Checkpoint::signed_message`] |
//! | 128 | 4 | CRC32 of bytes 0..128 |

use ed25519_dalek::{Signature, VerifyingKey};

use crate::keys::NodeKey;
use crate::storage::StorageFile;
use crate::types::{Hash, Position};

/// Name of the checkpoint side file in a partition directory.
pub const CHECKPOINT_FILE: &str = "checkpoints";
pub(crate) const CHECKPOINT_ENTRY_BYTES: usize = 132;
const CHECKPOINT_MAGIC: [u8; 4] = *b"KCKP";
const CHECKPOINT_VERSION: u8 = 1;
const SIGNATURE_DOMAIN: &[u8] = b"kimberlite/checkpoint/v1\0";
const SIGNED_MESSAGE_BYTES: usize = SIGNATURE_DOMAIN.len() + 8 + 8 + 32 + 8;

/// A signed statement by a node: "partition `partition` holds records `0..position`, the last
/// of which has hash `chain_head`".
///
/// `timestamp_ns` is the timestamp of the last covered record (assigned by the primary), not
/// the signing time: replicas that checkpoint the same position then sign the same message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub partition: u64,
    /// Exclusive end of the records covered.
    pub position: Position,
    pub chain_head: Hash,
    pub timestamp_ns: u64,
    pub signature: [u8; 64],
}

impl Checkpoint {
    pub(crate) fn sign(
        node_key: &NodeKey,
        partition: u64,
        position: Position,
        chain_head: Hash,
        timestamp_ns: u64,
    ) -> Checkpoint {
        let mut checkpoint = Checkpoint {
            partition,
            position,
            chain_head,
            timestamp_ns,
            signature: [0; 64],
        };
        checkpoint.signature = node_key.sign(&checkpoint.signed_message());
        checkpoint
    }

    /// What the signature covers: a domain tag ‖ partition ‖ position ‖ chain head ‖ timestamp,
    /// integers little-endian. The partition makes a checkpoint of one tenant worthless for
    /// another's log.
    pub fn signed_message(&self) -> Vec<u8> {
        let mut message = Vec::with_capacity(SIGNED_MESSAGE_BYTES);
        message.extend_from_slice(SIGNATURE_DOMAIN);
        message.extend_from_slice(&self.partition.to_le_bytes());
        message.extend_from_slice(&self.position.to_le_bytes());
        message.extend_from_slice(&self.chain_head);
        message.extend_from_slice(&self.timestamp_ns.to_le_bytes());
        assert_eq!(message.len(), SIGNED_MESSAGE_BYTES);
        message
    }

    /// Whether the signature is `node_public_key`'s over this checkpoint.
    pub fn verify(&self, node_public_key: &VerifyingKey) -> bool {
        let signature = Signature::from_bytes(&self.signature);
        node_public_key
            .verify_strict(&self.signed_message(), &signature)
            .is_ok()
    }

    pub(crate) fn encode(&self) -> [u8; CHECKPOINT_ENTRY_BYTES] {
        let mut entry = [0u8; CHECKPOINT_ENTRY_BYTES];
        entry[0..4].copy_from_slice(&CHECKPOINT_MAGIC);
        entry[4] = CHECKPOINT_VERSION;
        entry[8..16].copy_from_slice(&self.partition.to_le_bytes());
        entry[16..24].copy_from_slice(&self.position.to_le_bytes());
        entry[24..56].copy_from_slice(&self.chain_head);
        entry[56..64].copy_from_slice(&self.timestamp_ns.to_le_bytes());
        entry[64..128].copy_from_slice(&self.signature);
        let crc = crc32fast::hash(&entry[..128]);
        entry[128..132].copy_from_slice(&crc.to_le_bytes());
        entry
    }

    pub(crate) fn decode(entry: &[u8]) -> Result<Checkpoint, String> {
        assert_eq!(entry.len(), CHECKPOINT_ENTRY_BYTES);
        if entry[0..4] != CHECKPOINT_MAGIC {
            return Err("bad checkpoint magic".into());
        }
        let stored = u32::from_le_bytes(entry[128..132].try_into().expect("4 bytes"));
        let computed = crc32fast::hash(&entry[..128]);
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
            signature: entry[64..128].try_into().expect("64 bytes"),
        })
    }
}

/// The entries of a checkpoint file, and where a torn last entry begins, if any.
#[derive(Debug)]
pub(crate) struct CheckpointFile {
    pub(crate) entries: Vec<Checkpoint>,
    /// Bytes of whole, valid entries.
    pub(crate) valid_bytes: u64,
    pub(crate) file_bytes: u64,
}

/// A checkpoint entry that is bad and followed by a valid one: not a torn write.
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
    let mut entries = Vec::new();
    let mut chunks = bytes.chunks_exact(CHECKPOINT_ENTRY_BYTES).enumerate();
    while let Some((index, chunk)) = chunks.next() {
        match Checkpoint::decode(chunk) {
            Ok(checkpoint) => entries.push(checkpoint),
            Err(reason) => {
                if chunks.any(|(_, later)| Checkpoint::decode(later).is_ok()) {
                    return Ok(Err(CheckpointDamage {
                        offset: (index * CHECKPOINT_ENTRY_BYTES) as u64,
                        reason,
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
