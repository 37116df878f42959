//! Firmware package downloads: HTTPS only, authenticated to the hub as the device, resumed with
//! `Range` from the bytes already on disk, optionally rate-limited; and their verification.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_RANGE, RANGE};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use twinhub_core::time::Timestamp;
use twinhub_device::{Credential, DeviceConfig};

/// Why a package could not be downloaded.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The request or the transfer failed.
    #[error("{0}")]
    Http(String),
    /// The server answered with an unexpected status.
    #[error("the server answered {0}")]
    Status(StatusCode),
    /// The server sent more than the package may hold.
    #[error("the package exceeds {0} bytes")]
    TooLarge(u64),
    /// The partial file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying failure.
        source: std::io::Error,
    },
}

/// Why the HTTPS client for downloads could not be built.
#[derive(Debug, thiserror::Error)]
pub enum DownloadClientError {
    /// The CA or the client certificate is not usable PEM.
    #[error("invalid PEM in the device configuration: {0}")]
    Pem(String),
    /// rustls refused the configuration.
    #[error(transparent)]
    Tls(#[from] rustls::Error),
    /// reqwest refused the configuration.
    #[error("cannot build the HTTPS client: {0}")]
    Client(String),
}

/// One package to download.
#[derive(Debug, Clone)]
pub(crate) struct FetchRequest<'a> {
    pub(crate) uri: &'a str,
    /// The partial or complete file.
    pub(crate) dest: &'a Path,
    /// The size the back end announced.
    pub(crate) expected_size: Option<u64>,
    pub(crate) max_bytes: u64,
    /// Bytes per second, `None` for no limit.
    pub(crate) rate_limit: Option<u64>,
}

/// Told how far a download got.
pub(crate) trait Progress: Sync {
    /// `downloaded` bytes of `total` (when known) are on disk.
    fn progress(&self, downloaded: u64, total: Option<u64>) -> impl Future<Output = ()> + Send;
}

/// Brings a package's bytes to disk. The seam lets state-machine tests run without HTTP.
pub(crate) trait Fetch: Send + Sync + 'static {
    /// Downloads `request.uri` into `request.dest`, continuing a partial file; returns its size.
    fn fetch<P: Progress>(
        &self,
        request: &FetchRequest<'_>,
        progress: &P,
    ) -> impl Future<Output = Result<u64, DownloadError>> + Send;
}

/// How long a download waits on the connection before giving up an attempt.
const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// Downloads over HTTPS with the device's identity.
#[derive(Clone)]
pub(crate) struct HttpFetcher {
    client: reqwest::Client,
    /// Hosts that are the hub: only they get the device's SAS token.
    hub_hosts: Vec<String>,
    sas: SasSource,
    attempts: u32,
    retry_delay: Duration,
}

#[derive(Clone)]
enum SasSource {
    /// Sign a fresh token for `resource` with `key`.
    Key {
        resource: String,
        key: Arc<str>,
        ttl: Duration,
    },
    Token(Arc<str>),
    /// X.509 devices authenticate with their certificate in TLS.
    None,
}

impl HttpFetcher {
    /// A fetcher for `config`'s device, trying each download `attempts` times.
    pub(crate) fn new(
        config: &DeviceConfig,
        attempts: u32,
        retry_delay: Duration,
    ) -> Result<HttpFetcher, DownloadClientError> {
        let tls = tls_config(config)?;
        // No idle connections kept: a fleet of simulated devices would otherwise hold a second
        // socket each after its download, doubling the open files of the process.
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .pool_max_idle_per_host(0)
            .connect_timeout(IO_TIMEOUT)
            .read_timeout(IO_TIMEOUT)
            .build()
            .map_err(|error| DownloadClientError::Client(error.to_string()))?;
        let mut resource = format!("{}/devices/{}", config.host_name, config.device_id);
        if let Some(module) = &config.module_id {
            resource.push_str("/modules/");
            resource.push_str(module);
        }
        let sas = match &config.credential {
            Credential::SymmetricKey(key) => SasSource::Key {
                resource,
                key: Arc::from(key.as_str()),
                ttl: config.sas_ttl,
            },
            Credential::SasToken(token) => SasSource::Token(Arc::from(token.as_str())),
            Credential::X509 { .. } => SasSource::None,
        };
        let mut hub_hosts = vec![config.host_name.to_ascii_lowercase()];
        if let Some(gateway) = &config.gateway_host {
            hub_hosts.push(gateway.to_ascii_lowercase());
        }
        Ok(HttpFetcher {
            client,
            hub_hosts,
            sas,
            attempts: attempts.max(1),
            retry_delay,
        })
    }

    /// The `Authorization` value for `url`, if it points at the hub: the device's token must
    /// never reach any other server.
    fn authorization(&self, url: &reqwest::Url) -> Option<String> {
        let host = url.host_str()?.to_ascii_lowercase();
        if !self.hub_hosts.contains(&host) {
            return None;
        }
        match &self.sas {
            SasSource::Key { resource, key, ttl } => {
                let expiry = u64::try_from(Timestamp::now().unix_seconds())
                    .unwrap_or(0)
                    .saturating_add(ttl.as_secs().max(60));
                twinhub_core::sas::generate_token(resource, key, None, expiry).ok()
            }
            SasSource::Token(token) => Some(token.to_string()),
            SasSource::None => None,
        }
    }

