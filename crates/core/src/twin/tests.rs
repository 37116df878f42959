use proptest::prelude::*;
use serde_json::json;

use super::*;

fn map(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("test fixture is not an object: {other}"),
    }
}

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_unix_seconds(1_700_000_000 + seconds)
}

fn stamp(seconds: i64) -> Value {
    Value::String(at(seconds).to_rfc3339())
}

fn desired_patch(value: Value) -> ServiceUpdate {
    ServiceUpdate {
        tags: None,
        desired: Some(Change::Patch(map(value))),
    }
}

fn desired_replace(value: Value) -> ServiceUpdate {
    ServiceUpdate {
        tags: None,
        desired: Some(Change::Replace(map(value))),
    }
}

fn tags_patch(value: Value) -> ServiceUpdate {
    ServiceUpdate {
        tags: Some(Change::Patch(map(value))),
        desired: None,
    }
}

/// A twin whose desired properties are `value`, written at `at(1)` (desired version 2).
fn twin_with_desired(value: Value) -> Twin {
    let mut twin = Twin::new(at(0));
    twin.apply_service_update(desired_patch(value), at(1))
        .unwrap();
    twin
}

#[test]
fn new_twin_starts_at_version_one() {
    let twin = Twin::new(at(0));
    assert_eq!(twin.version, 1);
    assert_eq!(twin.etag_version, 1);
    assert_eq!(twin.etag(), "AAAAAAAAAAE=");
    assert_eq!(twin.desired.version(), 1);
    assert_eq!(twin.reported.version(), 1);
    assert!(twin.tags.is_empty());
    assert_eq!(
        twin.desired.to_json(true),
        json!({"$metadata": {"$lastUpdated": stamp(0)}, "$version": 1})
    );
    assert_eq!(twin.reported.to_json(false), json!({"$version": 1}));
    assert_eq!(twin.reported.last_updated(), at(0));
}

#[test]
fn twin_etag_is_big_endian_counter() {
    let mut twin = Twin::new(at(0));
    twin.etag_version = 11;
    assert_eq!(twin.etag(), "AAAAAAAAAAs=");
}

#[test]
fn merge_adds_replaces_removes_and_recurses() {
    let mut twin = twin_with_desired(json!({
        "a": 1,
        "b": {"c": "x", "d": true},
        "e": [1, null, {"f": null}],
        "s": "text",
    }));
    twin.apply_service_update(
        desired_patch(json!({
            "a": null,
            "b": {"c": null, "g": 2},
            "e": [3, null],
            "h": {"i": null, "j": {"k": null}},
            "missing": null,
        })),
        at(2),
    )
    .unwrap();
    assert_eq!(
        Value::Object(twin.desired.properties().clone()),
        json!({"b": {"d": true, "g": 2}, "e": [3, null], "s": "text", "h": {"j": {}}})
    );
    let keys: Vec<&str> = twin
        .desired
        .properties()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["b", "e", "s", "h"]);

    // An object patch onto a non-object replaces it, and the other way round.
    twin.apply_service_update(
        desired_patch(json!({"s": {"t": 1, "u": null}, "b": 5})),
        at(3),
    )
    .unwrap();
    assert_eq!(twin.desired.properties()["s"], json!({"t": 1}));
    assert_eq!(twin.desired.properties()["b"], json!(5));
}

#[test]
fn patch_notification_is_the_patch_with_its_nulls() {
    let mut twin = twin_with_desired(json!({"a": 1, "b": {"c": 2}}));
    let patch = json!({"a": null, "b": {"c": null, "d": 3}, "x": 1});
    let notification = twin
        .apply_service_update(desired_patch(patch.clone()), at(2))
        .unwrap();
    assert_eq!(notification, Some(map(patch)));
    assert_eq!(twin.desired.version(), 3);
}

#[test]
fn replace_notifies_removed_keys_as_explicit_nulls() {
    let mut twin = twin_with_desired(json!({"a": 1, "b": {"c": 2}, "d": 3, "h": {"i": 1, "j": 2}}));
    let notification = twin
        .apply_service_update(
            desired_replace(json!({"a": 5, "e": null, "f": {"g": null}, "h": {"j": 3}})),
            at(2),
        )
        .unwrap();
    assert_eq!(
        notification.map(Value::Object),
        Some(json!({"a": 5, "f": {}, "h": {"j": 3, "i": null}, "b": null, "d": null}))
    );
    assert_eq!(
        Value::Object(twin.desired.properties().clone()),
        json!({"a": 5, "f": {}, "h": {"j": 3}})
    );

    let notification = twin
        .apply_service_update(desired_replace(json!({})), at(3))
        .unwrap();
    assert_eq!(
        notification.map(Value::Object),
        Some(json!({"a": null, "f": null, "h": null}))
    );
    assert!(twin.desired.properties().is_empty());
    assert_eq!(twin.desired.version(), 4);
}

