//! Scheduled jobs (jobs v2): twin updates and direct method calls run over the devices a query
//! condition selects, at a start time, within a maximum execution time.
//!
//! Jobs and their per-device records live in memory and are written through to the store
//! (`Table::Jobs`, `Table::DeviceJobs`). Every change is made under one lock and its batch is
//! submitted to the store inside the same critical section, so the store applies changes in the
//! order memory saw them; callers await durability after releasing the lock.
//!
//! Each device runs at most once: it is persisted `running` before the hub touches it, and a record
//! found `running` when the hub starts (it died mid-call) becomes `failed` with
//! `InterruptedByRestart` instead of being retried. The condition is expanded once, when the job
//! starts, over device twins only (module twins are not targeted).

mod model;
mod runner;

use std::collections::BTreeMap;
use std::sync::Mutex;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use twinhub_core::time::Timestamp;
use twinhub_store::{Batch, CommitFuture, Store, Table};

pub use model::{
    DeviceJob, DeviceJobError, DeviceJobStatus, DeviceMethodResponse, Job, JobAction,
    JobStatistics, JobStatus, JobType, JobView, SectionChange,
};

use super::{Hub, HubError};

/// How long finished jobs (and their device records) are kept, as IoT Hub does.
const HISTORY_DAYS: i64 = 30;
/// The longest `maxExecutionTimeInSeconds` accepted: one year.
pub const MAX_EXECUTION_SECS: u64 = 365 * 86_400;

/// Limits on scheduled jobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JobLimits {
    /// Queued, scheduled and running jobs at once; more are refused with 429004.
    pub max_active_jobs: usize,
    /// Devices processed per second, over all jobs together.
    pub devices_per_second: u32,
}

impl Default for JobLimits {
    fn default() -> Self {
        Self {
            max_active_jobs: 10,
            devices_per_second: 1000,
        }
    }
}

/// A job as a back end asks for it, already validated at the protocol edge except for what the
/// hub decides (id rules, condition syntax, limits).
#[derive(Clone, Debug)]
pub struct JobSpec {
    pub job_id: String,
    /// A WHERE-clause condition over twins, or `*` for every device.
    pub query_condition: String,
    pub action: JobAction,
    /// When to start; `None` means now.
    pub start: Option<Timestamp>,
    pub max_execution_secs: u64,
}

/// Which jobs `GET /jobs/v2/query` lists.
#[derive(Clone, Copy, Debug, Default)]
pub struct JobFilter {
    pub job_type: Option<JobType>,
    pub status: Option<JobStatus>,
}

struct JobState {
    job: Job,
    devices: BTreeMap<String, DeviceJob>,
    statistics: JobStatistics,
    /// Fired when the job is cancelled, so its executor stops dispatching.
    cancelled: CancellationToken,
}

impl JobState {
    fn new(job: Job, devices: BTreeMap<String, DeviceJob>) -> Self {
        let statistics = JobStatistics::of(devices.values());
        let cancelled = CancellationToken::new();
        if job.status == JobStatus::Cancelled {
            cancelled.cancel();
        }
        Self {
            job,
            devices,
            statistics,
            cancelled,
        }
    }

    fn view(&self) -> JobView {
        JobView {
            job: self.job.clone(),
            statistics: self.statistics,
        }
    }

    /// Moves a device to a new state (through `change`) and queues its record for the store.
    fn change_device(
        &mut self,
        device_id: &str,
        batch: &mut Batch,
        change: impl FnOnce(&mut DeviceJob),
    ) -> Result<(), HubError> {
        let Some(device) = self.devices.get_mut(device_id) else {
            return Ok(());
        };
        let before = device.status;
        change(device);
        self.statistics.transition(before, device.status);
        batch.put(
            Table::DeviceJobs,
            device_key(&self.job.job_id, device_id),
            encode(&*device)?,
        );
        Ok(())
    }

    /// Moves every device still pending through `change` (a cancel, or the deadline passing).
    fn change_pending(
        &mut self,
        batch: &mut Batch,
        mut change: impl FnMut(&mut DeviceJob),
    ) -> Result<(), HubError> {
        let pending: Vec<String> = self
            .devices
            .values()
            .filter(|d| d.status == DeviceJobStatus::Pending)
            .map(|d| d.device_id.clone())
            .collect();
        for device_id in pending {
            self.change_device(&device_id, batch, &mut change)?;
        }
        Ok(())
    }

    fn put_job(&self, batch: &mut Batch) -> Result<(), HubError> {
        batch.put(
            Table::Jobs,
            self.job.job_id.as_bytes().to_vec(),
            encode(&self.job)?,
        );
        Ok(())
    }

    fn is_expired_history(&self, now: Timestamp) -> bool {
        !self.job.status.is_active()
            && self
                .job
                .end
                .is_some_and(|end| end.plus_seconds(HISTORY_DAYS * 86_400) < now)
    }

