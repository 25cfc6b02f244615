//! A single node's key hierarchy: node master key → tenant key-encryption key (KEK) →
//! data keys with ids (and data subjects' keys), each level wrapped (AES-256-GCM) under the
//! one above and stored in the tenant's `keys.json` beside its log.
//!
//! Why a KEK between the master key and the data keys: a tenant's keys can then be
//! re-wrapped or destroyed as one (erasing a whole tenant destroys its KEK), and the master
//! key only ever wraps 32-byte KEKs. Which key id encrypts a record is the kernel's choice
//! (`Partition::data_key`, subjects' keys); this store only holds the bytes. Every change is
//! written (and fsynced, via `write_atomic`) before a record that needs it is appended, so a
//! durable record never names a key the file lacks. A destroyed key is removed from the file
//! and listed as destroyed: records under it read as erased from then on.
//!
//! A cluster has no `keys.json`: its keys are derived (`replicated::ClusterKeys`).

use crate::files::write_atomic;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use anyhow::{Context, bail};
use kimberlite_kernel::{FIRST_DATA_KEY_ID, TenantId};
use kimberlite_log::{DataKey, KeyRing};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Environment variable that may carry the master key (64 hex digits) instead of the file.
pub const MASTER_KEY_ENV: &str = "KIMBERLITE_MASTER_KEY";

const MASTER_KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 12;
/// Domain separation for the wrapping's associated data: a data key wrapped by the master key
/// (key files of format 1, read only to migrate them).
const WRAP_DOMAIN_V1: &[u8] = b"kimberlite/v1/tenant-data-key";
/// A tenant's KEK wrapped by the master key.
const WRAP_DOMAIN_KEK: &[u8] = b"kimberlite/v2/tenant-kek";
/// A data or subject key wrapped by the tenant's KEK.
const WRAP_DOMAIN_DATA_KEY: &[u8] = b"kimberlite/v2/data-key";
/// The key file layout this build writes.
const KEY_FILE_FORMAT: u32 = 2;

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

#[derive(Clone, Serialize, Deserialize)]
struct WrappedKey {
    id: u32,
    nonce: String,
    ciphertext: String,
}

/// `keys.json`, format 2.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    format: u32,
    tenant: TenantId,
    /// The tenant KEK under the master key (`id` 0); gone once the tenant is erased.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kek: Option<WrappedKey>,
    /// Data keys and subjects' keys under the KEK, ascending ids.
    keys: Vec<WrappedKey>,
    /// Ids of keys destroyed by an erasure, ascending: never created again.
    #[serde(default)]
    destroyed: Vec<u32>,
    /// Set when the whole tenant was erased: the position of its `TenantErased` record in
    /// the system partition. The file then holds no key at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    erased_at: Option<u64>,
}

/// `keys.json` of format 1 (data keys wrapped by the master key directly): migrated on load.
#[derive(Deserialize)]
struct KeyFileV1 {
    tenant: TenantId,
    keys: Vec<WrappedKey>,
}

fn associated_data(domain: &[u8], tenant: TenantId, key_id: u32) -> Vec<u8> {
    let mut data = domain.to_vec();
    data.extend_from_slice(&tenant.to_le_bytes());
    data.extend_from_slice(&key_id.to_le_bytes());
    data
}

fn wrap(cipher: &Aes256Gcm, aad: &[u8], id: u32, key: &[u8; 32]) -> anyhow::Result<WrappedKey> {
    let nonce: [u8; NONCE_BYTES] = rand::random();
    let ciphertext = cipher
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: key, aad })
        .map_err(|_| anyhow::anyhow!("cannot wrap key {id}"))?;
    Ok(WrappedKey {
        id,
        nonce: hex::encode(nonce),
        ciphertext: hex::encode(ciphertext),
    })
}

