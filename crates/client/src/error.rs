//! What can go wrong talking to a hub, and how IoT Hub's error answers are read.

use std::path::PathBuf;

use serde_json::Value;
use twinhub_protocol::ConnectionStringError;

/// Why a call to the hub failed. The hub's own refusals are [`ClientError::Service`]; everything
/// that kept a request from getting an answer is a separate variant.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The connection string does not parse.
    #[error("invalid connection string: {0}")]
    ConnectionString(#[from] ConnectionStringError),
    /// The connection string names a device or lacks a policy key or token.
    #[error(
        "the connection string must be a service one: SharedAccessKeyName and SharedAccessKey, or SharedAccessSignature (and no DeviceId)"
    )]
    NotAServiceConnectionString,
    /// The CA certificates or the system trust roots could not be used.
    #[error("TLS trust: {0}")]
    Trust(String),
    /// A SAS token could not be signed (the key is not base64).
    #[error("signing a SAS token: {0}")]
    Sas(#[from] twinhub_core::sas::SasError),
    /// The hub answered with an error.
    #[error("{code}: {message}")]
    Service {
        /// HTTP status.
        status: u16,
        /// IoT Hub error code name (`DeviceNotFound`, ...), or the HTTP reason when the hub sent none.
        code: String,
        /// The hub's explanation.
        message: String,
    },
    /// The request did not get an answer (connection, TLS, timeout).
    #[error("cannot reach the hub: {0}")]
    Transport(#[source] reqwest::Error),
    /// The hub answered 2xx with a body this client cannot read.
    #[error("unexpected answer from the hub: {0}")]
    UnexpectedResponse(String),
    /// A local file could not be read.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The I/O failure.
        source: std::io::Error,
    },
    /// An argument cannot be sent as given.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl ClientError {
    /// The IoT Hub error code name if the hub refused the request.
    pub fn service_code(&self) -> Option<&str> {
        match self {
            ClientError::Service { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The HTTP status if the hub refused the request.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Service { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Reads IoT Hub's error answer: the code from the `iothub-errorcode` header when present, else
/// from the body, which comes in three shapes (`"Message":"ErrorCode:<Name>;<text>"`, `Message` as
/// escaped JSON, `Message` as an object); a body that is none of these is quoted as the message.
pub(crate) fn service_error(status: u16, header_code: Option<&str>, body: &[u8]) -> ClientError {
    let (body_code, message) = parse_error_body(body);
    let code = header_code
        .map(str::trim)
        .filter(|code| !code.is_empty())
        .map(str::to_owned)
        .or(body_code)
        .unwrap_or_else(|| status_reason(status));
    let message = message.unwrap_or_else(|| format!("the hub answered HTTP {status}"));
    ClientError::Service {
        status,
        code,
        message,
    }
}

/// The code name and message found in an error body, each when present.
fn parse_error_body(body: &[u8]) -> (Option<String>, Option<String>) {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let Ok(value) = serde_json::from_str::<Value>(text) else {
        return (None, (!text.is_empty()).then(|| text.to_owned()));
    };
    let message = value
        .get("Message")
        .or_else(|| value.get("message"))
        .cloned();
    match message {
        Some(Value::String(message)) => match serde_json::from_str::<Value>(&message) {
            Ok(inner @ Value::Object(_)) => structured_error(&inner),
            _ => legacy_message(&message),
        },
        Some(inner @ Value::Object(_)) => structured_error(&inner),
        _ => (None, Some(value.to_string())),
    }
}

/// `ErrorCode:<Name>;<text>`, or plain text.
fn legacy_message(message: &str) -> (Option<String>, Option<String>) {
    match message
        .strip_prefix("ErrorCode:")
        .and_then(|rest| rest.split_once(';'))
    {
        Some((code, text)) => (Some(code.trim().to_owned()), Some(text.trim().to_owned())),
        None => (None, Some(message.to_owned())),
    }
}

/// `{"errorCode":404001,"message":"..."}`: the numeric code is turned into its name when known.
fn structured_error(inner: &Value) -> (Option<String>, Option<String>) {
    let code = match inner.get("errorCode") {
        Some(Value::Number(n)) => n.as_u64().and_then(|n| {
            u32::try_from(n)
                .ok()
                .and_then(twinhub_protocol::ErrorCode::from_code)
                .map(|code| code.name().to_owned())
                .or_else(|| Some(n.to_string()))
        }),
        Some(Value::String(s)) => Some(s.clone()),
        _ => None,
    };
    let message = inner
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_owned);
    (code, message)
}

/// `NotFound` for 404 and so on: the reason phrase without spaces, like IoT Hub's code names.
fn status_reason(status: u16) -> String {
    reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .map(|reason| reason.replace(' ', ""))
        .unwrap_or_else(|| format!("Http{status}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(error: ClientError) -> (u16, String, String) {
        match error {
            ClientError::Service {
                status,
                code,
                message,
            } => (status, code, message),
            other => panic!("expected a service error, got {other:?}"),
        }
    }

    #[test]
    fn legacy_body_and_header() {
        let body = br#"{"Message":"ErrorCode:DeviceNotFound;device d9 is not registered","ExceptionMessage":"Tracking ID:abc-G:0-TimeStamp:10/18/2022 20:50:39"}"#;
        let error = service_error(404, Some("DeviceNotFound"), body);
        assert_eq!(
            error.to_string(),
            "DeviceNotFound: device d9 is not registered"
        );
        assert_eq!(
            parts(error),
            (
                404,
                "DeviceNotFound".to_owned(),
                "device d9 is not registered".to_owned()
            )
        );
    }

    #[test]
    fn code_from_the_body_when_the_header_is_missing() {
        let body =
            br#"{"Message":"ErrorCode:PreconditionFailed;etag mismatch","ExceptionMessage":""}"#;
        let (_, code, message) = parts(service_error(412, None, body));
        assert_eq!(code, "PreconditionFailed");
        assert_eq!(message, "etag mismatch");
    }

    #[test]
    fn header_wins_over_the_body() {
        let body = br#"{"Message":"ErrorCode:Other;text"}"#;
        let (_, code, _) = parts(service_error(404, Some("JobNotFound"), body));
        assert_eq!(code, "JobNotFound");
    }

    #[test]
    fn escaped_json_message() {
        let body = br#"{"Message":"{\"errorCode\":404001,\"trackingId\":\"t\",\"message\":\"Device not found\",\"timestampUtc\":\"x\"}","ExceptionMessage":""}"#;
        let (_, code, message) = parts(service_error(404, None, body));
        assert_eq!(code, "DeviceNotFound");
        assert_eq!(message, "Device not found");
    }

    #[test]
    fn object_message_with_unknown_numeric_code() {
        let body = br#"{"Message":{"errorCode":499999,"message":"odd"}}"#;
        let (_, code, message) = parts(service_error(499, None, body));
        assert_eq!(code, "499999");
        assert_eq!(message, "odd");
    }

    #[test]
    fn non_json_and_empty_bodies() {
        let (status, code, message) = parts(service_error(502, None, b"bad gateway upstream"));
        assert_eq!(
            (status, code.as_str(), message.as_str()),
            (502, "BadGateway", "bad gateway upstream")
        );
        let (_, code, message) = parts(service_error(404, None, b""));
        assert_eq!(code, "NotFound");
        assert_eq!(message, "the hub answered HTTP 404");
        let (_, code, _) = parts(service_error(599, Some("  "), b"{}"));
        assert_eq!(code, "Http599");
    }

    #[test]
    fn message_without_code_prefix_is_kept_whole() {
        let body =
            br#"{"Message":"ErrorCode:NotFound;no such resource: GET /x","ExceptionMessage":""}"#;
        let (_, code, message) = parts(service_error(404, None, body));
        assert_eq!(code, "NotFound");
        assert_eq!(message, "no such resource: GET /x");
        let (_, code, message) = parts(service_error(400, None, br#"{"Message":"plain words"}"#));
        assert_eq!(code, "BadRequest");
        assert_eq!(message, "plain words");
    }

    #[test]
    fn accessors() {
        let error = service_error(412, Some("PreconditionFailed"), b"");
        assert_eq!(error.service_code(), Some("PreconditionFailed"));
        assert_eq!(error.status(), Some(412));
        assert_eq!(
            ClientError::InvalidArgument("x".to_owned()).service_code(),
            None
        );
    }

    proptest::proptest! {
        #[test]
        fn the_hubs_own_error_bodies_round_trip(
            index in 0..twinhub_protocol::ErrorCode::ALL.len(),
            message in "[^\\x00-\\x1f]{0,80}",
        ) {
            let code = twinhub_protocol::ErrorCode::ALL[index];
            let body = twinhub_protocol::rest_error_body(code, &message, "t", "ts");
            let (status, name, text) = parts(service_error(code.http_status(), None, body.as_bytes()));
            proptest::prop_assert_eq!(status, code.http_status());
            proptest::prop_assert_eq!(name, code.name());
            proptest::prop_assert_eq!(text, message.trim());
        }

        #[test]
        fn any_answer_reads_as_a_service_error(
            status in 100u16..1000,
            header in proptest::option::of(".{0,20}"),
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
        ) {
            let (parsed_status, code, _) = parts(service_error(status, header.as_deref(), &body));
            proptest::prop_assert_eq!(parsed_status, status);
            proptest::prop_assert!(!code.is_empty());
        }
    }
}
