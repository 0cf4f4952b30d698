//! The gossip wire format (protocol version 1): one [`Rpc`] per frame.
//!
//! ```protobuf
//! message GossipFrame {                   // one per substream frame
//!   oneof body { Rpc rpc = 1; }           // the type tag
//! }
//! message Rpc {
//!   repeated Subscription subscriptions = 1;
//!   repeated SignedMessage messages = 2;
//!   repeated IHave ihave = 3;
//!   repeated IWant iwant = 4;
//!   repeated Graft graft = 5;
//!   repeated Prune prune = 6;
//! }
//! message Subscription { bool subscribe = 1; string topic = 2; }
//! message SignedMessage { bytes body = 1; bytes signature = 2; }
//! message MessageBody {                   // the exact bytes that are signed
//!   uint32 version = 1; bytes author = 2; uint64 seq = 3;
//!   string topic = 4; bytes payload = 5;
//! }
//! message IHave { string topic = 1; repeated bytes ids = 2; }
//! message IWant { repeated bytes ids = 1; }
//! message Graft { string topic = 1; }
//! message Prune { string topic = 1; uint64 backoff_secs = 2; }
//! ```
//!
//! [`decode_frame`] checks the frame size, then *counts* the repeated fields
//! of the frame with a cheap scan of the protobuf keys (no allocation)
//! against the `MAX_*_PER_FRAME` limits, and only then lets prost decode
//! it. Message bodies are decoded separately by [`crate::message`].
//! Unknown fields are ignored; groups (wire types 3 and 4) are rejected.

use bytes::{Buf, Bytes};
use prost::Message as _;
use prost::encoding::{WireType, decode_key, decode_varint};

/// Largest frame accepted or sent, in bytes. Protects memory: decoding
/// allocates at most a small multiple of this per frame.
pub const MAX_FRAME_SIZE: usize = 1024 * 1024;

/// Longest topic name, in bytes (UTF-8). Topics are names, not data.
pub const MAX_TOPIC_LEN: usize = 256;

/// Length of a message id ([`crate::MessageId`]) on the wire.
pub const MESSAGE_ID_LEN: usize = 32;

/// Most `subscriptions`, `graft` or `prune` entries (each) in one frame.
pub const MAX_TOPICS_PER_FRAME: usize = 256;

/// Most `messages` in one frame.
pub const MAX_MESSAGES_PER_FRAME: usize = 1024;

/// Most `ihave` entries in one frame.
pub const MAX_IHAVE_PER_FRAME: usize = 64;

/// Most message ids in one frame, over all its `ihave` and `iwant` entries.
pub const MAX_IDS_PER_FRAME: usize = 8192;

pub(crate) mod wire {
    //! The protobuf schema.
    use bytes::Bytes;

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct GossipFrame {
        #[prost(oneof = "Body", tags = "1")]
        pub(crate) body: Option<Body>,
    }

    #[derive(Clone, PartialEq, prost::Oneof)]
    pub(crate) enum Body {
        #[prost(message, tag = "1")]
        Rpc(super::Rpc),
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct MessageBody {
        #[prost(uint32, tag = "1")]
        pub(crate) version: u32,
        #[prost(bytes = "bytes", tag = "2")]
        pub(crate) author: Bytes,
        #[prost(uint64, tag = "3")]
        pub(crate) seq: u64,
        #[prost(string, tag = "4")]
        pub(crate) topic: String,
        #[prost(bytes = "bytes", tag = "5")]
        pub(crate) payload: Bytes,
    }
}

/// The content of one frame: any mix of subscriptions, full messages and
/// control entries, processed in that order.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Rpc {
    /// Topics the sender joins or leaves.
    #[prost(message, repeated, tag = "1")]
    pub subscriptions: Vec<Subscription>,
    /// Full messages (eager push, or answers to IWANT).
    #[prost(message, repeated, tag = "2")]
    pub messages: Vec<SignedMessage>,
    /// Ids of messages the sender has (lazy gossip).
    #[prost(message, repeated, tag = "3")]
    pub ihave: Vec<IHave>,
    /// Ids of messages the sender asks for.
    #[prost(message, repeated, tag = "4")]
    pub iwant: Vec<IWant>,
    /// The sender added the receiver to its mesh of a topic.
    #[prost(message, repeated, tag = "5")]
    pub graft: Vec<Graft>,
    /// The sender removed the receiver from its mesh of a topic.
    #[prost(message, repeated, tag = "6")]
    pub prune: Vec<Prune>,
}

