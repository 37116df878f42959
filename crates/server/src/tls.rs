//! TLS for the device and service endpoints: a local CA with a server certificate it signs (or
//! certificate files the operator provides), the rustls server configuration, and certificate
//! thumbprints as IoT Hub computes them.
//!
//! Azure's device SDKs fix the constraints: the Python device SDK speaks only TLS 1.2 and checks
//! the hostname, and clients trust the hub through a CA given as a PEM file. Devices that
//! authenticate with self-signed certificates are authorised by thumbprint after the handshake,
//! so the handshake accepts any client certificate whose handshake signature verifies.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName as TlsDistinguishedName, SignatureScheme};
use sha1::Sha1;
use sha2::{Digest, Sha256};

const CA_CERT_FILE: &str = "ca.pem";
const CA_KEY_FILE: &str = "ca-key.pem";
const SERVER_CERT_FILE: &str = "server.pem";
const SERVER_KEY_FILE: &str = "server-key.pem";

/// The CA's subject. Leaves name their issuer by this exact value, so it must never change:
/// the CA is rebuilt as an issuer from these constants and its key on every start.
const CA_COMMON_NAME: &str = "twinhub local CA";
const CA_ORGANIZATION: &str = "twinhub";

const DAY_SECS: u64 = 24 * 60 * 60;
/// Long enough that clients trusting ca.pem are not forced to re-trust a new CA in practice.
const CA_VALIDITY: Duration = Duration::from_secs(20 * 365 * DAY_SECS);
/// Server certificates are cheap to reissue from the CA; one year keeps them short-lived.
const SERVER_VALIDITY: Duration = Duration::from_secs(365 * DAY_SECS);
/// A server certificate expiring within this window is replaced at start.
const RENEWAL_WINDOW: Duration = Duration::from_secs(30 * DAY_SECS);
const CLIENT_CERT_VALIDITY: Duration = Duration::from_secs(365 * DAY_SECS);
/// About the year 5000; certificate dates stay far below the year-9999 limit of X.509 times.
const LATEST_PLAUSIBLE_CLOCK: Duration = Duration::from_secs(3030 * 365 * DAY_SECS);
/// Certificates start being valid a little in the past so clients with a slow clock accept them.
const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(60 * 60);

/// Why certificates could not be loaded, created or turned into a TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be read.
    #[error("cannot read {}: {source}; check that the file exists and is readable", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O failure.
        #[source]
        source: io::Error,
    },
    /// A generated certificate or key could not be written.
    #[error("cannot write {}: {source}; check that the data directory is writable", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The I/O failure.
        #[source]
        source: io::Error,
    },
    /// A file is not valid PEM.
    #[error("{} is not a valid PEM file: {source}; replace it with a PEM-encoded file", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// The PEM parse failure.
        #[source]
        source: pem::Error,
    },
    /// A certificate file holds no certificate.
    #[error("{} contains no certificate (expected a '-----BEGIN CERTIFICATE-----' block)", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A certificate file holds a certificate that cannot be parsed.
    #[error("{} holds a certificate that cannot be parsed: {source}; replace it with a valid X.509 certificate", path.display())]
    InvalidCertificate {
        /// The file.
        path: PathBuf,
        /// Why rustls rejected it.
        #[source]
        source: rustls::Error,
    },
    /// A key file holds no private key.
    #[error("{} contains no private key (expected a '-----BEGIN ... PRIVATE KEY-----' block)", path.display())]
    NoPrivateKey {
        /// The file.
        path: PathBuf,
    },
    /// A key file holds a private key rustls cannot sign with.
    #[error("{} holds a private key that cannot be used for TLS: {source}; use an RSA, ECDSA or Ed25519 key", path.display())]
    UnusableKey {
        /// The file.
        path: PathBuf,
        /// Why rustls rejected it.
        #[source]
        source: rustls::Error,
    },
    /// The private key does not belong to the certificate.
    #[error("the private key in {} does not belong to the certificate in {}; provide the key that was issued with the certificate", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The CA's private key could not be loaded.
    #[error("cannot load the CA key in {}: {source}; restore it, or delete {} and it to create a new CA (clients must then trust the new CA)", path.display(), CA_CERT_FILE)]
    CaKey {
        /// The CA key file.
        path: PathBuf,
        /// Why it could not be loaded.
        #[source]
        source: rcgen::Error,
    },
    /// One of the CA's two files exists without the other.
    #[error("{} exists but {} does not; restore the missing file, or delete both to create a new CA (clients must then trust the new CA)", present.display(), missing.display())]
    CaIncomplete {
        /// The file that exists.
        present: PathBuf,
        /// The file that is missing.
        missing: PathBuf,
    },
    /// A certificate issued with the CA key does not verify against the CA certificate.
    #[error("the CA certificate {} and key {} do not belong together or were not made by twinhub ({reason}); restore them, or delete both to create a new CA", cert.display(), key.display())]
    CaMismatch {
        /// The CA certificate file.
        cert: PathBuf,
        /// The CA key file.
        key: PathBuf,
        /// What the verification reported.
        reason: String,
    },
    /// The hostname cannot be put in a certificate.
    #[error(
        "'{hostname}' is not a valid DNS name or IP address for the server certificate; set the hostname to the name clients connect to"
    )]
    InvalidHostname {
        /// The rejected hostname.
        hostname: String,
    },
    /// Certificate generation failed.
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls rejected the configuration.
    #[error("cannot build the TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The server's certificate chain and key, and the CA clients should trust when twinhub made it.
