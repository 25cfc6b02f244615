//! The node's TLS identity: a self-signed certificate made on first start.

use crate::files::write_atomic;
use anyhow::Context;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::path::Path;

/// Names the self-signed certificate is valid for (clients pin the fingerprint anyway).
const CERTIFICATE_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

#[derive(Debug)]
pub struct TlsIdentity {
    pub certificate: CertificateDer<'static>,
    pub private_key: PrivatePkcs8KeyDer<'static>,
}

impl TlsIdentity {
    /// Loads `DIR/tls/{cert,key}.der`, creating them on first start.
    pub fn load_or_create(data_dir: &Path) -> anyhow::Result<TlsIdentity> {
        let directory = data_dir.join("tls");
        let certificate_path = directory.join("cert.der");
        let key_path = directory.join("key.der");
        if !certificate_path.exists() {
            std::fs::create_dir_all(&directory)
                .with_context(|| format!("cannot create {}", directory.display()))?;
            let names: Vec<String> = CERTIFICATE_NAMES
                .iter()
                .map(|name| name.to_string())
                .collect();
            let generated = rcgen::generate_simple_self_signed(names)
                .context("cannot generate the node's self-signed certificate")?;
            write_atomic(&key_path, &generated.signing_key.serialize_der(), true)
                .with_context(|| format!("cannot write {}", key_path.display()))?;
            write_atomic(&certificate_path, generated.cert.der(), false)
                .with_context(|| format!("cannot write {}", certificate_path.display()))?;
            tracing::info!(path = %certificate_path.display(), "created a self-signed TLS certificate");
        }
        let certificate = std::fs::read(&certificate_path)
            .with_context(|| format!("cannot read {}", certificate_path.display()))?;
        let private_key = std::fs::read(&key_path)
            .with_context(|| format!("cannot read {}", key_path.display()))?;
        Ok(TlsIdentity {
            certificate: CertificateDer::from(certificate),
            private_key: PrivatePkcs8KeyDer::from(private_key),
        })
    }

    pub fn fingerprint(&self) -> String {
        kimberlite_client::tls::certificate_fingerprint(&self.certificate)
    }

    /// A QUIC server configuration speaking TLS 1.3 with ALPN `kimberlite/1` only.
    pub fn quic_server_config(&self) -> anyhow::Result<quinn::ServerConfig> {
        let provider = kimberlite_client::tls::crypto_provider();
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .context("TLS 1.3 is not available")?
            .with_no_client_auth()
            .with_single_cert(
                vec![self.certificate.clone()],
                PrivateKeyDer::Pkcs8(self.private_key.clone_key()),
            )
            .context("the node's TLS key does not match its certificate")?;
        tls.alpn_protocols = vec![kimberlite_client::protocol::ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
            .context("cannot build the QUIC TLS configuration")?;
        let mut config = quinn::ServerConfig::with_crypto(std::sync::Arc::new(crypto));
        config.transport_config(std::sync::Arc::new(kimberlite_client::transport_config()));
        Ok(config)
    }
}
