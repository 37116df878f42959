//! Domain types to and from the REST shapes of `twinhub_protocol::rest`.

use serde_json::{Map, Value};
use twinhub_core::identity::{AuthType, DeviceStatus};
use twinhub_core::twin::{Change, ServiceUpdate};
use twinhub_protocol::error::ErrorCode;
use twinhub_protocol::rest::{
    AuthenticationDto, DeviceDto, ExportImportDevice, ModuleDto, TwinUpdateRequest,
};

use super::ApiError;
use crate::hub::{IdentityKey, IdentitySpec};

fn parse_status(text: Option<&str>) -> Result<DeviceStatus, ApiError> {
    match text.map(str::to_ascii_lowercase).as_deref() {
        None | Some("enabled") => Ok(DeviceStatus::Enabled),
        Some("disabled") => Ok(DeviceStatus::Disabled),
        Some(other) => Err(invalid(format!(
            "status must be enabled or disabled, not {other:?}"
        ))),
    }
}

fn invalid(message: String) -> ApiError {
    ApiError::new(ErrorCode::ArgumentInvalid, message)
}

/// Resolves an `authentication` block: an explicit type wins; otherwise thumbprints mean
/// self-signed and anything else SAS (the Node SDK's inference).
fn spec_authentication(
    key: IdentityKey,
    authentication: Option<&AuthenticationDto>,
    status: DeviceStatus,
    status_reason: Option<String>,
) -> Result<IdentitySpec, ApiError> {
    let symmetric = authentication.and_then(|a| a.symmetric_key.as_ref());
    let thumbprints = authentication.and_then(|a| a.x509_thumbprint.as_ref());
    let has_thumbprint = thumbprints.is_some_and(|t| {
        t.primary_thumbprint
            .as_deref()
            .is_some_and(|p| !p.is_empty())
    });
    let auth_type = match authentication.and_then(|a| a.auth_type.as_deref()) {
        Some(t) if t.eq_ignore_ascii_case("sas") => AuthType::Sas,
        Some(t) if t.eq_ignore_ascii_case("selfSigned") => AuthType::SelfSigned,
        Some(t) if t.eq_ignore_ascii_case("certificateAuthority") => AuthType::CertificateAuthority,
        Some(t) if t.eq_ignore_ascii_case("none") => AuthType::None,
        Some(other) => return Err(invalid(format!("unknown authentication type {other:?}"))),
        None if has_thumbprint => AuthType::SelfSigned,
        None => AuthType::Sas,
    };
    let mut spec = IdentitySpec::sas_device(key.device_id.clone());
    spec.key = key;
    spec.status = status;
    spec.status_reason = status_reason;
    spec.auth_type = auth_type;
    spec.primary_key = symmetric.and_then(|s| s.primary_key.clone());
    spec.secondary_key = symmetric.and_then(|s| s.secondary_key.clone());
    spec.primary_thumbprint = thumbprints.and_then(|t| t.primary_thumbprint.clone());
    spec.secondary_thumbprint = thumbprints.and_then(|t| t.secondary_thumbprint.clone());
    Ok(spec)
}

fn check_body_id(path_id: &str, body_id: &str, what: &str) -> Result<(), ApiError> {
    if !body_id.is_empty() && body_id != path_id {
        return Err(invalid(format!(
            "the {what} in the body ({body_id:?}) differs from the one in the path ({path_id:?})"
        )));
    }
    Ok(())
}

pub(super) fn device_spec(key: IdentityKey, dto: &DeviceDto) -> Result<IdentitySpec, ApiError> {
    check_body_id(&key.device_id, &dto.device_id, "deviceId")?;
    let status = parse_status(dto.status.as_deref())?;
    let mut spec = spec_authentication(
        key,
        dto.authentication.as_ref(),
        status,
        dto.status_reason.clone(),
    )?;
    spec.iot_edge = dto.capabilities.as_ref().is_some_and(|c| c.iot_edge);
    spec.device_scope = dto.device_scope.clone();
    spec.parent_scopes = dto.parent_scopes.clone().unwrap_or_default();
    Ok(spec)
}

pub(super) fn module_spec(key: IdentityKey, dto: &ModuleDto) -> Result<IdentitySpec, ApiError> {
    check_body_id(&key.device_id, &dto.device_id, "deviceId")?;
    check_body_id(
        key.module_id.as_deref().unwrap_or_default(),
        &dto.module_id,
        "moduleId",
    )?;
    let mut spec = spec_authentication(
        key,
        dto.authentication.as_ref(),
        DeviceStatus::Enabled,
        None,
    )?;
    spec.managed_by = dto.managed_by.clone();
    Ok(spec)
}

pub(super) fn bulk_spec(
    key: IdentityKey,
    entry: &ExportImportDevice,
) -> Result<IdentitySpec, ApiError> {
    let status = parse_status(entry.status.as_deref())?;
    let mut spec = spec_authentication(
        key,
        entry.authentication.as_ref(),
        status,
        entry.status_reason.clone(),
    )?;
    spec.iot_edge = entry.capabilities.as_ref().is_some_and(|c| c.iot_edge);
    spec.device_scope = entry.device_scope.clone();
    spec.parent_scopes = entry.parent_scopes.clone().unwrap_or_default();
    Ok(spec)
}

/// Whether a twin write merges (PATCH) or replaces (PUT).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum UpdateKind {
    Patch,
    Replace,
}

fn section(
    value: Option<&Value>,
    name: &str,
    kind: UpdateKind,
) -> Result<Option<Change>, ApiError> {
    match (value, kind) {
        (None, _) => Ok(None),
        // IoT Hub clears a section set to null, in a PATCH as in a PUT; Node's e2e suite
        // relies on it to null out every desired property at once.
        (Some(Value::Null), _) => Ok(Some(Change::Replace(Map::new()))),
        (Some(Value::Object(map)), kind) => {
            // SDKs that read a twin and send it back echo the read-only members.
            let mut map = map.clone();
            map.remove("$metadata");
            map.remove("$version");
            Ok(Some(match kind {
                UpdateKind::Patch => Change::Patch(map),
                UpdateKind::Replace => Change::Replace(map),
            }))
        }
        (Some(_), _) => Err(invalid(format!("{name} must be a JSON object"))),
    }
}

pub(super) fn twin_update(
    request: &TwinUpdateRequest,
    kind: UpdateKind,
) -> Result<ServiceUpdate, ApiError> {
    if request.reported_is_nonempty() {
        return Err(invalid(
            "reported properties are written by the device only".into(),
        ));
    }
    Ok(ServiceUpdate {
        tags: section(request.tags.as_ref(), "tags", kind)?,
        desired: section(request.desired(), "properties.desired", kind)?,
    })
}

pub(super) fn bulk_twin_update(entry: &ExportImportDevice) -> Result<ServiceUpdate, ApiError> {
    let desired = entry.properties.as_ref().and_then(|p| p.get("desired"));
    Ok(ServiceUpdate {
        tags: section(entry.tags.as_ref(), "tags", UpdateKind::Patch)?,
        desired: section(desired, "properties.desired", UpdateKind::Patch)?,
    })
}
