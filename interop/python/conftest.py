"""Fixtures for the Python interop suite: one twinhub per session, driven by Microsoft's SDKs.

The hub is started on a fresh data directory with the ports the SDKs force (8883 MQTT/TLS,
443 HTTPS and MQTT over WebSockets), so only one suite may run at a time on a machine.
"""
import ctypes
import dataclasses
import faulthandler
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest
from azure.iot.device import IoTHubDeviceClient, IoTHubModuleClient, X509
from azure.iot.hub import IoTHubRegistryManager

from hubtest import STEP_TIMEOUT, call, new_id, new_key

REPO = pathlib.Path(__file__).resolve().parents[2]
MQTT_PORT = 8883
HTTPS_PORT = 443
READY_TIMEOUT = 30
SHUTDOWN_TIMEOUT = 10
# Last line of defence against a hang outside call(): the whole process is stopped.
HARD_TEST_TIMEOUT = float(os.environ.get("INTEROP_HARD_TIMEOUT", "240"))

_running_hub = {"process": None}
_session_status = {}


@dataclasses.dataclass(frozen=True)
class Hub:
    """A running twinhub as the tests see it."""

    connection_string: str
    ca_path: str
    ca_pem: str
    host: str
    data_dir: str


@dataclasses.dataclass(frozen=True)
class Identity:
    """A device (or module) registered for one test, with its symmetric keys."""

    device_id: str
    primary_key: str
    secondary_key: str
    module_id: str = None


def _twinhub_bin():
    configured = os.environ.get("TWINHUB_BIN")
    path = pathlib.Path(configured) if configured else REPO / "target" / "debug" / "twinhub"
    if not path.is_file():
        pytest.fail("twinhub binary not found at {} (build it, or set TWINHUB_BIN)".format(path), pytrace=False)
    return str(path)


def _port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _die_with_parent():
    """Linux: SIGKILL the hub if the test process dies, so no stale hub keeps 8883/443."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def _read_log(path):
    try:
        return pathlib.Path(path).read_text(errors="replace")[-8000:]
    except OSError as error:
        return "<cannot read hub log: {}>".format(error)


def _wait_ready(process, data_dir, log_path):
    ca_file = data_dir / "ca.pem"
    cs_file = data_dir / "service-connection-string"
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:
            pytest.fail("twinhub exited with code {} before becoming ready; its output:\n{}".format(
                code, _read_log(log_path)), pytrace=False)
        files_written = ca_file.is_file() and cs_file.is_file() and cs_file.stat().st_size > 0
        if files_written and _port_open(MQTT_PORT) and _port_open(HTTPS_PORT):
            return ca_file.read_text(), cs_file.read_text().strip()
        time.sleep(0.1)
    process.kill()
    process.wait()
    pytest.fail("twinhub not ready within {}s (ca.pem, service-connection-string, ports {} and {}); "
                "its output:\n{}".format(READY_TIMEOUT, MQTT_PORT, HTTPS_PORT, _read_log(log_path)),
                pytrace=False)


@pytest.fixture(scope="session")
def hub():
    """Start twinhub on a fresh data dir; at the end, SIGTERM must stop it with exit code 0."""
    binary = _twinhub_bin()
    busy = [port for port in (MQTT_PORT, HTTPS_PORT) if _port_open(port)]
    if busy:
        pytest.fail("ports {} are already in use: is another hub running?".format(busy), pytrace=False)
    root = pathlib.Path(tempfile.mkdtemp(prefix="twinhub-interop-py-"))
    data_dir = root / "data"
    log_path = root / "hub.log"
    command = [binary, "serve", "--data-dir", str(data_dir), "--hostname", "localhost",
               "--mqtt-port", str(MQTT_PORT), "--https-port", str(HTTPS_PORT)]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                   preexec_fn=_die_with_parent)
    _running_hub["process"] = process
    ca_pem, connection_string = _wait_ready(process, data_dir, log_path)
    fields = dict(part.split("=", 1) for part in connection_string.split(";") if "=" in part)
    host = fields.get("HostName", "localhost").split(":")[0]
    ca_path = str(data_dir / "ca.pem")
    previous_bundle = os.environ.get("REQUESTS_CA_BUNDLE")
    os.environ["REQUESTS_CA_BUNDLE"] = ca_path
    try:
        yield Hub(connection_string=connection_string, ca_path=ca_path, ca_pem=ca_pem, host=host,
                  data_dir=str(data_dir))
    finally:
        if previous_bundle is None:
            os.environ.pop("REQUESTS_CA_BUNDLE", None)
        else:
            os.environ["REQUESTS_CA_BUNDLE"] = previous_bundle
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=SHUTDOWN_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            code = None
        _running_hub["process"] = None
    if code != 0:
        reason = "did not exit within {}s".format(SHUTDOWN_TIMEOUT) if code is None else "exit code {}".format(code)
        pytest.fail("twinhub after SIGTERM: {} (expected 0); data kept in {}; its output:\n{}".format(
            reason, root, _read_log(log_path)), pytrace=False)
    shutil.rmtree(root, ignore_errors=True)


def configure_registry(manager, hub):
    """msrest knobs as in the conformance smoke test: trust the hub CA, bounded requests, no retries."""
    config = manager.protocol.config
    config.connection.verify = hub.ca_path
    config.connection.timeout = STEP_TIMEOUT
    config.retry_policy.retries = 0  # default is 3 retries with backoff, which hides hub errors
    return manager


@pytest.fixture(scope="session")
def new_registry(hub):
    """Factory for extra registry managers (one per thread in concurrency tests)."""
    return lambda: configure_registry(IoTHubRegistryManager.from_connection_string(hub.connection_string), hub)


@pytest.fixture(scope="session")
def registry(new_registry):
    """The service SDK's registry manager (REST over HTTPS on 443)."""
    return new_registry()


