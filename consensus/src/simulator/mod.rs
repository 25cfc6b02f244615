//! The VOPR: a deterministic simulator that drives the real [`Replica`] code.
//!
//! One seed fixes everything: the cluster's shape ("swarm" randomization of replica count,
//! journal size, pipeline, session table, clients and their rates), the network's behaviour,
//! crashes, disk faults and clock faults. Time is simulated (ticks of [`tick_ns`]); nothing reads
//! a real clock, spawns a thread or touches a socket, so the same seed replays the same run —
//! checked by a trace hash over every delivered frame.
//!
//! Injected: message loss, delay and reordering, duplication, corruption in flight; symmetric and
//! one-way partitions; crashes (clean, or tearing the write in progress); restarts; corruption at
//! rest and misdirected journal writes on a minority of "faulty" replicas (fewer than a
//! replication quorum, so every committed op keeps an intact copy); a faulty replica losing its
//! whole disk (clusters of 3+); clock drift and jumps on a minority of clocks.
//!
//! Checked after every step: one checksum per committed op across replicas, each committed op
//! chained to its parent with increasing timestamps close to true time; a primary's log holding
//! every op acknowledged to a client (durability); each (client, request)
//! executed at most once, and identically everywhere; every reply a client accepts matches the
//! model at that op and respects real-time order (linearizability of the client history, with the
//! commit order as witness); checkpoints byte-identical across replicas; views, log views and
//! checkpoints never regress across restarts. Then a liveness phase heals a quorum ("core") and
//! requires it to converge within a bound; if the core provably lacks data to converge (its
//! members lost or corrupted the only copies: ops, or the only intact snapshot of a checkpoint),
//! the whole cluster is healed and must converge.
//!
//! The checkers are checked too: with the test-only `vopr-bugs` feature, [`RunOptions`] can make
//! every replica run a deliberate protocol bug, which `tests/vopr_bugs.rs` shows gets caught.

pub mod model;
pub mod network;
pub mod prng;
pub mod storage;

use std::collections::{BTreeMap, HashSet};

use crate::client::{Client, ClientEvent};
use crate::clock::Instant;
use crate::constants::{self, replicas_max, tick_ns};
use crate::message::{Header, Message};
#[cfg(feature = "vopr-bugs")]
use crate::replica::KnownBug;
use crate::replica::{Action, Config, OpenError, Replica, Status};
use crate::simulator::model::{Command, Model};
use crate::simulator::network::{Network, NetworkOptions, Node};
use crate::simulator::prng::Prng;
use crate::simulator::storage::SimStorage;

/// Ticks of the safety phase when not given.
pub const ticks_default: u64 = 6_000;
/// Ticks the liveness phase may take before the seed fails.
pub const liveness_ticks_max: u64 = 6_000;
const realtime_epoch_ns: u64 = 1_700_000_000_000_000_000;
const clock_offset_healthy_max_ns: u64 = 20_000_000;
const clock_drift_max_ppm: u64 = 200;
const clock_jump_max_ns: u64 = 600_000_000_000;
/// A replica's tick begins a read barrier with this chance (1 in N).
const read_barrier_one_in_ticks: u64 = 16;

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub seed: u64,
    /// Ticks of the safety phase.
    pub ticks: u64,
    /// Print replica states every this many ticks (0: never), for debugging a seed.
    pub log_every_ticks: u64,
    /// A deliberate protocol bug every replica runs with (test builds only).
    #[cfg(feature = "vopr-bugs")]
    pub known_bug: Option<KnownBug>,
}

