//! Scheduled jobs: `/jobs/v2`.

use reqwest::Method;
use reqwest::header::HeaderValue;
use serde_json::{Map, Value};
use twinhub_core::time::Timestamp;
use twinhub_protocol::rest::MethodInvocation;

use crate::{ClientError, ServiceClient, read_json};

/// What a scheduled job does to each device its query selects.
#[derive(Debug, Clone, PartialEq)]
pub enum JobAction {
    /// `scheduleUpdateTwin`: merge `patch` (tags and/or `properties.desired`) into each twin,
    /// if its etag matches `etag` (`None`: any).
    UpdateTwin {
        /// The twin patch.
        patch: Value,
        /// The etag each twin must have.
        etag: Option<String>,
    },
    /// `scheduleDeviceMethod`: call a direct method on each device.
    DeviceMethod(MethodInvocation),
}

/// A job to schedule (`PUT /jobs/v2/{id}`).
#[derive(Debug, Clone, PartialEq)]
pub struct JobRequest {
    /// The job's id (unique on the hub).
    pub job_id: String,
    /// The devices: a WHERE condition such as `tags.site = 'north'`, or `*` for all.
    pub query_condition: String,
    /// What to do to each device.
    pub action: JobAction,
    /// When to start (ISO 8601); `None` is now.
    pub start_time: Option<String>,
    /// How long the job may run before the hub stops it; `None` is the hub's default (an hour).
    pub max_execution_time_in_seconds: Option<u64>,
}

impl JobRequest {
    /// A twin-update job starting now.
    pub fn twin_update(job_id: &str, query_condition: &str, patch: Value) -> JobRequest {
        JobRequest {
            job_id: job_id.to_owned(),
            query_condition: query_condition.to_owned(),
            action: JobAction::UpdateTwin { patch, etag: None },
            start_time: None,
            max_execution_time_in_seconds: None,
        }
    }

    /// A direct-method job starting now.
    pub fn device_method(
        job_id: &str,
        query_condition: &str,
        invocation: MethodInvocation,
    ) -> JobRequest {
        JobRequest {
            job_id: job_id.to_owned(),
            query_condition: query_condition.to_owned(),
            action: JobAction::DeviceMethod(invocation),
            start_time: None,
            max_execution_time_in_seconds: None,
        }
    }

    /// The request body.
    fn to_json(&self) -> Result<Value, ClientError> {
        let mut body = Map::new();
        body.insert("jobId".into(), Value::from(self.job_id.clone()));
        match &self.action {
            JobAction::UpdateTwin { patch, etag } => {
                let mut update = match patch {
                    Value::Object(patch) => patch.clone(),
                    _ => {
                        return Err(ClientError::InvalidArgument(
                            "a twin-update job's patch must be a JSON object".to_owned(),
                        ));
                    }
                };
                update.insert(
                    "etag".into(),
                    Value::from(etag.clone().unwrap_or_else(|| "*".to_owned())),
                );
                body.insert("type".into(), Value::from("scheduleUpdateTwin"));
                body.insert("updateTwin".into(), Value::Object(update));
            }
            JobAction::DeviceMethod(invocation) => {
                let method = serde_json::to_value(invocation)
                    .map_err(|e| ClientError::InvalidArgument(e.to_string()))?;
                body.insert("type".into(), Value::from("scheduleDeviceMethod"));
                body.insert("cloudToDeviceMethod".into(), method);
            }
        }
        body.insert(
            "queryCondition".into(),
            Value::from(self.query_condition.clone()),
        );
        // Azure requires a start time; "now" is what the SDKs send by default.
        let start = self
            .start_time
            .clone()
            .unwrap_or_else(|| Timestamp::now().to_rfc3339());
        body.insert("startTime".into(), Value::from(start));
        if let Some(seconds) = self.max_execution_time_in_seconds {
            body.insert("maxExecutionTimeInSeconds".into(), Value::from(seconds));
        }
        Ok(Value::Object(body))
    }
}

