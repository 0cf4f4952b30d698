//! The reachability messages (version 1) and their codec.
//!
//! `/shoal/reach` is framed (one protobuf message per frame, section 6.3
//! of `docs/PROTOCOL.md`):
//!
//! ```protobuf
//! message ReachMessage {
//!   oneof body {            // the type tag; none known is an error
//!     Check  check  = 1;    // requester → checker
//!     Result result = 2;    // checker → requester
//!   }
//! }
//! message Check  { fixed64 nonce = 1; string addr = 2; }  // addr: /ip4|ip6/<ip>/tcp/<port>
//! message Result { fixed64 nonce = 1; uint32 code = 2; }  // see ResultCode
//! ```
//!
//! `/shoal/reach/back` is raw: on a connection the checker opened to the
//! address, it writes the check's nonce (8 bytes, big-endian); the
//! requester writes the same 8 bytes back, and both close.

use bytes::Bytes;
use prost::Message as _;
use shoal_transport::{Multiaddr, Protocol};

/// Largest `/shoal/reach` frame accepted or sent. An encoded message is
/// under 300 bytes (an address is at most 256).
pub const MAX_MESSAGE_SIZE: usize = 512;

/// Longest address text a check may carry.
pub const MAX_ADDR_LEN: usize = 256;

mod wire {
    //! The protobuf schema.

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct ReachMessage {
        #[prost(oneof = "Body", tags = "1, 2")]
        pub(super) body: Option<Body>,
    }

    #[derive(Clone, PartialEq, prost::Oneof)]
    pub(super) enum Body {
        #[prost(message, tag = "1")]
        Check(Check),
        #[prost(message, tag = "2")]
        Result(Result),
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Check {
        #[prost(fixed64, tag = "1")]
        pub(super) nonce: u64,
        #[prost(string, tag = "2")]
        pub(super) addr: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Result {
        #[prost(fixed64, tag = "1")]
        pub(super) nonce: u64,
        #[prost(uint32, tag = "2")]
        pub(super) code: u32,
    }
}

/// What a checker found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultCode {
    /// Code 0: it connected to the address and the nonce came back.
    Reached,
    /// Code 1: it could not connect, or the nonce did not come back.
    Unreachable,
    /// Code 2: it does not dial that address (not the requester's own IP,
    /// not a TCP address, a relayed session).
    Refused,
    /// Code 3: it checks too many addresses now; ask another.
    Busy,
    /// Any other code.
    Other(u32),
}

impl ResultCode {
    /// The number on the wire.
    pub fn code(self) -> u32 {
        match self {
            ResultCode::Reached => 0,
            ResultCode::Unreachable => 1,
            ResultCode::Refused => 2,
            ResultCode::Busy => 3,
            ResultCode::Other(code) => code,
        }
    }

    /// The code for a number from the wire.
    pub fn from_code(code: u32) -> ResultCode {
        match code {
            0 => ResultCode::Reached,
            1 => ResultCode::Unreachable,
            2 => ResultCode::Refused,
            3 => ResultCode::Busy,
            other => ResultCode::Other(other),
        }
    }
}

/// One `/shoal/reach` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReachMessage {
    /// Asks the receiver to dial `addr` back on a new connection and send
    /// `nonce` there.
    Check {
        /// Echoed on the dial-back and in the result.
        nonce: u64,
        /// The address to check: the requester's IP (as the checker sees
        /// the session) and a TCP port.
        addr: Multiaddr,
    },
    /// The outcome of the check with `nonce`.
    Result {
        /// The check's nonce.
        nonce: u64,
        /// What the checker found.
        code: ResultCode,
    },
}

/// Why a frame is not a valid reach message. Blame: the remote; only its
/// reach substream is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The frame is longer than [`MAX_MESSAGE_SIZE`].
    #[error("reach message of {0} bytes exceeds {MAX_MESSAGE_SIZE}")]
    TooLarge(usize),
    /// The bytes are not valid protobuf for the schema.
    #[error("malformed reach message: {0}")]
    Malformed(#[from] prost::DecodeError),
    /// The message has no body this version knows.
    #[error("reach message of unknown type")]
    UnknownType,
    /// The address does not parse, is too long, or is not `ip/tcp`.
    #[error("a check of an address that is not /ip4|ip6/…/tcp/…")]
    Address,
}

