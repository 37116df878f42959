//! `twinhub demo`: a hub, a simulated fleet and a firmware rollout in one command, with no
//! setup. Everything runs in this process on loopback ports; the back-end steps go through the
//! same code as the CLI commands they print.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser};
use serde_json::{Map, Value};
use tokio::time::Instant;
use twinhub_client::ServiceClient;
use twinhub_dm::VirtualConfig;
use twinhub_server::{HubConfig, RunningHub, StartError};

use crate::cli::{BackEndCommand, CliError};
use crate::simulate::{
    DeviceTemplate, Fleet, FleetStatus, SimulateError, StatusLine, device_id, format_duration,
    parse_rate, provision,
};

/// The simulated devices' id prefix.
const PREFIX: &str = "sim-";
/// The version devices run before the rollout, and the one rolled out.
const OLD_VERSION: &str = "1.0.0";
const NEW_VERSION: &str = "2.0.0";
/// The generated firmware package's size.
const PACKAGE_BYTES: usize = 256 * 1024;
/// The package id on the hub.
const PACKAGE_ID: &str = "demo-firmware-2.0.0";
/// Every tenth device is in the canary ring, which gets the update first.
const CANARY_EVERY: usize = 10;
/// A short reboot keeps the demo brisk.
const REBOOT_TIME: Duration = Duration::from_secs(1);
/// Downloads are throttled so that the progress bars have something to show.
const DOWNLOAD_BYTES_PER_SECOND: u64 = 512 * 1024;
/// How long the fleet may take to connect, and each rollout or device action to finish.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const ROLLOUT_TIMEOUT_SECONDS: &str = "40";
const ACTION_TIMEOUT: Duration = Duration::from_secs(20);
/// How often the demo polls while waiting.
const POLL: Duration = Duration::from_millis(250);

#[derive(Args, Debug)]
pub(crate) struct DemoArgs {
    /// How many simulated devices (one in ten in ring "canary", the others in "stable")
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u32).range(3..=10_000))]
    devices: u32,
    /// Keep the hub and the fleet running after the report, and print how to reach them
    #[arg(long)]
    keep: bool,
    /// Probability (0.0-1.0) that a device fails to install the firmware and rolls back
    #[arg(long, default_value_t = 0.03, value_parser = parse_rate)]
    failure_rate: f64,
    /// Seed of the failure draws
    #[arg(long, default_value_t = 4)]
    seed: u64,
}

