//! `twinhub simulate` and `twinhub demo`: simulated fleets (the real binary) against an
//! in-process hub, driven through the CLI and the service client.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use twinhub_client::ServiceClient;

use crate::support::{HOSTNAME, TestHub};

/// The most a simulated fleet may take to connect.
const CONNECT_WAIT: Duration = Duration::from_secs(60);
/// The most a rollout may take once the fleet is connected.
const ROLLOUT_SECONDS: &str = "60";

/// The hub's service connection string with its ephemeral HTTPS port, and its CA.
fn hub_access(hub: &TestHub) -> (String, PathBuf) {
    let connection_string = hub.running.service_connection_string.trim().replacen(
        &format!("HostName={HOSTNAME}"),
        &format!("HostName={HOSTNAME}:{}", hub.https_addr.port()),
        1,
    );
    let ca = hub.running.ca_pem_path.clone().expect("the hub made a CA");
    (connection_string, ca)
}

fn service_client(hub: &TestHub) -> ServiceClient {
    let (connection_string, ca) = hub_access(hub);
    let ca_pem = std::fs::read_to_string(ca).expect("the CA is readable");
    ServiceClient::from_connection_string(&connection_string, Some(&ca_pem))
        .expect("a service client")
}

/// A `twinhub simulate` process; its output goes to files so that it never blocks on a pipe.
struct Simulator {
    child: Child,
    directory: tempfile::TempDir,
}

impl Simulator {
    /// Starts `count` devices `<prefix>00001...` tagged `fleet=<name>`, plus `extra` options.
    fn start(hub: &TestHub, prefix: &str, fleet: &str, count: usize, extra: &[&str]) -> Simulator {
        let (connection_string, ca) = hub_access(hub);
        let directory = tempfile::tempdir().expect("temporary directory");
        let stdout = File::create(directory.path().join("stdout")).expect("stdout file");
        let stderr = File::create(directory.path().join("stderr")).expect("stderr file");
        let child = Command::new(env!("CARGO_BIN_EXE_twinhub"))
            .args([
                "simulate",
                "--devices",
                &count.to_string(),
                "--prefix",
                prefix,
            ])
            .args(["--tag", &format!("fleet={fleet}")])
            .args(["--mqtt-port", &hub.mqtt_addr.port().to_string()])
            .args(["--gateway-host", "127.0.0.1"])
            .args(["--connection-string", &connection_string])
            .arg("--ca")
            .arg(&ca)
            .args(["--reboot-time", "300ms"])
            .args(extra)
            .env_remove("TWINHUB_CONNECTION_STRING")
            .current_dir(directory.path())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("twinhub simulate starts");
        Simulator { child, directory }
    }

