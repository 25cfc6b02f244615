//! The replica's durable state: the storage trait and the on-disk formats.
//!
//! # Why a synchronous trait and not write actions with completions
//!
//! The replica calls [`Storage::write`] and treats the data as durable when it returns. This
//! makes the central durability rule local and checkable: a `PrepareOk`, a `DoViewChange` or a
//! `StartView` is only ever queued *after* the write it vouches for has returned, inside the same
//! call. The simulator injects crashes *inside* a call (the N-th write is torn and later writes
//! are lost, as with redb's fault-injecting backend), which is exactly the window a completion
//! based design would have to model. The node implements the trait with `pwrite` + `fdatasync`
//! on a file per zone and drives the replica from one dedicated thread (or `spawn_blocking`), so
//! the async network driver is never blocked by a disk. Group commit comes from batching client
//! commands into one prepare, not from overlapping journal writes.
//!
//! Reads return whatever bytes are stored: a corrupt or torn record is detected by its checksum
//! and repaired by the protocol. A write that fails (EIO, ENOSPC) must not return: an
//! implementation aborts the process, because a replica that cannot persist must not acknowledge
//! anything, and restarting recovers from the last durable state.
//!
//! # Zones
//! - `Superblock { copy }`: [`superblock_copies`] redundant copies of [`SuperBlock`], written one
//!   after the other; the valid copy with the highest sequence wins on open.
//! - `JournalPrepare { slot }` / `JournalHeader { slot }`: op X lives in slot X % slots. The
//!   prepare is written first, then its header (the "redundant header"), so after a crash the
//!   pair tells a torn write (never acknowledged: header still names the older op) from a
//!   corrupt acknowledged prepare (header names it: repair, never nack).
//! - `Snapshot { area }`: two areas alternate, so the snapshot the durable superblock points at
//!   is never the one being overwritten. The superblock also names the previous checkpoint, in
//!   the other area: when the current snapshot rots, the replica rebuilds it from the previous
//!   one and the journal's ops between the two (checked against the current checksum).

use crate::checksum::checksum;
use crate::codec::{DecodeError, Reader, Writer};
use crate::constants::{pipeline_prepares_max, superblock_copies};
use crate::message::Header;

/// Where a record lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Location {
    Superblock { copy: u8 },
    JournalHeader { slot: u32 },
    JournalPrepare { slot: u32 },
    Snapshot { area: u8 },
}

/// Durable storage of one replica. See the module docs for the contract.
pub trait Storage {
    /// The bytes last written at `location` (empty if never written). May be corrupt.
    fn read(&mut self, location: Location) -> Vec<u8>;
    /// Write `bytes` at `location`; durable when this returns.
    fn write(&mut self, location: Location, bytes: &[u8]);
}

/// The checkpoint a replica can restart from without any peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointState {
    /// Last op applied to the snapshot.
    pub op: u64,
    /// Header of `op`: anchors the hash chain of the ops above it.
    pub header: Header,
    pub snapshot_checksum: u128,
    pub snapshot_bytes: u64,
    pub snapshot_area: u8,
}

/// The replica's durable view state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuperBlock {
    pub cluster: u128,
    pub replica: u8,
    pub replica_count: u8,
    /// Checksum of the configuration values every replica must share.
    pub config_checksum: u128,
    /// Incremented on every write; the highest valid copy wins.
    pub sequence: u64,
    pub view: u64,
    /// The latest view in which this replica's log was the view's log (normal status), or in
    /// which it installed the log as new primary.
    pub log_view: u64,
    pub commit_max: u64,
    pub checkpoint: CheckpointState,
    /// The checkpoint before `checkpoint` (equal to it when there was none), whose snapshot is
    /// in the other area unless a crash tore the write of `checkpoint`'s: a fallback, read only
    /// after its checksum matches.
    pub checkpoint_previous: CheckpointState,
    /// Ops at or below this may have been acknowledged by an earlier incarnation whose disk was
    /// lost: never nack them.
    pub op_uncertain_max: u64,
    /// Head op of `view_headers`.
    pub view_head_op: u64,
    /// The suffix this replica vouches for, from `view_head_op` down: the `StartView` headers in
    /// normal status, the `DoViewChange` headers in view change.
    pub view_headers: Vec<Option<Header>>,
}

const superblock_magic: u32 = 0x4b53_4250; // "KSBP"
/// Version 2 added `checkpoint_previous`; version 1 superblocks still open (as if the
/// previous checkpoint were the current one: no fallback until the next checkpoint).
const superblock_version: u8 = 2;
const superblock_version_min: u8 = 1;

impl CheckpointState {
    fn encode(&self, writer: &mut Writer) {
        writer.u64(self.op);
        self.header.encode(writer);
        writer.u128(self.snapshot_checksum);
        writer.u64(self.snapshot_bytes);
        writer.u8(self.snapshot_area);
    }

    fn decode(reader: &mut Reader<'_>) -> Result<CheckpointState, DecodeError> {
        let checkpoint = CheckpointState {
            op: reader.u64()?,
            header: Header::decode(reader)?,
            snapshot_checksum: reader.u128()?,
            snapshot_bytes: reader.u64()?,
            snapshot_area: reader.u8()?,
        };
        if checkpoint.header.op != checkpoint.op || checkpoint.snapshot_area > 1 {
            return Err(DecodeError("inconsistent checkpoint"));
        }
        Ok(checkpoint)
    }
}

impl SuperBlock {
    pub(crate) fn encode(&self) -> Vec<u8> {
        self.encode_version(superblock_version)
    }

