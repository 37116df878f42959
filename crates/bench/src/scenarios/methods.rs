//! `methods`: connected devices answer direct methods invoked over HTTPS keep-alive, a fixed
//! number of calls in flight. Baseline: the same request/response through Mosquitto over TLS at
//! QoS 0, with as many responders and as many requests in flight.

use std::sync::Arc;
use std::time::Duration;

use anyhow::ensure;
use serde_json::Map;
use tokio::sync::Mutex;

use super::{closed_loop, latency_figures, parameter};
use crate::baseline::mosquitto::Mosquitto;
use crate::fleet::spawn::{Fleet, MeasureSummary};
use crate::fleet::{FleetArgs, Role, device_id};
use crate::http1::Http1Connection;
use crate::hub::{BenchHub, DEVICE_KEY, register_devices};
use crate::report::{BaselineReport, ScenarioReport, ratio, round};
use crate::rest::{API_VERSION, owner_authorization};

struct Scale {
    devices: usize,
    in_flight: usize,
    warmup: Duration,
    seconds: Duration,
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(120);
/// The body of every call.
const METHOD_CALL: &[u8] =
    br#"{"methodName":"reboot","payload":{"delay":0},"responseTimeoutInSeconds":30}"#;

/// Checks that the hub answered 200 with the device's status 200.
fn method_answered(status: u16, body: &[u8]) -> Result<(), String> {
    if status != 200 {
        return Err(format!(
            "the hub answered {status}: {}",
            String::from_utf8_lossy(body)
        ));
    }
    let answer: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("unreadable answer: {e}"))?;
    match answer["status"].as_i64() {
        Some(200) => Ok(()),
        other => Err(format!(
            "the device answered the method with status {}",
            other.unwrap_or(-1)
        )),
    }
}

pub(super) async fn run(quick: bool, report: &mut ScenarioReport) -> anyhow::Result<()> {
    let scale = if quick {
        Scale {
            devices: 100,
            in_flight: 64,
            warmup: Duration::from_secs(1),
            seconds: Duration::from_secs(4),
        }
    } else {
        Scale {
            devices: 1_000,
            in_flight: 64,
            warmup: Duration::from_secs(3),
            seconds: Duration::from_secs(20),
        }
    };
    parameter(report, "devices", scale.devices);
    parameter(report, "in_flight", scale.in_flight);
    parameter(report, "warmup_secs", scale.warmup.as_secs_f64());
    parameter(report, "measured_secs", scale.seconds.as_secs_f64());
    parameter(report, "method_payload", "{\"delay\":0} -> {\"ok\":true}");

    let hub = BenchHub::start(|_| {}).await?;
    register_devices(hub.hub(), scale.devices).await?;
    let mut fleet = Fleet::spawn(&FleetArgs {
        role: Role::HubMethods,
        addr: hub.running.mqtt_addr,
        ca: hub.ca.clone(),
        device_key: DEVICE_KEY.into(),
        first: 0,
        count: scale.devices,
        stride: 1,
        targets: 0,
        per_task: 250,
        in_flight: 0,
        connect_concurrency: 64,
        seconds: 0.0,
        warmup: 0.0,
    })?;
    let connected = fleet.connect(CONNECT_TIMEOUT).await?;
    ensure!(
        connected.connected == scale.devices,
        "only {} of {} devices connected: {}",
        connected.connected,
        scale.devices,
        connected.first_error.unwrap_or_default()
    );
    let authorization = owner_authorization()?;
    let mut connections = Vec::with_capacity(scale.in_flight);
    for _ in 0..scale.in_flight {
        connections.push(Mutex::new(
            Http1Connection::connect(hub.running.https_addr, &hub.ca).await?,
        ));
    }
    let connections = Arc::new(connections);
    let authorization = Arc::new(authorization);
    let devices = scale.devices as u64;
    let outcome = closed_loop(
        scale.in_flight,
        scale.warmup,
        scale.seconds,
        move |worker, n| {
            let connections = Arc::clone(&connections);
            let authorization = Arc::clone(&authorization);
            async move {
                let device = device_id(usize::try_from(n % devices).unwrap_or(0));
                let target = format!("/twins/{device}/methods?{API_VERSION}");
                let mut connection = connections[worker].lock().await;
                let answer = connection
                    .post_json(&target, &authorization, METHOD_CALL)
                    .await
                    .map_err(|e| e.to_string())?;
                method_answered(answer.status, &answer.body)
            }
        },
    )
    .await;
    fleet.finish().await?;
    hub.stop().await;

    let rate = outcome.rate();
    let summary = outcome.latency.summary();
    report.figure("calls_per_sec", round(rate, 1));
    report.figure("calls", outcome.ok);
    report.figure("errors", outcome.errors);
    latency_figures(&mut report.figures, "", &summary);
    if let Some(error) = outcome.first_error {
        report.notes.push(format!("first failed call: {error}"));
    }

    let baseline = match mosquitto_baseline(&scale).await {
        Ok(measured) => {
            let mut figures = Map::new();
            figures.insert("calls_per_sec".into(), round(measured.rate(), 1).into());
            figures.insert("calls".into(), measured.ops.into());
            figures.insert("errors".into(), measured.errors.into());
            latency_figures(&mut figures, "", &measured.latency.summary());
            BaselineReport::measured("mosquitto-tls-qos0", figures)
        }
        Err(e) => BaselineReport::missing("mosquitto-tls-qos0", format!("{e:#}")),
    };
    let baseline_rate = baseline
        .figures
        .get("calls_per_sec")
        .and_then(|v| v.as_f64());
    let vs_baseline = baseline_rate.and_then(|b| ratio(rate, b));
    report.set_ratio(
        vs_baseline,
        "twinhub calls/s ÷ Mosquitto calls/s (higher is better)",
    );
    report.baseline = Some(baseline);

    report.check("calls/s >= 20,000", round(rate, 1), rate >= 20_000.0);
    report.check(
        "p99 <= 5 ms",
        summary.p99_ms,
        summary.count > 0 && summary.p99_ms <= 5.0,
    );
    report.check(
        ">= 1.0x Mosquitto's rate",
        vs_baseline.map_or(serde_json::Value::Null, Into::into),
        vs_baseline.is_some_and(|r| r >= 1.0),
    );
    Ok(())
}

