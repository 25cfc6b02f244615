//! Append throughput of one partition: 256-byte payloads, batches of 64 records, one
//! `sync` (fdatasync) per batch: the group-commit shape the host uses.
//!
//! `cargo run --release -p kimberlite-log --example append_throughput [records] [dir] [batch]`
//!
//! Also reports the same appends without syncing (the CPU cost: AES-GCM, SHA-256, CRC) and
//! a full read-back, so the disk's share is visible.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kimberlite_log::{
    DataKey, KeyRing, LogConfig, NewRecord, NodeKey, PartitionLog, RecordKind, RecordMeta,
};

const PAYLOAD_BYTES: usize = 256;
const BATCH_RECORDS_DEFAULT: usize = 64;
const RECORDS_DEFAULT: usize = 200_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut arguments = std::env::args().skip(1);
    let records: usize = match arguments.next() {
        Some(count) => count.parse()?,
        None => RECORDS_DEFAULT,
    };
    let base = arguments.next().map(std::path::PathBuf::from);
    let batch_records: usize = match arguments.next() {
        Some(count) => count.parse()?,
        None => BATCH_RECORDS_DEFAULT,
    };
    let scratch = match &base {
        Some(dir) => tempfile::tempdir_in(dir)?,
        None => tempfile::tempdir()?,
    };
    let node_key = Arc::new(NodeKey::load_or_create(&scratch.path().join("node"))?);
    let keys = KeyRing::new(DataKey::generate(1));

    let batch: Vec<NewRecord> = (0..batch_records)
        .map(|i| NewRecord {
            key_id: 1,
            meta: RecordMeta {
                kind: RecordKind::Event,
                event_type: "RowInserted".into(),
                op: 0,
                timestamp_ns: 0,
                client_id: 7,
                request: i as u64,
                stream: "patients".into(),
                principal: "token:writer".into(),
                reason: "bench".into(),
            },
            payload: vec![i as u8; PAYLOAD_BYTES],
        })
        .collect();

    for (name, sync_every_batch) in [
        ("append+sync per batch", true),
        ("append only (CPU)", false),
    ] {
        let dir = scratch.path().join(name.replace([' ', '+', '(', ')'], "_"));
        let (mut log, _) = PartitionLog::open(
            &dir,
            1,
            keys.clone(),
            node_key.clone(),
            LogConfig::default(),
        )?;
        let started = Instant::now();
        let mut syncs = 0u64;
        for round in 0..records.div_ceil(batch_records) {
            let mut batch = batch.clone();
            for record in &mut batch {
                record.meta.timestamp_ns = round as u64;
            }
            log.append(&batch)?;
            if sync_every_batch {
                log.sync()?;
                syncs += 1;
            }
        }
        log.sync()?;
        let elapsed = started.elapsed();
        let appended = log.next_position();
        report(name, appended, elapsed, syncs);

        let reader = log.reader();
        let started = Instant::now();
        let mut position = 0;
        while position < reader.end() {
            position += reader.read(position, 4096)?.len() as u64;
        }
        report(
            "read back (decrypt + checks)",
            position,
            started.elapsed(),
            0,
        );
        log.close()?;
    }
    Ok(())
}

fn report(name: &str, records: u64, elapsed: Duration, syncs: u64) {
    let seconds = elapsed.as_secs_f64();
    println!(
        "{name:32} {records:>8} records in {seconds:6.3} s = {:>9.0} records/s, {:>6.1} MiB/s of payload{}",
        records as f64 / seconds,
        records as f64 * PAYLOAD_BYTES as f64 / seconds / (1024.0 * 1024.0),
        if syncs > 0 {
            format!(", {:.0} µs per sync'd batch", seconds * 1e6 / syncs as f64)
        } else {
            String::new()
        }
    );
}
