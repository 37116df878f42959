"""MQTT over WebSockets (wss://localhost:443/$iothub/websocket) with the Python device SDK."""
import queue

from azure.iot.device import MethodResponse
from azure.iot.hub.protocol.models import CloudToDeviceMethod, Twin, TwinProperties

from hubtest import call, next_matching, set_handler


def test_twin_and_method_over_websockets(devices, registry):
    device = devices.create()
    client = devices.connect(device, websockets=True)

    twin = call(client.get_twin)
    previous = twin["desired"]["$version"]
    call(client.patch_twin_reported_properties, {"transport": "websockets"})
    assert call(registry.get_twin, device.device_id).properties.reported.get("transport") == "websockets"

    patches = queue.Queue()
    set_handler(client, "on_twin_desired_properties_patch_received", patches.put)
    call(registry.update_twin, device.device_id, Twin(properties=TwinProperties(desired={"viaWs": 1})), "*")
    patch = next_matching(patches, lambda p: "viaWs" in p, what="desired patch")
    assert patch["viaWs"] == 1 and patch["$version"] == previous + 1, patch

    set_handler(client, "on_method_request_received", lambda request: client.send_method_response(
        MethodResponse.create_from_method_request(request, 200, {"echo": request.payload})))
    result = call(registry.invoke_device_method, device.device_id,
                  CloudToDeviceMethod(method_name="wsMethod", payload={"n": 7}, response_timeout_in_seconds=10),
                  timeout=20)
    assert result.status == 200 and result.payload == {"echo": {"n": 7}}
