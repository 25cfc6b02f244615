//! [`ReplicaDriver`]: one [`Replica`] on a dedicated thread, over [`FileStorage`] and the QUIC
//! [`Transport`], fed by the OS clocks and randomness.
//!
//! The driver is deliberately thin: it owns no protocol decision. Its thread waits for the next
//! input (a message from a peer, a client request from [`ReplicaDriver::submit`], a stop) or the
//! next tick, calls [`Replica::on_message`] / [`Replica::on_tick`] with the time just read, and
//! carries out the returned [`Action`]s at once: `SendToReplica` is encoded and queued on the
//! peer (best effort), `SendToClient` completes the waiting `submit` of that client, and
//! `Committed` moves the commit number published in [`DriverStatus`] (which
//! [`ReplicaDriver::committed`] waits on). Storage writes happen inside the replica's calls and
//! are durable when they return, so actions need no further ordering.
//!
//! # Requests and exactly-once
//!
//! A client (the host, on behalf of a connected user) registers a client id once, then numbers
//! its commands 1, 2, … with one in flight, and submits each to the replica it believes is the
//! primary. Only the primary in normal status takes a request; any other replica answers
//! [`SubmitError::NotPrimary`] at once, having done nothing, with the index of the primary it
//! knows. Once a request is in flight, losing the primary role (a view change), the deadline
//! [`request_timeout_ms`], or a stop of the driver make the outcome unknown: the request may
//! still commit in the new view. The caller then resubmits the *same* client id and request
//! number to the new primary; the replicated client sessions execute it at most once and answer
//! a retry of a committed request from the reply cache. While a request waits, the driver
//! re-offers it to its replica every [`request_retry_ticks`] (a primary without synchronized
//! clocks or with a full queue may have set it aside); duplicates are absorbed by the session.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rand::RngCore;
use tokio::sync::{oneshot, watch};

use crate::clock::Instant;
use crate::constants::{command_bytes_max, message_bytes_max, tick_ns};
use crate::file_storage::{FileStorage, FileStorageError};
use crate::message::{Message, Operation};
use crate::replica::{Action, Config, OpenError, Replica, Status};
use crate::state_machine::StateMachine;
use crate::transport::{
    CertificateFingerprint, ReplicaIdentity, Transport, TransportConfig, TransportError,
    TransportSender,
};

/// Inputs (peer messages, client requests) waiting for the replica thread; more are dropped
/// (messages: the protocol resends) or refused (requests: [`SubmitError::Busy`]).
pub const inputs_max: usize = 4096;
/// Bytes of peer messages waiting for the replica thread; more are dropped.
pub const inputs_bytes_max: usize = 64 * message_bytes_max;
/// Requests waiting for their reply, one per client.
pub const requests_pending_max: usize = 1024;
/// A request with no reply after this long fails with [`SubmitError::TimedOut`].
pub const request_timeout_ms: u64 = 10_000;
/// A waiting request is offered to the replica again this often.
pub const request_retry_ticks: u64 = 20;

/// How to bring up the replica's data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartMode {
    /// A new replica: create and format the data directory (refused if it holds replica files).
    Format,
    /// Restart: open the existing data directory.
    Open,
    /// This replica's disk was lost: create a fresh data directory (refused if it holds replica
    /// files) and rejoin, taking no part in consensus until the cluster has brought it up to
    /// date. Never format a replica that once ran: it would forget what it promised.
    Recover,
}

/// Everything a replica process needs to run.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// Protocol configuration: cluster id, replica count, this replica's index, sizes. Every
    /// replica of the cluster must use the same values (recorded in the superblock).
    pub protocol: Config,
    /// Every replica's replica-to-replica address, by index.
    pub addresses: Vec<SocketAddr>,
    pub identity: ReplicaIdentity,
    /// Every replica's certificate fingerprint, by index.
    pub fingerprints: Vec<CertificateFingerprint>,
    pub data_dir: PathBuf,
    pub start: StartMode,
}

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Storage(#[from] FileStorageError),
    #[error(
        "cannot open replica {replica} in {data_dir}: {source}{hint}",
        hint = open_hint(source)
    )]
    Open {
        replica: u8,
        data_dir: PathBuf,
        source: OpenError,
    },
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("cannot start the replica thread: {0}")]
    Thread(std::io::Error),
    #[error("replica {replica} failed: {message}")]
    Failed { replica: u8, message: String },
}

