//! RFC 9162 section 2.1, transcribed literally: recursive, `O(n)` per call, obviously right.
//! The incremental tree is checked against it.

use kimberlite_merkle::{Hash, empty_root, node_hash};

/// The largest power of two smaller than `n` (`n > 1`).
fn split(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// `MTH(D[n])` over leaf hashes.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// `PATH(m, D[n])`.
pub fn inclusion_proof(index: usize, leaves: &[Hash]) -> Vec<Hash> {
    let n = leaves.len();
    assert!(index < n);
    if n == 1 {
        return Vec::new();
    }
    let k = split(n);
    if index < k {
        let mut path = inclusion_proof(index, &leaves[..k]);
        path.push(root(&leaves[k..]));
        path
    } else {
        let mut path = inclusion_proof(index - k, &leaves[k..]);
        path.push(root(&leaves[..k]));
        path
    }
}

/// `PROOF(m, D[n])` for `0 < m < n`; empty otherwise.
pub fn consistency_proof(old_size: usize, leaves: &[Hash]) -> Vec<Hash> {
    if old_size == 0 || old_size >= leaves.len() {
        return Vec::new();
    }
    subproof(old_size, leaves, true)
}

/// `SUBPROOF(m, D[n], b)`.
fn subproof(m: usize, leaves: &[Hash], b: bool) -> Vec<Hash> {
    let n = leaves.len();
    if m == n {
        return if b { Vec::new() } else { vec![root(leaves)] };
    }
    let k = split(n);
    if m <= k {
        let mut proof = subproof(m, &leaves[..k], b);
        proof.push(root(&leaves[k..]));
        proof
    } else {
        let mut proof = subproof(m - k, &leaves[k..], false);
        proof.push(root(&leaves[..k]));
        proof
    }
}
