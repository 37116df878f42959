//! MQTT 3.1.1 packet types and a symmetric `tokio_util::codec` [`Decoder`](tokio_util::codec::Decoder)
//! and [`Encoder`](tokio_util::codec::Encoder).
//!
//! The decoder distinguishes an *incomplete* frame (`Ok(None)`: wait for more bytes) from an
//! *invalid* one (`Err`: close the connection). It validates the fixed header as soon as it is
//! read, so an oversized or ill-typed packet is rejected before its body is buffered.
//!
//! This crate knows nothing of Azure IoT Hub: no topic strings, no authentication.

mod codec;
mod decode;
mod encode;
mod packet;
pub mod topic;
mod wire;

pub use codec::{Codec, DecodeError, EncodeError};
pub use packet::{
    ConnAck, Connect, ConnectReturnCode, Packet, Publish, QoS, SubAck, Subscribe,
    SubscribeReturnCode, Unsubscribe, Will,
};
