//! `twinhub-bench`: the benchmark harness of BENCHMARKS.md. One subcommand per scenario and `all`;
//! every run writes `bench-results.json` and prints a table.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::{Map, Value};

use twinhub_bench::report::{self, ScenarioReport, Status};
use twinhub_bench::scenarios::Scenario;
use twinhub_bench::{baseline, fleet};

/// mimalloc rather than glibc's malloc: with 1,000,000 twins it made queries 2-3x faster, seeding
/// 2x faster and the process 1 GB smaller; it costs about 10 KB more per idle connection
/// (BENCHMARKS.md, "Changes that mattered").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "twinhub-bench",
    about = "Benchmarks twinhub against its targets and baselines (see BENCHMARKS.md)"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
    /// Run at a small scale (every scenario, in under 3 minutes in all).
    #[arg(long, global = true)]
    quick: bool,
    /// Where to write the machine-readable results.
    #[arg(long, global = true, default_value = "bench-results.json")]
    out: PathBuf,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Every scenario, each in its own process.
    All,
    /// Direct methods over HTTPS, against Mosquitto request/response over TLS.
    Methods,
    /// Durable reported patches over MQTT, against PostgreSQL JSONB merges.
    Reported,
    /// Idle TLS device connections, against a bare tokio + rustls echo server.
    Connections,
    /// Fleet queries over HTTPS, against PostgreSQL JSONB with indexes.
    Query,
    /// A configuration over the fleet: desired patches to connected devices, all twins updated.
    Fanout,
    /// A scheduleDeviceMethod job over connected devices.
    Jobs,
    /// Restarting a hub holding the fleet's twins.
    Restart,
    /// A load-generator process (started by the scenarios).
    #[command(hide = true)]
    Fleet(fleet::FleetArgs),
    /// The echo-server baseline process (started by `connections`).
    #[command(hide = true)]
    EchoServer,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let scenario = match cli.command {
        Cmd::Fleet(args) => return exit_code(fleet::child::run(args).await),
        Cmd::EchoServer => return exit_code(baseline::echo::serve().await),
        Cmd::All => return run_all(cli.quick, &cli.out).await,
        Cmd::Methods => Scenario::Methods,
        Cmd::Reported => Scenario::Reported,
        Cmd::Connections => Scenario::Connections,
        Cmd::Query => Scenario::Query,
        Cmd::Fanout => Scenario::Fanout,
        Cmd::Jobs => Scenario::Jobs,
        Cmd::Restart => Scenario::Restart,
    };
    let report = scenario.run(cli.quick).await;
    publish(std::slice::from_ref(&report), &cli.out)
}

fn exit_code(outcome: anyhow::Result<()>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("twinhub-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs each scenario in a fresh process of this executable, so that none inherits another's
/// memory, open files or leftover tasks, then merges their results.
async fn run_all(quick: bool, out: &Path) -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return exit_code(Err(anyhow::anyhow!("cannot find this executable: {e}"))),
    };
    let scratch = match tempfile::Builder::new()
        .prefix("twinhub-bench-all-")
        .tempdir()
    {
        Ok(dir) => dir,
        Err(e) => {
            return exit_code(Err(anyhow::anyhow!(
                "cannot create a scratch directory: {e}"
            )));
        }
    };
    let mut reports = Vec::new();
    for scenario in Scenario::ALL {
        eprintln!(
            "==> twinhub-bench {}{}",
            scenario.name(),
            if quick { " --quick" } else { "" }
        );
        let path = scratch.path().join(format!("{}.json", scenario.name()));
        let mut command = tokio::process::Command::new(&exe);
        command.arg(scenario.name()).arg("--out").arg(&path);
        if quick {
            command.arg("--quick");
        }
        let status = command.status().await;
        let written = std::fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
            .map(|document| report::from_json(&document))
            .unwrap_or_default();
        match written.into_iter().find(|r| r.name == scenario.name()) {
            Some(report) => reports.push(report),
            None => {
                let mut report = ScenarioReport::new(scenario.name(), Map::new());
                report.fail(&anyhow::anyhow!(
                    "the scenario process wrote no results (exit: {})",
                    status.map_or_else(|e| e.to_string(), |s| s.to_string())
                ));
                report.finish(0.0);
                reports.push(report);
            }
        }
    }
    publish(&reports, out)
}

/// Writes the JSON document and prints the table; fails only if a scenario could not run
/// (unmet targets and missing baselines are results, not failures).
fn publish(reports: &[ScenarioReport], out: &Path) -> ExitCode {
    println!("\n{}", report::table(reports));
    if let Err(e) = report::write_json(out, reports) {
        eprintln!("twinhub-bench: cannot write {}: {e}", out.display());
        return ExitCode::FAILURE;
    }
    println!("results written to {}", out.display());
    if reports.iter().any(|r| r.status == Status::Failed) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
