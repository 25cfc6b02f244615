//! The partition's Merkle tree: proofs from a real log checked with `kimberlite_merkle` alone,
//! signed heads, recovery of the tree after crashes, and what group commit pays for it.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use kimberlite_merkle::{
    FileNodeStore, MerkleTree, SignedTreeHead, verify_consistency, verify_record_in_head,
};

use super::{PARTITION, keys, node_key, record, small_config};
use crate::checkpoint::{CHECKPOINT_ENTRY_BYTES, CHECKPOINT_FILE, Checkpoint};
use crate::error::LogError;
use crate::partition::{LogConfig, LogReader, PartitionLog, RecoveryReport};
use crate::storage::sim::SimStorage;
use crate::tree::TREE_FILE;
use crate::types::{Hash, NewRecord};
use crate::verify::verify_with;
use crate::verify_partition;

fn public_key() -> [u8; 32] {
    node_key().public_key().to_bytes()
}

fn open(dir: &Path) -> Result<(PartitionLog, RecoveryReport), LogError> {
    PartitionLog::open(dir, PARTITION, keys(), node_key(), small_config())
}

/// Records of 0 to 300 payload bytes, a few per segment of `small_config`.
fn records(count: u64) -> Vec<NewRecord> {
    (0..count)
        .map(|i| record(i, (i as usize * 53) % 300, 1_000 + i / 4))
        .collect()
}

/// Appends `records` in batches of 1 to 7 records, syncing each; returns the head signed
/// after each sync (the first is the empty tree's).
fn append_synced(log: &mut PartitionLog, records: &[NewRecord]) -> Vec<SignedTreeHead> {
    let reader = log.reader();
    let mut heads = vec![reader.signed_head().unwrap()];
    let mut start = 0;
    for batch_records in [1, 3, 7, 2, 5, 6, 4].into_iter().cycle() {
        if start == records.len() {
            break;
        }
        let end = (start + batch_records).min(records.len());
        log.append(&records[start..end]).unwrap();
        log.sync().unwrap();
        heads.push(reader.signed_head().unwrap());
        start = end;
    }
    heads
}

/// Every record hash of the log: the leaf inputs.
fn record_hashes(reader: &LogReader) -> Vec<Hash> {
    let mut hashes = Vec::new();
    while (hashes.len() as u64) < reader.end() {
        let headers = reader.read_headers(hashes.len() as u64, 64).unwrap();
        hashes.extend(headers.iter().map(|header| header.hash));
    }
    hashes
}

/// Every inclusion proof of every head, and every consistency proof between two heads,
/// verifies with `kimberlite_merkle` against the signed heads, whose signatures verify.
fn check_proofs(reader: &LogReader, heads: &[SignedTreeHead], hashes: &[Hash]) -> usize {
    let mut proofs = 0;
    let mut reference = MerkleTree::new();
    for head in heads {
        head.verify(&public_key()).unwrap();
        let size = head.head.size;
        assert_eq!(head.head.partition, PARTITION);
        if reference.size() < size {
            reference
                .append_batch(&hashes[reference.size() as usize..size as usize])
                .unwrap();
        }
        assert_eq!(head.head.root, reference.root(size).unwrap(), "size {size}");
        let chain_head = size
            .checked_sub(1)
            .map_or([0; 32], |last| hashes[last as usize]);
        assert_eq!(head.head.chain_head, chain_head, "size {size}");
        for position in 0..size {
            let proof = reader.inclusion_proof(position, size).unwrap();
            verify_record_in_head(&hashes[position as usize], position, &proof, head)
                .unwrap_or_else(|error| panic!("record {position} in {size}: {error}"));
            proofs += 1;
        }
        for old in heads.iter().filter(|old| old.head.size <= size) {
            let proof = reader.consistency_proof(old.head.size, size).unwrap();
            verify_consistency(old.head.size, size, &old.head.root, &head.head.root, &proof)
                .unwrap_or_else(|error| panic!("{} to {size}: {error}", old.head.size));
            proofs += 1;
        }
    }
    proofs
}

