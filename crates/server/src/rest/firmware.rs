//! `/firmware`: hosting firmware packages (a twinhub extension to IoT Hub's API).
//!
//! Back ends upload, list and delete packages with a service token; devices download
//! `/firmware/{id}/content` with the SAS token they use as their MQTT password, or with the client
//! certificate registered for them, presented on the TLS connection.
//!
//! Downloads honour a single `Range` (`bytes=a-b`, `bytes=a-`, `bytes=-n`) with 206, or 416 when it
//! starts beyond the end. A header asking for several ranges, in another unit, or malformed is
//! ignored and the whole package is served with 200, as RFC 9110 allows; so is a range whose
//! `If-Range` does not name the package's current ETag.

use std::io::SeekFrom;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;
use twinhub_core::policy::Permissions;
use twinhub_core::sas::SasToken;
use twinhub_protocol::error::ErrorCode;

use super::{ApiError, AppState, json};
use crate::auth::AuthError;
use crate::hub::{FirmwarePackage, Hub, HubError, IdentityKey};

/// A package as the API shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct FirmwarePackageDto {
    id: String,
    version: String,
    size: u64,
    sha256: String,
    /// Where devices download it.
    url: String,
    uploaded_time_utc: String,
}

fn dto(hub: &Hub, package: &FirmwarePackage) -> Result<FirmwarePackageDto, HubError> {
    Ok(FirmwarePackageDto {
        id: package.id.clone(),
        version: package.version.clone(),
        size: package.size,
        sha256: package.sha256.clone(),
        url: hub.firmware_url(&package.id)?,
        uploaded_time_utc: package.uploaded.to_rfc3339(),
    })
}

#[derive(Deserialize)]
pub(super) struct UploadQuery {
    version: Option<String>,
}

/// `PUT /firmware/{id}?version=V`: the body is the package. 201, or 409 for an existing id.
pub(super) async fn upload(
    State(state): State<AppState>,
    Path(package_id): Path<String>,
    Query(query): Query<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let version = query.version.ok_or_else(|| {
        ApiError::new(
            ErrorCode::ArgumentNull,
            "the version query parameter is required",
        )
    })?;
    let declared_len = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    let mut stream = body.into_data_stream();
    let uploaded = state
        .hub
        .upload_firmware(&package_id, &version, declared_len, &mut stream)
        .await;
    match uploaded {
        Ok(package) => Ok(json(StatusCode::CREATED, &dto(&state.hub, &package)?)),
        Err(error) => {
            discard_rest(&mut stream).await;
            Err(error.into())
        }
    }
}

