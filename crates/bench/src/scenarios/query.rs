//! `query`: a fleet of realistic twins (~1 KB each) queried over HTTPS: a tag + reported filter,
//! a GROUP BY count, a selective equality (~100 rows), paging the whole fleet, read-your-writes,
//! and the hub's memory. Baseline: the same documents and queries on PostgreSQL JSONB with an
//! expression index for each filtered path (plus GIN on the tags).

use std::time::Instant;

use anyhow::{Context, ensure};
use serde_json::{Map, Value, json};
use tokio_postgres::Client;

use super::parameter;
use crate::baseline::postgres;
use crate::fleet::device_id;
use crate::hub::{BenchHub, TwinContent, customer, seed_twins};
use crate::latency::{Latency, LatencySummary};
use crate::report::{BaselineReport, ScenarioReport, ratio, round};
use crate::rest::Rest;
use crate::stats::rss_bytes;

/// Items per page: the most the hub serves at once.
const PAGE: usize = 1000;
const TABLE: &str = "bench_twins";
/// Rows inserted per statement when seeding PostgreSQL.
const PG_BATCH: usize = 2_000;
/// Rounds of write-then-query for read-your-writes.
const RYW_ROUNDS: usize = 10;
const RSS_LIMIT: u64 = 4 * 1024 * 1024 * 1024;

const FILTER: &str = "SELECT * FROM devices WHERE tags.location.region = 'eu-west' AND properties.reported.battery < 20";
const GROUP_BY: &str = "SELECT properties.reported.firmware.currentVersion AS version, COUNT() AS devices FROM devices GROUP BY properties.reported.firmware.currentVersion";
const EVERYTHING: &str = "SELECT * FROM devices";

const PG_FILTER: &str = "SELECT id, tags, desired, reported FROM bench_twins WHERE tags->'location'->>'region' = 'eu-west' AND (reported->>'battery')::int < 20 ORDER BY id LIMIT 1000";
const PG_GROUP_BY: &str = "SELECT reported->'firmware'->>'currentVersion' AS version, count(*) FROM bench_twins GROUP BY 1";
const PG_EQUALITY: &str =
    "SELECT id, tags, desired, reported FROM bench_twins WHERE tags->>'customer' = $1";
const PG_PAGE: &str =
    "SELECT id, tags, desired, reported FROM bench_twins WHERE id > $1 ORDER BY id LIMIT 1000";
const PG_INDEXES: &str = "
    CREATE INDEX ON bench_twins ((tags->'location'->>'region'), ((reported->>'battery')::int));
    CREATE INDEX ON bench_twins ((tags->>'customer'));
    CREATE INDEX ON bench_twins ((reported->'firmware'->>'currentVersion'));
    CREATE INDEX ON bench_twins USING gin (tags jsonb_path_ops);
    ANALYZE bench_twins;";

/// The baseline's p50 for one query, when it ran.
fn baseline_p50(baseline: Option<&BaselineReport>, name: &str) -> Option<f64> {
    baseline?
        .figures
        .get(&format!("{name}_p50_ms"))
        .and_then(Value::as_f64)
}

/// The equality query: one customer's twins.
fn equality(twins: usize) -> String {
    format!(
        "SELECT * FROM devices WHERE tags.customer = '{}'",
        customer(42, twins)
    )
}

/// What one side measured: per-query latency, paging, and result sizes to cross-check.
#[derive(Debug, Default)]
struct Measured {
    filter: LatencySummary,
    group_by: LatencySummary,
    equality: LatencySummary,
    page: LatencySummary,
    paging_secs: f64,
    /// The first run of filter, GROUP BY and equality (not in the latencies): on the hub it
    /// fills the indexes those queries use.
    first_runs_ms: [f64; 3],
    filter_rows: usize,
    groups: usize,
    grouped_total: u64,
    equality_rows: usize,
    paged_rows: usize,
}

