//! The MQTT CONNECT username `{host}/{clientId}/?{query}` and client id `{d}` or `{d}/{m}`.
//!
//! Host and client id are sent unencoded; query keys and values are percent-encoded.
//!
//! Device and module ids never contain `/` but may contain `?`, so the query is found by segment,
//! not by searching for `/?`: the text after the host is split on `/`, and when there are at least
//! two segments and the last one is empty or starts with `?`, that last segment is the query (minus
//! its `?`); the segments before it are the client id. So `h/d?x/?api-version=1` is device `d?x`,
//! and `h/d/?m/` is module `?m` of device `d`. Without a trailing `/` (which no SDK omits) the whole
//! rest is the client id, except that `h/d/?m` reads as device `d` with query `m`.

use percent_encoding::percent_decode_str;

/// The parts of a CONNECT username.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectUsername {
    /// The hub host name the device addressed.
    pub host: String,
    /// The device id from the client-id part.
    pub device_id: String,
    /// The module id, for module identities.
    pub module_id: Option<String>,
    /// `api-version`, when sent (missing means "latest").
    pub api_version: Option<String>,
    /// `model-id` (IoT Plug and Play), when sent.
    pub model_id: Option<String>,
    /// `DeviceClientType` (the SDK's user agent), when sent.
    pub client_type: Option<String>,
}

/// Why a CONNECT username could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsernameError {
    /// No `/` separates the host from the client id.
    #[error("username has no client id after the host")]
    MissingClientId,
    /// The host part is empty.
    #[error("username has an empty host")]
    EmptyHost,
    /// The device id is empty.
    #[error("username has an empty device id")]
    EmptyDeviceId,
    /// The module id is empty (`host/d//?...`).
    #[error("username has an empty module id")]
    EmptyModuleId,
    /// More than `{device}/{module}` between host and query.
    #[error("username client id has more than two segments")]
    TooManySegments,
}

/// Parses a CONNECT username (see the module documentation for how the query is located).
/// Query keys are matched case-insensitively and the first non-empty value wins; unknown keys,
/// items without `=` and empty values are ignored. Values are percent-decoded (invalid UTF-8 is
/// replaced, since these are informational).
pub fn parse_username(username: &str) -> Result<ConnectUsername, UsernameError> {
    let (host, rest) = username
        .split_once('/')
        .ok_or(UsernameError::MissingClientId)?;
    if host.is_empty() {
        return Err(UsernameError::EmptyHost);
    }
    let mut segments: Vec<&str> = rest.split('/').collect();
    let query = match segments.as_slice() {
        [_, .., last] if last.is_empty() || last.starts_with('?') => {
            let query = last.strip_prefix('?').unwrap_or(last);
            segments.pop();
            query
        }
        _ => "",
    };
    let (device_id, module_id) = match segments.as_slice() {
        [device] => (*device, None),
        [device, module] => (*device, Some(*module)),
        _ => return Err(UsernameError::TooManySegments),
    };
    if device_id.is_empty() {
        return Err(UsernameError::EmptyDeviceId);
    }
    if module_id.is_some_and(str::is_empty) {
        return Err(UsernameError::EmptyModuleId);
    }
    let mut parsed = ConnectUsername {
        host: host.to_owned(),
        device_id: device_id.to_owned(),
        module_id: module_id.map(str::to_owned),
        api_version: None,
        model_id: None,
        client_type: None,
    };
    for (key, value) in query.split('&').filter_map(|item| item.split_once('=')) {
        let slot = match decode(key).to_ascii_lowercase().as_str() {
            "api-version" => &mut parsed.api_version,
            "model-id" => &mut parsed.model_id,
            "deviceclienttype" => &mut parsed.client_type,
            _ => continue,
        };
        if slot.is_none() && !value.is_empty() {
            *slot = Some(decode(value));
        }
    }
    Ok(parsed)
}

/// Splits an MQTT client id into device id and module id at the first `/`.
pub fn parse_client_id(client_id: &str) -> (String, Option<String>) {
    match client_id.split_once('/') {
        Some((device, module)) => (device.to_owned(), Some(module.to_owned())),
        None => (client_id.to_owned(), None),
    }
}

