//! `POST /twins/{id}/methods` and the module variant: direct method invocation.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use twinhub_protocol::error::ErrorCode;
use twinhub_protocol::rest::{MethodInvocation, MethodResult};
use twinhub_protocol::topics::is_valid_method_name;

use super::{ApiError, AppState, json, parse_body};
use crate::hub::{IdentityKey, MethodCall};

/// Azure's bounds and defaults for the two timeouts, in seconds.
const RESPONSE_TIMEOUT: (i64, i64, i64) = (5, 300, 30);
const CONNECT_TIMEOUT_MAX: i64 = 300;
/// Azure's limit on a method payload, each way.
const MAX_PAYLOAD: usize = 128 * 1024;

fn method_call(body: &[u8]) -> Result<MethodCall, ApiError> {
    validate_method_call(parse_body(body)?)
}

/// Checks a method invocation against Azure's rules (name, timeouts, payload size); scheduled
/// method jobs use it too.
pub(super) fn validate_method_call(request: MethodInvocation) -> Result<MethodCall, ApiError> {
    if !is_valid_method_name(&request.method_name) {
        return Err(ApiError::new(
            ErrorCode::ArgumentInvalid,
            "methodName must be printable US-ASCII without separators ($ ( ) < > @ , ; : \\ \" / [ ] ? = { } space tab)",
        ));
    }
    let (min, max, default) = RESPONSE_TIMEOUT;
    let response = request.response_timeout_in_seconds.unwrap_or(default);
    if !(min..=max).contains(&response) {
        return Err(ApiError::new(
            ErrorCode::ArgumentInvalid,
            format!("responseTimeoutInSeconds must be between {min} and {max}, not {response}"),
        ));
    }
    let connect = request.connect_timeout_in_seconds.unwrap_or(0);
    if !(0..=CONNECT_TIMEOUT_MAX).contains(&connect) {
        return Err(ApiError::new(
            ErrorCode::ArgumentInvalid,
            format!(
                "connectTimeoutInSeconds must be between 0 and {CONNECT_TIMEOUT_MAX}, not {connect}"
            ),
        ));
    }
    let payload_size = serde_json::to_vec(&request.payload)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if payload_size > MAX_PAYLOAD {
        return Err(ApiError::new(
            ErrorCode::MessageTooLarge,
            format!("the method payload is {payload_size} bytes; the limit is {MAX_PAYLOAD}"),
        ));
    }
    Ok(MethodCall {
        name: request.method_name,
        payload: request.payload,
        response_timeout: Duration::from_secs(response.unsigned_abs()),
        connect_timeout: Duration::from_secs(connect.unsigned_abs()),
    })
}

async fn invoke(state: &AppState, key: &IdentityKey, body: &[u8]) -> Result<Response, ApiError> {
    let call = method_call(body)?;
    let outcome = state.hub.invoke_method(key, call).await?;
    Ok(json(
        StatusCode::OK,
        &MethodResult {
            status: outcome.status,
            payload: outcome.payload,
        },
    ))
}

pub(super) async fn invoke_device_method(
    State(state): State<AppState>,
    Path(device_id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    invoke(&state, &IdentityKey::device(device_id), &body).await
}

pub(super) async fn invoke_module_method(
    State(state): State<AppState>,
    Path((device_id, module_id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    invoke(&state, &IdentityKey::module(device_id, module_id), &body).await
}
