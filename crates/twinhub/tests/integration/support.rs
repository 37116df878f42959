//! The harness: a hub on loopback ports with a store in a temporary directory, a raw HTTP/1.1
//! client and a raw MQTT client, both over real TLS sockets.

use std::net::SocketAddr;
use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::codec::Framed;
use twinhub_core::time::Timestamp;
use twinhub_mqtt::{
    Codec, ConnAck, Connect, ConnectReturnCode, Packet, Publish, QoS, SubAck, Subscribe,
    SubscribeReturnCode,
};
use twinhub_server::{HubConfig, RunningHub};

/// The host name every test hub answers to; SAS scopes and MQTT usernames name it.
pub(crate) const HOSTNAME: &str = "localhost";
/// The api-version the service SDKs send.
pub(crate) const API_VERSION: &str = "api-version=2021-04-12";
/// The upper bound on any single wait for the hub, so that a broken hub fails a test instead of
/// hanging it.
pub(crate) const WAIT: Duration = Duration::from_secs(10);
/// A fixed iothubowner key (32 bytes, base64) for hubs whose tests need to know it up front.
pub(crate) const KNOWN_OWNER_KEY: &str = "dGhpcyBpcyBhIHRlc3Qgb3duZXIga2V5IDMyIGJ5dGU=";
/// A well-formed key that no identity or policy on any test hub uses.
pub(crate) const FOREIGN_KEY: &str = "Zm9yZWlnbiBrZXkgdGhhdCBzaWducyBub3RoaW5nISE=";

/// Seconds since the Unix epoch.
pub(crate) fn now_unix() -> u64 {
    u64::try_from(Timestamp::now().unix_seconds()).expect("the clock is after 1970")
}

/// A SAS token signed with `key` for `resource` (e.g. `localhost/devices/d1`), expiring at `expiry`.
pub(crate) fn sas_token(resource: &str, key: &str, key_name: Option<&str>, expiry: u64) -> String {
    twinhub_core::sas::generate_token(resource, key, key_name, expiry).expect("token signs")
}

/// A device SAS token valid for an hour.
pub(crate) fn device_token(device_id: &str, key: &str) -> String {
    sas_token(
        &format!("{HOSTNAME}/devices/{device_id}"),
        key,
        None,
        now_unix() + 3600,
    )
}

/// The MQTT CONNECT an Azure SDK sends for `device_id` with `password` (a SAS token, or `None`
/// for X.509).
pub(crate) fn device_connect(
    device_id: &str,
    password: Option<&str>,
    clean_session: bool,
) -> Connect {
    let mut connect = Connect::new(device_id, clean_session, 60);
    connect.username = Some(format!("{HOSTNAME}/{device_id}/?{API_VERSION}"));
    connect.password = password.map(|p| Bytes::from(p.to_owned()));
    connect
}

/// Where a hub listens and how to reach it as its owner: enough to drive an in-process hub and
/// the `twinhub` binary alike.
#[derive(Clone)]
pub(crate) struct HubClient {
    pub(crate) mqtt_addr: SocketAddr,
    pub(crate) https_addr: SocketAddr,
    pub(crate) owner_key: String,
    roots: Arc<rustls::RootCertStore>,
}