#[test]
fn tags_replace_drops_nulls_and_patch_merges() {
    let mut twin = Twin::new(at(0));
    let update = ServiceUpdate {
        tags: Some(Change::Replace(map(
            json!({"a": null, "b": {"c": null, "d": 1}}),
        ))),
        desired: None,
    };
    assert_eq!(twin.apply_service_update(update, at(1)), Ok(None));
    assert_eq!(Value::Object(twin.tags.clone()), json!({"b": {"d": 1}}));
    twin.apply_service_update(tags_patch(json!({"b": {"d": null}, "e": "x"})), at(2))
        .unwrap();
    assert_eq!(Value::Object(twin.tags.clone()), json!({"b": {}, "e": "x"}));
}

#[test]
fn desired_write_bumps_desired_version_twin_version_and_etag() {
    let mut twin = Twin::new(at(0));
    twin.apply_service_update(desired_patch(json!({"a": 1})), at(1))
        .unwrap();
    assert_eq!(
        (
            twin.desired.version(),
            twin.reported.version(),
            twin.version,
            twin.etag_version
        ),
        (2, 1, 2, 2)
    );
}

#[test]
fn tags_write_bumps_twin_version_and_etag_only() {
    let mut twin = Twin::new(at(0));
    let notification = twin
        .apply_service_update(tags_patch(json!({"a": 1})), at(1))
        .unwrap();
    assert_eq!(notification, None);
    assert_eq!(
        (
            twin.desired.version(),
            twin.reported.version(),
            twin.version,
            twin.etag_version
        ),
        (1, 1, 2, 2)
    );
    assert_eq!(twin.desired.last_updated(), at(0));
}

#[test]
fn tags_and_desired_in_one_call_bump_once() {
    let mut twin = Twin::new(at(0));
    let update = ServiceUpdate {
        tags: Some(Change::Patch(map(json!({"t": 1})))),
        desired: Some(Change::Patch(map(json!({"d": 1})))),
    };
    let notification = twin.apply_service_update(update, at(1)).unwrap();
    assert_eq!(notification, Some(map(json!({"d": 1}))));
    assert_eq!(
        (twin.desired.version(), twin.version, twin.etag_version),
        (2, 2, 2)
    );
}

#[test]
fn reported_patch_bumps_reported_and_twin_version_but_not_etag() {
    let mut twin = Twin::new(at(0));
    twin.patch_reported(&map(json!({"battery": 90})), at(1))
        .unwrap();
    twin.patch_reported(&map(json!({"battery": 80})), at(2))
        .unwrap();
    assert_eq!(
        (
            twin.desired.version(),
            twin.reported.version(),
            twin.version,
            twin.etag_version
        ),
        (1, 3, 3, 1)
    );
    assert_eq!(twin.etag(), "AAAAAAAAAAE=");
}

#[test]
fn empty_changes_bump_nothing() {
    let mut twin = twin_with_desired(json!({"a": 1}));
    let before = twin.clone();
    let empty = ServiceUpdate {
        tags: Some(Change::Patch(Map::new())),
        desired: Some(Change::Patch(Map::new())),
    };
    assert_eq!(twin.apply_service_update(empty, at(5)), Ok(None));
    assert_eq!(
        twin.apply_service_update(ServiceUpdate::default(), at(5)),
        Ok(None)
    );
    twin.patch_reported(&Map::new(), at(5)).unwrap();
    assert_eq!(twin, before);

    // An empty desired patch next to a real tags change: tags only, no notification.
    let update = ServiceUpdate {
        tags: Some(Change::Patch(map(json!({"t": 1})))),
        desired: Some(Change::Patch(Map::new())),
    };
    assert_eq!(twin.apply_service_update(update, at(6)), Ok(None));
    assert_eq!(twin.desired, before.desired);
    assert_eq!(twin.version, before.version + 1);
}

#[test]
fn patch_stamps_written_nodes_and_their_ancestors() {
    let mut twin = Twin::new(at(0));
    twin.apply_service_update(
        desired_patch(json!({"a": {"b": 1, "c": 2}, "x": [1, 2]})),
        at(1),
    )
    .unwrap();
    twin.apply_service_update(desired_patch(json!({"a": {"b": 5}})), at(2))
        .unwrap();
    assert_eq!(
        twin.desired.to_json(true),
        json!({
            "a": {"b": 5, "c": 2},
            "x": [1, 2],
            "$metadata": {
                "$lastUpdated": stamp(2), "$lastUpdatedVersion": 3,
                "a": {
                    "$lastUpdated": stamp(2), "$lastUpdatedVersion": 3,
                    "b": {"$lastUpdated": stamp(2), "$lastUpdatedVersion": 3},
                    "c": {"$lastUpdated": stamp(1), "$lastUpdatedVersion": 2},
                },
                "x": {"$lastUpdated": stamp(1), "$lastUpdatedVersion": 2},
            },
            "$version": 3,
        })
    );
    assert_eq!(
        twin.desired.to_json(false),
        json!({"a": {"b": 5, "c": 2}, "x": [1, 2], "$version": 3})
    );
}

