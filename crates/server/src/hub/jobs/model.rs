//! The job model: what is stored per job and per device, the status machines, the statistics,
//! and the JSON shapes IoT Hub reports them in (JobResponse and the `devices.jobs` item).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use twinhub_core::time::Timestamp;
use twinhub_core::twin::{Change, ServiceUpdate};

use crate::hub::{IfMatch, MethodCall, MethodOutcome};

/// The two kinds of scheduled job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobType {
    ScheduleUpdateTwin,
    ScheduleDeviceMethod,
}

impl JobType {
    /// The wire name (`scheduleUpdateTwin`, `scheduleDeviceMethod`).
    pub fn as_str(self) -> &'static str {
        match self {
            JobType::ScheduleUpdateTwin => "scheduleUpdateTwin",
            JobType::ScheduleDeviceMethod => "scheduleDeviceMethod",
        }
    }

    /// Reads a wire name, ignoring case as IoT Hub does for enum values.
    pub fn parse(text: &str) -> Option<Self> {
        [JobType::ScheduleUpdateTwin, JobType::ScheduleDeviceMethod]
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(text))
    }
}

/// The life of a job: `queued`/`scheduled` → `running` → `completed`, or `cancelled`/`failed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobStatus {
    Queued,
    Scheduled,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl JobStatus {
    const ALL: [JobStatus; 6] = [
        JobStatus::Queued,
        JobStatus::Scheduled,
        JobStatus::Running,
        JobStatus::Completed,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ];

    /// The wire name (two Ls in `cancelled`, as IoT Hub spells it for jobs).
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Scheduled => "scheduled",
            JobStatus::Running => "running",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    /// Reads a wire name, ignoring case.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(text))
    }

    /// Whether the job still counts against the active-job limit.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            JobStatus::Queued | JobStatus::Scheduled | JobStatus::Running
        )
    }
}

/// The life of one device within a job. `canceled` has one L, as IoT Hub spells it for devices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceJobStatus {
    Pending,
    Running,
    Completed,
    Failed,
    Canceled,
}

impl DeviceJobStatus {
    fn as_str(self) -> &'static str {
        match self {
            DeviceJobStatus::Pending => "pending",
            DeviceJobStatus::Running => "running",
            DeviceJobStatus::Completed => "completed",
            DeviceJobStatus::Failed => "failed",
            DeviceJobStatus::Canceled => "canceled",
        }
    }

    /// Whether the device is done with (no further attempt will be made).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            DeviceJobStatus::Completed | DeviceJobStatus::Failed | DeviceJobStatus::Canceled
        )
    }
}

/// One section change of a twin job, stored as given (mirrors [`Change`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SectionChange {
    Patch(Map<String, Value>),
    Replace(Map<String, Value>),
}

impl From<Change> for SectionChange {
    fn from(change: Change) -> Self {
        match change {
            Change::Patch(map) => SectionChange::Patch(map),
            Change::Replace(map) => SectionChange::Replace(map),
        }
    }
}

impl SectionChange {
    fn to_change(&self) -> Change {
        match self {
            SectionChange::Patch(map) => Change::Patch(map.clone()),
            SectionChange::Replace(map) => Change::Replace(map.clone()),
        }
    }

    /// As the request carried it: a cleared section was sent as `null`.
    fn to_json(&self) -> Value {
        match self {
            SectionChange::Replace(map) if map.is_empty() => Value::Null,
            SectionChange::Patch(map) | SectionChange::Replace(map) => Value::Object(map.clone()),
        }
    }
}

/// What a job does to each device it targets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum JobAction {
    /// A service-side twin update, as `PATCH /twins/{id}` with `If-Match: etag`.
    UpdateTwin {
        tags: Option<SectionChange>,
        desired: Option<SectionChange>,
        /// The etag the update requires; absent or `*` matches any.
        etag: Option<String>,
    },
    /// A direct method call.
    DeviceMethod {
        method_name: String,
        payload: Value,
        response_timeout_secs: u64,
        connect_timeout_secs: u64,
    },
}

impl JobAction {
    /// A twin job from an already validated update.
    pub fn update_twin(update: ServiceUpdate, etag: Option<String>) -> Self {
        JobAction::UpdateTwin {
            tags: update.tags.map(SectionChange::from),
            desired: update.desired.map(SectionChange::from),
            etag,
        }
    }

    /// A method job from an already validated call.
    pub fn device_method(call: MethodCall) -> Self {
        JobAction::DeviceMethod {
            method_name: call.name,
            payload: call.payload,
            response_timeout_secs: call.response_timeout.as_secs(),
            connect_timeout_secs: call.connect_timeout.as_secs(),
        }
    }

