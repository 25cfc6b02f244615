//! `kimberlite verify`: offline proof that nothing in a data directory was altered.
//!
//! Needs no data key: the hash chain covers ciphertext. Checks every partition's
//! records (CRC, recomputed SHA-256, chain links, dense positions, timestamps) and
//! every signed checkpoint against the node's public key.

use anyhow::Context;
use kimberlite_kernel::{SYSTEM_TENANT, TenantId};
use kimberlite_log::NodeKey;
use std::path::{Path, PathBuf};

/// One partition found in a data directory.
#[derive(Debug, Clone)]
pub struct Partition {
    pub tenant: TenantId,
    pub log_dir: PathBuf,
}

/// Every partition under `data_dir`, the system partition first, tenants by id.
pub fn partitions(data_dir: &Path) -> anyhow::Result<Vec<Partition>> {
    let mut found = Vec::new();
    let system = data_dir.join("system").join("log");
    if system.is_dir() {
        found.push(Partition {
            tenant: SYSTEM_TENANT,
            log_dir: system,
        });
    }
    let tenants = data_dir.join("tenants");
    if tenants.is_dir() {
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(&tenants)
            .with_context(|| format!("cannot list {}", tenants.display()))?
        {
            let entry = entry?;
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|name| name.parse::<TenantId>().ok()) else {
                anyhow::bail!(
                    "unexpected entry {} in {}",
                    name.to_string_lossy(),
                    tenants.display()
                );
            };
            ids.push(id);
        }
        ids.sort_unstable();
        found.extend(ids.into_iter().map(|id| Partition {
            tenant: id,
            log_dir: tenants.join(id.to_string()).join("log"),
        }));
    }
    Ok(found)
}

fn segment_bytes(log_dir: &Path) -> u64 {
    std::fs::read_dir(log_dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|entry| {
                    entry
                        .path()
                        .extension()
                        .is_some_and(|extension| extension == "seg")
                })
                .filter_map(|entry| entry.metadata().ok())
                .map(|metadata| metadata.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Verifies every partition; prints one line each and the first failure. Returns
/// whether everything held.
pub fn run(
    data_dir: &Path,
    public_key_hex: Option<&str>,
    show_progress: bool,
) -> anyhow::Result<bool> {
    if !data_dir.is_dir() {
        anyhow::bail!("{} is not a data directory", data_dir.display());
    }
    let public_key = match public_key_hex {
        Some(text) => {
            let bytes: [u8; 32] = hex::decode(text.trim())
                .ok()
                .and_then(|bytes| bytes.try_into().ok())
                .context("--public-key must be 64 hex digits")?;
            ed25519_dalek::VerifyingKey::from_bytes(&bytes)
                .context("--public-key is not an Ed25519 public key")?
        }
        None => NodeKey::load_public_key(data_dir).with_context(|| {
            format!(
                "cannot load the node public key from {}",
                data_dir.display()
            )
        })?,
    };
    let partitions = partitions(data_dir)?;
    if partitions.is_empty() {
        anyhow::bail!(
            "{} holds no partitions (is it a Kimberlite data directory?)",
            data_dir.display()
        );
    }
    let total: u64 = partitions
        .iter()
        .map(|partition| segment_bytes(&partition.log_dir))
        .sum();
    let bar = if show_progress {
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "verifying {bar:40} {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
            )
            .expect("valid template"),
        );
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut done_before = 0u64;
    let mut lines = Vec::new();
    let mut records = 0u64;
    for partition in &partitions {
        let name = if partition.tenant == SYSTEM_TENANT {
            "system partition".to_string()
        } else {
            format!("tenant {}", partition.tenant)
        };
        let mut progress = |done: u64, _total: u64| bar.set_position(done_before + done);
        match kimberlite_log::verify_partition(
            &partition.log_dir,
            partition.tenant,
            &public_key,
            &mut progress,
        ) {
            Ok(report) => {
                records += report.records;
                lines.push(format!(
                    "ok  {name}: {} records in {} segment(s), {} signed checkpoint(s), head {}",
                    report.records,
                    report.segments,
                    report.checkpoints,
                    &hex::encode(report.head)[..16]
                ));
                done_before += report.bytes;
            }
            Err(failure) => {
                bar.finish_and_clear();
                for line in &lines {
                    println!("{line}");
                }
                println!("FAILED  {name}: {failure}");
                return Ok(false);
            }
        }
    }
    bar.finish_and_clear();
    for line in &lines {
        println!("{line}");
    }
    println!(
        "verified {} partition(s), {records} records: every CRC, hash link and checkpoint signature holds",
        partitions.len()
    );
    Ok(true)
}
