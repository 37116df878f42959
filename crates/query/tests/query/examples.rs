//! Every documented IoT Hub query example, on the fixture fleet.

use serde_json::json;
use twinhub_query::{Collection, parse, parse_condition};

use crate::fixtures::{check, device_jobs, devices, modules};

#[test]
fn select_star_returns_whole_documents_in_order() {
    let fleet = devices();
    check(
        "SELECT * FROM devices",
        &fleet,
        json!(["device1", "device2", "AZ3166Device", "edge1", "device5"]),
    );
    let query = parse("SELECT * FROM devices").expect("valid");
    assert_eq!(query.execute(&fleet), fleet);
}

#[test]
fn count_all_devices() {
    check(
        "SELECT COUNT() as totalNumberOfDevices FROM devices",
        &devices(),
        json!([{"totalNumberOfDevices": 5}]),
    );
}

#[test]
fn tag_and_reported_conditions() {
    check(
        "SELECT * FROM devices WHERE tags.location.region = 'US'",
        &devices(),
        json!(["device1", "device2", "device5"]),
    );
    check(
        "SELECT * FROM devices WHERE tags.location.region = 'US' AND properties.reported.telemetryConfig.sendFrequencyInSecs >= 60",
        &devices(),
        json!(["device1", "device5"]),
    );
}

#[test]
fn in_list_and_is_defined() {
    check(
        "SELECT * FROM devices WHERE properties.reported.connectivity IN ['wired', 'wifi']",
        &devices(),
        json!(["device1", "device2"]),
    );
    // A property set to null is defined.
    check(
        "SELECT * FROM devices WHERE is_defined(properties.reported.connectivity)",
        &devices(),
        json!(["device1", "device2", "AZ3166Device", "edge1"]),
    );
}

#[test]
fn group_by_reported_status() {
    check(
        "SELECT properties.reported.telemetryConfig.status AS status, COUNT() AS numberOfDevices FROM devices GROUP BY properties.reported.telemetryConfig.status",
        &devices(),
        json!([
            {"numberOfDevices": 1},
            {"status": "Pending", "numberOfDevices": 1},
            {"status": "Success", "numberOfDevices": 3}
        ]),
    );
}

#[test]
fn system_properties_resolve_case_insensitively_with_the_documents_spelling() {
    check(
        "SELECT DeviceId, LastActivityTime FROM devices WHERE status = 'enabled' AND connectionState = 'Disconnected'",
        &devices(),
        json!([
            {"deviceId": "device1", "lastActivityTime": "2024-01-02T03:04:05.000Z"},
            {"deviceId": "AZ3166Device", "lastActivityTime": "2021-05-07T00:50:38.0543092Z"}
        ]),
    );
}

#[test]
fn module_query() {
    check(
        "SELECT * FROM devices.modules WHERE properties.reported.status = 'scanning' AND deviceId IN ['device1', 'device2']",
        &modules(),
        json!(["device1/scanner"]),
    );
    check(
        "SELECT deviceId, devices.modules.moduleId FROM devices.modules WHERE devices.modules.properties.reported.status = 'scanning'",
        &modules(),
        json!([
            {"deviceId": "device1", "moduleId": "scanner"},
            {"deviceId": "AZ3166Device", "moduleId": "scanner"}
        ]),
    );
}

#[test]
fn device_job_queries() {
    check(
        "SELECT * FROM devices.jobs WHERE devices.jobs.deviceId = 'myDeviceId' AND devices.jobs.jobType = 'scheduleUpdateTwin' AND devices.jobs.status = 'completed' AND devices.jobs.createdTimeUtc > '2016-09-01'",
        &device_jobs(),
        json!(["myDeviceId:myJobId"]),
    );
    check(
        "SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'myJobId'",
        &device_jobs(),
        json!(["myDeviceId:myJobId", "otherDevice:myJobId"]),
    );
    let query = parse("select * from Devices.Jobs where jobId = 'job2'").expect("valid");
    assert_eq!(query.collection(), Collection::DevicesJobs);
    assert_eq!(query.execute(&device_jobs()).len(), 1);
}

#[test]
fn edge_capability_and_configuration_status() {
    check(
        "SELECT * FROM devices WHERE capabilities.iotEdge = true",
        &devices(),
        json!(["device2", "edge1"]),
    );
    check(
        "SELECT deviceId FROM devices WHERE configurations.[[cfg-1]].status='Applied'",
        &devices(),
        json!([{"deviceId": "device1"}]),
    );
    check(
        "select deviceId from devices where configurations.[[cfg-1]].status = 'Targeted' AND properties.reported.connectivity = 'wifi'",
        &devices(),
        json!([{"deviceId": "device2"}]),
    );
}

