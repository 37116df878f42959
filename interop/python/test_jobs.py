"""Scheduled jobs (jobs v2) through azure-iot-hub's IoTHubJobManager.

Not covered: IoTHubJobManager.query_scheduled_jobs. Its generated client deserialises an object
{type, items, continuationToken}, while the hub (like IoT Hub for the C# and Node SDKs) answers
GET /jobs/v2/query with a JSON array, so that call cannot succeed against either.
"""
import datetime
import queue
import uuid

import pytest
from azure.iot.device import MethodResponse
from azure.iot.hub import IoTHubJobManager
from azure.iot.hub.protocol.models import CloudToDeviceMethod, JobRequest, QuerySpecification, Twin

from conftest import configure_registry
from hubtest import call, http_error, next_matching, set_handler, wait_until


@pytest.fixture(scope="module")
def jobs(hub):
    return configure_registry(IoTHubJobManager.from_connection_string(hub.connection_string), hub)


def new_job_id():
    return "interop-py-job-{}".format(uuid.uuid4())


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc)


def twin_job(job_id, condition, tags, start=None, max_seconds=60):
    return JobRequest(job_id=job_id, type="scheduleUpdateTwin", query_condition=condition,
                      update_twin=Twin(tags=tags, etag="*"), start_time=start or utc_now(),
                      max_execution_time_in_seconds=max_seconds)


def in_condition(*device_ids):
    return "deviceId IN [{}]".format(", ".join("'{}'".format(d) for d in device_ids))


def finished(jobs, job_id):
    """Poll get_scheduled_job until the job leaves queued/scheduled/running; return it."""
    def probe():
        job = call(jobs.get_scheduled_job, job_id)
        return job if job.status not in ("queued", "scheduled", "running") else None
    return wait_until(probe, what="job {} finished".format(job_id))


def device_jobs(registry, job_id):
    """The job's per-device records from SELECT * FROM devices.jobs, as raw JSON (query_iot_hub
    would deserialise them as twins and drop the outcome)."""
    spec = QuerySpecification(query="SELECT * FROM devices.jobs WHERE devices.jobs.jobId = '{}'".format(job_id))
    raw = call(registry.protocol.query.get_twins, spec, None, None, None, True)
    assert raw.response.headers.get("x-ms-item-type") == "deviceJob"
    return raw.response.json()


def test_scheduled_twin_update_tags_every_matching_device(devices, registry, jobs):
    first, second, other = devices.create(), devices.create(), devices.create()
    job_id = new_job_id()
    marker = uuid.uuid4().hex
    created = call(jobs.create_scheduled_job, job_id,
                   twin_job(job_id, in_condition(first.device_id, second.device_id), {"rollout": marker}))
    assert created.job_id == job_id
    assert created.type == "scheduleUpdateTwin"
    assert created.status in ("queued", "running", "completed")
    assert created.max_execution_time_in_seconds == 60

    done = finished(jobs, job_id)
    assert done.status == "completed"
    assert done.end_time is not None and done.created_time is not None
    statistics = done.device_job_statistics
    assert (statistics.device_count, statistics.succeeded_count, statistics.failed_count,
            statistics.pending_count, statistics.running_count) == (2, 2, 0, 0, 0)
    for device, tagged in ((first, True), (second, True), (other, False)):
        tags = call(registry.get_twin, device.device_id).tags or {}
        assert (tags.get("rollout") == marker) is tagged, device.device_id
    records = device_jobs(registry, job_id)
    assert sorted(r["deviceId"] for r in records) == sorted([first.device_id, second.device_id])
    assert all(r["status"] == "completed" and r["jobType"] == "scheduleUpdateTwin" for r in records)


def test_scheduled_device_method_calls_the_connected_device(devices, registry, jobs):
    device = devices.create()
    client = devices.connect(device)
    seen = queue.Queue()

    def handler(request):
        seen.put(request)
        client.send_method_response(MethodResponse.create_from_method_request(
            request, 200, {"rebooted": request.payload}))

    set_handler(client, "on_method_request_received", handler)
    job_id = new_job_id()
    request = JobRequest(job_id=job_id, type="scheduleDeviceMethod",
                         query_condition="deviceId = '{}'".format(device.device_id),
                         cloud_to_device_method=CloudToDeviceMethod(
                             method_name="reboot", payload={"delay": 2}, response_timeout_in_seconds=10),
                         start_time=utc_now(), max_execution_time_in_seconds=60)
    created = call(jobs.create_scheduled_job, job_id, request)
    assert created.type == "scheduleDeviceMethod"
    assert created.cloud_to_device_method.method_name == "reboot"

    received = next_matching(seen, lambda r: r.name == "reboot", what="method request from the job")
    assert received.payload == {"delay": 2}
    done = finished(jobs, job_id)
    assert done.status == "completed"
    assert done.device_job_statistics.succeeded_count == 1
    [record] = device_jobs(registry, job_id)
    assert record["deviceId"] == device.device_id
    assert record["status"] == "completed"
    assert record["outcome"] == {"deviceMethodResponse": {"status": 200, "payload": {"rebooted": {"delay": 2}}}}


def test_cancel_a_job_scheduled_an_hour_ahead(devices, registry, jobs):
    device = devices.create()
    job_id = new_job_id()
    start = utc_now() + datetime.timedelta(hours=1)
    created = call(jobs.create_scheduled_job, job_id,
                   twin_job(job_id, "deviceId = '{}'".format(device.device_id), {"late": True}, start=start))
    assert created.status == "scheduled"
    assert abs((created.start_time - start).total_seconds()) < 1

    cancelled = call(jobs.cancel_scheduled_job, job_id)
    assert cancelled.status == "cancelled"
    assert call(jobs.get_scheduled_job, job_id).status == "cancelled"
    assert "late" not in (call(registry.get_twin, device.device_id).tags or {})


def test_job_errors(devices, jobs):
    device = devices.create()
    job_id = new_job_id()
    call(jobs.create_scheduled_job, job_id,
         twin_job(job_id, "deviceId = '{}'".format(device.device_id), {"x": 1}))
    status, body = http_error(jobs.create_scheduled_job, job_id,
                              twin_job(job_id, "deviceId = '{}'".format(device.device_id), {"x": 1}))
    assert status == 409 and "JobAlreadyExists" in body, body

    status, body = http_error(jobs.get_scheduled_job, new_job_id())
    assert status == 404 and "JobNotFound" in body, body

    bad_id = new_job_id()
    status, body = http_error(jobs.create_scheduled_job, bad_id,
                              twin_job(bad_id, "SELECT * FROM devices", {"x": 1}))
    assert status == 400 and "queryCondition" in body, body
    finished(jobs, job_id)