    fn output(&self, name: &str) -> String {
        std::fs::read_to_string(self.directory.path().join(name)).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for a clean exit; returns the summary it printed.
    async fn stop(mut self) -> String {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let exit = wait_for_exit(&mut self.child, Duration::from_secs(30)).await;
        let (stdout, stderr) = (self.output("stdout"), self.output("stderr"));
        assert_eq!(
            exit.and_then(|s| s.code()),
            Some(0),
            "simulate exits 0 on SIGTERM:\n{stdout}\n{stderr}"
        );
        stdout
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        // A failed test must not leave thousands of devices running.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `child` until it exits or `limit` passes (then kills it and returns `None`).
async fn wait_for_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if tokio::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the hub has every device of `fleet` connected.
async fn wait_connected(client: &ServiceClient, simulator: &Simulator, fleet: &str, count: u64) {
    let query = format!(
        "SELECT COUNT() AS n FROM devices WHERE tags.fleet = '{fleet}' AND connectionState = 'Connected'"
    );
    let deadline = tokio::time::Instant::now() + CONNECT_WAIT;
    loop {
        let rows = client
            .query_all(&query)
            .await
            .expect("the count query runs");
        let connected = rows.first().and_then(|r| r["n"].as_u64()).unwrap_or(0);
        if connected == count {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {connected} of {count} devices connected:\n{}",
            simulator.output("stderr")
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Runs the `twinhub` binary with the hub's options, off the runtime thread.
async fn twinhub(hub: &TestHub, args: &[&str]) -> std::process::Output {
    let (connection_string, ca) = hub_access(hub);
    let mut command = Command::new(env!("CARGO_BIN_EXE_twinhub"));
    command
        .args(args)
        .arg("--connection-string")
        .arg(connection_string)
        .arg("--ca")
        .arg(ca)
        .env_remove("TWINHUB_CONNECTION_STRING");
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("the blocking task runs")
        .expect("twinhub runs");
    assert!(
        output.status.success(),
        "twinhub {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Writes `size` bytes of a repeating pattern and returns the path.
fn package_file(directory: &Path, size: usize) -> PathBuf {
    let path = directory.join("package.bin");
    let bytes: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, bytes).expect("package written");
    path
}

/// `(status, version) → devices` for the devices of `fleet`, from one GROUP BY query.
async fn status_by_version(client: &ServiceClient, fleet: &str) -> Vec<(String, String, u64)> {
    let rows = client
        .query_all(&format!(
            "SELECT properties.reported.firmware.fwUpdateStatus AS status, \
             properties.reported.firmware.currentFwVersion AS version, COUNT() AS devices \
             FROM devices WHERE tags.fleet = '{fleet}' \
             GROUP BY properties.reported.firmware.fwUpdateStatus, properties.reported.firmware.currentFwVersion"
        ))
        .await
        .expect("the GROUP BY query runs");
    rows.iter()
        .map(|row| {
            (
                row["status"].as_str().unwrap_or("undefined").to_owned(),
                row["version"].as_str().unwrap_or("undefined").to_owned(),
                row["devices"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// The acceptance test: a firmware rollout to 1,000 simulated devices with a 5% failure
/// rate ends with every device current on the new version or rolled back on the old one, and
/// the configuration's metrics agree with a GROUP BY query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_to_a_thousand_devices_ends_current_or_rolled_back() {
    const DEVICES: u64 = 1000;
    let hub = TestHub::start().await;
    let client = service_client(&hub);
    let simulator = Simulator::start(
        &hub,
        "acc-",
        "acceptance",
        DEVICES as usize,
        &["--failure-rate", "0.05", "--seed", "11"],
    );
    wait_connected(&client, &simulator, "acceptance", DEVICES).await;

    let directory = tempfile::tempdir().expect("temporary directory");
    let package = package_file(directory.path(), 16 * 1024);
    let output = twinhub(
        &hub,
        &[
            "rollout",
            "firmware",
            "--version",
            "2.0.0",
            "--file",
            package.to_str().expect("a UTF-8 path"),
            "--target",
            "tags.fleet = 'acceptance'",
            "--watch",
            "--timeout",
            ROLLOUT_SECONDS,
            "-o",
            "json",
        ],
    )
    .await;
    let watched: Value = serde_json::from_slice(&output.stdout).expect("the rollout prints JSON");
    assert_eq!(
        watched["systemMetrics"]["results"]["targetedCount"],
        DEVICES
    );

    let groups = status_by_version(&client, "acceptance").await;
    let count = |status: &str, version: &str| {
        groups
            .iter()
            .filter(|(s, v, _)| s == status && v == version)
            .map(|(_, _, n)| n)
            .sum::<u64>()
    };
    let (current, rolled_back) = (count("current", "2.0.0"), count("rolledback", "1.0.0"));
    assert_eq!(
        current + rolled_back,
        DEVICES,
        "every device is current on 2.0.0 or rolled back to 1.0.0: {groups:?}"
    );
    assert!(
        (10..=100).contains(&rolled_back),
        "about 5% roll back: {rolled_back}"
    );

    let configuration = client
        .get_configuration("firmware-2-0-0")
        .await
        .expect("the rollout's configuration");
    let metrics = serde_json::to_value(&configuration.metrics.results).expect("metrics as JSON");
    assert_eq!(
        metrics,
        json!({"current": current, "applying": 0, "rebooting": 0, "error": 0, "rolledback": rolled_back}),
        "the configuration's metrics agree with the GROUP BY query"
    );
    assert_eq!(watched["metrics"]["results"], metrics);

    let summary = simulator.stop().await;
    assert!(summary.contains("simulated 1000 devices"), "{summary}");
    assert!(
        summary.contains(&format!("1.0.0 {rolled_back}")),
        "{summary}"
    );
    assert!(summary.contains(&format!("2.0.0 {current}")), "{summary}");
    hub.stop().await;
}

/// A package whose SHA-256 is not the one the rollout names is never applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_package_is_never_applied() {
    const DEVICES: u64 = 20;
    let hub = TestHub::start().await;
    let client = service_client(&hub);
    let simulator = Simulator::start(&hub, "bad-", "corrupt", DEVICES as usize, &[]);
    wait_connected(&client, &simulator, "corrupt", DEVICES).await;

    let directory = tempfile::tempdir().expect("temporary directory");
    let package = package_file(directory.path(), 8 * 1024);
    let uploaded = client
        .upload_firmware("corrupt-3.0.0", "3.0.0", &package)
        .await
        .expect("uploads");
    let wrong_sha256 = "0".repeat(64);
    assert_ne!(uploaded.sha256, wrong_sha256);
    twinhub(
        &hub,
        &[
            "rollout",
            "firmware",
            "--version",
            "3.0.0",
            "--url",
            &uploaded.url,
            "--sha256",
            &wrong_sha256,
            "--size",
            &uploaded.size.to_string(),
            "--target",
            "tags.fleet = 'corrupt'",
            "--watch",
            "--timeout",
            ROLLOUT_SECONDS,
        ],
    )
    .await;
    let groups = status_by_version(&client, "corrupt").await;
    let failed: u64 = groups
        .iter()
        .filter(|(status, version, _)| {
            (status == "error" || status == "rolledback") && version == "1.0.0"
        })
        .map(|(_, _, n)| n)
        .sum();
    assert_eq!(
        failed, DEVICES,
        "every device failed and kept 1.0.0: {groups:?}"
    );
    let twin = client.get_twin("bad-00001").await.expect("a twin");
    let substatus = twin.properties.reported["firmware"]["fwUpdateSubstatus"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase();
    assert!(
        substatus.contains("sha-256")
            || substatus.contains("sha256")
            || substatus.contains("rolled back"),
        "the device says why: {substatus}"
    );
    let summary = simulator.stop().await;
    assert!(summary.contains("firmware versions: 1.0.0 20"), "{summary}");
    hub.stop().await;
}

/// `twinhub reboot` and `twinhub factory-reset`, for one device and as a job, reach simulated
/// devices, which report the DM properties.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reboot_and_factory_reset_reach_simulated_devices() {
    let hub = TestHub::start().await;
    let client = service_client(&hub);
    let simulator = Simulator::start(&hub, "dm-", "dm", 3, &[]);
    wait_connected(&client, &simulator, "dm", 3).await;

    let rebooted = twinhub(&hub, &["reboot", "dm-00001"]).await;
    assert!(String::from_utf8_lossy(&rebooted.stdout).contains("Reboot started"));
    twinhub(&hub, &["factory-reset", "dm-00002"]).await;
    twinhub(
        &hub,
        &[
            "reboot",
            "--query",
            "deviceId = 'dm-00003'",
            "--watch",
            "--timeout",
            "30",
        ],
    )
    .await;

    for (device_id, pattern, status, time) in [
        ("dm-00001", "reboot", "rebooted", "lastReboot"),
        ("dm-00002", "factoryReset", "reset", "lastFactoryReset"),
        ("dm-00003", "reboot", "rebooted", "lastReboot"),
    ] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let twin = client.get_twin(device_id).await.expect("a twin");
            let reported = &twin.properties.reported["iothubDM"][pattern];
            if reported["status"] == status && reported[time].is_string() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{device_id} reports iothubDM.{pattern} {status} with {time}: {reported}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let summary = simulator.stop().await;
    assert!(summary.contains("factory resets: 1"), "{summary}");
    hub.stop().await;
}

/// `twinhub demo` runs to completion in under a minute and prints the fleet report.
#[tokio::test]
async fn the_demo_finishes_within_a_minute_with_a_report() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let stdout_path = directory.path().join("stdout");
    let stderr_path = directory.path().join("stderr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_twinhub"))
        .arg("demo")
        .env_remove("TWINHUB_CONNECTION_STRING")
        .current_dir(directory.path())
        .stdout(Stdio::from(
            File::create(&stdout_path).expect("stdout file"),
        ))
        .stderr(Stdio::from(
            File::create(&stderr_path).expect("stderr file"),
        ))
        .spawn()
        .expect("twinhub demo starts");
    let exit = wait_for_exit(&mut child, Duration::from_secs(60)).await;
    let stdout = std::fs::read_to_string(&stdout_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert_eq!(
        exit.and_then(|s| s.code()),
        Some(0),
        "the demo finishes within 60 s:\n{stdout}\n{stderr}"
    );
    let report = stdout
        .split("Fleet report")
        .nth(1)
        .unwrap_or_else(|| panic!("no fleet report:\n{stdout}"));
    assert!(
        report.contains("STATUS") && report.contains("DEVICES"),
        "{report}"
    );
    assert!(report.contains("current"), "{report}");
    assert!(report.contains("rolledback"), "{report}");
    assert!(report.contains("2.0.0"), "{report}");
    assert!(stdout.contains("300 devices connected"), "{stdout}");
    assert!(
        stdout.contains("lastReboot") || stdout.contains("LASTREBOOT"),
        "{stdout}"
    );
}
