//! How a device connects: identity, credential, transport and timing.

use std::fmt;
use std::time::Duration;

use twinhub_protocol::{ConnectionString, ConnectionStringError};

/// How the device proves its identity.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// The device's (or module's) base64 symmetric key; the SDK signs SAS tokens and renews them.
    SymmetricKey(String),
    /// A ready-made SAS token; it cannot be renewed, so the connection ends when it expires.
    SasToken(String),
    /// A client certificate presented in TLS (PEM certificate chain and PEM private key).
    X509 {
        /// PEM certificate chain, leaf first.
        cert_pem: String,
        /// PEM private key (PKCS#8, PKCS#1 or SEC1).
        key_pem: String,
    },
}

impl fmt::Debug for Credential {
    /// Keys and tokens are secrets and never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::SymmetricKey(_) => f.write_str("SymmetricKey(<redacted>)"),
            Credential::SasToken(_) => f.write_str("SasToken(<redacted>)"),
            Credential::X509 { .. } => f.write_str("X509 { <redacted> }"),
        }
    }
}

/// How MQTT reaches the hub.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Transport {
    /// MQTT 3.1.1 over TLS (port 8883).
    #[default]
    Mqtt,
    /// MQTT over secure WebSockets, `wss://host:443/$iothub/websocket`.
    WebSockets,
}

/// Everything [`crate::DeviceClient::connect`] needs.
#[derive(Clone, Debug)]
pub struct DeviceConfig {
    /// The hub's host name; usernames and SAS scopes name it.
    pub host_name: String,
    /// The device id.
    pub device_id: String,
    /// The module id, for module identities.
    pub module_id: Option<String>,
    /// How the device authenticates.
    pub credential: Credential,
    /// An extra trust root (PEM) added to the system's roots.
    pub ca_pem: Option<String>,
    /// MQTT over TLS or over WebSockets.
    pub transport: Transport,
    /// Where to open the TCP/TLS connection if not `host_name` (Azure's `GatewayHostName`); TLS
    /// verifies the certificate against this name.
    pub gateway_host: Option<String>,
    /// The port; default 8883, or 443 for WebSockets.
    pub port: Option<u16>,
    /// Lifetime of the SAS tokens signed with a symmetric key; the connection is renewed with a
    /// fresh token at 80% of it.
    pub sas_ttl: Duration,
    /// MQTT keep-alive (whole seconds, clamped to 1 s ..= 1177 s, IoT Hub's maximum).
    pub keep_alive: Duration,
    /// IoT Plug and Play model id announced at connect.
    pub model_id: Option<String>,
    /// Reconnection delay bounds (min, max): exponential between them, with jitter.
    pub reconnect_backoff: (Duration, Duration),
    /// Upper bound on every request (connect, twin, telemetry, subscribe).
    pub request_timeout: Duration,
}

/// Why a connection string could not become a [`DeviceConfig`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The string is not a valid connection string.
    #[error(transparent)]
    Parse(#[from] ConnectionStringError),
    /// It names no `DeviceId`.
    #[error("the connection string has no DeviceId")]
    MissingDeviceId,
    /// It holds no `SharedAccessKey`, `SharedAccessSignature` or `x509=true`.
    #[error("the connection string has no SharedAccessKey, SharedAccessSignature or x509=true")]
    MissingCredential,
}

impl DeviceConfig {
    /// A configuration with the defaults: MQTT over TLS on 8883, SAS tokens of one hour,
    /// keep-alive 60 s, reconnect backoff 1 s to 60 s, request timeout 30 s.
    pub fn new(
        host_name: impl Into<String>,
        device_id: impl Into<String>,
        credential: Credential,
    ) -> DeviceConfig {
        DeviceConfig {
            host_name: host_name.into(),
            device_id: device_id.into(),
            module_id: None,
            credential,
            ca_pem: None,
            transport: Transport::Mqtt,
            gateway_host: None,
            port: None,
            sas_ttl: Duration::from_secs(3600),
            keep_alive: Duration::from_secs(60),
            model_id: None,
            reconnect_backoff: (Duration::from_secs(1), Duration::from_secs(60)),
            request_timeout: Duration::from_secs(30),
        }
    }

