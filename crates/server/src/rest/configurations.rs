//! `/configurations`: automatic device management configurations.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};
use twinhub_core::time::Timestamp;
use twinhub_protocol::error::ErrorCode;
use twinhub_protocol::rest::{
    ConfigurationContentDto, ConfigurationDto, ConfigurationMetricsDto,
    ConfigurationQueriesTestInput, ConfigurationQueriesTestResponse,
};

use super::{ApiError, AppState, Top, if_match, json, parse_body};
use crate::hub::{Configuration, Hub, IfMatch, MAX_METRICS};

/// Azure's rule for configuration ids: lowercase letters, digits and `-+%_*!'`, at most 128.
fn validate_id(id: &str) -> Result<(), ApiError> {
    let valid = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-+%_*!'".contains(c));
    if valid {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::ArgumentInvalid,
            format!(
                "configuration id {id:?} must be 1 to 128 lowercase letters, digits or -+%_*!'"
            ),
        ))
    }
}

fn metric_queries(dto: &ConfigurationDto) -> Result<BTreeMap<String, String>, ApiError> {
    let mut queries = BTreeMap::new();
    for (name, query) in &dto.metrics.queries {
        let Value::String(text) = query else {
            return Err(ApiError::new(
                ErrorCode::InvalidConfigurationCustomMetricsQuery,
                format!("metric query {name:?} must be a string"),
            ));
        };
        queries.insert(name.clone(), text.clone());
    }
    if queries.len() > MAX_METRICS {
        return Err(ApiError::new(
            ErrorCode::InvalidConfigurationCustomMetricsQuery,
            format!(
                "at most {MAX_METRICS} custom metric queries are allowed, not {}",
                queries.len()
            ),
        ));
    }
    Ok(queries)
}

/// The configuration as the API shows it, with its metrics computed now.
fn dto(hub: &Hub, configuration: &Configuration) -> ConfigurationDto {
    let system = hub.configuration_system_metrics(&configuration.id);
    let id = &configuration.id;
    let target = if configuration.target_condition.trim().is_empty() {
        String::new()
    } else {
        format!(
            "select deviceId from devices where {}",
            configuration.target_condition
        )
    };
    let mut system_queries = Map::new();
    system_queries.insert("targetedCount".into(), Value::from(target));
    system_queries.insert(
        "appliedCount".into(),
        Value::from(format!(
            "select deviceId from devices where configurations.[[{id}]].status = 'Applied'"
        )),
    );
    let mut system_results = Map::new();
    system_results.insert("targetedCount".into(), Value::from(system.targeted));
    system_results.insert("appliedCount".into(), Value::from(system.applied));
    let mut results = Map::new();
    let mut queries = Map::new();
    for (name, text) in &configuration.metric_queries {
        queries.insert(name.clone(), Value::from(text.clone()));
        if let Ok(query) = crate::hub::compile_metric_query(name, text) {
            results.insert(name.clone(), Value::from(hub.count_matching(&query)));
        }
    }
    ConfigurationDto {
        id: id.clone(),
        schema_version: Some(configuration.schema_version.clone()),
        labels: configuration.labels.clone(),
        content: ConfigurationContentDto {
            device_content: configuration.device_content.clone(),
            module_content: configuration.module_content.clone(),
            modules_content: configuration.modules_content.clone(),
        },
        content_type: configuration.content_type.clone(),
        target_condition: configuration.target_condition.clone(),
        created_time_utc: Some(configuration.created.to_rfc3339()),
        last_updated_time_utc: Some(configuration.last_updated.to_rfc3339()),
        priority: configuration.priority,
        system_metrics: ConfigurationMetricsDto {
            results: system_results,
            queries: system_queries,
        },
        metrics: ConfigurationMetricsDto { results, queries },
        etag: Some(configuration.etag()),
    }
}

pub(super) async fn put_configuration(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    validate_id(&id)?;
    let request: ConfigurationDto = parse_body(&body)?;
    if !request.id.is_empty() && request.id != id {
        return Err(ApiError::new(
            ErrorCode::ArgumentInvalid,
            format!(
                "the id in the body ({:?}) differs from the one in the path ({id:?})",
                request.id
            ),
        ));
    }
    if request.priority < 0 {
        return Err(ApiError::new(
            ErrorCode::ArgumentInvalid,
            "priority must be zero or positive",
        ));
    }
    let configuration = Configuration {
        id,
        schema_version: request
            .schema_version
            .clone()
            .unwrap_or_else(|| "1.0".into()),
        labels: request.labels.clone(),
        device_content: request.content.device_content.clone(),
        module_content: request.content.module_content.clone(),
        modules_content: request.content.modules_content.clone(),
        content_type: request.content_type.clone(),
        target_condition: request.target_condition.clone(),
        priority: request.priority,
        created: Timestamp::NEVER,
        last_updated: Timestamp::NEVER,
        metric_queries: metric_queries(&request)?,
        etag_version: 0,
    };
    let precondition = if_match(&headers);
    let created = precondition == IfMatch::Absent;
    let stored = state
        .hub
        .put_configuration(configuration, &precondition)
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json(status, &dto(&state.hub, &stored)))
}

pub(super) async fn get_configuration(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let configuration = state.hub.configuration(&id)?;
    Ok(json(StatusCode::OK, &dto(&state.hub, &configuration)))
}

pub(super) async fn list_configurations(
    State(state): State<AppState>,
    Query(query): Query<Top>,
) -> Response {
    let top = query.within(usize::MAX);
    let all: Vec<ConfigurationDto> = state
        .hub
        .configurations()
        .iter()
        .take(top)
        .map(|c| dto(&state.hub, c))
        .collect();
    json(StatusCode::OK, &all)
}

pub(super) async fn delete_configuration(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    state
        .hub
        .delete_configuration(&id, &if_match(&headers))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn test_queries(body: Bytes) -> Result<Response, ApiError> {
    let input: ConfigurationQueriesTestInput = parse_body(&body)?;
    let target_condition_error = match crate::hub::compile_target_condition(&input.target_condition)
    {
        Ok(()) => String::new(),
        Err(e) => e.to_string(),
    };
    let mut custom_metric_query_errors = Map::new();
    for (name, query) in &input.custom_metric_queries {
        let error = match query
            .as_str()
            .map(|text| crate::hub::compile_metric_query(name, text))
        {
            Some(Ok(_)) => continue,
            Some(Err(e)) => e.to_string(),
            None => "the query must be a string".to_owned(),
        };
        custom_metric_query_errors.insert(name.clone(), Value::from(error));
    }
    Ok(json(
        StatusCode::OK,
        &ConfigurationQueriesTestResponse {
            target_condition_error,
            custom_metric_query_errors,
        },
    ))
}
