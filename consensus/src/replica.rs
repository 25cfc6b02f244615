//! The sans-IO Viewstamped Replication replica.
//!
//! Inputs: [`Replica::on_message`], [`Replica::on_tick`] (once per [`tick_ns`]); outputs: the
//! returned [`Action`]s (messages to replicas and clients, commit notifications), synchronous
//! [`Storage`] writes and [`StateMachine`] commits. No sockets, clocks, threads or randomness
//! inside: time arrives in [`Instant`], randomness (jitter, recovery nonces) from the `entropy`
//! passed at open.
//!
//! The protocol follows *Viewstamped Replication Revisited* (Liskov & Cowling 2012) with the
//! changes TigerBeetle made for real disks:
//! - no diskless recovery: view, log_view, commit and the log suffix live in redundant
//!   superblock copies, written before any message that depends on them is sent;
//! - start_view_change votes also run in normal status, so a replica that merely cannot hear the
//!   primary does not disrupt a healthy cluster; a primary whose quorum goes silent abdicates by
//!   stopping its heartbeats;
//! - `DoViewChange` carries, per op, whether the prepare is present and whether it is certainly
//!   not acknowledged (nack). A corrupt slot is never a nack (Protocol-Aware Recovery, FAST'18);
//!   an uncommitted op is truncated only when a nack quorum proves it cannot have committed;
//! - the log is a hash chain: headers are repaired backwards from the head, each accepted only if
//!   it is the parent of an already trusted one, and prepares are then fetched by checksum;
//! - checkpoints (state machine snapshot + client sessions) bound the journal; a replica too far
//!   behind receives a checkpoint (state transfer) instead of the overwritten ops. A replica
//!   whose newest snapshot rotted rebuilds it from the previous checkpoint and its journal
//!   before it asks a peer (which may be the only other holder of those ops).

use std::collections::VecDeque;

use crate::checksum::checksum;
use crate::clock::{Clock, Instant};
use crate::codec::{DecodeError, Reader, Writer};
use crate::constants::{
    self, checkpoint_chunk_bytes_max, commit_heartbeat_timeout_ticks,
    do_view_change_message_timeout_ticks, headers_per_message_max, normal_heartbeat_timeout_ticks,
    ping_timeout_ticks, prepare_timeout_ticks, primary_abdicate_timeout_ticks,
    read_barrier_timeout_ticks, read_barriers_max, recovery_timeout_ticks,
    repair_rounds_per_tick_max, repair_timeout_ticks, replicas_max, request_queue_max,
    request_start_view_timeout_ticks, snapshot_bytes_max, start_view_change_message_timeout_ticks,
    state_transfer_stall_ticks, state_transfer_suffix_bytes_max, state_transfer_timeout_ticks,
    view_change_jitter_ticks, view_change_status_timeout_ticks,
};
use crate::message::{Header, Message, Operation, Prepare, ViewChangeEntry};
use crate::sessions::ClientSessions;
use crate::state_machine::StateMachine;
use crate::storage::{CheckpointState, Location, Storage, SuperBlock};

/// Deliberate protocol bugs, for showing that the simulator catches them. Each one breaks
/// safety, so they exist only in builds with the test-only `vopr-bugs` feature: a node build
/// has neither this type nor [`Config`]'s `known_bug`.
#[cfg(feature = "vopr-bugs")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KnownBug {
    /// The primary commits a prepare as soon as its own journal write is durable, without
    /// waiting for a replication quorum of `PrepareOk`.
    CommitWithoutQuorum,
    /// A backup acknowledges a prepare before it is durable: the write sits in a write-back
    /// cache for [`bug_write_back_ticks`] and is lost if the replica crashes meanwhile.
    PrepareOkBeforeWrite,
    /// A primary confirms a read barrier at once, on its own belief that it leads, without
    /// a quorum vouching for its view (a cut-off old primary then serves stale reads).
    ReadWithoutQuorum,
}

/// [`KnownBug::PrepareOkBeforeWrite`]: how long an acknowledged prepare stays unwritten.
#[cfg(feature = "vopr-bugs")]
pub const bug_write_back_ticks: u64 = 100;

#[cfg(feature = "vopr-bugs")]
impl KnownBug {
    pub const all: [KnownBug; 3] = [
        KnownBug::CommitWithoutQuorum,
        KnownBug::PrepareOkBeforeWrite,
        KnownBug::ReadWithoutQuorum,
    ];

    /// The name on the `vopr` command line (`--bug NAME`).
    pub fn name(self) -> &'static str {
        match self {
            KnownBug::CommitWithoutQuorum => "commit-without-quorum",
            KnownBug::PrepareOkBeforeWrite => "prepare-ok-before-write",
            KnownBug::ReadWithoutQuorum => "read-without-quorum",
        }
    }

    pub fn from_name(name: &str) -> Option<KnownBug> {
        KnownBug::all.into_iter().find(|bug| bug.name() == name)
    }
}

/// What every replica of a cluster must agree on, plus this replica's index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub cluster: u128,
    pub replica_count: u8,
    pub replica: u8,
    pub journal_slots: u64,
    pub checkpoint_interval_ops: u64,
    pub pipeline_prepares_max: u64,
    pub clients_max: usize,
    /// Test-only (`vopr-bugs` feature): see [`KnownBug`].
    #[cfg(feature = "vopr-bugs")]
    pub known_bug: Option<KnownBug>,
}

impl Config {
    pub fn new(cluster: u128, replica_count: u8, replica: u8) -> Config {
        Config {
            cluster,
            replica_count,
            replica,
            journal_slots: constants::journal_slots_max,
            checkpoint_interval_ops: constants::checkpoint_interval_ops,
            pipeline_prepares_max: constants::pipeline_prepares_max,
            clients_max: constants::clients_max,
            #[cfg(feature = "vopr-bugs")]
            known_bug: None,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.replica_count == 0 || self.replica_count as usize > replicas_max {
            return Err(format!(
                "replica_count {} is not in 1..={replicas_max}",
                self.replica_count
            ));
        }
        if self.replica >= self.replica_count {
            return Err(format!(
                "replica {} is not below replica_count {}",
                self.replica, self.replica_count
            ));
        }
        if self.pipeline_prepares_max == 0
            || self.pipeline_prepares_max > constants::pipeline_prepares_max
        {
            return Err(format!(
                "pipeline_prepares_max must be in 1..={}",
                constants::pipeline_prepares_max
            ));
        }
        if self.checkpoint_interval_ops == 0 {
            return Err("checkpoint_interval_ops must be positive".to_string());
        }
        // A replica may hold ops up to checkpoint + slots; backups one checkpoint behind must
        // still be able to store what the primary prepares, with room for the pipeline.
        if self.journal_slots < 2 * self.checkpoint_interval_ops + 2 * self.pipeline_prepares_max {
            return Err(
                "journal_slots must be >= 2 * checkpoint_interval_ops + 2 * pipeline_prepares_max"
                    .to_string(),
            );
        }
        if self.journal_slots > u32::MAX as u64 || self.clients_max == 0 {
            return Err("journal_slots must fit u32 and clients_max be positive".to_string());
        }
        Ok(())
    }

    fn checksum(&self) -> u128 {
        let mut writer = Writer::default();
        writer.u64(self.journal_slots);
        writer.u64(self.checkpoint_interval_ops);
        writer.u64(self.pipeline_prepares_max);
        writer.u64(self.clients_max as u64);
        checksum(&writer.bytes)
    }
}

/// Why a replica cannot open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenError {
    /// No valid superblock copy: a new replica must be formatted ([`Replica::format`]); a
    /// replica whose disk was lost must rejoin with [`Replica::recover`].
    Unformatted,
    Config(String),
    /// The data belongs to another cluster, replica index, or configuration.
    Mismatch(String),
    /// The checkpoint snapshot the superblock points at is corrupt.
    SnapshotCorrupt,
    /// A single replica found a corrupt journal entry it has nobody to repair from.
    JournalCorrupt {
        slot: u64,
    },
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Unformatted => write!(
                f,
                "no valid superblock: format a new replica, or recover one whose disk was lost"
            ),
            OpenError::Config(reason) => write!(f, "invalid configuration: {reason}"),
            OpenError::Mismatch(reason) => write!(f, "data directory does not match: {reason}"),
            OpenError::SnapshotCorrupt => write!(f, "checkpoint snapshot is corrupt"),
            OpenError::JournalCorrupt { slot } => write!(
                f,
                "journal slot {slot} is corrupt and a single replica cannot repair it"
            ),
        }
    }
}

impl std::error::Error for OpenError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Normal,
    ViewChange,
    /// Restarted with a corrupt journal slot that may hide its head op: waits for a
    /// `StartView` before taking part in consensus again.
    RecoveringHead,
    /// Rejoining after losing its disk: learns the view from a quorum, then a `StartView`.
    Recovering,
}

/// An output of the replica, for the driver to carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    SendToReplica {
        replica: u8,
        message: Message,
    },
    SendToClient {
        client: u128,
        message: Message,
    },
    /// The op was applied to the state machine (informational: metrics, read-your-writes).
    Committed {
        header: Header,
    },
    /// Read barrier `id` (see `Replica::on_read_barrier`): a quorum confirmed, after the
    /// barrier began, that we still lead our view. A read that sees every op up to `op`
    /// applied is linearizable at the barrier's start.
    ReadConfirmed {
        id: u64,
        op: u64,
    },
    /// Read barrier `id` could not be confirmed: we are not (or no longer) the primary of a
    /// view a quorum is in, or too many barriers wait. The read must not be answered here.
    ReadRefused {
        id: u64,
    },
}

/// A read waiting for a quorum to confirm that we still lead our view.
#[derive(Debug, Clone, Copy)]
struct ReadBarrier {
    id: u64,
    view: u64,
    /// Our monotonic clock when it began: only pongs to pings sent at or after it count.
    started_ns: u64,
    /// Our head op when it began: every op committed before then is at or below it.
    op: u64,
    deadline_tick: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PrepareState {
    /// The prepare matching the slot's header is intact on disk.
    Durable,
    /// Never written here: certainly never acknowledged by this replica.
    Missing,
    /// Written (perhaps acknowledged) but now corrupt: repair, never nack.
    Faulty,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    header: Option<Header>,
    state: PrepareState,
    /// Both the prepare and its redundant header are corrupt: the op held is unknown.
    unknown: bool,
}

const slot_blank: Slot = Slot {
    header: None,
    state: PrepareState::Missing,
    unknown: false,
};

#[derive(Debug, Clone)]
struct PipelineEntry {
    prepare: Prepare,
    ok_from: u8,
    prepared_tick: u64,
    sent_tick: u64,
}

#[derive(Debug, Clone)]
struct DoViewChangeRecord {
    log_view: u64,
    op: u64,
    commit_max: u64,
    /// The newest checkpoint the sender could lead from (0 while its snapshot is missing).
    checkpoint_op: u64,
    entries: Vec<ViewChangeEntry>,
}

impl DoViewChangeRecord {
    /// The sender's entry for `op`; `None` if `op` is above its head or below its suffix.
    fn entry(&self, op: u64) -> Option<&ViewChangeEntry> {
        if op > self.op {
            return None;
        }
        self.entries.get((self.op - op) as usize)
    }
}

#[derive(Debug, Clone)]
struct Transfer {
    source: u8,
    checkpoint_op: u64,
    header: Option<Header>,
    snapshot_checksum: u128,
    snapshot_bytes: u64,
    bytes: Vec<u8>,
    sent_tick: u64,
}

#[derive(Debug, Clone)]
struct Recovery {
    responses: [Option<u64>; replicas_max],
    view_max: Option<u64>,
}

#[derive(Debug)]
pub struct Replica<S: Storage, M: StateMachine> {
    config: Config,
    storage: S,
    state_machine: M,
    quorum_replication: usize,
    quorum_view_change: usize,
    quorum_nack: usize,
    status: Status,
    view: u64,
    log_view: u64,
    /// Head of the log.
    op: u64,
    /// Last op applied to the state machine.
    commit_min: u64,
    /// Highest op known committed.
    commit_max: u64,
    checkpoint: CheckpointState,
    /// The checkpoint before `checkpoint`: see [`SuperBlock::checkpoint_previous`].
    checkpoint_previous: CheckpointState,
    op_uncertain_max: u64,
    superblock: SuperBlock,
    slots: Vec<Slot>,
    sessions: ClientSessions,
    timestamp_last: u64,
    pipeline: VecDeque<PipelineEntry>,
    request_queue: VecDeque<(u128, u64, Operation, Vec<u8>)>,
    svc_view: u64,
    svc_from: u8,
    dvc_from: Vec<Option<DoViewChangeRecord>>,
    dvc_installed: bool,
    ticks: u64,
    heartbeat_deadline: u64,
    view_change_deadline: u64,
    svc_sent_tick: Option<u64>,
    dvc_sent_tick: u64,
    commit_sent_tick: u64,
    ping_sent_tick: u64,
    repair_tick: u64,
    /// Repair rounds started in tick `repair_tick`.
    repair_rounds: u64,
    /// The last op the latest repair round asked a prepare for: its answer starts the next.
    repair_last_requested: Option<u64>,
    request_start_view_tick: Option<u64>,
    /// The newest view we know has started: a message from its primary, or a replica in
    /// normal status in it. `request_start_view` asks that view's primary, so a view that was
    /// only voted for (its primary may never lead it) must not land here.
    view_heard_max: u64,
    /// The newest view a replica told us it is in (normal or view change), and when it last
    /// did: a primary abdicates rather than lead while a replica is stranded ahead of it.
    view_ahead_max: u64,
    view_ahead_tick: Option<u64>,
    repair_target: u8,
    /// Primary: when each replica last told us it is in our view, in normal status.
    follower_seen_tick: [u64; replicas_max],
    /// Primary: per replica, the latest of our pings it answered while in our view, in
    /// normal status, as (view, our monotonic ns when we sent the ping).
    pong_in_view: [(u64, u64); replicas_max],
    read_barriers: Vec<ReadBarrier>,
    /// The monotonic instant of our last read-barrier ping (one ping serves every barrier
    /// that began at that instant).
    read_ping_ns: Option<u64>,
    primary_checkpoint_op: u64,
    primary_op: u64,
    commit_progress_tick: u64,
    transfer: Option<Transfer>,
    /// Our checkpoint's snapshot is corrupt: no commits until a state transfer replaces it.
    snapshot_missing: bool,
    recovery: Option<Recovery>,
    nonce: u128,
    prng: u64,
    clock: Clock,
    now: Instant,
    outbox: Vec<Action>,
    /// [`KnownBug::PrepareOkBeforeWrite`]: acknowledged prepares not written yet, with the
    /// tick each was acknowledged at.
    #[cfg(feature = "vopr-bugs")]
    bug_write_back: Vec<(u64, Prepare)>,
}

fn bit(replica: u8) -> u8 {
    1u8 << replica
}

fn header_record(slot: u64, header: Option<&Header>) -> Vec<u8> {
    let mut writer = Writer::default();
    writer.u32(slot as u32);
    match header {
        None => writer.u8(0),
        Some(header) => {
            writer.u8(1);
            header.encode(&mut writer);
        }
    }
    let sum = checksum(&writer.bytes);
    writer.u128(sum);
    writer.bytes
}

/// The record of a formatted, never used prepare slot: a valid record that is no prepare, so a
/// single corrupt half of an unused slot is still recognized as unused.
fn prepare_record_reserved(slot: u64) -> Vec<u8> {
    let mut writer = Writer::default();
    writer.u32(0x5245_5356); // "RESV"
    writer.u32(slot as u32);
    let sum = checksum(&writer.bytes);
    writer.u128(sum);
    writer.bytes
}

/// A redundant header record: Ok(None) is a formatted, never used slot.
fn header_record_decode(slot: u64, bytes: &[u8]) -> Result<Option<Header>, DecodeError> {
    if bytes.len() < 16 {
        return Err(DecodeError("header record too short"));
    }
    let (body, trailer) = bytes.split_at(bytes.len() - 16);
    if checksum(body) != u128::from_le_bytes(trailer.try_into().expect("16 bytes")) {
        return Err(DecodeError("header record checksum"));
    }
    let mut reader = Reader::new(body);
    if reader.u32()? as u64 != slot {
        return Err(DecodeError("header record misdirected"));
    }
    let header = match reader.u8()? {
        0 => None,
        1 => Some(Header::decode(&mut reader)?),
        _ => return Err(DecodeError("bad option")),
    };
    reader.finish()?;
    Ok(header)
}

/// The checkpoint of a new replica: the root op, the state machine's initial state.
fn checkpoint_root(root: Header) -> CheckpointState {
    assert_eq!(root.op, 0);
    CheckpointState {
        op: 0,
        header: root,
        snapshot_checksum: 0,
        snapshot_bytes: 0,
        snapshot_area: 0,
    }
}

fn snapshot_encode(op: u64, sessions: &ClientSessions, state: &[u8]) -> Vec<u8> {
    let mut writer = Writer::default();
    writer.u64(op);
    sessions.encode(&mut writer);
    writer.u64(state.len() as u64);
    writer.bytes.extend_from_slice(state);
    writer.bytes
}

fn snapshot_decode(
    bytes: &[u8],
    clients_max: usize,
) -> Result<(u64, ClientSessions, Vec<u8>), DecodeError> {
    let mut reader = Reader::new(bytes);
    let op = reader.u64()?;
    let sessions = ClientSessions::decode(&mut reader, clients_max)?;
    let len = reader.u64()?;
    if len > snapshot_bytes_max {
        return Err(DecodeError("snapshot too large"));
    }
    let state = reader.bytes(len as usize)?;
    reader.finish()?;
    Ok((op, sessions, state))
}

impl<S: Storage, M: StateMachine> Replica<S, M> {
    /// Write the initial durable state of a new replica: root op, empty journal, view 0.
    pub fn format(config: &Config, storage: &mut S) -> Result<(), OpenError> {
        config.validate().map_err(OpenError::Config)?;
        let root = Header::root(config.cluster);
        for slot in 0..config.journal_slots {
            storage.write(
                Location::JournalPrepare { slot: slot as u32 },
                &prepare_record_reserved(slot),
            );
            storage.write(
                Location::JournalHeader { slot: slot as u32 },
                &header_record(slot, None),
            );
        }
        let root_prepare = Prepare {
            header: root,
            body: Vec::new(),
        };
        storage.write(
            Location::JournalPrepare { slot: 0 },
            &root_prepare.to_bytes(),
        );
        storage.write(
            Location::JournalHeader { slot: 0 },
            &header_record(0, Some(&root)),
        );
        let superblock = SuperBlock {
            cluster: config.cluster,
            replica: config.replica,
            replica_count: config.replica_count,
            config_checksum: config.checksum(),
            sequence: 1,
            view: 0,
            log_view: 0,
            commit_max: 0,
            checkpoint: checkpoint_root(root),
            checkpoint_previous: checkpoint_root(root),
            op_uncertain_max: 0,
            view_head_op: 0,
            view_headers: vec![Some(root)],
        };
        superblock.write_all(storage);
        Ok(())
    }

