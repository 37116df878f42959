//! `restart`: stop a hub holding the fleet's twins and start it again on the same data
//! directory; measures the time until it answers a query over HTTPS with every twin.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};

use super::parameter;
use crate::hub::{self, BenchHub, seed_twins};
use crate::report::{ScenarioReport, round};
use crate::rest::Rest;

const COUNT: &str = "SELECT COUNT() AS n FROM devices";

pub(super) async fn run(quick: bool, report: &mut ScenarioReport) -> anyhow::Result<()> {
    let twins = if quick { 10_000 } else { 1_000_000 };
    parameter(report, "twins", twins);
    parameter(report, "ready_query", COUNT);

    let first = BenchHub::start(|_| {}).await?;
    seed_twins(first.hub(), twins).await?;
    let store_bytes = std::fs::metadata(first.data_dir().join("twinhub.redb"))
        .map(|m| m.len())
        .unwrap_or(0);
    let data_dir = first.stop().await;
    report.figure("store_mb", round(store_bytes as f64 / 1_048_576.0, 1));

    let began = Instant::now();
    let running = twinhub_server::start(hub::config(data_dir.path(), |_| {}))
        .await
        .context("cannot restart the hub")?;
    let started_secs = began.elapsed().as_secs_f64();
    let ca = running
        .ca_pem_path
        .clone()
        .context("the restarted hub has no CA")?;
    let rest = Rest::new(running.https_addr, &ca)?;
    let counted = loop {
        match rest.query(COUNT, 10, None).await {
            Ok(page) => {
                break page
                    .items
                    .first()
                    .and_then(|i| i["n"].as_u64())
                    .unwrap_or(0);
            }
            Err(e) if began.elapsed() > Duration::from_secs(120) => {
                return Err(e).context("the restarted hub never answered a query");
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    let ready_secs = began.elapsed().as_secs_f64();
    running.shutdown().await;
    drop(data_dir);
    ensure!(
        counted == twins as u64,
        "the restarted hub counted {counted} twins of {twins}"
    );

    report.figure("start_secs", round(started_secs, 3));
    report.figure("ready_secs", round(ready_secs, 3));
    report.figure("twins_after_restart", counted);
    report.check("ready <= 10 s", round(ready_secs, 3), ready_secs <= 10.0);
    Ok(())
}