/// Responders and requesters through our own Mosquitto; the requesters measure.
async fn mosquitto_baseline(scale: &Scale) -> anyhow::Result<MeasureSummary> {
    let broker = Mosquitto::start().await?;
    let base = FleetArgs {
        role: Role::MosquittoResponder,
        addr: broker.addr,
        ca: broker.ca.clone(),
        device_key: String::new(),
        first: 0,
        count: scale.devices,
        stride: 1,
        targets: scale.devices,
        per_task: 250,
        in_flight: 0,
        connect_concurrency: 64,
        seconds: scale.seconds.as_secs_f64(),
        warmup: scale.warmup.as_secs_f64(),
    };
    let mut responders = Fleet::spawn(&base)?;
    let answering = responders.connect(CONNECT_TIMEOUT).await?;
    ensure!(
        answering.connected == scale.devices,
        "only {} of {} Mosquitto responders connected: {}",
        answering.connected,
        scale.devices,
        answering.first_error.unwrap_or_default()
    );
    let mut requesters = Fleet::spawn(&FleetArgs {
        role: Role::MosquittoRequester,
        count: scale.in_flight,
        in_flight: scale.in_flight,
        per_task: 16,
        ..base
    })?;
    let asking = requesters.connect(CONNECT_TIMEOUT).await?;
    ensure!(
        asking.connected == scale.in_flight,
        "only {} of {} Mosquitto requesters connected: {}",
        asking.connected,
        scale.in_flight,
        asking.first_error.unwrap_or_default()
    );
    requesters.start(None).await?;
    let measured = requesters
        .measured(scale.warmup + scale.seconds + Duration::from_secs(30))
        .await?;
    requesters.finish().await?;
    responders.finish().await?;
    broker.stop().await;
    Ok(measured)
}
