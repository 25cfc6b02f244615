//! The node's key hierarchy, as far as the foundation needs it:
//! node master key → per-tenant data keys, stored wrapped (AES-256-GCM) beside the
//! tenant's log. Rotation, per-subject keys and crypto-shredding build on this.

use crate::files::write_atomic;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use anyhow::{Context, bail};
use kimberlite_kernel::TenantId;
use kimberlite_log::{DataKey, KeyRing};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Environment variable that may carry the master key (64 hex digits) instead of the file.
pub const MASTER_KEY_ENV: &str = "KIMBERLITE_MASTER_KEY";

const MASTER_KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 12;
/// Domain separation for the wrapping's associated data.
const WRAP_DOMAIN: &[u8] = b"kimberlite/v1/tenant-data-key";

/// The node master key: wraps every tenant's data keys. Never leaves the node.
pub struct MasterKey(Zeroizing<[u8; MASTER_KEY_BYTES]>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// From `$KIMBERLITE_MASTER_KEY`, else `DIR/master.key` (created, mode 0600, on first start).
    pub fn load_or_create(data_dir: &Path) -> anyhow::Result<MasterKey> {
        if let Ok(text) = std::env::var(MASTER_KEY_ENV) {
            return MasterKey::from_hex(text.trim())
                .with_context(|| format!("{MASTER_KEY_ENV} is not a valid master key"));
        }
        let path = data_dir.join("master.key");
        if !path.exists() {
            let key: [u8; MASTER_KEY_BYTES] = rand::random();
            write_atomic(&path, hex::encode(key).as_bytes(), true)
                .with_context(|| format!("cannot write the master key {}", path.display()))?;
            tracing::info!(path = %path.display(), "created the node master key (keep a backup: without it no data can be read)");
        }
        let text = Zeroizing::new(
            std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read the master key {}", path.display()))?,
        );
        MasterKey::from_hex(text.trim())
            .with_context(|| format!("the master key file {} is damaged", path.display()))
    }

    fn from_hex(text: &str) -> anyhow::Result<MasterKey> {
        let bytes = Zeroizing::new(hex::decode(text).context("not hex")?);
        if bytes.len() != MASTER_KEY_BYTES {
            bail!(
                "expected {} hex digits, found {}",
                MASTER_KEY_BYTES * 2,
                text.len()
            );
        }
        let mut key = Zeroizing::new([0u8; MASTER_KEY_BYTES]);
        key.copy_from_slice(&bytes);
        Ok(MasterKey(key))
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new_from_slice(self.0.as_slice()).expect("32-byte key")
    }
}

#[derive(Serialize, Deserialize)]
struct WrappedKey {
    id: u32,
    nonce: String,
    ciphertext: String,
}

#[derive(Serialize, Deserialize)]
struct KeyFile {
    tenant: TenantId,
    current: u32,
    keys: Vec<WrappedKey>,
}

fn associated_data(tenant: TenantId, key_id: u32) -> Vec<u8> {
    let mut data = WRAP_DOMAIN.to_vec();
    data.extend_from_slice(&tenant.to_le_bytes());
    data.extend_from_slice(&key_id.to_le_bytes());
    data
}

/// Where a tenant's wrapped data keys live.
pub fn key_file_path(tenant_dir: &Path) -> PathBuf {
    tenant_dir.join("keys.json")
}

/// Creates the first data key of a new tenant and stores it wrapped (durably).
pub fn create_tenant_keys(
    master: &MasterKey,
    tenant: TenantId,
    tenant_dir: &Path,
) -> anyhow::Result<KeyRing> {
    let key = DataKey::generate(1);
    let nonce: [u8; NONCE_BYTES] = rand::random();
    let ciphertext = master
        .cipher()
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: key.bytes(),
                aad: &associated_data(tenant, key.id()),
            },
        )
        .map_err(|_| anyhow::anyhow!("cannot wrap the data key of tenant {tenant}"))?;
    let file = KeyFile {
        tenant,
        current: key.id(),
        keys: vec![WrappedKey {
            id: key.id(),
            nonce: hex::encode(nonce),
            ciphertext: hex::encode(ciphertext),
        }],
    };
    let path = key_file_path(tenant_dir);
    let text = serde_json::to_vec_pretty(&file).expect("serializes");
    write_atomic(&path, &text, true).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(KeyRing::new(key))
}

/// Loads and unwraps a tenant's data keys.
pub fn load_tenant_keys(
    master: &MasterKey,
    tenant: TenantId,
    tenant_dir: &Path,
) -> anyhow::Result<KeyRing> {
    let path = key_file_path(tenant_dir);
    let text = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let file: KeyFile = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not a valid key file", path.display()))?;
    if file.tenant != tenant {
        bail!(
            "{} belongs to tenant {}, not {tenant}",
            path.display(),
            file.tenant
        );
    }
    let cipher = master.cipher();
    let mut current = None;
    let mut older = Vec::new();
    for wrapped in &file.keys {
        let nonce = hex::decode(&wrapped.nonce).context("bad nonce hex")?;
        if nonce.len() != NONCE_BYTES {
            bail!("{}: key {} has a bad nonce", path.display(), wrapped.id);
        }
        let ciphertext = hex::decode(&wrapped.ciphertext).context("bad key hex")?;
        let plain = Zeroizing::new(
            cipher
                .decrypt(
                    Nonce::from_slice(&nonce),
                    Payload {
                        msg: &ciphertext,
                        aad: &associated_data(tenant, wrapped.id),
                    },
                )
                .map_err(|_| {
                    anyhow::anyhow!(
                        "cannot unwrap data key {} of tenant {tenant} from {}: wrong master key, or the file was altered",
                        wrapped.id,
                        path.display()
                    )
                })?,
        );
        let mut bytes = [0u8; 32];
        if plain.len() != bytes.len() {
            bail!(
                "{}: key {} has the wrong length",
                path.display(),
                wrapped.id
            );
        }
        bytes.copy_from_slice(&plain);
        let key = DataKey::new(wrapped.id, bytes);
        if wrapped.id == file.current {
            current = Some(key);
        } else {
            older.push(key);
        }
    }
    let current = current.with_context(|| {
        format!(
            "{}: the current key {} is missing",
            path.display(),
            file.current
        )
    })?;
    let mut ring = KeyRing::new(current);
    for key in older {
        ring.add(key);
    }
    Ok(ring)
}
