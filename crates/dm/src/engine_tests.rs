//! The runner's state machines against the in-memory hub of [`crate::fake`].

use std::path::Path;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::actions::{ActionError, Actions};
use crate::fake::{FakeHub, FakePackages};
use crate::runner::{Engine, Options, RunError};
use crate::schema::FirmwareTarget;
use crate::state::{
    FirmwareJob, FirmwareKind, FirmwarePhase, MemoryState, PendingRestart, PersistedState,
    StateStore,
};
use crate::virtual_actions::{VirtualActions, VirtualConfig};

const URI: &str = "https://localhost/firmware/fw2/content";
const PACKAGE: &[u8] = b"firmware image version 2.0, signed and sealed";

fn virtual_device(failure_probability: f64) -> VirtualActions {
    VirtualActions::new(VirtualConfig {
        firmware_version: "1.0.0".to_owned(),
        reboot_time: Duration::from_millis(20),
        firmware_failure_probability: failure_probability,
        ..VirtualConfig::default()
    })
}

/// A device running against a fake hub.
struct Rig<A> {
    hub: FakeHub,
    packages: FakePackages,
    actions: A,
    state: MemoryState,
    dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), RunError>>>,
}

impl<A: Actions + Clone> Rig<A> {
    fn new(actions: A) -> Rig<A> {
        Rig {
            hub: FakeHub::new(),
            packages: FakePackages::default(),
            actions,
            state: MemoryState::new(),
            dir: tempfile::tempdir().expect("tempdir"),
            stop: None,
            task: None,
        }
    }

    /// Starts (or restarts, like a new process) the runner.
    async fn start(&mut self) {
        let options = Options {
            reconnect_delay: Duration::from_millis(10),
            progress_step_percent: 25,
            ..Options::default()
        };
        let engine = Engine::new(
            self.hub.clone(),
            self.packages.clone(),
            self.actions.clone(),
            self.state.clone(),
            options,
            self.dir.path().join("downloads"),
        )
        .await
        .expect("state loads");
        let (stop, stopped) = oneshot::channel::<()>();
        self.stop = Some(stop);
        self.task = Some(tokio::spawn(engine.run(async move {
            let _ = stopped.await;
        })));
    }

    /// Stops the runner like a killed process: nothing more is reported.
    async fn kill(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
        self.hub.disconnect();
    }

    async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .expect("the runner stops in time")
                .expect("the runner does not panic")
                .expect("the runner ends cleanly");
        }
    }

    fn desire_firmware(&self, version: &str, sha256: &str) {
        self.hub.set_desired(json!({"firmware": {
            "fwVersion": version,
            "fwPackageURI": URI,
            "fwPackageCheckValue": sha256,
            "fwSize": PACKAGE.len(),
        }}));
    }
}

fn field<'a>(reported: &'a Map<String, Value>, path: &[&str]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let mut value = reported.get(*first)?;
    for key in rest {
        value = value.get(*key)?;
    }
    Some(value)
}

fn is(reported: &Map<String, Value>, path: &[&str], expected: &str) -> bool {
    field(reported, path).and_then(Value::as_str) == Some(expected)
}

fn target(sha256: &str) -> FirmwareTarget {
    FirmwareTarget {
        version: "2.0".into(),
        uri: URI.into(),
        sha256: sha256.into(),
        size: Some(u64::try_from(PACKAGE.len()).unwrap_or(u64::MAX)),
    }
}

#[tokio::test]
async fn the_first_report_names_the_running_firmware() {
    let mut rig = Rig::new(virtual_device(0.0));
    rig.start().await;
    rig.hub
        .wait_reported(|r| is(r, &["firmware", "currentFwVersion"], "1.0.0"))
        .await;
    assert_eq!(
        field(&rig.hub.reported(), &["firmware", "pendingFwVersion"]),
        Some(&json!(""))
    );
    rig.stop().await;
}

