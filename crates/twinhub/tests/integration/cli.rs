//! The back-end CLI: the `twinhub` binary against an in-process hub, addressed by a connection
//! string with the ephemeral HTTPS port and the hub's CA.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bytes::Bytes;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use twinhub_mqtt::QoS;

use crate::support::{HOSTNAME, TestHub, WAIT};

/// Runs `twinhub` with `args` (plus the hub options) off the runtime thread, so the in-process
/// hub keeps serving while the binary runs.
async fn twinhub(hub: &TestHub, args: &[&str]) -> Output {
    let connection_string = hub.running.service_connection_string.trim().replacen(
        &format!("HostName={HOSTNAME}"),
        &format!("HostName={HOSTNAME}:{}", hub.https_addr.port()),
        1,
    );
    let ca = hub.running.ca_pem_path.clone().expect("the hub made a CA");
    run_binary(args, Some((connection_string, ca))).await
}

/// Runs `twinhub` with `args` and, if given, `--connection-string` and `--ca`, in an empty
/// directory and without the environment variables it reads.
async fn run_binary(args: &[&str], hub: Option<(String, PathBuf)>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_twinhub"));
    command
        .args(args)
        .env_remove("TWINHUB_CONNECTION_STRING")
        .env_remove("TWINHUB_DATA_DIR");
    if let Some((connection_string, ca)) = hub {
        command
            .arg("--connection-string")
            .arg(connection_string)
            .arg("--ca")
            .arg(ca);
    }
    let directory = tempfile::tempdir().expect("temporary directory");
    command.current_dir(directory.path());
    let output = tokio::time::timeout(
        WAIT * 3,
        tokio::task::spawn_blocking(move || command.output()),
    )
    .await
    .expect("twinhub finishes in time")
    .expect("the blocking task runs")
    .expect("twinhub runs");
    drop(directory);
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts exit status 0 and returns stdout.
fn success(output: &Output) -> String {
    assert!(
        output.status.success(),
        "twinhub failed ({:?}): {}{}",
        output.status.code(),
        stderr(output),
        stdout(output)
    );
    stdout(output)
}

/// Asserts exit status 0 and parses stdout as JSON.
fn success_json(output: &Output) -> Value {
    let text = success(output);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {text}"))
}

/// Asserts exit status 1 and returns stderr.
fn failure(output: &Output) -> String {
    assert_eq!(
        output.status.code(),
        Some(1),
        "expected exit 1: {}{}",
        stderr(output),
        stdout(output)
    );
    stderr(output)
}

#[tokio::test]
async fn devices_create_list_show_connection_string_delete() {
    let hub = TestHub::start().await;
    let port = hub.https_addr.port();

    let created = success(&twinhub(&hub, &["devices", "create", "cli-d1"]).await);
    assert!(created.contains("device id:"), "{created}");
    let prefix = format!("HostName={HOSTNAME}:{port};DeviceId=cli-d1;SharedAccessKey=");
    assert!(created.contains(&prefix), "{created}");

    let key = "dGhpcyBpcyBhIHRlc3QgZGV2aWNlIGtleSAzMiBieXQ=";
    success(
        &twinhub(
            &hub,
            &[
                "devices",
                "create",
                "cli-d2",
                "--primary-key",
                key,
                "--secondary-key",
                key,
            ],
        )
        .await,
    );
    let listed = success(&twinhub(&hub, &["devices", "list"]).await);
    let lines: Vec<&str> = listed.lines().collect();
    assert!(lines[0].starts_with("DEVICE ID"), "{listed}");
    assert_eq!(lines.len(), 3, "{listed}");
    assert!(listed.contains("cli-d1") && listed.contains("enabled"));

    let shown = success_json(&twinhub(&hub, &["devices", "show", "cli-d2", "-o", "json"]).await);
    assert_eq!(shown["deviceId"], "cli-d2");
    assert_eq!(shown["authentication"]["symmetricKey"]["primaryKey"], key);

    let connection_string =
        success(&twinhub(&hub, &["devices", "connection-string", "cli-d2"]).await);
    assert_eq!(
        connection_string.trim(),
        format!("HostName={HOSTNAME}:{port};DeviceId=cli-d2;SharedAccessKey={key}")
    );

    let deleted = success(&twinhub(&hub, &["devices", "delete", "cli-d2"]).await);
    assert_eq!(deleted, "deleted device cli-d2\n");
    let missing = failure(&twinhub(&hub, &["devices", "show", "cli-d2"]).await);
    assert!(
        missing.starts_with("error: DeviceNotFound: "),
        "a clear message: {missing}"
    );
    hub.stop().await;
}

#[tokio::test]
async fn twin_update_with_etag_and_a_stale_etag() {
    let hub = TestHub::start().await;
    hub.create_device("cli-t1").await;
    let twin = success_json(&twinhub(&hub, &["twin", "show", "cli-t1", "-o", "json"]).await);
    let etag = twin["etag"].as_str().expect("an etag").to_owned();

    let updated = success_json(
        &twinhub(
            &hub,
            &[
                "twin",
                "update",
                "cli-t1",
                "--tags",
                r#"{"site":"north"}"#,
                "--desired",
                r#"{"interval":30}"#,
                "--etag",
                &etag,
                "--output",
                "json",
            ],
        )
        .await,
    );
    assert_eq!(updated["tags"]["site"], "north");
    assert_eq!(updated["properties"]["desired"]["interval"], 30);

    let stale = failure(
        &twinhub(
            &hub,
            &[
                "twin",
                "update",
                "cli-t1",
                "--tags",
                r#"{"site":"south"}"#,
                "--etag",
                &etag,
            ],
        )
        .await,
    );
    assert!(stale.starts_with("error: PreconditionFailed: "), "{stale}");

    let shown = success(&twinhub(&hub, &["twin", "show", "cli-t1"]).await);
    assert!(shown.contains("\"site\": \"north\""), "{shown}");
    assert!(!shown.contains("$metadata"), "{shown}");

    let usage = twinhub(&hub, &["twin", "update", "cli-t1"]).await;
    assert_eq!(
        usage.status.code(),
        Some(2),
        "clap refuses a patchless update"
    );
    hub.stop().await;
}

#[tokio::test]
async fn query_prints_every_page() {
    let hub = TestHub::start().await;
    for batch in 0..3 {
        let body: Vec<Value> = (0..100)
            .map(|i| json!({"id": format!("q{batch}-{i:03}"), "importMode": "create"}))
            .collect();
        let response = hub
            .rest("POST", "/devices", Some(&Value::Array(body)))
            .await;
        assert_eq!(response.status, 200, "{}", response.text());
    }
    let rows = success_json(
        &twinhub(
            &hub,
            &["query", "SELECT deviceId FROM devices", "--output", "json"],
        )
        .await,
    );
    let rows = rows.as_array().expect("an array of rows");
    assert_eq!(rows.len(), 300, "all three pages");

    let table = success(
        &twinhub(
            &hub,
            &[
                "query",
                "SELECT deviceId FROM devices WHERE deviceId = 'q1-007'",
            ],
        )
        .await,
    );
    assert_eq!(table, "DEVICEID\nq1-007\n");
    let invalid = failure(&twinhub(&hub, &["query", "SELECT FROM"]).await);
    assert!(invalid.starts_with("error: ArgumentInvalid: "), "{invalid}");
    hub.stop().await;
}

#[tokio::test]
async fn configurations_create_show_delete() {
    let hub = TestHub::start().await;
    hub.create_device("cli-c1").await;
    let created = success(
        &twinhub(
            &hub,
            &[
                "configurations",
                "create",
                "interval-30",
                "--target",
                "*",
                "--content",
                r#"{"properties.desired.interval": 30}"#,
                "--metric",
                "set=SELECT deviceId FROM devices WHERE properties.desired.interval = 30",
                "--label",
                "team=ops",
            ],
        )
        .await,
    );
    assert!(created.contains("priority: 10"), "{created}");
    let shown = success_json(
        &twinhub(
            &hub,
            &["configurations", "show", "interval-30", "-o", "json"],
        )
        .await,
    );
    assert_eq!(shown["systemMetrics"]["results"]["targetedCount"], 1);
    assert_eq!(shown["metrics"]["results"]["set"], 1);
    assert_eq!(shown["labels"]["team"], "ops");
    let table = success(&twinhub(&hub, &["configurations", "show", "interval-30"]).await);
    assert!(table.contains("METRIC"), "{table}");
    let listed = success(&twinhub(&hub, &["configurations", "list"]).await);
    assert!(listed.contains("interval-30"), "{listed}");

    success(&twinhub(&hub, &["configurations", "delete", "interval-30"]).await);
    let gone = failure(&twinhub(&hub, &["configurations", "show", "interval-30"]).await);
    assert!(gone.starts_with("error: ConfigurationNotFound: "), "{gone}");
    hub.stop().await;
}

#[tokio::test]
async fn jobs_create_show_list_cancel() {
    let hub = TestHub::start().await;
    hub.create_device("cli-j1").await;
    let created = success(
        &twinhub(
            &hub,
            &[
                "jobs",
                "create",
                "tag-all",
                "--query",
                "*",
                "--tags",
                r#"{"batch": 7}"#,
                "--watch",
                "--timeout",
                "20",
            ],
        )
        .await,
    );
    assert!(created.contains("job tag-all: completed"), "{created}");
    let twin = success_json(&twinhub(&hub, &["twin", "show", "cli-j1", "-o", "json"]).await);
    assert_eq!(twin["tags"]["batch"], 7);

    success(
        &twinhub(
            &hub,
            &[
                "jobs",
                "create",
                "later",
                "--query",
                "*",
                "--method",
                "reboot",
                "--start-time",
                "2099-01-01T00:00:00Z",
            ],
        )
        .await,
    );
    let shown = success_json(&twinhub(&hub, &["jobs", "show", "later", "-o", "json"]).await);
    assert_eq!(shown["type"], "scheduleDeviceMethod");
    let cancelled = success(&twinhub(&hub, &["jobs", "cancel", "later"]).await);
    assert!(cancelled.contains("status:"), "{cancelled}");
    assert!(cancelled.contains("cancelled"), "{cancelled}");
    let listed = success_json(&twinhub(&hub, &["jobs", "list", "-o", "json"]).await);
    assert_eq!(listed.as_array().map(Vec::len), Some(2));
    let methods =
        success(&twinhub(&hub, &["jobs", "list", "--type", "scheduleDeviceMethod"]).await);
    assert_eq!(methods.lines().count(), 2, "{methods}");
    hub.stop().await;
}

#[tokio::test]
async fn method_invoke_and_reboot_reach_a_device() {
    let hub = TestHub::start().await;
    let key = hub.create_device("cli-m1").await;
    let mut device = hub.connect_device("cli-m1", &key).await;
    device
        .subscribe(&[("$iothub/methods/POST/#", QoS::AtMostOnce)])
        .await;

    let invoke = twinhub(
        &hub,
        &[
            "method",
            "invoke",
            "cli-m1",
            "setLevel",
            "--payload",
            r#"{"level": 3}"#,
            "-o",
            "json",
        ],
    );
    let answer = async {
        let request = device.expect_method_request().await;
        assert_eq!(request.name, "setLevel");
        let payload: Value = serde_json::from_slice(&request.payload).expect("JSON payload");
        assert_eq!(payload, json!({"level": 3}));
        device
            .answer_method(&request.rid, 200, Bytes::from_static(br#"{"ok":true}"#))
            .await;
    };
    let (output, ()) = tokio::join!(invoke, answer);
    assert_eq!(
        success_json(&output),
        json!({"status": 200, "payload": {"ok": true}})
    );

    let reboot = twinhub(&hub, &["reboot", "cli-m1"]);
    let answer = async {
        let request = device.expect_method_request().await;
        assert_eq!(request.name, "reboot");
        device
            .answer_method(&request.rid, 200, Bytes::from_static(b"\"Reboot started\""))
            .await;
    };
    let (output, ()) = tokio::join!(reboot, answer);
    assert_eq!(
        success(&output),
        "status:  200\npayload: \"Reboot started\"\n"
    );
    hub.stop().await;
}

#[tokio::test]
async fn firmware_upload_prints_url_and_sha256() {
    let hub = TestHub::start().await;
    let directory = tempfile::tempdir().expect("temporary directory");
    let file = directory.path().join("sensor.bin");
    let content: Vec<u8> = (0..50_000u32).map(|i| (i % 256) as u8).collect();
    std::fs::write(&file, &content).expect("package written");
    let sha256: String = Sha256::digest(&content)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();

    let uploaded = success(
        &twinhub(
            &hub,
            &["firmware", "upload", path(&file), "--version", "1.4.0"],
        )
        .await,
    );
    assert!(
        uploaded.contains(&format!("sha256:  {sha256}")),
        "{uploaded}"
    );
    let url = format!(
        "url:     https://{HOSTNAME}:{}/firmware/sensor-1.4.0/content",
        hub.https_addr.port()
    );
    assert!(uploaded.contains(&url), "{uploaded}");

    let listed = success_json(&twinhub(&hub, &["firmware", "list", "-o", "json"]).await);
    assert_eq!(listed[0]["sha256"], sha256.as_str());
    let again = failure(
        &twinhub(
            &hub,
            &["firmware", "upload", path(&file), "--version", "1.4.0"],
        )
        .await,
    );
    assert!(again.starts_with("error: "), "{again}");
    success(&twinhub(&hub, &["firmware", "delete", "sensor-1.4.0"]).await);
    let listed = success_json(&twinhub(&hub, &["firmware", "list", "-o", "json"]).await);
    assert_eq!(listed, json!([]));

    let rollout = success_json(
        &twinhub(
            &hub,
            &[
                "rollout",
                "firmware",
                "--version",
                "1.5.0",
                "--target",
                "*",
                "--file",
                path(&file),
                "-o",
                "json",
            ],
        )
        .await,
    );
    let package = &rollout["package"];
    assert_eq!(package["id"], "sensor-1.5.0");
    let firmware =
        &rollout["configuration"]["content"]["deviceContent"]["properties.desired.firmware"];
    assert_eq!(firmware["fwPackageURI"], package["url"]);
    assert_eq!(firmware["fwPackageCheckValue"], sha256.as_str());
    assert_eq!(firmware["fwSize"], 50_000);
    assert_eq!(rollout["configuration"]["id"], "firmware-1-5-0");
    hub.stop().await;
}

#[tokio::test]
async fn rollout_watch_ends_when_every_device_finished() {
    let hub = TestHub::start().await;
    for (device_id, status, version) in
        [("cli-r1", "current", "2.0.0"), ("cli-r2", "error", "1.0.0")]
    {
        let key = hub.create_device(device_id).await;
        let mut device = hub.twin_device(device_id, &key).await;
        let report = json!({"firmware": {"fwUpdateStatus": status, "currentFwVersion": version}});
        let response = device
            .patch_reported("1", report.to_string().as_bytes())
            .await;
        assert_eq!(response.status, 204);
    }
    let sha = "ab".repeat(32);
    let rollout = |id: &'static str, target: &'static str| {
        let sha = sha.clone();
        let hub = &hub;
        async move {
            twinhub(
                hub,
                &[
                    "rollout",
                    "firmware",
                    "--version",
                    "2.0.0",
                    "--id",
                    id,
                    "--target",
                    target,
                    "--url",
                    "https://example.com/fw.bin",
                    "--sha256",
                    &sha,
                    "--watch",
                    "--timeout",
                    "20",
                    "--fail-on-error",
                ],
            )
            .await
        }
    };
    let done = success(&rollout("fw-ok", "deviceId = 'cli-r1'").await);
    assert!(done.contains("rollout fw-ok: 1 targeted"), "{done}");
    assert!(done.contains("current"), "{done}");

    let failed = failure(&rollout("fw-bad", "deviceId = 'cli-r2'").await);
    assert!(
        failed.contains("error: rollout fw-bad: 1 of 1 devices failed"),
        "{failed}"
    );
    let configuration =
        success_json(&twinhub(&hub, &["configurations", "show", "fw-ok", "-o", "json"]).await);
    assert_eq!(
        configuration["content"]["deviceContent"]["properties.desired.firmware"]["fwPackageCheckValue"],
        sha.as_str()
    );
    assert_eq!(configuration["priority"], 10);
    hub.stop().await;
}

#[tokio::test]
async fn failures_exit_1_with_a_clear_message() {
    let hub = TestHub::start().await;
    // The hub's data directory goes with it; keep a copy of its CA.
    let directory = tempfile::tempdir().expect("temporary directory");
    let ca = directory.path().join("ca.pem");
    std::fs::copy(hub.running.ca_pem_path.clone().expect("CA"), &ca).expect("CA copied");
    let owner = hub.running.service_connection_string.trim().to_owned();
    hub.stop().await;

    let unreachable = run_binary(
        &["devices", "list"],
        Some((
            owner.replacen("HostName=localhost", "HostName=localhost:1", 1),
            ca,
        )),
    )
    .await;
    let message = failure(&unreachable);
    assert!(
        message.starts_with("error: cannot reach the hub"),
        "{message}"
    );

    let nowhere = run_binary(&["devices", "list"], None).await;
    let message = failure(&nowhere);
    assert!(message.contains("--connection-string"), "{message}");

    let bad = run_binary(
        &[
            "devices",
            "list",
            "--connection-string",
            "HostName=h;DeviceId=d",
        ],
        None,
    )
    .await;
    let message = failure(&bad);
    assert!(message.contains("service"), "{message}");

    let usage = run_binary(&["devices", "frobnicate"], None).await;
    assert_eq!(usage.status.code(), Some(2));
}

/// A path as a command-line argument.
fn path(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}