#[test]
fn removal_drops_metadata_and_stamps_the_parent() {
    let mut twin = twin_with_desired(json!({"a": {"b": 1, "c": 2}, "x": 1}));
    twin.apply_service_update(desired_patch(json!({"a": {"c": null}})), at(2))
        .unwrap();
    assert_eq!(
        twin.desired.to_json(true)["$metadata"],
        json!({
            "$lastUpdated": stamp(2), "$lastUpdatedVersion": 3,
            "a": {
                "$lastUpdated": stamp(2), "$lastUpdatedVersion": 3,
                "b": {"$lastUpdated": stamp(1), "$lastUpdatedVersion": 2},
            },
            "x": {"$lastUpdated": stamp(1), "$lastUpdatedVersion": 2},
        })
    );
    twin.apply_service_update(desired_patch(json!({"a": null})), at(3))
        .unwrap();
    assert_eq!(
        twin.desired.to_json(true)["$metadata"],
        json!({
            "$lastUpdated": stamp(3), "$lastUpdatedVersion": 4,
            "x": {"$lastUpdated": stamp(1), "$lastUpdatedVersion": 2},
        })
    );
}

#[test]
fn replace_restamps_everything() {
    let mut twin = twin_with_desired(json!({"a": {"b": 1}, "x": 1}));
    twin.apply_service_update(desired_replace(json!({"a": {"b": 1}, "y": 2})), at(2))
        .unwrap();
    assert_eq!(
        twin.desired.to_json(true)["$metadata"],
        json!({
            "$lastUpdated": stamp(2), "$lastUpdatedVersion": 3,
            "a": {
                "$lastUpdated": stamp(2), "$lastUpdatedVersion": 3,
                "b": {"$lastUpdated": stamp(2), "$lastUpdatedVersion": 3},
            },
            "y": {"$lastUpdated": stamp(2), "$lastUpdatedVersion": 3},
        })
    );
}

#[test]
fn reported_metadata_has_no_version() {
    let mut twin = Twin::new(at(0));
    twin.patch_reported(&map(json!({"fw": {"v": "1.0"}})), at(1))
        .unwrap();
    assert_eq!(
        twin.reported.to_json(true),
        json!({
            "fw": {"v": "1.0"},
            "$metadata": {
                "$lastUpdated": stamp(1),
                "fw": {"$lastUpdated": stamp(1), "v": {"$lastUpdated": stamp(1)}},
            },
            "$version": 2,
        })
    );
}

#[test]
fn twin_round_trips_through_serde() {
    let mut twin = twin_with_desired(json!({"a": {"b": [1, null]}, "c": 1.5}));
    twin.patch_reported(&map(json!({"r": true})), at(2))
        .unwrap();
    twin.apply_service_update(tags_patch(json!({"t": "x"})), at(3))
        .unwrap();
    twin.model_id = Some("dtmi:com:example;1".to_owned());
    let stored = serde_json::to_vec(&twin).unwrap();
    let loaded: Twin = serde_json::from_slice(&stored).unwrap();
    assert_eq!(loaded, twin);
    assert_eq!(loaded.desired.to_json(true), twin.desired.to_json(true));
}

/// `twin` serialized and deserialized again.
fn reloaded(twin: &Twin) -> Twin {
    serde_json::from_slice(&serde_json::to_vec(twin).unwrap()).unwrap()
}

/// A metadata node in the fully populated form stored before metadata became sparse.
fn full_metadata(node: &MetadataNode) -> Value {
    let mut stored = Map::new();
    stored.insert("last_updated".to_owned(), json!(node.last_updated.ticks()));
    if let Some(version) = node.last_updated_version {
        stored.insert("last_updated_version".to_owned(), json!(version));
    }
    if !node.children.is_empty() {
        let children = node
            .children
            .iter()
            .map(|(key, child)| (key.clone(), full_metadata(child)))
            .collect();
        stored.insert("children".to_owned(), Value::Object(children));
    }
    Value::Object(stored)
}

/// `twin` as stored before metadata became sparse.
fn full_format(twin: &Twin) -> Value {
    let mut stored = serde_json::to_value(twin).unwrap();
    stored["desired"]["metadata"] = full_metadata(&twin.desired.metadata);
    stored["reported"]["metadata"] = full_metadata(&twin.reported.metadata);
    stored
}

#[test]
fn serde_round_trip_is_exact_after_partial_patches() {
    let mut twin = Twin::new(at(0));
    let check = |twin: &Twin| {
        assert_eq!(&reloaded(twin), twin);
        assert_eq!(
            reloaded(twin).desired.to_json(true),
            twin.desired.to_json(true)
        );
        assert_eq!(
            reloaded(twin).reported.to_json(true),
            twin.reported.to_json(true)
        );
    };
    check(&twin);
    let desired_steps = [
        (
            1,
            desired_patch(json!({"a": {"b": 1, "c": {"d": 2, "e": [1, {"f": 3}]}}, "x": 1})),
        ),
        (2, desired_patch(json!({"a": {"c": {"d": 5}}, "y": [true]}))),
        (3, desired_patch(json!({"a": {"b": null}, "x": {"z": 1}}))),
        (4, desired_patch(json!({"a": {"c": null}}))),
        (5, desired_replace(json!({"p": {"q": {"r": 1}}, "s": 2}))),
        (6, desired_patch(json!({"p": {"q": {"t": 2}}}))),
    ];
    for (seconds, update) in desired_steps {
        twin.apply_service_update(update, at(seconds)).unwrap();
        check(&twin);
        twin.patch_reported(
            &map(json!({"fw": {"v": seconds, "log": [seconds]}, "n": {"m": {"k": seconds}}})),
            at(seconds),
        )
        .unwrap();
        check(&twin);
        twin.patch_reported(&map(json!({"n": {"m": {"o": seconds}}})), at(seconds + 10))
            .unwrap();
        check(&twin);
        twin.apply_service_update(tags_patch(json!({"t": {"u": seconds}})), at(seconds))
            .unwrap();
        check(&twin);
    }
    twin.patch_reported(&map(json!({"fw": null, "n": {"m": null}})), at(20))
        .unwrap();
    check(&twin);
}