    fn new_unopened(
        config: Config,
        storage: S,
        state_machine: M,
        now: Instant,
        entropy: u128,
        superblock: SuperBlock,
    ) -> Self {
        let replica_count = config.replica_count as usize;
        let quorum = replica_count / 2 + 1;
        let slots = vec![slot_blank; config.journal_slots as usize];
        let sessions = ClientSessions::new(config.clients_max);
        let clock = Clock::new(config.replica, config.replica_count, now);
        Replica {
            quorum_replication: quorum,
            quorum_view_change: quorum,
            // An op can only have committed if fewer than this many replicas never held it.
            quorum_nack: replica_count - quorum + 1,
            status: Status::Normal,
            view: superblock.view,
            log_view: superblock.log_view,
            op: superblock.checkpoint.op,
            commit_min: superblock.checkpoint.op,
            commit_max: superblock.commit_max.max(superblock.checkpoint.op),
            checkpoint: superblock.checkpoint,
            checkpoint_previous: superblock.checkpoint_previous,
            op_uncertain_max: superblock.op_uncertain_max,
            superblock,
            slots,
            sessions,
            timestamp_last: 0,
            pipeline: VecDeque::new(),
            request_queue: VecDeque::new(),
            svc_view: 0,
            svc_from: 0,
            dvc_from: vec![None; replica_count],
            dvc_installed: false,
            ticks: 0,
            heartbeat_deadline: normal_heartbeat_timeout_ticks,
            view_change_deadline: 0,
            svc_sent_tick: None,
            dvc_sent_tick: 0,
            commit_sent_tick: 0,
            ping_sent_tick: 0,
            repair_tick: 0,
            repair_rounds: 0,
            repair_last_requested: None,
            request_start_view_tick: None,
            view_heard_max: 0,
            view_ahead_max: 0,
            view_ahead_tick: None,
            repair_target: config.replica,
            follower_seen_tick: [0; replicas_max],
            pong_in_view: [(0, 0); replicas_max],
            read_barriers: Vec::new(),
            read_ping_ns: None,
            primary_checkpoint_op: 0,
            primary_op: 0,
            commit_progress_tick: 0,
            transfer: None,
            snapshot_missing: false,
            recovery: None,
            nonce: entropy,
            prng: (entropy as u64) ^ ((entropy >> 64) as u64) ^ 0x9e37_79b9_7f4a_7c15,
            clock,
            now,
            outbox: Vec::new(),
            #[cfg(feature = "vopr-bugs")]
            bug_write_back: Vec::new(),
            config,
            storage,
            state_machine,
        }
    }

    /// Open a formatted replica. `state_machine` must be in its initial state; it is restored
    /// from the checkpoint and the journal is replayed up to the durable commit number.
    /// Messages opening produces (a restarted primary starts a view change) are returned by the
    /// first `on_tick` or `on_message`.
    /// `entropy`: fresh random bits from the driver (OS randomness in the node, the seeded PRNG
    /// in the simulator), used for timeout jitter and request nonces.
    pub fn open(
        config: Config,
        mut storage: S,
        state_machine: M,
        now: Instant,
        entropy: u128,
    ) -> Result<Self, OpenError> {
        config.validate().map_err(OpenError::Config)?;
        let mut superblock = SuperBlock::read_quorum(&mut storage).ok_or(OpenError::Unformatted)?;
        if superblock.cluster != config.cluster
            || superblock.replica != config.replica
            || superblock.replica_count != config.replica_count
            || superblock.config_checksum != config.checksum()
        {
            return Err(OpenError::Mismatch(format!(
                "superblock has cluster {:x} replica {} of {}, configuration differs or was changed",
                superblock.cluster, superblock.replica, superblock.replica_count
            )));
        }
        // The state we adopt may sit on a single copy (a crash tore the write of the others):
        // make it redundant before acting on it, or one more fault could make us forget it.
        superblock.sequence += 1;
        superblock.write_all(&mut storage);
        let mut replica = Self::new_unopened(
            config,
            storage,
            state_machine,
            now,
            entropy,
            superblock.clone(),
        );
        let checkpoint = replica.checkpoint;
        let restored = checkpoint.op == 0
            || match replica.snapshot_read(&checkpoint) {
                Some((sessions, state)) => {
                    replica.sessions = sessions;
                    replica.state_machine.restore(&state);
                    true
                }
                None => false,
            };
        replica.timestamp_last = replica.checkpoint.header.timestamp_ns;
        replica.journal_recover();
        if !restored && !replica.checkpoint_rebuild() {
            if replica.config.replica_count == 1 {
                return Err(OpenError::SnapshotCorrupt);
            }
            // Our view state and journal are intact, so we keep taking part in consensus; we
            // only cannot apply ops until a peer sends us this checkpoint (or a newer one).
            replica.sessions = ClientSessions::new(replica.config.clients_max);
            replica.snapshot_missing = true;
        }
        let certain = replica.head_recover(&superblock);
        replica.commit_max = replica.commit_max.max(replica.head().commit);
        replica.timestamp_last = replica.timestamp_last.max(replica.head().timestamp_ns);
        if replica.config.replica_count == 1 && !certain {
            let slot = replica
                .slots
                .iter()
                .position(|slot| slot.unknown)
                .unwrap_or(0) as u64;
            return Err(OpenError::JournalCorrupt { slot });
        }
        if replica.config.replica_count == 1 {
            // Every op of a single replica's log above its checkpoint was written here before
            // it was acknowledged (a torn write is never part of the log: its redundant header
            // still names the older op). One that cannot be read now was corrupted at rest, and
            // with no peer to repair from the replica would wait in view change forever.
            let checkpoint_op = replica.checkpoint.op;
            if let Some(op) =
                (checkpoint_op + 1..=replica.op).find(|&op| replica.prepare_durable(op).is_none())
            {
                let slot = op % replica.config.journal_slots;
                return Err(OpenError::JournalCorrupt { slot });
            }
        }
        if replica.log_view < replica.view {
            replica.status = Status::ViewChange;
            replica.view_change_deadline = replica.ticks + replica.view_change_timeout();
            replica.dvc_sent_tick = 0;
            replica.send_do_view_change();
        } else if !certain {
            replica.status = Status::RecoveringHead;
            replica.request_start_view_tick = Some(0);
        } else if replica.primary_index(replica.view) == replica.config.replica {
            // The previous incarnation may have sent prepares it never wrote (torn): a new view
            // guarantees one op number never names two prepares within a view.
            replica.transition_to_view_change(replica.view + 1);
        } else {
            replica.status = Status::Normal;
        }
        replica.commit_journal();
        replica.invariants();
        Ok(replica)
    }

    /// Rejoin a cluster after this replica's disk was lost (its storage is empty or
    /// unreadable). The journal is wiped; the replica takes no part in consensus until a quorum
    /// told it the current view and the primary sent it the log.
    pub fn recover(
        config: Config,
        mut storage: S,
        state_machine: M,
        now: Instant,
        entropy: u128,
    ) -> Result<Self, OpenError> {
        config.validate().map_err(OpenError::Config)?;
        if config.replica_count < 3 {
            return Err(OpenError::Config(
                "a replica can only recover a lost disk in a cluster of 3 or more".to_string(),
            ));
        }
        for slot in 0..config.journal_slots {
            storage.write(
                Location::JournalPrepare { slot: slot as u32 },
                &prepare_record_reserved(slot),
            );
            storage.write(
                Location::JournalHeader { slot: slot as u32 },
                &header_record(slot, None),
            );
        }
        let root = Header::root(config.cluster);
        let superblock = SuperBlock {
            cluster: config.cluster,
            replica: config.replica,
            replica_count: config.replica_count,
            config_checksum: config.checksum(),
            sequence: 0,
            view: 0,
            log_view: 0,
            commit_max: 0,
            checkpoint: checkpoint_root(root),
            checkpoint_previous: checkpoint_root(root),
            op_uncertain_max: 0,
            view_head_op: 0,
            view_headers: vec![Some(root)],
        };
        let mut replica =
            Self::new_unopened(config, storage, state_machine, now, entropy, superblock);
        replica.slots[0] = Slot {
            header: Some(root),
            state: PrepareState::Missing,
            unknown: false,
        };
        replica.status = Status::Recovering;
        replica.recovery = Some(Recovery {
            responses: [None; replicas_max],
            view_max: None,
        });
        Ok(replica)
    }

    // ----------------------------------------------------------------------------------------
    // Accessors (for the node's metrics and the simulator's checkers).

    pub fn status(&self) -> Status {
        self.status
    }
    pub fn view(&self) -> u64 {
        self.view
    }
    pub fn log_view(&self) -> u64 {
        self.log_view
    }
    pub fn op(&self) -> u64 {
        self.op
    }
    pub fn commit_min(&self) -> u64 {
        self.commit_min
    }
    pub fn commit_max(&self) -> u64 {
        self.commit_max
    }
    pub fn checkpoint_op(&self) -> u64 {
        self.checkpoint.op
    }
    pub fn checkpoint_snapshot_checksum(&self) -> u128 {
        self.checkpoint.snapshot_checksum
    }
    pub fn replica(&self) -> u8 {
        self.config.replica
    }
    pub fn is_primary(&self) -> bool {
        self.primary_index(self.view) == self.config.replica
    }
    pub fn state_machine(&self) -> &M {
        &self.state_machine
    }
    pub fn state_machine_mut(&mut self) -> &mut M {
        &mut self.state_machine
    }
    /// The client's session as committed here: (last request, op).
    pub fn client_session(&self, client: u128) -> Option<(u64, u64)> {
        self.sessions
            .get(client)
            .map(|session| (session.request, session.op))
    }
    /// Whether this replica can serve its checkpoint to a state transfer: the snapshot its
    /// superblock points at is intact on disk (the simulator's liveness accounting).
    pub(crate) fn checkpoint_servable(&mut self) -> bool {
        let checkpoint = self.checkpoint;
        !self.snapshot_missing && self.snapshot_read(&checkpoint).is_some()
    }
    pub fn replica_count_is_one(&self) -> bool {
        self.config.replica_count == 1
    }
    pub fn storage(&self) -> &S {
        &self.storage
    }
    pub fn storage_mut(&mut self) -> &mut S {
        &mut self.storage
    }
    /// The durable prepare header of `op`, if this replica holds it intact.
    pub fn prepare_durable(&self, op: u64) -> Option<Header> {
        let slot = &self.slots[self.slot_index(op)];
        slot.header
            .filter(|header| header.op == op && slot.state == PrepareState::Durable)
    }
    /// Tear the replica down, returning its storage (as a crash would leave it) and state machine.
    pub fn into_parts(self) -> (S, M) {
        (self.storage, self.state_machine)
    }

    // ----------------------------------------------------------------------------------------
    // Inputs.

    pub fn on_tick(&mut self, now: Instant) -> Vec<Action> {
        self.now = now;
        self.ticks += 1;
        #[cfg(feature = "vopr-bugs")]
        self.bug_write_back_flush();
        self.clock.tick(now);
        self.tick_timeouts();
        self.confirm_reads();
        self.invariants();
        std::mem::take(&mut self.outbox)
    }

    /// Begins read barrier `id`: answered with `Action::ReadConfirmed` once a quorum that
    /// intersects every view-change quorum has told us, in answer to a ping sent now or
    /// later, that it is in our view in normal status — so no later view had started when the
    /// barrier began, and every op committed by then is in our log — or with
    /// `Action::ReadRefused` if that does not happen within `read_barrier_timeout_ticks`, our
    /// view changes, or we are not the primary. A primary cut off from its quorum keeps
    /// believing it leads until it abdicates; without a barrier it would answer reads with
    /// state that misses writes a new primary acknowledged.
    pub fn on_read_barrier(&mut self, now: Instant, id: u64) -> Vec<Action> {
        self.now = now;
        let leading = self.status == Status::Normal && self.is_primary();
        if !leading || self.read_barriers.len() >= read_barriers_max {
            self.outbox.push(Action::ReadRefused { id });
        } else {
            self.read_barriers.push(ReadBarrier {
                id,
                view: self.view,
                started_ns: now.monotonic_ns,
                op: self.op,
                deadline_tick: self.ticks + read_barrier_timeout_ticks,
            });
            if self.read_ping_ns != Some(now.monotonic_ns) && self.config.replica_count > 1 {
                self.read_ping_ns = Some(now.monotonic_ns);
                let ping = Message::Ping {
                    replica: self.config.replica,
                    view: self.view,
                    normal: true,
                    ping_monotonic_ns: now.monotonic_ns,
                };
                self.broadcast(&ping);
            }
            self.confirm_reads();
        }
        self.invariants();
        std::mem::take(&mut self.outbox)
    }

