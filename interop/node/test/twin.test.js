'use strict';
// Device twin over MQTT (azure-iot-device + azure-iot-device-mqtt) against the service view
// (azure-iothub Registry).

const assert = require('node:assert/strict');
const { after, test } = require('node:test');
const {
  Devices, nextEvent, registry, settleSubscription, updateReported, userKeys, withTimeout,
} = require('../lib/harness');

const reg = registry();
const devices = new Devices(reg);
after(() => devices.cleanup());

async function openWithTwin() {
  const device = await devices.create();
  const client = await devices.open(device);
  const twin = await withTimeout(client.getTwin(), 'client.getTwin');
  return { device, client, twin };
}

/** Listen for desired patches; resolves once the subscription has had time to complete. */
async function listenDesired(twin) {
  twin.on('properties.desired', () => {}); // the first listener subscribes to desired patches
  await settleSubscription();
}

test('getTwin returns desired and reported with $version', async () => {
  const { twin } = await openWithTwin();
  assert.equal(typeof twin.properties.desired.$version, 'number');
  assert.equal(typeof twin.properties.reported.$version, 'number');
});

test('reported update is seen by the service', async () => {
  const { device, twin } = await openWithTwin();
  const before = (await withTimeout(reg.getTwin(device.deviceId), 'getTwin')).responseBody.properties.reported;
  await updateReported(twin, { battery: 87, location: { lat: 47.6, lon: -122.1 } });
  const reported = (await withTimeout(reg.getTwin(device.deviceId), 'getTwin')).responseBody.properties.reported;
  assert.equal(reported.battery, 87);
  assert.deepEqual(reported.location, { lat: 47.6, lon: -122.1 });
  assert.equal(reported.$version, before.$version + 1);
  assert.ok(reported.$metadata && reported.$metadata.battery, `no $metadata: ${JSON.stringify(reported)}`);
});

test('service desired update reaches the device with $version exactly +1', async () => {
  const { device, twin } = await openWithTwin();
  const previous = twin.properties.desired.$version;
  await listenDesired(twin);
  const patchArrived = nextEvent(twin, 'properties.desired', (p) => p.$version === previous + 1, 'desired patch');
  const { responseBody } = await withTimeout(
    reg.updateTwin(device.deviceId, { properties: { desired: { rate: 10, mode: { eco: true } } } }, '*'), 'updateTwin');
  assert.equal(responseBody.properties.desired.$version, previous + 1);
  const patch = await patchArrived;
  assert.equal(patch.rate, 10);
  assert.deepEqual(patch.mode, { eco: true });
  assert.equal(twin.properties.desired.rate, 10, 'SDK did not merge the patch');
});

test('nulling out all desired properties sends an explicit null for every key', async () => {
  const { device, twin } = await openWithTwin();
  const seeded = await withTimeout(reg.updateTwin(device.deviceId,
    { properties: { desired: { k1: 1, k2: { nested: 'x' }, k3: 'three' } } }, '*'), 'updateTwin seed');
  const previous = seeded.responseBody.properties.desired.$version;
  await listenDesired(twin);
  const patchArrived = nextEvent(twin, 'properties.desired', (p) => p.$version === previous + 1, 'desired null patch');

  await withTimeout(reg.updateTwin(device.deviceId, { properties: { desired: null } }, '*'), 'updateTwin null');
  const patch = await patchArrived;
  for (const key of ['k1', 'k2', 'k3']) {
    assert.ok(Object.prototype.hasOwnProperty.call(patch, key) && patch[key] === null,
      `${key} must be an explicit null in ${JSON.stringify(patch)}`);
  }
  const desired = (await withTimeout(reg.getTwin(device.deviceId), 'getTwin')).responseBody.properties.desired;
  assert.deepEqual(userKeys(desired), {});
  assert.equal(desired.$version, previous + 1);
});
