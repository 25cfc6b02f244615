//! Tamper tests on real files: each kind of damage is found, by `verify_partition` and by
//! `open` where it applies, at the right position.

use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{PARTITION, keys, node_key, record, small_config};
use crate::checkpoint::{CHECKPOINT_ENTRY_BYTES, Checkpoint};
use crate::codec;
use crate::error::LogError;
use crate::partition::PartitionLog;
use crate::types::Position;
use crate::verify::{VerifyFailure, VerifyReport, verify_partition};

const RECORDS: u64 = 20;

/// 20 records of about 270 bytes in segments of 1500 bytes: positions 0-4, 5-9, 10-14 and
/// 15-19 in four segments; checkpoints at 10 and 20.
fn fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) =
        PartitionLog::open(dir.path(), PARTITION, keys(), node_key(), small_config()).unwrap();
    for first in (0..RECORDS).step_by(5) {
        let batch: Vec<_> = (first..first + 5).map(|i| record(i, 60, i)).collect();
        log.append(&batch).unwrap();
        log.sync().unwrap();
    }
    log.close().unwrap();
    assert_eq!(
        segments(dir.path()).len(),
        4,
        "the fixture's layout changed"
    );
    dir
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "seg"))
        .collect();
    paths.sort();
    paths
}

/// The file, byte offset and length of the record at `position`.
fn locate(dir: &Path, position: Position) -> (PathBuf, usize, usize) {
    let mut current = 0;
    for path in segments(dir) {
        let bytes = fs::read(&path).unwrap();
        let mut offset = 0;
        while offset < bytes.len() {
            let length = codec::frame_bytes(&bytes[offset..]).unwrap();
            if current == position {
                return (path, offset, length);
            }
            offset += length;
            current += 1;
        }
    }
    panic!("no record at position {position}");
}

/// Applies `change` to the bytes of the record at `position`, in place.
fn tamper(dir: &Path, position: Position, change: impl FnOnce(&mut [u8])) {
    let (path, offset, length) = locate(dir, position);
    let mut bytes = fs::read(&path).unwrap();
    change(&mut bytes[offset..offset + length]);
    fs::write(&path, bytes).unwrap();
}

/// What a forger who knows the format does after editing a record: fix the CRC.
pub(super) fn fix_crc(record: &mut [u8]) {
    let end = record.len() - 8;
    let crc = crc32fast::hash(&record[..end]);
    record[end..end + 4].copy_from_slice(&crc.to_le_bytes());
}

/// ... or fix the hash too.
pub(super) fn fix_hash_and_crc(record: &mut [u8]) {
    let end = record.len() - 40;
    let hash = Sha256::digest(&record[..end]);
    record[end..end + 32].copy_from_slice(&hash);
    fix_crc(record);
}

fn verify(dir: &Path) -> Result<VerifyReport, VerifyFailure> {
    verify_partition(dir, PARTITION, &node_key().public_key(), &mut |_, _| {})
}

fn open(dir: &Path) -> Result<(PartitionLog, crate::RecoveryReport), LogError> {
    PartitionLog::open(dir, PARTITION, keys(), node_key(), small_config())
}

/// Verification fails at `position` for `reason`, and so does open (if `open_fails`).
fn check(dir: &Path, position: Option<Position>, reason: &str, open_fails: bool) {
    let failure = verify(dir).expect_err("verify must fail");
    assert_eq!(failure.position, position, "{failure}");
    assert!(
        failure.reason.contains(reason),
        "expected {reason:?} in: {failure}"
    );
    let display = failure.to_string();
    assert!(
        display.contains(&failure.file.display().to_string()) && display.contains("byte offset")
    );
    if open_fails {
        match open(dir) {
            Err(LogError::Corrupt {
                position: found,
                reason: why,
                file,
                ..
            }) => {
                assert_eq!(found, position, "open: {why}");
                assert_eq!(file, failure.file, "open and verify name the same file");
            }
            other => panic!("open must refuse a corrupt log, got {other:?}"),
        }
    } else {
        open(dir).expect("open trusts what it does not check");
    }
}

