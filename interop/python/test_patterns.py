"""The device-management patterns end to end: Microsoft's service SDK (azure-iot-hub) as the back
end, the `twinhub agent` binary as the device, its commands shell scripts touching files in a
temporary directory.

Reboot and factory reset are direct methods (`invoke_device_method`); configuration is a desired
property (`update_twin`); firmware goes out through an automatic configuration
(`IoTHubConfigurationManager`) naming a package uploaded with the hub's `PUT /firmware/{id}`
(the SDK has no firmware API, so `requests` signs that call with the service key). Every outcome
is read back with `get_twin` and from the files the commands touched.

The agent runs under a small supervisor that restarts it when it exits, as systemd would: its
reboot command stops it (SIGTERM to its parent), so a reboot is a real process restart.
"""
import base64
import hashlib
import hmac
import json
import os
import pathlib
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.parse
import uuid

import pytest
import requests
from azure.iot.hub import IoTHubConfigurationManager
from azure.iot.hub.protocol.models import (CloudToDeviceMethod, Configuration, ConfigurationContent,
                                           ConfigurationMetrics, Twin, TwinProperties)

from conftest import HTTPS_PORT, _die_with_parent, _twinhub_bin, configure_registry
from hubtest import STEP_TIMEOUT, call, wait_until

# Long enough for a download, an install and a restart of the agent.
PATTERN_TIMEOUT = 30


@pytest.fixture(scope="module")
def configs(hub):
    return configure_registry(IoTHubConfigurationManager.from_connection_string(hub.connection_string), hub)


class Agent:
    """`twinhub agent` for one device, restarted whenever it exits until stop()."""

    def __init__(self, hub, identity, transport="mqtt"):
        self.device_id = identity.device_id
        self.root = pathlib.Path(tempfile.mkdtemp(prefix="twinhub-agent-py-"))
        for name in ("marks", "firmware", "state"):
            (self.root / name).mkdir()
        self.log_path = self.root / "agent.log"
        self.config_path = self.root / "agent.toml"
        marks, firmware = self.root / "marks", self.root / "firmware"
        commands = {
            "reboot": "echo reboot >> '{}/reboots' && kill -TERM $PPID".format(marks),
            "install_firmware": "cp \"$1\" '{}/firmware-'\"$2\".bin".format(firmware),
            "rollback_firmware": "echo \"$1\" >> '{}/rollbacks'".format(marks),
            "factory_reset": "touch '{}/factory-reset'".format(marks),
            "apply_configuration": "cp \"$2\" '{}/applied-'\"$1\".json".format(marks),
        }
        settings = {
            "host_name": hub.host,
            "device_id": identity.device_id,
            "shared_access_key": identity.primary_key,
            "ca_file": hub.ca_path,
            "transport": transport,
            "state_dir": str(self.root / "state"),
            "initial_firmware_version": "1.0.0",
            "command_timeout_seconds": 20,
            "reboot_grace_seconds": 20,
        }
        # A JSON string is a valid TOML basic string.
        lines = ["{} = {}".format(key, json.dumps(value)) for key, value in settings.items()]
        lines.append("[commands]")
        lines += ["{} = {}".format(key, json.dumps(value)) for key, value in commands.items()]
        self.config_path.write_text("\n".join(lines) + "\n")
        self.exit_codes = []
        self._process = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name="agent-" + self.device_id, daemon=True)
        self._thread.start()

    def _supervise(self):
        environment = dict(os.environ, TWINHUB_LOG="info,twinhub_dm=debug")
        while not self._stopping.is_set():
            with open(self.log_path, "ab") as log:
                process = subprocess.Popen(
                    [_twinhub_bin(), "agent", "--config", str(self.config_path)], stdin=subprocess.DEVNULL,
                    stdout=log, stderr=log, env=environment, start_new_session=True, preexec_fn=_die_with_parent)
            with self._lock:
                self._process = process
            code = process.wait()
            with self._lock:
                self._process = None
                self.exit_codes.append(code)
            self._stopping.wait(0.1)

    def _signal(self, number):
        with self._lock:
            if self._process is not None and self._process.poll() is None:
                os.killpg(self._process.pid, number)

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError as error:
            return "<no agent log: {}>".format(error)

    def path(self, name):
        return self.root / name

    def read(self, name):
        try:
            return self.path(name).read_text()
        except OSError:
            return None

    def stop(self):
        """SIGTERM; the agent must exit 0 within 10 s. Returns every run's exit code."""
        self._stopping.set()
        deadline = time.monotonic() + 10
        while self._thread.is_alive() and time.monotonic() < deadline:
            self._signal(signal.SIGTERM)
            self._thread.join(0.2)
        if self._thread.is_alive():
            self._signal(signal.SIGKILL)
            self._thread.join(5)
            raise AssertionError("the agent did not stop on SIGTERM; its log:\n" + self.log())
        return list(self.exit_codes)

    def close(self):
        self._stopping.set()
        self._signal(signal.SIGKILL)
        self._thread.join(5)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def start_agent(hub):
    """Starts agents for a test; they are killed and their files removed afterwards."""
    agents = []

    def start(identity, transport="mqtt"):
        agent = Agent(hub, identity, transport)
        agents.append(agent)
        return agent

    yield start
    for agent in agents:
        agent.close()


