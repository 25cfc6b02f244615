//! `client.toml`: where a node is and how to trust it.
//!
//! `kimberlite start` writes `DATA/client.toml` (mode 0600: it holds the admin token)
//! on first start so a local CLI works with no flags. Remote clients copy it, or
//! write their own with the certificate fingerprint and a token of their tenant.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The name the server's self-signed certificate is issued for and clients ask for.
pub const SERVER_NAME_DEFAULT: &str = "localhost";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientConfig {
    /// `host:port` of the node's QUIC endpoint.
    pub address: String,
    /// The TLS server name to ask for.
    #[serde(default = "server_name_default")]
    pub server_name: String,
    /// SHA-256 of the server certificate (DER), hex: the pin clients trust instead of a CA.
    pub certificate_sha256: String,
    /// The node admin token; absent in configs handed to tenants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_token: Option<String>,
    /// Every replica of a cluster (`kimberlite cluster up` writes them): the client talks to
    /// the primary, follows it across view changes and retries a request whose answer was
    /// lost on another replica (the cluster executes it once). Empty for a single node, which
    /// is `address`/`certificate_sha256`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<ReplicaEndpoint>,
    /// Ed25519 public keys (hex) of the nodes whose signed tree heads this client believes
    /// (`DATA/node.pub`): what proofs are checked against.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_public_keys: Vec<String>,
}

/// Where one replica of a cluster takes clients, and the pin of its certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaEndpoint {
    pub address: String,
    pub certificate_sha256: String,
}

impl ClientConfig {
    /// The endpoints to try, in order: the replicas of a cluster, or the single node.
    pub fn endpoints(&self) -> Vec<ReplicaEndpoint> {
        if self.replicas.is_empty() {
            vec![ReplicaEndpoint {
                address: self.address.clone(),
                certificate_sha256: self.certificate_sha256.clone(),
            }]
        } else {
            self.replicas.clone()
        }
    }
}

fn server_name_default() -> String {
    SERVER_NAME_DEFAULT.to_string()
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "cannot read client config {path}: {source} (start a node with `kimberlite start`, or pass --config FILE / set KIMBERLITE_CONFIG)"
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("client config {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("cannot write client config {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl ClientConfig {
    pub fn load(path: &Path) -> Result<ClientConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config: ClientConfig = toml::from_str(&text).map_err(|error| ConfigError::Parse {
            path: path.to_path_buf(),
            message: error.to_string(),
        })?;
        let pins = std::iter::once(&config.certificate_sha256).chain(
            config
                .replicas
                .iter()
                .map(|replica| &replica.certificate_sha256),
        );
        for key in &config.node_public_keys {
            if hex::decode(key).map(|bytes| bytes.len()) != Ok(32) {
                return Err(ConfigError::Parse {
                    path: path.to_path_buf(),
                    message: format!("node_public_keys must be 64 hex digits each, not `{key}`"),
                });
            }
        }
        for pin in pins {
            if hex::decode(pin).map(|bytes| bytes.len()) != Ok(32) {
                return Err(ConfigError::Parse {
                    path: path.to_path_buf(),
                    message: format!("certificate_sha256 must be 64 hex digits, not `{pin}`"),
                });
            }
        }
        Ok(config)
    }

    /// Writes the config readable by its owner only (it may hold the admin token).
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        let write_error = |source| ConfigError::Write {
            path: path.to_path_buf(),
            source,
        };
        let text = toml::to_string_pretty(self).expect("a config always serializes");
        let temporary = path.with_extension("toml.tmp");
        {
            use std::io::Write;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(&temporary).map_err(write_error)?;
            file.write_all(text.as_bytes()).map_err(write_error)?;
            file.sync_all().map_err(write_error)?;
        }
        std::fs::rename(&temporary, path).map_err(write_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trips_and_rejects_a_bad_fingerprint() {
        let directory = std::env::temp_dir().join(format!("kb-config-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let path = directory.join("client.toml");
        let config = ClientConfig {
            address: "127.0.0.1:7878".into(),
            server_name: SERVER_NAME_DEFAULT.into(),
            certificate_sha256: "ab".repeat(32),
            admin_token: Some("kbt_x".into()),
            replicas: Vec::new(),
            node_public_keys: vec!["cd".repeat(32)],
        };
        config.save(&path).unwrap();
        assert_eq!(ClientConfig::load(&path).unwrap(), config);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "address = \"x:1\"\ncertificate_sha256 = \"abc\"\n").unwrap();
        let error = ClientConfig::load(&path).unwrap_err().to_string();
        assert!(error.contains("64 hex digits"), "{error}");
        std::fs::remove_dir_all(&directory).unwrap();
    }
}
