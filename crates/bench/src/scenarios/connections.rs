//! `connections`: idle TLS device connections held by one hub process, how fast they are set
//! up and what each costs in memory. Baseline: a bare tokio + rustls echo server (its own
//! process) holding the same number of TLS connections.

use std::time::Duration;

use anyhow::{Context, ensure};
use serde_json::{Map, Value};

use super::parameter;
use crate::baseline::echo::EchoServer;
use crate::fleet::spawn::{ConnectSummary, Fleet, MAX_DEVICES_PER_PROCESS};
use crate::fleet::{FleetArgs, Role};
use crate::hub::{BenchHub, DEVICE_KEY, register_devices, wait_connected};
use crate::report::{BaselineReport, ScenarioReport, ratio, round};
use crate::stats::rss_bytes;

/// Lets the allocator and the hub's bookkeeping settle before memory is read.
const SETTLE: Duration = Duration::from_secs(1);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(600);

pub(super) async fn run(quick: bool, report: &mut ScenarioReport) -> anyhow::Result<()> {
    let devices: usize = if quick { 200 } else { 19_000 };
    let concurrency = 64;
    parameter(report, "connections", devices);
    parameter(report, "connect_concurrency_per_process", concurrency);
    parameter(
        report,
        "generator_processes",
        devices.div_ceil(MAX_DEVICES_PER_PROCESS),
    );
    parameter(report, "keep_alive", 0);

    let hub = BenchHub::start(|_| {}).await?;
    register_devices(hub.hub(), devices).await?;
    tokio::time::sleep(SETTLE).await;
    let before = rss_bytes().context("cannot read this process's memory")?;
    let args = FleetArgs {
        role: Role::HubIdle,
        addr: hub.running.mqtt_addr,
        ca: hub.ca.clone(),
        device_key: DEVICE_KEY.into(),
        first: 0,
        count: devices,
        stride: 1,
        targets: 0,
        per_task: 500,
        in_flight: 0,
        connect_concurrency: concurrency,
        seconds: 0.0,
        warmup: 0.0,
    };
    let mut fleet = Fleet::spawn(&args)?;
    let connected = fleet.connect(CONNECT_TIMEOUT).await?;
    let held = wait_connected(
        hub.hub(),
        connected.connected as u64,
        Duration::from_secs(10),
    )
    .await;
    tokio::time::sleep(SETTLE).await;
    let after = rss_bytes().context("cannot read this process's memory")?;
    fleet.finish().await?;
    hub.stop().await;

    let per_connection = bytes_per_connection(before, after, held);
    let rate = connected.connects_per_sec();
    report.figure("connected", held);
    report.figure("failed", connected.failed);
    report.figure("connects_per_sec", round(rate, 1));
    report.figure("hub_bytes_per_connection", round(per_connection, 0));
    report.figure("hub_rss_before_mb", round(before as f64 / 1_048_576.0, 1));
    report.figure("hub_rss_after_mb", round(after as f64 / 1_048_576.0, 1));
    if let Some(error) = &connected.first_error {
        report
            .notes
            .push(format!("first failed connection: {error}"));
    }
    report.notes.push(
        "hub memory is this process's RSS growth (the hub runs in it; the devices run in \
         separate generator processes)"
            .into(),
    );

    let baseline = match echo_baseline(&args, devices).await {
        Ok((echo, echo_per_connection)) => {
            let mut figures = Map::new();
            figures.insert("connected".into(), echo.connected.into());
            figures.insert(
                "connects_per_sec".into(),
                round(echo.connects_per_sec(), 1).into(),
            );
            figures.insert(
                "bytes_per_connection".into(),
                round(echo_per_connection, 0).into(),
            );
            BaselineReport::measured("tokio-rustls-echo", figures)
        }
        Err(e) => BaselineReport::missing("tokio-rustls-echo", format!("{e:#}")),
    };
    let echo_bytes = baseline
        .figures
        .get("bytes_per_connection")
        .and_then(Value::as_f64);
    if let Some(echo_rate) = baseline
        .figures
        .get("connects_per_sec")
        .and_then(Value::as_f64)
    {
        report.figure(
            "connects_per_sec_vs_echo",
            ratio(rate, echo_rate).map_or(Value::Null, Into::into),
        );
    }
    report.set_ratio(
        echo_bytes.and_then(|e| ratio(per_connection, e)),
        "hub bytes per connection ÷ echo server bytes per connection (lower is better)",
    );
    report.baseline = Some(baseline);

    let quick_note = if quick { " (quick scale)" } else { "" };
    let wanted = if quick { devices as u64 } else { 19_000 };
    report.check(
        &format!(">= {wanted} connections held{quick_note}"),
        held,
        held >= wanted,
    );
    report.check(
        "hub memory per connection <= 15 KB",
        round(per_connection / 1024.0, 2),
        held > 0 && per_connection <= 15.0 * 1024.0,
    );
    report.check("connects/s >= 3,000", round(rate, 1), rate >= 3_000.0);
    Ok(())
}

/// The echo server process's memory growth per TLS connection, with the same generator.
async fn echo_baseline(
    hub_args: &FleetArgs,
    devices: usize,
) -> anyhow::Result<(ConnectSummary, f64)> {
    let mut echo = EchoServer::start().await?;
    tokio::time::sleep(SETTLE).await;
    let before = echo.rss().await?;
    let mut fleet = Fleet::spawn(&FleetArgs {
        role: Role::TlsIdle,
        addr: echo.addr,
        ca: echo.ca.clone(),
        ..hub_args.clone()
    })?;
    let connected = fleet.connect(CONNECT_TIMEOUT).await?;
    ensure!(
        connected.connected == devices,
        "only {} of {devices} connections to the echo server: {}",
        connected.connected,
        connected.first_error.clone().unwrap_or_default()
    );
    tokio::time::sleep(SETTLE).await;
    let after = echo.rss().await?;
    fleet.finish().await?;
    echo.stop().await;
    let per_connection = bytes_per_connection(before, after, connected.connected as u64);
    Ok((connected, per_connection))
}

fn bytes_per_connection(before: u64, after: u64, connections: u64) -> f64 {
    if connections == 0 {
        return 0.0;
    }
    after.saturating_sub(before) as f64 / connections as f64
}