    /// Reads a device or module connection string (`HostName`, `DeviceId`, `ModuleId`,
    /// `SharedAccessKey`, `SharedAccessSignature`, `GatewayHostName`, `x509=true`). With
    /// `x509=true` the credential is an empty [`Credential::X509`] the caller must fill in.
    pub fn from_connection_string(cs: &str) -> Result<DeviceConfig, ConfigError> {
        let parsed: ConnectionString = cs.parse()?;
        let device_id = parsed
            .device_id
            .filter(|id| !id.is_empty())
            .ok_or(ConfigError::MissingDeviceId)?;
        let credential = match (
            parsed.shared_access_key,
            parsed.shared_access_signature,
            parsed.x509,
        ) {
            (Some(key), _, _) => Credential::SymmetricKey(key),
            (None, Some(token), _) => Credential::SasToken(token),
            (None, None, true) => Credential::X509 {
                cert_pem: String::new(),
                key_pem: String::new(),
            },
            (None, None, false) => return Err(ConfigError::MissingCredential),
        };
        let mut config = DeviceConfig::new(parsed.host_name, device_id, credential);
        config.module_id = parsed.module_id;
        config.gateway_host = parsed.gateway_host_name;
        Ok(config)
    }

    /// The port to connect to: the configured one, or the transport's standard port.
    pub fn effective_port(&self) -> u16 {
        self.port.unwrap_or(match self.transport {
            Transport::Mqtt => 8883,
            Transport::WebSockets => 443,
        })
    }

    /// The host the TCP/TLS connection goes to.
    pub fn effective_host(&self) -> &str {
        self.gateway_host.as_deref().unwrap_or(&self.host_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MDA=";

    #[test]
    fn device_connection_string() {
        let config = DeviceConfig::from_connection_string(&format!(
            "HostName=h.azure-devices.net;DeviceId=d1;SharedAccessKey={KEY}"
        ))
        .expect("valid");
        assert_eq!(config.host_name, "h.azure-devices.net");
        assert_eq!(config.device_id, "d1");
        assert_eq!(config.module_id, None);
        assert_eq!(config.credential, Credential::SymmetricKey(KEY.to_owned()));
        assert_eq!(config.effective_port(), 8883);
        assert_eq!(config.effective_host(), "h.azure-devices.net");
        assert_eq!(config.sas_ttl, Duration::from_secs(3600));
    }

    #[test]
    fn module_gateway_and_token_connection_string() {
        let config = DeviceConfig::from_connection_string(
            "HostName=h;DeviceId=d1;ModuleId=m1;SharedAccessSignature=SharedAccessSignature sr=x&sig=y&se=1;GatewayHostName=edge",
        )
        .expect("valid");
        assert_eq!(config.module_id.as_deref(), Some("m1"));
        assert_eq!(config.effective_host(), "edge");
        assert!(matches!(config.credential, Credential::SasToken(_)));
    }

    #[test]
    fn x509_connection_string_leaves_the_certificate_to_the_caller() {
        let mut config =
            DeviceConfig::from_connection_string("HostName=h;DeviceId=d1;x509=true").expect("ok");
        assert!(
            matches!(&config.credential, Credential::X509 { cert_pem, .. } if cert_pem.is_empty())
        );
        config.transport = Transport::WebSockets;
        assert_eq!(config.effective_port(), 443);
    }

    #[test]
    fn rejections() {
        assert_eq!(
            DeviceConfig::from_connection_string(&format!("HostName=h;SharedAccessKey={KEY}"))
                .err(),
            Some(ConfigError::MissingDeviceId)
        );
        assert_eq!(
            DeviceConfig::from_connection_string("HostName=h;DeviceId=d").err(),
            Some(ConfigError::MissingCredential)
        );
        assert!(matches!(
            DeviceConfig::from_connection_string("DeviceId=d"),
            Err(ConfigError::Parse(_))
        ));
    }

    #[test]
    fn debug_hides_secrets() {
        let config = DeviceConfig::new("h", "d", Credential::SymmetricKey(KEY.to_owned()));
        let printed = format!("{config:?}");
        assert!(!printed.contains(KEY));
        assert!(printed.contains("<redacted>"));
    }
}
