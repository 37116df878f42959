//! Answers read from secondary indexes must be exactly what a full scan gives: every test
//! compares the hub's answer with `Query::execute` over every twin document, before and after
//! the writes that keep the indexes up to date, and while indexes are being filled.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde_json::{Map, Value, json};
use twinhub_core::identity::DeviceStatus;
use twinhub_core::twin::{Change, ServiceUpdate};
use twinhub_query::Query;

use super::Slot;
use crate::hub::test_support::open_hub;
use crate::hub::{Hub, IdentityKey, IdentitySpec, IfMatch};
use crate::shape::{DocumentParts, TwinSource};

const FLEET: usize = 300;
const PAGE: usize = 7;

/// Queries over device twins: indexed paths alone and combined, with paths no index serves,
/// contradictions, ordering and aggregates (some grouped by a path holding objects).
const DEVICE_QUERIES: &[&str] = &[
    "SELECT * FROM devices WHERE tags.site = 'north'",
    "SELECT deviceId FROM devices WHERE tags.site = 'North'",
    "SELECT * FROM devices WHERE tags.site < 'o'",
    "SELECT * FROM devices WHERE properties.reported.temperature > 20",
    "SELECT deviceId, properties.reported.temperature FROM devices \
     WHERE properties.reported.temperature >= 10 AND properties.reported.temperature < 30.5",
    "SELECT * FROM devices WHERE properties.reported.temperature = 1",
    "SELECT * FROM devices WHERE properties.reported.temperature <= 1.0",
    "SELECT * FROM devices WHERE tags.floor = 1",
    "SELECT * FROM devices WHERE tags.floor = 1.0",
    "SELECT * FROM devices WHERE tags.floor > '2'",
    "SELECT * FROM devices WHERE tags.floor IN [1, 3, '3', true]",
    "SELECT * FROM devices WHERE tags.floor IN [2, 2.0, 2.5]",
    "SELECT * FROM devices WHERE tags.site IN ['north', 'south']",
    "SELECT * FROM devices WHERE STARTSWITH(tags.location.region, 'eu-')",
    "SELECT * FROM devices WHERE STARTSWITH(properties.reported.firmware.version, '1.')",
    "SELECT * FROM devices WHERE tags.location = 'hq'",
    "SELECT * FROM devices WHERE tags.site = 'north' AND properties.reported.temperature > 10",
    "SELECT * FROM devices WHERE properties.desired.mode = 'eco' \
     AND properties.reported.battery < 50 AND tags.floor > 0",
    "SELECT * FROM devices WHERE tags.site = 'north' OR tags.site = 'east'",
    "SELECT * FROM devices WHERE tags.level < 2 OR tags.level >= 4",
    "SELECT * FROM devices WHERE tags.site = 'north' OR properties.reported.online = true",
    "SELECT * FROM devices WHERE NOT (tags.floor > 3)",
    "SELECT * FROM devices WHERE NOT tags.flag",
    "SELECT * FROM devices WHERE tags.flag",
    "SELECT * FROM devices WHERE properties.reported.online = false AND tags.flag = true",
    "SELECT * FROM devices WHERE deviceId > 'dev-150' AND tags.site = 'west'",
    "SELECT * FROM devices WHERE status = 'disabled' AND properties.desired.interval >= 20",
    "SELECT * FROM devices WHERE properties.reported.temperature > 5 \
     AND properties.reported.temperature < 3",
    "SELECT * FROM devices WHERE tags.site = 'north' AND tags.site = 'south'",
    "SELECT * FROM devices WHERE tags.floor != 2",
    "SELECT * FROM devices WHERE tags.site NIN ['north']",
    "SELECT * FROM devices WHERE tags.missing = 1",
    "SELECT TOP 10 * FROM devices WHERE tags.site = 'south'",
    "SELECT TOP 5 deviceId, tags.floor FROM devices WHERE tags.floor >= 2",
    "SELECT * FROM devices WHERE properties.reported.temperature > 10 \
     ORDER BY properties.reported.temperature DESC",
    "SELECT deviceId FROM devices WHERE tags.floor IN [1, 2] ORDER BY deviceId DESC",
    "SELECT COUNT() FROM devices WHERE tags.site = 'north'",
    "SELECT COUNT() AS n FROM devices",
    "SELECT COUNT() AS n FROM devices WHERE properties.reported.temperature > 20",
    "SELECT tags.site AS site, COUNT() AS n FROM devices GROUP BY tags.site",
    "SELECT tags.floor, COUNT() FROM devices GROUP BY tags.floor",
    "SELECT tags.level, COUNT() FROM devices GROUP BY tags.level",
    "SELECT tags.level AS level, COUNT() AS n FROM devices GROUP BY tags.level ORDER BY n DESC",
    "SELECT COUNT() AS n FROM devices GROUP BY tags.level",
    "SELECT properties.reported.firmware.version AS v, COUNT() AS n FROM devices \
     GROUP BY properties.reported.firmware.version ORDER BY n DESC, v",
    "SELECT TOP 3 properties.desired.mode AS mode, COUNT() AS n FROM devices \
     GROUP BY properties.desired.mode ORDER BY n DESC, mode",
    "SELECT properties.reported.online AS online, COUNT() AS n FROM devices \
     GROUP BY properties.reported.online",
    "SELECT tags.site AS site, COUNT() AS n FROM devices \
     WHERE properties.reported.battery > 50 GROUP BY tags.site",
    "SELECT properties.reported.temperature AS t, COUNT() AS n FROM devices \
     GROUP BY properties.reported.temperature",
    "SELECT AVG(properties.reported.temperature) AS mean FROM devices WHERE tags.site = 'north'",
    "SELECT tags.location.region AS region, MAX(properties.reported.battery) AS battery \
     FROM devices WHERE tags.floor >= 1 GROUP BY tags.location.region",
    "SELECT status, COUNT() AS n FROM devices GROUP BY status",
    "SELECT * FROM devices WHERE deviceId = 'dev-042'",
    "SELECT * FROM devices WHERE deviceId IN ['dev-150', 'dev-007', 'dev-999', 'nobody']",
    "SELECT deviceId FROM devices WHERE DEVICEID = 'dev-010' OR deviceid = 'dev-011'",
    "SELECT * FROM devices WHERE STARTSWITH(deviceId, 'dev-1')",
    "SELECT * FROM devices WHERE deviceId >= 'dev-100' AND deviceId < 'dev-120'",
    "SELECT * FROM devices WHERE deviceId > 'dev-290'",
    "SELECT * FROM devices WHERE deviceId <= 'dev-005'",
    "SELECT * FROM devices WHERE deviceId = 'dev-042' AND tags.site = 'north'",
    "SELECT * FROM devices WHERE deviceId IN ['dev-001', 'dev-002'] AND deviceId > 'dev-001'",
    "SELECT * FROM devices WHERE deviceId = 5 OR deviceId = true",
    "SELECT * FROM devices WHERE deviceId > 3",
    "SELECT * FROM devices WHERE STARTSWITH(deviceId, 'dev-2') AND tags.floor = 1",
    "SELECT COUNT() AS n FROM devices WHERE STARTSWITH(deviceId, 'dev-2')",
];

