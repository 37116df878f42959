//! `reported`: devices send reported patches, each acknowledged (`res/204`) only once durable, a
//! fixed number outstanding over the fleet. Baseline: the same merges into a PostgreSQL JSONB
//! row per device (`reported || patch`, synchronous_commit=on), as many in flight.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, ensure};
use serde_json::{Map, Value};

use super::{LoopOutcome, closed_loop, latency_figures, parameter};
use crate::baseline::postgres;
use crate::fleet::spawn::Fleet;
use crate::fleet::{FleetArgs, Role, device_id, reported_patch};
use crate::hub::{BenchHub, DEVICE_KEY, register_devices};
use crate::report::{BaselineReport, ScenarioReport, ratio, round};

struct Scale {
    devices: usize,
    in_flight: usize,
    warmup: Duration,
    seconds: Duration,
}

const TABLE: &str = "bench_reported";

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
            devices: 10_000,
            in_flight: 64,
            warmup: Duration::from_secs(3),
            seconds: Duration::from_secs(20),
        }
    };
    parameter(report, "devices", scale.devices);
    parameter(report, "in_flight", scale.in_flight);
    parameter(report, "warmup_secs", scale.warmup.as_secs_f64());
    parameter(report, "measured_secs", scale.seconds.as_secs_f64());
    parameter(
        report,
        "patch",
        String::from_utf8_lossy(&reported_patch(1)).into_owned(),
    );

    let hub = BenchHub::start(|_| {}).await?;
    register_devices(hub.hub(), scale.devices).await?;
    let mut fleet = Fleet::spawn(&FleetArgs {
        role: Role::HubReporter,
        addr: hub.running.mqtt_addr,
        ca: hub.ca.clone(),
        device_key: DEVICE_KEY.into(),
        first: 0,
        count: scale.devices,
        stride: 1,
        targets: 0,
        per_task: 250,
        in_flight: scale.in_flight,
        connect_concurrency: 64,
        seconds: scale.seconds.as_secs_f64(),
        warmup: scale.warmup.as_secs_f64(),
    })?;
    parameter(
        report,
        "generator_processes",
        scale
            .devices
            .div_ceil(crate::fleet::spawn::MAX_DEVICES_PER_PROCESS),
    );
    let connected = fleet.connect(Duration::from_secs(300)).await?;
    ensure!(
        connected.connected == scale.devices,
        "only {} of {} devices connected: {}",
        connected.connected,
        scale.devices,
        connected.first_error.unwrap_or_default()
    );
    fleet.start(None).await?;
    let measured = fleet
        .measured(scale.warmup + scale.seconds + Duration::from_secs(30))
        .await?;
    fleet.finish().await?;
    hub.stop().await;

    let rate = measured.rate();
    let summary = measured.latency.summary();
    report.figure("patches_per_sec", round(rate, 1));
    report.figure("patches", measured.ops);
    report.figure("errors", measured.errors);
    latency_figures(&mut report.figures, "", &summary);

    let baseline = match postgres_baseline(&scale).await {
        Ok(outcome) => {
            let mut figures = Map::new();
            figures.insert("patches_per_sec".into(), round(outcome.rate(), 1).into());
            figures.insert("patches".into(), outcome.ok.into());
            figures.insert("errors".into(), outcome.errors.into());
            latency_figures(&mut figures, "", &outcome.latency.summary());
            if let Some(error) = outcome.first_error {
                report
                    .notes
                    .push(format!("first failed PostgreSQL update: {error}"));
            }
            BaselineReport::measured("postgresql-jsonb-merge", figures)
        }
        Err(e) => BaselineReport::missing("postgresql-jsonb-merge", format!("{e:#}")),
    };
    let baseline_rate = baseline
        .figures
        .get("patches_per_sec")
        .and_then(Value::as_f64);
    let vs_baseline = baseline_rate.and_then(|b| ratio(rate, b));
    report.set_ratio(
        vs_baseline,
        "twinhub patches/s ÷ PostgreSQL merges/s (higher is better)",
    );
    report.baseline = Some(baseline);

    report.check("patches/s >= 30,000", round(rate, 1), rate >= 30_000.0);
    report.check(
        "p99 <= 20 ms",
        summary.p99_ms,
        summary.count > 0 && summary.p99_ms <= 20.0,
    );
    report.check(
        ">= 1.5x PostgreSQL's rate",
        vs_baseline.map_or(Value::Null, Into::into),
        vs_baseline.is_some_and(|r| r >= 1.5),
    );
    Ok(())
}

/// One row per device; `in_flight` connections each merging patches in a closed loop.
async fn postgres_baseline(scale: &Scale) -> anyhow::Result<LoopOutcome> {
    let setup = postgres::connect()
        .await
        .map_err(|e| anyhow::anyhow!(postgres::missing_reason(&e)))?;
    setup
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS {TABLE};
             CREATE TABLE {TABLE} (id text PRIMARY KEY, reported jsonb NOT NULL DEFAULT '{{}}'::jsonb);"
        ))
        .await
        .context("creating the baseline table")?;
    let ids: Vec<String> = (0..scale.devices).map(device_id).collect();
    setup
        .execute(
            &format!("INSERT INTO {TABLE} (id) SELECT unnest($1::text[])"),
            &[&ids],
        )
        .await
        .context("inserting the baseline rows")?;
    let mut workers = Vec::with_capacity(scale.in_flight);
    for _ in 0..scale.in_flight {
        let client = postgres::connect().await?;
        client.batch_execute("SET synchronous_commit = on").await?;
        let statement = client
            .prepare(&format!(
                "UPDATE {TABLE} SET reported = reported || $2::jsonb WHERE id = $1"
            ))
            .await?;
        workers.push((client, statement));
    }
    let workers = Arc::new(workers);
    let devices = scale.devices as u64;
    let outcome = closed_loop(
        scale.in_flight,
        scale.warmup,
        scale.seconds,
        move |worker, n| {
            let workers = Arc::clone(&workers);
            async move {
                let (client, statement) = &workers[worker];
                let id = device_id(usize::try_from(n % devices).unwrap_or(0));
                let patch: Value =
                    serde_json::from_slice(&reported_patch(n)).unwrap_or(Value::Null);
                let updated = client.execute(statement, &[&id, &patch]).await?;
                if updated == 1 {
                    Ok(())
                } else {
                    Err(anyhow::anyhow!("{updated} rows updated for {id}"))
                }
            }
        },
    )
    .await;
    setup
        .batch_execute(&format!("DROP TABLE IF EXISTS {TABLE}"))
        .await
        .context("dropping the baseline table")?;
    Ok(outcome)
}