    pub fn job_type(&self) -> JobType {
        match self {
            JobAction::UpdateTwin { .. } => JobType::ScheduleUpdateTwin,
            JobAction::DeviceMethod { .. } => JobType::ScheduleDeviceMethod,
        }
    }

    /// The update and precondition a twin job applies to each device.
    pub(super) fn twin_update(&self) -> Option<(ServiceUpdate, IfMatch)> {
        match self {
            JobAction::UpdateTwin {
                tags,
                desired,
                etag,
            } => Some((
                ServiceUpdate {
                    tags: tags.as_ref().map(SectionChange::to_change),
                    desired: desired.as_ref().map(SectionChange::to_change),
                },
                IfMatch::from_header(etag.as_deref()),
            )),
            JobAction::DeviceMethod { .. } => None,
        }
    }

    /// The call a method job makes to each device, waiting at most `connect_limit` for it to
    /// connect (the job's own connect timeout, cut short by its deadline).
    pub(super) fn method_call(&self, connect_limit: Duration) -> Option<MethodCall> {
        match self {
            JobAction::DeviceMethod {
                method_name,
                payload,
                response_timeout_secs,
                connect_timeout_secs,
            } => Some(MethodCall {
                name: method_name.clone(),
                payload: payload.clone(),
                response_timeout: Duration::from_secs(*response_timeout_secs),
                connect_timeout: Duration::from_secs(*connect_timeout_secs).min(connect_limit),
            }),
            JobAction::UpdateTwin { .. } => None,
        }
    }

    fn update_twin_json(&self) -> Option<Value> {
        let JobAction::UpdateTwin {
            tags,
            desired,
            etag,
        } = self
        else {
            return None;
        };
        let mut body = Map::new();
        if let Some(tags) = tags {
            body.insert("tags".into(), tags.to_json());
        }
        if let Some(desired) = desired {
            body.insert("properties".into(), json!({ "desired": desired.to_json() }));
        }
        if let Some(etag) = etag {
            body.insert("etag".into(), Value::from(etag.clone()));
        }
        Some(Value::Object(body))
    }

    fn cloud_to_device_method_json(&self) -> Option<Value> {
        let JobAction::DeviceMethod {
            method_name,
            payload,
            response_timeout_secs,
            connect_timeout_secs,
        } = self
        else {
            return None;
        };
        Some(json!({
            "methodName": method_name,
            "payload": payload,
            "responseTimeoutInSeconds": response_timeout_secs,
            "connectTimeoutInSeconds": connect_timeout_secs,
        }))
    }
}

/// A job as stored in `Table::Jobs`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub job_id: String,
    pub query_condition: String,
    pub action: JobAction,
    pub created: Timestamp,
    pub start: Timestamp,
    pub max_execution_secs: u64,
    pub status: JobStatus,
    pub end: Option<Timestamp>,
    pub failure_reason: Option<String>,
}

impl Job {
    /// After this instant no device is attempted any more.
    pub fn deadline(&self) -> Timestamp {
        self.start
            .plus_seconds(i64::try_from(self.max_execution_secs).unwrap_or(i64::MAX))
    }

    /// Ends the job in `status` at `now`.
    pub(super) fn finish(&mut self, status: JobStatus, now: Timestamp) {
        self.status = status;
        self.end = Some(now);
    }
}

/// A device's answer to a job's method call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceMethodResponse {
    pub status: i32,
    pub payload: Value,
}

impl From<MethodOutcome> for DeviceMethodResponse {
    fn from(outcome: MethodOutcome) -> Self {
        Self {
            status: outcome.status,
            payload: outcome.payload,
        }
    }
}

/// Why a device failed within a job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceJobError {
    pub code: String,
    pub description: String,
}

/// One device's record within a job, as stored in `Table::DeviceJobs`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceJob {
    pub device_id: String,
    pub status: DeviceJobStatus,
    pub created: Timestamp,
    pub last_updated: Timestamp,
    pub start: Option<Timestamp>,
    pub end: Option<Timestamp>,
    /// The device's answer (method jobs).
    pub outcome: Option<DeviceMethodResponse>,
    pub error: Option<DeviceJobError>,
}

impl DeviceJob {
    pub(super) fn pending(device_id: String, now: Timestamp) -> Self {
        Self {
            device_id,
            status: DeviceJobStatus::Pending,
            created: now,
            last_updated: now,
            start: None,
            end: None,
            outcome: None,
            error: None,
        }
    }

