//! The device agent end to end: the real `twinhub agent` binary against an in-process hub, its
//! commands shell scripts that touch files in a temporary directory, every pattern driven by the
//! back-end CLI (`twinhub reboot`, `factory-reset`, `twin update`, `rollout firmware`).
//!
//! A supervisor thread plays systemd (`Restart=always`): the reboot command stops the agent
//! (SIGTERM to its parent) and the supervisor starts it again, so a reboot is a real process
//! restart and everything the agent reports afterwards comes from what it persisted. A "power
//! cut" SIGKILLs the agent's whole process group, commands included.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::{HOSTNAME, TestHub};

/// The longest any one pattern may take to show in the twin.
const PATTERN_WAIT: Duration = Duration::from_secs(30);

/// A device's files: the agent's configuration and log, the device's state directory, where
/// commands leave their marks, and where installed firmware goes.
struct DeviceDir {
    root: tempfile::TempDir,
}

impl DeviceDir {
    fn new() -> DeviceDir {
        let root = tempfile::tempdir().expect("temporary directory");
        for name in ["marks", "firmware", "packages"] {
            std::fs::create_dir(root.path().join(name)).expect("creates a directory");
        }
        DeviceDir { root }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    fn config_path(&self) -> PathBuf {
        self.path("agent.toml")
    }

    fn log(&self) -> String {
        let log = std::fs::read_to_string(self.path("agent.log")).unwrap_or_default();
        let start = log.len().saturating_sub(6000);
        let start = (start..log.len())
            .find(|&i| log.is_char_boundary(i))
            .unwrap_or(log.len());
        log[start..].to_owned()
    }

    /// Writes the agent's configuration for `device_id` on `hub` with `commands`.
    fn write_config(&self, hub: &TestHub, device_id: &str, key: &str, commands: &Commands) {
        let ca = hub.running.ca_pem_path.clone().expect("the hub made a CA");
        let string = |value: &str| serde_json::to_string(value).expect("a string serialises");
        let path = |value: &Path| string(&value.to_string_lossy());
        let mut text = format!(
            "host_name = {}\ndevice_id = {}\nshared_access_key = {}\nca_file = {}\n\
             gateway_host = \"127.0.0.1\"\nport = {}\nstate_dir = {}\n\
             initial_firmware_version = \"1.0.0\"\ncommand_timeout_seconds = 20\n\
             reboot_grace_seconds = 20\n\n[commands]\nreboot = {}\ninstall_firmware = {}\n\
             rollback_firmware = {}\nfactory_reset = {}\napply_configuration = {}\n",
            string(HOSTNAME),
            string(device_id),
            string(key),
            path(&ca),
            hub.mqtt_addr.port(),
            path(&self.path("state")),
            string(&commands.reboot),
            string(&commands.install_firmware),
            string(&commands.rollback_firmware),
            string(&commands.factory_reset),
            string(&commands.apply_configuration),
        );
        text.push('\n');
        std::fs::write(self.config_path(), text).expect("writes the agent configuration");
    }

    fn read(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.path(name)).ok()
    }
}

/// The shell commands of one test device; each leaves a mark in `marks/`.
struct Commands {
    reboot: String,
    install_firmware: String,
    rollback_firmware: String,
    factory_reset: String,
    apply_configuration: String,
}

impl Commands {
    /// Commands that do their work at once; the reboot stops the agent (its parent) cleanly.
    fn quick(dir: &DeviceDir) -> Commands {
        let at = |name: &str| dir.path(name).to_string_lossy().into_owned();
        Commands {
            reboot: format!(
                "echo reboot >> '{}/reboots' && kill -TERM $PPID",
                at("marks")
            ),
            install_firmware: format!("cp \"$1\" '{}/firmware-'\"$2\".bin", at("firmware")),
            rollback_firmware: format!("echo \"$1\" >> '{}/rollbacks'", at("marks")),
            factory_reset: format!("touch '{}/factory-reset'", at("marks")),
            apply_configuration: format!("cp \"$2\" '{}/applied-'\"$1\".json", at("marks")),
        }
    }
}

