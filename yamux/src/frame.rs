//! The yamux frame header: twelve bytes, big-endian, exactly as in the
//! [yamux specification](https://github.com/hashicorp/yamux/blob/master/spec.md#framing).
//!
//! ```text
//!  0        1        2        3        4        5        6        7        8        9       10       11
//! +--------+--------+--------+--------+--------+--------+--------+--------+--------+--------+--------+--------+
//! |version |  type  |      flags      |             stream id             |              length               |
//! +--------+--------+--------+--------+--------+--------+--------+--------+--------+--------+--------+--------+
//! ```
//!
//! This module checks only frame-local rules (version, known type, a bound on
//! a Data frame's payload length). Stream and window semantics live in the
//! connection core.
//!
//! ```
//! use shoal_yamux::frame::{decode_header, Flags, FrameType, Header};
//! use shoal_yamux::StreamId;
//!
//! // A Data frame opening stream 1 with a five-byte payload.
//! let bytes = [0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x05];
//! let header = decode_header(&bytes).unwrap();
//! assert_eq!(header, Header::new(FrameType::Data, Flags::SYN, StreamId::new(1), 5));
//! ```

use std::fmt;

use bytes::BufMut;

use crate::StreamId;

/// Size of the fixed frame header in bytes.
pub const HEADER_LEN: usize = 12;

/// The only protocol version defined by the specification.
pub const PROTOCOL_VERSION: u8 = 0;

/// The four frame types of the specification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameType {
    /// Type `0x0`: carries stream payload; `length` is the payload size.
    Data,
    /// Type `0x1`: grants send credit; `length` is the window delta.
    WindowUpdate,
    /// Type `0x2`: ping / pong on stream 0; `length` is an opaque value.
    Ping,
    /// Type `0x3`: session termination on stream 0; `length` is a [`GoAwayCode`].
    GoAway,
}

impl FrameType {
    /// The wire value of this type.
    pub fn to_u8(self) -> u8 {
        match self {
            FrameType::Data => 0,
            FrameType::WindowUpdate => 1,
            FrameType::Ping => 2,
            FrameType::GoAway => 3,
        }
    }

    /// Parses a wire value; `None` for types the specification does not define.
    pub fn from_u8(value: u8) -> Option<Self> {
        match value {
            0 => Some(FrameType::Data),
            1 => Some(FrameType::WindowUpdate),
            2 => Some(FrameType::Ping),
            3 => Some(FrameType::GoAway),
            _ => None,
        }
    }
}

/// The header flags, a big-endian `u16` bit set.
///
/// Undefined bits are preserved on decode and ignored by the connection core.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(u16);

impl Flags {
    /// No flag set.
    pub const NONE: Flags = Flags(0);
    /// `0x1`: opens a stream, or marks a ping request.
    pub const SYN: Flags = Flags(0x1);
    /// `0x2`: acknowledges a stream opening, or marks a ping response.
    pub const ACK: Flags = Flags(0x2);
    /// `0x4`: half-closes the sender's direction of a stream.
    pub const FIN: Flags = Flags(0x4);
    /// `0x8`: resets (abruptly closes) a stream.
    pub const RST: Flags = Flags(0x8);

    /// Builds flags from their wire value.
    pub const fn from_bits(bits: u16) -> Self {
        Flags(bits)
    }

    /// The wire value.
    pub const fn bits(self) -> u16 {
        self.0
    }

    /// Whether every bit of `other` is set in `self`.
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether no bit is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl std::ops::BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        Flags(self.0 | rhs.0)
    }
}

impl std::ops::BitOrAssign for Flags {
    fn bitor_assign(&mut self, rhs: Flags) {
        self.0 |= rhs.0;
    }
}

impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (Flags::SYN, "SYN"),
            (Flags::ACK, "ACK"),
            (Flags::FIN, "FIN"),
            (Flags::RST, "RST"),
        ];
        let mut first = true;
        for (flag, name) in names {
            if self.contains(flag) {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        let unknown = self.0 & !0xf;
        if unknown != 0 {
            if !first {
                f.write_str("|")?;
            }
            write!(f, "{unknown:#x}")?;
            first = false;
        }
        if first {
            f.write_str("-")?;
        }
        Ok(())
    }
}

