//! Opening one device connection: TCP, TLS, and for MQTT roles CONNECT and SUBSCRIBE.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::ServerName;
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::codec::Framed;
use twinhub_mqtt::{
    Codec, Connect, ConnectReturnCode, Packet, QoS, Subscribe, SubscribeReturnCode,
};

use super::{Role, device_id};

/// One device's connection, framed with the project's MQTT codec.
pub(super) type Conn = Framed<TlsStream<TcpStream>, Codec>;

/// Largest packet a device accepts (direct-method and twin payloads are far smaller).
const MAX_PACKET: usize = 256 * 1024;
/// How long one device may take to connect before it counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// The host name the hub's, Mosquitto's and the echo server's certificates name.
pub(super) const HOSTNAME: &str = "localhost";
/// SAS tokens are signed for a day, far longer than any run.
const TOKEN_LIFETIME_SECS: u64 = 24 * 3600;

/// Loopback source addresses a fleet's connections are spread over (127.0.0.2 and up).
const SOURCE_ADDRESSES: usize = 64;

/// Connects to `addr`, from a loopback source address chosen by `index` when `addr` is IPv4
/// loopback. From a single source address every `connect` searches the ephemeral port range for a
/// free 4-tuple by walking the ports already in use (`__inet_check_established` took three
/// quarters of a generator's CPU by 19,000 connections); spread over many addresses, each keeps
/// few ports in use, and the generator measures the server instead of that search.
async fn connect_from_spread_source(addr: SocketAddr, index: usize) -> std::io::Result<TcpStream> {
    let SocketAddr::V4(target) = addr else {
        return TcpStream::connect(addr).await;
    };
    if !target.ip().is_loopback() {
        return TcpStream::connect(addr).await;
    }
    let last_octet = u8::try_from(2 + index % SOURCE_ADDRESSES).unwrap_or(2);
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((Ipv4Addr::new(127, 0, 0, last_octet), 0)))?;
    socket.connect(addr).await
}

/// Why one device could not connect.
#[derive(Debug, thiserror::Error)]
pub(super) enum DeviceError {
    #[error("TCP or TLS: {0}")]
    Io(#[from] std::io::Error),
    #[error("MQTT: {0}")]
    Mqtt(String),
    #[error("the server closed the connection during setup")]
    Closed,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot sign the SAS token: {0}")]
    Token(String),
}

/// Where devices connect and how they trust the server.
#[derive(Clone)]
pub(super) struct Target {
    pub(super) addr: SocketAddr,
    pub(super) connector: TlsConnector,
    pub(super) device_key: Arc<str>,
}

impl Target {
    /// Opens device `index` for `role`, ready for its traffic.
    pub(super) async fn open(&self, role: Role, index: usize) -> Result<Conn, DeviceError> {
        tokio::time::timeout(CONNECT_TIMEOUT, self.open_now(role, index))
            .await
            .map_err(|_| DeviceError::Timeout(CONNECT_TIMEOUT))?
    }

    async fn open_now(&self, role: Role, index: usize) -> Result<Conn, DeviceError> {
        let tcp = connect_from_spread_source(self.addr, index).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from(HOSTNAME)
            .map_err(|e| DeviceError::Io(std::io::Error::other(e)))?;
        let tls = self.connector.connect(name, tcp).await?;
        let mut conn = Framed::new(tls, Codec::new(MAX_PACKET));
        let id = device_id(index);
        let (connect, filter) = match role {
            Role::TlsIdle => return Ok(conn),
            Role::HubIdle => (self.hub_connect(&id)?, None),
            Role::HubMethods => (
                self.hub_connect(&id)?,
                Some("$iothub/methods/POST/#".to_owned()),
            ),
            Role::HubReporter => (
                self.hub_connect(&id)?,
                Some("$iothub/twin/res/#".to_owned()),
            ),
            Role::HubDesired => (
                self.hub_connect(&id)?,
                Some("$iothub/twin/PATCH/properties/desired/#".to_owned()),
            ),
            Role::MosquittoResponder => (
                Connect::new(format!("resp-{index}"), true, 0),
                Some(format!("bench/req/{id}")),
            ),
            Role::MosquittoRequester => (
                Connect::new(format!("req-{index}"), true, 0),
                Some(format!("bench/res/{index}")),
            ),
        };
        conn.send(Packet::Connect(connect))
            .await
            .map_err(|e| DeviceError::Mqtt(e.to_string()))?;
        match next_packet(&mut conn).await? {
            Packet::ConnAck(ack) if ack.code == ConnectReturnCode::Accepted => {}
            Packet::ConnAck(ack) => {
                return Err(DeviceError::Mqtt(format!(
                    "CONNACK refused: {:?}",
                    ack.code
                )));
            }
            other => {
                return Err(DeviceError::Mqtt(format!(
                    "expected CONNACK, got {}",
                    other.name()
                )));
            }
        }
        if let Some(filter) = filter {
            conn.send(Packet::Subscribe(Subscribe {
                packet_id: 1,
                filters: vec![(filter, QoS::AtMostOnce)],
            }))
            .await
            .map_err(|e| DeviceError::Mqtt(e.to_string()))?;
            match next_packet(&mut conn).await? {
                Packet::SubAck(ack)
                    if ack
                        .return_codes
                        .iter()
                        .all(|c| *c != SubscribeReturnCode::Failure) => {}
                Packet::SubAck(_) => return Err(DeviceError::Mqtt("SUBACK refused".into())),
                other => {
                    return Err(DeviceError::Mqtt(format!(
                        "expected SUBACK, got {}",
                        other.name()
                    )));
                }
            }
        }
        Ok(conn)
    }

    /// The CONNECT an Azure SDK sends: IoT Hub username, SAS token password, no keep-alive (the
    /// benchmark holds connections without pinging).
    fn hub_connect(&self, id: &str) -> Result<Connect, DeviceError> {
        let expiry = super::unix_micros_now() / 1_000_000 + TOKEN_LIFETIME_SECS;
        let token = twinhub_core::sas::generate_token(
            &format!("{HOSTNAME}/devices/{id}"),
            &self.device_key,
            None,
            expiry,
        )
        .map_err(|e| DeviceError::Token(e.to_string()))?;
        let mut connect = Connect::new(id, true, 0);
        connect.username = Some(format!("{HOSTNAME}/{id}/?api-version=2021-04-12"));
        connect.password = Some(Bytes::from(token));
        Ok(connect)
    }
}

async fn next_packet(conn: &mut Conn) -> Result<Packet, DeviceError> {
    match conn.next().await {
        Some(Ok(packet)) => Ok(packet),
        Some(Err(e)) => Err(DeviceError::Mqtt(e.to_string())),
        None => Err(DeviceError::Closed),
    }
}
