"""Automatic device management configurations through the Python service SDK and a real device."""
import queue
import uuid

import pytest
from azure.iot.hub import IoTHubConfigurationManager
from azure.iot.hub.protocol.models import (Configuration, ConfigurationContent, ConfigurationMetrics,
                                           QuerySpecification, Twin)

from conftest import configure_registry
from hubtest import call, http_error, next_matching, set_handler, wait_until


@pytest.fixture(scope="module")
def configs(hub):
    return configure_registry(IoTHubConfigurationManager.from_connection_string(hub.connection_string), hub)


def new_configuration(target, content, priority=10, metrics=None):
    return Configuration(
        id="cfg-" + uuid.uuid4().hex[:12], schema_version="1.0", labels={"test": "interop"},
        content=ConfigurationContent(device_content=content), target_condition=target, priority=priority,
        metrics=ConfigurationMetrics(queries=metrics or {}))


def status_of(registry, device_id, configuration_id):
    """The configuration's status on a twin, found as Azure's docs do it: with a query
    (the Python SDK's Twin model has no `configurations` member)."""
    for status in ("Applied", "Targeted"):
        text = "SELECT * FROM devices WHERE deviceId = '{}' AND configurations.[[{}]].status = '{}'".format(
            device_id, configuration_id, status)
        if call(registry.query_iot_hub, QuerySpecification(query=text), None, 10).items:
            return status
    return None


def desired_patches(client):
    patches = queue.Queue()
    set_handler(client, "on_twin_desired_properties_patch_received", patches.put)
    return patches


def test_create_get_update_delete_with_etags(configs):
    conf = new_configuration("tags.never = 'matches'", {"properties.desired.x": 1})
    created = call(configs.create_configuration, conf)
    assert created.id == conf.id and created.etag, created
    assert created.created_time_utc is not None
    got = call(configs.get_configuration, conf.id)
    assert got.content.device_content == {"properties.desired.x": 1}
    got.priority = 20
    updated = call(configs.update_configuration, got, got.etag)
    assert updated.priority == 20 and updated.etag != got.etag
    status, body = http_error(configs.update_configuration, got, got.etag)
    assert status == 412, (status, body)
    assert conf.id in [c.id for c in call(configs.get_configurations, 100)]
    call(configs.delete_configuration, conf.id)
    status, body = http_error(configs.get_configuration, conf.id)
    assert status == 404 and "ConfigurationNotFound" in body, (status, body)


def test_content_is_immutable_and_ids_unique(configs):
    conf = new_configuration("*", {"properties.desired.y": 1}, priority=0)
    conf.target_condition = "tags.never = 'matches'"
    call(configs.create_configuration, conf)
    try:
        status, body = http_error(configs.create_configuration, conf)
        assert status == 409 and "ConfigurationAlreadyExists" in body, (status, body)
        changed = call(configs.get_configuration, conf.id)
        changed.content = ConfigurationContent(device_content={"properties.desired.y": 2})
        status, body = http_error(configs.update_configuration, changed, "*")
        assert status == 400 and "CannotModifyImmutableConfigurationContent" in body, (status, body)
    finally:
        call(configs.delete_configuration, conf.id)


def test_bad_target_and_metric_queries_are_refused(configs):
    status, body = http_error(configs.create_configuration, new_configuration("tags.x = ", {"properties.desired.z": 1}))
    assert status == 400 and "InvalidConfigurationTargetCondition" in body, (status, body)
    bad_metric = new_configuration("*", {"properties.desired.z": 1}, metrics={"m": "SELECT deviceId FROM"})
    status, body = http_error(configs.create_configuration, bad_metric)
    assert status == 400 and "InvalidConfigurationCustomMetricsQuery" in body, (status, body)


def test_configuration_reaches_a_connected_device_and_reports_metrics(configs, devices, registry):
    device = devices.create()
    group = uuid.uuid4().hex[:10]
    call(registry.update_twin, device.device_id, Twin(tags={"group": group}), "*")
    client = devices.connect(device)
    patches = desired_patches(client)
    conf = new_configuration("tags.[[group]] = '{}'".format(group), {"properties.desired.fw": {"version": "2.0"}},
                             metrics={"current": "SELECT deviceId FROM devices WHERE properties.reported.fw = '2.0'"})
    call(configs.create_configuration, conf)
    try:
        patch = next_matching(patches, lambda p: p.get("fw") == {"version": "2.0"}, what="configuration patch")
        assert "$version" in patch
        assert status_of(registry, device.device_id, conf.id) == "Applied"
        call(client.patch_twin_reported_properties, {"fw": "2.0"})
        got = call(configs.get_configuration, conf.id)
        assert got.system_metrics.results == {"targetedCount": 1, "appliedCount": 1}, got.system_metrics.results
        assert got.metrics.results == {"current": 1}, got.metrics.results
    finally:
        call(configs.delete_configuration, conf.id)


def test_leaving_the_target_removes_values_and_the_next_priority_applies(configs, devices, registry):
    device = devices.create()
    group = uuid.uuid4().hex[:10]
    call(registry.update_twin, device.device_id, Twin(tags={"group": group, "ring": "beta"}), "*")
    client = devices.connect(device)
    patches = desired_patches(client)
    base = new_configuration("tags.[[group]] = '{}'".format(group), {"properties.desired.mode": "stable"}, priority=1)
    beta = new_configuration("tags.[[group]] = '{}' AND tags.ring = 'beta'".format(group),
                             {"properties.desired.mode": "beta", "properties.desired.extra": True}, priority=50)
    call(configs.create_configuration, base)
    call(configs.create_configuration, beta)
    try:
        wait_until(lambda: call(registry.get_twin, device.device_id).properties.desired.get("mode") == "beta",
                   what="beta configuration applied")
        twin = call(registry.get_twin, device.device_id)
        assert twin.properties.desired.get("extra") is True
        assert status_of(registry, device.device_id, base.id) == "Targeted"
        call(registry.update_twin, device.device_id, Twin(tags={"ring": "stable"}), "*")
        twin = call(registry.get_twin, device.device_id)
        assert twin.properties.desired.get("mode") == "stable", twin.properties.desired
        assert "extra" not in twin.properties.desired, twin.properties.desired
        assert status_of(registry, device.device_id, beta.id) is None
        next_matching(patches, lambda p: p.get("extra", "absent") is None and p.get("mode") == "stable",
                      what="patch removing the beta values")
        call(configs.delete_configuration, base.id)
        twin = call(registry.get_twin, device.device_id)
        assert "mode" not in twin.properties.desired, twin.properties.desired
    finally:
        for conf in (base, beta):
            try:
                call(configs.delete_configuration, conf.id)
            except Exception:  # noqa: B902 - already deleted by the test
                pass


def test_test_queries_reports_errors_by_name(configs):
    from azure.iot.hub.protocol.models import ConfigurationQueriesTestInput
    result = call(configs.test_configuration_queries, ConfigurationQueriesTestInput(
        target_condition="tags.x = 'y'", custom_metric_queries={"good": "SELECT deviceId FROM devices", "bad": "SELEC"}))
    assert result.target_condition_error == "", result.target_condition_error
    assert set(result.custom_metric_query_errors) == {"bad"}, result.custom_metric_query_errors
