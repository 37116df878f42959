//! Wire format → packets. Checks run as early as the bytes allow, so an invalid or oversized
//! packet is rejected before its body is buffered.

use bytes::{Buf, Bytes};

use crate::codec::DecodeError;
use crate::packet::{
    ConnAck, Connect, ConnectReturnCode, Packet, Publish, QoS, SubAck, Subscribe,
    SubscribeReturnCode, Unsubscribe, Will,
};
use crate::topic::is_valid_topic_name;
use crate::wire::packet_type::{
    CONNACK, CONNECT, DISCONNECT, PINGREQ, PINGRESP, PUBACK, PUBCOMP, PUBLISH, PUBREC, PUBREL,
    SUBACK, SUBSCRIBE, UNSUBACK, UNSUBSCRIBE,
};
use crate::wire::{CONNACK_SESSION_PRESENT, REQUIRED_FLAGS_0010, connect_flags, publish_flags};

/// The fixed header of a packet whose body may still be in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FixedHeader {
    pub(crate) first_byte: u8,
    pub(crate) remaining_length: usize,
    /// Bytes taken by the fixed header itself (2 to 5).
    pub(crate) header_len: usize,
}

/// Parses and validates the fixed header at the start of `src`; `Ok(None)` if more bytes are
/// needed to tell.
pub(crate) fn parse_fixed_header(
    src: &[u8],
    max_packet_size: usize,
) -> Result<Option<FixedHeader>, DecodeError> {
    let Some(&first_byte) = src.first() else {
        return Ok(None);
    };
    validate_type_and_flags(first_byte)?;

    let mut remaining_length = 0usize;
    for index in 0..4 {
        let Some(&byte) = src.get(1 + index) else {
            return Ok(None);
        };
        remaining_length |= usize::from(byte & 0x7F) << (7 * index);
        if byte & 0x80 == 0 {
            if remaining_length > max_packet_size {
                return Err(DecodeError::PacketTooLarge {
                    size: remaining_length,
                    limit: max_packet_size,
                });
            }
            validate_fixed_length(first_byte >> 4, remaining_length)?;
            return Ok(Some(FixedHeader {
                first_byte,
                remaining_length,
                header_len: 2 + index,
            }));
        }
    }
    Err(DecodeError::MalformedRemainingLength)
}

fn validate_type_and_flags(first_byte: u8) -> Result<(), DecodeError> {
    let packet_type = first_byte >> 4;
    let flags = first_byte & 0x0F;
    let flags_ok = match packet_type {
        0 | 15 => return Err(DecodeError::InvalidPacketType(packet_type)),
        PUBLISH => {
            let qos = QoS::from_u8((flags >> publish_flags::QOS_SHIFT) & 0b11)
                .ok_or(DecodeError::InvalidQoS)?;
            // [MQTT-3.3.1-2]: DUP must be 0 for QoS 0 messages.
            !(qos == QoS::AtMostOnce && flags & publish_flags::DUP != 0)
        }
        PUBREL | SUBSCRIBE | UNSUBSCRIBE => flags == REQUIRED_FLAGS_0010,
        _ => flags == 0,
    };
    if flags_ok {
        Ok(())
    } else {
        Err(DecodeError::InvalidFlags { packet_type, flags })
    }
}

/// Packets with a fixed body size are rejected on the header alone.
fn validate_fixed_length(packet_type: u8, remaining_length: usize) -> Result<(), DecodeError> {
    let expected = match packet_type {
        CONNACK | PUBACK | PUBREC | PUBREL | PUBCOMP | UNSUBACK => 2,
        PINGREQ | PINGRESP | DISCONNECT => 0,
        _ => return Ok(()),
    };
    if remaining_length == expected {
        Ok(())
    } else {
        Err(DecodeError::MalformedPacket(
            "wrong remaining length for packet type",
        ))
    }
}

