//! One device connection, from CONNECT to close. Transport-agnostic: TLS sockets and WebSockets
//! both arrive here as a [`PacketIo`].

use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;
use twinhub_mqtt::{
    ConnAck, Connect, ConnectReturnCode, DecodeError, Packet, Publish, QoS, SubAck,
    SubscribeReturnCode,
};
use twinhub_protocol::error::{ErrorCode, mqtt_error_body};
use twinhub_protocol::topics::{self, DevicePublish, Subscription};
use twinhub_protocol::username;

use crate::hub::{Hub, HubError, IdentityKey, MethodOutcome, Outbound, Session, SessionGuard};
use crate::{error_code, tracking_id};

/// A duplex stream of MQTT packets.
pub(crate) trait PacketIo: Send {
    /// The next packet; `None` when the peer closed the connection.
    fn recv(&mut self) -> impl Future<Output = Option<Result<Packet, DecodeError>>> + Send;
    fn send(&mut self, packet: Packet) -> impl Future<Output = std::io::Result<()>> + Send;
    /// Sends the packets in order with one flush: a PUBACK and the response it goes with
    /// leave in one write.
    fn send_all(
        &mut self,
        packets: Vec<Packet>,
    ) -> impl Future<Output = std::io::Result<()>> + Send;
}

/// A client must send CONNECT this soon after the transport is up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// IoT Hub's cap on the server-side keep-alive timeout.
const MAX_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(1767);

pub(crate) async fn serve(
    hub: Hub,
    mut io: impl PacketIo,
    peer_certificate: Option<Vec<u8>>,
    shutdown: CancellationToken,
) {
    let connect = match timeout(CONNECT_TIMEOUT, io.recv()).await {
        Ok(Some(Ok(Packet::Connect(connect)))) => connect,
        Ok(Some(Err(e))) => {
            tracing::debug!(error = %e, "malformed first packet; closing");
            return;
        }
        _ => return,
    };
    let Some(mut connection) = accept(&hub, &mut io, connect, peer_certificate.as_deref()).await
    else {
        return;
    };
    let key = connection.guard.session().key.clone();
    tracing::info!(identity = %key, "device connected");
    let reason = connection.run(&hub, &mut io, &shutdown).await;
    tracing::info!(identity = %key, reason, "device disconnected");
}

struct Connection {
    guard: SessionGuard,
    outbound: mpsc::Receiver<Outbound>,
    keep_alive: Option<Duration>,
    sas_deadline: Option<Instant>,
}

/// Authenticates CONNECT and answers CONNACK. `None` when the connection was refused.
async fn accept(
    hub: &Hub,
    io: &mut impl PacketIo,
    connect: Connect,
    peer_certificate: Option<&[u8]>,
) -> Option<Connection> {
    let refuse = |code| {
        Packet::ConnAck(ConnAck {
            session_present: false,
            code,
        })
    };
    if connect.protocol_name != "MQTT" || connect.protocol_level != 4 {
        let _ = io
            .send(refuse(ConnectReturnCode::UnacceptableProtocolVersion))
            .await;
        return None;
    }
    let parsed = connect.username.as_deref().map(username::parse_username);
    let Some(Ok(user)) = parsed else {
        hub.metrics().auth_failures.inc("mqtt");
        let _ = io.send(refuse(ConnectReturnCode::NotAuthorized)).await;
        return None;
    };
    let (client_device, client_module) = username::parse_client_id(&connect.client_id);
    if client_device.is_empty()
        || client_device != user.device_id
        || client_module != user.module_id
    {
        let _ = io.send(refuse(ConnectReturnCode::IdentifierRejected)).await;
        return None;
    }
    let key = IdentityKey {
        device_id: user.device_id.clone(),
        module_id: user.module_id.clone(),
    };
    let password = match connect.password.as_deref().map(std::str::from_utf8) {
        Some(Ok(p)) => Some(p),
        Some(Err(_)) => {
            hub.metrics().auth_failures.inc("mqtt");
            let _ = io
                .send(refuse(ConnectReturnCode::BadUsernameOrPassword))
                .await;
            return None;
        }
        None => None,
    };
    let grant = match hub.authenticate_device(&key, password, peer_certificate) {
        Ok(grant) => grant,
        Err(e) => {
            hub.metrics().auth_failures.inc("mqtt");
            tracing::warn!(identity = %key, reason = %e, "device authentication failed");
            let _ = io.send(refuse(ConnectReturnCode::NotAuthorized)).await;
            return None;
        }
    };
    let (guard, outbound, session_present) =
        match hub.attach(key.clone(), connect.clean_session).await {
            Ok(attached) => attached,
            Err(e) => {
                tracing::error!(identity = %key, error = %e, "could not open a session");
                let _ = io.send(refuse(ConnectReturnCode::ServerUnavailable)).await;
                return None;
            }
        };
    if let Err(e) = hub.set_model_id(&key, user.model_id.clone()).await {
        tracing::warn!(identity = %key, error = %e, "could not record the model id");
    }
    let accepted = ConnAck {
        session_present,
        code: ConnectReturnCode::Accepted,
    };
    if io.send(Packet::ConnAck(accepted)).await.is_err() {
        return None;
    }
    let keep_alive = (connect.keep_alive > 0).then(|| {
        Duration::from_millis(u64::from(connect.keep_alive) * 1500).min(MAX_KEEP_ALIVE_TIMEOUT)
    });
    let sas_deadline = grant.expires_at.map(|expiry| {
        let now = twinhub_core::time::Timestamp::now().unix_seconds();
        let left = i64::try_from(expiry)
            .unwrap_or(i64::MAX)
            .saturating_sub(now)
            .max(0);
        Instant::now() + Duration::from_secs(left.unsigned_abs())
    });
    Some(Connection {
        guard,
        outbound,
        keep_alive,
        sas_deadline,
    })
}