#[test]
fn proofs_from_a_real_log_verify_against_signed_heads() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path()).unwrap();
    let records = records(70);
    let heads = append_synced(&mut log, &records);
    assert!(log.segments_len() > 8, "{} segments", log.segments_len());
    let reader = log.reader();
    assert_eq!(reader.tree_size(), 70);
    let hashes = record_hashes(&reader);
    let proofs = check_proofs(&reader, &heads, &hashes);
    assert!(proofs > 900, "{proofs} proofs");

    // A checkpoint is a signed tree head: the same statement, and (Ed25519 signatures being
    // deterministic) the same signature as a head signed at its size.
    let checkpoint = log.last_checkpoint().unwrap().clone();
    assert!(checkpoint.position > 0);
    let at_checkpoint = heads
        .iter()
        .find(|head| head.head.size == checkpoint.position)
        .expect("checkpoints are signed by a sync");
    assert_eq!(checkpoint.tree_head(), *at_checkpoint);
    assert_eq!(
        checkpoint.signed_message(),
        at_checkpoint.head.signed_message()
    );

    // Reopened after a clean close: nothing to rebuild, the same head.
    let last = *heads.last().unwrap();
    log.close().unwrap();
    let (log, report) = open(dir.path()).unwrap();
    assert_eq!(report.tree_leaves_rebuilt, 0, "{report}");
    assert_eq!(log.reader().signed_head().unwrap(), last);
    assert_eq!(log.last_checkpoint().unwrap().tree_head(), last);
    check_proofs(&log.reader(), &heads, &hashes);

    // The tree file is kimberlite_merkle's layout: its FileNodeStore reads it.
    drop(log);
    let tree = MerkleTree::open(FileNodeStore::open(dir.path().join(TREE_FILE)).unwrap()).unwrap();
    assert_eq!((tree.size(), tree.root(70).unwrap()), (70, last.head.root));
}

#[test]
fn proofs_are_refused_beyond_the_durable_tree() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path()).unwrap();
    let reader = log.reader();
    let records = records(15);
    log.append(&records[..10]).unwrap();
    log.sync().unwrap();
    log.append(&records[10..]).unwrap();
    log.publish_unsynced().unwrap();
    // Readers see 15 records; the tree (and every signed head) covers the 10 durable ones.
    assert_eq!((reader.end(), reader.tree_size()), (15, 10));
    assert_eq!(reader.signed_head().unwrap().head.size, 10);

    let error = reader.inclusion_proof(3, 11).unwrap_err();
    assert!(
        matches!(
            error,
            LogError::BeyondTree {
                size: 11,
                tree_size: 10
            }
        ),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "tree size 11 is beyond the 10 records the Merkle tree covers (the log's durable end); \
         ask for a size of at most 10"
    );
    let error = reader.inclusion_proof(10, 10).unwrap_err();
    assert!(
        matches!(
            error,
            LogError::OutsideTree {
                position: 10,
                size: 10
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("below the tree size"), "{error}");
    assert!(matches!(
        reader.consistency_proof(5, 11).unwrap_err(),
        LogError::BeyondTree { size: 11, .. }
    ));
    let error = reader.consistency_proof(6, 5).unwrap_err();
    assert!(
        matches!(
            error,
            LogError::TreeSizesReversed {
                old_size: 6,
                new_size: 5
            }
        ),
        "{error:?}"
    );
    assert!(reader.consistency_proof(0, 10).unwrap().is_empty());
    assert!(reader.consistency_proof(10, 10).unwrap().is_empty());
    // Record 9 of 10: its sibling leaf 8, then the root of records 0..8.
    assert_eq!(reader.inclusion_proof(9, 10).unwrap().len(), 2);

    log.sync().unwrap();
    assert_eq!(reader.tree_size(), 15);
    assert_eq!(reader.inclusion_proof(14, 15).unwrap().len(), 3);
}

#[test]
fn readers_prove_while_the_writer_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path()).unwrap();
    let reader = log.reader();
    let records = records(120);
    std::thread::scope(|scope| {
        let prover = scope.spawn(|| {
            let mut checked = 0;
            let mut trusted = reader.signed_head().unwrap();
            while trusted.head.size < 120 {
                let head = reader.signed_head().unwrap();
                head.verify(&public_key()).unwrap();
                let size = head.head.size;
                let proof = reader.consistency_proof(trusted.head.size, size).unwrap();
                verify_consistency(
                    trusted.head.size,
                    size,
                    &trusted.head.root,
                    &head.head.root,
                    &proof,
                )
                .unwrap();
                for position in [0, size / 2, size.saturating_sub(1)] {
                    if position < size {
                        let hash = reader.read_headers(position, 1).unwrap()[0].hash;
                        let proof = reader.inclusion_proof(position, size).unwrap();
                        verify_record_in_head(&hash, position, &proof, &head).unwrap();
                        checked += 1;
                    }
                }
                trusted = head;
            }
            checked
        });
        append_synced(&mut log, &records);
        assert!(prover.join().unwrap() > 0);
    });
}

