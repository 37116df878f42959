//! Downloads from, and whole devices against, an in-process twinhub on ephemeral ports.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::oneshot;
use twinhub_client::rest::MethodInvocation;
use twinhub_client::{DeviceAuth, FirmwarePackage, ServiceClient};
use twinhub_device::{Credential, DeviceConfig};
use twinhub_server::{HubConfig, RunningHub};

use crate::download::{DownloadError, Fetch, FetchRequest, HttpFetcher, Progress, hash_file};
use crate::runner::{Options, run};
use crate::state::MemoryState;
use crate::virtual_actions::{VirtualActions, VirtualConfig};

const DEVICE_KEY: &str = "dGhpcyBpcyBhIHRlc3QgZGV2aWNlIGtleSAzMiBieXQ=";
const OTHER_KEY: &str = "c2Vjb25kIHRlc3QgZGV2aWNlIGtleSBvZiAzMiBieXQ=";
const WAIT: Duration = Duration::from_secs(15);

struct Hub {
    running: RunningHub,
    client: ServiceClient,
    ca_pem: String,
    dir: tempfile::TempDir,
}

impl Hub {
    async fn start() -> Hub {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = HubConfig::new(dir.path().join("hub"));
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        config.mqtt_addr = loopback;
        config.https_addr = loopback;
        let running = twinhub_server::start(config).await.expect("the hub starts");
        let ca_path = running.ca_pem_path.clone().expect("a generated CA");
        let ca_pem = std::fs::read_to_string(ca_path).expect("the CA is readable");
        let connection_string = running.service_connection_string.trim().replacen(
            "HostName=localhost",
            &format!("HostName=localhost:{}", running.https_addr.port()),
            1,
        );
        let client = ServiceClient::from_connection_string(&connection_string, Some(&ca_pem))
            .expect("the client builds");
        client
            .create_device(
                "dev-1",
                &DeviceAuth::Keys {
                    primary: DEVICE_KEY.to_owned(),
                    secondary: DEVICE_KEY.to_owned(),
                },
            )
            .await
            .expect("the device is created");
        Hub {
            running,
            client,
            ca_pem,
            dir,
        }
    }

    fn device_config(&self, key: &str) -> DeviceConfig {
        let mut config = DeviceConfig::new(
            "localhost",
            "dev-1",
            Credential::SymmetricKey(key.to_owned()),
        );
        config.ca_pem = Some(self.ca_pem.clone());
        config.port = Some(self.running.mqtt_addr.port());
        config.reconnect_backoff = (Duration::from_millis(50), Duration::from_millis(200));
        config.request_timeout = Duration::from_secs(10);
        config
    }

    async fn upload(&self, id: &str, version: &str, bytes: &[u8]) -> FirmwarePackage {
        let path = self.dir.path().join(format!("{id}.bin"));
        std::fs::write(&path, bytes).expect("writes the package");
        self.client
            .upload_firmware(id, version, &path)
            .await
            .expect("the package uploads")
    }

    /// Polls the twin's reported properties until `condition` holds.
    async fn wait_reported(&self, condition: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let twin = self.client.get_twin("dev-1").await.expect("the twin reads");
            let reported = twin.properties.reported;
            if condition(&reported) {
                return reported;
            }
            assert!(
                Instant::now() < deadline,
                "condition not reached: {reported}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(self) {
        tokio::time::timeout(WAIT, self.running.shutdown())
            .await
            .expect("the hub stops in time");
    }
}

/// A package big enough to arrive in several chunks.
fn package_bytes(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| u8::try_from(i % 251).unwrap_or(0))
        .collect()
}

/// Records every progress call.
#[derive(Default)]
struct Recorded(Mutex<Vec<(u64, Option<u64>)>>);

impl Progress for Recorded {
    async fn progress(&self, downloaded: u64, total: Option<u64>) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((downloaded, total));
    }
}

impl Recorded {
    fn first(&self) -> Option<(u64, Option<u64>)> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .first()
            .copied()
    }
}

fn request<'a>(uri: &'a str, dest: &'a std::path::Path, rate: Option<u64>) -> FetchRequest<'a> {
    FetchRequest {
        uri,
        dest,
        expected_size: None,
        max_bytes: 1 << 20,
        rate_limit: rate,
    }
}

#[tokio::test]
async fn downloads_authenticate_as_the_device_and_resume_from_partial_files() {
    let hub = Hub::start().await;
    let bytes = package_bytes(200_000);
    let package = hub.upload("fw-2", "2.0", &bytes).await;
    let fetcher = HttpFetcher::new(&hub.device_config(DEVICE_KEY), 2, Duration::ZERO)
        .expect("the fetcher builds");
    let downloads = tempfile::tempdir().expect("tempdir");

    let whole = downloads.path().join("whole.bin");
    let progress = Recorded::default();
    let size = fetcher
        .fetch(&request(&package.url, &whole, None), &progress)
        .await
        .expect("downloads");
    assert_eq!(size, 200_000);
    assert_eq!(progress.first(), Some((0, Some(200_000))));
    let (_, digest) = hash_file(&whole).await.expect("hashes");
    assert_eq!(digest, package.sha256);

    // A partial file left by an interrupted download is continued, not restarted.
    let partial = downloads.path().join("partial.bin");
    std::fs::write(&partial, &bytes[..123_456]).expect("writes");
    let progress = Recorded::default();
    fetcher
        .fetch(&request(&package.url, &partial, None), &progress)
        .await
        .expect("resumes");
    assert_eq!(progress.first(), Some((123_456, Some(200_000))));
    assert_eq!(std::fs::read(&partial).expect("reads"), bytes);

    // Complete already: the hub answers 416 with the size, and nothing is rewritten.
    fetcher
        .fetch(&request(&package.url, &partial, None), &Recorded::default())
        .await
        .expect("already complete");
    assert_eq!(std::fs::read(&partial).expect("reads"), bytes);
    hub.stop().await;
}

