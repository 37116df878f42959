//! Helpers shared by the codec test binaries.

use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};
use twinhub_mqtt::{Codec, DecodeError, Packet};

/// Limit used by the tests unless one checks the limit itself.
pub(crate) const TEST_LIMIT: usize = 1024 * 1024;

/// Encodes one packet with a fresh codec.
pub(crate) fn encode(packet: &Packet) -> Vec<u8> {
    let mut buffer = BytesMut::new();
    Codec::new(TEST_LIMIT)
        .encode(packet, &mut buffer)
        .expect("packet encodes");
    buffer.to_vec()
}

/// Decodes every packet in `bytes` given all at once; fails if bytes are left over.
pub(crate) fn decode_all(bytes: &[u8]) -> Result<Vec<Packet>, DecodeError> {
    decode_all_with(Codec::new(TEST_LIMIT), bytes)
}

/// Like `decode_all` with a chosen codec.
pub(crate) fn decode_all_with(mut codec: Codec, bytes: &[u8]) -> Result<Vec<Packet>, DecodeError> {
    let mut buffer = BytesMut::from(bytes);
    let mut packets = Vec::new();
    while let Some(packet) = codec.decode(&mut buffer)? {
        packets.push(packet);
    }
    assert!(buffer.is_empty(), "{} bytes left undecoded", buffer.len());
    Ok(packets)
}

/// Decodes `bytes` arriving one byte at a time, as a slow network would deliver them.
pub(crate) fn decode_byte_by_byte(bytes: &[u8]) -> Result<Vec<Packet>, DecodeError> {
    let mut codec = Codec::new(TEST_LIMIT);
    let mut buffer = BytesMut::new();
    let mut packets = Vec::new();
    for &byte in bytes {
        buffer.extend_from_slice(&[byte]);
        while let Some(packet) = codec.decode(&mut buffer)? {
            packets.push(packet);
        }
    }
    assert!(buffer.is_empty(), "{} bytes left undecoded", buffer.len());
    Ok(packets)
}
