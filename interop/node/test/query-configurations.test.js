'use strict';
// Queries and automatic device management configurations, driven by azure-iothub's Registry.

const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { after, test } = require('node:test');
const { Devices, httpError, registry, withTimeout } = require('../lib/harness');

const reg = registry();
const devices = new Devices(reg);
after(() => devices.cleanup());

async function taggedFleet(count, tags) {
  const ids = [];
  for (let index = 0; index < count; index += 1) {
    const { deviceId } = await devices.create();
    const twin = (await withTimeout(reg.getTwin(deviceId), 'getTwin')).responseBody;
    await withTimeout(reg.updateTwin(deviceId, { tags: { ...tags, index } }, twin.etag), 'updateTwin');
    ids.push(deviceId);
  }
  return ids;
}

test('createQuery pages through every matching twin exactly once', async () => {
  const fleet = crypto.randomBytes(5).toString('hex');
  const ids = await taggedFleet(7, { fleet });
  const query = reg.createQuery(`SELECT * FROM devices WHERE tags.fleet = '${fleet}'`, 3);
  const seen = [];
  let pages = 0;
  while (query.hasMoreResults) {
    const { result } = await withTimeout(query.nextAsTwin(), 'nextAsTwin');
    pages += 1;
    seen.push(...result.map((t) => t.deviceId));
  }
  assert.equal(pages, 3);
  assert.deepEqual(seen.sort(), ids.sort());
});

test('createQuery runs aggregates', async () => {
  const fleet = crypto.randomBytes(5).toString('hex');
  await taggedFleet(3, { fleet });
  const query = reg.createQuery(`SELECT COUNT() AS n FROM devices WHERE tags.fleet = '${fleet}'`);
  const { result } = await withTimeout(query.next(), 'next');
  assert.deepEqual(result, [{ n: 3 }]);
});

test('an invalid query is refused with 400', async () => {
  await httpError(reg.createQuery('SELECT * FROM nowhere').next(), 400, 'invalid query');
});

test('add, get, update and remove a configuration that applies to a device', async () => {
  const group = crypto.randomBytes(5).toString('hex');
  const [deviceId] = await taggedFleet(1, { group });
  const id = `node-cfg-${group}`;
  const content = { deviceContent: { 'properties.desired.settings': { rate: 5 } } };
  await withTimeout(reg.addConfiguration({
    id, content, targetCondition: `tags.[[group]] = '${group}'`, priority: 3, labels: { by: 'node' },
  }), 'addConfiguration');
  try {
    const got = (await withTimeout(reg.getConfiguration(id), 'getConfiguration')).responseBody;
    assert.deepEqual(got.content, content);
    assert.equal(got.systemMetrics.results.appliedCount, 1);
    const twin = (await withTimeout(reg.getTwin(deviceId), 'getTwin')).responseBody;
    assert.deepEqual(twin.properties.desired.settings, { rate: 5 });
    assert.equal(twin.configurations[id].status, 'Applied');
    got.priority = 9;
    await withTimeout(reg.updateConfiguration(got), 'updateConfiguration');
    const list = (await withTimeout(reg.getConfigurations(), 'getConfigurations')).responseBody;
    assert.equal(list.find((c) => c.id === id).priority, 9);
  } finally {
    await withTimeout(reg.removeConfiguration(id), 'removeConfiguration');
  }
  const twin = (await withTimeout(reg.getTwin(deviceId), 'getTwin')).responseBody;
  assert.equal(twin.properties.desired.settings, undefined, 'values of a removed configuration are removed');
  await httpError(reg.getConfiguration(id), 404, 'removed configuration');
});
