//! QUIC between replicas: mutual TLS with pinned certificates, length-prefixed frames, bounded
//! drop-oldest send queues, reconnection with exponential backoff and jitter.
//!
//! The transport carries the bytes of [`Message::encode`] and nothing else; it knows no
//! protocol. It runs on its own thread with its own single-threaded tokio runtime, so it
//! neither needs nor disturbs the host's runtime, and the replica thread talks to it with two
//! non-blocking calls: [`Transport::send`] (queue a frame for a peer) and the `deliver` callback
//! given to [`Transport::start`] (a decoded message arrived from an authenticated peer).
//!
//! # Connections
//!
//! Replica `i` dials every other replica and sends its frames on that outbound connection, on
//! one unidirectional stream; it reads frames from the connections other replicas dial to it.
//! Two connections per pair, one per direction, means no tie-break of who dials whom and no
//! race when both restart at once; a replica that restarts simply dials again. A dial that fails
//! or a connection that dies is retried after a delay growing from
//! [`reconnect_delay_ms_min`] to [`reconnect_delay_ms_max`] (doubling), each delay drawn
//! uniformly from its upper half, so replicas that lost each other at the same moment do not
//! retry in lockstep. A peer that vanishes without closing (crash, partition) is noticed by the
//! QUIC idle timeout ([`idle_timeout_ms`], with keep-alives every [`keep_alive_interval_ms`]).
//!
//! # Frames and queues
//!
//! A frame is `u32 length (LE) ‖ Message::encode bytes`, at most
//! [`message_bytes_max`] bytes; a longer length closes the connection (the peer is broken or not
//! ours). Frames that do not decode (checksum, another cluster) are dropped and counted, as the
//! replica's contract asks. Each peer has a send queue bounded by [`peer_queue_frames_max`] and
//! [`peer_queue_bytes_max`]; when full, the **oldest** frame is dropped. The protocol resends
//! whatever matters (prepares until acknowledged, heartbeats, view change votes, repair
//! requests), so a lost frame costs a retry, and after a peer was unreachable the frames worth
//! delivering are the newest: the latest commit number, view and clock samples. Dropping the
//! newest instead would hand a reconnecting peer a backlog of stale messages and lose the
//! current ones.

pub mod tls;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::sync::{Notify, watch};

use crate::constants::{message_bytes_max, replicas_max};
use crate::message::Message;
pub use tls::{CertificateFingerprint, ReplicaIdentity, alpn};

/// Frames queued for one peer; beyond this the oldest is dropped.
pub const peer_queue_frames_max: usize = 1024;
/// Bytes queued for one peer (a full pipeline of the largest prepares, twice); beyond this the
/// oldest frames are dropped.
pub const peer_queue_bytes_max: usize = 16 * message_bytes_max;
/// First delay before redialing a peer.
pub const reconnect_delay_ms_min: u64 = 20;
/// Largest delay between two dials of a peer.
pub const reconnect_delay_ms_max: u64 = 2_000;
/// QUIC keep-alive: keeps an idle connection open and detects a dead peer.
pub const keep_alive_interval_ms: u64 = 500;
/// A connection (or handshake) silent this long is dead.
pub const idle_timeout_ms: u64 = 3_000;
/// Inbound connections held at once: one per peer, plus stale ones from peers' earlier
/// incarnations until their idle timeout.
pub const inbound_connections_max: usize = 4 * replicas_max;
/// Unidirectional streams a peer may open at once on a connection (we use one).
pub const inbound_streams_per_connection_max: u32 = 4;
/// A graceful shutdown waits this long for peers to acknowledge the close.
pub const shutdown_drain_ms: u64 = 500;
const frame_prefix_bytes: usize = 4;
/// Server name sent in the handshake; certificates are pinned, so it only has to parse.
const server_name: &str = "replica.kimberlite";

/// Who this replica is and how to reach and trust the others.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    pub cluster: u128,
    pub replica: u8,
    /// Every replica's address, by index; this replica binds `addresses[replica]`.
    pub addresses: Vec<SocketAddr>,
    pub identity: ReplicaIdentity,
    /// Every replica's certificate fingerprint, by index.
    pub fingerprints: Vec<CertificateFingerprint>,
}

