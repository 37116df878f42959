//! The device side of IoT Hub's MQTT grammar: the topics a device publishes to, the parsing of the
//! topics the hub publishes on, and the CONNECT username. The hub-side builders and the property
//! bag come from `twinhub-protocol`; these are their device-side mirrors.

use twinhub_protocol::PropertyBag;

/// The api-version this SDK speaks (the one Azure's MQTT documentation uses).
pub(crate) const API_VERSION: &str = "2021-04-12";
/// Filter for answers to twin GET and reported PATCH requests.
pub(crate) const TWIN_RESPONSES: &str = "$iothub/twin/res/#";
/// Filter for desired-property notifications.
pub(crate) const DESIRED_PATCHES: &str = "$iothub/twin/PATCH/properties/desired/#";
/// Filter for direct-method requests.
pub(crate) const METHOD_REQUESTS: &str = "$iothub/methods/POST/#";

/// What the device reports as `DeviceClientType` (informational for the hub).
const CLIENT_TYPE: &str = concat!("twinhub-device/", env!("CARGO_PKG_VERSION"));

/// `{host}/{clientId}/?api-version=...&DeviceClientType=...[&model-id=...]`; query values are
/// percent-encoded, host and client id are not (as every Azure SDK sends them).
pub(crate) fn username(host_name: &str, client_id: &str, model_id: Option<&str>) -> String {
    let mut query = vec![
        ("api-version".to_owned(), Some(API_VERSION.to_owned())),
        ("DeviceClientType".to_owned(), Some(CLIENT_TYPE.to_owned())),
    ];
    if let Some(model_id) = model_id {
        query.push(("model-id".to_owned(), Some(model_id.to_owned())));
    }
    format!("{host_name}/{client_id}/?{}", PropertyBag(query).encode())
}

/// `{deviceId}` or `{deviceId}/{moduleId}`.
pub(crate) fn client_id(device_id: &str, module_id: Option<&str>) -> String {
    match module_id {
        Some(module_id) => format!("{device_id}/{module_id}"),
        None => device_id.to_owned(),
    }
}

/// The SAS resource a device or module token is scoped to: `{host}/devices/{d}[/modules/{m}]`.
pub(crate) fn sas_resource(host_name: &str, device_id: &str, module_id: Option<&str>) -> String {
    match module_id {
        Some(module_id) => format!("{host_name}/devices/{device_id}/modules/{module_id}"),
        None => format!("{host_name}/devices/{device_id}"),
    }
}

/// `$iothub/twin/GET/?$rid={rid}`.
pub(crate) fn twin_get_topic(rid: &str) -> String {
    format!("$iothub/twin/GET/?$rid={rid}")
}

/// `$iothub/twin/PATCH/properties/reported/?$rid={rid}`.
pub(crate) fn reported_patch_topic(rid: &str) -> String {
    format!("$iothub/twin/PATCH/properties/reported/?$rid={rid}")
}

/// `$iothub/methods/res/{status}/?$rid={rid}`.
pub(crate) fn method_response_topic(status: i32, rid: &str) -> String {
    format!("$iothub/methods/res/{status}/?$rid={rid}")
}

/// `devices/{d}[/modules/{m}]/messages/events/{bag}`.
pub(crate) fn telemetry_topic(
    device_id: &str,
    module_id: Option<&str>,
    properties: &[(&str, &str)],
) -> String {
    let bag = PropertyBag(
        properties
            .iter()
            .map(|(key, value)| ((*key).to_owned(), Some((*value).to_owned())))
            .collect(),
    );
    match module_id {
        Some(module_id) => format!(
            "devices/{device_id}/modules/{module_id}/messages/events/{}",
            bag.encode()
        ),
        None => format!("devices/{device_id}/messages/events/{}", bag.encode()),
    }
}

/// A topic the hub published on, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HubPublish {
    /// `$iothub/twin/res/{status}/?$rid={rid}[&$version={n}]`
    TwinResponse {
        status: u16,
        rid: String,
        version: Option<i64>,
    },
    /// `$iothub/twin/PATCH/properties/desired/?$version={n}` (the version is also in the body).
    DesiredPatch { version: Option<i64> },
    /// `$iothub/methods/POST/{name}/?$rid={rid}`
    MethodRequest { name: String, rid: String },
}