    /// The device is being worked on now.
    pub(super) fn begin(&mut self, now: Timestamp) {
        self.status = DeviceJobStatus::Running;
        self.start = Some(now);
        self.last_updated = now;
    }

    /// An attempt found the device offline: it waits for another.
    pub(super) fn defer(&mut self, error: DeviceJobError, now: Timestamp) {
        self.status = DeviceJobStatus::Pending;
        self.error = Some(error);
        self.last_updated = now;
    }

    /// The device is done with, in `status`.
    pub(super) fn finish(
        &mut self,
        status: DeviceJobStatus,
        outcome: Option<DeviceMethodResponse>,
        error: Option<DeviceJobError>,
        now: Timestamp,
    ) {
        self.status = status;
        self.outcome = outcome;
        self.error = error;
        self.end = Some(now);
        self.last_updated = now;
    }

    /// The `devices.jobs` query item.
    pub fn to_json(&self, job: &Job) -> Value {
        let mut doc = Map::new();
        doc.insert("deviceId".into(), Value::from(self.device_id.clone()));
        doc.insert("jobId".into(), Value::from(job.job_id.clone()));
        doc.insert(
            "jobType".into(),
            Value::from(job.action.job_type().as_str()),
        );
        doc.insert("status".into(), Value::from(self.status.as_str()));
        if let Some(start) = self.start {
            doc.insert("startTimeUtc".into(), Value::from(start.to_rfc3339()));
        }
        if let Some(end) = self.end {
            doc.insert("endTimeUtc".into(), Value::from(end.to_rfc3339()));
        }
        doc.insert(
            "createdDateTimeUtc".into(),
            Value::from(self.created.to_rfc3339()),
        );
        doc.insert(
            "lastUpdatedDateTimeUtc".into(),
            Value::from(self.last_updated.to_rfc3339()),
        );
        if let Some(outcome) = &self.outcome {
            doc.insert(
                "outcome".into(),
                json!({ "deviceMethodResponse": { "status": outcome.status, "payload": outcome.payload } }),
            );
        }
        if let Some(error) = &self.error {
            doc.insert(
                "error".into(),
                json!({ "code": error.code, "description": error.description }),
            );
        }
        Value::Object(doc)
    }
}

/// Live per-status device counts of a job.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JobStatistics {
    pub device_count: u64,
    pub failed_count: u64,
    pub succeeded_count: u64,
    pub running_count: u64,
    pub pending_count: u64,
}

impl JobStatistics {
    /// Counts from scratch.
    pub fn of<'a>(devices: impl IntoIterator<Item = &'a DeviceJob>) -> Self {
        let mut statistics = Self::default();
        for device in devices {
            statistics.add(device.status);
        }
        statistics
    }

    fn counter(&mut self, status: DeviceJobStatus) -> Option<&mut u64> {
        match status {
            DeviceJobStatus::Pending => Some(&mut self.pending_count),
            DeviceJobStatus::Running => Some(&mut self.running_count),
            DeviceJobStatus::Completed => Some(&mut self.succeeded_count),
            DeviceJobStatus::Failed => Some(&mut self.failed_count),
            DeviceJobStatus::Canceled => None,
        }
    }

    pub(super) fn add(&mut self, status: DeviceJobStatus) {
        self.device_count += 1;
        if let Some(counter) = self.counter(status) {
            *counter += 1;
        }
    }

    /// Moves one device from `from` to `to`.
    pub(super) fn transition(&mut self, from: DeviceJobStatus, to: DeviceJobStatus) {
        if let Some(counter) = self.counter(from) {
            *counter = counter.saturating_sub(1);
        }
        if let Some(counter) = self.counter(to) {
            *counter += 1;
        }
    }

    fn to_json(self) -> Value {
        json!({
            "deviceCount": self.device_count,
            "failedCount": self.failed_count,
            "succeededCount": self.succeeded_count,
            "runningCount": self.running_count,
            "pendingCount": self.pending_count,
        })
    }
}

/// A job with its live statistics: what `GET /jobs/v2/{id}` reports.
#[derive(Clone, Debug, PartialEq)]
pub struct JobView {
    pub job: Job,
    pub statistics: JobStatistics,
}

