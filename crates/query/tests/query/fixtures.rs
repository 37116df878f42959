//! A small fleet of realistic documents and the `check` helper the tests are written in.

use serde_json::{Value, json};
use twinhub_query::{QueryError, parse};

/// Five device twins covering the shapes queries meet: nested tags, desired/reported with
/// `$version` and `$metadata`, configurations, edge capability, missing and null values.
pub(crate) fn devices() -> Vec<Value> {
    vec![
        json!({
            "deviceId": "device1", "etag": "AAAAAAAAAAE=", "version": 12,
            "status": "enabled", "statusReason": null, "connectionState": "Disconnected",
            "lastActivityTime": "2024-01-02T03:04:05.000Z",
            "tags": {"location": {"region": "US", "plant": "Redmond43"}, "group": "alpha"},
            "properties": {
                "desired": {
                    "telemetryConfig": {"sendFrequencyInSecs": 300},
                    "$metadata": {"$lastUpdated": "2024-01-01T00:00:00Z"},
                    "$version": 4
                },
                "reported": {
                    "connectivity": "wired",
                    "telemetryConfig": {"sendFrequencyInSecs": 300, "status": "Success"},
                    "$metadata": {
                        "$lastUpdated": "2024-01-02T00:00:00Z",
                        "connectivity": {"$lastUpdated": "2024-01-02T00:00:00Z"}
                    },
                    "$version": 7
                }
            },
            "configurations": {"cfg-1": {"status": "Applied"}},
            "capabilities": {"iotEdge": false}
        }),
        json!({
            "deviceId": "device2", "version": 3,
            "status": "enabled", "connectionState": "Connected",
            "lastActivityTime": "2024-01-03T00:00:00.000Z",
            "tags": {"location": {"region": "US"}, "group": "beta"},
            "properties": {
                "desired": {"$metadata": {"$lastUpdated": "2023-12-01T00:00:00Z"}, "$version": 1},
                "reported": {
                    "connectivity": "wifi",
                    "telemetryConfig": {"sendFrequencyInSecs": 30, "status": "Pending"},
                    "$metadata": {"$lastUpdated": "2023-12-02T00:00:00Z"},
                    "$version": 2
                }
            },
            "configurations": {"cfg-1": {"status": "Targeted"}},
            "capabilities": {"iotEdge": true}
        }),
        json!({
            "deviceId": "AZ3166Device", "version": 5,
            "status": "enabled", "connectionState": "Disconnected",
            "lastActivityTime": "2021-05-07T00:50:38.0543092Z",
            "tags": {"location": {"region": "EU"}},
            "properties": {
                "desired": {"$metadata": {"$lastUpdated": "2021-05-01T00:00:00Z"}, "$version": 1},
                "reported": {
                    "connectivity": "cellular",
                    "telemetryConfig": {"sendFrequencyInSecs": 60.0, "status": "Success"},
                    "$metadata": {"$lastUpdated": "2021-05-07T00:00:00Z"},
                    "$version": 9
                }
            },
            "capabilities": {"iotEdge": false}
        }),
        json!({
            "deviceId": "edge1", "version": 2,
            "status": "disabled", "statusReason": "maintenance", "connectionState": "Disconnected",
            "lastActivityTime": "0001-01-01T00:00:00Z",
            "tags": {},
            "properties": {
                "desired": {"$metadata": {"$lastUpdated": "2022-01-01T00:00:00Z"}, "$version": 1},
                "reported": {
                    "connectivity": null,
                    "$metadata": {"$lastUpdated": "2022-01-01T00:00:00Z"},
                    "$version": 1
                }
            },
            "capabilities": {"iotEdge": true}
        }),
        json!({
            "deviceId": "device5", "version": 8,
            "status": "enabled", "connectionState": "Connected",
            "lastActivityTime": "2024-02-01T00:00:00.000Z",
            "tags": {"location": {"region": "US"}},
            "properties": {
                "desired": {"$metadata": {"$lastUpdated": "2024-02-01T00:00:00Z"}, "$version": 6},
                "reported": {
                    "telemetryConfig": {"sendFrequencyInSecs": 120, "status": "Success"},
                    "$metadata": {"$lastUpdated": "2024-02-01T00:00:00Z"},
                    "$version": 3
                }
            },
            "capabilities": {"iotEdge": false}
        }),
    ]
}