impl TransportConfig {
    pub fn validate(&self) -> Result<(), String> {
        let count = self.addresses.len();
        if count == 0 || count > replicas_max {
            return Err(format!(
                "the cluster lists {count} replica addresses; a cluster has 1..={replicas_max}"
            ));
        }
        if self.fingerprints.len() != count {
            return Err(format!(
                "the cluster lists {count} addresses but {} certificate fingerprints: one of \
                 each per replica, in the same order",
                self.fingerprints.len()
            ));
        }
        if self.replica as usize >= count {
            return Err(format!(
                "replica index {} is not below the cluster size {count}",
                self.replica
            ));
        }
        for (index, fingerprint) in self.fingerprints.iter().enumerate() {
            if let Some(other) = self.fingerprints[..index]
                .iter()
                .position(|other| other == fingerprint)
            {
                return Err(format!(
                    "replicas {other} and {index} pin the same certificate {fingerprint}: each \
                     replica needs its own"
                ));
            }
        }
        for (index, address) in self.addresses.iter().enumerate() {
            if let Some(other) = self.addresses[..index]
                .iter()
                .position(|other| other == address)
            {
                return Err(format!(
                    "replicas {other} and {index} have the same address {address}"
                ));
            }
        }
        let own = self.identity.fingerprint();
        let pinned = self.fingerprints[self.replica as usize];
        if own != pinned {
            return Err(format!(
                "this replica's certificate has sha256 {own}, but the cluster configuration pins \
                 {pinned} for replica {}: wrong identity or wrong replica index",
                self.replica
            ));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("invalid cluster configuration: {0}")]
    Config(String),
    #[error("invalid TLS identity: {0}")]
    Tls(String),
    #[error(
        "cannot bind replica {replica} to {address}: {source} (is another process using this \
         address?)"
    )]
    Bind {
        replica: u8,
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the transport thread: {0}")]
    Thread(std::io::Error),
}

/// Counters of one peer, for status and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerStats {
    pub connected: bool,
    /// Outbound connections established so far (1 + reconnections).
    pub connections: u64,
    pub frames_sent: u64,
    /// Frames dropped from a full send queue.
    pub frames_dropped: u64,
    pub frames_queued: usize,
    pub frames_received: u64,
    /// Frames received that did not decode, or claimed to come from another replica.
    pub frames_rejected: u64,
}

/// The replica-to-replica transport of one replica. Dropping it stops it abruptly (no close
/// frames: peers see a crash); [`Transport::shutdown`] closes connections first.
#[derive(Debug)]
pub struct Transport {
    replica: u8,
    local_address: SocketAddr,
    peers: Arc<Vec<Peer>>,
    stop: watch::Sender<Stop>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Running,
    Graceful,
    Abrupt,
}

/// Receives each decoded message with the index of the replica whose certificate the connection
/// authenticated and the size of its frame (for the receiver's own byte bound).
pub type Deliver = Arc<dyn Fn(u8, Message, usize) + Send + Sync>;

impl Transport {
    /// Bind `addresses[replica]` and start dialing the other replicas. `deliver` is called on
    /// the transport thread for every decoded message; it must not block.
    pub fn start(config: &TransportConfig, deliver: Deliver) -> Result<Transport, TransportError> {
        config.validate().map_err(TransportError::Config)?;
        let count = config.addresses.len();
        let others: Vec<(u8, CertificateFingerprint)> = (0..count as u8)
            .filter(|&index| index != config.replica)
            .map(|index| (index, config.fingerprints[index as usize]))
            .collect();
        let server_tls =
            tls::server_config(&config.identity, others).map_err(TransportError::Tls)?;
        let server_crypto = quinn::crypto::rustls::QuicServerConfig::try_from(server_tls)
            .map_err(|error| TransportError::Tls(error.to_string()))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
        server.transport_config(Arc::new(transport_config()));
        let mut clients = Vec::with_capacity(count);
        for index in 0..count as u8 {
            let address = config.addresses[index as usize];
            let tls = tls::client_config(
                &config.identity,
                index,
                address,
                config.fingerprints[index as usize],
            )
            .map_err(TransportError::Tls)?;
            let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
                .map_err(|error| TransportError::Tls(error.to_string()))?;
            let mut client = quinn::ClientConfig::new(Arc::new(crypto));
            client.transport_config(Arc::new(transport_config()));
            clients.push(client);
        }
        let peers: Arc<Vec<Peer>> = Arc::new((0..count).map(|_| Peer::default()).collect());
        let (stop, stop_receiver) = watch::channel(Stop::Running);
        let (started, started_receiver) = std::sync::mpsc::channel();
        let network = Network {
            cluster: config.cluster,
            replica: config.replica,
            addresses: config.addresses.clone(),
            fingerprints: config.fingerprints.clone(),
            peers: peers.clone(),
            deliver,
        };
        let bind_address = config.addresses[config.replica as usize];
        let thread = std::thread::Builder::new()
            .name(format!("vsr-transport-{}", config.replica))
            .spawn(move || network.run(bind_address, server, clients, stop_receiver, started))
            .map_err(TransportError::Thread)?;
        let local_address = match started_receiver.recv() {
            Ok(Ok(address)) => address,
            Ok(Err(source)) => {
                let _ = thread.join();
                return Err(TransportError::Bind {
                    replica: config.replica,
                    address: bind_address,
                    source,
                });
            }
            Err(_) => {
                let _ = thread.join();
                return Err(TransportError::Thread(std::io::Error::other(
                    "the transport thread died while starting",
                )));
            }
        };
        Ok(Transport {
            replica: config.replica,
            local_address,
            peers,
            stop,
            thread: Some(thread),
        })
    }

