//! Log shipping: `read_frames` on one log, `import_frames` on another, and the copies match
//! byte for byte; bad batches are refused and leave no trace; `publish_unsynced`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::tamper::{fix_crc, fix_hash_and_crc};
use super::{PARTITION, keys, node_key, record, small_config};
use crate::codec;
use crate::error::{ImportFault, LogError};
use crate::keys::{DataKey, KeyRing};
use crate::partition::{LogReader, PartitionLog};
use crate::ship::{FRAME_BATCH_BYTES_MAX, FrameBatch};
use crate::storage::Storage;
use crate::storage::sim::SimStorage;
use crate::tree::TREE_FILE;
use crate::types::{GENESIS_HASH, NewRecord, Position};
use crate::verify::verify_with;
use crate::verify_partition;

fn open(dir: &Path) -> PartitionLog {
    PartitionLog::open(dir, PARTITION, keys(), node_key(), small_config())
        .unwrap()
        .0
}

/// 40 records of 0 to 390 payload bytes, then one larger than a segment (a segment of its
/// own), then 4 more: 45 records in a dozen segments of `small_config`.
fn records() -> Vec<NewRecord> {
    let mut records: Vec<_> = (0..40)
        .map(|i| record(i, (i as usize * 37) % 400, 1_000 + i / 3))
        .collect();
    records.push(record(40, 4_000, 1_020));
    records.extend((41..45).map(|i| record(i, 50, 1_020 + i)));
    records
}

/// A synced log of `records`, appended in batches of 7.
fn source(dir: &Path, records: &[NewRecord]) -> PartitionLog {
    let mut log = open(dir);
    for batch in records.chunks(7) {
        log.append(batch).unwrap();
        log.sync().unwrap();
    }
    log
}

/// Every file of a partition directory (segments and checkpoints), by name.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(entry.path()).unwrap())
        })
        .collect()
}

fn tree_file(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join(TREE_FILE)).unwrap()
}

fn segment_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = files(dir);
    files.retain(|name, _| name.ends_with(".seg"));
    files
}

/// Ships `from..end` of `source` into `target`, asking for `bytes_max[i]` in batch `i`
/// (cycling). Returns the number of batches.
fn ship(
    source: &LogReader,
    target: &mut PartitionLog,
    end: Position,
    bytes_max: &[usize],
) -> usize {
    let mut batches = 0;
    for bytes_max in bytes_max.iter().cycle() {
        let next = target.next_position();
        if next == end {
            break;
        }
        let batch = source.read_frames(next..end, *bytes_max).unwrap();
        assert!(!batch.is_empty(), "{batch:?}: {next}..{end} is visible");
        assert_eq!(batch.first, next);
        assert!(batch.end <= end);
        assert!(
            batch.records() == 1 || batch.bytes.len() <= *bytes_max,
            "{batch:?} over {bytes_max}"
        );
        assert_eq!(target.import_frames(&batch).unwrap(), next..batch.end);
        batches += 1;
    }
    batches
}

