//! `limit`: what this machine can do on the durable append path with no database at
//! all — the ceiling every other suite is a fraction of.
//!
//! - CPU: SHA-256 + AES-256-GCM + CRC32 over one record of `EVENT_BYTES` of payload and a
//!   log-sized header, single core — the work no compliant log can skip.
//! - Disk: sequential appends of batches of such records to a growing file, one fdatasync
//!   per batch, at each batch size the other suites use (1 and 64) and a large one.
//! - fdatasync latency of a one-block overwrite.
//!
//! Nothing here is assumed: fdatasync on a VM can cost 20× what a laptop NVMe does, and
//! that changes every ratio.

use crate::stats::Latencies;
use crate::{EVENT_BYTES, Settings, run_for, summary};
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::time::Instant;

/// Records per fdatasync in the batched phases of every suite (requests of 64 events, 64
/// concurrent clients, INSERTs of 64 rows): one ceiling applies to all of them.
pub const LIMIT_BATCH_RECORDS: usize = 64;

/// The batch sizes whose write + fdatasync rate is measured: one record per sync (what a
/// database without group commit gets), the suites' batch, and a large batch that shows
/// where the CPU becomes the limit.
pub const LIMIT_BATCH_SIZES: [usize; 3] = [1, LIMIT_BATCH_RECORDS, 1024];

/// Metadata strings of the benchmark's records (stream, event type, principal) as the log
/// stores them; with `RECORD_BYTES_MIN` this gives the real on-disk record size.
const RECORD_STRINGS_BYTES: usize = "accounts".len() + "Deposited".len() + "bench".len();

/// Bytes one benchmark record takes on disk: the log's fixed header, tag and trailer, the
/// metadata strings and the payload.
pub const RECORD_DISK_BYTES: usize =
    kimberlite_log::RECORD_BYTES_MIN + RECORD_STRINGS_BYTES + EVENT_BYTES;

/// The AES-GCM tag and the trailer (hash, CRC, end magic) of a log record.
const RECORD_TAG_AND_TRAILER_BYTES: usize = 16 + 32 + 4 + 4;

/// The header the log authenticates with each record (AES-GCM associated data): the fixed
/// part and the metadata strings.
const RECORD_HEADER_BYTES: usize =
    kimberlite_log::RECORD_BYTES_MIN - RECORD_TAG_AND_TRAILER_BYTES + RECORD_STRINGS_BYTES;

/// fdatasync latency samples, full and quick.
const FDATASYNC_SAMPLES_FULL: usize = 2_000;
const FDATASYNC_SAMPLES_QUICK: usize = 200;

/// Blocks the fdatasync-latency probe cycles over.
const PROBE_BLOCKS: u64 = 16;
const PROBE_BLOCK_BYTES: usize = 4096;

#[derive(Debug, Clone)]
pub struct Ceiling {
    /// Records/s the CPU work (hash + encrypt + CRC) allows on one core.
    pub cpu_records_per_second: f64,
    /// (batch size, records/s that write + fdatasync allow at that batch size).
    pub disk_records_per_second: Vec<(usize, f64)>,
    pub fdatasync_p50_us: f64,
    pub fdatasync_p99_us: f64,
}

impl Ceiling {
    /// Records/s that write + fdatasync allow at `batch` records per sync (measured).
    pub fn disk_at(&self, batch: usize) -> f64 {
        self.disk_records_per_second
            .iter()
            .find(|(size, _)| *size == batch)
            .map(|(_, rate)| *rate)
            .unwrap_or_else(|| panic!("batch size {batch} is not one of LIMIT_BATCH_SIZES"))
    }

    /// The durable-append ceiling at `batch` records per fdatasync for one writer thread:
    /// it hashes and encrypts a batch, then writes and syncs it, so the two costs add up
    /// per record (the harmonic combination of the two measured rates).
    pub fn records_per_second(&self, batch: usize) -> f64 {
        self.combined(self.disk_at(batch))
    }

    /// The ceiling with the CPU rate of this run and a disk rate measured elsewhere (in
    /// slices paired with a phase, see `append`).
    pub fn combined(&self, disk_records_per_second: f64) -> f64 {
        1.0 / (1.0 / self.cpu_records_per_second + 1.0 / disk_records_per_second)
    }
}

pub fn run(settings: &Settings) -> anyhow::Result<Ceiling> {
    let cpu = cpu_rate(settings)?;
    let mut disk = Vec::new();
    for batch in LIMIT_BATCH_SIZES {
        disk.push((batch, disk_rate(settings, batch)?));
    }
    let mut fsync = fdatasync_latency(settings)?;
    let ceiling = Ceiling {
        cpu_records_per_second: cpu,
        disk_records_per_second: disk.clone(),
        fdatasync_p50_us: fsync.quantile_us(0.5),
        fdatasync_p99_us: fsync.quantile_us(0.99),
    };
    println!(
        "\nsuite limit: the machine's ceiling for durable appends of {EVENT_BYTES}-byte events \
         ({RECORD_DISK_BYTES} bytes on disk), no database"
    );
    println!("  {:<62} {:>14}", "measure", "value");
    println!(
        "  {:<62} {:>12.0}/s",
        "SHA-256 + AES-256-GCM + CRC32 per record (1 core)", cpu
    );
    for (batch, rate) in &disk {
        println!(
            "  {:<62} {:>12.0}/s",
            format!("sequential write + fdatasync, {batch} records per sync"),
            rate
        );
    }
    println!(
        "  {:<62} {:>11.0} us",
        "fdatasync latency p50 (4 KiB overwrite)", ceiling.fdatasync_p50_us
    );
    println!(
        "  {:<62} {:>11.0} us",
        "fdatasync latency p99", ceiling.fdatasync_p99_us
    );
    for batch in LIMIT_BATCH_SIZES {
        println!(
            "  {:<62} {:>12.0}/s",
            format!("ceiling at {batch} records per sync (CPU then disk, 1 writer)"),
            ceiling.records_per_second(batch)
        );
    }
    let mut figures = serde_json::Map::new();
    figures.insert("cpu_records_per_second".into(), cpu.into());
    for (batch, rate) in &disk {
        figures.insert(
            format!("disk_records_per_second_batch_{batch}"),
            (*rate).into(),
        );
        figures.insert(
            format!("ceiling_records_per_second_batch_{batch}"),
            ceiling.records_per_second(*batch).into(),
        );
    }
    figures.insert("fdatasync_p50_us".into(), ceiling.fdatasync_p50_us.into());
    figures.insert("fdatasync_p99_us".into(), ceiling.fdatasync_p99_us.into());
    figures.insert("record_payload_bytes".into(), EVENT_BYTES.into());
    figures.insert("record_disk_bytes".into(), RECORD_DISK_BYTES.into());
    summary(
        "limit",
        serde_json::json!({
            // How much a batch of LIMIT_BATCH_RECORDS buys over a sync per record.
            "group_commit_gain": ceiling.records_per_second(LIMIT_BATCH_RECORDS) / ceiling.records_per_second(1),
        }),
        figures,
    );
    Ok(ceiling)
}