/// Queries over module twins, whose indexes are apart from those of device twins.
const MODULE_QUERIES: &[&str] = &[
    "SELECT COUNT() AS n FROM devices.modules",
    "SELECT * FROM devices.modules WHERE tags.role = 'sensor'",
    "SELECT * FROM devices.modules WHERE devices.modules.tags.role = 'gateway'",
    "SELECT * FROM devices.modules WHERE properties.reported.load > 0.5",
    "SELECT moduleId FROM devices.modules \
     WHERE tags.role IN ['sensor', 'gateway'] AND deviceId < 'dev-200'",
    "SELECT * FROM devices.modules WHERE tags.site = 'north'",
    "SELECT * FROM devices.modules WHERE tags.role = 'sensor' AND properties.reported.load <= 1",
    "SELECT tags.role AS role, COUNT() AS n FROM devices.modules GROUP BY tags.role",
    "SELECT properties.reported.load AS load, COUNT() AS n FROM devices.modules \
     GROUP BY properties.reported.load",
    "SELECT COUNT() FROM devices.modules WHERE properties.reported.load >= 0.25",
    "SELECT * FROM devices.modules WHERE deviceId = 'dev-003'",
    "SELECT moduleId FROM devices.modules WHERE deviceId IN ['dev-001', 'dev-004'] AND moduleId = 'm0'",
    "SELECT * FROM devices.modules WHERE STARTSWITH(deviceId, 'dev-01')",
];

