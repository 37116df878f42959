//! Firmware packages hosted by twinhub (`/firmware`); Azure has no such API.

use std::path::Path;

use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use reqwest::{Body, Method};
use serde::{Deserialize, Serialize};

use crate::{ClientError, ServiceClient};

/// A stored firmware package, as the hub describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FirmwarePackage {
    /// The package id (1–128 of `A-Z a-z 0-9 . _ -`).
    pub id: String,
    /// The firmware version it holds.
    pub version: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the content, 64 lowercase hex digits.
    pub sha256: String,
    /// Where devices download it (`https://<host>:<port>/firmware/<id>/content`).
    pub url: String,
    /// When it was uploaded (ISO 8601 UTC).
    #[serde(default)]
    pub uploaded_time_utc: String,
}

impl ServiceClient {
    /// Uploads the file at `path` as package `package_id` of firmware `version`, streaming it
    /// from disk. Packages are immutable: an existing id is refused (409).
    pub async fn upload_firmware(
        &self,
        package_id: &str,
        version: &str,
        path: &Path,
    ) -> Result<FirmwarePackage, ClientError> {
        let file_error = |source| ClientError::File {
            path: path.to_owned(),
            source,
        };
        let file = tokio::fs::File::open(path).await.map_err(file_error)?;
        let size = file.metadata().await.map_err(file_error)?.len();
        let request = self
            .request(
                Method::PUT,
                &["firmware", package_id],
                &[("version", version)],
            )?
            .header(
                CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            )
            // A known length lets the hub refuse an oversized package before reading it.
            .header(CONTENT_LENGTH, size)
            .body(Body::from(file));
        Self::execute_json(request).await
    }

    /// Every stored package.
    pub async fn list_firmware(&self) -> Result<Vec<FirmwarePackage>, ClientError> {
        Self::execute_json(self.request(Method::GET, &["firmware"], &[])?).await
    }

    /// One package's description.
    pub async fn get_firmware(&self, package_id: &str) -> Result<FirmwarePackage, ClientError> {
        Self::execute_json(self.request(Method::GET, &["firmware", package_id], &[])?).await
    }

    /// Deletes a package.
    pub async fn delete_firmware(&self, package_id: &str) -> Result<(), ClientError> {
        let request = self.request(Method::DELETE, &["firmware", package_id], &[])?;
        Self::execute(request).await.map(drop)
    }
}