pub struct Pki {
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    ca_pem_path: Option<PathBuf>,
}

impl fmt::Debug for Pki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The private key is deliberately left out.
        f.debug_struct("Pki")
            .field("cert_chain_len", &self.cert_chain.len())
            .field("ca_pem_path", &self.ca_pem_path)
            .finish_non_exhaustive()
    }
}

impl Pki {
    /// Loads the server certificate, creating a local CA and a server certificate on first start.
    ///
    /// First start creates `data_dir/ca.pem` and `data_dir/ca-key.pem` (key mode 0600) and a server
    /// certificate signed by that CA (`data_dir/server.pem`, chain leaf + CA, and
    /// `data_dir/server-key.pem`) naming `hostname`, `localhost`, 127.0.0.1 and ::1. Later starts reuse
    /// them; a server certificate that lacks one of those names, expires within 30 days, or no
    /// longer matches the CA or its key is reissued from the same CA. With
    /// `provided = Some((cert_chain_pem, key_pem))` those files are used and no CA is created.
    pub fn load_or_create(
        data_dir: &Path,
        hostname: &str,
        provided: Option<(&Path, &Path)>,
    ) -> Result<Pki, TlsError> {
        let provider = ring_provider();
        if let Some((cert_path, key_path)) = provided {
            let cert_chain = read_cert_chain(cert_path)?;
            let key = read_private_key(key_path)?;
            check_key_matches(&cert_chain, &key, cert_path, key_path, &provider)?;
            return Ok(Pki {
                cert_chain,
                key,
                ca_pem_path: None,
            });
        }
        let names = server_names(hostname)?;
        fs::create_dir_all(data_dir).map_err(|source| TlsError::Write {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let ca = LocalCa::load_or_create(data_dir)?;
        let cert_path = data_dir.join(SERVER_CERT_FILE);
        let key_path = data_dir.join(SERVER_KEY_FILE);
        let now = SystemTime::now();
        let renewal_deadline = now + RENEWAL_WINDOW;
        match existing_server_cert(&cert_path, &key_path) {
            Some((cert_chain, key)) => {
                match ca.check_server_cert(&cert_chain, &key, &names, renewal_deadline, &provider) {
                    Ok(()) => {
                        return Ok(Pki {
                            cert_chain,
                            key,
                            ca_pem_path: Some(ca.cert_path),
                        });
                    }
                    Err(reason) => tracing::info!(
                        path = %cert_path.display(),
                        %reason,
                        "issuing a new server certificate"
                    ),
                }
            }
            None => tracing::info!(path = %cert_path.display(), "issuing a server certificate"),
        }
        let issued = ca.issue_server_cert(hostname, &names, now, SERVER_VALIDITY)?;
        let cert_chain = vec![issued.leaf_der, ca.cert_der.clone()];
        ca.check_server_cert(&cert_chain, &issued.key, &names, now, &provider)
            .map_err(|reason| TlsError::CaMismatch {
                cert: ca.cert_path.clone(),
                key: ca.key_path.clone(),
                reason,
            })?;
        write_file(&key_path, issued.key_pem.as_bytes(), FileMode::Private)?;
        write_file(
            &cert_path,
            format!("{}{}", issued.leaf_pem, ca.cert_pem).as_bytes(),
            FileMode::Public,
        )?;
        Ok(Pki {
            cert_chain,
            key: issued.key,
            ca_pem_path: Some(ca.cert_path),
        })
    }

    /// The CA certificate clients should trust, when twinhub created it (`None` for provided files).
    pub fn ca_pem_path(&self) -> Option<&Path> {
        self.ca_pem_path.as_deref()
    }

    /// A server configuration offering TLS 1.2 and 1.3 with the given ALPN protocols and optional
    /// client certificates (any chain is accepted; its handshake signature is verified).
    pub fn server_config(&self, alpn: &[&[u8]]) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let provider = ring_provider();
        let client_verifier = Arc::new(AnyClientCertificate {
            algorithms: provider.signature_verification_algorithms,
        });
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(self.cert_chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

/// Thumbprints of a DER certificate as IoT Hub computes them: (SHA-1, SHA-256), uppercase hex.
pub fn thumbprints(der: &[u8]) -> (String, String) {
    (
        upper_hex(&Sha1::digest(der)),
        upper_hex(&Sha256::digest(der)),
    )
}

/// Issues a self-signed client certificate with CN = `common_name`; returns (cert PEM, key PEM).
pub fn self_signed_client_cert(common_name: &str) -> Result<(String, String), TlsError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    set_validity(&mut params, SystemTime::now(), CLIENT_CERT_VALIDITY);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn ring_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn upper_hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut hex, byte| {
            // Writing to a String cannot fail.
            let _ = write!(hex, "{byte:02X}");
            hex
        })
}

/// Sets `not_before` slightly before `now` and `not_after` = `now + validity`.
fn set_validity(params: &mut CertificateParams, now: SystemTime, validity: Duration) {
    // Clamped so that date arithmetic cannot overflow on an absurd system clock.
    let since_epoch = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .min(LATEST_PLAUSIBLE_CLOCK);
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + since_epoch.saturating_sub(CLOCK_SKEW_ALLOWANCE);
    params.not_after = epoch + since_epoch + validity;
}

/// The names a generated server certificate must carry: the hostname, then the loopback names.
fn server_names(hostname: &str) -> Result<Vec<ServerName<'static>>, TlsError> {
    let invalid = || TlsError::InvalidHostname {
        hostname: hostname.to_owned(),
    };
    let requested = ServerName::try_from(hostname)
        .map_err(|_| invalid())?
        .to_owned();
    let mut names = vec![requested];
    for name in [
        ServerName::try_from("localhost").map_err(|_| invalid())?,
        ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into()),
        ServerName::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST).into()),
    ] {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    Ok(names)
}