/// Joining (`subscribe = true`) or leaving a topic.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Subscription {
    /// Join or leave.
    #[prost(bool, tag = "1")]
    pub subscribe: bool,
    /// The topic name.
    #[prost(string, tag = "2")]
    pub topic: String,
}

/// A message as it travels: the encoded body, signed by its author.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SignedMessage {
    /// An encoded `MessageBody`, exactly as signed and hashed.
    #[prost(bytes = "bytes", tag = "1")]
    pub body: Bytes,
    /// 64-byte ed25519 signature by the body's author (purpose
    /// `shoal/gossip/message/1`).
    #[prost(bytes = "bytes", tag = "2")]
    pub signature: Bytes,
}

/// "I have these messages of `topic`."
#[derive(Clone, PartialEq, prost::Message)]
pub struct IHave {
    /// The topic the ids belong to.
    #[prost(string, tag = "1")]
    pub topic: String,
    /// Message ids, 32 bytes each.
    #[prost(bytes = "bytes", repeated, tag = "2")]
    pub ids: Vec<Bytes>,
}

/// "Send me these messages."
#[derive(Clone, PartialEq, prost::Message)]
pub struct IWant {
    /// Message ids, 32 bytes each.
    #[prost(bytes = "bytes", repeated, tag = "1")]
    pub ids: Vec<Bytes>,
}

/// "You are in my mesh of `topic`."
#[derive(Clone, PartialEq, prost::Message)]
pub struct Graft {
    /// The topic.
    #[prost(string, tag = "1")]
    pub topic: String,
}

/// "You are no longer in my mesh of `topic`; do not graft me again for
/// `backoff_secs`."
#[derive(Clone, PartialEq, prost::Message)]
pub struct Prune {
    /// The topic.
    #[prost(string, tag = "1")]
    pub topic: String,
    /// Seconds before the receiver may graft the sender again.
    #[prost(uint64, tag = "2")]
    pub backoff_secs: u64,
}