/// Reason code carried in the `length` field of a GoAway frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GoAwayCode {
    /// `0x0`: normal termination.
    Normal,
    /// `0x1`: the receiver saw a protocol error.
    ProtocolError,
    /// `0x2`: the sender hit an internal error.
    InternalError,
    /// A code the specification does not define, kept verbatim.
    Unknown(u32),
}

impl GoAwayCode {
    /// The wire value.
    pub fn to_u32(self) -> u32 {
        match self {
            GoAwayCode::Normal => 0,
            GoAwayCode::ProtocolError => 1,
            GoAwayCode::InternalError => 2,
            GoAwayCode::Unknown(code) => code,
        }
    }

    /// Parses a wire value.
    pub fn from_u32(value: u32) -> Self {
        match value {
            0 => GoAwayCode::Normal,
            1 => GoAwayCode::ProtocolError,
            2 => GoAwayCode::InternalError,
            other => GoAwayCode::Unknown(other),
        }
    }
}

impl fmt::Display for GoAwayCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GoAwayCode::Normal => f.write_str("normal"),
            GoAwayCode::ProtocolError => f.write_str("protocol error"),
            GoAwayCode::InternalError => f.write_str("internal error"),
            GoAwayCode::Unknown(code) => write!(f, "unknown code {code:#x}"),
        }
    }
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    /// The frame type.
    pub frame_type: FrameType,
    /// The flags.
    pub flags: Flags,
    /// The stream id (0 for session-level frames).
    pub stream_id: StreamId,
    /// Payload length (Data), window delta (WindowUpdate), opaque value
    /// (Ping) or reason code (GoAway).
    pub length: u32,
}

impl Header {
    /// Builds a header for protocol version 0.
    pub const fn new(
        frame_type: FrameType,
        flags: Flags,
        stream_id: StreamId,
        length: u32,
    ) -> Self {
        Header {
            frame_type,
            flags,
            stream_id,
            length,
        }
    }

    /// A Data header announcing `len` payload bytes.
    pub const fn data(flags: Flags, stream_id: StreamId, len: u32) -> Self {
        Header::new(FrameType::Data, flags, stream_id, len)
    }

    /// A WindowUpdate header granting `delta` bytes.
    pub const fn window_update(flags: Flags, stream_id: StreamId, delta: u32) -> Self {
        Header::new(FrameType::WindowUpdate, flags, stream_id, delta)
    }

    /// A Ping header (request when `flags` is SYN, response when ACK).
    pub const fn ping(flags: Flags, opaque: u32) -> Self {
        Header::new(FrameType::Ping, flags, StreamId::CONNECTION, opaque)
    }

    /// A GoAway header.
    pub fn go_away(code: GoAwayCode) -> Self {
        Header::new(
            FrameType::GoAway,
            Flags::NONE,
            StreamId::CONNECTION,
            code.to_u32(),
        )
    }

    /// Appends the 12 header bytes to `dst`.
    pub fn encode<B: BufMut>(&self, dst: &mut B) {
        dst.put_u8(PROTOCOL_VERSION);
        dst.put_u8(self.frame_type.to_u8());
        dst.put_u16(self.flags.bits());
        dst.put_u32(self.stream_id.get());
        dst.put_u32(self.length);
    }

    /// The header as an array.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        let mut slice = &mut out[..];
        self.encode(&mut slice);
        out
    }

    /// Decodes a header and checks that a Data frame's payload is at most
    /// `max_data_len` bytes.
    ///
    /// The check is frame-local; whether the length fits the stream's
    /// receive window is the connection's business.
    pub fn decode(bytes: &[u8], max_data_len: u32) -> Result<Header, FrameError> {
        let header = decode_header(bytes)?;
        if header.frame_type == FrameType::Data && header.length > max_data_len {
            return Err(FrameError::DataTooLarge {
                len: header.length,
                max: max_data_len,
            });
        }
        Ok(header)
    }
}

