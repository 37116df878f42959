//! The orchestrator's side of the generator processes: spawn them (sharded so each stays below
//! its open-files cap), drive them over stdin, and merge what they report.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use super::{ChildEvent, Command, FleetArgs, split_evenly, unix_micros_now};
use crate::latency::Latency;

/// Most connections one generator process opens. The cap on open files is 20,000 per process;
/// this leaves room for the runtime, pipes and the hub's connections when they share a process.
pub const MAX_DEVICES_PER_PROCESS: usize = 9_500;

/// The result of connecting a whole fleet.
#[derive(Clone, Debug, Default)]
pub struct ConnectSummary {
    pub connected: usize,
    pub failed: usize,
    /// Wall time of the slowest process's connection phase (they run concurrently).
    pub connect_secs: f64,
    pub first_error: Option<String>,
}

impl ConnectSummary {
    /// Connections set up per second over the whole fleet.
    pub fn connects_per_sec(&self) -> f64 {
        if self.connect_secs > 0.0 {
            self.connected as f64 / self.connect_secs
        } else {
            0.0
        }
    }
}

/// A measuring fleet's merged result.
#[derive(Clone, Debug, Default)]
pub struct MeasureSummary {
    pub ops: u64,
    pub errors: u64,
    pub secs: f64,
    pub latency: Latency,
}

impl MeasureSummary {
    /// Successful operations per second of the measured window.
    pub fn rate(&self) -> f64 {
        if self.secs > 0.0 {
            self.ops as f64 / self.secs
        } else {
            0.0
        }
    }
}

/// The generator processes of one fleet.
pub struct Fleet {
    children: Vec<FleetChild>,
}

struct FleetChild {
    process: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Fleet {
    /// Starts enough generator processes for `args.count` devices, splitting the devices and
    /// the in-flight budget evenly between them.
    pub fn spawn(args: &FleetArgs) -> anyhow::Result<Fleet> {
        let exe = std::env::current_exe().context("cannot find the twinhub-bench executable")?;
        let processes = args.count.div_ceil(MAX_DEVICES_PER_PROCESS).max(1);
        let counts = split_evenly(args.count, processes);
        let in_flight = split_evenly(args.in_flight, processes);
        let mut children = Vec::with_capacity(processes);
        let mut first = args.first;
        for (count, in_flight) in counts.into_iter().zip(in_flight) {
            let shard = FleetArgs {
                first,
                count,
                in_flight,
                ..args.clone()
            };
            first += count * args.stride.max(1);
            let mut process = tokio::process::Command::new(&exe)
                .args(shard.to_args())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("cannot start a generator process ({})", exe.display()))?;
            let stdin = process.stdin.take();
            let stdout = process
                .stdout
                .take()
                .context("the generator process has no stdout")?;
            children.push(FleetChild {
                process,
                stdin,
                lines: BufReader::new(stdout).lines(),
            });
        }
        Ok(Fleet { children })
    }

    /// Connects every device (all processes at once) and waits for all of them.
    pub async fn connect(&mut self, timeout: Duration) -> anyhow::Result<ConnectSummary> {
        self.send(Command::Connect).await?;
        let mut summary = ConnectSummary::default();
        for event in self.collect(timeout, "connecting").await? {
            if let ChildEvent::Connected {
                connected,
                failed,
                connect_secs,
                first_error,
            } = event
            {
                summary.connected += connected;
                summary.failed += failed;
                summary.connect_secs = summary.connect_secs.max(connect_secs);
                if summary.first_error.is_none() {
                    summary.first_error = first_error;
                }
            }
        }
        Ok(summary)
    }

    /// Tells every process to start; `t0` is when the timed event began (now, by default).
    pub async fn start(&mut self, t0_unix_micros: Option<u64>) -> anyhow::Result<()> {
        self.send(Command::Start {
            t0_unix_micros: t0_unix_micros.unwrap_or_else(unix_micros_now),
        })
        .await
    }

    /// Waits for every process's measurement and merges them.
    pub async fn measured(&mut self, timeout: Duration) -> anyhow::Result<MeasureSummary> {
        let mut summary = MeasureSummary::default();
        for event in self.collect(timeout, "measuring").await? {
            if let ChildEvent::Measured {
                ops,
                errors,
                secs,
                latency,
            } = event
            {
                summary.ops += ops;
                summary.errors += errors;
                summary.secs = summary.secs.max(secs);
                summary.latency.merge(&Latency::from_pairs(&latency));
            }
        }
        Ok(summary)
    }

    /// Closes every process's stdin (its signal to disconnect and exit) and returns how many
    /// requests the devices answered in all.
    pub async fn finish(mut self) -> anyhow::Result<u64> {
        for child in &mut self.children {
            child.stdin = None;
        }
        let mut answered = 0;
        for child in &mut self.children {
            while let Ok(Ok(Some(line))) =
                tokio::time::timeout(Duration::from_secs(30), child.lines.next_line()).await
            {
                if let Ok(ChildEvent::Finished { answered: a, .. }) = serde_json::from_str(&line) {
                    answered += a;
                }
            }
            let _ = tokio::time::timeout(Duration::from_secs(10), child.process.wait()).await;
        }
        Ok(answered)
    }

    async fn send(&mut self, command: Command) -> anyhow::Result<()> {
        let line = command.to_line();
        for child in &mut self.children {
            let stdin = child
                .stdin
                .as_mut()
                .context("the generator process's stdin is closed")?;
            stdin.write_all(line.as_bytes()).await?;
            stdin.flush().await?;
        }
        Ok(())
    }

    /// The next event of every process, in process order.
    async fn collect(&mut self, timeout: Duration, what: &str) -> anyhow::Result<Vec<ChildEvent>> {
        let reads = self.children.iter_mut().map(|child| async move {
            match tokio::time::timeout(timeout, child.lines.next_line()).await {
                Err(_) => bail!("a generator process did not finish {what} within {timeout:?}"),
                Ok(Err(e)) => Err(anyhow::Error::from(e).context("reading a generator process")),
                Ok(Ok(None)) => bail!("a generator process exited while {what}"),
                Ok(Ok(Some(line))) => serde_json::from_str::<ChildEvent>(&line)
                    .with_context(|| format!("a generator process wrote {line:?}")),
            }
        });
        futures_util::future::join_all(reads)
            .await
            .into_iter()
            .collect()
    }
}
