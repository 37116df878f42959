//! Byte-level tests against hand-written MQTT 3.1.1 encodings, and one test per decode error.

mod common;

use bytes::{Bytes, BytesMut};
use common::{TEST_LIMIT, decode_all, decode_byte_by_byte, encode};
use tokio_util::codec::{Decoder, Encoder};
use twinhub_mqtt::{
    Codec, ConnAck, Connect, ConnectReturnCode, DecodeError, EncodeError, Packet, Publish, QoS,
    SubAck, Subscribe, SubscribeReturnCode, Unsubscribe, Will,
};

/// `packet` encodes to exactly `wire`, and `wire` decodes to `packet` whether it arrives at once
/// or one byte at a time.
fn assert_wire(packet: &Packet, wire: &[u8]) {
    assert_eq!(encode(packet), wire, "encoding of {packet:?}");
    assert_eq!(
        decode_all(wire).expect("decodes"),
        std::slice::from_ref(packet),
        "decoding"
    );
    assert_eq!(
        decode_byte_by_byte(wire).expect("decodes byte by byte"),
        std::slice::from_ref(packet),
        "decoding byte by byte"
    );
}

/// Decodes the first packet of `bytes`, which must be invalid.
fn decode_error(bytes: &[u8]) -> DecodeError {
    decode_error_with(Codec::new(TEST_LIMIT), bytes)
}

/// Like `decode_error` with a chosen codec.
fn decode_error_with(mut codec: Codec, bytes: &[u8]) -> DecodeError {
    match codec.decode(&mut BytesMut::from(bytes)) {
        Err(error) => error,
        Ok(outcome) => panic!("expected an error for {bytes:02X?}, got {outcome:?}"),
    }
}

fn connect_bytes(flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut body = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, flags, 0x00, 0x3C];
    body.extend_from_slice(payload);
    let mut wire = vec![0x10, u8::try_from(body.len()).expect("short test packet")];
    wire.extend_from_slice(&body);
    wire
}

#[test]
fn connect_as_sent_by_paho_python_with_credentials() {
    // clean_session=False, keepalive=60, username_pw_set("user", "pass").
    let wire = [
        0x10, 0x23, // CONNECT, remaining length 35
        0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name
        0x04, // level 4
        0xC0, // user name + password, no clean session
        0x00, 0x3C, // keep-alive 60
        0x00, 0x0B, b'p', b'a', b'h', b'o', b'-', b'c', b'l', b'i', b'e', b'n', b't', //
        0x00, 0x04, b'u', b's', b'e', b'r', //
        0x00, 0x04, b'p', b'a', b's', b's',
    ];
    let packet = Packet::Connect(Connect {
        username: Some("user".to_owned()),
        password: Some(Bytes::from_static(b"pass")),
        ..Connect::new("paho-client", false, 60)
    });
    assert_wire(&packet, &wire);
}

#[test]
fn connect_with_will_and_clean_session() {
    let wire = [
        0x10, 0x17, //
        0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, //
        0x2E, // will retain, will QoS 1, will, clean session
        0x00, 0x0A, //
        0x00, 0x01, b'c', //
        0x00, 0x03, b'w', b'/', b't', //
        0x00, 0x03, b'b', b'y', b'e',
    ];
    let packet = Packet::Connect(Connect {
        will: Some(Will {
            topic: "w/t".to_owned(),
            payload: Bytes::from_static(b"bye"),
            qos: QoS::AtLeastOnce,
            retain: true,
        }),
        ..Connect::new("c", true, 10)
    });
    assert_wire(&packet, &wire);
}

#[test]
fn connect_protocol_name_and_level_are_returned_as_received() {
    // MQTT 3.1: the server, not the codec, answers an unsupported level with CONNACK 1.
    let wire = [
        0x10, 0x0E, 0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03, 0x02, 0x00, 0x00, 0x00,
        0x00,
    ];
    let packet = Packet::Connect(Connect {
        protocol_name: "MQIsdp".to_owned(),
        protocol_level: 3,
        ..Connect::new("", true, 0)
    });
    assert_wire(&packet, &wire);

    let mut level_5 = connect_bytes(0x02, &[0x00, 0x00]);
    level_5[8] = 5;
    let [Packet::Connect(connect)] = &decode_all(&level_5).expect("decodes")[..] else {
        panic!("expected one CONNECT");
    };
    assert_eq!(connect.protocol_level, 5);
}