fn open_hint(error: &OpenError) -> &'static str {
    match error {
        OpenError::Unformatted => {
            " (start with StartMode::Format if this replica never ran; if its disk was lost, \
             move the directory away and start with StartMode::Recover)"
        }
        OpenError::JournalCorrupt { .. } | OpenError::SnapshotCorrupt => {
            " (a single replica has no peer to repair from: restore the directory from a backup)"
        }
        _ => "",
    }
}

/// The answer to a committed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Op at which the request committed (for `register`: the client's session number).
    pub op: u64,
    /// View of the primary that answered.
    pub view: u64,
    pub body: Vec<u8>,
}

/// Why a request got no reply. Each variant says whether the request may still commit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error(
        "replica {replica} is not the primary (view {view}, {status:?}): nothing was done; \
         submit to replica {primary}"
    )]
    NotPrimary {
        replica: u8,
        view: u64,
        status: Status,
        primary: u8,
    },
    #[error(
        "replica {replica} stopped being the primary (now view {view}) with the request in \
         flight: it may still commit; resubmit the same client id and request number to replica \
         {primary}, which executes it at most once"
    )]
    OutcomeUnknown { replica: u8, view: u64, primary: u8 },
    #[error(
        "no reply from replica {replica} within {request_timeout_ms} ms: the request may still \
         commit; resubmit the same client id and request number (to another replica if this \
         one stays silent)"
    )]
    TimedOut { replica: u8 },
    #[error(
        "client {client:x} has no session (never registered, or evicted by newer clients): \
         register a new client id"
    )]
    Evicted { client: u128 },
    #[error(
        "client {client:x} already has request {in_flight} waiting here: a client has one \
         request in flight at a time"
    )]
    ClientBusy { client: u128, in_flight: u64 },
    #[error(
        "request {request} of client {client:x} is older than its last committed request \
         {last}: number requests upwards"
    )]
    Stale {
        client: u128,
        request: u64,
        last: u64,
    },
    #[error("replica {replica} has too many requests waiting: retry later")]
    Busy { replica: u8 },
    #[error("command of {bytes} bytes exceeds command_bytes_max ({command_bytes_max} bytes)")]
    TooLarge { bytes: usize },
    #[error("invalid request: {0}")]
    Invalid(&'static str),
    #[error("a newer submission of the same request replaced this one")]
    Superseded,
    #[error(
        "replica {replica} stopped: a request in flight may still commit; resubmit to another \
         replica"
    )]
    Stopped { replica: u8 },
}

/// What the replica thread publishes after every input and tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverStatus {
    pub replica: u8,
    pub status: Status,
    pub view: u64,
    /// The primary of `view` (elected once `status` is normal).
    pub primary: u8,
    /// Primary in normal status: takes requests.
    pub accepting_requests: bool,
    pub op: u64,
    pub commit_min: u64,
    pub commit_max: u64,
    pub checkpoint_op: u64,
    /// Messages from peers dropped because the replica thread was behind.
    pub inputs_dropped: u64,
    /// The replica thread has ended (shutdown, or failure: see [`ReplicaDriver::shutdown`]).
    pub stopped: bool,
}

enum Input {
    Message(Message, usize),
    Submit(Submission),
    /// A read barrier: answered with the op a read must see applied.
    ReadBarrier(oneshot::Sender<Result<u64, SubmitError>>),
    /// Wakes the thread to look at the stop flag.
    Wake,
}

struct Submission {
    client: u128,
    request: u64,
    operation: Operation,
    body: Vec<u8>,
    reply: oneshot::Sender<Result<Reply, SubmitError>>,
}

