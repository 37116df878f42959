//! Azure IoT connection strings: `HostName=...;DeviceId=...;SharedAccessKey=...`.

use std::fmt;
use std::str::FromStr;

/// A parsed connection string (device, module or service).
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectionString {
    /// `HostName`
    pub host_name: String,
    /// `SharedAccessKeyName` (service policies)
    pub shared_access_key_name: Option<String>,
    /// `SharedAccessKey` (base64)
    pub shared_access_key: Option<String>,
    /// `DeviceId`
    pub device_id: Option<String>,
    /// `ModuleId`
    pub module_id: Option<String>,
    /// `GatewayHostName` (IoT Edge parent)
    pub gateway_host_name: Option<String>,
    /// `x509=true`: the identity authenticates with a client certificate.
    pub x509: bool,
    /// `SharedAccessSignature` (a ready-made token instead of a key)
    pub shared_access_signature: Option<String>,
}

/// Why a connection string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionStringError {
    /// A `;`-separated part has no `=`.
    #[error("connection string part {0:?} is not Key=Value")]
    MalformedPart(String),
    /// A key Azure does not define (keys are case-sensitive).
    #[error("unknown connection string key {0:?}")]
    UnknownKey(String),
    /// A key appears twice.
    #[error("connection string key {0:?} appears more than once")]
    DuplicateKey(String),
    /// `HostName` is absent or empty.
    #[error("connection string has no HostName")]
    MissingHostName,
    /// `x509` is neither `true` nor `false`.
    #[error("connection string x509 value must be true or false")]
    InvalidX509,
}

impl FromStr for ConnectionString {
    type Err = ConnectionStringError;

    /// Splits on `;`, then each part at its first `=` (base64 keys end in `=`). Empty parts, such as
    /// after a trailing `;`, are skipped.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut host_name = None;
        let mut parsed = ConnectionString {
            host_name: String::new(),
            shared_access_key_name: None,
            shared_access_key: None,
            device_id: None,
            module_id: None,
            gateway_host_name: None,
            x509: false,
            shared_access_signature: None,
        };
        let mut x509 = None;
        for part in s.split(';').filter(|part| !part.trim().is_empty()) {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| ConnectionStringError::MalformedPart(part.to_owned()))?;
            let slot = match key {
                "HostName" => &mut host_name,
                "SharedAccessKeyName" => &mut parsed.shared_access_key_name,
                "SharedAccessKey" => &mut parsed.shared_access_key,
                "DeviceId" => &mut parsed.device_id,
                "ModuleId" => &mut parsed.module_id,
                "GatewayHostName" => &mut parsed.gateway_host_name,
                "SharedAccessSignature" => &mut parsed.shared_access_signature,
                "x509" => &mut x509,
                _ => return Err(ConnectionStringError::UnknownKey(key.to_owned())),
            };
            if slot.replace(value.to_owned()).is_some() {
                return Err(ConnectionStringError::DuplicateKey(key.to_owned()));
            }
        }
        parsed.host_name = host_name
            .filter(|h| !h.is_empty())
            .ok_or(ConnectionStringError::MissingHostName)?;
        parsed.x509 = match x509.as_deref() {
            None => false,
            Some(v) if v.eq_ignore_ascii_case("true") => true,
            Some(v) if v.eq_ignore_ascii_case("false") => false,
            Some(_) => return Err(ConnectionStringError::InvalidX509),
        };
        Ok(parsed)
    }
}

