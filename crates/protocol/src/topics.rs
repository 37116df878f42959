//! Device MQTT topics: what a device may publish and subscribe to, and what the hub publishes.
//!
//! Device and module ids appear unencoded in topics (they never contain `/`). Hub topics keep the
//! exact `.../{segment}/?key=value` shape because SDKs split on `/` and on `=`.

use crate::property_bag::PropertyBag;

/// Why a device PUBLISH topic was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Not a topic a device may publish to.
    #[error("unknown topic")]
    Unknown,
    /// A device topic naming another device or module than the connected identity.
    #[error("topic belongs to another identity")]
    NotOwnTopic,
    /// A known topic with a broken shape or query.
    #[error("malformed topic: {0}")]
    Malformed(&'static str),
}

/// A topic a device published to, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DevicePublish<'a> {
    /// Device-to-cloud message: `devices/{d}/messages/events/[bag]` or
    /// `devices/{d}/modules/{m}/messages/events/[bag]`.
    Telemetry {
        /// The module that sent it, for module identities.
        module_id: Option<&'a str>,
        /// The message properties from the topic.
        properties: PropertyBag,
    },
    /// Twin read request: `$iothub/twin/GET/?$rid={rid}`.
    TwinGet {
        /// The request id, verbatim, to echo in the response.
        rid: &'a str,
    },
    /// Reported-properties patch: `$iothub/twin/PATCH/properties/reported/?$rid={rid}`.
    TwinPatchReported {
        /// The request id, verbatim, to echo in the response.
        rid: &'a str,
    },
    /// Direct-method answer: `$iothub/methods/res/{status}/?$rid={rid}`.
    MethodResponse {
        /// The status the device chose (any integer).
        status: i32,
        /// The request id the hub sent with the method request, verbatim.
        rid: &'a str,
    },
}

/// Parses a topic a device published to. The device/module in the topic must be the connected
/// identity's own; otherwise [`TopicError::NotOwnTopic`].
///
/// `$rid` is returned verbatim (not percent-decoded) so the response echoes exactly what was sent;
/// query items other than `$rid` are tolerated and ignored. A telemetry topic may omit the `/`
/// after `events` when it carries no properties.
pub fn parse_device_publish<'a>(
    topic: &'a str,
    device_id: &str,
    module_id: Option<&str>,
) -> Result<DevicePublish<'a>, TopicError> {
    if let Some(rest) = topic.strip_prefix("$iothub/") {
        parse_iothub_publish(rest)
    } else if let Some(rest) = topic.strip_prefix("devices/") {
        parse_telemetry(rest, device_id, module_id)
    } else {
        Err(TopicError::Unknown)
    }
}

fn parse_iothub_publish(rest: &str) -> Result<DevicePublish<'_>, TopicError> {
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    };
    let (path, slash_before_query) = match path.strip_suffix('/') {
        Some(path) => (path, true),
        None => (path, false),
    };
    let segments: Vec<&str> = path.split('/').collect();
    let kind = match segments.as_slice() {
        ["twin", "GET"] => IotHubTopic::TwinGet,
        ["twin", "PATCH", "properties", "reported"] => IotHubTopic::TwinPatchReported,
        ["methods", "res", status] => IotHubTopic::MethodResponse(parse_status(status)?),
        _ => return Err(TopicError::Unknown),
    };
    if !slash_before_query {
        return Err(TopicError::Malformed("'/' required before the query"));
    }
    let rid = query
        .and_then(request_id)
        .ok_or(TopicError::Malformed("missing or empty $rid"))?;
    Ok(match kind {
        IotHubTopic::TwinGet => DevicePublish::TwinGet { rid },
        IotHubTopic::TwinPatchReported => DevicePublish::TwinPatchReported { rid },
        IotHubTopic::MethodResponse(status) => DevicePublish::MethodResponse { status, rid },
    })
}

enum IotHubTopic {
    TwinGet,
    TwinPatchReported,
    MethodResponse(i32),
}

/// Accepts an optional `-` and ASCII digits only (no `+`, no spaces), within `i32`.
fn parse_status(s: &str) -> Result<i32, TopicError> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TopicError::Malformed(
            "method response status is not an integer",
        ));
    }
    s.parse()
        .map_err(|_| TopicError::Malformed("method response status is out of range"))
}

