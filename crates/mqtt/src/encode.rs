//! Packets → wire format. A first pass validates the packet and sizes it, so nothing is
//! written for an invalid packet and the buffer is reserved once.

use bytes::{BufMut, BytesMut};

use crate::codec::EncodeError;
use crate::packet::{Connect, Packet, Publish, QoS};
use crate::topic::is_valid_topic_name;
use crate::wire::packet_type::{
    CONNACK, CONNECT, DISCONNECT, PINGREQ, PINGRESP, PUBACK, PUBCOMP, PUBLISH, PUBREC, PUBREL,
    SUBACK, SUBSCRIBE, UNSUBACK, UNSUBSCRIBE,
};
use crate::wire::{
    CONNACK_SESSION_PRESENT, MAX_REMAINING_LENGTH, REQUIRED_FLAGS_0010, connect_flags,
    publish_flags,
};

/// Appends the encoding of `packet` to `dst`; on error `dst` is left unchanged.
pub(crate) fn encode_packet(packet: &Packet, dst: &mut BytesMut) -> Result<(), EncodeError> {
    let remaining_length = remaining_length(packet)?;
    if remaining_length > MAX_REMAINING_LENGTH {
        return Err(EncodeError::PacketTooLarge {
            size: remaining_length,
        });
    }
    dst.reserve(1 + remaining_length_size(remaining_length) + remaining_length);
    dst.put_u8(first_byte(packet));
    put_remaining_length(remaining_length, dst);
    write_body(packet, dst);
    Ok(())
}

fn first_byte(packet: &Packet) -> u8 {
    let (packet_type, flags) = match packet {
        Packet::Connect(_) => (CONNECT, 0),
        Packet::ConnAck(_) => (CONNACK, 0),
        Packet::Publish(publish) => {
            let mut flags = publish.qos.as_u8() << publish_flags::QOS_SHIFT;
            if publish.dup {
                flags |= publish_flags::DUP;
            }
            if publish.retain {
                flags |= publish_flags::RETAIN;
            }
            (PUBLISH, flags)
        }
        Packet::PubAck(_) => (PUBACK, 0),
        Packet::PubRec(_) => (PUBREC, 0),
        Packet::PubRel(_) => (PUBREL, REQUIRED_FLAGS_0010),
        Packet::PubComp(_) => (PUBCOMP, 0),
        Packet::Subscribe(_) => (SUBSCRIBE, REQUIRED_FLAGS_0010),
        Packet::SubAck(_) => (SUBACK, 0),
        Packet::Unsubscribe(_) => (UNSUBSCRIBE, REQUIRED_FLAGS_0010),
        Packet::UnsubAck(_) => (UNSUBACK, 0),
        Packet::PingReq => (PINGREQ, 0),
        Packet::PingResp => (PINGRESP, 0),
        Packet::Disconnect => (DISCONNECT, 0),
    };
    (packet_type << 4) | flags
}

/// Validates `packet` and returns the size of its variable header plus payload.
fn remaining_length(packet: &Packet) -> Result<usize, EncodeError> {
    match packet {
        Packet::Connect(connect) => connect_length(connect),
        Packet::ConnAck(_) => Ok(2),
        Packet::Publish(publish) => publish_length(publish),
        Packet::PubAck(packet_id)
        | Packet::PubRec(packet_id)
        | Packet::PubRel(packet_id)
        | Packet::PubComp(packet_id)
        | Packet::UnsubAck(packet_id) => {
            check_packet_id(*packet_id)?;
            Ok(2)
        }
        Packet::Subscribe(subscribe) => {
            check_packet_id(subscribe.packet_id)?;
            if subscribe.filters.is_empty() {
                return Err(EncodeError::InvalidPacket(
                    "SUBSCRIBE needs at least one topic filter",
                ));
            }
            subscribe.filters.iter().try_fold(2, |total, (filter, _)| {
                Ok(total + string_length(filter)? + 1)
            })
        }
        Packet::SubAck(suback) => {
            check_packet_id(suback.packet_id)?;
            if suback.return_codes.is_empty() {
                return Err(EncodeError::InvalidPacket(
                    "SUBACK needs at least one return code",
                ));
            }
            Ok(2 + suback.return_codes.len())
        }
        Packet::Unsubscribe(unsubscribe) => {
            check_packet_id(unsubscribe.packet_id)?;
            if unsubscribe.filters.is_empty() {
                return Err(EncodeError::InvalidPacket(
                    "UNSUBSCRIBE needs at least one topic filter",
                ));
            }
            unsubscribe
                .filters
                .iter()
                .try_fold(2, |total, filter| Ok(total + string_length(filter)?))
        }
        Packet::PingReq | Packet::PingResp | Packet::Disconnect => Ok(0),
    }
}

