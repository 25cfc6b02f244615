//! Mutual TLS between replicas, trusting nothing but the certificates the cluster pins.
//!
//! Each replica has its own self-signed certificate; the cluster configuration lists the SHA-256
//! fingerprint of every replica's certificate, by index. A replica dialing replica `i` accepts
//! only the certificate pinned for `i`; a replica accepting a connection demands a client
//! certificate and accepts only one pinned for another replica of the cluster. Handshake
//! signatures are still verified, so a peer must hold the private key of the certificate it
//! shows. No CA, no names, no expiry: the pin is the identity (as `client.toml` does for clients).

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use sha2::{Digest, Sha256};

/// ALPN of the replica protocol, distinct from the client protocol's `kimberlite/1`: a client
/// that dials a replica port (or a replica a client port) fails the handshake instead of
/// speaking the wrong protocol.
pub const alpn: &[u8] = b"kimberlite-vsr/1";

/// SHA-256 of a DER certificate: what the cluster configuration pins per replica.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CertificateFingerprint(pub [u8; 32]);

impl CertificateFingerprint {
    pub fn of(certificate_der: &[u8]) -> CertificateFingerprint {
        CertificateFingerprint(Sha256::digest(certificate_der).into())
    }

    /// Parse 64 hex digits (case-insensitive; `:` separators allowed, as tools print them).
    pub fn from_hex(text: &str) -> Result<CertificateFingerprint, String> {
        let digits: String = text.chars().filter(|c| *c != ':').collect();
        let bytes = hex::decode(digits.trim())
            .map_err(|error| format!("certificate fingerprint {text:?} is not hex: {error}"))?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|bytes: Vec<u8>| {
            format!(
                "certificate fingerprint {text:?} has {} bytes; a SHA-256 fingerprint has 32",
                bytes.len()
            )
        })?;
        Ok(CertificateFingerprint(bytes))
    }
}

impl fmt::Display for CertificateFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for CertificateFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CertificateFingerprint({self})")
    }
}

/// A replica's TLS identity: its self-signed certificate and PKCS#8 private key, both DER.
#[derive(Clone)]
pub struct ReplicaIdentity {
    pub certificate_der: Vec<u8>,
    pub private_key_der: Vec<u8>,
}

impl ReplicaIdentity {
    pub fn fingerprint(&self) -> CertificateFingerprint {
        CertificateFingerprint::of(&self.certificate_der)
    }

    fn certificate(&self) -> CertificateDer<'static> {
        CertificateDer::from(self.certificate_der.clone())
    }

    fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.private_key_der.clone()))
    }
}

impl fmt::Debug for ReplicaIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the private key.
        write!(f, "ReplicaIdentity({})", self.fingerprint())
    }
}

/// The crypto provider of every Kimberlite endpoint (ring).
pub(crate) fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Server side: demand a client certificate pinned for one of `peers` (index, fingerprint).
pub(crate) fn server_config(
    identity: &ReplicaIdentity,
    peers: Vec<(u8, CertificateFingerprint)>,
) -> Result<rustls::ServerConfig, String> {
    let provider = crypto_provider();
    let verifier = PinnedReplicas {
        peers,
        provider: provider.clone(),
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|error| format!("TLS 1.3 is not available: {error}"))?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(vec![identity.certificate()], identity.private_key())
        .map_err(|error| {
            format!("this replica's private key does not match its certificate: {error}")
        })?;
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}

/// Client side, for dialing `replica` at `address`: accept only its pinned certificate and
/// present our own.
pub(crate) fn client_config(
    identity: &ReplicaIdentity,
    replica: u8,
    address: SocketAddr,
    pinned: CertificateFingerprint,
) -> Result<rustls::ClientConfig, String> {
    let provider = crypto_provider();
    let verifier = PinnedReplica {
        replica,
        address,
        pinned,
        provider: provider.clone(),
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|error| format!("TLS 1.3 is not available: {error}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(vec![identity.certificate()], identity.private_key())
        .map_err(|error| {
            format!("this replica's private key does not match its certificate: {error}")
        })?;
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}

/// Verifies the certificate of the one replica we dial.
#[derive(Debug)]
struct PinnedReplica {
    replica: u8,
    address: SocketAddr,
    pinned: CertificateFingerprint,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedReplica {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = CertificateFingerprint::of(end_entity);
        if presented == self.pinned {
            return Ok(ServerCertVerified::assertion());
        }
        Err(rustls::Error::General(format!(
            "replica {} at {} presented certificate sha256 {presented}, the cluster \
             configuration pins {} for it: wrong address, or its certificate changed (update the \
             cluster configuration on every replica)",
            self.replica, self.address, self.pinned
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            certificate,
            signature,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            certificate,
            signature,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Verifies the client certificate of a replica dialing us.
#[derive(Debug)]
struct PinnedReplicas {
    peers: Vec<(u8, CertificateFingerprint)>,
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for PinnedReplicas {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let presented = CertificateFingerprint::of(end_entity);
        if self.peers.iter().any(|(_, pinned)| *pinned == presented) {
            return Ok(ClientCertVerified::assertion());
        }
        let pinned: Vec<String> = self
            .peers
            .iter()
            .map(|(replica, pinned)| format!("replica {replica}: {pinned}"))
            .collect();
        Err(rustls::Error::General(format!(
            "a peer presented client certificate sha256 {presented}, which the cluster \
             configuration does not pin for any other replica ({}): not a replica of this \
             cluster, or its certificate changed",
            pinned.join(", ")
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            certificate,
            signature,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            certificate,
            signature,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