    /// Queue a frame for `replica`, best effort: never blocks; a full queue drops its oldest.
    pub fn send(&self, replica: u8, frame: Vec<u8>) {
        self.sender().send(replica, frame);
    }

    /// A handle that queues frames, for the thread that runs the replica.
    pub fn sender(&self) -> TransportSender {
        TransportSender {
            replica: self.replica,
            peers: self.peers.clone(),
        }
    }

    pub fn local_address(&self) -> SocketAddr {
        self.local_address
    }

    /// Counters per replica (this replica's own entry stays zero).
    pub fn stats(&self) -> Vec<PeerStats> {
        self.peers.iter().map(Peer::stats).collect()
    }

    /// Close every connection (peers learn at once instead of by timeout) and stop.
    pub fn shutdown(mut self) {
        self.stop_and_join(Stop::Graceful);
    }

    fn stop_and_join(&mut self, how: Stop) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        let _ = self.stop.send(how);
        if thread.join().is_err() {
            tracing::error!(replica = self.replica, "the transport thread panicked");
        }
    }
}

/// Queues frames on a [`Transport`]'s peer queues; cheap to clone, never blocks.
#[derive(Debug, Clone)]
pub struct TransportSender {
    replica: u8,
    peers: Arc<Vec<Peer>>,
}

impl TransportSender {
    pub fn send(&self, replica: u8, frame: Vec<u8>) {
        assert_ne!(replica, self.replica, "a replica never sends to itself");
        assert!(frame.len() <= message_bytes_max);
        self.peers[replica as usize].queue.push(frame);
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.stop_and_join(Stop::Abrupt);
    }
}

fn transport_config() -> quinn::TransportConfig {
    let mut config = quinn::TransportConfig::default();
    config
        .max_concurrent_bidi_streams(0u32.into())
        .max_concurrent_uni_streams(inbound_streams_per_connection_max.into())
        .keep_alive_interval(Some(Duration::from_millis(keep_alive_interval_ms)))
        .max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(Duration::from_millis(idle_timeout_ms))
                .expect("idle timeout fits QUIC's varint"),
        ));
    config
}

/// One peer's send queue and counters, shared by the replica thread and the transport thread.
#[derive(Debug, Default)]
struct Peer {
    queue: SendQueue,
    connected: AtomicBool,
    connections: AtomicU64,
    frames_sent: AtomicU64,
    frames_received: AtomicU64,
    frames_rejected: AtomicU64,
}

impl Peer {
    fn stats(&self) -> PeerStats {
        let (frames_queued, frames_dropped) = self.queue.counts();
        PeerStats {
            connected: self.connected.load(Ordering::Relaxed),
            connections: self.connections.load(Ordering::Relaxed),
            frames_sent: self.frames_sent.load(Ordering::Relaxed),
            frames_dropped,
            frames_queued,
            frames_received: self.frames_received.load(Ordering::Relaxed),
            frames_rejected: self.frames_rejected.load(Ordering::Relaxed),
        }
    }
}

/// Bounded FIFO of frames that drops its oldest when full (see the module docs for why).
#[derive(Debug, Default)]
struct SendQueue {
    state: Mutex<QueueState>,
    ready: Notify,
}