def reported(registry, device_id):
    return call(registry.get_twin, device_id).properties.reported or {}


def wait_reported(registry, agent, what, predicate):
    """Polls get_twin until predicate(reported) holds; returns the reported properties."""
    last = {}

    def probe():
        last["value"] = reported(registry, agent.device_id)
        return last["value"] if predicate(last["value"]) else None

    try:
        return wait_until(probe, timeout=PATTERN_TIMEOUT, interval=0.2, what=what)
    except AssertionError as error:
        raise AssertionError("{}\nreported: {}\nagent log:\n{}".format(
            error, json.dumps(last.get("value"), indent=1), agent.log())) from None


def firmware_of(properties):
    return (properties.get("firmware") or {})


def invoke(registry, device_id, name):
    request = CloudToDeviceMethod(method_name=name, payload={}, response_timeout_in_seconds=10,
                                  connect_timeout_in_seconds=10)
    return call(registry.invoke_device_method, device_id, request, timeout=30)


def service_token(hub, ttl=3600):
    """An iothubowner SAS token, signed as the service SDKs sign theirs."""
    fields = dict(part.split("=", 1) for part in hub.connection_string.split(";") if "=" in part)
    resource = urllib.parse.quote(hub.host, safe="")
    expiry = int(time.time()) + ttl
    key = base64.b64decode(fields["SharedAccessKey"])
    digest = hmac.new(key, "{}\n{}".format(resource, expiry).encode(), hashlib.sha256).digest()
    signature = urllib.parse.quote(base64.b64encode(digest).decode(), safe="")
    return "SharedAccessSignature sr={}&sig={}&se={}&skn={}".format(
        resource, signature, expiry, fields["SharedAccessKeyName"])


def upload_firmware(hub, version, data):
    """Uploads a package with `PUT /firmware/{id}`; returns the hub's answer (url, sha256, size)."""
    package_id = "py-{}-{}".format(version, uuid.uuid4().hex[:8])
    response = requests.put(
        "https://{}:{}/firmware/{}".format(hub.host, HTTPS_PORT, package_id),
        params={"version": version, "api-version": "2021-04-12"}, data=data,
        headers={"Authorization": service_token(hub), "Content-Type": "application/octet-stream"},
        verify=hub.ca_path, timeout=STEP_TIMEOUT)
    assert response.status_code == 201, (response.status_code, response.text)
    return response.json()


def firmware_configuration(device_id, version, package, check_value, priority):
    firmware = {"fwVersion": version, "fwPackageURI": package["url"], "fwPackageCheckValue": check_value,
                "fwSize": package["size"]}
    current = ("SELECT deviceId FROM devices WHERE properties.reported.firmware.fwUpdateStatus = 'current' "
               "AND properties.reported.firmware.currentFwVersion = '{}'".format(version))
    return Configuration(
        id="py-fw-" + uuid.uuid4().hex[:12], schema_version="1.0", labels={"test": "patterns"},
        content=ConfigurationContent(device_content={"properties.desired.firmware": firmware}),
        target_condition="deviceId = '{}'".format(device_id), priority=priority,
        metrics=ConfigurationMetrics(queries={"current": current}))


def test_reboot_and_factory_reset_methods(devices, registry, start_agent):
    device = devices.create()
    agent = start_agent(device)
    wait_reported(registry, agent, "the agent's first report",
                  lambda r: firmware_of(r).get("currentFwVersion") == "1.0.0")

    answer = invoke(registry, device.device_id, "reboot")
    assert answer.status == 200 and answer.payload == "Reboot started", answer
    after = wait_reported(registry, agent, "rebooted",
                          lambda r: (r.get("iothubDM") or {}).get("reboot", {}).get("status") == "rebooted")
    assert after["iothubDM"]["reboot"]["lastReboot"], after
    assert agent.read("marks/reboots") == "reboot\n"

    agent.path("state/user-data").write_text("precious")
    answer = invoke(registry, device.device_id, "factoryReset")
    assert answer.status == 200 and answer.payload == "Factory reset started", answer
    after = wait_reported(registry, agent, "reset",
                          lambda r: (r.get("iothubDM") or {}).get("factoryReset", {}).get("status") == "reset")
    assert after["iothubDM"]["factoryReset"]["lastFactoryReset"], after
    assert "reboot" not in after["iothubDM"], after  # the reported document started over
    assert agent.path("marks/factory-reset").exists()
    assert not agent.path("state/user-data").exists()
    assert agent.read("marks/reboots") == "reboot\nreboot\n"

    answer = invoke(registry, device.device_id, "selfDestruct")
    assert answer.status == 404, answer
    assert agent.stop() == [0, 0, 0], agent.log()


