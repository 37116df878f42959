//! IoT Hub error codes and the two error-body formats the SDKs parse.

use serde_json::json;

/// Name of the REST response header that carries the error code name (`DeviceNotFound`, ...).
pub const ERROR_CODE_HEADER: &str = "iothub-errorcode";

macro_rules! error_codes {
    ($($(#[$doc:meta])* $name:ident = $code:literal,)*) => {
        /// An IoT Hub error code: a six-digit number whose first three digits are the HTTP status,
        /// and a name that SDKs match on.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[$doc])* $name,)*
        }

        impl ErrorCode {
            /// Every error code, in numeric order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name,)*];

            /// The six-digit numeric code, e.g. `404001`.
            pub fn code(self) -> u32 {
                match self {
                    $(ErrorCode::$name => $code,)*
                }
            }

            /// The name SDKs match on, e.g. `DeviceNotFound`.
            pub fn name(self) -> &'static str {
                match self {
                    $(ErrorCode::$name => stringify!($name),)*
                }
            }
        }
    };
}

error_codes! {
    /// The API version is not supported.
    InvalidProtocolVersion = 400001,
    /// The operation is not valid in the current state.
    InvalidOperation = 400003,
    /// A request argument (body, key, value) is invalid.
    ArgumentInvalid = 400004,
    /// A required argument is missing.
    ArgumentNull = 400005,
    /// The request is not in the expected format.
    IotHubFormatError = 400006,
    /// The JSON body could not be parsed.
    DeserializationError = 400012,
    /// At least one operation of a bulk registry request failed.
    BulkRegistryOperationFailure = 400013,
    /// The etag of an item in a bulk request does not match.
    EtagDoesNotMatch = 400023,
    /// The connection was closed because the same identity connected again.
    ConnectionForcefullyClosedOnNewConnection = 400027,
    /// A configuration's target condition is invalid.
    InvalidConfigurationTargetCondition = 400401,
    /// A configuration's content is invalid.
    InvalidConfigurationContent = 400402,
    /// A configuration's content cannot be changed after creation.
    CannotModifyImmutableConfigurationContent = 400403,
    /// A configuration's custom metric query is invalid.
    InvalidConfigurationCustomMetricsQuery = 400404,
    /// The hub name in the request is unknown.
    IotHubNotFound = 401001,
    /// The credentials are invalid or do not grant the operation.
    IotHubUnauthorizedAccess = 401002,
    /// The credentials are missing or expired.
    IotHubUnauthorized = 401003,
    /// The hub's quota is exhausted.
    IotHubQuotaExceeded = 403002,
    /// Too many cloud-to-device messages are pending for the device.
    DeviceMaximumQueueDepthExceeded = 403004,
    /// Too many file uploads are active for the device.
    DeviceMaximumActiveFileUploadLimitExceeded = 403006,
    /// The device identity does not exist.
    DeviceNotFound = 404001,
    /// The job does not exist.
    JobNotFound = 404002,
    /// The module identity does not exist.
    ModuleNotFound = 404010,
    /// The device is not connected (or not subscribed to methods).
    DeviceNotOnline = 404103,
    /// The device's connection was closed (e.g. keep-alive timeout).
    DeviceConnectionClosedRemotely = 404104,
    /// The configuration does not exist.
    ConfigurationNotFound = 404301,
    /// The firmware package does not exist (twinhub extension: firmware hosting).
    FirmwarePackageNotFound = 404901,
    /// A device with this id already exists.
    DeviceAlreadyExists = 409001,
    /// A job with this id already exists.
    JobAlreadyExists = 409104,
    /// A module with this id already exists on the device.
    ModuleAlreadyExistsOnDevice = 409301,
    /// A configuration with this id already exists.
    ConfigurationAlreadyExists = 409401,
    /// A firmware package with this id already exists; packages are immutable (twinhub extension).
    FirmwarePackageAlreadyExists = 409901,
    /// The `If-Match` etag does not match.
    PreconditionFailed = 412001,
    /// The lock token of a cloud-to-device message has expired.
    DeviceMessageLockLost = 412002,
    /// The message or document is too large.
    MessageTooLarge = 413001,
    /// The hub holds the maximum number of devices.
    TooManyDevices = 413002,
    /// The device holds the maximum number of modules.
    TooManyModulesOnDevice = 413003,
    /// The hub holds the maximum number of configurations.
    ConfigurationCountLimitExceeded = 413101,
    /// The requested byte range lies beyond the end of the content (twinhub extension).
    RangeNotSatisfiable = 416001,
    /// The request was throttled.
    ThrottlingException = 429001,
    /// The throttling backlog is full.
    ThrottleBacklogLimitExceeded = 429002,
    /// The request timed out in the throttling backlog.
    ThrottlingBacklogTimeout = 429003,
    /// Too many jobs are active.
    ThrottlingMaxActiveJobCountExceeded = 429004,
    /// The device exceeded its own rate limit.
    DeviceThrottlingLimitExceeded = 429005,
    /// An unexpected server-side failure.
    ServerError = 500001,
    /// An internal operation timed out.
    GenericTimeout = 500008,
    /// The service is temporarily unavailable.
    ServiceUnavailable = 503001,
    /// The service is too busy to take the request.
    ServerBusy = 503005,
    /// The device did not answer a direct method within the response timeout.
    GatewayTimeout = 504101,
}

