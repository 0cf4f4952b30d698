//! The mailbox wire messages (protocol version 1) and their codec.
//!
//! Each frame carries one protobuf message:
//!
//! ```protobuf
//! message Frame {
//!   fixed64 request_id = 1;         // chosen by the requester, echoed by answers and pushes
//!   oneof body {                    // the type tag; unknown or missing is an error
//!     Request request = 2;
//!     Answer answer = 3;
//!     Item push = 4;                // a live subscription's new envelope
//!     Sync sync = 5;                // between replicas: see crate::sync::message
//!     Wake wake = 6;                // a wake-up: request_id 0, always 20 bytes
//!   }
//! }
//! message Request {
//!   bytes body = 1;                 // an encoded RequestBody: what is signed
//!   bytes signature = 2;            // 64 bytes by the mailbox key, or empty (open store)
//! }
//! message RequestBody {
//!   bytes descriptor = 1;           // 35 bytes, see Descriptor
//!   fixed64 unix_ms = 2;            // the requester's clock
//!   bytes nonce = 3;                // 16 random bytes
//!   oneof op { Store store = 4; Fetch fetch = 5; Ack ack = 6; Register register = 8; }
//!   bytes replica = 7;              // 32 bytes: the peer id of the replica asked
//! }
//! message Store { bytes envelope = 1; fixed64 expiry = 2; uint32 class = 3; }
//! message Fetch { fixed64 after = 1; uint32 limit = 2; bool subscribe = 3; }
//! message Ack { repeated bytes hashes = 1; }          // 32 bytes each
//! message Register {                // wake this endpoint (see crate::wake)
//!   bytes endpoint = 1;             // 32 bytes: its peer id
//!   repeated string addrs = 2;      // at most 4 multiaddrs, 256 bytes each
//!   bytes token = 3;                // 16 bytes, carried by the wake-ups
//!   fixed64 until = 4;              // Unix seconds; 0 (or past) cancels
//! }
//! message Answer {
//!   oneof result {
//!     Stored stored = 1;            // { bytes signature = 1; fixed64 expiry = 2;
//!                                   //   repeated bytes path = 3; uint32 sides = 4; }
//!     Wait quota = 2;               // the mailbox is full: { uint64 retry_after_ms = 1; }
//!     Wait busy = 3;                // rate or disk limit: same shape
//!     Refused refused = 4;          // { uint32 reason = 1; fixed64 replica_unix_ms = 2; }
//!     Items items = 5;              // { repeated Item items = 1; bool more = 2; }
//!     Acked acked = 6;              // { uint32 removed = 1; }
//!     Registered registered = 7;    // { fixed64 until = 1; } as kept
//!   }
//! }
//! message Item { fixed64 seq = 1; bytes envelope = 2; fixed64 expiry = 3; }
//! message Wake { bytes token = 1; } // 16 bytes
//! ```
//!
//! Within version 1 unknown fields are ignored. Every length and count is
//! checked right after protobuf decoding (itself bounded by the frame
//! size), signatures afterwards, by the replica.

use bytes::Bytes;
use prost::Message as _;
use shoal_identity::{Keypair, PeerId, PublicKey, Purpose, SIGNATURE_LEN};

use crate::id::{Descriptor, EnvelopeHash};
use crate::receipt::{MAX_PROOF_LEN, Proof};
use crate::sync::SyncMessage;
use crate::wake::{MAX_WAKE_ADDR_LEN, MAX_WAKE_ADDRS, WakeEndpoint, WakeToken};

/// Largest envelope a mailbox holds, in bytes (a messenger envelope of the
/// largest size bucket fits with room to spare).
pub const MAX_ENVELOPE_LEN: usize = 80 * 1024;

/// Most envelope hashes in one ack.
pub const MAX_ACK_HASHES: usize = 256;

/// Most envelopes in one fetch answer.
pub const MAX_FETCH_ITEMS: u32 = 64;

/// Largest sum of envelope sizes in one fetch answer.
pub const MAX_FETCH_BYTES: usize = 512 * 1024;

/// Length of a request nonce.
pub const NONCE_LEN: usize = 16;

/// Largest frame sent or accepted: a fetch answer at its byte limit plus
/// one envelope (an answer stops after the item that crosses the limit).
pub const MAX_MESSAGE_SIZE: usize = MAX_FETCH_BYTES + MAX_ENVELOPE_LEN + 16 * 1024;

