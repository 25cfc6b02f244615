//! Behaviour of a partition log through its public API, on real files.

use std::fs;

use super::{PARTITION, keys, node_key, record, small_config};
use crate::error::LogError;
use crate::partition::{LogConfig, PartitionLog};
use crate::types::GENESIS_HASH;
use crate::{APPEND_BYTES_MAX, PAYLOAD_BYTES_MAX, verify_partition};

fn open(dir: &std::path::Path) -> PartitionLog {
    PartitionLog::open(dir, PARTITION, keys(), node_key(), small_config())
        .unwrap()
        .0
}

#[test]
fn appends_become_visible_only_when_synced() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    let reader = log.reader();
    assert_eq!(
        (log.next_position(), log.durable_position(), reader.end()),
        (0, 0, 0)
    );
    assert_eq!(log.head_hash(), GENESIS_HASH);
    assert_eq!(log.last_timestamp_ns(), None);

    assert_eq!(
        log.append(&[record(0, 10, 5), record(1, 0, 5)]).unwrap(),
        0..2
    );
    assert_eq!(log.append(&[]).unwrap(), 2..2);
    assert_eq!(
        (log.next_position(), log.durable_position(), reader.end()),
        (2, 0, 0)
    );
    assert!(reader.read(0, 10).unwrap().is_empty());
    assert_eq!(reader.position_at_timestamp(5), None);

    assert_eq!(log.sync().unwrap(), 2);
    assert_eq!((log.durable_position(), reader.end()), (2, 2));
    let records = reader.read(0, 10).unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].header.prev_hash, GENESIS_HASH);
    assert_eq!(records[1].header.prev_hash, records[0].header.hash);
    assert_eq!(log.head_hash(), records[1].header.hash);
    assert_eq!(log.last_timestamp_ns(), Some(5));
    assert_eq!(records[1].payload, record(1, 0, 5).payload);
    assert_eq!(records[1].header.meta, record(1, 0, 5).meta);
}

#[test]
fn segments_roll_and_reopen_finds_everything() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    let records: Vec<_> = (0..40).map(|i| record(i, 100, i / 3)).collect();
    for batch in records.chunks(7) {
        log.append(batch).unwrap();
        log.sync().unwrap();
    }
    // One record bigger than a segment gets a segment of its own.
    let big = record(40, 4000, 20);
    log.append(std::slice::from_ref(&big)).unwrap();
    log.close().unwrap();

    let mut names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".seg"))
        .collect();
    names.sort();
    assert!(names.len() > 5, "{names:?}");
    assert_eq!(names[0], "00000000000000000000.seg");
    assert_eq!(names.last().unwrap(), "00000000000000000040.seg");

    let (log, report) =
        PartitionLog::open(dir.path(), PARTITION, keys(), node_key(), small_config()).unwrap();
    assert_eq!((report.records, report.segments), (41, names.len() as u64));
    assert!(report.torn_tail.is_none() && !report.truncated());
    assert!(report.to_string().contains("41 records"), "{report}");
    let reader = log.reader();
    for from in [0, 3, 4, 5, 17, 39, 40] {
        let read = reader.read(from, 3).unwrap();
        let expected: Vec<_> = records
            .iter()
            .chain([&big])
            .skip(from as usize)
            .take(3)
            .collect();
        assert_eq!(read.len(), expected.len());
        for (got, want) in read.iter().zip(expected) {
            assert_eq!(
                (&got.header.meta, &got.payload),
                (&want.meta, &want.payload)
            );
        }
    }
    assert!(reader.read(41, 10).unwrap().is_empty());
    assert!(reader.read(0, 0).unwrap().is_empty());
    assert_eq!(reader.read_headers(38, 100).unwrap().len(), 3);
}

#[test]
fn position_at_timestamp_finds_the_last_record_at_or_before() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    // Timestamps 10, 10, 20, 20, ..., with a gap after 100.
    let stamps: Vec<u64> = (0..30)
        .map(|i| 10 * (i / 2 + 1) + if i >= 20 { 1000 } else { 0 })
        .collect();
    let records: Vec<_> = stamps
        .iter()
        .enumerate()
        .map(|(i, &t)| record(i as u64, 30, t))
        .collect();
    log.append(&records).unwrap();
    log.sync().unwrap();
    let reader = log.reader();
    let cases = [
        (0, None),
        (9, None),
        (10, Some(1)),
        (15, Some(1)),
        (20, Some(3)),
        (100, Some(19)),
        (500, Some(19)),
        (1110, Some(21)),
        (u64::MAX, Some(29)),
    ];
    for (timestamp, expected) in cases {
        assert_eq!(
            reader.position_at_timestamp(timestamp),
            expected,
            "at {timestamp}"
        );
        assert_eq!(
            reader.try_position_at_timestamp(timestamp).unwrap(),
            expected
        );
    }
}