    /// Answers every read barrier that is confirmed, expired, or of a view we left.
    fn confirm_reads(&mut self) {
        if self.read_barriers.is_empty() {
            return;
        }
        // Replicas (us included) that must vouch for our view: enough to meet every quorum
        // that could have started a later one.
        #[allow(unused_mut)]
        let mut vouchers_needed = self.config.replica_count as usize - self.quorum_view_change + 1;
        #[cfg(feature = "vopr-bugs")]
        if self.config.known_bug == Some(KnownBug::ReadWithoutQuorum) {
            vouchers_needed = 1; // The bug: our own belief is deemed enough.
        }
        let leading = self.status == Status::Normal && self.is_primary();
        let mut answers = Vec::new();
        self.read_barriers.retain(|barrier| {
            if !leading || barrier.view != self.view || self.ticks >= barrier.deadline_tick {
                answers.push(Action::ReadRefused { id: barrier.id });
                return false;
            }
            let vouchers = 1
                + (0..self.config.replica_count)
                    .filter(|&replica| replica != self.config.replica)
                    .filter(|&replica| {
                        let (view, ping_ns) = self.pong_in_view[replica as usize];
                        view == barrier.view && ping_ns >= barrier.started_ns
                    })
                    .count();
            if vouchers >= vouchers_needed {
                answers.push(Action::ReadConfirmed {
                    id: barrier.id,
                    op: barrier.op,
                });
                return false;
            }
            true
        });
        self.outbox.extend(answers);
    }

    pub fn on_message(&mut self, now: Instant, message: Message) -> Vec<Action> {
        self.now = now;
        if self.status == Status::Recovering {
            self.on_message_recovering(message);
        } else {
            self.dispatch(message);
        }
        self.invariants();
        std::mem::take(&mut self.outbox)
    }

    fn dispatch(&mut self, message: Message) {
        match message {
            Message::Request {
                client,
                request,
                operation,
                body,
            } => self.on_request(client, request, operation, body),
            Message::Prepare(prepare) => self.on_prepare(&prepare),
            Message::PrepareOk {
                view,
                op,
                checksum,
                replica,
            } => self.on_prepare_ok(view, op, checksum, replica),
            Message::Commit {
                view,
                commit_max,
                checkpoint_op,
                op,
                replica,
            } => self.on_commit(view, commit_max, checkpoint_op, op, replica),
            Message::StartViewChange { view, replica } => self.on_start_view_change(view, replica),
            Message::DoViewChange {
                view,
                log_view,
                op,
                commit_max,
                checkpoint_op,
                replica,
                entries,
            } => {
                let record = DoViewChangeRecord {
                    log_view,
                    op,
                    commit_max,
                    checkpoint_op,
                    entries,
                };
                self.on_do_view_change(view, replica, record);
            }
            Message::StartView {
                view,
                op,
                commit_max,
                checkpoint_op,
                replica,
                nonce,
                headers,
            } => self.on_start_view(
                view,
                op,
                commit_max,
                checkpoint_op,
                replica,
                nonce,
                &headers,
            ),
            Message::RequestStartView {
                view,
                replica,
                nonce,
            } => self.on_request_start_view(view, replica, nonce),
            Message::RequestHeaders {
                op_min,
                op_max,
                replica,
            } => self.on_request_headers(op_min, op_max, replica),
            Message::Headers { headers, .. } => self.on_headers(headers),
            Message::RequestPrepare {
                op,
                checksum,
                replica,
            } => self.on_request_prepare(op, checksum, replica),
            Message::Ping {
                replica,
                view,
                normal,
                ping_monotonic_ns,
            } => {
                if replica != self.config.replica && replica < self.config.replica_count {
                    if view == self.view && normal {
                        self.follower_seen_tick[replica as usize] = self.ticks;
                    }
                    if view > self.view {
                        // That replica can never come back to our view.
                        self.view_ahead_max = self.view_ahead_max.max(view);
                        self.view_ahead_tick = Some(self.ticks);
                        if normal {
                            // Started: a primary leads it (not merely a vote for it, whose
                            // primary may be down for good).
                            self.view_heard_max = self.view_heard_max.max(view);
                        }
                    }
                    let pong = Message::Pong {
                        replica: self.config.replica,
                        view: self.view,
                        normal: self.status == Status::Normal,
                        ping_monotonic_ns,
                        pong_realtime_ns: self.now.realtime_ns,
                    };
                    self.send(replica, pong);
                }
            }
            Message::Pong {
                replica,
                view,
                normal,
                ping_monotonic_ns,
                pong_realtime_ns,
            } => {
                self.clock
                    .learn(replica, ping_monotonic_ns, pong_realtime_ns, self.now);
                if view == self.view
                    && normal
                    && replica != self.config.replica
                    && replica < self.config.replica_count
                {
                    let seen = &mut self.pong_in_view[replica as usize];
                    if seen.0 != view || seen.1 < ping_monotonic_ns {
                        *seen = (view, ping_monotonic_ns);
                    }
                    self.confirm_reads();
                }
            }
            Message::RecoveryRequest { replica, nonce } => {
                if self.status == Status::Normal
                    && replica != self.config.replica
                    && replica < self.config.replica_count
                {
                    let response = Message::RecoveryResponse {
                        replica: self.config.replica,
                        nonce,
                        view: self.view,
                    };
                    self.send(replica, response);
                }
            }
            Message::RecoveryResponse { .. } => {}
            Message::RequestCheckpoint {
                replica,
                offset,
                nonce,
            } => self.on_request_checkpoint(replica, offset, nonce),
            Message::CheckpointChunk {
                replica,
                checkpoint_op,
                header,
                snapshot_checksum,
                snapshot_bytes,
                offset,
                bytes,
            } => self.on_checkpoint_chunk(
                replica,
                checkpoint_op,
                header,
                snapshot_checksum,
                snapshot_bytes,
                offset,
                &bytes,
            ),
            Message::Reply { .. } | Message::Eviction { .. } => {}
        }
    }

    // ----------------------------------------------------------------------------------------
    // Helpers.

    fn primary_index(&self, view: u64) -> u8 {
        (view % self.config.replica_count as u64) as u8
    }

    fn slot_index(&self, op: u64) -> usize {
        (op % self.config.journal_slots) as usize
    }

    fn send(&mut self, replica: u8, message: Message) {
        assert!(replica < self.config.replica_count);
        assert_ne!(replica, self.config.replica);
        self.outbox.push(Action::SendToReplica { replica, message });
    }

    fn broadcast(&mut self, message: &Message) {
        for replica in 0..self.config.replica_count {
            if replica != self.config.replica {
                self.send(replica, message.clone());
            }
        }
    }