#[test]
fn a_shipped_log_is_byte_identical_and_verifies() {
    let records = records();
    let end = records.len() as u64;
    let source_dir = tempfile::tempdir().unwrap();
    let source = source(source_dir.path(), &records);
    let source_reader = source.reader();

    // The target holds another key: importing needs none.
    let target_dir = tempfile::tempdir().unwrap();
    let other_keys = KeyRing::new(DataKey::new(2, [8; 32]));
    let (mut target, _) = PartitionLog::open(
        target_dir.path(),
        PARTITION,
        other_keys,
        node_key(),
        small_config(),
    )
    .unwrap();
    let target_reader = target.reader();
    let batches = ship(&source_reader, &mut target, end, &[0, 700, 2_000, 3_000]);
    assert!(batches >= 8, "{batches} batches");

    // Imported is like appended: not visible, not durable until synced.
    assert_eq!((target_reader.end(), target.durable_position()), (0, 0));
    target.check_head(end, &source.head_hash()).unwrap();
    assert_eq!(target.last_timestamp_ns(), source.last_timestamp_ns());
    let error = target.check_head(end - 1, &source.head_hash()).unwrap_err();
    assert!(
        matches!(error, LogError::AnchorMismatch { expected_end, end: found, .. }
            if expected_end == end - 1 && found == end),
        "{error:?}"
    );
    let error = target.check_head(end, &GENESIS_HASH).unwrap_err();
    assert!(
        error.to_string().contains("do not serve this partition"),
        "{error}"
    );
    assert_eq!(target.sync().unwrap(), end);

    // Same files, same index as the source built while appending and as a scan rebuilds.
    let source_segments = segment_files(source_dir.path());
    assert!(source_segments.len() > 10, "{}", source_segments.len());
    assert_eq!(segment_files(target_dir.path()), source_segments);
    // The same Merkle tree, node for node, and the same signed head (one node key here).
    assert!(tree_file(target_dir.path()) == tree_file(source_dir.path()));
    assert_eq!(
        target_reader.signed_head().unwrap(),
        source_reader.signed_head().unwrap()
    );
    assert_eq!(target_reader.index(), source_reader.index());
    let reopened = open(target_dir.path());
    assert_eq!(reopened.reader().index(), source_reader.index());
    drop(reopened);

    let report = verify_partition(
        target_dir.path(),
        PARTITION,
        &node_key().public_key(),
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!((report.records, report.head), (end, source.head_hash()));

    // Reading back needs the keys the records were written under.
    let error = target_reader.read(0, 1).unwrap_err();
    assert!(
        matches!(error, LogError::KeyUnavailable { key_id: 1, .. }),
        "{error:?}"
    );
    target.set_keys(keys());
    let read = target_reader.read(0, 1_000).unwrap();
    assert_eq!(read, source_reader.read(0, 1_000).unwrap());
    assert_eq!(read.len() as u64, end);
    for (got, want) in read.iter().zip(&records) {
        assert_eq!(
            (&got.header.meta, &got.payload),
            (&want.meta, &want.payload)
        );
    }
}

#[test]
fn read_frames_bounds() {
    let mut records = records();
    let dir = tempfile::tempdir().unwrap();
    let mut log = source(dir.path(), &records);
    let reader = log.reader();
    // Appended below: one small record, then six of the largest payload.
    records.push(record(45, 10, 2_000));
    records.extend((0..6).map(|i| record(100 + i, crate::PAYLOAD_BYTES_MAX, 3_000)));
    let frame_bytes = |position: usize| codec::record_bytes(&records[position]);
    let check = |positions: std::ops::Range<Position>, bytes_max: usize, expected: Position| {
        let batch = reader.read_frames(positions.clone(), bytes_max).unwrap();
        assert_eq!(
            (batch.first, batch.end),
            (positions.start, expected),
            "{positions:?} in {bytes_max}"
        );
        let bytes: usize = (batch.first..batch.end)
            .map(|position| frame_bytes(position as usize))
            .sum();
        assert_eq!(batch.bytes.len(), bytes);
    };
    // (positions, bytes_max) → end.
    check(0..45, 0, 1);
    check(0..45, frame_bytes(0), 1);
    check(0..45, frame_bytes(0) + frame_bytes(1) - 1, 1);
    check(0..45, frame_bytes(0) + frame_bytes(1), 2);
    check(0..45, usize::MAX, 45);
    check(3..7, usize::MAX, 7);
    check(40..41, 10, 41); // larger than a segment, and than bytes_max
    check(44..1_000, usize::MAX, 45);
    check(45..1_000, usize::MAX, 45);
    check(50..60, usize::MAX, 50);
    check(7..7, usize::MAX, 7);
    // Appended but unsynced records are not visible.
    log.append(&records[45..46]).unwrap();
    check(44..1_000, usize::MAX, 45);
    log.sync().unwrap();
    check(44..1_000, usize::MAX, 46);
    // The bound on a batch holds whatever is asked.
    log.append(&records[46..]).unwrap();
    log.sync().unwrap();
    check(46..52, usize::MAX, 49); // three records of 1 MiB fit in 4 MiB, four do not
    assert!(reader.read_frames(46..52, usize::MAX).unwrap().bytes.len() <= FRAME_BATCH_BYTES_MAX);
}

#[test]
fn imports_continue_a_prefix_appended_or_imported_before() {
    let records = records();
    let end = records.len() as u64;
    let source_dir = tempfile::tempdir().unwrap();
    let source = source(source_dir.path(), &records);
    let expected = segment_files(source_dir.path());

    // A prefix the target appended itself, in other batches, synced or not.
    for split in [1, 13, 40, 41] {
        let dir = tempfile::tempdir().unwrap();
        let mut target = open(dir.path());
        target.append(&records[..split / 2]).unwrap();
        target.sync().unwrap();
        target.append(&records[split / 2..split]).unwrap();
        ship(&source.reader(), &mut target, end, &[900]);
        target.check_head(end, &source.head_hash()).unwrap();
        target.close().unwrap();
        assert_eq!(segment_files(dir.path()), expected, "split at {split}");
    }

    // A prefix imported, then the partition reopened (its layout comes from a scan), then
    // appends on top of the imported records.
    let dir = tempfile::tempdir().unwrap();
    let mut target = open(dir.path());
    ship(&source.reader(), &mut target, 22, &[1_000]);
    target.close().unwrap();
    let mut target = open(dir.path());
    ship(&source.reader(), &mut target, 41, &[300, 5_000]);
    target.append(&records[41..]).unwrap();
    target.check_head(end, &source.head_hash()).unwrap();
    target.close().unwrap();
    assert_eq!(segment_files(dir.path()), expected);
}

#[test]
fn a_record_that_fills_a_segment_exactly_is_laid_out_alike() {
    // Record 1 brings segment 0 to exactly `segment_bytes_max`: no roll; record 2 rolls.
    let segment_bytes_max = small_config().segment_bytes_max as usize;
    let first = record(0, 300, 1);
    let fill =
        segment_bytes_max - codec::record_bytes(&first) - codec::record_bytes(&record(1, 0, 1));
    let records = [first, record(1, fill, 1), record(2, 0, 1)];
    let source_dir = tempfile::tempdir().unwrap();
    let source = source(source_dir.path(), &records);
    let segments = segment_files(source_dir.path());
    assert_eq!(segments.len(), 2);
    assert_eq!(segments.values().next().unwrap().len(), segment_bytes_max);
    for bytes_max in [0, usize::MAX] {
        let dir = tempfile::tempdir().unwrap();
        let mut target = open(dir.path());
        ship(&source.reader(), &mut target, 3, &[bytes_max]);
        target.sync().unwrap();
        assert_eq!(
            segment_files(dir.path()),
            segments,
            "in batches of {bytes_max}"
        );
    }
}

/// Byte offsets of the frames in `bytes`.
fn frame_offsets(bytes: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut offsets = Vec::new();
    let mut offset = 0;
    while offset < bytes.len() {
        let length = codec::frame_bytes(&bytes[offset..]).unwrap();
        offsets.push(offset..offset + length);
        offset += length;
    }
    offsets
}

/// Applies `change` to frame `index` of `batch`.
fn edit(batch: &mut FrameBatch, index: usize, change: impl FnOnce(&mut [u8])) {
    let frame = frame_offsets(&batch.bytes)[index].clone();
    change(&mut batch.bytes[frame]);
}

#[test]
fn bad_batches_are_refused_and_leave_no_trace() {
    let records = records();
    let source_dir = tempfile::tempdir().unwrap();
    let source = source(source_dir.path(), &records);
    let reader = source.reader();
    // A fork: a log whose records before 10 differ, so its record 10 links elsewhere.
    let fork_dir = tempfile::tempdir().unwrap();
    let mut fork_records = records.clone();
    fork_records[9].payload.push(1);
    let fork = self::source(fork_dir.path(), &fork_records);

    let target_dir = tempfile::tempdir().unwrap();
    let mut target = open(target_dir.path());
    ship(&reader, &mut target, 10, &[2_000]);
    target.sync().unwrap();
    let before = files(target_dir.path());
    let tip = (
        target.next_position(),
        target.head_hash(),
        target.last_timestamp_ns(),
    );
    let good = reader.read_frames(10..20, usize::MAX).unwrap();
    assert_eq!(good.end, 20);
    let hash_of = |position: Position| reader.read_headers(position, 1).unwrap()[0].hash;

    type Case<'a> = (
        &'static str,
        Box<dyn Fn(&mut FrameBatch) + 'a>,
        Position,
        String,
    );
    let cases: Vec<Case<'_>> = vec![
        (
            "a flipped ciphertext byte",
            Box::new(|batch| edit(batch, 2, |frame| frame[frame.len() - 60] ^= 1)),
            12,
            "CRC mismatch".into(),
        ),
        (
            "an edit with its CRC fixed",
            Box::new(|batch| {
                edit(batch, 2, |frame| {
                    frame[frame.len() - 60] ^= 1;
                    fix_crc(frame);
                })
            }),
            12,
            "HashMismatch".into(),
        ),
        (
            "a set flag, hash and CRC fixed",
            Box::new(|batch| {
                edit(batch, 0, |frame| {
                    frame[6] = 1;
                    fix_hash_and_crc(frame);
                })
            }),
            10,
            "flags 0x01 set".into(),
        ),
        (
            "a batch past the next position",
            Box::new(|batch| *batch = reader.read_frames(11..20, usize::MAX).unwrap()),
            11,
            "NotNext".into(),
        ),
        (
            "a batch before the next position",
            Box::new(|batch| *batch = reader.read_frames(9..20, usize::MAX).unwrap()),
            9,
            "NotNext".into(),
        ),
        (
            "a broken chain link, hash and CRC fixed",
            Box::new(|batch| {
                edit(batch, 3, |frame| {
                    frame[100] ^= 1;
                    fix_hash_and_crc(frame);
                })
            }),
            13,
            "BrokenChain".into(),
        ),
        (
            "a record of another chain",
            Box::new(|batch| *batch = fork.reader().read_frames(10..20, usize::MAX).unwrap()),
            10,
            format!(
                "BrokenChain {{ expected: {:?}, found: {:?} }}",
                hash_of(9),
                fork.reader().read_headers(9, 1).unwrap()[0].hash
            ),
        ),
        (
            "a record missing",
            Box::new(|batch| {
                let frames = frame_offsets(&batch.bytes);
                batch.bytes.drain(frames[4].clone());
                batch.end -= 1;
            }),
            14,
            "WrongPosition { found: 15 }".into(),
        ),
        (
            "a position edited, hash and CRC fixed",
            Box::new(|batch| {
                edit(batch, 1, |frame| {
                    frame[12..20].copy_from_slice(&99u64.to_le_bytes());
                    fix_hash_and_crc(frame);
                })
            }),
            11,
            "WrongPosition { found: 99 }".into(),
        ),
        (
            "a timestamp moved back, hash and CRC fixed",
            Box::new(|batch| {
                edit(batch, 9, |frame| {
                    frame[28..36].copy_from_slice(&999u64.to_le_bytes());
                    fix_hash_and_crc(frame);
                })
            }),
            19,
            "TimestampRegression { timestamp_ns: 999, previous_ns: 1006 }".into(),
        ),
        (
            "a truncated last frame",
            Box::new(|batch| {
                batch.bytes.truncate(batch.bytes.len() - 10);
            }),
            19,
            "Truncated".into(),
        ),
        (
            "less than a frame prefix",
            Box::new(|batch| batch.bytes.truncate(5)),
            10,
            "Truncated".into(),
        ),
        (
            "trailing garbage",
            Box::new(|batch| batch.bytes.extend_from_slice(&[0xab; 20])),
            20,
            "bad start magic".into(),
        ),
        (
            "an end past its records",
            Box::new(|batch| batch.end = 21),
            20,
            "EndMismatch { claimed: 21 }".into(),
        ),
        (
            "an end before its records",
            Box::new(|batch| batch.end = 19),
            20,
            "EndMismatch { claimed: 19 }".into(),
        ),
        (
            "too many bytes",
            Box::new(|batch| batch.bytes.resize(FRAME_BATCH_BYTES_MAX + 1, 0)),
            10,
            format!(
                "BatchTooLarge {{ bytes: {}, bytes_max: {FRAME_BATCH_BYTES_MAX} }}",
                FRAME_BATCH_BYTES_MAX + 1
            ),
        ),
    ];
    for (name, change, position, fault) in cases {
        let mut batch = good.clone();
        change(&mut batch);
        match target.import_frames(&batch) {
            Err(
                ref error @ LogError::FrameImport {
                    position: found,
                    next,
                    fault: ref found_fault,
                    ..
                },
            ) => {
                assert_eq!((found, next), (position, 10), "{name}: {error}");
                let debug = format!("{found_fault:?}");
                assert!(debug.contains(&fault), "{name}: {debug} lacks {fault}");
            }
            other => panic!("{name}: expected a refusal, got {other:?}"),
        }
        let now = (
            target.next_position(),
            target.head_hash(),
            target.last_timestamp_ns(),
        );
        assert_eq!(now, tip, "{name}: the log moved");
        assert!(files(target_dir.path()) == before, "{name}: files changed");
    }

    // The good batch is still welcome, and the log is whole.
    assert_eq!(target.import_frames(&good).unwrap(), 10..20);
    target.close().unwrap();
    let report = verify_partition(
        target_dir.path(),
        PARTITION,
        &node_key().public_key(),
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!((report.records, report.head), (20, hash_of(19)));
}