#[tokio::test]
async fn downloads_with_a_wrong_key_or_to_another_host_carry_no_valid_credential() {
    let hub = Hub::start().await;
    let package = hub.upload("fw-3", "3.0", b"tiny").await;
    let downloads = tempfile::tempdir().expect("tempdir");
    let dest = downloads.path().join("p.bin");

    let wrong_key = HttpFetcher::new(&hub.device_config(OTHER_KEY), 3, Duration::ZERO)
        .expect("the fetcher builds");
    let error = wrong_key
        .fetch(&request(&package.url, &dest, None), &Recorded::default())
        .await
        .expect_err("refused");
    assert!(
        matches!(error, DownloadError::Status(status) if status == 401),
        "{error}"
    );

    // The same hub under another name is another host: the token is not sent there.
    let elsewhere = package.url.replacen("localhost", "127.0.0.1", 1);
    let fetcher = HttpFetcher::new(&hub.device_config(DEVICE_KEY), 1, Duration::ZERO)
        .expect("the fetcher builds");
    let error = fetcher
        .fetch(&request(&elsewhere, &dest, None), &Recorded::default())
        .await
        .expect_err("no credential");
    assert!(
        matches!(error, DownloadError::Status(status) if status == 401),
        "{error}"
    );
    hub.stop().await;
}

#[tokio::test]
async fn downloads_respect_the_rate_limit() {
    let hub = Hub::start().await;
    let package = hub.upload("fw-4", "4.0", &package_bytes(30_000)).await;
    let fetcher = HttpFetcher::new(&hub.device_config(DEVICE_KEY), 1, Duration::ZERO)
        .expect("the fetcher builds");
    let downloads = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    fetcher
        .fetch(
            &request(&package.url, &downloads.path().join("p.bin"), Some(100_000)),
            &Recorded::default(),
        )
        .await
        .expect("downloads");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    hub.stop().await;
}

#[tokio::test]
async fn a_simulated_device_updates_firmware_and_reboots_through_the_hub() {
    let hub = Hub::start().await;
    let package = hub.upload("fw-5", "5.0", &package_bytes(50_000)).await;
    let actions = VirtualActions::new(VirtualConfig {
        reboot_time: Duration::from_millis(100),
        ..VirtualConfig::default()
    });
    let downloads = tempfile::tempdir().expect("tempdir");
    let options = Options {
        download_dir: Some(downloads.path().to_path_buf()),
        reconnect_delay: Duration::from_millis(50),
        ..Options::default()
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let device = tokio::spawn(run(
        hub.device_config(DEVICE_KEY),
        actions.clone(),
        MemoryState::new(),
        options,
        async move {
            let _ = stopped.await;
        },
    ));
    hub.wait_reported(|r| r["firmware"]["currentFwVersion"] == "1.0.0")
        .await;

    hub.client
        .update_twin(
            "dev-1",
            &json!({"properties": {"desired": {"firmware": {
                "fwVersion": "5.0",
                "fwPackageURI": package.url,
                "fwPackageCheckValue": package.sha256,
                "fwSize": package.size,
            }}}}),
            None,
        )
        .await
        .expect("desired firmware is set");
    let reported = hub
        .wait_reported(|r| {
            r["firmware"]["fwUpdateStatus"] == "current"
                && r["firmware"]["currentFwVersion"] == "5.0"
        })
        .await;
    assert_eq!(reported["firmware"]["pendingFwVersion"], "");
    assert!(reported["firmware"]["lastFwUpdateEndTime"].is_string());
    assert_eq!(actions.reboots(), 1);

    let answer = hub
        .client
        .invoke_method(
            "dev-1",
            &MethodInvocation {
                method_name: "reboot".to_owned(),
                payload: Value::Null,
                response_timeout_in_seconds: Some(10),
                connect_timeout_in_seconds: None,
            },
        )
        .await
        .expect("the method is answered");
    assert_eq!(
        (answer.status, answer.payload),
        (200, json!("Reboot started"))
    );
    let reported = hub
        .wait_reported(|r| r["iothubDM"]["reboot"]["status"] == "rebooted")
        .await;
    assert!(reported["iothubDM"]["reboot"]["lastReboot"].is_string());
    assert_eq!(actions.reboots(), 2);

    let _ = stop.send(());
    tokio::time::timeout(WAIT, device)
        .await
        .expect("the device stops in time")
        .expect("the device task does not panic")
        .expect("the device ends cleanly");
    hub.stop().await;
}