    fn delete_rows(&self, batch: &mut Batch) {
        batch.delete(Table::Jobs, self.job.job_id.as_bytes().to_vec());
        for device_id in self.devices.keys() {
            batch.delete(Table::DeviceJobs, device_key(&self.job.job_id, device_id));
        }
    }
}

/// The jobs of a hub and what their runner shares.
pub(crate) struct Jobs {
    table: Mutex<BTreeMap<String, JobState>>,
    /// Serialises creation, so the duplicate and limit checks agree with the durable write.
    creating: tokio::sync::Mutex<()>,
    /// Wakes the runner when a job is created or cancelled.
    changed: Notify,
    limits: JobLimits,
    bucket: runner::TokenBucket,
}

/// `jobId NUL deviceId`: ids cannot contain NUL, and a job's devices sort together.
fn device_key(job_id: &str, device_id: &str) -> Vec<u8> {
    let mut key = job_id.as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(device_id.as_bytes());
    key
}

fn encode(value: &impl serde::Serialize) -> Result<Vec<u8>, HubError> {
    serde_json::to_vec(value).map_err(HubError::storage)
}

fn unreadable(table: &str, key: &[u8], error: &serde_json::Error) -> HubError {
    HubError::Storage(format!(
        "{table} row {:?} is unreadable: {error}",
        String::from_utf8_lossy(key)
    ))
}