#[test]
fn an_error_message_says_what_and_what_next() {
    let error = LogError::FrameImport {
        position: 12,
        offset: 540,
        next: 10,
        fault: ImportFault::HashMismatch,
    };
    assert_eq!(
        error.to_string(),
        "refused a shipped frame batch at position 12 (byte 540 of the batch): its stored hash \
         is not the SHA-256 of its header and ciphertext; nothing was written: fetch the \
         records from position 10, from another replica if this one keeps sending bad batches"
    );
}

#[test]
fn an_empty_batch_at_the_next_position_imports_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    let batch = FrameBatch::default();
    assert_eq!(log.import_frames(&batch).unwrap(), 0..0);
    let error = log
        .import_frames(&FrameBatch {
            first: 1,
            end: 1,
            bytes: Vec::new(),
        })
        .unwrap_err();
    assert!(
        matches!(
            error,
            LogError::FrameImport {
                fault: ImportFault::NotNext,
                ..
            }
        ),
        "{error:?}"
    );
}

#[test]
fn publish_unsynced_makes_records_readable_before_sync() {
    let records = records();
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    let reader = log.reader();
    log.append(&records[..30]).unwrap();
    assert_eq!(reader.end(), 0);
    assert_eq!(log.publish_unsynced().unwrap(), 30);
    assert!(log.segments_len() > 5, "the records span segments");
    assert_eq!((reader.end(), log.durable_position()), (30, 0));
    let read = reader.read(0, 100).unwrap();
    assert_eq!(read.len(), 30);
    for (got, want) in read.iter().zip(&records) {
        assert_eq!(
            (&got.header.meta, &got.payload),
            (&want.meta, &want.payload)
        );
    }
    assert_eq!(reader.position_at_timestamp(1_005), Some(17));

    // Signed checkpoints still cover only durable records.
    assert_eq!(log.checkpoint().unwrap().position, 0);
    log.append(&records[30..35]).unwrap();
    assert_eq!(log.publish_unsynced().unwrap(), 35);
    assert_eq!(log.last_checkpoint().unwrap().position, 0);

    // A peer can fetch published records, and a sync publishes nothing new.
    let peer_dir = tempfile::tempdir().unwrap();
    let mut peer = open(peer_dir.path());
    ship(&reader, &mut peer, 35, &[1_500]);
    log.append(&records[35..]).unwrap();
    assert_eq!(reader.end(), 35);
    assert_eq!(log.sync().unwrap(), 45);
    assert_eq!(log.last_checkpoint().unwrap().position, 45);
    assert_eq!(reader.end(), 45);
    ship(&reader, &mut peer, 45, &[1_500]);
    peer.close().unwrap();
    log.close().unwrap();
    assert_eq!(segment_files(peer_dir.path()), segment_files(dir.path()));
}

