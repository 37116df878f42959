//! The property names and shapes of the device-management patterns: what the back end writes to
//! desired properties and method payloads, and what the device reports.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use twinhub_core::time::Timestamp;

/// Desired and reported property of the firmware-update (ADM) pattern.
pub const FIRMWARE_PROPERTY: &str = "firmware";
/// Reported property holding the method-driven patterns' status objects.
pub const DM_PROPERTY: &str = "iothubDM";
/// Direct method that reboots the device.
pub const REBOOT_METHOD: &str = "reboot";
/// Direct method that resets the device to factory settings.
pub const FACTORY_RESET_METHOD: &str = "factoryReset";
/// Direct method of the legacy, method-driven firmware update.
pub const FIRMWARE_UPDATE_METHOD: &str = "firmwareUpdate";
/// The configuration property handled when no other is registered.
pub const DEFAULT_CONFIGURATION_PROPERTY: &str = "telemetryConfig";

/// `firmware.fwUpdateStatus` values of the ADM firmware pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FirmwareStatus {
    /// No update pending; `currentFwVersion` is what runs.
    Current,
    /// The package is being downloaded.
    Downloading,
    /// The package's size and SHA-256 are being checked.
    Verifying,
    /// The package is being installed.
    Applying,
    /// The device reboots into the new firmware.
    Rebooting,
    /// The update failed; `fwUpdateSubstatus` says why.
    Error,
    /// The device went back to its previous firmware after an error.
    RolledBack,
}

impl FirmwareStatus {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            FirmwareStatus::Current => "current",
            FirmwareStatus::Downloading => "downloading",
            FirmwareStatus::Verifying => "verifying",
            FirmwareStatus::Applying => "applying",
            FirmwareStatus::Rebooting => "rebooting",
            FirmwareStatus::Error => "error",
            FirmwareStatus::RolledBack => "rolledback",
        }
    }
}

/// `iothubDM.firmwareUpdate.status` values of the legacy method-driven firmware pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LegacyFirmwareStatus {
    /// Accepted, not started.
    Waiting,
    /// The package is being downloaded.
    Downloading,
    /// The package is downloaded and verified.
    DownloadComplete,
    /// The download or its verification failed.
    DownloadFailed,
    /// The package is being installed.
    Applying,
    /// The package is installed.
    ApplyComplete,
    /// Installing failed; the previous firmware was restored.
    ApplyFailed,
}

impl LegacyFirmwareStatus {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            LegacyFirmwareStatus::Waiting => "waiting",
            LegacyFirmwareStatus::Downloading => "downloading",
            LegacyFirmwareStatus::DownloadComplete => "downloadComplete",
            LegacyFirmwareStatus::DownloadFailed => "downloadFailed",
            LegacyFirmwareStatus::Applying => "applying",
            LegacyFirmwareStatus::ApplyComplete => "applyComplete",
            LegacyFirmwareStatus::ApplyFailed => "applyFailed",
        }
    }
}

/// The firmware a back end asks for: desired `firmware`, or a legacy `firmwareUpdate` payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirmwareTarget {
    /// The version the package installs.
    pub version: String,
    /// Where to download the package (https only).
    pub uri: String,
    /// Lowercase hex SHA-256 of the package.
    pub sha256: String,
    /// The package's size in bytes, when the back end said.
    pub size: Option<u64>,
}

impl FirmwareTarget {
    /// Reads desired `firmware {fwVersion, fwPackageURI, fwPackageCheckValue, fwSize?}`.
    pub fn from_desired(value: &Value) -> Result<FirmwareTarget, String> {
        let object = value
            .as_object()
            .ok_or("Invalid firmware request: not an object")?;
        Ok(FirmwareTarget {
            version: required_string(object, "fwVersion")?,
            uri: required_string(object, "fwPackageURI")?,
            sha256: required_string(object, "fwPackageCheckValue")?.to_ascii_lowercase(),
            size: optional_size(object, "fwSize")?,
        })
    }

    /// Checks what must hold before anything is downloaded: an https URI and a SHA-256 check value.
    pub fn validate(&self) -> Result<(), String> {
        if !has_https_scheme(&self.uri) {
            return Err("Insecure package URI".to_owned());
        }
        if !is_sha256_hex(&self.sha256) {
            return Err(
                "Invalid fwPackageCheckValue: expected 64 hex digits of SHA-256".to_owned(),
            );
        }
        Ok(())
    }
}

