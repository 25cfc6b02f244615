//! Kimberlite's consensus: a sans-IO Viewstamped Replication replica, a sans-IO client session,
//! and the deterministic simulator (VOPR) that drives the real replica code and checks it.
//!
//! The crate replicates opaque, checksummed commands; it knows nothing of SQL, tenants or Wasm.
//!
//! # Map
//! - [`replica`]: the protocol ([`Replica`]): normal operation, view change, repair along the
//!   hash chain, checkpoints, state transfer, client sessions, recovery of a lost disk.
//! - [`message`]: [`Header`], [`Prepare`], [`Message`] and the wire codec (one frame per
//!   message, checksummed, bounded by [`constants::message_bytes_max`]).
//! - [`storage`]: the [`Storage`] trait (why synchronous), the superblock and journal formats.
//! - [`state_machine`]: the [`StateMachine`] trait the replica commits into.
//! - [`clock`]: cluster time (Marzullo over ping/pong samples) for primary timestamps.
//! - [`client`]: [`Client`], a sans-IO client session (register, retry, exactly-once).
//! - [`simulator`]: the VOPR; `src/bin/vopr.rs` is its command line.
//!
//! The node side, which the modules above never import (they stay free of files, sockets,
//! clocks, threads, tokio and quinn):
//! - [`file_storage`]: [`file_storage::FileStorage`], the [`Storage`] over files (`pwrite` +
//!   `fdatasync`).
//! - [`transport`]: QUIC between replicas ([`transport::Transport`]): mutual TLS with pinned
//!   certificate fingerprints, length-prefixed frames, bounded drop-oldest queues, reconnection.
//! - [`driver`]: [`driver::ReplicaDriver`], one replica on its own thread over both, with a
//!   request/reply hook for the host's client protocol.
//!
//! # Driving a replica (the node)
//!
//! [`driver::ReplicaDriver`] does what follows; a node uses it rather than driving the replica
//! by hand. The node owns one [`Replica`] per process, built with [`Replica::format`] (new data
//! directory), [`Replica::open`] (restart) or [`Replica::recover`] (the disk was lost; rejoin).
//! It runs the replica on one dedicated thread: every [`constants::tick_ns`] it calls
//! [`Replica::on_tick`], and for every frame the QUIC layer receives it decodes
//! [`Message::decode`] (dropping frames that fail) and calls [`Replica::on_message`]; both take
//! an [`Instant`] read from the OS monotonic and wall clocks, and return [`Action`]s:
//! `SendToReplica` (encode with [`Message::encode`] and queue on that peer's connection, best
//! effort: the protocol retries), `SendToClient` (route by client id to the connection the
//! request came from) and `Committed` (the op is applied: wake read-your-writes waiters).
//! Storage writes happen inside those calls through the node's [`Storage`] (`pwrite` +
//! `fdatasync`, one file per zone) and are durable when the call returns, so actions may be sent
//! immediately. The kernel implements [`StateMachine`]; it sees only committed ops, in order,
//! with the primary's timestamp. Client libraries can embed [`Client`] for session handling.
// Bounds are named like values, unit last (`pipeline_prepares_max`), as STYLE.md asks, so
// constants are lower case.
#![allow(non_upper_case_globals)]

pub mod checksum;
pub mod client;
pub mod clock;
pub mod codec;
pub mod constants;
pub mod driver;
pub mod file_storage;
pub mod message;
pub mod replica;
pub mod sessions;
pub mod simulator;
pub mod state_machine;
pub mod storage;
pub mod transport;

pub use client::{Client, ClientEvent};
pub use clock::Instant;
pub use message::{Header, Message, Operation, Prepare, ViewChangeEntry};
#[cfg(feature = "vopr-bugs")]
pub use replica::KnownBug;
pub use replica::{Action, Config, OpenError, Replica, Status};
pub use state_machine::StateMachine;
pub use storage::{Location, Storage, SuperBlock};