#[derive(Debug, Default)]
struct QueueState {
    frames: VecDeque<Vec<u8>>,
    bytes: usize,
    dropped: u64,
}

impl SendQueue {
    fn push(&self, frame: Vec<u8>) {
        let mut state = self.state.lock().expect("queue lock");
        while !state.frames.is_empty()
            && (state.frames.len() >= peer_queue_frames_max
                || state.bytes + frame.len() > peer_queue_bytes_max)
        {
            let oldest = state.frames.pop_front().expect("not empty");
            state.bytes -= oldest.len();
            state.dropped += 1;
        }
        state.bytes += frame.len();
        state.frames.push_back(frame);
        assert!(state.frames.len() <= peer_queue_frames_max);
        assert!(state.bytes <= peer_queue_bytes_max.max(message_bytes_max));
        drop(state);
        // Stores a permit if the sender task is not waiting yet, so no wakeup is lost.
        self.ready.notify_one();
    }

    fn pop(&self) -> Option<Vec<u8>> {
        let mut state = self.state.lock().expect("queue lock");
        let frame = state.frames.pop_front()?;
        state.bytes -= frame.len();
        Some(frame)
    }

    async fn next(&self) -> Vec<u8> {
        loop {
            if let Some(frame) = self.pop() {
                return frame;
            }
            self.ready.notified().await;
        }
    }

    fn counts(&self) -> (usize, u64) {
        let state = self.state.lock().expect("queue lock");
        (state.frames.len(), state.dropped)
    }
}

/// Everything the transport thread owns.
struct Network {
    cluster: u128,
    replica: u8,
    addresses: Vec<SocketAddr>,
    fingerprints: Vec<CertificateFingerprint>,
    peers: Arc<Vec<Peer>>,
    deliver: Deliver,
}

