//! Topics, message ids, and signing and checking messages.
//!
//! A message's body (`MessageBody` in [`crate::protocol`]) is encoded once
//! by its author, signed, and then relayed byte for byte: every node checks
//! the signature over the bytes it received and hashes the same bytes for
//! the id, so no re-encoding is ever signed or hashed.

use std::{fmt, sync::Arc};

use blake2::{Blake2b, Digest, digest::consts::U32};
use bytes::Bytes;
use prost::Message as _;
use shoal_identity::{Keypair, PeerId, Purpose, SIGNATURE_LEN, signed_input};

use crate::protocol::{MAX_TOPIC_LEN, MESSAGE_ID_LEN, SignedMessage, wire};

/// Purpose of the author's signature over the message body.
pub const MESSAGE_PURPOSE: Purpose = Purpose::new("shoal/gossip/message/1");

/// Purpose prefixed to the body when hashing it into a [`MessageId`].
pub const MESSAGE_ID_PURPOSE: Purpose = Purpose::new("shoal/gossip/message-id/1");

/// The only message body version this implementation reads and writes.
pub const MESSAGE_VERSION: u32 = 1;

/// The name of a topic: non-empty UTF-8 of at most [`MAX_TOPIC_LEN`] bytes.
/// Cheap to clone.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Topic(Arc<str>);

/// A topic name that is empty or too long.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("topic names are 1 to {MAX_TOPIC_LEN} bytes, got {0}")]
pub struct TopicError(pub usize);

impl Topic {
    /// Checks and wraps a topic name.
    pub fn new(name: impl AsRef<str>) -> Result<Topic, TopicError> {
        let name = name.as_ref();
        if name.is_empty() || name.len() > MAX_TOPIC_LEN {
            return Err(TopicError(name.len()));
        }
        Ok(Topic(Arc::from(name)))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Topic({:?})", &*self.0)
    }
}

/// A message's identity: BLAKE2b-256 of
/// `signed_input(MESSAGE_ID_PURPOSE, body)`, the body bytes exactly as
/// signed. The signature is not hashed, so a relay cannot make a second id
/// for the same message by changing it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId(pub [u8; MESSAGE_ID_LEN]);

impl MessageId {
    /// The id of the message with this encoded body.
    pub fn of_body(body: &[u8]) -> MessageId {
        let mut hasher = Blake2b::<U32>::new();
        hasher.update(signed_input(MESSAGE_ID_PURPOSE, &[]));
        hasher.update(body);
        MessageId(hasher.finalize().into())
    }

    /// Parses an id from the wire: exactly [`MESSAGE_ID_LEN`] bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<MessageId> {
        bytes.try_into().ok().map(MessageId)
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MessageId(")?;
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        f.write_str("…)")
    }
}

/// A message whose signature has been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Its id.
    pub id: MessageId,
    /// Who wrote and signed it.
    pub author: PeerId,
    /// The author's sequence number.
    pub seq: u64,
    /// Its topic.
    pub topic: Topic,
    /// The application data.
    pub payload: Bytes,
}

/// Why a received message was rejected. Blame: its author, or the peer that
/// forwarded it without checking.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidMessage {
    /// The body is not a protobuf `MessageBody`.
    #[error("message body is malformed")]
    Malformed,
    /// The body's version is not [`MESSAGE_VERSION`].
    #[error("message body version {0} is not supported")]
    UnknownVersion(u32),
    /// The author is not a valid 32-byte ed25519 public key.
    #[error("message author is not an ed25519 public key")]
    BadAuthor,
    /// The topic is empty or longer than [`MAX_TOPIC_LEN`].
    #[error("message topic is invalid")]
    BadTopic,
    /// The payload is larger than the configured maximum.
    #[error("message payload of {0} bytes is too large")]
    TooLarge(usize),
    /// The signature does not verify.
    #[error("message signature does not verify")]
    BadSignature,
}

/// Encodes and signs a new message; returns it with its id.
pub(crate) fn sign(
    keypair: &Keypair,
    seq: u64,
    topic: &Topic,
    payload: Bytes,
) -> (MessageId, SignedMessage) {
    let body = wire::MessageBody {
        version: MESSAGE_VERSION,
        author: Bytes::copy_from_slice(keypair.peer_id().as_bytes()),
        seq,
        topic: topic.as_str().to_owned(),
        payload,
    };
    let body = Bytes::from(body.encode_to_vec());
    let signature = keypair.sign(MESSAGE_PURPOSE, &body);
    let id = MessageId::of_body(&body);
    let signature = Bytes::copy_from_slice(&signature);
    (id, SignedMessage { body, signature })
}

/// Checks a received message whose id is `id` (see [`MessageId::of_body`]):
/// body structure and limits first, the signature last.
pub(crate) fn verify(
    id: MessageId,
    message: &SignedMessage,
    max_payload: usize,
) -> Result<Verified, InvalidMessage> {
    // The body holds the payload plus at most ~330 bytes of other fields.
    if message.body.len() > max_payload.saturating_add(512) {
        return Err(InvalidMessage::TooLarge(message.body.len()));
    }
    let body =
        wire::MessageBody::decode(message.body.clone()).map_err(|_| InvalidMessage::Malformed)?;
    if body.version != MESSAGE_VERSION {
        return Err(InvalidMessage::UnknownVersion(body.version));
    }
    if body.payload.len() > max_payload {
        return Err(InvalidMessage::TooLarge(body.payload.len()));
    }
    let topic = Topic::new(&body.topic).map_err(|_| InvalidMessage::BadTopic)?;
    let author = PeerId::try_from_slice(&body.author).map_err(|_| InvalidMessage::BadAuthor)?;
    let key = author.public_key().map_err(|_| InvalidMessage::BadAuthor)?;
    if message.signature.len() != SIGNATURE_LEN {
        return Err(InvalidMessage::BadSignature);
    }
    key.verify(MESSAGE_PURPOSE, &message.body, &message.signature)
        .map_err(|_| InvalidMessage::BadSignature)?;
    Ok(Verified {
        id,
        author,
        seq: body.seq,
        topic,
        payload: body.payload,
    })
}
