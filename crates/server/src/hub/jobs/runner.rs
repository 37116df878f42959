//! Runs jobs: starts each at its start time, expands its condition once, then processes its
//! devices at a shared rate with bounded concurrency until all are done or the deadline passes.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use twinhub_core::time::Timestamp;

use super::{
    DeviceJob, DeviceJobError, DeviceJobStatus, DeviceMethodResponse, JobAction, JobStatus,
};
use crate::hub::{Hub, HubError, IdentityKey};

/// Devices of one job in flight at once (method calls wait on devices, so this bounds waiting,
/// not throughput).
const MAX_IN_FLIGHT_PER_JOB: usize = 64;
/// How often a method job checks whether its offline devices have connected.
const OFFLINE_RECHECK: Duration = Duration::from_secs(1);
/// How often expired job history is pruned.
const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);

/// A token bucket shared by every job: at most `rate` devices per second, bursts of one second.
pub(super) struct TokenBucket {
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    pub(super) fn new(devices_per_second: u32) -> Self {
        let rate = f64::from(devices_per_second.max(1));
        Self {
            rate,
            state: Mutex::new((rate, Instant::now())),
        }
    }

    /// Takes a token at `now`, or says how long until one is available.
    fn try_take(&self, now: Instant) -> Result<(), Duration> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, last) = &mut *state;
        let elapsed = now.saturating_duration_since(*last).as_secs_f64();
        *tokens = (*tokens + elapsed * self.rate).min(self.rate);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.rate))
        }
    }

    async fn take(&self) {
        while let Err(wait) = self.try_take(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
    }
}

/// The monotonic instant of a wall-clock timestamp (now, if it is in the past).
fn instant_of(at: Timestamp) -> Instant {
    let ahead = at.ticks().saturating_sub(Timestamp::now().ticks());
    let nanos = u64::try_from(ahead).unwrap_or(0).saturating_mul(100);
    Instant::now() + Duration::from_nanos(nanos)
}

/// What one attempt at one device came to.
enum Attempt {
    Done,
    /// The device has no method session; try again later (until the deadline).
    Offline,
}

fn device_error(error: &HubError) -> DeviceJobError {
    DeviceJobError {
        code: crate::error_code(error).name().to_owned(),
        description: error.to_string(),
    }
}

