//! Fleet operations end to end: a configuration over a connected fleet, and a method job whose
//! devices come online late, across a hub restart.

use std::time::Duration;

use serde_json::{Value, json};
use twinhub_mqtt::QoS;

use crate::support::{MqttClient, TestHub};

const FLEET: usize = 40;

async fn desired_listener(hub: &TestHub, device_id: &str, key: &str) -> MqttClient {
    let mut device = hub.connect_device(device_id, key).await;
    device
        .subscribe(&[("$iothub/twin/PATCH/properties/desired/#", QoS::AtMostOnce)])
        .await;
    device
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_reaches_every_connected_device_and_its_metrics_read_right_at_once() {
    let hub = TestHub::start().await;
    let mut devices = Vec::new();
    for i in 0..FLEET {
        let id = format!("chiller-{i:02}");
        let key = hub.create_device(&id).await;
        let kind = if i % 4 == 0 { "pump" } else { "chiller" };
        let tagged = hub
            .rest(
                "PATCH",
                &format!("/twins/{id}"),
                Some(&json!({"tags": {"kind": kind}})),
            )
            .await;
        assert_eq!(tagged.status, 200, "{}", tagged.text());
        devices.push((id.clone(), kind, desired_listener(&hub, &id, &key).await));
    }
    let configuration = json!({
        "id": "fw-290",
        "content": {"deviceContent": {"properties.desired.firmware": {"fwVersion": "2.9.0"}}},
        "targetCondition": "tags.kind = 'chiller'",
        "priority": 10,
        "metrics": {"queries": {"reporting": "SELECT deviceId FROM devices WHERE properties.reported.fw = '2.9.0'"}},
    });
    let created = hub
        .rest("PUT", "/configurations/fw-290", Some(&configuration))
        .await;
    assert!(matches!(created.status, 200 | 201), "{}", created.text());
    let read = hub.rest("GET", "/configurations/fw-290", None).await.json();
    let targeted = devices
        .iter()
        .filter(|(_, kind, _)| *kind == "chiller")
        .count();
    assert_eq!(
        read["systemMetrics"]["results"],
        json!({"targetedCount": targeted, "appliedCount": targeted})
    );
    assert_eq!(read["metrics"]["results"], json!({"reporting": 0}));
    for (id, kind, device) in &mut devices {
        if *kind == "chiller" {
            let patch = device
                .expect_publish("$iothub/twin/PATCH/properties/desired/")
                .await;
            let body: Value = serde_json::from_slice(&patch.payload).expect("JSON patch");
            assert_eq!(body["firmware"], json!({"fwVersion": "2.9.0"}), "{id}");
        } else {
            assert!(
                device
                    .next_publish_within(Duration::from_millis(200))
                    .await
                    .is_none(),
                "{id} is not targeted"
            );
        }
    }
    hub.stop().await;
}

/// Polls job `wave-a` until `succeeded` devices have succeeded; returns the job.
async fn wait_for_succeeded(hub: &TestHub, succeeded: u64) -> Value {
    for _ in 0..100 {
        let job = hub.rest("GET", "/jobs/v2/wave-a", None).await.json();
        if job["deviceJobStatistics"]["succeededCount"] == json!(succeeded) {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the job never reached {succeeded} succeeded devices");
}

/// Devices offline when a method job starts are called when they come back before the deadline;
/// a restart in the middle resumes the job without calling any device twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_job_survives_a_restart_and_reaches_devices_that_come_back() {
    let hub = TestHub::start().await;
    let mut keys = Vec::new();
    for i in 0..4 {
        let id = format!("late-{i}");
        keys.push((id.clone(), hub.create_device(&id).await));
        hub.rest(
            "PATCH",
            &format!("/twins/{id}"),
            Some(&json!({"tags": {"wave": "a"}})),
        )
        .await;
    }
    let mut online = Vec::new();
    for (id, key) in &keys[..2] {
        let mut device = hub.connect_device(id, key).await;
        device
            .subscribe(&[("$iothub/methods/POST/#", QoS::AtMostOnce)])
            .await;
        online.push(device);
    }
    let job = json!({
        "jobId": "wave-a", "type": "scheduleDeviceMethod", "queryCondition": "tags.wave = 'a'",
        "cloudToDeviceMethod": {"methodName": "reboot", "payload": null, "responseTimeoutInSeconds": 10},
        "maxExecutionTimeInSeconds": 120,
    });
    let created = hub.rest("PUT", "/jobs/v2/wave-a", Some(&job)).await;
    assert_eq!(created.status, 200, "{}", created.text());
    for device in &mut online {
        let request = device.expect_method_request().await;
        device.answer_method(&request.rid, 200, "\"ok\"").await;
    }
    let halfway = wait_for_succeeded(&hub, 2).await;
    assert_eq!(halfway["status"], "running", "{halfway}");
    assert_eq!(
        halfway["deviceJobStatistics"]["pendingCount"], 2,
        "{halfway}"
    );
    drop(online);

    let hub = hub.restart().await;
    let mut returning = Vec::new();
    for (id, key) in &keys {
        let mut device = hub.connect_device(id, key).await;
        device
            .subscribe(&[("$iothub/methods/POST/#", QoS::AtMostOnce)])
            .await;
        returning.push(device);
    }
    for device in &mut returning[2..] {
        let request = device.expect_method_request().await;
        device.answer_method(&request.rid, 200, "\"ok\"").await;
    }
    let done = wait_for_succeeded(&hub, 4).await;
    for _ in 0..50 {
        let job = hub.rest("GET", "/jobs/v2/wave-a", None).await.json();
        if job["status"] == "completed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(done["deviceJobStatistics"]["failedCount"], 0, "{done}");
    for device in &mut returning[..2] {
        assert!(
            device
                .next_publish_within(Duration::from_millis(500))
                .await
                .is_none(),
            "a device that already answered was not called again"
        );
    }
    let job = hub.rest("GET", "/jobs/v2/wave-a", None).await.json();
    assert_eq!(job["status"], "completed", "{job}");
    hub.stop().await;
}