impl Jobs {
    /// Loads every job and device record. Device records left `running` become `failed`
    /// (`InterruptedByRestart`) and expired history is dropped; those writes are added to
    /// `startup`, which the hub commits before it serves.
    pub(super) fn load(
        store: &dyn Store,
        limits: JobLimits,
        startup: Option<Batch>,
    ) -> Result<(Self, Option<Batch>), HubError> {
        let now = Timestamp::now();
        let mut batch = startup.unwrap_or_default();
        let mut jobs = BTreeMap::new();
        for (key, value) in store.load(Table::Jobs).map_err(HubError::storage)? {
            let job: Job =
                serde_json::from_slice(&value).map_err(|e| unreadable("job", &key, &e))?;
            jobs.insert(job.job_id.clone(), (job, BTreeMap::new()));
        }
        for (key, value) in store.load(Table::DeviceJobs).map_err(HubError::storage)? {
            let device: DeviceJob =
                serde_json::from_slice(&value).map_err(|e| unreadable("device job", &key, &e))?;
            let job_id = key.split(|b| *b == 0).next().unwrap_or_default();
            match jobs.get_mut(String::from_utf8_lossy(job_id).as_ref()) {
                Some((_, devices)) => {
                    devices.insert(device.device_id.clone(), device);
                }
                None => {
                    batch.delete(Table::DeviceJobs, key);
                }
            }
        }
        let mut table = BTreeMap::new();
        for (job_id, (job, devices)) in jobs {
            let mut state = JobState::new(job, devices);
            if state.is_expired_history(now) {
                state.delete_rows(&mut batch);
                continue;
            }
            let interrupted: Vec<String> = state
                .devices
                .values()
                .filter(|d| d.status == DeviceJobStatus::Running)
                .map(|d| d.device_id.clone())
                .collect();
            for device_id in interrupted {
                tracing::warn!(job_id = %job_id, device_id = %device_id, "device job interrupted by a restart; not run again");
                state.change_device(&device_id, &mut batch, |device| {
                    device.finish(
                        DeviceJobStatus::Failed,
                        None,
                        Some(DeviceJobError {
                            code: "InterruptedByRestart".into(),
                            description: "the hub stopped while this device was being processed; it is not run twice".into(),
                        }),
                        now,
                    );
                })?;
            }
            table.insert(job_id, state);
        }
        let jobs = Jobs {
            table: Mutex::new(table),
            creating: tokio::sync::Mutex::new(()),
            changed: Notify::new(),
            limits,
            bucket: runner::TokenBucket::new(limits.devices_per_second),
        };
        Ok((jobs, (!batch.is_empty()).then_some(batch)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, JobState>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `change` on a job under the lock and submits the writes it queued in the same
    /// critical section. `None` when the job no longer exists.
    fn update<R>(
        &self,
        store: &dyn Store,
        job_id: &str,
        change: impl FnOnce(&mut JobState, &mut Batch) -> Result<R, HubError>,
    ) -> Result<Option<(R, CommitFuture)>, HubError> {
        let mut table = self.lock();
        let Some(state) = table.get_mut(job_id) else {
            return Ok(None);
        };
        let mut batch = Batch::new();
        let result = change(state, &mut batch)?;
        Ok(Some((result, store.commit(batch))))
    }
}

fn validate_job_id(job_id: &str) -> Result<(), HubError> {
    twinhub_core::ids::validate_device_id(job_id).map_err(|_| {
        HubError::InvalidArgument(
            "jobId must be 1 to 128 ASCII letters, digits or -:.+%_#*?!(),=@;$'".into(),
        )
    })
}

impl Hub {
    fn jobs(&self) -> &Jobs {
        &self.0.jobs
    }

    /// Creates a job: `queued` if it starts now, `scheduled` if later.
    pub async fn create_job(&self, spec: JobSpec) -> Result<JobView, HubError> {
        validate_job_id(&spec.job_id)?;
        twinhub_query::parse_condition(&spec.query_condition)
            .map_err(|e| HubError::InvalidArgument(format!("invalid queryCondition: {e}")))?;
        if !(1..=MAX_EXECUTION_SECS).contains(&spec.max_execution_secs) {
            return Err(HubError::InvalidArgument(format!(
                "maxExecutionTimeInSeconds must be between 1 and {MAX_EXECUTION_SECS}"
            )));
        }
        let jobs = self.jobs();
        let _creating = jobs.creating.lock().await;
        {
            let table = jobs.lock();
            if table.contains_key(&spec.job_id) {
                return Err(HubError::JobAlreadyExists(spec.job_id));
            }
            let active = table.values().filter(|s| s.job.status.is_active()).count();
            if active >= jobs.limits.max_active_jobs {
                return Err(HubError::TooManyActiveJobs(jobs.limits.max_active_jobs));
            }
        }
        let now = Timestamp::now();
        let start = spec.start.unwrap_or(now);
        let job = Job {
            job_id: spec.job_id,
            query_condition: spec.query_condition,
            action: spec.action,
            created: now,
            start,
            max_execution_secs: spec.max_execution_secs,
            status: if start > now {
                JobStatus::Scheduled
            } else {
                JobStatus::Queued
            },
            end: None,
            failure_reason: None,
        };
        let state = JobState::new(job, BTreeMap::new());
        let mut batch = Batch::new();
        state.put_job(&mut batch)?;
        self.0
            .store
            .commit(batch)
            .await
            .map_err(HubError::storage)?;
        let view = state.view();
        jobs.lock().insert(view.job.job_id.clone(), state);
        jobs.changed.notify_one();
        Ok(view)
    }

    /// A job with its live statistics.
    pub fn get_job(&self, job_id: &str) -> Result<JobView, HubError> {
        self.jobs()
            .lock()
            .get(job_id)
            .map(JobState::view)
            .ok_or_else(|| HubError::JobNotFound(job_id.to_owned()))
    }

    /// Cancels an active job: devices not yet processed become `canceled`; devices in flight
    /// finish. A finished job is returned unchanged.
    pub async fn cancel_job(&self, job_id: &str) -> Result<JobView, HubError> {
        let now = Timestamp::now();
        let updated = self
            .jobs()
            .update(self.0.store.as_ref(), job_id, |state, batch| {
                if !state.job.status.is_active() {
                    return Ok(false);
                }
                state.job.finish(JobStatus::Cancelled, now);
                state.put_job(batch)?;
                state.change_pending(batch, |device| {
                    device.finish(DeviceJobStatus::Canceled, None, None, now);
                })?;
                state.cancelled.cancel();
                Ok(true)
            })?
            .ok_or_else(|| HubError::JobNotFound(job_id.to_owned()))?;
        let (changed, commit) = updated;
        commit.await.map_err(HubError::storage)?;
        if changed {
            self.jobs().changed.notify_one();
        }
        self.get_job(job_id)
    }

    /// Jobs matching `filter`, newest first (then by id).
    pub fn list_jobs(&self, filter: JobFilter) -> Vec<JobView> {
        let mut views: Vec<JobView> = self
            .jobs()
            .lock()
            .values()
            .filter(|s| filter.job_type.is_none_or(|t| s.job.action.job_type() == t))
            .filter(|s| filter.status.is_none_or(|st| s.job.status == st))
            .map(JobState::view)
            .collect();
        views.sort_by(|a, b| {
            b.job
                .created
                .cmp(&a.job.created)
                .then_with(|| a.job.job_id.cmp(&b.job.job_id))
        });
        views
    }

    /// Every per-device job record, as `SELECT * FROM devices.jobs` returns them (by job id,
    /// then device id).
    pub fn device_job_documents(&self) -> Vec<serde_json::Value> {
        self.jobs()
            .lock()
            .values()
            .flat_map(|state| {
                state
                    .devices
                    .values()
                    .map(|device| device.to_json(&state.job))
            })
            .collect()
    }

    /// Drops finished jobs older than the history limit.
    async fn prune_jobs(&self, now: Timestamp) -> Result<(), HubError> {
        let commit = {
            let mut table = self.jobs().lock();
            let expired: Vec<String> = table
                .values()
                .filter(|s| s.is_expired_history(now))
                .map(|s| s.job.job_id.clone())
                .collect();
            if expired.is_empty() {
                return Ok(());
            }
            let mut batch = Batch::new();
            for job_id in expired {
                if let Some(state) = table.remove(&job_id) {
                    state.delete_rows(&mut batch);
                }
            }
            self.0.store.commit(batch)
        };
        commit.await.map_err(HubError::storage)
    }
}

#[cfg(test)]
mod tests;
