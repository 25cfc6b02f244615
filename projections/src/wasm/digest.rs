//! The view digest: a BLAKE3 chain over the changes a projection applied, batch by
//! batch. Replicas compare digests at checkpoints; any nondeterminism shows up as a
//! differing digest at the first batch where it changed a row.
//!
//! `digest_after = BLAKE3(digest_before ‖ canonical encoding of the batch's changes)`,
//! starting from 32 zero bytes. The chain is per batch, so replicas compare it at equal
//! batch boundaries (the runner cuts batches at deterministic positions); to compare
//! views regardless of batching, use `MemoryView::state_digest` or the view store's own
//! content digest.

use super::Change;
use kimberlite_kernel::Value;
use std::fmt;

/// A view digest (BLAKE3, 32 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ViewDigest(pub [u8; 32]);

impl ViewDigest {
    /// The digest of a view no batch has touched yet.
    pub const GENESIS: ViewDigest = ViewDigest([0; 32]);

    /// The digest after applying one batch of `changes` (possibly empty: a batch that
    /// changed nothing still advances the chain, so the chain counts batches).
    pub fn chain(&self, changes: &[Change]) -> ViewDigest {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&self.0);
        let mut buffer = Vec::with_capacity(256);
        buffer.extend_from_slice(&(changes.len() as u64).to_le_bytes());
        for change in changes {
            encode_change(change, &mut buffer);
            // Hash in chunks so a big batch never needs one big buffer.
            if buffer.len() >= 64 << 10 {
                hasher.update(&buffer);
                buffer.clear();
            }
        }
        hasher.update(&buffer);
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

    #[test]
    fn chain_depends_on_every_change_and_on_order() {
        let a = upsert("t", vec![Value::Text("a".into()), Value::Integer(1)]);
        let b = upsert("t", vec![Value::Text("b".into()), Value::Integer(1)]);
        let ab = ViewDigest::GENESIS.chain(&[a.clone(), b.clone()]);
        let ba = ViewDigest::GENESIS.chain(&[b.clone(), a.clone()]);
        assert_ne!(ab, ba);
        assert_eq!(ab, ViewDigest::GENESIS.chain(&[a.clone(), b.clone()]));
        assert_ne!(ab, ViewDigest::GENESIS.chain(std::slice::from_ref(&a)));
        // An empty batch still advances the chain.
        assert_ne!(ViewDigest::GENESIS.chain(&[]), ViewDigest::GENESIS);
        let removal = Change::Remove {
            table: "t".into(),
            key: vec![Value::Text("a".into())],
        };
        assert_ne!(
            ViewDigest::GENESIS.chain(&[removal]),
            ViewDigest::GENESIS.chain(&[upsert("t", vec![Value::Text("a".into())])])
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