fn subject_alt_name(name: &ServerName<'_>) -> Result<SanType, TlsError> {
    match name {
        ServerName::IpAddress(ip) => Ok(SanType::IpAddress(IpAddr::from(*ip))),
        ServerName::DnsName(dns) => Ok(SanType::DnsName(dns.as_ref().try_into()?)),
        other => Err(TlsError::InvalidHostname {
            hostname: format!("{other:?}"),
        }),
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn read_cert_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let contents = read_file(path)?;
    let chain = CertificateDer::pem_slice_iter(&contents)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            path: path.to_path_buf(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(chain)
}

fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let contents = read_file(path)?;
    PrivateKeyDer::from_pem_slice(&contents).map_err(|error| match error {
        pem::Error::NoItemsFound => TlsError::NoPrivateKey {
            path: path.to_path_buf(),
        },
        source => TlsError::Pem {
            path: path.to_path_buf(),
            source,
        },
    })
}

fn check_key_matches(
    cert_chain: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<(), TlsError> {
    let signing_key = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|source| TlsError::UnusableKey {
            path: key_path.to_path_buf(),
            source,
        })?;
    match CertifiedKey::new(cert_chain.to_vec(), signing_key).keys_match() {
        // Some key types cannot report their public key; rustls then checks at first use.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(()),
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::KeyMismatch {
            cert: cert_path.to_path_buf(),
            key: key_path.to_path_buf(),
        }),
        Err(source) => Err(TlsError::InvalidCertificate {
            path: cert_path.to_path_buf(),
            source,
        }),
    }
}

/// The previously issued server chain and key, or `None` when they are missing or unreadable
/// (they are derived from the CA, so they are simply issued again).
fn existing_server_cert(
    cert_path: &Path,
    key_path: &Path,
) -> Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let loaded =
        read_cert_chain(cert_path).and_then(|chain| Ok((chain, read_private_key(key_path)?)));
    match loaded {
        Ok(pair) => Some(pair),
        Err(TlsError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => None,
        Err(error) => {
            tracing::warn!(%error, "discarding the unusable server certificate");
            None
        }
    }
}

/// twinhub's own CA, kept in the data directory.
struct LocalCa {
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    key: KeyPair,
    cert_path: PathBuf,
    key_path: PathBuf,
}

/// A freshly issued server leaf certificate and its key.
struct IssuedServerCert {
    leaf_der: CertificateDer<'static>,
    leaf_pem: String,
    key: PrivateKeyDer<'static>,
    key_pem: String,
}