/// A running replica. Dropping it stops the replica abruptly, like a crash at an arbitrary
/// point between two durable writes (no close frames: peers notice by timeout);
/// [`ReplicaDriver::shutdown`] stops it cleanly.
#[derive(Debug)]
pub struct ReplicaDriver<M: StateMachine + Send + 'static> {
    replica: u8,
    inputs: SyncSender<Input>,
    stop: Arc<AtomicBool>,
    status: watch::Receiver<DriverStatus>,
    thread: Option<std::thread::JoinHandle<M>>,
    transport: Option<Transport>,
    local_address: Option<SocketAddr>,
}

impl<M: StateMachine + Send + 'static> ReplicaDriver<M> {
    /// Bring up the data directory, open the replica, bind its address and start its thread.
    /// `state_machine` must be in its initial state: the replica restores it from its
    /// checkpoint and replays its journal.
    pub fn start(config: &DriverConfig, state_machine: M) -> Result<ReplicaDriver<M>, DriverError> {
        let protocol = config.protocol.clone();
        protocol.validate().map_err(DriverError::Config)?;
        let replica_index = protocol.replica;
        if config.addresses.len() != protocol.replica_count as usize {
            return Err(DriverError::Config(format!(
                "replica_count is {} but {} addresses are configured",
                protocol.replica_count,
                config.addresses.len()
            )));
        }
        let transport_config = TransportConfig {
            cluster: protocol.cluster,
            replica: replica_index,
            addresses: config.addresses.clone(),
            identity: config.identity.clone(),
            fingerprints: config.fingerprints.clone(),
        };
        transport_config.validate().map_err(DriverError::Config)?;

        let slots = protocol.journal_slots;
        let open_error = |source| DriverError::Open {
            replica: replica_index,
            data_dir: config.data_dir.clone(),
            source,
        };
        let now = now();
        let entropy = entropy();
        let replica = match config.start {
            StartMode::Format => {
                let mut storage = FileStorage::create(&config.data_dir, slots)?;
                Replica::<FileStorage, M>::format(&protocol, &mut storage).map_err(open_error)?;
                Replica::open(protocol.clone(), storage, state_machine, now, entropy)
            }
            StartMode::Open => {
                let storage = FileStorage::open(&config.data_dir, slots)?;
                Replica::open(protocol.clone(), storage, state_machine, now, entropy)
            }
            StartMode::Recover => {
                let storage = FileStorage::create(&config.data_dir, slots)?;
                Replica::recover(protocol.clone(), storage, state_machine, now, entropy)
            }
        }
        .map_err(open_error)?;

        let (inputs, receiver) = std::sync::mpsc::sync_channel(inputs_max);
        let inputs_bytes = Arc::new(AtomicUsize::new(0));
        let inputs_dropped = Arc::new(std::sync::atomic::AtomicU64::new(0));
        // A cluster of one has no peer: no socket.
        let transport = if protocol.replica_count > 1 {
            let deliver_inputs = inputs.clone();
            let deliver_bytes = inputs_bytes.clone();
            let deliver_dropped = inputs_dropped.clone();
            let deliver = Arc::new(move |_peer: u8, message: Message, bytes: usize| {
                let queued = deliver_bytes.fetch_add(bytes, Ordering::Relaxed);
                let accepted = queued + bytes <= inputs_bytes_max
                    && deliver_inputs
                        .try_send(Input::Message(message, bytes))
                        .is_ok();
                if !accepted {
                    deliver_bytes.fetch_sub(bytes, Ordering::Relaxed);
                    deliver_dropped.fetch_add(1, Ordering::Relaxed);
                }
            });
            Some(Transport::start(&transport_config, deliver)?)
        } else {
            None
        };
        let local_address = transport.as_ref().map(Transport::local_address);
        let initial = status_of(&replica, protocol.replica_count, 0, false);
        let (status_sender, status) = watch::channel(initial);
        let stop = Arc::new(AtomicBool::new(false));
        let mut runner = Runner {
            replica,
            cluster: protocol.cluster,
            replica_count: protocol.replica_count,
            sender: transport.as_ref().map(Transport::sender),
            inputs: receiver,
            inputs_bytes,
            inputs_dropped,
            stop: stop.clone(),
            status: status_sender,
            pending: BTreeMap::new(),
            reads: BTreeMap::new(),
            read_next: 0,
            ticks: 0,
        };
        let thread = std::thread::Builder::new()
            .name(format!("vsr-replica-{replica_index}"))
            .spawn(move || {
                runner.run();
                runner.finish()
            })
            .map_err(DriverError::Thread)?;
        tracing::info!(replica = replica_index, address = ?local_address, "replica started");
        Ok(ReplicaDriver {
            replica: replica_index,
            inputs,
            stop,
            status,
            thread: Some(thread),
            transport,
            local_address,
        })
    }

    /// The bound replica-to-replica address (`None` for a cluster of one, which binds none).
    pub fn local_address(&self) -> Option<SocketAddr> {
        self.local_address
    }

    /// The latest published status. `stopped` is also set when the replica thread died (an
    /// assertion failed): the host should then exit, so that a restart recovers from disk.
    pub fn status(&self) -> DriverStatus {
        let mut status = self.status.borrow().clone();
        status.stopped |= self
            .thread
            .as_ref()
            .is_none_or(std::thread::JoinHandle::is_finished);
        status
    }

    /// Status updates, for waiting on a view, a commit number or the stop.
    pub fn subscribe(&self) -> watch::Receiver<DriverStatus> {
        self.status.clone()
    }

    /// Counters of the connections to each peer (empty for a cluster of one).
    pub fn transport_stats(&self) -> Vec<crate::transport::PeerStats> {
        self.transport
            .as_ref()
            .map(Transport::stats)
            .unwrap_or_default()
    }

    /// Resolves once this replica has committed (applied) `op`: read-your-writes.
    pub fn committed(&self, op: u64) -> impl Future<Output = Result<(), SubmitError>> + use<M> {
        applied(self.status.clone(), self.replica, op)
    }

    /// Resolves once a read on this replica may be answered: it is the primary, a quorum
    /// confirmed so after this call (see `Replica::on_read_barrier`), and it has applied every
    /// op that could have committed before this call. A read answered then is linearizable;
    /// without it a primary cut off from its quorum would answer with stale state.
    pub fn read_barrier(&self) -> impl Future<Output = Result<(), SubmitError>> + Send + use<M> {
        let replica = self.replica;
        let (reply, receiver) = oneshot::channel();
        let refused = match self.inputs.try_send(Input::ReadBarrier(reply)) {
            Ok(()) => None,
            Err(TrySendError::Full(_)) => Some(SubmitError::Busy { replica }),
            Err(TrySendError::Disconnected(_)) => Some(SubmitError::Stopped { replica }),
        };
        let status = self.status.clone();
        async move {
            if let Some(error) = refused {
                return Err(error);
            }
            let op = receiver
                .await
                .unwrap_or(Err(SubmitError::Stopped { replica }))?;
            applied(status, replica, op).await
        }
    }

    /// Open a session for `client` (request 0). Resolves with the session number.
    pub fn register(
        &self,
        client: u128,
    ) -> impl Future<Output = Result<u64, SubmitError>> + Send + use<M> {
        let reply = self.enqueue(client, 0, Operation::Register, Vec::new());
        async move { Ok(reply.await?.op) }
    }

    /// Submit command `request` of `client` (numbered from 1, one in flight). The request is
    /// queued before this returns; the future resolves with the reply once the request
    /// committed (or was answered from the reply cache), or with why not: see the module docs.
    pub fn submit(
        &self,
        client: u128,
        request: u64,
        command: Vec<u8>,
    ) -> impl Future<Output = Result<Reply, SubmitError>> + Send + use<M> {
        self.enqueue(client, request, Operation::Command, command)
    }

    fn enqueue(
        &self,
        client: u128,
        request: u64,
        operation: Operation,
        body: Vec<u8>,
    ) -> impl Future<Output = Result<Reply, SubmitError>> + Send + use<M> {
        let replica = self.replica;
        let (reply, receiver) = oneshot::channel();
        let refused = if client == 0 {
            Some(SubmitError::Invalid("client id 0 is reserved"))
        } else if operation == Operation::Command && request == 0 {
            Some(SubmitError::Invalid(
                "request 0 is the registration; commands start at 1",
            ))
        } else if body.len() > command_bytes_max {
            Some(SubmitError::TooLarge { bytes: body.len() })
        } else {
            let submission = Submission {
                client,
                request,
                operation,
                body,
                reply,
            };
            match self.inputs.try_send(Input::Submit(submission)) {
                Ok(()) => None,
                Err(TrySendError::Full(_)) => Some(SubmitError::Busy { replica }),
                Err(TrySendError::Disconnected(_)) => Some(SubmitError::Stopped { replica }),
            }
        };
        async move {
            if let Some(error) = refused {
                return Err(error);
            }
            receiver
                .await
                .unwrap_or(Err(SubmitError::Stopped { replica }))
        }
    }

    /// Stop cleanly: the replica thread finishes its current call, connections are closed (so
    /// peers notice at once), and the state machine is handed back.
    pub fn shutdown(mut self) -> Result<M, DriverError> {
        let result = self.stop_thread();
        if let Some(transport) = self.transport.take() {
            transport.shutdown();
        }
        result
    }

    /// Stop the replica thread after its current call. A graceful and an abrupt stop differ
    /// only in the transport: every write the replica made is durable either way.
    fn stop_thread(&mut self) -> Result<M, DriverError> {
        let thread = self.thread.take().expect("stopped once");
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.inputs.try_send(Input::Wake);
        thread.join().map_err(|panic| {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panicked".to_string());
            DriverError::Failed {
                replica: self.replica,
                message,
            }
        })
    }
}