async fn at(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// What the loop does after a packet.
enum Next {
    Continue,
    Close(&'static str),
}

impl Connection {
    async fn run(
        &mut self,
        hub: &Hub,
        io: &mut impl PacketIo,
        shutdown: &CancellationToken,
    ) -> &'static str {
        let mut last_inbound = Instant::now();
        loop {
            let keep_alive_deadline = self.keep_alive.map(|k| last_inbound + k);
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return "hub shutting down",
                message = self.outbound.recv() => {
                    let packet = match message {
                        Some(Outbound::DesiredPatch { version, body }) => publish_packet(topics::desired_patch_topic(version), body),
                        Some(Outbound::MethodRequest { name, rid, payload }) => publish_packet(topics::method_request_topic(&name, &rid), payload),
                        Some(Outbound::Close { reason }) => return reason,
                        None => return "session closed",
                    };
                    if io.send(packet).await.is_err() {
                        return "write failed";
                    }
                }
                () = at(self.sas_deadline) => return "SAS token expired",
                () = at(keep_alive_deadline) => return "keep-alive timeout",
                packet = io.recv() => {
                    last_inbound = Instant::now();
                    let packet = match packet {
                        None => return "closed by device",
                        Some(Err(e)) => {
                            tracing::warn!(identity = %self.guard.session().key, error = %e, "malformed packet");
                            return "malformed packet";
                        }
                        Some(Ok(packet)) => packet,
                    };
                    match self.handle(hub, io, packet).await {
                        Next::Continue => {}
                        Next::Close(reason) => return reason,
                    }
                }
            }
        }
    }

    async fn handle(&mut self, hub: &Hub, io: &mut impl PacketIo, packet: Packet) -> Next {
        let session = std::sync::Arc::clone(self.guard.session());
        let replies = match packet {
            Packet::Publish(publish) => match self.on_publish(hub, &session, publish).await {
                Ok(replies) => replies,
                Err(reason) => return Next::Close(reason),
            },
            Packet::Subscribe(subscribe) => {
                let key = &session.key;
                let mut granted = Vec::with_capacity(subscribe.filters.len());
                let mut families = Vec::new();
                for (filter, qos) in &subscribe.filters {
                    match topics::parse_subscription(
                        filter,
                        &key.device_id,
                        key.module_id.as_deref(),
                    ) {
                        Some(family) => {
                            families.push(family);
                            let qos = if *qos == QoS::AtMostOnce {
                                QoS::AtMostOnce
                            } else {
                                QoS::AtLeastOnce
                            };
                            granted.push(SubscribeReturnCode::Granted(qos));
                        }
                        None => {
                            tracing::debug!(identity = %key, filter, "unsupported subscription refused");
                            granted.push(SubscribeReturnCode::Failure);
                        }
                    }
                }
                let update = |subs: &mut crate::hub::Subscriptions| {
                    for family in &families {
                        set_family(subs, family, true);
                    }
                };
                if let Err(e) = hub.subscribe(&session, update).await {
                    tracing::error!(identity = %key, error = %e, "subscription not stored");
                    return Next::Close("subscription not stored");
                }
                vec![Packet::SubAck(SubAck {
                    packet_id: subscribe.packet_id,
                    return_codes: granted,
                })]
            }
            Packet::Unsubscribe(unsubscribe) => {
                let key = &session.key;
                let families: Vec<Subscription> = unsubscribe
                    .filters
                    .iter()
                    .filter_map(|f| {
                        topics::parse_subscription(f, &key.device_id, key.module_id.as_deref())
                    })
                    .collect();
                let update = |subs: &mut crate::hub::Subscriptions| {
                    for family in &families {
                        set_family(subs, family, false);
                    }
                };
                if hub.subscribe(&session, update).await.is_err() {
                    return Next::Close("subscription not stored");
                }
                vec![Packet::UnsubAck(unsubscribe.packet_id)]
            }
            Packet::PingReq => {
                hub.touch(&session.key);
                vec![Packet::PingResp]
            }
            Packet::PubAck(_) => Vec::new(),
            Packet::Disconnect => return Next::Close("DISCONNECT"),
            Packet::Connect(_) => return Next::Close("second CONNECT"),
            _ => return Next::Close("unexpected packet type"),
        };
        if !replies.is_empty() && io.send_all(replies).await.is_err() {
            return Next::Close("write failed");
        }
        Next::Continue
    }

    /// Handles one device PUBLISH; returns what to send back, or why to close.
    async fn on_publish(
        &self,
        hub: &Hub,
        session: &Session,
        publish: Publish,
    ) -> Result<Vec<Packet>, &'static str> {
        if publish.qos == QoS::ExactlyOnce {
            return Err("QoS 2 is not supported");
        }
        let key = &session.key;
        let kind = topics::parse_device_publish(&publish.topic, &key.device_id, key.module_id.as_deref())
            .map_err(|e| {
                tracing::warn!(identity = %key, topic = %publish.topic, error = %e, "publish to a topic the device may not use");
                "publish to an unknown or foreign topic"
            })?;
        hub.touch(key);
        let mut replies = Vec::with_capacity(2);
        let subscribed_to_responses = session.subscriptions().twin_responses;
        match kind {
            DevicePublish::TwinGet { rid } => {
                let (status, body) = match hub.device_twin_document(key) {
                    Ok(doc) => (200, Bytes::from(doc.to_string())),
                    Err(e) => error_reply(&e),
                };
                if subscribed_to_responses {
                    replies.push(publish_packet(
                        topics::twin_response_topic(status, rid, None),
                        body,
                    ));
                }
            }
            DevicePublish::TwinPatchReported { rid } => {
                let (status, version, body) = match patch_reported(hub, key, &publish.payload).await
                {
                    Ok(version) => (204, Some(version), Bytes::new()),
                    Err(e) => {
                        let (status, body) = error_reply(&e);
                        (status, None, body)
                    }
                };
                if subscribed_to_responses {
                    replies.push(publish_packet(
                        topics::twin_response_topic(status, rid, version),
                        body,
                    ));
                }
            }
            DevicePublish::MethodResponse { status, rid } => {
                let payload = parse_method_payload(&publish.payload);
                if !session.complete_method(rid, MethodOutcome { status, payload }) {
                    tracing::debug!(identity = %key, rid, "method response for no waiting call (late or unknown)");
                }
            }
            DevicePublish::Telemetry { .. } => hub.metrics().telemetry_messages.inc(),
        }
        if let Some(packet_id) = publish.packet_id {
            replies.insert(0, Packet::PubAck(packet_id));
        }
        Ok(replies)
    }
}