impl RunOptions {
    pub fn new(seed: u64, ticks: u64) -> RunOptions {
        RunOptions {
            seed,
            ticks,
            log_every_ticks: 0,
            #[cfg(feature = "vopr-bugs")]
            known_bug: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub seed: u64,
    pub trace: u64,
    pub ticks: u64,
    pub replica_count: u8,
    pub client_count: usize,
    pub commits: u64,
    pub replies: u64,
    pub failure: Option<String>,
    /// Why the liveness core was excused from converging (the whole cluster then had to).
    pub liveness_excused: Option<String>,
    pub summary: String,
    pub stats: Stats,
}

#[derive(Debug, Clone)]
struct Swarm {
    replica_count: u8,
    config: Config,
    client_count: usize,
    request_idle_ticks_max: u64,
    network: NetworkOptions,
    partition_ppm: u64,
    partition_ticks_max: u64,
    crash_ppm: u64,
    down_ticks_max: u64,
    faulty_replicas: Vec<u8>,
    corrupt_ppm: u64,
    misdirect_ppm: u64,
    disk_loss_ppm: u64,
    clock_jump_ppm: u64,
    clock_faults_max: usize,
}

#[derive(Debug)]
struct SimClock {
    drift_ppm: i64,
    offset_ns: i64,
    jump_ns: i64,
}

#[derive(Debug)]
struct SimReplica {
    replica: Option<Replica<SimStorage, Model>>,
    storage: Option<SimStorage>,
    down_until: u64,
    /// Stays down for the rest of the run (outside the liveness core).
    down_forever: bool,
    last_view: u64,
    last_log_view: u64,
    last_checkpoint: u64,
    disk_lost: bool,
    clock: SimClock,
    last_logged: Option<(Status, u64, u64, u64)>,
}

#[derive(Debug)]
struct Pending {
    request: u64,
    command: Command,
    /// Highest op of any reply accepted by any client before this request was sent.
    op_acked_before: u64,
}

#[derive(Debug)]
struct SimClient {
    client: Client,
    pending: Option<Pending>,
    idle_until: u64,
    generation: u32,
}

struct Cluster {
    swarm: Swarm,
    prng: Prng,
    tick: u64,
    network: Network,
    replicas: Vec<SimReplica>,
    clients: Vec<SimClient>,
    client_index: BTreeMap<u128, usize>,
    trace: u64,
    /// op → committed header (first committer).
    committed: BTreeMap<u64, Header>,
    /// op → (client, request, reply) of executed commands.
    executed: BTreeMap<u64, (u128, u64, Vec<u8>)>,
    executed_requests: HashSet<(u128, u64)>,
    /// (client, request) → the command sent.
    commands: BTreeMap<(u128, u64), Command>,
    checkpoints: BTreeMap<u64, u128>,
    timestamps_checked: HashSet<u128>,
    timestamp_bound_ns: u64,
    op_acked_max: u64,
    /// The latest view any replica has been seen in, in normal status: a primary of an
    /// older view is stale (it can no longer commit, and its reads are fenced).
    view_normal_max: u64,
    /// Read barriers in flight: id → (replica, `op_acked_max` when it began).
    read_barriers: BTreeMap<u64, (u8, u64)>,
    read_barrier_next: u64,
    replies: u64,
    value_next: u64,
    failure: Option<String>,
    requests_enabled: bool,
    faults_enabled: bool,
    heal_at: u64,
    liveness_excused: Option<String>,
    log_every_ticks: u64,
    stats: Stats,
}

/// What a run injected and exercised (reported per seed, summed by `vopr`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    pub crashes: u64,
    pub crashes_torn: u64,
    pub disk_losses: u64,
    pub corruptions: u64,
    pub partitions: u64,
    pub clock_jumps: u64,
    pub view_changes: u64,
    pub state_transfers: u64,
    pub evictions: u64,
    /// Read barriers confirmed (each checked against every op acknowledged before it began).
    pub reads_confirmed: u64,
}

impl Stats {
    pub fn add(&mut self, other: &Stats) {
        self.crashes += other.crashes;
        self.crashes_torn += other.crashes_torn;
        self.disk_losses += other.disk_losses;
        self.corruptions += other.corruptions;
        self.partitions += other.partitions;
        self.clock_jumps += other.clock_jumps;
        self.view_changes += other.view_changes;
        self.state_transfers += other.state_transfers;
        self.evictions += other.evictions;
        self.reads_confirmed += other.reads_confirmed;
    }
}

fn swarm(prng: &mut Prng, options: &RunOptions) -> Swarm {
    let replica_count = prng.range(1, replicas_max as u64) as u8;
    let pipeline = prng.range(1, 4);
    let checkpoint_interval = [4u64, 8, 16][prng.below(3) as usize];
    let journal_slots = (2 * checkpoint_interval + 2 * pipeline).max(16) + prng.below(2) * 16;
    let clients_max = prng.range(2, 6) as usize;
    let mut config = Config::new(prng.u128() | 1, replica_count, 0);
    config.journal_slots = journal_slots;
    config.checkpoint_interval_ops = checkpoint_interval;
    config.pipeline_prepares_max = pipeline;
    config.clients_max = clients_max;
    #[cfg(feature = "vopr-bugs")]
    {
        config.known_bug = options.known_bug;
    }
    #[cfg(not(feature = "vopr-bugs"))]
    let _ = options;
    config.validate().expect("swarm config is valid");
    let quorum = replica_count as usize / 2 + 1;
    let faulty_count = if replica_count == 1 {
        0
    } else {
        prng.below(quorum as u64) as usize
    };
    let mut faulty_replicas: Vec<u8> = Vec::new();
    while faulty_replicas.len() < faulty_count {
        let replica = prng.below(replica_count as u64) as u8;
        if !faulty_replicas.contains(&replica) {
            faulty_replicas.push(replica);
        }
    }
    let delay_min_ticks = prng.range(1, 3);
    Swarm {
        replica_count,
        config,
        client_count: prng.range(1, (clients_max as u64 * 2).min(8)) as usize,
        request_idle_ticks_max: prng.range(1, 60),
        network: NetworkOptions {
            delay_min_ticks,
            delay_max_ticks: delay_min_ticks + prng.range(0, 30),
            loss_ppm: prng.range(0, 80_000),
            duplicate_ppm: prng.range(0, 30_000),
            corrupt_ppm: prng.range(0, 5_000),
        },
        partition_ppm: prng.range(0, 3_000),
        partition_ticks_max: prng.range(50, 800),
        crash_ppm: prng.range(0, 2_500),
        down_ticks_max: prng.range(20, 600),
        faulty_replicas,
        corrupt_ppm: prng.range(0, 20_000),
        misdirect_ppm: prng.range(0, 5_000),
        // Per crash of a faulty replica.
        disk_loss_ppm: if replica_count >= 3 && prng.bool() {
            prng.range(20_000, 150_000)
        } else {
            0
        },
        clock_jump_ppm: prng.range(0, 1_000),
        clock_faults_max: replica_count as usize - quorum,
    }
}

impl Cluster {
    fn new(options: &RunOptions) -> Cluster {
        let seed = options.seed;
        let mut prng = Prng::new(seed);
        let swarm = swarm(&mut prng, options);
        let network = Network::new(swarm.network.clone(), prng.fork());
        let mut replicas = Vec::new();
        for index in 0..swarm.replica_count {
            let mut config = swarm.config.clone();
            config.replica = index;
            let mut storage = SimStorage::new(config.journal_slots, prng.fork());
            Replica::<SimStorage, Model>::format(&config, &mut storage).expect("format");
            let clock = SimClock {
                drift_ppm: prng.range(0, 2 * clock_drift_max_ppm) as i64
                    - clock_drift_max_ppm as i64,
                offset_ns: prng.range(0, 2 * clock_offset_healthy_max_ns) as i64
                    - clock_offset_healthy_max_ns as i64,
                jump_ns: 0,
            };
            replicas.push(SimReplica {
                replica: None,
                storage: Some(storage),
                down_until: 0,
                down_forever: false,
                last_view: 0,
                last_log_view: 0,
                last_checkpoint: 0,
                disk_lost: false,
                clock,
                last_logged: None,
            });
        }
        let timestamp_bound_ns = constants::clock_offset_tolerance_max_ns
            + 4 * clock_offset_healthy_max_ns
            + 2 * swarm.network.delay_max_ticks * tick_ns
            + constants::clock_epoch_max_ticks * tick_ns * clock_drift_max_ppm / 1_000_000 * 2
            + 1_000_000_000;
        let mut cluster = Cluster {
            prng,
            tick: 0,
            network,
            replicas,
            clients: Vec::new(),
            client_index: BTreeMap::new(),
            trace: seed,
            committed: BTreeMap::new(),
            executed: BTreeMap::new(),
            executed_requests: HashSet::new(),
            commands: BTreeMap::new(),
            checkpoints: BTreeMap::new(),
            timestamps_checked: HashSet::new(),
            timestamp_bound_ns,
            op_acked_max: 0,
            view_normal_max: 0,
            read_barriers: BTreeMap::new(),
            read_barrier_next: 0,
            replies: 0,
            value_next: 1,
            failure: None,
            requests_enabled: true,
            faults_enabled: true,
            heal_at: 0,
            liveness_excused: None,
            log_every_ticks: 0,
            stats: Stats::default(),
            swarm,
        };
        for index in 0..cluster.swarm.replica_count {
            cluster.restart(index);
        }
        for _ in 0..cluster.swarm.client_count {
            cluster.add_client(0);
        }
        cluster
    }

