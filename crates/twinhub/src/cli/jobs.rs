//! `twinhub jobs create|show|list|cancel`, and following a job to its end.

use std::time::Duration;

use clap::{ArgGroup, Args, Subcommand};
use serde_json::Value;
use twinhub_client::rest::MethodInvocation;
use twinhub_client::{JobAction, JobRequest, ServiceClient};

use super::options::Output;
use super::render::{LiveBlock, Table, key_values, member, print, print_json, progress_bar};
use super::{CliError, HubOptions, parse_json, twin};

/// How often a watched job is polled.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Args, Debug)]
pub(crate) struct JobsArgs {
    #[command(flatten)]
    hub: HubOptions,
    #[command(subcommand)]
    command: JobsCommand,
}

#[derive(Subcommand, Debug)]
enum JobsCommand {
    /// Schedule a twin update (--tags/--desired) or a direct method (--method) over a query.
    #[command(group(ArgGroup::new("action").required(true).multiple(true).args(["tags", "desired", "method"])))]
    Create {
        /// The job id.
        job_id: String,
        /// The devices: a condition such as "tags.site = 'north'", or "*" for all
        #[arg(long, value_name = "COND")]
        query: String,
        /// Tags to merge into each twin, as JSON
        #[arg(long, value_name = "JSON", conflicts_with = "method")]
        tags: Option<String>,
        /// Desired properties to merge into each twin, as JSON
        #[arg(long, value_name = "JSON", conflicts_with = "method")]
        desired: Option<String>,
        /// Update only twins with this etag [default: any]
        #[arg(long, conflicts_with = "method")]
        etag: Option<String>,
        /// The direct method to call on each device
        #[arg(long)]
        method: Option<String>,
        /// The method's payload, as JSON [default: null]
        #[arg(long, value_name = "JSON", requires = "method")]
        payload: Option<String>,
        /// Seconds the hub waits for each device's answer [default: 30]
        #[arg(long, requires = "method")]
        response_timeout: Option<i64>,
        /// When to start (ISO 8601, e.g. 2030-01-01T00:00:00Z) [default: now]
        #[arg(long, value_name = "TIME")]
        start_time: Option<String>,
        /// Stop the job after this many seconds [default: the hub's, 3600]
        #[arg(long, value_name = "SECONDS")]
        max_execution_time: Option<u64>,
        /// Follow the job until it finishes
        #[arg(long)]
        watch: bool,
        /// Stop watching after this many seconds (exit 1)
        #[arg(long, requires = "watch", value_name = "SECONDS")]
        timeout: Option<u64>,
    },
    /// Show a job: status and device statistics.
    Show {
        /// The job id.
        job_id: String,
        /// Follow the job until it finishes
        #[arg(long)]
        watch: bool,
        /// Stop watching after this many seconds (exit 1)
        #[arg(long, requires = "watch", value_name = "SECONDS")]
        timeout: Option<u64>,
    },
    /// List jobs, newest first.
    List {
        /// Only jobs of this type: scheduleUpdateTwin or scheduleDeviceMethod
        #[arg(long = "type", value_name = "TYPE")]
        job_type: Option<String>,
        /// Only jobs in this status: queued, scheduled, running, completed, failed, cancelled
        #[arg(long, value_name = "STATUS")]
        status: Option<String>,
    },
    /// Cancel a job; devices it has not reached are left alone.
    Cancel {
        /// The job id.
        job_id: String,
    },
}

pub(crate) async fn run(args: JobsArgs) -> Result<(), CliError> {
    let client = args.hub.connect()?;
    let output = args.hub.output;
    match args.command {
        JobsCommand::Create {
            job_id,
            query,
            tags,
            desired,
            etag,
            method,
            payload,
            response_timeout,
            start_time,
            max_execution_time,
            watch: follow,
            timeout,
        } => {
            let action = match method {
                Some(method_name) => JobAction::DeviceMethod(MethodInvocation {
                    method_name,
                    payload: payload
                        .as_deref()
                        .map(|p| parse_json("--payload", p))
                        .transpose()?
                        .unwrap_or(Value::Null),
                    response_timeout_in_seconds: response_timeout,
                    connect_timeout_in_seconds: None,
                }),
                None => JobAction::UpdateTwin {
                    patch: twin::twin_patch(tags.as_deref(), desired.as_deref())?,
                    etag,
                },
            };
            let job = JobRequest {
                job_id,
                query_condition: query,
                action,
                start_time,
                max_execution_time_in_seconds: max_execution_time,
            };
            let created = client.create_job(&job).await?;
            if follow {
                watch(
                    &client,
                    &job.job_id,
                    output,
                    timeout.map(Duration::from_secs),
                )
                .await
            } else {
                show(&created, output)
            }
        }
        JobsCommand::Show {
            job_id,
            watch: follow,
            timeout,
        } => {
            if follow {
                watch(&client, &job_id, output, timeout.map(Duration::from_secs)).await
            } else {
                show(&client.get_job(&job_id).await?, output)
            }
        }
        JobsCommand::List { job_type, status } => {
            let jobs = client
                .list_jobs(job_type.as_deref(), status.as_deref())
                .await?;
            if output == Output::Json {
                return print_json(&jobs);
            }
            let mut table = Table::new(&[
                "job id",
                "type",
                "status",
                "devices",
                "succeeded",
                "failed",
                "created",
            ]);
            for job in &jobs {
                let statistics = job.get("deviceJobStatistics").unwrap_or(&Value::Null);
                table.row(vec![
                    member(job, "jobId"),
                    member(job, "type"),
                    member(job, "status"),
                    member(statistics, "deviceCount"),
                    member(statistics, "succeededCount"),
                    member(statistics, "failedCount"),
                    member(job, "createdTime"),
                ]);
            }
            print(&table.render())
        }
        JobsCommand::Cancel { job_id } => show(&client.cancel_job(&job_id).await?, output),
    }
}