fn device_id(i: usize) -> String {
    format!("dev-{i:03}")
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("{other} is not an object"),
    }
}

fn pick<T: Clone>(options: &[T], i: usize) -> T {
    options[i % options.len()].clone()
}

/// Tags of device `i`: `site` and `floor` sometimes hold an object or another type, `level`
/// only numbers, `location` is an object or a string. `floor` and `level` mix `3` and `3.0`, so
/// a GROUP BY answered from an index must show the spelling a scan shows (the first twin's)
/// whichever twin of a group is written or deleted.
fn device_tags(i: usize) -> Map<String, Value> {
    let mut tags = Map::new();
    let site = match i {
        _ if i.is_multiple_of(11) => None,
        _ if i.is_multiple_of(37) => Some(json!({"name": "north"})),
        _ if i.is_multiple_of(41) => Some(json!(7)),
        _ => Some(json!(pick(&["north", "south", "east", "west", "North"], i))),
    };
    if let Some(site) = site {
        tags.insert("site".into(), site);
    }
    let floor = match i {
        _ if i.is_multiple_of(13) => json!(3.0),
        _ if i.is_multiple_of(17) => json!(2.5),
        _ if i.is_multiple_of(19) => json!("3"),
        _ if i.is_multiple_of(23) => json!(true),
        _ if i.is_multiple_of(29) => json!({"n": 1}),
        _ if i.is_multiple_of(31) => json!([1, null]),
        _ => json!(i % 7),
    };
    tags.insert("floor".into(), floor);
    if !i.is_multiple_of(23) {
        let level = if i % 10 == 3 {
            json!(3.0)
        } else {
            json!(i % 5)
        };
        tags.insert("level".into(), level);
    }
    let location = match i {
        _ if i.is_multiple_of(19) => Some(json!("hq")),
        _ if i.is_multiple_of(31) => None,
        _ => Some(json!({
            "region": pick(&["eu-west", "eu-north", "us-east", "us-west", "ap"], i / 3),
            "building": i % 4,
        })),
    };
    if let Some(location) = location {
        tags.insert("location".into(), location);
    }
    if i % 5 != 4 {
        tags.insert("flag".into(), json!(i.is_multiple_of(2)));
    }
    tags
}

fn device_desired(i: usize) -> Map<String, Value> {
    let mut desired = Map::new();
    desired.insert(
        "interval".into(),
        pick(&[json!(10), json!(20), json!(30), json!(20.0)], i),
    );
    if i % 10 != 9 {
        desired.insert(
            "mode".into(),
            json!(pick(&["eco", "fast", "Eco", "balanced"], i)),
        );
    }
    desired
}

fn device_reported(i: usize) -> Map<String, Value> {
    let mut reported = Map::new();
    let temperature = match i {
        5 => Some(json!(1)),
        6 => Some(json!(1.0)),
        _ if i.is_multiple_of(53) => None,
        _ if i.is_multiple_of(43) => Some(json!({"value": 21})),
        _ if i.is_multiple_of(47) => Some(json!([1, 2])),
        _ if i.is_multiple_of(9) => Some(json!(i % 40)),
        // Not the double nearest a decimal: stored JSON must read back the exact same double.
        _ => Some(json!(((i * 7919) % 400) as f64 / 10.0 - 5.0)),
    };
    if let Some(temperature) = temperature {
        reported.insert("temperature".into(), temperature);
    }
    if i % 7 != 3 {
        reported.insert("battery".into(), json!(i % 101));
    }
    reported.insert("online".into(), json!(!i.is_multiple_of(3)));
    let firmware = if i.is_multiple_of(25) {
        json!("legacy")
    } else {
        json!({"version": pick(&["1.0.0", "1.2.3", "2.0.0-beta", "1.10.0"], i)})
    };
    reported.insert("firmware".into(), firmware);
    reported
}