impl HubClient {
    /// A client trusting the CA in `ca_pem` and owning the hub through `connection_string`.
    pub(crate) fn new(
        mqtt_addr: SocketAddr,
        https_addr: SocketAddr,
        ca_pem: &Path,
        connection_string: &str,
    ) -> HubClient {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca_pem).expect("the CA file is readable") {
            roots
                .add(cert.expect("the CA file holds PEM certificates"))
                .expect("the CA is usable");
        }
        HubClient {
            mqtt_addr,
            https_addr,
            owner_key: connection_string_key(connection_string).to_owned(),
            roots: Arc::new(roots),
        }
    }

    /// A TLS connector trusting the hub's CA, optionally presenting a client certificate.
    pub(crate) fn tls_connector(&self, client_cert: Option<(&str, &str)>) -> TlsConnector {
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(Arc::clone(&self.roots));
        let config = match client_cert {
            None => builder.with_no_client_auth(),
            Some((cert_pem, key_pem)) => {
                let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .expect("client certificate PEM");
                let key =
                    PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("client key PEM");
                builder
                    .with_client_auth_cert(certs, key)
                    .expect("client certificate usable")
            }
        };
        TlsConnector::from(Arc::new(config))
    }

    /// A TLS connection to `addr`, verified against the hub's CA as `localhost`.
    pub(crate) async fn tls(
        &self,
        addr: SocketAddr,
        client_cert: Option<(&str, &str)>,
    ) -> TlsStream<TcpStream> {
        self.try_tls(addr, client_cert)
            .await
            .expect("TLS connection to the hub")
    }

    /// Like [`HubClient::tls`], for callers that expect the hub may be gone.
    pub(crate) async fn try_tls(
        &self,
        addr: SocketAddr,
        client_cert: Option<(&str, &str)>,
    ) -> Result<TlsStream<TcpStream>, String> {
        let connector = self.tls_connector(client_cert);
        let connecting = async {
            let tcp = TcpStream::connect(addr).await?;
            connector
                .connect(ServerName::try_from(HOSTNAME).expect("server name"), tcp)
                .await
        };
        match tokio::time::timeout(WAIT, connecting).await {
            Err(_) => Err(format!("TLS handshake with {addr} timed out")),
            Ok(Err(e)) => Err(format!("TLS connection to {addr}: {e}")),
            Ok(Ok(stream)) => Ok(stream),
        }
    }

    /// An owner-signed service token valid for an hour.
    pub(crate) fn service_token(&self) -> String {
        sas_token(
            HOSTNAME,
            &self.owner_key,
            Some("iothubowner"),
            now_unix() + 3600,
        )
    }

    /// Sends one HTTPS request exactly as given (no Authorization added) and reads the answer.
    pub(crate) async fn https(&self, request: &HttpRequest<'_>) -> HttpResponse {
        self.try_https(request)
            .await
            .unwrap_or_else(|e| panic!("{} {}: {e}", request.method, request.target))
    }

    /// Like [`HubClient::https`], for callers that expect the hub may be gone.
    pub(crate) async fn try_https(
        &self,
        request: &HttpRequest<'_>,
    ) -> Result<HttpResponse, String> {
        let stream = self.try_tls(self.https_addr, None).await?;
        tokio::time::timeout(WAIT * 3, exchange(stream, request))
            .await
            .map_err(|_| "timed out".to_owned())?
    }

    /// A service call as the owner: `path` gets the api-version query, `body` is sent as JSON.
    pub(crate) async fn rest(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> HttpResponse {
        self.rest_with(method, path, &[], body.map(|b| b.to_string().into_bytes()))
            .await
    }

    /// A service call as the owner with extra headers and a raw body.
    pub(crate) async fn rest_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> HttpResponse {
        self.try_rest_with(method, path, headers, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// Like [`HubClient::rest_with`], for callers that expect the hub may be gone.
    pub(crate) async fn try_rest_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<HttpResponse, String> {
        let token = self.service_token();
        let mut all_headers = vec![("Authorization", token.as_str())];
        all_headers.extend_from_slice(headers);
        let target = with_api_version(path);
        self.try_https(&HttpRequest {
            method,
            target: &target,
            headers: &all_headers,
            body: body.as_deref(),
        })
        .await
    }

    /// Creates a SAS device with hub-generated keys and returns its primary key.
    pub(crate) async fn create_device(&self, device_id: &str) -> String {
        let body = serde_json::json!({
            "deviceId": device_id,
            "authentication": {"type": "sas", "symmetricKey": {"primaryKey": "", "secondaryKey": ""}},
        });
        let response = self
            .rest("PUT", &format!("/devices/{device_id}"), Some(&body))
            .await;
        assert_eq!(
            response.status,
            200,
            "creating {device_id}: {}",
            response.text()
        );
        response.json()["authentication"]["symmetricKey"]["primaryKey"]
            .as_str()
            .expect("the created device has a primary key")
            .to_owned()
    }

    /// A TLS connection to the MQTT port wrapped in our codec, not yet connected at the MQTT level.
    pub(crate) async fn mqtt_socket(&self, client_cert: Option<(&str, &str)>) -> MqttClient {
        let stream = self.tls(self.mqtt_addr, client_cert).await;
        MqttClient {
            framed: Framed::new(stream, Codec::new(1024 * 1024)),
            next_packet_id: 0,
        }
    }

    /// A device connected with its SAS key (clean session) whose CONNACK was accepted.
    pub(crate) async fn connect_device(&self, device_id: &str, key: &str) -> MqttClient {
        let mut client = self.mqtt_socket(None).await;
        let token = device_token(device_id, key);
        let ack = client
            .connect(device_connect(device_id, Some(&token), true))
            .await;
        assert_eq!(
            ack.code,
            ConnectReturnCode::Accepted,
            "{device_id} connects"
        );
        client
    }

    /// A device connected and subscribed to twin responses.
    pub(crate) async fn twin_device(&self, device_id: &str, key: &str) -> MqttClient {
        let mut client = self.connect_device(device_id, key).await;
        let ack = client
            .subscribe(&[("$iothub/twin/res/#", QoS::AtMostOnce)])
            .await;
        assert_eq!(
            ack.return_codes,
            vec![SubscribeReturnCode::Granted(QoS::AtMostOnce)]
        );
        client
    }
}

/// `path` with `api-version` appended to its query.
fn with_api_version(path: &str) -> String {
    let separator = if path.contains('?') { '&' } else { '?' };
    format!("{path}{separator}{API_VERSION}")
}

/// The `SharedAccessKey` of a connection string.
fn connection_string_key(connection_string: &str) -> &str {
    connection_string
        .trim()
        .split(';')
        .find_map(|part| part.strip_prefix("SharedAccessKey="))
        .expect("the connection string has a SharedAccessKey")
}

/// An in-process hub on ephemeral loopback ports with its store in a temporary directory.
pub(crate) struct TestHub {
    pub(crate) running: RunningHub,
    client: HubClient,
    _data_dir: tempfile::TempDir,
}

impl Deref for TestHub {
    type Target = HubClient;

    fn deref(&self) -> &HubClient {
        &self.client
    }
}

impl TestHub {
    /// A hub with default settings.
    pub(crate) async fn start() -> TestHub {
        TestHub::start_with(|_| {}).await
    }

    /// A hub whose configuration `adjust` may change after the loopback ports are set.
    pub(crate) async fn start_with(adjust: impl FnOnce(&mut HubConfig)) -> TestHub {
        let data_dir = tempfile::tempdir().expect("temporary directory");
        TestHub::start_in(data_dir, adjust).await
    }

    /// Stops the hub and starts a new one on the same data directory (on new ports).
    pub(crate) async fn restart(self) -> TestHub {
        let TestHub {
            running,
            _data_dir: data_dir,
            ..
        } = self;
        tokio::time::timeout(Duration::from_secs(15), running.shutdown())
            .await
            .expect("the hub shuts down in time");
        TestHub::start_in(data_dir, |_| {}).await
    }

    async fn start_in(data_dir: tempfile::TempDir, adjust: impl FnOnce(&mut HubConfig)) -> TestHub {
        let mut config = HubConfig::new(data_dir.path());
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        config.mqtt_addr = loopback;
        config.https_addr = loopback;
        adjust(&mut config);
        let running = tokio::time::timeout(WAIT, twinhub_server::start(config))
            .await
            .expect("the hub starts in time")
            .expect("the hub starts");
        let ca_pem = running
            .ca_pem_path
            .clone()
            .expect("the hub made its own CA");
        let client = HubClient::new(
            running.mqtt_addr,
            running.https_addr,
            &ca_pem,
            &running.service_connection_string,
        );
        TestHub {
            running,
            client,
            _data_dir: data_dir,
        }
    }

    /// Shuts the hub down, which must finish within its drain timeout.
    pub(crate) async fn stop(self) {
        tokio::time::timeout(Duration::from_secs(15), self.running.shutdown())
            .await
            .expect("the hub shuts down in time");
    }
}

/// One HTTP/1.1 request.
pub(crate) struct HttpRequest<'a> {
    pub(crate) method: &'a str,
    /// Path and query.
    pub(crate) target: &'a str,
    pub(crate) headers: &'a [(&'a str, &'a str)],
    pub(crate) body: Option<&'a [u8]>,
}

/// A parsed HTTP/1.1 response.
#[derive(Debug)]
pub(crate) struct HttpResponse {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl HttpResponse {
    /// The first value of header `name` (case-insensitive).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text, for messages.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    /// Asserts an IoT Hub error: `status`, the `iothub-errorcode` header and the legacy body
    /// `{"Message":"ErrorCode:<code>;...","ExceptionMessage":"Tracking ID:..."}`.
    pub(crate) fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "status of {}", self.text());
        assert_eq!(
            self.header("iothub-errorcode"),
            Some(code),
            "error code header of {}",
            self.text()
        );
        let body = self.json();
        let message = body["Message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with(&format!("ErrorCode:{code};")),
            "Message of {body}"
        );
        let exception = body["ExceptionMessage"].as_str().unwrap_or_default();
        assert!(
            exception.starts_with("Tracking ID:"),
            "ExceptionMessage of {body}"
        );
        let content_type = self.header("content-type").unwrap_or_default();
        assert!(
            content_type.starts_with("application/json"),
            "content type {content_type}"
        );
    }
}

