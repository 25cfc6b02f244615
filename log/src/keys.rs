//! Data keys (encrypt payloads) and the node key (signs checkpoints).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use ed25519_dalek::{SigningKey, VerifyingKey};
use rand::RngCore;
use rand::rngs::OsRng;
use zeroize::Zeroize;

use crate::error::LogError;

/// Size of a data key: AES-256.
pub const DATA_KEY_BYTES: usize = 32;

/// File holding the node's raw 32-byte Ed25519 secret key, mode 0600.
pub const NODE_KEY_FILE: &str = "node.key";
/// File holding the node's public key as 64 lowercase hex digits and a newline.
pub const NODE_PUBLIC_KEY_FILE: &str = "node.pub";

/// A 256-bit data key and its id. The id is stored in every record it encrypts.
/// The key bytes are wiped from memory when the key is dropped and never printed.
#[derive(Clone)]
pub struct DataKey {
    id: u32,
    bytes: [u8; DATA_KEY_BYTES],
}

impl DataKey {
    pub fn new(id: u32, bytes: [u8; DATA_KEY_BYTES]) -> DataKey {
        DataKey { id, bytes }
    }

    /// A fresh key from the operating system's CSPRNG.
    pub fn generate(id: u32) -> DataKey {
        let mut bytes = [0; DATA_KEY_BYTES];
        OsRng.fill_bytes(&mut bytes);
        DataKey { id, bytes }
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    pub fn bytes(&self) -> &[u8; DATA_KEY_BYTES] {
        &self.bytes
    }
}

impl Drop for DataKey {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKey")
            .field("id", &self.id)
            .field("bytes", &"<redacted>")
            .finish()
    }
}

/// Where a ring finds a key it does not hold: a cluster derives its data keys from a shared
/// secret instead of storing them. `None`: no such key.
pub type DeriveKey = Arc<dyn Fn(u32) -> Option<DataKey> + Send + Sync>;

/// The data keys a partition can read (and append) with, by id. Which key encrypts a new
/// record is the writer's choice (`NewRecord::key_id`).
#[derive(Clone, Default)]
pub struct KeyRing {
    keys: BTreeMap<u32, DataKey>,
    derive: Option<DeriveKey>,
    /// Ids of keys destroyed on purpose: records under them read as erased, not as errors.
    destroyed: BTreeSet<u32>,
    /// Every key is destroyed (an erased tenant): every record reads as erased.
    shredded: bool,
}

impl KeyRing {
    /// A ring holding one key.
    pub fn new(key: DataKey) -> KeyRing {
        let mut ring = KeyRing::empty();
        ring.add(key);
        ring
    }

    pub fn empty() -> KeyRing {
        KeyRing::default()
    }

    /// A ring that derives every key it is asked for with `derive` (stored keys first).
    pub fn derived(derive: DeriveKey) -> KeyRing {
        KeyRing {
            keys: BTreeMap::new(),
            derive: Some(derive),
            destroyed: BTreeSet::new(),
            shredded: false,
        }
    }

    /// A ring whose every key is destroyed (an erased tenant): every record reads as erased,
    /// and nothing can be appended.
    pub fn shredded() -> KeyRing {
        KeyRing {
            shredded: true,
            ..KeyRing::default()
        }
    }

    /// Adds a key. A key with the same id is replaced.
    pub fn add(&mut self, key: DataKey) {
        self.keys.insert(key.id(), key);
    }

    /// Forgets a key: records under it no longer decrypt (`KeyUnavailable`).
    pub fn remove(&mut self, id: u32) {
        self.keys.remove(&id);
    }

    /// Destroys a key (crypto-shredding): forgotten, and records under it read as erased.
    pub fn destroy(&mut self, id: u32) {
        self.keys.remove(&id);
        self.destroyed.insert(id);
    }

    pub fn is_destroyed(&self, id: u32) -> bool {
        self.shredded || self.destroyed.contains(&id)
    }

    pub fn get(&self, id: u32) -> Option<DataKey> {
        if self.is_destroyed(id) {
            return None;
        }
        match self.keys.get(&id) {
            Some(key) => Some(key.clone()),
            None => self.derive.as_ref().and_then(|derive| derive(id)),
        }
    }

