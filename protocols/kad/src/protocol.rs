//! The Kademlia wire messages (protocol version 1) and their codec.
//!
//! Each frame carries one protobuf message:
//!
//! ```protobuf
//! message KadMessage {
//!   fixed64 request_id = 1;        // chosen by the requester, echoed by the answer
//!   oneof body {                   // the type tag; unknown/missing is an error
//!     Empty ping = 2;
//!     Empty pong = 3;
//!     FindNode find_node = 4;
//!     Nodes nodes = 5;             // answers find_node
//!     FindValue find_value = 6;
//!     Value value = 7;             // answers find_value
//!     Store store = 8;
//!     StoreAck store_ack = 9;      // answers store
//!   }
//!   bool client = 10;              // the sender is a client: do not add it to routing tables
//! }
//! message Empty {}
//! message FindNode { bytes key = 1; }                 // 32 bytes
//! message Nodes { repeated Peer closer = 1; }         // ≤ MAX_PEERS_PER_MESSAGE
//! message FindValue { bytes key = 1; }                // 32 bytes
//! message Value { bytes record = 1; repeated Peer closer = 2; } // record: SignedRecord or empty
//! message Store { bytes record = 1; }                 // a SignedRecord
//! message StoreAck { uint32 status = 1; }             // see StoreStatus
//! message Peer { bytes id = 1; repeated string addrs = 2; } // ≤ 8 addrs, each ≤ 256 bytes
//! ```
//!
//! Within version 1 unknown fields are ignored. Counts and lengths are
//! checked right after protobuf decoding (itself bounded by the frame size),
//! records' signatures last.

use bytes::Bytes;
use prost::Message as _;
use shoal_identity::{PEER_ID_LEN, PeerId};
use shoal_transport::{Multiaddr, Protocol};

use crate::{
    key::{KEY_LEN, Key},
    record::{MAX_SIGNED_RECORD_SIZE, RecordError, SignedRecord},
    table::{Contact, MAX_ADDRS_PER_CONTACT},
};

/// Most contacts in one `Nodes` or `Value` answer (k may not exceed it).
pub const MAX_PEERS_PER_MESSAGE: usize = 32;

/// Longest address text in a `Peer`, in bytes.
pub const MAX_ADDR_LEN: usize = 256;

/// Largest encoded `Peer`: id, then the maximum of addresses.
const MAX_PEER_SIZE: usize = 2 + PEER_ID_LEN + MAX_ADDRS_PER_CONTACT * (3 + MAX_ADDR_LEN);

/// Largest Kademlia frame accepted or sent: a `Value` answer with a maximal
/// record and [`MAX_PEERS_PER_MESSAGE`] maximal peers fits. Checked before
/// the frame is read.
pub const MAX_MESSAGE_SIZE: usize =
    16 + (4 + MAX_SIGNED_RECORD_SIZE) + MAX_PEERS_PER_MESSAGE * (3 + MAX_PEER_SIZE) + 16;

mod wire {
    //! The protobuf schema.

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct KadMessage {
        #[prost(fixed64, tag = "1")]
        pub(super) request_id: u64,
        #[prost(oneof = "Body", tags = "2, 3, 4, 5, 6, 7, 8, 9")]
        pub(super) body: Option<Body>,
        #[prost(bool, tag = "10")]
        pub(super) client: bool,
    }