/// A job record as key/value lines, or the hub's JSON.
pub(super) fn show(job: &Value, output: Output) -> Result<(), CliError> {
    if output == Output::Json {
        return print_json(job);
    }
    let statistics = job.get("deviceJobStatistics").unwrap_or(&Value::Null);
    print(&key_values(&[
        ("job id", member(job, "jobId")),
        ("type", member(job, "type")),
        ("status", member(job, "status")),
        ("query", member(job, "queryCondition")),
        ("created", member(job, "createdTime")),
        ("start", member(job, "startTime")),
        ("end", member(job, "endTime")),
        ("failure", member(job, "failureReason")),
        ("devices", member(statistics, "deviceCount")),
        ("succeeded", member(statistics, "succeededCount")),
        ("failed", member(statistics, "failedCount")),
        ("running", member(statistics, "runningCount")),
        ("pending", member(statistics, "pendingCount")),
    ]))
}

/// Polls a job every second, drawing its progress, until it completes, fails or is cancelled.
/// Fails (exit 1) if the job did not complete, if any device failed, or on `timeout`.
pub(super) async fn watch(
    client: &ServiceClient,
    job_id: &str,
    output: Output,
    timeout: Option<Duration>,
) -> Result<(), CliError> {
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let mut block = LiveBlock::new();
    loop {
        let job = client.get_job(job_id).await?;
        let progress = JobProgress::of(&job);
        if output == Output::Table {
            block.draw(progress.lines(job_id))?;
        }
        if progress.finished() {
            if output == Output::Json {
                print_json(&job)?;
            }
            return progress.outcome(job_id, &job);
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            return Err(CliError::Failed(format!(
                "timed out watching job {job_id}: {} of {} devices done",
                progress.succeeded + progress.failed,
                progress.devices
            )));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// What a job record says about its progress.
#[derive(Debug, PartialEq, Eq)]
struct JobProgress {
    status: String,
    devices: u64,
    succeeded: u64,
    failed: u64,
}

impl JobProgress {
    fn of(job: &Value) -> JobProgress {
        let statistics = job.get("deviceJobStatistics").unwrap_or(&Value::Null);
        let count = |key: &str| statistics.get(key).and_then(Value::as_u64).unwrap_or(0);
        JobProgress {
            status: job
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            devices: count("deviceCount"),
            succeeded: count("succeededCount"),
            failed: count("failedCount"),
        }
    }

    fn finished(&self) -> bool {
        matches!(self.status.as_str(), "completed" | "failed" | "cancelled")
    }

    fn lines(&self, job_id: &str) -> Vec<String> {
        vec![
            format!("job {job_id}: {}", self.status),
            progress_bar("succeeded", 9, self.succeeded, self.devices),
            progress_bar("failed", 9, self.failed, self.devices),
        ]
    }

    fn outcome(&self, job_id: &str, job: &Value) -> Result<(), CliError> {
        if self.status != "completed" {
            let reason = member(job, "failureReason");
            let reason = if reason.is_empty() {
                String::new()
            } else {
                format!(": {reason}")
            };
            return Err(CliError::Failed(format!(
                "job {job_id} {}{reason}",
                self.status
            )));
        }
        if self.failed > 0 {
            return Err(CliError::Failed(format!(
                "job {job_id}: {} of {} devices failed",
                self.failed, self.devices
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn progress_from_a_job_record() {
        let job = json!({"jobId": "j", "status": "completed", "deviceJobStatistics":
            {"deviceCount": 4, "succeededCount": 3, "failedCount": 1}});
        let progress = JobProgress::of(&job);
        assert!(progress.finished());
        assert_eq!(
            (progress.devices, progress.succeeded, progress.failed),
            (4, 3, 1)
        );
        let error = progress.outcome("j", &job).expect_err("a device failed");
        assert_eq!(error.to_string(), "job j: 1 of 4 devices failed");
    }

    #[test]
    fn unfinished_and_failed_jobs() {
        assert!(!JobProgress::of(&json!({"status": "running"})).finished());
        let failed = json!({"status": "failed", "failureReason": "timed out"});
        let error = JobProgress::of(&failed)
            .outcome("j", &failed)
            .expect_err("failed");
        assert_eq!(error.to_string(), "job j failed: timed out");
        let ok = json!({"status": "completed", "deviceJobStatistics": {"deviceCount": 0}});
        assert!(JobProgress::of(&ok).outcome("j", &ok).is_ok());
    }
}
