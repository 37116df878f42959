//! MQTT 3.1.1 control packets as plain data.

use bytes::Bytes;

/// Delivery guarantee of a message (MQTT 3.1.1 §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum QoS {
    /// Fire and forget.
    AtMostOnce = 0,
    /// Acknowledged delivery (PUBACK).
    AtLeastOnce = 1,
    /// Assured delivery (PUBREC/PUBREL/PUBCOMP).
    ExactlyOnce = 2,
}

impl QoS {
    /// The QoS for a wire value, or `None` for 3 and above.
    #[must_use]
    pub const fn from_u8(value: u8) -> Option<QoS> {
        match value {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }

    /// The wire value (0, 1 or 2).
    #[must_use]
    pub const fn as_u8(self) -> u8 {
        self as u8
    }
}

/// One MQTT 3.1.1 control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// Client request to connect (type 1).
    Connect(Connect),
    /// Connect acknowledgment (type 2).
    ConnAck(ConnAck),
    /// Application message (type 3).
    Publish(Publish),
    /// QoS 1 publish acknowledgment carrying the packet id (type 4).
    PubAck(u16),
    /// QoS 2 publish received, part 1 (type 5).
    PubRec(u16),
    /// QoS 2 publish release, part 2 (type 6).
    PubRel(u16),
    /// QoS 2 publish complete, part 3 (type 7).
    PubComp(u16),
    /// Client subscribe request (type 8).
    Subscribe(Subscribe),
    /// Subscribe acknowledgment (type 9).
    SubAck(SubAck),
    /// Client unsubscribe request (type 10).
    Unsubscribe(Unsubscribe),
    /// Unsubscribe acknowledgment carrying the packet id (type 11).
    UnsubAck(u16),
    /// Keep-alive ping request (type 12).
    PingReq,
    /// Keep-alive ping response (type 13).
    PingResp,
    /// Client is disconnecting cleanly (type 14).
    Disconnect,
}

impl Packet {
    /// The packet's control type name as the specification spells it, for logs.
    #[must_use]
    pub const fn name(&self) -> &'static str {
        match self {
            Packet::Connect(_) => "CONNECT",
            Packet::ConnAck(_) => "CONNACK",
            Packet::Publish(_) => "PUBLISH",
            Packet::PubAck(_) => "PUBACK",
            Packet::PubRec(_) => "PUBREC",
            Packet::PubRel(_) => "PUBREL",
            Packet::PubComp(_) => "PUBCOMP",
            Packet::Subscribe(_) => "SUBSCRIBE",
            Packet::SubAck(_) => "SUBACK",
            Packet::Unsubscribe(_) => "UNSUBSCRIBE",
            Packet::UnsubAck(_) => "UNSUBACK",
            Packet::PingReq => "PINGREQ",
            Packet::PingResp => "PINGRESP",
            Packet::Disconnect => "DISCONNECT",
        }
    }
}

/// CONNECT packet (§3.1). Protocol name and level are carried as received so the server can
/// answer an unsupported level with CONNACK code 1 instead of dropping the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// `"MQTT"` for 3.1.1 (`"MQIsdp"` for 3.1).
    pub protocol_name: String,
    /// 4 for MQTT 3.1.1.
    pub protocol_level: u8,
    /// Discard any previous session state when set.
    pub clean_session: bool,
    /// Keep-alive interval in seconds; 0 disables it.
    pub keep_alive: u16,
    /// Client identifier; may be empty.
    pub client_id: String,
    /// Last-will message published if the client disappears.
    pub will: Option<Will>,
    /// User name, if the user name flag is set.
    pub username: Option<String>,
    /// Password (binary), if the password flag is set; requires a user name.
    pub password: Option<Bytes>,
}

impl Connect {
    /// Protocol name of MQTT 3.1.1.
    pub const PROTOCOL_NAME: &'static str = "MQTT";
    /// Protocol level of MQTT 3.1.1.
    pub const PROTOCOL_LEVEL: u8 = 4;

    /// A 3.1.1 CONNECT with no will, user name or password.
    #[must_use]
    pub fn new(client_id: impl Into<String>, clean_session: bool, keep_alive: u16) -> Connect {
        Connect {
            protocol_name: Connect::PROTOCOL_NAME.to_owned(),
            protocol_level: Connect::PROTOCOL_LEVEL,
            clean_session,
            keep_alive,
            client_id: client_id.into(),
            will: None,
            username: None,
            password: None,
        }
    }
}

