//! A lean HTTPS/1.1 keep-alive client for closed loops: one TLS connection carrying one request at
//! a time, each request written as prepared bytes and its answer read by `Content-Length`. It is
//! built for load as the MQTT generators are, so a scenario measures the server rather than a
//! general-purpose client's request building; `rest` (reqwest) serves everything else.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// The longest response head read before giving up on it.
const MAX_HEAD: usize = 16 * 1024;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum Http1Error {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("the server closed the connection")]
    Closed,
    #[error("malformed response: {0}")]
    Malformed(&'static str),
}

/// An answer: its status code and body.
#[derive(Debug)]
pub struct Http1Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// One keep-alive HTTPS connection to `localhost` at a given address.
pub struct Http1Connection {
    stream: TlsStream<TcpStream>,
    request: Vec<u8>,
    received: Vec<u8>,
}

impl Http1Connection {
    /// Connects to `addr`, verifying the server's certificate for `localhost` against `ca`.
    pub async fn connect(addr: SocketAddr, ca: &Path) -> Result<Http1Connection, Http1Error> {
        let config = crate::tls::client_config(ca, &[b"http/1.1"])
            .map_err(|e| Http1Error::Tls(e.to_string()))?;
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from("localhost").map_err(|e| Http1Error::Tls(e.to_string()))?;
        let stream = TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await?;
        Ok(Http1Connection {
            stream,
            request: Vec::with_capacity(512),
            received: Vec::with_capacity(1024),
        })
    }

    /// Sends `POST target` with a JSON body and reads the whole answer.
    pub async fn post_json(
        &mut self,
        target: &str,
        authorization: &str,
        body: &[u8],
    ) -> Result<Http1Response, Http1Error> {
        self.request.clear();
        self.request.extend_from_slice(b"POST ");
        self.request.extend_from_slice(target.as_bytes());
        self.request.extend_from_slice(
            b" HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\nauthorization: ",
        );
        self.request.extend_from_slice(authorization.as_bytes());
        self.request.extend_from_slice(b"\r\ncontent-length: ");
        self.request
            .extend_from_slice(body.len().to_string().as_bytes());
        self.request.extend_from_slice(b"\r\n\r\n");
        self.request.extend_from_slice(body);
        self.stream.write_all(&self.request).await?;
        self.stream.flush().await?;
        self.read_response().await
    }

    async fn read_response(&mut self) -> Result<Http1Response, Http1Error> {
        self.received.clear();
        let head_end = loop {
            if let Some(end) = find(&self.received, b"\r\n\r\n") {
                break end + 4;
            }
            if self.received.len() > MAX_HEAD {
                return Err(Http1Error::Malformed("the response head is too long"));
            }
            self.fill().await?;
        };
        let (status, content_length) = parse_head(&self.received[..head_end])?;
        while self.received.len() < head_end + content_length {
            self.fill().await?;
        }
        let body = self.received[head_end..head_end + content_length].to_vec();
        Ok(Http1Response { status, body })
    }

    async fn fill(&mut self) -> Result<(), Http1Error> {
        let mut chunk = [0; 4096];
        match self.stream.read(&mut chunk).await? {
            0 => Err(Http1Error::Closed),
            read => {
                self.received.extend_from_slice(&chunk[..read]);
                Ok(())
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// The status code and `Content-Length` of a response head (a chunked body is not expected).
fn parse_head(head: &[u8]) -> Result<(u16, usize), Http1Error> {
    let head = std::str::from_utf8(head).map_err(|_| Http1Error::Malformed("non-UTF-8 head"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.strip_prefix("HTTP/1.1 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .ok_or(Http1Error::Malformed("no HTTP/1.1 status line"))?;
    let content_length = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
        .ok_or(Http1Error::Malformed("no Content-Length"))?;
    Ok((status, content_length))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_give_their_status_and_length() {
        let head =
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nContent-Length: 31\r\n\r\n";
        assert_eq!(parse_head(head).expect("parses"), (200, 31));
        let head = b"HTTP/1.1 404 Not Found\r\ncontent-length:0\r\n\r\n";
        assert_eq!(parse_head(head).expect("parses"), (404, 0));
    }

    #[test]
    fn heads_without_status_or_length_are_refused() {
        assert!(parse_head(b"HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").is_err());
    }
}