/// Unwraps `wrapped`; `what` names it in errors ("data key 3 of tenant 1 in …").
fn unwrap(
    cipher: &Aes256Gcm,
    aad: &[u8],
    wrapped: &WrappedKey,
    what: &dyn Fn() -> String,
) -> anyhow::Result<Zeroizing<[u8; 32]>> {
    let nonce = hex::decode(&wrapped.nonce)
        .ok()
        .filter(|n| n.len() == NONCE_BYTES);
    let Some(nonce) = nonce else {
        bail!("{} has a bad nonce", what());
    };
    let ciphertext =
        hex::decode(&wrapped.ciphertext).with_context(|| format!("{} is not hex", what()))?;
    let plain = Zeroizing::new(
        cipher
            .decrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &ciphertext,
                    aad,
                },
            )
            .map_err(|_| {
                anyhow::anyhow!(
                    "cannot unwrap {}: wrong master key, or the file was altered",
                    what()
                )
            })?,
    );
    let mut bytes = Zeroizing::new([0u8; 32]);
    if plain.len() != bytes.len() {
        bail!("{} has the wrong length", what());
    }
    bytes.copy_from_slice(&plain);
    Ok(bytes)
}

/// Where a tenant's wrapped keys live.
pub fn key_file_path(tenant_dir: &Path) -> PathBuf {
    tenant_dir.join("keys.json")
}

/// One tenant's keys on a single node: the unwrapped KEK, the file as stored, and the ring
/// its log decrypts with.
pub struct TenantKeys {
    tenant: TenantId,
    path: PathBuf,
    /// `None` once the tenant is erased.
    kek: Option<Aes256Gcm>,
    file: KeyFile,
    ring: KeyRing,
}

impl std::fmt::Debug for TenantKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantKeys")
            .field("tenant", &self.tenant)
            .field("ring", &self.ring)
            .finish()
    }
}

impl TenantKeys {
    /// A new tenant: a fresh KEK and its first data key, stored durably.
    pub fn create(
        master: &MasterKey,
        tenant: TenantId,
        tenant_dir: &Path,
    ) -> anyhow::Result<TenantKeys> {
        let mut keys = TenantKeys::create_empty(master, tenant, tenant_dir)?;
        keys.add_key(FIRST_DATA_KEY_ID)?;
        Ok(keys)
    }

    /// Loads and unwraps a tenant's keys (a format-1 file is migrated to format 2 first).
    pub fn load(
        master: &MasterKey,
        tenant: TenantId,
        tenant_dir: &Path,
    ) -> anyhow::Result<TenantKeys> {
        let path = key_file_path(tenant_dir);
        let text =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let value: serde_json::Value = serde_json::from_slice(&text)
            .with_context(|| format!("{} is not a valid key file", path.display()))?;
        if value.get("format").is_none() {
            return TenantKeys::migrate_v1(master, tenant, tenant_dir, &text);
        }
        let file: KeyFile = serde_json::from_value(value)
            .with_context(|| format!("{} is not a valid key file", path.display()))?;
        if file.format != KEY_FILE_FORMAT {
            bail!(
                "{} has format {}; this build reads format {KEY_FILE_FORMAT}",
                path.display(),
                file.format
            );
        }
        if file.tenant != tenant {
            bail!(
                "{} belongs to tenant {}, not {tenant}",
                path.display(),
                file.tenant
            );
        }
        if file.erased_at.is_some() {
            return Ok(TenantKeys {
                tenant,
                path,
                kek: None,
                file,
                ring: KeyRing::shredded(),
            });
        }
        let Some(wrapped_kek) = &file.kek else {
            bail!(
                "{} has no key-encryption key, but its tenant was not erased: the file was altered (restore it from a backup)",
                path.display()
            );
        };
        let kek = unwrap(
            &master.cipher(),
            &associated_data(WRAP_DOMAIN_KEK, tenant, 0),
            wrapped_kek,
            &|| {
                format!(
                    "the key-encryption key of tenant {tenant} in {}",
                    path.display()
                )
            },
        )?;
        let kek = Aes256Gcm::new_from_slice(kek.as_slice()).expect("32-byte key");
        let mut ring = KeyRing::empty();
        for &id in &file.destroyed {
            ring.destroy(id);
        }
        for wrapped in &file.keys {
            let bytes = unwrap(
                &kek,
                &associated_data(WRAP_DOMAIN_DATA_KEY, tenant, wrapped.id),
                wrapped,
                &|| {
                    format!(
                        "key {} of tenant {tenant} in {}",
                        wrapped.id,
                        path.display()
                    )
                },
            )?;
            ring.add(DataKey::new(wrapped.id, *bytes));
        }
        Ok(TenantKeys {
            tenant,
            path,
            kek: Some(kek),
            file,
            ring,
        })
    }