/// The first non-empty `$rid` value of a query, verbatim.
fn request_id(query: &str) -> Option<&str> {
    query
        .split('&')
        .find_map(|item| item.strip_prefix("$rid="))
        .filter(|rid| !rid.is_empty())
}

fn parse_telemetry<'a>(
    rest: &'a str,
    device_id: &str,
    module_id: Option<&str>,
) -> Result<DevicePublish<'a>, TopicError> {
    let (topic_device, rest) = rest.split_once('/').ok_or(TopicError::Unknown)?;
    let (topic_module, rest) = match rest.strip_prefix("modules/") {
        Some(rest) => {
            let (module, rest) = rest.split_once('/').ok_or(TopicError::Unknown)?;
            (Some(module), rest)
        }
        None => (None, rest),
    };
    let bag = match rest.strip_prefix("messages/events") {
        Some("") => "",
        Some(tail) => tail.strip_prefix('/').ok_or(TopicError::Unknown)?,
        None => return Err(TopicError::Unknown),
    };
    if topic_device != device_id || topic_module != module_id {
        return Err(TopicError::NotOwnTopic);
    }
    Ok(DevicePublish::Telemetry {
        module_id: topic_module,
        properties: PropertyBag::parse(bag)?,
    })
}

/// A family of hub-to-device messages a device subscribed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subscription {
    /// `$iothub/twin/res/#`
    TwinResponses,
    /// `$iothub/twin/PATCH/properties/desired/#`
    DesiredPatches,
    /// `$iothub/methods/POST/#`
    Methods,
    /// `devices/{d}/messages/devicebound/#` (devices only)
    CloudToDevice,
    /// `devices/{d}/modules/{m}/inputs/#` or `devices/{d}/modules/{m}/#` (modules only)
    ModuleInputs,
}

/// Classifies a SUBSCRIBE filter: "$iothub/twin/res/#", "$iothub/twin/PATCH/properties/desired/#",
/// "$iothub/methods/POST/#", "devices/{d}/messages/devicebound/#" (devices only),
/// "devices/{d}/modules/{m}/inputs/#" or "devices/{d}/modules/{m}/#" (modules only).
/// Anything else (other identities, other wildcards) → None (the hub will answer SUBACK 0x80).
pub fn parse_subscription(
    filter: &str,
    device_id: &str,
    module_id: Option<&str>,
) -> Option<Subscription> {
    match filter {
        "$iothub/twin/res/#" => return Some(Subscription::TwinResponses),
        "$iothub/twin/PATCH/properties/desired/#" => return Some(Subscription::DesiredPatches),
        "$iothub/methods/POST/#" => return Some(Subscription::Methods),
        _ => {}
    }
    let rest = filter
        .strip_prefix("devices/")?
        .strip_prefix(device_id)?
        .strip_prefix('/')?;
    match module_id {
        None => (rest == "messages/devicebound/#").then_some(Subscription::CloudToDevice),
        Some(module_id) => {
            let rest = rest
                .strip_prefix("modules/")?
                .strip_prefix(module_id)?
                .strip_prefix('/')?;
            matches!(rest, "inputs/#" | "#").then_some(Subscription::ModuleInputs)
        }
    }
}

/// `$iothub/twin/res/{status}/?$rid={rid}[&$version={version}]`.
pub fn twin_response_topic(status: u16, rid: &str, version: Option<i64>) -> String {
    match version {
        Some(version) => format!("$iothub/twin/res/{status}/?$rid={rid}&$version={version}"),
        None => format!("$iothub/twin/res/{status}/?$rid={rid}"),
    }
}

/// `$iothub/twin/PATCH/properties/desired/?$version={version}`.
pub fn desired_patch_topic(version: i64) -> String {
    format!("$iothub/twin/PATCH/properties/desired/?$version={version}")
}

/// `$iothub/methods/POST/{method_name}/?$rid={rid}`; the caller checks the name with
/// [`is_valid_method_name`].
pub fn method_request_topic(method_name: &str, rid: &str) -> String {
    format!("$iothub/methods/POST/{method_name}/?$rid={rid}")
}

/// `devices/{device_id}/messages/devicebound/[bag]`.
pub fn c2d_topic(device_id: &str, properties: &PropertyBag) -> String {
    format!(
        "devices/{device_id}/messages/devicebound/{}",
        properties.encode()
    )
}