impl Hub {
    /// Runs scheduled jobs until `shutdown` fires. Jobs left unfinished by a previous run resume.
    pub async fn run_jobs(self, shutdown: CancellationToken) {
        let mut executing: HashSet<String> = HashSet::new();
        let mut executors: JoinSet<String> = JoinSet::new();
        let mut next_prune = Instant::now();
        loop {
            let now = Timestamp::now();
            if Instant::now() >= next_prune {
                if let Err(e) = self.prune_jobs(now).await {
                    tracing::error!(error = %e, "pruning job history failed");
                }
                next_prune = Instant::now() + PRUNE_INTERVAL;
            }
            let mut next_start: Option<Timestamp> = None;
            let due: Vec<String> = {
                let table = self.jobs().lock();
                table
                    .values()
                    .filter(|s| s.job.status.is_active() && !executing.contains(&s.job.job_id))
                    .filter(|s| {
                        let due = s.job.status == JobStatus::Running || s.job.start <= now;
                        if !due {
                            next_start =
                                Some(next_start.map_or(s.job.start, |t| t.min(s.job.start)));
                        }
                        due
                    })
                    .map(|s| s.job.job_id.clone())
                    .collect()
            };
            for job_id in due {
                executing.insert(job_id.clone());
                let hub = self.clone();
                executors.spawn(async move {
                    hub.execute_job(&job_id).await;
                    job_id
                });
            }
            let wake = next_start
                .map(instant_of)
                .unwrap_or(next_prune)
                .min(next_prune);
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.jobs().changed.notified() => {}
                Some(done) = executors.join_next(), if !executors.is_empty() => {
                    match done {
                        Ok(job_id) => { executing.remove(&job_id); }
                        Err(e) => tracing::error!(error = %e, "a job executor failed"),
                    }
                }
                () = tokio::time::sleep_until(wake) => {}
            }
        }
        // Devices in flight are abandoned: their records stay `running` and are marked
        // interrupted on the next start, never run twice.
        executors.shutdown().await;
    }

    /// Takes one job from its start to its end.
    async fn execute_job(&self, job_id: &str) {
        if let Err(e) = self.run_job(job_id).await {
            tracing::error!(job_id, error = %e, "job failed");
            let now = Timestamp::now();
            let failed = self
                .jobs()
                .update(self.0.store.as_ref(), job_id, |state, batch| {
                    if state.job.status.is_active() {
                        state.job.finish(JobStatus::Failed, now);
                        state.job.failure_reason = Some(e.to_string());
                        state.put_job(batch)?;
                    }
                    Ok(())
                });
            if let Ok(Some(((), commit))) = failed
                && let Err(e) = commit.await
            {
                tracing::error!(job_id, error = %e, "recording a job's failure failed");
            }
        }
    }

    /// Expands the job's condition into its device records (once), persisting them with the
    /// `running` status in one batch. Returns `false` if the job is no longer active.
    async fn expand(&self, job_id: &str) -> Result<bool, HubError> {
        let Some(condition) = ({
            let table = self.jobs().lock();
            table.get(job_id).and_then(|s| {
                matches!(s.job.status, JobStatus::Queued | JobStatus::Scheduled)
                    .then(|| s.job.query_condition.clone())
            })
        }) else {
            return Ok(true);
        };
        let condition = twinhub_query::parse_condition(&condition)
            .map_err(|e| HubError::InvalidArgument(format!("invalid queryCondition: {e}")))?;
        let targets = self.query_identities(&condition, false);
        let now = Timestamp::now();
        let Some((active, commit)) =
            self.jobs()
                .update(self.0.store.as_ref(), job_id, |state, batch| {
                    if !matches!(state.job.status, JobStatus::Queued | JobStatus::Scheduled) {
                        return Ok(state.job.status.is_active());
                    }
                    state.job.status = JobStatus::Running;
                    for key in &targets {
                        let device = DeviceJob::pending(key.device_id.clone(), now);
                        state.statistics.add(device.status);
                        batch.put(
                            super::Table::DeviceJobs,
                            super::device_key(job_id, &key.device_id),
                            super::encode(&device)?,
                        );
                        state.devices.insert(key.device_id.clone(), device);
                    }
                    if targets.is_empty() {
                        state.job.finish(JobStatus::Completed, now);
                    }
                    state.put_job(batch)?;
                    Ok(!targets.is_empty())
                })?
        else {
            return Ok(false);
        };
        commit.await.map_err(HubError::storage)?;
        tracing::info!(job_id, devices = targets.len(), "job started");
        Ok(active)
    }

    async fn run_job(&self, job_id: &str) -> Result<(), HubError> {
        if !self.expand(job_id).await? {
            return Ok(());
        }
        let (action, deadline, cancelled, mut fresh) = {
            let table = self.jobs().lock();
            let Some(state) = table.get(job_id) else {
                return Ok(());
            };
            if state.job.status != JobStatus::Running {
                return Ok(());
            }
            let fresh: VecDeque<String> = state
                .devices
                .values()
                .filter(|d| d.status == DeviceJobStatus::Pending)
                .map(|d| d.device_id.clone())
                .collect();
            (
                state.job.action.clone(),
                state.job.deadline(),
                state.cancelled.clone(),
                fresh,
            )
        };
        let deadline_instant = instant_of(deadline);
        let method_job = matches!(action, JobAction::DeviceMethod { .. });
        // Offline devices of a method job, each with when to look again; in time order.
        let mut offline: VecDeque<(Instant, String)> = VecDeque::new();
        let mut in_flight: JoinSet<(String, Attempt)> = JoinSet::new();
        let mut expired = false;
        loop {
            if cancelled.is_cancelled() {
                break;
            }
            if Instant::now() >= deadline_instant {
                expired = true;
                break;
            }
            while in_flight.len() < MAX_IN_FLIGHT_PER_JOB {
                let Some(device_id) = self.next_device(method_job, &mut fresh, &mut offline) else {
                    break;
                };
                tokio::select! {
                    () = self.jobs().bucket.take() => {}
                    () = cancelled.cancelled() => break,
                    () = tokio::time::sleep_until(deadline_instant) => break,
                }
                let hub = self.clone();
                let (job_id, action) = (job_id.to_owned(), action.clone());
                in_flight.spawn(async move {
                    let attempt = hub
                        .process_device(&job_id, &device_id, &action, deadline)
                        .await;
                    (device_id, attempt)
                });
            }
            if fresh.is_empty() && offline.is_empty() && in_flight.is_empty() {
                break;
            }
            let recheck = offline
                .front()
                .map_or(deadline_instant, |(at, _)| *at)
                .min(deadline_instant);
            tokio::select! {
                Some(done) = in_flight.join_next(), if !in_flight.is_empty() => match done {
                    Ok((device_id, Attempt::Offline)) => {
                        offline.push_back((Instant::now() + OFFLINE_RECHECK, device_id));
                    }
                    Ok((_, Attempt::Done)) => {}
                    Err(e) => tracing::error!(job_id, error = %e, "a device task failed"),
                },
                () = cancelled.cancelled() => {}
                () = tokio::time::sleep_until(recheck) => {}
            }
        }
        // Devices in flight finish (method calls are bounded by their timeouts).
        while in_flight.join_next().await.is_some() {}
        self.finish_job(job_id, expired).await
    }

    /// The next device to attempt: fresh ones first, then offline ones whose recheck is due and
    /// which now have a method session (others go back to wait, without costing a token).
    fn next_device(
        &self,
        method_job: bool,
        fresh: &mut VecDeque<String>,
        offline: &mut VecDeque<(Instant, String)>,
    ) -> Option<String> {
        let reachable = |device_id: &str| {
            !method_job
                || self
                    .sessions()
                    .method_session(&IdentityKey::device(device_id))
                    .is_some()
        };
        while let Some(device_id) = fresh.pop_front() {
            if reachable(&device_id) {
                return Some(device_id);
            }
            offline.push_back((Instant::now() + OFFLINE_RECHECK, device_id));
        }
        let now = Instant::now();
        let due = offline.iter().take_while(|(at, _)| *at <= now).count();
        for _ in 0..due {
            let (_, device_id) = offline.pop_front()?;
            if reachable(&device_id) {
                return Some(device_id);
            }
            offline.push_back((now + OFFLINE_RECHECK, device_id));
        }
        None
    }

    /// Marks the job done: past its deadline, devices still pending fail.
    async fn finish_job(&self, job_id: &str, expired: bool) -> Result<(), HubError> {
        let now = Timestamp::now();
        let Some(((), commit)) =
            self.jobs()
                .update(self.0.store.as_ref(), job_id, |state, batch| {
                    if state.job.status != JobStatus::Running {
                        return Ok(());
                    }
                    if expired {
                        let method_job = matches!(state.job.action, JobAction::DeviceMethod { .. });
                        let deadline_error = if method_job {
                            DeviceJobError {
                                code: "DeviceNotOnline".into(),
                                description: "the device did not connect before the job's \
                                          maximum execution time"
                                    .into(),
                            }
                        } else {
                            DeviceJobError {
                                code: "MaxExecutionTimeExceeded".into(),
                                description: "the job's maximum execution time passed before the \
                                          device was processed"
                                    .into(),
                            }
                        };
                        state.change_pending(batch, |device| {
                            let error = device
                                .error
                                .take()
                                .unwrap_or_else(|| deadline_error.clone());
                            device.finish(DeviceJobStatus::Failed, None, Some(error), now);
                        })?;
                    }
                    state.job.finish(JobStatus::Completed, now);
                    state.put_job(batch)
                })?
        else {
            return Ok(());
        };
        commit.await.map_err(HubError::storage)?;
        tracing::info!(job_id, "job completed");
        Ok(())
    }

    /// Processes one device: persists it `running`, acts, persists the result.
    async fn process_device(
        &self,
        job_id: &str,
        device_id: &str,
        action: &JobAction,
        deadline: Timestamp,
    ) -> Attempt {
        let now = Timestamp::now();
        let began = self
            .jobs()
            .update(self.0.store.as_ref(), job_id, |state, batch| {
                let runnable = state.job.status == JobStatus::Running
                    && state
                        .devices
                        .get(device_id)
                        .is_some_and(|d| d.status == DeviceJobStatus::Pending);
                if runnable {
                    state.change_device(device_id, batch, |device| device.begin(now))?;
                }
                Ok(runnable)
            });
        match began {
            Ok(Some((true, commit))) => {
                if let Err(e) = commit.await {
                    // Not durably `running`: acting now could run the device twice after a crash.
                    tracing::error!(job_id, device_id, error = %e, "cannot record a device job");
                    self.record_device(job_id, device_id, |device, _| {
                        device.finish(
                            DeviceJobStatus::Failed,
                            None,
                            Some(device_error(&HubError::storage(&e))),
                            Timestamp::now(),
                        );
                    })
                    .await;
                    return Attempt::Done;
                }
            }
            Ok(_) => return Attempt::Done,
            Err(e) => {
                tracing::error!(job_id, device_id, error = %e, "cannot record a device job");
                return Attempt::Done;
            }
        }
        let key = IdentityKey::device(device_id);
        let result = if let Some((update, precondition)) = action.twin_update() {
            self.update_twin(&key, update, &precondition)
                .await
                .map(|_| None)
        } else {
            let remaining = deadline.ticks().saturating_sub(Timestamp::now().ticks());
            let remaining =
                Duration::from_nanos(u64::try_from(remaining).unwrap_or(0).saturating_mul(100));
            match action.method_call(remaining) {
                Some(call) => self
                    .invoke_method(&key, call)
                    .await
                    .map(|outcome| Some(DeviceMethodResponse::from(outcome))),
                None => Ok(None),
            }
        };
        let offline = matches!(result, Err(HubError::DeviceNotOnline));
        self.record_device(job_id, device_id, |device, job_running| {
            let now = Timestamp::now();
            match result {
                Ok(outcome) => device.finish(DeviceJobStatus::Completed, outcome, None, now),
                // Never delivered, so it may be tried again while the job lasts.
                Err(HubError::DeviceNotOnline) if job_running => {
                    device.defer(device_error(&HubError::DeviceNotOnline), now);
                }
                // The job was cancelled meanwhile: the call never reached the device.
                Err(HubError::DeviceNotOnline) => {
                    device.finish(DeviceJobStatus::Canceled, None, None, now);
                }
                Err(e) => device.finish(DeviceJobStatus::Failed, None, Some(device_error(&e)), now),
            }
        })
        .await;
        if offline {
            Attempt::Offline
        } else {
            Attempt::Done
        }
    }

    /// Applies a change to one device record (told whether the job is still running) and waits
    /// until it is durable.
    async fn record_device(
        &self,
        job_id: &str,
        device_id: &str,
        change: impl FnOnce(&mut DeviceJob, bool),
    ) {
        let recorded = self
            .jobs()
            .update(self.0.store.as_ref(), job_id, |state, batch| {
                let job_running = state.job.status == JobStatus::Running;
                state.change_device(device_id, batch, |device| change(device, job_running))
            });
        let outcome = match recorded {
            Ok(Some(((), commit))) => commit.await.map_err(HubError::storage),
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = outcome {
            tracing::error!(job_id, device_id, error = %e, "cannot record a device job");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_a_one_second_burst_then_the_rate() {
        let bucket = TokenBucket::new(4);
        let start = Instant::now();
        for _ in 0..4 {
            assert_eq!(bucket.try_take(start), Ok(()));
        }
        let wait = bucket.try_take(start).expect_err("the burst is spent");
        assert!(wait > Duration::from_millis(240) && wait <= Duration::from_millis(250));
        assert_eq!(bucket.try_take(start + Duration::from_millis(250)), Ok(()));
        assert!(bucket.try_take(start + Duration::from_millis(260)).is_err());
    }

    #[test]
    fn bucket_never_holds_more_than_one_second_of_tokens() {
        let bucket = TokenBucket::new(2);
        let later = Instant::now() + Duration::from_secs(60);
        assert_eq!(bucket.try_take(later), Ok(()));
        assert_eq!(bucket.try_take(later), Ok(()));
        assert!(bucket.try_take(later).is_err());
    }

    #[test]
    fn a_zero_rate_is_treated_as_one_per_second() {
        let bucket = TokenBucket::new(0);
        let now = Instant::now();
        assert_eq!(bucket.try_take(now), Ok(()));
        assert!(bucket.try_take(now).is_err());
    }
}