#[test]
fn the_fixture_verifies() {
    let dir = fixture();
    let mut calls = Vec::new();
    let report = verify_partition(
        dir.path(),
        PARTITION,
        &node_key().public_key(),
        &mut |done, total| calls.push((done, total)),
    )
    .unwrap();
    assert_eq!(
        (report.records, report.segments, report.checkpoints),
        (RECORDS, 4, 2)
    );
    assert!(report.torn_tail.is_none() && report.torn_checkpoint.is_none());
    assert_eq!((report.tree_leaves, report.torn_tree), (RECORDS, None));
    let (log, _) = open(dir.path()).unwrap();
    assert_eq!(report.root, log.reader().signed_head().unwrap().head.root);
    drop(log);
    let total: u64 = segments(dir.path())
        .iter()
        .map(|path| fs::metadata(path).unwrap().len())
        .sum();
    assert_eq!(
        calls.last(),
        Some(&(total, total)),
        "progress ends at the total"
    );
    assert_eq!(report.bytes, total);
}

#[test]
fn a_flipped_bit_is_found_at_its_record() {
    // (byte within record 7 to flip, name): payload, header fields, stored hash, trailer.
    let length = locate(fixture().path(), 7).2;
    let cases = [
        (length - 60, "ciphertext"),
        (28, "timestamp"),
        (13, "position"),
        (100, "prev_hash"),
        (130, "a string"),
        (length - 30, "stored hash"),
        (length - 6, "CRC"),
        (length - 2, "end magic"),
        (1, "start magic"),
    ];
    for (byte, name) in cases {
        let dir = fixture();
        tamper(dir.path(), 7, |record| record[byte] ^= 0x04);
        let failure = verify(dir.path()).expect_err(name);
        assert_eq!(failure.position, Some(7), "{name}: {failure}");
        check(dir.path(), Some(7), "", true);
    }
}

