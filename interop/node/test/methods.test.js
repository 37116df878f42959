'use strict';
// Direct methods: azure-iothub Client.invokeDeviceMethod (REST) to an azure-iot-device MQTT client.

const assert = require('node:assert/strict');
const { after, test } = require('node:test');
const {
  Devices, answerMethod, httpError, registry, serviceClient, settleSubscription, withTimeout,
} = require('../lib/harness');

const reg = registry();
const service = serviceClient();
const devices = new Devices(reg);
after(() => devices.cleanup());

function invoke(deviceId, params) {
  const seconds = (params.responseTimeoutInSeconds || 30) + (params.connectTimeoutInSeconds || 0);
  return withTimeout(service.invokeDeviceMethod(deviceId, params), `invoke ${params.methodName}`, (seconds + 10) * 1000);
}

async function deviceAnswering(methodName, respond) {
  const device = await devices.create();
  const client = await devices.open(device);
  const requests = answerMethod(client, methodName, respond);
  await settleSubscription();
  return { device, client, requests };
}

test('round trip with an object payload', async () => {
  const { device, requests } = await deviceAnswering('echo', (r) => [200, { echo: r.payload }]);
  const { result } = await invoke(device.deviceId, { methodName: 'echo', payload: { a: [1, 2], b: 'x' }, responseTimeoutInSeconds: 10 });
  assert.equal(result.status, 200);
  assert.deepEqual(result.payload, { echo: { a: [1, 2], b: 'x' } });
  assert.equal(requests.length, 1);
  assert.equal(requests[0].methodName, 'echo');
});

test('null payload (the SDK default) arrives as null and a null answer returns null', async () => {
  const { device, requests } = await deviceAnswering('ping', () => [200, null]);
  const { result } = await invoke(device.deviceId, { methodName: 'ping', responseTimeoutInSeconds: 10 });
  assert.equal(result.status, 200);
  assert.equal(result.payload, null);
  assert.equal(requests[0].payload, null, `device got payload ${JSON.stringify(requests[0].payload)}`);
});

test('device status code is passed through', async () => {
  const { device } = await deviceAnswering('teapot', () => [418, { reason: 'short and stout' }]);
  const { result } = await invoke(device.deviceId, { methodName: 'teapot', payload: {}, responseTimeoutInSeconds: 10 });
  assert.equal(result.status, 418);
  assert.deepEqual(result.payload, { reason: 'short and stout' });
});

test('offline device is 404 DeviceNotOnline', async () => {
  const device = await devices.create();
  const error = await httpError(service.invokeDeviceMethod(device.deviceId,
    { methodName: 'm', payload: {}, responseTimeoutInSeconds: 5, connectTimeoutInSeconds: 0 }), 404, 'invoke offline');
  assert.match(String(error.responseBody), /DeviceNotOnline|404103/);
});
