'use strict';
// MQTT over WebSockets (azure-iot-device-mqtt MqttWs: wss://localhost:443/$iothub/websocket).

const assert = require('node:assert/strict');
const { after, test } = require('node:test');
const { MqttWs } = require('azure-iot-device-mqtt');
const {
  Devices, answerMethod, registry, serviceClient, settleSubscription, updateReported, withTimeout,
} = require('../lib/harness');

const reg = registry();
const service = serviceClient();
const devices = new Devices(reg);
after(() => devices.cleanup());

test('twin and method round trip over MqttWs', async () => {
  const device = await devices.create();
  const client = await devices.open(device, MqttWs);

  const twin = await withTimeout(client.getTwin(), 'client.getTwin');
  assert.equal(typeof twin.properties.desired.$version, 'number');
  await updateReported(twin, { transport: 'mqtt-ws' });
  const reported = (await withTimeout(reg.getTwin(device.deviceId), 'getTwin')).responseBody.properties.reported;
  assert.equal(reported.transport, 'mqtt-ws');

  answerMethod(client, 'wsEcho', (r) => [200, { echo: r.payload }]);
  await settleSubscription();
  const { result } = await withTimeout(service.invokeDeviceMethod(device.deviceId,
    { methodName: 'wsEcho', payload: { n: 3 }, responseTimeoutInSeconds: 10 }), 'invoke', 20000);
  assert.equal(result.status, 200);
  assert.deepEqual(result.payload, { echo: { n: 3 } });
});