fn tree_bytes(dir: &Path) -> Vec<u8> {
    fs::read(dir.join(TREE_FILE)).unwrap()
}

/// 20 records in batches of 5 with `small_config`, closed: checkpoints at 10 and 20.
fn closed_log(dir: &Path) -> SignedTreeHead {
    let (mut log, _) = open(dir).unwrap();
    let head = *append_synced(&mut log, &records(20)).last().unwrap();
    log.close().unwrap();
    head
}

#[test]
fn a_missing_or_short_tree_file_is_rebuilt_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let head = closed_log(dir.path());
    let tree = tree_bytes(dir.path());
    assert_eq!(tree.len() as u64, (2 * 20 - 2) * 32);

    // A directory written before the tree existed, or a tree file removed to rebuild it.
    fs::remove_file(dir.path().join(TREE_FILE)).unwrap();
    let (log, report) = open(dir.path()).unwrap();
    assert_eq!(report.tree_leaves_rebuilt, 20);
    assert!(
        report
            .to_string()
            .contains("appended 20 Merkle tree leaves"),
        "{report}"
    );
    assert_eq!(log.reader().signed_head().unwrap(), head);
    log.close().unwrap();
    assert_eq!(tree_bytes(dir.path()), tree);

    // Shorter than the last checkpoint's tree, with a torn last hash.
    let file = fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join(TREE_FILE))
        .unwrap();
    file.set_len(7 * 32 + 5).unwrap();
    drop(file);
    let (log, report) = open(dir.path()).unwrap();
    assert_eq!(report.tree_leaves_rebuilt, 16, "7 nodes hold 4 leaves");
    assert_eq!(log.reader().signed_head().unwrap(), head);
    drop(log);
    assert_eq!(tree_bytes(dir.path()), tree);
}

