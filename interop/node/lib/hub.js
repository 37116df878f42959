'use strict';
// Starts and stops twinhub for the Node interop suite (used by run-with-hub.js).
// The hub binds the ports the SDKs force (8883 MQTT/TLS, 443 HTTPS + MQTT over WebSockets).

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const MQTT_PORT = 8883;
const HTTPS_PORT = 443;
const READY_TIMEOUT_MS = 30000;
const SHUTDOWN_TIMEOUT_MS = 10000;
const REPO = path.resolve(__dirname, '..', '..', '..');

/** The hub binary: $TWINHUB_BIN, else <repo>/target/debug/twinhub. */
function twinhubBin() {
  return process.env.TWINHUB_BIN || path.join(REPO, 'target', 'debug', 'twinhub');
}

/** Resolves true if something accepts TCP connections on 127.0.0.1:port. */
function portOpen(port) {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    socket.setTimeout(500);
    socket.once('connect', () => { socket.destroy(); resolve(true); });
    socket.once('timeout', () => { socket.destroy(); resolve(false); });
    socket.once('error', () => resolve(false));
  });
}

function tail(file) {
  try {
    return fs.readFileSync(file, 'utf8').slice(-8000);
  } catch (e) {
    return `<cannot read hub log: ${e.message}>`;
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Start twinhub on a fresh data dir; resolve when ca.pem and service-connection-string are written
 * and both ports accept connections. Rejects with the hub's output if it is not ready in 30 s.
 */
async function startHub() {
  const bin = twinhubBin();
  if (!fs.existsSync(bin)) throw new Error(`twinhub binary not found at ${bin} (build it, or set TWINHUB_BIN)`);
  const busy = [];
  for (const port of [MQTT_PORT, HTTPS_PORT]) if (await portOpen(port)) busy.push(port);
  if (busy.length) throw new Error(`ports ${busy.join(', ')} are already in use: is another hub running?`);

  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'twinhub-interop-node-'));
  const dataDir = path.join(root, 'data');
  const logPath = path.join(root, 'hub.log');
  const log = fs.openSync(logPath, 'w');
  const child = spawn(bin, ['serve', '--data-dir', dataDir, '--hostname', 'localhost',
    '--mqtt-port', String(MQTT_PORT), '--https-port', String(HTTPS_PORT)], { stdio: ['ignore', log, log] });
  fs.closeSync(log);
  let exitCode = null;
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => {
    exitCode = code === null ? `signal ${signal}` : code;
    resolve(exitCode);
  }));
  const hub = { child, exited, root, dataDir, logPath, caPath: path.join(dataDir, 'ca.pem') };

  const csPath = path.join(dataDir, 'service-connection-string');
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (exitCode !== null) {
      throw new Error(`twinhub exited (${exitCode}) before becoming ready; its output:\n${tail(logPath)}`);
    }
    const written = fs.existsSync(hub.caPath) && fs.existsSync(csPath) && fs.statSync(csPath).size > 0;
    if (written && await portOpen(MQTT_PORT) && await portOpen(HTTPS_PORT)) {
      hub.connectionString = fs.readFileSync(csPath, 'utf8').trim();
      return hub;
    }
    await sleep(100);
  }
  child.kill('SIGKILL');
  await exited;
  throw new Error(`twinhub not ready within ${READY_TIMEOUT_MS / 1000}s (ca.pem, service-connection-string, `
    + `ports ${MQTT_PORT} and ${HTTPS_PORT}); its output:\n${tail(logPath)}`);
}

/** SIGTERM the hub; resolves null if it exited 0 within 10 s, else a description of what went wrong. */
async function stopHub(hub) {
  hub.child.kill('SIGTERM');
  const timedOut = Symbol('timeout');
  let timer;
  const code = await Promise.race([hub.exited, new Promise((resolve) => {
    timer = setTimeout(() => resolve(timedOut), SHUTDOWN_TIMEOUT_MS);
  })]);
  clearTimeout(timer);
  if (code === 0) {
    fs.rmSync(hub.root, { recursive: true, force: true });
    return null;
  }
  if (code === timedOut) {
    hub.child.kill('SIGKILL');
    await hub.exited;
  }
  const reason = code === timedOut ? `did not exit within ${SHUTDOWN_TIMEOUT_MS / 1000}s` : `exit ${code}`;
  return `twinhub after SIGTERM: ${reason} (expected exit code 0); data kept in ${hub.root}; `
    + `its output:\n${tail(hub.logPath)}`;
}

module.exports = { startHub, stopHub, twinhubBin };