/// Whether `addr` is exactly `/ip4|ip6/<ip>/tcp/<port>` with a port.
pub fn is_checkable(addr: &Multiaddr) -> bool {
    let parts: Vec<&Protocol> = addr.iter().collect();
    matches!(
        parts.as_slice(),
        [Protocol::Ip4(_) | Protocol::Ip6(_), Protocol::Tcp(port)] if *port != 0
    )
}

impl ReachMessage {
    /// Encodes the message (one frame's payload).
    pub fn encode(&self) -> Bytes {
        let body = match self {
            ReachMessage::Check { nonce, addr } => wire::Body::Check(wire::Check {
                nonce: *nonce,
                addr: addr.to_string(),
            }),
            ReachMessage::Result { nonce, code } => wire::Body::Result(wire::Result {
                nonce: *nonce,
                code: code.code(),
            }),
        };
        Bytes::from(wire::ReachMessage { body: Some(body) }.encode_to_vec())
    }

    /// Decodes one frame, checking every bound.
    pub fn decode(frame: &[u8]) -> Result<ReachMessage, DecodeError> {
        if frame.len() > MAX_MESSAGE_SIZE {
            return Err(DecodeError::TooLarge(frame.len()));
        }
        match wire::ReachMessage::decode(frame)?.body {
            Some(wire::Body::Check(c)) => {
                if c.addr.len() > MAX_ADDR_LEN {
                    return Err(DecodeError::Address);
                }
                let addr: Multiaddr = c.addr.parse().map_err(|_| DecodeError::Address)?;
                if !is_checkable(&addr) {
                    return Err(DecodeError::Address);
                }
                Ok(ReachMessage::Check {
                    nonce: c.nonce,
                    addr,
                })
            }
            Some(wire::Body::Result(r)) => Ok(ReachMessage::Result {
                nonce: r.nonce,
                code: ResultCode::from_code(r.code),
            }),
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

    #[test]
    fn vectors() {
        let check = ReachMessage::Check {
            nonce: 0x0102_0304_0506_0708,
            addr: "/ip4/198.51.100.7/tcp/4001".parse().unwrap(),
        };
        assert_eq!(
            hex(&check.encode()),
            "0a25090807060504030201121a2f6970342f3139382e35312e3130302e372f7463702f34303031"
        );
        let result = ReachMessage::Result {
            nonce: 0x0102_0304_0506_0708,
            code: ResultCode::Unreachable,
        };
        assert_eq!(hex(&result.encode()), "120b0908070605040302011001");
        for m in [check, result] {
            assert_eq!(ReachMessage::decode(&m.encode()).unwrap(), m);
        }
    }

    #[test]
    fn only_plain_tcp_addresses_are_checked() {
        let check = |addr: &str| {
            wire::ReachMessage {
                body: Some(wire::Body::Check(wire::Check {
                    nonce: 1,
                    addr: addr.to_owned(),
                })),
            }
            .encode_to_vec()
        };
        for bad in [
            "/dns4/example.org/tcp/1",
            "/ip4/1.2.3.4/tcp/0",
            "/ip4/1.2.3.4",
            "/memory/4",
            "/ip4/1.2.3.4/tcp/1/p2p-circuit",
            "not an address",
        ] {
            assert_eq!(
                ReachMessage::decode(&check(bad)),
                Err(DecodeError::Address),
                "{bad}"
            );
        }
        assert!(ReachMessage::decode(&check("/ip6/2001:db8::1/tcp/9")).is_ok());
        assert_eq!(ReachMessage::decode(&[]), Err(DecodeError::UnknownType));
        assert!(matches!(
            ReachMessage::decode(&[0; MAX_MESSAGE_SIZE + 1]),
            Err(DecodeError::TooLarge(_))
        ));
    }
}
