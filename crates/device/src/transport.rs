//! The one place that knows rumqttc: opens one MQTT connection (TLS or secure WebSockets),
//! turns its events into acknowledgements for individual publishes and subscribes, and forwards
//! the hub's publishes. A connection is never reopened here; the client makes a new one.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions, NetworkOptions,
    Outgoing, Packet, SubscribeFilter, SubscribeReasonCode, TlsConfiguration,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Largest packet accepted from the hub: a method request carries up to 128 KB and a twin up to
/// 2 × 32 KB plus overhead.
const MAX_INCOMING_PACKET: usize = 512 * 1024;
/// Largest packet sent: telemetry may be 256 KB plus topic.
const MAX_OUTGOING_PACKET: usize = 300 * 1024;
/// Requests queued towards rumqttc's event loop before a sender waits.
const REQUEST_CAPACITY: usize = 64;
/// Keep-alive bounds: rumqttc's minimum and the largest IoT Hub accepts.
const MIN_KEEP_ALIVE: Duration = Duration::from_secs(1);
const MAX_KEEP_ALIVE: Duration = Duration::from_secs(1177);
/// How long a DISCONNECT may take to be written before the socket is dropped anyway.
const DISCONNECT_GRACE: Duration = Duration::from_secs(2);

/// Delivery guarantee of a publish or subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Qos {
    /// Fire and forget: done once written.
    AtMostOnce,
    /// Done when the hub's PUBACK arrives.
    AtLeastOnce,
}

/// Where and how to connect.
pub(crate) struct Endpoint {
    pub(crate) client_id: String,
    /// TCP/TLS target (the gateway host when there is one); TLS verifies this name.
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) websocket: bool,
    pub(crate) tls: Arc<rustls::ClientConfig>,
    pub(crate) keep_alive: Duration,
    pub(crate) connect_timeout: Duration,
}

/// What the hub sent, or the end of the connection.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// A PUBLISH from the hub.
    Publish { topic: String, payload: Bytes },
    /// The connection ended (the reason is safe to log: it never holds credentials).
    Closed(String),
}

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenError {
    /// The hub answered CONNACK with this non-zero return code.
    #[error("the hub refused the connection (CONNACK return code {0})")]
    Refused(u8),
    /// The network, TLS or WebSocket layer failed, or the hub did not answer in time.
    #[error("{0}")]
    Network(String),
}

/// The connection went away before the request could be handed to it.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the connection is closed")]
pub(crate) struct LinkDown;

/// Packet-id bookkeeping: rumqttc reports `Outgoing::Publish(pkid)` / `Outgoing::Subscribe(pkid)`
/// in the order requests were queued, so waiters queued in the same order are matched to packet
/// ids there and completed when the PUBACK / SUBACK with that id arrives.
#[derive(Default)]
struct Correlation {
    unsent_publishes: VecDeque<(Qos, oneshot::Sender<()>)>,
    /// A publish rumqttc held back because its packet id was still in flight (hubs that ack out
    /// of order); it goes out when that id is acknowledged.
    collided: Option<oneshot::Sender<()>>,
    awaiting_puback: HashMap<u16, oneshot::Sender<()>>,
    unsent_subscribes: VecDeque<oneshot::Sender<Vec<bool>>>,
    awaiting_suback: HashMap<u16, oneshot::Sender<Vec<bool>>>,
    disconnect_sent: Option<oneshot::Sender<()>>,
}

/// One open MQTT connection.
pub(crate) struct MqttConnection {
    client: AsyncClient,
    correlation: Arc<Mutex<Correlation>>,
    /// Keeps "register waiter, queue request" atomic so the two queues stay in the same order.
    send_order: tokio::sync::Mutex<()>,
    poller: JoinHandle<()>,
}