#[tokio::test]
async fn reboot_answers_at_once_then_reports_rebooting_and_rebooted() {
    let mut rig = Rig::new(virtual_device(0.0));
    rig.start().await;
    let answer = rig.hub.call("reboot", Value::Null).await;
    assert_eq!(answer, (200, json!("Reboot started")));
    rig.hub
        .wait_reported(|r| is(r, &["iothubDM", "reboot", "status"], "rebooted"))
        .await;
    assert_eq!(
        rig.hub.statuses(&["iothubDM", "reboot", "status"]),
        ["rebooting", "rebooted"]
    );
    assert!(field(&rig.hub.reported(), &["iothubDM", "reboot", "lastReboot"]).is_some());
    assert_eq!(rig.actions.reboots(), 1);
    assert_eq!(rig.hub.connects(), 2);
    assert_eq!(rig.state.snapshot(), PersistedState::default());
    rig.stop().await;
}

#[tokio::test]
async fn a_reboot_in_progress_when_the_process_died_is_reported_done_at_start() {
    let mut rig = Rig::new(virtual_device(0.0));
    rig.state
        .save(&PersistedState {
            reboot: Some(PendingRestart {
                started: "2024-01-01T00:00:00Z".into(),
                error: None,
            }),
            ..PersistedState::default()
        })
        .await
        .expect("saves");
    rig.start().await;
    rig.hub
        .wait_reported(|r| is(r, &["iothubDM", "reboot", "status"], "rebooted"))
        .await;
    assert_eq!(rig.state.snapshot().reboot, None);
    rig.stop().await;
}

#[tokio::test]
async fn factory_reset_wipes_reported_properties_and_reapplies_configuration() {
    let mut rig = Rig::new(virtual_device(0.0));
    rig.hub.preset_reported(json!({
        "leftover": {"from": "before"},
        "iothubDM": {"reboot": {"status": "rebooted"}},
    }));
    rig.hub
        .set_desired(json!({"telemetryConfig": {"sendFrequency": "5m"}}));
    rig.start().await;
    rig.hub
        .wait_reported(|r| is(r, &["telemetryConfig", "status"], "Success"))
        .await;
    let answer = rig.hub.call("factoryReset", Value::Null).await;
    assert_eq!(answer, (200, json!("Factory reset started")));
    rig.hub
        .wait_reported(|r| {
            is(r, &["iothubDM", "factoryReset", "status"], "reset")
                && is(r, &["telemetryConfig", "status"], "Success")
        })
        .await;
    let reported = rig.hub.reported();
    assert_eq!(reported.get("leftover"), None);
    assert_eq!(field(&reported, &["iothubDM", "reboot"]), None);
    assert!(is(&reported, &["firmware", "fwUpdateStatus"], "current"));
    assert_eq!(
        rig.hub.statuses(&["iothubDM", "factoryReset", "status"]),
        ["resetting", "reset"]
    );
    assert_eq!(rig.actions.factory_resets(), 1);
    // Applied once before the reset and once after it.
    assert_eq!(
        rig.hub
            .statuses(&["telemetryConfig", "status"])
            .iter()
            .filter(|s| *s == "Success")
            .count(),
        2
    );
    rig.stop().await;
}

#[tokio::test]
async fn firmware_update_goes_through_every_status_to_current() {
    let mut rig = Rig::new(virtual_device(0.0));
    let sha256 = rig.packages.add(URI, PACKAGE);
    rig.start().await;
    rig.desire_firmware("2.0", &sha256);
    rig.hub
        .wait_reported(|r| {
            is(r, &["firmware", "fwUpdateStatus"], "current")
                && is(r, &["firmware", "currentFwVersion"], "2.0")
        })
        .await;
    assert_eq!(
        rig.hub.firmware_statuses(),
        [
            "downloading",
            "downloading",
            "verifying",
            "applying",
            "rebooting",
            "current"
        ]
    );
    let substatuses = rig.hub.statuses(&["firmware", "fwUpdateSubstatus"]);
    assert!(
        substatuses.contains(&"downloaded 25%".to_owned())
            && substatuses.contains(&"downloaded 100%".to_owned()),
        "{substatuses:?}"
    );
    let reported = rig.hub.reported();
    assert!(is(&reported, &["firmware", "pendingFwVersion"], ""));
    assert!(field(&reported, &["firmware", "lastFwUpdateStartTime"]).is_some());
    assert!(field(&reported, &["firmware", "lastFwUpdateEndTime"]).is_some());
    assert_eq!(rig.actions.reboots(), 1);
    assert_eq!(rig.state.snapshot(), PersistedState::default());
    // The verified package is not kept after installing.
    assert!(
        !rig.dir
            .path()
            .join("downloads")
            .join(format!("{sha256}.bin"))
            .exists()
    );
    rig.stop().await;
}

