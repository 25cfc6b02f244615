//! The view digest: a BLAKE3 chain over the changes a projection applied, event by
//! event. Replicas compare digests at checkpoints; any nondeterminism shows up as a
//! differing digest at the first event where it changed a row.
//!
//! For each event that changed something, in log order:
//! `digest_after = BLAKE3(digest_before ‖ position ‖ change count ‖ canonical changes)`
//! (position and count u64 little-endian), starting from 32 zero bytes. The chain is per
//! event, not per batch: how a runner cut the log into batches (which depends on how far
//! the log was when it ran, so differs between replicas and across a restart) never
//! shows, while the same changes at another position do. Events that changed nothing
//! leave the digest as it was.

use super::{Change, EventChanges};
use kimberlite_kernel::Position;
use kimberlite_kernel::Value;
use std::fmt;

/// Encoded changes hashed at once (then the buffer is reused).
const DIGEST_CHUNK_BYTES: usize = 64 << 10;

/// A view digest (BLAKE3, 32 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ViewDigest(pub [u8; 32]);

impl ViewDigest {
    /// The digest of a view no event has changed yet.
    pub const GENESIS: ViewDigest = ViewDigest([0; 32]);

    /// The digest after applying `events` (what `ProjectionModule::apply` returned for a
    /// batch) in order. Chaining two slices one after the other equals chaining both at
    /// once.
    pub fn chain(&self, events: &[EventChanges]) -> ViewDigest {
        let mut buffer = Vec::with_capacity(256);
        events.iter().fold(*self, |digest, event| {
            digest.chain_event(event.position, &event.changes, &mut buffer)
        })
    }

    /// One link: the changes of the event at `position`. `buffer` is scratch space,
    /// reused across events so the per-event path does not allocate.
    fn chain_event(
        &self,
        position: Position,
        changes: &[Change],
        buffer: &mut Vec<u8>,
    ) -> ViewDigest {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&self.0);
        buffer.clear();
        buffer.extend_from_slice(&position.to_le_bytes());
        buffer.extend_from_slice(&(changes.len() as u64).to_le_bytes());
        for change in changes {
            encode_change(change, buffer);
            // Hash in chunks so a big event never needs one big buffer.
            if buffer.len() >= DIGEST_CHUNK_BYTES {
                hasher.update(buffer);
                buffer.clear();
            }
        }
        hasher.update(buffer);
        ViewDigest(*hasher.finalize().as_bytes())
    }

    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
}

impl fmt::Display for ViewDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ViewDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ViewDigest({})", self.to_hex())
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)] as char);
        out.push(DIGITS[usize::from(byte & 0x0f)] as char);
    }
    out
}

/// Canonical encoding of one change: tag (1 upsert, 2 remove), table, values.
pub(crate) fn encode_change(change: &Change, out: &mut Vec<u8>) {
    let (tag, table, values) = match change {
        Change::Upsert { table, row } => (1u8, table, row),
        Change::Remove { table, key } => (2u8, table, key),
    };
    out.push(tag);
    encode_bytes(table.as_bytes(), out);
    encode_values(values, out);
}

/// Canonical, injective encoding of a value sequence: count, then each value as a type
/// tag and its little-endian payload (reals by their bits, which NaN canonicalization
/// makes deterministic). Also the key encoding of `MemoryView` and the batch overlay.
pub(crate) fn encode_values(values: &[Value], out: &mut Vec<u8>) {
    out.extend_from_slice(&(values.len() as u32).to_le_bytes());
    for value in values {
        match value {
            Value::Null => out.push(0),
            Value::Boolean(value) => out.extend_from_slice(&[1, u8::from(*value)]),
            Value::Integer(value) => {
                out.push(2);
                out.extend_from_slice(&value.to_le_bytes());
            }
            Value::Real(value) => {
                out.push(3);
                out.extend_from_slice(&value.to_bits().to_le_bytes());
            }
            Value::Text(value) => {
                out.push(4);
                encode_bytes(value.as_bytes(), out);
            }
            Value::Bytes(value) => {
                out.push(5);
                encode_bytes(value, out);
            }
            Value::Timestamp(value) => {
                out.push(6);
                out.extend_from_slice(&value.to_le_bytes());
            }
        }
    }
}

pub(crate) fn key_bytes(values: &[Value]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 * values.len());
    encode_values(values, &mut out);
    out
}

fn encode_bytes(bytes: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upsert(table: &str, row: Vec<Value>) -> Change {
        Change::Upsert {
            table: table.into(),
            row,
        }
    }

    fn at(position: Position, changes: &[Change]) -> EventChanges {
        EventChanges {
            position,
            changes: changes.to_vec(),
        }
    }

    #[test]
    fn chain_depends_on_every_change_on_order_and_on_positions() {
        let a = upsert("t", vec![Value::Text("a".into()), Value::Integer(1)]);
        let b = upsert("t", vec![Value::Text("b".into()), Value::Integer(1)]);
        let chain = |events: &[EventChanges]| ViewDigest::GENESIS.chain(events);
        let ab = chain(&[at(1, &[a.clone(), b.clone()])]);
        assert_ne!(ab, chain(&[at(1, &[b.clone(), a.clone()])]));
        assert_eq!(ab, chain(&[at(1, &[a.clone(), b.clone()])]));
        assert_ne!(ab, chain(&[at(1, std::slice::from_ref(&a))]));
        // The same changes at other positions, or cut into events differently.
        assert_ne!(ab, chain(&[at(2, &[a.clone(), b.clone()])]));
        let split = [
            at(1, std::slice::from_ref(&a)),
            at(2, std::slice::from_ref(&b)),
        ];
        assert_ne!(ab, chain(&split));
        let moved = [
            at(1, std::slice::from_ref(&a)),
            at(3, std::slice::from_ref(&b)),
        ];
        assert_ne!(chain(&split), chain(&moved));
        // Batching does not show: chaining in two calls equals chaining at once.
        assert_eq!(chain(&split[..1]).chain(&split[1..]), chain(&split));
        // Nothing applied, nothing chained.
        assert_eq!(chain(&[]), ViewDigest::GENESIS);
        let removal = Change::Remove {
            table: "t".into(),
            key: vec![Value::Text("a".into())],
        };
        assert_ne!(
            chain(&[at(1, &[removal])]),
            chain(&[at(1, &[upsert("t", vec![Value::Text("a".into())])])])
        );
    }

    #[test]
    fn encoding_is_injective_across_types_and_boundaries() {
        // Same bits, different types; and text boundaries that would collide if lengths
        // were not encoded.
        assert_ne!(
            key_bytes(&[Value::Integer(5)]),
            key_bytes(&[Value::Timestamp(5)])
        );
        assert_ne!(
            key_bytes(&[Value::Text("ab".into()), Value::Text("c".into())]),
            key_bytes(&[Value::Text("a".into()), Value::Text("bc".into())])
        );
        assert_eq!(ViewDigest([0xab; 32]).to_hex(), "ab".repeat(32));
    }
}
