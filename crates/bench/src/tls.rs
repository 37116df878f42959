//! TLS for the load generators: a rustls client (ring) trusting the CA the hub, Mosquitto and the
//! echo server were given.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// Why a client TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientTlsError {
    #[error("cannot read the CA file {path}: {source}")]
    Ca {
        path: String,
        source: rustls::pki_types::pem::Error,
    },
    #[error("the CA file {path} holds an unusable certificate: {source}")]
    Certificate { path: String, source: rustls::Error },
    #[error("cannot build the TLS client configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// A client configuration trusting only the certificates in `ca_pem`.
pub fn client_config(
    ca_pem: &Path,
    alpn: &[&[u8]],
) -> Result<rustls::ClientConfig, ClientTlsError> {
    let path = ca_pem.display().to_string();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem).map_err(|source| ClientTlsError::Ca {
        path: path.clone(),
        source,
    })? {
        let cert = cert.map_err(|source| ClientTlsError::Ca {
            path: path.clone(),
            source,
        })?;
        roots
            .add(cert)
            .map_err(|source| ClientTlsError::Certificate {
                path: path.clone(),
                source,
            })?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}
