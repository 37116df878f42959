//! The service REST API (and the WebSocket door to the device endpoint), as one axum router.

mod configurations;
mod convert;
mod error;
mod firmware;
mod jobs;
mod methods;
mod query;
mod registry;
mod twins;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use twinhub_core::policy::Permissions;
use twinhub_protocol::error::ErrorCode;

use crate::hub::Hub;
pub(crate) use error::ApiError;

/// What every handler gets.
#[derive(Clone)]
pub struct AppState {
    pub hub: Hub,
    pub shutdown: CancellationToken,
}

/// The TLS client certificate of the HTTPS connection a request came in on, if any.
#[derive(Clone, Debug, Default)]
pub struct PeerCertificate(pub Option<Arc<Vec<u8>>>);

/// Largest request body accepted (bulk registry requests of 100 devices fit easily).
const MAX_BODY: usize = 1024 * 1024;

pub fn router(state: AppState) -> Router {
    // Routing happens inside; this outer layer first drops a trailing slash, which the Node
    // registry client sends on `GET /devices/`.
    Router::new().fallback_service(tower::ServiceExt::map_request(
        routes(state),
        strip_trailing_slash,
    ))
}

fn strip_trailing_slash(mut request: Request) -> Request {
    let path = request.uri().path();
    if path.len() > 1 && path.ends_with('/') {
        let trimmed = path.trim_end_matches('/');
        let rebuilt = match request.uri().query() {
            Some(query) => format!("{trimmed}?{query}"),
            None => trimmed.to_owned(),
        };
        if let Ok(uri) = rebuilt.parse() {
            *request.uri_mut() = uri;
        }
    }
    request
}

