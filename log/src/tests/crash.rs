//! The crash model (STYLE.md item 5, after redb's fuzz_redb): storage fails every operation
//! after N of them, then power is lost (unsynced bytes vanish, or survive as a torn prefix);
//! the real recovery reopens the partition, and a model of what was acknowledged says what
//! must be there.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{PARTITION, keys, node_key, record, small_config};
use crate::partition::PartitionLog;
use crate::storage::sim::SimStorage;
use crate::types::{NewRecord, Position};
use crate::verify::verify_with;

/// Seeds tried. Each seed's workload is first run without faults to count its storage
/// operations, then rerun with a fault at a random one of them, so every run crashes
/// somewhere inside its workload (during open, an append, a roll, a sync or a checkpoint).
const SEEDS: u64 = 200;
const STEPS_MAX: usize = 14;
const BATCH_RECORDS_MAX: usize = 4;
const PAYLOAD_BYTES_MAX: usize = 220;

/// What the writer was told, and what it tried.
#[derive(Default)]
struct Model {
    /// Every record handed to `append`, by the position it was (or would have been) given.
    attempted: BTreeMap<Position, NewRecord>,
    /// The durable end that a successful `sync` returned: every record below it must survive.
    acknowledged: Position,
    timestamp_ns: u64,
}

fn open(storage: &SimStorage) -> Result<PartitionLog, crate::LogError> {
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

/// Appends and syncs at random until done or until the storage fails.
fn workload(log: &mut PartitionLog, model: &mut Model, rng: &mut StdRng) {
    for _ in 0..rng.gen_range(1..=STEPS_MAX) {
        let count = rng.gen_range(1..=BATCH_RECORDS_MAX);
        let first = log.next_position();
        let batch: Vec<NewRecord> = (0..count)
            .map(|_| {
                model.timestamp_ns += rng.gen_range(0..3);
                let seed = rng.r#gen::<u32>() as u64;
                record(
                    seed,
                    rng.gen_range(0..=PAYLOAD_BYTES_MAX),
                    model.timestamp_ns,
                )
            })
            .collect();
        for (i, new) in batch.iter().enumerate() {
            model.attempted.insert(first + i as u64, new.clone());
        }
        if log.append(&batch).is_err() {
            return;
        }
        if rng.gen_bool(0.6) {
            match log.sync() {
                Ok(end) => {
                    assert_eq!(end, first + count as u64);
                    model.acknowledged = end;
                }
                Err(_) => return,
            }
        }
        if rng.gen_bool(0.1) && log.checkpoint().is_err() {
            return;
        }
    }
}

/// Reopens cleanly and holds the log against the model: every acknowledged record is there
/// and intact; anything beyond is exactly what was attempted at that position (a record that
/// reached the disk without being acknowledged), never garbage. Returns the reopened log.
fn recover_and_check(
    storage: &SimStorage,
    model: &mut Model,
    context: &str,
    verify: bool,
) -> PartitionLog {
    let log = open(storage).unwrap_or_else(|error| panic!("{context}: recovery failed: {error}"));
    let end = log.reader().end();
    assert_eq!(end, log.next_position(), "{context}");
    assert!(
        end >= model.acknowledged,
        "{context}: acknowledged {} but recovered {end}",
        model.acknowledged
    );
    let mut position = 0;
    let mut previous_hash = crate::GENESIS_HASH;
    while position < end {
        let records = log
            .reader()
            .read(position, 64)
            .unwrap_or_else(|error| panic!("{context}: {error}"));
        assert!(!records.is_empty());
        for got in records {
            let want = &model.attempted[&position];
            assert_eq!(got.header.position, position, "{context}");
            assert_eq!(
                &got.header.meta, &want.meta,
                "{context}: position {position}"
            );
            assert_eq!(
                &got.payload, &want.payload,
                "{context}: position {position}"
            );
            assert_eq!(
                got.header.prev_hash, previous_hash,
                "{context}: chain at {position}"
            );
            previous_hash = got.header.hash;
            position += 1;
        }
    }
    assert_eq!(log.head_hash(), previous_hash);
    // Open already held every checkpoint's chain head against the log; verification adds the
    // recomputed hashes and the signatures (slow in debug builds, so for some seeds only).
    if verify {
        verify_with(
            storage,
            Path::new("/p"),
            PARTITION,
            &node_key().public_key(),
            &mut |_, _| {},
        )
        .unwrap_or_else(|failure| panic!("{context}: verify after recovery: {failure}"));
    }
    // What survived is durable now; what did not is forgotten.
    model.attempted.split_off(&end);
    model.acknowledged = end;
    model.timestamp_ns = model.timestamp_ns.max(log.last_timestamp_ns().unwrap_or(0));
    log
}

/// Runs the seed's workload against `storage`; the same seed always makes the same calls
/// until a fault changes the course.
fn run(storage: &SimStorage, seed: u64, model: &mut Model) {
    let mut rng = StdRng::seed_from_u64(seed);
    if let Ok(mut log) = open(storage) {
        workload(&mut log, model, &mut rng);
    }
}

#[test]
fn every_acknowledged_record_survives_any_crash() {
    for seed in 0..SEEDS {
        let dry = SimStorage::new(seed);
        run(&dry, seed, &mut Model::default());
        let operations = dry.operations();

        let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
        let storage = SimStorage::new(seed);
        let fault_at = rng.gen_range(0..operations);
        storage.fail_after(fault_at);
        let mut model = Model::default();
        run(&storage, seed, &mut model);
        assert!(
            storage.faulted(),
            "seed {seed}: the fault at operation {fault_at} never fired"
        );
        let crashed = storage.crash(rng.gen_bool(0.8));

        // Recovery itself may be interrupted by a fault and a second crash.
        crashed.fail_after(rng.gen_range(0..12));
        let _ = open(&crashed);
        let crashed = crashed.crash(rng.gen_bool(0.5));

        let context = format!("seed {seed} (fault at operation {fault_at} of {operations})");
        let mut log = recover_and_check(&crashed, &mut model, &context, false);

        // Appends continue correctly after recovery, across another crash.
        workload(&mut log, &mut model, &mut rng);
        log.sync().unwrap();
        model.acknowledged = log.durable_position();
        let crashed_again = crashed.crash(true);
        let verify = seed % 4 == 0;
        let log = recover_and_check(
            &crashed_again,
            &mut model,
            &format!("{context}, second life"),
            verify,
        );
        assert_eq!(log.reader().end(), model.acknowledged);
    }
}

#[test]
fn a_crash_between_roll_and_sync_is_not_corruption() {
    // Fill a segment without syncing, so the next append rolls to a new one; crash with the
    // unsynced tail lost. Rolling seals (syncs) the old segment first, so the old segment is
    // whole and the new one is the only place a torn write can be.
    let storage = SimStorage::new(7);
    let mut log = open(&storage).unwrap();
    let mut model = Model::default();
    for i in 0..12 {
        let new = record(i, 150, i);
        model.attempted.insert(i, new.clone());
        log.append(&[new]).unwrap();
    }
    assert!(log.segments_len() > 1);
    drop(log);
    let crashed = storage.crash(false);
    let log = recover_and_check(&crashed, &mut model, "roll then crash", true);
    assert!(
        log.reader().end() > 0,
        "sealed segments were synced by the roll"
    );
}

#[test]
fn a_failed_sync_refuses_further_writes_until_reopened() {
    let storage = SimStorage::new(3);
    let mut log = open(&storage).unwrap();
    log.append(&[record(0, 10, 0)]).unwrap();
    storage.fail_after(0);
    let error = log.sync().unwrap_err();
    assert!(
        error
            .to_string()
            .contains("could not fdatasync /p/00000000000000000000.seg: injected fault"),
        "{error}"
    );
    assert_eq!(
        log.durable_position(),
        0,
        "nothing is acknowledged by a failed sync"
    );
    // After a failed fsync the page cache cannot be trusted: no more writes until reopen.
    for error in [
        log.append(&[record(1, 10, 1)]).unwrap_err(),
        log.sync().unwrap_err(),
        log.checkpoint().unwrap_err(),
    ] {
        assert!(
            error.to_string().contains("reopen the partition"),
            "{error}"
        );
    }
}

#[test]
fn skipping_to_a_position_over_a_damaged_length_is_an_error() {
    let storage = SimStorage::new(4);
    let mut log = open(&storage).unwrap();
    log.append(&(0..6).map(|i| record(i, 10, i)).collect::<Vec<_>>())
        .unwrap();
    log.sync().unwrap();
    // Position 1's length field now claims a maximal record; reading from 3 skips over it.
    let file = storage.open_file(Path::new("/p/00000000000000000000.seg"));
    let mut prefix = [0u8; 12];
    let second = {
        file.read_at(&mut prefix, 0).unwrap();
        u32::from_le_bytes(prefix[8..12].try_into().unwrap()) as u64
    };
    file.write_at(&(crate::RECORD_BYTES_MAX as u32).to_le_bytes(), second + 8)
        .unwrap();
    match log.reader().read(3, 1) {
        Err(crate::LogError::Corrupt {
            position: Some(1),
            reason,
            ..
        }) => assert!(reason.contains("runs past"), "{reason}"),
        other => panic!("{other:?}"),
    }
}
