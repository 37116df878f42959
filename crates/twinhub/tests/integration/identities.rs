//! Identities beyond the plain device: ids using every character the registry allows, and
//! module identities connecting over MQTT.

use serde_json::json;
use twinhub_mqtt::{ConnectReturnCode, QoS};

use crate::support::{HOSTNAME, TestHub, device_connect, method_call, now_unix, sas_token};

/// Percent-encodes like JavaScript's `encodeURIComponent`, as the service SDKs encode path ids.
fn encode_uri_component(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_with_every_allowed_punctuation_character_work_end_to_end() {
    let hub = TestHub::start().await;
    let device_id = "dev-:.+%_#*?!(),=@;$'1";
    let path = format!("/devices/{}", encode_uri_component(device_id));
    let body = json!({
        "deviceId": device_id,
        "authentication": {"type": "sas", "symmetricKey": {"primaryKey": "", "secondaryKey": ""}},
    });
    let created = hub.rest("PUT", &path, Some(&body)).await;
    assert_eq!(created.status, 200, "{}", created.text());
    let device = created.json();
    assert_eq!(device["deviceId"], device_id);
    let key = device["authentication"]["symmetricKey"]["primaryKey"]
        .as_str()
        .expect("key")
        .to_owned();

    let mut client = hub.twin_device(device_id, &key).await;
    assert_eq!(
        client.patch_reported("1", br#"{"odd":true}"#).await.status,
        204
    );
    let twin_path = format!("/twins/{}", encode_uri_component(device_id));
    let twin = hub.rest("GET", &twin_path, None).await.json();
    assert_eq!(twin["deviceId"], device_id, "{twin}");
    assert_eq!(twin["properties"]["reported"]["odd"], true, "{twin}");

    let listed = hub.rest("GET", "/devices", None).await.json();
    let ids: Vec<&str> = listed
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|d| d["deviceId"].as_str())
        .collect();
    assert_eq!(ids, [device_id], "{listed}");
    drop(client);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modules_connect_with_their_own_identity_and_twin() {
    let hub = TestHub::start().await;
    hub.create_device("edge").await;
    let body = json!({
        "deviceId": "edge",
        "moduleId": "m1",
        "authentication": {"type": "sas", "symmetricKey": {"primaryKey": "", "secondaryKey": ""}},
    });
    let created = hub
        .rest("PUT", "/devices/edge/modules/m1", Some(&body))
        .await;
    assert!(matches!(created.status, 200 | 201), "{}", created.text());
    let key = created.json()["authentication"]["symmetricKey"]["primaryKey"]
        .as_str()
        .expect("key")
        .to_owned();

    let token = sas_token(
        &format!("{HOSTNAME}/devices/edge/modules/m1"),
        &key,
        None,
        now_unix() + 3600,
    );
    let mut module = hub.mqtt_socket(None).await;
    let mut connect = device_connect("edge/m1", Some(&token), true);
    connect.username = Some(format!("{HOSTNAME}/edge/m1/?api-version=2021-04-12"));
    assert_eq!(
        module.connect(connect).await.code,
        ConnectReturnCode::Accepted
    );
    module
        .subscribe(&[
            ("$iothub/twin/res/#", QoS::AtMostOnce),
            ("$iothub/methods/POST/#", QoS::AtMostOnce),
        ])
        .await;
    assert_eq!(module.get_twin("1").await["reported"]["$version"], 1);
    assert_eq!(
        module
            .patch_reported("2", br#"{"module":"m1"}"#)
            .await
            .status,
        204
    );

    let module_twin = hub.rest("GET", "/twins/edge/modules/m1", None).await;
    assert_eq!(module_twin.status, 200, "{}", module_twin.text());
    let module_twin = module_twin.json();
    assert_eq!(module_twin["moduleId"], "m1", "{module_twin}");
    assert_eq!(
        module_twin["properties"]["reported"]["module"], "m1",
        "{module_twin}"
    );
    let device_twin = hub.rest("GET", "/twins/edge", None).await.json();
    assert!(
        device_twin["properties"]["reported"]
            .get("module")
            .is_none(),
        "{device_twin}"
    );

    let service = (*hub).clone();
    let call = tokio::spawn(async move {
        service
            .rest(
                "POST",
                "/twins/edge/modules/m1/methods",
                Some(&method_call("restart", &json!(1), 10)),
            )
            .await
    });
    let request = module.expect_method_request().await;
    assert_eq!(request.name, "restart");
    module
        .answer_method(&request.rid, 200, &b"\"restarted\""[..])
        .await;
    let response = call.await.expect("call task");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        response.json(),
        json!({"status": 200, "payload": "restarted"})
    );

    let device_call = hub
        .rest(
            "POST",
            "/twins/edge/methods",
            Some(&method_call("restart", &json!(1), 5)),
        )
        .await;
    device_call.assert_error(404, "DeviceNotOnline");

    let mut wrong_scope = hub.mqtt_socket(None).await;
    let device_scoped = sas_token(
        &format!("{HOSTNAME}/devices/edge/modules/m2"),
        &key,
        None,
        now_unix() + 3600,
    );
    let mut connect = device_connect("edge/m1", Some(&device_scoped), true);
    connect.username = Some(format!("{HOSTNAME}/edge/m1/?api-version=2021-04-12"));
    assert_eq!(
        wrong_scope.connect(connect).await.code,
        ConnectReturnCode::NotAuthorized
    );
    drop(module);
    hub.stop().await;
}
