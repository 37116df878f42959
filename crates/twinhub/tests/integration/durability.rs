//! The `twinhub` binary as an operator runs it: acknowledged writes survive SIGKILL, SIGTERM
//! stops it cleanly, and a busy port is reported with the flag that changes it.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use twinhub_mqtt::{Packet, Publish};

use crate::support::{HubClient, MqttClient, Received, WAIT, twin_response_status};

/// A port that was free a moment ago.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

/// A `twinhub serve` process; killed when dropped so a failing test leaves nothing behind.
struct HubProcess {
    child: Child,
    log: PathBuf,
}

impl HubProcess {
    /// Starts the binary on `data_dir` with the given ports, stderr going to `log`.
    fn spawn(
        data_dir: &Path,
        log: &Path,
        mqtt_port: u16,
        https_port: u16,
    ) -> (HubProcess, mpsc::Receiver<()>) {
        let stderr = File::create(log).expect("log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_twinhub"))
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--hostname", "localhost", "--bind", "127.0.0.1"])
            .args([
                "--mqtt-port",
                &mqtt_port.to_string(),
                "--https-port",
                &https_port.to_string(),
            ])
            .env("TWINHUB_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("the twinhub binary starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Reads to EOF so the hub never blocks on a full pipe.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("twinhub is ready") {
                    let _ = ready_tx.send(());
                }
            }
        });
        (
            HubProcess {
                child,
                log: log.to_path_buf(),
            },
            ready_rx,
        )
    }

    /// Starts the binary on fresh ports and waits until it is ready; returns a client for it.
    async fn start(data_dir: &Path, log: &Path) -> (HubProcess, HubClient) {
        let (mqtt_port, https_port) = (free_port(), free_port());
        let (mut process, ready) = HubProcess::spawn(data_dir, log, mqtt_port, https_port);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if ready.try_recv().is_ok() {
                break;
            }
            if let Ok(Some(status)) = process.child.try_wait() {
                panic!(
                    "twinhub exited with {status} before it was ready:\n{}",
                    process.stderr()
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "twinhub was not ready in time:\n{}",
                process.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let connection_string = std::fs::read_to_string(data_dir.join("service-connection-string"))
            .expect("the hub wrote its service connection string");
        let client = HubClient::new(
            SocketAddr::from(([127, 0, 0, 1], mqtt_port)),
            SocketAddr::from(([127, 0, 0, 1], https_port)),
            &data_dir.join("ca.pem"),
            &connection_string,
        );
        (process, client)
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to exit on its own, up to `wait`.
    async fn exit_status_within(&mut self, wait: Duration) -> ExitStatus {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for twinhub") {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "twinhub did not exit within {wait:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn sigkill(&mut self) {
        self.child.kill().expect("SIGKILL twinhub");
        self.child.wait().expect("reap twinhub");
    }

    fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("the kill command runs");
        assert!(status.success(), "kill -TERM succeeded");
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const LOAD_DEVICES: usize = 20;
const ACKS_BEFORE_KILL: u64 = 300;
/// Concurrent writers of desired properties over REST, each owning a share of the devices.
const REST_WORKERS: usize = 4;

/// Sends reported patches `{"seq": n}` one at a time, recording `n` in `acked` when its `res/204`
/// arrives; stops at the first failure (the hub is killed under it).
async fn report_until_failure(
    mut device: MqttClient,
    acked: Arc<AtomicU64>,
    total: Arc<AtomicU64>,
) {
    for seq in 1u64.. {
        let rid = seq.to_string();
        let topic = format!("$iothub/twin/PATCH/properties/reported/?$rid={rid}");
        let patch = Bytes::from(json!({"seq": seq}).to_string());
        if !device
            .try_send(Packet::Publish(Publish::at_most_once(topic, patch)))
            .await
        {
            return;
        }
        loop {
            match device.recv_within(WAIT).await {
                Received::Packet(Packet::Publish(publish)) => {
                    match twin_response_status(&publish.topic, &rid) {
                        Some(204) => break,
                        Some(_) => return,
                        None => {}
                    }
                }
                Received::Packet(_) => {}
                Received::Closed | Received::TimedOut => return,
            }
        }
        acked.store(seq, Ordering::SeqCst);
        total.fetch_add(1, Ordering::SeqCst);
    }
}

/// PATCHes desired `{"seq": n}` on `devices` in turn, recording `n` per device on each 200;
/// stops at the first failure.
async fn desire_until_failure(
    client: HubClient,
    devices: Vec<(String, Arc<AtomicU64>)>,
    total: Arc<AtomicU64>,
) {
    for seq in 1u64.. {
        for (device_id, acked) in &devices {
            let patch = json!({"properties": {"desired": {"seq": seq}}})
                .to_string()
                .into_bytes();
            match client
                .try_rest_with("PATCH", &format!("/twins/{device_id}"), &[], Some(patch))
                .await
            {
                Ok(response) if response.status == 200 => {
                    acked.store(seq, Ordering::SeqCst);
                    total.fetch_add(1, Ordering::SeqCst);
                }
                _ => return,
            }
        }
    }
}

fn seq_of(section: &serde_json::Value) -> u64 {
    section["seq"].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_sigkill_and_sigterm_exits_cleanly() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data_dir = dir.path().join("data");
    let (mut process, client) = HubProcess::start(&data_dir, &dir.path().join("first.log")).await;
    assert!(data_dir.join("ca.pem").is_file(), "the hub wrote its CA");

    let ids: Vec<String> = (0..LOAD_DEVICES).map(|i| format!("load-{i}")).collect();
    let mut devices = Vec::new();
    for id in &ids {
        let key = client.create_device(id).await;
        devices.push(client.twin_device(id, &key).await);
    }
    let reported: Vec<Arc<AtomicU64>> = ids.iter().map(|_| Arc::new(AtomicU64::new(0))).collect();
    let desired: Vec<Arc<AtomicU64>> = ids.iter().map(|_| Arc::new(AtomicU64::new(0))).collect();
    let total = Arc::new(AtomicU64::new(0));

    let mut workers = Vec::new();
    for (device, acked) in devices.into_iter().zip(&reported) {
        workers.push(tokio::spawn(report_until_failure(
            device,
            Arc::clone(acked),
            Arc::clone(&total),
        )));
    }
    for worker in 0..REST_WORKERS {
        let share: Vec<(String, Arc<AtomicU64>)> = ids
            .iter()
            .zip(&desired)
            .skip(worker)
            .step_by(REST_WORKERS)
            .map(|(id, acked)| (id.clone(), Arc::clone(acked)))
            .collect();
        workers.push(tokio::spawn(desire_until_failure(
            client.clone(),
            share,
            Arc::clone(&total),
        )));
    }

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while total.load(Ordering::SeqCst) < ACKS_BEFORE_KILL {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} writes were acknowledged in 30 s:\n{}",
            total.load(Ordering::SeqCst),
            process.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    process.sigkill();
    for worker in workers {
        tokio::time::timeout(Duration::from_secs(30), worker)
            .await
            .expect("load workers stop once the hub is gone")
            .expect("load worker");
    }
    let acked_reported: Vec<u64> = reported.iter().map(|a| a.load(Ordering::SeqCst)).collect();
    let acked_desired: Vec<u64> = desired.iter().map(|a| a.load(Ordering::SeqCst)).collect();
    assert!(acked_reported.iter().sum::<u64>() > 0 && acked_desired.iter().sum::<u64>() > 0);

    let (mut process, client) = HubProcess::start(&data_dir, &dir.path().join("second.log")).await;
    for (i, id) in ids.iter().enumerate() {
        let response = client.rest("GET", &format!("/twins/{id}"), None).await;
        assert_eq!(
            response.status,
            200,
            "{id} survived the restart: {}",
            response.text()
        );
        let twin = response.json();
        let properties = &twin["properties"];
        assert!(
            seq_of(&properties["reported"]) >= acked_reported[i],
            "{id}: reported seq {} was acknowledged but the twin has {}",
            acked_reported[i],
            properties["reported"]
        );
        assert!(
            seq_of(&properties["desired"]) >= acked_desired[i],
            "{id}: desired seq {} was acknowledged but the twin has {}",
            acked_desired[i],
            properties["desired"]
        );
    }

    let key = client.create_device("after-restart").await;
    let mut connected = client.twin_device("after-restart", &key).await;
    assert_eq!(
        connected
            .patch_reported("1", br#"{"alive":true}"#)
            .await
            .status,
        204
    );
    process.sigterm();
    let status = process.exit_status_within(Duration::from_secs(15)).await;
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM is a clean exit:\n{}",
        process.stderr()
    );
    connected.expect_closed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_port_is_reported_with_the_flag_that_changes_it() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy_port = busy.local_addr().expect("address").port();

    for (flag, mqtt_port, https_port) in [
        ("--mqtt-port", busy_port, free_port()),
        ("--https-port", free_port(), busy_port),
    ] {
        let data_dir = dir.path().join(flag.trim_start_matches('-'));
        let log = dir
            .path()
            .join(format!("{}.log", flag.trim_start_matches('-')));
        let (mut process, _ready) = HubProcess::spawn(&data_dir, &log, mqtt_port, https_port);
        let status = process.exit_status_within(Duration::from_secs(20)).await;
        assert!(!status.success(), "{flag} on a busy port must fail");
        let stderr = process.stderr();
        assert!(
            stderr.contains(&busy_port.to_string()),
            "stderr names the port: {stderr}"
        );
        assert!(stderr.contains(flag), "stderr names {flag}: {stderr}");
    }
    drop(busy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_an_idle_hub_with_exit_code_zero() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data_dir = dir.path().join("data");
    let (mut process, client) = HubProcess::start(&data_dir, &dir.path().join("hub.log")).await;
    let stats = client.rest("GET", "/statistics/devices", None).await;
    assert_eq!(stats.status, 200, "{}", stats.text());
    process.sigterm();
    let status = process.exit_status_within(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0), "{}", process.stderr());
    let connection_string =
        std::fs::read_to_string(data_dir.join("service-connection-string")).expect("file");
    assert!(
        connection_string
            .starts_with("HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey=")
    );

    let (mut process, restarted) =
        HubProcess::start(&data_dir, &dir.path().join("again.log")).await;
    assert_eq!(
        restarted.owner_key, client.owner_key,
        "the generated owner key is kept across restarts"
    );
    process.sigterm();
    assert_eq!(
        process
            .exit_status_within(Duration::from_secs(15))
            .await
            .code(),
        Some(0)
    );
}
