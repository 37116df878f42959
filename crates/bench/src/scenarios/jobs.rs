//! `jobs`: a scheduleDeviceMethod job over connected devices with the hub's job throttle lifted;
//! measures devices completed per second from the job's creation to its completion.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use serde_json::{Value, json};

use super::parameter;
use crate::fleet::spawn::{Fleet, MAX_DEVICES_PER_PROCESS};
use crate::fleet::{FleetArgs, Role};
use crate::hub::{BenchHub, DEVICE_KEY, register_devices};
use crate::report::{ScenarioReport, round};
use crate::rest::Rest;

const JOB: &str = "bench-job";
/// The job rate the hub is given (its default throttles to 1,000 devices/s).
const DEVICES_PER_SECOND: u32 = 10_000_000;

pub(super) async fn run(quick: bool, report: &mut ScenarioReport) -> anyhow::Result<()> {
    let devices: usize = if quick { 1_000 } else { 10_000 };
    let wait = if quick {
        Duration::from_secs(60)
    } else {
        Duration::from_secs(300)
    };
    parameter(report, "devices", devices);
    parameter(report, "job_devices_per_second", DEVICES_PER_SECOND);
    parameter(report, "query_condition", "*");

    let hub = BenchHub::start(|c| c.job_devices_per_second = DEVICES_PER_SECOND).await?;
    register_devices(hub.hub(), devices).await?;
    let mut fleet = Fleet::spawn(&FleetArgs {
        role: Role::HubMethods,
        addr: hub.running.mqtt_addr,
        ca: hub.ca.clone(),
        device_key: DEVICE_KEY.into(),
        first: 0,
        count: devices,
        stride: 1,
        targets: 0,
        per_task: 250,
        in_flight: 0,
        connect_concurrency: 64,
        seconds: 0.0,
        warmup: 0.0,
    })?;
    parameter(
        report,
        "generator_processes",
        devices.div_ceil(MAX_DEVICES_PER_PROCESS),
    );
    let joined = fleet.connect(Duration::from_secs(300)).await?;
    ensure!(
        joined.connected == devices,
        "only {} of {devices} devices connected: {}",
        joined.connected,
        joined.first_error.unwrap_or_default()
    );

    let rest = Rest::new(hub.running.https_addr, &hub.ca)?;
    let began = Instant::now();
    rest.put(
        &format!("/jobs/v2/{JOB}"),
        &json!({
            "jobId": JOB,
            "type": "scheduleDeviceMethod",
            "cloudToDeviceMethod": {"methodName": "reboot", "payload": {}, "responseTimeoutInSeconds": 30},
            "queryCondition": "*",
            "maxExecutionTimeInSeconds": 3600,
        }),
    )
    .await?;
    let job = loop {
        let job = rest.get(&format!("/jobs/v2/{JOB}")).await?;
        let status = job["status"].as_str().unwrap_or_default();
        if matches!(status, "completed" | "failed" | "cancelled") {
            break job;
        }
        if began.elapsed() > wait {
            bail!("the job was still {status:?} after {wait:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let secs = began.elapsed().as_secs_f64();
    let answered = fleet.finish().await?;
    hub.stop().await;

    let statistics = &job["deviceJobStatistics"];
    let count = |name: &str| statistics[name].as_u64().unwrap_or(0);
    let succeeded = count("succeededCount");
    let rate = if secs > 0.0 {
        succeeded as f64 / secs
    } else {
        0.0
    };
    report.figure("job_status", job["status"].clone());
    report.figure("devices_per_sec", round(rate, 1));
    report.figure("job_secs", round(secs, 3));
    report.figure("succeeded", succeeded);
    report.figure("failed", count("failedCount"));
    report.figure("device_count", count("deviceCount"));
    report.figure("methods_answered", answered);
    report.notes.push(
        "time runs from PUT /jobs/v2 until GET /jobs/v2 reports the job completed (polled every 20 ms)".into(),
    );

    report.check(
        "devices/s >= 5,000",
        round(rate, 1),
        rate >= 5_000.0 && succeeded == devices as u64,
    );
    report.check(
        "every device's method succeeded",
        Value::from(succeeded),
        succeeded == devices as u64,
    );
    Ok(())
}