#[test]
fn a_rejected_batch_leaves_no_trace() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    log.append(&[record(0, 1, 100)]).unwrap();

    let error = log
        .append(&[record(1, 1, 100), record(2, 1, 99)])
        .unwrap_err();
    assert!(
        matches!(
            error,
            LogError::TimestampRegression {
                index: 1,
                timestamp_ns: 99,
                previous_ns: 100
            }
        ),
        "{error:?}"
    );
    let error = log.append(&[record(1, 1, 50)]).unwrap_err();
    assert!(
        matches!(error, LogError::TimestampRegression { index: 0, .. }),
        "{error:?}"
    );
    let error = log
        .append(&[record(1, 1, 100), record(2, PAYLOAD_BYTES_MAX + 1, 100)])
        .unwrap_err();
    assert!(
        matches!(
            error,
            LogError::RecordTooLarge {
                index: 1,
                field: "payload",
                ..
            }
        ),
        "{error:?}"
    );
    let huge: Vec<_> = (0..65).map(|i| record(i, PAYLOAD_BYTES_MAX, 100)).collect();
    let error = log.append(&huge).unwrap_err();
    assert!(
        matches!(
            error,
            LogError::BatchTooLarge {
                bytes_max: APPEND_BYTES_MAX,
                ..
            }
        ),
        "{error:?}"
    );

    assert_eq!(log.next_position(), 1);
    assert_eq!(log.append(&[record(1, 1, 100)]).unwrap(), 1..2);
    log.close().unwrap();
    let (log, report) =
        PartitionLog::open(dir.path(), PARTITION, keys(), node_key(), small_config()).unwrap();
    assert_eq!(report.records, 2);
    assert_eq!(
        log.reader().read(1, 1).unwrap()[0].payload,
        record(1, 1, 100).payload
    );
}

#[test]
fn checkpoints_are_signed_at_intervals_and_on_close() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    // An empty log checkpoints its genesis.
    let genesis = log.checkpoint().unwrap();
    assert_eq!(
        (genesis.position, genesis.chain_head, genesis.partition),
        (0, GENESIS_HASH, PARTITION)
    );
    log.append(&(0..5).map(|i| record(i, 8, i)).collect::<Vec<_>>())
        .unwrap();
    log.sync().unwrap();
    assert_eq!(
        log.last_checkpoint().unwrap().position,
        0,
        "5 < interval of 8"
    );
    log.append(&(5..9).map(|i| record(i, 8, i)).collect::<Vec<_>>())
        .unwrap();
    log.sync().unwrap();
    let checkpoint = log.last_checkpoint().unwrap().clone();
    assert_eq!(
        (
            checkpoint.position,
            checkpoint.chain_head,
            checkpoint.timestamp_ns
        ),
        (9, log.head_hash(), 8)
    );
    assert!(checkpoint.verify(&node_key().public_key()));
    // Checkpointing an unchanged head writes nothing new.
    assert_eq!(log.checkpoint().unwrap(), checkpoint);
    log.append(&[record(9, 8, 9)]).unwrap();
    log.close().unwrap();

    let checkpoints = fs::read(dir.path().join("checkpoints")).unwrap();
    assert_eq!(checkpoints.len(), 3 * 164);
    let report = verify_partition(
        dir.path(),
        PARTITION,
        &node_key().public_key(),
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(
        (report.records, report.checkpoints, report.segments),
        (10, 3, 2)
    );
    let (log, _) =
        PartitionLog::open(dir.path(), PARTITION, keys(), node_key(), small_config()).unwrap();
    assert_eq!(log.last_checkpoint().unwrap().position, 10);
    assert_eq!(report.head, log.head_hash());
}

#[test]
fn another_partitions_checkpoints_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    open(dir.path()).close().unwrap();
    let error = PartitionLog::open(
        dir.path(),
        PARTITION + 1,
        keys(),
        node_key(),
        small_config(),
    )
    .unwrap_err();
    assert!(
        error.to_string().contains("another tenant's checkpoints"),
        "{error}"
    );
    let failure = verify_partition(
        dir.path(),
        PARTITION + 1,
        &node_key().public_key(),
        &mut |_, _| {},
    )
    .unwrap_err();
    assert!(failure.reason.contains("not partition 43"), "{failure}");
}

#[test]
fn readers_run_on_other_threads_while_appending() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    let reader = log.reader();
    let records: Vec<_> = (0..60).map(|i| record(i, 50, i)).collect();
    std::thread::scope(|scope| {
        let checker = scope.spawn(move || {
            let mut seen = 0;
            while seen < 60 {
                let end = reader.end();
                let read = reader.read(seen, 1000).unwrap();
                assert!(
                    read.len() as u64 >= end - seen,
                    "everything durable is readable"
                );
                for got in &read {
                    assert_eq!(got.header.position, seen);
                    seen += 1;
                }
            }
        });
        for batch in records.chunks(6) {
            log.append(batch).unwrap();
            log.sync().unwrap();
        }
        checker.join().unwrap();
    });
}

#[test]
fn invalid_configuration_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        index_interval_records: 0,
        ..LogConfig::default()
    };
    let error = PartitionLog::open(dir.path(), PARTITION, keys(), node_key(), config).unwrap_err();
    assert_eq!(
        error.to_string(),
        "invalid log configuration: index_interval_records is 0; it must be at least 1"
    );
}

#[test]
fn open_creates_the_partition_directory_and_its_parents() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("tenants/42/log");
    let (mut log, report) =
        PartitionLog::open(&dir, PARTITION, keys(), node_key(), small_config()).unwrap();
    assert_eq!((report.records, report.segments), (0, 1));
    log.append(&[record(0, 1, 1)]).unwrap();
    log.close().unwrap();
    assert!(dir.join("00000000000000000000.seg").is_file() && dir.join("checkpoints").is_file());
}
