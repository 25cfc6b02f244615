//! Kimberlite's log. See ARCHITECTURE.md.

pub mod types;

pub use types::{GENESIS_HASH, Hash, NewRecord, Position, Record, RecordHeader, RecordKind, RecordMeta};