    fn random(&mut self) -> u64 {
        // SplitMix64: deterministic given the entropy passed at open.
        self.prng = self.prng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.prng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn view_change_timeout(&mut self) -> u64 {
        view_change_status_timeout_ticks + self.random() % view_change_jitter_ticks
    }

    fn next_repair_target(&mut self) -> u8 {
        assert!(self.config.replica_count > 1);
        loop {
            self.repair_target = (self.repair_target + 1) % self.config.replica_count;
            if self.repair_target != self.config.replica {
                return self.repair_target;
            }
        }
    }

    /// The header of `op` in this replica's log, if known.
    fn header_for_op(&self, op: u64) -> Option<Header> {
        if op == self.checkpoint.op {
            return Some(self.checkpoint.header);
        }
        let slot = &self.slots[self.slot_index(op)];
        slot.header.filter(|header| header.op == op)
    }

    fn head(&self) -> Header {
        self.header_for_op(self.op).expect("head header is known")
    }

    /// Lowest op such that headers from it up to the head form an unbroken hash chain.
    fn verified_min(&self) -> u64 {
        let mut op = self.op;
        let mut child = self.head();
        while op > self.checkpoint.op {
            match self.header_for_op(op - 1) {
                Some(parent) if parent.checksum == child.parent => {
                    op -= 1;
                    child = parent;
                }
                _ => break,
            }
        }
        op
    }

    /// A backup whose commits ran ahead of its log (a state transfer taken from a newer view)
    /// may hold a suffix that does not chain to its committed prefix. Such ops can never commit
    /// (a committed op chains to the committed op before it): drop them and ask for the view.
    fn drop_divergent_log(&mut self) -> bool {
        if self.op <= self.commit_min || self.verified_min() != self.commit_min + 1 {
            return false;
        }
        let child = self.header_for_op(self.commit_min + 1).expect("verified");
        let parent = self
            .header_for_op(self.commit_min)
            .expect("committed header");
        if child.parent == parent.checksum {
            return false;
        }
        // Only a replica that skipped ahead by state transfer can get here: its own commits
        // always follow its log.
        assert!(
            self.commit_min == self.checkpoint.op,
            "log diverges from committed op {}",
            self.commit_min
        );
        self.truncate_after(self.commit_min);
        self.op = self.commit_min;
        let view = self.view;
        self.request_start_view(view);
        true
    }

    /// Durably store a prepare in its slot: prepare first, then the redundant header.
    fn journal_write(&mut self, prepare: &Prepare) {
        let header = prepare.header;
        assert!(prepare.valid());
        assert!(header.op > self.checkpoint.op);
        assert!(header.op <= self.checkpoint.op + self.config.journal_slots);
        let slot = self.slot_index(header.op);
        let bytes = prepare.to_bytes();
        // Paired assertion: the bytes we write decode back to this prepare.
        assert_eq!(Prepare::from_bytes(&bytes).as_ref(), Ok(prepare));
        self.storage
            .write(Location::JournalPrepare { slot: slot as u32 }, &bytes);
        self.storage.write(
            Location::JournalHeader { slot: slot as u32 },
            &header_record(slot as u64, Some(&header)),
        );
        self.slots[slot] = Slot {
            header: Some(header),
            state: PrepareState::Durable,
            unknown: false,
        };
    }

    /// Read the prepare of `header`, verifying it; a corrupt slot is marked faulty.
    fn journal_read(&mut self, header: &Header) -> Option<Prepare> {
        if let Some(entry) = self
            .pipeline
            .iter()
            .find(|e| e.prepare.header.checksum == header.checksum)
        {
            return Some(entry.prepare.clone());
        }
        #[cfg(feature = "vopr-bugs")]
        if let Some((_, prepare)) = self
            .bug_write_back
            .iter()
            .rev()
            .find(|(_, prepare)| prepare.header.checksum == header.checksum)
        {
            return Some(prepare.clone());
        }
        let slot = self.slot_index(header.op);
        if self.slots[slot].header != Some(*header)
            || self.slots[slot].state != PrepareState::Durable
        {
            return None;
        }
        let bytes = self
            .storage
            .read(Location::JournalPrepare { slot: slot as u32 });
        match Prepare::from_bytes(&bytes) {
            Ok(prepare) if prepare.header == *header => Some(prepare),
            _ => {
                self.slots[slot].state = PrepareState::Faulty;
                None
            }
        }
    }

    /// Make `header` the log's entry for its op (from a view change, a StartView, or a verified
    /// repair). The prepare must be fetched unless we already hold exactly this one.
    fn install_header(&mut self, header: Header) {
        assert!(header.valid_checksum());
        assert!(header.op > self.checkpoint.op);
        assert!(header.op <= self.checkpoint.op + self.config.journal_slots);
        if header.op <= self.commit_min {
            // Committed ops are the same in every view's log.
            assert_eq!(
                self.header_for_op(header.op).map(|h| h.checksum),
                Some(header.checksum)
            );
            return;
        }
        let slot = self.slot_index(header.op);
        if self.slots[slot].header != Some(header) {
            let state = if self.slots[slot].unknown {
                PrepareState::Faulty
            } else {
                PrepareState::Missing
            };
            self.slots[slot] = Slot {
                header: Some(header),
                state,
                unknown: false,
            };
        }
    }

    /// Remove every op above `op_head` from the log.
    fn truncate_after(&mut self, op_head: u64) {
        assert!(op_head >= self.commit_min);
        for slot in &mut self.slots {
            if slot.header.is_some_and(|header| header.op > op_head) {
                *slot = slot_blank;
            }
        }
    }

    /// Entries this replica vouches for: its log from the head down to the commit point.
    fn suffix_range(&self) -> (u64, u64) {
        let pipeline = self.config.pipeline_prepares_max;
        let low = self
            .checkpoint
            .op
            .max(self.commit_max.min(self.op))
            .max(self.op.saturating_sub(pipeline + 1));
        (low, self.op)
    }

    fn persist(&mut self) {
        let (_, high) = self.suffix_range();
        let view_headers = self.suffix_headers();
        assert!(view_headers[0].is_some());
        let superblock = SuperBlock {
            cluster: self.config.cluster,
            replica: self.config.replica,
            replica_count: self.config.replica_count,
            config_checksum: self.config.checksum(),
            sequence: self.superblock.sequence + 1,
            view: self.view,
            log_view: self.log_view,
            commit_max: self.commit_max.max(self.checkpoint.op),
            checkpoint: self.checkpoint,
            checkpoint_previous: self.checkpoint_previous,
            op_uncertain_max: self.op_uncertain_max,
            view_head_op: high,
            view_headers,
        };
        assert!(superblock.view >= self.superblock.view);
        assert!(superblock.log_view >= self.superblock.log_view);
        assert!(superblock.checkpoint.op >= self.superblock.checkpoint.op);
        superblock.write_all(&mut self.storage);
        self.superblock = superblock;
    }

    fn invariants(&self) {
        if self.status == Status::Recovering {
            return;
        }
        assert!(self.log_view <= self.view);
        assert!(self.checkpoint.op <= self.commit_min);
        assert!(self.commit_min <= self.op);
        assert!(self.commit_min <= self.commit_max);
        assert!(self.op <= self.checkpoint.op + self.config.journal_slots);
        assert!(self.header_for_op(self.op).is_some());
        // What is in memory is what the superblock made durable.
        assert_eq!(self.superblock.view, self.view);
        assert_eq!(self.superblock.log_view, self.log_view);
        assert_eq!(self.superblock.checkpoint, self.checkpoint);
        assert_eq!(
            self.superblock.checkpoint_previous,
            self.checkpoint_previous
        );
        assert!(self.checkpoint_previous.op <= self.checkpoint.op);
        if self.status == Status::Normal && self.is_primary() {
            assert_eq!(self.commit_min, self.commit_max);
            assert!(self.pipeline.len() as u64 <= self.config.pipeline_prepares_max);
            assert_eq!(self.op, self.commit_max + self.pipeline.len() as u64);
        } else {
            assert!(self.pipeline.is_empty());
        }
    }

    // ----------------------------------------------------------------------------------------
    // Recovery from our own disk.

    fn journal_recover(&mut self) {
        let slots = self.config.journal_slots;
        for slot in 0..slots {
            let header_bytes = self
                .storage
                .read(Location::JournalHeader { slot: slot as u32 });
            let prepare_bytes = self
                .storage
                .read(Location::JournalPrepare { slot: slot as u32 });
            let header = header_record_decode(slot, &header_bytes);
            let reserved = prepare_bytes == prepare_record_reserved(slot);
            let prepare = Prepare::from_bytes(&prepare_bytes)
                .ok()
                .filter(|p| p.header.op % slots == slot);
            let mut fix = None;
            let entry = match (header, prepare) {
                (Ok(None), None) => slot_blank,
                // Never used: a corrupt header over a reserved prepare record hides nothing.
                (Err(_), None) if reserved => slot_blank,
                (Ok(Some(h)), Some(p)) if h.checksum == p.header.checksum => Slot {
                    header: Some(h),
                    state: PrepareState::Durable,
                    unknown: false,
                },
                (Ok(Some(h)), Some(p))
                    if p.header.op > h.op || (p.header.op == h.op && p.header.view > h.view) =>
                {
                    // Crashed between the prepare write and its header write.
                    fix = Some(p.header);
                    Slot {
                        header: Some(p.header),
                        state: PrepareState::Durable,
                        unknown: false,
                    }
                }
                // The prepare write for `h` did not land (or the slot rotted): we may have
                // acknowledged `h`, so it is faulty, never blank.
                (Ok(Some(h)), _) => Slot {
                    header: Some(h),
                    state: PrepareState::Faulty,
                    unknown: false,
                },
                (Ok(None), Some(p)) | (Err(_), Some(p)) => {
                    fix = Some(p.header);
                    Slot {
                        header: Some(p.header),
                        state: PrepareState::Durable,
                        unknown: false,
                    }
                }
                (Err(_), None) => Slot {
                    header: None,
                    state: PrepareState::Faulty,
                    unknown: true,
                },
            };
            if let Some(fixed) = fix {
                self.storage.write(
                    Location::JournalHeader { slot: slot as u32 },
                    &header_record(slot, Some(&fixed)),
                );
            }
            let mut entry = entry;
            if entry
                .header
                .is_some_and(|h| h.op > self.checkpoint.op + slots)
            {
                // We never store beyond checkpoint + slots: this is not a record we wrote.
                entry = Slot {
                    header: None,
                    state: PrepareState::Faulty,
                    unknown: true,
                };
            }
            self.slots[slot as usize] = entry;
        }
    }

    /// The snapshot of `checkpoint` from its area, if it is intact: (sessions, state). The
    /// root checkpoint (op 0) is the initial state, which has no snapshot.
    fn snapshot_read(&mut self, checkpoint: &CheckpointState) -> Option<(ClientSessions, Vec<u8>)> {
        if checkpoint.op == 0 {
            return None;
        }
        let bytes = self.storage.read(Location::Snapshot {
            area: checkpoint.snapshot_area,
        });
        if bytes.len() as u64 != checkpoint.snapshot_bytes
            || checksum(&bytes) != checkpoint.snapshot_checksum
        {
            return None;
        }
        let (op, sessions, state) = snapshot_decode(&bytes, self.config.clients_max).ok()?;
        // The checksum matched what we wrote, so the decoded snapshot is the one we encoded.
        assert_eq!(op, checkpoint.op, "snapshot of another checkpoint");
        Some((sessions, state))
    }

    /// Our checkpoint's snapshot is unreadable: rebuild it from the previous checkpoint's
    /// snapshot and the journal's ops between the two, if all of them are intact here. The
    /// result must match the checkpoint's checksum byte for byte, and then replaces the corrupt
    /// snapshot. Returns whether the state machine and sessions now hold the checkpoint; if
    /// not, they hold garbage and the caller must not commit until a checkpoint is installed.
    fn checkpoint_rebuild(&mut self) -> bool {
        let previous = self.checkpoint_previous;
        let current = self.checkpoint;
        if current.op == 0 || previous.op >= current.op {
            return false;
        }
        // Gather the ops first: nothing is executed unless the whole chain is here.
        let mut prepares = Vec::with_capacity((current.op - previous.op) as usize);
        let mut parent = previous.header;
        for op in previous.op + 1..=current.op {
            let slot = self.slots[self.slot_index(op)];
            let Some(header) = slot
                .header
                .filter(|h| h.op == op && h.parent == parent.checksum)
            else {
                return false;
            };
            let Some(prepare) = self.journal_read(&header) else {
                return false;
            };
            parent = header;
            prepares.push(prepare);
        }
        if parent.checksum != current.header.checksum {
            return false;
        }
        if previous.op == 0 {
            // The state machine passed to `open` is in its initial state.
            self.sessions = ClientSessions::new(self.config.clients_max);
        } else {
            let Some((sessions, state)) = self.snapshot_read(&previous) else {
                return false;
            };
            self.sessions = sessions;
            self.state_machine.restore(&state);
        }
        for prepare in &prepares {
            self.execute(prepare);
        }
        let state = self.state_machine.snapshot();
        let snapshot = snapshot_encode(current.op, &self.sessions, &state);
        if snapshot.len() as u64 != current.snapshot_bytes
            || checksum(&snapshot) != current.snapshot_checksum
        {
            return false;
        }
        let location = Location::Snapshot {
            area: current.snapshot_area,
        };
        self.storage.write(location, &snapshot);
        true
    }

    /// Decide the head op after a restart; returns whether it is certain.
    fn head_recover(&mut self, superblock: &SuperBlock) -> bool {
        let checkpoint_op = self.checkpoint.op;
        let view_head = superblock.view_head_op;
        let mut head = checkpoint_op.max(view_head);
        if self.log_view == self.view {
            for index in 0..self.slots.len() {
                let Some(header) = self.slots[index].header else {
                    continue;
                };
                if header.op <= checkpoint_op || header.op <= view_head {
                    continue;
                }
                if header.view == self.log_view {
                    head = head.max(header.op);
                } else {
                    // Above the view's start, only ops prepared in log_view belong to its log:
                    // this one was truncated by a view change.
                    assert!(header.view < self.log_view);
                    self.slots[index] = slot_blank;
                }
            }
        } else {
            // In view change we vouch for exactly the suffix in our DoViewChange.
            for index in 0..self.slots.len() {
                if self.slots[index]
                    .header
                    .is_some_and(|h| h.op > view_head && h.op > checkpoint_op)
                {
                    self.slots[index] = slot_blank;
                }
            }
        }
        for (index, entry) in superblock.view_headers.iter().enumerate() {
            let op = view_head - index as u64;
            if op <= checkpoint_op {
                break;
            }
            let slot = self.slot_index(op);
            match entry {
                Some(header) => {
                    if self.slots[slot].header != Some(*header) {
                        let state = if self.slots[slot].unknown
                            || self.slots[slot].state == PrepareState::Faulty
                                && self.slots[slot].header.is_some_and(|h| h.op == op)
                        {
                            PrepareState::Faulty
                        } else {
                            PrepareState::Missing
                        };
                        self.slots[slot] = Slot {
                            header: Some(*header),
                            state,
                            unknown: false,
                        };
                    }
                }
                // A gap when the superblock was written. In view change that gap is what our
                // DoViewChange vouched for, so it stays a gap. In normal status the gap may have
                // been filled since by this view's primary (and acknowledged): keep the journal.
                None => {
                    if self.log_view < self.view
                        && self.slots[slot].header.is_some_and(|h| h.op == op)
                    {
                        self.slots[slot] = slot_blank;
                    }
                }
            }
        }
        self.op = head;
        assert!(self.header_for_op(head).is_some());
        if self.log_view < self.view {
            return true;
        }
        // A slot we cannot read may hold an op above our head: our head is then uncertain.
        let slots = self.config.journal_slots;
        (head + 1..=checkpoint_op + slots).all(|op| !self.slots[self.slot_index(op)].unknown)
    }

    // ----------------------------------------------------------------------------------------
    // Timeouts.

    fn tick_timeouts(&mut self) {
        match self.status {
            Status::Recovering => {
                self.tick_recovering();
                return;
            }
            Status::RecoveringHead => {
                if self
                    .request_start_view_tick
                    .is_none_or(|t| self.ticks >= t + request_start_view_timeout_ticks)
                {
                    self.request_start_view(self.view);
                }
                self.tick_state_transfer();
            }
            Status::ViewChange => {
                if self.ticks >= self.view_change_deadline {
                    self.view_change_deadline = self.ticks + self.view_change_timeout();
                    self.vote_view_change(self.view + 1);
                }
                if self.ticks >= self.dvc_sent_tick + do_view_change_message_timeout_ticks {
                    self.send_do_view_change();
                }
                if self.is_primary()
                    && self.dvc_installed
                    && self.ticks >= self.repair_tick + repair_timeout_ticks
                {
                    self.repair();
                }
                self.tick_state_transfer();
            }
            Status::Normal => {
                if self.is_primary() {
                    self.tick_primary();
                } else {
                    if self.ticks >= self.heartbeat_deadline {
                        self.heartbeat_deadline = self.ticks + normal_heartbeat_timeout_ticks;
                        self.vote_view_change(self.view + 1);
                    }
                    if self.status == Status::Normal
                        && self.ticks >= self.repair_tick + repair_timeout_ticks
                    {
                        self.repair();
                    }
                    self.tick_state_transfer();
                }
            }
        }
        if let Some(sent) = self.svc_sent_tick
            && self.ticks >= sent + start_view_change_message_timeout_ticks
            && self.svc_view > self.view
        {
            self.svc_sent_tick = Some(self.ticks);
            let message = Message::StartViewChange {
                view: self.svc_view,
                replica: self.config.replica,
            };
            self.broadcast(&message);
        }
        if self.config.replica_count > 1 && self.ticks >= self.ping_sent_tick + ping_timeout_ticks {
            self.ping_sent_tick = self.ticks;
            let ping = Message::Ping {
                replica: self.config.replica,
                view: self.view,
                normal: self.status == Status::Normal,
                ping_monotonic_ns: self.now.monotonic_ns,
            };
            self.broadcast(&ping);
        }
    }

    fn tick_primary(&mut self) {
        assert!(self.status == Status::Normal && self.is_primary());
        // Abdicate when our quorum went silent: a prepare waits too long for its quorum, or
        // too few replicas report being in our view (they may have moved to a later view we
        // cannot see, which would leave us leading nobody while clients are idle).
        let pipeline_stalled = self.pipeline.front().is_some_and(|entry| {
            self.ticks >= entry.prepared_tick + primary_abdicate_timeout_ticks
        });
        let followers = (0..self.config.replica_count)
            .filter(|&replica| replica != self.config.replica)
            .filter(|&replica| {
                self.ticks
                    < self.follower_seen_tick[replica as usize] + primary_abdicate_timeout_ticks
            })
            .count();
        // A replica stranded in a later view lowers our redundancy for good: move everyone to
        // a view it can join rather than run one failure away from unavailability.
        let view_ahead = self
            .view_ahead_tick
            .is_some_and(|tick| self.ticks < tick + primary_abdicate_timeout_ticks)
            && self.view_ahead_max > self.view;
        let abdicating = pipeline_stalled || followers + 1 < self.quorum_replication || view_ahead;
        if abdicating
            && (self.svc_view <= self.view || self.svc_from & bit(self.config.replica) == 0)
        {
            // Our quorum went silent: stop heartbeats so backups elect a primary they can reach,
            // and vote with them (in small clusters our vote is needed for their quorum).
            self.vote_view_change(self.view + 1);
            if self.status != Status::Normal {
                return;
            }
        }
        if !abdicating && self.ticks >= self.commit_sent_tick + commit_heartbeat_timeout_ticks {
            self.commit_sent_tick = self.ticks;
            let commit = Message::Commit {
                view: self.view,
                commit_max: self.commit_max,
                checkpoint_op: self.checkpoint.op,
                op: self.op,
                replica: self.config.replica,
            };
            self.broadcast(&commit);
        }
        let mut resend = Vec::new();
        for entry in &mut self.pipeline {
            if self.ticks >= entry.sent_tick + prepare_timeout_ticks {
                entry.sent_tick = self.ticks;
                resend.push((entry.ok_from, entry.prepare.clone()));
            }
        }
        for (ok_from, prepare) in resend {
            for replica in 0..self.config.replica_count {
                if ok_from & bit(replica) == 0 && replica != self.config.replica {
                    self.send(replica, Message::Prepare(prepare.clone()));
                }
            }
        }
        self.primary_drain_queue();
    }

    // ----------------------------------------------------------------------------------------
    // Normal operation: requests, prepares, commits.

    fn on_request(&mut self, client: u128, request: u64, operation: Operation, body: Vec<u8>) {
        if self.status != Status::Normal || !self.is_primary() {
            return; // Clients retry towards every replica; only the primary answers.
        }
        if body.len() > constants::command_bytes_max || operation == Operation::Root {
            return;
        }
        let in_flight = self
            .pipeline
            .iter()
            .any(|e| e.prepare.header.client == client)
            || self.request_queue.iter().any(|(c, ..)| *c == client);
        match (operation, self.sessions.get(client)) {
            (Operation::Register, Some(session)) => {
                if request == 0 && session.request == 0 {
                    let reply = Message::Reply {
                        client,
                        request: 0,
                        op: session.session,
                        view: self.view,
                        replica: self.config.replica,
                        body: Vec::new(),
                    };
                    self.outbox.push(Action::SendToClient {
                        client,
                        message: reply,
                    });
                }
                return;
            }
            (Operation::Register, None) => {
                if request != 0 || in_flight {
                    return;
                }
            }
            (Operation::Command, None) => {
                if !in_flight {
                    let eviction = Message::Eviction {
                        client,
                        view: self.view,
                        replica: self.config.replica,
                    };
                    self.outbox.push(Action::SendToClient {
                        client,
                        message: eviction,
                    });
                }
                return;
            }
            (Operation::Command, Some(session)) => {
                if request == session.request {
                    let reply = Message::Reply {
                        client,
                        request,
                        op: session.op,
                        view: self.view,
                        replica: self.config.replica,
                        body: session.reply.clone(),
                    };
                    self.outbox.push(Action::SendToClient {
                        client,
                        message: reply,
                    });
                    return;
                }
                if request != session.request + 1 || in_flight {
                    return;
                }
            }
            (Operation::Root, _) => unreachable!("rejected above"),
        }
        if self.request_queue.len() >= request_queue_max {
            return;
        }
        self.request_queue
            .push_back((client, request, operation, body));
        self.primary_drain_queue();
    }

    fn primary_drain_queue(&mut self) {
        while !self.request_queue.is_empty()
            && (self.pipeline.len() as u64) < self.config.pipeline_prepares_max
            && self.op < self.checkpoint.op + self.config.journal_slots
        {
            // Without cluster time we could not bound this op's timestamp: wait (clients retry).
            let Some(synchronized) = self.clock.realtime_synchronized(self.now) else {
                return;
            };
            let (client, request, operation, body) =
                self.request_queue.pop_front().expect("not empty");
            self.primary_prepare(client, request, operation, body, synchronized);
        }
    }

    fn primary_prepare(
        &mut self,
        client: u128,
        request: u64,
        operation: Operation,
        body: Vec<u8>,
        synchronized_ns: u64,
    ) {
        assert!(self.status == Status::Normal && self.is_primary());
        let parent = self.head();
        let timestamp_ns = synchronized_ns.max(self.timestamp_last + 1);
        let mut header = Header {
            checksum: 0,
            parent: parent.checksum,
            body_checksum: checksum(&body),
            cluster: self.config.cluster,
            view: self.view,
            op: self.op + 1,
            commit: self.commit_max,
            timestamp_ns,
            client,
            request,
            operation,
            replica: self.config.replica,
            body_bytes: body.len() as u32,
        };
        header.checksum = header.calculate_checksum();
        assert!(header.timestamp_ns > parent.timestamp_ns);
        let prepare = Prepare { header, body };
        self.journal_write(&prepare);
        self.op = header.op;
        self.timestamp_last = timestamp_ns;
        self.pipeline.push_back(PipelineEntry {
            prepare: prepare.clone(),
            ok_from: bit(self.config.replica),
            prepared_tick: self.ticks,
            sent_tick: self.ticks,
        });
        self.broadcast(&Message::Prepare(prepare));
        self.primary_commit_pipeline();
    }

    fn on_prepare_ok(&mut self, view: u64, op: u64, checksum: u128, replica: u8) {
        if self.status != Status::Normal
            || !self.is_primary()
            || view != self.view
            || replica >= self.config.replica_count
        {
            return;
        }
        self.follower_seen_tick[replica as usize] = self.ticks;
        if let Some(entry) = self.pipeline.iter_mut().find(|e| e.prepare.header.op == op)
            && entry.prepare.header.checksum == checksum
        {
            entry.ok_from |= bit(replica);
        }
        self.primary_commit_pipeline();
    }

    fn primary_commit_pipeline(&mut self) {
        while let Some(front) = self.pipeline.front() {
            let acks = front.ok_from.count_ones() as usize;
            #[cfg(feature = "vopr-bugs")]
            let acks = if self.config.known_bug == Some(KnownBug::CommitWithoutQuorum) {
                self.quorum_replication // The bug: our own write is deemed enough.
            } else {
                acks
            };
            if acks < self.quorum_replication {
                break;
            }
            let entry = self.pipeline.front().expect("front").clone();
            assert_eq!(entry.prepare.header.op, self.commit_max + 1);
            self.commit_max = entry.prepare.header.op;
            self.commit_op(&entry.prepare);
            self.pipeline.pop_front();
        }
        self.primary_drain_queue();
    }

    fn on_prepare(&mut self, prepare: &Prepare) {
        if !prepare.valid()
            || prepare.header.cluster != self.config.cluster
            || prepare.header.operation == Operation::Root
        {
            return;
        }
        let header = prepare.header;
        if header.op <= self.checkpoint.op
            || header.op > self.checkpoint.op + self.config.journal_slots
        {
            if self.status == Status::Normal && header.view == self.view && !self.is_primary() {
                self.commit_max = self.commit_max.max(header.commit);
            }
            return;
        }
        // Repair: we know this exact header and lack its prepare.
        let slot = self.slot_index(header.op);
        if self.slots[slot].header == Some(header)
            && self.slots[slot].state != PrepareState::Durable
        {
            self.journal_write(prepare);
            if self.status == Status::Normal && !self.is_primary() && header.op > self.commit_max {
                let ok = Message::PrepareOk {
                    view: self.view,
                    op: header.op,
                    checksum: header.checksum,
                    replica: self.config.replica,
                };
                let primary = self.primary_index(self.view);
                self.send(primary, ok);
            }
            self.commit_journal();
            if self.status == Status::ViewChange {
                self.primary_try_start_view();
            }
            // The last answer of a repair round: ask for the next missing prepares now rather
            // than at the next repair timeout, so repair keeps pace with a loaded primary
            // instead of moving `pipeline_prepares_max` ops per `repair_timeout_ticks`
            // (bounded per tick).
            if self.repair_last_requested == Some(header.op)
                && (self.ticks > self.repair_tick
                    || self.repair_rounds < repair_rounds_per_tick_max)
            {
                self.repair();
            }
            return;
        }
        if header.view > self.view
            || (header.view == self.view
                && self.status != Status::Normal
                && header.replica == self.primary_index(self.view))
        {
            // The view started without us hearing its StartView.
            self.request_start_view(header.view);
            return;
        }
        if self.status != Status::Normal || self.is_primary() || header.view != self.view {
            return;
        }
        assert_eq!(header.replica, self.primary_index(self.view));
        self.commit_max = self.commit_max.max(header.commit);
        if header.op <= self.commit_min {
            return;
        }
        if header.op <= self.op {
            match self.header_for_op(header.op) {
                Some(existing) if existing.checksum == header.checksum => {
                    if self.slots[slot].state == PrepareState::Durable {
                        let ok = Message::PrepareOk {
                            view: self.view,
                            op: header.op,
                            checksum: header.checksum,
                            replica: self.config.replica,
                        };
                        let primary = self.primary_index(self.view);
                        self.send(primary, ok);
                    }
                    return;
                }
                // Within one view an op names one prepare; only an older view's entry differs.
                Some(existing) => assert!(existing.view < header.view),
                None => {}
            }
        } else {
            if header.op == self.op + 1
                && self.op <= self.commit_min
                && header.parent != self.head().checksum
            {
                // Our head is committed (a checkpoint we fetched) and this primary's log does not
                // continue it: that log lost a view change we have not heard of yet.
                let view = self.view;
                self.request_start_view(view);
                return;
            }
            if header.op == self.op + 1 {
                assert_eq!(
                    header.parent,
                    self.head().checksum,
                    "hash chain breaks within view {}",
                    self.view
                );
            }
            self.op = header.op;
        }
        self.journal_write_to_acknowledge(prepare);
        let ok = Message::PrepareOk {
            view: self.view,
            op: header.op,
            checksum: header.checksum,
            replica: self.config.replica,
        };
        let primary = self.primary_index(self.view);
        self.send(primary, ok);
        self.commit_journal();
    }

    /// A backup's write of a new prepare of its view, which it acknowledges right after.
    fn journal_write_to_acknowledge(&mut self, prepare: &Prepare) {
        #[cfg(feature = "vopr-bugs")]
        if self.config.known_bug == Some(KnownBug::PrepareOkBeforeWrite) {
            // The bug: acknowledged from a write-back cache, written `bug_write_back_ticks`
            // later (`on_tick`), lost if the process dies first. The process itself sees the
            // slot as written (`journal_read` looks in the cache).
            let slot = self.slot_index(prepare.header.op);
            self.slots[slot] = Slot {
                header: Some(prepare.header),
                state: PrepareState::Durable,
                unknown: false,
            };
            self.bug_write_back.push((self.ticks, prepare.clone()));
            return;
        }
        self.journal_write(prepare);
    }

    /// [`KnownBug::PrepareOkBeforeWrite`]: write what the cache has held long enough, if the
    /// slot still holds it.
    #[cfg(feature = "vopr-bugs")]
    fn bug_write_back_flush(&mut self) {
        let ticks = self.ticks;
        let (due, held): (Vec<_>, Vec<_>) = std::mem::take(&mut self.bug_write_back)
            .into_iter()
            .partition(|(tick, _)| ticks >= tick + bug_write_back_ticks);
        self.bug_write_back = held;
        for (_, prepare) in due {
            let header = prepare.header;
            let slot = &self.slots[self.slot_index(header.op)];
            if slot.header == Some(header)
                && slot.state == PrepareState::Durable
                && header.op > self.checkpoint.op
            {
                self.journal_write(&prepare);
            }
        }
    }

    fn on_commit(&mut self, view: u64, commit_max: u64, checkpoint_op: u64, op: u64, replica: u8) {
        if view > self.view {
            self.request_start_view(view);
            return;
        }
        if view < self.view || replica != self.primary_index(view) || replica == self.config.replica
        {
            return;
        }
        if self.status == Status::ViewChange {
            // The view started without us hearing its StartView.
            self.request_start_view(view);
            return;
        }
        if self.status != Status::Normal {
            return;
        }
        self.heartbeat_deadline = self.ticks + normal_heartbeat_timeout_ticks;
        if self.svc_from & bit(self.config.replica) != 0 {
            // The primary is alive after all: withdraw our vote.
            self.svc_from &= !bit(self.config.replica);
            self.svc_sent_tick = None;
        }
        self.commit_max = self.commit_max.max(commit_max);
        self.primary_checkpoint_op = checkpoint_op;
        self.primary_op = op;
        if self.commit_max > self.op {
            self.request_start_view(view);
        }
        self.commit_journal();
    }

    /// Apply committed ops in order while their prepares are at hand and chained to the head.
    fn commit_journal(&mut self) {
        if self.status == Status::Recovering || self.snapshot_missing {
            return; // No state to apply ops to until a checkpoint arrives.
        }
        if self.status == Status::Normal && self.is_primary() {
            return; // The primary commits from its pipeline.
        }
        // Backups in view change may still apply what their own (log_view) log proves: ops up
        // to commit_max on the chain from our head are committed in every later view's log.
        self.drop_divergent_log();
        let commit_target = self.commit_max.min(self.op);
        if self.commit_min >= commit_target {
            return;
        }
        let verified_min = self.verified_min();
        while self.commit_min < commit_target
            && self.commit_min + 1 >= verified_min.max(self.checkpoint.op + 1)
        {
            let op = self.commit_min + 1;
            let header = self.header_for_op(op).expect("verified header");
            assert_eq!(
                header.parent,
                self.header_for_op(self.commit_min)
                    .expect("committed header")
                    .checksum
            );
            let Some(prepare) = self.journal_read(&header) else {
                break;
            };
            self.commit_op(&prepare);
        }
    }

    /// Apply a committed prepare to the client sessions and the state machine: the reply, or
    /// `None` when the session is gone or the request is a duplicate (not executed).
    fn execute(&mut self, prepare: &Prepare) -> Option<Vec<u8>> {
        let header = prepare.header;
        let client = header.client;
        match header.operation {
            Operation::Root => unreachable!("op 0 is never committed"),
            Operation::Register => {
                if self.sessions.get(client).is_none() {
                    self.sessions.register(client, header.op);
                    Some(Vec::new())
                } else {
                    None
                }
            }
            Operation::Command => match self.sessions.get(client) {
                Some(session) if session.request + 1 == header.request => {
                    let reply = self.state_machine.commit(
                        header.op,
                        header.timestamp_ns,
                        client,
                        header.request,
                        &prepare.body,
                    );
                    assert!(reply.len() <= constants::reply_bytes_max);
                    self.sessions
                        .record(client, header.request, header.op, reply.clone());
                    Some(reply)
                }
                _ => None,
            },
        }
    }

    /// Execute one committed prepare against the sessions and the state machine.
    fn commit_op(&mut self, prepare: &Prepare) {
        let header = prepare.header;
        assert_eq!(header.op, self.commit_min + 1);
        assert!(header.op <= self.commit_max);
        assert_eq!(
            Some(header.parent),
            self.header_for_op(self.commit_min).map(|h| h.checksum)
        );
        let reply_to_client = self.status == Status::Normal && self.is_primary();
        let client = header.client;
        let reply = self.execute(prepare);
        self.commit_min = header.op;
        self.commit_progress_tick = self.ticks;
        self.outbox.push(Action::Committed { header });
        if reply_to_client {
            let message = match reply {
                Some(body) => Message::Reply {
                    client,
                    request: header.request,
                    op: header.op,
                    view: self.view,
                    replica: self.config.replica,
                    body,
                },
                None => Message::Eviction {
                    client,
                    view: self.view,
                    replica: self.config.replica,
                },
            };
            let duplicate = matches!(header.operation, Operation::Register)
                && matches!(message, Message::Eviction { .. });
            if !duplicate {
                self.outbox.push(Action::SendToClient { client, message });
            }
        }
        if self
            .commit_min
            .is_multiple_of(self.config.checkpoint_interval_ops)
        {
            self.checkpoint_now();
        }
    }

    fn checkpoint_now(&mut self) {
        let state = self.state_machine.snapshot();
        let snapshot = snapshot_encode(self.commit_min, &self.sessions, &state);
        let area = 1 - self.checkpoint.snapshot_area;
        self.storage.write(Location::Snapshot { area }, &snapshot);
        self.checkpoint_previous = self.checkpoint;
        self.checkpoint = CheckpointState {
            op: self.commit_min,
            header: self
                .header_for_op(self.commit_min)
                .expect("committed header"),
            snapshot_checksum: checksum(&snapshot),
            snapshot_bytes: snapshot.len() as u64,
            snapshot_area: area,
        };
        self.persist();
    }

    // ----------------------------------------------------------------------------------------
    // View change.

    fn vote_view_change(&mut self, view: u64) {
        assert!(view > self.view);
        // Join the highest view others are already voting for, so votes converge.
        let view = view.max(self.svc_view);
        if view > self.svc_view {
            self.svc_view = view;
            self.svc_from = 0;
        }
        if view == self.svc_view {
            self.svc_from |= bit(self.config.replica);
            self.svc_sent_tick = Some(self.ticks);
            let message = Message::StartViewChange {
                view,
                replica: self.config.replica,
            };
            self.broadcast(&message);
            self.check_view_change_votes();
        }
    }

    fn on_start_view_change(&mut self, view: u64, replica: u8) {
        if view <= self.view
            || replica >= self.config.replica_count
            || self.status == Status::RecoveringHead
        {
            return;
        }
        if view > self.svc_view {
            self.svc_view = view;
            self.svc_from = 0;
        }
        if view == self.svc_view {
            self.svc_from |= bit(replica);
            self.check_view_change_votes();
        }
    }

    fn check_view_change_votes(&mut self) {
        if self.svc_view > self.view
            && self.svc_from.count_ones() as usize >= self.quorum_view_change
        {
            self.transition_to_view_change(self.svc_view);
        }
    }

    fn transition_to_view_change(&mut self, view: u64) {
        assert!(view > self.view);
        assert!(self.status != Status::Recovering);
        if self.status == Status::RecoveringHead {
            return; // Our head is unknown: we cannot vouch for a log.
        }
        self.view = view;
        self.status = Status::ViewChange;
        self.pipeline.clear();
        self.request_queue.clear();
        self.dvc_from = vec![None; self.config.replica_count as usize];
        self.dvc_installed = false;
        self.transfer = None;
        self.view_change_deadline = self.ticks + self.view_change_timeout();
        // Durable before we vouch for anything in this view.
        self.persist();
        if self.svc_view < view {
            self.svc_view = view;
            self.svc_from = 0;
        }
        self.svc_from |= bit(self.config.replica);
        self.svc_sent_tick = Some(self.ticks);
        if self.config.replica_count > 1 {
            self.broadcast(&Message::StartViewChange {
                view,
                replica: self.config.replica,
            });
        }
        self.send_do_view_change();
    }

    /// Our suffix's headers, from the head down to the commit point. They are all our
    /// log_view's log: a StartView installs its suffix (commit point included) and truncates
    /// what is above it, and ops above that come only from that view's primary. Whether each
    /// one's prepare is present is reported separately.
    fn suffix_headers(&self) -> Vec<Option<Header>> {
        let (low, high) = self.suffix_range();
        (low..=high)
            .rev()
            .map(|op| self.header_for_op(op))
            .collect()
    }

    fn do_view_change_record(&self) -> DoViewChangeRecord {
        let (low, high) = self.suffix_range();
        let headers = self.suffix_headers();
        let mut entries = Vec::with_capacity((high - low + 1) as usize);
        for (op, header) in (low..=high).rev().zip(headers) {
            let slot = &self.slots[self.slot_index(op)];
            let present = header.is_some()
                && (op == self.checkpoint.op && op == 0
                    || slot.header == header && slot.state == PrepareState::Durable);
            let nack = if op <= self.op_uncertain_max || op <= self.commit_max {
                false
            } else {
                match header {
                    None => !slot.unknown && slot.header.is_none_or(|h| h.op != op),
                    Some(_) => slot.state == PrepareState::Missing && !slot.unknown,
                }
            };
            entries.push(ViewChangeEntry {
                header,
                present,
                nack,
            });
        }
        DoViewChangeRecord {
            log_view: self.log_view,
            op: self.op,
            commit_max: self.commit_max,
            // Candidates that step aside hand the view to a sender of the newest checkpoint,
            // so vouch only for one we can lead from: none while our snapshot is missing (we
            // cannot commit at all). Two candidates that cannot lead would otherwise hand the
            // view back and forth, faster than a third that can collects a quorum of these.
            checkpoint_op: if self.snapshot_missing {
                0
            } else {
                self.checkpoint.op
            },
            entries,
        }
    }

    fn send_do_view_change(&mut self) {
        assert_eq!(self.status, Status::ViewChange);
        self.dvc_sent_tick = self.ticks;
        if self.log_view == self.view {
            return; // Installed as the new primary: nothing left to vouch for.
        }
        let record = self.do_view_change_record();
        let primary = self.primary_index(self.view);
        if primary == self.config.replica {
            self.on_do_view_change(self.view, self.config.replica, record);
        } else {
            let message = Message::DoViewChange {
                view: self.view,
                log_view: record.log_view,
                op: record.op,
                commit_max: record.commit_max,
                checkpoint_op: record.checkpoint_op,
                replica: self.config.replica,
                entries: record.entries,
            };
            self.send(primary, message);
        }
    }

    fn on_do_view_change(&mut self, view: u64, replica: u8, record: DoViewChangeRecord) {
        if self.primary_index(view) != self.config.replica || replica >= self.config.replica_count {
            return;
        }
        if record.entries.is_empty()
            || record.entries.len() as u64 > record.op + 1
            || record.entries.len() as u64 > self.config.pipeline_prepares_max + 2
            || record.log_view >= view
        {
            return;
        }
        if view > self.view {
            self.transition_to_view_change(view);
            if self.status != Status::ViewChange || self.view != view {
                return;
            }
        }
        if view != self.view || self.status != Status::ViewChange || self.dvc_installed {
            return;
        }
        self.dvc_from[replica as usize] = Some(record);
        self.primary_merge_logs();
    }

    /// With a quorum of DoViewChange: choose the view's log, or wait for more.
    fn primary_merge_logs(&mut self) {
        assert!(self.status == Status::ViewChange && self.is_primary() && !self.dvc_installed);
        let records: Vec<DoViewChangeRecord> = self.dvc_from.iter().flatten().cloned().collect();
        if records.len() < self.quorum_view_change {
            return;
        }
        let checkpoint_max = records
            .iter()
            .map(|r| r.checkpoint_op)
            .max()
            .expect("quorum");
        // A lagging candidate may need ops that are gone from every journal: it gives a replica
        // with the newest checkpoint a chance to lead instead — a bounded number of times, since
        // that replica may be unable to lead (partitioned, or missing its own snapshot). A
        // candidate that lost its snapshot cannot commit at all, so it always steps aside.
        let lagging = checkpoint_max > self.commit_min
            && self.view - self.log_view < self.config.replica_count as u64;
        // Ops beyond our checkpoint + journal we could not even hold: we must step aside.
        let unable = records
            .iter()
            .any(|r| r.op > self.checkpoint.op + self.config.journal_slots);
        if lagging || unable || self.snapshot_missing {
            let mut next = self.view + 1;
            for step in 1..=self.config.replica_count as u64 {
                let primary = self.primary_index(self.view + step);
                let suitable = primary != self.config.replica
                    && (self.snapshot_missing
                        || self.dvc_from[primary as usize]
                            .as_ref()
                            .is_some_and(|r| r.checkpoint_op == checkpoint_max));
                if suitable {
                    next = self.view + step;
                    break;
                }
            }
            self.transition_to_view_change(next);
            return;
        }
        let log_view_max = records.iter().map(|r| r.log_view).max().expect("quorum");
        let canonical: Vec<&DoViewChangeRecord> = records
            .iter()
            .filter(|r| r.log_view == log_view_max)
            .collect();
        let commit_max = records
            .iter()
            .map(|r| r.commit_max)
            .max()
            .expect("quorum")
            .max(self.commit_max);
        let op_head_max = canonical.iter().map(|r| r.op).max().expect("canonical");
        assert!(op_head_max >= commit_max.min(op_head_max));
        let commit_max = commit_max.min(op_head_max);
        let canonical_header = |op: u64| -> Option<Header> {
            let mut found: Option<Header> = None;
            for record in &canonical {
                if let Some(header) = record.entry(op).and_then(|e| e.header) {
                    if let Some(existing) = found {
                        assert_eq!(
                            existing.checksum, header.checksum,
                            "canonical logs disagree at op {op}"
                        );
                    }
                    found = Some(header);
                }
            }
            found
        };
        let mut op_head = op_head_max;
        for op in commit_max + 1..=op_head_max {
            let header = canonical_header(op);
            let mut copies = 0;
            let mut nacks = 0;
            for record in &records {
                if op > record.op {
                    // Its log ends below op: it never acknowledged a prepare there that could
                    // still be in a canonical log.
                    nacks += 1;
                    continue;
                }
                let Some(entry) = record.entry(op) else {
                    continue; // Below its suffix: it says nothing about op.
                };
                if entry.nack {
                    nacks += 1;
                } else if let Some(theirs) = entry.header {
                    match header {
                        Some(ours) if ours.checksum == theirs.checksum => {
                            if entry.present {
                                copies += 1;
                            }
                        }
                        _ => {
                            assert!(record.log_view < log_view_max);
                            nacks += 1; // A different (older) prepare for op: not this one.
                        }
                    }
                }
            }
            if nacks >= self.quorum_nack {
                op_head = op - 1;
                break;
            }
            if header.is_none() || copies == 0 {
                return; // Wait for more DoViewChange (or a view change timeout).
            }
        }
        let head_header = if op_head > commit_max {
            canonical_header(op_head).expect("checked above")
        } else {
            // Committed: any canonical log has it, and so has any log whose own commit_max
            // covers it. Other (older) logs may hold a truncated prepare for the same op.
            let known = canonical_header(op_head).or_else(|| {
                records
                    .iter()
                    .filter(|r| r.commit_max >= op_head)
                    .find_map(|r| r.entry(op_head).and_then(|e| e.header))
            });
            match known {
                Some(header) => header,
                None => return,
            }
        };
        assert!(op_head >= self.commit_min);
        // Install the view's log.
        self.truncate_after(op_head);
        for op in commit_max + 1..=op_head {
            let header = canonical_header(op).expect("checked above");
            self.install_header(header);
        }
        if op_head > self.checkpoint.op {
            self.install_header(head_header);
        }
        self.op = op_head;
        self.commit_max = self.commit_max.max(commit_max);
        self.timestamp_last = self.timestamp_last.max(head_header.timestamp_ns);
        self.log_view = self.view;
        self.dvc_installed = true;
        self.persist();
        self.repair();
        self.primary_try_start_view();
    }

    /// The new primary starts the view once its log is complete and committed up to commit_max.
    fn primary_try_start_view(&mut self) {
        if !(self.status == Status::ViewChange && self.is_primary() && self.dvc_installed) {
            return;
        }
        self.commit_journal();
        if self.commit_min < self.commit_max {
            return;
        }
        let mut prepares = Vec::new();
        for op in self.commit_max + 1..=self.op {
            let header = self.header_for_op(op).expect("installed");
            match self.journal_read(&header) {
                Some(prepare) => prepares.push(prepare),
                None => return,
            }
        }
        if self.verified_min() > self.commit_min + 1 && self.op > self.commit_min {
            return;
        }
        self.status = Status::Normal;
        // Every follower gets a grace period to report in the new view.
        self.follower_seen_tick = [self.ticks; replicas_max];
        self.svc_sent_tick = None;
        self.pipeline = prepares
            .into_iter()
            .map(|prepare| PipelineEntry {
                prepare,
                ok_from: bit(self.config.replica),
                prepared_tick: self.ticks,
                sent_tick: self.ticks,
            })
            .collect();
        self.commit_sent_tick = self.ticks;
        let start_view = self.start_view_message(0);
        self.broadcast(&start_view);
        self.primary_commit_pipeline();
    }

    fn start_view_message(&self, nonce: u128) -> Message {
        let (low, high) = self.suffix_range();
        let headers: Vec<Header> = (low..=high)
            .rev()
            .map(|op| self.header_for_op(op).expect("primary log is complete"))
            .collect();
        Message::StartView {
            view: self.view,
            op: self.op,
            commit_max: self.commit_max,
            checkpoint_op: self.checkpoint.op,
            replica: self.config.replica,
            nonce,
            headers,
        }
    }

    /// Ask the primary of the newest view we heard of for its StartView (rate limited).
    fn request_start_view(&mut self, view: u64) {
        self.view_heard_max = self.view_heard_max.max(view);
        if self
            .request_start_view_tick
            .is_some_and(|t| self.ticks < t + request_start_view_timeout_ticks)
        {
            return;
        }
        self.request_start_view_tick = Some(self.ticks);
        let view = self.view_heard_max.max(self.view);
        let primary = self.primary_index(view);
        if primary != self.config.replica {
            self.send(
                primary,
                Message::RequestStartView {
                    view,
                    replica: self.config.replica,
                    nonce: self.nonce,
                },
            );
        }
    }

    fn on_request_start_view(&mut self, view: u64, replica: u8, nonce: u128) {
        if self.status == Status::Normal
            && self.is_primary()
            && view <= self.view
            && replica != self.config.replica
            && replica < self.config.replica_count
        {
            let message = self.start_view_message(nonce);
            self.send(replica, message);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_start_view(
        &mut self,
        view: u64,
        op: u64,
        commit_max: u64,
        checkpoint_op: u64,
        replica: u8,
        nonce: u128,
        headers: &[Header],
    ) {
        if replica != self.primary_index(view)
            || replica == self.config.replica
            || headers.is_empty()
            || headers[0].op != op
        {
            return;
        }
        if headers.iter().enumerate().any(|(i, h)| {
            !h.valid_checksum()
                || h.op + i as u64 != op
                || (i > 0 && headers[i - 1].parent != h.checksum)
        }) {
            return;
        }
        let accept = match self.status {
            Status::Recovering => false,
            Status::RecoveringHead => {
                view > self.view || (view == self.view && nonce == self.nonce)
            }
            Status::ViewChange => view >= self.view,
            Status::Normal => {
                view > self.view || (view == self.view && !self.is_primary() && op > self.op)
            }
        };
        if !accept {
            return;
        }
        if op < self.commit_min {
            return;
        }
        if op > self.checkpoint.op + self.config.journal_slots {
            // Too far behind to hold the view's suffix: fetch a newer checkpoint first (state
            // transfer), then ask for the StartView again. Joining the view with a log cut short
            // would let our DoViewChange claim the view's log ends early.
            self.primary_checkpoint_op = self.primary_checkpoint_op.max(checkpoint_op);
            self.primary_op = self.primary_op.max(op);
            if view > self.view && self.status != Status::RecoveringHead {
                // Leave our old view (we might even be its primary) as a backup of the new one.
                self.transition_to_view_change(view);
            }
            return;
        }
        self.install_start_view(view, op, commit_max, checkpoint_op, headers);
    }

    fn install_start_view(
        &mut self,
        view: u64,
        op: u64,
        commit_max: u64,
        checkpoint_op: u64,
        headers: &[Header],
    ) {
        assert!(op >= self.commit_min);
        self.view = view;
        self.log_view = view;
        self.status = Status::Normal;
        assert!(op <= self.checkpoint.op + self.config.journal_slots);
        self.truncate_after(op);
        for header in headers.iter().rev() {
            if header.op > self.checkpoint.op {
                self.install_header(*header);
            }
        }
        self.op = op.max(self.checkpoint.op);
        self.commit_max = self.commit_max.max(commit_max);
        self.timestamp_last = self.timestamp_last.max(self.head().timestamp_ns);
        self.pipeline.clear();
        self.request_queue.clear();
        self.dvc_installed = false;
        self.svc_sent_tick = None;
        self.svc_from = 0;
        self.persist();
        self.heartbeat_deadline = self.ticks + normal_heartbeat_timeout_ticks;
        self.primary_checkpoint_op = checkpoint_op;
        self.primary_op = op;
        let primary = self.primary_index(view);
        for op in self.commit_max + 1..=self.op {
            if let Some(header) = self.prepare_durable(op) {
                let ok = Message::PrepareOk {
                    view,
                    op,
                    checksum: header.checksum,
                    replica: self.config.replica,
                };
                self.send(primary, ok);
            }
        }
        self.commit_journal();
        self.repair();
    }

    // ----------------------------------------------------------------------------------------
    // Repair.

    fn repair(&mut self) {
        if self.repair_tick == self.ticks {
            self.repair_rounds += 1;
        } else {
            self.repair_tick = self.ticks;
            self.repair_rounds = 1;
        }
        self.repair_last_requested = None;
        if self.config.replica_count == 1 {
            return;
        }
        let primary_view_change =
            self.status == Status::ViewChange && self.is_primary() && self.dvc_installed;
        if (self.status != Status::Normal || self.is_primary()) && !primary_view_change {
            return;
        }
        if self.status == Status::Normal && self.commit_max > self.op {
            let view = self.view;
            self.request_start_view(view);
        }
        let verified_min = self.verified_min();
        let floor = self.commit_min.max(self.checkpoint.op);
        if verified_min > floor + 1 {
            let op_max = verified_min - 1;
            let op_min = (floor + 1).max(op_max.saturating_sub(headers_per_message_max - 1));
            let target = if primary_view_change || op_max.is_multiple_of(2) {
                self.next_repair_target()
            } else {
                self.primary_index(self.view)
            };
            self.send(
                target,
                Message::RequestHeaders {
                    op_min,
                    op_max,
                    replica: self.config.replica,
                },
            );
        }
        let mut requested = 0;
        for op in verified_min.max(floor + 1)..=self.op {
            if requested >= self.config.pipeline_prepares_max {
                break;
            }
            let slot = self.slots[self.slot_index(op)];
            let Some(header) = slot.header.filter(|h| h.op == op) else {
                continue;
            };
            if slot.state == PrepareState::Durable {
                continue;
            }
            let mut target = self.next_repair_target();
            if primary_view_change {
                // Prefer a replica that told us it holds the prepare.
                let holders: Vec<u8> = (0..self.config.replica_count)
                    .filter(|&index| index != self.config.replica)
                    .filter(|&index| {
                        self.dvc_from[index as usize]
                            .as_ref()
                            .and_then(|r| r.entry(op))
                            .is_some_and(|e| e.present && e.header == Some(header))
                    })
                    .collect();
                if !holders.is_empty() && !self.random().is_multiple_of(4) {
                    target = holders[(self.random() % holders.len() as u64) as usize];
                }
            }
            self.send(
                target,
                Message::RequestPrepare {
                    op,
                    checksum: header.checksum,
                    replica: self.config.replica,
                },
            );
            self.repair_last_requested = Some(op);
            requested += 1;
        }
    }

    fn on_request_headers(&mut self, op_min: u64, op_max: u64, replica: u8) {
        if self.status == Status::Recovering
            || replica == self.config.replica
            || replica >= self.config.replica_count
            || op_min > op_max
        {
            return;
        }
        let op_max = op_max
            .min(self.op)
            .min(op_min.saturating_add(headers_per_message_max - 1));
        let headers: Vec<Header> = (op_min..=op_max)
            .rev()
            .filter_map(|op| self.header_for_op(op))
            .collect();
        if !headers.is_empty() {
            self.send(
                replica,
                Message::Headers {
                    replica: self.config.replica,
                    headers,
                },
            );
        }
    }

    fn on_headers(&mut self, mut headers: Vec<Header>) {
        let repairing = (self.status == Status::Normal && !self.is_primary())
            || (self.status == Status::ViewChange && self.is_primary() && self.dvc_installed);
        if !repairing {
            return;
        }
        headers.sort_by_key(|header| std::cmp::Reverse(header.op));
        let mut verified_min = self.verified_min();
        for header in headers {
            if !header.valid_checksum() || header.cluster != self.config.cluster {
                continue;
            }
            if header.op + 1 != verified_min
                || header.op <= self.checkpoint.op
                || header.op < self.commit_min
            {
                continue;
            }
            let child = self.header_for_op(verified_min).expect("verified");
            if child.parent != header.checksum {
                continue;
            }
            self.install_header(header);
            verified_min = self.verified_min();
        }
        self.commit_journal();
        self.primary_try_start_view();
    }

    /// Serve a prepare we hold intact. Never answer "don't have": a corrupt slot might hold the
    /// very prepare asked for, and a nack from us could help truncate a committed op.
    fn on_request_prepare(&mut self, op: u64, checksum: u128, replica: u8) {
        if self.status == Status::Recovering
            || replica == self.config.replica
            || replica >= self.config.replica_count
        {
            return;
        }
        let Some(header) = self
            .header_for_op(op)
            .filter(|h| h.checksum == checksum && op > 0)
        else {
            return;
        };
        if let Some(prepare) = self.journal_read(&header) {
            self.send(replica, Message::Prepare(prepare));
        }
    }

    // ----------------------------------------------------------------------------------------
    // State transfer.

    /// Whether this replica may replace its state with a peer's (committed) checkpoint: any
    /// backup, not a primary (which leads the log). A replica unsure of its head may: it sends
    /// nothing that vouches for its log until a StartView tells it the view's log.
    fn state_transfer_allowed(&self) -> bool {
        match self.status {
            Status::Normal | Status::ViewChange => !self.is_primary(),
            Status::Recovering | Status::RecoveringHead => true,
        }
    }

    fn tick_state_transfer(&mut self) {
        if !self.state_transfer_allowed() {
            return; // A vote earlier in this tick may have made us a primary candidate.
        }
        if let Some(sent_tick) = self.transfer.as_ref().map(|t| t.sent_tick) {
            if self.ticks >= sent_tick + state_transfer_timeout_ticks {
                let source = self.next_repair_target();
                let offset = self.transfer.as_ref().map_or(0, |t| t.bytes.len() as u64);
                let transfer = self.transfer.as_mut().expect("transfer");
                transfer.sent_tick = self.ticks;
                if offset == 0 {
                    transfer.source = source;
                }
                let source = transfer.source;
                self.send(
                    source,
                    Message::RequestCheckpoint {
                        replica: self.config.replica,
                        offset,
                        nonce: self.nonce,
                    },
                );
            }
            return;
        }
        let needed = if self.snapshot_missing {
            // Any checkpoint at or above ours will do, and we cannot wait for a stall.
            self.primary_checkpoint_op = self.primary_checkpoint_op.max(self.checkpoint.op);
            self.checkpoint.op
        } else {
            self.commit_min + 1
        };
        if self.primary_checkpoint_op < needed {
            return;
        }
        let overwritten = self.primary_op >= self.commit_min + 1 + self.config.journal_slots;
        let stalled = self.ticks >= self.commit_progress_tick + state_transfer_stall_ticks;
        if overwritten || stalled || self.snapshot_missing {
            let view = self
                .recovery
                .as_ref()
                .and_then(|r| r.view_max)
                .unwrap_or(self.view);
            let mut source = self.primary_index(view);
            if source == self.config.replica {
                source = self.next_repair_target();
            }
            self.transfer = Some(Transfer {
                source,
                checkpoint_op: 0,
                header: None,
                snapshot_checksum: 0,
                snapshot_bytes: 0,
                bytes: Vec::new(),
                sent_tick: self.ticks,
            });
            self.send(
                source,
                Message::RequestCheckpoint {
                    replica: self.config.replica,
                    offset: 0,
                    nonce: self.nonce,
                },
            );
        }
    }

    fn on_request_checkpoint(&mut self, replica: u8, offset: u64, nonce: u128) {
        if self.status == Status::Recovering
            || replica == self.config.replica
            || replica >= self.config.replica_count
            || self.checkpoint.op == 0
        {
            return;
        }
        let bytes = self.storage.read(Location::Snapshot {
            area: self.checkpoint.snapshot_area,
        });
        if bytes.len() as u64 != self.checkpoint.snapshot_bytes
            || checksum(&bytes) != self.checkpoint.snapshot_checksum
            || offset > bytes.len() as u64
        {
            return; // Our own snapshot is damaged: let another replica serve.
        }
        let end = (offset as usize + checkpoint_chunk_bytes_max).min(bytes.len());
        let chunk = Message::CheckpointChunk {
            replica: self.config.replica,
            checkpoint_op: self.checkpoint.op,
            header: self.checkpoint.header,
            snapshot_checksum: self.checkpoint.snapshot_checksum,
            snapshot_bytes: self.checkpoint.snapshot_bytes,
            offset,
            bytes: bytes[offset as usize..end].to_vec(),
        };
        self.send(replica, chunk);
        if end == bytes.len() {
            if self.status == Status::Normal && self.is_primary() {
                // The view's log, as a `RequestStartView` would get it, while our head is still
                // within the receiver's journal once it holds this checkpoint. Asked for after
                // the install, it arrives too late if the install took longer than we need to
                // prepare `journal_slots` ops: a replica recovering a lost disk (which takes no
                // prepare before a `StartView`) would refuse it as too far ahead and transfer
                // again, forever.
                let start_view = self.start_view_message(nonce);
                self.send(replica, start_view);
            }
            self.send_log_above_checkpoint(replica);
        }
    }

    /// After the last chunk of our checkpoint: the prepares of our log right above it, in order.
    ///
    /// Without them the receiver installs the checkpoint with a gap between it and the next
    /// prepare it hears: the ops we had prepared above the checkpoint when we served it (up to a
    /// checkpoint interval plus the pipeline), which it dropped while it was still behind. Until
    /// repair fills that gap it cannot commit, so its journal window stays where the checkpoint
    /// put it, and every prepare beyond `checkpoint + journal_slots` is dropped. A receiver that
    /// spent longer installing the checkpoint than the primary needs to prepare `journal_slots`
    /// ops (a node rebuilding its state from the checkpoint under full load) then finds its ops
    /// gone from the primary's journal and transfers again, and again: it stays behind by the
    /// ops of one transfer for as long as the load lasts. Sent right after the chunk on the same
    /// ordered connection, these reach it before anything newer, so it commits them and the
    /// prepares that queued up while it installed, in order, sliding its window as it goes. They
    /// are ordinary prepares: it checks them as any other (view, hash chain from the checkpoint).
    fn send_log_above_checkpoint(&mut self, replica: u8) {
        let mut bytes_sent = 0;
        for op in self.checkpoint.op + 1..=self.op {
            let Some(header) = self.header_for_op(op) else {
                break; // A gap: the receiver cannot chain anything above it.
            };
            let Some(prepare) = self.journal_read(&header) else {
                break;
            };
            bytes_sent += prepare.to_bytes().len();
            if bytes_sent > state_transfer_suffix_bytes_max {
                break;
            }
            self.send(replica, Message::Prepare(prepare));
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_checkpoint_chunk(
        &mut self,
        replica: u8,
        checkpoint_op: u64,
        header: Header,
        snapshot_checksum: u128,
        snapshot_bytes: u64,
        offset: u64,
        bytes: &[u8],
    ) {
        if !self.state_transfer_allowed()
            || (checkpoint_op <= self.commit_min
                && !(self.snapshot_missing && checkpoint_op == self.checkpoint.op))
            || header.op != checkpoint_op
            || !header.valid_checksum()
        {
            return;
        }
        let Some(transfer) = self.transfer.as_mut() else {
            return;
        };
        // Chunks of one snapshot agree on everything that describes it; anything else starts
        // the transfer over (the source checkpointed again, or another source answered).
        if transfer.checkpoint_op != checkpoint_op
            || transfer.snapshot_checksum != snapshot_checksum
            || transfer.snapshot_bytes != snapshot_bytes
            || transfer.header != Some(header)
        {
            if offset != 0 || snapshot_bytes > snapshot_bytes_max {
                return;
            }
            *transfer = Transfer {
                source: replica,
                checkpoint_op,
                header: Some(header),
                snapshot_checksum,
                snapshot_bytes,
                bytes: Vec::new(),
                sent_tick: self.ticks,
            };
        }
        if offset != transfer.bytes.len() as u64
            || transfer.bytes.len() as u64 + bytes.len() as u64 > transfer.snapshot_bytes
        {
            return;
        }
        transfer.bytes.extend_from_slice(bytes);
        transfer.source = replica;
        transfer.sent_tick = self.ticks;
        if (transfer.bytes.len() as u64) < transfer.snapshot_bytes {
            let offset = transfer.bytes.len() as u64;
            self.send(
                replica,
                Message::RequestCheckpoint {
                    replica: self.config.replica,
                    offset,
                    nonce: self.nonce,
                },
            );
            return;
        }
        let transfer = self.transfer.take().expect("transfer");
        if checksum(&transfer.bytes) != snapshot_checksum {
            return;
        }
        let Ok((op, sessions, state)) = snapshot_decode(&transfer.bytes, self.config.clients_max)
        else {
            return;
        };
        if op != checkpoint_op {
            return;
        }
        self.install_checkpoint(header, sessions, &state, &transfer.bytes);
    }

    fn install_checkpoint(
        &mut self,
        header: Header,
        sessions: ClientSessions,
        state: &[u8],
        snapshot: &[u8],
    ) {
        assert!(header.op > self.commit_min || self.snapshot_missing);
        assert!(header.op >= self.checkpoint.op);
        assert!(self.state_transfer_allowed());
        let area = 1 - self.checkpoint.snapshot_area;
        self.storage.write(Location::Snapshot { area }, snapshot);
        self.state_machine.restore(state);
        self.sessions = sessions;
        // Our log above the checkpoint stays if it chains to it (or we cannot tell yet, a gap
        // above it): dropping it could forget prepares we acknowledged. If the op right above
        // does not chain to the committed checkpoint, neither it nor anything chained to it can
        // ever commit (our log is from a view that lost), so it goes.
        let stale = self.op > header.op
            && self
                .header_for_op(header.op + 1)
                .is_some_and(|child| child.parent != header.checksum);
        if stale {
            self.truncate_after(self.commit_min);
            self.op = self.commit_min;
        }
        self.checkpoint_previous = self.checkpoint;
        self.checkpoint = CheckpointState {
            op: header.op,
            header,
            snapshot_checksum: checksum(snapshot),
            snapshot_bytes: snapshot.len() as u64,
            snapshot_area: area,
        };
        if self.op < header.op {
            // Everything we held is at or below the (committed) checkpoint.
            self.truncate_after(self.commit_min);
            self.op = header.op;
        }
        assert!(self.header_for_op(header.op) == Some(header));
        self.snapshot_missing = false;
        self.commit_min = header.op;
        self.commit_max = self.commit_max.max(header.op);
        self.commit_progress_tick = self.ticks;
        self.timestamp_last = self.timestamp_last.max(header.timestamp_ns);
        if self.status == Status::Recovering {
            // Nothing durable until the recovery completes: a crash now must recover again.
            return;
        }
        self.persist();
        let view = self.view;
        self.request_start_view(view);
        self.commit_journal();
    }

    // ----------------------------------------------------------------------------------------
    // Recovering a lost disk.

    fn tick_recovering(&mut self) {
        self.tick_state_transfer();
        if self.ticks % recovery_timeout_ticks != 1 {
            return;
        }
        // Keep asking: the cluster's view may move on while we wait, and responses only ever
        // raise the view we ask about.
        let request = Message::RecoveryRequest {
            replica: self.config.replica,
            nonce: self.nonce,
        };
        self.broadcast(&request);
        if let Some(view) = self.recovery.as_ref().expect("recovering").view_max {
            let primary = self.primary_index(view);
            if primary != self.config.replica {
                let message = Message::RequestStartView {
                    view,
                    replica: self.config.replica,
                    nonce: self.nonce,
                };
                self.send(primary, message);
            }
        }
    }

    fn on_message_recovering(&mut self, message: Message) {
        match message {
            Message::RecoveryResponse {
                replica,
                nonce,
                view,
            } if nonce == self.nonce
                && replica < self.config.replica_count
                && replica != self.config.replica =>
            {
                // Responses from this many others must include one from every view change
                // quorum that could still use a DoViewChange our lost incarnation sent.
                let needed = self.config.replica_count as usize - self.quorum_view_change + 1;
                let recovery = self.recovery.as_mut().expect("recovering");
                let previous = recovery.responses[replica as usize].unwrap_or(0);
                recovery.responses[replica as usize] = Some(previous.max(view));
                let responses: Vec<u64> = recovery.responses.iter().flatten().copied().collect();
                if responses.len() >= needed {
                    let view_max = *responses.iter().max().expect("responses");
                    if recovery.view_max.is_none_or(|known| known < view_max) {
                        recovery.view_max = Some(view_max);
                        let primary = self.primary_index(view_max);
                        if primary != self.config.replica {
                            self.send(
                                primary,
                                Message::RequestStartView {
                                    view: view_max,
                                    replica: self.config.replica,
                                    nonce: self.nonce,
                                },
                            );
                        }
                    }
                }
            }
            Message::CheckpointChunk {
                replica,
                checkpoint_op,
                header,
                snapshot_checksum,
                snapshot_bytes,
                offset,
                bytes,
            } => self.on_checkpoint_chunk(
                replica,
                checkpoint_op,
                header,
                snapshot_checksum,
                snapshot_bytes,
                offset,
                &bytes,
            ),
            Message::StartView {
                view,
                op,
                commit_max,
                checkpoint_op,
                replica,
                nonce,
                headers,
            } => {
                let Some(view_max) = self.recovery.as_ref().and_then(|r| r.view_max) else {
                    return;
                };
                if nonce != self.nonce
                    || view < view_max
                    || replica != self.primary_index(view)
                    || headers.is_empty()
                    || headers[0].op != op
                {
                    return;
                }
                if headers.iter().enumerate().any(|(i, h)| {
                    !h.valid_checksum()
                        || h.op + i as u64 != op
                        || (i > 0 && headers[i - 1].parent != h.checksum)
                }) {
                    return;
                }
                if op > self.checkpoint.op + self.config.journal_slots {
                    self.primary_checkpoint_op = self.primary_checkpoint_op.max(checkpoint_op);
                    self.primary_op = self.primary_op.max(op);
                    return;
                }
                self.recovery = None;
                // Everything up to the head may have been acknowledged by our lost incarnation.
                self.op_uncertain_max = op;
                self.status = Status::Normal;
                self.install_start_view(view, op, commit_max, checkpoint_op, &headers);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[derive(Debug, Default)]
    struct MemoryStorage {
        records: BTreeMap<Location, Vec<u8>>,
    }

    impl Storage for MemoryStorage {
        fn read(&mut self, location: Location) -> Vec<u8> {
            self.records.get(&location).cloned().unwrap_or_default()
        }
        fn write(&mut self, location: Location, bytes: &[u8]) {
            self.records.insert(location, bytes.to_vec());
        }
    }

    /// Appends every command to a byte log; replies with the log length.
    #[derive(Debug, Default)]
    struct Echo {
        log: Vec<u8>,
    }

    impl StateMachine for Echo {
        fn commit(
            &mut self,
            _op: u64,
            _timestamp_ns: u64,
            _client: u128,
            _request: u64,
            command: &[u8],
        ) -> Vec<u8> {
            self.log.extend_from_slice(command);
            (self.log.len() as u64).to_le_bytes().to_vec()
        }
        fn snapshot(&self) -> Vec<u8> {
            self.log.clone()
        }
        fn restore(&mut self, snapshot: &[u8]) {
            self.log = snapshot.to_vec();
        }
    }

    fn now(tick: u64) -> Instant {
        Instant {
            monotonic_ns: tick * constants::tick_ns,
            realtime_ns: 1_000_000_000_000 + tick * constants::tick_ns,
        }
    }

    fn small_config(replica_count: u8, replica: u8) -> Config {
        let mut config = Config::new(7, replica_count, replica);
        config.journal_slots = 16;
        config.checkpoint_interval_ops = 4;
        config.pipeline_prepares_max = 2;
        config.clients_max = 2;
        config
    }

    fn replies(actions: &[Action]) -> Vec<(u64, u64, Vec<u8>)> {
        actions
            .iter()
            .filter_map(|action| match action {
                Action::SendToClient {
                    message:
                        Message::Reply {
                            request, op, body, ..
                        },
                    ..
                } => Some((*request, *op, body.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn single_replica_commits_replies_and_replays_after_restart() {
        let config = small_config(1, 0);
        let mut storage = MemoryStorage::default();
        Replica::<MemoryStorage, Echo>::format(&config, &mut storage).unwrap();
        let mut replica =
            Replica::open(config.clone(), storage, Echo::default(), now(0), 1).unwrap();
        // A restarted (or new) single replica moves to a fresh view, through the same code path.
        assert_eq!((replica.status(), replica.view()), (Status::Normal, 1));
        let client = 99;
        let actions = replica.on_message(
            now(1),
            Message::Request {
                client,
                request: 0,
                operation: Operation::Register,
                body: vec![],
            },
        );
        assert_eq!(replies(&actions), vec![(0, 1, vec![])]);
        for request in 1..=6u64 {
            let actions = replica.on_message(
                now(request + 1),
                Message::Request {
                    client,
                    request,
                    operation: Operation::Command,
                    body: vec![request as u8],
                },
            );
            assert_eq!(
                replies(&actions),
                vec![(request, request + 1, (request).to_le_bytes().to_vec())]
            );
        }
        // A retry is answered from the reply cache, not executed again.
        let actions = replica.on_message(
            now(9),
            Message::Request {
                client,
                request: 6,
                operation: Operation::Command,
                body: vec![6],
            },
        );
        assert_eq!(replies(&actions), vec![(6, 7, 6u64.to_le_bytes().to_vec())]);
        assert_eq!(replica.state_machine().log, vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(replica.checkpoint_op(), 4);
        let (storage, _) = replica.into_parts();
        let replica = Replica::open(config, storage, Echo::default(), now(10), 2).unwrap();
        assert_eq!(replica.commit_min(), 7);
        assert_eq!(replica.view(), 2);
        assert_eq!(replica.state_machine().log, vec![1, 2, 3, 4, 5, 6]);
    }

    fn backup_with_one_prepare() -> (Config, MemoryStorage, Header) {
        let config = small_config(3, 1);
        let mut storage = MemoryStorage::default();
        Replica::<MemoryStorage, Echo>::format(&config, &mut storage).unwrap();
        let mut replica =
            Replica::open(config.clone(), storage, Echo::default(), now(0), 1).unwrap();
        let root = Header::root(7);
        let body = vec![1, 2, 3];
        let mut header = Header {
            checksum: 0,
            parent: root.checksum,
            body_checksum: checksum(&body),
            cluster: 7,
            view: 0,
            op: 1,
            commit: 0,
            timestamp_ns: 5,
            client: 1,
            request: 0,
            operation: Operation::Register,
            replica: 0,
            body_bytes: 3,
        };
        header.checksum = header.calculate_checksum();
        let actions = replica.on_message(now(1), Message::Prepare(Prepare { header, body }));
        let ok = Action::SendToReplica {
            replica: 0,
            message: Message::PrepareOk {
                view: 0,
                op: 1,
                checksum: header.checksum,
                replica: 1,
            },
        };
        assert!(
            actions.contains(&ok),
            "a durable prepare is acknowledged: {actions:?}"
        );
        let (storage, _) = replica.into_parts();
        (config, storage, header)
    }

    #[test]
    fn corrupt_acknowledged_prepare_is_faulty_never_a_nack() {
        let (config, mut storage, header) = backup_with_one_prepare();
        let location = Location::JournalPrepare { slot: 1 };
        let mut bytes = storage.read(location);
        bytes[40] ^= 1;
        storage.write(location, &bytes);
        let replica = Replica::open(config, storage, Echo::default(), now(2), 2).unwrap();
        assert_eq!(replica.op(), 1, "the redundant header still names op 1");
        let record = replica.do_view_change_record();
        let entry = record.entry(1).unwrap();
        assert_eq!(entry.header, Some(header));
        assert!(!entry.present && !entry.nack);
    }

    #[test]
    fn torn_unacknowledged_prepare_is_forgotten() {
        let (config, mut storage, _) = backup_with_one_prepare();
        // Crash between the prepare and its header: the header slot still says "unused", and
        // the prepare itself is torn.
        storage.write(Location::JournalHeader { slot: 1 }, &header_record(1, None));
        let location = Location::JournalPrepare { slot: 1 };
        let bytes = storage.read(location);
        storage.write(location, &bytes[..bytes.len() / 2]);
        let replica = Replica::open(config, storage, Echo::default(), now(2), 2).unwrap();
        assert_eq!(
            replica.op(),
            0,
            "a torn write that was never acknowledged is not in the log"
        );
        assert!(
            replica.do_view_change_record().entry(1).is_none(),
            "op 1 lies beyond our head: a nack"
        );
    }

    #[test]
    fn prepare_written_but_header_torn_is_kept() {
        let (config, mut storage, header) = backup_with_one_prepare();
        storage.write(Location::JournalHeader { slot: 1 }, &[1, 2, 3]);
        let replica = Replica::open(config, storage, Echo::default(), now(2), 2).unwrap();
        assert_eq!(replica.op(), 1);
        assert_eq!(replica.prepare_durable(1), Some(header));
    }

    #[test]
    fn superblock_survives_a_torn_copy() {
        let config = small_config(3, 0);
        let mut storage = MemoryStorage::default();
        Replica::<MemoryStorage, Echo>::format(&config, &mut storage).unwrap();
        let first = SuperBlock::read_quorum(&mut storage).unwrap();
        let mut second = first.clone();
        second.sequence += 1;
        second.view = 3;
        second.write_all(&mut storage);
        // Tear the newest copy 0 and rot copy 3: copies 1 and 2 still hold view 3.
        storage.write(Location::Superblock { copy: 0 }, &[0; 10]);
        let mut rotten = storage.read(Location::Superblock { copy: 3 });
        rotten[5] ^= 0x10;
        storage.write(Location::Superblock { copy: 3 }, &rotten);
        assert_eq!(SuperBlock::read_quorum(&mut storage).unwrap().view, 3);
        let replica = Replica::open(config.clone(), storage, Echo::default(), now(0), 1).unwrap();
        assert_eq!(replica.view(), 3);
        let mut other = MemoryStorage::default();
        let mut wrong = config;
        wrong.cluster = 8;
        assert!(matches!(
            Replica::open(wrong, MemoryStorage::default(), Echo::default(), now(0), 1),
            Err(OpenError::Unformatted)
        ));
        Replica::<MemoryStorage, Echo>::format(&small_config(3, 0), &mut other).unwrap();
        let mut mismatched = small_config(3, 0);
        mismatched.journal_slots = 32;
        assert!(matches!(
            Replica::open(mismatched, other, Echo::default(), now(0), 1),
            Err(OpenError::Mismatch(_))
        ));
    }

    /// A single replica that committed a register and `requests` commands (ops 1..=requests+1).
    fn single_replica_after(requests: u64) -> (Config, MemoryStorage, Vec<u8>) {
        let config = small_config(1, 0);
        let mut storage = MemoryStorage::default();
        Replica::<MemoryStorage, Echo>::format(&config, &mut storage).unwrap();
        let mut replica =
            Replica::open(config.clone(), storage, Echo::default(), now(0), 1).unwrap();
        let client = 99;
        replica.on_message(
            now(1),
            Message::Request {
                client,
                request: 0,
                operation: Operation::Register,
                body: vec![],
            },
        );
        for request in 1..=requests {
            let actions = replica.on_message(
                now(request + 1),
                Message::Request {
                    client,
                    request,
                    operation: Operation::Command,
                    body: vec![request as u8],
                },
            );
            assert_eq!(replies(&actions).len(), 1);
        }
        let log = replica.state_machine().log.clone();
        let (storage, _) = replica.into_parts();
        (config, storage, log)
    }

    fn flip_byte(storage: &mut MemoryStorage, location: Location, index: usize) {
        let mut bytes = storage.read(location);
        bytes[index] ^= 0x20;
        storage.write(location, &bytes);
    }

    #[test]
    fn corrupt_snapshot_is_rebuilt_from_previous_checkpoint_and_journal() {
        // Ops 1..=9: checkpoints at 4 (previous) and 8 (current), in the two snapshot areas.
        let (config, storage, log) = single_replica_after(8);
        let check = |damage: &dyn Fn(&mut MemoryStorage, &SuperBlock), expected: Result<(), ()>| {
            let mut storage = MemoryStorage {
                records: storage.records.clone(),
            };
            let superblock = SuperBlock::read_quorum(&mut storage).unwrap();
            assert_eq!(
                (superblock.checkpoint.op, superblock.checkpoint_previous.op),
                (8, 4)
            );
            damage(&mut storage, &superblock);
            let opened = Replica::open(config.clone(), storage, Echo::default(), now(20), 3);
            match (opened, expected) {
                (Ok(mut replica), Ok(())) => {
                    assert_eq!(replica.commit_min(), 9);
                    assert_eq!(replica.state_machine().log, log);
                    assert!(replica.checkpoint_servable(), "the snapshot was rewritten");
                }
                (Err(error), Err(())) => assert_eq!(error, OpenError::SnapshotCorrupt),
                (opened, expected) => panic!(
                    "expected {expected:?}, got {:?}",
                    opened.map(|replica| replica.commit_min())
                ),
            }
        };
        let current = |superblock: &SuperBlock| Location::Snapshot {
            area: superblock.checkpoint.snapshot_area,
        };
        let previous = |superblock: &SuperBlock| Location::Snapshot {
            area: superblock.checkpoint_previous.snapshot_area,
        };
        check(&|_, _| {}, Ok(()));
        // The newest snapshot rots: rebuilt from checkpoint 4 and ops 5..=8 of the journal.
        check(&|storage, sb| flip_byte(storage, current(sb), 12), Ok(()));
        // ... unless the previous snapshot rotted too,
        check(
            &|storage, sb| {
                flip_byte(storage, current(sb), 12);
                flip_byte(storage, previous(sb), 12);
            },
            Err(()),
        );
        // ... or an op between the two checkpoints is gone from the journal.
        check(
            &|storage, sb| {
                flip_byte(storage, current(sb), 12);
                flip_byte(storage, Location::JournalPrepare { slot: 6 }, 40);
            },
            Err(()),
        );
    }

    /// Prepare `op` of view 0 (primary 0) for client 1, chained to `parent`.
    fn prepare_after(parent: &Header, operation: Operation) -> Prepare {
        let op = parent.op + 1;
        let body = if operation == Operation::Register {
            vec![]
        } else {
            vec![op as u8]
        };
        let mut header = Header {
            checksum: 0,
            parent: parent.checksum,
            body_checksum: checksum(&body),
            cluster: 7,
            view: 0,
            op,
            commit: op - 1,
            timestamp_ns: 5 + op,
            client: 1,
            request: op - 1,
            operation,
            replica: 0,
            body_bytes: body.len() as u32,
        };
        header.checksum = header.calculate_checksum();
        Prepare { header, body }
    }

    #[test]
    fn backup_without_its_snapshot_vouches_for_no_checkpoint() {
        // Backup 1 of 3 commits ops 1..=4 (a register and three commands): checkpoint 4, whose
        // previous checkpoint is the root.
        let config = small_config(3, 1);
        let mut storage = MemoryStorage::default();
        Replica::<MemoryStorage, Echo>::format(&config, &mut storage).unwrap();
        let mut replica =
            Replica::open(config.clone(), storage, Echo::default(), now(0), 1).unwrap();
        let mut parent = Header::root(7);
        for op in 1..=4 {
            let operation = if op == 1 {
                Operation::Register
            } else {
                Operation::Command
            };
            let prepare = prepare_after(&parent, operation);
            parent = prepare.header;
            replica.on_message(now(op), Message::Prepare(prepare));
        }
        let commit = Message::Commit {
            view: 0,
            commit_max: 4,
            checkpoint_op: 0,
            op: 4,
            replica: 0,
        };
        replica.on_message(now(5), commit);
        assert_eq!((replica.commit_min(), replica.checkpoint_op()), (4, 4));
        let log = replica.state_machine().log.clone();
        let (storage, _) = replica.into_parts();
        // Reopened with the snapshot corrupt (and maybe op 2 too): the checkpoint it vouches
        // for in a DoViewChange, and whether it holds the checkpoint's state.
        let check = |journal_corrupt: bool, expected: (u64, bool)| {
            let mut storage = MemoryStorage {
                records: storage.records.clone(),
            };
            let superblock = SuperBlock::read_quorum(&mut storage).unwrap();
            let area = superblock.checkpoint.snapshot_area;
            flip_byte(&mut storage, Location::Snapshot { area }, 12);
            if journal_corrupt {
                flip_byte(&mut storage, Location::JournalPrepare { slot: 2 }, 40);
            }
            let mut replica =
                Replica::open(config.clone(), storage, Echo::default(), now(6), 2).unwrap();
            let vouched = replica.do_view_change_record().checkpoint_op;
            assert_eq!(
                (vouched, replica.checkpoint_servable()),
                expected,
                "journal corrupt: {journal_corrupt}"
            );
            if expected.1 {
                assert_eq!(replica.state_machine().log, log);
            }
        };
        // Rebuilt from the root and ops 1..=4 of the journal.
        check(false, (4, true));
        // Op 2 is gone too: no state, so no checkpoint to lead from.
        check(true, (0, false));
    }

    #[test]
    fn request_start_view_asks_a_started_view() {
        // Backup 1 of view 0 hears a ping from replica 2, then learns it is behind.
        let check = |ping: Option<(u64, bool)>, expected: (u8, u64)| {
            let config = small_config(3, 1);
            let mut storage = MemoryStorage::default();
            Replica::<MemoryStorage, Echo>::format(&config, &mut storage).unwrap();
            let mut replica = Replica::open(config, storage, Echo::default(), now(0), 1).unwrap();
            if let Some((view, normal)) = ping {
                let ping = Message::Ping {
                    replica: 2,
                    view,
                    normal,
                    ping_monotonic_ns: 0,
                };
                replica.on_message(now(1), ping);
            }
            let commit = Message::Commit {
                view: 0,
                commit_max: 3,
                checkpoint_op: 0,
                op: 3,
                replica: 0,
            };
            let asked: Vec<(u8, u64)> = replica
                .on_message(now(2), commit)
                .into_iter()
                .filter_map(|action| match action {
                    Action::SendToReplica {
                        replica,
                        message: Message::RequestStartView { view, .. },
                    } => Some((replica, view)),
                    _ => None,
                })
                .collect();
            assert_eq!(asked, vec![expected], "after ping {ping:?}");
        };
        check(None, (0, 0));
        // Replica 2 voted itself into view 2 (view change): nobody may ever lead view 2, so
        // ask our own view's primary.
        check(Some((2, false)), (0, 0));
        // Replica 2 is in normal status in view 2: view 2 started, its primary has the log.
        check(Some((2, true)), (2, 2));
    }

    #[test]
    fn config_bounds_are_checked() {
        let mut config = small_config(3, 0);
        assert!(config.validate().is_ok());
        config.journal_slots = 8;
        assert!(config.validate().unwrap_err().contains("journal_slots"));
        let config = Config::new(1, 7, 0);
        assert!(config.validate().unwrap_err().contains("replica_count"));
    }
}
