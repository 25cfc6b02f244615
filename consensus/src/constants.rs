//! Every bound of the protocol, named with its unit last.
//!
//! Values that every replica of a cluster must agree on (journal size, checkpoint interval,
//! pipeline depth, session table size) are defaults for [`crate::Config`] and are recorded in the
//! superblock, so a replica refuses to open with a configuration its data was not written with.

/// Largest cluster the protocol supports (the simulator's swarm draws 1..=6).
pub const replicas_max: usize = 6;

/// Copies of the superblock written in sequence; a torn copy on crash plus one corrupt copy still
/// leave a readable newest-or-previous state.
pub const superblock_copies: usize = 4;

/// Default: ops the primary may have prepared but not yet committed.
pub const pipeline_prepares_max: u64 = 8;

/// Default: journal ring size. A replica stores op X in slot X % slots and only while
/// X <= checkpoint + slots, so slots >= 2 * checkpoint_interval + 2 * pipeline.
pub const journal_slots_max: u64 = 256;

/// Default: ops between two checkpoints (snapshot + superblock update).
pub const checkpoint_interval_ops: u64 = 64;

/// Default: client sessions kept; registering one more evicts the least recently committed.
pub const clients_max: usize = 64;

/// Requests the primary queues while its pipeline is full; more are dropped (clients retry).
pub const request_queue_max: usize = 64;

/// Largest encoded message (frame) on the wire and largest prepare in a journal slot.
pub const message_bytes_max: usize = 1 << 20;

/// Room reserved in a frame for the envelope and a prepare header.
pub const message_overhead_bytes_max: usize = 512;

/// Largest command a client may submit (opaque bytes for the state machine).
pub const command_bytes_max: usize = message_bytes_max - message_overhead_bytes_max;

/// Largest reply the state machine may return for one command.
pub const reply_bytes_max: usize = command_bytes_max;

/// Headers returned for one `RequestHeaders`.
pub const headers_per_message_max: u64 = 64;

/// Snapshot bytes carried by one state-transfer chunk.
pub const checkpoint_chunk_bytes_max: usize = message_bytes_max - message_overhead_bytes_max;

/// Largest snapshot (state machine + client sessions) a checkpoint may hold.
pub const snapshot_bytes_max: u64 = 1 << 34;

/// The driver calls `on_tick` once per tick.
pub const tick_ns: u64 = 10_000_000;

/// Primary: resend a prepare to backups that have not acknowledged it.
pub const prepare_timeout_ticks: u64 = 25;
/// Primary: send a commit heartbeat this often.
pub const commit_heartbeat_timeout_ticks: u64 = 10;
/// Backup: no commit heartbeat from the primary for this long starts a view change vote.
pub const normal_heartbeat_timeout_ticks: u64 = 60;
/// Primary: an uncommitted prepare this old means the quorum went silent; stop heartbeats
/// (abdicate) so that the backups elect a primary they can reach.
pub const primary_abdicate_timeout_ticks: u64 = 120;
/// Resend `StartViewChange` while voting.
pub const start_view_change_message_timeout_ticks: u64 = 10;
/// Resend `DoViewChange` to the new primary while in view change.
pub const do_view_change_message_timeout_ticks: u64 = 10;
/// A view change not finished in this long moves on to the next view (plus jitter).
pub const view_change_status_timeout_ticks: u64 = 150;
/// Jitter added to the view change timeout so competing candidates spread out.
pub const view_change_jitter_ticks: u64 = 50;
/// Ask for missing headers / prepares this often.
pub const repair_timeout_ticks: u64 = 8;
/// Repair rounds one tick may start: the last answer of a round starts the next at once (so
/// repair keeps pace with a loaded primary), up to this many per tick.
pub const repair_rounds_per_tick_max: u64 = 16;
/// Ask the primary for a `StartView` this often while we know we are behind.
pub const request_start_view_timeout_ticks: u64 = 20;
/// Resend a state transfer chunk request.
pub const state_transfer_timeout_ticks: u64 = 20;
/// No commit progress for this long while behind the primary's checkpoint starts a transfer.
pub const state_transfer_stall_ticks: u64 = 100;
/// Prepares (encoded bytes) a state transfer's source sends right after the last chunk: its log
/// above the checkpoint, so the receiver goes on in order instead of waiting for repair. A
/// quarter of a peer's send queue (`transport::peer_queue_bytes_max`), which drops its oldest
/// frame when full: the chunk just queued must not be pushed out by what follows it.
pub const state_transfer_suffix_bytes_max: usize = 4 * message_bytes_max;
/// Resend a recovery request (disk lost) this often.
pub const recovery_timeout_ticks: u64 = 20;

/// Send clock pings to every other replica this often.
pub const ping_timeout_ticks: u64 = 40;
/// Primary: a read barrier not confirmed by a quorum in this long is refused (the primary may
/// be cut off from its view's quorum, or a view change is under way).
pub const read_barrier_timeout_ticks: u64 = 50;
/// Primary: read barriers waiting at once; more are refused as busy.
pub const read_barriers_max: usize = 1_024;
/// A clock synchronization window collects samples at least this long ...
pub const clock_window_min_ticks: u64 = 100;
/// ... and is abandoned if it has not reached agreement after this long.
pub const clock_window_max_ticks: u64 = 1_000;
/// A synchronized epoch is trusted for this long without a newer one.
pub const clock_epoch_max_ticks: u64 = 3_000;
/// Agreed intervals wider than this mean the clocks are not synchronized.
pub const clock_offset_tolerance_max_ns: u64 = 2_000_000_000;
