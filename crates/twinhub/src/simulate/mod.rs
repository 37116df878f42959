//! `twinhub simulate`: a fleet of simulated devices in this one process, each a `twinhub_dm`
//! runner over virtual actions, so every device-management pattern (reboot, factory reset,
//! configuration, firmware update with failures and rollbacks) can be tried at scale.

mod fleet;
mod status;

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde_json::{Map, Value, json};
use tokio::time::Instant;
use twinhub_client::{ClientError, ServiceClient};
use twinhub_dm::VirtualConfig;

use crate::cli::{CliError, HubOptions, Output};

pub(crate) use fleet::{DeviceTemplate, Fleet, LocalSummary, device_id, provision};
pub(crate) use status::{FleetStatus, StatusLine, format_duration, parse_rate};

/// How often the live status is refreshed.
const STATUS_INTERVAL: Duration = Duration::from_secs(1);
/// How long stopping waits for devices to disconnect cleanly.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// The most devices one simulator runs (each holds a socket; mind `ulimit -n`).
const MAX_DEVICES: usize = 100_000;

#[derive(Args, Debug)]
pub(crate) struct SimulateArgs {
    #[command(flatten)]
    hub: HubOptions,
    /// How many devices to simulate: <prefix>00001 ... (created if missing)
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=MAX_DEVICES as i64))]
    devices: u32,
    /// Device id prefix (letters, digits and -._:@)
    #[arg(long, default_value = "sim-")]
    prefix: String,
    /// A tag set on the twins of the devices created, as key=value (repeatable)
    #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = status::parse_tag)]
    tags: Vec<(String, String)>,
    /// How long a reboot keeps a device offline (e.g. 2s, 500ms)
    #[arg(long, default_value = "5s", value_parser = status::parse_duration)]
    reboot_time: Duration,
    /// Most bytes per second each device downloads firmware at [default: unlimited]
    #[arg(long, value_name = "BYTES_PER_SECOND")]
    download_speed: Option<u64>,
    /// Probability (0.0-1.0) that installing firmware fails; a failed update rolls back
    #[arg(long, default_value_t = 0.0, value_parser = status::parse_rate)]
    failure_rate: f64,
    /// Seed of the failure draws, to reproduce a run
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The firmware version devices start with
    #[arg(long, default_value = "1.0.0")]
    firmware_version: String,
    /// The hub's MQTT port [default: 8883]
    #[arg(long)]
    mqtt_port: Option<u16>,
    /// Connect devices to this host instead of the connection string's host name (TLS verifies this name)
    #[arg(long, value_name = "HOST")]
    gateway_host: Option<String>,
    /// New device connections per second while the fleet ramps up
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    connect_rate: u32,
}

/// Why the simulator (or the demo built on it) stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SimulateError {
    /// The hub options could not be resolved, or a CLI command failed.
    #[error(transparent)]
    Cli(#[from] CliError),
    /// The hub refused a request or could not be reached.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The devices could not be registered.
    #[error("{0}")]
    Provision(String),
    /// The options are unusable.
    #[error("{0}")]
    Usage(String),
    /// A local file or directory could not be made.
    #[error("{0}")]
    Io(std::io::Error),
}

/// Runs `twinhub simulate` until Ctrl-C or SIGTERM; exit status 1 when it cannot start.
pub(crate) fn main(args: SimulateArgs) -> ExitCode {
    // Quiet by default: a fleet's warnings would bury the status line. `TWINHUB_LOG=warn` shows
    // why updates fail.
    let filter = tracing_subscriber::EnvFilter::try_from_env("TWINHUB_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    crate::run_to_exit(crate::Runtime::MultiThread, simulate(args))
}

/// Device id prefixes are quoted in queries; keeping to these characters needs no escaping.
pub(crate) fn valid_prefix(prefix: &str) -> Result<(), SimulateError> {
    if prefix.len() <= 100
        && prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._:@".contains(c))
    {
        Ok(())
    } else {
        Err(SimulateError::Usage(format!(
            "--prefix {prefix:?}: use at most 100 letters, digits and -._:@"
        )))
    }
}

/// The host name a connection string names, without the port it may carry.
pub(crate) fn host_without_port(host_name: &str) -> &str {
    match host_name.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => host,
        _ => host_name,
    }
}