fn decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(username: &str) -> ConnectUsername {
        match parse_username(username) {
            Ok(parsed) => parsed,
            Err(e) => panic!("{username}: {e}"),
        }
    }

    #[test]
    fn python_device() {
        let parsed = parse(
            "h.azure-devices.net/dev1/?api-version=2019-10-01&DeviceClientType=azure-iot-device-iothub-py%2F2.14.0%283.11.7%3BLinux%20%231%20SMP%3Bx86_64%29",
        );
        assert_eq!(
            parsed,
            ConnectUsername {
                host: "h.azure-devices.net".to_owned(),
                device_id: "dev1".to_owned(),
                module_id: None,
                api_version: Some("2019-10-01".to_owned()),
                model_id: None,
                client_type: Some(
                    "azure-iot-device-iothub-py/2.14.0(3.11.7;Linux #1 SMP;x86_64)".to_owned()
                ),
            }
        );
    }

    #[test]
    fn python_plug_and_play_model_id() {
        let parsed = parse(
            "localhost/dev1/?api-version=2020-09-30&DeviceClientType=py&model-id=dtmi%3Acom%3Aexample%3AThermostat%3B1",
        );
        assert_eq!(parsed.api_version.as_deref(), Some("2020-09-30"));
        assert_eq!(
            parsed.model_id.as_deref(),
            Some("dtmi:com:example:Thermostat;1")
        );
    }

    #[test]
    fn node_module_with_model_id_first() {
        let parsed = parse(
            "localhost/dev1/mod1/?api-version=2021-04-12&model-id=dtmi%3Acom%3Aexample%3BThermostat%3B1&DeviceClientType=azure-iot-device%2F1.18.4%20(node%20v20.20.2%3B%20Debian%2012%3B%20x64)",
        );
        assert_eq!(parsed.device_id, "dev1");
        assert_eq!(parsed.module_id.as_deref(), Some("mod1"));
        assert_eq!(
            parsed.model_id.as_deref(),
            Some("dtmi:com:example;Thermostat;1")
        );
        assert_eq!(
            parsed.client_type.as_deref(),
            Some("azure-iot-device/1.18.4 (node v20.20.2; Debian 12; x64)")
        );
    }

    #[test]
    fn c_sdk_lowercase_hex() {
        let parsed = parse(
            "h/dev1/?api-version=2020-09-30&DeviceClientType=iothubclient%2f1.x%20(native%3b%20Linux%3b%20x86_64)&model-id=dtmi%3acom%3aexample%3a1",
        );
        assert_eq!(
            parsed.client_type.as_deref(),
            Some("iothubclient/1.x (native; Linux; x86_64)")
        );
        assert_eq!(parsed.model_id.as_deref(), Some("dtmi:com:example:1"));
    }

    #[test]
    fn without_query() {
        for username in ["host/d1/", "host/d1/?", "host/d1"] {
            let parsed = parse(username);
            assert_eq!(
                (parsed.host.as_str(), parsed.device_id.as_str()),
                ("host", "d1"),
                "{username}"
            );
            assert_eq!(parsed.module_id, None);
            assert_eq!(parsed.api_version, None);
        }
        assert_eq!(parse("host/d1/m1/").module_id.as_deref(), Some("m1"));
    }

    #[test]
    fn docs_raw_mqtt() {
        let parsed = parse("contoso.azure-devices.net/MyDevice01/?api-version=2021-04-12");
        assert_eq!(parsed.device_id, "MyDevice01");
        assert_eq!(parsed.api_version.as_deref(), Some("2021-04-12"));
    }

    #[test]
    fn question_marks_in_ids() {
        let parsed = parse("h/d?x/?api-version=1");
        assert_eq!((parsed.device_id.as_str(), parsed.module_id), ("d?x", None));
        let parsed = parse("h/?d/?m/?api-version=1");
        assert_eq!(
            (parsed.device_id.as_str(), parsed.module_id.as_deref()),
            ("?d", Some("?m"))
        );
        assert_eq!(parsed.api_version.as_deref(), Some("1"));
        let parsed = parse("h/d/?m/");
        assert_eq!(parsed.module_id.as_deref(), Some("?m"));
        let parsed = parse("h/?d");
        assert_eq!((parsed.device_id.as_str(), parsed.module_id), ("?d", None));
    }

    #[test]
    fn special_characters_in_device_id() {
        let id = "a:b.c+d%e#f*g?h!i(j)k,l=m@n;o$p'q";
        let parsed = parse(&format!("h/{id}/?api-version=2021-04-12"));
        assert_eq!(parsed.device_id, id);
        assert_eq!(parse_client_id(id), (id.to_owned(), None));
    }

    #[test]
    fn tolerates_odd_query_items() {
        let parsed = parse("h/d/?flag&api-version=&API-VERSION=2&api-version=3&other=x&&model-id=");
        assert_eq!(parsed.api_version.as_deref(), Some("2"));
        assert_eq!(parsed.model_id, None);
    }

    #[test]
    fn rejections() {
        assert_eq!(parse_username("host"), Err(UsernameError::MissingClientId));
        assert_eq!(
            parse_username("/d1/?api-version=1"),
            Err(UsernameError::EmptyHost)
        );
        assert_eq!(parse_username("host/"), Err(UsernameError::EmptyDeviceId));
        assert_eq!(
            parse_username("host//?a=1"),
            Err(UsernameError::EmptyDeviceId)
        );
        assert_eq!(
            parse_username("host/d1//?a=1"),
            Err(UsernameError::EmptyModuleId)
        );
        assert_eq!(
            parse_username("host/d1/m1/x/?a=1"),
            Err(UsernameError::TooManySegments)
        );
    }

    #[test]
    fn client_ids() {
        assert_eq!(parse_client_id("d1"), ("d1".to_owned(), None));
        assert_eq!(
            parse_client_id("d1/m1"),
            ("d1".to_owned(), Some("m1".to_owned()))
        );
        assert_eq!(
            parse_client_id("d?1/m?1"),
            ("d?1".to_owned(), Some("m?1".to_owned()))
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn parse_username_never_panics(s in ".*") {
                let _ = parse_username(&s);
            }

            #[test]
            fn ids_without_slash_round_trip(
                device in "[a-zA-Z0-9:.+%#*?!(),=@;$'_-]{1,20}",
                module in proptest::option::of("[a-zA-Z0-9:.+%#*?!(),=@;$'_-]{1,20}"),
                query in proptest::option::of("[a-z=&%0-9-]{0,20}"),
            ) {
                let client_id = match &module {
                    Some(module) => format!("{device}/{module}"),
                    None => device.clone(),
                };
                let username = match &query {
                    Some(query) => format!("host/{client_id}/?{query}"),
                    None => format!("host/{client_id}/"),
                };
                let parsed = parse_username(&username).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(&parsed.device_id, &device);
                prop_assert_eq!(&parsed.module_id, &module);
                prop_assert_eq!(parse_client_id(&client_id), (device, module));
            }
        }
    }
}