#[test]
fn connack() {
    let accepted = ConnAck {
        session_present: false,
        code: ConnectReturnCode::Accepted,
    };
    assert_wire(&Packet::ConnAck(accepted), &[0x20, 0x02, 0x00, 0x00]);
    let resumed = ConnAck {
        session_present: true,
        ..accepted
    };
    assert_wire(&Packet::ConnAck(resumed), &[0x20, 0x02, 0x01, 0x00]);
    let codes = [
        ConnectReturnCode::UnacceptableProtocolVersion,
        ConnectReturnCode::IdentifierRejected,
        ConnectReturnCode::ServerUnavailable,
        ConnectReturnCode::BadUsernameOrPassword,
        ConnectReturnCode::NotAuthorized,
    ];
    for (wire_code, code) in (1..).zip(codes) {
        let refused = ConnAck {
            session_present: false,
            code,
        };
        assert_wire(&Packet::ConnAck(refused), &[0x20, 0x02, 0x00, wire_code]);
    }
}

#[test]
fn publish_at_each_qos() {
    assert_wire(
        &Packet::Publish(Publish::at_most_once("a/b", &b"hello"[..])),
        &[
            0x30, 0x0A, 0x00, 0x03, b'a', b'/', b'b', b'h', b'e', b'l', b'l', b'o',
        ],
    );
    assert_wire(
        &Packet::Publish(Publish {
            dup: true,
            retain: true,
            ..Publish::at_least_once("a/b", 10, &b"hello"[..])
        }),
        &[
            0x3B, 0x0C, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x0A, b'h', b'e', b'l', b'l', b'o',
        ],
    );
    assert_wire(
        &Packet::Publish(Publish {
            qos: QoS::ExactlyOnce,
            ..Publish::at_least_once("a/b", 0x1234, Bytes::new())
        }),
        &[0x34, 0x07, 0x00, 0x03, b'a', b'/', b'b', 0x12, 0x34],
    );
}

#[test]
fn publish_with_a_two_byte_remaining_length() {
    let payload = vec![0xA5; 200];
    let packet = Packet::Publish(Publish::at_most_once("t", payload.clone()));
    // 2 + 1 + 200 = 203 = 0xCB → 0xCB 0x01.
    let mut wire = vec![0x30, 0xCB, 0x01, 0x00, 0x01, b't'];
    wire.extend_from_slice(&payload);
    assert_wire(&packet, &wire);
}

#[test]
fn acknowledgements_carry_the_packet_id() {
    assert_wire(&Packet::PubAck(1), &[0x40, 0x02, 0x00, 0x01]);
    assert_wire(&Packet::PubRec(0x0102), &[0x50, 0x02, 0x01, 0x02]);
    assert_wire(&Packet::PubRel(0xFFFF), &[0x62, 0x02, 0xFF, 0xFF]);
    assert_wire(&Packet::PubComp(7), &[0x70, 0x02, 0x00, 0x07]);
    assert_wire(&Packet::UnsubAck(300), &[0xB0, 0x02, 0x01, 0x2C]);
}

#[test]
fn subscribe_and_suback() {
    assert_wire(
        &Packet::Subscribe(Subscribe {
            packet_id: 10,
            filters: vec![
                ("a/b".to_owned(), QoS::AtMostOnce),
                ("c/#".to_owned(), QoS::AtLeastOnce),
            ],
        }),
        &[
            0x82, 0x0E, 0x00, 0x0A, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x00, 0x03, b'c', b'/',
            b'#', 0x01,
        ],
    );
    assert_wire(
        &Packet::SubAck(SubAck {
            packet_id: 10,
            return_codes: vec![
                SubscribeReturnCode::Granted(QoS::AtMostOnce),
                SubscribeReturnCode::Granted(QoS::AtLeastOnce),
                SubscribeReturnCode::Granted(QoS::ExactlyOnce),
                SubscribeReturnCode::Failure,
            ],
        }),
        &[0x90, 0x06, 0x00, 0x0A, 0x00, 0x01, 0x02, 0x80],
    );
}