fn module_tags(i: usize, m: usize) -> Map<String, Value> {
    let mut tags = Map::new();
    if !(i + m).is_multiple_of(7) {
        tags.insert(
            "role".into(),
            json!(pick(&["sensor", "gateway", "actuator"], i + m)),
        );
    }
    if m == 0 {
        tags.insert("site".into(), json!(pick(&["north", "south"], i / 10)));
    }
    tags
}

fn module_reported(i: usize, m: usize) -> Map<String, Value> {
    let load = match (i * 13 + m * 7) % 100 {
        0 => json!(1),
        1 => json!(1.0),
        2 => json!({"peak": 0.9}),
        n => json!(n as f64 / 100.0),
    };
    object(json!({ "load": load }))
}

/// How many modules device `i` has.
fn module_count(i: usize) -> usize {
    match i {
        _ if i.is_multiple_of(20) => 2,
        _ if i.is_multiple_of(10) => 1,
        _ => 0,
    }
}

async fn set_twin(
    hub: &Hub,
    key: &IdentityKey,
    tags: Option<Change>,
    desired: Option<Change>,
    reported: Map<String, Value>,
) {
    if tags.is_some() || desired.is_some() {
        hub.update_twin(key, ServiceUpdate { tags, desired }, &IfMatch::Any)
            .await
            .expect("twin updated");
    }
    if !reported.is_empty() {
        hub.patch_reported(key, &reported)
            .await
            .expect("reported patched");
    }
}

async fn add_device(hub: &Hub, i: usize) {
    let mut spec = IdentitySpec::sas_device(device_id(i));
    if i.is_multiple_of(6) {
        spec.status = DeviceStatus::Disabled;
    }
    hub.create_identity(spec).await.expect("device created");
    let key = IdentityKey::device(device_id(i));
    set_twin(
        hub,
        &key,
        Some(Change::Replace(device_tags(i))),
        Some(Change::Patch(device_desired(i))),
        device_reported(i),
    )
    .await;
    for m in 0..module_count(i) {
        let key = IdentityKey::module(device_id(i), format!("m{m}"));
        hub.create_identity(IdentitySpec {
            key: key.clone(),
            ..IdentitySpec::sas_device(device_id(i))
        })
        .await
        .expect("module created");
        set_twin(
            hub,
            &key,
            Some(Change::Replace(module_tags(i, m))),
            None,
            module_reported(i, m),
        )
        .await;
    }
}

async fn fleet(devices: usize) -> Hub {
    let hub = open_hub().await;
    for i in 0..devices {
        add_device(&hub, i).await;
    }
    hub
}

/// Every device twin, or every module twin, in key order, as a full scan renders them.
fn documents(hub: &Hub, modules: bool) -> Vec<Value> {
    let mut docs = Vec::new();
    for (device, presence) in hub.list_devices(usize::MAX) {
        if !modules {
            docs.push(TwinSource::Decoded(&device).document(&presence, DocumentParts::all(true)));
            continue;
        }
        let listed = hub
            .list_modules(&device.identity.device_id)
            .expect("the device exists");
        for (module, presence) in listed {
            docs.push(TwinSource::Decoded(&module).document(&presence, DocumentParts::all(true)));
        }
    }
    docs
}

fn parse(text: &str) -> Query {
    twinhub_query::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn is_modules(query: &Query) -> bool {
    query.collection() == twinhub_query::Collection::DevicesModules
}

/// More pages than any query here has: a continuation that goes on longer loops.
const MAX_PAGES: usize = 1_000;

/// Every page of the query, `PAGE` items at a time, following continuation tokens.
fn all_pages(hub: &Hub, query: &Query) -> Vec<Value> {
    let mut items = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let page = hub
            .query_page(query, PAGE, token.as_deref())
            .expect("the query runs");
        items.extend(
            page.items.iter().map(|item| {
                serde_json::from_str::<Value>(item.get()).expect("a page item is JSON")
            }),
        );
        match page.continuation {
            Some(next) => token = Some(next),
            None => return items,
        }
    }
    panic!("the continuation tokens never end");
}

