//! 128-bit checksums (BLAKE3, truncated): prepares, the hash chain, superblocks, frames.

/// BLAKE3 of `bytes`, first 16 bytes little-endian.
pub fn checksum(bytes: &[u8]) -> u128 {
    let hash = blake3::hash(bytes);
    let mut first = [0u8; 16];
    first.copy_from_slice(&hash.as_bytes()[..16]);
    u128::from_le_bytes(first)
}

/// Checksum of several parts without concatenating them.
pub fn checksum_parts(parts: &[&[u8]]) -> u128 {
    let mut hasher = blake3::Hasher::new();
    for part in parts {
        hasher.update(part);
    }
    let hash = hasher.finalize();
    let mut first = [0u8; 16];
    first.copy_from_slice(&hash.as_bytes()[..16]);
    u128::from_le_bytes(first)
}