async fn simulate(args: SimulateArgs) -> Result<(), SimulateError> {
    valid_prefix(&args.prefix)?;
    let (connection_string, ca_pem) = args.hub.resolve()?;
    let client = ServiceClient::from_connection_string(&connection_string, ca_pem.as_deref())?;
    let count = args.devices as usize;
    let ids: Vec<String> = (1..=count).map(|i| device_id(&args.prefix, i)).collect();
    let tags: Map<String, Value> = args
        .tags
        .iter()
        .map(|(key, value)| (key.clone(), Value::from(value.as_str())))
        .collect();
    eprintln!(
        "registering {count} devices ({} … {})",
        ids.first().map_or("", String::as_str),
        ids.last().map_or("", String::as_str)
    );
    let provisioned = provision(&client, &ids, |_| tags.clone()).await?;
    eprintln!(
        "{} created, {} already registered; connecting at up to {}/s",
        provisioned.created,
        count - provisioned.created,
        args.connect_rate
    );
    let template = DeviceTemplate {
        host_name: host_without_port(client.host_name()).to_owned(),
        port: args.mqtt_port,
        gateway_host: args.gateway_host.clone(),
        ca_pem,
        behaviour: VirtualConfig {
            firmware_version: args.firmware_version.clone(),
            reboot_time: args.reboot_time,
            download_bytes_per_second: args.download_speed,
            firmware_failure_probability: args.failure_rate,
            seed: args.seed,
        },
        connects_per_second: args.connect_rate,
    };
    let started = Instant::now();
    let fleet = Fleet::start(provisioned.identities, &template)?;
    let watched = watch_until_signal(&client, &args.prefix, &fleet, started).await?;

    let hub_view = FleetStatus::query(&client, &args.prefix).await;
    let local = fleet.local_summary().await;
    let failures = fleet.failures();
    let stopping = Instant::now();
    let unfinished = fleet.stop(STOP_GRACE).await;
    let summary = Summary {
        devices: count,
        ran_for: started.elapsed(),
        all_connected_after: watched.all_connected_after,
        peak_connected: watched.peak_connected,
        hub_view: hub_view.ok(),
        local,
        gave_up: failures.len(),
        disconnect_time: stopping.elapsed(),
        unfinished,
    };
    if let Some(failure) = failures.first() {
        eprintln!(
            "{} devices gave up, e.g. {}: {}",
            failures.len(),
            failure.device_id,
            failure.reason
        );
    }
    summary.print(args.hub.output)
}

/// What the live status saw before the signal.
struct Watched {
    all_connected_after: Option<Duration>,
    peak_connected: u64,
}

/// Draws the status line every [`STATUS_INTERVAL`] until Ctrl-C or SIGTERM.
async fn watch_until_signal(
    client: &ServiceClient,
    prefix: &str,
    fleet: &Fleet,
    started: Instant,
) -> Result<Watched, SimulateError> {
    // Listening from the start, so that a signal arriving during a query is not missed.
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).map_err(SimulateError::Io)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(SimulateError::Io)?;
    let mut line = status::StatusLine::new();
    let mut ticks = tokio::time::interval(STATUS_INTERVAL);
    let mut watched = Watched {
        all_connected_after: None,
        peak_connected: 0,
    };
    loop {
        tokio::select! {
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
            _ = ticks.tick() => {}
        }
        let text = match FleetStatus::query(client, prefix).await {
            Ok(status) => {
                watched.peak_connected = watched.peak_connected.max(status.connected);
                if watched.all_connected_after.is_none() && status.connected >= fleet.len() as u64 {
                    watched.all_connected_after = Some(started.elapsed());
                }
                let mut text = status.line(fleet.len(), fleet.failures().len());
                if let Some(after) = watched.all_connected_after {
                    text.push_str(&format!(" | all connected in {}", format_duration(after)));
                }
                text
            }
            Err(e) => format!("cannot read the fleet's status: {e}"),
        };
        line.draw(text);
    }
    line.finish();
    Ok(watched)
}

