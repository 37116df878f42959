//! MQTT session lifetime: persistent and clean sessions, take-over by a new connection,
//! keep-alive and SAS expiry.

use std::time::Duration;

use serde_json::json;
use twinhub_mqtt::{ConnectReturnCode, Packet, QoS};

use crate::support::{
    HOSTNAME, TestHub, device_connect, device_token, method_call, now_unix, sas_token,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_sessions_keep_subscriptions() {
    let hub = TestHub::start().await;
    let key = hub.create_device("d1").await;
    let token = device_token("d1", &key);

    let mut first = hub.mqtt_socket(None).await;
    let ack = first
        .connect(device_connect("d1", Some(&token), false))
        .await;
    assert_eq!(ack.code, ConnectReturnCode::Accepted);
    assert!(!ack.session_present, "the first session is new");
    first
        .subscribe(&[("$iothub/methods/POST/#", QoS::AtMostOnce)])
        .await;
    first.disconnect().await;

    let mut second = hub.mqtt_socket(None).await;
    let ack = second
        .connect(device_connect("d1", Some(&token), false))
        .await;
    assert_eq!(ack.code, ConnectReturnCode::Accepted);
    assert!(ack.session_present, "the stored session is resumed");

    let service = (*hub).clone();
    let call = tokio::spawn(async move {
        service
            .rest(
                "POST",
                "/twins/d1/methods",
                Some(&method_call("ping", &json!({"n": 1}), 10)),
            )
            .await
    });
    let request = second.expect_method_request().await;
    assert_eq!(request.name, "ping");
    second
        .answer_method(&request.rid, 200, &b"{\"pong\":1}"[..])
        .await;
    let response = call.await.expect("the call task");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        response.json(),
        json!({"status": 200, "payload": {"pong": 1}})
    );
    drop(second);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_sessions_start_empty_and_discard_stored_state() {
    let hub = TestHub::start().await;
    let key = hub.create_device("d1").await;
    let token = device_token("d1", &key);

    let mut client = hub.mqtt_socket(None).await;
    assert!(
        !client
            .connect(device_connect("d1", Some(&token), false))
            .await
            .session_present
    );
    client
        .subscribe(&[("$iothub/methods/POST/#", QoS::AtMostOnce)])
        .await;
    client.disconnect().await;

    let mut clean = hub.mqtt_socket(None).await;
    let ack = clean
        .connect(device_connect("d1", Some(&token), true))
        .await;
    assert_eq!(ack.code, ConnectReturnCode::Accepted);
    assert!(!ack.session_present, "a clean session has no stored state");
    let response = hub
        .rest(
            "POST",
            "/twins/d1/methods",
            Some(&method_call("ping", &json!(null), 5)),
        )
        .await;
    response.assert_error(404, "DeviceNotOnline");
    clean.disconnect().await;

    let mut again = hub.mqtt_socket(None).await;
    let ack = again
        .connect(device_connect("d1", Some(&token), false))
        .await;
    assert!(
        !ack.session_present,
        "the clean session discarded the stored one"
    );
    drop(again);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_connection_replaces_the_old_one() {
    let hub = TestHub::start().await;
    let key = hub.create_device("d1").await;
    let mut old = hub.twin_device("d1", &key).await;
    let mut new = hub.twin_device("d1", &key).await;
    old.expect_closed().await;
    let twin = new.get_twin("1").await;
    assert_eq!(twin["reported"]["$version"], 1, "{twin}");
    drop(new);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_clients_are_dropped_after_one_and_a_half_keep_alives() {
    let hub = TestHub::start().await;
    let silent_key = hub.create_device("silent").await;
    let chatty_key = hub.create_device("chatty").await;

    let mut silent = hub.mqtt_socket(None).await;
    let mut connect = device_connect("silent", Some(&device_token("silent", &silent_key)), true);
    connect.keep_alive = 1;
    assert_eq!(
        silent.connect(connect).await.code,
        ConnectReturnCode::Accepted
    );

    let mut chatty = hub.mqtt_socket(None).await;
    let mut connect = device_connect("chatty", Some(&device_token("chatty", &chatty_key)), true);
    connect.keep_alive = 1;
    assert_eq!(
        chatty.connect(connect).await.code,
        ConnectReturnCode::Accepted
    );

    let pinging = async {
        for _ in 0..8 {
            chatty.send(Packet::PingReq).await;
            assert!(
                matches!(chatty.recv().await, Packet::PingResp),
                "PINGREQ is answered"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    let (_, ()) = tokio::join!(silent.expect_closed_within(Duration::from_secs(4)), pinging);

    chatty
        .subscribe(&[("$iothub/twin/res/#", QoS::AtMostOnce)])
        .await;
    assert_eq!(
        chatty.get_twin("1").await["desired"]["$version"],
        1,
        "traffic kept chatty alive"
    );
    drop(chatty);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_close_when_their_token_expires() {
    let hub = TestHub::start_with(|config| config.sas_skew_secs = 0).await;
    let key = hub.create_device("d1").await;
    let token = sas_token(
        &format!("{HOSTNAME}/devices/d1"),
        &key,
        None,
        now_unix() + 3,
    );
    let mut client = hub.mqtt_socket(None).await;
    assert_eq!(
        client
            .connect(device_connect("d1", Some(&token), true))
            .await
            .code,
        ConnectReturnCode::Accepted
    );
    client
        .subscribe(&[("$iothub/twin/res/#", QoS::AtMostOnce)])
        .await;
    assert_eq!(
        client.get_twin("1").await["reported"]["$version"],
        1,
        "usable until it expires"
    );
    client.expect_closed_within(Duration::from_secs(10)).await;
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_shows_who_is_connected() {
    let hub = TestHub::start().await;
    let key = hub.create_device("d1").await;
    hub.create_device("d2").await;
    let device = hub.connect_device("d1", &key).await;

    assert_eq!(
        hub.rest("GET", "/devices/d1", None).await.json()["connectionState"],
        "Connected"
    );
    assert_eq!(
        hub.rest("GET", "/twins/d1", None).await.json()["connectionState"],
        "Connected"
    );
    assert_eq!(
        hub.rest("GET", "/devices/d2", None).await.json()["connectionState"],
        "Disconnected"
    );
    let stats = hub.rest("GET", "/statistics/service", None).await.json();
    assert_eq!(stats["connectedDeviceCount"], 1, "{stats}");

    device.disconnect().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let state = hub.rest("GET", "/devices/d1", None).await.json()["connectionState"].clone();
        if state == "Disconnected" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still {state} after DISCONNECT"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stats = hub.rest("GET", "/statistics/service", None).await.json();
    assert_eq!(stats["connectedDeviceCount"], 0, "{stats}");
    hub.stop().await;
}