#[test]
fn stored_metadata_keeps_only_nodes_that_differ_from_their_parent() {
    let mut twin = Twin::new(at(0));
    twin.apply_service_update(
        desired_patch(json!({"a": {"b": 1, "c": 2}, "x": [1, 2]})),
        at(1),
    )
    .unwrap();
    twin.apply_service_update(desired_patch(json!({"a": {"b": 5}})), at(2))
        .unwrap();
    twin.apply_service_update(desired_patch(json!({"y": {"z": {"w": 1}}})), at(3))
        .unwrap();
    let stored = serde_json::to_value(&twin).unwrap();
    let ticks = |seconds| json!(at(seconds).ticks());
    // `a` has its parent's stamp but is kept for `c`; `b` and all of `y` match their parents.
    assert_eq!(
        stored["desired"]["metadata"],
        json!({
            "last_updated": ticks(3), "last_updated_version": 4,
            "children": {
                "a": {
                    "last_updated": ticks(2), "last_updated_version": 3,
                    "children": {"c": {"last_updated": ticks(1), "last_updated_version": 2}},
                },
                "x": {"last_updated": ticks(1), "last_updated_version": 2},
            },
        })
    );
    assert_eq!(reloaded(&twin), twin);
}

#[test]
fn stored_metadata_tells_equal_times_with_different_versions_apart() {
    let mut twin = twin_with_desired(json!({"a": 1}));
    twin.apply_service_update(desired_patch(json!({"b": 1})), at(1))
        .unwrap();
    let stored = serde_json::to_value(&twin).unwrap();
    assert_eq!(
        stored["desired"]["metadata"]["children"],
        json!({"a": {"last_updated": at(1).ticks(), "last_updated_version": 2}})
    );
    assert_eq!(reloaded(&twin), twin);
}

/// Tags, desired and reported properties of about 800 bytes in all, as a fleet device might have.
fn realistic_twin() -> Twin {
    let mut twin = Twin::new(at(0));
    let tags = json!({
        "location": {"site": "plant-7", "building": "B12", "floor": 3, "room": "3-41"},
        "owner": "facilities",
        "environment": "production",
        "deviceType": "thermostat",
    });
    let desired = json!({
        "telemetryInterval": 30,
        "thresholds": {
            "temperature": {"min": 18.5, "max": 26.0, "alert": true},
            "humidity": {"min": 30, "max": 60, "alert": false},
        },
        "firmware": {
            "version": "2.4.1",
            "url": "https://updates.example.com/fw/thermostat-2.4.1.bin",
            "checksum": "sha256:9f2c4e1ab77d03c5e8b6f0a2d1c3e4f5",
        },
        "schedule": {
            "weekday": {"on": "07:00", "off": "19:00", "setpoint": 21.5},
            "weekend": {"on": "09:00", "off": "17:00", "setpoint": 19.0},
        },
        "display": {"brightness": 70, "units": "celsius", "locked": false},
    });
    let reported = json!({
        "firmware": {"version": "2.4.1", "status": "current", "installedAt": "2024-05-02T10:11:12Z"},
        "battery": {"level": 87, "charging": false},
        "signal": {"rssi": -67, "snr": 9.5},
        "sensors": {"temperature": 21.4, "humidity": 44, "co2": 612},
        "uptime": 1_234_567,
        "network": {"ip": "10.0.3.41", "ssid": "corp-iot", "channel": 11},
        "capabilities": ["heat", "cool", "fan"],
    });
    let update = ServiceUpdate {
        tags: Some(Change::Patch(map(tags))),
        desired: Some(Change::Patch(map(desired))),
    };
    twin.apply_service_update(update, at(1)).unwrap();
    twin.patch_reported(&map(reported), at(2)).unwrap();
    twin
}

#[test]
fn single_patch_sections_store_only_their_root_metadata() {
    let twin = realistic_twin();
    let stored = serde_json::to_vec(&twin).unwrap();
    let stored_value: Value = serde_json::from_slice(&stored).unwrap();
    assert_eq!(
        stored_value["desired"]["metadata"],
        json!({"last_updated": at(1).ticks(), "last_updated_version": 2})
    );
    assert_eq!(
        stored_value["reported"]["metadata"],
        json!({"last_updated": at(2).ticks()})
    );
    assert_eq!(serde_json::from_slice::<Twin>(&stored).unwrap(), twin);

    let full = serde_json::to_vec(&full_format(&twin)).unwrap();
    assert!(
        stored.len() * 2 < full.len(),
        "sparse {} bytes, full {} bytes",
        stored.len(),
        full.len()
    );
}

