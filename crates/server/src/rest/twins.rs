//! `/twins/{id}` and `/twins/{id}/modules/{mid}`: the service's view of twins.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use twinhub_protocol::rest::TwinUpdateRequest;

use super::convert::{self, UpdateKind};
use super::{ApiError, AppState, if_match, json, parse_body};
use crate::hub::IdentityKey;

fn read(state: &AppState, key: &IdentityKey) -> Result<Response, ApiError> {
    let (record, presence) = state.hub.get_identity(key)?;
    Ok(json(
        StatusCode::OK,
        &crate::shape::twin_dto(&record, &presence, true),
    ))
}

async fn write(
    state: &AppState,
    key: IdentityKey,
    headers: &HeaderMap,
    body: &[u8],
    kind: UpdateKind,
) -> Result<Response, ApiError> {
    let request: TwinUpdateRequest = parse_body(body)?;
    let update = convert::twin_update(&request, kind)?;
    let precondition = if_match(headers);
    state.hub.update_twin(&key, update, &precondition).await?;
    read(state, &key)
}

pub(super) async fn get_twin(
    State(state): State<AppState>,
    Path(device_id): Path<String>,
) -> Result<Response, ApiError> {
    read(&state, &IdentityKey::device(device_id))
}

pub(super) async fn update_twin(
    State(state): State<AppState>,
    Path(device_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    write(
        &state,
        IdentityKey::device(device_id),
        &headers,
        &body,
        UpdateKind::Patch,
    )
    .await
}

pub(super) async fn replace_twin(
    State(state): State<AppState>,
    Path(device_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    write(
        &state,
        IdentityKey::device(device_id),
        &headers,
        &body,
        UpdateKind::Replace,
    )
    .await
}

pub(super) async fn get_module_twin(
    State(state): State<AppState>,
    Path((device_id, module_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    read(&state, &IdentityKey::module(device_id, module_id))
}

pub(super) async fn update_module_twin(
    State(state): State<AppState>,
    Path((device_id, module_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    write(
        &state,
        IdentityKey::module(device_id, module_id),
        &headers,
        &body,
        UpdateKind::Patch,
    )
    .await
}

pub(super) async fn replace_module_twin(
    State(state): State<AppState>,
    Path((device_id, module_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    write(
        &state,
        IdentityKey::module(device_id, module_id),
        &headers,
        &body,
        UpdateKind::Replace,
    )
    .await
}