#[test]
fn unsubscribe() {
    assert_wire(
        &Packet::Unsubscribe(Unsubscribe {
            packet_id: 11,
            filters: vec!["a/b".to_owned(), "#".to_owned()],
        }),
        &[
            0xA2, 0x0A, 0x00, 0x0B, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x01, b'#',
        ],
    );
}

#[test]
fn packets_without_body() {
    assert_wire(&Packet::PingReq, &[0xC0, 0x00]);
    assert_wire(&Packet::PingResp, &[0xD0, 0x00]);
    assert_wire(&Packet::Disconnect, &[0xE0, 0x00]);
}

#[test]
fn several_packets_in_one_buffer_decode_in_order() {
    let packets = [
        Packet::PingReq,
        Packet::Publish(Publish::at_least_once("x/y", 5, &b"{}"[..])),
        Packet::PubAck(5),
        Packet::Disconnect,
    ];
    let wire: Vec<u8> = packets.iter().flat_map(encode).collect();
    assert_eq!(decode_all(&wire).expect("decodes"), packets);
    assert_eq!(decode_byte_by_byte(&wire).expect("decodes"), packets);
}

#[test]
fn incomplete_body_reserves_the_missing_bytes() {
    let mut codec = Codec::new(1024);
    let mut buffer = BytesMut::from(&[0x30, 0xE8, 0x07, 0x00][..]); // remaining length 1000
    assert!(codec.decode(&mut buffer).expect("valid so far").is_none());
    assert!(buffer.capacity() >= 1003);
    assert_eq!(buffer.len(), 4, "nothing consumed while incomplete");
}

#[test]
fn payload_shares_the_receive_buffer() {
    let wire = encode(&Packet::Publish(Publish::at_most_once("t", vec![1; 64])));
    let [Packet::Publish(publish)] = &decode_all(&wire).expect("decodes")[..] else {
        panic!("expected one PUBLISH");
    };
    assert_eq!(&publish.payload[..], &[1; 64][..]);
}

#[test]
fn oversized_packet_is_rejected_on_its_header() {
    // Remaining length 1025 with a 1024-byte cap: only the header has arrived.
    let error = decode_error_with(Codec::new(1024), &[0x30, 0x81, 0x08]);
    assert!(
        matches!(
            error,
            DecodeError::PacketTooLarge {
                size: 1025,
                limit: 1024
            }
        ),
        "{error:?}"
    );
    // The limit itself is allowed.
    let mut buffer = BytesMut::from(&[0x30, 0x80, 0x08][..]);
    assert!(
        Codec::new(1024)
            .decode(&mut buffer)
            .expect("fits")
            .is_none()
    );
    let error = decode_error(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F]);
    assert!(
        matches!(
            error,
            DecodeError::PacketTooLarge {
                size: 268_435_455,
                ..
            }
        ),
        "{error:?}"
    );
}

#[test]
fn remaining_length_of_five_bytes_is_malformed() {
    let error = decode_error(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]);
    assert!(
        matches!(error, DecodeError::MalformedRemainingLength),
        "{error:?}"
    );
    // Known as soon as the fourth length byte announces a fifth.
    let error = decode_error(&[0x30, 0x80, 0x80, 0x80, 0x80]);
    assert!(
        matches!(error, DecodeError::MalformedRemainingLength),
        "{error:?}"
    );
}

#[test]
fn reserved_packet_types_are_invalid() {
    for (first_byte, packet_type) in [(0x00, 0), (0xF0, 15)] {
        let error = decode_error(&[first_byte]);
        assert!(
            matches!(error, DecodeError::InvalidPacketType(found) if found == packet_type),
            "{error:?}"
        );
    }
}

