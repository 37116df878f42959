//! `twinhub method invoke`, `twinhub reboot` and `twinhub factory-reset`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{ArgGroup, Args, Subcommand};
use serde_json::Value;
use twinhub_client::rest::{MethodInvocation, MethodResult};
use twinhub_client::{JobRequest, ServiceClient};

use super::options::Output;
use super::render::{print, print_json};
use super::{CliError, HubOptions, jobs, parse_json};

/// Azure's default and bounds for how long the hub waits for a device's answer.
const DEFAULT_RESPONSE_TIMEOUT: i64 = 30;
const RESPONSE_TIMEOUT_RANGE: std::ops::RangeInclusive<i64> = 5..=300;

#[derive(Args, Debug)]
pub(crate) struct MethodArgs {
    #[command(flatten)]
    hub: HubOptions,
    #[command(subcommand)]
    command: MethodCommand,
}

#[derive(Subcommand, Debug)]
enum MethodCommand {
    /// Call a direct method on a device (or module) and print its status and payload.
    Invoke {
        /// The device id.
        device_id: String,
        /// The method name.
        method: String,
        /// Call the method on this module of the device
        #[arg(long)]
        module: Option<String>,
        /// The payload, as JSON [default: null]
        #[arg(long, value_name = "JSON")]
        payload: Option<String>,
        /// Seconds the hub waits for the device's answer (5-300)
        #[arg(long, default_value_t = DEFAULT_RESPONSE_TIMEOUT, value_parser = response_timeout)]
        response_timeout: i64,
        /// Seconds the hub waits for the device to connect (0-300) [default: 0]
        #[arg(long)]
        connect_timeout: Option<i64>,
    },
}

/// `reboot` / `factory-reset`: one device, or a job over a query.
#[derive(Args, Debug)]
#[command(group(ArgGroup::new("target").required(true).args(["device_id", "query"])))]
pub(crate) struct DeviceActionArgs {
    #[command(flatten)]
    hub: HubOptions,
    /// The device to act on at once.
    device_id: Option<String>,
    /// Act on every device this condition selects, through a scheduled job (e.g. "tags.site = 'north'", or "*")
    #[arg(long, value_name = "COND")]
    query: Option<String>,
    /// Id of the scheduled job [default: <method>-<unix milliseconds>]
    #[arg(long, requires = "query")]
    job_id: Option<String>,
    /// Follow the job until it finishes, with a progress bar
    #[arg(long, requires = "query")]
    watch: bool,
    /// Stop watching after this many seconds (exit 1)
    #[arg(long, requires = "watch", value_name = "SECONDS")]
    timeout: Option<u64>,
    /// Seconds the hub waits for each device's answer (5-300)
    #[arg(long, default_value_t = DEFAULT_RESPONSE_TIMEOUT, value_parser = response_timeout)]
    response_timeout: i64,
}

fn response_timeout(text: &str) -> Result<i64, String> {
    let seconds: i64 = text.parse().map_err(|e| format!("{e}"))?;
    if RESPONSE_TIMEOUT_RANGE.contains(&seconds) {
        Ok(seconds)
    } else {
        Err(format!(
            "must be between {} and {} seconds",
            RESPONSE_TIMEOUT_RANGE.start(),
            RESPONSE_TIMEOUT_RANGE.end()
        ))
    }
}

pub(crate) async fn run(args: MethodArgs) -> Result<(), CliError> {
    let client = args.hub.connect()?;
    let MethodCommand::Invoke {
        device_id,
        method,
        module,
        payload,
        response_timeout,
        connect_timeout,
    } = args.command;
    let invocation = MethodInvocation {
        method_name: method,
        payload: payload
            .as_deref()
            .map(|p| parse_json("--payload", p))
            .transpose()?
            .unwrap_or(Value::Null),
        response_timeout_in_seconds: Some(response_timeout),
        connect_timeout_in_seconds: connect_timeout,
    };
    let result = match module {
        Some(module) => {
            client
                .invoke_module_method(&device_id, &module, &invocation)
                .await?
        }
        None => client.invoke_method(&device_id, &invocation).await?,
    };
    show_result(&result, args.hub.output)
}

/// Calls `method` on one device, or schedules it as a job over `--query` (and follows it).
pub(crate) async fn run_device_action(
    args: DeviceActionArgs,
    method: &str,
) -> Result<(), CliError> {
    let client = args.hub.connect()?;
    let invocation = MethodInvocation {
        method_name: method.to_owned(),
        payload: Value::Null,
        response_timeout_in_seconds: Some(args.response_timeout),
        connect_timeout_in_seconds: None,
    };
    match (args.device_id, args.query) {
        (Some(device_id), _) => {
            let result = client.invoke_method(&device_id, &invocation).await?;
            show_result(&result, args.hub.output)
        }
        (None, Some(query)) => {
            let job_id = args.job_id.unwrap_or_else(|| default_job_id(method));
            let job = JobRequest::device_method(&job_id, &query, invocation);
            schedule(&client, &job, args.hub.output, args.watch, args.timeout).await
        }
        // clap's group makes one of the two required.
        (None, None) => Err(CliError::Usage("give a device id or --query".to_owned())),
    }
}

/// Creates `job`, prints it, and with `watch` follows it to the end.
async fn schedule(
    client: &ServiceClient,
    job: &JobRequest,
    output: Output,
    watch: bool,
    timeout: Option<u64>,
) -> Result<(), CliError> {
    let created = client.create_job(job).await?;
    if watch {
        jobs::watch(
            client,
            &job.job_id,
            output,
            timeout.map(Duration::from_secs),
        )
        .await
    } else {
        jobs::show(&created, output)
    }
}

/// `<method>-<unix milliseconds>`: unique enough for jobs started by hand.
fn default_job_id(method: &str) -> String {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("{}-{millis}", method.to_lowercase())
}

fn show_result(result: &MethodResult, output: Output) -> Result<(), CliError> {
    match output {
        Output::Json => print_json(result),
        Output::Table => {
            let payload = serde_json::to_string_pretty(&result.payload).unwrap_or_default();
            print(&format!("status:  {}\npayload: {payload}\n", result.status))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_timeouts_are_bounded() {
        assert_eq!(response_timeout("30"), Ok(30));
        assert!(response_timeout("4").is_err());
        assert!(response_timeout("301").is_err());
        assert!(response_timeout("soon").is_err());
    }

    #[test]
    fn default_job_ids_name_the_method() {
        assert!(default_job_id("factoryReset").starts_with("factoryreset-"));
    }
}