/// Printed when the simulator stops.
struct Summary {
    devices: usize,
    ran_for: Duration,
    all_connected_after: Option<Duration>,
    peak_connected: u64,
    hub_view: Option<FleetStatus>,
    local: LocalSummary,
    gave_up: usize,
    disconnect_time: Duration,
    unfinished: usize,
}

impl Summary {
    fn print(&self, output: Output) -> Result<(), SimulateError> {
        let text = match output {
            Output::Json => {
                let value = json!({
                    "devices": self.devices,
                    "ranForSeconds": self.ran_for.as_secs_f64(),
                    "allConnectedAfterSeconds": self.all_connected_after.map(|d| d.as_secs_f64()),
                    "peakConnected": self.peak_connected,
                    "firmwareStatus": self.hub_view.as_ref().map(|s| &s.firmware),
                    "firmwareVersions": self.local.versions,
                    "reboots": self.local.reboots,
                    "factoryResets": self.local.factory_resets,
                    "gaveUp": self.gave_up,
                    "notDisconnectedInTime": self.unfinished,
                });
                serde_json::to_string_pretty(&value)
                    .map_err(|e| SimulateError::Usage(format!("cannot render JSON: {e}")))?
                    + "\n"
            }
            Output::Table => self.text(),
        };
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
            .map_err(SimulateError::Io)
    }

    fn text(&self) -> String {
        let versions: Vec<String> = self
            .local
            .versions
            .iter()
            .map(|(version, n)| format!("{version} {n}"))
            .collect();
        let mut lines = vec![
            format!(
                "simulated {} devices for {}",
                self.devices,
                format_duration(self.ran_for)
            ),
            format!(
                "  connected:         {} at most{}",
                self.peak_connected,
                self.all_connected_after.map_or(String::new(), |d| format!(
                    ", all within {}",
                    format_duration(d)
                ))
            ),
        ];
        if let Some(status) = &self.hub_view {
            lines.push(format!("  firmware status:   {}", status.firmware_counts()));
        }
        lines.push(format!("  firmware versions: {}", versions.join(" · ")));
        lines.push(format!(
            "  reboots: {}, factory resets: {}",
            self.local.reboots, self.local.factory_resets
        ));
        if self.gave_up > 0 {
            lines.push(format!(
                "  gave up (could not reach the hub): {}",
                self.gave_up
            ));
        }
        lines.push(format!(
            "disconnected in {}{}",
            format_duration(self.disconnect_time),
            if self.unfinished > 0 {
                format!(" ({} devices did not finish in time)", self.unfinished)
            } else {
                String::new()
            }
        ));
        lines.join("\n") + "\n"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_need_no_quoting() {
        assert!(valid_prefix("sim-").is_ok());
        assert!(valid_prefix("line.3:a@b_").is_ok());
        assert!(valid_prefix("").is_ok());
        assert!(valid_prefix("it's").is_err());
        assert!(valid_prefix("a b").is_err());
        assert!(valid_prefix(&"x".repeat(101)).is_err());
    }

    #[test]
    fn ports_come_off_host_names() {
        assert_eq!(host_without_port("localhost:18443"), "localhost");
        assert_eq!(
            host_without_port("hub.azure-devices.net"),
            "hub.azure-devices.net"
        );
        assert_eq!(host_without_port("host:notaport"), "host:notaport");
    }

    #[test]
    fn the_summary_names_counts_and_times() {
        let mut local = LocalSummary::default();
        local.versions.insert("1.0.0".to_owned(), 3);
        local.versions.insert("2.0.0".to_owned(), 7);
        local.reboots = 8;
        let summary = Summary {
            devices: 10,
            ran_for: Duration::from_secs(90),
            all_connected_after: Some(Duration::from_millis(2500)),
            peak_connected: 10,
            hub_view: None,
            local,
            gave_up: 1,
            disconnect_time: Duration::from_millis(300),
            unfinished: 0,
        };
        assert_eq!(
            summary.text(),
            "simulated 10 devices for 1m30s\n  connected:         10 at most, all within 2.5 s\n  \
             firmware versions: 1.0.0 3 · 2.0.0 7\n  reboots: 8, factory resets: 0\n  \
             gave up (could not reach the hub): 1\ndisconnected in 0.3 s\n"
        );
    }
}