#[test]
fn fixed_header_flags_are_checked_per_type() {
    let cases = [
        (0x11, 1, 0b0001), // CONNECT with a flag
        (0x60, 6, 0b0000), // PUBREL needs 0010
        (0x80, 8, 0b0000), // SUBSCRIBE needs 0010
        (0xA3, 10, 0b0011),
        (0xC2, 12, 0b0010),
        (0x42, 4, 0b0010),
        (0x38, 3, 0b1000), // QoS 0 PUBLISH with DUP
    ];
    for (first_byte, packet_type, flags) in cases {
        let error = decode_error(&[first_byte, 0x00]);
        assert!(
            matches!(
                error,
                DecodeError::InvalidFlags { packet_type: t, flags: f } if t == packet_type && f == flags
            ),
            "{first_byte:#04X}: {error:?}"
        );
    }
}

#[test]
fn qos_3_is_invalid_everywhere() {
    let publish = decode_error(&[0x36, 0x00]);
    assert!(matches!(publish, DecodeError::InvalidQoS), "{publish:?}");
    let subscribe = decode_error(&[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x03]);
    assert!(
        matches!(subscribe, DecodeError::InvalidQoS),
        "{subscribe:?}"
    );
    // Will flag with will QoS 3.
    let will = decode_error(&connect_bytes(
        0x1E,
        &[0x00, 0x01, b'c', 0x00, 0x01, b'w', 0x00, 0x00],
    ));
    assert!(matches!(will, DecodeError::InvalidQoS), "{will:?}");
}

#[test]
fn strings_must_be_utf8_without_nul() {
    for topic in [
        &[0xFF][..],
        &[0xC3][..],
        &[0xED, 0xA0, 0x80][..],
        &[b'a', 0x00][..],
    ] {
        let mut wire = vec![0x30, u8::try_from(2 + topic.len()).expect("short")];
        wire.extend_from_slice(&[0x00, u8::try_from(topic.len()).expect("short")]);
        wire.extend_from_slice(topic);
        let error = decode_error(&wire);
        assert!(
            matches!(error, DecodeError::InvalidUtf8),
            "{topic:02X?}: {error:?}"
        );
    }
    let client_id = decode_error(&connect_bytes(0x02, &[0x00, 0x01, 0x80]));
    assert!(
        matches!(client_id, DecodeError::InvalidUtf8),
        "{client_id:?}"
    );
}

#[test]
fn malformed_packets() {
    let cases: [(&str, Vec<u8>); 22] = [
        ("CONNECT reserved flag", connect_bytes(0x03, &[0x00, 0x00])),
        (
            "password without user name",
            connect_bytes(0x42, &[0x00, 0x00, 0x00, 0x01, b'p']),
        ),
        ("will QoS without will", connect_bytes(0x0A, &[0x00, 0x00])),
        (
            "will retain without will",
            connect_bytes(0x22, &[0x00, 0x00]),
        ),
        (
            "wildcard will topic",
            connect_bytes(0x06, &[0x00, 0x00, 0x00, 0x01, b'#', 0x00, 0x00]),
        ),
        ("CONNECT missing client id", connect_bytes(0x02, &[])),
        (
            "CONNECT missing user name",
            connect_bytes(0x82, &[0x00, 0x00]),
        ),
        (
            "CONNECT trailing bytes",
            connect_bytes(0x02, &[0x00, 0x00, 0xAA]),
        ),
        ("CONNACK reserved flags", vec![0x20, 0x02, 0x02, 0x00]),
        ("CONNACK reserved code", vec![0x20, 0x02, 0x00, 0x06]),
        ("CONNACK too long", vec![0x20, 0x03, 0x00, 0x00, 0x00]),
        ("PUBACK packet id 0", vec![0x40, 0x02, 0x00, 0x00]),
        (
            "QoS 1 PUBLISH packet id 0",
            vec![0x32, 0x05, 0x00, 0x01, b't', 0x00, 0x00],
        ),
        ("empty PUBLISH topic", vec![0x30, 0x02, 0x00, 0x00]),
        ("wildcard PUBLISH topic", vec![0x30, 0x03, 0x00, 0x01, b'+']),
        (
            "topic longer than the packet",
            vec![0x30, 0x03, 0x00, 0x05, b't'],
        ),
        ("SUBSCRIBE without filters", vec![0x82, 0x02, 0x00, 0x01]),
        (
            "SUBSCRIBE reserved option bits",
            vec![0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x04],
        ),
        (
            "SUBSCRIBE filter without QoS",
            vec![0x82, 0x05, 0x00, 0x01, 0x00, 0x01, b'a'],
        ),
        ("SUBACK reserved code", vec![0x90, 0x03, 0x00, 0x01, 0x03]),
        ("UNSUBSCRIBE without filters", vec![0xA2, 0x02, 0x00, 0x01]),
        ("PINGREQ with a body", vec![0xC0, 0x01, 0x00]),
    ];
    for (case, wire) in cases {
        let error = decode_error(&wire);
        assert!(
            matches!(error, DecodeError::MalformedPacket(_)),
            "{case}: {error:?}"
        );
    }
    let suback = decode_error(&[0x90, 0x02, 0x00, 0x01]);
    assert!(
        matches!(suback, DecodeError::MalformedPacket(_)),
        "{suback:?}"
    );
}