impl LocalCa {
    fn load_or_create(data_dir: &Path) -> Result<LocalCa, TlsError> {
        let cert_path = data_dir.join(CA_CERT_FILE);
        let key_path = data_dir.join(CA_KEY_FILE);
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => Self::load(cert_path, key_path),
            (false, false) => Self::create(cert_path, key_path),
            (true, false) => Err(TlsError::CaIncomplete {
                present: cert_path,
                missing: key_path,
            }),
            (false, true) => Err(TlsError::CaIncomplete {
                present: key_path,
                missing: cert_path,
            }),
        }
    }

    fn load(cert_path: PathBuf, key_path: PathBuf) -> Result<LocalCa, TlsError> {
        let mut chain = read_cert_chain(&cert_path)?;
        let cert_der = chain.swap_remove(0);
        let cert_pem = pem_encode_certificate(&cert_der);
        let key_bytes = read_file(&key_path)?;
        let key = std::str::from_utf8(&key_bytes)
            .map_err(|_| rcgen::Error::CouldNotParseKeyPair)
            .and_then(KeyPair::from_pem)
            .map_err(|source| TlsError::CaKey {
                path: key_path.clone(),
                source,
            })?;
        Ok(LocalCa {
            cert_der,
            cert_pem,
            key,
            cert_path,
            key_path,
        })
    }

    fn create(cert_path: PathBuf, key_path: PathBuf) -> Result<LocalCa, TlsError> {
        tracing::info!(path = %cert_path.display(), "creating a local certificate authority");
        let key = KeyPair::generate()?;
        let mut params = Self::params();
        set_validity(&mut params, SystemTime::now(), CA_VALIDITY);
        let cert = params.self_signed(&key)?;
        write_file(&key_path, key.serialize_pem().as_bytes(), FileMode::Private)?;
        write_file(&cert_path, cert.pem().as_bytes(), FileMode::Public)?;
        Ok(LocalCa {
            cert_der: cert.der().clone(),
            cert_pem: cert.pem(),
            key,
            cert_path,
            key_path,
        })
    }

    /// The CA's parameters without validity; also what a loaded CA signs with, so issued
    /// certificates name it as issuer exactly as its certificate names itself.
    fn params() -> CertificateParams {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, CA_ORGANIZATION);
        params
            .distinguished_name
            .push(DnType::CommonName, CA_COMMON_NAME);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params
    }

    fn issue_server_cert(
        &self,
        hostname: &str,
        names: &[ServerName<'static>],
        now: SystemTime,
        validity: Duration,
    ) -> Result<IssuedServerCert, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        // Clients match SANs only; the CN is for people and X.509 caps it at 64 characters.
        let common_name = if hostname.len() <= 64 {
            hostname
        } else {
            "twinhub server"
        };
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.subject_alt_names = names
            .iter()
            .map(subject_alt_name)
            .collect::<Result<_, _>>()?;
        set_validity(&mut params, now, validity);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        // Strict verifiers (Python 3.13+ default) require the authority key identifier.
        params.use_authority_key_identifier_extension = true;
        let issuer = Issuer::new(Self::params(), &self.key);
        let leaf = params.signed_by(&key, &issuer)?;
        let key_der = key.serialize_der();
        Ok(IssuedServerCert {
            leaf_der: leaf.der().clone(),
            leaf_pem: leaf.pem(),
            key: PrivateKeyDer::Pkcs8(key_der.into()),
            key_pem: key.serialize_pem(),
        })
    }

    /// Checks that `cert_chain` is (leaf, this CA), that `key` belongs to the leaf, and that the
    /// leaf verifies for every name at `at`; the error says what failed.
    fn check_server_cert(
        &self,
        cert_chain: &[CertificateDer<'static>],
        key: &PrivateKeyDer<'static>,
        names: &[ServerName<'static>],
        at: SystemTime,
        provider: &Arc<CryptoProvider>,
    ) -> Result<(), String> {
        let [leaf, chained_ca] = cert_chain else {
            return Err("the chain is not exactly leaf + CA".to_owned());
        };
        if *chained_ca != self.cert_der {
            return Err("the chain does not end in the current CA".to_owned());
        }
        let signing_key = provider
            .key_provider
            .load_private_key(key.clone_key())
            .map_err(|error| format!("the key is unusable: {error}"))?;
        CertifiedKey::new(cert_chain.to_vec(), signing_key)
            .keys_match()
            .map_err(|error| format!("the key does not match the certificate: {error}"))?;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.cert_der.clone())
            .map_err(|error| format!("the CA certificate is invalid: {error}"))?;
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|error| format!("cannot build a verifier: {error}"))?;
        let at = UnixTime::since_unix_epoch(
            at.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or(Duration::ZERO),
        );
        for name in names {
            verifier
                .verify_server_cert(leaf, &[], name, &[], at)
                .map_err(|error| format!("not valid for {name:?} until renewal: {error}"))?;
        }
        Ok(())
    }
}

