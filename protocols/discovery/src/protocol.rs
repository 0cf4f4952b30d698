//! The discovery wire messages (protocol version 1) and their codec.
//!
//! ```protobuf
//! message DiscoveryMessage {
//!   oneof body {                 // the type tag; unknown/missing is an error
//!     GetPeers get_peers = 1;
//!     Peers peers = 2;
//!   }
//! }
//! message GetPeers { uint32 max = 1; }       // 1..=MAX_PEERS_PER_MESSAGE wanted
//! message Peers { repeated bytes records = 1; } // SignedPeerRecord envelopes
//! ```
//!
//! A `Peers` message answers the last `GetPeers` and carries at most the
//! `max` asked for (and never more than [`MAX_PEERS_PER_MESSAGE`]). The
//! answerer's own record comes first. Every record is verified on decode
//! (see `shoal_identify::SignedPeerRecord`); one bad record makes the whole
//! message a protocol error, since an honest relay only forwards records it
//! verified. `max` above [`MAX_PEERS_PER_MESSAGE`] is read as that maximum;
//! `max = 0` is an error.

use bytes::Bytes;
use prost::Message as _;
use shoal_identify::{RecordError, SignedPeerRecord, record::MAX_SIGNED_RECORD_SIZE};

/// Most records in one `Peers` message.
pub const MAX_PEERS_PER_MESSAGE: usize = 64;

/// Largest discovery frame accepted or sent: a full `Peers` message of
/// maximal records fits. Checked (by the service) before the frame is read.
pub const MAX_MESSAGE_SIZE: usize = MAX_PEERS_PER_MESSAGE * (MAX_SIGNED_RECORD_SIZE + 8) + 16;

mod wire {
    //! The protobuf schema.

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct DiscoveryMessage {
        #[prost(oneof = "Body", tags = "1, 2")]
        pub(super) body: Option<Body>,
    }