class Devices:
    """Creates identities and SDK clients for one test, and cleans them up afterwards."""

    def __init__(self, hub, registry):
        self.hub = hub
        self.registry = registry
        self._clients = []
        self._device_ids = []

    def create(self, status="enabled", kind="dev"):
        """Register a SAS device with fresh random keys."""
        identity = Identity(new_id(kind), new_key(), new_key())
        call(self.registry.create_device_with_sas, identity.device_id, identity.primary_key,
             identity.secondary_key, status)
        self._device_ids.append(identity.device_id)
        return identity

    def track(self, device_id):
        """Delete this device at the end of the test (for devices created another way)."""
        self._device_ids.append(device_id)

    def create_module(self, device):
        """Register a SAS module on an existing device."""
        module = Identity(device.device_id, new_key(), new_key(), module_id="mod-" + new_id("m")[-12:])
        call(self.registry.create_module_with_sas, module.device_id, module.module_id, None,
             module.primary_key, module.secondary_key)
        return module

    def connection_string(self, identity, key=None):
        parts = ["HostName=" + self.hub.host, "DeviceId=" + identity.device_id]
        if identity.module_id:
            parts.append("ModuleId=" + identity.module_id)
        parts.append("SharedAccessKey=" + (key or identity.primary_key))
        return ";".join(parts)

    def _client_options(self, options):
        merged = dict(server_verification_cert=self.hub.ca_pem, connection_retry=False, keep_alive=30)
        merged.update(options)
        return merged

    def client(self, identity, key=None, **options):
        """A device (or module) client from a connection string, not yet connected."""
        client_class = IoTHubModuleClient if identity.module_id else IoTHubDeviceClient
        client = client_class.create_from_connection_string(
            self.connection_string(identity, key), **self._client_options(options))
        self._clients.append(client)
        return client

    def connect(self, identity, **options):
        """A connected device (or module) client."""
        client = self.client(identity, **options)
        call(client.connect)
        assert client.connected, "client.connected is False after connect()"
        return client

    def x509_client(self, device_id, cert_file, key_file, **options):
        """A device client authenticating with an X.509 client certificate, not yet connected."""
        client = IoTHubDeviceClient.create_from_x509_certificate(
            x509=X509(cert_file, key_file), hostname=self.hub.host, device_id=device_id,
            **self._client_options(options))
        self._clients.append(client)
        return client

    def close(self):
        for client in self._clients:
            try:
                call(client.shutdown, timeout=10)
            except Exception:  # noqa: B902 - cleanup must reach every client and device
                pass
        for device_id in self._device_ids:
            try:
                call(self.registry.delete_device, device_id, timeout=10)
            except Exception:  # noqa: B902 - the test may have deleted it already
                pass


@pytest.fixture
def devices(hub, registry):
    """Per-test identities and clients; clients are shut down and devices deleted afterwards."""
    factory = Devices(hub, registry)
    yield factory
    factory.close()


def _hard_timeout_expired(item_name):
    sys.__stderr__.write("\nINTEROP HARD TIMEOUT: {} ran longer than {}s; thread dump:\n".format(
        item_name, HARD_TEST_TIMEOUT))
    faulthandler.dump_traceback(file=sys.__stderr__, all_threads=True)
    process = _running_hub["process"]
    if process is not None:
        process.kill()
    sys.__stderr__.flush()
    os._exit(3)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Stop the whole run (and the hub) if one test, fixtures included, hangs past the hard limit."""
    watchdog = threading.Timer(HARD_TEST_TIMEOUT, _hard_timeout_expired, args=(item.nodeid,))
    watchdog.daemon = True
    watchdog.start()
    try:
        yield
    finally:
        watchdog.cancel()


def pytest_sessionfinish(session, exitstatus):
    _session_status["exit"] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """SDK worker threads (paho, pipeline executors) can outlive a failed test; don't let them
    hold the process open after pytest has printed its summary."""
    lingering = [t for t in threading.enumerate()
                 if t is not threading.main_thread() and t.is_alive() and not t.daemon]
    if lingering and "exit" in _session_status:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_session_status["exit"])
