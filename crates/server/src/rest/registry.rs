//! `/devices`, `/devices/{id}/modules` and `/statistics`.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use twinhub_protocol::error::ErrorCode;
use twinhub_protocol::rest::{
    BulkRegistryOperationResult, DeviceDto, DeviceRegistryOperationError, ExportImportDevice,
    ImportMode, ModuleDto, RegistryStatistics, ServiceStatistics,
};

use super::convert;
use super::{ApiError, AppState, Top, if_match, json, parse_body};
use crate::hub::{IdentityKey, IfMatch};

/// Azure's rule: `top` outside 1..=1000 means 1000.
const MAX_TOP: usize = 1000;

pub(super) async fn list_devices(
    State(state): State<AppState>,
    Query(query): Query<Top>,
) -> Response {
    let top = query.within(MAX_TOP);
    let devices: Vec<DeviceDto> = state
        .hub
        .list_devices(top)
        .iter()
        .map(|(record, presence)| crate::shape::device_dto(record, presence))
        .collect();
    json(StatusCode::OK, &devices)
}

pub(super) async fn get_device(
    State(state): State<AppState>,
    Path(device_id): Path<String>,
) -> Result<Response, ApiError> {
    let (record, presence) = state.hub.get_identity(&IdentityKey::device(device_id))?;
    Ok(json(
        StatusCode::OK,
        &crate::shape::device_dto(&record, &presence),
    ))
}

