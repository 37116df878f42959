//! Numeric constants of the MQTT 3.1.1 wire format shared by the decoder and the encoder.

/// Control packet types (high nibble of the first byte, §2.2.1).
pub(crate) mod packet_type {
    pub(crate) const CONNECT: u8 = 1;
    pub(crate) const CONNACK: u8 = 2;
    pub(crate) const PUBLISH: u8 = 3;
    pub(crate) const PUBACK: u8 = 4;
    pub(crate) const PUBREC: u8 = 5;
    pub(crate) const PUBREL: u8 = 6;
    pub(crate) const PUBCOMP: u8 = 7;
    pub(crate) const SUBSCRIBE: u8 = 8;
    pub(crate) const SUBACK: u8 = 9;
    pub(crate) const UNSUBSCRIBE: u8 = 10;
    pub(crate) const UNSUBACK: u8 = 11;
    pub(crate) const PINGREQ: u8 = 12;
    pub(crate) const PINGRESP: u8 = 13;
    pub(crate) const DISCONNECT: u8 = 14;
}

/// Fixed-header flags required on PUBREL, SUBSCRIBE and UNSUBSCRIBE (§2.2.2).
pub(crate) const REQUIRED_FLAGS_0010: u8 = 0b0010;

/// PUBLISH fixed-header flag bits (§3.3.1).
pub(crate) mod publish_flags {
    pub(crate) const DUP: u8 = 0b1000;
    pub(crate) const QOS_SHIFT: u8 = 1;
    pub(crate) const RETAIN: u8 = 0b0001;
}

/// CONNECT flag bits (§3.1.2.3).
pub(crate) mod connect_flags {
    pub(crate) const RESERVED: u8 = 0b0000_0001;
    pub(crate) const CLEAN_SESSION: u8 = 0b0000_0010;
    pub(crate) const WILL: u8 = 0b0000_0100;
    pub(crate) const WILL_QOS_SHIFT: u8 = 3;
    pub(crate) const WILL_RETAIN: u8 = 0b0010_0000;
    pub(crate) const PASSWORD: u8 = 0b0100_0000;
    pub(crate) const USERNAME: u8 = 0b1000_0000;
}

/// CONNACK acknowledge flag: the server resumed a session (§3.2.2.2).
pub(crate) const CONNACK_SESSION_PRESENT: u8 = 0b0000_0001;

/// Largest remaining length the four-byte encoding can express (§2.2.3).
pub(crate) const MAX_REMAINING_LENGTH: usize = 268_435_455;