fn set_family(subs: &mut crate::hub::Subscriptions, family: &Subscription, on: bool) {
    match family {
        Subscription::TwinResponses => subs.twin_responses = on,
        Subscription::DesiredPatches => subs.desired_patches = on,
        Subscription::Methods => subs.methods = on,
        Subscription::CloudToDevice => subs.cloud_to_device = on,
        Subscription::ModuleInputs => subs.module_inputs = on,
    }
}

async fn patch_reported(hub: &Hub, key: &IdentityKey, payload: &[u8]) -> Result<i64, HubError> {
    let patch: Value = serde_json::from_slice(payload).map_err(|e| {
        HubError::InvalidArgument(format!("the reported patch is not valid JSON: {e}"))
    })?;
    let Value::Object(patch) = patch else {
        return Err(HubError::InvalidArgument(
            "the reported patch must be a JSON object".into(),
        ));
    };
    hub.patch_reported(key, &patch).await
}

/// A device may answer with JSON, nothing, or (against the contract) other bytes; the last are
/// passed to the caller as a JSON string rather than dropped.
fn parse_method_payload(payload: &[u8]) -> Value {
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Value::Null;
    }
    serde_json::from_slice(payload)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(payload).into_owned()))
}

fn error_reply(error: &HubError) -> (u16, Bytes) {
    let code: ErrorCode = error_code(error);
    let now = twinhub_core::time::Timestamp::now().to_rfc3339();
    let body = mqtt_error_body(code, &error.to_string(), &tracking_id(), &now);
    (code.http_status(), Bytes::from(body))
}

fn publish_packet(topic: String, payload: Bytes) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic,
        packet_id: None,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::parse_method_payload;

    #[test]
    fn method_payloads_pass_through() {
        assert_eq!(parse_method_payload(b""), json!(null));
        assert_eq!(parse_method_payload(b" "), json!(null));
        assert_eq!(parse_method_payload(b"null"), json!(null));
        assert_eq!(parse_method_payload(b"\"\""), json!(""));
        assert_eq!(parse_method_payload(b"{\"a\":1}"), json!({"a": 1}));
        assert_eq!(parse_method_payload(b"not json"), json!("not json"));
    }
}
