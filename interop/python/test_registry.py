"""Identity registry over REST, driven by azure-iot-hub's IoTHubRegistryManager."""
from azure.iot.hub.protocol.models import AuthenticationMechanism, ExportImportDevice, SymmetricKey

from hubtest import call, http_error, is_generated_key, new_id, new_key, wait_until


def test_create_device_with_keys_echoes_them(devices, registry):
    device_id, primary, secondary = new_id("dev"), new_key(), new_key()
    created = call(registry.create_device_with_sas, device_id, primary, secondary, "enabled")
    devices.track(device_id)
    assert created.device_id == device_id
    assert created.authentication.symmetric_key.primary_key == primary
    assert created.authentication.symmetric_key.secondary_key == secondary
    assert created.status == "enabled"
    assert created.etag


def test_create_device_without_keys_generates_them(devices, registry):
    device_id = new_id("dev")
    created = call(registry.create_device_with_sas, device_id, None, None, "enabled")
    devices.track(device_id)
    keys = created.authentication.symmetric_key
    assert is_generated_key(keys.primary_key), "primaryKey {!r}".format(keys.primary_key)
    assert is_generated_key(keys.secondary_key), "secondaryKey {!r}".format(keys.secondary_key)
    assert keys.primary_key != keys.secondary_key
    fetched = call(registry.get_device, device_id)
    assert fetched.authentication.symmetric_key.primary_key == keys.primary_key


def test_get_device_reports_identity_fields(devices, registry):
    device = devices.create()
    fetched = call(registry.get_device, device.device_id)
    assert fetched.device_id == device.device_id
    assert fetched.etag, "no etag"
    assert fetched.status == "enabled"
    assert fetched.connection_state == "Disconnected"
    assert fetched.authentication.type == "sas"
    assert fetched.authentication.symmetric_key.primary_key == device.primary_key


def test_update_device_with_current_etag(devices, registry):
    device = devices.create()
    etag = call(registry.get_device, device.device_id).etag
    new_primary = new_key()
    updated = call(registry.update_device_with_sas, device.device_id, etag, new_primary,
                   device.secondary_key, "disabled")
    assert updated.status == "disabled"
    assert updated.authentication.symmetric_key.primary_key == new_primary
    assert updated.etag and updated.etag != etag, "etag did not change on update"
    assert call(registry.get_device, device.device_id).status == "disabled"


def test_update_device_with_stale_etag_is_412(devices, registry):
    device = devices.create()
    stale = call(registry.get_device, device.device_id).etag
    call(registry.update_device_with_sas, device.device_id, stale, device.primary_key,
         device.secondary_key, "disabled")
    status, body = http_error(registry.update_device_with_sas, device.device_id, stale,
                              device.primary_key, device.secondary_key, "enabled")
    assert status == 412, body
    assert call(registry.get_device, device.device_id).status == "disabled"


def test_delete_device_then_get_is_404(devices, registry):
    device = devices.create()
    call(registry.delete_device, device.device_id)
    status, body = http_error(registry.get_device, device.device_id)
    assert status == 404, body
    assert "DeviceNotFound" in body, body


def test_create_existing_device_is_409(devices, registry):
    device = devices.create()
    status, body = http_error(registry.create_device_with_sas, device.device_id, new_key(), new_key(),
                              "enabled")
    assert status == 409, body
    assert call(registry.get_device, device.device_id).authentication.symmetric_key.primary_key == \
        device.primary_key


def test_get_devices_lists_created_devices(devices, registry):
    created = {devices.create().device_id for _ in range(2)}
    listed = {d.device_id for d in call(registry.get_devices, 1000)}
    assert created <= listed, "missing from list: {}".format(created - listed)


def test_module_lifecycle(devices, registry):
    device = devices.create()
    module_id, primary, secondary = "mod-1", new_key(), new_key()
    created = call(registry.create_module_with_sas, device.device_id, module_id, None, primary, secondary)
    assert created.module_id == module_id
    assert created.device_id == device.device_id
    assert created.authentication.symmetric_key.primary_key == primary

    fetched = call(registry.get_module, device.device_id, module_id)
    assert fetched.module_id == module_id and fetched.etag
    assert [m.module_id for m in call(registry.get_modules, device.device_id)] == [module_id]

    new_primary = new_key()
    updated = call(registry.update_module_with_sas, device.device_id, module_id, None, fetched.etag,
                   new_primary, secondary)
    assert updated.authentication.symmetric_key.primary_key == new_primary
    assert call(registry.get_module, device.device_id, module_id).authentication.symmetric_key.primary_key \
        == new_primary

    call(registry.delete_module, device.device_id, module_id)
    status, body = http_error(registry.get_module, device.device_id, module_id)
    assert status == 404, body
    assert call(registry.get_modules, device.device_id) == []


def test_registry_statistics_count_devices(devices, registry):
    before = call(registry.get_device_registry_statistics)
    devices.create(status="enabled")
    devices.create(status="disabled")
    after = call(registry.get_device_registry_statistics)
    assert after.total_device_count == before.total_device_count + 2
    assert after.enabled_device_count == before.enabled_device_count + 1
    assert after.disabled_device_count == before.disabled_device_count + 1


def test_service_statistics_count_connected_devices(devices, registry):
    baseline = call(registry.get_service_statistics).connected_device_count
    device = devices.create()
    client = devices.connect(device)
    wait_until(lambda: call(registry.get_service_statistics).connected_device_count == baseline + 1,
               what="connectedDeviceCount == {}".format(baseline + 1))
    assert call(registry.get_device, device.device_id).connection_state == "Connected"
    call(client.shutdown)
    wait_until(lambda: call(registry.get_service_statistics).connected_device_count == baseline,
               what="connectedDeviceCount back to {}".format(baseline))


def test_bulk_create_then_delete(devices, registry):
    ids = [new_id("bulk") for _ in range(3)]
    for device_id in ids:
        devices.track(device_id)
    creates = [ExportImportDevice(id=device_id, import_mode="create", status="enabled",
                                  authentication=AuthenticationMechanism(type="sas", symmetric_key=SymmetricKey()))
               for device_id in ids]
    result = call(registry.bulk_create_or_update_devices, creates)
    assert result.is_successful, "errors: {!r}".format(result.errors)
    for device_id in ids:
        fetched = call(registry.get_device, device_id)
        assert fetched.status == "enabled"
        assert is_generated_key(fetched.authentication.symmetric_key.primary_key)

    deletes = [ExportImportDevice(id=device_id, import_mode="delete") for device_id in ids]
    result = call(registry.bulk_create_or_update_devices, deletes)
    assert result.is_successful, "errors: {!r}".format(result.errors)
    for device_id in ids:
        status, body = http_error(registry.get_device, device_id)
        assert status == 404, body
