//! twinhub's hub: the identity registry, device twins and direct methods, served to devices over
//! MQTT (TLS and WebSockets) and to back ends over HTTPS REST, in Azure IoT Hub's wire protocol.
//! See ARCHITECTURE.md for the map.

pub mod auth;
pub mod hub;
pub mod metrics;
mod mqtt;
pub mod rest;
mod server;
pub(crate) mod shape;
pub mod tls;

pub use server::{HubConfig, RunningHub, StartError, start};

use hub::HubError;
use twinhub_protocol::error::ErrorCode;

/// The IoT Hub error code a hub error is reported as, on every protocol.
pub(crate) fn error_code(error: &HubError) -> ErrorCode {
    match error {
        HubError::DeviceNotFound(_) => ErrorCode::DeviceNotFound,
        HubError::ModuleNotFound(_) => ErrorCode::ModuleNotFound,
        HubError::DeviceAlreadyExists(_) => ErrorCode::DeviceAlreadyExists,
        HubError::ModuleAlreadyExists(_) => ErrorCode::ModuleAlreadyExistsOnDevice,
        HubError::TooManyModules(_) => ErrorCode::TooManyModulesOnDevice,
        HubError::PreconditionFailed => ErrorCode::PreconditionFailed,
        HubError::InvalidArgument(_) | HubError::Twin(_) => ErrorCode::ArgumentInvalid,
        HubError::DeviceNotOnline | HubError::DeviceDisconnected => ErrorCode::DeviceNotOnline,
        HubError::MethodTimeout(_) => ErrorCode::GatewayTimeout,
        HubError::ShuttingDown => ErrorCode::ServiceUnavailable,
        HubError::Storage(_) | HubError::Rendering(_) => ErrorCode::ServerError,
        HubError::FirmwareNotFound(_) => ErrorCode::FirmwarePackageNotFound,
        HubError::FirmwareAlreadyExists(_) => ErrorCode::FirmwarePackageAlreadyExists,
        HubError::FirmwareTooLarge(_) => ErrorCode::MessageTooLarge,
        HubError::FirmwareNotHosted => ErrorCode::ServiceUnavailable,
        HubError::JobNotFound(_) => ErrorCode::JobNotFound,
        HubError::JobAlreadyExists(_) => ErrorCode::JobAlreadyExists,
        HubError::TooManyActiveJobs(_) => ErrorCode::ThrottlingMaxActiveJobCountExceeded,
        HubError::ConfigurationNotFound(_) => ErrorCode::ConfigurationNotFound,
        HubError::ConfigurationAlreadyExists(_) => ErrorCode::ConfigurationAlreadyExists,
        HubError::ImmutableConfigurationContent => {
            ErrorCode::CannotModifyImmutableConfigurationContent
        }
        HubError::TooManyConfigurations(_) => ErrorCode::ConfigurationCountLimitExceeded,
        HubError::Configuration(hub::ConfigurationError::TargetCondition(_)) => {
            ErrorCode::InvalidConfigurationTargetCondition
        }
        HubError::Configuration(hub::ConfigurationError::Content(_)) => {
            ErrorCode::InvalidConfigurationContent
        }
        HubError::Configuration(hub::ConfigurationError::MetricQuery { .. }) => {
            ErrorCode::InvalidConfigurationCustomMetricsQuery
        }
    }
}

/// A fresh tracking id (32 hex digits), quoted in error answers and logged beside the error.
pub(crate) fn tracking_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // Tracking ids only correlate logs; the clock is unique enough when randomness fails.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        bytes = nanos.to_be_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
