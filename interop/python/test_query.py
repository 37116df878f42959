"""The query language through the Python service SDK: filters, projections, aggregates, paging."""
import uuid

from azure.iot.hub.protocol.models import QuerySpecification, Twin

from hubtest import call, http_error


def query(registry, text, page_size=100, continuation=None):
    return call(registry.query_iot_hub, QuerySpecification(query=text), continuation, page_size)


def tag_fleet(registry, devices, count, **tags):
    """Create devices carrying the given tags (plus their index); returns their ids."""
    ids = []
    for index in range(count):
        device = devices.create()
        call(registry.update_twin, device.device_id, Twin(tags=dict(tags, index=index)), "*")
        ids.append(device.device_id)
    return ids


def test_select_by_device_id_returns_full_twins(devices, registry):
    device = devices.create()
    result = query(registry, "SELECT * FROM devices WHERE deviceId = '{}'".format(device.device_id))
    assert result.type == "twin", result.type
    assert [t.device_id for t in result.items] == [device.device_id]
    assert result.items[0].properties.desired["$version"] == 1
    assert result.continuation_token is None


def test_tag_filter_sees_a_write_made_just_before(devices, registry):
    fleet = uuid.uuid4().hex[:10]
    ids = tag_fleet(registry, devices, 3, fleet=fleet, region="eu")
    call(registry.update_twin, ids[1], Twin(tags={"region": "us"}), "*")
    result = query(registry, "SELECT * FROM devices WHERE tags.fleet = '{}' AND tags.region = 'us'".format(fleet))
    assert [t.device_id for t in result.items] == [ids[1]]


def test_paging_visits_every_twin_once(devices, registry):
    fleet = uuid.uuid4().hex[:10]
    ids = set(tag_fleet(registry, devices, 23, fleet=fleet))
    seen, token, pages = [], None, 0
    while True:
        result = query(registry, "SELECT * FROM devices WHERE tags.fleet = '{}'".format(fleet), 10, token)
        pages += 1
        seen.extend(t.device_id for t in result.items)
        token = result.continuation_token
        if not token:
            break
    assert pages == 3, pages
    assert sorted(seen) == sorted(ids)


def test_projection_and_group_by_are_raw_items(devices, registry):
    # azure-iot-hub deserialises every item as a Twin (as it does against Azure), so only the
    # item type, the row count and twin-named members are visible here; Node checks the rows.
    fleet = uuid.uuid4().hex[:10]
    ids = tag_fleet(registry, devices, 4, fleet=fleet)
    for index, device_id in enumerate(ids):
        call(registry.update_twin, device_id, Twin(tags={"ring": "a" if index < 3 else "b"}), "*")
    text = ("SELECT tags.ring AS ring, COUNT() AS n FROM devices WHERE tags.fleet = '{}' GROUP BY tags.ring"
            .format(fleet))
    result = query(registry, text)
    assert result.type == "raw", result.type
    assert len(result.items) == 2, result.items
    projected = query(registry, "SELECT deviceId, tags FROM devices WHERE deviceId = '{}'".format(ids[0]))
    assert projected.type == "raw", projected.type
    assert [(t.device_id, t.tags["ring"]) for t in projected.items] == [(ids[0], "a")]


def test_module_twins_are_queryable(devices, registry):
    device = devices.create()
    module = devices.create_module(device)
    result = query(registry, "SELECT * FROM devices.modules WHERE deviceId = '{}'".format(device.device_id))
    assert [(t.device_id, t.module_id) for t in result.items] == [(device.device_id, module.module_id)]


def test_invalid_query_is_a_400_that_points_at_the_error(registry):
    status, body = http_error(registry.query_iot_hub, QuerySpecification(query="SELECT * FROM devices WHERE"), None, 10)
    assert status == 400, (status, body)
    assert "position" in body, body
