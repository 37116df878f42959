//! What a device does when the patterns ask it to act: the seam between the runner, which speaks
//! IoT Hub, and the device, real or simulated.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

/// Why a device action failed. The message ends up in reported properties.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// The action failed for a reason the device explains.
    #[error("{0}")]
    Failed(String),
    /// A command could not be started.
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The underlying failure.
        source: std::io::Error,
    },
    /// A command exited unsuccessfully.
    #[error("`{command}` failed ({status}): {stderr}")]
    CommandFailed {
        /// The command line.
        command: String,
        /// How it exited.
        status: String,
        /// What it wrote to standard error (trimmed, truncated).
        stderr: String,
    },
    /// A command ran longer than allowed and was killed.
    #[error("`{command}` did not finish within {timeout:?}")]
    Timeout {
        /// The command line.
        command: String,
        /// The limit.
        timeout: Duration,
    },
    /// A file the action needs could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying failure.
        source: std::io::Error,
    },
}

/// The device-specific side of the patterns. Every method may be called from any task; the
/// runner never calls two of them at once for one device.
pub trait Actions: Send + Sync + 'static {
    /// Restarts the device. A real device's process is expected to die during this call; the
    /// runner persisted "rebooting" before calling it. Returning `Ok` means the device is back
    /// (a simulated reboot), after which the runner reconnects.
    fn reboot(&self) -> impl Future<Output = Result<(), ActionError>> + Send;

    /// Wipes local state, so that the device comes back with default settings. The runner
    /// reboots afterwards.
    fn factory_reset(&self) -> impl Future<Output = Result<(), ActionError>> + Send;

    /// Installs the verified package at `package`, which installs firmware `version`.
    fn install_firmware(
        &self,
        package: &Path,
        version: &str,
    ) -> impl Future<Output = Result<(), ActionError>> + Send;

    /// The firmware version installed now.
    fn firmware_version(&self) -> impl Future<Output = Result<String, ActionError>> + Send;

    /// Goes back to firmware `previous` after a failed update.
    fn rollback_firmware(
        &self,
        previous: &str,
    ) -> impl Future<Output = Result<(), ActionError>> + Send;

    /// Applies desired configuration property `name` with `value`.
    fn apply_configuration(
        &self,
        name: &str,
        value: &Value,
    ) -> impl Future<Output = Result<(), ActionError>> + Send;

    /// The most bytes per second firmware downloads may use; `None` for no limit.
    fn download_rate_limit(&self) -> Option<u64> {
        None
    }
}
