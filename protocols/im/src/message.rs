//! Chat messages and the payloads a ratchet message carries.
//!
//! A [`Message`] is what a user wrote plus what ordering needs: the sender's
//! user key, a per-conversation counter, an advisory timestamp, the hash of
//! the sender's previous message and the ids of the messages it causally
//! follows. Its [`MessageId`] is a hash over the exact encoded bytes, so a
//! resend (re-encrypted under a fresh key) keeps its id.
//!
//! A [`Payload`] is one decrypted ratchet plaintext: a chat message, an
//! acknowledgement, a read receipt or a resend request. Layouts: docs/PROTOCOL.md,
//! section 11.

use crate::{Error, UserId};
use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};

/// Version byte of an encoded [`Message`].
pub const MESSAGE_VERSION: u8 = 1;
/// Most dependencies a message names (the latest heads the sender has seen).
pub const MAX_DEPS: usize = 4;
/// Largest message body, in bytes.
pub const MAX_BODY_LEN: usize = 32 * 1024;
/// Most ids one acknowledgement or read receipt carries.
pub const MAX_IDS_PER_RECEIPT: usize = 256;
/// Most messages one resend request may ask for.
pub const MAX_RESEND_RANGE: u64 = 256;
/// Hash domain of a message id.
pub const MESSAGE_ID_DOMAIN: &[u8] = b"shoal/im/message-id/1";
/// Length of the fixed part of an encoded message (before deps and body).
const FIXED_LEN: usize = 1 + 1 + 32 + 32 + 8 + 8 + 32 + 1;

/// A message id: BLAKE2b-256 over `len(domain) | domain | encoded message`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub [u8; 32]);

impl MessageId {
    /// The all-zero id, used on the wire for "no previous message".
    pub const NONE: MessageId = MessageId([0; 32]);

    /// The id of the message encoded as `bytes`.
    pub fn of(bytes: &[u8]) -> MessageId {
        let mut hash = Blake2b::<U32>::new();
        hash.update([MESSAGE_ID_DOMAIN.len() as u8]);
        hash.update(MESSAGE_ID_DOMAIN);
        hash.update(bytes);
        MessageId(hash.finalize().into())
    }

    /// Lowercase hex of the first 8 bytes (for logs and displays).
    pub fn short(&self) -> String {
        self.0[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl std::fmt::Debug for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MessageId({})", self.short())
    }
}

impl std::fmt::Display for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.short())
    }
}

/// What a message is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum MessageKind {
    /// UTF-8 text.
    Text = 1,
}

/// A chat message as its sender wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The kind of body.
    pub kind: MessageKind,
    /// The sender.
    pub sender: UserId,
    /// The recipient: the other user of the conversation. It makes ids
    /// unique per conversation (the same text sent to two contacts at the
    /// same moment gets two ids) and lets a recipient refuse a message
    /// its sender wrote to someone else.
    pub recipient: UserId,
    /// The sender's counter in this conversation: 0, 1, 2, ...
    pub counter: u64,
    /// Advisory wall-clock time of writing, milliseconds since the Unix
    /// epoch (the sender's clock: shown, never trusted for ordering).
    pub timestamp_ms: u64,
    /// The id of the sender's previous message in this conversation
    /// (`None` exactly when `counter` is 0).
    pub prev: Option<MessageId>,
    /// The ids this message causally follows (at most [`MAX_DEPS`]).
    pub deps: Vec<MessageId>,
    /// The body (at most [`MAX_BODY_LEN`] bytes).
    pub body: Vec<u8>,
}