    fn add_client(&mut self, generation: u32) {
        let id = self.prng.u128() | 1;
        let index = self.clients.len();
        self.client_index.insert(id, index);
        self.clients.push(SimClient {
            client: Client::new(id, self.swarm.replica_count),
            pending: None,
            idle_until: 0,
            generation,
        });
    }

    fn true_ns(&self) -> u64 {
        self.tick * tick_ns
    }

    fn instant(&self, replica: u8) -> Instant {
        let clock = &self.replicas[replica as usize].clock;
        let t = self.true_ns() as i128;
        let monotonic = t + t * clock.drift_ppm as i128 / 1_000_000;
        let realtime =
            realtime_epoch_ns as i128 + monotonic + clock.offset_ns as i128 + clock.jump_ns as i128;
        Instant {
            monotonic_ns: monotonic.max(0) as u64,
            realtime_ns: realtime.max(0) as u64,
        }
    }

    fn fail(&mut self, reason: impl std::fmt::Display) {
        if self.failure.is_none() {
            self.failure = Some(format!("tick {}: {reason}", self.tick));
        }
    }

    fn mix_trace(&mut self, value: u64) {
        let mut z = self.trace ^ value.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        self.trace = z ^ (z >> 31);
    }

    // ------------------------------------------------------------------------------------
    // Replica lifecycle.

    fn restart(&mut self, index: u8) {
        let now = self.instant(index);
        let entropy = self.prng.u128();
        let misdirect_ppm = if self.faults_enabled && self.swarm.faulty_replicas.contains(&index) {
            self.swarm.misdirect_ppm
        } else {
            0
        };
        let mut config = self.swarm.config.clone();
        config.replica = index;
        let sim = &mut self.replicas[index as usize];
        assert!(sim.replica.is_none());
        let mut storage = sim.storage.take().expect("storage of a down replica");
        storage.reset_after_crash();
        if self.log_every_ticks > 0 {
            use crate::storage::Storage as _;
            for copy in 0..4u8 {
                let bytes = storage.read(crate::storage::Location::Superblock { copy });
                let decoded = crate::storage::SuperBlock::decode(&bytes)
                    .map(|s| (s.sequence, s.view, s.log_view, s.checkpoint.op));
                println!(
                    "tick {} replica {index} superblock copy {copy}: {decoded:?}",
                    self.tick
                );
            }
        }
        storage.misdirect_ppm = misdirect_ppm;
        let disk_lost = sim.disk_lost;
        let model = Model::new(storage.crash_flag.clone());
        let opened = if disk_lost {
            Replica::recover(config, storage, model, now, entropy)
        } else {
            Replica::open(config, storage, model, now, entropy)
        };
        let replica = match opened {
            Ok(replica) => replica,
            Err(OpenError::Unformatted) => {
                self.fail(format!("replica {index} cannot open: no valid superblock"));
                return;
            }
            Err(error) => {
                self.fail(format!("replica {index} cannot open: {error}"));
                return;
            }
        };
        let sim = &mut self.replicas[index as usize];
        if !disk_lost
            && (replica.view() < sim.last_view
                || replica.log_view() < sim.last_log_view
                || replica.checkpoint_op() < sim.last_checkpoint)
        {
            let message = format!(
                "replica {index} regressed across restart: view {}→{} log_view {}→{} checkpoint {}→{}",
                sim.last_view,
                replica.view(),
                sim.last_log_view,
                replica.log_view(),
                sim.last_checkpoint,
                replica.checkpoint_op()
            );
            self.fail(message);
        }
        let sim = &mut self.replicas[index as usize];
        sim.replica = Some(replica);
        self.mix_trace(0x5245_5354 ^ index as u64);
        self.observe(index, Vec::new());
    }

    fn crash(&mut self, index: u8) {
        if self.log_every_ticks > 0 {
            println!("tick {} replica {index}: crash", self.tick);
        }
        self.stats.crashes += 1;
        self.read_barriers
            .retain(|_, (replica, _)| *replica != index);
        let sim = &mut self.replicas[index as usize];
        sim.last_logged = None;
        let replica = sim.replica.take().expect("crash an up replica");
        let (mut storage, mut state_machine) = replica.into_parts();
        storage.reset_after_crash();
        sim.storage = Some(storage);
        // Commands executed by the dying step before it died really ran (only committed ops are
        // executed), and their effects may live on in a checkpoint it managed to write.
        for entry in std::mem::take(&mut state_machine.executed) {
            self.check_executed(index, entry.op, entry.client, entry.request, entry.reply);
        }
        self.mix_trace(0x4352_4153 ^ index as u64);
    }