fn pem_encode_certificate(der: &CertificateDer<'_>) -> String {
    let body = BASE64_STANDARD.encode(der.as_ref());
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    // Base64 output is ASCII, so splitting it at any byte keeps valid UTF-8.
    for line in body.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

#[derive(Clone, Copy)]
enum FileMode {
    /// Readable by the owner only: private keys.
    Private,
    /// Readable by everyone: certificates.
    Public,
}

/// Writes `contents` to `path` through a temporary file and a rename, so a crash never leaves a
/// truncated certificate or key behind.
fn write_file(path: &Path, contents: &[u8], mode: FileMode) -> Result<(), TlsError> {
    let write_error = |source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    // A leftover temporary file would keep its old permissions; start afresh.
    match fs::remove_file(&temporary) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(write_error(error)),
        _ => {}
    }
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(match mode {
            FileMode::Private => 0o600,
            FileMode::Public => 0o644,
        });
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(&temporary).map_err(write_error)?;
    file.write_all(contents).map_err(write_error)?;
    file.sync_all().map_err(write_error)?;
    fs::rename(&temporary, path).map_err(write_error)
}

/// Accepts any client certificate chain: devices with self-signed certificates are authorised
/// later by thumbprint. The handshake signature is still verified, so the client holds the key.
#[derive(Debug)]
struct AnyClientCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCertificate {
    fn client_auth_mandatory(&self) -> bool {
        // SAS-authenticated devices and service clients connect without a certificate.
        false
    }

    fn root_hint_subjects(&self) -> &[TlsDistinguishedName] {
        // An empty hint list tells clients to send whatever certificate they have.
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, ProtocolVersion, SupportedProtocolVersion};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    const HOSTNAME: &str = "hub.example.test";

    /// What the server saw of a completed handshake.
    struct ServerView {
        version: Option<ProtocolVersion>,
        peer_certificates: Option<Vec<CertificateDer<'static>>>,
        alpn: Option<Vec<u8>>,
    }

