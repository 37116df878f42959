//! The identity registry over raw HTTPS: authorization, create/update/delete semantics, error
//! shapes, modules, statistics and bulk operations.

use serde_json::{Value, json};

use crate::support::{
    FOREIGN_KEY, HOSTNAME, HttpRequest, KNOWN_OWNER_KEY, TestHub, now_unix, sas_token,
};

fn sas_device(device_id: &str) -> Value {
    json!({
        "deviceId": device_id,
        "authentication": {"type": "sas", "symmetricKey": {"primaryKey": "", "secondaryKey": ""}},
    })
}

fn is_generated_key(value: &Value) -> bool {
    value.as_str().is_some_and(|key| {
        key.len() == 44
            && key.ends_with('=')
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_calls_need_a_valid_token_with_the_right_permission() {
    let hub =
        TestHub::start_with(|config| config.owner_key = Some(KNOWN_OWNER_KEY.to_owned())).await;
    assert_eq!(
        hub.owner_key, KNOWN_OWNER_KEY,
        "the connection string carries the configured key"
    );
    let target = "/devices/d1?api-version=2021-04-12";

    let anonymous = hub
        .https(&HttpRequest {
            method: "GET",
            target,
            headers: &[],
            body: None,
        })
        .await;
    anonymous.assert_error(401, "IotHubUnauthorizedAccess");

    let expired = sas_token(
        HOSTNAME,
        KNOWN_OWNER_KEY,
        Some("iothubowner"),
        now_unix() - 7200,
    );
    let response = hub
        .https(&HttpRequest {
            method: "GET",
            target,
            headers: &[("Authorization", &expired)],
            body: None,
        })
        .await;
    response.assert_error(401, "IotHubUnauthorizedAccess");

    let forged = sas_token(
        HOSTNAME,
        FOREIGN_KEY,
        Some("iothubowner"),
        now_unix() + 3600,
    );
    let response = hub
        .https(&HttpRequest {
            method: "GET",
            target,
            headers: &[("Authorization", &forged)],
            body: None,
        })
        .await;
    response.assert_error(401, "IotHubUnauthorizedAccess");

    let garbage =
        "SharedAccessSignature sr=localhost&sig=notbase64!!&se=notanumber&skn=iothubowner";
    let response = hub
        .https(&HttpRequest {
            method: "GET",
            target,
            headers: &[("Authorization", garbage)],
            body: None,
        })
        .await;
    response.assert_error(401, "IotHubUnauthorizedAccess");

    hub.create_device("d1").await;
    let registry_read = hub
        .running
        .hub
        .policies()
        .iter()
        .find(|policy| policy.name == "registryRead")
        .map(|policy| policy.primary_key.clone())
        .expect("the hub has a registryRead policy");
    let reader = sas_token(
        HOSTNAME,
        &registry_read,
        Some("registryRead"),
        now_unix() + 3600,
    );
    let read = hub
        .https(&HttpRequest {
            method: "GET",
            target,
            headers: &[("Authorization", &reader)],
            body: None,
        })
        .await;
    assert_eq!(read.status, 200, "registryRead may read: {}", read.text());
    assert_eq!(read.json()["deviceId"], "d1");

    let body = sas_device("d2").to_string();
    let write = hub
        .https(&HttpRequest {
            method: "PUT",
            target: "/devices/d2?api-version=2021-04-12",
            headers: &[("Authorization", &reader)],
            body: Some(body.as_bytes()),
        })
        .await;
    write.assert_error(401, "IotHubUnauthorizedAccess");
    hub.rest("GET", "/devices/d2", None)
        .await
        .assert_error(404, "DeviceNotFound");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_generates_keys_and_refuses_duplicates() {
    let hub = TestHub::start().await;
    let created = hub
        .rest("PUT", "/devices/d1", Some(&sas_device("d1")))
        .await;
    assert_eq!(created.status, 200, "{}", created.text());
    let content_type = created.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let device = created.json();
    assert_eq!(device["deviceId"], "d1");
    assert_eq!(device["status"], "enabled");
    assert_eq!(device["connectionState"], "Disconnected");
    assert_eq!(device["authentication"]["type"], "sas");
    let keys = &device["authentication"]["symmetricKey"];
    assert!(is_generated_key(&keys["primaryKey"]), "{keys}");
    assert!(is_generated_key(&keys["secondaryKey"]), "{keys}");
    assert_ne!(keys["primaryKey"], keys["secondaryKey"]);
    assert!(
        device["etag"].as_str().is_some_and(|e| !e.is_empty()),
        "{device}"
    );

    let fetched = hub.rest("GET", "/devices/d1", None).await;
    assert_eq!(fetched.status, 200);
    assert_eq!(fetched.json()["authentication"]["symmetricKey"], *keys);

    let duplicate = hub
        .rest("PUT", "/devices/d1", Some(&sas_device("d1")))
        .await;
    duplicate.assert_error(409, "DeviceAlreadyExists");
    let unchanged = hub.rest("GET", "/devices/d1", None).await.json();
    assert_eq!(
        unchanged["authentication"]["symmetricKey"], *keys,
        "a refused create changes nothing"
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_honour_if_match() {
    let hub = TestHub::start().await;
    hub.create_device("d1").await;
    let device = hub.rest("GET", "/devices/d1", None).await.json();
    let etag = device["etag"].as_str().expect("etag").to_owned();

    let mut disabled = device.clone();
    disabled["status"] = json!("disabled");
    let body = Some(disabled.to_string().into_bytes());
    let stale = hub
        .rest_with(
            "PUT",
            "/devices/d1",
            &[("If-Match", "\"c3RhbGU=\"")],
            body.clone(),
        )
        .await;
    stale.assert_error(412, "PreconditionFailed");
    assert_eq!(
        hub.rest("GET", "/devices/d1", None).await.json()["status"],
        "enabled"
    );

    let quoted_etag = format!("\"{etag}\"");
    let current = hub
        .rest_with(
            "PUT",
            "/devices/d1",
            &[("If-Match", &quoted_etag)],
            body.clone(),
        )
        .await;
    assert_eq!(current.status, 200, "{}", current.text());
    let updated = current.json();
    assert_eq!(updated["status"], "disabled");
    assert_ne!(updated["etag"], json!(etag), "an update changes the etag");

    let reused = hub
        .rest_with("PUT", "/devices/d1", &[("If-Match", &quoted_etag)], body)
        .await;
    reused.assert_error(412, "PreconditionFailed");

    let mut enabled = updated.clone();
    enabled["status"] = json!("enabled");
    let wildcard = hub
        .rest_with(
            "PUT",
            "/devices/d1",
            &[("If-Match", "\"*\"")],
            Some(enabled.to_string().into_bytes()),
        )
        .await;
    assert_eq!(wildcard.status, 200, "{}", wildcard.text());
    assert_eq!(wildcard.json()["status"], "enabled");

    let missing = hub
        .rest_with(
            "PUT",
            "/devices/ghost",
            &[("If-Match", "\"*\"")],
            Some(sas_device("ghost").to_string().into_bytes()),
        )
        .await;
    missing.assert_error(404, "DeviceNotFound");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_are_bad_requests() {
    let hub = TestHub::start().await;
    let long_id = "a".repeat(129);
    let response = hub
        .rest(
            "PUT",
            &format!("/devices/{long_id}"),
            Some(&sas_device(&long_id)),
        )
        .await;
    assert_eq!(
        response.status,
        400,
        "129-character id: {}",
        response.text()
    );
    assert!(response.header("iothub-errorcode").is_some());

    let response = hub
        .rest("PUT", "/devices/a%2Fb", Some(&sas_device("a/b")))
        .await;
    assert_eq!(response.status, 400, "id with '/': {}", response.text());

    let response = hub
        .rest("PUT", "/devices/a%20b", Some(&sas_device("a b")))
        .await;
    assert_eq!(response.status, 400, "id with a space: {}", response.text());

    let malformed = hub
        .rest_with(
            "PUT",
            "/devices/d1",
            &[],
            Some(b"{\"deviceId\": \"d1\",".to_vec()),
        )
        .await;
    assert_eq!(
        malformed.status,
        400,
        "malformed JSON: {}",
        malformed.text()
    );
    assert!(malformed.header("iothub-errorcode").is_some());

    let not_object = hub
        .rest_with("PUT", "/devices/d1", &[], Some(b"[1,2]".to_vec()))
        .await;
    assert_eq!(not_object.status, 400, "JSON array: {}", not_object.text());
    hub.rest("GET", "/devices/d1", None)
        .await
        .assert_error(404, "DeviceNotFound");

    let max_id = "b".repeat(128);
    let response = hub
        .rest(
            "PUT",
            &format!("/devices/{max_id}"),
            Some(&sas_device(&max_id)),
        )
        .await;
    assert_eq!(
        response.status,
        200,
        "a 128-character id is fine: {}",
        response.text()
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_deleted_devices_are_not_found() {
    let hub = TestHub::start().await;
    hub.rest("GET", "/devices/nobody", None)
        .await
        .assert_error(404, "DeviceNotFound");

    hub.create_device("d1").await;
    let deleted = hub
        .rest_with("DELETE", "/devices/d1", &[("If-Match", "\"*\"")], None)
        .await;
    assert_eq!(deleted.status, 204, "{}", deleted.text());
    hub.rest("GET", "/devices/d1", None)
        .await
        .assert_error(404, "DeviceNotFound");
    hub.rest("GET", "/twins/d1", None)
        .await
        .assert_error(404, "DeviceNotFound");
    hub.rest("DELETE", "/devices/d1", None)
        .await
        .assert_error(404, "DeviceNotFound");

    let recreated = hub
        .rest("PUT", "/devices/d1", Some(&sas_device("d1")))
        .await;
    assert_eq!(
        recreated.status,
        200,
        "a deleted id can be reused: {}",
        recreated.text()
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modules_are_created_listed_and_deleted() {
    let hub = TestHub::start().await;
    hub.create_device("edge").await;
    for module_id in ["m1", "m2"] {
        let body = json!({
            "deviceId": "edge",
            "moduleId": module_id,
            "authentication": {"type": "sas", "symmetricKey": {"primaryKey": "", "secondaryKey": ""}},
        });
        let created = hub
            .rest(
                "PUT",
                &format!("/devices/edge/modules/{module_id}"),
                Some(&body),
            )
            .await;
        assert!(matches!(created.status, 200 | 201), "{}", created.text());
        let module = created.json();
        assert_eq!(module["moduleId"], module_id);
        assert_eq!(module["deviceId"], "edge");
        assert!(
            is_generated_key(&module["authentication"]["symmetricKey"]["primaryKey"]),
            "{module}"
        );
    }
    let body = json!({"deviceId": "edge", "moduleId": "m1"});
    hub.rest("PUT", "/devices/edge/modules/m1", Some(&body))
        .await
        .assert_error(409, "ModuleAlreadyExistsOnDevice");

    let fetched = hub.rest("GET", "/devices/edge/modules/m1", None).await;
    assert_eq!(fetched.status, 200);
    assert_eq!(fetched.json()["moduleId"], "m1");

    let listed = hub.rest("GET", "/devices/edge/modules", None).await;
    assert_eq!(listed.status, 200);
    let mut ids: Vec<String> = listed
        .json()
        .as_array()
        .expect("a JSON array")
        .iter()
        .filter_map(|m| m["moduleId"].as_str().map(str::to_owned))
        .collect();
    ids.sort();
    assert_eq!(ids, ["m1", "m2"]);

    let deleted = hub.rest("DELETE", "/devices/edge/modules/m1", None).await;
    assert_eq!(deleted.status, 204, "{}", deleted.text());
    hub.rest("GET", "/devices/edge/modules/m1", None)
        .await
        .assert_error(404, "ModuleNotFound");
    let listed = hub.rest("GET", "/devices/edge/modules", None).await.json();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");

    hub.rest("GET", "/devices/nobody/modules", None)
        .await
        .assert_error(404, "DeviceNotFound");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statistics_count_enabled_and_disabled_devices() {
    let hub = TestHub::start().await;
    let empty = hub.rest("GET", "/statistics/devices", None).await;
    assert_eq!(empty.status, 200);
    assert_eq!(empty.json()["totalDeviceCount"], 0);

    hub.create_device("on").await;
    let mut off = sas_device("off");
    off["status"] = json!("disabled");
    assert_eq!(
        hub.rest("PUT", "/devices/off", Some(&off)).await.status,
        200
    );
    let stats = hub.rest("GET", "/statistics/devices", None).await.json();
    assert_eq!(stats["totalDeviceCount"], 2, "{stats}");
    assert_eq!(stats["enabledDeviceCount"], 1, "{stats}");
    assert_eq!(stats["disabledDeviceCount"], 1, "{stats}");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_create_reports_each_failure() {
    let hub = TestHub::start().await;
    let creates: Vec<Value> = ["b1", "b2", "b3"]
        .iter()
        .map(|id| json!({"id": id, "importMode": "create", "authentication": {"type": "sas", "symmetricKey": {}}}))
        .collect();
    let response = hub
        .rest("POST", "/devices", Some(&Value::Array(creates)))
        .await;
    assert_eq!(response.status, 200, "{}", response.text());
    let result = response.json();
    assert_eq!(result["isSuccessful"], true, "{result}");
    assert!(
        result["errors"].as_array().is_none_or(Vec::is_empty),
        "{result}"
    );
    for id in ["b1", "b2", "b3"] {
        let device = hub.rest("GET", &format!("/devices/{id}"), None).await;
        assert_eq!(device.status, 200, "{id} exists");
        assert!(is_generated_key(
            &device.json()["authentication"]["symmetricKey"]["primaryKey"]
        ));
    }

    let with_duplicate = json!([
        {"id": "b4", "importMode": "create"},
        {"id": "b2", "importMode": "create"},
    ]);
    let response = hub.rest("POST", "/devices", Some(&with_duplicate)).await;
    assert_eq!(response.status, 400, "{}", response.text());
    let result = response.json();
    assert_eq!(result["isSuccessful"], false, "{result}");
    let errors = result["errors"].as_array().expect("errors array");
    assert_eq!(errors.len(), 1, "{result}");
    assert_eq!(errors[0]["deviceId"], "b2", "{result}");
    assert_eq!(errors[0]["errorCode"], "DeviceAlreadyExists", "{result}");
    hub.stop().await;
}