impl fmt::Display for ConnectionString {
    /// Canonical order: HostName;DeviceId;ModuleId;SharedAccessKeyName;SharedAccessKey;
    /// SharedAccessSignature;GatewayHostName;x509=true.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HostName={}", self.host_name)?;
        let parts = [
            ("DeviceId", &self.device_id),
            ("ModuleId", &self.module_id),
            ("SharedAccessKeyName", &self.shared_access_key_name),
            ("SharedAccessKey", &self.shared_access_key),
            ("SharedAccessSignature", &self.shared_access_signature),
            ("GatewayHostName", &self.gateway_host_name),
        ];
        for (key, value) in parts {
            if let Some(value) = value {
                write!(f, ";{key}={value}")?;
            }
        }
        if self.x509 {
            f.write_str(";x509=true")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ConnectionString {
    /// Keys and signatures are secrets and never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |secret: &Option<String>| secret.as_ref().map(|_| "<redacted>");
        f.debug_struct("ConnectionString")
            .field("host_name", &self.host_name)
            .field("shared_access_key_name", &self.shared_access_key_name)
            .field("shared_access_key", &redacted(&self.shared_access_key))
            .field("device_id", &self.device_id)
            .field("module_id", &self.module_id)
            .field("gateway_host_name", &self.gateway_host_name)
            .field("x509", &self.x509)
            .field(
                "shared_access_signature",
                &redacted(&self.shared_access_signature),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MDA=";

    fn parse(s: &str) -> ConnectionString {
        match s.parse() {
            Ok(cs) => cs,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    #[test]
    fn device_round_trip() {
        let s = format!("HostName=h.azure-devices.net;DeviceId=dev1;SharedAccessKey={KEY}");
        let cs = parse(&s);
        assert_eq!(cs.host_name, "h.azure-devices.net");
        assert_eq!(cs.device_id.as_deref(), Some("dev1"));
        assert_eq!(cs.shared_access_key.as_deref(), Some(KEY));
        assert!(!cs.x509);
        assert_eq!(cs.to_string(), s);
    }

    #[test]
    fn service_round_trip() {
        let s = format!("HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey={KEY}");
        assert_eq!(parse(&s).to_string(), s);
    }

    #[test]
    fn module_edge_and_x509_round_trip() {
        for s in [
            format!("HostName=h;DeviceId=d1;ModuleId=m1;SharedAccessKey={KEY};GatewayHostName=edge.local"),
            "HostName=h;DeviceId=d1;x509=true".to_owned(),
            "HostName=h;DeviceId=d1;SharedAccessSignature=SharedAccessSignature sr=h%2Fdevices%2Fd1&sig=a%3D&se=1".to_owned(),
        ] {
            assert_eq!(parse(&s).to_string(), s);
        }
    }

    #[test]
    fn any_order_trailing_semicolon_canonical_output() {
        let cs = parse(&format!("SharedAccessKey={KEY};DeviceId=d1;HostName=h;"));
        assert_eq!(
            cs.to_string(),
            format!("HostName=h;DeviceId=d1;SharedAccessKey={KEY}")
        );
        assert!(parse("HostName=h;x509=TRUE").x509);
        assert!(!parse("HostName=h;x509=false").x509);
    }

    #[test]
    fn rejections() {
        let err = |s: &str| s.parse::<ConnectionString>().err();
        assert_eq!(
            err("DeviceId=d1"),
            Some(ConnectionStringError::MissingHostName)
        );
        assert_eq!(
            err("HostName=;DeviceId=d1"),
            Some(ConnectionStringError::MissingHostName)
        );
        assert_eq!(
            err("hostname=h"),
            Some(ConnectionStringError::UnknownKey("hostname".to_owned()))
        );
        assert_eq!(
            err("HostName=h;DeviceId"),
            Some(ConnectionStringError::MalformedPart("DeviceId".to_owned()))
        );
        assert_eq!(
            err("HostName=h;HostName=g"),
            Some(ConnectionStringError::DuplicateKey("HostName".to_owned()))
        );
        assert_eq!(
            err("HostName=h;x509=yes"),
            Some(ConnectionStringError::InvalidX509)
        );
    }

    #[test]
    fn debug_redacts_secrets() {
        let cs = parse(&format!(
            "HostName=h;DeviceId=d1;SharedAccessKey={KEY};SharedAccessSignature=sig-secret"
        ));
        let debug = format!("{cs:?}");
        assert!(!debug.contains(KEY));
        assert!(!debug.contains("sig-secret"));
        assert!(debug.contains("<redacted>"));
        assert!(debug.contains("d1"));
    }
}