/// `devices/{device_id}/modules/{module_id}/inputs/{input_name}/[bag]` (messages routed to a module input).
pub fn module_input_topic(
    device_id: &str,
    module_id: &str,
    input_name: &str,
    properties: &PropertyBag,
) -> String {
    format!(
        "devices/{device_id}/modules/{module_id}/inputs/{input_name}/{}",
        properties.encode()
    )
}

/// Longest accepted method name. IoT Hub documents no limit; 128 matches its other identifiers.
pub const MAX_METHOD_NAME_LEN: usize = 128;

/// Whether `name` may be used as a direct-method name: 1..=128 printable US-ASCII characters
/// except `$ ( ) < > @ , ; : \ " / [ ] ? = { }` (IoT Hub's rule; space and tab are not printable
/// here). `#` and `+` are refused as well because they are MQTT wildcards, which a PUBLISH topic
/// must not contain.
pub fn is_valid_method_name(name: &str) -> bool {
    const FORBIDDEN: &[u8] = b"$()<>@,;:\\\"/[]?={}#+";
    !name.is_empty()
        && name.len() <= MAX_METHOD_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !FORBIDDEN.contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(topic: &str) -> Result<DevicePublish<'_>, TopicError> {
        parse_device_publish(topic, "d1", None)
    }

    fn properties(items: &[(&str, &str)]) -> PropertyBag {
        PropertyBag(
            items
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Some((*v).to_owned())))
                .collect(),
        )
    }

    #[test]
    fn python_telemetry() {
        assert_eq!(
            publish(
                "devices/d1/messages/events/%24.mid=abc&%24.ct=application%2Fjson&%24.ce=utf-8"
            ),
            Ok(DevicePublish::Telemetry {
                module_id: None,
                properties: properties(&[
                    ("$.mid", "abc"),
                    ("$.ct", "application/json"),
                    ("$.ce", "utf-8")
                ]),
            })
        );
    }

    #[test]
    fn c_sdk_telemetry_with_lowercase_hex() {
        let parsed = publish(
            "devices/d1/messages/events/%24.ct=application%2fjson&%24.ce=utf-8&temp%20unit=C",
        );
        let Ok(DevicePublish::Telemetry { properties, .. }) = parsed else {
            panic!("unexpected {parsed:?}");
        };
        assert_eq!(properties.get("$.ct"), Some("application/json"));
        assert_eq!(properties.get("temp unit"), Some("C"));
    }

    #[test]
    fn telemetry_without_properties() {
        let empty = Ok(DevicePublish::Telemetry {
            module_id: None,
            properties: PropertyBag::default(),
        });
        assert_eq!(publish("devices/d1/messages/events/"), empty);
        assert_eq!(publish("devices/d1/messages/events"), empty);
    }

    #[test]
    fn module_telemetry() {
        assert_eq!(
            parse_device_publish(
                "devices/d1/modules/m1/messages/events/%24.on=out1",
                "d1",
                Some("m1")
            ),
            Ok(DevicePublish::Telemetry {
                module_id: Some("m1"),
                properties: properties(&[("$.on", "out1")])
            })
        );
    }

    #[test]
    fn device_ids_with_special_characters() {
        let id = "a:b.c+d%e#f*g?h!i(j)k,l=m@n;o$p'q";
        let topic = format!("devices/{id}/messages/events/");
        assert!(matches!(
            parse_device_publish(&topic, id, None),
            Ok(DevicePublish::Telemetry { .. })
        ));
        assert_eq!(
            parse_device_publish(&topic, "a:b", None),
            Err(TopicError::NotOwnTopic)
        );
    }

    #[test]
    fn rejects_another_identitys_telemetry() {
        assert_eq!(
            publish("devices/d2/messages/events/"),
            Err(TopicError::NotOwnTopic)
        );
        assert_eq!(
            publish("devices/d1x/messages/events/"),
            Err(TopicError::NotOwnTopic)
        );
        assert_eq!(
            publish("devices/d1/modules/m1/messages/events/"),
            Err(TopicError::NotOwnTopic)
        );
        assert_eq!(
            parse_device_publish("devices/d1/modules/m2/messages/events/", "d1", Some("m1")),
            Err(TopicError::NotOwnTopic)
        );
        assert_eq!(
            parse_device_publish("devices/d1/messages/events/", "d1", Some("m1")),
            Err(TopicError::NotOwnTopic)
        );
    }

    #[test]
    fn twin_get_with_uuid_rid() {
        assert_eq!(
            publish("$iothub/twin/GET/?$rid=9d1b5b4e-5d8c-4a55-9f5e-2f4c07d4bbd2"),
            Ok(DevicePublish::TwinGet {
                rid: "9d1b5b4e-5d8c-4a55-9f5e-2f4c07d4bbd2"
            })
        );
    }

    #[test]
    fn twin_get_with_c_sdk_counter_rid() {
        assert_eq!(
            publish("$iothub/twin/GET/?$rid=2"),
            Ok(DevicePublish::TwinGet { rid: "2" })
        );
    }

    #[test]
    fn reported_patch_tolerates_other_query_items() {
        assert_eq!(
            publish("$iothub/twin/PATCH/properties/reported/?$rid=42"),
            Ok(DevicePublish::TwinPatchReported { rid: "42" })
        );
        assert_eq!(
            publish("$iothub/twin/PATCH/properties/reported/?$version=3&flag&$rid=abc%2D1"),
            Ok(DevicePublish::TwinPatchReported { rid: "abc%2D1" })
        );
    }

    #[test]
    fn method_responses() {
        assert_eq!(
            publish("$iothub/methods/res/299/?$rid=1"),
            Ok(DevicePublish::MethodResponse {
                status: 299,
                rid: "1"
            })
        );
        assert_eq!(
            publish("$iothub/methods/res/-1/?$rid=ff"),
            Ok(DevicePublish::MethodResponse {
                status: -1,
                rid: "ff"
            })
        );
        assert_eq!(
            parse_device_publish("$iothub/methods/res/200/?$rid=7", "d1", Some("m1")),
            Ok(DevicePublish::MethodResponse {
                status: 200,
                rid: "7"
            })
        );
    }

    #[test]
    fn rejects_bad_method_status() {
        for topic in [
            "$iothub/methods/res/ok/?$rid=1",
            "$iothub/methods/res//?$rid=1",
            "$iothub/methods/res/+200/?$rid=1",
            "$iothub/methods/res/-/?$rid=1",
            "$iothub/methods/res/99999999999/?$rid=1",
        ] {
            assert!(
                matches!(publish(topic), Err(TopicError::Malformed(_))),
                "{topic}"
            );
        }
    }

    #[test]
    fn requires_slash_before_query() {
        assert!(matches!(
            publish("$iothub/twin/GET?$rid=1"),
            Err(TopicError::Malformed(_))
        ));
        assert!(matches!(
            publish("$iothub/methods/res/200?$rid=1"),
            Err(TopicError::Malformed(_))
        ));
    }

    #[test]
    fn requires_rid() {
        for topic in [
            "$iothub/twin/GET/",
            "$iothub/twin/GET/?",
            "$iothub/twin/GET/?$rid=",
            "$iothub/twin/GET/?$version=1",
            "$iothub/twin/PATCH/properties/reported/?rid=1",
        ] {
            assert!(
                matches!(publish(topic), Err(TopicError::Malformed(_))),
                "{topic}"
            );
        }
    }

    #[test]
    fn rejects_unknown_topics() {
        for topic in [
            "",
            "foo",
            "$iothub/twin/res/200?$rid=1",
            "$iothub/twin/res/200/?$rid=1",
            "$iothub/twin/PATCH/properties/desired/?$version=1",
            "$iothub/methods/POST/reboot/?$rid=1",
            "$iothub/twin/get/?$rid=1",
            "devices/d1",
            "devices/d1/messages/devicebound/",
            "devices/d1/messages/eventsx",
            "devices/d1/modules/m1",
        ] {
            assert_eq!(publish(topic), Err(TopicError::Unknown), "{topic}");
        }
    }

    #[test]
    fn subscriptions_of_a_device() {
        let sub = |f| parse_subscription(f, "d1", None);
        assert_eq!(sub("$iothub/twin/res/#"), Some(Subscription::TwinResponses));
        assert_eq!(
            sub("$iothub/twin/PATCH/properties/desired/#"),
            Some(Subscription::DesiredPatches)
        );
        assert_eq!(sub("$iothub/methods/POST/#"), Some(Subscription::Methods));
        assert_eq!(
            sub("devices/d1/messages/devicebound/#"),
            Some(Subscription::CloudToDevice)
        );
        for refused in [
            "devices/d2/messages/devicebound/#",
            "devices/d1x/messages/devicebound/#",
            "devices/d1/messages/devicebound/+",
            "devices/d1/modules/m1/#",
            "devices/+/messages/devicebound/#",
            "$iothub/#",
            "#",
            "$iothub/methods/POST/reboot",
        ] {
            assert_eq!(sub(refused), None, "{refused}");
        }
    }

    #[test]
    fn subscriptions_of_a_module() {
        let sub = |f| parse_subscription(f, "d1", Some("m1"));
        assert_eq!(sub("$iothub/twin/res/#"), Some(Subscription::TwinResponses));
        assert_eq!(
            sub("devices/d1/modules/m1/inputs/#"),
            Some(Subscription::ModuleInputs)
        );
        assert_eq!(
            sub("devices/d1/modules/m1/#"),
            Some(Subscription::ModuleInputs)
        );
        assert_eq!(sub("devices/d1/messages/devicebound/#"), None);
        assert_eq!(sub("devices/d1/modules/m2/#"), None);
        assert_eq!(sub("devices/d2/modules/m1/#"), None);
    }

    #[test]
    fn hub_topics() {
        assert_eq!(
            twin_response_topic(200, "abc", None),
            "$iothub/twin/res/200/?$rid=abc"
        );
        assert_eq!(
            twin_response_topic(204, "7", Some(3)),
            "$iothub/twin/res/204/?$rid=7&$version=3"
        );
        assert_eq!(
            desired_patch_topic(3),
            "$iothub/twin/PATCH/properties/desired/?$version=3"
        );
        assert_eq!(
            method_request_topic("reboot", "1"),
            "$iothub/methods/POST/reboot/?$rid=1"
        );
        assert_eq!(
            c2d_topic("d1", &PropertyBag::default()),
            "devices/d1/messages/devicebound/"
        );
        assert_eq!(
            c2d_topic(
                "d1",
                &properties(&[
                    ("$.mid", "m1"),
                    ("$.to", "/devices/d1/messages/devicebound")
                ])
            ),
            "devices/d1/messages/devicebound/%24.mid=m1&%24.to=%2Fdevices%2Fd1%2Fmessages%2Fdevicebound"
        );
        assert_eq!(
            module_input_topic("d1", "m1", "in1", &properties(&[("$.mid", "x")])),
            "devices/d1/modules/m1/inputs/in1/%24.mid=x"
        );
    }

    #[test]
    fn method_names() {
        for valid in [
            "reboot",
            "get-status",
            "a.b_c~d",
            "A1",
            "x%y",
            "!*'&|^`",
            &"m".repeat(128),
        ] {
            assert!(is_valid_method_name(valid), "{valid}");
        }
        for invalid in [
            "",
            "re boot",
            "tab\t",
            "a$b",
            "a/b",
            "a?b",
            "a=b",
            "a{b}",
            "a#b",
            "a+b",
            "é",
            "a\u{7f}",
            &"m".repeat(129),
        ] {
            assert!(!is_valid_method_name(invalid), "{invalid:?}");
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn parse_device_publish_never_panics(topic in ".*", device in "[a-z0-9?]{0,4}") {
                let _ = parse_device_publish(&topic, &device, None);
                let _ = parse_device_publish(&topic, &device, Some("m"));
            }

            #[test]
            fn iothub_shaped_topics_never_panic(tail in "[a-zA-Z0-9/?$=&%-]{0,24}") {
                let _ = parse_device_publish(&format!("$iothub/{tail}"), "d", None);
                let _ = parse_device_publish(&format!("devices/d/{tail}"), "d", None);
            }

            #[test]
            fn rid_is_echoed_verbatim(rid in "[!-%'-~]{1,40}") {
                let topic = format!("$iothub/twin/GET/?$rid={rid}");
                prop_assert_eq!(parse_device_publish(&topic, "d", None), Ok(DevicePublish::TwinGet { rid: &rid }));
            }
        }
    }
}