fn open_sim(storage: &SimStorage) -> Result<PartitionLog, LogError> {
    PartitionLog::open_with(
        Arc::new(storage.clone()),
        Path::new("/p"),
        PARTITION,
        keys(),
        node_key(),
        small_config(),
    )
    .map(|(log, _)| log)
}

fn sim_segments(storage: &SimStorage) -> BTreeMap<String, Vec<u8>> {
    let dir = Path::new("/p");
    let mut names = storage.list(dir).unwrap();
    names.retain(|name| name.ends_with(".seg"));
    names
        .into_iter()
        .map(|name| {
            let file = storage.open_file(&dir.join(&name));
            let mut bytes = vec![0; file.len().unwrap() as usize];
            file.read_at(&mut bytes, 0).unwrap();
            (name, bytes)
        })
        .collect()
}

#[test]
fn a_crash_after_publish_unsynced_keeps_checkpoints_consistent() {
    let records = records();
    let storage = SimStorage::new(7);
    let mut log = open_sim(&storage).unwrap();
    log.append(&records[..5]).unwrap();
    log.sync().unwrap();
    log.append(&records[5..20]).unwrap();
    log.publish_unsynced().unwrap();
    assert_eq!(log.checkpoint().unwrap().position, 5);
    drop(log);

    // Power is lost: only synced bytes come back (sealed segments were synced by their roll).
    let storage = storage.crash(false);
    let log = open_sim(&storage).unwrap();
    let end = log.reader().end();
    assert!((5..20).contains(&end), "recovered {end}");
    assert_eq!(log.last_checkpoint().unwrap().position, 5);
    verify_with(
        &storage,
        Path::new("/p"),
        PARTITION,
        &node_key().public_key(),
        &mut |_, _| {},
    )
    .unwrap();
}