/// Last-will message of a CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// Topic name the will is published to.
    pub topic: String,
    /// Will message body.
    pub payload: Bytes,
    /// QoS of the will publish.
    pub qos: QoS,
    /// Retain flag of the will publish.
    pub retain: bool,
}

/// CONNACK packet (§3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnAck {
    /// The server resumed a stored session.
    pub session_present: bool,
    /// Outcome of the connection attempt.
    pub code: ConnectReturnCode,
}

/// CONNACK return code (§3.2.2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ConnectReturnCode {
    /// Connection accepted.
    Accepted = 0,
    /// The server does not support the requested protocol level.
    UnacceptableProtocolVersion = 1,
    /// The client identifier is not allowed.
    IdentifierRejected = 2,
    /// The MQTT service is unavailable.
    ServerUnavailable = 3,
    /// The user name or password is malformed.
    BadUsernameOrPassword = 4,
    /// The client is not authorized to connect.
    NotAuthorized = 5,
}

impl ConnectReturnCode {
    /// The return code for a wire value, or `None` for reserved values (6 and above).
    #[must_use]
    pub const fn from_u8(value: u8) -> Option<ConnectReturnCode> {
        match value {
            0 => Some(ConnectReturnCode::Accepted),
            1 => Some(ConnectReturnCode::UnacceptableProtocolVersion),
            2 => Some(ConnectReturnCode::IdentifierRejected),
            3 => Some(ConnectReturnCode::ServerUnavailable),
            4 => Some(ConnectReturnCode::BadUsernameOrPassword),
            5 => Some(ConnectReturnCode::NotAuthorized),
            _ => None,
        }
    }

    /// The wire value.
    #[must_use]
    pub const fn as_u8(self) -> u8 {
        self as u8
    }
}

/// PUBLISH packet (§3.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// Redelivery of an earlier attempt; always false at QoS 0.
    pub dup: bool,
    /// Delivery guarantee.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// Topic name: non-empty, no wildcards.
    pub topic: String,
    /// Packet identifier: `Some` (non-zero) if and only if `qos` is above 0.
    pub packet_id: Option<u16>,
    /// Application message.
    pub payload: Bytes,
}

impl Publish {
    /// A QoS 0 publish without dup or retain flags.
    #[must_use]
    pub fn at_most_once(topic: impl Into<String>, payload: impl Into<Bytes>) -> Publish {
        Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: topic.into(),
            packet_id: None,
            payload: payload.into(),
        }
    }

    /// A QoS 1 publish with the given packet id, without dup or retain flags.
    #[must_use]
    pub fn at_least_once(
        topic: impl Into<String>,
        packet_id: u16,
        payload: impl Into<Bytes>,
    ) -> Publish {
        Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: topic.into(),
            packet_id: Some(packet_id),
            payload: payload.into(),
        }
    }
}

/// SUBSCRIBE packet (§3.8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Non-zero packet identifier echoed by the SUBACK.
    pub packet_id: u16,
    /// Topic filters with their requested QoS; at least one.
    pub filters: Vec<(String, QoS)>,
}

/// SUBACK packet (§3.9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// Packet identifier of the SUBSCRIBE being acknowledged.
    pub packet_id: u16,
    /// One code per filter, in the SUBSCRIBE's order.
    pub return_codes: Vec<SubscribeReturnCode>,
}

/// Per-filter outcome in a SUBACK (§3.9.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubscribeReturnCode {
    /// Subscription accepted with this maximum QoS.
    Granted(QoS),
    /// Subscription refused (0x80).
    Failure,
}

impl SubscribeReturnCode {
    /// Wire value of a refused subscription.
    pub const FAILURE_CODE: u8 = 0x80;

    /// The return code for a wire value, or `None` for reserved values.
    #[must_use]
    pub const fn from_u8(value: u8) -> Option<SubscribeReturnCode> {
        match value {
            SubscribeReturnCode::FAILURE_CODE => Some(SubscribeReturnCode::Failure),
            _ => match QoS::from_u8(value) {
                Some(qos) => Some(SubscribeReturnCode::Granted(qos)),
                None => None,
            },
        }
    }

    /// The wire value.
    #[must_use]
    pub const fn as_u8(self) -> u8 {
        match self {
            SubscribeReturnCode::Granted(qos) => qos.as_u8(),
            SubscribeReturnCode::Failure => SubscribeReturnCode::FAILURE_CODE,
        }
    }
}

/// UNSUBSCRIBE packet (§3.10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Non-zero packet identifier echoed by the UNSUBACK.
    pub packet_id: u16,
    /// Topic filters to remove; at least one.
    pub filters: Vec<String>,
}
