"""Direct methods: service invoke over REST, device answers over MQTT."""
import queue
import threading
import time

import pytest
from azure.iot.device import MethodResponse
from azure.iot.hub.protocol.models import CloudToDeviceMethod

from hubtest import call, http_error, next_matching, set_handler


def answer_with(client, respond, seen=None):
    """Install a method handler: respond(request) -> (status, payload); requests also go to seen."""

    def handler(request):
        if seen is not None:
            seen.put(request)
        status, payload = respond(request)
        client.send_method_response(MethodResponse.create_from_method_request(request, status, payload))

    set_handler(client, "on_method_request_received", handler)


def invoke(registry, device_id, name, payload=None, response_timeout=10, connect_timeout=0):
    request = CloudToDeviceMethod(method_name=name, payload=payload,
                                  response_timeout_in_seconds=response_timeout,
                                  connect_timeout_in_seconds=connect_timeout)
    return call(registry.invoke_device_method, device_id, request,
                timeout=response_timeout + connect_timeout + 10)


@pytest.fixture
def echo_device(devices):
    """A connected device whose handler answers 200 with {"method", "payload"} echoed back."""
    device = devices.create()
    client = devices.connect(device)
    seen = queue.Queue()
    answer_with(client, lambda r: (200, {"method": r.name, "payload": r.payload}), seen)
    return device, seen


def test_round_trip_with_dict_payload(registry, echo_device):
    device, seen = echo_device
    result = invoke(registry, device.device_id, "reboot", {"delay": 3, "force": True})
    assert result.status == 200
    assert result.payload == {"method": "reboot", "payload": {"delay": 3, "force": True}}
    assert seen.get_nowait().name == "reboot"


def test_round_trip_with_string_payload(registry, echo_device):
    device, _ = echo_device
    result = invoke(registry, device.device_id, "say", "hello")
    assert result.payload == {"method": "say", "payload": "hello"}


def test_none_payload_arrives_as_empty_string(registry, echo_device):
    device, seen = echo_device
    # azure-iot-hub sends payload None as "" on the wire; the hub must pass that JSON value through
    result = invoke(registry, device.device_id, "ping", None)
    assert result.status == 200
    assert seen.get_nowait().payload == ""
    assert result.payload == {"method": "ping", "payload": ""}


def test_device_status_and_null_payload_passed_through(devices, registry):
    device = devices.create()
    client = devices.connect(device)
    answer_with(client, lambda r: (299, None))
    result = invoke(registry, device.device_id, "custom")
    assert result.status == 299
    assert result.payload is None


def test_disconnected_device_is_404_device_not_online(devices, registry):
    device = devices.create()
    status, body = http_error(registry.invoke_device_method, device.device_id,
                              CloudToDeviceMethod(method_name="m", payload={}, response_timeout_in_seconds=5,
                                                  connect_timeout_in_seconds=0))
    assert status == 404, body
    assert "DeviceNotOnline" in body or "404103" in body, body


def test_device_that_never_answers_is_504(devices, registry):
    device = devices.create()
    client = devices.connect(device)
    received = queue.Queue()
    set_handler(client, "on_method_request_received", received.put)
    started = time.monotonic()
    status, body = http_error(registry.invoke_device_method, device.device_id,
                              CloudToDeviceMethod(method_name="silent", payload={}, response_timeout_in_seconds=5),
                              timeout=20)
    elapsed = time.monotonic() - started
    assert status == 504, body
    assert received.get_nowait().name == "silent", "the device never got the request"
    assert 4 <= elapsed <= 15, "504 after {:.1f}s for responseTimeoutInSeconds=5".format(elapsed)


def test_connect_timeout_waits_for_the_device(devices, registry):
    device = devices.create()
    outcome = {}

    def invoke_while_offline():
        try:
            outcome["result"] = invoke(registry, device.device_id, "late", {"n": 1},
                                       response_timeout=10, connect_timeout=20)
        except Exception as error:  # noqa: B902 - reported by the main thread
            outcome["error"] = error

    caller = threading.Thread(target=invoke_while_offline, daemon=True)
    caller.start()
    time.sleep(2)
    client = devices.connect(device)
    answer_with(client, lambda r: (200, {"got": r.payload}))
    caller.join(40)
    assert not caller.is_alive(), "invoke did not return"
    assert "error" not in outcome, "invoke failed: {!r}".format(outcome.get("error"))
    assert outcome["result"].status == 200
    assert outcome["result"].payload == {"got": {"n": 1}}


def test_unknown_device_is_404(registry):
    status, body = http_error(registry.invoke_device_method, "interop-py-no-such-device",
                              CloudToDeviceMethod(method_name="m", payload={}, response_timeout_in_seconds=5))
    assert status == 404, body
    assert "DeviceNotFound" in body or "404001" in body, body


def test_response_timeout_below_range_is_400(registry, echo_device):
    device, seen = echo_device
    status, body = http_error(registry.invoke_device_method, device.device_id,
                              CloudToDeviceMethod(method_name="m", payload={}, response_timeout_in_seconds=3))
    assert status == 400, body
    assert seen.empty(), "an invalid invocation reached the device"


def test_concurrent_invocations_each_get_their_own_answer(devices, new_registry):
    device = devices.create()
    client = devices.connect(device)
    answer_with(client, lambda r: (200 + r.payload["i"], {"i": r.payload["i"]}))
    results = queue.Queue()

    def invoke_one(i):
        try:
            results.put((i, invoke(new_registry(), device.device_id, "echo", {"i": i})))
        except Exception as error:  # noqa: B902 - reported by the main thread
            results.put((i, error))

    callers = [threading.Thread(target=invoke_one, args=(i,), daemon=True) for i in range(5)]
    for caller in callers:
        caller.start()
    answers = [next_matching(results, lambda _: True, timeout=30, what="method result") for _ in callers]
    for i, result in answers:
        assert not isinstance(result, Exception), "call {} failed: {!r}".format(i, result)
        assert result.status == 200 + i and result.payload == {"i": i}, "call {} got {} {!r}".format(
            i, result.status, result.payload)
    assert sorted(i for i, _ in answers) == list(range(5))
