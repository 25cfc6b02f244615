//! Offline verification of a partition directory, without any data key: the chain covers
//! ciphertext, so an auditor (or `kimberlite verify`) checks everything but the plaintext.

use std::fmt;
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;

use crate::checkpoint::read_checkpoints;
use crate::error::describe_position;
use crate::partition::check_checkpoint_entries;
use crate::scan::{self, ScanError, ScanOptions, TornTail};
use crate::storage::{FsStorage, Storage};
use crate::types::{Hash, Position};

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
/// chain head and timestamp are the log's at its position. Reads only; changes nothing.
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
                reason: format!("{}, and valid checkpoints follow", damage.reason),
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
    let scanned = scan::scan(
        storage,
        &listing,
        ScanOptions {
            read_only: true,
            recompute_hashes: true,
            // Verification needs no index beyond the first record of each segment.
            index_interval_records: u64::MAX,
            checkpoints: &entries,
            checkpoint_path,
            progress,
        },
    )
    .map_err(failure)?;
    Ok(VerifyReport {
        records: scanned.end,
        bytes: scanned.bytes,
        segments: scanned.segments.len() as u64,
        checkpoints: entries.len() as u64,
        head: scanned.head,
        torn_tail: scanned.torn,
        torn_checkpoint,
    })
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