impl MqttConnection {
    /// Connects and waits for CONNACK. Returns the connection, whether the hub kept a session,
    /// and the stream of what the hub sends.
    pub(crate) async fn open(
        endpoint: &Endpoint,
        username: String,
        password: String,
    ) -> Result<(MqttConnection, bool, mpsc::UnboundedReceiver<Inbound>), OpenError> {
        let broker = if endpoint.websocket {
            format!(
                "wss://{}:{}/$iothub/websocket",
                bracket_ipv6(&endpoint.host),
                endpoint.port
            )
        } else {
            endpoint.host.clone()
        };
        let mut options = MqttOptions::new(endpoint.client_id.clone(), broker, endpoint.port);
        let tls = TlsConfiguration::Rustls(Arc::clone(&endpoint.tls));
        options.set_transport(if endpoint.websocket {
            rumqttc::Transport::Wss(tls)
        } else {
            rumqttc::Transport::Tls(tls)
        });
        // rumqttc refuses keep-alives below one second (it asserts); IoT Hub's maximum is 1177 s.
        options.set_keep_alive(endpoint.keep_alive.clamp(MIN_KEEP_ALIVE, MAX_KEEP_ALIVE));
        if !endpoint.client_id.is_empty() {
            // Every Azure SDK connects with CleanSession=0 so the hub keeps its subscriptions.
            options.set_clean_session(false);
        }
        options.set_credentials(username, password);
        options.set_max_packet_size(MAX_INCOMING_PACKET, MAX_OUTGOING_PACKET);
        options.set_request_channel_capacity(REQUEST_CAPACITY);
        let (client, mut event_loop) = AsyncClient::new(options, REQUEST_CAPACITY);
        let mut network = NetworkOptions::new();
        network.set_connection_timeout(endpoint.connect_timeout.as_secs().max(1));
        event_loop.set_network_options(network);

        let session_present = match event_loop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(connack))) => connack.session_present,
            Ok(other) => {
                return Err(OpenError::Network(format!(
                    "expected CONNACK, got {other:?}"
                )));
            }
            Err(ConnectionError::ConnectionRefused(code)) => {
                return Err(OpenError::Refused(return_code(code)));
            }
            Err(e) => return Err(OpenError::Network(e.to_string())),
        };
        let correlation = Arc::new(Mutex::new(Correlation::default()));
        let (inbound, inbound_rx) = mpsc::unbounded_channel();
        let poller = tokio::spawn(poll(event_loop, Arc::clone(&correlation), inbound));
        Ok((
            MqttConnection {
                client,
                correlation,
                send_order: tokio::sync::Mutex::new(()),
                poller,
            },
            session_present,
            inbound_rx,
        ))
    }

    /// Queues a publish. The receiver completes when it was written (QoS 0) or acknowledged
    /// (QoS 1); it fails if the connection ends first.
    pub(crate) async fn publish(
        &self,
        topic: String,
        payload: Bytes,
        qos: Qos,
    ) -> Result<oneshot::Receiver<()>, LinkDown> {
        let (done, waiter) = oneshot::channel();
        let _order = self.send_order.lock().await;
        lock(&self.correlation)
            .unsent_publishes
            .push_back((qos, done));
        let mqtt_qos = match qos {
            Qos::AtMostOnce => rumqttc::QoS::AtMostOnce,
            Qos::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
        };
        if self
            .client
            .publish_bytes(topic, mqtt_qos, false, payload)
            .await
            .is_err()
        {
            lock(&self.correlation).unsent_publishes.pop_back();
            return Err(LinkDown);
        }
        Ok(waiter)
    }

    /// Queues one SUBSCRIBE for all `filters` at QoS 1. The receiver yields, per filter, whether
    /// the hub granted it.
    pub(crate) async fn subscribe(
        &self,
        filters: &[&str],
    ) -> Result<oneshot::Receiver<Vec<bool>>, LinkDown> {
        let (done, waiter) = oneshot::channel();
        let _order = self.send_order.lock().await;
        lock(&self.correlation).unsent_subscribes.push_back(done);
        let filters = filters
            .iter()
            .map(|filter| SubscribeFilter::new((*filter).to_owned(), rumqttc::QoS::AtLeastOnce));
        if self.client.subscribe_many(filters).await.is_err() {
            lock(&self.correlation).unsent_subscribes.pop_back();
            return Err(LinkDown);
        }
        Ok(waiter)
    }

    /// Sends DISCONNECT (waiting briefly for it to be written) and closes the socket.
    pub(crate) async fn disconnect(&self) {
        let (sent, waiter) = oneshot::channel();
        lock(&self.correlation).disconnect_sent = Some(sent);
        if self.client.disconnect().await.is_ok() {
            let _ = tokio::time::timeout(DISCONNECT_GRACE, waiter).await;
        }
        self.poller.abort();
    }
}