/// Decodes the body of a packet whose fixed header already passed `parse_fixed_header`.
pub(crate) fn decode_body(first_byte: u8, body: Bytes) -> Result<Packet, DecodeError> {
    let mut reader = Reader { body };
    let packet = match first_byte >> 4 {
        CONNECT => Packet::Connect(decode_connect(&mut reader)?),
        CONNACK => Packet::ConnAck(decode_connack(&mut reader)?),
        PUBLISH => Packet::Publish(decode_publish(first_byte & 0x0F, &mut reader)?),
        PUBACK => Packet::PubAck(reader.packet_id()?),
        PUBREC => Packet::PubRec(reader.packet_id()?),
        PUBREL => Packet::PubRel(reader.packet_id()?),
        PUBCOMP => Packet::PubComp(reader.packet_id()?),
        SUBSCRIBE => Packet::Subscribe(decode_subscribe(&mut reader)?),
        SUBACK => Packet::SubAck(decode_suback(&mut reader)?),
        UNSUBSCRIBE => Packet::Unsubscribe(decode_unsubscribe(&mut reader)?),
        UNSUBACK => Packet::UnsubAck(reader.packet_id()?),
        PINGREQ => Packet::PingReq,
        PINGRESP => Packet::PingResp,
        DISCONNECT => Packet::Disconnect,
        other => return Err(DecodeError::InvalidPacketType(other)),
    };
    reader.finish()?;
    Ok(packet)
}

fn decode_connect(reader: &mut Reader) -> Result<Connect, DecodeError> {
    let protocol_name = reader.string()?;
    let protocol_level = reader.u8()?;
    let flags = reader.u8()?;
    let keep_alive = reader.u16()?;

    if flags & connect_flags::RESERVED != 0 {
        return Err(DecodeError::MalformedPacket("CONNECT reserved flag is set"));
    }
    let will_qos_bits = (flags >> connect_flags::WILL_QOS_SHIFT) & 0b11;
    let has_will = flags & connect_flags::WILL != 0;
    let will_retain = flags & connect_flags::WILL_RETAIN != 0;
    if !has_will && (will_qos_bits != 0 || will_retain) {
        return Err(DecodeError::MalformedPacket(
            "CONNECT will QoS or retain set without will flag",
        ));
    }
    let has_username = flags & connect_flags::USERNAME != 0;
    let has_password = flags & connect_flags::PASSWORD != 0;
    if has_password && !has_username {
        return Err(DecodeError::MalformedPacket(
            "CONNECT password flag set without user name flag",
        ));
    }

    let client_id = reader.string()?;
    let will = if has_will {
        let qos = QoS::from_u8(will_qos_bits).ok_or(DecodeError::InvalidQoS)?;
        let topic = reader.string()?;
        if !is_valid_topic_name(&topic) {
            return Err(DecodeError::MalformedPacket("invalid will topic name"));
        }
        let payload = reader.binary()?;
        Some(Will {
            topic,
            payload,
            qos,
            retain: will_retain,
        })
    } else {
        None
    };
    let username = has_username.then(|| reader.string()).transpose()?;
    let password = has_password.then(|| reader.binary()).transpose()?;

    Ok(Connect {
        protocol_name,
        protocol_level,
        clean_session: flags & connect_flags::CLEAN_SESSION != 0,
        keep_alive,
        client_id,
        will,
        username,
        password,
    })
}

fn decode_connack(reader: &mut Reader) -> Result<ConnAck, DecodeError> {
    let acknowledge_flags = reader.u8()?;
    if acknowledge_flags & !CONNACK_SESSION_PRESENT != 0 {
        return Err(DecodeError::MalformedPacket(
            "CONNACK reserved acknowledge flags are set",
        ));
    }
    let code = ConnectReturnCode::from_u8(reader.u8()?)
        .ok_or(DecodeError::MalformedPacket("CONNACK reserved return code"))?;
    Ok(ConnAck {
        session_present: acknowledge_flags & CONNACK_SESSION_PRESENT != 0,
        code,
    })
}

