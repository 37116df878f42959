//! Device twins over raw MQTT and the service API: GET, reported patches, desired notifications,
//! replacement, validation and etags.

use bytes::Bytes;
use serde_json::json;
use twinhub_mqtt::{Packet, Publish, QoS, SubscribeReturnCode};

use crate::support::{TestHub, twin_response_status};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_reads_and_patches_its_twin() {
    let hub = TestHub::start().await;
    let key = hub.create_device("d1").await;
    let mut device = hub.twin_device("d1", &key).await;

    let twin = device.get_twin("1").await;
    assert_eq!(twin["desired"]["$version"], 1, "{twin}");
    assert_eq!(twin["reported"]["$version"], 1, "{twin}");
    let sections: Vec<&str> = twin
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        sections,
        ["desired", "reported"],
        "devices see only desired and reported"
    );

    let first = device.patch_reported("2", br#"{"a":1}"#).await;
    assert_eq!(first.status, 204, "{first:?}");
    assert_eq!(first.version(), Some(2), "{first:?}");
    assert!(first.body.is_empty(), "{first:?}");
    let second = device
        .patch_reported("3", br#"{"b":{"c":2},"a":null}"#)
        .await;
    assert_eq!(second.status, 204, "{second:?}");
    assert_eq!(second.version(), Some(3), "{second:?}");

    let twin = device.get_twin("4").await;
    assert_eq!(
        twin["reported"],
        json!({"b": {"c": 2}, "$version": 3}),
        "no $metadata over MQTT"
    );

    let service_view = hub.rest("GET", "/twins/d1", None).await;
    assert_eq!(service_view.status, 200);
    let service_twin = service_view.json();
    assert_eq!(service_twin["deviceId"], "d1");
    assert_eq!(
        service_twin["properties"]["reported"]["b"]["c"], 2,
        "{service_twin}"
    );
    assert!(
        service_twin["properties"]["reported"].get("a").is_none(),
        "null removed a"
    );
    assert_eq!(service_twin["properties"]["reported"]["$version"], 3);
    assert!(
        service_twin["properties"]["reported"]["$metadata"].is_object(),
        "{service_twin}"
    );
    drop(device);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn desired_changes_reach_the_device() {
    let hub = TestHub::start().await;
    let key = hub.create_device("d1").await;
    let mut device = hub.twin_device("d1", &key).await;
    let ack = device
        .subscribe(&[("$iothub/twin/PATCH/properties/desired/#", QoS::AtMostOnce)])
        .await;
    assert_eq!(
        ack.return_codes,
        vec![SubscribeReturnCode::Granted(QoS::AtMostOnce)]
    );

    let patch = json!({"properties": {"desired": {"x": 1, "y": 2, "z": {"deep": true}}}});
    let patched = hub.rest("PATCH", "/twins/d1", Some(&patch)).await;
    assert_eq!(patched.status, 200, "{}", patched.text());
    let twin = patched.json();
    assert_eq!(twin["properties"]["desired"]["$version"], 2, "{twin}");

    let notification = device
        .expect_publish("$iothub/twin/PATCH/properties/desired/")
        .await;
    assert_eq!(
        notification.topic,
        "$iothub/twin/PATCH/properties/desired/?$version=2"
    );
    let body: serde_json::Value =
        serde_json::from_slice(&notification.payload).expect("JSON patch");
    assert_eq!(
        body,
        json!({"x": 1, "y": 2, "z": {"deep": true}, "$version": 2})
    );

    let tags_only = hub
        .rest("PATCH", "/twins/d1", Some(&json!({"tags": {"site": "a"}})))
        .await;
    assert_eq!(tags_only.status, 200, "{}", tags_only.text());
    assert!(
        device
            .next_publish_within(std::time::Duration::from_millis(500))
            .await
            .is_none(),
        "tag changes are not sent to the device"
    );

    let replacement = json!({"properties": {"desired": {"x": 5}}});
    let replaced = hub
        .rest_with(
            "PUT",
            "/twins/d1",
            &[("If-Match", "\"*\"")],
            Some(replacement.to_string().into_bytes()),
        )
        .await;
    assert_eq!(replaced.status, 200, "{}", replaced.text());
    let twin = replaced.json();
    assert_eq!(twin["properties"]["desired"]["x"], 5, "{twin}");
    assert!(twin["properties"]["desired"].get("y").is_none(), "{twin}");
    assert_eq!(twin["properties"]["desired"]["$version"], 3, "{twin}");

    let notification = device
        .expect_publish("$iothub/twin/PATCH/properties/desired/")
        .await;
    assert_eq!(
        notification.topic,
        "$iothub/twin/PATCH/properties/desired/?$version=3"
    );
    let body: serde_json::Value =
        serde_json::from_slice(&notification.payload).expect("JSON patch");
    assert_eq!(
        body,
        json!({"x": 5, "y": null, "z": null, "$version": 3}),
        "removed keys are explicit nulls"
    );

    let twin = device.get_twin("9").await;
    assert_eq!(twin["desired"], json!({"x": 5, "$version": 3}));
    drop(device);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_reported_patches_are_refused_whole() {
    let hub = TestHub::start().await;
    let key = hub.create_device("d1").await;
    let mut device = hub.twin_device("d1", &key).await;
    assert_eq!(device.patch_reported("1", br#"{"ok":1}"#).await.status, 204);

    let invalid: [(&str, &[u8]); 5] = [
        ("dot", br#"{"fine":2,"a.b":1}"#),
        ("dollar", br#"{"fine":2,"$x":1}"#),
        ("nested dollar", br#"{"fine":2,"n":{"$y":1}}"#),
        ("not json", b"not json at all"),
        ("not an object", b"[1,2,3]"),
    ];
    for (rid, patch) in invalid {
        let response = device.patch_reported(rid, patch).await;
        assert_eq!(response.status, 400, "{rid}: {response:?}");
        let body = response.json();
        assert_eq!(body["errorCode"], 400_004, "{rid}: {body}");
        assert!(body["message"].is_string(), "{rid}: {body}");
    }

    let twin = device.get_twin("after").await;
    assert_eq!(
        twin["reported"],
        json!({"ok": 1, "$version": 2}),
        "refused patches change nothing"
    );
    drop(device);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_twin_writes_are_validated() {
    let hub = TestHub::start().await;
    hub.create_device("d1").await;

    let reported = json!({"properties": {"reported": {"a": 1}}});
    let response = hub.rest("PATCH", "/twins/d1", Some(&reported)).await;
    assert_eq!(
        response.status,
        400,
        "the service cannot write reported: {}",
        response.text()
    );
    assert!(response.header("iothub-errorcode").is_some());

    let bad_key = json!({"properties": {"desired": {"a.b": 1}}});
    assert_eq!(
        hub.rest("PATCH", "/twins/d1", Some(&bad_key)).await.status,
        400
    );
    let malformed = hub
        .rest_with(
            "PATCH",
            "/twins/d1",
            &[],
            Some(b"{\"properties\":".to_vec()),
        )
        .await;
    assert_eq!(malformed.status, 400, "{}", malformed.text());

    let twin = hub.rest("GET", "/twins/d1", None).await.json();
    assert!(twin["properties"]["reported"].get("a").is_none(), "{twin}");
    assert_eq!(twin["properties"]["desired"]["$version"], 1, "{twin}");
    let old_etag = format!("\"{}\"", twin["etag"].as_str().expect("twin etag"));

    let first = json!({"properties": {"desired": {"x": 1}}});
    let response = hub
        .rest_with(
            "PATCH",
            "/twins/d1",
            &[("If-Match", &old_etag)],
            Some(first.to_string().into_bytes()),
        )
        .await;
    assert_eq!(
        response.status,
        200,
        "the current etag matches: {}",
        response.text()
    );
    assert_ne!(
        format!(
            "\"{}\"",
            response.json()["etag"].as_str().unwrap_or_default()
        ),
        old_etag
    );

    let second = json!({"properties": {"desired": {"x": 2}}});
    let stale = hub
        .rest_with(
            "PATCH",
            "/twins/d1",
            &[("If-Match", &old_etag)],
            Some(second.to_string().into_bytes()),
        )
        .await;
    stale.assert_error(412, "PreconditionFailed");
    let twin = hub.rest("GET", "/twins/d1", None).await.json();
    assert_eq!(twin["properties"]["desired"]["x"], 1, "{twin}");

    hub.rest("GET", "/twins/nobody", None)
        .await
        .assert_error(404, "DeviceNotFound");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_twin_requests_are_acknowledged_and_answered() {
    let hub = TestHub::start().await;
    let key = hub.create_device("d1").await;
    let mut device = hub.connect_device("d1", &key).await;
    device
        .subscribe(&[("$iothub/twin/res/#", QoS::AtLeastOnce)])
        .await;
    device
        .send(Packet::Publish(Publish::at_least_once(
            "$iothub/twin/GET/?$rid=q1",
            7,
            Bytes::from_static(b" "),
        )))
        .await;
    let (mut acked, mut answered) = (false, false);
    while !(acked && answered) {
        match device.recv().await {
            Packet::PubAck(7) => acked = true,
            Packet::Publish(publish) => {
                assert_eq!(
                    twin_response_status(&publish.topic, "q1"),
                    Some(200),
                    "{publish:?}"
                );
                if let Some(id) = publish.packet_id {
                    device.send(Packet::PubAck(id)).await;
                }
                answered = true;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    drop(device);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_desired_updates_notify_in_version_order() {
    let hub = TestHub::start().await;
    let key = hub.create_device("d1").await;
    let mut device = hub.connect_device("d1", &key).await;
    device
        .subscribe(&[("$iothub/twin/PATCH/properties/desired/#", QoS::AtMostOnce)])
        .await;

    const UPDATES: u64 = 10;
    let calls: Vec<_> = (0..UPDATES)
        .map(|i| {
            let service = (*hub).clone();
            tokio::spawn(async move {
                let patch = json!({"properties": {"desired": {format!("k{i}"): i}}});
                service
                    .rest("PATCH", "/twins/d1", Some(&patch))
                    .await
                    .status
            })
        })
        .collect();
    let mut versions = Vec::new();
    for _ in 0..UPDATES {
        let notification = device
            .expect_publish("$iothub/twin/PATCH/properties/desired/")
            .await;
        let body: serde_json::Value = serde_json::from_slice(&notification.payload).expect("JSON");
        let version = body["$version"].as_u64().expect("$version in the body");
        assert_eq!(
            notification.topic,
            format!("$iothub/twin/PATCH/properties/desired/?$version={version}")
        );
        versions.push(version);
    }
    for call in calls {
        assert_eq!(call.await.expect("call task"), 200);
    }
    assert_eq!(
        versions,
        (2..UPDATES + 2).collect::<Vec<_>>(),
        "strictly increasing, none lost"
    );
    let twin = hub.rest("GET", "/twins/d1", None).await.json();
    assert_eq!(
        twin["properties"]["desired"]["$version"],
        UPDATES + 1,
        "{twin}"
    );
    for i in 0..UPDATES {
        assert_eq!(twin["properties"]["desired"][format!("k{i}")], i, "{twin}");
    }
    drop(device);
    hub.stop().await;
}