fn connect_length(connect: &Connect) -> Result<usize, EncodeError> {
    // Protocol level, connect flags and keep-alive.
    let mut length = string_length(&connect.protocol_name)? + 1 + 1 + 2;
    length += string_length(&connect.client_id)?;
    if let Some(will) = &connect.will {
        length += string_length(&will.topic)? + binary_length(&will.payload)?;
        if !is_valid_topic_name(&will.topic) {
            return Err(EncodeError::InvalidPacket("invalid will topic name"));
        }
    }
    if let Some(username) = &connect.username {
        length += string_length(username)?;
    }
    if let Some(password) = &connect.password {
        if connect.username.is_none() {
            return Err(EncodeError::InvalidPacket(
                "CONNECT password requires a user name",
            ));
        }
        length += binary_length(password)?;
    }
    Ok(length)
}

fn publish_length(publish: &Publish) -> Result<usize, EncodeError> {
    let topic_length = string_length(&publish.topic)?;
    if !is_valid_topic_name(&publish.topic) {
        return Err(EncodeError::InvalidPacket("invalid PUBLISH topic name"));
    }
    let packet_id_length = match (publish.qos, publish.packet_id) {
        (QoS::AtMostOnce, None) => 0,
        (QoS::AtMostOnce, Some(_)) => {
            return Err(EncodeError::InvalidPacket(
                "QoS 0 PUBLISH must not have a packet identifier",
            ));
        }
        (QoS::AtLeastOnce | QoS::ExactlyOnce, Some(packet_id)) => {
            check_packet_id(packet_id)?;
            2
        }
        (QoS::AtLeastOnce | QoS::ExactlyOnce, None) => {
            return Err(EncodeError::InvalidPacket(
                "QoS 1 and 2 PUBLISH need a packet identifier",
            ));
        }
    };
    if publish.dup && publish.qos == QoS::AtMostOnce {
        return Err(EncodeError::InvalidPacket("QoS 0 PUBLISH must not set DUP"));
    }
    Ok(topic_length + packet_id_length + publish.payload.len())
}

fn check_packet_id(packet_id: u16) -> Result<(), EncodeError> {
    if packet_id == 0 {
        Err(EncodeError::InvalidPacket(
            "packet identifier must not be 0",
        ))
    } else {
        Ok(())
    }
}

fn string_length(text: &str) -> Result<usize, EncodeError> {
    if text.len() > usize::from(u16::MAX) {
        return Err(EncodeError::StringTooLong { len: text.len() });
    }
    if text.contains('\0') {
        return Err(EncodeError::InvalidPacket("string contains U+0000"));
    }
    Ok(2 + text.len())
}

fn binary_length(data: &[u8]) -> Result<usize, EncodeError> {
    if data.len() > usize::from(u16::MAX) {
        return Err(EncodeError::BinaryTooLong { len: data.len() });
    }
    Ok(2 + data.len())
}

