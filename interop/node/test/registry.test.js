'use strict';
// Identity registry and module twins over REST, driven by azure-iothub's Registry.

const assert = require('node:assert/strict');
const { after, test } = require('node:test');
const {
  Devices, httpError, isGeneratedKey, newId, newKey, registry, userKeys, withTimeout,
} = require('../lib/harness');

const reg = registry();
const devices = new Devices(reg);
after(() => devices.cleanup());

test('create echoes the given keys', async () => {
  const deviceId = newId('dev');
  const primaryKey = newKey();
  const secondaryKey = newKey();
  devices.track(deviceId);
  const { responseBody } = await withTimeout(reg.create({
    deviceId, status: 'enabled', authentication: { symmetricKey: { primaryKey, secondaryKey } },
  }), 'create');
  assert.equal(responseBody.deviceId, deviceId);
  assert.equal(responseBody.authentication.symmetricKey.primaryKey, primaryKey);
  assert.equal(responseBody.authentication.symmetricKey.secondaryKey, secondaryKey);
  assert.ok(responseBody.etag, 'no etag');
});

test('create without authentication gets hub-generated keys', async () => {
  // the SDK sends {"type":"sas","symmetricKey":{"primaryKey":"","secondaryKey":""}}
  const deviceId = newId('dev');
  devices.track(deviceId);
  const { responseBody } = await withTimeout(reg.create({ deviceId }), 'create');
  const keys = responseBody.authentication.symmetricKey;
  assert.ok(isGeneratedKey(keys.primaryKey), `primaryKey ${keys.primaryKey}`);
  assert.ok(isGeneratedKey(keys.secondaryKey), `secondaryKey ${keys.secondaryKey}`);
  assert.notEqual(keys.primaryKey, keys.secondaryKey);
  assert.equal(responseBody.status, 'enabled');
});

test('get returns identity fields', async () => {
  const device = await devices.create();
  const { responseBody } = await withTimeout(reg.get(device.deviceId), 'get');
  assert.equal(responseBody.deviceId, device.deviceId);
  assert.ok(responseBody.etag, 'no etag');
  assert.equal(responseBody.status, 'enabled');
  assert.equal(responseBody.connectionState, 'Disconnected');
  assert.equal(responseBody.authentication.type, 'sas');
  assert.equal(responseBody.authentication.symmetricKey.primaryKey, device.primaryKey);
});

test('update (If-Match "*") changes status and keys', async () => {
  const device = await devices.create();
  const primaryKey = newKey();
  const { responseBody } = await withTimeout(reg.update({
    deviceId: device.deviceId, status: 'disabled',
    authentication: { symmetricKey: { primaryKey, secondaryKey: device.secondaryKey } },
  }), 'update');
  assert.equal(responseBody.status, 'disabled');
  assert.equal(responseBody.authentication.symmetricKey.primaryKey, primaryKey);
  const fetched = await withTimeout(reg.get(device.deviceId), 'get');
  assert.equal(fetched.responseBody.status, 'disabled');
});

test('create of an existing id is 409 DeviceAlreadyExists', async () => {
  const device = await devices.create();
  const error = await httpError(reg.create({ deviceId: device.deviceId }), 409, 'second create');
  assert.equal(error.constructor.name, 'DeviceAlreadyExistsError');
});

test('delete, then get is 404 DeviceNotFound', async () => {
  const device = await devices.create();
  await withTimeout(reg.delete(device.deviceId), 'delete');
  const error = await httpError(reg.get(device.deviceId), 404, 'get after delete');
  // the SDK only maps the legacy {"Message":"ErrorCode:DeviceNotFound;..."} body to this class
  assert.equal(error.constructor.name, 'DeviceNotFoundError', `body ${error.responseBody}`);
});

test('list includes created devices', async () => {
  const created = [await devices.create(), await devices.create()].map((d) => d.deviceId);
  const { responseBody } = await withTimeout(reg.list(), 'list');
  const listed = new Set(responseBody.map((d) => d.deviceId));
  for (const id of created) assert.ok(listed.has(id), `${id} missing from list`);
});

test('registry statistics count devices', async () => {
  const before = (await withTimeout(reg.getRegistryStatistics(), 'statistics')).responseBody;
  await devices.create('disabled');
  const afterStats = (await withTimeout(reg.getRegistryStatistics(), 'statistics')).responseBody;
  assert.equal(afterStats.totalDeviceCount, before.totalDeviceCount + 1);
  assert.equal(afterStats.disabledDeviceCount, before.disabledDeviceCount + 1);
});

test('modules: add, get, list, module twin, remove', async () => {
  const device = await devices.create();
  const moduleId = 'mod-node';
  await withTimeout(reg.addModule({ deviceId: device.deviceId, moduleId }), 'addModule');
  const fetched = (await withTimeout(reg.getModule(device.deviceId, moduleId), 'getModule')).responseBody;
  assert.equal(fetched.moduleId, moduleId);
  assert.ok(isGeneratedKey(fetched.authentication.symmetricKey.primaryKey), 'module keys not generated');
  const listed = (await withTimeout(reg.getModulesOnDevice(device.deviceId), 'getModulesOnDevice')).responseBody;
  assert.deepEqual(listed.map((m) => m.moduleId), [moduleId]);

  const twin = (await withTimeout(reg.getModuleTwin(device.deviceId, moduleId), 'getModuleTwin')).responseBody;
  assert.equal(twin.deviceId, device.deviceId);
  assert.equal(twin.moduleId, moduleId);
  assert.equal(typeof twin.properties.desired.$version, 'number');
  assert.deepEqual(userKeys(twin.properties.reported), {});

  await withTimeout(reg.removeModule(device.deviceId, moduleId), 'removeModule');
  await httpError(reg.getModule(device.deviceId, moduleId), 404, 'getModule after remove');
});