/// Module twins.
pub(crate) fn modules() -> Vec<Value> {
    let module = |device: &str, module: &str, status: &str| {
        json!({
            "deviceId": device, "moduleId": module, "status": "enabled",
            "connectionState": "Connected",
            "properties": {"desired": {"$version": 1}, "reported": {"status": status, "$version": 2}}
        })
    };
    vec![
        module("device1", "scanner", "scanning"),
        module("device2", "scanner", "idle"),
        module("AZ3166Device", "scanner", "scanning"),
    ]
}

/// Per-device job records, as `devices.jobs` holds them.
pub(crate) fn device_jobs() -> Vec<Value> {
    let job = |device: &str, job: &str, kind: &str, status: &str, created: &str| {
        json!({
            "deviceId": device, "jobId": job, "jobType": kind, "status": status,
            "startTimeUtc": created, "createdTimeUtc": created,
            "createdDateTimeUtc": created, "lastUpdatedDateTimeUtc": created,
            "outcome": {"deviceMethodResponse": {"status": 200, "payload": {}}}
        })
    };
    vec![
        job(
            "myDeviceId",
            "myJobId",
            "scheduleUpdateTwin",
            "completed",
            "2016-09-29T18:18:56Z",
        ),
        job(
            "myDeviceId",
            "job2",
            "scheduleDeviceMethod",
            "completed",
            "2016-10-01T00:00:00Z",
        ),
        job(
            "otherDevice",
            "myJobId",
            "scheduleUpdateTwin",
            "failed",
            "2016-09-29T18:18:56Z",
        ),
        job(
            "myDeviceId",
            "oldJob",
            "scheduleUpdateTwin",
            "completed",
            "2016-08-01T00:00:00Z",
        ),
    ]
}

/// A short name for a whole document: `deviceId`, then `/moduleId` and `:jobId` if present.
fn summary(doc: &Value) -> Value {
    let text = |key: &str| doc.get(key).and_then(Value::as_str);
    let mut name = text("deviceId").unwrap_or("?").to_owned();
    if let Some(module) = text("moduleId") {
        name = format!("{name}/{module}");
    }
    if let Some(job) = text("jobId") {
        name = format!("{name}:{job}");
    }
    Value::String(name)
}

/// Runs `query` over `docs` and compares the output with `expected`. `SELECT *` items are
/// compared by their summary (see `summary`), other items exactly.
#[track_caller]
pub(crate) fn check(query: &str, docs: &[Value], expected: Value) {
    let parsed = parse(query).unwrap_or_else(|error| panic!("{query}: {error}"));
    let results = parsed.execute(docs);
    let actual: Vec<Value> = if parsed.is_select_star() {
        results.iter().map(summary).collect()
    } else {
        results
    };
    let Value::Array(expected) = expected else {
        panic!("{query}: expected results must be a JSON array, not {expected}");
    };
    assert_eq!(actual, expected, "{query}");
}

/// Asserts that `query` is rejected at the character offset of the first occurrence of
/// `at` (`END` for the end of the text) with a message containing `message`.
#[track_caller]
pub(crate) fn check_error(query: &str, at: &str, message: &str) {
    let error = match parse(query) {
        Ok(parsed) => panic!("{query}: accepted as {parsed:?}"),
        Err(error) => error,
    };
    assert_error(query, &error, at, message);
}

/// Like `check_error` for a bare condition.
#[track_caller]
pub(crate) fn check_condition_error(condition: &str, at: &str, message: &str) {
    let error = match twinhub_query::parse_condition(condition) {
        Ok(parsed) => panic!("{condition}: accepted as {parsed:?}"),
        Err(error) => error,
    };
    assert_error(condition, &error, at, message);
}

/// The `at` marker for errors at the end of the text.
pub(crate) const END: &str = "<end>";

#[track_caller]
fn assert_error(text: &str, error: &QueryError, at: &str, message: &str) {
    let byte = if at == END {
        text.len()
    } else {
        text.find(at)
            .unwrap_or_else(|| panic!("marker {at:?} not in {text:?}"))
    };
    let position = text[..byte].chars().count();
    assert_eq!(error.position, position, "{text}: {error}");
    assert!(
        error.message.contains(message),
        "{text}: {error} lacks {message:?}"
    );
    let prefix = format!("Invalid query at position {position}: ");
    assert!(error.message.starts_with(&prefix), "{error}");
}
