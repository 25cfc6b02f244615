//! The RFC 6962 / RFC 9162 known answers used by the certificate-transparency reference code
//! (transparency-dev/merkle `testonly` and `proof` tests): eight leaves of raw bytes.

use kimberlite_merkle::{
    MerkleTree, empty_root, leaf_hash, node_hash, verify_consistency, verify_inclusion,
};

use super::hash;

const LEAF_INPUTS: [&[u8]; 8] = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    b"\x50\x51\x52\x53\x54\x55\x56\x57",
    b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
];

/// Roots of the trees of the first 0 to 8 leaves.
const ROOTS: [&str; 9] = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

/// Leaf hashes (level 0) of the eight leaves.
const LEAF_HASHES: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
    "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
    "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
    "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
    "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
];

/// (index, size, path).
const INCLUSION_PROOFS: [(u64, u64, &[&str]); 7] = [
    (0, 1, &[]),
    (
        0,
        2,
        &["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"],
    ),
    (
        1,
        2,
        &["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"],
    ),
    (
        2,
        3,
        &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
    ),
    (
        1,
        5,
        &[
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        0,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        &[
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
];

/// (old size, new size, proof).
const CONSISTENCY_PROOFS: [(u64, u64, &[&str]); 5] = [
    (1, 1, &[]),
    (
        1,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        2,
        5,
        &[
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        8,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        6,
        7,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
];

fn vector_tree() -> MerkleTree {
    let mut tree = MerkleTree::new();
    tree.append_batch(LEAF_INPUTS).unwrap();
    tree
}

fn hashes(texts: &[&str]) -> Vec<[u8; 32]> {
    texts.iter().map(|text| hash(text)).collect()
}

#[test]
fn hashing_matches_the_known_answers() {
    assert_eq!(empty_root(), hash(ROOTS[0]));
    for (input, expected) in LEAF_INPUTS.iter().zip(LEAF_HASHES) {
        assert_eq!(leaf_hash(input), hash(expected), "leaf {input:02x?}");
    }
    assert_eq!(
        node_hash(&hash(LEAF_HASHES[0]), &hash(LEAF_HASHES[1])),
        hash(ROOTS[2])
    );
}

#[test]
fn roots_match_the_known_answers() {
    let tree = vector_tree();
    for (size, expected) in ROOTS.iter().enumerate() {
        assert_eq!(
            tree.root(size as u64).unwrap(),
            hash(expected),
            "size {size}"
        );
    }
    // Grown one leaf at a time, the current root is right at every size too.
    let mut tree = MerkleTree::new();
    assert_eq!(tree.root(0).unwrap(), hash(ROOTS[0]));
    for (size, input) in LEAF_INPUTS.iter().enumerate() {
        tree.append(input).unwrap();
        assert_eq!(tree.root(size as u64 + 1).unwrap(), hash(ROOTS[size + 1]));
    }
}

#[test]
fn inclusion_proofs_match_the_known_answers() {
    let tree = vector_tree();
    for (index, size, path) in INCLUSION_PROOFS {
        let expected = hashes(path);
        assert_eq!(
            tree.inclusion_proof(index, size).unwrap(),
            expected,
            "index {index}, size {size}"
        );
        let leaf = leaf_hash(LEAF_INPUTS[index as usize]);
        let root = hash(ROOTS[size as usize]);
        assert_eq!(
            verify_inclusion(&leaf, index, size, &expected, &root),
            Ok(())
        );
    }
}

#[test]
fn consistency_proofs_match_the_known_answers() {
    let tree = vector_tree();
    for (old_size, new_size, path) in CONSISTENCY_PROOFS {
        let expected = hashes(path);
        assert_eq!(
            tree.consistency_proof(old_size, new_size).unwrap(),
            expected,
            "sizes {old_size} to {new_size}"
        );
        let old_root = hash(ROOTS[old_size as usize]);
        let new_root = hash(ROOTS[new_size as usize]);
        assert_eq!(
            verify_consistency(old_size, new_size, &old_root, &new_root, &expected),
            Ok(())
        );
    }
}
