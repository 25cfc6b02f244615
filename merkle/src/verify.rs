//! Proof verification for clients that hold no tree: RFC 9162 2.1.3.2 and 2.1.4.2.
//!
//! Every input is hostile until checked: lengths and sizes are checked before any hashing, the
//! proof's length must be exactly the one its sizes call for, and nothing here panics.

use crate::hash::{Hash, empty_root, hex, node_hash};
use crate::{PROOF_HASHES_MAX, TREE_LEAVES_MAX};

/// Why a proof was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// More proof hashes than any tree of [`TREE_LEAVES_MAX`] leaves needs.
    #[error("the proof has {hashes} hashes, more than the maximum of {hashes_max}")]
    ProofTooLong { hashes: usize, hashes_max: usize },
    /// A tree size beyond [`TREE_LEAVES_MAX`].
    #[error("tree size {size} is larger than the maximum of {size_max} leaves")]
    SizeTooLarge { size: u64, size_max: u64 },
    /// A leaf index at or past the tree size.
    #[error(
        "leaf index {index} is outside a tree of {size} leaves; indexes run from 0 to size - 1"
    )]
    IndexOutOfRange { index: u64, size: u64 },
    /// A consistency proof from a larger tree to a smaller one.
    #[error(
        "old size {old_size} is larger than new size {new_size}; a log never shrinks, so the \
         newer tree head is the one with the smaller size"
    )]
    SizesReversed { old_size: u64, new_size: u64 },
    /// Not the number of hashes a proof for these sizes (and index) has.
    #[error(
        "the proof has {hashes} hashes but a proof for these sizes has exactly {hashes_expected}"
    )]
    WrongProofLength {
        hashes: usize,
        hashes_expected: usize,
    },
    /// The inclusion proof leads to another root: the leaf is not at that index of that tree,
    /// or the proof or the root is wrong.
    #[error(
        "the proof leads to root {} but the tree's root is {}",
        hex(.computed),
        hex(.expected)
    )]
    RootMismatch { computed: Hash, expected: Hash },
    /// The consistency proof does not lead to the old root: the old tree is not a prefix of
    /// the new one, or the proof or the old root is wrong.
    #[error(
        "the proof leads to old root {} but the trusted old root is {}",
        hex(.computed),
        hex(.expected)
    )]
    OldRootMismatch { computed: Hash, expected: Hash },
    /// The consistency proof does not lead to the new root.
    #[error(
        "the proof leads to new root {} but the new root given is {}",
        hex(.computed),
        hex(.expected)
    )]
    NewRootMismatch { computed: Hash, expected: Hash },
    /// Two different roots for the same size: two different logs (or a wrong root).
    #[error("two different roots for the same tree size {size}: they cannot both be the log's")]
    SameSizeRootsDiffer { size: u64 },
}

/// Checks that the leaf with hash `leaf_hash` is leaf `index` of the tree of `size` leaves whose
/// root is `root` (RFC 9162 2.1.3.2).
///
/// `leaf_hash` is [`leaf_hash`](crate::leaf_hash) of the leaf input (for a record: of its
/// 32-byte chain hash). `(size, root)` must be a tree head the client trusts, authenticated
/// together: see the crate documentation.
pub fn verify_inclusion(
    leaf_hash: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    check_proof_length_max(proof)?;
    check_size_max(size)?;
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let sides = Sides::new(index, size - 1);
    check_proof_length(proof, sides.clone().count())?;
    let computed = sides
        .zip(proof)
        .fold(*leaf_hash, |hash, (side, sibling)| match side {
            Side::Left => node_hash(sibling, &hash),
            Side::Right => node_hash(&hash, sibling),
        });
    if computed != *root {
        return Err(ProofError::RootMismatch {
            computed,
            expected: *root,
        });
    }
    Ok(())
}

