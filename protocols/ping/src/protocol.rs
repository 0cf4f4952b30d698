//! The ping wire messages (protocol version 1) and their codec.
//!
//! Each frame of the negotiated substream carries one protobuf message:
//!
//! ```protobuf
//! message PingMessage {
//!   oneof body {            // the type tag; an unknown or missing body is an error
//!     Nonce ping = 1;
//!     Nonce pong = 2;
//!   }
//! }
//! message Nonce { fixed64 nonce = 1; }
//! ```
//!
//! A pong echoes the nonce of the ping it answers. The protocol version is
//! the one negotiated for the substream; within version 1 unknown fields are
//! ignored. A frame longer than [`MAX_MESSAGE_SIZE`] is rejected before it
//! is read.

use bytes::Bytes;
use prost::Message as _;

/// Largest ping frame accepted or sent, in bytes. Protects memory and CPU:
/// an encoded message is at most 13 bytes.
pub const MAX_MESSAGE_SIZE: usize = 64;

mod wire {
    //! The protobuf schema.

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct PingMessage {
        #[prost(oneof = "Body", tags = "1, 2")]
        pub(super) body: Option<Body>,
    }

    #[derive(Clone, PartialEq, prost::Oneof)]
    pub(super) enum Body {
        #[prost(message, tag = "1")]
        Ping(Nonce),
        #[prost(message, tag = "2")]
        Pong(Nonce),
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Nonce {
        #[prost(fixed64, tag = "1")]
        pub(super) nonce: u64,
    }
}

/// One ping message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PingMessage {
    /// Asks for a pong with the same nonce.
    Ping(u64),
    /// Answers the ping with this nonce.
    Pong(u64),
}

/// Why a frame is not a valid ping message. Blame: the remote; the ping
/// substream of that session is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The frame is longer than [`MAX_MESSAGE_SIZE`].
    #[error("ping message of {0} bytes exceeds {MAX_MESSAGE_SIZE}")]
    TooLarge(usize),
    /// The bytes are not valid protobuf for the schema.
    #[error("malformed ping message: {0}")]
    Malformed(#[from] prost::DecodeError),
    /// The message has no body this version knows (missing type tag).
    #[error("ping message of unknown type")]
    UnknownType,
}

impl PingMessage {
    /// Encodes the message.
    pub fn encode(&self) -> Bytes {
        let body = match *self {
            PingMessage::Ping(nonce) => wire::Body::Ping(wire::Nonce { nonce }),
            PingMessage::Pong(nonce) => wire::Body::Pong(wire::Nonce { nonce }),
        };
        Bytes::from(wire::PingMessage { body: Some(body) }.encode_to_vec())
    }

    /// Decodes one frame, checking its size first.
    pub fn decode(frame: &[u8]) -> Result<PingMessage, DecodeError> {
        if frame.len() > MAX_MESSAGE_SIZE {
            return Err(DecodeError::TooLarge(frame.len()));
        }
        match wire::PingMessage::decode(frame)?.body {
            Some(wire::Body::Ping(n)) => Ok(PingMessage::Ping(n.nonce)),
            Some(wire::Body::Pong(n)) => Ok(PingMessage::Pong(n.nonce)),
            None => Err(DecodeError::UnknownType),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The vectors printed in docs/PROTOCOL.md, section 7.2.
    #[test]
    fn documented_vectors() {
        let ping = PingMessage::Ping(0x0102_0304_0506_0708);
        assert_eq!(hex(&ping.encode()), "0a09090807060504030201");
        let pong = PingMessage::Pong(0x0102_0304_0506_0708);
        assert_eq!(hex(&pong.encode()), "1209090807060504030201");
        // Nonce 0 encodes as an empty Nonce message.
        assert_eq!(hex(&PingMessage::Ping(0).encode()), "0a00");
        for m in [ping, pong, PingMessage::Ping(0)] {
            assert_eq!(PingMessage::decode(&m.encode()), Ok(m));
        }
    }

    #[test]
    fn rejects_garbage_unknown_types_and_oversize() {
        assert!(matches!(
            PingMessage::decode(&[0xff, 0xff, 0xff]),
            Err(DecodeError::Malformed(_))
        ));
        // An empty message, and one with only an unknown field (tag 3).
        assert_eq!(PingMessage::decode(&[]), Err(DecodeError::UnknownType));
        assert_eq!(
            PingMessage::decode(&[0x18, 0x01]),
            Err(DecodeError::UnknownType)
        );
        assert_eq!(
            PingMessage::decode(&[0u8; MAX_MESSAGE_SIZE + 1]),
            Err(DecodeError::TooLarge(MAX_MESSAGE_SIZE + 1))
        );
        // Unknown fields inside a known body are ignored.
        assert_eq!(
            PingMessage::decode(&[0x0a, 0x02, 0x18, 0x01]),
            Ok(PingMessage::Ping(0))
        );
    }
}