def test_desired_telemetry_config_is_applied_and_reported(devices, registry, start_agent):
    device = devices.create()
    agent = start_agent(device)
    wait_reported(registry, agent, "the agent's first report", lambda r: "firmware" in r)
    telemetry = {"sendFrequency": "5m", "level": "debug"}
    call(registry.update_twin, device.device_id,
         Twin(properties=TwinProperties(desired={"telemetryConfig": telemetry})), "*")
    after = wait_reported(registry, agent, "telemetryConfig applied",
                          lambda r: (r.get("telemetryConfig") or {}).get("status") == "Success")
    assert after["telemetryConfig"]["appliedConfig"] == telemetry, after
    assert "pendingConfig" not in after["telemetryConfig"], after
    assert json.loads(agent.read("state/config/telemetryConfig.json")) == telemetry
    assert json.loads(agent.read("marks/applied-telemetryConfig.json")) == telemetry

    # update_twin merges: null removes a key, and the applied value loses it too.
    call(registry.update_twin, device.device_id,
         Twin(properties=TwinProperties(desired={"telemetryConfig": {"sendFrequency": "30s", "level": None}})), "*")
    changed = {"sendFrequency": "30s"}
    after = wait_reported(registry, agent, "telemetryConfig changed",
                          lambda r: (r.get("telemetryConfig") or {}).get("appliedConfig") == changed)
    assert after["telemetryConfig"]["status"] == "Success", after
    assert json.loads(agent.read("state/config/telemetryConfig.json")) == changed
    assert agent.stop() == [0], agent.log()


def test_firmware_rollout_through_a_configuration(hub, devices, registry, configs, start_agent):
    device = devices.create()
    agent = start_agent(device, transport="websockets")
    wait_reported(registry, agent, "the agent's first report",
                  lambda r: firmware_of(r).get("currentFwVersion") == "1.0.0")
    data = os.urandom(150_000)
    package = upload_firmware(hub, "2.0.0", data)
    assert package["sha256"] == hashlib.sha256(data).hexdigest() and package["size"] == len(data), package

    created = []
    try:
        good = firmware_configuration(device.device_id, "2.0.0", package, package["sha256"], priority=10)
        created.append(call(configs.create_configuration, good).id)
        after = wait_reported(registry, agent, "firmware 2.0.0 current",
                              lambda r: firmware_of(r).get("fwUpdateStatus") == "current"
                              and firmware_of(r).get("currentFwVersion") == "2.0.0")
        assert after["firmware"]["pendingFwVersion"] == "", after
        assert after["firmware"]["lastFwUpdateEndTime"], after
        assert agent.path("firmware/firmware-2.0.0.bin").read_bytes() == data
        assert agent.read("state/firmware-version").strip() == "2.0.0"
        assert agent.read("marks/reboots") == "reboot\n", "the update rebooted the device"
        wait_until(lambda: (call(configs.get_configuration, good.id).metrics.results or {}).get("current") == 1,
                   what="the configuration's current metric counting the device")

        # A package that does not match its check value is deleted, never installed.
        corrupt = upload_firmware(hub, "3.0.0", os.urandom(40_000))
        bad = firmware_configuration(device.device_id, "3.0.0", corrupt, hashlib.sha256(b"other").hexdigest(),
                                     priority=20)
        created.append(call(configs.create_configuration, bad).id)
        after = wait_reported(registry, agent, "3.0.0 refused and rolled back",
                              lambda r: firmware_of(r).get("fwUpdateStatus") == "rolledback")
        assert after["firmware"]["currentFwVersion"] == "2.0.0", after
        assert after["firmware"]["fwUpdateSubstatus"] == "Rolled back to: 2.0.0", after
        assert not agent.path("firmware/firmware-3.0.0.bin").exists()
        assert agent.read("state/firmware-version").strip() == "2.0.0"
        assert agent.read("marks/rollbacks") is None, "nothing was installed, nothing to roll back"
    finally:
        for configuration_id in created:
            call(configs.delete_configuration, configuration_id)
    assert agent.stop() == [0, 0], agent.log()