impl ErrorCode {
    /// The HTTP status: the first three digits of the code.
    pub fn http_status(self) -> u16 {
        // Every code is six digits, so the quotient is always in 100..=999.
        u16::try_from(self.code() / 1000).unwrap_or(500)
    }

    /// The error code with this name, matched exactly (SDKs compare names case-sensitively).
    pub fn from_name(name: &str) -> Option<ErrorCode> {
        ErrorCode::ALL
            .iter()
            .copied()
            .find(|code| code.name() == name)
    }

    /// The error code with this numeric value.
    pub fn from_code(code: u32) -> Option<ErrorCode> {
        ErrorCode::ALL.iter().copied().find(|c| c.code() == code)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The legacy REST error body every SDK parses:
/// `{"Message":"ErrorCode:<Name>;<message>","ExceptionMessage":"Tracking ID:<id>-G:0-TimeStamp:<time>"}`.
///
/// `timestamp_mmddyyyy` is the caller-formatted UTC time `MM/dd/yyyy HH:mm:ss`.
pub fn rest_error_body(
    code: ErrorCode,
    message: &str,
    tracking_id: &str,
    timestamp_mmddyyyy: &str,
) -> String {
    json!({
        "Message": format!("ErrorCode:{};{message}", code.name()),
        "ExceptionMessage": format!("Tracking ID:{tracking_id}-G:0-TimeStamp:{timestamp_mmddyyyy}"),
    })
    .to_string()
}

/// The body of an MQTT twin error response:
/// `{"errorCode":400004,"trackingId":"...","message":"...","timestampUtc":"..."}`.
pub fn mqtt_error_body(
    code: ErrorCode,
    message: &str,
    tracking_id: &str,
    timestamp_utc: &str,
) -> String {
    json!({
        "errorCode": code.code(),
        "trackingId": tracking_id,
        "message": message,
        "timestampUtc": timestamp_utc,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_six_digits_and_unique() {
        for (i, a) in ErrorCode::ALL.iter().enumerate() {
            assert!((100_000..1_000_000).contains(&a.code()), "{a:?}");
            for b in &ErrorCode::ALL[i + 1..] {
                assert_ne!(a.code(), b.code());
                assert_ne!(a.name(), b.name());
            }
        }
    }

    #[test]
    fn http_status_is_the_first_three_digits() {
        assert_eq!(ErrorCode::DeviceNotFound.http_status(), 404);
        assert_eq!(ErrorCode::DeviceNotOnline.code(), 404_103);
        assert_eq!(ErrorCode::GatewayTimeout.http_status(), 504);
        assert_eq!(ErrorCode::IotHubUnauthorizedAccess.code(), 401_002);
        assert_eq!(ErrorCode::PreconditionFailed.http_status(), 412);
        assert_eq!(ErrorCode::ThrottlingException.http_status(), 429);
    }

    #[test]
    fn names_round_trip() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_name(code.name()), Some(*code));
            assert_eq!(ErrorCode::from_code(code.code()), Some(*code));
        }
        assert_eq!(ErrorCode::from_name("devicenotfound"), None);
        assert_eq!(
            ErrorCode::DeviceAlreadyExists.to_string(),
            "DeviceAlreadyExists"
        );
    }

    #[test]
    fn rest_error_body_is_the_legacy_shape() {
        let body = rest_error_body(
            ErrorCode::DeviceNotFound,
            "Device dev1 not registered",
            "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
            "10/18/2022 20:50:39",
        );
        assert_eq!(
            body,
            r#"{"Message":"ErrorCode:DeviceNotFound;Device dev1 not registered","ExceptionMessage":"Tracking ID:0f1e2d3c4b5a69788796a5b4c3d2e1f0-G:0-TimeStamp:10/18/2022 20:50:39"}"#
        );
    }

    #[test]
    fn rest_error_body_escapes_quotes() {
        let body = rest_error_body(ErrorCode::ArgumentInvalid, "bad \"key\"", "t", "ts");
        let value: serde_json::Value = serde_json::from_str(&body).expect("valid JSON");
        assert_eq!(value["Message"], "ErrorCode:ArgumentInvalid;bad \"key\"");
    }

    #[test]
    fn mqtt_error_body_has_numeric_code() {
        let body = mqtt_error_body(
            ErrorCode::ArgumentInvalid,
            "invalid key",
            "abc-G:0-TimeStamp:10/20/2022 10:00:00",
            "2022-10-20T10:00:00Z",
        );
        assert_eq!(
            body,
            r#"{"errorCode":400004,"trackingId":"abc-G:0-TimeStamp:10/20/2022 10:00:00","message":"invalid key","timestampUtc":"2022-10-20T10:00:00Z"}"#
        );
    }
}
