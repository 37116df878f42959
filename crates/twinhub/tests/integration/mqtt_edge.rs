//! MQTT edge cases: refused CONNECTs, protocol violations that close a connection without
//! disturbing others, and SUBACK codes.

use bytes::Bytes;
use twinhub_mqtt::{Connect, ConnectReturnCode, Packet, Publish, QoS, SubscribeReturnCode};

use crate::support::{
    FOREIGN_KEY, HOSTNAME, TestHub, device_connect, device_token, now_unix, sas_token,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connects_get_the_right_connack() {
    let hub = TestHub::start().await;
    let key = hub.create_device("d1").await;
    let good_token = device_token("d1", &key);
    let expired = sas_token(
        &format!("{HOSTNAME}/devices/d1"),
        &key,
        None,
        now_unix() - 7200,
    );
    let wrong_key = device_token("d1", FOREIGN_KEY);
    let other_scope = device_token("d2", &key);

    let mut old_protocol = device_connect("d1", Some(&good_token), true);
    old_protocol.protocol_name = "MQIsdp".to_owned();
    old_protocol.protocol_level = 3;
    let mut mismatched_client_id = device_connect("d1", Some(&good_token), true);
    mismatched_client_id.client_id = "d2".to_owned();

    let cases = [
        (
            "protocol level 3",
            old_protocol,
            ConnectReturnCode::UnacceptableProtocolVersion,
        ),
        (
            "wrong key",
            device_connect("d1", Some(&wrong_key), true),
            ConnectReturnCode::NotAuthorized,
        ),
        (
            "expired token",
            device_connect("d1", Some(&expired), true),
            ConnectReturnCode::NotAuthorized,
        ),
        (
            "token for another device",
            device_connect("d1", Some(&other_scope), true),
            ConnectReturnCode::NotAuthorized,
        ),
        (
            "client id is not the username's device",
            mismatched_client_id,
            ConnectReturnCode::IdentifierRejected,
        ),
        (
            "unknown device",
            device_connect("ghost", Some(&device_token("ghost", FOREIGN_KEY)), true),
            ConnectReturnCode::NotAuthorized,
        ),
    ];
    for (case, connect, expected) in cases {
        let mut client = hub.mqtt_socket(None).await;
        let ack = client.connect(connect).await;
        assert_eq!(ack.code, expected, "{case}");
        assert!(
            !ack.session_present,
            "{case}: a refused CONNACK has no session"
        );
        client.expect_closed().await;
    }

    let mut client = hub.mqtt_socket(None).await;
    let ack = client.connect(device_connect("d1", None, true)).await;
    assert!(
        matches!(
            ack.code,
            ConnectReturnCode::NotAuthorized | ConnectReturnCode::BadUsernameOrPassword
        ),
        "no password and no certificate: {ack:?}"
    );
    client.expect_closed().await;

    let mut disabled = hub.rest("GET", "/devices/d1", None).await.json();
    disabled["status"] = serde_json::json!("disabled");
    let response = hub
        .rest_with(
            "PUT",
            "/devices/d1",
            &[("If-Match", "\"*\"")],
            Some(disabled.to_string().into_bytes()),
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.text());
    let mut client = hub.mqtt_socket(None).await;
    let ack = client
        .connect(device_connect("d1", Some(&good_token), true))
        .await;
    assert_eq!(
        ack.code,
        ConnectReturnCode::NotAuthorized,
        "a disabled device"
    );
    hub.stop().await;
}

/// A fixed header announcing a PUBLISH of `remaining` bytes, without the bytes.
fn oversized_publish_header(remaining: usize) -> Vec<u8> {
    let mut header = vec![0x30];
    let mut left = remaining;
    loop {
        let byte = u8::try_from(left % 128).expect("below 128");
        left /= 128;
        if left == 0 {
            header.push(byte);
            return header;
        }
        header.push(byte | 0x80);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_violations_close_only_the_offending_connection() {
    let hub = TestHub::start().await;
    let bystander_key = hub.create_device("bystander").await;
    let mut bystander = hub.twin_device("bystander", &bystander_key).await;

    let key = hub.create_device("bad").await;
    let connected = || async { hub.connect_device("bad", &key).await };

    let mut client = connected().await;
    let mut exactly_once =
        Publish::at_least_once("devices/bad/messages/events/", 1, Bytes::from_static(b"x"));
    exactly_once.qos = QoS::ExactlyOnce;
    client.send(Packet::Publish(exactly_once)).await;
    client.expect_closed().await;

    let mut client = connected().await;
    client
        .publish(
            "devices/bystander/messages/events/",
            Bytes::from_static(b"spoof"),
        )
        .await;
    client.expect_closed().await;

    let mut client = connected().await;
    client
        .publish("$iothub/not/a/real/topic", Bytes::from_static(b"?"))
        .await;
    client.expect_closed().await;

    let mut client = hub.mqtt_socket(None).await;
    client
        .send_raw(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await;
    client.expect_closed().await;

    let mut client = hub.mqtt_socket(None).await;
    client
        .publish(
            "devices/bad/messages/events/",
            Bytes::from_static(b"before connect"),
        )
        .await;
    client.expect_closed().await;

    let mut client = connected().await;
    client
        .send_raw(&[0xF0, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F])
        .await;
    client.expect_closed().await;

    let mut client = connected().await;
    client
        .send(Packet::Connect(Connect::new("bad", true, 60)))
        .await;
    client.expect_closed().await;

    let mut client = connected().await;
    let mut oversized = oversized_publish_header(270 * 1024);
    oversized.extend_from_slice(b"\x00\x1cdevices/bad/messages/events/");
    client.send_raw(&oversized).await;
    client.expect_closed().await;

    let twin = bystander.get_twin("still-alive").await;
    assert_eq!(twin["reported"]["$version"], 1, "{twin}");
    let patched = bystander.patch_reported("patch", br#"{"ok":true}"#).await;
    assert_eq!(patched.status, 204, "{patched:?}");

    let mut recovered = connected().await;
    recovered
        .subscribe(&[("$iothub/twin/res/#", QoS::AtMostOnce)])
        .await;
    assert_eq!(recovered.get_twin("again").await["reported"]["$version"], 1);
    drop((bystander, recovered));
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suback_has_one_code_per_filter() {
    let hub = TestHub::start().await;
    let key = hub.create_device("d1").await;
    let mut client = hub.connect_device("d1", &key).await;

    let ack = client
        .subscribe(&[
            ("$iothub/twin/res/#", QoS::AtLeastOnce),
            ("devices/other/messages/devicebound/#", QoS::AtLeastOnce),
            ("$iothub/methods/POST/#", QoS::AtLeastOnce),
        ])
        .await;
    assert_eq!(
        ack.return_codes,
        vec![
            SubscribeReturnCode::Granted(QoS::AtLeastOnce),
            SubscribeReturnCode::Failure,
            SubscribeReturnCode::Granted(QoS::AtLeastOnce),
        ]
    );

    let ack = client
        .subscribe(&[
            ("$iothub/twin/PATCH/properties/desired/#", QoS::ExactlyOnce),
            ("devices/d1/messages/devicebound/#", QoS::AtMostOnce),
        ])
        .await;
    assert_eq!(
        ack.return_codes,
        vec![
            SubscribeReturnCode::Granted(QoS::AtLeastOnce),
            SubscribeReturnCode::Granted(QoS::AtMostOnce)
        ],
        "QoS 2 is granted as 1"
    );

    let twin = client.get_twin("1").await;
    assert_eq!(
        twin["desired"]["$version"], 1,
        "the connection still works: {twin}"
    );
    drop(client);
    hub.stop().await;
}