impl Network {
    fn run(
        self,
        bind_address: SocketAddr,
        server: quinn::ServerConfig,
        clients: Vec<quinn::ClientConfig>,
        mut stop: watch::Receiver<Stop>,
        started: std::sync::mpsc::Sender<std::io::Result<SocketAddr>>,
    ) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(error) => {
                let _ = started.send(Err(error));
                return;
            }
        };
        let network = Arc::new(self);
        runtime.block_on(async move {
            let endpoint = match quinn::Endpoint::server(server, bind_address)
                .and_then(|endpoint| endpoint.local_addr().map(|address| (endpoint, address)))
            {
                Ok((endpoint, address)) => {
                    let _ = started.send(Ok(address));
                    endpoint
                }
                Err(error) => {
                    let _ = started.send(Err(error));
                    return;
                }
            };
            tokio::spawn(network.clone().accept_loop(endpoint.clone()));
            for (index, client) in clients.into_iter().enumerate() {
                if index as u8 != network.replica {
                    tokio::spawn(
                        network
                            .clone()
                            .dial_loop(endpoint.clone(), index as u8, client),
                    );
                }
            }
            let how = loop {
                let how = *stop.borrow_and_update();
                if how != Stop::Running {
                    break how;
                }
                if stop.changed().await.is_err() {
                    break Stop::Abrupt;
                }
            };
            if how == Stop::Graceful {
                endpoint.close(0u32.into(), b"replica shutting down");
                let drain = Duration::from_millis(shutdown_drain_ms);
                let _ = tokio::time::timeout(drain, endpoint.wait_idle()).await;
            }
        });
        // Dropping the runtime cancels every task and closes the socket.
        drop(runtime);
    }

    /// Keep one outbound connection to `peer` and write its queued frames on it.
    async fn dial_loop(
        self: Arc<Self>,
        endpoint: quinn::Endpoint,
        peer: u8,
        client: quinn::ClientConfig,
    ) {
        let address = self.addresses[peer as usize];
        let state = &self.peers[peer as usize];
        let mut failures: u32 = 0;
        loop {
            let connected = match endpoint.connect_with(client.clone(), address, server_name) {
                Ok(connecting) => connecting.await.map_err(|error| error.to_string()),
                Err(error) => Err(error.to_string()),
            };
            match connected {
                Ok(connection) => {
                    failures = 0;
                    state.connections.fetch_add(1, Ordering::Relaxed);
                    state.connected.store(true, Ordering::Relaxed);
                    tracing::info!(replica = self.replica, peer, %address, "connected");
                    let error = self.write_frames(&connection, peer).await;
                    state.connected.store(false, Ordering::Relaxed);
                    tracing::info!(replica = self.replica, peer, %address, %error, "disconnected");
                }
                Err(error) => {
                    // The first failure in a row is news; the rest are the same news.
                    if failures == 0 {
                        tracing::warn!(
                            replica = self.replica, peer, %address, %error,
                            "cannot connect; retrying with backoff"
                        );
                    } else {
                        tracing::debug!(replica = self.replica, peer, %address, %error, "cannot connect");
                    }
                    failures = failures.saturating_add(1);
                }
            }
            tokio::time::sleep(reconnect_delay(failures)).await;
        }
    }

    /// Write queued frames until the connection fails; returns why it failed.
    async fn write_frames(&self, connection: &quinn::Connection, peer: u8) -> String {
        let state = &self.peers[peer as usize];
        let mut stream = match connection.open_uni().await {
            Ok(stream) => stream,
            Err(error) => return error.to_string(),
        };
        loop {
            let frame = tokio::select! {
                frame = state.queue.next() => frame,
                error = connection.closed() => return error.to_string(),
            };
            let prefix = (frame.len() as u32).to_le_bytes();
            // A frame lost with a failing connection is lost: the protocol resends.
            if let Err(error) = stream.write_all(&prefix).await {
                return error.to_string();
            }
            if let Err(error) = stream.write_all(&frame).await {
                return error.to_string();
            }
            state.frames_sent.fetch_add(1, Ordering::Relaxed);
        }
    }

    async fn accept_loop(self: Arc<Self>, endpoint: quinn::Endpoint) {
        let inbound = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        while let Some(incoming) = endpoint.accept().await {
            if inbound.load(Ordering::Relaxed) >= inbound_connections_max {
                tracing::warn!(
                    replica = self.replica,
                    remote = %incoming.remote_address(),
                    "refusing a connection: {inbound_connections_max} inbound connections open"
                );
                incoming.refuse();
                continue;
            }
            inbound.fetch_add(1, Ordering::Relaxed);
            let network = self.clone();
            let inbound = inbound.clone();
            tokio::spawn(async move {
                let remote = incoming.remote_address();
                match incoming.await {
                    Ok(connection) => network.read_connection(connection).await,
                    Err(error) => tracing::warn!(
                        replica = network.replica, %remote, %error,
                        "refused a replica connection"
                    ),
                }
                inbound.fetch_sub(1, Ordering::Relaxed);
            });
        }
    }

    /// Identify the peer by its certificate, then read its streams until the connection ends.
    async fn read_connection(self: Arc<Self>, connection: quinn::Connection) {
        let remote = connection.remote_address();
        let Some(peer) = self.authenticated_peer(&connection) else {
            connection.close(1u32.into(), b"not a replica of this cluster");
            return;
        };
        let protocol = connection
            .handshake_data()
            .and_then(|data| data.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
            .and_then(|data| data.protocol);
        if protocol.as_deref() != Some(alpn) {
            tracing::warn!(
                replica = self.replica, peer, %remote,
                "refused a connection without ALPN {}", String::from_utf8_lossy(alpn)
            );
            connection.close(1u32.into(), b"wrong ALPN");
            return;
        }
        tracing::debug!(replica = self.replica, peer, %remote, "accepted");
        loop {
            match connection.accept_uni().await {
                Ok(stream) => {
                    tokio::spawn(self.clone().read_frames(stream, connection.clone(), peer));
                }
                Err(error) => {
                    tracing::debug!(replica = self.replica, peer, %remote, %error, "inbound closed");
                    return;
                }
            }
        }
    }

    fn authenticated_peer(&self, connection: &quinn::Connection) -> Option<u8> {
        let certificates = connection
            .peer_identity()?
            .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
            .ok()?;
        let presented = CertificateFingerprint::of(certificates.first()?);
        let peer = self
            .fingerprints
            .iter()
            .position(|pinned| *pinned == presented)? as u8;
        // The verifier admits only other replicas' certificates.
        assert_ne!(peer, self.replica);
        Some(peer)
    }

    async fn read_frames(
        self: Arc<Self>,
        mut stream: quinn::RecvStream,
        connection: quinn::Connection,
        peer: u8,
    ) {
        let state = &self.peers[peer as usize];
        let mut prefix = [0u8; frame_prefix_bytes];
        loop {
            if stream.read_exact(&mut prefix).await.is_err() {
                return; // End of stream or connection: the dialer reconnects.
            }
            let length = u32::from_le_bytes(prefix) as usize;
            if length == 0 || length > message_bytes_max {
                tracing::error!(
                    replica = self.replica,
                    peer,
                    "peer sent a frame of {length} bytes, outside 1..={message_bytes_max}: \
                     closing the connection (a replica of another version, or a bug)"
                );
                connection.close(2u32.into(), b"frame length out of bounds");
                return;
            }
            let mut frame = vec![0u8; length];
            if stream.read_exact(&mut frame).await.is_err() {
                return;
            }
            state.frames_received.fetch_add(1, Ordering::Relaxed);
            match Message::decode(&frame, self.cluster) {
                Ok(message) if claimed_sender(&message).is_none_or(|claimed| claimed == peer) => {
                    (self.deliver)(peer, message, length);
                }
                Ok(message) => {
                    state.frames_rejected.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        replica = self.replica, peer, kind = message.kind(),
                        claimed = ?claimed_sender(&message),
                        "dropped a message claiming another sender than the certificate \
                         (do the replicas' cluster configurations differ?)"
                    );
                }
                Err(error) => {
                    state.frames_rejected.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(replica = self.replica, peer, %error, "dropped a frame");
                }
            }
        }
    }
}