    fn lose_disk(&mut self, index: u8) {
        let sim = &mut self.replicas[index as usize];
        assert!(sim.replica.is_none());
        let slots = self.swarm.config.journal_slots;
        sim.storage = Some(SimStorage::new(slots, self.prng.fork()));
        sim.disk_lost = true;
        self.stats.disk_losses += 1;
        sim.last_view = 0;
        sim.last_log_view = 0;
        sim.last_checkpoint = 0;
    }

    /// Run one replica step (message or tick), with a possible crash inside it.
    fn step(&mut self, index: u8, message: Option<Message>) {
        let message_was_tick = message.is_none();
        let now = self.instant(index);
        let sim = &mut self.replicas[index as usize];
        let Some(replica) = sim.replica.as_mut() else {
            return;
        };
        let mut actions = match message {
            Some(message) => replica.on_message(now, message),
            None => replica.on_tick(now),
        };
        let crashed = replica.storage().crashed();
        if crashed {
            self.stats.crashes_torn += 1;
            // The process died mid-step: nothing it meant to send left the machine.
            self.crash(index);
            let down = self.prng.range(1, self.swarm.down_ticks_max);
            self.replicas[index as usize].down_until = self.tick + down;
            return;
        }
        // Now and then a read: on a primary it must not be confirmed below any op
        // acknowledged before it began (checked in `observe`).
        if message_was_tick && self.prng.below(read_barrier_one_in_ticks) == 0 {
            let id = self.read_barrier_next;
            self.read_barrier_next += 1;
            self.read_barriers.insert(id, (index, self.op_acked_max));
            let replica = self.replicas[index as usize]
                .replica
                .as_mut()
                .expect("stepped above");
            actions.extend(replica.on_read_barrier(now, id));
        }
        self.observe(index, actions);
    }

    /// Route a step's actions and run the checkers on what changed.
    fn observe(&mut self, index: u8, actions: Vec<Action>) {
        let cluster = self.swarm.config.cluster;
        for action in actions {
            match action {
                Action::SendToReplica { replica, message } => {
                    if self.log_every_ticks > 0
                        && let Message::PrepareOk {
                            view, op, checksum, ..
                        } = &message
                    {
                        println!(
                            "tick {} replica {index}: prepare_ok view {view} op {op} {:08x} to {replica}",
                            self.tick, *checksum as u32
                        );
                    }
                    self.check_prepare_timestamp(index, &message);
                    let bytes = message.encode(cluster);
                    self.network.send(
                        Node::Replica(index),
                        Node::Replica(replica),
                        bytes,
                        self.tick,
                    );
                }
                Action::SendToClient { client, message } => {
                    if let Some(&client_index) = self.client_index.get(&client) {
                        let bytes = message.encode(cluster);
                        self.network.send(
                            Node::Replica(index),
                            Node::Client(client_index as u32),
                            bytes,
                            self.tick,
                        );
                    }
                }
                Action::ReadConfirmed { id, op } => {
                    if let Some((_, acknowledged)) = self.read_barriers.remove(&id) {
                        self.stats.reads_confirmed += 1;
                        if op < acknowledged {
                            self.fail(format!(
                                "stale read: replica {index} confirmed read barrier {id} at op {op}, below op {acknowledged} acknowledged to a client before it began"
                            ));
                        }
                    }
                }
                Action::ReadRefused { id } => {
                    self.read_barriers.remove(&id);
                }
                Action::Committed { header } => {
                    if self.log_every_ticks > 0 {
                        println!(
                            "tick {} replica {index} committed op {} view {} checksum {:08x}",
                            self.tick, header.op, header.view, header.checksum as u32
                        );
                    }
                    self.check_commit(index, header)
                }
            }
        }
        if self.log_every_ticks > 0 {
            let sim = &mut self.replicas[index as usize];
            if let Some(replica) = sim.replica.as_ref() {
                let state = (
                    replica.status(),
                    replica.view(),
                    replica.log_view(),
                    replica.op(),
                );
                if sim.last_logged != Some(state) {
                    sim.last_logged = Some(state);
                    println!(
                        "tick {} replica {index}: {:?} view {} log_view {} op {} commit {}",
                        self.tick,
                        state.0,
                        state.1,
                        state.2,
                        state.3,
                        replica.commit_min()
                    );
                }
            }
        }
        let Some(replica) = self.replicas[index as usize].replica.as_mut() else {
            return;
        };
        if replica.status() != Status::Recovering {
            // Recovered: from now on its superblock holds promises it must keep.
            self.replicas[index as usize].disk_lost = false;
        }
        let Some(replica) = self.replicas[index as usize].replica.as_mut() else {
            return;
        };
        let executed = std::mem::take(&mut replica_state_machine_mut(replica).executed);
        let replica_normal = replica.status() == Status::Normal;
        let leads = replica_normal && replica.is_primary();
        let head = replica.op();
        let (view, log_view, checkpoint_op, snapshot) = (
            replica.view(),
            replica.log_view(),
            replica.checkpoint_op(),
            replica.checkpoint_snapshot_checksum(),
        );
        for entry in executed {
            self.check_executed(index, entry.op, entry.client, entry.request, entry.reply);
        }
        if replica_normal {
            self.view_normal_max = self.view_normal_max.max(view);
        }
        if leads && view >= self.view_normal_max {
            self.check_durable(index, view, head);
        }
        let sim = &mut self.replicas[index as usize];
        if view > sim.last_view && sim.last_view > 0 {
            self.stats.view_changes += 1;
        }
        if checkpoint_op > sim.last_checkpoint + self.swarm.config.checkpoint_interval_ops
            && sim.last_checkpoint > 0
        {
            self.stats.state_transfers += 1;
        }
        let sim = &mut self.replicas[index as usize];
        sim.last_view = sim.last_view.max(view);
        sim.last_log_view = sim.last_log_view.max(log_view);
        sim.last_checkpoint = sim.last_checkpoint.max(checkpoint_op);
        if checkpoint_op > 0 {
            match self.checkpoints.get(&checkpoint_op) {
                Some(&expected) if expected != snapshot => {
                    self.fail(format!("checkpoint {checkpoint_op} of replica {index} differs: {snapshot:032x} vs {expected:032x}"));
                }
                Some(_) => {}
                None => {
                    self.checkpoints.insert(checkpoint_op, snapshot);
                }
            }
        }
    }

