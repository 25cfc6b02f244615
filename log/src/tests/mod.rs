//! The crate's tests: one test binary, so the crash model can reach the storage trait.

mod codec;
mod crash;
mod keys;
mod log;
mod proofs;
mod props;
mod ship;
mod tamper;

use std::sync::{Arc, OnceLock};

use crate::keys::{DataKey, KeyRing, NodeKey};
use crate::partition::LogConfig;
use crate::types::{NewRecord, RecordKind, RecordMeta};

pub(crate) const PARTITION: u64 = 42;

/// Small segments and intervals, so a few dozen records exercise rolls, index and checkpoints.
pub(crate) fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 1500,
        index_interval_records: 4,
        checkpoint_interval_records: 8,
    }
}

pub(crate) fn keys() -> KeyRing {
    KeyRing::new(DataKey::new(1, [7; 32]))
}

/// One node key for all tests: deriving it is a scalar multiplication, slow in debug builds.
pub(crate) fn node_key() -> Arc<NodeKey> {
    static NODE_KEY: OnceLock<Arc<NodeKey>> = OnceLock::new();
    NODE_KEY
        .get_or_init(|| Arc::new(NodeKey::from_secret([9; 32])))
        .clone()
}

/// A record whose every field depends on `seed`, so a record read back in the wrong place
/// shows.
pub(crate) fn record(seed: u64, payload_bytes: usize, timestamp_ns: u64) -> NewRecord {
    let kinds = RecordKind::ALL;
    NewRecord {
        key_id: 1,
        meta: RecordMeta {
            kind: kinds[seed as usize % kinds.len()],
            event_type: format!("Event{seed}"),
            op: seed * 3,
            timestamp_ns,
            client_id: u128::from(seed) << 64 | 0xc11e,
            request: seed + 1,
            stream: format!("stream-{}", seed % 5),
            principal: "alice@clinic".into(),
            reason: if seed.is_multiple_of(3) {
                String::new()
            } else {
                format!("reason {seed}")
            },
        },
        payload: (0..payload_bytes)
            .map(|i| (i as u64 ^ seed) as u8)
            .collect(),
    }
}
