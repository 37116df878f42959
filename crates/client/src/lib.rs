//! A service-side REST client for Azure IoT Hub compatible hubs (twinhub, or Azure itself):
//! the identity registry, twins, direct methods, queries, automatic configurations, scheduled
//! jobs and (twinhub only) firmware packages.
//!
//! ```no_run
//! # async fn example() -> Result<(), twinhub_client::ClientError> {
//! let client = twinhub_client::ServiceClient::from_connection_string(
//!     "HostName=localhost:8443;SharedAccessKeyName=iothubowner;SharedAccessKey=...",
//!     Some(&std::fs::read_to_string("twinhub-data/ca.pem").unwrap_or_default()),
//! )?;
//! let twin = client.get_twin("d1").await?;
//! println!("{}", twin.etag);
//! # Ok(())
//! # }
//! ```

mod configurations;
mod error;
mod firmware;
mod jobs;
mod query;
mod registry;
mod token;
mod twins;

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderValue, IF_MATCH};
use reqwest::{Method, RequestBuilder, Response, Url};
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::de::DeserializeOwned;
use twinhub_protocol::{ConnectionString, ERROR_CODE_HEADER};

pub use error::ClientError;
pub use firmware::FirmwarePackage;
pub use jobs::{JobAction, JobRequest};
pub use query::QueryPage;
pub use registry::DeviceAuth;
pub use twinhub_protocol::rest;

use token::{Credentials, TokenSource};

/// The REST API version the Azure service SDKs send.
pub const API_VERSION: &str = "2021-04-12";

/// How long establishing a connection to the hub may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// A client of one hub's service REST API, authenticated by a shared access policy.
/// Cheap to clone; clones share the connection pool and the cached token.
#[derive(Clone, Debug)]
pub struct ServiceClient {
    http: reqwest::Client,
    /// `https://<HostName>/`, the port included when the connection string gives one.
    base: Url,
    /// `HostName` exactly as the connection string gives it.
    host_name: String,
    tokens: Arc<TokenSource>,
}

impl ServiceClient {
    /// A client for the hub a service connection string names
    /// (`HostName=<host>[:<port>];SharedAccessKeyName=<policy>;SharedAccessKey=<key>`, or
    /// `SharedAccessSignature=<token>` instead of the key). `ca_pem` holds the certificates to
    /// trust instead of the system's roots (a local hub's `ca.pem`).
    pub fn from_connection_string(
        connection_string: &str,
        ca_pem: Option<&str>,
    ) -> Result<ServiceClient, ClientError> {
        let parsed: ConnectionString = connection_string.trim().parse()?;
        if parsed.device_id.is_some() {
            return Err(ClientError::NotAServiceConnectionString);
        }
        let credentials = match (
            parsed.shared_access_key_name,
            parsed.shared_access_key,
            parsed.shared_access_signature,
        ) {
            (Some(key_name), Some(key), _) => Credentials::PolicyKey { key_name, key },
            (_, None, Some(token)) => Credentials::FixedToken(token),
            _ => return Err(ClientError::NotAServiceConnectionString),
        };
        let base = Url::parse(&format!("https://{}/", parsed.host_name)).map_err(|e| {
            ClientError::InvalidArgument(format!("HostName {:?}: {e}", parsed.host_name))
        })?;
        // The hub signs and checks tokens against its name; a port is addressing, not identity.
        let resource = base.host_str().unwrap_or(&parsed.host_name).to_owned();
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls_config(ca_pem)?)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("twinhub-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ClientError::Transport)?;
        Ok(ServiceClient {
            http,
            base,
            host_name: parsed.host_name,
            tokens: Arc::new(TokenSource::new(resource, credentials)),
        })
    }

    /// The hub's `HostName` as the connection string gives it (with its port, if any).
    pub fn host_name(&self) -> &str {
        &self.host_name
    }

    /// `https://<HostName>/<segments...>?api-version=...&<query...>`; every segment is
    /// percent-encoded, so ids with `/`, `?`, `#` or `%` address the right resource.
    fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.clear().extend(segments);
        }
        {
            let mut pairs = url.query_pairs_mut();
            pairs.append_pair("api-version", API_VERSION);
            for (name, value) in query {
                pairs.append_pair(name, value);
            }
        }
        url
    }

    /// A request carrying a current SAS token.
    fn request(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
    ) -> Result<RequestBuilder, ClientError> {
        let token = self.tokens.token()?;
        let token = HeaderValue::from_str(&token).map_err(|_| {
            ClientError::InvalidArgument("the SAS token is not a valid header value".to_owned())
        })?;
        Ok(self
            .http
            .request(method, self.url(segments, query))
            .header(AUTHORIZATION, token))
    }

    /// Sends `request`; any status outside 2xx becomes [`ClientError::Service`].
    async fn execute(request: RequestBuilder) -> Result<Response, ClientError> {
        let response = request.send().await.map_err(ClientError::Transport)?;
        if response.status().is_success() {
            return Ok(response);
        }
        Err(Self::into_error(response).await)
    }

    /// The hub's error answer as a [`ClientError`].
    async fn into_error(response: Response) -> ClientError {
        let status = response.status().as_u16();
        let code = response
            .headers()
            .get(ERROR_CODE_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.bytes().await.unwrap_or_default();
        error::service_error(status, code.as_deref(), &body)
    }

    /// Sends `request` and reads a JSON answer.
    async fn execute_json<T: DeserializeOwned>(request: RequestBuilder) -> Result<T, ClientError> {
        read_json(Self::execute(request).await?).await
    }
}

