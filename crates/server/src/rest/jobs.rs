//! `/jobs/v2`: scheduled twin updates and method calls over many devices.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use twinhub_core::time::Timestamp;
use twinhub_protocol::error::ErrorCode;
use twinhub_protocol::rest::{MethodInvocation, TwinUpdateRequest};

use super::convert::{self, UpdateKind};
use super::methods::validate_method_call;
use super::{ApiError, AppState, json, parse_body};
use crate::hub::{JobAction, JobFilter, JobSpec, JobStatus, JobType, JobView};

/// Azure's default `maxExecutionTimeInSeconds` (the Node SDK's too).
const DEFAULT_MAX_EXECUTION_SECS: i64 = 3600;
/// Page size of `GET /jobs/v2/query` when the caller sets none, and the most it may ask for.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 100;

/// The body of `PUT /jobs/v2/{id}`. Members are optional here so a missing one is reported by
/// name rather than as a deserialisation error.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JobRequest {
    #[serde(default)]
    job_id: Option<String>,
    #[serde(default, rename = "type", alias = "jobType")]
    job_type: Option<String>,
    #[serde(default)]
    update_twin: Option<Value>,
    #[serde(default)]
    cloud_to_device_method: Option<Value>,
    #[serde(default)]
    query_condition: Option<String>,
    #[serde(default)]
    start_time: Option<String>,
    #[serde(default)]
    max_execution_time_in_seconds: Option<i64>,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::ArgumentInvalid, message)
}

/// `updateTwin`: a twin patch (tags and/or desired) with an optional etag precondition.
fn twin_action(update: &Value) -> Result<JobAction, ApiError> {
    let etag = match update.get("etag") {
        None | Some(Value::Null) => None,
        Some(Value::String(etag)) => Some(etag.clone()),
        Some(_) => return Err(invalid("updateTwin.etag must be a string")),
    };
    let request: TwinUpdateRequest = serde_json::from_value(update.clone())
        .map_err(|e| invalid(format!("updateTwin is not a valid twin patch: {e}")))?;
    let update = convert::twin_update(&request, UpdateKind::Patch)?;
    if update.tags.is_none() && update.desired.is_none() {
        return Err(invalid(
            "updateTwin must carry tags or properties.desired to update",
        ));
    }
    Ok(JobAction::update_twin(update, etag))
}

/// `cloudToDeviceMethod`, checked as a direct method call is.
fn method_action(method: &Value) -> Result<JobAction, ApiError> {
    let request: MethodInvocation = serde_json::from_value(method.clone())
        .map_err(|e| invalid(format!("cloudToDeviceMethod is not valid: {e}")))?;
    Ok(JobAction::device_method(validate_method_call(request)?))
}

fn job_spec(path_id: &str, body: &[u8]) -> Result<JobSpec, ApiError> {
    let request: JobRequest = parse_body(body)?;
    if let Some(body_id) = request.job_id.as_deref().filter(|id| !id.is_empty())
        && body_id != path_id
    {
        return Err(invalid(format!(
            "the jobId in the body ({body_id:?}) differs from the one in the path ({path_id:?})"
        )));
    }
    let job_type = request
        .job_type
        .as_deref()
        .ok_or_else(|| invalid("type is required: scheduleUpdateTwin or scheduleDeviceMethod"))?;
    let action = match JobType::parse(job_type) {
        Some(JobType::ScheduleUpdateTwin) => twin_action(
            request
                .update_twin
                .as_ref()
                .filter(|v| !v.is_null())
                .ok_or_else(|| invalid("a scheduleUpdateTwin job needs updateTwin"))?,
        )?,
        Some(JobType::ScheduleDeviceMethod) => method_action(
            request
                .cloud_to_device_method
                .as_ref()
                .filter(|v| !v.is_null())
                .ok_or_else(|| invalid("a scheduleDeviceMethod job needs cloudToDeviceMethod"))?,
        )?,
        None => {
            return Err(invalid(format!(
                "type must be scheduleUpdateTwin or scheduleDeviceMethod, not {job_type:?}"
            )));
        }
    };
    let query_condition = request
        .query_condition
        .filter(|c| !c.trim().is_empty())
        .ok_or_else(|| invalid("queryCondition is required (use \"*\" for every device)"))?;
    let start = match request.start_time.as_deref() {
        None | Some("") => None,
        Some(text) => Some(Timestamp::parse_rfc3339(text).ok_or_else(|| {
            invalid(format!(
                "startTime is not an ISO 8601 date and time: {text:?}"
            ))
        })?),
    };
    let max_execution = request
        .max_execution_time_in_seconds
        .unwrap_or(DEFAULT_MAX_EXECUTION_SECS);
    let max_execution_secs = u64::try_from(max_execution)
        .ok()
        .filter(|s| *s > 0)
        .ok_or_else(|| {
            invalid(format!(
                "maxExecutionTimeInSeconds must be positive, not {max_execution}"
            ))
        })?;
    Ok(JobSpec {
        job_id: path_id.to_owned(),
        query_condition,
        action,
        start,
        max_execution_secs,
    })
}

