//! Parses arbitrary text as a query and as a bare condition, then runs whatever parses over a
//! few twin-shaped documents through every evaluation entry point: none may panic.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

static DOCS: LazyLock<Vec<Value>> = LazyLock::new(|| {
    vec![
        json!({
            "deviceId": "d1", "status": "enabled", "version": 3,
            "tags": {"location": {"region": "US"}, "group": "a", "list": [1, "x", null]},
            "properties": {
                "desired": {"$version": 2, "$metadata": {"$lastUpdated": "2024-01-01T00:00:00Z"}},
                "reported": {"n": 9_223_372_036_854_775_807_i64, "f": -0.5, "s": "héllo", "nul": null}
            },
            "configurations": {"cfg-1": {"status": "Applied"}},
            "capabilities": {"iotEdge": true}
        }),
        json!({"deviceId": "d2", "moduleId": "m", "jobId": "j", "status": 1, "tags": {}}),
        json!({"DeviceId": ["d3"], "a": {"b": {"c": 1.5e300}}}),
        json!(null),
        json!([]),
    ]
});

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(query) = twinhub_query::parse(text) {
        let _ = query.execute(DOCS.iter());
        let _ = query.aggregate(DOCS.iter());
        for doc in DOCS.iter() {
            let _ = query.condition().matches(doc);
            let _ = query.project(doc);
            let _ = query.compare(doc, &DOCS[0]);
        }
    }
    if let Ok(condition) = twinhub_query::parse_condition(text) {
        for doc in DOCS.iter() {
            let _ = condition.matches(doc);
        }
    }
});