/// Why the demo stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DemoError {
    /// The embedded hub did not start.
    #[error("cannot start the hub: {0}")]
    Start(#[from] StartError),
    /// The fleet could not be registered or started.
    #[error(transparent)]
    Simulate(#[from] SimulateError),
    /// A back-end step failed.
    #[error(transparent)]
    Cli(#[from] CliError),
    /// Something took longer than it should.
    #[error("timed out: {0}")]
    Timeout(String),
    /// A temporary file could not be written.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Runs the demo; exit status 1 if a step fails.
pub(crate) fn main(args: DemoArgs) -> ExitCode {
    crate::run_to_exit(crate::Runtime::MultiThread, demo(args))
}

/// How the demo reaches its hub, as CLI options would name it.
struct HubAccess {
    connection_string: String,
    ca_path: PathBuf,
    client: ServiceClient,
}

impl HubAccess {
    /// Runs a `twinhub` back-end command against the hub, echoing it first.
    async fn twinhub(&self, args: &[&str]) -> Result<(), DemoError> {
        let shown: Vec<String> = args.iter().map(|a| shell_quote(a)).collect();
        println!("\n$ twinhub {}", shown.join(" "));
        #[derive(Parser)]
        #[command(name = "twinhub")]
        struct Embedded {
            #[command(subcommand)]
            command: BackEndCommand,
        }
        let ca = self.ca_path.to_string_lossy();
        let argv = std::iter::once("twinhub")
            .chain(args.iter().copied())
            .chain(["--connection-string", &self.connection_string, "--ca", &ca]);
        let parsed = Embedded::try_parse_from(argv)
            .map_err(|e| CliError::Usage(format!("twinhub {}: {e}", args.join(" "))))?;
        crate::cli::dispatch(parsed.command).await?;
        Ok(())
    }
}

async fn demo(args: DemoArgs) -> Result<(), DemoError> {
    let started = Instant::now();
    let scratch = tempfile::Builder::new().prefix("twinhub-demo-").tempdir()?;
    let mut config = HubConfig::new(scratch.path().join("hub"));
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    config.mqtt_addr = loopback;
    config.https_addr = loopback;
    let hub = twinhub_server::start(config).await?;
    let outcome = run(&hub, &args, scratch.path(), started).await;
    hub.shutdown().await;
    outcome
}

async fn run(
    hub: &RunningHub,
    args: &DemoArgs,
    scratch: &Path,
    started: Instant,
) -> Result<(), DemoError> {
    let ca_path = hub
        .ca_pem_path
        .clone()
        .ok_or_else(|| DemoError::Timeout("the hub made no CA".to_owned()))?;
    let ca_pem = std::fs::read_to_string(&ca_path)?;
    let connection_string = with_port(&hub.service_connection_string, hub.https_addr.port());
    let access = HubAccess {
        client: ServiceClient::from_connection_string(&connection_string, Some(&ca_pem))
            .map_err(CliError::from)?,
        connection_string,
        ca_path,
    };
    println!(
        "twinhub demo: a hub on 127.0.0.1 (MQTT {}, HTTPS {}) and {} simulated devices",
        hub.mqtt_addr.port(),
        hub.https_addr.port(),
        args.devices
    );

    let count = args.devices as usize;
    let ids: Vec<String> = (1..=count).map(|i| device_id(PREFIX, i)).collect();
    let provisioned = provision(&access.client, &ids, ring_tags).await?;
    let template = DeviceTemplate {
        host_name: "localhost".to_owned(),
        port: Some(hub.mqtt_addr.port()),
        gateway_host: Some("127.0.0.1".to_owned()),
        ca_pem: Some(ca_pem),
        behaviour: VirtualConfig {
            firmware_version: OLD_VERSION.to_owned(),
            reboot_time: REBOOT_TIME,
            download_bytes_per_second: Some(DOWNLOAD_BYTES_PER_SECOND),
            firmware_failure_probability: args.failure_rate,
            seed: args.seed,
        },
        connects_per_second: 500,
    };
    let fleet = Fleet::start(provisioned.identities, &template)?;
    let outcome = script(&access, &fleet, scratch, started, args.keep).await;
    fleet.stop(Duration::from_secs(10)).await;
    outcome
}

/// The demo's steps, once the fleet is starting.
async fn script(
    access: &HubAccess,
    fleet: &Fleet,
    scratch: &Path,
    started: Instant,
    keep: bool,
) -> Result<(), DemoError> {
    wait_until_connected(&access.client, fleet).await?;

    let package = scratch.join(format!("firmware-{NEW_VERSION}.bin"));
    write_random_package(&package)?;
    let package_path = package.to_string_lossy();
    access
        .twinhub(&[
            "firmware",
            "upload",
            &package_path,
            "--version",
            NEW_VERSION,
            "--id",
            PACKAGE_ID,
        ])
        .await?;
    for ring in ["canary", "stable"] {
        let id = format!("firmware-2-0-0-{ring}");
        let target = format!("tags.ring = '{ring}'");
        access
            .twinhub(&[
                "rollout",
                "firmware",
                "--version",
                NEW_VERSION,
                "--package",
                PACKAGE_ID,
                "--id",
                &id,
                "--target",
                &target,
                "--watch",
                "--timeout",
                ROLLOUT_TIMEOUT_SECONDS,
            ])
            .await?;
    }

    let (rebooted, reset) = pick_updated_pair(&access.client).await?;
    access.twinhub(&["reboot", &rebooted]).await?;
    access.twinhub(&["factory-reset", &reset]).await?;
    wait_for_report(&access.client, &rebooted, "reboot", "rebooted").await?;
    wait_for_report(&access.client, &reset, "factoryReset", "reset").await?;
    access
        .twinhub(&[
            "query",
            &format!(
                "SELECT deviceId, properties.reported.iothubDM.reboot.lastReboot AS lastReboot, \
                 properties.reported.iothubDM.factoryReset.lastFactoryReset AS lastFactoryReset \
                 FROM devices WHERE deviceId IN ['{rebooted}', '{reset}']"
            ),
        ])
        .await?;

    println!("\nFleet report");
    access
        .twinhub(&[
            "query",
            "SELECT properties.reported.firmware.fwUpdateStatus AS status, COUNT() AS devices \
             FROM devices GROUP BY properties.reported.firmware.fwUpdateStatus",
        ])
        .await?;
    access
        .twinhub(&[
            "query",
            "SELECT properties.reported.firmware.currentFwVersion AS version, COUNT() AS devices \
             FROM devices GROUP BY properties.reported.firmware.currentFwVersion",
        ])
        .await?;
    println!("\ndemo finished in {}", format_duration(started.elapsed()));

    if keep {
        println!(
            "\nThe hub and its {} devices keep running until Ctrl-C.\n  connection string: {}\n  CA: {}\n\
             Try: twinhub devices list --connection-string '{}' --ca {}",
            fleet.len(),
            access.connection_string,
            access.ca_path.display(),
            access.connection_string,
            access.ca_path.display()
        );
        wait_for_signal().await?;
    }
    Ok(())
}

/// Two devices that run the new firmware, so that the factory-reset one stays on it (a rolled
/// back device would try the update again after a reset).
async fn pick_updated_pair(client: &ServiceClient) -> Result<(String, String), DemoError> {
    let rows = client
        .query_all(&format!(
            "SELECT deviceId FROM devices WHERE properties.reported.firmware.fwUpdateStatus = 'current' \
             AND properties.reported.firmware.currentFwVersion = '{NEW_VERSION}'"
        ))
        .await
        .map_err(CliError::from)?;
    let mut ids: Vec<String> = rows
        .iter()
        .filter_map(|row| row.get("deviceId").and_then(Value::as_str))
        .map(str::to_owned)
        .collect();
    ids.sort();
    // With too few updated devices (a high failure rate), any other devices do.
    ids.extend([device_id(PREFIX, 2), device_id(PREFIX, 3)]);
    let first = ids.remove(0);
    let second = ids.into_iter().find(|id| *id != first).unwrap_or_default();
    Ok((first, second))
}

/// `ring: canary` for every [`CANARY_EVERY`]th device (the first included), `stable` otherwise.
fn ring_tags(index: usize) -> Map<String, Value> {
    let ring = if index.is_multiple_of(CANARY_EVERY) {
        "canary"
    } else {
        "stable"
    };
    Map::from_iter([("ring".to_owned(), Value::from(ring))])
}

/// The service connection string with the hub's HTTPS port in its `HostName`.
fn with_port(connection_string: &str, port: u16) -> String {
    connection_string
        .trim()
        .split(';')
        .map(|part| match part.strip_prefix("HostName=") {
            Some(host) => format!("HostName={host}:{port}"),
            None => part.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// An argument as a shell would need it to be typed.
fn shell_quote(arg: &str) -> String {
    if !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@".contains(c))
    {
        arg.to_owned()
    } else {
        format!("\"{}\"", arg.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

fn write_random_package(path: &Path) -> Result<(), DemoError> {
    let mut bytes = vec![0u8; PACKAGE_BYTES];
    getrandom::fill(&mut bytes)
        .map_err(|e| DemoError::Io(std::io::Error::other(format!("no randomness: {e}"))))?;
    std::fs::write(path, bytes)?;
    Ok(())
}

/// Shows the connection count until every device is connected.
async fn wait_until_connected(client: &ServiceClient, fleet: &Fleet) -> Result<(), DemoError> {
    let started = Instant::now();
    let mut line = StatusLine::new();
    loop {
        let status = FleetStatus::query(client, PREFIX)
            .await
            .map_err(CliError::from)?;
        line.draw(format!(
            "connecting: {}/{} devices",
            status.connected,
            fleet.len()
        ));
        if status.connected >= fleet.len() as u64 {
            line.finish();
            println!(
                "{} devices connected in {}",
                fleet.len(),
                format_duration(started.elapsed())
            );
            return Ok(());
        }
        if started.elapsed() > CONNECT_TIMEOUT {
            line.finish();
            let failures = fleet.failures();
            let reason = failures
                .first()
                .map(|f| format!("; {}: {}", f.device_id, f.reason))
                .unwrap_or_default();
            return Err(DemoError::Timeout(format!(
                "{} of {} devices connected{reason}",
                status.connected,
                fleet.len()
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until `device_id` reports `iothubDM.<pattern>.status` = `done`.
async fn wait_for_report(
    client: &ServiceClient,
    device_id: &str,
    pattern: &str,
    done: &str,
) -> Result<(), DemoError> {
    let deadline = Instant::now() + ACTION_TIMEOUT;
    loop {
        let twin = client.get_twin(device_id).await.map_err(CliError::from)?;
        let status = twin
            .properties
            .reported
            .get("iothubDM")
            .and_then(|dm| dm.get(pattern))
            .and_then(|p| p.get("status"))
            .and_then(Value::as_str);
        if status == Some(done) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(DemoError::Timeout(format!(
                "{device_id} did not report iothubDM.{pattern}.status = {done}"
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn wait_for_signal() -> Result<(), DemoError> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result?,
        _ = terminate.recv() => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_port_goes_into_the_host_name() {
        assert_eq!(
            with_port(
                "HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey=k=\n",
                8443
            ),
            "HostName=localhost:8443;SharedAccessKeyName=iothubowner;SharedAccessKey=k="
        );
    }

    #[test]
    fn one_device_in_ten_is_a_canary() {
        let canaries = (0..300)
            .filter(|i| ring_tags(*i)["ring"] == "canary")
            .count();
        assert_eq!(canaries, 30);
        assert_eq!(ring_tags(0)["ring"], "canary");
        assert_eq!(ring_tags(1)["ring"], "stable");
    }

    #[test]
    fn arguments_are_quoted_only_when_needed() {
        assert_eq!(shell_quote("--version"), "--version");
        assert_eq!(
            shell_quote("tags.ring = 'canary'"),
            "\"tags.ring = 'canary'\""
        );
        assert_eq!(shell_quote("a\"b"), "\"a\\\"b\"");
        assert_eq!(shell_quote(""), "\"\"");
    }
}