    fn encode_version(&self, version: u8) -> Vec<u8> {
        assert!((superblock_version_min..=superblock_version).contains(&version));
        assert!(!self.view_headers.is_empty());
        assert!(self.view_headers.len() as u64 <= pipeline_prepares_max + 2);
        assert!(self.log_view <= self.view);
        assert!(self.checkpoint.op <= self.commit_max.max(self.checkpoint.op));
        assert!(self.checkpoint_previous.op <= self.checkpoint.op);
        let mut writer = Writer::default();
        writer.u32(superblock_magic);
        writer.u8(version);
        writer.u128(self.cluster);
        writer.u8(self.replica);
        writer.u8(self.replica_count);
        writer.u128(self.config_checksum);
        writer.u64(self.sequence);
        writer.u64(self.view);
        writer.u64(self.log_view);
        writer.u64(self.commit_max);
        self.checkpoint.encode(&mut writer);
        if version >= 2 {
            self.checkpoint_previous.encode(&mut writer);
        }
        writer.u64(self.op_uncertain_max);
        writer.u64(self.view_head_op);
        writer.u32(self.view_headers.len() as u32);
        for header in &self.view_headers {
            match header {
                None => writer.u8(0),
                Some(header) => {
                    writer.u8(1);
                    header.encode(&mut writer);
                }
            }
        }
        let sum = checksum(&writer.bytes);
        writer.u128(sum);
        writer.bytes
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<SuperBlock, DecodeError> {
        if bytes.len() < 16 {
            return Err(DecodeError("superblock too short"));
        }
        let (body, trailer) = bytes.split_at(bytes.len() - 16);
        if checksum(body) != u128::from_le_bytes(trailer.try_into().expect("16 bytes")) {
            return Err(DecodeError("superblock checksum"));
        }
        let mut reader = Reader::new(body);
        if reader.u32()? != superblock_magic {
            return Err(DecodeError("superblock magic"));
        }
        let version = reader.u8()?;
        if !(superblock_version_min..=superblock_version).contains(&version) {
            return Err(DecodeError("superblock version"));
        }
        let cluster = reader.u128()?;
        let replica = reader.u8()?;
        let replica_count = reader.u8()?;
        let config_checksum = reader.u128()?;
        let sequence = reader.u64()?;
        let view = reader.u64()?;
        let log_view = reader.u64()?;
        let commit_max = reader.u64()?;
        let checkpoint = CheckpointState::decode(&mut reader)?;
        let checkpoint_previous = if version == 1 {
            checkpoint
        } else {
            CheckpointState::decode(&mut reader)?
        };
        let op_uncertain_max = reader.u64()?;
        let view_head_op = reader.u64()?;
        let count = reader.count(pipeline_prepares_max + 2)?;
        let mut view_headers = Vec::with_capacity(count);
        for _ in 0..count {
            view_headers.push(match reader.u8()? {
                0 => None,
                1 => Some(Header::decode(&mut reader)?),
                _ => return Err(DecodeError("bad option")),
            });
        }
        reader.finish()?;
        if view_headers.is_empty() || checkpoint_previous.op > checkpoint.op {
            return Err(DecodeError("inconsistent superblock"));
        }
        Ok(SuperBlock {
            cluster,
            replica,
            replica_count,
            config_checksum,
            sequence,
            view,
            log_view,
            commit_max,
            checkpoint,
            checkpoint_previous,
            op_uncertain_max,
            view_head_op,
            view_headers,
        })
    }

    /// Read every copy and return the valid one with the highest sequence.
    pub(crate) fn read_quorum<S: Storage>(storage: &mut S) -> Option<SuperBlock> {
        let mut best: Option<SuperBlock> = None;
        for copy in 0..superblock_copies {
            let bytes = storage.read(Location::Superblock { copy: copy as u8 });
            if let Ok(superblock) = SuperBlock::decode(&bytes)
                && best
                    .as_ref()
                    .is_none_or(|b| superblock.sequence > b.sequence)
            {
                best = Some(superblock);
            }
        }
        best
    }

    /// Write every copy in order; a crash part way leaves old and new copies, both valid states.
    pub(crate) fn write_all<S: Storage>(&self, storage: &mut S) {
        let bytes = self.encode();
        // Paired assertion: what we write decodes to what we meant.
        assert_eq!(SuperBlock::decode(&bytes).as_ref(), Ok(self));
        for copy in 0..superblock_copies {
            storage.write(Location::Superblock { copy: copy as u8 }, &bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn superblock_round_trips_and_reads_version_1() {
        let root = Header::root(7);
        let checkpoint = CheckpointState {
            op: 0,
            header: root,
            snapshot_checksum: 11,
            snapshot_bytes: 12,
            snapshot_area: 1,
        };
        let superblock = SuperBlock {
            cluster: 7,
            replica: 1,
            replica_count: 3,
            config_checksum: 5,
            sequence: 9,
            view: 4,
            log_view: 3,
            commit_max: 0,
            checkpoint,
            checkpoint_previous: CheckpointState {
                snapshot_area: 0,
                ..checkpoint
            },
            op_uncertain_max: 0,
            view_head_op: 0,
            view_headers: vec![Some(root)],
        };
        assert_eq!(
            SuperBlock::decode(&superblock.encode()),
            Ok(superblock.clone())
        );
        // Version 1 had no previous checkpoint: it reads as the current one.
        let version_1 = SuperBlock {
            checkpoint_previous: checkpoint,
            ..superblock
        };
        assert_eq!(
            SuperBlock::decode(&version_1.encode_version(1)),
            Ok(version_1)
        );
    }
}
