//! The identify wire message (protocol version 1) and its codec.
//!
//! Each side sends exactly one frame on the negotiated substream:
//!
//! ```protobuf
//! message IdentifyMessage {
//!   oneof body {                      // the type tag; unknown/missing is an error
//!     Identify identify = 1;
//!   }
//! }
//! message Identify {
//!   string agent_version = 1;         // ≤ MAX_AGENT_LEN bytes
//!   repeated string listen_addrs = 2; // ≤ MAX_LISTEN_ADDRS, each ≤ MAX_ADDR_LEN, multiaddr text
//!   repeated string protocols = 3;    // ≤ MAX_PROTOCOLS names, each ≤ MAX_PROTOCOL_NAME_LEN
//!   string observed_addr = 4;         // where the sender sees the receiver; may be empty
//!   bytes signed_record = 5;          // a SignedPeerRecord envelope (see `record`)
//! }
//! ```
//!
//! Bounds are checked in this order: the frame size (before it is read, by
//! the service), then each count and length after protobuf decoding (which
//! allocates at most the frame size), then the record's signature.
//! Addresses that do not parse are skipped, not errors: they may be address
//! kinds of a newer implementation.

use bytes::Bytes;
use prost::Message as _;
use shoal_transport::Multiaddr;

use crate::record::{MAX_ADDR_LEN, RecordError, SignedPeerRecord, parse_addrs};

/// Largest identify frame accepted or sent. Protects memory: the bounds
/// below add up to about 18 KiB.
pub const MAX_MESSAGE_SIZE: usize = 32 * 1024;

/// Longest agent version, in bytes.
pub const MAX_AGENT_LEN: usize = 128;

/// Most listen addresses in one message.
pub const MAX_LISTEN_ADDRS: usize = 16;

/// Most protocol names in one message.
pub const MAX_PROTOCOLS: usize = 64;

/// Longest protocol name, in bytes (as in negotiation).
pub const MAX_PROTOCOL_NAME_LEN: usize = shoal::negotiation::MAX_PROTOCOL_NAME_LEN;

mod wire {
    //! The protobuf schema.

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct IdentifyMessage {
        #[prost(oneof = "Body", tags = "1")]
        pub(super) body: Option<Body>,
    }

    #[derive(Clone, PartialEq, prost::Oneof)]
    pub(super) enum Body {
        #[prost(message, tag = "1")]
        Identify(Identify),
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Identify {
        #[prost(string, tag = "1")]
        pub(super) agent_version: String,
        #[prost(string, repeated, tag = "2")]
        pub(super) listen_addrs: Vec<String>,
        #[prost(string, repeated, tag = "3")]
        pub(super) protocols: Vec<String>,
        #[prost(string, tag = "4")]
        pub(super) observed_addr: String,
        #[prost(bytes = "bytes", tag = "5")]
        pub(super) signed_record: bytes::Bytes,
    }
}

/// What a peer says about itself in its identify message, with its signed
/// record verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentifyInfo {
    /// Free text naming the implementation, e.g. `shoal/0.1.0`.
    pub agent_version: String,
    /// The addresses it listens on (its claim).
    pub listen_addrs: Vec<Multiaddr>,
    /// Names of the protocols it supports.
    pub protocols: Vec<String>,
    /// The address at which it sees us, if it said.
    pub observed_addr: Option<Multiaddr>,
    /// Its signed peer record, signature verified.
    pub record: SignedPeerRecord,
}