/// The legacy `firmwareUpdate` method payload: `{"fwPackageUri": ...}` plus our optional
/// `fwVersion`, `fwPackageCheckValue` and `fwSize`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LegacyRequest {
    /// Where to download the package.
    pub uri: String,
    /// The version the package installs, when the back end said.
    pub version: Option<String>,
    /// Lowercase hex SHA-256 of the package, when the back end said.
    pub sha256: Option<String>,
    /// The package's size in bytes, when the back end said.
    pub size: Option<u64>,
}

impl LegacyRequest {
    /// Reads a `firmwareUpdate` method payload.
    pub fn from_payload(payload: &Value) -> Result<LegacyRequest, String> {
        let object = payload
            .as_object()
            .ok_or("The payload must be a JSON object with fwPackageUri")?;
        Ok(LegacyRequest {
            uri: required_string(object, "fwPackageUri")?,
            version: optional_string(object, "fwVersion")?,
            sha256: optional_string(object, "fwPackageCheckValue")?.map(|s| s.to_ascii_lowercase()),
            size: optional_size(object, "fwSize")?,
        })
    }
}

fn required_string(object: &Map<String, Value>, name: &str) -> Result<String, String> {
    optional_string(object, name)?
        .ok_or_else(|| format!("Invalid firmware request: {name} missing"))
}

fn optional_string(object: &Map<String, Value>, name: &str) -> Result<Option<String>, String> {
    match object.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
        Some(_) => Err(format!(
            "Invalid firmware request: {name} must be a non-empty string"
        )),
    }
}

fn optional_size(object: &Map<String, Value>, name: &str) -> Result<Option<u64>, String> {
    match object.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value.as_u64().map(Some).ok_or_else(|| {
            format!("Invalid firmware request: {name} must be a non-negative integer")
        }),
    }
}

/// Whether `uri` starts with the `https` scheme (case-insensitive, as URI schemes are).
pub fn has_https_scheme(uri: &str) -> bool {
    uri.get(..8)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
}

/// Whether `s` is 64 lowercase hex digits.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The current time as IoT Hub writes it.
pub(crate) fn now() -> String {
    Timestamp::now().to_rfc3339()
}

/// `{"firmware": fields}`.
pub(crate) fn firmware_patch(fields: Value) -> Value {
    object([(FIRMWARE_PROPERTY, fields)])
}

/// `{"iothubDM": {name: fields}}`.
pub(crate) fn dm_patch(name: &str, fields: Value) -> Value {
    object([(DM_PROPERTY, object([(name, fields)]))])
}

fn object<const N: usize>(entries: [(&str, Value); N]) -> Value {
    Value::Object(
        entries
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value))
            .collect(),
    )
}

/// Applies a JSON merge patch (`null` removes) to `target`.
pub(crate) fn merge(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (key, value) in patch {
        match value {
            Value::Null => {
                target.remove(key);
            }
            Value::Object(inner) => {
                let slot = target
                    .entry(key.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !slot.is_object() {
                    *slot = Value::Object(Map::new());
                }
                if let Value::Object(existing) = slot {
                    merge(existing, inner);
                }
            }
            other => {
                target.insert(key.clone(), other.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn desired_firmware_parses_and_lowercases_the_check_value() {
        let target = FirmwareTarget::from_desired(&json!({
            "fwVersion": "2.0", "fwPackageURI": "https://h/p", "fwPackageCheckValue": "AB", "fwSize": 3
        }))
        .expect("parses");
        assert_eq!(target.sha256, "ab");
        assert_eq!(target.size, Some(3));
        assert!(FirmwareTarget::from_desired(&json!({"fwVersion": "2"})).is_err());
        assert!(FirmwareTarget::from_desired(&json!("x")).is_err());
    }

    #[test]
    fn validation_requires_https_and_a_sha256() {
        let mut target = FirmwareTarget {
            version: "1".into(),
            uri: "http://h/p".into(),
            sha256: "0".repeat(64),
            size: None,
        };
        assert_eq!(target.validate(), Err("Insecure package URI".to_owned()));
        target.uri = "HTTPS://h/p".into();
        assert_eq!(target.validate(), Ok(()));
        target.sha256 = "123456abcde".into();
        assert!(target.validate().is_err());
    }

    #[test]
    fn merge_patch_removes_nulls_and_merges_objects() {
        let mut doc = json!({"a": {"b": 1, "c": 2}, "d": 3})
            .as_object()
            .cloned()
            .unwrap_or_default();
        let patch = json!({"a": {"b": null, "e": {"f": null, "g": 1}}, "d": null});
        merge(&mut doc, patch.as_object().unwrap_or(&Map::new()));
        assert_eq!(Value::Object(doc), json!({"a": {"c": 2, "e": {"g": 1}}}));
    }
}
