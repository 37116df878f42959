use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use twinhub_core::time::Timestamp;
use twinhub_protocol::error::{ERROR_CODE_HEADER, ErrorCode, rest_error_body};

use crate::hub::HubError;
use crate::{error_code, tracking_id};

/// An IoT Hub error answer: status from the code, the legacy body every SDK parses, and the
/// `iothub-errorcode` header.
#[derive(Debug)]
pub(crate) struct ApiError {
    code: ErrorCode,
    message: String,
}

impl ApiError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn code(&self) -> ErrorCode {
        self.code
    }

    pub(crate) fn message(&self) -> &str {
        &self.message
    }
}

impl From<HubError> for ApiError {
    fn from(error: HubError) -> Self {
        Self::new(error_code(&error), error.to_string())
    }
}

/// `MM/dd/yyyy HH:mm:ss`, the timestamp format of IoT Hub's tracking ids.
fn tracking_timestamp(now: Timestamp) -> String {
    let iso = now.to_rfc3339();
    match (
        iso.get(0..4),
        iso.get(5..7),
        iso.get(8..10),
        iso.get(11..19),
    ) {
        (Some(y), Some(m), Some(d), Some(t)) => format!("{m}/{d}/{y} {t}"),
        _ => iso,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let tracking_id = tracking_id();
        if self.code.http_status() >= 500 {
            tracing::error!(code = self.code.name(), %tracking_id, message = %self.message, "request failed");
        } else {
            tracing::debug!(code = self.code.name(), %tracking_id, message = %self.message, "request refused");
        }
        let body = rest_error_body(
            self.code,
            &self.message,
            &tracking_id,
            &tracking_timestamp(Timestamp::now()),
        );
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        headers.insert(
            ERROR_CODE_HEADER,
            HeaderValue::from_static(self.code.name()),
        );
        if let Ok(value) = HeaderValue::from_str(&tracking_id) {
            headers.insert("iothub-tracking-id", value);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use twinhub_core::time::Timestamp;

    #[test]
    fn tracking_timestamp_uses_the_us_format() {
        let t = Timestamp::parse_rfc3339("2022-10-18T20:50:39.1234567Z").expect("valid");
        assert_eq!(super::tracking_timestamp(t), "10/18/2022 20:50:39");
    }
}
