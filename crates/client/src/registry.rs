//! The identity registry: `/devices`.

use reqwest::Method;
use serde_json::{Value, json};
use twinhub_protocol::ConnectionString;
use twinhub_protocol::rest::{BulkRegistryOperationResult, DeviceDto};

use crate::{ClientError, ServiceClient, if_match, read_json};

/// The most devices Azure accepts in one bulk registry request.
const BULK_LIMIT: usize = 100;

/// How a new device authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceAuth {
    /// Symmetric keys the hub generates.
    GeneratedKeys,
    /// Symmetric keys chosen by the caller (base64).
    Keys {
        /// The primary key.
        primary: String,
        /// The secondary key.
        secondary: String,
    },
    /// Self-signed X.509 certificates, identified by their thumbprints (hex SHA-1 or SHA-256).
    SelfSigned {
        /// The primary certificate's thumbprint.
        primary_thumbprint: String,
        /// The secondary certificate's thumbprint.
        secondary_thumbprint: String,
    },
}

impl DeviceAuth {
    /// The `authentication` member of a registry request.
    fn to_json(&self) -> Value {
        match self {
            DeviceAuth::GeneratedKeys => json!({
                "type": "sas",
                "symmetricKey": {"primaryKey": null, "secondaryKey": null},
            }),
            DeviceAuth::Keys { primary, secondary } => json!({
                "type": "sas",
                "symmetricKey": {"primaryKey": primary, "secondaryKey": secondary},
            }),
            DeviceAuth::SelfSigned {
                primary_thumbprint,
                secondary_thumbprint,
            } => json!({
                "type": "selfSigned",
                "x509Thumbprint": {
                    "primaryThumbprint": primary_thumbprint,
                    "secondaryThumbprint": secondary_thumbprint,
                },
            }),
        }
    }
}

impl ServiceClient {
    /// Registers a new, enabled device (`PUT /devices/{id}` without `If-Match`).
    pub async fn create_device(
        &self,
        device_id: &str,
        auth: &DeviceAuth,
    ) -> Result<DeviceDto, ClientError> {
        let body = json!({
            "deviceId": device_id,
            "status": "enabled",
            "authentication": auth.to_json(),
        });
        let request = self
            .request(Method::PUT, &["devices", device_id], &[])?
            .json(&body);
        Self::execute_json(request).await
    }

    /// One device identity.
    pub async fn get_device(&self, device_id: &str) -> Result<DeviceDto, ClientError> {
        Self::execute_json(self.request(Method::GET, &["devices", device_id], &[])?).await
    }

    /// Up to `top` device identities (the hub caps it at 1000; `None` asks for the most).
    pub async fn list_devices(&self, top: Option<u32>) -> Result<Vec<DeviceDto>, ClientError> {
        let top = top.map(|t| t.to_string());
        let query: Vec<(&str, &str)> = top.iter().map(|t| ("top", t.as_str())).collect();
        Self::execute_json(self.request(Method::GET, &["devices"], &query)?).await
    }

    /// Replaces a device identity (status, keys, ...); `etag` `None` updates whatever the
    /// current version is.
    pub async fn update_device(
        &self,
        device: &DeviceDto,
        etag: Option<&str>,
    ) -> Result<DeviceDto, ClientError> {
        let request = self
            .request(Method::PUT, &["devices", &device.device_id], &[])?
            .json(device);
        Self::execute_json(if_match(request, etag)).await
    }

    /// Deletes a device identity (and its twin and modules); `etag` `None` deletes any version.
    pub async fn delete_device(
        &self,
        device_id: &str,
        etag: Option<&str>,
    ) -> Result<(), ClientError> {
        let request = self.request(Method::DELETE, &["devices", device_id], &[])?;
        Self::execute(if_match(request, etag)).await.map(drop)
    }

    /// Registers many devices (`POST /devices`, `importMode: create`), in requests of at most
    /// 100 devices. Devices that fail are listed in the result rather than failing the call.
    pub async fn bulk_create_devices(
        &self,
        devices: &[(String, DeviceAuth)],
    ) -> Result<BulkRegistryOperationResult, ClientError> {
        let mut total = BulkRegistryOperationResult {
            is_successful: true,
            errors: Vec::new(),
            warnings: Vec::new(),
        };
        for chunk in devices.chunks(BULK_LIMIT) {
            let body: Vec<Value> = chunk
                .iter()
                .map(|(id, auth)| {
                    json!({
                        "id": id,
                        "importMode": "create",
                        "status": "enabled",
                        "authentication": auth.to_json(),
                    })
                })
                .collect();
            let request = self.request(Method::POST, &["devices"], &[])?.json(&body);
            let response = request.send().await.map_err(ClientError::Transport)?;
            // Azure answers 400 with the per-device result when some entries fail.
            let result: BulkRegistryOperationResult = match response.status().as_u16() {
                200..=299 => read_json(response).await?,
                400 => {
                    let code = response
                        .headers()
                        .get(twinhub_protocol::ERROR_CODE_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    let body = response.bytes().await.map_err(ClientError::Transport)?;
                    match serde_json::from_slice(&body) {
                        Ok(result) => result,
                        Err(_) => {
                            return Err(crate::error::service_error(400, code.as_deref(), &body));
                        }
                    }
                }
                _ => return Err(Self::into_error(response).await),
            };
            total.is_successful &= result.is_successful;
            total.errors.extend(result.errors);
            total.warnings.extend(result.warnings);
        }
        Ok(total)
    }

    /// The connection string a device uses to reach this hub: with its primary key for a SAS
    /// device, `x509=true` for a certificate device.
    pub fn device_connection_string(&self, device: &DeviceDto) -> Result<String, ClientError> {
        let authentication = device.authentication.as_ref();
        let primary_key = authentication
            .and_then(|a| a.symmetric_key.as_ref())
            .and_then(|k| k.primary_key.clone())
            .filter(|k| !k.is_empty());
        let x509 = authentication
            .and_then(|a| a.auth_type.as_deref())
            .is_some_and(|t| t == "selfSigned" || t == "certificateAuthority");
        if primary_key.is_none() && !x509 {
            return Err(ClientError::InvalidArgument(format!(
                "device {} has neither a symmetric key nor X.509 authentication",
                device.device_id
            )));
        }
        let connection_string = ConnectionString {
            host_name: self.host_name.clone(),
            shared_access_key_name: None,
            shared_access_key: if x509 { None } else { primary_key },
            device_id: Some(device.device_id.clone()),
            module_id: None,
            gateway_host_name: None,
            x509,
            shared_access_signature: None,
        };
        Ok(connection_string.to_string())
    }
}
