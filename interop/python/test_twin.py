"""Device twins: the device SDK over MQTT and the service SDK over REST on the same twin."""
import queue

import pytest
from azure.iot.device.exceptions import ClientError
from azure.iot.hub.protocol.models import Twin, TwinProperties

from hubtest import call, http_error, next_matching, set_handler, user_keys


def desired_patches(client):
    """Subscribe to desired-property patches; returns the queue they arrive on."""
    patches = queue.Queue()
    set_handler(client, "on_twin_desired_properties_patch_received", patches.put)
    return patches


def test_device_get_twin_has_section_versions(devices):
    client = devices.connect(devices.create())
    twin = call(client.get_twin)
    assert set(twin) >= {"desired", "reported"}, "twin keys {}".format(sorted(twin))
    assert isinstance(twin["desired"].get("$version"), int), twin
    assert isinstance(twin["reported"].get("$version"), int), twin


def test_reported_patch_seen_by_service_with_metadata_and_version(devices, registry):
    device = devices.create()
    client = devices.connect(device)
    version_before = call(registry.get_twin, device.device_id).properties.reported["$version"]

    call(client.patch_twin_reported_properties, {"temperature": 21.5, "firmware": {"version": "1.2.3"}})

    reported = call(registry.get_twin, device.device_id).properties.reported
    assert reported.get("temperature") == 21.5, reported
    assert reported.get("firmware") == {"version": "1.2.3"}, reported
    assert reported.get("$version") == version_before + 1, reported
    metadata = reported.get("$metadata", {})
    assert "$lastUpdated" in metadata, metadata
    assert "$lastUpdated" in metadata.get("temperature", {}), metadata
    assert "$lastUpdated" in metadata.get("firmware", {}).get("version", {}), metadata
    assert call(client.get_twin)["reported"]["$version"] == version_before + 1


def test_nested_null_removes_reported_key(devices, registry):
    device = devices.create()
    client = devices.connect(device)
    call(client.patch_twin_reported_properties, {"outer": {"keep": 1, "drop": 2}, "gone": True})
    call(client.patch_twin_reported_properties, {"outer": {"drop": None}, "gone": None})

    reported = call(registry.get_twin, device.device_id).properties.reported
    assert user_keys(reported) == {"outer": {"keep": 1}}, reported
    assert user_keys(call(client.get_twin)["reported"]) == {"outer": {"keep": 1}}


def test_service_desired_update_reaches_device_with_next_version(devices, registry):
    device = devices.create()
    client = devices.connect(device)
    patches = desired_patches(client)
    previous = call(client.get_twin)["desired"]["$version"]

    updated = call(registry.update_twin, device.device_id,
                   Twin(properties=TwinProperties(desired={"interval": 5, "mode": {"fast": True}})), "*")
    assert updated.properties.desired["$version"] == previous + 1, updated.properties.desired

    patch = next_matching(patches, lambda p: "interval" in p, what="desired patch")
    assert patch["$version"] == previous + 1, patch
    assert patch["interval"] == 5 and patch["mode"] == {"fast": True}, patch


def test_replace_twin_sends_explicit_nulls_for_removed_keys(devices, registry):
    device = devices.create()
    client = devices.connect(device)
    first = call(registry.update_twin, device.device_id,
                 Twin(properties=TwinProperties(desired={"a": 1, "b": 2, "c": {"d": 3}})), "*")
    patches = desired_patches(client)
    previous = first.properties.desired["$version"]

    replaced = call(registry.replace_twin, device.device_id,
                    Twin(tags={}, properties=TwinProperties(desired={"a": 10})), first.etag)
    assert user_keys(replaced.properties.desired) == {"a": 10}, replaced.properties.desired

    patch = next_matching(patches, lambda p: p.get("$version") == previous + 1, what="desired patch")
    assert "b" in patch and patch["b"] is None, "removed key b must be an explicit null: {!r}".format(patch)
    assert "c" in patch and patch["c"] is None, "removed key c must be an explicit null: {!r}".format(patch)
    assert patch.get("a") == 10, patch
    assert user_keys(call(client.get_twin)["desired"]) == {"a": 10}


def test_update_twin_with_stale_etag_is_412(devices, registry):
    device = devices.create()
    stale = call(registry.get_twin, device.device_id).etag
    call(registry.update_twin, device.device_id, Twin(tags={"round": 1}), stale)
    status, body = http_error(registry.update_twin, device.device_id, Twin(tags={"round": 2}), stale)
    assert status == 412, body
    assert call(registry.get_twin, device.device_id).tags == {"round": 1}


def test_tags_update_leaves_desired_version(devices, registry):
    device = devices.create()
    before = call(registry.get_twin, device.device_id)
    after = call(registry.update_twin, device.device_id, Twin(tags={"site": {"floor": 3}}), before.etag)
    assert after.tags == {"site": {"floor": 3}}
    assert after.properties.desired["$version"] == before.properties.desired["$version"]
    assert after.etag != before.etag, "tags update must change the twin etag"


@pytest.mark.parametrize("bad_key", ["dotted.key", "dollar$key", "spaced key"])
def test_invalid_reported_key_is_rejected_and_twin_unchanged(devices, registry, bad_key):
    device = devices.create()
    client = devices.connect(device)
    call(client.patch_twin_reported_properties, {"good": 1})
    before = call(registry.get_twin, device.device_id).properties.reported

    # the SDK wraps the twin response status in ClientError("Unexpected failure") <- ServiceError
    with pytest.raises(ClientError) as rejected:
        call(client.patch_twin_reported_properties, {"other": 2, bad_key: 3})
    assert "status 400" in str(rejected.value.__cause__), "expected twin res/400, got {!r}".format(
        rejected.value.__cause__)

    after = call(registry.get_twin, device.device_id).properties.reported
    assert user_keys(after) == {"good": 1}, after
    assert after["$version"] == before["$version"]
    assert call(client.get_twin)["reported"]["$version"] == before["$version"], "device connection broken"


def test_service_cannot_write_reported_properties(devices, registry):
    device = devices.create()
    status, body = http_error(registry.update_twin, device.device_id,
                              Twin(properties=TwinProperties(reported={"forged": True})), "*")
    assert status == 400, body
    assert "forged" not in call(registry.get_twin, device.device_id).properties.reported