impl<M: StateMachine + Send + 'static> Drop for ReplicaDriver<M> {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.stop_thread();
        }
        // Then the transport (if still here) drops: sockets close without a goodbye.
    }
}

/// Resolves once the replica behind `status` has applied `op` (or fails when it stops).
async fn applied(
    mut status: watch::Receiver<DriverStatus>,
    replica: u8,
    op: u64,
) -> Result<(), SubmitError> {
    let reached = status
        .wait_for(|status| status.commit_min >= op || status.stopped)
        .await
        .map(|status| status.commit_min >= op);
    match reached {
        Ok(true) => Ok(()),
        _ => Err(SubmitError::Stopped { replica }),
    }
}

/// A request waiting for its reply.
struct Pending {
    request: u64,
    operation: Operation,
    body: Vec<u8>,
    view: u64,
    retry_tick: u64,
    deadline_tick: u64,
    reply: oneshot::Sender<Result<Reply, SubmitError>>,
}

/// The replica thread's state.
struct Runner<M: StateMachine> {
    replica: Replica<FileStorage, M>,
    cluster: u128,
    replica_count: u8,
    sender: Option<TransportSender>,
    inputs: Receiver<Input>,
    inputs_bytes: Arc<AtomicUsize>,
    inputs_dropped: Arc<std::sync::atomic::AtomicU64>,
    stop: Arc<AtomicBool>,
    status: watch::Sender<DriverStatus>,
    /// One per client.
    pending: BTreeMap<u128, Pending>,
    /// Read barriers waiting for the replica's answer, by id.
    reads: BTreeMap<u64, oneshot::Sender<Result<u64, SubmitError>>>,
    read_next: u64,
    ticks: u64,
}