    /// A primary leading `view` (in normal status), the latest view started, holds every op
    /// acknowledged to a client and committed in `view` or before: a log that ends below one
    /// lost it. (An op replaced by another is caught by the agreement check; this catches one
    /// that is simply gone.) A primary of an older view is not checked: it may be cut off
    /// while a later view commits, after it, ops an earlier view prepared and it never had.
    fn check_durable(&mut self, index: u8, view: u64, head: u64) {
        let acknowledged = self.op_acked_max;
        if let Some(header) = self.committed.get(&acknowledged)
            && header.view <= view
            && head < acknowledged
        {
            self.fail(format!(
                "durability: primary {index} leads view {view} with a log ending at op {head}, \
                 below op {acknowledged} acknowledged to a client"
            ));
        }
    }

    fn check_prepare_timestamp(&mut self, index: u8, message: &Message) {
        if let Message::Prepare(prepare) = message {
            // A fresh prepare from the primary of the current view: its timestamp was just taken.
            // (Older prepares are resent during repair and view changes, long after.)
            let fresh = self.replicas[index as usize]
                .replica
                .as_ref()
                .is_some_and(|r| {
                    r.is_primary()
                        && r.status() == Status::Normal
                        && r.view() == prepare.header.view
                        && r.op() == prepare.header.op
                });
            if prepare.header.replica == index && fresh {
                self.check_timestamp(prepare.header);
            }
        }
    }

    fn check_timestamp(&mut self, header: Header) {
        if !self.timestamps_checked.insert(header.checksum) {
            return;
        }
        let now = realtime_epoch_ns + self.true_ns();
        let low = now.saturating_sub(self.timestamp_bound_ns);
        let high = now + self.timestamp_bound_ns + header.op;
        if header.timestamp_ns < low || header.timestamp_ns > high {
            self.fail(format!(
                "clock: op {} timestamp {} is {} ms from true time",
                header.op,
                header.timestamp_ns,
                (header.timestamp_ns as i128 - now as i128) / 1_000_000
            ));
        }
    }

    fn check_commit(&mut self, index: u8, header: Header) {
        self.mix_trace(header.checksum as u64);
        // A single replica sends no prepares: check its timestamps as it commits them, unless
        // it is replaying ops prepared before a restart (always in an older view).
        if self.replicas[index as usize]
            .replica
            .as_ref()
            .is_some_and(|r| r.replica_count_is_one() && r.view() == header.view)
        {
            self.check_timestamp(header);
        }
        match self.committed.get(&header.op) {
            Some(existing) if existing.checksum != header.checksum => {
                let message = format!(
                    "agreement: op {} committed as {:032x} by replica {index} but as {:032x} before",
                    header.op, header.checksum, existing.checksum
                );
                self.fail(message);
            }
            Some(_) => {}
            None => {
                if let Some(parent) = self.committed.get(&(header.op - 1)).copied() {
                    if parent.checksum != header.parent {
                        self.fail(format!(
                            "chain: op {} does not chain to committed op {}",
                            header.op,
                            header.op - 1
                        ));
                    }
                    if parent.timestamp_ns >= header.timestamp_ns {
                        self.fail(format!(
                            "clock: op {} timestamp does not increase",
                            header.op
                        ));
                    }
                }
                if let Some(child) = self.committed.get(&(header.op + 1)).copied()
                    && child.parent != header.checksum
                {
                    self.fail(format!(
                        "chain: op {} does not chain to committed op {}",
                        header.op + 1,
                        header.op
                    ));
                }
                self.committed.insert(header.op, header);
            }
        }
    }

    fn check_executed(&mut self, index: u8, op: u64, client: u128, request: u64, reply: Vec<u8>) {
        match self.executed.get(&op) {
            Some((c, r, expected)) => {
                if *c != client || *r != request || *expected != reply {
                    self.fail(format!(
                        "replica {index} executed op {op} differently from another replica"
                    ));
                }
            }
            None => {
                if !self.executed_requests.insert((client, request)) {
                    self.fail(format!("exactly-once: client {client:x} request {request} executed twice (again at op {op})"));
                }
                self.executed.insert(op, (client, request, reply));
            }
        }
    }

    // ------------------------------------------------------------------------------------
    // Clients.