fn assert_same_rows(text: &str, actual: &[Value], expected: &[Value]) {
    if actual == expected {
        return;
    }
    let differing = actual
        .iter()
        .zip(expected)
        .position(|(a, e)| a != e)
        .unwrap_or(actual.len().min(expected.len()));
    panic!(
        "{text}\n{} rows from the hub, {} from a full scan; first difference at row {differing}:\n\
         hub:       {}\nfull scan: {}",
        actual.len(),
        expected.len(),
        actual
            .get(differing)
            .map_or("(none)".into(), Value::to_string),
        expected
            .get(differing)
            .map_or("(none)".into(), Value::to_string),
    );
}

fn key_of(doc: &Value) -> IdentityKey {
    IdentityKey {
        device_id: doc["deviceId"].as_str().expect("deviceId").to_owned(),
        module_id: doc["moduleId"].as_str().map(str::to_owned),
    }
}

/// The query's pages, the twins its condition selects and their count all agree with a full
/// scan.
fn assert_agrees(hub: &Hub, text: &str) {
    let query = parse(text);
    let modules = is_modules(&query);
    let docs = documents(hub, modules);
    assert_same_rows(text, &all_pages(hub, &query), &query.execute(docs.iter()));

    let matching: Vec<IdentityKey> = docs
        .iter()
        .filter(|doc| query.condition().matches(doc))
        .map(key_of)
        .collect();
    assert_eq!(
        hub.query_identities(query.condition(), modules),
        matching,
        "query_identities for {text}"
    );
    assert_eq!(
        hub.count_matching(&query),
        matching.len() as u64,
        "count_matching for {text}"
    );
}

fn assert_all_agree(hub: &Hub) {
    for text in DEVICE_QUERIES.iter().chain(MODULE_QUERIES) {
        assert_agrees(hub, text);
    }
}

/// Every index is filled and holds, for every twin of its collection, exactly what the twin
/// has at its path now: no stale, missing or orphaned entries.
fn assert_indexes_exact(hub: &Hub) {
    let by_path = hub.0.indexes.by_path.read().expect("indexes");
    let entries = hub.0.entries.read().expect("entries");
    for ((modules, path), index) in by_path.iter() {
        assert!(index.is_filled(), "index of {path:?} is filled");
        let state = index.state.read().expect("index state");
        assert!(state.pending.is_none(), "index of {path:?} has no queue");
        let expected: HashMap<IdentityKey, Slot> = entries
            .iter()
            .filter(|(key, entry)| key.module_id.is_some() == *modules && !entry.is_deleted())
            .filter_map(|(key, entry)| Some((key.clone(), index.slot_of(&*entry.record())?)))
            .collect();
        let held = &state.entries;
        let mut wrong: Vec<(&IdentityKey, Option<&Slot>, Option<&Slot>)> = held
            .of
            .keys()
            .chain(expected.keys())
            .map(|key| (key, held.of.get(key), expected.get(key)))
            .filter(|(_, held, expected)| held != expected)
            .collect();
        wrong.sort_by_key(|(key, _, _)| *key);
        wrong.dedup();
        assert!(
            wrong.is_empty(),
            "index of {path:?} (modules: {modules}) disagrees with the twins, \
             as (twin, index holds, twin has): {wrong:?}"
        );
        let mut listed = held.other.len();
        for (key, twins) in &held.by_key {
            assert!(
                !twins.is_empty(),
                "index of {path:?} keeps an empty {key:?}"
            );
            for twin in twins {
                assert_eq!(held.of.get(twin), Some(&Slot::Key(key.clone())), "{path:?}");
            }
            listed += twins.len();
        }
        for twin in &held.other {
            assert_eq!(held.of.get(twin), Some(&Slot::Other), "{path:?}");
        }
        assert_eq!(
            listed,
            held.of.len(),
            "index of {path:?} lists each twin once"
        );
    }
}

fn indexed_paths(hub: &Hub) -> Vec<(bool, String)> {
    let by_path = hub.0.indexes.by_path.read().expect("indexes");
    let mut paths: Vec<(bool, String)> = by_path
        .keys()
        .map(|(modules, path)| (*modules, path.join(".")))
        .collect();
    paths.sort();
    paths
}