fn routes(state: AppState) -> Router {
    Router::new()
        .route("/devices", get(registry::list_devices).post(registry::bulk))
        .route(
            "/devices/{device_id}",
            get(registry::get_device)
                .put(registry::put_device)
                .delete(registry::delete_device),
        )
        .route("/devices/{device_id}/modules", get(registry::list_modules))
        .route(
            "/devices/{device_id}/modules/{module_id}",
            get(registry::get_module)
                .put(registry::put_module)
                .delete(registry::delete_module),
        )
        .route("/statistics/devices", get(registry::device_statistics))
        .route("/statistics/service", get(registry::service_statistics))
        .route(
            "/twins/{device_id}",
            get(twins::get_twin)
                .put(twins::replace_twin)
                .patch(twins::update_twin),
        )
        .route(
            "/twins/{device_id}/modules/{module_id}",
            get(twins::get_module_twin)
                .put(twins::replace_module_twin)
                .patch(twins::update_module_twin),
        )
        .route(
            "/twins/{device_id}/methods",
            post(methods::invoke_device_method),
        )
        .route(
            "/twins/{device_id}/modules/{module_id}/methods",
            post(methods::invoke_module_method),
        )
        .route("/devices/query", post(query::query_devices))
        .route("/configurations", get(configurations::list_configurations))
        .route(
            "/configurations/testQueries",
            post(configurations::test_queries),
        )
        .route(
            "/configurations/{configuration_id}",
            get(configurations::get_configuration)
                .put(configurations::put_configuration)
                .delete(configurations::delete_configuration),
        )
        .route("/jobs/v2/query", get(jobs::query_jobs))
        .route(
            "/jobs/v2/{job_id}",
            get(jobs::get_job).put(jobs::create_job),
        )
        .route("/jobs/v2/{job_id}/cancel", post(jobs::cancel_job))
        .route("/firmware", get(firmware::list))
        .route(
            "/firmware/{package_id}",
            get(firmware::get)
                .put(firmware::upload)
                .delete(firmware::delete),
        )
        .route("/firmware/{package_id}/content", get(firmware::download))
        .route("/$iothub/websocket", get(websocket))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// The permission a request needs, decided from its method and path alone.
fn required_permission(method: &Method, segments: &[&str]) -> Option<(Permissions, &'static str)> {
    match segments.first().copied() {
        Some("$iothub") => None,
        Some("devices") if segments.get(1) == Some(&"query") => {
            Some((Permissions::SERVICE_CONNECT, "ServiceConnect"))
        }
        Some("devices") if method == Method::GET => {
            Some((Permissions::REGISTRY_READ, "RegistryRead"))
        }
        Some("devices") => Some((Permissions::REGISTRY_WRITE, "RegistryWrite")),
        Some("statistics") if segments.get(1) == Some(&"devices") => {
            Some((Permissions::REGISTRY_READ, "RegistryRead"))
        }
        _ => Some((Permissions::SERVICE_CONNECT, "ServiceConnect")),
    }
}

/// Every service request carries a SAS token of a shared access policy with the needed
/// permission. The WebSocket door authenticates the device inside MQTT instead; firmware
/// downloads also accept a device's own SAS token or registered client certificate.
async fn authorize(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let decoded: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let segments: Vec<&str> = decoded.iter().map(String::as_str).collect();
    let Some((needed, name)) = required_permission(request.method(), &segments) else {
        return next.run(request).await;
    };
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let outcome = if firmware::is_download(request.method(), &segments) {
        let certificate = request
            .extensions()
            .get::<PeerCertificate>()
            .and_then(|c| c.0.clone());
        firmware::authorize_download(
            &state.hub,
            header,
            certificate.as_deref().map(Vec::as_slice),
            &segments,
        )
    } else {
        state.hub.authorize_service(header, &segments, needed, name)
    };
    match outcome {
        Ok(()) => next.run(request).await,
        Err(e) => {
            state.hub.metrics().auth_failures.inc("https");
            tracing::warn!(%path, reason = %e, "service request refused");
            ApiError::new(ErrorCode::IotHubUnauthorizedAccess, e.to_string()).into_response()
        }
    }
}

/// IoT Hub has no error code for an unknown path; answer a plain 404 in its error shape.
async fn not_found(request: Request) -> Response {
    let body = serde_json::json!({
        "Message": format!("ErrorCode:NotFound;no such resource: {} {}", request.method(), request.uri().path()),
        "ExceptionMessage": "",
    });
    json(StatusCode::NOT_FOUND, &body)
}

async fn websocket(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    let certificate = request
        .extensions()
        .get::<PeerCertificate>()
        .cloned()
        .unwrap_or_default();
    let (mut parts, _) = request.into_parts();
    let upgrade = WebSocketUpgrade::from_request_parts(&mut parts, &state)
        .await
        .map_err(|e| ApiError::new(ErrorCode::ArgumentInvalid, e.body_text()))?;
    // Echo the sub-protocol the client offered, whatever its case (C sends MQTT, others mqtt).
    let offered = headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(',')
                .map(str::trim)
                .find(|p| p.eq_ignore_ascii_case("mqtt"))
        })
        .map(str::to_owned);
    let upgrade = match offered {
        Some(protocol) => upgrade.protocols([protocol]),
        None => upgrade,
    };
    let hub = state.hub.clone();
    let shutdown = state.shutdown.clone();
    Ok(upgrade
        .max_message_size(crate::mqtt::MAX_PACKET_SIZE * 2)
        .on_upgrade(move |socket| {
            crate::mqtt::serve_websocket(hub, socket, certificate.0, shutdown)
        }))
}

/// The request's `If-Match` precondition.
pub(crate) fn if_match(headers: &HeaderMap) -> crate::hub::IfMatch {
    crate::hub::IfMatch::from_header(headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()))
}

/// The `top` query parameter of list endpoints.
#[derive(serde::Deserialize)]
pub(crate) struct Top {
    top: Option<i64>,
}

impl Top {
    /// `top` when it is within 1..=max, else `max` (Azure's rule for `GET /devices`).
    pub(crate) fn within(&self, max: usize) -> usize {
        self.top
            .and_then(|t| usize::try_from(t).ok())
            .filter(|t| (1..=max).contains(t))
            .unwrap_or(max)
    }
}

/// A JSON response with the content type every SDK insists on.
pub(crate) fn json(status: StatusCode, value: &impl Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => {
            let mut response = Response::new(Body::from(body));
            *response.status_mut() = status;
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=utf-8"),
            );
            response
        }
        Err(e) => ApiError::new(ErrorCode::ServerError, e.to_string()).into_response(),
    }
}

/// Parses a JSON request body into `T`, answering IoT Hub's argument error when it does not fit.
pub(crate) fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            ErrorCode::ArgumentInvalid,
            format!("the request body is not valid: {e}"),
        )
    })
}