/// Writes `request` with `Connection: close`, reads the response to EOF and parses it.
pub(crate) async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &HttpRequest<'_>,
) -> Result<HttpResponse, String> {
    let body = request.body.unwrap_or_default();
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {HOSTNAME}\r\nConnection: close\r\nContent-Length: {}\r\n",
        request.method,
        request.target,
        body.len()
    );
    if request.body.is_some() {
        head.push_str("Content-Type: application/json; charset=utf-8\r\n");
    }
    for (name, value) in request.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    stream
        .write_all(&bytes)
        .await
        .map_err(|e| format!("writing the request: {e}"))?;
    stream
        .flush()
        .await
        .map_err(|e| format!("flushing the request: {e}"))?;

    let mut raw = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
            // A peer that closes TCP without TLS close_notify still delivered a whole response.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => break,
            Err(e) => return Err(format!("reading the response: {e}")),
        }
    }
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Result<HttpResponse, String> {
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no end of headers in {:?}", String::from_utf8_lossy(raw)))?;
    let head = std::str::from_utf8(&raw[..head_end]).map_err(|_| "headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
        .collect();
    let mut response = HttpResponse {
        status,
        headers,
        body: Vec::new(),
    };
    let rest = &raw[head_end + 4..];
    response.body = if response
        .header("transfer-encoding")
        .is_some_and(|v| v.contains("chunked"))
    {
        decode_chunked(rest).ok_or("malformed chunked body")?
    } else if let Some(length) = response
        .header("content-length")
        .and_then(|v| v.parse().ok())
    {
        rest.get(..length)
            .ok_or("body shorter than its Content-Length")?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok(response)
}

fn decode_chunked(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size_hex = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16).ok()?;
        data = data.get(line_end + 2..)?;
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// A raw MQTT client: our codec over a TLS stream.
pub(crate) struct MqttClient {
    framed: Framed<TlsStream<TcpStream>, Codec>,
    next_packet_id: u16,
}

/// What reading from the hub produced.
#[derive(Debug)]
pub(crate) enum Received {
    Packet(Packet),
    /// EOF, a reset, or bytes our decoder refuses: the connection is over either way.
    Closed,
    TimedOut,
}

impl MqttClient {
    /// Sends one packet.
    pub(crate) async fn send(&mut self, packet: Packet) {
        assert!(self.try_send(packet).await, "the packet could not be sent");
    }

    /// Sends one packet; false if the connection is gone.
    pub(crate) async fn try_send(&mut self, packet: Packet) -> bool {
        matches!(
            tokio::time::timeout(WAIT, self.framed.send(packet)).await,
            Ok(Ok(()))
        )
    }

    /// Writes raw bytes, bypassing the codec. Errors are ignored: the hub may already be closing.
    pub(crate) async fn send_raw(&mut self, bytes: &[u8]) {
        let stream = self.framed.get_mut();
        let _ = tokio::time::timeout(WAIT, async {
            stream.write_all(bytes).await?;
            stream.flush().await
        })
        .await;
    }

    /// The next packet within `wait`.
    pub(crate) async fn recv_within(&mut self, wait: Duration) -> Received {
        match tokio::time::timeout(wait, self.framed.next()).await {
            Err(_) => Received::TimedOut,
            Ok(None | Some(Err(_))) => Received::Closed,
            Ok(Some(Ok(packet))) => Received::Packet(packet),
        }
    }

    /// The next packet; panics if the hub closes the connection or stays silent.
    pub(crate) async fn recv(&mut self) -> Packet {
        match self.recv_within(WAIT).await {
            Received::Packet(packet) => packet,
            other => panic!("expected a packet, got {other:?}"),
        }
    }

    /// Sends CONNECT and returns the CONNACK.
    pub(crate) async fn connect(&mut self, connect: Connect) -> ConnAck {
        self.send(Packet::Connect(connect)).await;
        match self.recv().await {
            Packet::ConnAck(ack) => ack,
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    fn packet_id(&mut self) -> u16 {
        self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
        self.next_packet_id
    }

    /// Subscribes to `filters` and returns the SUBACK, skipping publishes that arrive meanwhile.
    pub(crate) async fn subscribe(&mut self, filters: &[(&str, QoS)]) -> SubAck {
        let packet_id = self.packet_id();
        let filters = filters.iter().map(|(f, q)| ((*f).to_owned(), *q)).collect();
        self.send(Packet::Subscribe(Subscribe { packet_id, filters }))
            .await;
        loop {
            match self.recv().await {
                Packet::SubAck(ack) => {
                    assert_eq!(ack.packet_id, packet_id, "SUBACK echoes the packet id");
                    return ack;
                }
                Packet::Publish(Publish {
                    packet_id: Some(id),
                    ..
                }) => {
                    self.send(Packet::PubAck(id)).await;
                }
                Packet::Publish(_) | Packet::PubAck(_) => {}
                other => panic!("expected SUBACK, got {other:?}"),
            }
        }
    }

    /// Publishes at QoS 0.
    pub(crate) async fn publish(&mut self, topic: &str, payload: impl Into<Bytes>) {
        self.send(Packet::Publish(Publish::at_most_once(topic, payload)))
            .await;
    }

    /// The next PUBLISH from the hub within `wait` (acknowledging it if it is QoS 1), or `None`
    /// if none arrives. Panics if the connection closes.
    pub(crate) async fn next_publish_within(&mut self, wait: Duration) -> Option<Publish> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv_within(left).await {
                Received::Packet(Packet::Publish(publish)) => {
                    if let Some(id) = publish.packet_id {
                        self.send(Packet::PubAck(id)).await;
                    }
                    return Some(publish);
                }
                Received::Packet(Packet::PubAck(_) | Packet::PingResp) => {}
                Received::Packet(other) => panic!("expected PUBLISH, got {other:?}"),
                Received::Closed => panic!("the hub closed the connection"),
                Received::TimedOut => return None,
            }
        }
    }

    /// The next PUBLISH from the hub whose topic starts with `prefix`, skipping others.
    pub(crate) async fn expect_publish(&mut self, prefix: &str) -> Publish {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let publish = self
                .next_publish_within(left)
                .await
                .unwrap_or_else(|| panic!("no PUBLISH to {prefix}… arrived"));
            if publish.topic.starts_with(prefix) {
                return publish;
            }
        }
    }

    /// Sends a twin request (`$iothub/twin/{verb_path}/?$rid={rid}`) and returns the response's
    /// status, topic and body.
    pub(crate) async fn twin_request(
        &mut self,
        verb_path: &str,
        rid: &str,
        body: &[u8],
    ) -> TwinResponse {
        self.publish(
            &format!("$iothub/twin/{verb_path}/?$rid={rid}"),
            Bytes::copy_from_slice(body),
        )
        .await;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let publish = self
                .next_publish_within(left)
                .await
                .unwrap_or_else(|| panic!("no twin response for $rid={rid}"));
            let Some(status) = twin_response_status(&publish.topic, rid) else {
                continue;
            };
            return TwinResponse {
                status,
                topic: publish.topic,
                body: publish.payload,
            };
        }
    }

    /// The device's twin (`{"desired":..,"reported":..}`) via `$iothub/twin/GET`.
    pub(crate) async fn get_twin(&mut self, rid: &str) -> Value {
        let response = self.twin_request("GET", rid, b" ").await;
        assert_eq!(response.status, 200, "twin GET: {response:?}");
        response.json()
    }

    /// Sends a reported-properties patch and returns the response.
    pub(crate) async fn patch_reported(&mut self, rid: &str, patch: &[u8]) -> TwinResponse {
        self.twin_request("PATCH/properties/reported", rid, patch)
            .await
    }

    /// Asserts that the hub closes the connection within `wait`; packets it sends before closing
    /// are ignored.
    pub(crate) async fn expect_closed_within(&mut self, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv_within(left).await {
                Received::Closed => return,
                Received::TimedOut => {
                    panic!("the hub did not close the connection within {wait:?}")
                }
                Received::Packet(_) => {}
            }
        }
    }

    /// Asserts that the hub closes the connection within the usual wait.
    pub(crate) async fn expect_closed(&mut self) {
        self.expect_closed_within(WAIT).await;
    }

    /// Sends DISCONNECT and waits for the hub to close its side.
    pub(crate) async fn disconnect(mut self) {
        self.send(Packet::Disconnect).await;
        self.expect_closed().await;
    }
}