impl Drop for MqttConnection {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

/// Drives rumqttc's event loop until the connection ends; never reconnects.
async fn poll(
    mut event_loop: EventLoop,
    correlation: Arc<Mutex<Correlation>>,
    inbound: mpsc::UnboundedSender<Inbound>,
) {
    loop {
        let event = match event_loop.poll().await {
            Ok(event) => event,
            Err(e) => {
                let _ = inbound.send(Inbound::Closed(e.to_string()));
                return;
            }
        };
        match event {
            Event::Incoming(Packet::Publish(publish)) => {
                let message = Inbound::Publish {
                    topic: publish.topic,
                    payload: publish.payload,
                };
                if inbound.send(message).is_err() {
                    return;
                }
            }
            Event::Incoming(Packet::PubAck(ack)) => {
                if let Some(done) = lock(&correlation).awaiting_puback.remove(&ack.pkid) {
                    let _ = done.send(());
                }
            }
            Event::Incoming(Packet::SubAck(ack)) => {
                if let Some(done) = lock(&correlation).awaiting_suback.remove(&ack.pkid) {
                    let granted = ack
                        .return_codes
                        .iter()
                        .map(|code| matches!(code, SubscribeReasonCode::Success(_)))
                        .collect();
                    let _ = done.send(granted);
                }
            }
            Event::Incoming(Packet::Disconnect) => {
                let _ = inbound.send(Inbound::Closed("the hub sent DISCONNECT".to_owned()));
                return;
            }
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                let mut correlation = lock(&correlation);
                let waiter = match correlation.collided.take() {
                    Some(done) => Some((Qos::AtLeastOnce, done)),
                    None => correlation.unsent_publishes.pop_front(),
                };
                match waiter {
                    Some((Qos::AtLeastOnce, done)) => {
                        correlation.awaiting_puback.insert(pkid, done);
                    }
                    Some((Qos::AtMostOnce, done)) => {
                        let _ = done.send(());
                    }
                    None => {}
                }
            }
            Event::Outgoing(Outgoing::AwaitAck(_)) => {
                let mut correlation = lock(&correlation);
                correlation.collided = correlation
                    .unsent_publishes
                    .pop_front()
                    .map(|(_, done)| done);
            }
            Event::Outgoing(Outgoing::Subscribe(pkid)) => {
                let mut correlation = lock(&correlation);
                if let Some(done) = correlation.unsent_subscribes.pop_front() {
                    correlation.awaiting_suback.insert(pkid, done);
                }
            }
            Event::Outgoing(Outgoing::Disconnect) => {
                if let Some(sent) = lock(&correlation).disconnect_sent.take() {
                    let _ = sent.send(());
                }
            }
            Event::Incoming(_) | Event::Outgoing(_) => {}
        }
    }
}

/// The correlation state stays consistent even if a holder panicked (every update is one step).
fn lock(correlation: &Mutex<Correlation>) -> MutexGuard<'_, Correlation> {
    correlation.lock().unwrap_or_else(PoisonError::into_inner)
}

fn return_code(code: ConnectReturnCode) -> u8 {
    match code {
        ConnectReturnCode::Success => 0,
        ConnectReturnCode::RefusedProtocolVersion => 1,
        ConnectReturnCode::BadClientId => 2,
        ConnectReturnCode::ServiceUnavailable => 3,
        ConnectReturnCode::BadUserNamePassword => 4,
        ConnectReturnCode::NotAuthorized => 5,
    }
}

/// IPv6 literals need brackets inside a URL.
fn bracket_ipv6(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}
