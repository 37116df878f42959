use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;
use twinhub_core::time::Timestamp;
use twinhub_core::twin::{Change, ServiceUpdate};
use twinhub_store::{MemoryStore, RedbStore, Store};

use super::*;
use crate::hub::test_support::open_hub_with;
use crate::hub::{IdentityKey, IdentitySpec, MethodCall, MethodOutcome, Outbound, SessionGuard};

async fn open(store: Arc<dyn Store>) -> Hub {
    open_hub_with(store, JobLimits::default()).await
}

async fn with_devices(hub: &Hub, ids: &[&str]) {
    for id in ids {
        hub.create_identity(IdentitySpec::sas_device(*id))
            .await
            .expect("device created");
    }
}

fn run(hub: &Hub) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let stop = CancellationToken::new();
    let runner = tokio::spawn(hub.clone().run_jobs(stop.clone()));
    (stop, runner)
}

fn tag_job(job_id: &str, condition: &str, start: Option<Timestamp>, max_secs: u64) -> JobSpec {
    let mut tags = Map::new();
    tags.insert("site".into(), Value::from("north"));
    JobSpec {
        job_id: job_id.into(),
        query_condition: condition.into(),
        action: JobAction::update_twin(
            ServiceUpdate {
                tags: Some(Change::Patch(tags)),
                desired: None,
            },
            Some("*".into()),
        ),
        start,
        max_execution_secs: max_secs,
    }
}

fn method_job(job_id: &str, condition: &str, max_secs: u64) -> JobSpec {
    JobSpec {
        job_id: job_id.into(),
        query_condition: condition.into(),
        action: JobAction::device_method(MethodCall {
            name: "reboot".into(),
            payload: json!({"delay": 1}),
            response_timeout: Duration::from_secs(5),
            connect_timeout: Duration::ZERO,
        }),
        start: None,
        max_execution_secs: max_secs,
    }
}