/// Seeds of the crash-during-import model.
const CRASH_SEEDS: u64 = 40;

#[test]
fn a_crash_during_import_leaves_a_prefix_that_import_completes() {
    let records = records();
    let end = records.len() as u64;
    let source_dir = tempfile::tempdir().unwrap();
    let source = source(source_dir.path(), &records);
    let reader = source.reader();
    let expected = segment_files(source_dir.path());
    let import_all = |log: &mut PartitionLog, bytes_max: usize| -> Result<(), LogError> {
        while log.next_position() < end {
            let batch = reader.read_frames(log.next_position()..end, bytes_max)?;
            log.import_frames(&batch)?;
            log.sync()?;
        }
        Ok(())
    };
    for seed in 0..CRASH_SEEDS {
        let mut rng = StdRng::seed_from_u64(seed);
        let bytes_max = rng.gen_range(200..5_000);
        // Count the operations of a clean run, then fail at a random one of them.
        let clean = SimStorage::new(seed);
        let mut log = open_sim(&clean).unwrap();
        let start = clean.operations();
        import_all(&mut log, bytes_max).unwrap();
        let operations = clean.operations() - start;
        drop(log);

        let storage = SimStorage::new(seed);
        let mut log = open_sim(&storage).unwrap();
        storage.fail_after(rng.gen_range(0..operations));
        assert!(import_all(&mut log, bytes_max).is_err(), "seed {seed}");
        drop(log);
        let storage = storage.crash(true);
        let mut log = open_sim(&storage).unwrap_or_else(|error| panic!("seed {seed}: {error}"));
        let recovered = log.next_position();
        // The whole log fits in one batch: what survived is a prefix of the source.
        let copy = log.reader().read_frames(0..end, usize::MAX).unwrap();
        let original = reader.read_frames(0..recovered, usize::MAX).unwrap();
        assert_eq!(copy.end, recovered, "seed {seed}");
        assert!(
            copy == original,
            "seed {seed}: the recovered prefix differs"
        );
        import_all(&mut log, bytes_max).unwrap();
        log.check_head(end, &source.head_hash()).unwrap();
        log.close().unwrap();
        assert!(
            sim_segments(&storage) == expected,
            "seed {seed}: the completed copy differs"
        );
        let tree = storage.open_file(&Path::new("/p").join(TREE_FILE));
        let mut bytes = vec![0; tree.len().unwrap() as usize];
        tree.read_at(&mut bytes, 0).unwrap();
        assert!(
            bytes == tree_file(source_dir.path()),
            "seed {seed}: the tree differs"
        );
    }
}