#[test]
fn full_metadata_written_before_sparse_storage_still_loads() {
    let mut twin = Twin::new(at(0));
    twin.apply_service_update(desired_patch(json!({"a": {"b": 1}, "c": [1]})), at(1))
        .unwrap();
    twin.patch_reported(&map(json!({"r": true})), at(2))
        .unwrap();
    twin.apply_service_update(tags_patch(json!({"t": "x"})), at(3))
        .unwrap();
    let old = r#"{
        "tags": {"t": "x"},
        "desired": {
            "properties": {"a": {"b": 1}, "c": [1]},
            "metadata": {
                "last_updated": 17000000010000000, "last_updated_version": 2,
                "children": {
                    "a": {
                        "last_updated": 17000000010000000, "last_updated_version": 2,
                        "children": {
                            "b": {"last_updated": 17000000010000000, "last_updated_version": 2}
                        }
                    },
                    "c": {"last_updated": 17000000010000000, "last_updated_version": 2}
                }
            },
            "version": 2
        },
        "reported": {
            "properties": {"r": true},
            "metadata": {
                "last_updated": 17000000020000000,
                "children": {"r": {"last_updated": 17000000020000000}}
            },
            "version": 2
        },
        "version": 4,
        "etag_version": 3,
        "model_id": null
    }"#;
    let from_old: Twin = serde_json::from_str(old).unwrap();
    assert_eq!(from_old, twin);
    assert_eq!(from_old, reloaded(&twin));
    assert_eq!(
        serde_json::from_str::<Value>(old).unwrap(),
        full_format(&twin)
    );
}

#[test]
fn loading_drops_metadata_of_properties_that_do_not_exist() {
    let twin = twin_with_desired(json!({"a": 1, "b": {"c": 2}}));
    let mut stored = full_format(&twin);
    let stale = json!({"last_updated": at(5).ticks(), "last_updated_version": 9});
    stored["desired"]["metadata"]["children"]["gone"] = stale.clone();
    stored["desired"]["metadata"]["children"]["a"]["children"] = json!({"leaf": stale});
    let loaded: Twin = serde_json::from_value(stored).unwrap();
    assert_eq!(loaded, twin);
    assert_eq!(reloaded(&loaded), loaded);
}

fn desired_error(value: Value) -> Option<TwinError> {
    Twin::new(at(0))
        .apply_service_update(desired_patch(value), at(1))
        .err()
}

#[test]
fn key_rules() {
    let long_ok = "é".repeat(512);
    let long_bad = format!("{long_ok}a");
    for good in ["a", "a-b_c:d", "ключ", long_ok.as_str()] {
        assert_eq!(desired_error(json!({ good: 1 })), None, "{good:?}");
    }
    for (bad, reason) in [
        ("", "names must not be empty"),
        ("a.b", "names must not contain '.', '$' or spaces"),
        ("$a", "names must not contain '.', '$' or spaces"),
        ("a b", "names must not contain '.', '$' or spaces"),
        ("a\u{0}b", "names must not contain control characters"),
        ("a\u{1f}", "names must not contain control characters"),
        ("a\u{7f}", "names must not contain control characters"),
        ("a\u{85}b", "names must not contain control characters"),
        (long_bad.as_str(), "names must be at most 1024 bytes long"),
    ] {
        match desired_error(json!({ bad: 1 })) {
            Some(TwinError::InvalidKey { reason: got, .. }) => assert_eq!(got, reason, "{bad:?}"),
            other => panic!("{bad:?}: {other:?}"),
        }
    }
}

#[test]
fn key_rules_apply_at_every_level_and_to_removals() {
    for patch in [
        json!({"a": {"b": {"c$": 1}}}),
        json!({"a": [{"b.c": 1}]}),
        json!({"$version": null}),
        json!({"a": {"b c": null}}),
    ] {
        assert!(
            matches!(
                desired_error(patch.clone()),
                Some(TwinError::InvalidKey { .. })
            ),
            "{patch}"
        );
    }
    let error = desired_error(json!({"a\nb": 1})).unwrap();
    assert_eq!(
        error.to_string(),
        "invalid property name \"a\\nb\": names must not contain control characters"
    );
}

/// `{"l1": {"l2": ... {"l<levels>": {"leaf": 1}}}}`: `levels` objects nested below the root.
fn nested_objects(levels: usize) -> Value {
    (1..=levels).rev().fold(
        json!(1),
        |inner, level| json!({ format!("l{level}"): inner }),
    )
}

/// Mirrors the documented example: ten nested objects below the section root are allowed.
#[test]
fn depth_limit_boundary() {
    assert_eq!(desired_error(nested_objects(MAX_DEPTH + 1)), None);
    assert_eq!(
        desired_error(json!({"one": nested_objects(MAX_DEPTH)})),
        None
    );
    let too_deep = Some(TwinError::TooDeep {
        section: "desired",
        limit: MAX_DEPTH,
    });
    assert_eq!(desired_error(nested_objects(MAX_DEPTH + 2)), too_deep);
    assert_eq!(
        desired_error(json!({"one": nested_objects(MAX_DEPTH + 1)})),
        too_deep
    );
}