pub(super) async fn run(quick: bool, report: &mut ScenarioReport) -> anyhow::Result<()> {
    let (twins, repeats) = if quick { (10_000, 10) } else { (1_000_000, 20) };
    parameter(report, "twins", twins);
    parameter(report, "repeats", repeats);
    parameter(report, "page_size", PAGE);
    parameter(report, "filter", FILTER);
    parameter(report, "group_by", GROUP_BY);
    parameter(report, "equality", equality(twins));
    parameter(report, "paging", EVERYTHING);

    let hub = BenchHub::start(|_| {}).await?;
    let seeded = seed_twins(hub.hub(), twins).await?;
    report.figure("seed_secs", round(seeded.secs, 2));
    report.figure("seed_twins_per_sec", round(seeded.rate(), 0));
    let rest = Rest::new(hub.running.https_addr, &hub.ca)?;
    let twin_bytes = rest
        .get_bytes(&format!("/twins/{}", device_id(0)))
        .await?
        .len();
    report.figure("twin_json_bytes", twin_bytes);
    let content = TwinContent::new(0, twins);
    let content_bytes = json!({
        "tags": content.tags,
        "properties": {"desired": content.desired, "reported": content.reported},
    })
    .to_string()
    .len();
    report.figure("twin_content_bytes", content_bytes);
    let rss_seeded = rss_bytes().unwrap_or(0);

    let measured = measure_hub(&rest, twins, repeats).await?;
    let read_your_writes = read_your_writes(&rest, twins).await?;
    let rss = rss_bytes().unwrap_or(0).max(rss_seeded);
    hub.stop().await;

    query_figures(&mut report.figures, &measured);
    report.figure("read_your_writes", read_your_writes);
    report.figure(
        "rss_after_seed_mb",
        round(rss_seeded as f64 / 1_048_576.0, 1),
    );
    report.figure("rss_mb", round(rss as f64 / 1_048_576.0, 1));
    report.notes.push(
        "latency is measured by a client over HTTPS keep-alive and includes reading and \
         parsing the JSON body; rss is the whole benchmark process (hub + client); \
         twin_content_bytes is one twin's tags + desired + reported, twin_json_bytes its REST \
         shape with $metadata"
            .into(),
    );

    let baseline = match postgres_baseline(twins, repeats).await {
        Ok(pg) => {
            let matches = pg.filter_rows == measured.filter_rows
                && pg.groups == measured.groups
                && pg.grouped_total == measured.grouped_total
                && pg.equality_rows == measured.equality_rows
                && pg.paged_rows == measured.paged_rows;
            report.figure("results_match_postgresql", matches);
            for (name, hub_p50, pg_p50) in [
                ("filter", measured.filter.p50_ms, pg.filter.p50_ms),
                ("group_by", measured.group_by.p50_ms, pg.group_by.p50_ms),
                ("equality", measured.equality.p50_ms, pg.equality.p50_ms),
                ("page", measured.page.p50_ms, pg.page.p50_ms),
            ] {
                report.figure(
                    &format!("{name}_speedup_vs_postgresql"),
                    ratio(pg_p50, hub_p50).map_or(Value::Null, Into::into),
                );
            }
            let mut figures = Map::new();
            query_figures(&mut figures, &pg);
            BaselineReport::measured("postgresql-jsonb-indexed", figures)
        }
        Err(e) => BaselineReport::missing("postgresql-jsonb-indexed", format!("{e:#}")),
    };
    let pg_filter = baseline
        .figures
        .get("filter_p50_ms")
        .and_then(Value::as_f64);
    report.set_ratio(
        pg_filter.and_then(|pg| ratio(pg, measured.filter.p50_ms)),
        "PostgreSQL filter p50 ÷ twinhub filter p50 (higher means twinhub is faster)",
    );
    report.baseline = Some(baseline);

    report.check(
        "filter p50 <= 100 ms",
        measured.filter.p50_ms,
        measured.filter.count > 0 && measured.filter.p50_ms <= 100.0,
    );
    report.check(
        "GROUP BY p50 <= 150 ms",
        measured.group_by.p50_ms,
        measured.group_by.count > 0 && measured.group_by.p50_ms <= 150.0,
    );
    report.check(
        "equality p50 <= 5 ms",
        measured.equality.p50_ms,
        measured.equality.count > 0 && measured.equality.p50_ms <= 5.0,
    );
    // The comparisons with PostgreSQL: p50 against p50, in the same run.
    let versus_postgresql = |name: &str, hub_p50: f64| {
        baseline_p50(report.baseline.as_ref(), name).and_then(|pg| ratio(pg, hub_p50))
    };
    let filter_vs = versus_postgresql("filter", measured.filter.p50_ms);
    let group_by_vs = versus_postgresql("group_by", measured.group_by.p50_ms);
    let equality_vs = versus_postgresql("equality", measured.equality.p50_ms);
    for (target, speedup, least) in [
        ("filter faster than PostgreSQL", filter_vs, 1.0),
        ("GROUP BY faster than PostgreSQL", group_by_vs, 1.0),
        ("equality within 2x of PostgreSQL", equality_vs, 0.5),
    ] {
        report.check(
            target,
            speedup.map_or(Value::Null, Into::into),
            speedup.is_some_and(|s| s >= least),
        );
    }
    report.check("read-your-writes", read_your_writes, read_your_writes);
    report.check(
        "RSS <= 4 GB",
        round(rss as f64 / 1_048_576.0, 1),
        rss > 0 && rss <= RSS_LIMIT,
    );
    Ok(())
}