    #[derive(Clone, PartialEq, prost::Oneof)]
    pub(super) enum Body {
        #[prost(message, tag = "1")]
        GetPeers(GetPeers),
        #[prost(message, tag = "2")]
        Peers(Peers),
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct GetPeers {
        #[prost(uint32, tag = "1")]
        pub(super) max: u32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Peers {
        #[prost(bytes = "bytes", repeated, tag = "1")]
        pub(super) records: Vec<bytes::Bytes>,
    }
}

/// One discovery message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiscoveryMessage {
    /// Asks for up to `max` signed peer records.
    GetPeers {
        /// How many records are wanted (1..=[`MAX_PEERS_PER_MESSAGE`]).
        max: u32,
    },
    /// Answers a `GetPeers` with verified signed records.
    Peers(Vec<SignedPeerRecord>),
}

/// Why a discovery frame was rejected. Blame: the remote; the discovery
/// substream of that session is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The frame is longer than [`MAX_MESSAGE_SIZE`].
    #[error("discovery message of {0} bytes exceeds {MAX_MESSAGE_SIZE}")]
    TooLarge(usize),
    /// The bytes are not valid protobuf for the schema.
    #[error("malformed discovery message: {0}")]
    Malformed(#[from] prost::DecodeError),
    /// No body this version knows (missing type tag).
    #[error("discovery message of unknown type")]
    UnknownType,
    /// `GetPeers` with `max = 0`.
    #[error("GetPeers asking for no records")]
    ZeroMax,
    /// More than [`MAX_PEERS_PER_MESSAGE`] records.
    #[error("{0} records in one message, over {MAX_PEERS_PER_MESSAGE}")]
    TooManyRecords(usize),
    /// A record is invalid (size, version, key, signature).
    #[error("invalid peer record: {0}")]
    Record(#[from] RecordError),
}

impl DiscoveryMessage {
    /// Encodes the message. A `Peers` list longer than
    /// [`MAX_PEERS_PER_MESSAGE`] is cut to it, so what is sent decodes.
    pub fn encode(&self) -> Bytes {
        let body = match self {
            DiscoveryMessage::GetPeers { max } => {
                wire::Body::GetPeers(wire::GetPeers { max: *max })
            }
            DiscoveryMessage::Peers(records) => wire::Body::Peers(wire::Peers {
                records: records
                    .iter()
                    .take(MAX_PEERS_PER_MESSAGE)
                    .map(SignedPeerRecord::to_bytes)
                    .collect(),
            }),
        };
        Bytes::from(wire::DiscoveryMessage { body: Some(body) }.encode_to_vec())
    }

    /// Decodes one frame: size, type, counts, then every record's signature.
    pub fn decode(frame: &[u8]) -> Result<DiscoveryMessage, DecodeError> {
        if frame.len() > MAX_MESSAGE_SIZE {
            return Err(DecodeError::TooLarge(frame.len()));
        }
        match wire::DiscoveryMessage::decode(frame)?.body {
            Some(wire::Body::GetPeers(g)) if g.max == 0 => Err(DecodeError::ZeroMax),
            Some(wire::Body::GetPeers(g)) => Ok(DiscoveryMessage::GetPeers {
                max: g.max.min(MAX_PEERS_PER_MESSAGE as u32),
            }),
            Some(wire::Body::Peers(p)) => {
                if p.records.len() > MAX_PEERS_PER_MESSAGE {
                    return Err(DecodeError::TooManyRecords(p.records.len()));
                }
                let records = p
                    .records
                    .iter()
                    .map(|r| SignedPeerRecord::from_bytes(r))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(DiscoveryMessage::Peers(records))
            }
            None => Err(DecodeError::UnknownType),
        }
    }
}

#[cfg(test)]
mod tests {
    use shoal_identity::Keypair;

    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn record() -> SignedPeerRecord {
        let key = Keypair::from_secret_bytes(&[1u8; 32]);
        let addr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();
        SignedPeerRecord::sign(&key, 1_700_000_000_000, vec![addr]).unwrap()
    }

    /// The vectors printed in docs/PROTOCOL.md, section 7.4.
    #[test]
    fn documented_vectors() {
        let get = DiscoveryMessage::GetPeers { max: 16 };
        assert_eq!(hex(&get.encode()), "0a020810");
        let record = record();
        let peers = DiscoveryMessage::Peers(vec![record.clone()]);
        let envelope = record.to_bytes();
        assert_eq!(envelope.len(), 172);
        assert_eq!(
            hex(&peers.encode()),
            format!("12af010aac01{}", hex(&envelope))
        );
        for m in [get, peers] {
            assert_eq!(DiscoveryMessage::decode(&m.encode()), Ok(m));
        }
    }

    #[test]
    fn rejects_bad_counts_types_and_records() {
        assert_eq!(
            DiscoveryMessage::decode(&[0x0a, 0x00]),
            Err(DecodeError::ZeroMax)
        );
        assert_eq!(
            DiscoveryMessage::decode(&DiscoveryMessage::GetPeers { max: 1000 }.encode()),
            Ok(DiscoveryMessage::GetPeers {
                max: MAX_PEERS_PER_MESSAGE as u32
            })
        );
        assert_eq!(DiscoveryMessage::decode(&[]), Err(DecodeError::UnknownType));
        assert!(matches!(
            DiscoveryMessage::decode(&[0xff; 4]),
            Err(DecodeError::Malformed(_))
        ));
        let too_many = wire::DiscoveryMessage {
            body: Some(wire::Body::Peers(wire::Peers {
                records: vec![Bytes::new(); MAX_PEERS_PER_MESSAGE + 1],
            })),
        };
        assert_eq!(
            DiscoveryMessage::decode(&too_many.encode_to_vec()),
            Err(DecodeError::TooManyRecords(MAX_PEERS_PER_MESSAGE + 1))
        );
        let mut tampered = record().to_bytes().to_vec();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        let bad = wire::DiscoveryMessage {
            body: Some(wire::Body::Peers(wire::Peers {
                records: vec![record().to_bytes(), Bytes::from(tampered)],
            })),
        };
        assert_eq!(
            DiscoveryMessage::decode(&bad.encode_to_vec()),
            Err(DecodeError::Record(RecordError::BadSignature))
        );
        assert_eq!(
            DiscoveryMessage::decode(&vec![0; MAX_MESSAGE_SIZE + 1]),
            Err(DecodeError::TooLarge(MAX_MESSAGE_SIZE + 1))
        );
    }
}