/// Keeps one `twinhub agent` running, restarting it whenever it exits, until stopped.
struct Supervisor {
    pid: Arc<Mutex<Option<u32>>>,
    stopping: Arc<AtomicBool>,
    exits: Arc<Mutex<Vec<ExitStatus>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Supervisor {
    fn start(dir: &DeviceDir) -> Supervisor {
        let pid = Arc::new(Mutex::new(None));
        let stopping = Arc::new(AtomicBool::new(false));
        let exits = Arc::new(Mutex::new(Vec::new()));
        let config = dir.config_path();
        let log_path = dir.path("agent.log");
        let thread = {
            let (pid, stopping, exits) =
                (Arc::clone(&pid), Arc::clone(&stopping), Arc::clone(&exits));
            std::thread::spawn(move || {
                while !stopping.load(Ordering::SeqCst) {
                    let log = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&log_path)
                        .expect("opens the agent log");
                    let mut child = std::os::unix::process::CommandExt::process_group(
                        Command::new(env!("CARGO_BIN_EXE_twinhub"))
                            .arg("agent")
                            .arg("--config")
                            .arg(&config)
                            .env("TWINHUB_LOG", "info,twinhub_dm=debug")
                            .stdin(Stdio::null())
                            .stdout(log.try_clone().expect("clones the log handle"))
                            .stderr(log),
                        0,
                    )
                    .spawn()
                    .expect("the agent starts");
                    *pid.lock().unwrap_or_else(PoisonError::into_inner) = Some(child.id());
                    let status = child.wait().expect("waits for the agent");
                    *pid.lock().unwrap_or_else(PoisonError::into_inner) = None;
                    exits
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(status);
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        Supervisor {
            pid,
            stopping,
            exits,
            thread: Some(thread),
        }
    }

    /// Sends `signal` to the running agent (`group`: to its whole process group).
    fn signal(&self, signal: &str, group: bool) -> bool {
        let Some(pid) = *self.pid.lock().unwrap_or_else(PoisonError::into_inner) else {
            return false;
        };
        let target = if group {
            format!("-{pid}")
        } else {
            pid.to_string()
        };
        Command::new("kill")
            .arg(format!("-{signal}"))
            .arg("--")
            .arg(target)
            .status()
            .is_ok_and(|status| status.success())
    }

    /// A power cut: the agent and every command it runs die at once; the supervisor then
    /// starts it again, as the device's init system would after power returns.
    fn power_cut(&self) {
        assert!(self.signal("KILL", true), "no agent was running");
    }

    /// How the agent's runs so far ended.
    fn exits(&self) -> Vec<ExitStatus> {
        self.exits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Stops the agent with SIGTERM and returns how every run ended.
    async fn stop(mut self) -> Vec<ExitStatus> {
        self.stopping.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.thread.as_ref().is_some_and(|t| !t.is_finished()) {
            assert!(
                Instant::now() < deadline,
                "the agent did not stop on SIGTERM"
            );
            self.signal("TERM", false);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the supervisor thread ends");
        }
        self.exits()
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        // A failed test must not leave agents behind.
        self.stopping.store(true, Ordering::SeqCst);
        self.signal("KILL", true);
    }
}

/// Runs the back-end CLI against `hub` off the runtime thread.
async fn cli(hub: &TestHub, args: &[&str]) -> Output {
    let connection_string = hub.running.service_connection_string.trim().replacen(
        &format!("HostName={HOSTNAME}"),
        &format!("HostName={HOSTNAME}:{}", hub.https_addr.port()),
        1,
    );
    let ca = hub.running.ca_pem_path.clone().expect("the hub made a CA");
    let mut command = Command::new(env!("CARGO_BIN_EXE_twinhub"));
    command
        .args(args)
        .arg("--connection-string")
        .arg(connection_string)
        .arg("--ca")
        .arg(ca)
        .env_remove("TWINHUB_CONNECTION_STRING")
        .env_remove("TWINHUB_DATA_DIR");
    tokio::time::timeout(
        Duration::from_secs(90),
        tokio::task::spawn_blocking(move || command.output()),
    )
    .await
    .expect("the CLI finishes in time")
    .expect("the blocking task runs")
    .expect("the CLI runs")
}

/// Runs the CLI and asserts it exits with `code`; returns stdout.
async fn cli_exits(hub: &TestHub, code: i32, args: &[&str]) -> String {
    let output = cli(hub, args).await;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(
        output.status.code(),
        Some(code),
        "twinhub {args:?}: {}{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Polls the twin until its reported properties satisfy `condition`.
async fn wait_reported(
    hub: &TestHub,
    dir: &DeviceDir,
    device_id: &str,
    what: &str,
    condition: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + PATTERN_WAIT;
    loop {
        let response = hub.rest("GET", &format!("/twins/{device_id}"), None).await;
        assert_eq!(response.status, 200, "{}", response.text());
        let reported = response.json()["properties"]["reported"].clone();
        if condition(&reported) {
            return reported;
        }
        assert!(
            Instant::now() < deadline,
            "{what} not reached; reported: {reported:#}\nagent log:\n{}",
            dir.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn firmware_is(reported: &Value, status: &str, version: &str) -> bool {
    reported["firmware"]["fwUpdateStatus"] == status
        && reported["firmware"]["currentFwVersion"] == version
}

fn package(dir: &DeviceDir, name: &str, len: usize, seed: u8) -> (PathBuf, Vec<u8>) {
    let bytes: Vec<u8> = (0..len)
        .map(|i| u8::try_from(i % 251).unwrap_or(0) ^ seed)
        .collect();
    let path = dir.path("packages").join(name);
    std::fs::File::create(&path)
        .and_then(|mut file| file.write_all(&bytes))
        .expect("writes the package");
    (path, bytes)
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn lines(text: Option<String>) -> Vec<String> {
    text.unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn every_pattern_driven_by_the_cli_reaches_the_agent_and_its_commands() {
    let hub = TestHub::start().await;
    let device_id = "agent-1";
    let key = hub.create_device(device_id).await;
    let dir = DeviceDir::new();
    dir.write_config(&hub, device_id, &key, &Commands::quick(&dir));
    let agent = Supervisor::start(&dir);
    let target = format!("deviceId = '{device_id}'");

    wait_reported(&hub, &dir, device_id, "the first report", |r| {
        r["firmware"]["currentFwVersion"] == "1.0.0"
    })
    .await;

    // Reboot: the command records the call and stops the agent; back, it reports rebooted.
    cli_exits(&hub, 0, &["reboot", device_id]).await;
    let reported = wait_reported(&hub, &dir, device_id, "rebooted", |r| {
        r["iothubDM"]["reboot"]["status"] == "rebooted"
    })
    .await;
    assert!(reported["iothubDM"]["reboot"]["lastReboot"].is_string());
    assert_eq!(lines(dir.read("marks/reboots")), ["reboot"]);
    assert!(!agent.exits().is_empty(), "the reboot restarted the agent");

    // Configuration: written to state_dir/config, handed to the apply command, reported.
    let telemetry = json!({"sendFrequency": "5m", "level": "debug"});
    let desired = json!({ "telemetryConfig": telemetry }).to_string();
    cli_exits(
        &hub,
        0,
        &["twin", "update", device_id, "--desired", &desired],
    )
    .await;
    wait_reported(&hub, &dir, device_id, "telemetryConfig applied", |r| {
        r["telemetryConfig"]["status"] == "Success"
            && r["telemetryConfig"]["appliedConfig"] == telemetry
    })
    .await;
    for file in [
        "state/config/telemetryConfig.json",
        "marks/applied-telemetryConfig.json",
    ] {
        let written: Value = serde_json::from_str(&dir.read(file).unwrap_or_default())
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(written, telemetry, "{file}");
    }

    // Firmware: uploaded, rolled out, downloaded, verified, installed, rebooted into.
    let (file, bytes) = package(&dir, "pump-2.0.0.bin", 200_000, 0);
    let watched = cli_exits(
        &hub,
        0,
        &[
            "rollout",
            "firmware",
            "--version",
            "2.0.0",
            "--file",
            &file.to_string_lossy(),
            "--target",
            &target,
            "--watch",
            "--timeout",
            "60",
            "--fail-on-error",
        ],
    )
    .await;
    assert!(watched.contains("current"), "{watched}");
    let reported = wait_reported(&hub, &dir, device_id, "firmware 2.0.0 current", |r| {
        firmware_is(r, "current", "2.0.0")
    })
    .await;
    assert_eq!(reported["firmware"]["pendingFwVersion"], "");
    assert!(reported["firmware"]["lastFwUpdateEndTime"].is_string());
    assert_eq!(
        std::fs::read(dir.path("firmware/firmware-2.0.0.bin")).expect("installed"),
        bytes
    );
    assert_eq!(
        dir.read("state/firmware-version").as_deref().map(str::trim),
        Some("2.0.0")
    );
    assert_eq!(
        lines(dir.read("marks/reboots")).len(),
        2,
        "the update rebooted"
    );

    // Factory reset: the command runs, state_dir is emptied (but for the firmware version), the
    // reported document starts over, and the desired configuration is applied again.
    std::fs::write(dir.path("state/user-data"), b"precious").expect("writes");
    cli_exits(&hub, 0, &["factory-reset", device_id]).await;
    let reported = wait_reported(&hub, &dir, device_id, "reset and reconfigured", |r| {
        r["iothubDM"]["factoryReset"]["status"] == "reset"
            && r["telemetryConfig"]["status"] == "Success"
    })
    .await;
    assert!(dir.path("marks/factory-reset").exists());
    assert!(
        !dir.path("state/user-data").exists(),
        "the reset wiped state_dir"
    );
    assert_eq!(
        dir.read("state/firmware-version").as_deref().map(str::trim),
        Some("2.0.0")
    );
    assert!(reported["iothubDM"]["reboot"].is_null(), "{reported:#}");
    assert_eq!(reported["firmware"]["currentFwVersion"], "2.0.0");
    assert_eq!(
        lines(dir.read("marks/reboots")).len(),
        3,
        "the reset rebooted"
    );

    // A package that does not match its check value is deleted, never installed.
    let (file, _) = package(&dir, "pump-3.0.0.bin", 50_000, 7);
    let uploaded: Value = serde_json::from_str(
        &cli_exits(
            &hub,
            0,
            &[
                "firmware",
                "upload",
                &file.to_string_lossy(),
                "--version",
                "3.0.0",
                "-o",
                "json",
            ],
        )
        .await,
    )
    .expect("the upload answer is JSON");
    let url = uploaded["url"].as_str().expect("the package has a URL");
    let wrong_sha256 = sha256_hex(b"some other package");
    cli_exits(
        &hub,
        1,
        &[
            "rollout",
            "firmware",
            "--version",
            "3.0.0",
            "--url",
            url,
            "--sha256",
            &wrong_sha256,
            "--target",
            &target,
            "--watch",
            "--timeout",
            "60",
            "--fail-on-error",
        ],
    )
    .await;
    let reported = wait_reported(&hub, &dir, device_id, "3.0.0 refused", |r| {
        firmware_is(r, "rolledback", "2.0.0")
    })
    .await;
    assert_eq!(
        reported["firmware"]["fwUpdateSubstatus"],
        "Rolled back to: 2.0.0"
    );
    assert!(
        !dir.path("firmware/firmware-3.0.0.bin").exists(),
        "never installed"
    );
    assert_eq!(
        dir.read("state/firmware-version").as_deref().map(str::trim),
        Some("2.0.0")
    );
    assert_eq!(
        dir.read("marks/rollbacks"),
        None,
        "nothing was installed to roll back"
    );

    let exits = agent.stop().await;
    assert_eq!(
        exits.len(),
        4,
        "three reboots and the final stop: {exits:?}"
    );
    assert!(
        exits.iter().all(ExitStatus::success),
        "{exits:?}\n{}",
        dir.log()
    );
    hub.stop().await;
}

#[tokio::test]
async fn a_power_cut_mid_update_leaves_the_twin_truthful() {
    let hub = TestHub::start().await;
    let device_id = "agent-2";
    let key = hub.create_device(device_id).await;
    let dir = DeviceDir::new();
    let mut commands = Commands::quick(&dir);
    let quick_install = commands.install_firmware.clone();
    commands.install_firmware = format!("sleep 3 && {quick_install}");
    dir.write_config(&hub, device_id, &key, &commands);
    let agent = Supervisor::start(&dir);
    let target = format!("deviceId = '{device_id}'");
    wait_reported(&hub, &dir, device_id, "the first report", |r| {
        r["firmware"]["currentFwVersion"] == "1.0.0"
    })
    .await;

    // Power lost while the (slow) install runs: the new firmware never finished installing,
    // so back up the device reports the failure and rolls back.
    let (file, _) = package(&dir, "pump-2.0.0.bin", 20_000, 1);
    let file = file.to_string_lossy().into_owned();
    let rollout = [
        "rollout",
        "firmware",
        "--version",
        "2.0.0",
        "--file",
        &file,
        "--target",
        &target,
    ];
    cli_exits(&hub, 0, &rollout).await;
    wait_reported(&hub, &dir, device_id, "applying 2.0.0", |r| {
        r["firmware"]["fwUpdateStatus"] == "applying"
    })
    .await;
    agent.power_cut();
    let reported = wait_reported(&hub, &dir, device_id, "rolled back after the cut", |r| {
        firmware_is(r, "rolledback", "1.0.0")
    })
    .await;
    assert_eq!(
        reported["firmware"]["fwUpdateSubstatus"],
        "Rolled back to: 1.0.0"
    );
    assert_eq!(lines(dir.read("marks/rollbacks")), ["1.0.0"]);

    // Now the install is quick but the reboot hangs (the device is going down): power lost
    // then, the new firmware is installed and the version file says so: current.
    commands.install_firmware = quick_install;
    commands.reboot = "sleep 60".to_owned();
    dir.write_config(&hub, device_id, &key, &commands);
    assert!(agent.signal("TERM", false), "the agent is running");
    let (file, bytes) = package(&dir, "pump-2.1.0.bin", 20_000, 2);
    let file = file.to_string_lossy().into_owned();
    let rollout = [
        "rollout",
        "firmware",
        "--version",
        "2.1.0",
        "--file",
        &file,
        "--target",
        &target,
    ];
    cli_exits(&hub, 0, &rollout).await;
    wait_reported(&hub, &dir, device_id, "rebooting into 2.1.0", |r| {
        r["firmware"]["fwUpdateStatus"] == "rebooting"
    })
    .await;
    agent.power_cut();
    let reported = wait_reported(&hub, &dir, device_id, "2.1.0 current after the cut", |r| {
        firmware_is(r, "current", "2.1.0")
    })
    .await;
    assert_eq!(reported["firmware"]["pendingFwVersion"], "");
    assert_eq!(
        std::fs::read(dir.path("firmware/firmware-2.1.0.bin")).expect("installed"),
        bytes
    );
    // The install cut off by the first power loss never completed, not even later.
    assert!(!dir.path("firmware/firmware-2.0.0.bin").exists());
    assert_eq!(
        dir.read("state/firmware-version").as_deref().map(str::trim),
        Some("2.1.0")
    );

    let exits = agent.stop().await;
    let killed = exits.iter().filter(|status| !status.success()).count();
    assert_eq!(
        killed, 2,
        "two power cuts, clean stops otherwise: {exits:?}"
    );
    hub.stop().await;
}