async fn wait_for(hub: &Hub, job_id: &str, status: JobStatus) -> JobView {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let view = hub.get_job(job_id).expect("the job exists");
        if view.job.status == status {
            return view;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job {job_id} stayed {:?}",
            view.job.status
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn device_docs(hub: &Hub, job_id: &str) -> Vec<Value> {
    hub.device_job_documents()
        .into_iter()
        .filter(|d| d["jobId"] == job_id)
        .collect()
}

/// A connected device subscribed to methods that answers each call with `answer(name)`.
async fn responder(
    hub: &Hub,
    device_id: &str,
    answer: Option<i32>,
) -> (SessionGuard, tokio::task::JoinHandle<Vec<String>>) {
    let (guard, mut rx, _) = hub
        .attach(IdentityKey::device(device_id), true)
        .await
        .expect("attached");
    hub.subscribe(guard.session(), |s| s.methods = true)
        .await
        .expect("subscribed");
    let session = Arc::clone(guard.session());
    let calls = tokio::spawn(async move {
        let mut calls = Vec::new();
        while let Some(message) = rx.recv().await {
            match message {
                Outbound::MethodRequest { name, rid, .. } => {
                    calls.push(name);
                    if let Some(status) = answer {
                        session.complete_method(
                            &rid,
                            MethodOutcome {
                                status,
                                payload: json!({"done": true}),
                            },
                        );
                    }
                }
                Outbound::Close { .. } => break,
                Outbound::DesiredPatch { .. } => {}
            }
        }
        calls
    });
    (guard, calls)
}

#[tokio::test]
async fn twin_job_updates_the_matching_devices_and_completes() {
    let hub = open(Arc::new(MemoryStore::new())).await;
    with_devices(&hub, &["d1", "d2", "d3"]).await;
    let (stop, runner) = run(&hub);
    let created = hub
        .create_job(tag_job("tags", "deviceId IN ['d1', 'd2']", None, 60))
        .await
        .expect("created");
    assert!(matches!(
        created.job.status,
        JobStatus::Queued | JobStatus::Running
    ));
    let done = wait_for(&hub, "tags", JobStatus::Completed).await;
    assert_eq!(
        done.statistics,
        JobStatistics {
            device_count: 2,
            succeeded_count: 2,
            ..JobStatistics::default()
        }
    );
    assert!(done.job.end.is_some());
    for (id, tagged) in [("d1", true), ("d2", true), ("d3", false)] {
        let (record, _) = hub.get_identity(&IdentityKey::device(id)).expect("device");
        assert_eq!(record.twin.tags.get("site").is_some(), tagged, "{id}");
    }
    let docs = device_docs(&hub, "tags");
    assert_eq!(docs.len(), 2);
    assert!(docs.iter().all(|d| d["status"] == "completed"
        && d["jobType"] == "scheduleUpdateTwin"
        && d.get("endTimeUtc").is_some()));
    stop.cancel();
    runner.await.expect("runner stops");
}

#[tokio::test]
async fn a_job_matching_nothing_completes_at_once() {
    let hub = open(Arc::new(MemoryStore::new())).await;
    let (stop, runner) = run(&hub);
    hub.create_job(tag_job("empty", "deviceId = 'nobody'", None, 60))
        .await
        .expect("created");
    let done = wait_for(&hub, "empty", JobStatus::Completed).await;
    assert_eq!(done.statistics, JobStatistics::default());
    stop.cancel();
    runner.await.expect("runner stops");
}

#[tokio::test]
async fn method_job_calls_online_devices_waits_for_late_ones_and_fails_absent_ones() {
    let hub = open(Arc::new(MemoryStore::new())).await;
    with_devices(&hub, &["on", "late", "off"]).await;
    let (_on, on_calls) = responder(&hub, "on", Some(201)).await;
    let (stop, runner) = run(&hub);
    hub.create_job(method_job("calls", "*", 3))
        .await
        .expect("created");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (late, late_calls) = responder(&hub, "late", Some(200)).await;
    let done = wait_for(&hub, "calls", JobStatus::Completed).await;
    assert_eq!(
        done.statistics,
        JobStatistics {
            device_count: 3,
            succeeded_count: 2,
            failed_count: 1,
            ..JobStatistics::default()
        }
    );
    let docs = device_docs(&hub, "calls");
    let by_id = |id: &str| {
        docs.iter()
            .find(|d| d["deviceId"] == id)
            .cloned()
            .expect("a record per device")
    };
    assert_eq!(
        by_id("on")["outcome"],
        json!({"deviceMethodResponse": {"status": 201, "payload": {"done": true}}})
    );
    assert_eq!(by_id("late")["status"], "completed");
    assert_eq!(by_id("off")["status"], "failed");
    assert_eq!(by_id("off")["error"]["code"], "DeviceNotOnline");
    drop(late);
    stop.cancel();
    runner.await.expect("runner stops");
    hub.sessions()
        .close_identity(&IdentityKey::device("on"), "test over");
    assert_eq!(on_calls.await.expect("responder"), vec!["reboot"]);
    assert_eq!(late_calls.await.expect("responder"), vec!["reboot"]);
}

#[tokio::test]
async fn cancelling_a_scheduled_job_keeps_it_from_running() {
    let hub = open(Arc::new(MemoryStore::new())).await;
    with_devices(&hub, &["d1"]).await;
    let (stop, runner) = run(&hub);
    let later = Timestamp::now().plus_seconds(3600);
    let created = hub
        .create_job(tag_job("later", "*", Some(later), 60))
        .await
        .expect("created");
    assert_eq!(created.job.status, JobStatus::Scheduled);
    let cancelled = hub.cancel_job("later").await.expect("cancelled");
    assert_eq!(cancelled.job.status, JobStatus::Cancelled);
    assert!(cancelled.job.end.is_some());
    let again = hub.cancel_job("later").await.expect("unchanged");
    assert_eq!(again, cancelled);
    assert!(matches!(
        hub.cancel_job("nope").await,
        Err(HubError::JobNotFound(_))
    ));
    assert!(matches!(hub.get_job("nope"), Err(HubError::JobNotFound(_))));
    stop.cancel();
    runner.await.expect("runner stops");
    let (record, _) = hub
        .get_identity(&IdentityKey::device("d1"))
        .expect("device");
    assert!(record.twin.tags.is_empty());
}

#[tokio::test]
async fn cancelling_a_running_method_job_cancels_its_waiting_devices() {
    let hub = open(Arc::new(MemoryStore::new())).await;
    with_devices(&hub, &["off1", "off2"]).await;
    let (stop, runner) = run(&hub);
    hub.create_job(method_job("waiting", "*", 600))
        .await
        .expect("created");
    let running = wait_for(&hub, "waiting", JobStatus::Running).await;
    assert_eq!(running.statistics.pending_count, 2);
    let cancelled = hub.cancel_job("waiting").await.expect("cancelled");
    assert_eq!(cancelled.job.status, JobStatus::Cancelled);
    assert_eq!(cancelled.statistics.pending_count, 0);
    assert!(
        device_docs(&hub, "waiting")
            .iter()
            .all(|d| d["status"] == "canceled")
    );
    stop.cancel();
    runner.await.expect("runner stops");
}

#[tokio::test]
async fn creation_enforces_ids_conditions_and_limits() {
    let limits = JobLimits {
        max_active_jobs: 1,
        devices_per_second: 100,
    };
    let hub = open_hub_with(Arc::new(MemoryStore::new()), limits).await;
    let later = Timestamp::now().plus_seconds(3600);
    hub.create_job(tag_job("first", "*", Some(later), 60))
        .await
        .expect("created");
    assert!(matches!(
        hub.create_job(tag_job("first", "*", Some(later), 60)).await,
        Err(HubError::JobAlreadyExists(_))
    ));
    assert!(matches!(
        hub.create_job(tag_job("second", "*", Some(later), 60))
            .await,
        Err(HubError::TooManyActiveJobs(1))
    ));
    hub.cancel_job("first").await.expect("cancelled");
    for bad in [
        tag_job("bad/id", "*", None, 60),
        tag_job("", "*", None, 60),
        tag_job("select", "SELECT * FROM devices", None, 60),
        tag_job("zero", "*", None, 0),
        tag_job("long", "*", None, MAX_EXECUTION_SECS + 1),
    ] {
        let id = bad.job_id.clone();
        assert!(
            matches!(hub.create_job(bad).await, Err(HubError::InvalidArgument(_))),
            "{id} should be refused"
        );
    }
    hub.create_job(tag_job("second", "*", Some(later), 60))
        .await
        .expect("room again after the cancel");
    let listed: Vec<String> = hub
        .list_jobs(JobFilter::default())
        .into_iter()
        .map(|v| v.job.job_id)
        .collect();
    assert_eq!(listed, ["second", "first"]);
    let cancelled = hub.list_jobs(JobFilter {
        status: Some(JobStatus::Cancelled),
        job_type: None,
    });
    assert_eq!(cancelled.len(), 1);
    assert!(
        hub.list_jobs(JobFilter {
            job_type: Some(JobType::ScheduleDeviceMethod),
            status: None,
        })
        .is_empty()
    );
}

#[tokio::test]
async fn a_job_scheduled_before_a_restart_runs_once_after_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("twinhub.redb");
    let versions_before = {
        let store: Arc<dyn Store> = Arc::new(RedbStore::open(&path).expect("store"));
        let hub = open(store).await;
        with_devices(&hub, &["d1", "d2", "d3"]).await;
        let start = Timestamp::now().plus_seconds(1);
        hub.create_job(tag_job("restart", "*", Some(start), 60))
            .await
            .expect("created");
        let versions: Vec<i64> = ["d1", "d2", "d3"]
            .iter()
            .map(|id| {
                hub.get_identity(&IdentityKey::device(*id))
                    .expect("device")
                    .0
                    .twin
                    .version
            })
            .collect();
        hub.shutdown_store();
        versions
    };
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(&path).expect("store reopens"));
    let hub = open(store).await;
    assert_eq!(
        hub.get_job("restart").expect("kept").job.status,
        JobStatus::Scheduled
    );
    let (stop, runner) = run(&hub);
    let done = wait_for(&hub, "restart", JobStatus::Completed).await;
    assert_eq!(done.statistics.succeeded_count, 3);
    for (id, before) in ["d1", "d2", "d3"].iter().zip(versions_before) {
        let (record, _) = hub.get_identity(&IdentityKey::device(*id)).expect("device");
        assert_eq!(record.twin.version, before + 1, "{id} updated exactly once");
        assert_eq!(record.twin.tags["site"], "north");
    }
    stop.cancel();
    runner.await.expect("runner stops");
    hub.shutdown_store();
}