    fn migrate_v1(
        master: &MasterKey,
        tenant: TenantId,
        tenant_dir: &Path,
        text: &[u8],
    ) -> anyhow::Result<TenantKeys> {
        let path = key_file_path(tenant_dir);
        let old: KeyFileV1 = serde_json::from_slice(text)
            .with_context(|| format!("{} is not a valid key file", path.display()))?;
        if old.tenant != tenant {
            bail!(
                "{} belongs to tenant {}, not {tenant}",
                path.display(),
                old.tenant
            );
        }
        let mut keys = Vec::new();
        for wrapped in &old.keys {
            let bytes = unwrap(
                &master.cipher(),
                &associated_data(WRAP_DOMAIN_V1, tenant, wrapped.id),
                wrapped,
                &|| {
                    format!(
                        "data key {} of tenant {tenant} in {}",
                        wrapped.id,
                        path.display()
                    )
                },
            )?;
            keys.push(DataKey::new(wrapped.id, *bytes));
        }
        let mut migrated = TenantKeys::create_empty(master, tenant, tenant_dir)?;
        for key in keys {
            migrated.store(key)?;
        }
        tracing::info!(path = %path.display(), "migrated the key file to format {KEY_FILE_FORMAT} (tenant key-encryption key)");
        Ok(migrated)
    }

    /// A fresh KEK and no data key yet (not written).
    fn create_empty(
        master: &MasterKey,
        tenant: TenantId,
        tenant_dir: &Path,
    ) -> anyhow::Result<TenantKeys> {
        let kek = Zeroizing::new(rand::random::<[u8; 32]>());
        let wrapped_kek = wrap(
            &master.cipher(),
            &associated_data(WRAP_DOMAIN_KEK, tenant, 0),
            0,
            &kek,
        )?;
        Ok(TenantKeys {
            tenant,
            path: key_file_path(tenant_dir),
            kek: Some(Aes256Gcm::new_from_slice(kek.as_slice()).expect("32-byte key")),
            file: KeyFile {
                format: KEY_FILE_FORMAT,
                tenant,
                kek: Some(wrapped_kek),
                keys: Vec::new(),
                destroyed: Vec::new(),
                erased_at: None,
            },
            ring: KeyRing::empty(),
        })
    }

    /// The ring the tenant's log decrypts with (and appends choose from).
    pub fn ring(&self) -> KeyRing {
        self.ring.clone()
    }

    pub fn has(&self, key_id: u32) -> bool {
        self.ring.get(key_id).is_some()
    }

    pub fn is_destroyed(&self, key_id: u32) -> bool {
        self.is_erased() || self.file.destroyed.binary_search(&key_id).is_ok()
    }

    /// Whether the whole tenant was erased (no key is left).
    pub fn is_erased(&self) -> bool {
        self.file.erased_at.is_some()
    }

    /// Creates key `key_id` from the CSPRNG and stores it durably; a key the tenant already
    /// has is kept (a crash may have stored it before its first record became durable).
    /// A destroyed id is refused: an erased subject's key never comes back.
    pub fn add_key(&mut self, key_id: u32) -> anyhow::Result<()> {
        if self.has(key_id) {
            return Ok(());
        }
        if self.is_erased() {
            bail!(
                "tenant {} was erased: no key is created for it again",
                self.tenant
            );
        }
        if self.is_destroyed(key_id) {
            bail!(
                "key {key_id} of tenant {} was destroyed by an erasure and is never created again",
                self.tenant
            );
        }
        self.store(DataKey::generate(key_id))
    }

