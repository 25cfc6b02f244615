//! `verify`: offline `kimberlite_log::verify_partition` over a log this suite writes
//! (`EVENT_BYTES` payloads, signed checkpoints at the default interval): MB/s and
//! records/s, next to
//!
//! - the bare work verification cannot skip, measured in the same run: SHA-256 + CRC32
//!   over records of the same size (no key, so no AES: the chain covers ciphertext), and
//! - the `limit` CPU rate (what appending costs per record).
//!
//! The log was just written, so it is in the page cache: this measures verification's CPU
//! cost, which is what the comparison is about (a cold read adds the disk's bandwidth).

use crate::limit::{Ceiling, RECORD_DISK_BYTES};
use crate::{Settings, run_for, summary};
use kimberlite_log::{DataKey, KeyRing, LogConfig, NodeKey, PartitionLog, verify_partition};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Instant;

/// Records in the verified log, full and quick.
const RECORDS_FULL: usize = 1_000_000;
const RECORDS_QUICK: usize = 50_000;
/// Records per append while writing it (one fdatasync each).
const WRITE_BATCH_RECORDS: usize = 4_096;
/// Verification passes; the fastest counts (the first may still fault pages in).
const VERIFY_PASSES: usize = 2;

pub fn run(settings: &Settings, ceiling: &Ceiling) -> anyhow::Result<()> {
    let records = settings.pick(RECORDS_FULL, RECORDS_QUICK);
    let dir = settings.dir.join("verify-log");
    let keys_dir = settings.dir.join("verify-keys");
    std::fs::create_dir_all(&keys_dir)?;
    let node_key = Arc::new(NodeKey::load_or_create(&keys_dir)?);
    let public_key = node_key.public_key();
    let (mut log, _) = PartitionLog::open(
        &dir,
        1,
        KeyRing::new(DataKey::generate(1)),
        node_key,
        LogConfig::default(),
    )?;
    let written = Instant::now();
    let mut next = 0u64;
    while (next as usize) < records {
        let count = WRITE_BATCH_RECORDS.min(records - next as usize);
        log.append(&crate::append::records(next, count))?;
        log.sync()?;
        next += count as u64;
    }
    log.close()?;
    let write_seconds = written.elapsed().as_secs_f64();

    let mut best: Option<(f64, kimberlite_log::VerifyReport)> = None;
    for _ in 0..VERIFY_PASSES {
        let start = Instant::now();
        let report = verify_partition(&dir, 1, &public_key, &mut |_, _| {}).map_err(|failure| {
            anyhow::anyhow!("the benchmark's own log failed verification: {failure}")
        })?;
        let seconds = start.elapsed().as_secs_f64();
        assert_eq!(
            report.records, records as u64,
            "verify saw another number of records than written"
        );
        if best.as_ref().is_none_or(|(fastest, _)| seconds < *fastest) {
            best = Some((seconds, report));
        }
    }
    let (seconds, report) = best.expect("at least one pass");
    std::fs::remove_dir_all(&dir)?;
    std::fs::remove_dir_all(&keys_dir)?;

    let verify_records = report.records as f64 / seconds;
    let verify_mb = report.bytes as f64 / seconds / 1e6;
    let hash_records = hash_rate(settings)?;
    let hash_mb = hash_records * RECORD_DISK_BYTES as f64 / 1e6;
    println!(
        "\nsuite verify: offline verify_partition of {} records ({:.0} MB, {} segments, {} checkpoints), page cache warm",
        report.records,
        report.bytes as f64 / 1e6,
        report.segments,
        report.checkpoints
    );
    println!("  {:<58} {:>12} {:>10}", "measure", "records/s", "MB/s");
    println!(
        "  {:<58} {:>12.0} {:>10.1}",
        "verify_partition (CRC, SHA-256 chain, signatures)", verify_records, verify_mb
    );
    println!(
        "  {:<58} {:>12.0} {:>10.1}",
        format!("bare SHA-256 + CRC32 over {RECORD_DISK_BYTES}-byte records (1 core)"),
        hash_records,
        hash_mb
    );
    println!(
        "  {:<58} {:>12.0} {:>10.1}",
        "limit: SHA-256 + AES-256-GCM + CRC32 per record (append)",
        ceiling.cpu_records_per_second,
        ceiling.cpu_records_per_second * RECORD_DISK_BYTES as f64 / 1e6
    );
    println!(
        "  {:<58} {:>12.0}",
        "(for scale) writing the log, records/s",
        records as f64 / write_seconds
    );
    summary(
        "verify",
        serde_json::json!({
            "verify_to_bare_hashing": verify_records / hash_records,
            "verify_to_limit_cpu": verify_records / ceiling.cpu_records_per_second,
        }),
        serde_json::json!({
            "verify_records_per_second": verify_records,
            "verify_mb_per_second": verify_mb,
            "bare_hashing_records_per_second": hash_records,
            "bare_hashing_mb_per_second": hash_mb,
            "limit_cpu_records_per_second": ceiling.cpu_records_per_second,
            "records": report.records,
            "bytes": report.bytes,
        }),
    );
    Ok(())
}

/// SHA-256 and CRC32 over record-sized buffers: the least a verifier must compute.
fn hash_rate(settings: &Settings) -> anyhow::Result<f64> {
    let record = vec![0x5au8; RECORD_DISK_BYTES];
    let (iterations, elapsed) = run_for(settings.phase(), || {
        let hash = Sha256::digest(&record);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&record);
        std::hint::black_box((hash, crc.finalize()));
        Ok(())
    })?;
    Ok(iterations as f64 / elapsed.as_secs_f64())
}
