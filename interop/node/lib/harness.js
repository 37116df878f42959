'use strict';
// Shared helpers for the Node interop tests. The hub itself is started by run-with-hub.js, which
// passes IOTHUB_CONNECTION_STRING, TWINHUB_CA_FILE and NODE_EXTRA_CA_CERTS to every test process.

const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const { NoRetry } = require('azure-iot-common');
const { Client: DeviceClient } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');
const { Registry, Client: ServiceClient } = require('azure-iothub');

const STEP_MS = Number(process.env.INTEROP_STEP_TIMEOUT || 15) * 1000;
// Node's MQTT transport gives no signal when a SUBSCRIBE is acknowledged; against a local hub
// this is far more than enough.
const SUBSCRIBE_SETTLE_MS = 1000;

function hubEnv() {
  const connectionString = process.env.IOTHUB_CONNECTION_STRING;
  const caFile = process.env.TWINHUB_CA_FILE;
  if (!connectionString || !caFile || !process.env.NODE_EXTRA_CA_CERTS) {
    throw new Error('run the suite with `npm test` (run-with-hub.js): it starts twinhub and sets '
      + 'IOTHUB_CONNECTION_STRING, TWINHUB_CA_FILE and NODE_EXTRA_CA_CERTS');
  }
  const host = /HostName=([^;]+)/.exec(connectionString)[1].split(':')[0];
  return { connectionString, host, caPem: fs.readFileSync(caFile, 'utf8') };
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Reject if promise does not settle within ms: a hub that never answers fails the test.
 * what: a description, or a function returning one (evaluated when the timeout fires).
 */
function withTimeout(promise, what, ms = STEP_MS) {
  const describe = () => (typeof what === 'function' ? what() : what);
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${describe()}: no result within ${ms / 1000}s (hub never answered?)`)), ms);
  });
  const annotated = Promise.resolve(promise).catch((e) => {
    // the SDK's message alone (e.g. "no such resource") hides which call failed and how
    const status = e && e.response && e.response.statusCode;
    if (status) e.message = `${describe()}: HTTP ${status} ${e.responseBody || e.message}`;
    throw e;
  });
  return Promise.race([annotated, timeout]).finally(() => clearTimeout(timer));
}

/** Wait for an event whose first argument satisfies predicate; fail with what was seen. */
function nextEvent(emitter, event, predicate, what, ms = STEP_MS) {
  const seen = [];
  let listener;
  const matched = new Promise((resolve) => {
    listener = (value) => {
      if (predicate(value)) resolve(value);
      else seen.push(value);
    };
    emitter.on(event, listener);
  });
  return withTimeout(matched, () => `${what} (received instead: ${JSON.stringify(seen)})`, ms)
    .finally(() => emitter.removeListener(event, listener));
}

/** Await a service call that must fail with an HTTP status; return the error. */
async function httpError(promise, status, what) {
  const error = await withTimeout(promise.then(
    (result) => assert.fail(`${what}: expected HTTP ${status}, got success ${JSON.stringify(result.responseBody ?? result.result)}`),
    (e) => e,
  ), what);
  const actual = error.response && error.response.statusCode;
  assert.equal(actual, status, `${what}: HTTP ${actual} ${error.responseBody || error.message}`);
  return error;
}

const newId = (kind) => `interop-node-${kind}-${crypto.randomUUID()}`;
const newKey = () => crypto.randomBytes(32).toString('base64');

function isGeneratedKey(key) {
  return typeof key === 'string' && key.length === 44 && Buffer.from(key, 'base64').length === 32;
}

/** Service clients, with the SDK's retries off so the hub's first answer is what the test sees. */
function registry() {
  return Registry.fromConnectionString(hubEnv().connectionString);
}

function serviceClient() {
  const client = ServiceClient.fromConnectionString(hubEnv().connectionString);
  client.setRetryPolicy(new NoRetry());
  return client;
}

/** Devices and device clients for one test file; cleanup() closes clients and deletes devices. */
class Devices {
  constructor(reg) {
    this.registry = reg;
    this.clients = [];
    this.deviceIds = [];
  }

  async create(status = 'enabled') {
    const identity = { deviceId: newId('dev'), primaryKey: newKey(), secondaryKey: newKey() };
    await withTimeout(this.registry.create({
      deviceId: identity.deviceId,
      status,
      authentication: { symmetricKey: { primaryKey: identity.primaryKey, secondaryKey: identity.secondaryKey } },
    }), 'registry.create');
    this.deviceIds.push(identity.deviceId);
    return identity;
  }

  track(deviceId) {
    this.deviceIds.push(deviceId);
  }

  /** An open device client (MQTT over TLS unless another transport is given). */
  async open(identity, transport = Mqtt) {
    const { host, caPem } = hubEnv();
    const client = DeviceClient.fromConnectionString(
      `HostName=${host};DeviceId=${identity.deviceId};SharedAccessKey=${identity.primaryKey}`, transport);
    client.setRetryPolicy(new NoRetry());
    client.errors = [];
    client.on('error', (e) => client.errors.push(e));
    this.clients.push(client);
    await withTimeout(client.setOptions({ ca: caPem }), 'client.setOptions');
    await withTimeout(client.open(), 'client.open');
    return client;
  }

  async cleanup() {
    for (const client of this.clients) {
      await withTimeout(client.close(), 'client.close', 5000).catch(() => {});
    }
    for (const deviceId of this.deviceIds) {
      await withTimeout(this.registry.delete(deviceId), 'registry.delete', 5000).catch(() => {});
    }
  }
}

/** Update reported properties through the device twin (callback API) as a promise. */
function updateReported(twin, patch) {
  return withTimeout(new Promise((resolve, reject) => {
    twin.properties.reported.update(patch, (e) => (e ? reject(e) : resolve()));
  }), 'reported.update');
}

/** Answer every call of methodName with respond(request) -> [status, payload]; requests are recorded. */
function answerMethod(client, methodName, respond) {
  const requests = [];
  client.onDeviceMethod(methodName, (request, response) => {
    requests.push(request);
    const [status, payload] = respond(request);
    response.send(status, payload, (e) => { if (e) client.errors.push(e); });
  });
  return requests;
}

/** Give a fresh SUBSCRIBE (method handler, desired listener) time to be acknowledged. */
const settleSubscription = () => sleep(SUBSCRIBE_SETTLE_MS);

function userKeys(section) {
  return Object.fromEntries(Object.entries(section || {}).filter(([k]) => !k.startsWith('$')));
}

module.exports = {
  Devices, answerMethod, httpError, hubEnv, isGeneratedKey, newId, newKey, nextEvent, registry,
  serviceClient, settleSubscription, sleep, updateReported, userKeys, withTimeout,
};