#[tokio::test]
async fn indexed_answers_equal_a_full_scan() {
    let hub = fleet(FLEET).await;
    assert!(indexed_paths(&hub).is_empty(), "no query ran yet");
    assert_all_agree(&hub);
    // Run twice: the first run fills the indexes, the second reads the filled ones.
    assert_all_agree(&hub);
    let paths = indexed_paths(&hub);
    for expected in [
        (false, "tags.site"),
        (false, "tags.floor"),
        (false, "tags.level"),
        (false, "tags.location.region"),
        (false, "tags.location"),
        (false, "properties.reported.temperature"),
        (false, "properties.reported.firmware.version"),
        (false, "properties.desired.mode"),
        (true, "tags.role"),
        (true, "properties.reported.load"),
    ] {
        assert!(
            paths.contains(&(expected.0, expected.1.to_owned())),
            "{expected:?} is indexed: {paths:?}"
        );
    }
    assert_indexes_exact(&hub);
}

/// Writes of every kind after the indexes exist: changed, removed and retyped values (to an
/// object, from an object), whole tag replacements, new devices, deleted devices and modules.
async fn rewrite_fleet(hub: &Hub) {
    for i in (0..FLEET).step_by(3) {
        let key = IdentityKey::device(device_id(i));
        let (tags, desired, reported) = match i % 4 {
            0 => (
                Change::Patch(object(json!({
                    "site": pick(&["south", "north", "centre"], i / 4),
                    "floor": null,
                    "level": pick(&[json!(1), json!(3.0), json!(4)], i / 4),
                }))),
                Change::Patch(object(json!({"mode": "eco"}))),
                object(json!({"temperature": (i % 30) as f64 + 0.5, "online": null})),
            ),
            1 => (
                Change::Patch(object(json!({
                    "site": {"name": "moved"},
                    "floor": 1.0,
                    "location": {"region": "eu-south"},
                }))),
                Change::Patch(object(json!({"mode": null, "interval": 20}))),
                object(json!({"temperature": {"value": 1}, "battery": 49})),
            ),
            2 => (
                Change::Replace(object(json!({"level": 3.0, "flag": true}))),
                Change::Replace(object(json!({"interval": 5}))),
                object(json!({"temperature": null, "firmware": {"version": "1.9.9"}})),
            ),
            _ => (
                Change::Patch(object(
                    json!({"site": "North", "floor": "3", "location": "hq"}),
                )),
                Change::Patch(object(json!({"mode": "Eco"}))),
                object(json!({"temperature": 1, "firmware": "legacy", "online": false})),
            ),
        };
        set_twin(hub, &key, Some(tags), Some(desired), reported).await;
    }
    for i in (0..FLEET).filter(|i| module_count(*i) > 0) {
        let key = IdentityKey::module(device_id(i), "m0");
        let role = if i.is_multiple_of(30) {
            json!(null)
        } else {
            json!("gateway")
        };
        set_twin(
            hub,
            &key,
            Some(Change::Patch(object(
                json!({"role": role, "site": "north"}),
            ))),
            None,
            object(json!({"load": pick(&[json!(0.75), json!(1), json!({"peak": 2})], i / 10)})),
        )
        .await;
    }
    for i in FLEET..FLEET + 40 {
        add_device(hub, i).await;
    }
    for i in (1..FLEET).step_by(17).chain([20, 40, 200]) {
        hub.delete_identity(&IdentityKey::device(device_id(i)), &IfMatch::Any)
            .await
            .expect("device deleted");
    }
    hub.delete_identity(&IdentityKey::module(device_id(100), "m1"), &IfMatch::Any)
        .await
        .expect("module deleted");
}

#[tokio::test]
async fn indexes_stay_exact_through_updates_creations_and_deletions() {
    let hub = fleet(FLEET).await;
    assert_all_agree(&hub);
    let paths = indexed_paths(&hub);

    rewrite_fleet(&hub).await;

    assert_indexes_exact(&hub);
    assert_all_agree(&hub);
    assert_eq!(
        indexed_paths(&hub),
        paths,
        "the same indexes answered again"
    );
    assert!(
        hub.get_identity(&IdentityKey::module(device_id(20), "m0"))
            .is_err(),
        "deleting a device deleted its modules"
    );
}

