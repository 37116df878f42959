//! The service side of the load: an HTTPS keep-alive client (reqwest over rustls) signed as the
//! hub's owner.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::fleet::unix_micros_now;
use crate::hub::OWNER_KEY;

/// The query string every request carries.
pub const API_VERSION: &str = "api-version=2021-04-12";
/// Connections kept open per host: more than any scenario keeps in flight.
const POOL: usize = 512;

/// Why a REST call failed.
#[derive(Debug, thiserror::Error)]
pub enum RestError {
    #[error("HTTP: {0}")]
    Http(#[from] reqwest::Error),
    #[error("{method} {path} answered {status}: {body}")]
    Status {
        method: &'static str,
        path: String,
        status: StatusCode,
        body: String,
    },
    #[error("cannot build the client: {0}")]
    Setup(String),
}

/// An `Authorization` header value for the bench hub: an owner SAS token valid for a day.
pub fn owner_authorization() -> Result<String, RestError> {
    let expiry = unix_micros_now() / 1_000_000 + 24 * 3600;
    twinhub_core::sas::generate_token("localhost", OWNER_KEY, Some("iothubowner"), expiry)
        .map_err(|e| RestError::Setup(e.to_string()))
}

/// One page of a query's results.
#[derive(Debug)]
pub struct QueryPage {
    pub items: Vec<Value>,
    pub continuation: Option<String>,
}

/// An owner client of one hub.
#[derive(Clone)]
pub struct Rest {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Rest {
    /// A client for the hub at `https_addr` whose certificate chains to `ca`.
    pub fn new(https_addr: SocketAddr, ca: &Path) -> Result<Rest, RestError> {
        let tls = crate::tls::client_config(ca, &[b"http/1.1"])
            .map_err(|e| RestError::Setup(e.to_string()))?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .http1_only()
            .resolve("localhost", https_addr)
            .pool_max_idle_per_host(POOL)
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(120))
            .build()?;
        let token = owner_authorization()?;
        Ok(Rest {
            http,
            base: format!("https://localhost:{}", https_addr.port()),
            token,
        })
    }

    fn url(&self, path: &str) -> String {
        let separator = if path.contains('?') { '&' } else { '?' };
        format!("{}{path}{separator}{API_VERSION}", self.base)
    }

    async fn send(
        &self,
        method: &'static str,
        path: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, RestError> {
        let response = request.header("Authorization", &self.token).send().await?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        Err(RestError::Status {
            method,
            path: path.to_owned(),
            status,
            body,
        })
    }

    /// Runs one page of a query.
    pub async fn query(
        &self,
        query: &str,
        page_size: usize,
        continuation: Option<&str>,
    ) -> Result<QueryPage, RestError> {
        let path = "/devices/query";
        let mut request = self
            .http
            .post(self.url(path))
            .header("x-ms-max-item-count", page_size.to_string())
            .json(&json!({ "query": query }));
        if let Some(token) = continuation {
            request = request.header("x-ms-continuation", token);
        }
        let response = self.send("POST", path, request).await?;
        let continuation = response
            .headers()
            .get("x-ms-continuation")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let items = match response.json::<Value>().await? {
            Value::Array(items) => items,
            other => vec![other],
        };
        Ok(QueryPage {
            items,
            continuation,
        })
    }

    /// `GET path`, as JSON.
    pub async fn get(&self, path: &str) -> Result<Value, RestError> {
        let request = self.http.get(self.url(path));
        Ok(self.send("GET", path, request).await?.json().await?)
    }

    /// `GET path`, as the raw body.
    pub async fn get_bytes(&self, path: &str) -> Result<Vec<u8>, RestError> {
        let request = self.http.get(self.url(path));
        Ok(self
            .send("GET", path, request)
            .await?
            .bytes()
            .await?
            .to_vec())
    }

    /// `PUT path` with a JSON body.
    pub async fn put(&self, path: &str, body: &Value) -> Result<Value, RestError> {
        let request = self.http.put(self.url(path)).json(body);
        Ok(self.send("PUT", path, request).await?.json().await?)
    }

    /// `PATCH path` with a JSON body (a twin update), unconditionally.
    pub async fn patch(&self, path: &str, body: &Value) -> Result<Value, RestError> {
        let request = self
            .http
            .patch(self.url(path))
            .header("If-Match", "*")
            .json(body);
        Ok(self.send("PATCH", path, request).await?.json().await?)
    }
}