impl Message {
    /// The exact bytes that travel (inside the encryption) and are hashed.
    ///
    /// Layout: `version: u8 | kind: u8 | sender: 32 | recipient: 32 | counter: u64 BE |
    /// timestamp_ms: u64 BE | prev: 32 (zeros if none) | deps_len: u8 |
    /// deps: 32 × deps_len | body_len: u32 BE | body`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FIXED_LEN + 32 * self.deps.len() + 4 + self.body.len());
        out.push(MESSAGE_VERSION);
        out.push(self.kind as u8);
        out.extend_from_slice(&self.sender.to_bytes());
        out.extend_from_slice(&self.recipient.to_bytes());
        out.extend_from_slice(&self.counter.to_be_bytes());
        out.extend_from_slice(&self.timestamp_ms.to_be_bytes());
        out.extend_from_slice(&self.prev.unwrap_or(MessageId::NONE).0);
        out.push(self.deps.len().min(MAX_DEPS) as u8);
        for dep in self.deps.iter().take(MAX_DEPS) {
            out.extend_from_slice(&dep.0);
        }
        out.extend_from_slice(&(self.body.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.body);
        out
    }

    /// Parses an encoded message, checking every bound and the
    /// counter/previous-id rule.
    pub fn decode(bytes: &[u8]) -> Result<Message, Error> {
        const WHAT: Error = Error::Malformed { what: "message" };
        let mut r = Reader(bytes);
        let version = r.u8().ok_or(WHAT)?;
        if version != MESSAGE_VERSION {
            return Err(Error::UnsupportedVersion {
                what: "message",
                found: version,
            });
        }
        let kind = match r.u8().ok_or(WHAT)? {
            1 => MessageKind::Text,
            _ => return Err(WHAT),
        };
        let sender = UserId::from_bytes(r.take(32).ok_or(WHAT)?).map_err(|_| WHAT)?;
        let recipient = UserId::from_bytes(r.take(32).ok_or(WHAT)?).map_err(|_| WHAT)?;
        let counter = r.u64().ok_or(WHAT)?;
        let timestamp_ms = r.u64().ok_or(WHAT)?;
        let prev = r.id().ok_or(WHAT)?;
        let prev = (prev != MessageId::NONE).then_some(prev);
        if prev.is_some() != (counter > 0) {
            return Err(WHAT);
        }
        let deps_len = usize::from(r.u8().ok_or(WHAT)?);
        if deps_len > MAX_DEPS {
            return Err(WHAT);
        }
        let mut deps = Vec::with_capacity(deps_len);
        for _ in 0..deps_len {
            deps.push(r.id().ok_or(WHAT)?);
        }
        let body_len = r.u32().ok_or(WHAT)? as usize;
        if body_len > MAX_BODY_LEN || r.0.len() != body_len {
            return Err(WHAT);
        }
        if kind == MessageKind::Text && std::str::from_utf8(r.0).is_err() {
            return Err(WHAT);
        }
        Ok(Message {
            kind,
            sender,
            recipient,
            counter,
            timestamp_ms,
            prev,
            deps,
            body: r.0.to_vec(),
        })
    }

    /// The message id (hash of [`Message::encode`]).
    pub fn id(&self) -> MessageId {
        MessageId::of(&self.encode())
    }

    /// The body as text (lossy for non-UTF-8 kinds).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One decrypted ratchet plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// A chat message, as encoded bytes (its id is their hash).
    Chat(Vec<u8>),
    /// "I decrypted and durably stored these messages."
    Ack(Vec<MessageId>),
    /// "The user has read these messages."
    Read(Vec<MessageId>),
    /// "Send me again your messages with counters `from..=to`."
    Resend {
        /// First counter wanted.
        from: u64,
        /// Last counter wanted (at most [`MAX_RESEND_RANGE`] after `from`).
        to: u64,
    },
    /// "Send me back my own messages from counter `from` on: I lost them
    /// (my disk went back in time)."
    Recover {
        /// First of the requester's own counters wanted.
        from: u64,
    },
    /// "Here is a message you sent me and no longer have." Answers a
    /// [`Payload::Recover`], or a message that reused one of the sender's
    /// counters.
    Echo {
        /// The highest of the recipient's counters the sender holds.
        last: u64,
        /// The recipient's message, as encoded bytes.
        message: Vec<u8>,
    },
}

const PAYLOAD_CHAT: u8 = 1;
const PAYLOAD_ACK: u8 = 2;
const PAYLOAD_READ: u8 = 3;
const PAYLOAD_RESEND: u8 = 4;
const PAYLOAD_RECOVER: u8 = 5;
const PAYLOAD_ECHO: u8 = 6;

