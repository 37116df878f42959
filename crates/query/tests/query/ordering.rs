//! ORDER BY (our extension) and TOP.

use std::cmp::Ordering;

use serde_json::json;
use twinhub_query::parse;

use crate::fixtures::{check, devices};

const FREQUENCY: &str = "properties.reported.telemetryConfig.sendFrequencyInSecs";

#[test]
fn undefined_sorts_first_ascending_and_last_descending() {
    check(
        &format!("SELECT deviceId FROM devices ORDER BY {FREQUENCY}"),
        &devices(),
        json!([
            {"deviceId": "edge1"}, {"deviceId": "device2"}, {"deviceId": "AZ3166Device"},
            {"deviceId": "device5"}, {"deviceId": "device1"}
        ]),
    );
    check(
        &format!("SELECT * FROM devices ORDER BY {FREQUENCY} DESC"),
        &devices(),
        json!(["device1", "device5", "AZ3166Device", "device2", "edge1"]),
    );
    check(
        &format!("SELECT * FROM devices ORDER BY {FREQUENCY} ASC"),
        &devices(),
        json!(["edge1", "device2", "AZ3166Device", "device5", "device1"]),
    );
}

#[test]
fn several_keys_and_expressions() {
    check(
        "SELECT * FROM devices ORDER BY status DESC, deviceId",
        &devices(),
        json!(["AZ3166Device", "device1", "device2", "device5", "edge1"]),
    );
    check(
        "SELECT * FROM devices WHERE version > 2 ORDER BY -version",
        &devices(),
        json!(["device1", "device5", "AZ3166Device", "device2"]),
    );
    check(
        "SELECT * FROM devices ORDER BY capabilities.iotEdge, LENGTH(deviceId) DESC",
        &devices(),
        json!(["AZ3166Device", "device1", "device5", "device2", "edge1"]),
    );
}

#[test]
fn top_cuts_after_ordering() {
    check(
        &format!("SELECT TOP 2 deviceId FROM devices ORDER BY {FREQUENCY} DESC"),
        &devices(),
        json!([{"deviceId": "device1"}, {"deviceId": "device5"}]),
    );
    check(
        "SELECT TOP 2 * FROM devices",
        &devices(),
        json!(["device1", "device2"]),
    );
    check("SELECT TOP 0 * FROM devices", &devices(), json!([]));
    check(
        "SELECT TOP 100 * FROM devices WHERE status = 'disabled'",
        &devices(),
        json!(["edge1"]),
    );
}

#[test]
fn compare_orders_documents_for_paging_callers() {
    let fleet = devices();
    let query = parse("SELECT * FROM devices ORDER BY tags.location.region DESC").expect("valid");
    assert_eq!(query.compare(&fleet[0], &fleet[2]), Ordering::Less);
    assert_eq!(query.compare(&fleet[0], &fleet[1]), Ordering::Equal);
    assert_eq!(query.compare(&fleet[3], &fleet[0]), Ordering::Greater);
    let unordered = parse("SELECT * FROM devices").expect("valid");
    assert_eq!(unordered.compare(&fleet[0], &fleet[3]), Ordering::Equal);
}

#[test]
fn values_of_different_types_sort_by_type() {
    let docs = vec![
        json!({"id": 1, "v": "b"}),
        json!({"id": 2, "v": {"x": 1}}),
        json!({"id": 3, "v": 10}),
        json!({"id": 4}),
        json!({"id": 5, "v": null}),
        json!({"id": 6, "v": [1]}),
        json!({"id": 7, "v": true}),
        json!({"id": 8, "v": 2.5}),
        json!({"id": 9, "v": "a"}),
        json!({"id": 10, "v": false}),
    ];
    let ids: Vec<_> = parse("SELECT id FROM devices ORDER BY v")
        .expect("valid")
        .execute(&docs)
        .into_iter()
        .map(|row| row["id"].clone())
        .collect();
    assert_eq!(ids, [4, 5, 10, 7, 8, 3, 9, 1, 6, 2]);
}