fn cpu_rate(settings: &Settings) -> anyhow::Result<f64> {
    let cipher = Aes256Gcm::new_from_slice(&[7u8; 32]).expect("32-byte key");
    let header = [3u8; RECORD_HEADER_BYTES];
    let mut buffer = Vec::with_capacity(EVENT_BYTES + 16);
    let mut position = 0u64;
    let (iterations, elapsed) = run_for(settings.phase(), || {
        buffer.clear();
        buffer.resize(EVENT_BYTES, 0x5a);
        let mut nonce = [0u8; 12];
        nonce[..8].copy_from_slice(&position.to_le_bytes());
        position += 1;
        cipher
            .encrypt_in_place(Nonce::from_slice(&nonce), &header, &mut buffer)
            .map_err(|_| anyhow::anyhow!("AES-256-GCM encryption failed"))?;
        let mut hasher = Sha256::new();
        hasher.update(header);
        hasher.update(&buffer);
        let hash = hasher.finalize();
        let mut crc = crc32fast::Hasher::new();
        crc.update(&header);
        crc.update(&buffer);
        crc.update(&hash);
        std::hint::black_box(crc.finalize());
        Ok(())
    })?;
    Ok(iterations as f64 / elapsed.as_secs_f64())
}

/// Appends batches of `batch` records to a growing file (as a log segment grows), one
/// fdatasync per batch.
fn disk_rate(settings: &Settings, batch: usize) -> anyhow::Result<f64> {
    let mut probe = DiskProbe::create(settings, &format!("limit-{batch}"))?;
    let (records, elapsed) = probe.run(batch, settings.phase())?;
    probe.remove()?;
    Ok(records as f64 / elapsed.as_secs_f64())
}

/// The disk half of the ceiling as a reusable probe: batches of records of the real on-disk
/// size appended to a growing file, one fdatasync per batch. Other suites run it in slices
/// paired with their own (see `append`).
#[derive(Debug)]
pub struct DiskProbe {
    path: std::path::PathBuf,
    file: std::fs::File,
    written_bytes: u64,
}

/// Size past which the probe's file starts over (a log rolls to a new segment too).
const PROBE_FILE_BYTES_MAX: u64 = 256 << 20;

impl DiskProbe {
    pub fn create(settings: &Settings, name: &str) -> anyhow::Result<DiskProbe> {
        let path = settings.dir.join(format!("{name}-probe.bin"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)?;
        Ok(DiskProbe {
            path,
            file,
            written_bytes: 0,
        })
    }

    /// Appends batches of `batch` records with one fdatasync each for about `duration`;
    /// returns (records written, elapsed).
    pub fn run(
        &mut self,
        batch: usize,
        duration: std::time::Duration,
    ) -> anyhow::Result<(usize, std::time::Duration)> {
        if self.written_bytes > PROBE_FILE_BYTES_MAX {
            self.file.set_len(0)?;
            self.file.sync_all()?;
            self.written_bytes = 0;
        }
        let bytes = vec![0xa5u8; batch * RECORD_DISK_BYTES];
        let file = &mut self.file;
        let (batches, elapsed) = run_for(duration, || {
            file.write_all(&bytes)?;
            file.sync_data()?;
            Ok(())
        })?;
        self.written_bytes += batches * bytes.len() as u64;
        Ok((batches as usize * batch, elapsed))
    }

    pub fn remove(self) -> anyhow::Result<()> {
        drop(self.file);
        std::fs::remove_file(&self.path)?;
        Ok(())
    }
}

/// fdatasync latency: overwrite one block in place and sync, repeatedly.
fn fdatasync_latency(settings: &Settings) -> anyhow::Result<Latencies> {
    let path = settings.dir.join("limit-fdatasync.bin");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)?;
    file.set_len(PROBE_BLOCKS * PROBE_BLOCK_BYTES as u64)?;
    file.sync_all()?;
    let block = vec![0x11u8; PROBE_BLOCK_BYTES];
    let mut latencies = Latencies::default();
    for index in 0..settings.pick(FDATASYNC_SAMPLES_FULL, FDATASYNC_SAMPLES_QUICK) as u64 {
        let start = Instant::now();
        file.write_all_at(&block, (index % PROBE_BLOCKS) * PROBE_BLOCK_BYTES as u64)?;
        file.sync_data()?;
        latencies.record(start.elapsed());
    }
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(latencies)
}