/// Classifies a topic the hub published on; `None` for topics this SDK does not handle or that
/// are malformed. `$rid` is kept verbatim so that it is echoed exactly.
pub(crate) fn parse_hub_publish(topic: &str) -> Option<HubPublish> {
    let rest = topic.strip_prefix("$iothub/")?;
    let (path, query) = rest.split_once("/?").unwrap_or((rest, ""));
    let item = |name: &str| {
        query
            .split('&')
            .find_map(|item| item.strip_prefix(name)?.strip_prefix('='))
    };
    let segments: Vec<&str> = path.split('/').collect();
    match segments.as_slice() {
        ["twin", "res", status] => Some(HubPublish::TwinResponse {
            status: status.parse().ok()?,
            rid: item("$rid").filter(|rid| !rid.is_empty())?.to_owned(),
            version: item("$version").and_then(|v| v.parse().ok()),
        }),
        ["twin", "PATCH", "properties", "desired"] => Some(HubPublish::DesiredPatch {
            version: item("$version").and_then(|v| v.parse().ok()),
        }),
        ["methods", "POST", name] if !name.is_empty() => Some(HubPublish::MethodRequest {
            name: (*name).to_owned(),
            rid: item("$rid").filter(|rid| !rid.is_empty())?.to_owned(),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use twinhub_protocol::topics::{
        DevicePublish, desired_patch_topic, method_request_topic, parse_device_publish,
        twin_response_topic,
    };

    use super::*;

    #[test]
    fn username_is_what_the_hub_parses() {
        let username = username("h.azure-devices.net", "d1/m1", Some("dtmi:com:example;1"));
        assert!(username.starts_with("h.azure-devices.net/d1/m1/?api-version=2021-04-12&"));
        let parsed = twinhub_protocol::parse_username(&username).expect("parses");
        assert_eq!(parsed.host, "h.azure-devices.net");
        assert_eq!(parsed.device_id, "d1");
        assert_eq!(parsed.module_id.as_deref(), Some("m1"));
        assert_eq!(parsed.api_version.as_deref(), Some(API_VERSION));
        assert_eq!(parsed.model_id.as_deref(), Some("dtmi:com:example;1"));
        assert_eq!(parsed.client_type.as_deref(), Some(CLIENT_TYPE));
    }

    #[test]
    fn device_topics_are_what_the_hub_accepts() {
        assert_eq!(
            parse_device_publish(&twin_get_topic("7"), "d", None),
            Ok(DevicePublish::TwinGet { rid: "7" })
        );
        assert_eq!(
            parse_device_publish(&reported_patch_topic("8"), "d", None),
            Ok(DevicePublish::TwinPatchReported { rid: "8" })
        );
        assert_eq!(
            parse_device_publish(&method_response_topic(-3, "a1"), "d", None),
            Ok(DevicePublish::MethodResponse {
                status: -3,
                rid: "a1"
            })
        );
        let topic = telemetry_topic(
            "d",
            Some("m"),
            &[("$.ct", "application/json"), ("k", "a b")],
        );
        assert_eq!(
            topic,
            "devices/d/modules/m/messages/events/%24.ct=application%2Fjson&k=a%20b"
        );
        match parse_device_publish(&topic, "d", Some("m")) {
            Ok(DevicePublish::Telemetry { properties, .. }) => {
                assert_eq!(properties.get("$.ct"), Some("application/json"));
                assert_eq!(properties.get("k"), Some("a b"));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            telemetry_topic("d", None, &[]),
            "devices/d/messages/events/"
        );
    }

    #[test]
    fn sas_resources() {
        assert_eq!(sas_resource("h", "d", None), "h/devices/d");
        assert_eq!(sas_resource("h", "d", Some("m")), "h/devices/d/modules/m");
        assert_eq!(client_id("d", Some("m")), "d/m");
    }

    #[test]
    fn foreign_and_malformed_topics_are_ignored() {
        for topic in [
            "devices/d/messages/devicebound/",
            "$iothub/twin/res/abc/?$rid=1",
            "$iothub/twin/res/200/?$version=3",
            "$iothub/methods/POST//?$rid=1",
            "$iothub/methods/POST/m/?$rid=",
            "$iothub/twin/GET/?$rid=1",
            "",
        ] {
            assert_eq!(parse_hub_publish(topic), None, "{topic}");
        }
    }

    proptest! {
        #[test]
        fn twin_responses_round_trip(status in 100u16..600, rid in "[A-Za-z0-9-]{1,36}", version in proptest::option::of(0i64..i64::MAX)) {
            prop_assert_eq!(
                parse_hub_publish(&twin_response_topic(status, &rid, version)),
                Some(HubPublish::TwinResponse { status, rid, version })
            );
        }

        #[test]
        fn desired_patches_round_trip(version in 0i64..i64::MAX) {
            prop_assert_eq!(
                parse_hub_publish(&desired_patch_topic(version)),
                Some(HubPublish::DesiredPatch { version: Some(version) })
            );
        }

        #[test]
        fn method_requests_round_trip(name in "[A-Za-z0-9_.-]{1,40}", rid in "[0-9a-f]{1,16}") {
            prop_assert_eq!(
                parse_hub_publish(&method_request_topic(&name, &rid)),
                Some(HubPublish::MethodRequest { name, rid })
            );
        }

        #[test]
        fn parsing_never_panics(topic in "\\PC*") {
            let _ = parse_hub_publish(&topic);
        }
    }
}