    fn store(&mut self, key: DataKey) -> anyhow::Result<()> {
        let Some(kek) = &self.kek else {
            bail!(
                "tenant {} was erased: no key is created for it again",
                self.tenant
            );
        };
        let wrapped = wrap(
            kek,
            &associated_data(WRAP_DOMAIN_DATA_KEY, self.tenant, key.id()),
            key.id(),
            key.bytes(),
        )?;
        let at = self.file.keys.partition_point(|k| k.id < key.id());
        self.file.keys.insert(at, wrapped);
        self.write()
            .with_context(|| format!("cannot store key {} of tenant {}", key.id(), self.tenant))?;
        self.ring.add(key);
        Ok(())
    }

    /// Destroys key `key_id` (crypto-shredding): removed from the file (durably) and from the
    /// ring; the id is remembered as destroyed. Destroying it again is a no-op.
    pub fn destroy(&mut self, key_id: u32) -> anyhow::Result<()> {
        if self.is_destroyed(key_id) {
            return Ok(());
        }
        self.file.keys.retain(|k| k.id != key_id);
        let at = self.file.destroyed.partition_point(|id| *id < key_id);
        self.file.destroyed.insert(at, key_id);
        self.write()
            .with_context(|| format!("cannot destroy key {key_id} of tenant {}", self.tenant))?;
        self.ring.destroy(key_id);
        Ok(())
    }

    /// Erases the whole tenant (crypto-shredding): the KEK and every data and subject key
    /// leave the file (durably) and the ring; every id is listed as destroyed and
    /// `erased_at` (the `TenantErased` record's position) is kept. Erasing again is a no-op.
    ///
    /// The file is replaced by a rename: the filesystem may keep the old blocks (holding the
    /// KEK wrapped under the master key) until it reuses them.
    pub fn erase(&mut self, erased_at: u64) -> anyhow::Result<()> {
        if self.is_erased() {
            return Ok(());
        }
        let ids = self.file.keys.iter().map(|key| key.id);
        let mut destroyed: Vec<u32> = self.file.destroyed.iter().copied().chain(ids).collect();
        destroyed.sort_unstable();
        destroyed.dedup();
        self.file.destroyed = destroyed;
        self.file.keys.clear();
        self.file.kek = None;
        self.file.erased_at = Some(erased_at);
        self.write()
            .with_context(|| format!("cannot erase the keys of tenant {}", self.tenant))?;
        self.kek = None;
        self.ring = KeyRing::shredded();
        Ok(())
    }

