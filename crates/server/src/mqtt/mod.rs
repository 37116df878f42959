//! The device endpoint: MQTT 3.1.1 over TLS, and MQTT over WebSockets (reached through `rest`).

mod connection;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::{Decoder, Encoder, Framed};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use twinhub_mqtt::{Codec, DecodeError, Packet};

use crate::hub::Hub;
use connection::PacketIo;

/// The largest MQTT packet accepted: a 256 KB device-to-cloud message plus its topic.
pub(crate) const MAX_PACKET_SIZE: usize = 256 * 1024 + 8 * 1024;
/// A TLS handshake must finish this soon.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl<T> PacketIo for Framed<T, Codec>
where
    T: AsyncRead + AsyncWrite + Unpin + Send,
{
    async fn recv(&mut self) -> Option<Result<Packet, DecodeError>> {
        self.next().await
    }

    async fn send(&mut self, packet: Packet) -> std::io::Result<()> {
        SinkExt::send(self, packet)
            .await
            .map_err(std::io::Error::other)
    }

    async fn send_all(&mut self, packets: Vec<Packet>) -> std::io::Result<()> {
        for packet in packets {
            self.feed(packet).await.map_err(std::io::Error::other)?;
        }
        SinkExt::<Packet>::flush(self)
            .await
            .map_err(std::io::Error::other)
    }
}

/// Accepts MQTT/TLS connections until `shutdown` fires. Each connection is one task.
pub(crate) async fn serve_tls(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    hub: Hub,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Typically EMFILE: back off instead of spinning.
                tracing::warn!(error = %e, "accepting an MQTT connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (acceptor, hub, shutdown) = (acceptor.clone(), hub.clone(), shutdown.clone());
        tracker.spawn(async move {
            let _ = tcp.set_nodelay(true);
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let certificate = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|c| c.as_ref().to_vec());
            // Buffers grow to the packets a connection carries; most devices sit idle, and the
            // codec's default 8 KB each way would double what an idle connection costs.
            let framed = Framed::with_capacity(tls, Codec::new(MAX_PACKET_SIZE), CODEC_BUFFER);
            connection::serve(hub, framed, certificate, shutdown).await;
        });
    }
}

/// Initial capacity of a connection's read and write buffers: a CONNECT fits.
const CODEC_BUFFER: usize = 512;

/// MQTT carried in binary WebSocket messages; packets may span or share messages.
struct WebSocketIo {
    socket: WebSocket,
    codec: Codec,
    buffer: BytesMut,
}

impl PacketIo for WebSocketIo {
    async fn recv(&mut self) -> Option<Result<Packet, DecodeError>> {
        loop {
            match self.codec.decode(&mut self.buffer) {
                Ok(Some(packet)) => return Some(Ok(packet)),
                Ok(None) => {}
                Err(e) => return Some(Err(e)),
            }
            match self.socket.recv().await {
                Some(Ok(Message::Binary(bytes))) => self.buffer.extend_from_slice(&bytes),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Text(_))) => {
                    return Some(Err(DecodeError::MalformedPacket("text WebSocket message")));
                }
                Some(Ok(Message::Close(_)) | Err(_)) | None => return None,
            }
        }
    }

    async fn send(&mut self, packet: Packet) -> std::io::Result<()> {
        self.send_all(vec![packet]).await
    }

    async fn send_all(&mut self, packets: Vec<Packet>) -> std::io::Result<()> {
        let mut buffer = BytesMut::new();
        for packet in packets {
            self.codec
                .encode(packet, &mut buffer)
                .map_err(std::io::Error::other)?;
        }
        self.socket
            .send(Message::Binary(buffer.freeze()))
            .await
            .map_err(std::io::Error::other)
    }
}

pub(crate) async fn serve_websocket(
    hub: Hub,
    socket: WebSocket,
    peer_certificate: Option<Arc<Vec<u8>>>,
    shutdown: CancellationToken,
) {
    let io = WebSocketIo {
        socket,
        codec: Codec::new(MAX_PACKET_SIZE),
        buffer: BytesMut::new(),
    };
    connection::serve(hub, io, peer_certificate.map(|c| c.to_vec()), shutdown).await;
}
