//! Feeds arbitrary bytes to the MQTT decoder as one connection's receive buffer: it must never
//! panic, whatever it returns.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;
use twinhub_mqtt::Codec;

fuzz_target!(|data: &[u8]| {
    let mut codec = Codec::new(256 * 1024);
    let mut buffer = BytesMut::from(data);
    while let Ok(Some(_packet)) = codec.decode(&mut buffer) {}
});
