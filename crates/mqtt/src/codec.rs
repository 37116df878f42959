//! The `tokio_util` codec and its errors.

use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::packet::Packet;
use crate::{decode, encode};

/// Symmetric MQTT 3.1.1 codec: decodes and encodes every packet type, so it serves both a
/// server and a raw client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Codec {
    max_packet_size: usize,
}

impl Codec {
    /// A codec that rejects incoming packets whose remaining length (variable header plus
    /// payload) exceeds `max_packet_size` bytes.
    #[must_use]
    pub const fn new(max_packet_size: usize) -> Codec {
        Codec { max_packet_size }
    }

    /// The cap on an incoming packet's remaining length.
    #[must_use]
    pub const fn max_packet_size(&self) -> usize {
        self.max_packet_size
    }
}

/// Why incoming bytes are not a valid MQTT 3.1.1 packet. Every variant except `Io` means the
/// peer violated the protocol and the connection should be closed.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The remaining length exceeds the codec's cap.
    #[error("packet of {size} bytes exceeds the limit of {limit} bytes")]
    PacketTooLarge {
        /// Remaining length announced by the fixed header.
        size: usize,
        /// The codec's `max_packet_size`.
        limit: usize,
    },
    /// The remaining length uses more than four bytes.
    #[error("malformed remaining length")]
    MalformedRemainingLength,
    /// Control packet type 0 or 15 (reserved).
    #[error("invalid packet type {0}")]
    InvalidPacketType(u8),
    /// The fixed-header flags are not the ones the packet type requires.
    #[error("invalid flags {flags:#06b} for packet type {packet_type}")]
    InvalidFlags {
        /// Control packet type (high nibble of the first byte).
        packet_type: u8,
        /// Flags (low nibble of the first byte).
        flags: u8,
    },
    /// A QoS field holds 3.
    #[error("invalid QoS")]
    InvalidQoS,
    /// A string is not well-formed UTF-8 or contains U+0000 (§1.5.3).
    #[error("invalid UTF-8 string")]
    InvalidUtf8,
    /// The packet violates a structural rule of the specification.
    #[error("malformed packet: {0}")]
    MalformedPacket(&'static str),
    /// The underlying transport failed, or the stream ended inside a packet.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Why a packet cannot be encoded. Every variant except `Io` means the packet value itself
/// breaks an MQTT 3.1.1 rule; nothing is written in that case.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// A UTF-8 string field is longer than 65,535 bytes.
    #[error("string of {len} bytes exceeds 65535 bytes")]
    StringTooLong {
        /// Length of the offending string in bytes.
        len: usize,
    },
    /// A binary field (will payload, password) is longer than 65,535 bytes.
    #[error("binary field of {len} bytes exceeds 65535 bytes")]
    BinaryTooLong {
        /// Length of the offending field in bytes.
        len: usize,
    },
    /// The remaining length exceeds 268,435,455 bytes.
    #[error("packet of {size} bytes exceeds the MQTT maximum of 268435455 bytes")]
    PacketTooLarge {
        /// Remaining length the packet would need.
        size: usize,
    },
    /// The packet value is inconsistent (e.g. a QoS 1 publish without packet id).
    #[error("invalid packet: {0}")]
    InvalidPacket(&'static str),
    /// The underlying transport failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Decoder for Codec {
    type Item = Packet;
    type Error = DecodeError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Packet>, DecodeError> {
        let Some(header) = decode::parse_fixed_header(src, self.max_packet_size)? else {
            return Ok(None);
        };
        let frame_len = header.header_len + header.remaining_length;
        if src.len() < frame_len {
            // Bounded by max_packet_size: the header check above already passed.
            src.reserve(frame_len - src.len());
            return Ok(None);
        }
        let mut frame = src.split_to(frame_len);
        frame.advance(header.header_len);
        decode::decode_body(header.first_byte, frame.freeze()).map(Some)
    }
}

impl Encoder<&Packet> for Codec {
    type Error = EncodeError;

    fn encode(&mut self, packet: &Packet, dst: &mut BytesMut) -> Result<(), EncodeError> {
        encode::encode_packet(packet, dst)
    }
}

impl Encoder<Packet> for Codec {
    type Error = EncodeError;

    fn encode(&mut self, packet: Packet, dst: &mut BytesMut) -> Result<(), EncodeError> {
        encode::encode_packet(&packet, dst)
    }
}
