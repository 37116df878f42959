//! A device SDK for Azure IoT Hub compatible hubs (twinhub and Azure IoT Hub itself): device
//! twins, direct methods and telemetry over MQTT 3.1.1, on TLS (port 8883) or secure WebSockets
//! (port 443), authenticated by symmetric key, SAS token or X.509 certificate.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use twinhub_device::{DeviceClient, DeviceConfig};
//!
//! let config = DeviceConfig::from_connection_string(
//!     "HostName=hub.example;DeviceId=dev1;SharedAccessKey=c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MDA=",
//! )?;
//! let client = DeviceClient::connect(config).await?;
//! let version = client.update_reported(serde_json::json!({"firmware": "1.0"})).await?;
//! let mut methods = client.methods().await?;
//! while let Some(call) = methods.recv().await {
//!     call.respond(200, serde_json::json!({"reportedVersion": version})).await?;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! The connection is supervised: when it drops, the client reconnects with jittered exponential
//! backoff, subscribes again, re-reads the twin and, if desired properties changed meanwhile,
//! delivers them once as a full update. SAS tokens signed from a key are renewed (by reconnecting)
//! at 80% of their lifetime. Every request is bounded by [`DeviceConfig::request_timeout`].

mod client;
mod config;
mod error;
mod transport;
mod wire;

pub use client::{
    ConnectionState, DesiredUpdate, DeviceClient, MethodRequest, MethodRequests, Twin, system_roots,
};
pub use config::{ConfigError, Credential, DeviceConfig, Transport};
pub use error::{ConnectError, RespondError, SubscribeError, TelemetryError, TwinError};
