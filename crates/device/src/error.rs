//! One error type per operation.

/// Why [`crate::DeviceClient::connect`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// The configuration cannot work (empty device id, unusable port, ...).
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The key, token or certificate is unusable (the message never contains it).
    #[error("invalid credential: {0}")]
    InvalidCredential(String),
    /// The trust roots or the client certificate could not be loaded.
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// The hub answered CONNACK with a non-zero return code (5: not authorized, 3: unavailable).
    #[error("the hub refused the connection (CONNACK return code {code})")]
    Refused {
        /// The MQTT 3.1.1 CONNACK return code.
        code: u8,
    },
    /// The network, TLS or WebSocket connection failed.
    #[error("cannot reach the hub: {0}")]
    Network(String),
    /// The hub refused to subscribe the device to its twin topics.
    #[error("the hub refused the twin subscriptions")]
    SubscribeRefused,
    /// The hub did not answer within the request timeout.
    #[error("the hub did not answer in time")]
    Timeout,
}

/// Why a twin read or reported-properties update failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TwinError {
    /// No answer within the request timeout (including time spent reconnecting).
    #[error("the twin request timed out")]
    Timeout,
    /// The client was closed.
    #[error("the client is closed")]
    Closed,
    /// The hub answered with a non-success status (400 for an invalid patch, 429, 5xx, ...).
    #[error("the hub rejected the twin request with status {status}: {message}")]
    Rejected {
        /// The status from the response topic.
        status: u16,
        /// The hub's error message.
        message: String,
    },
    /// A reported patch must be a JSON object.
    #[error("a reported-properties patch must be a JSON object")]
    InvalidPatch,
    /// The request does not fit in one MQTT packet.
    #[error("the request is too large ({size} bytes)")]
    TooLarge {
        /// Topic plus payload, in bytes.
        size: usize,
    },
    /// The hub's answer could not be understood.
    #[error("malformed twin response: {0}")]
    MalformedResponse(String),
}

/// Why subscribing to direct methods failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    /// No SUBACK within the request timeout.
    #[error("the subscription timed out")]
    Timeout,
    /// The client was closed.
    #[error("the client is closed")]
    Closed,
    /// The hub answered SUBACK with a failure code.
    #[error("the hub refused the subscription")]
    Refused,
}

/// Why a telemetry message was not acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TelemetryError {
    /// No PUBACK within the request timeout (including time spent reconnecting).
    #[error("the message was not acknowledged in time")]
    Timeout,
    /// The client was closed.
    #[error("the client is closed")]
    Closed,
    /// Larger than IoT Hub's 256 KB message limit.
    #[error("the message is too large ({size} bytes; the limit is 256 KB)")]
    TooLarge {
        /// Topic plus payload, in bytes.
        size: usize,
    },
}

/// Why a direct-method response could not be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RespondError {
    /// The connection the request arrived on has closed; the hub has already failed the call.
    #[error("the connection the request arrived on is gone")]
    ConnectionLost,
    /// The response could not be written within the request timeout.
    #[error("the response could not be sent in time")]
    Timeout,
    /// Larger than IoT Hub's 128 KB method payload limit.
    #[error("the response is too large ({size} bytes)")]
    TooLarge {
        /// Topic plus payload, in bytes.
        size: usize,
    },
}
