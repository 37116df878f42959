"""Device authentication and session behaviour: refusals, SAS renewal, module identities."""
import queue
import threading

import pytest
from azure.iot.device import MethodResponse
from azure.iot.device.exceptions import CredentialError
from azure.iot.hub.protocol.models import CloudToDeviceMethod

from hubtest import call, new_key, set_handler, user_keys, wait_until

# The SDK renews a SAS token 120 s before it expires by disconnecting and reconnecting,
# so a 130 s token is renewed about 10 s after connecting.
RENEWING_TTL = 130


def test_disabled_device_is_refused(devices):
    client = devices.client(devices.create(status="disabled"))
    with pytest.raises(CredentialError):
        call(client.connect)
    assert not client.connected


def test_wrong_key_is_refused(devices):
    client = devices.client(devices.create(), key=new_key())
    with pytest.raises(CredentialError):
        call(client.connect)
    assert not client.connected


def test_secondary_key_is_accepted(devices):
    device = devices.create()
    client = devices.client(device, key=device.secondary_key)
    call(client.connect)
    assert client.connected


def test_subscriptions_survive_sas_renewal(devices, registry):
    device = devices.create()
    client = devices.client(device, sastoken_ttl=RENEWING_TTL)
    state_changes = []
    renewed = threading.Event()

    def on_state_change():
        # connect, then the renewal's disconnect and reconnect
        state_changes.append(client.connected)
        if len(state_changes) >= 3:
            renewed.set()

    client.on_connection_state_change = on_state_change
    call(client.connect)
    set_handler(client, "on_method_request_received", lambda request: client.send_method_response(
        MethodResponse.create_from_method_request(request, 200, {"after": "renewal"})))
    call(client.get_twin)  # subscribes to twin responses before the renewal

    assert renewed.wait(RENEWING_TTL - 120 + 20), \
        "no disconnect+reconnect for SAS renewal seen; connection state events: {}".format(state_changes)
    wait_until(lambda: client.connected, what="client connected after renewal")

    # the SDK does not subscribe again after renewal: the persistent session must keep it
    result = call(registry.invoke_device_method, device.device_id,
                  CloudToDeviceMethod(method_name="afterRenewal", payload={}, response_timeout_in_seconds=5),
                  timeout=20)
    assert result.status == 200 and result.payload == {"after": "renewal"}
    call(client.patch_twin_reported_properties, {"renewed": True})
    assert call(registry.get_twin, device.device_id).properties.reported.get("renewed") is True


def test_module_identity_twin_and_method(devices, registry):
    module = devices.create_module(devices.create())
    client = devices.connect(module)

    twin = call(client.get_twin)
    assert isinstance(twin["desired"].get("$version"), int), twin
    call(client.patch_twin_reported_properties, {"moduleState": "ready"})
    service_twin = call(registry.get_module_twin, module.device_id, module.module_id)
    assert service_twin.module_id == module.module_id
    assert user_keys(service_twin.properties.reported) == {"moduleState": "ready"}
    device_twin = call(registry.get_twin, module.device_id)
    assert "moduleState" not in device_twin.properties.reported, "module report leaked into device twin"

    requests = queue.Queue()

    def handler(request):
        requests.put(request)
        client.send_method_response(MethodResponse.create_from_method_request(
            request, 200, {"module": module.module_id, "payload": request.payload}))

    set_handler(client, "on_method_request_received", handler)
    result = call(registry.invoke_device_module_method, module.device_id, module.module_id,
                  CloudToDeviceMethod(method_name="modMethod", payload={"x": 1}, response_timeout_in_seconds=10),
                  timeout=20)
    assert result.status == 200
    assert result.payload == {"module": module.module_id, "payload": {"x": 1}}
    assert requests.get_nowait().name == "modMethod"
