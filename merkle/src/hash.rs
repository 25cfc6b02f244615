//! RFC 9162 2.1.1 hashing: leaves, interior nodes, the empty tree, and the tree's shape.

use sha2::{Digest, Sha256};

/// Bytes in a [`Hash`](type@Hash).
pub const HASH_BYTES: usize = 32;

/// A SHA-256 digest: a leaf hash, an interior node hash or a root.
pub type Hash = [u8; HASH_BYTES];

/// Prefix of a leaf hash's preimage; distinct from [`NODE_PREFIX`] so that a leaf can never be
/// mistaken for a node (see the crate documentation).
const LEAF_PREFIX: u8 = 0x00;
/// Prefix of an interior node hash's preimage.
const NODE_PREFIX: u8 = 0x01;

/// The hash of a leaf: `SHA-256(0x00 || input)`.
///
/// For a Kimberlite record the input is the record's 32-byte chain hash; any bytes are
/// accepted, as RFC 9162 allows (its test vectors use inputs of 0 to 16 bytes).
pub fn leaf_hash(input: &[u8]) -> Hash {
    Sha256::new()
        .chain_update([LEAF_PREFIX])
        .chain_update(input)
        .finalize()
        .into()
}

/// The hash of an interior node: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    Sha256::new()
        .chain_update([NODE_PREFIX])
        .chain_update(left)
        .chain_update(right)
        .finalize()
        .into()
}

/// The root of the tree with no leaves: `SHA-256("")`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The number of leaves in the left subtree of a tree of `leaves` leaves: the largest power of
/// two smaller than `leaves` (RFC 9162 2.1.1).
pub(crate) fn split(leaves: u64) -> u64 {
    assert!(leaves >= 2, "a tree of {leaves} leaves has no split");
    1 << (leaves - 1).ilog2()
}

/// Lowercase hexadecimal, for error messages.
pub(crate) fn hex(hash: &Hash) -> String {
    use std::fmt::Write as _;
    hash.iter()
        .fold(String::with_capacity(2 * HASH_BYTES), |mut text, byte| {
            write!(text, "{byte:02x}").expect("writing to a String cannot fail");
            text
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_the_largest_power_of_two_below() {
        for (leaves, left) in [
            (2, 1),
            (3, 2),
            (4, 2),
            (5, 4),
            (7, 4),
            (8, 4),
            (9, 8),
            (63, 32),
        ] {
            assert_eq!(split(leaves), left, "split({leaves})");
        }
        assert_eq!(split(u64::MAX), 1 << 63);
        assert_eq!(split((1 << 63) + 1), 1 << 63);
        assert_eq!(split(1 << 63), 1 << 62);
    }

    #[test]
    fn hex_is_lowercase_and_full_length() {
        let mut hash = [0u8; HASH_BYTES];
        hash[0] = 0xab;
        hash[31] = 0x0f;
        assert_eq!(hex(&hash), format!("ab{}0f", "00".repeat(30)));
    }
}