/// Decodes the first [`HEADER_LEN`] bytes of `bytes` without any length bound.
///
/// Fails on short input, a version other than 0 and an undefined type. This
/// is the entry point for fuzzing.
pub fn decode_header(bytes: &[u8]) -> Result<Header, FrameError> {
    let Some(raw) = bytes.get(..HEADER_LEN) else {
        return Err(FrameError::Truncated { len: bytes.len() });
    };
    let version = raw[0];
    if version != PROTOCOL_VERSION {
        return Err(FrameError::UnsupportedVersion(version));
    }
    let frame_type = FrameType::from_u8(raw[1]).ok_or(FrameError::UnknownType(raw[1]))?;
    let flags = Flags(u16::from_be_bytes([raw[2], raw[3]]));
    let stream_id = StreamId::new(u32::from_be_bytes([raw[4], raw[5], raw[6], raw[7]]));
    let length = u32::from_be_bytes([raw[8], raw[9], raw[10], raw[11]]);
    Ok(Header {
        frame_type,
        flags,
        stream_id,
        length,
    })
}

/// A header that cannot be decoded. Always the remote's fault; the
/// connection answers with GoAway(protocol error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Fewer than [`HEADER_LEN`] bytes were given.
    #[error("frame header truncated: {len} of 12 bytes")]
    Truncated {
        /// Bytes available.
        len: usize,
    },
    /// The version byte is not 0.
    #[error("unsupported yamux version {0}")]
    UnsupportedVersion(u8),
    /// The type byte is not one of the four defined types.
    #[error("unknown frame type {0:#x}")]
    UnknownType(u8),
    /// A Data frame announced more payload than we accept.
    #[error("data frame of {len} bytes exceeds the limit of {max}")]
    DataTooLarge {
        /// The announced length.
        len: u32,
        /// The configured bound.
        max: u32,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_syn_vector() {
        let h = Header::data(Flags::SYN, StreamId::new(1), 5);
        assert_eq!(
            h.to_bytes(),
            [
                0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x05
            ]
        );
        assert_eq!(decode_header(&h.to_bytes()).unwrap(), h);
    }

    #[test]
    fn window_update_ack_vector() {
        let h = Header::window_update(Flags::ACK, StreamId::new(2), 0x0004_0000);
        assert_eq!(
            h.to_bytes(),
            [
                0x00, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00, 0x02, 0x00, 0x04, 0x00, 0x00
            ]
        );
    }

    #[test]
    fn ping_and_go_away_vectors() {
        let ping = Header::ping(Flags::SYN, 0xdead_beef);
        assert_eq!(
            ping.to_bytes(),
            [0x00, 0x02, 0x00, 0x01, 0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef]
        );
        let go_away = Header::go_away(GoAwayCode::ProtocolError);
        assert_eq!(
            go_away.to_bytes(),
            [0x00, 0x03, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]
        );
        let decoded = decode_header(&go_away.to_bytes()).unwrap();
        assert_eq!(
            GoAwayCode::from_u32(decoded.length),
            GoAwayCode::ProtocolError
        );
    }

    #[test]
    fn rejects_bad_version_type_and_short_input() {
        let mut bytes = Header::data(Flags::NONE, StreamId::new(1), 0).to_bytes();
        assert_eq!(
            decode_header(&bytes[..11]),
            Err(FrameError::Truncated { len: 11 })
        );
        bytes[1] = 4;
        assert_eq!(decode_header(&bytes), Err(FrameError::UnknownType(4)));
        bytes[1] = 0;
        bytes[0] = 1;
        assert_eq!(
            decode_header(&bytes),
            Err(FrameError::UnsupportedVersion(1))
        );
    }

    #[test]
    fn data_length_bound_is_frame_local() {
        let data = Header::data(Flags::NONE, StreamId::new(1), 100).to_bytes();
        assert_eq!(
            Header::decode(&data, 99),
            Err(FrameError::DataTooLarge { len: 100, max: 99 })
        );
        assert!(Header::decode(&data, 100).is_ok());
        // The bound does not apply to window updates.
        let wu = Header::window_update(Flags::NONE, StreamId::new(1), 100).to_bytes();
        assert!(Header::decode(&wu, 1).is_ok());
    }

    #[test]
    fn flags_debug() {
        assert_eq!(format!("{:?}", Flags::SYN | Flags::FIN), "SYN|FIN");
        assert_eq!(format!("{:?}", Flags::NONE), "-");
    }
}