impl ServiceClient {
    /// Schedules a job; the answer is the hub's job record (`jobId`, `status`, ...).
    pub async fn create_job(&self, job: &JobRequest) -> Result<Value, ClientError> {
        let request = self
            .request(Method::PUT, &["jobs", "v2", &job.job_id], &[])?
            .json(&job.to_json()?);
        Self::execute_json(request).await
    }

    /// A job's record: status, `deviceJobStatistics`, times.
    pub async fn get_job(&self, job_id: &str) -> Result<Value, ClientError> {
        Self::execute_json(self.request(Method::GET, &["jobs", "v2", job_id], &[])?).await
    }

    /// Cancels a job; devices it has not reached yet are left alone.
    pub async fn cancel_job(&self, job_id: &str) -> Result<Value, ClientError> {
        let segments = ["jobs", "v2", job_id, "cancel"];
        Self::execute_json(self.request(Method::POST, &segments, &[])?).await
    }

    /// Every job, newest first, optionally only of one `job_type` (`scheduleUpdateTwin`,
    /// `scheduleDeviceMethod`) and one `job_status` (`running`, `completed`, ...).
    pub async fn list_jobs(
        &self,
        job_type: Option<&str>,
        job_status: Option<&str>,
    ) -> Result<Vec<Value>, ClientError> {
        let mut query = Vec::new();
        if let Some(job_type) = job_type {
            query.push(("jobType", job_type));
        }
        if let Some(status) = job_status {
            query.push(("jobStatus", status));
        }
        let mut jobs = Vec::new();
        let mut continuation: Option<String> = None;
        loop {
            let mut request = self.request(Method::GET, &["jobs", "v2", "query"], &query)?;
            if let Some(token) = &continuation {
                let token = HeaderValue::from_str(token).map_err(|_| {
                    ClientError::UnexpectedResponse(
                        "the hub's continuation token is not header-safe".to_owned(),
                    )
                })?;
                request = request.header("x-ms-continuation", token);
            }
            let response = Self::execute(request).await?;
            let next = response
                .headers()
                .get("x-ms-continuation")
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .map(str::to_owned);
            let page: Vec<Value> = read_json(response).await?;
            jobs.extend(page);
            match next {
                Some(next) if continuation.as_deref() == Some(next.as_str()) => {
                    return Err(ClientError::UnexpectedResponse(
                        "the job list's continuation token did not advance".to_owned(),
                    ));
                }
                Some(next) => continuation = Some(next),
                None => return Ok(jobs),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn twin_update_body() {
        let mut job = JobRequest::twin_update("j1", "tags.site = 'a'", json!({"tags": {"x": 1}}));
        job.start_time = Some("2030-01-01T00:00:00Z".to_owned());
        job.max_execution_time_in_seconds = Some(60);
        assert_eq!(
            job.to_json().expect("body"),
            json!({
                "jobId": "j1",
                "type": "scheduleUpdateTwin",
                "updateTwin": {"tags": {"x": 1}, "etag": "*"},
                "queryCondition": "tags.site = 'a'",
                "startTime": "2030-01-01T00:00:00Z",
                "maxExecutionTimeInSeconds": 60,
            })
        );
    }

    #[test]
    fn method_body_starts_now_by_default() {
        let job = JobRequest::device_method(
            "j2",
            "*",
            MethodInvocation {
                method_name: "reboot".to_owned(),
                payload: Value::Null,
                response_timeout_in_seconds: Some(30),
                connect_timeout_in_seconds: None,
            },
        );
        let body = job.to_json().expect("body");
        assert_eq!(body["type"], "scheduleDeviceMethod");
        assert_eq!(
            body["cloudToDeviceMethod"],
            json!({"methodName": "reboot", "payload": null, "responseTimeoutInSeconds": 30})
        );
        let start = body["startTime"].as_str().expect("a start time");
        assert!(Timestamp::parse_rfc3339(start).is_some(), "{start}");
    }

    #[test]
    fn a_non_object_patch_is_refused() {
        let job = JobRequest::twin_update("j3", "*", json!([1]));
        assert!(matches!(
            job.to_json(),
            Err(ClientError::InvalidArgument(_))
        ));
    }
}