#[test]
fn a_tree_with_leaves_past_the_end_of_the_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    closed_log(dir.path());
    // The tree of a longer log with the same first records: a durable record is missing.
    let longer = tempfile::tempdir().unwrap();
    let (mut log, _) = open(longer.path()).unwrap();
    append_synced(&mut log, &records(20));
    log.append(&records(21)[20..]).unwrap();
    log.close().unwrap();
    fs::copy(longer.path().join(TREE_FILE), dir.path().join(TREE_FILE)).unwrap();

    match open(dir.path()) {
        Err(LogError::Corrupt {
            file,
            position: Some(20),
            reason,
            ..
        }) => {
            assert!(file.ends_with(TREE_FILE));
            assert!(reason.contains("durable records are missing"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let failure = verify_partition(
        dir.path(),
        PARTITION,
        &node_key().public_key(),
        &mut |_, _| {},
    )
    .unwrap_err();
    assert_eq!(failure.position, Some(20), "{failure}");
    assert!(failure.reason.contains("durable records are missing"));
}

/// The position of the node at `level`, `index` in the tree file (see `kimberlite_merkle`).
fn node_offset(level: u32, index: u64) -> usize {
    let last_leaf = ((index + 1) << level) - 1;
    (kimberlite_merkle::nodes_for_leaves(last_leaf) + u64::from(level)) as usize * 32
}

fn flip_tree_byte(dir: &Path, offset: usize) {
    let mut bytes = tree_bytes(dir);
    bytes[offset + 7] ^= 0x10;
    fs::write(dir.join(TREE_FILE), bytes).unwrap();
}

#[test]
fn a_tampered_tree_node_is_found() {
    // A node off the root's path: open reads only that path (O(log n)), so it opens; the
    // proofs through the node fail on the client, and verify names the node.
    let dir = tempfile::tempdir().unwrap();
    let head = closed_log(dir.path());
    let leaf_3 = node_offset(0, 3);
    flip_tree_byte(dir.path(), leaf_3);
    let (log, _) = open(dir.path()).unwrap();
    let reader = log.reader();
    assert_eq!(reader.signed_head().unwrap(), head);
    let hashes = record_hashes(&reader);
    let proof = reader.inclusion_proof(2, 20).unwrap();
    assert!(verify_record_in_head(&hashes[2], 2, &proof, &head).is_err());
    let proof = reader.inclusion_proof(9, 20).unwrap();
    verify_record_in_head(&hashes[9], 9, &proof, &head).unwrap();
    drop(log);
    let failure = verify_partition(
        dir.path(),
        PARTITION,
        &node_key().public_key(),
        &mut |_, _| {},
    )
    .unwrap_err();
    assert_eq!(
        (failure.position, failure.offset),
        (Some(3), leaf_3 as u64),
        "{failure}"
    );
    assert!(
        failure.file.ends_with(TREE_FILE) && failure.reason.contains("tree file is damaged"),
        "{failure}"
    );

    // A node on the root's path (the subtree of records 0..16): open holds the root against
    // the last checkpoint's and refuses, naming the tree file.
    let dir = tempfile::tempdir().unwrap();
    closed_log(dir.path());
    flip_tree_byte(dir.path(), node_offset(4, 0));
    match open(dir.path()) {
        Err(LogError::Corrupt {
            file,
            position: Some(20),
            reason,
            ..
        }) => {
            assert!(file.ends_with(TREE_FILE), "{}", file.display());
            assert!(reason.contains("the tree file is damaged"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let failure = verify_partition(
        dir.path(),
        PARTITION,
        &node_key().public_key(),
        &mut |_, _| {},
    )
    .unwrap_err();
    assert_eq!(failure.offset, node_offset(4, 0) as u64, "{failure}");
    // Removing the tree file is the documented repair.
    fs::remove_file(dir.path().join(TREE_FILE)).unwrap();
    assert_eq!(open(dir.path()).unwrap().1.tree_leaves_rebuilt, 20);
}

#[test]
fn checkpoints_of_version_2_round_trip_and_version_1_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let head = closed_log(dir.path());
    let bytes = fs::read(dir.path().join(CHECKPOINT_FILE)).unwrap();
    assert_eq!(bytes.len(), 2 * CHECKPOINT_ENTRY_BYTES);
    let entry = &bytes[CHECKPOINT_ENTRY_BYTES..];
    assert_eq!((&entry[..4], entry[4]), (&b"KCKP"[..], 2));
    let checkpoint = Checkpoint::decode(entry).unwrap();
    assert_eq!(checkpoint.encode().as_slice(), entry);
    assert_eq!(checkpoint.tree_head(), head);
    assert_eq!(entry[64..96], head.head.root);
    assert_eq!(Checkpoint::from_tree_head(head), checkpoint);
    checkpoint.tree_head().verify(&public_key()).unwrap();
    assert!(checkpoint.verify(&node_key().public_key()));
    let mut altered = checkpoint.clone();
    altered.tree_root[0] ^= 1;
    assert!(!altered.verify(&node_key().public_key()));

    // A file of version 1 entries (132 bytes each, no root) is refused, not cut off as torn.
    let mut version_1 = bytes[..132].to_vec();
    version_1[4] = 1;
    fs::write(dir.path().join(CHECKPOINT_FILE), &version_1).unwrap();
    let error = open(dir.path()).unwrap_err();
    assert!(error.to_string().contains("version 1 entries"), "{error}");
    let failure = verify_partition(
        dir.path(),
        PARTITION,
        &node_key().public_key(),
        &mut |_, _| {},
    )
    .unwrap_err();
    assert!(failure.reason.contains("version 1 entries"), "{failure}");
    assert_eq!(
        fs::read(dir.path().join(CHECKPOINT_FILE)).unwrap(),
        version_1
    );
}

fn open_sim(storage: &SimStorage, config: LogConfig) -> Result<PartitionLog, LogError> {
    PartitionLog::open_with(
        Arc::new(storage.clone()),
        Path::new("/p"),
        PARTITION,
        keys(),
        node_key(),
        config,
    )
    .map(|(log, _)| log)
}

/// Seeds of the tree crash model.
const CRASH_SEEDS: u64 = 30;

#[test]
fn a_crash_after_sync_loses_only_tree_nodes_that_open_rebuilds() {
    let records = records(60);
    let (mut rebuilt, mut torn) = (0, 0);
    for seed in 0..CRASH_SEEDS {
        // Checkpoints every 8 records: the tree file is synced at some, not at most syncs.
        let storage = SimStorage::new(seed);
        let mut log = open_sim(&storage, small_config()).unwrap();
        let count = 10 + seed as usize % 50;
        let heads = append_synced(&mut log, &records[..count]);
        let head = *heads.last().unwrap();
        drop(log);

        // Power is lost: the tree's unsynced nodes are gone, or a torn (garbage) prefix of
        // them survives. Everything that `sync` acknowledged is in the log.
        let storage = storage.crash(seed % 3 != 0);
        let verified = verify_with(
            &storage,
            Path::new("/p"),
            PARTITION,
            &node_key().public_key(),
            &mut |_, _| {},
        )
        .unwrap_or_else(|failure| panic!("seed {seed}: {failure}"));
        torn += usize::from(verified.torn_tree.is_some());
        assert_eq!(verified.root, head.head.root, "seed {seed}");
        let (log, report) = PartitionLog::open_with(
            Arc::new(storage.clone()),
            Path::new("/p"),
            PARTITION,
            keys(),
            node_key(),
            small_config(),
        )
        .unwrap_or_else(|error| panic!("seed {seed}: {error}"));
        rebuilt += usize::from(report.tree_leaves_rebuilt > 0);
        let reader = log.reader();
        assert_eq!(reader.signed_head().unwrap(), head, "seed {seed}");
        let hashes = record_hashes(&reader);
        check_proofs(&reader, &heads[heads.len() - 3..], &hashes);
        drop(log);
        verify_with(
            &storage,
            Path::new("/p"),
            PARTITION,
            &node_key().public_key(),
            &mut |_, _| {},
        )
        .unwrap_or_else(|failure| panic!("seed {seed}: {failure}"));
    }
    assert!(
        rebuilt > CRASH_SEEDS as usize / 2,
        "{rebuilt} seeds rebuilt leaves"
    );
    assert!(torn > 0, "no seed left a torn tree tail");

    // No checkpoint after the genesis: the whole tree was never synced, and all of it is
    // rebuilt.
    let config = LogConfig {
        checkpoint_interval_records: 1_000,
        ..small_config()
    };
    let storage = SimStorage::new(99);
    let mut log = open_sim(&storage, config.clone()).unwrap();
    let head = *append_synced(&mut log, &records).last().unwrap();
    drop(log);
    let storage = storage.crash(false);
    let (log, report) = PartitionLog::open_with(
        Arc::new(storage.clone()),
        Path::new("/p"),
        PARTITION,
        keys(),
        node_key(),
        config,
    )
    .unwrap();
    assert_eq!(report.tree_leaves_rebuilt, 60);
    assert_eq!(log.reader().signed_head().unwrap(), head);
}

#[test]
fn group_commit_pays_no_tree_fsync_and_a_checkpoint_pays_one() {
    let config = LogConfig {
        checkpoint_interval_records: 1_000,
        ..LogConfig::default()
    };
    let storage = SimStorage::new(5);
    let mut log = open_sim(&storage, config).unwrap();
    let segment = Path::new("/p/00000000000000000000.seg");
    let tree = Path::new("/p").join(TREE_FILE);
    let checkpoints = Path::new("/p").join(CHECKPOINT_FILE);
    let before = (storage.syncs(segment), storage.syncs(&tree));
    let records = records(200);
    for batch in records.chunks(10) {
        log.append(batch).unwrap();
        log.sync().unwrap();
    }
    assert_eq!(log.reader().tree_size(), 200);
    // One fdatasync per sync, of the segment; none of the tree file.
    assert_eq!(
        (storage.syncs(segment), storage.syncs(&tree)),
        (before.0 + 20, before.1)
    );
    // A checkpoint syncs the tree file first, then the checkpoint file.
    let synced_checkpoints = storage.syncs(&checkpoints);
    log.checkpoint().unwrap();
    assert_eq!(storage.syncs(&tree), before.1 + 1);
    assert_eq!(storage.syncs(&checkpoints), synced_checkpoints + 1);
    // Nothing new: no sync at all.
    log.checkpoint().unwrap();
    log.sync().unwrap();
    assert_eq!(storage.syncs(&tree), before.1 + 1);
    assert_eq!(storage.syncs(segment), before.0 + 20);
}
