//! The Azure IoT Hub wire grammar: device MQTT topics and usernames, property bags, connection
//! strings, the service REST JSON shapes and the error codes with their body formats.
//!
//! This is the only crate that knows Azure's topic strings and JSON member names. It does no I/O.

pub mod connection_string;
pub mod error;
pub mod property_bag;
pub mod rest;
pub mod topics;
pub mod username;

pub use connection_string::{ConnectionString, ConnectionStringError};
pub use error::{ERROR_CODE_HEADER, ErrorCode, mqtt_error_body, rest_error_body};
pub use property_bag::PropertyBag;
pub use topics::{
    DevicePublish, Subscription, TopicError, parse_device_publish, parse_subscription,
};
pub use username::{ConnectUsername, UsernameError, parse_client_id, parse_username};