pub(super) async fn create_job(
    State(state): State<AppState>,
    Path(job_id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let spec = job_spec(&job_id, &body)?;
    let view = state.hub.create_job(spec).await?;
    Ok(json(StatusCode::OK, &view.to_json()))
}

pub(super) async fn get_job(
    State(state): State<AppState>,
    Path(job_id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(json(StatusCode::OK, &state.hub.get_job(&job_id)?.to_json()))
}

pub(super) async fn cancel_job(
    State(state): State<AppState>,
    Path(job_id): Path<String>,
) -> Result<Response, ApiError> {
    let view = state.hub.cancel_job(&job_id).await?;
    Ok(json(StatusCode::OK, &view.to_json()))
}

/// The query string of `GET /jobs/v2/query`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct JobQuery {
    #[serde(default)]
    job_type: Option<String>,
    #[serde(default)]
    job_status: Option<String>,
}

impl JobQuery {
    fn filter(&self) -> Result<JobFilter, ApiError> {
        let given = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
        let job_type = given(&self.job_type)
            .map(|t| {
                JobType::parse(t.trim())
                    .ok_or_else(|| invalid(format!("jobType {t:?} is not a job type")))
            })
            .transpose()?;
        let status = given(&self.job_status)
            .map(|s| {
                JobStatus::parse(s.trim())
                    .ok_or_else(|| invalid(format!("jobStatus {s:?} is not a job status")))
            })
            .transpose()?;
        Ok(JobFilter { job_type, status })
    }
}

/// Where the next page starts: just after this job in the newest-first order. A position
/// rather than an offset, so jobs created between pages neither repeat nor hide others.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Continuation {
    created: i64,
    job_id: String,
}

impl Continuation {
    fn after(view: &JobView) -> Self {
        Self {
            created: view.job.created.ticks(),
            job_id: view.job.job_id.clone(),
        }
    }

    fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    fn decode(token: &str) -> Result<Self, ApiError> {
        URL_SAFE_NO_PAD
            .decode(token.trim())
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or_else(|| invalid("the continuation token is not valid"))
    }

    /// Whether `view` comes after this position (newest first, then by id).
    fn precedes(&self, view: &JobView) -> bool {
        let created = view.job.created.ticks();
        created < self.created || (created == self.created && view.job.job_id > self.job_id)
    }
}

/// One page of `views` (already in order) and the token of the next page, if any.
fn page(
    views: Vec<JobView>,
    size: usize,
    token: Option<&str>,
) -> Result<(Vec<JobView>, Option<String>), ApiError> {
    let start = match token.filter(|t| !t.trim().is_empty()) {
        Some(token) => {
            let position = Continuation::decode(token)?;
            views
                .iter()
                .position(|v| position.precedes(v))
                .unwrap_or(views.len())
        }
        None => 0,
    };
    let mut rest = views.into_iter().skip(start);
    let items: Vec<JobView> = rest.by_ref().take(size).collect();
    let more = rest.next().is_some();
    let next = items
        .last()
        .filter(|_| more)
        .map(|last| Continuation::after(last).encode());
    Ok((items, next))
}