#[test]
fn an_edit_with_a_fixed_crc_is_found_by_its_hash() {
    let dir = fixture();
    tamper(dir.path(), 7, |record| {
        let payload = record.len() - 60;
        record[payload] ^= 1;
        fix_crc(record);
    });
    // Open checks CRCs and links, not hashes; verify and every read recompute the hash.
    check(dir.path(), Some(7), "stored hash is not the SHA-256", false);
    let (log, _) = open(dir.path()).unwrap();
    assert_eq!(log.reader().read(2, 5).unwrap().len(), 5);
    match log.reader().read(5, 5) {
        Err(LogError::Corrupt {
            position: Some(7),
            reason,
            ..
        }) => assert!(reason.contains("hash"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        log.reader().read_headers(7, 1),
        Err(LogError::Corrupt {
            position: Some(7),
            ..
        })
    ));
}

#[test]
fn an_edit_with_a_fixed_hash_breaks_the_chain_at_the_next_record() {
    let dir = fixture();
    tamper(dir.path(), 7, |record| {
        record[28] ^= 1; // timestamp
        fix_hash_and_crc(record);
    });
    check(dir.path(), Some(8), "prev_hash", true);
}

#[test]
fn a_record_cut_out_of_the_middle_is_found() {
    let dir = fixture();
    let (path, offset, length) = locate(dir.path(), 7);
    let mut bytes = fs::read(&path).unwrap();
    bytes.drain(offset..offset + length);
    fs::write(&path, bytes).unwrap();
    check(
        dir.path(),
        Some(7),
        "holds position 8 where position 7 belongs",
        true,
    );
}

#[test]
fn two_swapped_records_are_found() {
    let dir = fixture();
    let (path, offset_6, length_6) = locate(dir.path(), 6);
    let (_, offset_7, length_7) = locate(dir.path(), 7);
    let bytes = fs::read(&path).unwrap();
    let mut swapped = bytes[..offset_6].to_vec();
    swapped.extend_from_slice(&bytes[offset_7..offset_7 + length_7]);
    swapped.extend_from_slice(&bytes[offset_6..offset_6 + length_6]);
    swapped.extend_from_slice(&bytes[offset_7 + length_7..]);
    fs::write(&path, swapped).unwrap();
    check(
        dir.path(),
        Some(6),
        "holds position 7 where position 6 belongs",
        true,
    );
}

#[test]
fn a_sealed_segment_cut_in_the_middle_is_corruption() {
    let dir = fixture();
    let (path, offset, length) = locate(dir.path(), 7);
    let file = fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len((offset + length / 2) as u64).unwrap();
    check(dir.path(), Some(7), "cut short", true);
}

#[test]
fn a_torn_tail_is_cut_off_on_open_and_reported() {
    let dir = fixture();
    let (_, offset, length) = locate(dir.path(), 19);
    let last = segments(dir.path()).pop().unwrap();
    let mut bytes = fs::read(&last).unwrap();
    let valid = bytes.len();
    // A crash while appending record 20: half of a record reached the disk.
    let half: Vec<u8> = bytes[offset..offset + length / 2].to_vec();
    bytes.extend_from_slice(&half);
    fs::write(&last, bytes).unwrap();

    // Verification tolerates (and reports) it: it is not part of the chain.
    let report = verify(dir.path()).unwrap();
    assert_eq!(report.records, RECORDS);
    let torn = report.torn_tail.expect("torn tail reported");
    assert_eq!(
        (torn.offset, torn.bytes_dropped),
        (valid as u64, half.len() as u64)
    );

    let (mut log, report) = open(dir.path()).unwrap();
    let torn = report.torn_tail.clone().expect("torn tail reported");
    assert_eq!(
        (&torn.file, torn.offset, torn.bytes_dropped),
        (&last, valid as u64, half.len() as u64)
    );
    assert!(
        report.truncated() && report.to_string().contains("torn"),
        "{report}"
    );
    assert_eq!(
        fs::metadata(&last).unwrap().len(),
        valid as u64,
        "truncated on disk"
    );
    assert_eq!(log.next_position(), RECORDS);
    log.append(&[record(20, 5, 20)]).unwrap();
    log.close().unwrap();
    assert_eq!(verify(dir.path()).unwrap().records, RECORDS + 1);
}

#[test]
fn the_same_damage_in_a_sealed_segment_is_corruption() {
    let dir = fixture();
    let (_, offset, length) = locate(dir.path(), 19);
    let last = segments(dir.path()).pop().unwrap();
    let half: Vec<u8> = fs::read(&last).unwrap()[offset..offset + length / 2].to_vec();
    let sealed = &segments(dir.path())[2]; // positions 10-14
    let mut bytes = fs::read(sealed).unwrap();
    let valid = bytes.len();
    bytes.extend_from_slice(&half);
    fs::write(sealed, bytes).unwrap();
    check(dir.path(), Some(15), "sealed segment", true);
    let failure = verify(dir.path()).unwrap_err();
    assert_eq!((&failure.file, failure.offset), (sealed, valid as u64));
}

#[test]
fn damage_in_the_last_segment_followed_by_valid_records_is_corruption() {
    let dir = fixture();
    tamper(dir.path(), 17, |record| record[40] ^= 1);
    check(dir.path(), Some(17), "valid records follow", true);
}

#[test]
fn records_cut_from_the_end_under_a_checkpoint_are_missing() {
    let dir = fixture();
    let (path, offset, _) = locate(dir.path(), 19);
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(offset as u64)
        .unwrap();
    check(dir.path(), Some(20), "signed records are missing", true);
    assert!(
        verify(dir.path())
            .unwrap_err()
            .file
            .ends_with("checkpoints")
    );
}

fn rewrite_checkpoint(dir: &Path, index: usize, change: impl FnOnce(&mut Checkpoint)) {
    let path = dir.join("checkpoints");
    let mut bytes = fs::read(&path).unwrap();
    let entry = &mut bytes[index * CHECKPOINT_ENTRY_BYTES..(index + 1) * CHECKPOINT_ENTRY_BYTES];
    let mut checkpoint = Checkpoint::decode(entry).unwrap();
    change(&mut checkpoint);
    entry.copy_from_slice(&checkpoint.encode());
    fs::write(&path, bytes).unwrap();
}

#[test]
fn a_forged_checkpoint_signature_is_found() {
    let dir = fixture();
    rewrite_checkpoint(dir.path(), 1, |checkpoint| checkpoint.signature[10] ^= 1);
    // Open does not check signatures (it holds the chain heads); verification does.
    check(dir.path(), Some(20), "signature does not verify", false);
}

#[test]
fn a_signed_checkpoint_that_disagrees_with_the_log_is_found() {
    let dir = fixture();
    rewrite_checkpoint(dir.path(), 0, |checkpoint| {
        checkpoint.chain_head[0] ^= 1;
        *checkpoint = Checkpoint::sign(&node_key(), checkpoint.tree_head().head);
    });
    check(dir.path(), Some(10), "does not match the log's hash", true);
}

#[test]
fn a_signed_root_that_disagrees_with_the_records_is_found() {
    // An earlier checkpoint: verify recomputes every root; open holds only the last one.
    let resign_with_another_root = |checkpoint: &mut Checkpoint| {
        checkpoint.tree_root[0] ^= 1;
        *checkpoint = Checkpoint::sign(&node_key(), checkpoint.tree_head().head);
    };
    let dir = fixture();
    rewrite_checkpoint(dir.path(), 0, resign_with_another_root);
    check(
        dir.path(),
        Some(10),
        "signed root does not match the records",
        false,
    );
    open(dir.path()).unwrap();

    // The last checkpoint: open refuses too, and says the checkpoint is wrong, not the tree.
    let dir = fixture();
    rewrite_checkpoint(dir.path(), 1, resign_with_another_root);
    check(
        dir.path(),
        Some(20),
        "signed root does not match the records",
        true,
    );
    let error = open(dir.path()).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("the checkpoint does not describe these records"),
        "{error}"
    );
}

