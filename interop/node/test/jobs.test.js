'use strict';
// Scheduled jobs (jobs v2) through azure-iothub's JobClient.

const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { after, test } = require('node:test');
const { JobClient } = require('azure-iothub');
const {
  Devices, answerMethod, hubEnv, registry, settleSubscription, sleep, withTimeout,
} = require('../lib/harness');

const reg = registry();
const jobs = JobClient.fromConnectionString(hubEnv().connectionString);
const devices = new Devices(reg);
after(() => devices.cleanup());

const newJobId = () => `interop-node-job-${crypto.randomUUID()}`;

/** Poll getJob until the job leaves queued/scheduled/running; resolve the finished job. */
async function finished(jobId) {
  const deadline = Date.now() + 15000;
  let job;
  while (Date.now() < deadline) {
    ({ jobStatus: job } = await withTimeout(jobs.getJob(jobId), `getJob ${jobId}`));
    if (!['queued', 'scheduled', 'running'].includes(job.status)) return job;
    await sleep(200);
  }
  assert.fail(`job ${jobId} still ${job && job.status} after 15 s`);
}

test('scheduleTwinUpdate tags the matching devices and completes', async () => {
  const a = await devices.create();
  const b = await devices.create();
  const jobId = newJobId();
  const marker = crypto.randomBytes(6).toString('hex');
  const { jobStatus: created } = await withTimeout(jobs.scheduleTwinUpdate(jobId,
    `deviceId IN ['${a.deviceId}', '${b.deviceId}']`, { tags: { wave: marker }, etag: '*' }, new Date(), 60),
  'scheduleTwinUpdate');
  assert.equal(created.jobId, jobId);
  assert.equal(created.type, 'scheduleUpdateTwin');
  assert.ok(['queued', 'running', 'completed'].includes(created.status), created.status);

  const done = await finished(jobId);
  assert.equal(done.status, 'completed');
  assert.deepEqual(done.deviceJobStatistics,
    { deviceCount: 2, failedCount: 0, succeededCount: 2, runningCount: 0, pendingCount: 0 });
  for (const { deviceId } of [a, b]) {
    const twin = (await withTimeout(reg.getTwin(deviceId), 'getTwin')).responseBody;
    assert.equal(twin.tags.wave, marker);
  }
});

test('scheduleDeviceMethod calls the connected device', async () => {
  const device = await devices.create();
  const client = await devices.open(device);
  const requests = answerMethod(client, 'blink', (r) => [200, { blinked: r.payload }]);
  await settleSubscription();
  const jobId = newJobId();
  const { jobStatus: created } = await withTimeout(jobs.scheduleDeviceMethod(jobId,
    `deviceId = '${device.deviceId}'`, { methodName: 'blink', payload: { times: 3 }, responseTimeoutInSeconds: 10 }),
  'scheduleDeviceMethod');
  assert.equal(created.type, 'scheduleDeviceMethod');
  assert.equal(created.cloudToDeviceMethod.methodName, 'blink');

  const done = await finished(jobId);
  assert.equal(done.status, 'completed');
  assert.equal(done.deviceJobStatistics.succeededCount, 1);
  assert.equal(requests.length, 1);
  assert.deepEqual(requests[0].payload, { times: 3 });
});

test('cancelJob cancels a job scheduled an hour ahead, and createQuery lists jobs', async () => {
  const device = await devices.create();
  const jobId = newJobId();
  const start = new Date(Date.now() + 3600 * 1000);
  const { jobStatus: created } = await withTimeout(jobs.scheduleTwinUpdate(jobId,
    `deviceId = '${device.deviceId}'`, { tags: { never: true }, etag: '*' }, start, 600), 'scheduleTwinUpdate');
  assert.equal(created.status, 'scheduled');
  assert.equal(new Date(created.startTime).getTime(), start.getTime());

  const { jobStatus: cancelled } = await withTimeout(jobs.cancelJob(jobId), 'cancelJob');
  assert.equal(cancelled.status, 'cancelled');
  assert.equal((await withTimeout(jobs.getJob(jobId), 'getJob')).jobStatus.status, 'cancelled');

  const filtered = jobs.createQuery('scheduleUpdateTwin', 'cancelled');
  const { result: page } = await withTimeout(filtered.next(), 'createQuery(type, status).next');
  assert.ok(Array.isArray(page));
  assert.ok(page.some((j) => j.jobId === jobId), 'the cancelled job is listed');
  assert.ok(page.every((j) => j.status === 'cancelled' && j.type === 'scheduleUpdateTwin'));

  const everything = jobs.createQuery(undefined, undefined, 1);
  const seen = [];
  while (everything.hasMoreResults) {
    // next() without arguments restarts from the first page (the SDK reads an absent argument
    // as "no token"), so pass the query's own token along.
    const { result } = await withTimeout(everything.next(everything.continuationToken),
      'createQuery(pageSize 1).next');
    assert.ok(result.length <= 1);
    seen.push(...result.map((j) => j.jobId));
  }
  assert.ok(seen.includes(jobId));
  assert.equal(new Set(seen).size, seen.length, 'no job listed twice');
  const twin = (await withTimeout(reg.getTwin(device.deviceId), 'getTwin')).responseBody;
  assert.equal(twin.tags.never, undefined);
});