#[tokio::test]
async fn a_device_interrupted_by_a_restart_fails_instead_of_running_twice() {
    let store = Arc::new(MemoryStore::new());
    {
        let hub = open(Arc::clone(&store) as Arc<dyn Store>).await;
        with_devices(&hub, &["slow"]).await;
        // Subscribed to methods but never answers: the call is in flight when the hub "dies".
        let (_session, _calls) = responder(&hub, "slow", None).await;
        let (stop, runner) = run(&hub);
        hub.create_job(method_job("interrupted", "*", 60))
            .await
            .expect("created");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while device_docs(&hub, "interrupted")
            .first()
            .is_none_or(|d| d["status"] != "running")
        {
            assert!(tokio::time::Instant::now() < deadline, "never ran");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.cancel();
        runner.await.expect("runner stops");
    }
    let hub = open(store).await;
    let docs = device_docs(&hub, "interrupted");
    assert_eq!(docs[0]["status"], "failed");
    assert_eq!(docs[0]["error"]["code"], "InterruptedByRestart");
    let (stop, runner) = run(&hub);
    let done = wait_for(&hub, "interrupted", JobStatus::Completed).await;
    assert_eq!(done.statistics.failed_count, 1);
    stop.cancel();
    runner.await.expect("runner stops");
}

#[tokio::test]
async fn expired_history_is_dropped_on_load() {
    let store = Arc::new(MemoryStore::new());
    let old = Job {
        job_id: "old".into(),
        query_condition: "*".into(),
        action: tag_job("old", "*", None, 60).action,
        created: Timestamp::now().plus_seconds(-40 * 86_400),
        start: Timestamp::now().plus_seconds(-40 * 86_400),
        max_execution_secs: 60,
        status: JobStatus::Completed,
        end: Some(Timestamp::now().plus_seconds(-31 * 86_400)),
        failure_reason: None,
    };
    let mut recent = old.clone();
    recent.job_id = "recent".into();
    recent.end = Some(Timestamp::now().plus_seconds(-29 * 86_400));
    let mut batch = Batch::new();
    for job in [&old, &recent] {
        batch.put(
            Table::Jobs,
            job.job_id.as_bytes().to_vec(),
            encode(job).expect("encodes"),
        );
        let device = DeviceJob::pending("d1".into(), job.created);
        batch.put(
            Table::DeviceJobs,
            device_key(&job.job_id, "d1"),
            encode(&device).expect("encodes"),
        );
    }
    store.commit(batch).await.expect("seeded");
    let hub = open(Arc::clone(&store) as Arc<dyn Store>).await;
    assert!(matches!(hub.get_job("old"), Err(HubError::JobNotFound(_))));
    assert_eq!(
        hub.get_job("recent").expect("kept").statistics.device_count,
        1
    );
    assert_eq!(store.load(Table::Jobs).expect("loads").len(), 1);
    assert_eq!(store.load(Table::DeviceJobs).expect("loads").len(), 1);
}