    /// One attempt, continuing from what is on disk; the error says whether to try again.
    async fn attempt<P: Progress>(
        &self,
        request: &FetchRequest<'_>,
        progress: &P,
    ) -> Result<u64, Attempt> {
        let url = reqwest::Url::parse(request.uri)
            .map_err(|error| Attempt::Fatal(DownloadError::Http(error.to_string())))?;
        let have = file_len(request.dest).await.map_err(Attempt::Fatal)?;
        if have > 0 && request.expected_size == Some(have) {
            return Ok(have);
        }
        let mut builder = self.client.get(url.clone());
        if let Some(authorization) = self.authorization(&url) {
            builder = builder.header(AUTHORIZATION, authorization);
        }
        if have > 0 {
            builder = builder.header(RANGE, format!("bytes={have}-"));
        }
        let mut response = builder
            .send()
            .await
            .map_err(|error| Attempt::transient(&error))?;
        let status = response.status();
        let content_range = response
            .headers()
            .get(CONTENT_RANGE)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let (mut offset, total) = match status {
            StatusCode::OK => (0, response.content_length()),
            StatusCode::PARTIAL_CONTENT => match content_range.as_deref().and_then(parse_range) {
                Some((start, total)) if start == have => (have, total),
                // A range we did not ask for: start over.
                _ => return Err(Attempt::Restart),
            },
            StatusCode::RANGE_NOT_SATISFIABLE => {
                let total = content_range.as_deref().and_then(parse_unsatisfied);
                return if total == Some(have) {
                    Ok(have)
                } else {
                    Err(Attempt::Restart)
                };
            }
            status if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS => {
                return Err(Attempt::Transient(DownloadError::Status(status)));
            }
            status => return Err(Attempt::Fatal(DownloadError::Status(status))),
        };
        let limit = request
            .expected_size
            .map_or(request.max_bytes, |size| size.min(request.max_bytes));
        if total.is_some_and(|total| total > limit) {
            return Err(Attempt::Fatal(DownloadError::TooLarge(limit)));
        }
        let mut file = open_for_writing(request.dest, offset == 0)
            .await
            .map_err(Attempt::Fatal)?;
        let io = |source| {
            Attempt::Fatal(DownloadError::Io {
                path: request.dest.to_path_buf(),
                source,
            })
        };
        let started = Instant::now();
        let mut this_attempt: u64 = 0;
        progress.progress(offset, total).await;
        loop {
            let chunk = match response.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(error) => {
                    // Keep what arrived: the next attempt resumes after it.
                    file.flush().await.map_err(io)?;
                    return Err(Attempt::transient(&error));
                }
            };
            let length = u64::try_from(chunk.len()).unwrap_or(u64::MAX);
            if offset.saturating_add(length) > limit {
                return Err(Attempt::Fatal(DownloadError::TooLarge(limit)));
            }
            file.write_all(&chunk).await.map_err(io)?;
            offset += length;
            this_attempt += length;
            progress.progress(offset, total).await;
            if let Some(rate) = request.rate_limit.filter(|rate| *rate > 0) {
                let due = Duration::from_secs_f64(this_attempt as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
        }
        file.flush().await.map_err(io)?;
        file.sync_all().await.map_err(io)?;
        match total {
            // The connection ended early without an error: resume.
            Some(total) if offset < total => Err(Attempt::Transient(DownloadError::Http(format!(
                "the transfer ended after {offset} of {total} bytes"
            )))),
            _ => Ok(offset),
        }
    }
}

/// How one attempt ended, when it did not finish the download.
enum Attempt {
    /// Retry, resuming.
    Transient(DownloadError),
    /// Retry from byte zero.
    Restart,
    /// Give up.
    Fatal(DownloadError),
}

impl Attempt {
    fn transient(error: &reqwest::Error) -> Attempt {
        Attempt::Transient(DownloadError::Http(error_chain(&error)))
    }
}

/// An [`HttpFetcher`] built on the first download: most devices never download anything, and a
/// simulator runs thousands of them.
pub(crate) struct LazyFetcher {
    config: DeviceConfig,
    attempts: u32,
    retry_delay: Duration,
    fetcher: OnceLock<Result<HttpFetcher, String>>,
}

impl LazyFetcher {
    /// A fetcher for `config`'s device, built when first used.
    pub(crate) fn new(config: DeviceConfig, attempts: u32, retry_delay: Duration) -> LazyFetcher {
        LazyFetcher {
            config,
            attempts,
            retry_delay,
            fetcher: OnceLock::new(),
        }
    }
}

impl Fetch for LazyFetcher {
    async fn fetch<P: Progress>(
        &self,
        request: &FetchRequest<'_>,
        progress: &P,
    ) -> Result<u64, DownloadError> {
        let fetcher = self.fetcher.get_or_init(|| {
            HttpFetcher::new(&self.config, self.attempts, self.retry_delay)
                .map_err(|error| error.to_string())
        });
        match fetcher {
            Ok(fetcher) => fetcher.fetch(request, progress).await,
            Err(error) => Err(DownloadError::Http(error.clone())),
        }
    }
}

impl Fetch for HttpFetcher {
    async fn fetch<P: Progress>(
        &self,
        request: &FetchRequest<'_>,
        progress: &P,
    ) -> Result<u64, DownloadError> {
        let mut last = DownloadError::Http("no attempt was made".to_owned());
        for attempt in 0..self.attempts {
            if attempt > 0 {
                tokio::time::sleep(self.retry_delay).await;
            }
            match self.attempt(request, progress).await {
                Ok(size) => return Ok(size),
                Err(Attempt::Fatal(error)) => return Err(error),
                Err(Attempt::Restart) => {
                    remove_file(request.dest).await?;
                    last = DownloadError::Http("the server ignored the resume range".to_owned());
                }
                Err(Attempt::Transient(error)) => {
                    tracing::info!(%error, attempt, "firmware download interrupted; resuming");
                    last = error;
                }
            }
        }
        Err(last)
    }
}

/// The size and lowercase hex SHA-256 of the file at `path`.
pub(crate) async fn hash_file(path: &Path) -> Result<(u64, String), DownloadError> {
    let io = |source| DownloadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = tokio::fs::File::open(path).await.map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 64 * 1024];
    let mut size: u64 = 0;
    loop {
        let read = file.read(&mut buffer).await.map_err(io)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        size += u64::try_from(read).unwrap_or(u64::MAX);
    }
    Ok((size, hex(&hasher.finalize())))
}