/// The status of `topic` if it is the twin response (`$iothub/twin/res/{status}/?$rid=..`) to `rid`.
pub(crate) fn twin_response_status(topic: &str, rid: &str) -> Option<u16> {
    let (status, query) = topic.strip_prefix("$iothub/twin/res/")?.split_once("/?")?;
    query
        .split('&')
        .any(|pair| pair.strip_prefix("$rid=") == Some(rid))
        .then_some(())?;
    status.parse().ok()
}

/// A `$iothub/twin/res/...` answer.
#[derive(Debug)]
pub(crate) struct TwinResponse {
    pub(crate) status: u16,
    pub(crate) topic: String,
    pub(crate) body: Bytes,
}

impl TwinResponse {
    /// The body as JSON.
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("twin response body is not JSON ({e}): {:?}", self.body))
    }

    /// The `$version` query value of the topic.
    pub(crate) fn version(&self) -> Option<u64> {
        let (_, query) = self.topic.split_once('?')?;
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix("$version=")?.parse().ok())
    }
}

/// A direct-method request as the device receives it.
pub(crate) struct MethodRequest {
    pub(crate) name: String,
    pub(crate) rid: String,
    pub(crate) payload: Bytes,
}

impl MqttClient {
    /// The next method request (`$iothub/methods/POST/{name}/?$rid={rid}`).
    pub(crate) async fn expect_method_request(&mut self) -> MethodRequest {
        let publish = self.expect_publish("$iothub/methods/POST/").await;
        let rest = publish
            .topic
            .strip_prefix("$iothub/methods/POST/")
            .unwrap_or_default();
        let (name, query) = rest.split_once("/?").expect("method topic has /?$rid=");
        let rid = query
            .split('&')
            .find_map(|pair| pair.strip_prefix("$rid="))
            .expect("method topic has $rid");
        MethodRequest {
            name: name.to_owned(),
            rid: rid.to_owned(),
            payload: publish.payload,
        }
    }

    /// Answers method request `rid` with `status` and `payload`.
    pub(crate) async fn answer_method(
        &mut self,
        rid: &str,
        status: i32,
        payload: impl Into<Bytes>,
    ) {
        self.publish(
            &format!("$iothub/methods/res/{status}/?$rid={rid}"),
            payload,
        )
        .await;
    }
}

/// The body of a method invocation.
pub(crate) fn method_call(name: &str, payload: &Value, response_timeout: u64) -> Value {
    serde_json::json!({"methodName": name, "payload": payload, "responseTimeoutInSeconds": response_timeout})
}