fn query_figures(figures: &mut Map<String, Value>, m: &Measured) {
    for (name, summary) in [
        ("filter", &m.filter),
        ("group_by", &m.group_by),
        ("equality", &m.equality),
        ("page", &m.page),
    ] {
        figures.insert(format!("{name}_p50_ms"), round(summary.p50_ms, 3).into());
        figures.insert(format!("{name}_p99_ms"), round(summary.p99_ms, 3).into());
    }
    figures.insert("paging_total_secs".into(), round(m.paging_secs, 3).into());
    for (name, first_ms) in ["filter", "group_by", "equality"]
        .iter()
        .zip(m.first_runs_ms)
    {
        figures.insert(format!("{name}_first_run_ms"), round(first_ms, 1).into());
    }
    figures.insert("filter_rows".into(), m.filter_rows.into());
    figures.insert("groups".into(), m.groups.into());
    figures.insert("equality_rows".into(), m.equality_rows.into());
    figures.insert("paged_rows".into(), m.paged_rows.into());
}

/// Runs `query` once (timed apart: on the hub it may build an index) and then `repeats` times;
/// returns the repeated runs' latency, the first run's time in ms and the last result.
async fn timed<T, F, Fut>(repeats: usize, mut query: F) -> anyhow::Result<(LatencySummary, f64, T)>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let began = Instant::now();
    let mut result = query().await?;
    let first_ms = began.elapsed().as_secs_f64() * 1000.0;
    let mut latency = Latency::new();
    for _ in 0..repeats {
        let began = Instant::now();
        result = query().await?;
        latency.record(began.elapsed());
    }
    Ok((latency.summary(), first_ms, result))
}

async fn measure_hub(rest: &Rest, twins: usize, repeats: usize) -> anyhow::Result<Measured> {
    let (filter, filter_first_ms, filter_rows) = timed(repeats, || async {
        Ok(rest.query(FILTER, PAGE, None).await?.items.len())
    })
    .await?;
    let (group_by, group_by_first_ms, groups) = timed(repeats, || async {
        Ok(rest.query(GROUP_BY, PAGE, None).await?.items)
    })
    .await?;
    let equality_query = equality(twins);
    let (equality, equality_first_ms, equality_rows) = timed(repeats, || async {
        Ok(rest.query(&equality_query, PAGE, None).await?.items.len())
    })
    .await?;
    let grouped_total = groups
        .iter()
        .filter_map(|g| g["devices"].as_u64())
        .sum::<u64>();
    ensure!(
        grouped_total == twins as u64,
        "GROUP BY counted {grouped_total} twins of {twins}"
    );

    let began = Instant::now();
    let mut page_latency = Latency::new();
    let mut paged_rows = 0;
    let mut continuation: Option<String> = None;
    loop {
        let page_began = Instant::now();
        let page = rest
            .query(EVERYTHING, PAGE, continuation.as_deref())
            .await?;
        page_latency.record(page_began.elapsed());
        paged_rows += page.items.len();
        match page.continuation {
            Some(next) if !page.items.is_empty() => continuation = Some(next),
            _ => break,
        }
    }
    ensure!(
        paged_rows == twins,
        "paging returned {paged_rows} twins of {twins}"
    );
    Ok(Measured {
        filter,
        group_by,
        equality,
        page: page_latency.summary(),
        paging_secs: began.elapsed().as_secs_f64(),
        first_runs_ms: [filter_first_ms, group_by_first_ms, equality_first_ms],
        filter_rows,
        groups: groups.len(),
        grouped_total,
        equality_rows,
        paged_rows,
    })
}

/// Writes a tag over REST and at once queries for it, several times; true if every query saw
/// its write.
async fn read_your_writes(rest: &Rest, twins: usize) -> anyhow::Result<bool> {
    for round in 0..RYW_ROUNDS {
        let device = device_id(round * 97 % twins.max(1));
        let marker = format!("ryw-{round}-{}", crate::fleet::unix_micros_now());
        rest.patch(
            &format!("/twins/{device}"),
            &json!({"tags": {"ryw": marker}}),
        )
        .await?;
        let page = rest
            .query(
                &format!("SELECT * FROM devices WHERE tags.ryw = '{marker}'"),
                PAGE,
                None,
            )
            .await?;
        let seen = page.items.len() == 1 && page.items[0]["deviceId"] == device.as_str();
        if !seen {
            return Ok(false);
        }
    }
    Ok(true)
}