/// The replica a message says it comes from; `Some(u8::MAX)` for client traffic, which has no
/// business on the replica transport (clients reach a replica through the host's protocol).
fn claimed_sender(message: &Message) -> Option<u8> {
    match message {
        // A prepare is relayed during repair: its header names the primary that created it.
        Message::Prepare(_) => None,
        Message::Request { .. } | Message::Reply { .. } | Message::Eviction { .. } => Some(u8::MAX),
        Message::PrepareOk { replica, .. }
        | Message::Commit { replica, .. }
        | Message::StartViewChange { replica, .. }
        | Message::DoViewChange { replica, .. }
        | Message::StartView { replica, .. }
        | Message::RequestStartView { replica, .. }
        | Message::RequestHeaders { replica, .. }
        | Message::Headers { replica, .. }
        | Message::RequestPrepare { replica, .. }
        | Message::Ping { replica, .. }
        | Message::Pong { replica, .. }
        | Message::RecoveryRequest { replica, .. }
        | Message::RecoveryResponse { replica, .. }
        | Message::RequestCheckpoint { replica, .. }
        | Message::CheckpointChunk { replica, .. } => Some(*replica),
    }
}

/// Delay before the next dial after `failures` failures in a row (0: a connection just ended).
fn reconnect_delay(failures: u32) -> Duration {
    let ceiling_ms = reconnect_delay_ms_min
        .saturating_mul(1u64 << failures.min(16))
        .min(reconnect_delay_ms_max);
    let delay_ms = rand::thread_rng().gen_range(ceiling_ms / 2..=ceiling_ms);
    Duration::from_millis(delay_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_send_queue_drops_its_oldest_frames_at_either_bound() {
        let queue = SendQueue::default();
        for index in 0..peer_queue_frames_max + 3 {
            queue.push((index as u32).to_le_bytes().to_vec());
        }
        assert_eq!(queue.counts(), (peer_queue_frames_max, 3));
        assert_eq!(
            queue.pop(),
            Some(3u32.to_le_bytes().to_vec()),
            "0..3 dropped"
        );
        let queue = SendQueue::default();
        let large = peer_queue_bytes_max / 4;
        for byte in 0..6u8 {
            queue.push(vec![byte; large]);
        }
        assert_eq!(queue.counts(), (4, 2));
        assert_eq!(queue.pop().unwrap()[0], 2);
    }

    #[test]
    fn reconnect_delays_grow_to_the_bound_with_jitter() {
        for failures in 0..40 {
            let delay = reconnect_delay(failures).as_millis() as u64;
            let ceiling = (reconnect_delay_ms_min << failures.min(16)).min(reconnect_delay_ms_max);
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "{failures} failures: {delay} ms outside [{}, {ceiling}]",
                ceiling / 2
            );
        }
        assert!(reconnect_delay(30).as_millis() as u64 >= reconnect_delay_ms_max / 2);
    }
}