impl<M: StateMachine> Runner<M> {
    fn run(&mut self) {
        let tick = Duration::from_nanos(tick_ns);
        let mut next_tick = std::time::Instant::now() + tick;
        while !self.stop.load(Ordering::SeqCst) {
            let wait = next_tick.saturating_duration_since(std::time::Instant::now());
            match self.inputs.recv_timeout(wait) {
                Ok(Input::Message(message, bytes)) => {
                    self.inputs_bytes.fetch_sub(bytes, Ordering::Relaxed);
                    let actions = self.replica.on_message(now(), message);
                    self.execute(actions);
                }
                Ok(Input::Submit(submission)) => self.submit(submission),
                Ok(Input::ReadBarrier(reply)) => {
                    let id = self.read_next;
                    self.read_next += 1;
                    self.reads.insert(id, reply);
                    let actions = self.replica.on_read_barrier(now(), id);
                    self.execute(actions);
                }
                Ok(Input::Wake) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => unreachable!("the runner's own sender"),
            }
            let instant = std::time::Instant::now();
            if instant >= next_tick {
                self.ticks += 1;
                let actions = self.replica.on_tick(now());
                self.execute(actions);
                self.tick_pending();
                // After a stall (a slow disk), tick once and carry on: a burst of ticks would
                // fire timeouts that measure time the replica did not observe.
                next_tick = (next_tick + tick).max(instant);
            }
            self.fail_pending_unless_primary();
            self.publish(false);
        }
    }