    fn client_config(
        ca_pem: &Path,
        version: &'static SupportedProtocolVersion,
        client_cert: Option<&(String, String)>,
    ) -> Arc<ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in read_cert_chain(ca_pem).expect("CA file") {
            roots.add(cert).expect("CA certificate");
        }
        let builder = ClientConfig::builder_with_provider(ring_provider())
            .with_protocol_versions(&[version])
            .expect("protocol version")
            .with_root_certificates(roots);
        let mut config = match client_cert {
            Some((cert_pem, key_pem)) => builder
                .with_client_auth_cert(
                    vec![CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("cert")],
                    PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key"),
                )
                .expect("client auth"),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"mqtt".to_vec()];
        Arc::new(config)
    }

    /// Runs one TLS connection over loopback; the client sends one byte so that both sides have
    /// finished the handshake (in TLS 1.3 the server checks the client certificate last).
    async fn handshake(
        server: Arc<rustls::ServerConfig>,
        client: Arc<ClientConfig>,
        name: ServerName<'static>,
    ) -> Result<ServerView, String> {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let server_side = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
            let mut tls = TlsAcceptor::from(server)
                .accept(tcp)
                .await
                .map_err(|e| e.to_string())?;
            let mut byte = [0_u8; 1];
            tls.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
            let connection = tls.get_ref().1;
            Ok::<_, String>(ServerView {
                version: connection.protocol_version(),
                peer_certificates: connection
                    .peer_certificates()
                    .map(|chain| chain.iter().map(|c| c.clone().into_owned()).collect()),
                alpn: connection.alpn_protocol().map(<[u8]>::to_vec),
            })
        });
        let client_side = async {
            let tcp = TcpStream::connect(address)
                .await
                .map_err(|e| e.to_string())?;
            let mut tls = TlsConnector::from(client)
                .connect(name, tcp)
                .await
                .map_err(|e| e.to_string())?;
            tls.write_all(b"x").await.map_err(|e| e.to_string())?;
            tls.flush().await.map_err(|e| e.to_string())
        };
        let outcome = tokio::time::timeout(Duration::from_secs(10), async {
            client_side.await?;
            server_side.await.map_err(|e| e.to_string())?
        })
        .await;
        outcome.unwrap_or_else(|_| Err("handshake timed out".to_owned()))
    }

    fn server_name(name: &str) -> ServerName<'static> {
        ServerName::try_from(name).expect("name").to_owned()
    }

    fn ca_pem(pki: &Pki) -> PathBuf {
        pki.ca_pem_path().expect("generated CA").to_path_buf()
    }

    #[test]
    fn first_start_creates_ca_and_server_files_and_reload_reuses_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = Pki::load_or_create(dir.path(), HOSTNAME, None).expect("create");
        assert_eq!(
            first.ca_pem_path(),
            Some(dir.path().join("ca.pem").as_path())
        );
        let ca = fs::read(dir.path().join("ca.pem")).expect("ca.pem");
        let server = fs::read(dir.path().join("server.pem")).expect("server.pem");
        assert_eq!(
            read_cert_chain(&dir.path().join("server.pem"))
                .expect("chain")
                .len(),
            2
        );

        let second = Pki::load_or_create(dir.path(), HOSTNAME, None).expect("reload");
        assert_eq!(fs::read(dir.path().join("ca.pem")).expect("ca.pem"), ca);
        assert_eq!(
            fs::read(dir.path().join("server.pem")).expect("server.pem"),
            server
        );
        assert_eq!(second.cert_chain, first.cert_chain);
    }

    #[cfg(unix)]
    #[test]
    fn key_files_are_readable_by_the_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        Pki::load_or_create(dir.path(), HOSTNAME, None).expect("create");
        for file in ["ca-key.pem", "server-key.pem"] {
            let mode = fs::metadata(dir.path().join(file))
                .expect("key")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
    }

    #[tokio::test]
    async fn hostname_change_reissues_the_server_certificate_from_the_same_ca() {
        let dir = tempfile::tempdir().expect("tempdir");
        Pki::load_or_create(dir.path(), HOSTNAME, None).expect("create");
        let ca = fs::read(dir.path().join("ca.pem")).expect("ca.pem");
        let server = fs::read(dir.path().join("server.pem")).expect("server.pem");

        let renamed = Pki::load_or_create(dir.path(), "other.example.test", None).expect("reload");
        assert_eq!(fs::read(dir.path().join("ca.pem")).expect("ca.pem"), ca);
        assert_ne!(
            fs::read(dir.path().join("server.pem")).expect("server.pem"),
            server
        );
        let client = client_config(&ca_pem(&renamed), &rustls::version::TLS13, None);
        let server_config = renamed.server_config(&[]).expect("config");
        handshake(server_config, client, server_name("other.example.test"))
            .await
            .expect("new name verifies");
    }

    #[test]
    fn server_certificate_expiring_within_30_days_is_reissued() {
        let dir = tempfile::tempdir().expect("tempdir");
        Pki::load_or_create(dir.path(), HOSTNAME, None).expect("create");
        let ca =
            LocalCa::load(dir.path().join("ca.pem"), dir.path().join("ca-key.pem")).expect("CA");
        let names = server_names(HOSTNAME).expect("names");
        let expiring = ca
            .issue_server_cert(
                HOSTNAME,
                &names,
                SystemTime::now(),
                Duration::from_secs(10 * DAY_SECS),
            )
            .expect("issue");
        let expiring_chain = format!("{}{}", expiring.leaf_pem, ca.cert_pem);
        fs::write(dir.path().join("server.pem"), &expiring_chain).expect("write");
        fs::write(dir.path().join("server-key.pem"), &expiring.key_pem).expect("write");

        let renewed = Pki::load_or_create(dir.path(), HOSTNAME, None).expect("reload");
        assert_ne!(renewed.cert_chain[0], expiring.leaf_der);
        assert_ne!(
            fs::read_to_string(dir.path().join("server.pem")).expect("server.pem"),
            expiring_chain
        );
    }

    #[test]
    fn unreadable_or_mismatched_server_files_are_reissued() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = Pki::load_or_create(dir.path(), HOSTNAME, None).expect("create");
        let ca_key = fs::read(dir.path().join("ca-key.pem")).expect("ca key");
        // A key that does not belong to the server certificate.
        fs::write(dir.path().join("server-key.pem"), &ca_key).expect("write");
        let second = Pki::load_or_create(dir.path(), HOSTNAME, None).expect("reload");
        assert_ne!(second.cert_chain, first.cert_chain);

        fs::write(dir.path().join("server.pem"), "garbage").expect("write");
        let third = Pki::load_or_create(dir.path(), HOSTNAME, None).expect("reload");
        assert_ne!(third.cert_chain, second.cert_chain);
        assert_eq!(
            fs::read(dir.path().join("ca-key.pem")).expect("ca key"),
            ca_key
        );
    }

    #[tokio::test]
    async fn client_trusting_the_ca_verifies_every_name_with_tls12_and_tls13() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = Pki::load_or_create(dir.path(), HOSTNAME, None).expect("create");
        let server_config = pki.server_config(&[b"mqtt"]).expect("config");
        for (version, expected) in [
            (&rustls::version::TLS12, ProtocolVersion::TLSv1_2),
            (&rustls::version::TLS13, ProtocolVersion::TLSv1_3),
        ] {
            for name in [HOSTNAME, "localhost", "127.0.0.1", "::1"] {
                let client = client_config(&ca_pem(&pki), version, None);
                let view = handshake(server_config.clone(), client, server_name(name))
                    .await
                    .unwrap_or_else(|error| panic!("{expected:?} {name}: {error}"));
                assert_eq!(view.version, Some(expected));
                assert!(view.peer_certificates.is_none(), "no client certificate");
                assert_eq!(view.alpn.as_deref(), Some(&b"mqtt"[..]));
            }
        }
    }

    #[tokio::test]
    async fn client_rejects_a_name_the_certificate_does_not_carry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = Pki::load_or_create(dir.path(), HOSTNAME, None).expect("create");
        let client = client_config(&ca_pem(&pki), &rustls::version::TLS12, None);
        let error = handshake(
            pki.server_config(&[]).expect("config"),
            client,
            server_name("elsewhere.example.test"),
        )
        .await
        .err()
        .expect("name mismatch fails");
        assert!(error.contains("not valid for name"), "{error}");
    }

    #[tokio::test]
    async fn self_signed_client_certificate_reaches_the_server_with_its_thumbprints() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = Pki::load_or_create(dir.path(), HOSTNAME, None).expect("create");
        let server_config = pki.server_config(&[]).expect("config");
        let client_cert = self_signed_client_cert("device-1").expect("client cert");
        let client_der = CertificateDer::from_pem_slice(client_cert.0.as_bytes()).expect("der");
        for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
            let client = client_config(&ca_pem(&pki), version, Some(&client_cert));
            let view = handshake(server_config.clone(), client, server_name("localhost"))
                .await
                .expect("handshake with client certificate");
            let peer = view.peer_certificates.expect("peer certificate");
            assert_eq!(peer.len(), 1);
            assert_eq!(thumbprints(&peer[0]), thumbprints(&client_der));
        }
    }

    #[tokio::test]
    async fn provided_certificate_and_key_are_used_without_creating_a_ca() {
        let issuing = tempfile::tempdir().expect("tempdir");
        let issued = Pki::load_or_create(issuing.path(), HOSTNAME, None).expect("create");
        let data = tempfile::tempdir().expect("tempdir");
        let cert = issuing.path().join("server.pem");
        let key = issuing.path().join("server-key.pem");

        let pki = Pki::load_or_create(data.path(), "ignored", Some((&cert, &key))).expect("load");
        assert_eq!(pki.ca_pem_path(), None);
        assert_eq!(pki.cert_chain, issued.cert_chain);
        assert!(!data.path().join("ca.pem").exists());
        let client = client_config(&ca_pem(&issued), &rustls::version::TLS12, None);
        handshake(
            pki.server_config(&[]).expect("config"),
            client,
            server_name(HOSTNAME),
        )
        .await
        .expect("handshake with provided certificate");
    }

    fn provided_error(cert: &Path, key: &Path) -> TlsError {
        let data = tempfile::tempdir().expect("tempdir");
        Pki::load_or_create(data.path(), HOSTNAME, Some((cert, key))).expect_err("must fail")
    }

    #[test]
    fn missing_or_corrupt_provided_files_are_named_in_the_error() {
        let issuing = tempfile::tempdir().expect("tempdir");
        Pki::load_or_create(issuing.path(), HOSTNAME, None).expect("create");
        let cert = issuing.path().join("server.pem");
        let key = issuing.path().join("server-key.pem");
        let missing = issuing.path().join("missing.pem");
        let garbage = issuing.path().join("garbage.pem");
        fs::write(&garbage, "not pem at all").expect("write");
        let truncated = issuing.path().join("truncated.pem");
        fs::write(&truncated, "-----BEGIN CERTIFICATE-----\nMIIB\n").expect("write");
        let not_x509 = issuing.path().join("not-x509.pem");
        fs::write(
            &not_x509,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .expect("write");

        let cases = [
            (provided_error(&missing, &key), &missing),
            (provided_error(&cert, &missing), &missing),
            (provided_error(&garbage, &key), &garbage),
            (provided_error(&cert, &garbage), &garbage),
            (provided_error(&truncated, &key), &truncated),
            (provided_error(&not_x509, &key), &not_x509),
            (
                provided_error(&cert, &issuing.path().join("ca-key.pem")),
                &cert,
            ),
        ];
        for (error, named) in cases {
            let message = error.to_string();
            assert!(message.contains(&named.display().to_string()), "{message}");
        }
        assert!(matches!(
            provided_error(&cert, &issuing.path().join("ca-key.pem")),
            TlsError::KeyMismatch { .. }
        ));
    }

    #[test]
    fn half_present_or_corrupt_ca_is_an_error_not_a_new_ca() {
        let dir = tempfile::tempdir().expect("tempdir");
        Pki::load_or_create(dir.path(), HOSTNAME, None).expect("create");
        let ca_key = dir.path().join("ca-key.pem");
        let saved_key = fs::read(&ca_key).expect("key");

        fs::remove_file(&ca_key).expect("remove");
        let error = Pki::load_or_create(dir.path(), HOSTNAME, None).expect_err("incomplete");
        assert!(matches!(error, TlsError::CaIncomplete { .. }), "{error}");
        assert!(error.to_string().contains(&ca_key.display().to_string()));

        fs::write(
            &ca_key,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .expect("write");
        let error = Pki::load_or_create(dir.path(), HOSTNAME, None).expect_err("corrupt key");
        assert!(
            error.to_string().contains(&ca_key.display().to_string()),
            "{error}"
        );

        // A valid key that is not the CA's: the new server certificate would not verify.
        let (_, other_key) = self_signed_client_cert("x").expect("key");
        fs::write(&ca_key, other_key).expect("write");
        fs::remove_file(dir.path().join("server.pem")).expect("remove");
        let error = Pki::load_or_create(dir.path(), HOSTNAME, None).expect_err("wrong key");
        assert!(matches!(error, TlsError::CaMismatch { .. }), "{error}");

        fs::write(&ca_key, saved_key).expect("restore");
        fs::write(dir.path().join("ca.pem"), "garbage").expect("write");
        let error = Pki::load_or_create(dir.path(), HOSTNAME, None).expect_err("corrupt ca");
        assert!(error.to_string().contains("ca.pem"), "{error}");
    }

    #[test]
    fn invalid_hostname_is_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        for hostname in ["", "has space", "bad/char", "ünïcode.example"] {
            let error = Pki::load_or_create(dir.path(), hostname, None).expect_err(hostname);
            assert!(
                matches!(error, TlsError::InvalidHostname { .. }),
                "{hostname}: {error}"
            );
        }
    }

    #[test]
    fn long_hostname_gets_a_certificate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let label = "a".repeat(60);
        let hostname = format!("{label}.{label}.example.test");
        Pki::load_or_create(dir.path(), &hostname, None).expect("create");
        Pki::load_or_create(dir.path(), &hostname, None).expect("reload");
    }

    #[test]
    fn validity_is_clamped_for_an_absurd_clock() {
        let mut params = CertificateParams::default();
        let far_future = SystemTime::UNIX_EPOCH + Duration::from_secs(8000 * 365 * DAY_SECS);
        set_validity(&mut params, far_future, CA_VALIDITY);
        assert!(params.not_after > params.not_before);
    }

    #[test]
    fn ip_address_hostname_is_accepted_once() {
        let names = server_names("127.0.0.1").expect("names");
        assert_eq!(names.len(), 3);
        let names = server_names("10.1.2.3").expect("names");
        assert_eq!(names.len(), 4);
        assert_eq!(server_names("localhost").expect("names").len(), 3);
    }

    #[test]
    fn thumbprints_match_openssl_fingerprints() {
        // `openssl x509 -fingerprint -sha1` / `-sha256` of this certificate, colons removed.
        const VECTOR: &str = "-----BEGIN CERTIFICATE-----
MIIBjTCCATOgAwIBAgIUQC1qAyrcLLagS64b9V/E1Q73H7owCgYIKoZIzj0EAwIw
HDEaMBgGA1UEAwwRdGh1bWJwcmludC12ZWN0b3IwHhcNMjYxMTI2MDk1MDUwWhcN
MzYxMTIzMDk1MDUwWjAcMRowGAYDVQQDDBF0aHVtYnByaW50LXZlY3RvcjBZMBMG
ByqGSM49AgEGCCqGSM49AwEHA0IABJFi0pmh+lChQPFcoOqYUV79WDt85Pfw8Qab
/7YfnqFobHtIn6o6EGfC5to4AnaxHrtBeEsfud4urD0DV1Qgir+jUzBRMB0GA1Ud
DgQWBBRL5sB7aDQ922gmenECA14oPzD8XjAfBgNVHSMEGDAWgBRL5sB7aDQ922gm
enECA14oPzD8XjAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0gAMEUCIQDy
ziV3TEACk40U+Kcd0sbi18xmmGro4VetDmliFib5pAIgBLNMJsdAG73AjEXkk7Fu
EeEq4QmmeZey4JBioWdPtkU=
-----END CERTIFICATE-----
";
        let der = CertificateDer::from_pem_slice(VECTOR.as_bytes()).expect("vector");
        let (sha1, sha256) = thumbprints(&der);
        assert_eq!(sha1, "4A393E927185CDCF9820A7D37F31849B733135F3");
        assert_eq!(
            sha256,
            "655A3E93D8B6CD18F950660909657107DE994473E4E4BDE1B4363BA2CFCEAC56"
        );
    }

    #[test]
    fn self_signed_client_cert_carries_the_common_name_and_a_matching_key() {
        let (cert_pem, key_pem) = self_signed_client_cert("device-42").expect("cert");
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("cert");
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key");
        let signing_key = ring_provider()
            .key_provider
            .load_private_key(key)
            .expect("usable key");
        CertifiedKey::new(vec![der.clone()], signing_key)
            .keys_match()
            .expect("key belongs to cert");
        let common_name = b"device-42";
        assert!(
            der.windows(common_name.len())
                .any(|window| window == common_name)
        );
    }

    #[test]
    fn pem_encoding_round_trips() {
        let (cert_pem, _) = self_signed_client_cert("round-trip").expect("cert");
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("cert");
        let encoded = pem_encode_certificate(&der);
        assert_eq!(encoded, cert_pem);
    }
}