proptest! {
    #![proptest_config(Config {
        cases: 16,
        rng_seed: RngSeed::Fixed(0x5348_4950),
        failure_persistence: None,
        ..Config::default()
    })]

    /// Any records, any split between appending and importing, any batch sizes: the copy's
    /// segment files are the source's.
    #[test]
    fn any_shipping_makes_identical_files(
        sizes in vec((0..1_800usize, 0..3u64), 1..30),
        split in 0..30usize,
        bytes_max in vec(0..4_000usize, 1..6),
    ) {
        let mut timestamp_ns = 0;
        let records: Vec<NewRecord> = sizes
            .iter()
            .enumerate()
            .map(|(i, &(payload_bytes, step))| {
                timestamp_ns += step;
                record(i as u64, payload_bytes, timestamp_ns)
            })
            .collect();
        let end = records.len() as u64;
        let split = split.min(records.len());
        let source_dir = tempfile::tempdir().unwrap();
        let source = source(source_dir.path(), &records);
        let target_dir = tempfile::tempdir().unwrap();
        let mut target = open(target_dir.path());
        target.append(&records[..split]).unwrap();
        ship(&source.reader(), &mut target, end, &bytes_max);
        target.check_head(end, &source.head_hash()).unwrap();
        target.sync().unwrap();
        prop_assert_eq!(target.reader().index(), source.reader().index());
        prop_assert!(segment_files(target_dir.path()) == segment_files(source_dir.path()));
        prop_assert!(tree_file(target_dir.path()) == tree_file(source_dir.path()));
        prop_assert_eq!(
            target.reader().signed_head().unwrap(),
            source.reader().signed_head().unwrap()
        );
    }
}