    /// After the loop: publish the stop, fail waiting requests, hand back the state machine.
    fn finish(mut self) -> M {
        self.publish(true);
        let replica = self.replica.replica();
        for (_, pending) in std::mem::take(&mut self.pending) {
            let _ = pending.reply.send(Err(SubmitError::Stopped { replica }));
        }
        for (_, reply) in std::mem::take(&mut self.reads) {
            let _ = reply.send(Err(SubmitError::Stopped { replica }));
        }
        let (_storage, state_machine) = self.replica.into_parts();
        state_machine
    }

    fn submit(&mut self, submission: Submission) {
        let replica = self.replica.replica();
        let Submission {
            client,
            request,
            operation,
            body,
            reply,
        } = submission;
        if !self.accepting_requests() {
            let view = self.replica.view();
            let _ = reply.send(Err(SubmitError::NotPrimary {
                replica,
                view,
                status: self.replica.status(),
                primary: (view % self.replica_count as u64) as u8,
            }));
            return;
        }
        if let Some((last, _)) = self.replica.client_session(client)
            && operation == Operation::Command
            && request < last
        {
            let _ = reply.send(Err(SubmitError::Stale {
                client,
                request,
                last,
            }));
            return;
        }
        match self.pending.get(&client) {
            Some(pending) if pending.request != request => {
                let _ = reply.send(Err(SubmitError::ClientBusy {
                    client,
                    in_flight: pending.request,
                }));
                return;
            }
            None if self.pending.len() >= requests_pending_max => {
                let _ = reply.send(Err(SubmitError::Busy { replica }));
                return;
            }
            _ => {}
        }
        let view = self.replica.view();
        if let Some(first) = self.pending.values().next() {
            assert_eq!(
                first.view, view,
                "a view change fails every waiting request"
            );
        }
        let message = Message::Request {
            client,
            request,
            operation,
            body: body.clone(),
        };
        let pending = Pending {
            request,
            operation,
            body,
            view,
            retry_tick: self.ticks + request_retry_ticks,
            deadline_tick: self.ticks + request_timeout_ms * 1_000_000 / tick_ns,
            reply,
        };
        if let Some(previous) = self.pending.insert(client, pending) {
            let _ = previous.reply.send(Err(SubmitError::Superseded));
        }
        let actions = self.replica.on_message(now(), message);
        self.execute(actions);
    }

    fn accepting_requests(&self) -> bool {
        self.replica.status() == Status::Normal && self.replica.is_primary()
    }