/// Domain of the signature on a request body.
pub const REQUEST_PURPOSE: Purpose = Purpose::new("shoal/mailbox/request/1");

mod pb {
    //! The protobuf schema.

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Frame {
        #[prost(fixed64, tag = "1")]
        pub(super) request_id: u64,
        #[prost(oneof = "FrameBody", tags = "2, 3, 4, 5, 6")]
        pub(super) body: Option<FrameBody>,
    }

    #[derive(Clone, PartialEq, prost::Oneof)]
    pub(super) enum FrameBody {
        #[prost(message, tag = "2")]
        Request(Request),
        #[prost(message, tag = "3")]
        Answer(Answer),
        #[prost(message, tag = "4")]
        Push(Item),
        #[prost(message, tag = "5")]
        Sync(crate::sync::message::pb::Sync),
        #[prost(message, tag = "6")]
        Wake(Wake),
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Wake {
        #[prost(bytes = "vec", tag = "1")]
        pub(super) token: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Request {
        #[prost(bytes = "bytes", tag = "1")]
        pub(super) body: bytes::Bytes,
        #[prost(bytes = "vec", tag = "2")]
        pub(super) signature: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct RequestBody {
        #[prost(bytes = "vec", tag = "1")]
        pub(super) descriptor: Vec<u8>,
        #[prost(fixed64, tag = "2")]
        pub(super) unix_ms: u64,
        #[prost(bytes = "vec", tag = "3")]
        pub(super) nonce: Vec<u8>,
        #[prost(oneof = "Op", tags = "4, 5, 6, 8")]
        pub(super) op: Option<Op>,
        #[prost(bytes = "vec", tag = "7")]
        pub(super) replica: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Oneof)]
    pub(super) enum Op {
        #[prost(message, tag = "4")]
        Store(Store),
        #[prost(message, tag = "5")]
        Fetch(Fetch),
        #[prost(message, tag = "6")]
        Ack(Ack),
        #[prost(message, tag = "8")]
        Register(Register),
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Register {
        #[prost(bytes = "vec", tag = "1")]
        pub(super) endpoint: Vec<u8>,
        #[prost(string, repeated, tag = "2")]
        pub(super) addrs: Vec<String>,
        #[prost(bytes = "vec", tag = "3")]
        pub(super) token: Vec<u8>,
        #[prost(fixed64, tag = "4")]
        pub(super) until: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Store {
        #[prost(bytes = "bytes", tag = "1")]
        pub(super) envelope: bytes::Bytes,
        #[prost(fixed64, tag = "2")]
        pub(super) expiry: u64,
        #[prost(uint32, tag = "3")]
        pub(super) class: u32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Fetch {
        #[prost(fixed64, tag = "1")]
        pub(super) after: u64,
        #[prost(uint32, tag = "2")]
        pub(super) limit: u32,
        #[prost(bool, tag = "3")]
        pub(super) subscribe: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Ack {
        #[prost(bytes = "vec", repeated, tag = "1")]
        pub(super) hashes: Vec<Vec<u8>>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Answer {
        #[prost(oneof = "Result", tags = "1, 2, 3, 4, 5, 6, 7")]
        pub(super) result: Option<Result>,
    }

    #[derive(Clone, PartialEq, prost::Oneof)]
    pub(super) enum Result {
        #[prost(message, tag = "1")]
        Stored(Stored),
        #[prost(message, tag = "2")]
        Quota(Wait),
        #[prost(message, tag = "3")]
        Busy(Wait),
        #[prost(message, tag = "4")]
        Refused(Refused),
        #[prost(message, tag = "5")]
        Items(Items),
        #[prost(message, tag = "6")]
        Acked(Acked),
        #[prost(message, tag = "7")]
        Registered(Registered),
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Registered {
        #[prost(fixed64, tag = "1")]
        pub(super) until: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Stored {
        #[prost(bytes = "vec", tag = "1")]
        pub(super) signature: Vec<u8>,
        #[prost(fixed64, tag = "2")]
        pub(super) expiry: u64,
        #[prost(bytes = "vec", repeated, tag = "3")]
        pub(super) path: Vec<Vec<u8>>,
        #[prost(uint32, tag = "4")]
        pub(super) sides: u32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Wait {
        #[prost(uint64, tag = "1")]
        pub(super) retry_after_ms: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Refused {
        #[prost(uint32, tag = "1")]
        pub(super) reason: u32,
        #[prost(fixed64, tag = "2")]
        pub(super) replica_unix_ms: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Items {
        #[prost(message, repeated, tag = "1")]
        pub(super) items: Vec<Item>,
        #[prost(bool, tag = "2")]
        pub(super) more: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Item {
        #[prost(fixed64, tag = "1")]
        pub(super) seq: u64,
        #[prost(bytes = "bytes", tag = "2")]
        pub(super) envelope: bytes::Bytes,
        #[prost(fixed64, tag = "3")]
        pub(super) expiry: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Acked {
        #[prost(uint32, tag = "1")]
        pub(super) removed: u32,
    }
}

/// Why a frame did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The frame is over [`MAX_MESSAGE_SIZE`].
    #[error("frame of {0} bytes is over the limit")]
    TooLarge(usize),
    /// Not protobuf of the expected shape.
    #[error("malformed protobuf: {0}")]
    Protobuf(String),
    /// A field is missing, too long, or out of range.
    #[error("invalid {0}")]
    Invalid(&'static str),
    /// A descriptor of a version this node does not speak.
    #[error("unknown descriptor version {0}")]
    UnknownVersion(u8),
}

impl From<prost::DecodeError> for DecodeError {
    fn from(e: prost::DecodeError) -> DecodeError {
        DecodeError::Protobuf(e.to_string())
    }
}

/// The priority class of a stored envelope: control messages (receipts,
/// resend requests, session resets) have a small reserve of their own in
/// every mailbox's quota, so a mailbox full of messages still passes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// A message.
    Normal,
    /// A control message.
    Control,
}

impl Class {
    fn to_u32(self) -> u32 {
        match self {
            Class::Normal => 0,
            Class::Control => 1,
        }
    }

    fn from_u32(v: u32) -> Option<Class> {
        match v {
            0 => Some(Class::Normal),
            1 => Some(Class::Control),
            _ => None,
        }
    }
}

/// What a request asks of a replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Keep `envelope` until `expiry` (Unix seconds) or the owner's ack.
    Store {
        /// The exact bytes to keep.
        envelope: Bytes,
        /// Unix seconds after which the replica deletes it.
        expiry: u64,
        /// Which part of the quota it counts against.
        class: Class,
    },
    /// Envelopes with a sequence number above `after`, oldest first; with
    /// `subscribe`, later ones are pushed as they arrive.
    Fetch {
        /// The last sequence number already seen (0: from the start).
        after: u64,
        /// Most envelopes wanted (at most [`MAX_FETCH_ITEMS`]).
        limit: u32,
        /// Keep pushing new envelopes to the requester.
        subscribe: bool,
    },
    /// Delete these envelopes (the owner has them).
    Ack {
        /// The envelopes, by hash.
        hashes: Vec<EnvelopeHash>,
    },
    /// Wake `endpoint` when new envelopes arrive while nobody subscribes,
    /// until `until` (see [`crate::wake`]).
    Register {
        /// Whom to wake, and with what token.
        endpoint: WakeEndpoint,
        /// Unix seconds; 0 or a past time cancels the registration.
        until: u64,
    },
}

/// The signed part of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestBody {
    /// The mailbox.
    pub descriptor: Descriptor,
    /// The requester's wall clock, in milliseconds.
    pub unix_ms: u64,
    /// Random bytes that make every request unique (the replay cache's key).
    pub nonce: [u8; NONCE_LEN],
    /// What is asked.
    pub op: Op,
    /// The replica asked (its peer id): a replica refuses a request signed
    /// for another, so one replica cannot replay at a second what the owner
    /// sent it.
    pub replica: PeerId,
}

/// A request as it travels: the exact body bytes, their signature, and the
/// body parsed from them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The encoded body, exactly as signed.
    pub body_bytes: Bytes,
    /// The mailbox key's signature over `body_bytes`, if any.
    pub signature: Option<[u8; SIGNATURE_LEN]>,
    /// `body_bytes`, parsed.
    pub body: RequestBody,
}

impl Request {
    /// A request signed with the mailbox's key pair (whose public half must
    /// be the descriptor's key).
    pub fn signed(body: RequestBody, key: &Keypair) -> Request {
        let body_bytes = Bytes::from(encode_body(&body));
        let signature = key.sign(REQUEST_PURPOSE, &body_bytes);
        Request {
            body_bytes,
            signature: Some(signature),
            body,
        }
    }

    /// An unsigned request (a store to an open mailbox).
    pub fn unsigned(body: RequestBody) -> Request {
        Request {
            body_bytes: Bytes::from(encode_body(&body)),
            signature: None,
            body,
        }
    }

    /// Whether the signature is the descriptor key's over the body.
    pub fn verify(&self) -> bool {
        let key: &PublicKey = &self.body.descriptor.key;
        self.signature
            .is_some_and(|s| key.verify(REQUEST_PURPOSE, &self.body_bytes, &s).is_ok())
    }
}

/// Why a replica refused a request (the answer's `reason` code).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Refusal {
    /// 1: the signature is missing or does not verify.
    BadSignature,
    /// 2: the request's clock is too far from the replica's (or older than
    /// the replica's start); the answer carries the replica's clock.
    ClockSkew,
    /// 3: the same request was seen before.
    Replay,
    /// 4: the expiry is in the past or beyond the replica's longest TTL.
    Expiry,
    /// 5: the mailbox's retention does not allow acks.
    NotAckable,
    /// 6: this node keeps no mailboxes.
    NotServing,
    /// 7: the replica's store failed; try another replica or later.
    StoreFailed,
    /// 8: the request was signed for another replica.
    WrongReplica,
    /// Any other code (from a newer replica).
    Other(u32),
}

impl Refusal {
    /// The wire code.
    pub fn code(self) -> u32 {
        match self {
            Refusal::BadSignature => 1,
            Refusal::ClockSkew => 2,
            Refusal::Replay => 3,
            Refusal::Expiry => 4,
            Refusal::NotAckable => 5,
            Refusal::NotServing => 6,
            Refusal::StoreFailed => 7,
            Refusal::WrongReplica => 8,
            Refusal::Other(c) => c,
        }
    }

    /// The refusal with wire code `code`.
    pub fn from_code(code: u32) -> Refusal {
        match code {
            1 => Refusal::BadSignature,
            2 => Refusal::ClockSkew,
            3 => Refusal::Replay,
            4 => Refusal::Expiry,
            5 => Refusal::NotAckable,
            6 => Refusal::NotServing,
            7 => Refusal::StoreFailed,
            8 => Refusal::WrongReplica,
            c => Refusal::Other(c),
        }
    }
}

/// One stored envelope as a fetch returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The replica's sequence number (a fetch cursor; replicas differ).
    pub seq: u64,
    /// The exact bytes stored.
    pub envelope: Bytes,
    /// Unix seconds when the replica deletes it.
    pub expiry: u64,
}

/// A replica's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Answer {
    /// The envelope is on the replica's disk: its receipt (see
    /// [`crate::Receipt`]): the replica's signature over its batch's root,
    /// the envelope's proof, and the expiry it will keep it to.
    Stored {
        /// The signature over the root.
        signature: [u8; SIGNATURE_LEN],
        /// Unix seconds (the request's expiry, perhaps shortened).
        expiry: u64,
        /// From the envelope's leaf to the root.
        proof: Proof,
    },
    /// The mailbox is full: wait for its owner to drain it.
    Quota {
        /// A hint, in milliseconds.
        retry_after_ms: u64,
    },
    /// The replica is busy (a rate limit or its disk budget).
    Busy {
        /// A hint, in milliseconds.
        retry_after_ms: u64,
    },
    /// The request was refused.
    Refused {
        /// Why.
        reason: Refusal,
        /// The replica's clock, so a requester refused for
        /// [`Refusal::ClockSkew`] can sign again with a time it accepts.
        replica_unix_ms: u64,
    },
    /// Envelopes of a fetch.
    Items {
        /// Oldest first.
        items: Vec<Item>,
        /// More are waiting after the last one.
        more: bool,
    },
    /// How many envelopes an ack deleted.
    Acked {
        /// Envelopes deleted (acked ones that were not there count 0).
        removed: u32,
    },
    /// A registration is kept until `until` (perhaps shortened; 0 when it
    /// was cancelled).
    Registered {
        /// Unix seconds.
        until: u64,
    },
}

/// A decoded frame.
// Frames live one at a time between the decoder and the core: boxing the
// larger variant would buy nothing but an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A request, with the requester's id for it.
    Request {
        /// Echoed by the answer.
        id: u64,
        /// The request.
        request: Request,
    },
    /// An answer to request `id`.
    Answer {
        /// The request's id.
        id: u64,
        /// The answer.
        answer: Answer,
    },
    /// A new envelope for the subscription made by fetch request `id`.
    Push {
        /// The subscribing fetch's id.
        id: u64,
        /// The envelope.
        item: Item,
    },
    /// A sync message between replicas, in the session `id` (chosen by
    /// the replica that opened it).
    Sync {
        /// The session.
        id: u64,
        /// The message.
        sync: SyncMessage,
    },
    /// A wake-up from a replica (see [`crate::wake`]): always
    /// [`WAKE_FRAME_LEN`](crate::wake::WAKE_FRAME_LEN) bytes.
    Wake {
        /// The token of the registration.
        token: WakeToken,
    },
}

fn encode_body(body: &RequestBody) -> Vec<u8> {
    let op = match &body.op {
        Op::Store {
            envelope,
            expiry,
            class,
        } => pb::Op::Store(pb::Store {
            envelope: envelope.clone(),
            expiry: *expiry,
            class: class.to_u32(),
        }),
        Op::Fetch {
            after,
            limit,
            subscribe,
        } => pb::Op::Fetch(pb::Fetch {
            after: *after,
            limit: *limit,
            subscribe: *subscribe,
        }),
        Op::Ack { hashes } => pb::Op::Ack(pb::Ack {
            hashes: hashes.iter().map(|h| h.as_bytes().to_vec()).collect(),
        }),
        Op::Register { endpoint, until } => pb::Op::Register(pb::Register {
            endpoint: endpoint.peer.as_bytes().to_vec(),
            addrs: endpoint.addrs.iter().map(ToString::to_string).collect(),
            token: endpoint.token.0.to_vec(),
            until: *until,
        }),
    };
    pb::RequestBody {
        descriptor: body.descriptor.encode().to_vec(),
        unix_ms: body.unix_ms,
        nonce: body.nonce.to_vec(),
        op: Some(op),
        replica: body.replica.as_bytes().to_vec(),
    }
    .encode_to_vec()
}

fn decode_body(bytes: &[u8]) -> Result<RequestBody, DecodeError> {
    let b = pb::RequestBody::decode(bytes)?;
    let descriptor = Descriptor::decode(&b.descriptor)?;
    let nonce: [u8; NONCE_LEN] = b
        .nonce
        .as_slice()
        .try_into()
        .map_err(|_| DecodeError::Invalid("nonce length"))?;
    let op = match b.op.ok_or(DecodeError::Invalid("missing op"))? {
        pb::Op::Store(s) => {
            if s.envelope.is_empty() || s.envelope.len() > MAX_ENVELOPE_LEN {
                return Err(DecodeError::Invalid("envelope length"));
            }
            Op::Store {
                envelope: s.envelope,
                expiry: s.expiry,
                class: Class::from_u32(s.class).ok_or(DecodeError::Invalid("class"))?,
            }
        }
        pb::Op::Fetch(f) => Op::Fetch {
            after: f.after,
            limit: f.limit.clamp(1, MAX_FETCH_ITEMS),
            subscribe: f.subscribe,
        },
        pb::Op::Ack(a) => {
            if a.hashes.is_empty() || a.hashes.len() > MAX_ACK_HASHES {
                return Err(DecodeError::Invalid("ack hash count"));
            }
            let hashes = a
                .hashes
                .iter()
                .map(|h| EnvelopeHash::try_from_slice(h).ok_or(DecodeError::Invalid("ack hash")))
                .collect::<Result<_, _>>()?;
            Op::Ack { hashes }
        }
        pb::Op::Register(r) => Op::Register {
            endpoint: register_endpoint(r.endpoint, r.addrs, r.token)?,
            until: r.until,
        },
    };
    let replica =
        PeerId::try_from_slice(&b.replica).map_err(|_| DecodeError::Invalid("replica"))?;
    Ok(RequestBody {
        descriptor,
        unix_ms: b.unix_ms,
        nonce,
        op,
        replica,
    })
}

/// The endpoint of a registration, every length checked.
fn register_endpoint(
    peer: Vec<u8>,
    addrs: Vec<String>,
    token: Vec<u8>,
) -> Result<WakeEndpoint, DecodeError> {
    if addrs.len() > MAX_WAKE_ADDRS || addrs.iter().any(|a| a.len() > MAX_WAKE_ADDR_LEN) {
        return Err(DecodeError::Invalid("wake-up addresses"));
    }
    Ok(WakeEndpoint {
        peer: PeerId::try_from_slice(&peer).map_err(|_| DecodeError::Invalid("wake-up peer"))?,
        addrs: addrs
            .iter()
            .map(|a| a.parse())
            .collect::<Result<_, _>>()
            .map_err(|_| DecodeError::Invalid("wake-up address"))?,
        token: WakeToken::try_from_slice(&token).ok_or(DecodeError::Invalid("wake-up token"))?,
    })
}

/// Where the envelope of a store request's `body` sits in it (start and
/// end offsets), or `None` if the body is not a store. Decodes from the
/// shared buffer, so the envelope is a slice of `body` itself.
pub(crate) fn envelope_span(body: &Bytes) -> Option<(usize, usize)> {
    let decoded = pb::RequestBody::decode(body.clone()).ok()?;
    let Some(pb::Op::Store(store)) = decoded.op else {
        return None;
    };
    let envelope = store.envelope;
    let start = (envelope.as_ptr() as usize).checked_sub(body.as_ptr() as usize)?;
    let end = start.checked_add(envelope.len())?;
    (body.get(start..end)? == &envelope[..]).then_some((start, end))
}

/// Parses a request body received from another replica (a hand-off),
/// checking every length as for a request.
pub(crate) fn parse_body(bytes: &[u8]) -> Result<RequestBody, DecodeError> {
    decode_body(bytes)
}

fn item_to_pb(item: &Item) -> pb::Item {
    pb::Item {
        seq: item.seq,
        envelope: item.envelope.clone(),
        expiry: item.expiry,
    }
}

fn item_from_pb(item: pb::Item) -> Result<Item, DecodeError> {
    if item.envelope.is_empty() || item.envelope.len() > MAX_ENVELOPE_LEN {
        return Err(DecodeError::Invalid("envelope length"));
    }
    Ok(Item {
        seq: item.seq,
        envelope: item.envelope,
        expiry: item.expiry,
    })
}

impl Frame {
    /// The frame's bytes.
    pub fn encode(&self) -> Bytes {
        let (request_id, body) = match self {
            Frame::Request { id, request } => (
                *id,
                pb::FrameBody::Request(pb::Request {
                    body: request.body_bytes.clone(),
                    signature: request.signature.map(|s| s.to_vec()).unwrap_or_default(),
                }),
            ),
            Frame::Answer { id, answer } => (*id, pb::FrameBody::Answer(answer_to_pb(answer))),
            Frame::Push { id, item } => (*id, pb::FrameBody::Push(item_to_pb(item))),
            Frame::Sync { id, sync } => (*id, pb::FrameBody::Sync(sync.to_pb())),
            Frame::Wake { token } => (
                0,
                pb::FrameBody::Wake(pb::Wake {
                    token: token.0.to_vec(),
                }),
            ),
        };
        Bytes::from(
            pb::Frame {
                request_id,
                body: Some(body),
            }
            .encode_to_vec(),
        )
    }

    /// Parses a frame, checking every length and count (not signatures).
    pub fn decode(bytes: &[u8]) -> Result<Frame, DecodeError> {
        if bytes.len() > MAX_MESSAGE_SIZE {
            return Err(DecodeError::TooLarge(bytes.len()));
        }
        let frame = pb::Frame::decode(bytes)?;
        let id = frame.request_id;
        Ok(
            match frame.body.ok_or(DecodeError::Invalid("missing body"))? {
                pb::FrameBody::Request(r) => {
                    let body = decode_body(&r.body)?;
                    let signature = match r.signature.len() {
                        0 => None,
                        SIGNATURE_LEN => {
                            let mut s = [0u8; SIGNATURE_LEN];
                            s.copy_from_slice(&r.signature);
                            Some(s)
                        }
                        _ => return Err(DecodeError::Invalid("signature length")),
                    };
                    Frame::Request {
                        id,
                        request: Request {
                            body_bytes: r.body,
                            signature,
                            body,
                        },
                    }
                }
                pb::FrameBody::Answer(a) => Frame::Answer {
                    id,
                    answer: answer_from_pb(a)?,
                },
                pb::FrameBody::Push(item) => Frame::Push {
                    id,
                    item: item_from_pb(item)?,
                },
                pb::FrameBody::Sync(sync) => Frame::Sync {
                    id,
                    sync: SyncMessage::from_pb(sync)?,
                },
                pb::FrameBody::Wake(w) => Frame::Wake {
                    token: WakeToken::try_from_slice(&w.token)
                        .ok_or(DecodeError::Invalid("wake-up token"))?,
                },
            },
        )
    }
}

fn answer_to_pb(answer: &Answer) -> pb::Answer {
    let result = match answer {
        Answer::Stored {
            signature,
            expiry,
            proof,
        } => pb::Result::Stored(pb::Stored {
            signature: signature.to_vec(),
            expiry: *expiry,
            path: proof.siblings.iter().map(|h| h.to_vec()).collect(),
            sides: proof.sides,
        }),
        Answer::Quota { retry_after_ms } => pb::Result::Quota(pb::Wait {
            retry_after_ms: *retry_after_ms,
        }),
        Answer::Busy { retry_after_ms } => pb::Result::Busy(pb::Wait {
            retry_after_ms: *retry_after_ms,
        }),
        Answer::Refused {
            reason,
            replica_unix_ms,
        } => pb::Result::Refused(pb::Refused {
            reason: reason.code(),
            replica_unix_ms: *replica_unix_ms,
        }),
        Answer::Items { items, more } => pb::Result::Items(pb::Items {
            items: items.iter().map(item_to_pb).collect(),
            more: *more,
        }),
        Answer::Acked { removed } => pb::Result::Acked(pb::Acked { removed: *removed }),
        Answer::Registered { until } => pb::Result::Registered(pb::Registered { until: *until }),
    };
    pb::Answer {
        result: Some(result),
    }
}

fn answer_from_pb(answer: pb::Answer) -> Result<Answer, DecodeError> {
    Ok(
        match answer
            .result
            .ok_or(DecodeError::Invalid("missing result"))?
        {
            pb::Result::Stored(s) => {
                if s.path.len() > MAX_PROOF_LEN {
                    return Err(DecodeError::Invalid("receipt proof length"));
                }
                let siblings = s
                    .path
                    .iter()
                    .map(|h| {
                        <[u8; 32]>::try_from(h.as_slice())
                            .map_err(|_| DecodeError::Invalid("receipt proof hash"))
                    })
                    .collect::<Result<_, _>>()?;
                Answer::Stored {
                    signature: s
                        .signature
                        .as_slice()
                        .try_into()
                        .map_err(|_| DecodeError::Invalid("receipt signature length"))?,
                    expiry: s.expiry,
                    proof: Proof {
                        siblings,
                        sides: s.sides,
                    },
                }
            }
            pb::Result::Quota(w) => Answer::Quota {
                retry_after_ms: w.retry_after_ms,
            },
            pb::Result::Busy(w) => Answer::Busy {
                retry_after_ms: w.retry_after_ms,
            },
            pb::Result::Refused(r) => Answer::Refused {
                reason: Refusal::from_code(r.reason),
                replica_unix_ms: r.replica_unix_ms,
            },
            pb::Result::Items(i) => {
                if i.items.len() > MAX_FETCH_ITEMS as usize {
                    return Err(DecodeError::Invalid("item count"));
                }
                Answer::Items {
                    items: i
                        .items
                        .into_iter()
                        .map(item_from_pb)
                        .collect::<Result<_, _>>()?,
                    more: i.more,
                }
            }
            pb::Result::Acked(a) => Answer::Acked { removed: a.removed },
            pb::Result::Registered(r) => Answer::Registered { until: r.until },
        },
    )
}

#[cfg(test)]
mod tests;