    fn tick_clients(&mut self) {
        for index in 0..self.clients.len() {
            let mut sends = self.clients[index].client.on_tick();
            let sim = &mut self.clients[index];
            if self.requests_enabled
                && !sim.client.busy()
                && !sim.client.evicted()
                && self.tick >= sim.idle_until
            {
                if !sim.client.registered() {
                    sends.extend(sim.client.register());
                } else {
                    let key = self.prng.below(4);
                    let command = if self.prng.below(4) == 0 {
                        Command::Get { key }
                    } else {
                        self.value_next += 1;
                        Command::Append {
                            key,
                            value: self.value_next,
                        }
                    };
                    let sim = &mut self.clients[index];
                    let (request, more) = sim.client.request(command.encode());
                    sends.extend(more);
                    sim.pending = Some(Pending {
                        request,
                        command,
                        op_acked_before: self.op_acked_max,
                    });
                    let id = sim.client.id();
                    self.commands.insert((id, request), command);
                }
            }
            let cluster = self.swarm.config.cluster;
            for (replica, message) in sends {
                let bytes = message.encode(cluster);
                self.network.send(
                    Node::Client(index as u32),
                    Node::Replica(replica),
                    bytes,
                    self.tick,
                );
            }
        }
    }

    fn on_client_message(&mut self, index: usize, message: Message) {
        let id = self.clients[index].client.id();
        let Some(event) = self.clients[index].client.on_message(message) else {
            return;
        };
        let idle = self.prng.range(0, self.swarm.request_idle_ticks_max);
        self.clients[index].idle_until = self.tick + idle;
        match event {
            ClientEvent::Registered { .. } => {}
            ClientEvent::Reply { request, op, body } => {
                let pending = self.clients[index]
                    .pending
                    .take()
                    .expect("reply to a pending request");
                assert_eq!(pending.request, request);
                self.replies += 1;
                match self.executed.get(&op) {
                    Some((client, executed_request, reply)) => {
                        if *client != id || *executed_request != request || *reply != body {
                            self.fail(format!("linearizability: client {id:x} request {request} got a reply that op {op} does not match"));
                        }
                    }
                    None => self.fail(format!("linearizability: client {id:x} request {request} acknowledged at op {op}, which no replica executed")),
                }
                if op <= pending.op_acked_before {
                    self.fail(format!(
                        "linearizability: request {request} of client {id:x} committed at op {op}, before op {} acknowledged earlier",
                        pending.op_acked_before
                    ));
                }
                self.op_acked_max = self.op_acked_max.max(op);
                let _ = pending.command;
            }
            ClientEvent::Evicted => {
                self.stats.evictions += 1;
                self.clients[index].pending = None;
                let generation = self.clients[index].generation + 1;
                if generation < 4 {
                    self.add_client(generation);
                }
            }
        }
    }

    // ------------------------------------------------------------------------------------
    // Faults.

    fn tick_faults(&mut self) {
        let count = self.swarm.replica_count;
        for index in 0..count {
            let sim = &self.replicas[index as usize];
            if sim.down_forever {
                continue;
            }
            if sim.replica.is_some() {
                if self.prng.chance(self.swarm.crash_ppm) {
                    if self.prng.bool() {
                        // Die in the middle of a later step, tearing the write in progress.
                        let writes = self.prng.range(1, 4) as u32;
                        let replica = self.replicas[index as usize].replica.as_mut().expect("up");
                        replica.storage_mut().arm_crash(writes);
                        continue;
                    }
                    self.crash(index);
                    let down = self.prng.range(1, self.swarm.down_ticks_max);
                    self.replicas[index as usize].down_until = self.tick + down;
                    // One lost disk at a time: two replicas rejoining empty at once could leave a
                    // cluster of 4 without a view change quorum that remembers anything.
                    let disk_lost_already = self.replicas.iter().any(|r| r.disk_lost);
                    if self.swarm.faulty_replicas.contains(&index)
                        && !disk_lost_already
                        && self.prng.chance(self.swarm.disk_loss_ppm)
                    {
                        self.lose_disk(index);
                    }
                }
            } else if self.tick >= sim.down_until {
                self.restart(index);
            }
            if self.swarm.faulty_replicas.contains(&index)
                && self.prng.chance(self.swarm.corrupt_ppm)
            {
                let sim = &mut self.replicas[index as usize];
                let storage = match (sim.replica.as_mut(), sim.storage.as_mut()) {
                    (Some(replica), _) => Some(replica.storage_mut()),
                    (None, Some(storage)) => Some(storage),
                    _ => None,
                };
                if let Some(storage) = storage
                    && storage.corrupt_at_rest().is_some()
                {
                    self.stats.corruptions += 1;
                }
            }
        }
        if self.prng.chance(self.swarm.partition_ppm) && count > 1 {
            self.network.heal();
            if self.prng.bool() {
                // Symmetric: a random split.
                let mut side = [false; 6];
                for flag in side.iter_mut().take(count as usize) {
                    *flag = self.prng.bool();
                }
                for a in 0..count as usize {
                    for b in 0..count as usize {
                        self.network.blocked[a][b] = side[a] != side[b];
                    }
                }
            } else {
                // One-way: a replica cannot send to the others (or cannot hear them).
                let victim = self.prng.below(count as u64) as usize;
                let outbound = self.prng.bool();
                for other in 0..count as usize {
                    if other != victim {
                        if outbound {
                            self.network.blocked[victim][other] = true;
                        } else {
                            self.network.blocked[other][victim] = true;
                        }
                    }
                }
            }
            self.heal_at = self.tick + self.prng.range(10, self.swarm.partition_ticks_max);
            self.stats.partitions += 1;
        }
        if self.tick >= self.heal_at {
            self.network.heal();
        }
        if self.prng.chance(self.swarm.clock_jump_ppm) && self.swarm.clock_faults_max > 0 {
            let jumped = self
                .replicas
                .iter()
                .filter(|r| r.clock.jump_ns != 0)
                .count();
            let index = self.prng.below(count as u64) as usize;
            if self.replicas[index].clock.jump_ns != 0 {
                self.replicas[index].clock.jump_ns = 0;
            } else if jumped < self.swarm.clock_faults_max {
                let magnitude = self.prng.range(1, clock_jump_max_ns) as i64;
                self.stats.clock_jumps += 1;
                self.replicas[index].clock.jump_ns = if self.prng.bool() {
                    magnitude
                } else {
                    -magnitude
                };
            }
        }
    }
}

impl Cluster {
    fn log_states(&self) {
        let mut line = format!("tick {:>6}:", self.tick);
        for (index, sim) in self.replicas.iter().enumerate() {
            match &sim.replica {
                None => line.push_str(&format!(" [{index} down]")),
                Some(r) => line.push_str(&format!(
                    " [{index} {:?} v{} lv{} op{} c{}/{} cp{}]",
                    r.status(),
                    r.view(),
                    r.log_view(),
                    r.op(),
                    r.commit_min(),
                    r.commit_max(),
                    r.checkpoint_op()
                )),
            }
        }
        let busy = self.clients.iter().filter(|c| c.client.busy()).count();
        line.push_str(&format!(
            " busy_clients={busy} blocked={:?}",
            (0..self.swarm.replica_count as usize)
                .map(|a| (0..self.swarm.replica_count as usize)
                    .filter(|&b| self.network.blocked[a][b])
                    .count())
                .collect::<Vec<_>>()
        ));
        println!("{line}");
    }