#[test]
fn job_and_configuration_conditions() {
    let fleet = devices();
    let matching = |condition: &str| -> Vec<&str> {
        let parsed = parse_condition(condition).unwrap_or_else(|e| panic!("{condition}: {e}"));
        fleet
            .iter()
            .filter(|doc| parsed.matches(doc))
            .filter_map(|doc| doc["deviceId"].as_str())
            .collect()
    };
    assert_eq!(matching("*").len(), 5);
    assert!(parse_condition(" * ").expect("valid").is_everything());
    assert!(
        !parse_condition("deviceId = 'x'")
            .expect("valid")
            .is_everything()
    );
    assert_eq!(matching("deviceId = 'device2'"), ["device2"]);
    assert_eq!(
        matching("deviceId IN ['device1', 'edge1']"),
        ["device1", "edge1"]
    );
    assert_eq!(matching("tags.location.region = 'EU'"), ["AZ3166Device"]);
    assert_eq!(
        matching("tags.location.region = 'US' AND properties.reported.connectivity = 'wifi'"),
        ["device2"]
    );
}

#[test]
fn metadata_and_versions() {
    check(
        "SELECT deviceId FROM devices WHERE properties.reported.[[$metadata]].connectivity.[[$lastUpdated]] >= '2024'",
        &devices(),
        json!([{"deviceId": "device1"}]),
    );
    check(
        "SELECT deviceId, properties.desired.$version FROM devices WHERE properties.desired.$version > 3",
        &devices(),
        json!([{"deviceId": "device1", "$version": 4}, {"deviceId": "device5", "$version": 6}]),
    );
    check(
        "SELECT deviceId FROM devices WHERE properties.reported.$metadata.$lastUpdated < '2022'",
        &devices(),
        json!([{"deviceId": "AZ3166Device"}]),
    );
}

#[test]
fn escaped_names_and_reserved_words() {
    check(
        "SELECT deviceId FROM devices WHERE tags.[[group]] = 'alpha'",
        &devices(),
        json!([{"deviceId": "device1"}]),
    );
    check(
        "SELECT [[deviceId]] AS [[the id]], tags.group FROM devices WHERE tags.group = 'beta'",
        &devices(),
        json!([{"the id": "device2", "group": "beta"}]),
    );
}

#[test]
fn projections_leave_out_undefined_values_and_keep_objects() {
    check(
        "SELECT deviceId, tags.location AS place, properties.reported.connectivity FROM devices WHERE status = 'disabled' OR deviceId = 'device5'",
        &devices(),
        json!([
            {"deviceId": "edge1", "connectivity": null},
            {"deviceId": "device5", "place": {"region": "US"}}
        ]),
    );
}

#[test]
fn keywords_and_functions_are_case_insensitive() {
    check(
        "sElEcT tOp 1 * FrOm DEVICES wHeRe NOT Is_Defined(Tags.location) oR DeviceID = 'device5' order BY deviceid DESC",
        &devices(),
        json!(["edge1"]),
    );
    check(
        "SELECT * FROM devices WHERE startswith(deviceId, 'dev') AND Ends_With(deviceId, '1')",
        &devices(),
        json!(["device1"]),
    );
}

#[test]
fn accessors_describe_the_query() {
    let star = parse("SELECT TOP 3 * FROM devices ORDER BY deviceId").expect("valid");
    assert_eq!(star.collection(), Collection::Devices);
    assert_eq!(star.top(), Some(3));
    assert!(star.is_select_star() && star.has_order_by());
    assert!(!star.is_projection() && !star.is_aggregate());
    assert!(star.condition().is_everything());

    let projection =
        parse("SELECT deviceId FROM devices.modules WHERE status = 'x'").expect("valid");
    assert_eq!(projection.collection(), Collection::DevicesModules);
    assert!(projection.is_projection() && !projection.is_select_star());
    assert!(!projection.condition().is_everything());
    assert_eq!(projection.top(), None);

    let grouped = parse("SELECT status FROM devices GROUP BY status").expect("valid");
    assert!(grouped.is_aggregate() && !grouped.is_projection());
    let counted = parse("SELECT COUNT() FROM devices").expect("valid");
    assert!(counted.is_aggregate());
}

#[test]
fn compiled_forms_are_shareable() {
    fn shareable<T: Clone + Send + Sync + 'static>() {}
    shareable::<twinhub_query::Query>();
    shareable::<twinhub_query::Condition>();
    shareable::<twinhub_query::QueryError>();
}