impl Payload {
    /// Layout: `type: u8 | body`, where the body of `Chat` is the encoded
    /// message, of `Ack`/`Read` is `count: u16 BE | ids: 32 × count`, of
    /// `Resend` is `from: u64 BE | to: u64 BE`, of `Recover` is
    /// `from: u64 BE`, and of `Echo` is `last: u64 BE | encoded message`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Payload::Chat(bytes) => {
                out.push(PAYLOAD_CHAT);
                out.extend_from_slice(bytes);
            }
            Payload::Ack(ids) | Payload::Read(ids) => {
                out.push(if matches!(self, Payload::Ack(_)) {
                    PAYLOAD_ACK
                } else {
                    PAYLOAD_READ
                });
                let ids = &ids[..ids.len().min(MAX_IDS_PER_RECEIPT)];
                out.extend_from_slice(&(ids.len() as u16).to_be_bytes());
                for id in ids {
                    out.extend_from_slice(&id.0);
                }
            }
            Payload::Resend { from, to } => {
                out.push(PAYLOAD_RESEND);
                out.extend_from_slice(&from.to_be_bytes());
                out.extend_from_slice(&to.to_be_bytes());
            }
            Payload::Recover { from } => {
                out.push(PAYLOAD_RECOVER);
                out.extend_from_slice(&from.to_be_bytes());
            }
            Payload::Echo { last, message } => {
                out.push(PAYLOAD_ECHO);
                out.extend_from_slice(&last.to_be_bytes());
                out.extend_from_slice(message);
            }
        }
        out
    }

    /// Parses a payload; a `Chat` payload's message is checked too.
    pub fn decode(bytes: &[u8]) -> Result<Payload, Error> {
        const WHAT: Error = Error::Malformed { what: "payload" };
        let mut r = Reader(bytes);
        match r.u8().ok_or(WHAT)? {
            PAYLOAD_CHAT => {
                Message::decode(r.0)?;
                Ok(Payload::Chat(r.0.to_vec()))
            }
            kind @ (PAYLOAD_ACK | PAYLOAD_READ) => {
                let count = usize::from(r.u16().ok_or(WHAT)?);
                if count > MAX_IDS_PER_RECEIPT || r.0.len() != 32 * count {
                    return Err(WHAT);
                }
                let ids = r.0.chunks_exact(32).map(|c| {
                    let mut id = [0u8; 32];
                    id.copy_from_slice(c);
                    MessageId(id)
                });
                let ids = ids.collect();
                Ok(if kind == PAYLOAD_ACK {
                    Payload::Ack(ids)
                } else {
                    Payload::Read(ids)
                })
            }
            PAYLOAD_RESEND => {
                let from = r.u64().ok_or(WHAT)?;
                let to = r.u64().ok_or(WHAT)?;
                if !r.0.is_empty() || to < from || to - from >= MAX_RESEND_RANGE {
                    return Err(WHAT);
                }
                Ok(Payload::Resend { from, to })
            }
            PAYLOAD_RECOVER => {
                let from = r.u64().ok_or(WHAT)?;
                if !r.0.is_empty() {
                    return Err(WHAT);
                }
                Ok(Payload::Recover { from })
            }
            PAYLOAD_ECHO => {
                let last = r.u64().ok_or(WHAT)?;
                let message = Message::decode(r.0)?;
                if message.counter > last {
                    return Err(WHAT);
                }
                Ok(Payload::Echo {
                    last,
                    message: r.0.to_vec(),
                })
            }
            _ => Err(WHAT),
        }
    }
}

/// A bounds-checked cursor over a byte slice.
pub(crate) struct Reader<'a>(pub(crate) &'a [u8]);

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.take(2)?.try_into().ok().map(u16::from_be_bytes)
    }
    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.take(4)?.try_into().ok().map(u32::from_be_bytes)
    }
    pub(crate) fn u64(&mut self) -> Option<u64> {
        self.take(8)?.try_into().ok().map(u64::from_be_bytes)
    }
    pub(crate) fn id(&mut self) -> Option<MessageId> {
        self.take(32)?.try_into().ok().map(MessageId)
    }
}
