//! A generator process: connects its share of the fleet when told, runs its role, reports on
//! stdout (one JSON line per event) and exits when its stdin closes.

use std::io::Write as _;
use std::sync::Arc;

use futures_util::StreamExt;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

use super::device::Target;
use super::group::{self, Counters, Plan};
use super::{ChildEvent, Command, FleetArgs, split_evenly};
use crate::latency::Latency;

/// Runs one generator process until its stdin closes.
pub async fn run(args: FleetArgs) -> anyhow::Result<()> {
    let config = crate::tls::client_config(&args.ca, &[])?;
    let target = Target {
        addr: args.addr,
        connector: TlsConnector::from(Arc::new(config)),
        device_key: Arc::from(args.device_key.as_str()),
    };
    let mut commands = BufReader::new(tokio::io::stdin()).lines();

    loop {
        match commands.next_line().await?.as_deref().map(Command::parse) {
            None => return Ok(()),
            Some(Some(Command::Connect)) => break,
            Some(_) => {}
        }
    }
    let began = Instant::now();
    let role = args.role;
    let opened: Vec<_> = futures_util::stream::iter(args.indices())
        .map(|index| {
            let target = target.clone();
            async move { (index, target.open(role, index).await) }
        })
        .buffer_unordered(args.connect_concurrency.max(1))
        .collect()
        .await;
    let connect_secs = began.elapsed().as_secs_f64();
    let mut devices = Vec::with_capacity(opened.len());
    let mut failed = 0;
    let mut first_error = None;
    for (index, result) in opened {
        match result {
            Ok(conn) => devices.push((index, conn)),
            Err(e) => {
                failed += 1;
                first_error.get_or_insert_with(|| format!("device {index}: {e}"));
            }
        }
    }
    devices.sort_by_key(|(index, _)| *index);
    emit(&ChildEvent::Connected {
        connected: devices.len(),
        failed,
        connect_secs,
        first_error,
    });

    let (start_tx, start_rx) = watch::channel(None);
    let stop = CancellationToken::new();
    let (measured_tx, mut measured_rx) = mpsc::unbounded_channel();
    let group_count = devices.len().div_ceil(args.per_task.max(1));
    let budgets = split_evenly(args.in_flight, group_count);
    let mut tasks = Vec::with_capacity(group_count);
    let mut remaining = devices.into_iter();
    for budget in budgets {
        let members: Vec<_> = remaining.by_ref().take(args.per_task.max(1)).collect();
        let plan = Plan {
            role,
            targets: args.targets,
            budget: budget.min(members.len()),
            seconds: args.seconds,
            warmup: args.warmup,
        };
        tasks.push(tokio::spawn(group::run(
            plan,
            members,
            start_rx.clone(),
            stop.clone(),
            measured_tx.clone(),
        )));
    }
    drop(measured_tx);

    while let Some(line) = commands.next_line().await? {
        let Some(Command::Start { t0_unix_micros }) = Command::parse(&line) else {
            continue;
        };
        let _ = start_tx.send(Some(t0_unix_micros));
        if !role.measures() {
            continue;
        }
        let (mut ops, mut errors, mut secs) = (0, 0, 0f64);
        let mut latency = Latency::new();
        for _ in 0..tasks.len() {
            let Some(m) = measured_rx.recv().await else {
                break;
            };
            ops += m.ops;
            errors += m.errors;
            secs = secs.max(m.secs);
            latency.merge(&m.latency);
        }
        emit(&ChildEvent::Measured {
            ops,
            errors,
            secs,
            latency: latency.to_pairs(),
        });
    }

    stop.cancel();
    let mut totals = Counters::default();
    for task in tasks {
        if let Ok(counters) = task.await {
            totals.answered += counters.answered;
            totals.disconnected += counters.disconnected;
        }
    }
    emit(&ChildEvent::Finished {
        answered: totals.answered,
        disconnected: totals.disconnected,
    });
    Ok(())
}

/// Writes one event line; the orchestrator reads stdout line by line.
fn emit(event: &ChildEvent) {
    let Ok(line) = serde_json::to_string(event) else {
        return;
    };
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}
