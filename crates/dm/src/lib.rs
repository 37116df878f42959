//! The device-management patterns of Azure IoT Hub — reboot, factory reset, configuration and
//! firmware update — for devices built on `twinhub-device`, real ones (an agent running shell
//! commands, [`CommandActions`]) and simulated ones ([`VirtualActions`]).
//!
//! [`run`] drives one device until its shutdown future resolves:
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use twinhub_dm::{MemoryState, Options, VirtualActions, VirtualConfig, run};
//! use twinhub_device::DeviceConfig;
//!
//! let config = DeviceConfig::from_connection_string(
//!     "HostName=hub.example;DeviceId=sim-1;SharedAccessKey=c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MDA=",
//! )?;
//! let actions = VirtualActions::new(VirtualConfig::default());
//! let shutdown = async {
//!     let _ = tokio::signal::ctrl_c().await;
//! };
//! run(config, actions, MemoryState::new(), Options::default(), shutdown).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Cost per device
//! One task per device: the runner awaits its connection's events, its shutdown future and at
//! most one firmware job in the same `select!`; no thread, no polling. The HTTPS client used for
//! firmware downloads is built on the first download. Reported patches that would change nothing
//! in the twin are not sent.
//!
//! # Properties
//! * **Reboot** — method `reboot` answers 200 `"Reboot started"` at once, then reports
//!   `iothubDM.reboot {status: "rebooting"}`, persists that a reboot is in progress, closes the
//!   connection and calls [`Actions::reboot`]. When the device is back (the call returned, or the
//!   process started again) it reports `{status: "rebooted", lastReboot}` (or `"failed"` with
//!   `error` when the action failed).
//! * **Factory reset** (our schema, mirroring reboot) — method `factoryReset` answers 200
//!   `"Factory reset started"`, reports `iothubDM.factoryReset {status: "resetting"}`, cancels
//!   any firmware update, calls [`Actions::factory_reset`], then reboots. Back, it replaces the
//!   whole reported document by the defaults (`firmware` with the running version, `iothubDM.
//!   factoryReset {status: "reset", lastFactoryReset}`) and applies the desired configuration
//!   again. A failed reset reports `{status: "failed", error}` and does not reboot.
//! * **Configuration** — each property in [`Options::configuration_properties`] (default
//!   `telemetryConfig`) is handed to [`Actions::apply_configuration`] and reported as
//!   `{status: "Pending", pendingConfig}` then `{status: "Success", appliedConfig}` or
//!   `{status: "Failed", error}` (`pendingConfig` removed). On reconnection, values the twin
//!   already reports applied are re-applied silently.
//! * **Firmware (ADM)** — desired `firmware {fwVersion, fwPackageURI, fwPackageCheckValue,
//!   fwSize?}` → reported `firmware {currentFwVersion, pendingFwVersion, fwUpdateStatus,
//!   fwUpdateSubstatus, lastFwUpdateStartTime, lastFwUpdateEndTime}`. Same version: `current`,
//!   "Firmware already up to date". Busy: substatus "Firmware update already running". Not https:
//!   `error` "Insecure package URI". Otherwise `downloading` (substatus "downloaded 25%", …),
//!   `verifying` (size against `fwSize`, SHA-256 against `fwPackageCheckValue`; a mismatch is an
//!   error and the package is deleted, never applied), `applying` ([`Actions::install_firmware`]),
//!   `rebooting`, and back `current` with the new version. Any failure after the start reports
//!   `error` with the reason, rolls back ([`Actions::rollback_firmware`], when the install was
//!   attempted) and reports `rolledback` "Rolled back to: <old>". A failed target is not retried
//!   on reconnection, only when the back end writes desired `firmware` again.
//! * **Firmware (legacy method)** — method `firmwareUpdate {fwPackageUri, fwVersion?,
//!   fwPackageCheckValue?, fwSize?}` (the last three are our optional additions) answers 200
//!   `"FirmwareUpdate started"` and reports `iothubDM.firmwareUpdate.status` `waiting` →
//!   `downloading` → `downloadComplete` → `applying` → `applyComplete` (or `downloadFailed` /
//!   `applyFailed` with `error {code, message}`), without a reboot. Without `fwVersion` the
//!   installed version is named `sha256-<first 12 hex digits>`.
//!
//! # Downloads
//! HTTPS only, trusting the system roots plus [`twinhub_device::DeviceConfig::ca_pem`]. Requests
//! to the hub's own host carry a device SAS token (`sr=<host>/devices/<id>`, signed with the
//! device key) in `Authorization`; X.509 devices present their certificate instead; other hosts
//! get no credential. The package is written to `<download dir>/<sha256>.bin`; an interrupted
//! download (connection loss, reboot, process restart) continues with `Range: bytes=<n>-`.
//!
//! # Restarts
//! What is in progress is persisted (see [`StateStore`]) before each step that may not return:
//! a reboot or reset in progress is reported finished when the device comes back; a firmware
//! update interrupted while downloading or verifying resumes; one interrupted while applying or
//! rebooting is reported `current` if [`Actions::firmware_version`] says the new version is
//! installed and rolled back otherwise.

mod actions;
mod command_actions;
mod download;
#[cfg(test)]
mod engine_tests;
#[cfg(test)]
mod fake;
mod firmware;
#[cfg(test)]
mod hub_tests;
mod link;
mod runner;
mod schema;
mod sdk;
mod state;
mod virtual_actions;

pub use actions::{ActionError, Actions};
pub use command_actions::{
    CONFIGURATION_DIR, CommandActions, CommandConfig, FIRMWARE_VERSION_FILE,
};
pub use download::{DownloadClientError, DownloadError};
pub use runner::{Options, RunError, run};
pub use schema::{
    DEFAULT_CONFIGURATION_PROPERTY, DM_PROPERTY, FACTORY_RESET_METHOD, FIRMWARE_PROPERTY,
    FIRMWARE_UPDATE_METHOD, FirmwareStatus, FirmwareTarget, LegacyFirmwareStatus, LegacyRequest,
    REBOOT_METHOD, has_https_scheme, is_sha256_hex,
};
pub use state::{FileState, MemoryState, PersistedState, STATE_FILE_NAME, StateError, StateStore};
pub use virtual_actions::{VirtualActions, VirtualConfig};