#[test]
fn a_damaged_checkpoint_before_valid_ones_is_corruption() {
    let dir = fixture();
    let path = dir.path().join("checkpoints");
    let mut bytes = fs::read(&path).unwrap();
    bytes[20] ^= 1;
    fs::write(&path, &bytes).unwrap();
    check(dir.path(), None, "checkpoint CRC mismatch", true);

    // The same damage in the last entry is a torn checkpoint write: cut off on open.
    let dir = fixture();
    let mut bytes = fs::read(path_of(dir.path())).unwrap();
    bytes[CHECKPOINT_ENTRY_BYTES + 20] ^= 1;
    fs::write(path_of(dir.path()), &bytes).unwrap();
    assert!(verify(dir.path()).unwrap().torn_checkpoint.is_some());
    let (log, report) = open(dir.path()).unwrap();
    assert_eq!(
        report.torn_checkpoint.unwrap().offset,
        CHECKPOINT_ENTRY_BYTES as u64
    );
    assert_eq!(log.last_checkpoint().unwrap().position, 10);
}

fn path_of(dir: &Path) -> PathBuf {
    dir.join("checkpoints")
}

#[test]
fn missing_and_misnamed_segments_are_found() {
    let dir = fixture();
    let second = segments(dir.path())[1].clone();
    fs::remove_file(&second).unwrap();
    check(dir.path(), Some(5), "a segment is missing", true);
    assert!(
        verify(dir.path())
            .unwrap_err()
            .file
            .ends_with("00000000000000000010.seg")
    );

    let dir = fixture();
    let second = segments(dir.path())[1].clone();
    fs::rename(&second, dir.path().join("5.seg")).unwrap();
    check(dir.path(), None, "misnamed segment file", true);
}

#[test]
fn reads_check_every_record_they_return() {
    let dir = fixture();
    let (log, _) = open(dir.path()).unwrap();
    // Bit rot after open: the read-back check finds it.
    tamper(dir.path(), 3, |record| record[200] ^= 1);
    assert_eq!(log.reader().read(0, 3).unwrap().len(), 3);
    match log.reader().read(0, 10) {
        Err(LogError::Corrupt {
            position: Some(3),
            file,
            ..
        }) => assert_eq!(file, segments(dir.path())[0]),
        other => panic!("{other:?}"),
    }
    assert!(log.reader().read(4, 10).is_ok());
}