    #[derive(Clone, PartialEq, prost::Oneof)]
    pub(super) enum Body {
        #[prost(message, tag = "2")]
        Ping(Empty),
        #[prost(message, tag = "3")]
        Pong(Empty),
        #[prost(message, tag = "4")]
        FindNode(KeyMsg),
        #[prost(message, tag = "5")]
        Nodes(Nodes),
        #[prost(message, tag = "6")]
        FindValue(KeyMsg),
        #[prost(message, tag = "7")]
        Value(Value),
        #[prost(message, tag = "8")]
        Store(Store),
        #[prost(message, tag = "9")]
        StoreAck(StoreAck),
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Empty {}

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct KeyMsg {
        #[prost(bytes = "vec", tag = "1")]
        pub(super) key: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Nodes {
        #[prost(message, repeated, tag = "1")]
        pub(super) closer: Vec<Peer>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Value {
        #[prost(bytes = "bytes", tag = "1")]
        pub(super) record: bytes::Bytes,
        #[prost(message, repeated, tag = "2")]
        pub(super) closer: Vec<Peer>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Store {
        #[prost(bytes = "bytes", tag = "1")]
        pub(super) record: bytes::Bytes,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct StoreAck {
        #[prost(uint32, tag = "1")]
        pub(super) status: u32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Peer {
        #[prost(bytes = "vec", tag = "1")]
        pub(super) id: Vec<u8>,
        #[prost(string, repeated, tag = "2")]
        pub(super) addrs: Vec<String>,
    }
}

/// How a `Store` request ended, as told by `StoreAck`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StoreStatus {
    /// Code 0: the record is stored (new, or newer than the one held).
    Stored,
    /// Code 1: the same or a newer record is already held.
    Unchanged,
    /// Code 2: the record breaks the receiver's policy (expired, expiry too
    /// far, refused by its kind's validator, too large, key taken by
    /// another publisher).
    Rejected,
    /// Code 3: the receiver's store is full (in total or for this
    /// publisher).
    Full,
    /// Any other code (from a newer implementation); treated as a failure.
    Unknown(u32),
}

impl StoreStatus {
    /// The wire code.
    pub fn code(self) -> u32 {
        match self {
            StoreStatus::Stored => 0,
            StoreStatus::Unchanged => 1,
            StoreStatus::Rejected => 2,
            StoreStatus::Full => 3,
            StoreStatus::Unknown(c) => c,
        }
    }

    /// Reads a wire code.
    pub fn from_code(code: u32) -> StoreStatus {
        match code {
            0 => StoreStatus::Stored,
            1 => StoreStatus::Unchanged,
            2 => StoreStatus::Rejected,
            3 => StoreStatus::Full,
            c => StoreStatus::Unknown(c),
        }
    }

    /// Whether the receiver holds the record (or a newer one) afterwards.
    pub fn is_held(self) -> bool {
        matches!(self, StoreStatus::Stored | StoreStatus::Unchanged)
    }
}

/// The body of a message: its type and content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// Asks for a `Pong`: is the receiver alive?
    Ping,
    /// Answers a `Ping`.
    Pong,
    /// Asks for the contacts the receiver knows closest to `key`.
    FindNode(Key),
    /// Answers `FindNode`: up to k contacts, closest first.
    Nodes(Vec<Contact>),
    /// Asks for the record at `key`, or closer contacts.
    FindValue(Key),
    /// Answers `FindValue`: the record if the receiver holds a live one,
    /// and its closest contacts.
    Value {
        /// The record held at the key, if any.
        record: Option<SignedRecord>,
        /// Up to k contacts, closest first.
        closer: Vec<Contact>,
    },
    /// Asks the receiver to hold a record.
    Store(SignedRecord),
    /// Answers `Store`.
    StoreAck(StoreStatus),
}

impl Body {
    /// Whether this is an answer (`Pong`, `Nodes`, `Value`, `StoreAck`).
    pub fn is_response(&self) -> bool {
        matches!(
            self,
            Body::Pong | Body::Nodes(_) | Body::Value { .. } | Body::StoreAck(_)
        )
    }
}

/// One Kademlia message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Chosen by the requester; an answer carries its request's id.
    pub request_id: u64,
    /// The type and content.
    pub body: Body,
}

/// Why a frame is not a valid Kademlia message. Blame: the remote; the
/// caller closes its Kademlia stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The frame is longer than [`MAX_MESSAGE_SIZE`].
    #[error("kad message of {0} bytes exceeds {MAX_MESSAGE_SIZE}")]
    TooLarge(usize),
    /// Not valid protobuf for the schema.
    #[error("malformed kad message: {0}")]
    Malformed(#[from] prost::DecodeError),
    /// No body this version knows (missing type tag).
    #[error("kad message of unknown type")]
    UnknownType,
    /// A key that is not 32 bytes.
    #[error("key of {0} bytes, expected {KEY_LEN}")]
    KeyLength(usize),
    /// A peer id that is not 32 bytes.
    #[error("peer id of {0} bytes, expected {PEER_ID_LEN}")]
    PeerIdLength(usize),
    /// More than [`MAX_PEERS_PER_MESSAGE`] contacts.
    #[error("{0} contacts in one message, over {MAX_PEERS_PER_MESSAGE}")]
    TooManyPeers(usize),
    /// More than [`MAX_ADDRS_PER_CONTACT`] addresses, or one longer than
    /// [`MAX_ADDR_LEN`].
    #[error("contact addresses over the limits")]
    Addrs,
    /// A `Store` without a record.
    #[error("store without a record")]
    MissingRecord,
    /// A record that does not decode or verify.
    #[error("invalid record: {0}")]
    Record(#[from] RecordError),
}

fn peers_to_wire<'a>(contacts: impl IntoIterator<Item = &'a Contact>) -> Vec<wire::Peer> {
    contacts
        .into_iter()
        .take(MAX_PEERS_PER_MESSAGE)
        .map(|c| wire::Peer {
            id: c.peer.as_bytes().to_vec(),
            addrs: c
                .addrs
                .iter()
                .map(addr_text)
                .filter(|a| a.len() <= MAX_ADDR_LEN)
                .take(MAX_ADDRS_PER_CONTACT)
                .collect(),
        })
        .collect()
}

/// The text form of `addr` without a trailing `/p2p/` component: the
/// same text as `Display`, with a fast path for the common components
/// (answers carry up to 20 contacts, so this runs often).
fn addr_text(addr: &Multiaddr) -> String {
    use std::fmt::Write as _;
    fn number(out: &mut String, mut n: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for d in &digits[i..] {
            out.push(char::from(*d));
        }
    }
    let mut out = String::with_capacity(32);
    let components = addr.iter().as_slice();
    for (i, c) in components.iter().enumerate() {
        match c {
            Protocol::Ip4(ip) => {
                out.push_str("/ip4/");
                for (j, o) in ip.octets().iter().enumerate() {
                    if j > 0 {
                        out.push('.');
                    }
                    number(&mut out, u64::from(*o));
                }
            }
            Protocol::Tcp(port) => {
                out.push_str("/tcp/");
                number(&mut out, u64::from(*port));
            }
            Protocol::Memory(port) => {
                out.push_str("/memory/");
                number(&mut out, *port);
            }
            Protocol::P2p(_) if i + 1 == components.len() => {}
            other => {
                let _ = write!(out, "{other}");
            }
        }
    }
    out
}

fn peers_from_wire(peers: Vec<wire::Peer>) -> Result<Vec<Contact>, DecodeError> {
    if peers.len() > MAX_PEERS_PER_MESSAGE {
        return Err(DecodeError::TooManyPeers(peers.len()));
    }
    let mut out = Vec::with_capacity(peers.len());
    for p in peers {
        let peer =
            PeerId::try_from_slice(&p.id).map_err(|_| DecodeError::PeerIdLength(p.id.len()))?;
        if p.addrs.len() > MAX_ADDRS_PER_CONTACT || p.addrs.iter().any(|a| a.len() > MAX_ADDR_LEN) {
            return Err(DecodeError::Addrs);
        }
        // An address that does not parse may be a kind of a newer
        // implementation: skipped, not an error.
        let addrs = p
            .addrs
            .iter()
            .filter_map(|a| a.parse::<Multiaddr>().ok())
            .map(|a| a.without_peer_id())
            .collect();
        out.push(Contact::new(peer, addrs));
    }
    Ok(out)
}

fn key_from_wire(key: &[u8]) -> Result<Key, DecodeError> {
    Key::try_from_slice(key).ok_or(DecodeError::KeyLength(key.len()))
}

impl Message {
    /// Encodes the message. Contact lists are cut to
    /// [`MAX_PEERS_PER_MESSAGE`], so what is sent decodes.
    pub fn encode(&self) -> Bytes {
        self.encode_as(false)
    }

    /// Encodes the message from a client (see
    /// [`Config::client`](crate::Config::client)): receivers answer it but
    /// do not add the sender to their routing tables.
    pub fn encode_as_client(&self) -> Bytes {
        self.encode_as(true)
    }

    fn encode_as(&self, client: bool) -> Bytes {
        let body = match &self.body {
            Body::Ping => wire::Body::Ping(wire::Empty {}),
            Body::Pong => wire::Body::Pong(wire::Empty {}),
            Body::FindNode(key) => wire::Body::FindNode(wire::KeyMsg {
                key: key.as_bytes().to_vec(),
            }),
            Body::Nodes(closer) => wire::Body::Nodes(wire::Nodes {
                closer: peers_to_wire(closer),
            }),
            Body::FindValue(key) => wire::Body::FindValue(wire::KeyMsg {
                key: key.as_bytes().to_vec(),
            }),
            Body::Value { record, closer } => wire::Body::Value(wire::Value {
                record: record
                    .as_ref()
                    .map(SignedRecord::to_bytes)
                    .unwrap_or_default(),
                closer: peers_to_wire(closer),
            }),
            Body::Store(record) => wire::Body::Store(wire::Store {
                record: record.to_bytes(),
            }),
            Body::StoreAck(status) => wire::Body::StoreAck(wire::StoreAck {
                status: status.code(),
            }),
        };
        let message = wire::KadMessage {
            request_id: self.request_id,
            body: Some(body),
            client,
        };
        Bytes::from(message.encode_to_vec())
    }

    /// Encodes a `Nodes` answer straight from borrowed contacts (what
    /// [`Message::encode`] of [`Body::Nodes`] gives, without copying them).
    pub fn encode_nodes(request_id: u64, closer: &[&Contact]) -> Bytes {
        let body = wire::Body::Nodes(wire::Nodes {
            closer: peers_to_wire(closer.iter().copied()),
        });
        Self::encode_wire(request_id, body)
    }

    /// Encodes a `Value` answer straight from borrowed parts.
    pub fn encode_value(
        request_id: u64,
        record: Option<&SignedRecord>,
        closer: &[&Contact],
    ) -> Bytes {
        let body = wire::Body::Value(wire::Value {
            record: record.map(SignedRecord::to_bytes).unwrap_or_default(),
            closer: peers_to_wire(closer.iter().copied()),
        });
        Self::encode_wire(request_id, body)
    }

    /// Encodes a `Value` answer around `record`, any bytes, unchecked.
    ///
    /// Only for tests and tools that play a misbehaving peer (a forged or
    /// oversized record that no [`SignedRecord`] can hold); receivers must
    /// reject what does not decode. Honest code uses [`Message::encode`] or
    /// [`Message::encode_value`].
    pub fn encode_value_bytes(request_id: u64, record: Bytes, closer: &[&Contact]) -> Bytes {
        let body = wire::Body::Value(wire::Value {
            record,
            closer: peers_to_wire(closer.iter().copied()),
        });
        Self::encode_wire(request_id, body)
    }

    /// Encodes a `Store` request around `record`, any bytes, unchecked:
    /// the `Store` counterpart of [`Message::encode_value_bytes`], for
    /// tests and tools only.
    pub fn encode_store_bytes(request_id: u64, record: Bytes) -> Bytes {
        Self::encode_wire(request_id, wire::Body::Store(wire::Store { record }))
    }

    fn encode_wire(request_id: u64, body: wire::Body) -> Bytes {
        let message = wire::KadMessage {
            request_id,
            body: Some(body),
            client: false,
        };
        Bytes::from(message.encode_to_vec())
    }

    /// Decodes one frame: size, type, counts and lengths, then records'
    /// signatures.
    pub fn decode(frame: &[u8]) -> Result<Message, DecodeError> {
        Self::decode_with_role(frame).map(|(message, _)| message)
    }

    /// Decodes one frame as [`Message::decode`] does, and says whether its
    /// sender marked it as a client's.
    pub fn decode_with_role(frame: &[u8]) -> Result<(Message, bool), DecodeError> {
        if frame.len() > MAX_MESSAGE_SIZE {
            return Err(DecodeError::TooLarge(frame.len()));
        }
        let message = wire::KadMessage::decode(frame)?;
        let body = match message.body.ok_or(DecodeError::UnknownType)? {
            wire::Body::Ping(_) => Body::Ping,
            wire::Body::Pong(_) => Body::Pong,
            wire::Body::FindNode(k) => Body::FindNode(key_from_wire(&k.key)?),
            wire::Body::Nodes(n) => Body::Nodes(peers_from_wire(n.closer)?),
            wire::Body::FindValue(k) => Body::FindValue(key_from_wire(&k.key)?),
            wire::Body::Value(v) => {
                let closer = peers_from_wire(v.closer)?;
                let record = if v.record.is_empty() {
                    None
                } else {
                    Some(SignedRecord::from_bytes(v.record)?)
                };
                Body::Value { record, closer }
            }
            wire::Body::Store(s) => {
                if s.record.is_empty() {
                    return Err(DecodeError::MissingRecord);
                }
                Body::Store(SignedRecord::from_bytes(s.record)?)
            }
            wire::Body::StoreAck(a) => Body::StoreAck(StoreStatus::from_code(a.status)),
        };
        Ok((
            Message {
                request_id: message.request_id,
                body,
            },
            message.client,
        ))
    }
}

#[cfg(test)]
mod tests;
