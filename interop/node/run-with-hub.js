#!/usr/bin/env node
'use strict';
// `npm test`: start twinhub, then run `node --test` on the suite with the hub's CA trusted.
//
// Why a wrapper: the service SDK (azure-iothub Registry / Client) has no option for a custom CA,
// so the CA must be in NODE_EXTRA_CA_CERTS, which Node reads only at process start. node --test
// runs every test file in a child process, so the hub is started here first (fresh data dir, its
// CA known) and the test processes inherit NODE_EXTRA_CA_CERTS, IOTHUB_CONNECTION_STRING and
// TWINHUB_CA_FILE. The device clients additionally get the CA via setOptions({ ca }).
//
// Usage: node run-with-hub.js [test files...] [node --test options...]
//   e.g. npm test -- test/twin.test.js --test-name-pattern="null out"

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { startHub, stopHub } = require('./lib/hub');

function testArguments(argv) {
  const files = argv.filter((a) => !a.startsWith('-'));
  const options = argv.filter((a) => a.startsWith('-'));
  if (files.length === 0) {
    const dir = path.join(__dirname, 'test');
    files.push(...fs.readdirSync(dir).filter((f) => f.endsWith('.test.js')).sort().map((f) => path.join('test', f)));
  }
  // one file at a time (fixed ports, one hub); force-exit so a lingering SDK handle cannot hang CI
  return ['--test', '--test-concurrency=1', '--test-force-exit', '--test-timeout=180000', ...options, ...files];
}

async function main() {
  let hub;
  try {
    hub = await startHub();
  } catch (e) {
    console.error(`FAIL twinhub start: ${e.message}`);
    return 1;
  }
  const stopOnSignal = (signal) => { hub.child.kill('SIGKILL'); process.exit(signal === 'SIGINT' ? 130 : 143); };
  process.once('SIGINT', stopOnSignal);
  process.once('SIGTERM', stopOnSignal);

  const env = {
    ...process.env,
    NODE_EXTRA_CA_CERTS: hub.caPath,
    TWINHUB_CA_FILE: hub.caPath,
    IOTHUB_CONNECTION_STRING: hub.connectionString,
  };
  const testStatus = await new Promise((resolve) => {
    const runner = spawn(process.execPath, testArguments(process.argv.slice(2)), { cwd: __dirname, env, stdio: 'inherit' });
    runner.once('exit', (code, signal) => resolve(code === null ? `signal ${signal}` : code));
  });

  const shutdownProblem = await stopHub(hub);
  if (shutdownProblem) console.error(`FAIL ${shutdownProblem}`);
  else console.log('twinhub stopped cleanly (SIGTERM -> exit 0)');
  return testStatus === 0 && !shutdownProblem ? 0 : 1;
}

main().then((code) => process.exit(code), (e) => { console.error(`FAIL interop runner: ${e.stack}`); process.exit(1); });
