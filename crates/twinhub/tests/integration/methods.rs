//! Direct methods: round trips, status pass-through, argument validation, devices that drop or
//! come online late, and concurrent calls answered out of order.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use twinhub_mqtt::QoS;

use crate::support::{HttpResponse, HubClient, MqttClient, TestHub, method_call};

/// A device connected and subscribed to method requests.
async fn method_device(hub: &HubClient, device_id: &str, key: &str) -> MqttClient {
    let mut device = hub.connect_device(device_id, key).await;
    device
        .subscribe(&[("$iothub/methods/POST/#", QoS::AtMostOnce)])
        .await;
    device
}

/// Starts a method call on its own task so the test can play the device meanwhile.
fn call_in_background(
    hub: &HubClient,
    device_id: &str,
    body: Value,
) -> tokio::task::JoinHandle<HttpResponse> {
    let service = hub.clone();
    let path = format!("/twins/{device_id}/methods");
    tokio::spawn(async move { service.rest("POST", &path, Some(&body)).await })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_and_statuses_round_trip() {
    let hub = TestHub::start().await;
    let key = hub.create_device("d1").await;
    let mut device = method_device(&hub, "d1", &key).await;

    for (payload, status) in [
        (json!(null), 200),
        (json!(""), 200),
        (json!({"a": [1, "two", {"three": 3.5}]}), 299),
        (json!(42), 500),
    ] {
        let call = call_in_background(&hub, "d1", method_call("echo", &payload, 10));
        let request = device.expect_method_request().await;
        assert_eq!(request.name, "echo");
        let received: Value = if request.payload.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&request.payload).expect("the request payload is JSON")
        };
        assert_eq!(received, payload, "the device receives the payload as sent");
        device
            .answer_method(&request.rid, status, request.payload.clone())
            .await;
        let response = call.await.expect("call task");
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(
            response.json(),
            json!({"status": status, "payload": payload})
        );
    }

    let call = call_in_background(&hub, "d1", method_call("empty", &json!({}), 10));
    let request = device.expect_method_request().await;
    device.answer_method(&request.rid, 200, Bytes::new()).await;
    let response = call.await.expect("call task");
    assert_eq!(
        response.json(),
        json!({"status": 200, "payload": null}),
        "an empty answer is null"
    );
    drop(device);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_fail_with_the_documented_errors() {
    let hub = TestHub::start().await;
    let key = hub.create_device("d1").await;

    let response = hub
        .rest(
            "POST",
            "/twins/nobody/methods",
            Some(&method_call("m", &json!(null), 5)),
        )
        .await;
    response.assert_error(404, "DeviceNotFound");
    let response = hub
        .rest(
            "POST",
            "/twins/d1/methods",
            Some(&method_call("m", &json!(null), 5)),
        )
        .await;
    response.assert_error(404, "DeviceNotOnline");

    let connected_only = hub.connect_device("d1", &key).await;
    let response = hub
        .rest(
            "POST",
            "/twins/d1/methods",
            Some(&method_call("m", &json!(null), 5)),
        )
        .await;
    response.assert_error(404, "DeviceNotOnline");
    drop(connected_only);

    let mut device = method_device(&hub, "d1", &key).await;
    for timeout in [3, 301] {
        let response = hub
            .rest(
                "POST",
                "/twins/d1/methods",
                Some(&method_call("m", &json!(null), timeout)),
            )
            .await;
        assert_eq!(
            response.status,
            400,
            "responseTimeoutInSeconds {timeout}: {}",
            response.text()
        );
    }
    let no_name = json!({"payload": null, "responseTimeoutInSeconds": 5});
    assert_eq!(
        hub.rest("POST", "/twins/d1/methods", Some(&no_name))
            .await
            .status,
        400
    );
    assert!(
        device
            .next_publish_within(Duration::from_millis(200))
            .await
            .is_none(),
        "refused calls never reach the device"
    );

    let call = call_in_background(&hub, "d1", method_call("ignored", &json!(null), 5));
    let request = device.expect_method_request().await;
    assert_eq!(request.name, "ignored");
    let response = tokio::time::timeout(Duration::from_secs(15), call)
        .await
        .expect("the call ends after its response timeout")
        .expect("call task");
    response.assert_error(504, "GatewayTimeout");

    device
        .answer_method(&request.rid, 200, &b"\"late\""[..])
        .await;
    let call = call_in_background(&hub, "d1", method_call("next", &json!(null), 5));
    let next = device.expect_method_request().await;
    assert_eq!(next.name, "next");
    device
        .answer_method(&next.rid, 200, &b"\"on time\""[..])
        .await;
    let response = call.await.expect("call task");
    assert_eq!(
        response.json(),
        json!({"status": 200, "payload": "on time"}),
        "a late answer is ignored"
    );
    drop(device);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_drops_mid_call_fails_the_call_promptly() {
    let hub = TestHub::start().await;
    let key = hub.create_device("d1").await;
    let mut device = method_device(&hub, "d1", &key).await;
    let call = call_in_background(&hub, "d1", method_call("reboot", &json!({"delay": 0}), 60));
    let request = device.expect_method_request().await;
    assert_eq!(request.name, "reboot");
    drop(device);
    let response = tokio::time::timeout(Duration::from_secs(15), call)
        .await
        .expect("the call must not wait for its 60 s response timeout")
        .expect("call task");
    response.assert_error(404, "DeviceNotOnline");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_get_their_own_answers() {
    let hub = TestHub::start().await;
    let key = hub.create_device("d1").await;
    let mut device = method_device(&hub, "d1", &key).await;

    let calls: Vec<_> = (0..8)
        .map(|i| {
            call_in_background(
                &hub,
                "d1",
                method_call(&format!("m{i}"), &json!({"i": i}), 15),
            )
        })
        .collect();
    let mut requests = Vec::new();
    for _ in 0..8 {
        requests.push(device.expect_method_request().await);
    }
    let mut rids: Vec<&str> = requests.iter().map(|r| r.rid.as_str()).collect();
    rids.sort_unstable();
    rids.dedup();
    assert_eq!(rids.len(), 8, "every request has its own $rid");

    for request in requests.iter().rev() {
        let body: Value = serde_json::from_slice(&request.payload).expect("JSON payload");
        let i = body["i"].as_i64().expect("payload carries i");
        assert_eq!(request.name, format!("m{i}"));
        let answer = json!({"answer": i}).to_string();
        device
            .answer_method(&request.rid, 200 + i32::try_from(i).expect("small"), answer)
            .await;
    }
    for (i, call) in calls.into_iter().enumerate() {
        let response = call.await.expect("call task");
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(
            response.json(),
            json!({"status": 200 + i, "payload": {"answer": i}})
        );
    }
    drop(device);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_waits_for_the_device_to_come_online() {
    let hub = TestHub::start().await;
    let key = hub.create_device("d1").await;
    let body = json!({
        "methodName": "wake",
        "payload": {"now": true},
        "responseTimeoutInSeconds": 10,
        "connectTimeoutInSeconds": 10,
    });
    let call = call_in_background(&hub, "d1", body);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!call.is_finished(), "the call waits for the device");

    let mut device = method_device(&hub, "d1", &key).await;
    let request = device.expect_method_request().await;
    assert_eq!(request.name, "wake");
    device
        .answer_method(&request.rid, 200, &b"\"awake\""[..])
        .await;
    let response = tokio::time::timeout(Duration::from_secs(15), call)
        .await
        .expect("the call completes")
        .expect("call task");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json(), json!({"status": 200, "payload": "awake"}));
    drop(device);
    hub.stop().await;
}
