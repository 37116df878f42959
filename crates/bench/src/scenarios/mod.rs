//! The scenarios of BENCHMARKS.md. Each runs at the scale of the table, or at a small
//! scale with `--quick`, and returns a [`ScenarioReport`]; none invents a number it did not
//! measure.

mod connections;
mod fanout;
mod jobs;
mod methods;
mod query;
mod reported;
mod restart;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::latency::{Latency, LatencySummary};
use crate::report::{ScenarioReport, round};

/// One scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    Methods,
    Reported,
    Connections,
    Query,
    Fanout,
    Jobs,
    Restart,
}

impl Scenario {
    /// Every scenario, in the order `all` runs them.
    pub const ALL: [Scenario; 7] = [
        Scenario::Methods,
        Scenario::Reported,
        Scenario::Connections,
        Scenario::Query,
        Scenario::Fanout,
        Scenario::Jobs,
        Scenario::Restart,
    ];

    /// The name used on the command line and as the key in `bench-results.json`.
    pub const fn name(self) -> &'static str {
        match self {
            Scenario::Methods => "methods",
            Scenario::Reported => "reported",
            Scenario::Connections => "connections",
            Scenario::Query => "query",
            Scenario::Fanout => "fanout",
            Scenario::Jobs => "jobs",
            Scenario::Restart => "restart",
        }
    }

    /// Runs the scenario; an error ends it as failed, keeping what it measured so far.
    pub async fn run(self, quick: bool) -> ScenarioReport {
        let began = Instant::now();
        let mut report = ScenarioReport::new(self.name(), Map::new());
        report.parameters.insert(
            "mode".into(),
            Value::from(if quick { "quick" } else { "full" }),
        );
        let outcome = match self {
            Scenario::Methods => methods::run(quick, &mut report).await,
            Scenario::Reported => reported::run(quick, &mut report).await,
            Scenario::Connections => connections::run(quick, &mut report).await,
            Scenario::Query => query::run(quick, &mut report).await,
            Scenario::Fanout => fanout::run(quick, &mut report).await,
            Scenario::Jobs => jobs::run(quick, &mut report).await,
            Scenario::Restart => restart::run(quick, &mut report).await,
        };
        if let Err(error) = outcome {
            report.fail(&error);
        }
        report.finish(began.elapsed().as_secs_f64());
        report
    }
}

/// Adds `count`, `p50_ms`, `p99_ms` and `max_ms` figures under `prefix`.
fn latency_figures(figures: &mut Map<String, Value>, prefix: &str, summary: &LatencySummary) {
    figures.insert(
        format!("{prefix}p50_ms"),
        Value::from(round(summary.p50_ms, 3)),
    );
    figures.insert(
        format!("{prefix}p99_ms"),
        Value::from(round(summary.p99_ms, 3)),
    );
    figures.insert(
        format!("{prefix}max_ms"),
        Value::from(round(summary.max_ms, 3)),
    );
}

/// Sets a parameter of the report.
fn parameter(report: &mut ScenarioReport, name: &str, value: impl Into<Value>) {
    report.parameters.insert(name.to_owned(), value.into());
}

/// What a closed loop measured inside its window.
struct LoopOutcome {
    ok: u64,
    errors: u64,
    secs: f64,
    latency: Latency,
    first_error: Option<String>,
}

impl LoopOutcome {
    fn rate(&self) -> f64 {
        if self.secs > 0.0 {
            self.ok as f64 / self.secs
        } else {
            0.0
        }
    }
}

/// A closed loop run by `workers` tasks in this process for `warmup + seconds`: each calls
/// `call(worker, sequence)` again as soon as the previous call returns. Only calls that complete inside the
/// measured window count.
async fn closed_loop<F, Fut, E>(
    workers: usize,
    warmup: Duration,
    seconds: Duration,
    call: F,
) -> LoopOutcome
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), E>> + Send,
    E: std::fmt::Display,
{
    let measure_from = tokio::time::Instant::now() + warmup;
    let measure_until = measure_from + seconds;
    let counter = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(workers);
    for worker in 0..workers {
        let call = call.clone();
        let counter = Arc::clone(&counter);
        tasks.push(tokio::spawn(async move {
            let mut outcome = LoopOutcome {
                ok: 0,
                errors: 0,
                secs: 0.0,
                latency: Latency::new(),
                first_error: None,
            };
            loop {
                let sent = tokio::time::Instant::now();
                if sent >= measure_until {
                    break;
                }
                let result = call(worker, counter.fetch_add(1, Ordering::Relaxed)).await;
                let done = tokio::time::Instant::now();
                if done < measure_from || done > measure_until {
                    continue;
                }
                match result {
                    Ok(()) => {
                        outcome.ok += 1;
                        outcome.latency.record(done - sent);
                    }
                    Err(e) => {
                        outcome.errors += 1;
                        outcome.first_error.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            outcome
        }));
    }
    let mut total = LoopOutcome {
        ok: 0,
        errors: 0,
        secs: seconds.as_secs_f64(),
        latency: Latency::new(),
        first_error: None,
    };
    for task in tasks {
        if let Ok(outcome) = task.await {
            total.ok += outcome.ok;
            total.errors += outcome.errors;
            total.latency.merge(&outcome.latency);
            if total.first_error.is_none() {
                total.first_error = outcome.first_error;
            }
        }
    }
    total
}