/// Why an identify frame was rejected. Blame: the remote; the identify
/// substream of that session is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The frame is longer than [`MAX_MESSAGE_SIZE`].
    #[error("identify message of {0} bytes exceeds {MAX_MESSAGE_SIZE}")]
    TooLarge(usize),
    /// The bytes are not valid protobuf for the schema.
    #[error("malformed identify message: {0}")]
    Malformed(#[from] prost::DecodeError),
    /// No body this version knows (missing type tag).
    #[error("identify message of unknown type")]
    UnknownType,
    /// A field is over its bound.
    #[error("identify field {field} over its limit ({len} > {max})")]
    OverLimit {
        /// Which field.
        field: &'static str,
        /// Its count or length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The signed record is missing or invalid.
    #[error("identify peer record: {0}")]
    Record(#[from] RecordError),
}

fn bound(field: &'static str, len: usize, max: usize) -> Result<(), DecodeError> {
    if len > max {
        return Err(DecodeError::OverLimit { field, len, max });
    }
    Ok(())
}

impl IdentifyInfo {
    /// Encodes the message. Fields over their bound are truncated (addresses
    /// and protocol names over their length are left out), so what is sent
    /// always decodes.
    pub fn encode(&self) -> Bytes {
        let mut agent = self.agent_version.clone();
        while agent.len() > MAX_AGENT_LEN {
            agent.pop();
        }
        let texts = |addrs: &[Multiaddr]| -> Vec<String> {
            addrs
                .iter()
                .map(|a| a.to_string())
                .filter(|t| t.len() <= MAX_ADDR_LEN)
                .take(MAX_LISTEN_ADDRS)
                .collect()
        };
        let observed = self
            .observed_addr
            .as_ref()
            .map(|a| a.to_string())
            .filter(|t| t.len() <= MAX_ADDR_LEN)
            .unwrap_or_default();
        let message = wire::IdentifyMessage {
            body: Some(wire::Body::Identify(wire::Identify {
                agent_version: agent,
                listen_addrs: texts(&self.listen_addrs),
                protocols: self
                    .protocols
                    .iter()
                    .filter(|p| p.len() <= MAX_PROTOCOL_NAME_LEN)
                    .take(MAX_PROTOCOLS)
                    .cloned()
                    .collect(),
                observed_addr: observed,
                signed_record: self.record.to_bytes(),
            })),
        };
        Bytes::from(message.encode_to_vec())
    }

    /// Decodes and checks one frame, verifying the signed record (but not
    /// who signed it: the caller compares that with the session's peer).
    pub fn decode(frame: &[u8]) -> Result<IdentifyInfo, DecodeError> {
        bound("message", frame.len(), MAX_MESSAGE_SIZE)
            .map_err(|_| DecodeError::TooLarge(frame.len()))?;
        let Some(wire::Body::Identify(m)) = wire::IdentifyMessage::decode(frame)?.body else {
            return Err(DecodeError::UnknownType);
        };
        bound("agent_version", m.agent_version.len(), MAX_AGENT_LEN)?;
        bound("listen_addrs", m.listen_addrs.len(), MAX_LISTEN_ADDRS)?;
        bound("protocols", m.protocols.len(), MAX_PROTOCOLS)?;
        bound("observed_addr", m.observed_addr.len(), MAX_ADDR_LEN)?;
        for a in &m.listen_addrs {
            bound("listen_addr", a.len(), MAX_ADDR_LEN)?;
        }
        for p in &m.protocols {
            bound("protocol", p.len(), MAX_PROTOCOL_NAME_LEN)?;
        }
        let record = SignedPeerRecord::from_bytes(&m.signed_record)?;
        let observed_addr = if m.observed_addr.is_empty() {
            None
        } else {
            parse_addrs(std::slice::from_ref(&m.observed_addr)).pop()
        };
        Ok(IdentifyInfo {
            agent_version: m.agent_version,
            listen_addrs: parse_addrs(&m.listen_addrs),
            protocols: m.protocols,
            observed_addr,
            record,
        })
    }
}

#[cfg(test)]
mod tests {
    use shoal_identity::Keypair;

    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn info() -> IdentifyInfo {
        let key = Keypair::from_secret_bytes(&[1u8; 32]);
        let addr: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();
        IdentifyInfo {
            agent_version: "shoal/0.1.0".into(),
            listen_addrs: vec![addr.clone()],
            protocols: vec!["/shoal/ping".into()],
            observed_addr: Some("/ip4/10.0.0.2/tcp/5000".parse().unwrap()),
            record: SignedPeerRecord::sign(&key, 1_700_000_000_000, vec![addr]).unwrap(),
        }
    }

    /// The vector printed in docs/PROTOCOL.md, section 7.3.
    #[test]
    fn documented_vector() {
        let info = info();
        let bytes = info.encode();
        assert_eq!(
            hex(&bytes[..]),
            "0afa01\
             0a0b73686f616c2f302e312e30\
             12172f6970342f3132372e302e302e312f7463702f34303031\
             1a0b2f73686f616c2f70696e67\
             22162f6970342f31302e302e302e322f7463702f35303030\
             2aac01"
                .to_owned()
                + &hex(&info.record.to_bytes())
        );
        assert_eq!(IdentifyInfo::decode(&bytes).unwrap(), info);
    }

    #[test]
    fn rejects_over_limit_fields_garbage_and_bad_records() {
        let mut big = info();
        let encode_raw = |m: wire::Identify| {
            wire::IdentifyMessage {
                body: Some(wire::Body::Identify(m)),
            }
            .encode_to_vec()
        };
        let good = wire::Identify {
            agent_version: big.agent_version.clone(),
            listen_addrs: vec![],
            protocols: vec![],
            observed_addr: String::new(),
            signed_record: big.record.to_bytes(),
        };
        let over = wire::Identify {
            protocols: vec!["p".into(); MAX_PROTOCOLS + 1],
            ..good.clone()
        };
        assert!(matches!(
            IdentifyInfo::decode(&encode_raw(over)),
            Err(DecodeError::OverLimit {
                field: "protocols",
                ..
            })
        ));
        let long_agent = wire::Identify {
            agent_version: "x".repeat(MAX_AGENT_LEN + 1),
            ..good.clone()
        };
        assert!(matches!(
            IdentifyInfo::decode(&encode_raw(long_agent)),
            Err(DecodeError::OverLimit { .. })
        ));
        let no_record = wire::Identify {
            signed_record: Bytes::new(),
            ..good.clone()
        };
        assert!(matches!(
            IdentifyInfo::decode(&encode_raw(no_record)),
            Err(DecodeError::Record(_))
        ));
        // Unparseable addresses are skipped, not errors.
        let odd_addr = wire::Identify {
            listen_addrs: vec!["/quic-v9/1".into(), "/memory/3".into()],
            ..good
        };
        let decoded = IdentifyInfo::decode(&encode_raw(odd_addr)).unwrap();
        assert_eq!(decoded.listen_addrs, vec!["/memory/3".parse().unwrap()]);
        assert!(matches!(
            IdentifyInfo::decode(&[0xff, 0x01]),
            Err(DecodeError::Malformed(_))
        ));
        assert_eq!(IdentifyInfo::decode(&[]), Err(DecodeError::UnknownType));
        // Encoding truncates what would not decode.
        big.agent_version = "y".repeat(500);
        big.protocols = vec!["q".into(); 100];
        let back = IdentifyInfo::decode(&big.encode()).unwrap();
        assert_eq!(back.agent_version.len(), MAX_AGENT_LEN);
        assert_eq!(back.protocols.len(), MAX_PROTOCOLS);
    }
}