impl JobView {
    /// The JobResponse, with both spellings the real service uses for type and times (SDKs
    /// differ in which they read).
    pub fn to_json(&self) -> Value {
        let job = &self.job;
        let job_type = job.action.job_type().as_str();
        let created = job.created.to_rfc3339();
        let start = job.start.to_rfc3339();
        let mut doc = Map::new();
        doc.insert("jobId".into(), Value::from(job.job_id.clone()));
        doc.insert(
            "queryCondition".into(),
            Value::from(job.query_condition.clone()),
        );
        doc.insert("createdTime".into(), Value::from(created.clone()));
        doc.insert("createdDateTimeUtc".into(), Value::from(created));
        doc.insert("startTime".into(), Value::from(start.clone()));
        doc.insert("startTimeUtc".into(), Value::from(start));
        if let Some(end) = job.end {
            let end = end.to_rfc3339();
            doc.insert("endTime".into(), Value::from(end.clone()));
            doc.insert("endTimeUtc".into(), Value::from(end));
        }
        doc.insert(
            "maxExecutionTimeInSeconds".into(),
            Value::from(job.max_execution_secs),
        );
        doc.insert("type".into(), Value::from(job_type));
        doc.insert("jobType".into(), Value::from(job_type));
        if let Some(method) = job.action.cloud_to_device_method_json() {
            doc.insert("cloudToDeviceMethod".into(), method);
        }
        if let Some(update) = job.action.update_twin_json() {
            doc.insert("updateTwin".into(), update);
        }
        doc.insert("status".into(), Value::from(job.status.as_str()));
        if let Some(reason) = &job.failure_reason {
            doc.insert("failureReason".into(), Value::from(reason.clone()));
        }
        doc.insert("deviceJobStatistics".into(), self.statistics.to_json());
        Value::Object(doc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        Timestamp::parse_rfc3339(text).expect("valid timestamp")
    }

    fn twin_job() -> Job {
        let mut tags = Map::new();
        tags.insert("site".into(), Value::from("north"));
        Job {
            job_id: "job1".into(),
            query_condition: "deviceId IN ['d1', 'd2']".into(),
            action: JobAction::update_twin(
                ServiceUpdate {
                    tags: Some(Change::Patch(tags)),
                    desired: Some(Change::Replace(Map::new())),
                },
                Some("*".into()),
            ),
            created: at("2024-05-01T10:00:00Z"),
            start: at("2024-05-01T10:00:05Z"),
            max_execution_secs: 60,
            status: JobStatus::Completed,
            end: Some(at("2024-05-01T10:00:06Z")),
            failure_reason: None,
        }
    }

    #[test]
    fn job_response_json_has_both_spellings() {
        let view = JobView {
            job: twin_job(),
            statistics: JobStatistics {
                device_count: 2,
                failed_count: 1,
                succeeded_count: 1,
                running_count: 0,
                pending_count: 0,
            },
        };
        let text = serde_json::to_string(&view.to_json()).expect("serialisable");
        assert_eq!(
            text,
            concat!(
                r#"{"jobId":"job1","queryCondition":"deviceId IN ['d1', 'd2']","#,
                r#""createdTime":"2024-05-01T10:00:00.0000000Z","createdDateTimeUtc":"2024-05-01T10:00:00.0000000Z","#,
                r#""startTime":"2024-05-01T10:00:05.0000000Z","startTimeUtc":"2024-05-01T10:00:05.0000000Z","#,
                r#""endTime":"2024-05-01T10:00:06.0000000Z","endTimeUtc":"2024-05-01T10:00:06.0000000Z","#,
                r#""maxExecutionTimeInSeconds":60,"type":"scheduleUpdateTwin","jobType":"scheduleUpdateTwin","#,
                r#""updateTwin":{"tags":{"site":"north"},"properties":{"desired":null},"etag":"*"},"#,
                r#""status":"completed","#,
                r#""deviceJobStatistics":{"deviceCount":2,"failedCount":1,"succeededCount":1,"runningCount":0,"pendingCount":0}}"#
            )
        );
    }

    #[test]
    fn method_job_response_echoes_the_call_and_omits_what_is_unset() {
        let mut job = twin_job();
        job.action = JobAction::device_method(MethodCall {
            name: "reboot".into(),
            payload: json!({"delay": 5}),
            response_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(0),
        });
        job.status = JobStatus::Scheduled;
        job.end = None;
        let doc = JobView {
            job,
            statistics: JobStatistics::default(),
        }
        .to_json();
        assert_eq!(
            doc["cloudToDeviceMethod"],
            json!({"methodName":"reboot","payload":{"delay":5},"responseTimeoutInSeconds":30,"connectTimeoutInSeconds":0})
        );
        assert_eq!(doc["type"], "scheduleDeviceMethod");
        assert_eq!(doc["status"], "scheduled");
        for absent in [
            "updateTwin",
            "endTime",
            "endTimeUtc",
            "failureReason",
            "statusMessage",
        ] {
            assert!(doc.get(absent).is_none(), "{absent} should be absent");
        }
    }

    #[test]
    fn device_job_json_matches_the_query_item() {
        let job = twin_job();
        let mut device = DeviceJob::pending("d1".into(), at("2024-05-01T10:00:05Z"));
        device.begin(at("2024-05-01T10:00:05.5Z"));
        device.finish(
            DeviceJobStatus::Completed,
            Some(DeviceMethodResponse {
                status: 200,
                payload: json!({"ok": true}),
            }),
            None,
            at("2024-05-01T10:00:06Z"),
        );
        let text = serde_json::to_string(&device.to_json(&job)).expect("serialisable");
        assert_eq!(
            text,
            concat!(
                r#"{"deviceId":"d1","jobId":"job1","jobType":"scheduleUpdateTwin","status":"completed","#,
                r#""startTimeUtc":"2024-05-01T10:00:05.5000000Z","endTimeUtc":"2024-05-01T10:00:06.0000000Z","#,
                r#""createdDateTimeUtc":"2024-05-01T10:00:05.0000000Z","lastUpdatedDateTimeUtc":"2024-05-01T10:00:06.0000000Z","#,
                r#""outcome":{"deviceMethodResponse":{"status":200,"payload":{"ok":true}}}}"#
            )
        );
        let mut failed = DeviceJob::pending("d2".into(), at("2024-05-01T10:00:05Z"));
        failed.finish(
            DeviceJobStatus::Failed,
            None,
            Some(DeviceJobError {
                code: "DeviceNotOnline".into(),
                description: "offline".into(),
            }),
            at("2024-05-01T10:01:05Z"),
        );
        let doc = failed.to_json(&job);
        assert_eq!(doc["status"], "failed");
        assert_eq!(
            doc["error"],
            json!({"code":"DeviceNotOnline","description":"offline"})
        );
        assert!(doc.get("startTimeUtc").is_none());
    }

    #[test]
    fn status_names_round_trip_and_ignore_case() {
        for status in JobStatus::ALL {
            assert_eq!(JobStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(JobStatus::parse("CANCELLED"), Some(JobStatus::Cancelled));
        assert_eq!(JobStatus::parse("canceled"), None);
        assert_eq!(
            JobType::parse("ScheduleDeviceMethod"),
            Some(JobType::ScheduleDeviceMethod)
        );
        assert_eq!(JobType::parse("export"), None);
        assert!(JobStatus::Scheduled.is_active());
        assert!(!JobStatus::Cancelled.is_active());
    }

    #[test]
    fn twin_action_round_trips_to_the_update_it_was_made_from() {
        let job = twin_job();
        let (update, precondition) = job.action.twin_update().expect("a twin job");
        assert_eq!(precondition, IfMatch::Any);
        assert_eq!(update.desired, Some(Change::Replace(Map::new())));
        assert!(job.action.method_call(Duration::ZERO).is_none());
    }

    #[test]
    fn method_connect_timeout_is_cut_by_the_deadline() {
        let action = JobAction::device_method(MethodCall {
            name: "m".into(),
            payload: Value::Null,
            response_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(60),
        });
        let call = action
            .method_call(Duration::from_secs(10))
            .expect("a method job");
        assert_eq!(call.connect_timeout, Duration::from_secs(10));
        assert_eq!(call.response_timeout, Duration::from_secs(30));
    }

    proptest::proptest! {
        #[test]
        fn incremental_statistics_match_a_recount(moves in proptest::collection::vec((0usize..8, 0usize..5), 0..64)) {
            const STATUSES: [DeviceJobStatus; 5] = [
                DeviceJobStatus::Pending,
                DeviceJobStatus::Running,
                DeviceJobStatus::Completed,
                DeviceJobStatus::Failed,
                DeviceJobStatus::Canceled,
            ];
            let now = Timestamp::from_unix_seconds(0);
            let mut devices: Vec<DeviceJob> =
                (0..8).map(|i| DeviceJob::pending(format!("d{i}"), now)).collect();
            let mut statistics = JobStatistics::of(&devices);
            for (device, status) in moves {
                let to = STATUSES[status];
                statistics.transition(devices[device].status, to);
                devices[device].status = to;
            }
            proptest::prop_assert_eq!(statistics, JobStatistics::of(&devices));
        }
    }
}
