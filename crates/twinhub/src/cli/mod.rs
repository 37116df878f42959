//! The back-end commands: `twinhub devices|twin|method|query|configurations|jobs|reboot|
//! factory-reset|rollout|firmware`, talking REST to any Azure IoT Hub compatible hub.

mod configurations;
mod devices;
mod firmware;
mod jobs;
mod methods;
mod options;
mod query;
mod render;
mod twin;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use twinhub_client::ClientError;

pub(crate) use options::{HubOptions, Output};

/// The back-end subcommands, flattened into the binary's top-level commands.
#[derive(Subcommand, Debug)]
pub(crate) enum BackEndCommand {
    /// Device identities: create, list, show, delete, connection-string.
    #[command(alias = "device")]
    Devices(devices::DevicesArgs),
    /// Device twins: show, update tags or desired properties.
    Twin(twin::TwinArgs),
    /// Direct methods: invoke one on a device or module.
    Method(methods::MethodArgs),
    /// Run a query (`SELECT ... FROM devices ...`) and print every row of every page.
    Query(query::QueryArgs),
    /// Automatic device management configurations: create, list, show (with metrics), delete.
    #[command(alias = "configuration")]
    Configurations(configurations::ConfigurationsArgs),
    /// Scheduled jobs: create, show, list, cancel.
    #[command(alias = "job")]
    Jobs(jobs::JobsArgs),
    /// Reboot one device (method `reboot`), or every device a query selects (a job).
    Reboot(methods::DeviceActionArgs),
    /// Factory-reset one device (method `factoryReset`), or every device a query selects (a job).
    FactoryReset(methods::DeviceActionArgs),
    /// Roll out an update to a fleet through an automatic configuration.
    Rollout(firmware::RolloutArgs),
    /// Firmware packages hosted by twinhub: upload, list, delete.
    Firmware(firmware::FirmwareArgs),
}

/// Why a back-end command failed; printed as `error: <message>` with exit status 1.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    /// The hub refused the request, or could not be reached.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The arguments are well-formed but unusable (bad JSON, missing configuration).
    #[error("{0}")]
    Usage(String),
    /// A local file could not be read.
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Writing to stdout failed (e.g. a closed pipe).
    #[error("writing the output: {0}")]
    Output(#[from] std::io::Error),
    /// The operation ran but did not succeed (devices failed, a watch timed out).
    #[error("{0}")]
    Failed(String),
}

/// Runs a back-end command on a small runtime and turns its outcome into the exit status.
pub(crate) fn run(command: BackEndCommand) -> ExitCode {
    crate::run_to_exit(crate::Runtime::CurrentThread, dispatch(command))
}

/// Runs a back-end command on the current runtime (the demo drives the CLI through it).
pub(crate) async fn dispatch(command: BackEndCommand) -> Result<(), CliError> {
    match command {
        BackEndCommand::Devices(args) => devices::run(args).await,
        BackEndCommand::Twin(args) => twin::run(args).await,
        BackEndCommand::Method(args) => methods::run(args).await,
        BackEndCommand::Query(args) => query::run(args).await,
        BackEndCommand::Configurations(args) => configurations::run(args).await,
        BackEndCommand::Jobs(args) => jobs::run(args).await,
        BackEndCommand::Reboot(args) => methods::run_device_action(args, "reboot").await,
        BackEndCommand::FactoryReset(args) => {
            methods::run_device_action(args, "factoryReset").await
        }
        BackEndCommand::Rollout(args) => firmware::run_rollout(args).await,
        BackEndCommand::Firmware(args) => firmware::run(args).await,
    }
}

/// Parses a JSON command-line argument, naming the flag when it is not JSON.
fn parse_json(flag: &str, text: &str) -> Result<serde_json::Value, CliError> {
    serde_json::from_str(text).map_err(|e| CliError::Usage(format!("{flag} is not JSON: {e}")))
}