/// Reads a 2xx answer's body as `T`.
async fn read_json<T: DeserializeOwned>(response: Response) -> Result<T, ClientError> {
    let body = response.bytes().await.map_err(ClientError::Transport)?;
    serde_json::from_slice(&body).map_err(|e| {
        ClientError::UnexpectedResponse(format!(
            "{e}: {}",
            String::from_utf8_lossy(&body)
                .chars()
                .take(200)
                .collect::<String>()
        ))
    })
}

/// `If-Match` with `etag` quoted as the SDKs send it; `None` is the wildcard `"*"`.
fn if_match(request: RequestBuilder, etag: Option<&str>) -> RequestBuilder {
    let etag = etag.unwrap_or("*");
    let quoted = if etag.starts_with('"') || etag.starts_with("W/") {
        etag.to_owned()
    } else {
        format!("\"{etag}\"")
    };
    match HeaderValue::from_str(&quoted) {
        Ok(value) => request.header(IF_MATCH, value),
        // An etag that cannot be a header value cannot match either: send one that never does.
        Err(_) => request.header(IF_MATCH, HeaderValue::from_static("\"\"")),
    }
}

/// rustls with ring, trusting `ca_pem` if given, else the system's trust roots.
fn tls_config(ca_pem: Option<&str>) -> Result<rustls::ClientConfig, ClientError> {
    let mut roots = RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|e| ClientError::Trust(format!("CA PEM: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| ClientError::Trust(format!("CA certificate: {e}")))?;
            }
            if roots.is_empty() {
                return Err(ClientError::Trust(
                    "the CA PEM holds no certificate".to_owned(),
                ));
            }
        }
        None => {
            // Unreadable individual system certificates are skipped; only having none is fatal.
            let loaded = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(loaded.certs);
            if added == 0 {
                return Err(ClientError::Trust(
                    "no system trust roots found; give the hub's CA certificate".to_owned(),
                ));
            }
        }
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map(|builder| builder.with_root_certificates(roots).with_no_client_auth())
        .map_err(|e| ClientError::Trust(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhpcyBpcyBhIHRlc3Qgb3duZXIga2V5IDMyIGJ5dGU=";

    fn client(cs: &str) -> ServiceClient {
        ServiceClient::from_connection_string(cs, Some(&self_signed_ca())).expect("client")
    }

    fn self_signed_ca() -> String {
        let key = rcgen::KeyPair::generate().expect("key pair");
        let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        params.self_signed(&key).expect("self-signed").pem()
    }

    #[test]
    fn urls_encode_segments_and_carry_the_api_version() {
        let client = client(&format!(
            "HostName=localhost:8443;SharedAccessKeyName=iothubowner;SharedAccessKey={KEY}"
        ));
        assert_eq!(client.host_name(), "localhost:8443");
        let url = client.url(&["devices", "a/b?c#d%e"], &[("top", "5")]);
        assert_eq!(
            url.as_str(),
            "https://localhost:8443/devices/a%2Fb%3Fc%23d%25e?api-version=2021-04-12&top=5"
        );
    }

    #[test]
    fn device_connection_strings_are_refused() {
        let result = ServiceClient::from_connection_string(
            &format!("HostName=h;DeviceId=d1;SharedAccessKey={KEY}"),
            None,
        );
        assert!(matches!(
            result,
            Err(ClientError::NotAServiceConnectionString)
        ));
        let result = ServiceClient::from_connection_string("HostName=h", None);
        assert!(matches!(
            result,
            Err(ClientError::NotAServiceConnectionString)
        ));
        let result = ServiceClient::from_connection_string("nonsense", None);
        assert!(matches!(result, Err(ClientError::ConnectionString(_))));
    }

    #[test]
    fn a_pem_without_certificates_is_refused() {
        let result = ServiceClient::from_connection_string(
            &format!("HostName=h;SharedAccessKeyName=service;SharedAccessKey={KEY}"),
            Some("not a certificate"),
        );
        assert!(matches!(result, Err(ClientError::Trust(_))));
    }
}