/// Why a frame is not a valid gossip frame. Blame: the remote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The frame is longer than [`MAX_FRAME_SIZE`].
    #[error("gossip frame of {0} bytes exceeds {MAX_FRAME_SIZE}")]
    TooLarge(usize),
    /// The bytes are not valid protobuf for the schema.
    #[error("malformed gossip frame: {0}")]
    Malformed(#[from] prost::DecodeError),
    /// The protobuf structure is broken (seen by the counting scan).
    #[error("malformed gossip frame: {0}")]
    Structure(&'static str),
    /// The frame has no body this version knows (missing type tag).
    #[error("gossip frame of unknown type")]
    UnknownType,
    /// A topic name is empty or longer than [`MAX_TOPIC_LEN`] bytes.
    #[error("gossip topic name of {0} bytes")]
    BadTopic(usize),
    /// A message id is not [`MESSAGE_ID_LEN`] bytes.
    #[error("gossip message id of {0} bytes")]
    BadId(usize),
    /// A repeated field holds more entries than its per-frame limit.
    #[error("gossip frame has too many {what}: more than {limit}")]
    TooMany {
        /// Which entries.
        what: &'static str,
        /// The limit that was crossed.
        limit: usize,
    },
}

/// Encodes `rpc` as one frame.
pub fn encode_frame(rpc: Rpc) -> Bytes {
    let frame = wire::GossipFrame {
        body: Some(wire::Body::Rpc(rpc)),
    };
    Bytes::from(frame.encode_to_vec())
}

/// Bytes the frame wrapper adds around an rpc of `rpc_len` bytes.
pub(crate) fn frame_overhead(rpc_len: usize) -> usize {
    1 + prost::encoding::encoded_len_varint(rpc_len as u64)
}

/// Decodes one frame: size, then counts, then content.
pub fn decode_frame(frame: Bytes) -> Result<Rpc, DecodeError> {
    if frame.len() > MAX_FRAME_SIZE {
        return Err(DecodeError::TooLarge(frame.len()));
    }
    check_counts(&frame)?;
    match wire::GossipFrame::decode(frame)?.body {
        Some(wire::Body::Rpc(rpc)) => check_content(rpc),
        None => Err(DecodeError::UnknownType),
    }
}

/// Frame-local rules on the decoded content: topic names and id lengths.
/// (Message bodies are checked by the core, where a bad one is blamed on
/// its forwarder without dropping the whole frame.)
fn check_content(rpc: Rpc) -> Result<Rpc, DecodeError> {
    let topics = (rpc.subscriptions.iter().map(|s| &s.topic))
        .chain(rpc.ihave.iter().map(|i| &i.topic))
        .chain(rpc.graft.iter().map(|g| &g.topic))
        .chain(rpc.prune.iter().map(|p| &p.topic));
    for topic in topics {
        if topic.is_empty() || topic.len() > MAX_TOPIC_LEN {
            return Err(DecodeError::BadTopic(topic.len()));
        }
    }
    let ids = (rpc.ihave.iter().flat_map(|i| &i.ids)).chain(rpc.iwant.iter().flat_map(|i| &i.ids));
    for id in ids {
        if id.len() != MESSAGE_ID_LEN {
            return Err(DecodeError::BadId(id.len()));
        }
    }
    Ok(rpc)
}

/// Counts repeated entries before prost allocates for them.
fn check_counts(frame: &[u8]) -> Result<(), DecodeError> {
    let mut rpcs = 0;
    for_each_field(frame, |tag, value| {
        if tag == 1
            && let Some(rpc) = value
        {
            rpcs += 1;
            // A repeated oneof case merges; one is all we ever send.
            if rpcs > 1 {
                return Err(DecodeError::TooMany {
                    what: "rpc bodies",
                    limit: 1,
                });
            }
            check_rpc_counts(rpc)?;
        }
        Ok(())
    })
}

fn check_rpc_counts(rpc: &[u8]) -> Result<(), DecodeError> {
    let mut counts = [0usize; 7];
    let mut ids = 0usize;
    for_each_field(rpc, |tag, value| {
        let Some(slot) = counts.get_mut(tag as usize) else {
            return Ok(());
        };
        *slot += 1;
        let (what, limit) = match tag {
            1 => ("subscriptions", MAX_TOPICS_PER_FRAME),
            2 => ("messages", MAX_MESSAGES_PER_FRAME),
            3 => ("ihave entries", MAX_IHAVE_PER_FRAME),
            5 => ("grafts", MAX_TOPICS_PER_FRAME),
            6 => ("prunes", MAX_TOPICS_PER_FRAME),
            // iwant entries are bounded by their ids.
            _ => ("iwant entries", MAX_IDS_PER_FRAME),
        };
        if *slot > limit {
            return Err(DecodeError::TooMany { what, limit });
        }
        // Ids: field 2 of IHave, field 1 of IWant.
        let id_tag = match tag {
            3 => Some(2),
            4 => Some(1),
            _ => None,
        };
        if let (Some(id_tag), Some(entry)) = (id_tag, value) {
            for_each_field(entry, |t, _| {
                if t == id_tag {
                    ids += 1;
                    if ids > MAX_IDS_PER_FRAME {
                        return Err(DecodeError::TooMany {
                            what: "message ids",
                            limit: MAX_IDS_PER_FRAME,
                        });
                    }
                }
                Ok(())
            })?;
        }
        Ok(())
    })
}

/// Walks the top-level fields of `buf`, handing each tag and (for
/// length-delimited fields) its bytes to `f`.
fn for_each_field(
    mut buf: &[u8],
    mut f: impl FnMut(u32, Option<&[u8]>) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    while buf.has_remaining() {
        let (tag, wire_type) = decode_key(&mut buf)?;
        match wire_type {
            WireType::Varint => {
                decode_varint(&mut buf)?;
                f(tag, None)?;
            }
            WireType::SixtyFourBit | WireType::ThirtyTwoBit => {
                let n = if wire_type == WireType::SixtyFourBit {
                    8
                } else {
                    4
                };
                if buf.len() < n {
                    return Err(DecodeError::Structure("truncated fixed-width field"));
                }
                buf.advance(n);
                f(tag, None)?;
            }
            WireType::LengthDelimited => {
                let len = decode_varint(&mut buf)?;
                let len = usize::try_from(len)
                    .ok()
                    .filter(|&l| l <= buf.len())
                    .ok_or(DecodeError::Structure("length beyond the end of the frame"))?;
                let (value, rest) = buf.split_at(len);
                buf = rest;
                f(tag, Some(value))?;
            }
            WireType::StartGroup | WireType::EndGroup => {
                return Err(DecodeError::Structure("protobuf groups are not accepted"));
            }
        }
    }
    Ok(())
}
