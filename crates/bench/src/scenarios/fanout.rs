//! `fanout`: an automatic configuration over the whole fleet, part of it connected. Measures when
//! each connected device receives its desired patch and when every twin has been updated. The
//! hub's background re-evaluation rate is lifted so the hub, not its throttle, is measured.

use std::time::{Duration, Instant};

use anyhow::ensure;
use serde_json::json;

use super::{latency_figures, parameter};
use crate::fleet::spawn::{Fleet, MAX_DEVICES_PER_PROCESS};
use crate::fleet::{FleetArgs, Role, unix_micros_now};
use crate::hub::{BenchHub, DEVICE_KEY, seed_twins};
use crate::report::{ScenarioReport, round};
use crate::rest::Rest;

const CONFIGURATION: &str = "bench-fanout";
/// The configuration re-evaluation rate the hub is given (its default throttles to 20,000/s).
const TWINS_PER_SECOND: u32 = 10_000_000;

pub(super) async fn run(quick: bool, report: &mut ScenarioReport) -> anyhow::Result<()> {
    let (twins, connected) = if quick {
        (10_000, 100)
    } else {
        (1_000_000, 19_000)
    };
    let wait = if quick {
        Duration::from_secs(30)
    } else {
        Duration::from_secs(120)
    };
    parameter(report, "twins", twins);
    parameter(report, "connected", connected);
    parameter(report, "configuration_twins_per_second", TWINS_PER_SECOND);
    parameter(report, "target_condition", "tags.fleet = 'bench'");
    parameter(
        report,
        "connected_devices",
        format!("every {}th twin, spread over the fleet", twins / connected),
    );

    let hub = BenchHub::start(|c| c.configuration_twins_per_second = TWINS_PER_SECOND).await?;
    seed_twins(hub.hub(), twins).await?;
    let mut fleet = Fleet::spawn(&FleetArgs {
        role: Role::HubDesired,
        addr: hub.running.mqtt_addr,
        ca: hub.ca.clone(),
        device_key: DEVICE_KEY.into(),
        first: 0,
        count: connected,
        stride: twins / connected,
        targets: 0,
        per_task: 500,
        in_flight: 0,
        connect_concurrency: 64,
        seconds: wait.as_secs_f64(),
        warmup: 0.0,
    })?;
    parameter(
        report,
        "generator_processes",
        connected.div_ceil(MAX_DEVICES_PER_PROCESS),
    );
    let joined = fleet.connect(Duration::from_secs(600)).await?;
    ensure!(
        joined.connected == connected,
        "only {} of {connected} devices connected: {}",
        joined.connected,
        joined.first_error.unwrap_or_default()
    );

    let rest = Rest::new(hub.running.https_addr, &hub.ca)?;
    let t0 = unix_micros_now();
    let began = Instant::now();
    fleet.start(Some(t0)).await?;
    rest.put(
        &format!("/configurations/{CONFIGURATION}"),
        &json!({
            "id": CONFIGURATION,
            "content": {"deviceContent": {"properties.desired.benchFanout": {"generation": 1, "sampleRate": 10}}},
            "targetCondition": "tags.fleet = 'bench'",
            "priority": 10,
            "labels": {},
            "metrics": {"queries": {}},
        }),
    )
    .await?;
    let put_secs = began.elapsed().as_secs_f64();
    let mut all_applied_secs = None;
    let mut applied = 0;
    while began.elapsed() < wait {
        applied = hub
            .hub()
            .configuration_system_metrics(CONFIGURATION)
            .applied;
        if applied >= twins as u64 {
            all_applied_secs = Some(began.elapsed().as_secs_f64());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let arrivals = fleet.measured(wait + Duration::from_secs(30)).await?;
    fleet.finish().await?;
    hub.stop().await;

    let summary = arrivals.latency.summary();
    report.figure("put_configuration_secs", round(put_secs, 3));
    report.figure("devices_notified", arrivals.ops);
    report.figure("devices_not_notified", arrivals.errors);
    latency_figures(&mut report.figures, "notified_", &summary);
    report.figure("twins_applied", applied);
    report.figure(
        "all_twins_applied_secs",
        all_applied_secs.map_or(serde_json::Value::Null, |s| round(s, 3).into()),
    );
    report.notes.push(
        "notification times are from just before PUT /configurations to the patch's arrival at \
         the device (same machine clock)"
            .into(),
    );

    let all_notified = arrivals.errors == 0 && arrivals.ops == connected as u64;
    report.check(
        "every connected device notified within 2 s",
        summary.max_ms,
        all_notified && summary.max_ms <= 2_000.0,
    );
    report.check(
        "all twins updated within 10 s",
        all_applied_secs.map_or(serde_json::Value::Null, Into::into),
        all_applied_secs.is_some_and(|s| s <= 10.0),
    );
    Ok(())
}