/// Counts installs, so that a test can prove one never happened.
#[derive(Clone)]
struct CountingActions {
    inner: VirtualActions,
    installs: std::sync::Arc<std::sync::atomic::AtomicU32>,
    fail_configuration: bool,
}

impl CountingActions {
    fn new(fail_configuration: bool) -> CountingActions {
        CountingActions {
            inner: virtual_device(0.0),
            installs: std::sync::Arc::default(),
            fail_configuration,
        }
    }

    fn installs(&self) -> u32 {
        self.installs.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Actions for CountingActions {
    async fn reboot(&self) -> Result<(), ActionError> {
        self.inner.reboot().await
    }
    async fn factory_reset(&self) -> Result<(), ActionError> {
        self.inner.factory_reset().await
    }
    async fn install_firmware(&self, package: &Path, version: &str) -> Result<(), ActionError> {
        self.installs
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.install_firmware(package, version).await
    }
    async fn firmware_version(&self) -> Result<String, ActionError> {
        self.inner.firmware_version().await
    }
    async fn rollback_firmware(&self, previous: &str) -> Result<(), ActionError> {
        self.inner.rollback_firmware(previous).await
    }
    async fn apply_configuration(&self, name: &str, value: &Value) -> Result<(), ActionError> {
        if self.fail_configuration {
            return Err(ActionError::Failed("unsupported sendFrequency".to_owned()));
        }
        self.inner.apply_configuration(name, value).await
    }
}

#[tokio::test]
async fn a_checksum_mismatch_is_an_error_and_the_package_is_never_installed() {
    let mut rig = Rig::new(CountingActions::new(false));
    rig.packages.add(URI, PACKAGE);
    rig.start().await;
    rig.desire_firmware("2.0", &"ab".repeat(32));
    rig.hub
        .wait_reported(|r| is(r, &["firmware", "fwUpdateStatus"], "rolledback"))
        .await;
    assert_eq!(rig.actions.installs(), 0);
    let statuses = rig.hub.firmware_statuses();
    assert_eq!(&statuses[statuses.len() - 2..], ["error", "rolledback"]);
    let error_substatus = rig.hub.patches().iter().find_map(|patch| {
        (patch["firmware"]["fwUpdateStatus"] == "error")
            .then(|| patch["firmware"]["fwUpdateSubstatus"].clone())
    });
    assert!(
        error_substatus
            .and_then(|s| s.as_str().map(str::to_owned))
            .is_some_and(|s| s.starts_with("Checksum mismatch")),
    );
    let reported = rig.hub.reported();
    assert!(is(&reported, &["firmware", "currentFwVersion"], "1.0.0"));
    assert!(is(
        &reported,
        &["firmware", "fwUpdateSubstatus"],
        "Rolled back to: 1.0.0"
    ));
    // The bad bytes are gone, so a retry downloads from scratch.
    let downloads = rig.dir.path().join("downloads");
    assert!(std::fs::read_dir(&downloads).map_or(true, |mut entries| entries.next().is_none()));
    rig.stop().await;
}

#[tokio::test]
async fn a_size_mismatch_is_never_installed_either() {
    let mut rig = Rig::new(CountingActions::new(false));
    let sha256 = rig.packages.add(URI, PACKAGE);
    rig.start().await;
    rig.hub.set_desired(json!({"firmware": {
        "fwVersion": "2.0", "fwPackageURI": URI, "fwPackageCheckValue": sha256, "fwSize": 3,
    }}));
    rig.hub
        .wait_reported(|r| is(r, &["firmware", "fwUpdateStatus"], "rolledback"))
        .await;
    assert_eq!(rig.actions.installs(), 0);
    rig.stop().await;
}

#[tokio::test]
async fn same_version_insecure_uri_and_bad_requests_are_answered_without_downloading() {
    let mut rig = Rig::new(CountingActions::new(false));
    rig.start().await;
    rig.hub.set_desired(json!({"firmware": {
        "fwVersion": "1.0.0", "fwPackageURI": URI, "fwPackageCheckValue": "00".repeat(32),
    }}));
    rig.hub
        .wait_reported(|r| {
            is(
                r,
                &["firmware", "fwUpdateSubstatus"],
                "Firmware already up to date",
            )
        })
        .await;
    rig.hub.set_desired(json!({"firmware": {
        "fwVersion": "2.0", "fwPackageURI": "http://insecure/p", "fwPackageCheckValue": "00".repeat(32),
    }}));
    rig.hub
        .wait_reported(|r| {
            is(r, &["firmware", "fwUpdateStatus"], "error")
                && is(
                    r,
                    &["firmware", "fwUpdateSubstatus"],
                    "Insecure package URI",
                )
        })
        .await;
    rig.hub.set_desired(json!({"firmware": null}));
    rig.hub
        .set_desired(json!({"firmware": {"fwVersion": "3.0"}}));
    rig.hub
        .wait_reported(|r| {
            is(
                r,
                &["firmware", "fwUpdateSubstatus"],
                "Invalid firmware request: fwPackageURI missing",
            )
        })
        .await;
    assert_eq!(rig.packages.starts(), Vec::<u64>::new());
    assert_eq!(rig.actions.installs(), 0);
    rig.stop().await;
}

#[tokio::test]
async fn a_second_target_while_updating_is_refused_without_restarting() {
    let mut rig = Rig::new(virtual_device(0.0));
    let sha256 = rig.packages.add(URI, PACKAGE);
    rig.packages.hold(URI);
    rig.start().await;
    rig.desire_firmware("2.0", &sha256);
    rig.hub
        .wait_reported(|r| is(r, &["firmware", "pendingFwVersion"], "2.0"))
        .await;
    rig.desire_firmware("3.0", &sha256);
    rig.hub
        .wait_reported(|r| {
            is(
                r,
                &["firmware", "fwUpdateSubstatus"],
                "Firmware update already running",
            )
        })
        .await;
    rig.packages.release();
    // The running update finishes; the newer target (whose package is really 2.0's) then starts.
    rig.hub
        .wait_reported(|r| is(r, &["firmware", "currentFwVersion"], "3.0"))
        .await;
    let started: Vec<String> = rig.hub.statuses(&["firmware", "pendingFwVersion"]);
    assert_eq!(
        started.iter().filter(|v| !v.is_empty()).collect::<Vec<_>>(),
        ["2.0", "3.0"]
    );
    rig.stop().await;
}

#[tokio::test]
async fn an_install_failure_rolls_back_and_is_not_retried_on_reconnect() {
    let mut rig = Rig::new(virtual_device(1.0));
    let sha256 = rig.packages.add(URI, PACKAGE);
    rig.start().await;
    rig.desire_firmware("2.0", &sha256);
    rig.hub
        .wait_reported(|r| is(r, &["firmware", "fwUpdateStatus"], "rolledback"))
        .await;
    let statuses = rig.hub.firmware_statuses();
    assert_eq!(
        statuses,
        [
            "downloading",
            "downloading",
            "verifying",
            "applying",
            "error",
            "rolledback"
        ]
    );
    assert!(is(
        &rig.hub.reported(),
        &["firmware", "currentFwVersion"],
        "1.0.0"
    ));
    assert_eq!(rig.state.snapshot().failed_firmware, Some(target(&sha256)));
    rig.hub.disconnect();
    tokio::time::timeout(Duration::from_secs(5), async {
        while rig.hub.connects() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("reconnects");
    // Writing the same target again is the back end's way to ask for a retry.
    assert_eq!(rig.packages.starts().len(), 1);
    rig.desire_firmware("2.0", &sha256);
    tokio::time::timeout(Duration::from_secs(5), async {
        while rig.hub.firmware_statuses().len() < 2 * statuses.len() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the retry runs");
    assert_eq!(rig.packages.starts().len(), 2);
    rig.stop().await;
}

#[tokio::test]
async fn a_download_interrupted_by_a_restart_resumes_from_the_bytes_on_disk() {
    let mut rig = Rig::new(virtual_device(0.0));
    let sha256 = rig.packages.add(URI, PACKAGE);
    let half = PACKAGE.len() / 2;
    let downloads = rig.dir.path().join("downloads");
    std::fs::create_dir_all(&downloads).expect("creates");
    std::fs::write(downloads.join(format!("{sha256}.bin")), &PACKAGE[..half]).expect("writes");
    rig.state
        .save(&PersistedState {
            firmware: Some(FirmwareJob {
                kind: FirmwareKind::Desired,
                target: target(&sha256),
                previous_version: "1.0.0".into(),
                phase: FirmwarePhase::Downloading,
                started: "2024-01-01T00:00:00Z".into(),
                reboot_error: None,
            }),
            ..PersistedState::default()
        })
        .await
        .expect("saves");
    rig.desire_firmware("2.0", &sha256);
    rig.start().await;
    rig.hub
        .wait_reported(|r| is(r, &["firmware", "currentFwVersion"], "2.0"))
        .await;
    assert_eq!(rig.packages.starts(), [u64::try_from(half).unwrap_or(0)]);
    rig.stop().await;
}

async fn restart_in_phase(
    phase: FirmwarePhase,
    installed: bool,
) -> (Map<String, Value>, Vec<String>) {
    let actions = virtual_device(0.0);
    if installed {
        actions
            .install_firmware(Path::new("p"), "2.0")
            .await
            .expect("installs");
    }
    let mut rig = Rig::new(actions);
    rig.state
        .save(&PersistedState {
            firmware: Some(FirmwareJob {
                kind: FirmwareKind::Desired,
                target: target(&"00".repeat(32)),
                previous_version: "1.0.0".into(),
                phase,
                started: "2024-01-01T00:00:00Z".into(),
                reboot_error: None,
            }),
            ..PersistedState::default()
        })
        .await
        .expect("saves");
    rig.start().await;
    rig.hub
        .wait_reported(|r| {
            is(r, &["firmware", "fwUpdateStatus"], "current")
                || is(r, &["firmware", "fwUpdateStatus"], "rolledback")
        })
        .await;
    let reported = rig.hub.reported();
    let statuses = rig.hub.firmware_statuses();
    assert_eq!(rig.state.snapshot().firmware, None);
    rig.stop().await;
    (reported, statuses)
}

#[tokio::test]
async fn after_a_restart_while_applying_or_rebooting_the_truth_is_reported() {
    let (reported, _) = restart_in_phase(FirmwarePhase::Rebooting, true).await;
    assert!(is(&reported, &["firmware", "fwUpdateStatus"], "current"));
    assert!(is(&reported, &["firmware", "currentFwVersion"], "2.0"));

    let (reported, statuses) = restart_in_phase(FirmwarePhase::Applying, false).await;
    assert_eq!(statuses, ["error", "rolledback"]);
    assert!(is(&reported, &["firmware", "currentFwVersion"], "1.0.0"));
    assert!(is(
        &reported,
        &["firmware", "fwUpdateSubstatus"],
        "Rolled back to: 1.0.0"
    ));
}

#[tokio::test]
async fn a_process_killed_mid_download_resumes_on_the_next_start() {
    let mut rig = Rig::new(virtual_device(0.0));
    let sha256 = rig.packages.add(URI, PACKAGE);
    rig.packages.hold(URI);
    rig.start().await;
    rig.desire_firmware("2.0", &sha256);
    rig.hub
        .wait_reported(|r| is(r, &["firmware", "fwUpdateStatus"], "downloading"))
        .await;
    rig.kill().await;
    assert_eq!(
        rig.state.snapshot().firmware.map(|job| job.phase),
        Some(FirmwarePhase::Downloading)
    );
    rig.packages.release();
    rig.start().await;
    rig.hub
        .wait_reported(|r| is(r, &["firmware", "currentFwVersion"], "2.0"))
        .await;
    rig.stop().await;
}

#[tokio::test]
async fn configuration_reports_pending_then_success_replacing_the_old_value() {
    let mut rig = Rig::new(virtual_device(0.0));
    rig.start().await;
    rig.hub
        .set_desired(json!({"telemetryConfig": {"sendFrequency": "5m", "extra": 1}}));
    rig.hub
        .wait_reported(|r| is(r, &["telemetryConfig", "status"], "Success"))
        .await;
    rig.hub
        .set_desired(json!({"telemetryConfig": {"extra": null, "sendFrequency": "1m"}}));
    rig.hub
        .wait_reported(|r| {
            field(r, &["telemetryConfig", "appliedConfig"]) == Some(&json!({"sendFrequency": "1m"}))
        })
        .await;
    assert_eq!(
        rig.hub.statuses(&["telemetryConfig", "status"]),
        ["Pending", "Success", "Pending", "Success"]
    );
    assert_eq!(
        field(&rig.hub.reported(), &["telemetryConfig", "pendingConfig"]),
        None
    );
    assert_eq!(
        rig.actions.configuration("telemetryConfig"),
        Some(json!({"sendFrequency": "1m"}))
    );
    rig.stop().await;
}

#[tokio::test]
async fn a_failing_configuration_reports_failed_with_the_reason() {
    let mut rig = Rig::new(CountingActions::new(true));
    rig.start().await;
    rig.hub
        .set_desired(json!({"telemetryConfig": {"sendFrequency": "never"}}));
    rig.hub
        .wait_reported(|r| {
            is(r, &["telemetryConfig", "status"], "Failed")
                && is(
                    r,
                    &["telemetryConfig", "error"],
                    "unsupported sendFrequency",
                )
        })
        .await;
    rig.stop().await;
}

#[tokio::test]
async fn legacy_firmware_update_reports_the_method_pattern_statuses() {
    let mut rig = Rig::new(virtual_device(0.0));
    let sha256 = rig.packages.add(URI, PACKAGE);
    rig.start().await;
    let answer = rig
        .hub
        .call(
            "firmwareUpdate",
            json!({"fwPackageUri": URI, "fwVersion": "2.0", "fwPackageCheckValue": sha256}),
        )
        .await;
    assert_eq!(answer, (200, json!("FirmwareUpdate started")));
    rig.hub
        .wait_reported(|r| {
            is(
                r,
                &["iothubDM", "firmwareUpdate", "status"],
                "applyComplete",
            )
        })
        .await;
    assert_eq!(
        rig.hub.statuses(&["iothubDM", "firmwareUpdate", "status"]),
        [
            "waiting",
            "downloading",
            "downloadComplete",
            "applying",
            "applyComplete"
        ]
    );
    assert!(is(
        &rig.hub.reported(),
        &["firmware", "currentFwVersion"],
        "2.0"
    ));
    assert_eq!(rig.actions.reboots(), 0);

    let insecure = rig
        .hub
        .call("firmwareUpdate", json!({"fwPackageUri": "http://x/p"}))
        .await;
    assert_eq!(insecure.0, 200);
    rig.hub
        .wait_reported(|r| {
            is(
                r,
                &["iothubDM", "firmwareUpdate", "status"],
                "downloadFailed",
            )
        })
        .await;
    let malformed = rig.hub.call("firmwareUpdate", json!({"uri": 1})).await;
    assert_eq!(malformed.0, 400);
    let unknown = rig.hub.call("selfDestruct", Value::Null).await;
    assert_eq!(unknown.0, 404);
    rig.stop().await;
}

#[tokio::test]
async fn legacy_update_without_a_version_names_it_by_digest() {
    let mut rig = Rig::new(virtual_device(0.0));
    let sha256 = rig.packages.add(URI, PACKAGE);
    rig.start().await;
    let answer = rig
        .hub
        .call("firmwareUpdate", json!({"fwPackageUri": URI}))
        .await;
    assert_eq!(answer.0, 200);
    let expected = format!("sha256-{}", &sha256[..12]);
    rig.hub
        .wait_reported(|r| is(r, &["firmware", "currentFwVersion"], &expected))
        .await;
    rig.stop().await;
}