/// Removes `path`; a missing file is fine.
pub(crate) async fn remove_file(path: &Path) -> Result<(), DownloadError> {
    match tokio::fs::remove_file(path).await {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(DownloadError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    out
}

async fn file_len(path: &Path) -> Result<u64, DownloadError> {
    match tokio::fs::metadata(path).await {
        Ok(metadata) => Ok(metadata.len()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(source) => Err(DownloadError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

async fn open_for_writing(path: &Path, truncate: bool) -> Result<tokio::fs::File, DownloadError> {
    let io = |source| DownloadError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent).await.map_err(io)?;
    }
    let mut options = tokio::fs::OpenOptions::new();
    options.create(true);
    if truncate {
        options.write(true).truncate(true);
    } else {
        options.append(true);
    }
    options.open(path).await.map_err(io)
}

/// `bytes a-b/size` → `(a, Some(size))` (`size` may be `*`).
fn parse_range(value: &str) -> Option<(u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    let total = match total.trim() {
        "*" => None,
        size => Some(size.parse().ok()?),
    };
    Some((start.trim().parse().ok()?, total))
}

/// `bytes */size` → `size`.
fn parse_unsatisfied(value: &str) -> Option<u64> {
    value.trim().strip_prefix("bytes */")?.trim().parse().ok()
}

/// The error and its causes, which reqwest keeps apart.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// TLS for downloads, trusting what the device's MQTT connection trusts (the system's roots
/// plus the configuration's CA) and presenting the device's certificate for X.509 identities.
fn tls_config(config: &DeviceConfig) -> Result<rustls::ClientConfig, DownloadClientError> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(pem) = &config.ca_pem {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let cert = cert.map_err(|error| DownloadClientError::Pem(error.to_string()))?;
            roots.add(cert)?;
        }
    }
    roots.extend(twinhub_device::system_roots().roots.iter().cloned());
    if roots.is_empty() {
        return Err(DownloadClientError::Pem(
            "no trust roots: the system has none and no ca_pem was given".to_owned(),
        ));
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots);
    match &config.credential {
        Credential::X509 { cert_pem, key_pem } => {
            let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|error| DownloadClientError::Pem(error.to_string()))?;
            let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
                .map_err(|error| DownloadClientError::Pem(error.to_string()))?;
            Ok(builder.with_client_auth_cert(certs, key)?)
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges_parse() {
        assert_eq!(parse_range("bytes 5-9/10"), Some((5, Some(10))));
        assert_eq!(parse_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(parse_range("bytes x-9/10"), None);
        assert_eq!(parse_range("items 5-9/10"), None);
        assert_eq!(parse_unsatisfied("bytes */10"), Some(10));
        assert_eq!(parse_unsatisfied("bytes 0-1/10"), None);
    }

    #[test]
    fn hex_is_lowercase_and_complete() {
        assert_eq!(hex(&[0x00, 0xab, 0x0f, 0xff]), "00ab0fff");
    }

    #[tokio::test]
    async fn hashing_matches_sha256() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p");
        std::fs::write(&path, b"abc").expect("writes");
        let (size, digest) = hash_file(&path).await.expect("hashes");
        assert_eq!(size, 3);
        assert_eq!(
            digest,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