    fn write(&self) -> anyhow::Result<()> {
        let text = serde_json::to_vec_pretty(&self.file).expect("serializes");
        write_atomic(&self.path, &text, true)
            .with_context(|| format!("cannot write {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn master(byte: u8) -> MasterKey {
        MasterKey::from_hex(&hex::encode([byte; MASTER_KEY_BYTES])).unwrap()
    }

    #[test]
    fn keys_survive_a_reload_and_a_destroyed_key_stays_destroyed() {
        let dir = tempfile::tempdir().unwrap();
        let mut keys = TenantKeys::create(&master(1), 7, dir.path()).unwrap();
        keys.add_key(2).unwrap();
        keys.add_key(SUBJECT_KEY_ID).unwrap();
        assert!(keys.ring().get(SUBJECT_KEY_ID).is_some());
        keys.destroy(SUBJECT_KEY_ID).unwrap();
        assert!(keys.ring().get(SUBJECT_KEY_ID).is_none());
        assert!(keys.ring().is_destroyed(SUBJECT_KEY_ID));

        let reloaded = TenantKeys::load(&master(1), 7, dir.path()).unwrap();
        assert_eq!(reloaded.ring().ids().collect::<Vec<_>>(), [1, 2]);
        assert_eq!(
            reloaded.ring().get(2).unwrap().bytes(),
            keys.ring().get(2).unwrap().bytes()
        );
        assert!(reloaded.ring().is_destroyed(SUBJECT_KEY_ID));
        let mut reloaded = reloaded;
        let error = reloaded.add_key(SUBJECT_KEY_ID).unwrap_err().to_string();
        assert!(error.contains("destroyed by an erasure"), "{error}");
        // Not even its wrapped form is left in the file; its id is listed as destroyed.
        let file: serde_json::Value =
            serde_json::from_slice(&std::fs::read(key_file_path(dir.path())).unwrap()).unwrap();
        assert!(
            file["keys"]
                .as_array()
                .unwrap()
                .iter()
                .all(|key| key["id"] != SUBJECT_KEY_ID)
        );
        assert_eq!(file["destroyed"], serde_json::json!([SUBJECT_KEY_ID]));

        let wrong = TenantKeys::load(&master(2), 7, dir.path()).unwrap_err();
        assert!(
            format!("{wrong:#}").contains("wrong master key"),
            "{wrong:#}"
        );
        let other_tenant = TenantKeys::load(&master(1), 8, dir.path()).unwrap_err();
        assert!(
            format!("{other_tenant:#}").contains("belongs to tenant 7"),
            "{other_tenant:#}"
        );
    }

    #[test]
    fn a_format_1_key_file_is_migrated_with_its_keys() {
        let dir = tempfile::tempdir().unwrap();
        let master = master(3);
        let key = DataKey::new(1, [9; 32]);
        let wrapped = wrap(
            &master.cipher(),
            &associated_data(WRAP_DOMAIN_V1, 4, 1),
            1,
            key.bytes(),
        )
        .unwrap();
        let v1 = serde_json::json!({
            "tenant": 4,
            "current": 1,
            "keys": [{"id": 1, "nonce": wrapped.nonce, "ciphertext": wrapped.ciphertext}],
        });
        std::fs::write(key_file_path(dir.path()), v1.to_string()).unwrap();
        let migrated = TenantKeys::load(&master, 4, dir.path()).unwrap();
        assert_eq!(migrated.ring().get(1).unwrap().bytes(), key.bytes());
        let text = std::fs::read_to_string(key_file_path(dir.path())).unwrap();
        assert!(text.contains("\"format\": 2"), "{text}");
        let again = TenantKeys::load(&master, 4, dir.path()).unwrap();
        assert_eq!(again.ring().get(1).unwrap().bytes(), key.bytes());
    }

    #[test]
    fn an_erased_tenant_keeps_no_key_and_loads_without_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut keys = TenantKeys::create(&master(1), 5, dir.path()).unwrap();
        keys.add_key(2).unwrap();
        keys.add_key(SUBJECT_KEY_ID).unwrap();
        keys.erase(42).unwrap();
        for id in [1, 2, SUBJECT_KEY_ID, SUBJECT_KEY_ID + 9] {
            assert!(keys.ring().get(id).is_none(), "key {id} is still readable");
            assert!(keys.ring().is_destroyed(id));
        }
        let error = keys.add_key(3).unwrap_err().to_string();
        assert!(error.contains("tenant 5 was erased"), "{error}");
        // Neither the KEK nor any wrapped key is left in the file.
        let text = std::fs::read_to_string(key_file_path(dir.path())).unwrap();
        let file: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(file.get("kek").is_none(), "{text}");
        assert_eq!(file["keys"], serde_json::json!([]));
        assert_eq!(file["destroyed"], serde_json::json!([1, 2, SUBJECT_KEY_ID]));
        assert_eq!(file["erased_at"], 42);
        // Loading needs no master key any more (any one will do) and stays erased.
        let reloaded = TenantKeys::load(&master(9), 5, dir.path()).unwrap();
        assert!(reloaded.is_erased());
        assert!(reloaded.ring().get(1).is_none());
        // A file without its KEK that does not say it was erased was altered.
        let mut altered = file.clone();
        altered.as_object_mut().unwrap().remove("erased_at");
        std::fs::write(key_file_path(dir.path()), altered.to_string()).unwrap();
        let error = TenantKeys::load(&master(1), 5, dir.path()).unwrap_err();
        assert!(
            format!("{error:#}").contains("has no key-encryption key"),
            "{error:#}"
        );
    }

    const SUBJECT_KEY_ID: u32 = kimberlite_kernel::SUBJECT_KEY_ID_FIRST;
}
