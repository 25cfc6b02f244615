//! Kimberlite's host: the node (recovery, group-commit writer, request handling), the
//! QUIC server, the CLI, the REPL and the demo. It wires every layer together and is
//! the only place besides `client` that knows the wire protocol.

pub mod cli;
pub mod cli_modules;
pub mod cli_proof;
pub mod cluster;
pub mod cluster_cli;
pub mod convert;
pub mod demo;
pub mod embedded;
pub mod files;
pub mod keys;
pub mod modules;
pub mod node;
pub mod quota;
pub mod render;
pub mod repl;
pub mod replicated;
pub mod server;
pub mod tls;
pub mod verify;

pub use embedded::EmbeddedServer;
pub use node::{Node, NodeOptions};