    fn tick_once(&mut self) {
        self.tick += 1;
        if self.log_every_ticks > 0 && self.tick.is_multiple_of(self.log_every_ticks) {
            self.log_states();
        }
        if self.faults_enabled {
            self.tick_faults();
        } else {
            for index in 0..self.swarm.replica_count {
                let sim = &self.replicas[index as usize];
                if sim.replica.is_none() && !sim.down_forever {
                    self.restart(index);
                }
            }
        }
        let cluster = self.swarm.config.cluster;
        for packet in self.network.deliver(self.tick) {
            let trailer = packet.bytes.len().saturating_sub(8);
            let mut fingerprint = [0u8; 8];
            fingerprint
                .copy_from_slice(&packet.bytes[trailer..trailer + 8.min(packet.bytes.len())]);
            self.mix_trace(u64::from_le_bytes(fingerprint) ^ self.tick);
            let Ok(message) = Message::decode(&packet.bytes, cluster) else {
                continue;
            };
            match packet.to {
                Node::Replica(index) => {
                    if self.replicas[index as usize].replica.is_some() {
                        self.step(index, Some(message));
                    }
                }
                Node::Client(index) => self.on_client_message(index as usize, message),
            }
        }
        for index in 0..self.swarm.replica_count {
            if self.replicas[index as usize].replica.is_some() {
                self.step(index, None);
            }
        }
        self.tick_clients();
    }

    fn converged(&self, core: &[u8]) -> Option<String> {
        if let Some(client) = self.clients.iter().find(|c| c.client.busy()) {
            let id = client.client.id();
            let sessions: Vec<Option<(u64, u64)>> = core
                .iter()
                .filter_map(|&i| self.replicas[i as usize].replica.as_ref())
                .map(|r| r.client_session(id))
                .collect();
            return Some(format!(
                "client {id:x} still has request {:?} in flight (sessions in core: {sessions:?})",
                client.client.inflight()
            ));
        }
        let mut view = None;
        let mut op = None;
        for &index in core {
            let Some(replica) = self.replicas[index as usize].replica.as_ref() else {
                return Some(format!("replica {index} is down"));
            };
            if replica.status() != Status::Normal {
                return Some(format!(
                    "replica {index} is {:?} in view {}",
                    replica.status(),
                    replica.view()
                ));
            }
            if *view.get_or_insert(replica.view()) != replica.view() {
                return Some(format!(
                    "replicas disagree on the view ({} vs {})",
                    view.unwrap_or(0),
                    replica.view()
                ));
            }
            if *op.get_or_insert(replica.op()) != replica.op()
                || replica.commit_min() != replica.op()
            {
                return Some(format!(
                    "replica {index} has op {} commit {} (others op {})",
                    replica.op(),
                    replica.commit_min(),
                    op.unwrap_or(0)
                ));
            }
            if replica.commit_min() < self.op_acked_max {
                return Some(format!(
                    "replica {index} committed {} < acknowledged op {}",
                    replica.commit_min(),
                    self.op_acked_max
                ));
            }
        }
        let view = view.unwrap_or(0);
        let primary = (view % self.swarm.replica_count as u64) as u8;
        if !core.contains(&primary) {
            return Some(format!(
                "primary {primary} of view {view} is outside the core"
            ));
        }
        None
    }

    /// Why the core cannot be expected to converge, if it provably lacks what it needs.
    fn core_unrecoverable(&mut self, core: &[u8]) -> Option<String> {
        // Only a checkpoint whose snapshot is intact somewhere in the core can be transferred.
        let mut checkpoint_high = 0;
        for &index in core {
            if let Some(replica) = self.replicas[index as usize].replica.as_mut()
                && replica.checkpoint_servable()
            {
                checkpoint_high = checkpoint_high.max(replica.checkpoint_op());
            }
        }
        let up: Vec<&Replica<SimStorage, Model>> = core
            .iter()
            .filter_map(|&i| self.replicas[i as usize].replica.as_ref())
            .collect();
        if up
            .iter()
            .any(|r| matches!(r.status(), Status::Recovering | Status::RecoveringHead))
        {
            return Some("a core replica lost its disk or its head".to_string());
        }
        let commit_low = up.iter().map(|r| r.commit_min()).min().unwrap_or(0);
        let op_high = up.iter().map(|r| r.op()).max().unwrap_or(0);
        for op in commit_low + 1..=op_high {
            if op <= checkpoint_high {
                continue; // A state transfer covers it.
            }
            let held = up.iter().any(|r| {
                r.prepare_durable(op).is_some_and(|h| {
                    self.committed
                        .get(&op)
                        .is_none_or(|c| c.checksum == h.checksum)
                })
            });
            if !held {
                return Some(format!("no core replica holds op {op} intact"));
            }
        }
        None
    }