#[test]
fn arrays_count_as_nesting_levels() {
    let arrays = |levels: usize| (0..levels).fold(json!(1), |inner, _| json!([inner]));
    assert_eq!(desired_error(json!({ "a": arrays(MAX_DEPTH) })), None);
    assert!(matches!(
        desired_error(json!({ "a": arrays(MAX_DEPTH + 1) })),
        Some(TwinError::TooDeep { .. })
    ));
    assert_eq!(
        desired_error(json!({ "a": [nested_objects(MAX_DEPTH - 1)] })),
        None
    );
    assert!(matches!(
        desired_error(json!({ "a": [nested_objects(MAX_DEPTH)] })),
        Some(TwinError::TooDeep { .. })
    ));
}

#[test]
fn string_length_boundary_in_bytes() {
    assert_eq!(desired_error(json!({"s": "a".repeat(4096)})), None);
    assert_eq!(desired_error(json!({"s": "é".repeat(2048)})), None);
    assert_eq!(
        desired_error(json!({"s": "a".repeat(4097)})),
        Some(TwinError::StringTooLong {
            key: "s".to_owned(),
            limit: MAX_STRING_BYTES
        })
    );
    assert_eq!(
        desired_error(json!({"a": {"b": [1, format!("{}a", "é".repeat(2048))]}})),
        Some(TwinError::StringTooLong {
            key: "a.b[1]".to_owned(),
            limit: MAX_STRING_BYTES
        })
    );
}

#[test]
fn integer_range_boundary() {
    assert_eq!(
        desired_error(json!({"min": MIN_INTEGER, "max": MAX_INTEGER})),
        None
    );
    assert_eq!(
        desired_error(json!({"f": 4_503_599_627_370_496.5_f64, "g": -1e300, "h": 0.25})),
        None
    );
    for (key, value) in [
        ("below", json!(MIN_INTEGER - 1)),
        ("above", json!(MAX_INTEGER + 1)),
        ("huge", json!(u64::MAX)),
    ] {
        assert_eq!(
            desired_error(json!({ key: value })),
            Some(TwinError::IntegerOutOfRange {
                key: key.to_owned()
            })
        );
    }
    assert_eq!(
        desired_error(json!({"a": [[MAX_INTEGER + 1]]})),
        Some(TwinError::IntegerOutOfRange {
            key: "a[0][0]".to_owned()
        })
    );
}

/// `count` members `k0`, `k1`, ... each of size `member_size` (key plus string value).
fn members_of_size(count: usize, member_size: usize) -> Map<String, Value> {
    (0..count)
        .map(|i| {
            let key = format!("k{i}");
            let value = "v".repeat(member_size - key.len());
            (key, Value::String(value))
        })
        .collect()
}

#[test]
fn size_counts_keys_strings_numbers_booleans_nulls_and_arrays() {
    let mut twin = Twin::new(at(0));
    let mut tags = members_of_size(2, 4096);
    tags.extend(map(json!({
        "n": 1,                          // 1 + 8
        "t": true,                       // 1 + 4
        "arr": [1, null, "xy", false],   // 3 + 8 + 4 + 2 + 4
        "o": {"k": 1},                   // 1 + 1 + 8
        "é": "ü",                        // 1 + 1
    })));
    let update = ServiceUpdate {
        tags: Some(Change::Patch(tags)),
        desired: None,
    };
    assert_eq!(
        twin.apply_service_update(update, at(1)),
        Err(TwinError::TooLarge {
            section: "tags",
            size: 8192 + 9 + 5 + 21 + 10 + 2,
            limit: MAX_TAGS_SIZE
        })
    );
}

#[test]
fn tags_size_boundary() {
    let mut twin = Twin::new(at(0));
    let update = |members| ServiceUpdate {
        tags: Some(Change::Replace(members)),
        desired: None,
    };
    let mut too_big = members_of_size(2, 4096);
    too_big.insert("x".to_owned(), json!(""));
    assert_eq!(
        twin.apply_service_update(update(too_big), at(1)),
        Err(TwinError::TooLarge {
            section: "tags",
            size: MAX_TAGS_SIZE + 1,
            limit: MAX_TAGS_SIZE
        })
    );
    assert_eq!(
        twin.apply_service_update(update(members_of_size(2, 4096)), at(1)),
        Ok(None)
    );
}

#[test]
fn desired_size_boundary_is_checked_after_merging() {
    let mut twin = Twin::new(at(0));
    let mut first = members_of_size(8, 4096);
    first.shift_remove("k7");
    twin.apply_service_update(desired_patch(Value::Object(first)), at(1))
        .unwrap();
    let before = twin.clone();
    // Fits alone, but not on top of the existing 7 × 4096.
    let result = twin.apply_service_update(desired_patch(json!({"k7": "v".repeat(4095)})), at(2));
    assert_eq!(
        result,
        Err(TwinError::TooLarge {
            section: "desired",
            size: MAX_PROPERTIES_SIZE + 1,
            limit: MAX_PROPERTIES_SIZE
        })
    );
    assert_eq!(twin, before);
    twin.apply_service_update(desired_patch(json!({"k7": "v".repeat(4094)})), at(2))
        .unwrap();
    assert_eq!(twin.desired.version(), 3);
}