/// Keeps writing reported values at `properties.reported.cN` (numbers, removals, objects) to
/// twins until told to stop.
async fn keep_writing(hub: Hub, stop: Arc<AtomicBool>, writes: Arc<AtomicU64>, seed: usize) {
    let mut n = seed;
    while !stop.load(Ordering::Acquire) {
        n = n
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let device = (n >> 33) % 2_000;
        let path = format!("c{}", (n >> 20) % 8);
        let value = match (n >> 12) % 10 {
            0 => json!(null),
            1 => json!({"nested": 1}),
            2 => json!(1.0),
            v => json!(v * 10 + (n >> 40) % 10),
        };
        let mut patch = Map::new();
        patch.insert(path, value);
        patch.insert("seq".into(), json!((n >> 8) % 1000));
        hub.patch_reported(&IdentityKey::device(device_id(device)), &patch)
            .await
            .expect("reported patched");
        writes.fetch_add(1, Ordering::Release);
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn indexes_filled_while_twins_change_end_up_exact() {
    let hub = open_hub().await;
    let specs = (0..2_000)
        .map(|i| IdentitySpec::sas_device(device_id(i)))
        .collect();
    for outcome in hub.create_identities(specs).await {
        outcome.result.expect("device created");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..2)
        .map(|seed| {
            tokio::spawn(keep_writing(
                hub.clone(),
                Arc::clone(&stop),
                Arc::clone(&writes),
                seed,
            ))
        })
        .collect();
    while writes.load(Ordering::Acquire) < 200 {
        tokio::task::yield_now().await;
    }
    let mut texts = Vec::new();
    let mut overlapped = 0;
    for c in 0..8_u32 {
        // Each query is the first use of its path: it creates the index while writes go on.
        let text = if c.is_multiple_of(2) {
            format!("SELECT deviceId FROM devices WHERE properties.reported.c{c} > 40")
        } else {
            format!(
                "SELECT properties.reported.c{c} AS v, COUNT() AS n FROM devices \
                 GROUP BY properties.reported.c{c}"
            )
        };
        let before = writes.load(Ordering::Acquire);
        hub.query_page(&parse(&text), 1_000, None)
            .expect("the query runs");
        if writes.load(Ordering::Acquire) > before {
            overlapped += 1;
        }
        texts.push(text);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Release);
    for writer in writers {
        writer.await.expect("the writer finished");
    }
    assert!(overlapped > 0, "some index was filled while twins changed");
    assert_eq!(
        indexed_paths(&hub).len(),
        8,
        "every query created its index"
    );
    assert_indexes_exact(&hub);
    for c in 0..8 {
        texts.push(format!(
            "SELECT * FROM devices WHERE properties.reported.c{c} IN [1, 30, 55, 91]"
        ));
        texts.push(format!(
            "SELECT COUNT() AS n FROM devices WHERE properties.reported.c{c} >= 1"
        ));
    }
    for text in &texts {
        assert_agrees(&hub, text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_write_is_in_the_next_query() {
    let hub = fleet(60).await;
    assert_all_agree(&hub);
    let by_site = parse("SELECT deviceId FROM devices WHERE tags.site = 'rw'");
    let hot = parse("SELECT deviceId FROM devices WHERE properties.reported.temperature > 1000");
    // Only ever strings at `tags.zone`, so its index answers this count without reading twins.
    let counted = parse("SELECT tags.zone AS zone, COUNT() AS n FROM devices GROUP BY tags.zone");
    let ids = |query: &Query| -> Vec<Value> {
        all_pages(&hub, query)
            .into_iter()
            .map(|row| row["deviceId"].clone())
            .collect()
    };
    let rw_count = |hub: &Hub| -> Option<Value> {
        all_pages(hub, &counted)
            .into_iter()
            .find(|row| row["zone"] == "rw")
            .map(|row| row["n"].clone())
    };

    for i in 0..20 {
        let key = IdentityKey::device(device_id(i));
        let writer = hub.clone();
        let written = key.clone();
        // The write runs on another worker; the query starts once it is acknowledged.
        tokio::spawn(async move {
            set_twin(
                &writer,
                &written,
                Some(Change::Patch(object(json!({"site": "rw", "zone": "rw"})))),
                None,
                object(json!({"temperature": 1000.5})),
            )
            .await;
        })
        .await
        .expect("the write finished");
        assert_eq!(ids(&by_site), vec![json!(device_id(i))], "tag write {i}");
        assert_eq!(ids(&hot), vec![json!(device_id(i))], "reported write {i}");
        assert_eq!(rw_count(&hub), Some(json!(1)), "counted write {i}");

        let writer = hub.clone();
        let written = key.clone();
        tokio::spawn(async move {
            set_twin(
                &writer,
                &written,
                Some(Change::Patch(object(
                    json!({"site": {"was": "rw"}, "zone": "calm"}),
                ))),
                None,
                object(json!({"temperature": null})),
            )
            .await;
        })
        .await
        .expect("the write finished");
        assert!(ids(&by_site).is_empty(), "tag rewrite {i}");
        assert!(ids(&hot).is_empty(), "reported removal {i}");
        assert_eq!(rw_count(&hub), None, "counted rewrite {i}");
    }

    let created = device_id(1_000);
    hub.create_identity(IdentitySpec::sas_device(created.clone()))
        .await
        .expect("device created");
    set_twin(
        &hub,
        &IdentityKey::device(created.clone()),
        Some(Change::Patch(object(json!({"site": "rw", "zone": "rw"})))),
        None,
        Map::new(),
    )
    .await;
    assert_eq!(ids(&by_site), vec![json!(created)], "created device");
    hub.delete_identity(&IdentityKey::device(created), &IfMatch::Any)
        .await
        .expect("device deleted");
    assert!(ids(&by_site).is_empty(), "deleted device");
    assert_eq!(rw_count(&hub), None, "deleted device counted");
    assert_all_agree(&hub);
    assert_indexes_exact(&hub);
}

#[tokio::test]
async fn grouped_counts_from_an_index_spell_values_as_the_first_twin_does() {
    let hub = fleet(0).await;
    for (i, level) in [(0, json!(1.0)), (1, json!(1))] {
        add_device(&hub, 1000 + i).await;
        let key = IdentityKey::device(device_id(1000 + i));
        let tags = object(json!({ "spelled": level }));
        set_twin(&hub, &key, Some(Change::Replace(tags)), None, Map::new()).await;
    }
    let text = "SELECT tags.spelled AS v, COUNT() AS n FROM devices GROUP BY tags.spelled";
    assert_agrees(&hub, text);
    let first = IdentityKey::device(device_id(1000));
    let tags = object(json!({ "spelled": 2 }));
    set_twin(&hub, &first, Some(Change::Replace(tags)), None, Map::new()).await;
    assert_eq!(
        all_pages(&hub, &parse(text)),
        vec![json!({"v": 1, "n": 1}), json!({"v": 2, "n": 1})]
    );
    assert_agrees(&hub, text);
}

/// Conditions on device ids read the registry's key order, not every twin; a range of ids
/// gives way to an index when one applies.
#[tokio::test]
async fn device_id_conditions_are_answered_from_the_registry_order() {
    use crate::hub::query::Driver;

    let hub = fleet(20).await;
    let driver = |text: &str| {
        let condition = twinhub_query::parse_condition(text).expect("the condition parses");
        hub.plan(&condition, false).map(|plan| plan.driver)
    };
    for text in [
        "deviceId = 'dev-004'",
        "DeviceId IN ['dev-001', 'dev-009']",
        "deviceId = 'dev-004' AND tags.site = 'north'",
        "STARTSWITH(deviceId, 'dev-01')",
        "deviceId >= 'dev-010'",
    ] {
        assert!(
            matches!(driver(text), Some(Driver::DeviceIds(_))),
            "{text} should be driven by device ids"
        );
    }
    assert!(matches!(
        driver("STARTSWITH(deviceId, 'dev-0') AND tags.site = 'north'"),
        Some(Driver::Index(..))
    ));
    assert!(driver("deviceId != 'dev-004'").is_none());
}