    fn execute(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::SendToReplica { replica, message } => {
                    let sender = self
                        .sender
                        .as_ref()
                        .expect("a cluster of one sends to no replica");
                    sender.send(replica, message.encode(self.cluster));
                }
                Action::SendToClient { client, message } => self.deliver(client, message),
                // Published through the status (commit_min) after this batch.
                Action::Committed { .. } => {}
                Action::ReadConfirmed { id, op } => {
                    if let Some(reply) = self.reads.remove(&id) {
                        let _ = reply.send(Ok(op));
                    }
                }
                Action::ReadRefused { id } => {
                    if let Some(reply) = self.reads.remove(&id) {
                        let view = self.replica.view();
                        let _ = reply.send(Err(SubmitError::NotPrimary {
                            replica: self.replica.replica(),
                            view,
                            status: self.replica.status(),
                            primary: (view % self.replica_count as u64) as u8,
                        }));
                    }
                }
            }
        }
    }

    /// Complete the waiting request of `client`, if this answers it. Answers nobody waits for
    /// here (the client moved on, or retried elsewhere) are dropped.
    fn deliver(&mut self, client: u128, message: Message) {
        let Some(pending) = self.pending.get(&client) else {
            return;
        };
        let result = match message {
            Message::Reply {
                request,
                op,
                view,
                body,
                ..
            } if request == pending.request => Ok(Reply { op, view, body }),
            Message::Eviction { .. } => Err(SubmitError::Evicted { client }),
            _ => return,
        };
        let pending = self.pending.remove(&client).expect("looked up above");
        let _ = pending.reply.send(result);
    }

    fn tick_pending(&mut self) {
        let replica = self.replica.replica();
        let ticks = self.ticks;
        // Callers that stopped waiting (their future was dropped) free their slot.
        self.pending.retain(|_, pending| !pending.reply.is_closed());
        let expired: Vec<u128> = self
            .pending
            .iter()
            .filter(|(_, pending)| ticks >= pending.deadline_tick)
            .map(|(client, _)| *client)
            .collect();
        for client in expired {
            let pending = self.pending.remove(&client).expect("listed above");
            let _ = pending.reply.send(Err(SubmitError::TimedOut { replica }));
        }
        let retries: Vec<Message> = self
            .pending
            .iter_mut()
            .filter(|(_, pending)| ticks >= pending.retry_tick)
            .map(|(client, pending)| {
                pending.retry_tick = ticks + request_retry_ticks;
                Message::Request {
                    client: *client,
                    request: pending.request,
                    operation: pending.operation,
                    body: pending.body.clone(),
                }
            })
            .collect();
        for message in retries {
            if !self.accepting_requests() {
                break;
            }
            let actions = self.replica.on_message(now(), message);
            self.execute(actions);
        }
    }

    /// A request in flight at a primary that lost its role may or may not commit: say so now
    /// rather than at the deadline, so the caller retries at the new primary. Every waiting
    /// request was taken in the same view (a change fails them all), so the first tells.
    fn fail_pending_unless_primary(&mut self) {
        let Some(first) = self.pending.values().next() else {
            return;
        };
        let view = self.replica.view();
        if self.accepting_requests() && first.view == view {
            return;
        }
        let replica = self.replica.replica();
        let primary = (view % self.replica_count as u64) as u8;
        for (_, pending) in std::mem::take(&mut self.pending) {
            let _ = pending.reply.send(Err(SubmitError::OutcomeUnknown {
                replica,
                view,
                primary,
            }));
        }
    }

    fn publish(&self, stopped: bool) {
        let dropped = self.inputs_dropped.load(Ordering::Relaxed);
        let status = status_of(&self.replica, self.replica_count, dropped, stopped);
        self.status.send_if_modified(|current| {
            let modified = *current != status;
            if modified {
                *current = status;
            }
            modified
        });
    }
}

fn status_of<M: StateMachine>(
    replica: &Replica<FileStorage, M>,
    replica_count: u8,
    inputs_dropped: u64,
    stopped: bool,
) -> DriverStatus {
    let view = replica.view();
    let replica_count = replica_count as u64;
    DriverStatus {
        replica: replica.replica(),
        status: replica.status(),
        view,
        primary: (view % replica_count) as u8,
        accepting_requests: replica.status() == Status::Normal && replica.is_primary(),
        op: replica.op(),
        commit_min: replica.commit_min(),
        commit_max: replica.commit_max(),
        checkpoint_op: replica.checkpoint_op(),
        inputs_dropped,
        stopped,
    }
}

/// The OS clocks: monotonic (since the first reading in this process) and wall clock.
fn now() -> Instant {
    static monotonic_origin: OnceLock<std::time::Instant> = OnceLock::new();
    let origin = monotonic_origin.get_or_init(std::time::Instant::now);
    let realtime_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|since| since.as_nanos() as u64)
        .unwrap_or(0);
    Instant {
        monotonic_ns: origin.elapsed().as_nanos() as u64,
        realtime_ns,
    }
}

/// Fresh bits from the OS RNG (timeout jitter, nonces).
fn entropy() -> u128 {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    u128::from_le_bytes(bytes)
}