async fn postgres_baseline(twins: usize, repeats: usize) -> anyhow::Result<Measured> {
    let client = postgres::connect()
        .await
        .map_err(|e| anyhow::anyhow!(postgres::missing_reason(&e)))?;
    client
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS {TABLE};
             CREATE TABLE {TABLE} (id text PRIMARY KEY, tags jsonb NOT NULL, desired jsonb NOT NULL, reported jsonb NOT NULL);"
        ))
        .await
        .context("creating the baseline table")?;
    let insert = client
        .prepare(&format!(
            "INSERT INTO {TABLE} SELECT * FROM unnest($1::text[], $2::jsonb[], $3::jsonb[], $4::jsonb[])"
        ))
        .await?;
    for start in (0..twins).step_by(PG_BATCH) {
        let end = (start + PG_BATCH).min(twins);
        let mut ids = Vec::with_capacity(end - start);
        let (mut tags, mut desired, mut reported) = (Vec::new(), Vec::new(), Vec::new());
        for i in start..end {
            let content = TwinContent::new(i, twins);
            ids.push(device_id(i));
            tags.push(Value::Object(content.tags));
            desired.push(Value::Object(content.desired));
            reported.push(Value::Object(content.reported));
        }
        client
            .execute(&insert, &[&ids, &tags, &desired, &reported])
            .await
            .context("inserting the baseline rows")?;
    }
    client
        .batch_execute(PG_INDEXES)
        .await
        .context("indexing the baseline table")?;

    let measured = measure_postgres(&client, twins, repeats).await;
    client
        .batch_execute(&format!("DROP TABLE IF EXISTS {TABLE}"))
        .await
        .context("dropping the baseline table")?;
    measured
}

async fn measure_postgres(
    client: &Client,
    twins: usize,
    repeats: usize,
) -> anyhow::Result<Measured> {
    let filter_statement = client.prepare(PG_FILTER).await?;
    let group_statement = client.prepare(PG_GROUP_BY).await?;
    let equality_statement = client.prepare(PG_EQUALITY).await?;
    let page_statement = client.prepare(PG_PAGE).await?;
    let (filter, filter_first_ms, filter_rows) = timed(repeats, || async {
        Ok(documents(&client.query(&filter_statement, &[]).await?))
    })
    .await?;
    let (group_by, group_by_first_ms, groups) = timed(repeats, || async {
        let rows = client.query(&group_statement, &[]).await?;
        Ok(rows
            .iter()
            .map(|row| row.try_get::<_, i64>(1).unwrap_or(0))
            .collect::<Vec<_>>())
    })
    .await?;
    let customer = customer(42, twins);
    let (equality, equality_first_ms, equality_rows) = timed(repeats, || async {
        Ok(documents(
            &client.query(&equality_statement, &[&customer]).await?,
        ))
    })
    .await?;

    let began = Instant::now();
    let mut page_latency = Latency::new();
    let mut paged_rows = 0;
    let mut after = String::new();
    loop {
        let page_began = Instant::now();
        let rows = client.query(&page_statement, &[&after]).await?;
        let Some(last) = rows.last() else {
            break;
        };
        after = last.try_get::<_, String>(0)?;
        paged_rows += documents(&rows);
        page_latency.record(page_began.elapsed());
    }
    Ok(Measured {
        filter,
        group_by,
        equality,
        page: page_latency.summary(),
        paging_secs: began.elapsed().as_secs_f64(),
        first_runs_ms: [filter_first_ms, group_by_first_ms, equality_first_ms],
        filter_rows,
        groups: groups.len(),
        grouped_total: groups.iter().map(|n| n.unsigned_abs()).sum(),
        equality_rows,
        paged_rows,
    })
}

/// Decodes every row's JSONB columns, as a client must to use them; returns the row count.
fn documents(rows: &[tokio_postgres::Row]) -> usize {
    for row in rows {
        for column in 1..4 {
            let _ = std::hint::black_box(row.try_get::<_, Value>(column));
        }
    }
    rows.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_hub_query_parses() {
        for query in [FILTER, GROUP_BY, EVERYTHING, &equality(10_000)] {
            twinhub_query::parse(query).unwrap_or_else(|e| panic!("{query}: {e}"));
        }
    }
}
