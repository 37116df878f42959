use twinhub_core::twin::TwinError;

use super::{ConfigurationError, IdentityKey};

/// Why a hub operation failed. The protocol edges map each variant to an IoT Hub error code.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("device {0} is not registered")]
    DeviceNotFound(String),
    #[error("module {0} is not registered")]
    ModuleNotFound(IdentityKey),
    #[error("device {0} already exists")]
    DeviceAlreadyExists(String),
    #[error("module {0} already exists on its device")]
    ModuleAlreadyExists(IdentityKey),
    #[error("the device already has the maximum of {0} modules")]
    TooManyModules(usize),
    #[error("the etag in If-Match does not match the current one")]
    PreconditionFailed,
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    Twin(#[from] TwinError),
    #[error("the device is not online, or has not subscribed to direct methods")]
    DeviceNotOnline,
    #[error("the device did not answer the method within {0} seconds")]
    MethodTimeout(u64),
    #[error("the device disconnected before answering the method")]
    DeviceDisconnected,
    #[error("the hub is shutting down")]
    ShuttingDown,
    #[error("configuration {0} does not exist")]
    ConfigurationNotFound(String),
    #[error("configuration {0} already exists")]
    ConfigurationAlreadyExists(String),
    #[error("the content of a configuration cannot be changed; create a new configuration instead")]
    ImmutableConfigurationContent,
    #[error("the hub already has the maximum of {0} configurations")]
    TooManyConfigurations(usize),
    #[error("{0}")]
    Configuration(#[from] ConfigurationError),
    #[error("job {0} does not exist")]
    JobNotFound(String),
    #[error("job {0} already exists")]
    JobAlreadyExists(String),
    #[error("the hub already has the maximum of {0} active jobs")]
    TooManyActiveJobs(usize),
    #[error("firmware package {0} does not exist")]
    FirmwareNotFound(String),
    #[error("firmware package {0} already exists; packages cannot be replaced, upload a new id")]
    FirmwareAlreadyExists(String),
    #[error("the firmware package exceeds the limit of {0} bytes")]
    FirmwareTooLarge(u64),
    #[error("this hub does not host firmware packages")]
    FirmwareNotHosted,
    #[error("storage failure: {0}")]
    Storage(String),
    #[error("a result could not be rendered: {0}")]
    Rendering(String),
}

impl HubError {
    pub(crate) fn storage(e: impl std::fmt::Display) -> Self {
        HubError::Storage(e.to_string())
    }
}