/// How much of a refused upload is read and thrown away, and for how long, before answering.
const DISCARD_LIMIT: u64 = 64 * 1024 * 1024;
const DISCARD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Reads what is left of a refused request body (up to a bound) so the client, still sending,
/// can finish and read the error instead of meeting a connection reset.
async fn discard_rest(stream: &mut axum::body::BodyDataStream) {
    use futures_util::StreamExt;
    let drain = async {
        let mut discarded = 0u64;
        while let Some(Ok(chunk)) = stream.next().await {
            discarded += chunk.len() as u64;
            if discarded > DISCARD_LIMIT {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DISCARD_TIMEOUT, drain).await;
}

/// `GET /firmware`: every package, by id.
pub(super) async fn list(State(state): State<AppState>) -> Result<Response, ApiError> {
    let packages = state
        .hub
        .firmware_packages()?
        .iter()
        .map(|package| dto(&state.hub, package))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(json(StatusCode::OK, &packages))
}

/// `GET /firmware/{id}`.
pub(super) async fn get(
    State(state): State<AppState>,
    Path(package_id): Path<String>,
) -> Result<Response, ApiError> {
    let package = state.hub.firmware_package(&package_id)?;
    Ok(json(StatusCode::OK, &dto(&state.hub, &package)?))
}

/// `DELETE /firmware/{id}`: 204.
pub(super) async fn delete(
    State(state): State<AppState>,
    Path(package_id): Path<String>,
) -> Result<Response, ApiError> {
    state.hub.delete_firmware(&package_id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Read size of the download stream.
const DOWNLOAD_CHUNK: usize = 64 * 1024;

/// `GET /firmware/{id}/content`: the package's bytes, whole or one range of them.
pub(super) async fn download(
    State(state): State<AppState>,
    Path(package_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (package, mut file) = state.hub.open_firmware(&package_id).await?;
    let etag = format!("\"{}\"", package.sha256);
    let if_range = headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok());
    let range = if if_range.is_none_or(|validator| validator.trim() == etag) {
        parse_range(
            headers.get(header::RANGE).and_then(|v| v.to_str().ok()),
            package.size,
        )
    } else {
        ByteRange::Full
    };
    let (status, start, length) = match range {
        ByteRange::Full => (StatusCode::OK, 0, package.size),
        ByteRange::Part { start, end } => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        ByteRange::Unsatisfiable => {
            let mut response = ApiError::new(
                ErrorCode::RangeNotSatisfiable,
                format!(
                    "the range starts beyond the package's {} bytes",
                    package.size
                ),
            )
            .into_response();
            insert(
                response.headers_mut(),
                header::CONTENT_RANGE,
                &format!("bytes */{}", package.size),
            );
            return Ok(response);
        }
    };
    if start > 0 {
        file.seek(SeekFrom::Start(start)).await.map_err(|e| {
            ApiError::from(HubError::Storage(format!(
                "cannot seek in package {package_id}: {e}"
            )))
        })?;
    }
    let stream = ReaderStream::with_capacity(file.take(length), DOWNLOAD_CHUNK);
    let mut response = Response::new(Body::from_stream(stream));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    insert(headers, header::CONTENT_LENGTH, &length.to_string());
    insert(headers, header::ETAG, &etag);
    if status == StatusCode::PARTIAL_CONTENT {
        let end = start + length - 1;
        insert(
            headers,
            header::CONTENT_RANGE,
            &format!("bytes {start}-{end}/{}", package.size),
        );
    }
    state.hub.metrics().firmware_downloads.inc();
    Ok(response)
}

/// Sets a header whose value we formatted from digits and hex, which is always a valid value.
fn insert(headers: &mut HeaderMap, name: header::HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

/// What a `Range` header asks of content of `size` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ByteRange {
    /// All of it: no header, another unit, several ranges, or a malformed header.
    Full,
    /// Bytes `start..=end`, within the content.
    Part { start: u64, end: u64 },
    /// The one range asked for starts beyond the end (or is an empty suffix).
    Unsatisfiable,
}

/// Parses a `Range` header (RFC 9110 §14.1.2) against content of `size` bytes.
pub(crate) fn parse_range(header: Option<&str>, size: u64) -> ByteRange {
    let Some(spec) = header.and_then(|h| {
        let (unit, spec) = h.split_once('=')?;
        unit.trim().eq_ignore_ascii_case("bytes").then_some(spec)
    }) else {
        return ByteRange::Full;
    };
    if spec.contains(',') {
        return ByteRange::Full;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return ByteRange::Full;
    };
    let (first, last) = (position(first.trim()), position(last.trim()));
    match (first, last) {
        (Some(Some(start)), Some(end)) => {
            if end.is_some_and(|end| end < start) {
                ByteRange::Full
            } else if start >= size {
                ByteRange::Unsatisfiable
            } else {
                let last_byte = size - 1;
                ByteRange::Part {
                    start,
                    end: end.map_or(last_byte, |end| end.min(last_byte)),
                }
            }
        }
        (Some(None), Some(Some(suffix))) => {
            if suffix == 0 || size == 0 {
                ByteRange::Unsatisfiable
            } else {
                ByteRange::Part {
                    start: size - suffix.min(size),
                    end: size - 1,
                }
            }
        }
        _ => ByteRange::Full,
    }
}

/// One side of a range: `Some(None)` when empty, `Some(Some(n))` for digits (saturating, since a
/// position past any real content is simply beyond the end), `None` when malformed.
fn position(text: &str) -> Option<Option<u64>> {
    if text.is_empty() {
        return Some(None);
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(Some(text.parse().unwrap_or(u64::MAX)))
}

/// Whether a request downloads a package, which devices may do, not only back ends.
pub(super) fn is_download(method: &Method, segments: &[&str]) -> bool {
    (method == Method::GET || method == Method::HEAD)
        && matches!(segments, ["firmware", _, "content"])
}

/// Authorizes a download: a device's SAS token (scoped to `devices/{id}`, as its MQTT password
/// is), a service token with ServiceConnect, or, without an `Authorization` header, the client
/// certificate registered for a device.
pub(super) fn authorize_download(
    hub: &Hub,
    authorization: Option<&str>,
    certificate: Option<&[u8]>,
    segments: &[&str],
) -> Result<(), AuthError> {
    match authorization {
        Some(token) => match token_identity(token) {
            Some(key) => hub
                .authenticate_device(&key, Some(token.trim()), None)
                .map(drop),
            None => hub.authorize_service(
                Some(token),
                segments,
                Permissions::SERVICE_CONNECT,
                "ServiceConnect",
            ),
        },
        None => {
            let certificate = certificate.ok_or(AuthError::Missing)?;
            let key = hub
                .identity_with_certificate(certificate)
                .ok_or(AuthError::Invalid)?;
            hub.authenticate_device(&key, None, Some(certificate))
                .map(drop)
        }
    }
}

/// The identity a token is scoped to, when its resource is `<host>/devices/{id}` or
/// `<host>/devices/{id}/modules/{id}`.
fn token_identity(token: &str) -> Option<IdentityKey> {
    let resource = SasToken::parse(token.trim()).ok()?.resource().ok()?;
    match resource
        .segments
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["devices", device] => Some(IdentityKey::device(*device)),
        ["devices", device, "modules", module] => Some(IdentityKey::module(*device, *module)),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