    /// Replicas that lost their disk or their head take no part in view changes until a
    /// primary sends them the log; with fewer than a view change quorum left, a cluster that
    /// needs a view change (its primary among them) cannot recover — a known limit of the
    /// protocol, shared with TigerBeetle's recovering_head.
    fn cluster_unrecoverable(&self) -> Option<String> {
        let participants = self
            .replicas
            .iter()
            .filter_map(|sim| sim.replica.as_ref())
            .filter(|r| !matches!(r.status(), Status::Recovering | Status::RecoveringHead))
            .count();
        let quorum = self.swarm.replica_count as usize / 2 + 1;
        (participants < quorum).then(|| {
            format!("only {participants} replicas can take part in a view change (quorum {quorum})")
        })
    }

    fn liveness(&mut self, core: &[u8]) -> Option<String> {
        self.faults_enabled = false;
        self.requests_enabled = false;
        self.network.heal();
        let count = self.swarm.replica_count;
        for index in 0..count {
            let sim = &mut self.replicas[index as usize];
            sim.clock.jump_ns = 0;
            if let Some(replica) = sim.replica.as_mut() {
                replica.storage_mut().misdirect_ppm = 0;
                replica.storage_mut().disarm();
            }
            if let Some(storage) = sim.storage.as_mut() {
                storage.misdirect_ppm = 0;
            }
            if core.contains(&index) {
                sim.down_forever = false;
            } else {
                sim.down_forever = true;
                if sim.replica.is_some() {
                    self.crash(index);
                }
            }
        }
        for _ in 0..liveness_ticks_max {
            self.tick_once();
            if self.failure.is_some() {
                return None;
            }
            self.converged(core)?;
        }
        Some(self.converged(core).unwrap_or_default())
    }
}

/// Run one seed: a safety phase of `ticks`, then the liveness phase.
pub fn run(options: &RunOptions) -> Outcome {
    let mut cluster = Cluster::new(options);
    cluster.log_every_ticks = options.log_every_ticks;
    for _ in 0..options.ticks {
        cluster.tick_once();
        if cluster.failure.is_some() {
            break;
        }
    }
    if cluster.failure.is_none() {
        let count = cluster.swarm.replica_count;
        let quorum = count as usize / 2 + 1;
        let mut core: Vec<u8> = (0..count).collect();
        while core.len() > quorum {
            let remove = cluster.prng.below(core.len() as u64) as usize;
            core.remove(remove);
        }
        if let Some(stuck) = cluster.liveness(&core) {
            match cluster.core_unrecoverable(&core) {
                Some(excuse) => {
                    cluster.liveness_excused = Some(format!("core {core:?}: {excuse}"));
                    let everyone: Vec<u8> = (0..count).collect();
                    if let Some(stuck) = cluster.liveness(&everyone) {
                        match cluster.cluster_unrecoverable() {
                            Some(excuse) => {
                                cluster.liveness_excused = Some(format!("whole cluster: {excuse}"));
                            }
                            None => cluster.fail(format!(
                                "liveness: whole cluster did not converge in {liveness_ticks_max} ticks: {stuck}"
                            )),
                        }
                    }
                }
                None => cluster.fail(format!("liveness: core {core:?} did not converge in {liveness_ticks_max} ticks: {stuck}")),
            }
        }
    }
    let summary = format!(
        "replicas={} clients={} slots={} checkpoint={} pipeline={} sessions={} faulty={:?} commits={} replies={} packets={}{}",
        cluster.swarm.replica_count,
        cluster.clients.len(),
        cluster.swarm.config.journal_slots,
        cluster.swarm.config.checkpoint_interval_ops,
        cluster.swarm.config.pipeline_prepares_max,
        cluster.swarm.config.clients_max,
        cluster.swarm.faulty_replicas,
        cluster.committed.len(),
        cluster.replies,
        cluster.network.packets_sent,
        cluster
            .liveness_excused
            .as_ref()
            .map(|e| format!(" (core excused: {e})"))
            .unwrap_or_default(),
    );
    Outcome {
        seed: options.seed,
        trace: cluster.trace,
        ticks: cluster.tick,
        replica_count: cluster.swarm.replica_count,
        client_count: cluster.clients.len(),
        commits: cluster.committed.len() as u64,
        replies: cluster.replies,
        failure: cluster.failure,
        liveness_excused: cluster.liveness_excused,
        summary,
        stats: cluster.stats,
    }
}

thread_local! {
    static PANIC_CAPTURE: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Run a seed and turn a panic (a broken assertion inside the replica) into a failure.
pub fn run_catching(options: &RunOptions) -> Outcome {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if PANIC_CAPTURE.with(|capture| capture.borrow().is_some()) {
                PANIC_CAPTURE.with(|capture| *capture.borrow_mut() = Some(info.to_string()));
            } else {
                previous(info);
            }
        }));
    });
    PANIC_CAPTURE.with(|capture| *capture.borrow_mut() = Some(String::new()));
    let result = std::panic::catch_unwind(|| run(options));
    let captured = PANIC_CAPTURE
        .with(|capture| capture.borrow_mut().take())
        .unwrap_or_default();
    match result {
        Ok(outcome) => outcome,
        Err(_) => {
            let message = captured.replace('\n', " ");
            Outcome {
                seed: options.seed,
                trace: 0,
                ticks: 0,
                replica_count: 0,
                client_count: 0,
                commits: 0,
                replies: 0,
                failure: Some(format!("panic: {message}")),
                liveness_excused: None,
                summary: String::new(),
                stats: Stats::default(),
            }
        }
    }
}

fn replica_state_machine_mut(replica: &mut Replica<SimStorage, Model>) -> &mut Model {
    replica.state_machine_mut()
}
