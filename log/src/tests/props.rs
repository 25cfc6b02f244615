//! A property test of random appends, syncs and reopens against a model.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

use super::{PARTITION, keys, node_key, record, small_config};
use crate::partition::PartitionLog;
use crate::types::{GENESIS_HASH, NewRecord};
use crate::verify_partition;

const BATCH_RECORDS_MAX: usize = 6;
const PAYLOAD_BYTES_MAX: usize = 700;
const OPERATIONS_MAX: usize = 24;

#[derive(Clone, Debug)]
enum Operation {
    /// (payload bytes, timestamp increase) of each record.
    Append(Vec<(usize, u64)>),
    Sync,
    /// Reopen the partition, after `close` if `clean`, else just dropping it (unsynced
    /// writes are in the page cache, so they are found again).
    Reopen {
        clean: bool,
    },
}

fn operation() -> impl Strategy<Value = Operation> {
    prop_oneof![
        4 => vec((0..=PAYLOAD_BYTES_MAX, 0..3u64), 1..=BATCH_RECORDS_MAX).prop_map(Operation::Append),
        2 => Just(Operation::Sync),
        1 => any::<bool>().prop_map(|clean| Operation::Reopen { clean }),
    ]
}

fn open(dir: &std::path::Path) -> PartitionLog {
    PartitionLog::open(dir, PARTITION, keys(), node_key(), small_config())
        .unwrap()
        .0
}

proptest! {
    #![proptest_config(Config {
        cases: 24,
        rng_seed: RngSeed::Fixed(0x4b49_4d42),
        failure_persistence: None,
        ..Config::default()
    })]

    #[test]
    fn random_appends_read_back_exactly(operations in vec(operation(), 1..=OPERATIONS_MAX), read_sizes in vec(1..9usize, 8)) {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path());
        let mut model: Vec<NewRecord> = Vec::new();
        let mut durable = 0u64;
        let mut timestamp_ns = 1_000;
        for operation in operations {
            match operation {
                Operation::Append(sizes) => {
                    let batch: Vec<NewRecord> = sizes.iter().map(|&(payload_bytes, step)| {
                        timestamp_ns += step;
                        record(model.len() as u64 * 7 + payload_bytes as u64, payload_bytes, timestamp_ns)
                    }).collect();
                    let range = log.append(&batch).unwrap();
                    prop_assert_eq!(range, model.len() as u64..(model.len() + batch.len()) as u64);
                    model.extend(batch);
                }
                Operation::Sync => durable = log.sync().unwrap(),
                Operation::Reopen { clean } => {
                    if clean { log.close().unwrap() } else { drop(log) }
                    log = open(dir.path());
                    durable = model.len() as u64;
                }
            }
            prop_assert_eq!(log.reader().end(), durable);
            prop_assert_eq!(log.next_position(), model.len() as u64);
        }
        log.sync().unwrap();
        let reader = log.reader();

        // Everything reads back, in chunks of varying size, dense and chained.
        let mut position = 0;
        let mut previous_hash = GENESIS_HASH;
        for size in read_sizes.iter().cycle() {
            if position == model.len() { break; }
            let records = reader.read(position as u64, *size).unwrap();
            prop_assert_eq!(records.len(), (*size).min(model.len() - position));
            for got in records {
                prop_assert_eq!(got.header.position, position as u64);
                prop_assert_eq!(&got.header.meta, &model[position].meta);
                prop_assert_eq!(&got.payload, &model[position].payload);
                prop_assert_eq!(got.header.prev_hash, previous_hash);
                previous_hash = got.header.hash;
                position += 1;
            }
        }
        prop_assert_eq!(log.head_hash(), previous_hash);

        // position_at_timestamp agrees with a linear scan.
        let linear = |timestamp: u64| model.iter().rposition(|r| r.meta.timestamp_ns <= timestamp).map(|p| p as u64);
        let mut probes = vec![0, 999, 1_000, u64::MAX];
        probes.extend(model.iter().flat_map(|r| [r.meta.timestamp_ns - 1, r.meta.timestamp_ns, r.meta.timestamp_ns + 1]));
        for timestamp in probes {
            prop_assert_eq!(reader.position_at_timestamp(timestamp), linear(timestamp), "at {}", timestamp);
        }

        log.close().unwrap();
        let report = verify_partition(dir.path(), PARTITION, &node_key().public_key(), &mut |_, _| {}).unwrap();
        prop_assert_eq!(report.records, model.len() as u64);
        prop_assert_eq!(report.head, previous_hash);
    }
}