#[test]
fn reported_size_boundary() {
    let mut twin = Twin::new(at(0));
    let mut too_big = members_of_size(8, 4096);
    too_big.insert("x".to_owned(), json!(""));
    assert_eq!(
        twin.patch_reported(&too_big, at(1)),
        Err(TwinError::TooLarge {
            section: "reported",
            size: MAX_PROPERTIES_SIZE + 1,
            limit: MAX_PROPERTIES_SIZE
        })
    );
    assert_eq!(twin, Twin::new(at(0)));
    twin.patch_reported(&members_of_size(8, 4096), at(1))
        .unwrap();
    assert_eq!(twin.reported.version(), 2);
}

#[test]
fn failed_updates_leave_the_twin_unchanged() {
    let mut twin = twin_with_desired(json!({"a": 1}));
    twin.apply_service_update(tags_patch(json!({"t": 1})), at(2))
        .unwrap();
    twin.patch_reported(&map(json!({"r": 1})), at(3)).unwrap();
    let before = twin.clone();

    let bad_desired = ServiceUpdate {
        tags: Some(Change::Patch(map(json!({"t": 2, "u": 3})))),
        desired: Some(Change::Patch(map(json!({"a": 2, "bad key": 1})))),
    };
    assert!(twin.apply_service_update(bad_desired, at(4)).is_err());
    assert_eq!(twin, before);

    let bad_tags = ServiceUpdate {
        tags: Some(Change::Replace(map(json!({"t": "x".repeat(5000)})))),
        desired: Some(Change::Replace(map(json!({"a": 2})))),
    };
    assert!(twin.apply_service_update(bad_tags, at(4)).is_err());
    assert_eq!(twin, before);

    let bad_reported = map(json!({"r": 2, "s": {"t": MAX_INTEGER + 1}}));
    assert!(twin.patch_reported(&bad_reported, at(4)).is_err());
    assert_eq!(twin, before);
}

#[test]
fn errors_read_as_sentences() {
    assert_eq!(
        TwinError::TooLarge {
            section: "tags",
            size: 9000,
            limit: 8192
        }
        .to_string(),
        "the tags section would be 9000 bytes, over its limit of 8192 bytes"
    );
    assert_eq!(
        TwinError::IntegerOutOfRange {
            key: "a.b".to_owned()
        }
        .to_string(),
        "the integer value of \"a.b\" is outside the supported range \
         [-4503599627370496, 4503599627370495]"
    );
    let long_key = "k".repeat(2000);
    match desired_error(json!({ long_key: 1 })) {
        Some(TwinError::InvalidKey { key, .. }) => assert_eq!(key.chars().count(), 129),
        other => panic!("{other:?}"),
    }
}

/// RFC 7396 merge, written independently of the implementation under test.
fn reference_merge(target: Option<&Value>, patch: &Value) -> Value {
    let Value::Object(patch) = patch else {
        return patch.clone();
    };
    let mut merged = match target {
        Some(Value::Object(existing)) => existing.clone(),
        _ => Map::new(),
    };
    for (key, value) in patch {
        if value.is_null() {
            merged.shift_remove(key);
        } else {
            let next = reference_merge(merged.get(key), value);
            merged.insert(key.clone(), next);
        }
    }
    Value::Object(merged)
}

/// Metadata has exactly one node per property, and nodes only under object values.
fn assert_metadata_mirrors(properties: &Map<String, Value>, node: &MetadataNode, version: i64) {
    assert!(node.last_updated_version.is_some_and(|v| v <= version));
    let mut property_keys: Vec<&String> = properties.keys().collect();
    property_keys.sort();
    let metadata_keys: Vec<&String> = node.children.keys().collect();
    assert_eq!(property_keys, metadata_keys);
    for (key, value) in properties {
        let child = &node.children[key];
        match value {
            Value::Object(object) => assert_metadata_mirrors(object, child, version),
            _ => {
                assert!(child.children.is_empty());
                assert!(child.last_updated_version.is_some_and(|v| v <= version));
            }
        }
    }
}

fn patch_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (-1000_i64..1000).prop_map(Value::from),
        "[a-z]{0,3}".prop_map(Value::from),
        prop::collection::vec(
            prop_oneof![Just(Value::Null), (0_i64..9).prop_map(Value::from)],
            0..3
        )
        .prop_map(Value::Array),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop::collection::vec(("[a-d]", inner), 0..4)
            .prop_map(|members| Value::Object(members.into_iter().collect()))
    })
}

fn patch_object() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::vec(("[a-d]", patch_value()), 0..4)
        .prop_map(|members| members.into_iter().collect())
}

/// One write to a twin, for generated histories.
#[derive(Clone, Debug)]
enum Write {
    Tags(Map<String, Value>),
    Desired(Map<String, Value>),
    DesiredReplace(Map<String, Value>),
    Reported(Map<String, Value>),
}

impl Write {
    fn apply(self, twin: &mut Twin, now: Timestamp) {
        match self {
            Write::Tags(patch) => twin.apply_service_update(tags_patch(Value::Object(patch)), now),
            Write::Desired(patch) => {
                twin.apply_service_update(desired_patch(Value::Object(patch)), now)
            }
            Write::DesiredReplace(properties) => {
                twin.apply_service_update(desired_replace(Value::Object(properties)), now)
            }
            Write::Reported(patch) => twin.patch_reported(&patch, now).map(|()| None),
        }
        .unwrap();
    }
}