#[test]
fn stream_ending_inside_a_packet_is_an_io_error() {
    let mut buffer = BytesMut::from(&[0x30, 0x05, 0x00][..]);
    let error = Codec::new(1024)
        .decode_eof(&mut buffer)
        .expect_err("truncated stream");
    assert!(matches!(error, DecodeError::Io(_)), "{error:?}");
}

fn encode_error(packet: &Packet) -> EncodeError {
    let mut buffer = BytesMut::new();
    let error = Codec::new(1024)
        .encode(packet, &mut buffer)
        .expect_err("packet must be rejected");
    assert!(buffer.is_empty(), "nothing written for a rejected packet");
    error
}

#[test]
fn encoder_rejects_fields_and_packets_too_long() {
    let long_topic = "t".repeat(65_536);
    let error = encode_error(&Packet::Publish(Publish::at_most_once(
        long_topic,
        Bytes::new(),
    )));
    assert!(
        matches!(error, EncodeError::StringTooLong { len: 65_536 }),
        "{error:?}"
    );

    let error = encode_error(&Packet::Connect(Connect {
        username: Some("u".to_owned()),
        password: Some(Bytes::from(vec![0; 65_536])),
        ..Connect::new("c", true, 0)
    }));
    assert!(
        matches!(error, EncodeError::BinaryTooLong { len: 65_536 }),
        "{error:?}"
    );

    // Zeroed allocation: the pages are never touched because the size check comes first.
    let payload = Bytes::from(vec![0u8; 268_435_453]);
    let error = encode_error(&Packet::Publish(Publish::at_most_once("t", payload)));
    assert!(
        matches!(error, EncodeError::PacketTooLarge { size: 268_435_456 }),
        "{error:?}"
    );
}

#[test]
fn encoder_rejects_packets_the_decoder_would_reject() {
    let invalid = [
        Packet::PubAck(0),
        Packet::Publish(Publish {
            packet_id: None,
            ..Publish::at_least_once("t", 1, Bytes::new())
        }),
        Packet::Publish(Publish {
            packet_id: Some(1),
            ..Publish::at_most_once("t", Bytes::new())
        }),
        Packet::Publish(Publish {
            dup: true,
            ..Publish::at_most_once("t", Bytes::new())
        }),
        Packet::Publish(Publish::at_most_once("a/#", Bytes::new())),
        Packet::Publish(Publish::at_most_once("", Bytes::new())),
        Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: Vec::new(),
        }),
        Packet::SubAck(SubAck {
            packet_id: 1,
            return_codes: Vec::new(),
        }),
        Packet::Unsubscribe(Unsubscribe {
            packet_id: 1,
            filters: Vec::new(),
        }),
        Packet::Connect(Connect {
            password: Some(Bytes::from_static(b"p")),
            ..Connect::new("c", true, 0)
        }),
        Packet::Connect(Connect::new("nul\0", true, 0)),
    ];
    for packet in invalid {
        let error = encode_error(&packet);
        assert!(
            matches!(error, EncodeError::InvalidPacket(_)),
            "{packet:?}: {error:?}"
        );
    }
}

#[test]
fn packet_names_follow_the_spec() {
    assert_eq!(Packet::PingReq.name(), "PINGREQ");
    assert_eq!(Packet::PubRel(1).name(), "PUBREL");
}