/// Writes the body of a packet that `remaining_length` accepted.
fn write_body(packet: &Packet, dst: &mut BytesMut) {
    match packet {
        Packet::Connect(connect) => write_connect(connect, dst),
        Packet::ConnAck(connack) => {
            dst.put_u8(if connack.session_present {
                CONNACK_SESSION_PRESENT
            } else {
                0
            });
            dst.put_u8(connack.code.as_u8());
        }
        Packet::Publish(publish) => {
            put_string(&publish.topic, dst);
            if let Some(packet_id) = publish.packet_id {
                dst.put_u16(packet_id);
            }
            dst.put_slice(&publish.payload);
        }
        Packet::PubAck(packet_id)
        | Packet::PubRec(packet_id)
        | Packet::PubRel(packet_id)
        | Packet::PubComp(packet_id)
        | Packet::UnsubAck(packet_id) => dst.put_u16(*packet_id),
        Packet::Subscribe(subscribe) => {
            dst.put_u16(subscribe.packet_id);
            for (filter, qos) in &subscribe.filters {
                put_string(filter, dst);
                dst.put_u8(qos.as_u8());
            }
        }
        Packet::SubAck(suback) => {
            dst.put_u16(suback.packet_id);
            for code in &suback.return_codes {
                dst.put_u8(code.as_u8());
            }
        }
        Packet::Unsubscribe(unsubscribe) => {
            dst.put_u16(unsubscribe.packet_id);
            for filter in &unsubscribe.filters {
                put_string(filter, dst);
            }
        }
        Packet::PingReq | Packet::PingResp | Packet::Disconnect => {}
    }
}

fn write_connect(connect: &Connect, dst: &mut BytesMut) {
    let mut flags = 0;
    if connect.clean_session {
        flags |= connect_flags::CLEAN_SESSION;
    }
    if let Some(will) = &connect.will {
        flags |= connect_flags::WILL | (will.qos.as_u8() << connect_flags::WILL_QOS_SHIFT);
        if will.retain {
            flags |= connect_flags::WILL_RETAIN;
        }
    }
    if connect.username.is_some() {
        flags |= connect_flags::USERNAME;
    }
    if connect.password.is_some() {
        flags |= connect_flags::PASSWORD;
    }

    put_string(&connect.protocol_name, dst);
    dst.put_u8(connect.protocol_level);
    dst.put_u8(flags);
    dst.put_u16(connect.keep_alive);
    put_string(&connect.client_id, dst);
    if let Some(will) = &connect.will {
        put_string(&will.topic, dst);
        put_binary(&will.payload, dst);
    }
    if let Some(username) = &connect.username {
        put_string(username, dst);
    }
    if let Some(password) = &connect.password {
        put_binary(password, dst);
    }
}

fn put_string(text: &str, dst: &mut BytesMut) {
    put_binary(text.as_bytes(), dst);
}

/// Callers validated the length with `string_length` or `binary_length`, so it fits in a u16.
fn put_binary(data: &[u8], dst: &mut BytesMut) {
    dst.put_u16(u16::try_from(data.len()).unwrap_or(u16::MAX));
    dst.put_slice(data);
}

/// Bytes the variable-length encoding of `length` takes (1 to 4).
fn remaining_length_size(length: usize) -> usize {
    match length {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Variable-length encoding of §2.2.3: seven bits per byte, least significant first, high bit
/// set on every byte but the last.
fn put_remaining_length(mut length: usize, dst: &mut BytesMut) {
    loop {
        let mut byte = (length % 128) as u8;
        length /= 128;
        if length > 0 {
            byte |= 0x80;
        }
        dst.put_u8(byte);
        if length == 0 {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::parse_fixed_header;

    /// The boundary values of the table in §2.2.3.
    #[test]
    fn remaining_length_matches_the_spec_table() {
        let cases: [(usize, &[u8]); 8] = [
            (0, &[0x00]),
            (127, &[0x7F]),
            (128, &[0x80, 0x01]),
            (16_383, &[0xFF, 0x7F]),
            (16_384, &[0x80, 0x80, 0x01]),
            (2_097_151, &[0xFF, 0xFF, 0x7F]),
            (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
            (268_435_455, &[0xFF, 0xFF, 0xFF, 0x7F]),
        ];
        for (length, expected) in cases {
            let mut encoded = BytesMut::new();
            put_remaining_length(length, &mut encoded);
            assert_eq!(&encoded[..], expected, "length {length}");
            assert_eq!(remaining_length_size(length), expected.len());

            // A PUBLISH header (type 3) decodes back to the same length.
            let mut header = vec![0x30];
            header.extend_from_slice(expected);
            let parsed = parse_fixed_header(&header, MAX_REMAINING_LENGTH)
                .expect("valid header")
                .expect("complete header");
            assert_eq!(parsed.remaining_length, length);
            assert_eq!(parsed.header_len, 1 + expected.len());
        }
    }
}