/// A write and how many seconds after the previous one it happens (0 repeats the timestamp).
fn timed_write() -> impl Strategy<Value = (Write, i64)> {
    let write = prop_oneof![
        1 => patch_object().prop_map(Write::Tags),
        3 => patch_object().prop_map(Write::Desired),
        1 => patch_object().prop_map(Write::DesiredReplace),
        3 => patch_object().prop_map(Write::Reported),
    ];
    (write, 0_i64..3)
}

proptest! {
    /// Either stored form decodes to the twin, and a view of it renders as the twin does.
    #[test]
    fn any_history_round_trips_through_sparse_and_full_storage(
        writes in prop::collection::vec(timed_write(), 0..8)
    ) {
        let mut twin = Twin::new(at(0));
        let mut seconds = 0;
        for (write, gap) in writes {
            seconds += gap;
            write.apply(&mut twin, at(seconds));
            let stored = serde_json::to_vec(&twin).unwrap();
            prop_assert_eq!(&serde_json::from_slice::<Twin>(&stored).unwrap(), &twin);
            let full = serde_json::to_vec(&full_format(&twin)).unwrap();
            prop_assert_eq!(&serde_json::from_slice::<Twin>(&full).unwrap(), &twin);
            prop_assert!(stored.len() <= full.len());
            assert_view_renders_like(&stored);
            assert_view_renders_like(&full);
        }
    }

    #[test]
    fn patches_merge_like_rfc_7396_and_metadata_mirrors_properties(
        patches in prop::collection::vec(patch_object(), 1..6)
    ) {
        let mut twin = Twin::new(at(0));
        let mut expected = Value::Object(Map::new());
        let mut expected_version = 1;
        for (step, patch) in (1..).zip(&patches) {
            let notification = twin
                .apply_service_update(desired_patch(Value::Object(patch.clone())), at(step))
                .unwrap();
            expected = reference_merge(Some(&expected), &Value::Object(patch.clone()));
            if !patch.is_empty() {
                expected_version += 1;
                prop_assert_eq!(notification.as_ref(), Some(patch));
            } else {
                prop_assert_eq!(notification, None);
            }
            prop_assert_eq!(&Value::Object(twin.desired.properties().clone()), &expected);
            prop_assert_eq!(twin.desired.version(), expected_version);
            prop_assert_eq!(twin.etag_version, u64::try_from(expected_version).unwrap());
        }
        if twin.desired.version() > 1 {
            assert_metadata_mirrors(twin.desired.properties(), &twin.desired.metadata, twin.desired.version());
        }
    }

    #[test]
    fn replace_then_notification_reproduces_the_new_state(
        initial in patch_object(),
        replacement in patch_object(),
    ) {
        let mut twin = Twin::new(at(0));
        twin.apply_service_update(desired_patch(Value::Object(initial)), at(1)).unwrap();
        let old = Value::Object(twin.desired.properties().clone());
        let notification = twin
            .apply_service_update(desired_replace(Value::Object(replacement)), at(2))
            .unwrap()
            .unwrap();
        // A device applying the notification as a merge patch ends up with the new state.
        prop_assert_eq!(
            reference_merge(Some(&old), &Value::Object(notification)),
            Value::Object(twin.desired.properties().clone())
        );
    }
}

/// A [`TwinView`] of `stored` renders byte for byte what the twin decoded from it renders.
fn assert_view_renders_like(stored: &[u8]) {
    let twin: Twin = serde_json::from_slice(stored).unwrap();
    let view: TwinView<'_> = serde_json::from_slice(stored).unwrap();
    assert_eq!(
        view.tags().get(),
        serde_json::to_string(&twin.tags).unwrap()
    );
    assert_eq!(view.version(), twin.version);
    assert_eq!(view.etag(), twin.etag());
    assert_eq!(view.model_id(), twin.model_id.as_deref());
    for with_metadata in [true, false] {
        for (seen, decoded) in [
            (view.desired(), &twin.desired),
            (view.reported(), &twin.reported),
        ] {
            assert_eq!(
                serde_json::to_string(&seen.rendered(with_metadata)).unwrap(),
                serde_json::to_string(&decoded.rendered(with_metadata)).unwrap(),
            );
        }
    }
}

#[test]
fn a_view_renders_escaped_keys_and_text_like_the_decoded_twin() {
    let mut twin = Twin::new(at(0));
    let odd = json!({
        "quote\"d": {"back\\slash": "tab\there", "é": "line\nbreak", "x": [1, "\u{1}", {"x": null}]},
        "nested": {"b": {"a": 2}},
        "float": 0.1,
        "big": 4_503_599_627_370_495_i64,
    });
    twin.apply_service_update(desired_patch(odd.clone()), at(1))
        .unwrap();
    twin.apply_service_update(desired_patch(json!({"quote\"d": {"é": "again"}})), at(2))
        .unwrap();
    twin.patch_reported(odd.as_object().unwrap(), at(3))
        .unwrap();
    twin.apply_service_update(tags_patch(odd), at(4)).unwrap();
    twin.model_id = Some("dtmi:com:example;1".to_owned());
    assert_view_renders_like(&serde_json::to_vec(&twin).unwrap());
    assert_view_renders_like(&serde_json::to_vec(&full_format(&twin)).unwrap());
}