/// Checks that the tree of `new_size` leaves with root `new_root` extends the tree of
/// `old_size` leaves with root `old_root`: it holds the same first `old_size` leaves
/// (RFC 9162 2.1.4.2).
///
/// `(old_size, old_root)` is the client's trusted tree head; once this returns `Ok`, the client
/// may trust `(new_size, new_root)` instead. Every tree extends the empty tree: from
/// `old_size` 0 the proof is empty and `old_root` must be [`empty_root`].
/// For equal sizes the proof is empty and the roots must be equal.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    check_proof_length_max(proof)?;
    check_size_max(new_size)?;
    if old_size > new_size {
        return Err(ProofError::SizesReversed { old_size, new_size });
    }
    if old_size == 0 {
        check_proof_length(proof, 0)?;
        let empty = empty_root();
        if *old_root != empty {
            return Err(ProofError::OldRootMismatch {
                computed: empty,
                expected: *old_root,
            });
        }
        if new_size == 0 && *new_root != empty {
            return Err(ProofError::NewRootMismatch {
                computed: empty,
                expected: *new_root,
            });
        }
        return Ok(());
    }
    if old_size == new_size {
        check_proof_length(proof, 0)?;
        if old_root != new_root {
            return Err(ProofError::SameSizeRootsDiffer { size: old_size });
        }
        return Ok(());
    }

    // Now 0 < old_size < new_size. The old tree's root is the hash of its left-edge subtrees;
    // the lowest of them either is the old tree (old_size a power of two: its root is known) or
    // is the proof's first hash. Skip the levels below that subtree.
    let old_size_is_power_of_two = old_size.is_power_of_two();
    let (mut old_last, mut new_last) = (old_size - 1, new_size - 1);
    while old_last & 1 == 1 {
        old_last >>= 1;
        new_last >>= 1;
    }
    let sides = Sides::new(old_last, new_last);
    check_proof_length(
        proof,
        usize::from(!old_size_is_power_of_two) + sides.clone().count(),
    )?;
    let (seed, path) = if old_size_is_power_of_two {
        (old_root, proof)
    } else {
        let (first, rest) = proof
            .split_first()
            .expect("the length check leaves at least one hash");
        (first, rest)
    };
    let (mut old_computed, mut new_computed) = (*seed, *seed);
    for (side, hash) in sides.zip(path) {
        match side {
            Side::Left => {
                old_computed = node_hash(hash, &old_computed);
                new_computed = node_hash(hash, &new_computed);
            }
            Side::Right => new_computed = node_hash(&new_computed, hash),
        }
    }
    if old_computed != *old_root {
        return Err(ProofError::OldRootMismatch {
            computed: old_computed,
            expected: *old_root,
        });
    }
    if new_computed != *new_root {
        return Err(ProofError::NewRootMismatch {
            computed: new_computed,
            expected: *new_root,
        });
    }
    Ok(())
}

fn check_proof_length_max(proof: &[Hash]) -> Result<(), ProofError> {
    if proof.len() > PROOF_HASHES_MAX {
        return Err(ProofError::ProofTooLong {
            hashes: proof.len(),
            hashes_max: PROOF_HASHES_MAX,
        });
    }
    Ok(())
}

fn check_size_max(size: u64) -> Result<(), ProofError> {
    if size > TREE_LEAVES_MAX {
        return Err(ProofError::SizeTooLarge {
            size,
            size_max: TREE_LEAVES_MAX,
        });
    }
    Ok(())
}

fn check_proof_length(proof: &[Hash], hashes_expected: usize) -> Result<(), ProofError> {
    if proof.len() != hashes_expected {
        return Err(ProofError::WrongProofLength {
            hashes: proof.len(),
            hashes_expected,
        });
    }
    Ok(())
}

/// Which side of the running hash a proof hash goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Left,
    Right,
}

/// The sides of the proof hashes, bottom-up, of the path from node `node` to the last node
/// `last` of a level (RFC 9162's `fn` and `sn`): one per level where the node has a sibling.
/// The number of items is the proof's exact length; it is at most 64, one per bit of `last`.
#[derive(Clone, Debug)]
struct Sides {
    node: u64,
    last: u64,
}

impl Sides {
    fn new(node: u64, last: u64) -> Self {
        assert!(node <= last);
        Self { node, last }
    }
}

impl Iterator for Sides {
    type Item = Side;

    fn next(&mut self) -> Option<Side> {
        if self.last == 0 {
            return None;
        }
        let side = if self.node & 1 == 1 || self.node == self.last {
            // A right child, or the last node of its level with no right sibling: its
            // ancestors are last nodes too, up to the first that is a right child.
            while self.node & 1 == 0 && self.node != 0 {
                self.node >>= 1;
                self.last >>= 1;
            }
            Side::Left
        } else {
            Side::Right
        };
        self.node >>= 1;
        self.last >>= 1;
        Some(side)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides_follow_the_tree_shape() {
        use Side::{Left as L, Right as R};
        // (index, size) → sides of the inclusion path, bottom-up.
        let cases: [(u64, u64, &[Side]); 7] = [
            (0, 1, &[]),
            (0, 2, &[R]),
            (1, 2, &[L]),
            (2, 3, &[L]),
            (4, 5, &[L]),
            (4, 7, &[R, R, L]),
            (5, 8, &[L, R, L]),
        ];
        for (index, size, sides) in cases {
            let got: Vec<Side> = Sides::new(index, size - 1).collect();
            assert_eq!(got, sides, "index {index}, size {size}");
        }
        assert_eq!(Sides::new(0, u64::MAX).count(), 64);
        assert_eq!(Sides::new(u64::MAX, u64::MAX).count(), 64);
    }
}