pub(super) async fn query_jobs(
    State(state): State<AppState>,
    Query(query): Query<JobQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let size = header("x-ms-max-item-count")
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
        .map_or(DEFAULT_PAGE, |n| n.min(MAX_PAGE));
    let views = state.hub.list_jobs(query.filter()?);
    let (items, next) = page(views, size, header("x-ms-continuation"))?;
    let body: Vec<Value> = items.iter().map(JobView::to_json).collect();
    let mut response = json(StatusCode::OK, &body);
    let headers = response.headers_mut();
    headers.insert("x-ms-item-type", HeaderValue::from_static("jobResponse"));
    if let Some(token) = next.and_then(|t| HeaderValue::from_str(&t).ok()) {
        headers.insert("x-ms-continuation", token);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::{Method, Request};
    use serde_json::json;
    use tokio_util::sync::CancellationToken;
    use tower::ServiceExt;
    use twinhub_store::MemoryStore;

    use super::*;
    use crate::hub::{Hub, HubSettings, IdentitySpec, JobLimits};
    use crate::metrics::Metrics;
    use crate::rest::router;

    fn spec_error(body: &Value) -> String {
        let bytes = serde_json::to_vec(body).expect("serialisable");
        job_spec("j", &bytes)
            .expect_err("refused")
            .message()
            .to_owned()
    }

    #[test]
    fn job_requests_are_validated_before_the_hub_sees_them() {
        let twin = json!({"type": "scheduleUpdateTwin", "queryCondition": "*",
            "updateTwin": {"tags": {"a": 1}, "etag": "*"}});
        let spec = job_spec("j", &serde_json::to_vec(&twin).expect("json")).expect("valid");
        assert_eq!(spec.max_execution_secs, 3600);
        assert_eq!(spec.start, None);
        assert_eq!(spec.action.job_type(), JobType::ScheduleUpdateTwin);

        assert!(
            spec_error(&json!({"jobId": "other", "type": "scheduleUpdateTwin",
            "queryCondition": "*", "updateTwin": {"tags": {}}}))
            .contains("differs")
        );
        assert!(
            spec_error(&json!({"type": "export", "queryCondition": "*"})).contains("type must be")
        );
        assert!(spec_error(&json!({"queryCondition": "*"})).contains("type is required"));
        assert!(
            spec_error(&json!({"type": "scheduleDeviceMethod", "queryCondition": "*"}))
                .contains("needs cloudToDeviceMethod")
        );
        assert!(
            spec_error(&json!({"type": "scheduleUpdateTwin", "queryCondition": "*"}))
                .contains("needs updateTwin")
        );
        assert!(
            spec_error(&json!({"type": "scheduleUpdateTwin", "queryCondition": "*",
            "updateTwin": {"properties": {"reported": {"x": 1}}}}))
            .contains("reported")
        );
        assert!(
            spec_error(&json!({"type": "scheduleUpdateTwin", "queryCondition": "*",
            "updateTwin": {"etag": "*"}}))
            .contains("must carry")
        );
        assert!(
            spec_error(
                &json!({"type": "scheduleDeviceMethod", "queryCondition": "*",
            "cloudToDeviceMethod": {"methodName": "a/b"}})
            )
            .contains("methodName")
        );
        assert!(
            spec_error(
                &json!({"type": "scheduleDeviceMethod", "queryCondition": "*",
            "cloudToDeviceMethod": {"methodName": "m", "responseTimeoutInSeconds": 301}})
            )
            .contains("responseTimeoutInSeconds")
        );
        assert!(
            spec_error(&json!({"type": "scheduleUpdateTwin", "updateTwin": {"tags": {}}}))
                .contains("queryCondition is required")
        );
        assert!(
            spec_error(&json!({"type": "scheduleUpdateTwin", "queryCondition": "*",
            "updateTwin": {"tags": {}}, "startTime": "tomorrow"}))
            .contains("startTime")
        );
        assert!(
            spec_error(&json!({"type": "scheduleUpdateTwin", "queryCondition": "*",
            "updateTwin": {"tags": {}}, "maxExecutionTimeInSeconds": 0}))
            .contains("positive")
        );
    }

    fn view(job_id: &str, created: i64) -> JobView {
        JobView {
            job: crate::hub::Job {
                job_id: job_id.into(),
                query_condition: "*".into(),
                action: JobAction::update_twin(Default::default(), None),
                created: Timestamp::from_unix_seconds(created),
                start: Timestamp::from_unix_seconds(created),
                max_execution_secs: 60,
                status: JobStatus::Queued,
                end: None,
                failure_reason: None,
            },
            statistics: Default::default(),
        }
    }

    fn ids(views: &[JobView]) -> Vec<&str> {
        views.iter().map(|v| v.job.job_id.as_str()).collect()
    }

    #[test]
    fn pages_continue_after_the_last_job_even_when_newer_ones_appear() {
        let all = vec![view("c", 3), view("a", 2), view("b", 2), view("z", 1)];
        let (first, token) = page(all.clone(), 2, None).expect("page");
        assert_eq!(ids(&first), ["c", "a"]);
        let token = token.expect("more pages");
        let mut grown = all;
        grown.insert(0, view("new", 4));
        let (second, token) = page(grown, 2, Some(&token)).expect("page");
        assert_eq!(ids(&second), ["b", "z"]);
        assert_eq!(token, None);
        assert!(page(Vec::new(), 2, Some("not a token")).is_err());
    }

    struct Api {
        hub: Hub,
        token: String,
        stop: CancellationToken,
    }

    impl Api {
        async fn new(limits: JobLimits) -> Self {
            let key = twinhub_core::identity::generate_symmetric_key();
            let settings = HubSettings {
                hostname: "jobs.test".into(),
                sas_skew_secs: 300,
                max_modules_per_device: 50,
                max_configurations: 100,
                configuration_twins_per_second: 1000,
                jobs: limits,
            };
            let (hub, startup) = Hub::open(
                settings,
                Arc::new(MemoryStore::new()),
                Some(&key),
                Arc::new(Metrics::default()),
            )
            .expect("opens");
            if let Some(batch) = startup {
                hub.commit_startup(batch).await.expect("startup");
            }
            let expiry = u64::try_from(Timestamp::now().unix_seconds() + 3600).unwrap_or(0);
            let token =
                twinhub_core::sas::generate_token("jobs.test", &key, Some("iothubowner"), expiry)
                    .expect("token");
            let stop = CancellationToken::new();
            tokio::spawn(hub.clone().run_jobs(stop.clone()));
            Self { hub, token, stop }
        }

        async fn call(
            &self,
            method: Method,
            uri: &str,
            headers: &[(&str, &str)],
            body: Option<Value>,
        ) -> (StatusCode, HeaderMap, Value) {
            let mut request = Request::builder()
                .method(method)
                .uri(uri)
                .header("authorization", &self.token)
                .header("content-type", "application/json; charset=utf-8");
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
            let app = router(AppState {
                hub: self.hub.clone(),
                shutdown: CancellationToken::new(),
            });
            let response = app
                .oneshot(request.body(body).expect("request"))
                .await
                .expect("answered");
            let status = response.status();
            let headers = response.headers().clone();
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .expect("body");
            let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            (status, headers, value)
        }
    }

    fn twin_job(job_id: &str, start: Option<String>) -> Value {
        let mut body = json!({"jobId": job_id, "type": "scheduleUpdateTwin", "queryCondition": "*",
            "updateTwin": {"tags": {"fleet": "blue"}, "etag": "*"}, "maxExecutionTimeInSeconds": 60});
        if let Some(start) = start {
            body["startTime"] = Value::from(start);
        }
        body
    }

    #[tokio::test]
    async fn jobs_over_rest() {
        let api = Api::new(JobLimits {
            max_active_jobs: 1,
            devices_per_second: 1000,
        })
        .await;
        for id in ["d1", "d2"] {
            api.hub
                .create_identity(IdentitySpec::sas_device(id))
                .await
                .expect("device");
        }
        let (status, _, created) = api
            .call(
                Method::PUT,
                "/jobs/v2/now?api-version=2021-04-12",
                &[],
                Some(twin_job("now", None)),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{created}");
        assert_eq!(created["jobId"], "now");
        assert_eq!(created["type"], "scheduleUpdateTwin");
        assert_eq!(created["jobType"], "scheduleUpdateTwin");
        assert_eq!(
            created["updateTwin"],
            json!({"tags": {"fleet": "blue"}, "etag": "*"})
        );

        let mut job = created;
        for _ in 0..250 {
            if job["status"] == "completed" {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            job = api.call(Method::GET, "/jobs/v2/now", &[], None).await.2;
        }
        assert_eq!(job["status"], "completed");
        assert_eq!(
            job["deviceJobStatistics"],
            json!({"deviceCount": 2, "failedCount": 0, "succeededCount": 2, "runningCount": 0, "pendingCount": 0})
        );
        assert!(job["endTime"].is_string() && job["endTimeUtc"] == job["endTime"]);

        let (status, headers, _) = api
            .call(
                Method::PUT,
                "/jobs/v2/now",
                &[],
                Some(twin_job("now", None)),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(headers["iothub-errorcode"], "JobAlreadyExists");

        let mut select = twin_job("sel", None);
        select["queryCondition"] = Value::from("SELECT * FROM devices");
        let (status, headers, body) = api
            .call(Method::PUT, "/jobs/v2/sel", &[], Some(select))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(headers["iothub-errorcode"], "ArgumentInvalid");
        assert!(
            body["Message"]
                .as_str()
                .is_some_and(|m| m.contains("queryCondition"))
        );

        let (status, headers, _) = api.call(Method::GET, "/jobs/v2/missing", &[], None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(headers["iothub-errorcode"], "JobNotFound");

        let later = Timestamp::now().plus_seconds(3600).to_rfc3339();
        let (status, _, scheduled) = api
            .call(
                Method::PUT,
                "/jobs/v2/later",
                &[],
                Some(twin_job("later", Some(later))),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(scheduled["status"], "scheduled");
        let (status, headers, _) = api
            .call(
                Method::PUT,
                "/jobs/v2/more",
                &[],
                Some(twin_job("more", None)),
            )
            .await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            headers["iothub-errorcode"],
            "ThrottlingMaxActiveJobCountExceeded"
        );

        let (status, _, cancelled) = api
            .call(Method::POST, "/jobs/v2/later/cancel", &[], None)
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(cancelled["status"], "cancelled");

        let (status, headers, listed) = api
            .call(
                Method::GET,
                "/jobs/v2/query?jobType=scheduleUpdateTwin",
                &[("x-ms-max-item-count", "1")],
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["x-ms-item-type"], "jobResponse");
        assert_eq!(listed.as_array().map(Vec::len), Some(1));
        assert_eq!(listed[0]["jobId"], "later");
        let token = headers["x-ms-continuation"]
            .to_str()
            .expect("ascii")
            .to_owned();
        let (_, headers, rest) = api
            .call(
                Method::GET,
                "/jobs/v2/query?jobType=scheduleUpdateTwin",
                &[("x-ms-max-item-count", "1"), ("x-ms-continuation", &token)],
                None,
            )
            .await;
        assert_eq!(rest[0]["jobId"], "now");
        assert!(headers.get("x-ms-continuation").is_none());
        let (_, _, only_cancelled) = api
            .call(Method::GET, "/jobs/v2/query?jobStatus=cancelled", &[], None)
            .await;
        assert_eq!(only_cancelled.as_array().map(Vec::len), Some(1));
        let (status, _, _) = api
            .call(Method::GET, "/jobs/v2/query?jobStatus=sleeping", &[], None)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        api.stop.cancel();
    }
}