fn decode_publish(flags: u8, reader: &mut Reader) -> Result<Publish, DecodeError> {
    let qos =
        QoS::from_u8((flags >> publish_flags::QOS_SHIFT) & 0b11).ok_or(DecodeError::InvalidQoS)?;
    let topic = reader.string()?;
    if !is_valid_topic_name(&topic) {
        return Err(DecodeError::MalformedPacket("invalid PUBLISH topic name"));
    }
    let packet_id = match qos {
        QoS::AtMostOnce => None,
        QoS::AtLeastOnce | QoS::ExactlyOnce => Some(reader.packet_id()?),
    };
    Ok(Publish {
        dup: flags & publish_flags::DUP != 0,
        qos,
        retain: flags & publish_flags::RETAIN != 0,
        topic,
        packet_id,
        payload: reader.rest(),
    })
}

fn decode_subscribe(reader: &mut Reader) -> Result<Subscribe, DecodeError> {
    let packet_id = reader.packet_id()?;
    let mut filters = Vec::new();
    while !reader.is_empty() {
        let filter = reader.string()?;
        let options = reader.u8()?;
        if options & !0b11 != 0 {
            return Err(DecodeError::MalformedPacket(
                "SUBSCRIBE reserved option bits are set",
            ));
        }
        let qos = QoS::from_u8(options).ok_or(DecodeError::InvalidQoS)?;
        filters.push((filter, qos));
    }
    if filters.is_empty() {
        return Err(DecodeError::MalformedPacket(
            "SUBSCRIBE without topic filters",
        ));
    }
    Ok(Subscribe { packet_id, filters })
}

fn decode_suback(reader: &mut Reader) -> Result<SubAck, DecodeError> {
    let packet_id = reader.packet_id()?;
    let mut return_codes = Vec::with_capacity(reader.len());
    while !reader.is_empty() {
        let code = SubscribeReturnCode::from_u8(reader.u8()?)
            .ok_or(DecodeError::MalformedPacket("SUBACK reserved return code"))?;
        return_codes.push(code);
    }
    if return_codes.is_empty() {
        return Err(DecodeError::MalformedPacket("SUBACK without return codes"));
    }
    Ok(SubAck {
        packet_id,
        return_codes,
    })
}

fn decode_unsubscribe(reader: &mut Reader) -> Result<Unsubscribe, DecodeError> {
    let packet_id = reader.packet_id()?;
    let mut filters = Vec::new();
    while !reader.is_empty() {
        filters.push(reader.string()?);
    }
    if filters.is_empty() {
        return Err(DecodeError::MalformedPacket(
            "UNSUBSCRIBE without topic filters",
        ));
    }
    Ok(Unsubscribe { packet_id, filters })
}

/// Bounds-checked reads over one packet body.
struct Reader {
    body: Bytes,
}

const TRUNCATED: DecodeError = DecodeError::MalformedPacket("field extends past the packet");

impl Reader {
    fn len(&self) -> usize {
        self.body.len()
    }

    fn is_empty(&self) -> bool {
        self.body.is_empty()
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        self.body.try_get_u8().map_err(|_| TRUNCATED)
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        self.body.try_get_u16().map_err(|_| TRUNCATED)
    }

    fn packet_id(&mut self) -> Result<u16, DecodeError> {
        match self.u16()? {
            0 => Err(DecodeError::MalformedPacket("packet identifier is 0")),
            packet_id => Ok(packet_id),
        }
    }

    /// A two-byte length followed by that many bytes (§1.5.3, binary data in §3.1.3).
    fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let len = usize::from(self.u16()?);
        if self.body.len() < len {
            return Err(TRUNCATED);
        }
        Ok(self.body.split_to(len))
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let raw = self.binary()?;
        let text = std::str::from_utf8(&raw).map_err(|_| DecodeError::InvalidUtf8)?;
        if text.contains('\0') {
            return Err(DecodeError::InvalidUtf8);
        }
        Ok(text.to_owned())
    }

    fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.body)
    }

    fn finish(self) -> Result<(), DecodeError> {
        if self.body.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::MalformedPacket(
                "trailing bytes after packet contents",
            ))
        }
    }
}