    /// Ids of every key in the ring, ascending.
    pub fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.keys.keys().copied()
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("ids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The node's Ed25519 signing key. Checkpoints are signed with it.
///
/// On disk, in the directory given to [`NodeKey::load_or_create`]:
/// - `node.key`: the raw 32-byte secret key, file mode 0600;
/// - `node.pub`: the public key as 64 lowercase hex digits followed by a newline,
///   for auditors and `kimberlite verify` (derived from `node.key`; rewritten if missing).
pub struct NodeKey {
    signing: SigningKey,
}

impl NodeKey {
    pub fn load_or_create(dir: &Path) -> Result<NodeKey, LogError> {
        fs::create_dir_all(dir).map_err(|source| LogError::io(dir, "create directory", source))?;
        let key_path = dir.join(NODE_KEY_FILE);
        let signing = match fs::read(&key_path) {
            Ok(mut bytes) => {
                let secret: Result<[u8; 32], _> = bytes.as_slice().try_into();
                let length = bytes.len();
                bytes.zeroize();
                let Ok(mut secret) = secret else {
                    return Err(LogError::NodeKey {
                        path: key_path,
                        reason: format!(
                            "is {length} bytes, expected a raw 32-byte Ed25519 secret key; restore \
                             the original file (removing it creates a new node identity, and old \
                             checkpoints then verify only against the old node.pub)"
                        ),
                    });
                };
                let signing = SigningKey::from_bytes(&secret);
                secret.zeroize();
                warn_if_readable_by_others(&key_path);
                signing
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                let signing = SigningKey::generate(&mut OsRng);
                write_new_file(dir, NODE_KEY_FILE, signing.as_bytes(), 0o600)?;
                tracing::info!(path = %key_path.display(), "created a new node key");
                signing
            }
            Err(error) => {
                return Err(LogError::NodeKey {
                    path: key_path,
                    reason: format!("cannot be read ({error}); check its owner and permissions"),
                });
            }
        };
        let node_key = NodeKey { signing };
        let public_hex = format!("{}\n", hex::encode(node_key.public_key().as_bytes()));
        let public_path = dir.join(NODE_PUBLIC_KEY_FILE);
        if fs::read_to_string(&public_path).ok().as_deref() != Some(public_hex.as_str()) {
            write_new_file(dir, NODE_PUBLIC_KEY_FILE, public_hex.as_bytes(), 0o644)?;
        }
        Ok(node_key)
    }

    pub fn public_key(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    pub fn load_public_key(dir: &Path) -> Result<VerifyingKey, LogError> {
        let path = dir.join(NODE_PUBLIC_KEY_FILE);
        let text = fs::read_to_string(&path).map_err(|error| LogError::NodeKey {
            path: path.clone(),
            reason: format!("cannot be read ({error}); it is written when the node first starts"),
        })?;
        let bad = |why: &str| LogError::NodeKey {
            path: path.clone(),
            reason: format!("{why}; expected 64 hex digits of an Ed25519 public key"),
        };
        let bytes = hex::decode(text.trim()).map_err(|_| bad("is not hex"))?;
        let bytes: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| bad("has the wrong length"))?;
        VerifyingKey::from_bytes(&bytes).map_err(|_| bad("is not a valid curve point"))
    }

    /// A node key from fixed secret bytes, for deterministic tests.
    #[cfg(test)]
    pub(crate) fn from_secret(secret: [u8; 32]) -> NodeKey {
        NodeKey {
            signing: SigningKey::from_bytes(&secret),
        }
    }

    pub(crate) fn sign(&self, message: &[u8]) -> [u8; 64] {
        use ed25519_dalek::Signer;
        self.signing.sign(message).to_bytes()
    }
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeKey")
            .field("public", &hex::encode(self.public_key().as_bytes()))
            .finish_non_exhaustive()
    }
}

/// Writes `name` in `dir` atomically (temporary file, fsync, rename, fsync of the directory),
/// so a crash leaves either no file or the whole file.
fn write_new_file(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> Result<(), LogError> {
    let target = dir.join(name);
    let temporary = dir.join(format!("{name}.tmp"));
    let write = || -> io::Result<()> {
        let _ = fs::remove_file(&temporary);
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temporary, &target)?;
        fs::File::open(dir)?.sync_all()
    };
    write().map_err(|source| LogError::io(&target, "write", source))
}

fn warn_if_readable_by_others(path: &Path) {
    if let Ok(metadata) = fs::metadata(path)
        && metadata.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{:o}", metadata.permissions().mode() & 0o777),
            "the node key is readable by other users; run chmod 600 on it"
        );
    }
}
