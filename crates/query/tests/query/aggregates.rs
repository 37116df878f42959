//! GROUP BY and the aggregate functions.

use serde_json::{Value, json};
use twinhub_query::parse;

use crate::fixtures::{check, devices, modules};

const FREQUENCY: &str = "properties.reported.telemetryConfig.sendFrequencyInSecs";

#[test]
fn every_aggregate_per_group() {
    check(
        &format!(
            "SELECT tags.location.region AS region, COUNT() AS n, SUM({FREQUENCY}) AS total, \
             AVG({FREQUENCY}) AS mean, MIN({FREQUENCY}) AS lo, MAX({FREQUENCY}) AS hi \
             FROM devices GROUP BY tags.location.region"
        ),
        &devices(),
        json!([
            {"n": 1, "total": 0},
            {"region": "EU", "n": 1, "total": 60, "mean": 60, "lo": 60, "hi": 60},
            {"region": "US", "n": 3, "total": 450, "mean": 150, "lo": 30, "hi": 300}
        ]),
    );
}

#[test]
fn several_group_keys() {
    check(
        "SELECT status, connectionState, COUNT() AS n FROM devices GROUP BY status, connectionState",
        &devices(),
        json!([
            {"status": "disabled", "connectionState": "Disconnected", "n": 1},
            {"status": "enabled", "connectionState": "Connected", "n": 2},
            {"status": "enabled", "connectionState": "Disconnected", "n": 2}
        ]),
    );
    check(
        "SELECT COUNT() AS n FROM devices GROUP BY status",
        &devices(),
        json!([{"n": 1}, {"n": 4}]),
    );
}

#[test]
fn unaliased_columns_are_named_by_position_or_last_segment() {
    check(
        "SELECT COUNT(), MAX(deviceId), MIN(version) FROM devices",
        &devices(),
        json!([{"$1": 5, "$2": "edge1", "$3": 2}]),
    );
    check(
        "SELECT Status, COUNT() FROM devices GROUP BY STATUS",
        &devices(),
        json!([{"status": "disabled", "$2": 1}, {"status": "enabled", "$2": 4}]),
    );
    check(
        "SELECT properties.reported.status, COUNT() AS n FROM devices.modules GROUP BY properties.reported.status",
        &modules(),
        json!([{"status": "idle", "n": 1}, {"status": "scanning", "n": 2}]),
    );
}

#[test]
fn mixed_values_numbers_before_strings() {
    let docs: Vec<Value> = [
        json!(3),
        json!("a"),
        json!(1.5),
        json!(true),
        json!("B"),
        json!(null),
    ]
    .into_iter()
    .map(|x| json!({ "x": x }))
    .chain([json!({})])
    .collect();
    check(
        "SELECT COUNT() AS n, SUM(x) AS s, AVG(x) AS a, MIN(x) AS lo, MAX(x) AS hi FROM devices",
        &docs,
        json!([{"n": 7, "s": 4.5, "a": 2.25, "lo": 1.5, "hi": "a"}]),
    );
    let strings = [json!({"x": "b"}), json!({"x": "a"})];
    check(
        "SELECT MIN(x) AS lo, MAX(x) AS hi, SUM(x) AS s FROM devices",
        &strings,
        json!([{"lo": "a", "hi": "b", "s": 0}]),
    );
}

#[test]
fn empty_input() {
    check(
        "SELECT COUNT() AS n, SUM(x) AS s, AVG(x) AS a, MIN(x) AS lo FROM devices",
        &[],
        json!([{"n": 0, "s": 0}]),
    );
    check(
        "SELECT status, COUNT() AS n FROM devices GROUP BY status",
        &[],
        json!([]),
    );
}

#[test]
fn where_filters_before_grouping() {
    check(
        "SELECT status, COUNT() AS n FROM devices WHERE capabilities.iotEdge = false GROUP BY status",
        &devices(),
        json!([{"status": "enabled", "n": 3}]),
    );
}

#[test]
fn order_by_and_top_apply_to_rows() {
    check(
        "SELECT status, COUNT() AS n FROM devices GROUP BY status ORDER BY n DESC",
        &devices(),
        json!([{"status": "enabled", "n": 4}, {"status": "disabled", "n": 1}]),
    );
    check(
        "SELECT TOP 1 status, COUNT() AS n FROM devices GROUP BY status ORDER BY n DESC",
        &devices(),
        json!([{"status": "enabled", "n": 4}]),
    );
}

#[test]
fn numbers_group_by_value_across_representations() {
    let docs = [
        json!({"v": 1}),
        json!({"v": 1.0}),
        json!({"v": 2}),
        json!({"v": "1"}),
    ];
    check(
        "SELECT v, COUNT() AS n FROM devices GROUP BY v",
        &docs,
        json!([{"v": 1, "n": 2}, {"v": 2, "n": 1}, {"v": "1", "n": 1}]),
    );
}

#[test]
fn sums_stay_exact_and_survive_overflow() {
    let docs = [json!({"v": i64::MAX}), json!({"v": 1})];
    let rows = parse("SELECT SUM(v) AS s FROM devices")
        .expect("valid")
        .execute(&docs);
    assert_eq!(rows, [json!({"s": 9_223_372_036_854_775_808.0})]);
    let exact = [json!({"v": 9_007_199_254_740_993_i64}), json!({"v": 0})];
    let rows = parse("SELECT SUM(v) AS s FROM devices")
        .expect("valid")
        .execute(&exact);
    assert_eq!(rows, [json!({"s": 9_007_199_254_740_993_i64})]);
}

#[test]
fn project_and_aggregate_entry_points() {
    let fleet = devices();
    let grouped = parse("SELECT status, COUNT() AS n FROM devices GROUP BY status").expect("valid");
    assert_eq!(
        grouped.project(&fleet[0]),
        json!({"status": "enabled", "n": 1})
    );
    assert_eq!(grouped.aggregate(&fleet).len(), 2);
    let plain = parse("SELECT deviceId FROM devices").expect("valid");
    assert!(plain.aggregate(&fleet).is_empty());
    assert_eq!(plain.project(&fleet[3]), json!({"deviceId": "edge1"}));
}
