//! `POST /devices/query`: the query language over twins, modules and device jobs.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use twinhub_protocol::error::ErrorCode;
use twinhub_protocol::rest::QuerySpecification;

use super::{ApiError, AppState, json, parse_body};
use crate::hub::ItemType;

/// Page size when the caller sets none, and the most a caller may ask for.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

pub(super) async fn query_devices(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: QuerySpecification = parse_body(&body)?;
    let query = twinhub_query::parse(&request.query)
        .map_err(|e| ApiError::new(ErrorCode::ArgumentInvalid, e.to_string()))?;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let page_size = header("x-ms-max-item-count")
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
        .map_or(DEFAULT_PAGE, |n| n.min(MAX_PAGE));
    let continuation = header("x-ms-continuation").map(str::to_owned);
    let hub = state.hub.clone();
    // A query may read every twin (or fill an index): keep it off the async workers.
    let page = tokio::task::spawn_blocking(move || {
        hub.query_page(&query, page_size, continuation.as_deref())
    })
    .await
    .map_err(|e| ApiError::new(ErrorCode::ServerError, format!("the query failed: {e}")))??;
    let mut response = json(StatusCode::OK, &page.items);
    let item_type = match page.item_type {
        ItemType::Twin => "twin",
        ItemType::DeviceJob => "deviceJob",
        ItemType::Raw => "raw",
    };
    let headers = response.headers_mut();
    headers.insert("x-ms-item-type", HeaderValue::from_static(item_type));
    if let Some(token) = page
        .continuation
        .and_then(|t| HeaderValue::from_str(&t).ok())
    {
        headers.insert("x-ms-continuation", token);
    }
    Ok(response)
}
