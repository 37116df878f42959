//! Property tests: every valid packet survives encode → decode, whatever the chunking, and no
//! input makes the decoder panic.

mod common;

use bytes::{Bytes, BytesMut};
use common::{decode_all, decode_byte_by_byte, encode};
use proptest::collection::vec;
use proptest::prelude::*;
use tokio_util::codec::Decoder;
use twinhub_mqtt::{
    Codec, ConnAck, Connect, ConnectReturnCode, Packet, Publish, QoS, SubAck, Subscribe,
    SubscribeReturnCode, Unsubscribe, Will,
};

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

/// Any UTF-8 text without U+0000, including multi-byte characters.
fn text() -> impl Strategy<Value = String> {
    "[^\\x00]{0,12}"
}

fn topic_name() -> impl Strategy<Value = String> {
    "[^\\x00+#]{1,12}"
}

fn packet_id() -> impl Strategy<Value = u16> {
    1..=u16::MAX
}

fn payload(max: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn will() -> impl Strategy<Value = Will> {
    (topic_name(), payload(32), qos(), any::<bool>()).prop_map(|(topic, payload, qos, retain)| {
        Will {
            topic,
            payload,
            qos,
            retain,
        }
    })
}

fn connect() -> impl Strategy<Value = Connect> {
    let credentials = prop_oneof![
        Just((None, None)),
        text().prop_map(|username| (Some(username), None)),
        (text(), payload(16)).prop_map(|(username, password)| (Some(username), Some(password))),
    ];
    (
        (text(), any::<u8>()),
        any::<bool>(),
        any::<u16>(),
        text(),
        proptest::option::of(will()),
        credentials,
    )
        .prop_map(
            |(
                (protocol_name, protocol_level),
                clean_session,
                keep_alive,
                client_id,
                will,
                (username, password),
            )| Connect {
                protocol_name,
                protocol_level,
                clean_session,
                keep_alive,
                client_id,
                will,
                username,
                password,
            },
        )
}

fn connect_return_code() -> impl Strategy<Value = ConnectReturnCode> {
    (0u8..=5).prop_filter_map("defined code", ConnectReturnCode::from_u8)
}

fn publish() -> impl Strategy<Value = Publish> {
    (
        qos(),
        any::<bool>(),
        any::<bool>(),
        topic_name(),
        packet_id(),
        payload(300),
    )
        .prop_map(|(qos, dup, retain, topic, packet_id, payload)| {
            let acknowledged = qos != QoS::AtMostOnce;
            Publish {
                dup: dup && acknowledged,
                qos,
                retain,
                topic,
                packet_id: acknowledged.then_some(packet_id),
                payload,
            }
        })
}

fn subscribe_return_code() -> impl Strategy<Value = SubscribeReturnCode> {
    prop_oneof![
        qos().prop_map(SubscribeReturnCode::Granted),
        Just(SubscribeReturnCode::Failure)
    ]
}

fn packet() -> impl Strategy<Value = Packet> {
    prop_oneof![
        connect().prop_map(Packet::Connect),
        (any::<bool>(), connect_return_code()).prop_map(|(session_present, code)| {
            Packet::ConnAck(ConnAck {
                session_present,
                code,
            })
        }),
        publish().prop_map(Packet::Publish),
        packet_id().prop_map(Packet::PubAck),
        packet_id().prop_map(Packet::PubRec),
        packet_id().prop_map(Packet::PubRel),
        packet_id().prop_map(Packet::PubComp),
        (packet_id(), vec((text(), qos()), 1..5))
            .prop_map(|(packet_id, filters)| Packet::Subscribe(Subscribe { packet_id, filters })),
        (packet_id(), vec(subscribe_return_code(), 1..5)).prop_map(|(packet_id, return_codes)| {
            Packet::SubAck(SubAck {
                packet_id,
                return_codes,
            })
        }),
        (packet_id(), vec(text(), 1..5)).prop_map(|(packet_id, filters)| {
            Packet::Unsubscribe(Unsubscribe { packet_id, filters })
        }),
        packet_id().prop_map(Packet::UnsubAck),
        Just(Packet::PingReq),
        Just(Packet::PingResp),
        Just(Packet::Disconnect),
    ]
}

/// Runs the decoder over `buffer` until it needs more input or fails, as a connection would,
/// checking that waiting consumes nothing and that whatever it accepts re-encodes to an
/// equivalent packet.
fn decode_until_stuck(codec: &mut Codec, buffer: &mut BytesMut) -> Result<(), TestCaseError> {
    loop {
        let before = buffer.len();
        match codec.decode(buffer) {
            Ok(Some(packet)) => {
                let reencoded = decode_all(&encode(&packet)).expect("re-encoded packet decodes");
                prop_assert_eq!(reencoded, [packet]);
            }
            Ok(None) => {
                prop_assert_eq!(buffer.len(), before);
                return Ok(());
            }
            Err(_) => return Ok(()),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn encode_then_decode_is_identity(packet in packet()) {
        let wire = encode(&packet);
        prop_assert_eq!(decode_all(&wire).expect("valid packet decodes"), [packet]);
    }

    #[test]
    fn chunking_does_not_change_the_result(packets in vec(packet(), 1..6)) {
        let wire: Vec<u8> = packets.iter().flat_map(encode).collect();
        prop_assert_eq!(&decode_all(&wire).expect("decodes"), &packets);
        prop_assert_eq!(&decode_byte_by_byte(&wire).expect("decodes"), &packets);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_accepted_packets_reencode(bytes in vec(any::<u8>(), 0..512), limit in 0usize..600) {
        let mut codec = Codec::new(limit);
        decode_until_stuck(&mut codec, &mut BytesMut::from(&bytes[..]))?;
    }

    #[test]
    fn corrupted_packets_never_panic_and_accepted_packets_reencode(
        packet in packet(),
        corruptions in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut wire = encode(&packet);
        for (position, value) in corruptions {
            let index = position.index(wire.len());
            wire[index] = value;
        }
        wire.truncate(cut.index(wire.len() + 1));
        let mut codec = Codec::new(common::TEST_LIMIT);
        decode_until_stuck(&mut codec, &mut BytesMut::from(&wire[..]))?;
    }
}