/// Creates without `If-Match`, updates with it (the SDKs' convention). Always 200.
pub(super) async fn put_device(
    State(state): State<AppState>,
    Path(device_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let dto: DeviceDto = parse_body(&body)?;
    let spec = convert::device_spec(IdentityKey::device(device_id), &dto)?;
    let key = spec.key.clone();
    let precondition = if_match(&headers);
    let record = match precondition {
        IfMatch::Absent => state.hub.create_identity(spec).await?,
        _ => state.hub.update_identity(spec, &precondition).await?,
    };
    let (_, presence) = state
        .hub
        .get_identity(&key)
        .unwrap_or((record.clone(), Default::default()));
    Ok(json(
        StatusCode::OK,
        &crate::shape::device_dto(&record, &presence),
    ))
}

pub(super) async fn delete_device(
    State(state): State<AppState>,
    Path(device_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    state
        .hub
        .delete_identity(&IdentityKey::device(device_id), &if_match(&headers))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn list_modules(
    State(state): State<AppState>,
    Path(device_id): Path<String>,
) -> Result<Response, ApiError> {
    let modules: Vec<ModuleDto> = state
        .hub
        .list_modules(&device_id)?
        .iter()
        .map(|(record, presence)| crate::shape::module_dto(record, presence))
        .collect();
    Ok(json(StatusCode::OK, &modules))
}

pub(super) async fn get_module(
    State(state): State<AppState>,
    Path((device_id, module_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (record, presence) = state
        .hub
        .get_identity(&IdentityKey::module(device_id, module_id))?;
    Ok(json(
        StatusCode::OK,
        &crate::shape::module_dto(&record, &presence),
    ))
}

pub(super) async fn put_module(
    State(state): State<AppState>,
    Path((device_id, module_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let dto: ModuleDto = parse_body(&body)?;
    let key = IdentityKey::module(device_id, module_id);
    let spec = convert::module_spec(key.clone(), &dto)?;
    let precondition = if_match(&headers);
    let (record, status) = match precondition {
        IfMatch::Absent => (state.hub.create_identity(spec).await?, StatusCode::OK),
        _ => (
            state.hub.update_identity(spec, &precondition).await?,
            StatusCode::OK,
        ),
    };
    let (_, presence) = state
        .hub
        .get_identity(&key)
        .unwrap_or((record.clone(), Default::default()));
    Ok(json(status, &crate::shape::module_dto(&record, &presence)))
}

pub(super) async fn delete_module(
    State(state): State<AppState>,
    Path((device_id, module_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = IdentityKey::module(device_id, module_id);
    state.hub.delete_identity(&key, &if_match(&headers)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn device_statistics(State(state): State<AppState>) -> Response {
    let stats = state.hub.registry_statistics();
    json(
        StatusCode::OK,
        &RegistryStatistics {
            total_device_count: stats.total,
            enabled_device_count: stats.enabled,
            disabled_device_count: stats.disabled,
        },
    )
}

pub(super) async fn service_statistics(State(state): State<AppState>) -> Response {
    json(
        StatusCode::OK,
        &ServiceStatistics {
            connected_device_count: state.hub.connected_device_count(),
        },
    )
}

/// Azure's limit on one bulk request.
const MAX_BULK: usize = 100;

/// `POST /devices`: bulk create, update and delete. 200 when every entry succeeded, else 400
/// with the per-device errors; successful entries stay applied either way.
pub(super) async fn bulk(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let entries: Vec<ExportImportDevice> = parse_body(&body)?;
    if entries.len() > MAX_BULK {
        return Err(ApiError::new(
            ErrorCode::ArgumentInvalid,
            format!(
                "a bulk request holds at most {MAX_BULK} devices, this one has {}",
                entries.len()
            ),
        ));
    }
    let mut errors = Vec::new();
    let mut creates = Vec::new();
    for entry in &entries {
        let key = IdentityKey {
            device_id: entry.id.clone(),
            module_id: entry.module_id.clone(),
        };
        let outcome = match entry.import_mode {
            ImportMode::Create => match convert::bulk_spec(key.clone(), entry) {
                Ok(spec) => {
                    creates.push(spec);
                    continue;
                }
                Err(e) => Err(e),
            },
            ImportMode::Update | ImportMode::UpdateIfMatchETag => {
                let precondition = bulk_precondition(
                    entry.import_mode == ImportMode::UpdateIfMatchETag,
                    entry.e_tag.as_deref(),
                );
                match convert::bulk_spec(key.clone(), entry) {
                    Ok(spec) => state
                        .hub
                        .update_identity(spec, &precondition)
                        .await
                        .map(drop)
                        .map_err(ApiError::from),
                    Err(e) => Err(e),
                }
            }
            ImportMode::Delete | ImportMode::DeleteIfMatchETag => {
                let precondition = bulk_precondition(
                    entry.import_mode == ImportMode::DeleteIfMatchETag,
                    entry.e_tag.as_deref(),
                );
                state
                    .hub
                    .delete_identity(&key, &precondition)
                    .await
                    .map_err(ApiError::from)
            }
            ImportMode::UpdateTwin | ImportMode::UpdateTwinIfMatchETag => {
                let precondition = bulk_precondition(
                    entry.import_mode == ImportMode::UpdateTwinIfMatchETag,
                    entry.twin_e_tag.as_deref(),
                );
                match convert::bulk_twin_update(entry) {
                    Ok(update) => state
                        .hub
                        .update_twin(&key, update, &precondition)
                        .await
                        .map(drop)
                        .map_err(ApiError::from),
                    Err(e) => Err(e),
                }
            }
        };
        if let Err(e) = outcome {
            errors.push(bulk_error(&key, entry.import_mode, &e));
        }
    }
    for outcome in state.hub.create_identities(creates).await {
        if let Err(e) = outcome.result {
            errors.push(bulk_error(
                &outcome.key,
                ImportMode::Create,
                &ApiError::from(e),
            ));
        }
    }
    let result = BulkRegistryOperationResult {
        is_successful: errors.is_empty(),
        errors,
        warnings: Vec::new(),
    };
    let status = if result.is_successful {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    Ok(json(status, &result))
}

fn bulk_precondition(conditional: bool, etag: Option<&str>) -> IfMatch {
    match (conditional, etag) {
        (true, Some(etag)) => IfMatch::from_header(Some(etag)),
        _ => IfMatch::Any,
    }
}

fn bulk_error(
    key: &IdentityKey,
    mode: ImportMode,
    error: &ApiError,
) -> DeviceRegistryOperationError {
    DeviceRegistryOperationError {
        device_id: key.device_id.clone(),
        module_id: key.module_id.clone(),
        error_code: error.code().name().to_owned(),
        error_status: error.message().to_owned(),
        operation: mode.as_str().to_owned(),
    }
}
