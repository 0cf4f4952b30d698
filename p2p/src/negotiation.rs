//! Protocol negotiation: the first bytes of every protocol substream.
//!
//! The side that opens a yamux substream proposes a protocol name and the
//! versions it speaks; the other side answers with the highest version both
//! speak, or refuses. Versions are `u32` and compare numerically (`10 > 9`).
//! A refusal concerns that substream only; the session stays up.
//!
//! ```text
//!  opener                                          acceptor
//!  varint(len) | Envelope{format=1, Propose{name, versions}} ──▶ lookup name
//!                 ◀── varint(len) | Envelope{format=1, Accept{version}}
//!                  or varint(len) | Envelope{format=1, Refuse{reason}}  (then FIN)
//!  ═══════ after Accept: u32-BE length-delimited protocol frames both ways ═══════
//! ```
//!
//! Each message is a protobuf `Envelope` prefixed by its length as an
//! unsigned LEB128 varint, at most [`MAX_MESSAGE_LEN`] bytes; the length is
//! checked before the body is read. The byte layout and test vectors are in
//! `docs/PROTOCOL.md` (section 6). [`Message::encode`] and [`decode_frame`] are the
//! pure codec (the fuzzing entry point is [`decode_frame`]);
//! [`select_version`] is the version rule.

use std::{io, time::Duration};

use bytes::{BufMut, BytesMut};
use prost::Message as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The negotiation format version this implementation speaks (the `format`
/// field of every envelope). A different value is refused with
/// [`RefuseReason::UnsupportedFormat`].
pub const FORMAT_VERSION: u32 = 1;

/// Largest negotiation message body (after the varint prefix). Protects
/// memory before the peer has said anything meaningful.
pub const MAX_MESSAGE_LEN: usize = 1024;

/// Longest protocol name, in bytes of UTF-8.
pub const MAX_PROTOCOL_NAME_LEN: usize = 128;

/// Most versions one proposal may list.
pub const MAX_VERSIONS: usize = 16;

/// Longest varint length prefix accepted: two bytes encode up to 16383,
/// more than [`MAX_MESSAGE_LEN`].
const MAX_VARINT_LEN: usize = 2;

mod wire {
    //! The protobuf schema (see `docs/PROTOCOL.md` (section 6)).

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Envelope {
        #[prost(uint32, tag = "1")]
        pub(super) format: u32,
        #[prost(oneof = "Body", tags = "2, 3, 4")]
        pub(super) body: Option<Body>,
    }

    #[derive(Clone, PartialEq, prost::Oneof)]
    pub(super) enum Body {
        #[prost(message, tag = "2")]
        Propose(Propose),
        #[prost(message, tag = "3")]
        Accept(Accept),
        #[prost(message, tag = "4")]
        Refuse(Refuse),
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Propose {
        #[prost(string, tag = "1")]
        pub(super) name: String,
        #[prost(uint32, repeated, tag = "2")]
        pub(super) versions: Vec<u32>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Accept {
        #[prost(uint32, tag = "1")]
        pub(super) version: u32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Refuse {
        #[prost(uint32, tag = "1")]
        pub(super) reason: u32,
    }
}

/// Why an acceptor refused a substream. Sent as a number (see
/// [`RefuseReason::code`]); unknown numbers are kept as
/// [`RefuseReason::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefuseReason {
    /// Code 1: the acceptor does not serve a protocol of that name.
    UnknownProtocol,
    /// Code 2: no version in common.
    NoCommonVersion,
    /// Code 3: the protocol already has a substream on this session.
    AlreadyOpen,
    /// Code 4: the envelope's `format` is not one the acceptor speaks.
    UnsupportedFormat,
    /// Code 5: the protocol exists but cannot take a substream now (its
    /// handler failed, or its queue of raw streams is full).
    Unavailable,
    /// Code 6: the protocol does not run on relayed sessions (see
    /// [`ProtocolMetaBuilder::over_relay`](crate::ProtocolMetaBuilder::over_relay)).
    NotOverRelay,
    /// Any other code (0 = unspecified).
    Other(u32),
}

impl RefuseReason {
    /// The number on the wire.
    pub fn code(self) -> u32 {
        match self {
            RefuseReason::UnknownProtocol => 1,
            RefuseReason::NoCommonVersion => 2,
            RefuseReason::AlreadyOpen => 3,
            RefuseReason::UnsupportedFormat => 4,
            RefuseReason::Unavailable => 5,
            RefuseReason::NotOverRelay => 6,
            RefuseReason::Other(code) => code,
        }
    }

    /// The reason for a number from the wire.
    pub fn from_code(code: u32) -> RefuseReason {
        match code {
            1 => RefuseReason::UnknownProtocol,
            2 => RefuseReason::NoCommonVersion,
            3 => RefuseReason::AlreadyOpen,
            4 => RefuseReason::UnsupportedFormat,
            5 => RefuseReason::Unavailable,
            6 => RefuseReason::NotOverRelay,
            other => RefuseReason::Other(other),
        }
    }
}

/// One negotiation message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Opener → acceptor: the protocol and the versions the opener speaks.
    Propose {
        /// Protocol name, 1 to [`MAX_PROTOCOL_NAME_LEN`] bytes.
        name: String,
        /// Versions, 1 to [`MAX_VERSIONS`] of them, in any order.
        versions: Vec<u32>,
    },
    /// Acceptor → opener: the substream carries this version from now on.
    Accept {
        /// The highest version both sides listed.
        version: u32,
    },
    /// Acceptor → opener: no; the acceptor closes the substream.
    Refuse {
        /// Why.
        reason: RefuseReason,
    },
}

/// Why negotiating a substream failed. Scope: that substream only.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum NegotiationError {
    /// Reading or writing the substream failed (reset, session closed...).
    #[error("i/o error during negotiation: {0}")]
    Io(std::sync::Arc<io::Error>),
    /// A message declared a length over [`MAX_MESSAGE_LEN`]; rejected before
    /// reading it. Blame: remote.
    #[error("negotiation message of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Declared length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes are not a negotiation message. Blame: remote.
    #[error("malformed negotiation message: {0}")]
    Malformed(&'static str),
    /// The body is not valid protobuf. Blame: remote.
    #[error("negotiation message does not decode: {0}")]
    Decode(#[from] prost::DecodeError),
    /// The envelope's format version is not [`FORMAT_VERSION`]. Blame: the
    /// peers are incompatible.
    #[error("unsupported negotiation format version {0}")]
    UnsupportedFormat(u32),
    /// A well-formed message arrived where another was expected (e.g. an
    /// Accept as the first message). Blame: remote.
    #[error("unexpected negotiation message: {0}")]
    Unexpected(&'static str),
    /// The acceptor accepted a version we did not propose. Blame: remote.
    #[error("the remote accepted version {0}, which we did not propose")]
    VersionNotProposed(u32),
    /// The remote refused our proposal.
    #[error("the remote refused the protocol: {0:?}")]
    Refused(RefuseReason),
    /// The remote proposed a protocol we do not serve (we refused it).
    #[error("the remote proposed unknown protocol {0:?}")]
    UnknownProtocol(String),
    /// No version in common (we refused it, or we could not pick one).
    #[error("no common version: ours {ours:?}, theirs {theirs:?}")]
    NoCommonVersion {
        /// Our versions.
        ours: Vec<u32>,
        /// Theirs.
        theirs: Vec<u32>,
    },
    /// The negotiation did not finish in time.
    #[error("negotiation did not complete within {0:?}")]
    Timeout(Duration),
}

impl From<io::Error> for NegotiationError {
    fn from(e: io::Error) -> NegotiationError {
        NegotiationError::Io(std::sync::Arc::new(e))
    }
}

impl Message {
    /// Appends `varint(len) | envelope` to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        let envelope = self.to_wire();
        let len = envelope.encoded_len();
        out.reserve(len + MAX_VARINT_LEN + 1);
        put_varint(out, len as u64);
        // Encoding into a BytesMut with reserved room cannot fail.
        let _ = envelope.encode(out);
    }

    fn to_wire(&self) -> wire::Envelope {
        let body = match self {
            Message::Propose { name, versions } => wire::Body::Propose(wire::Propose {
                name: name.clone(),
                versions: versions.clone(),
            }),
            Message::Accept { version } => wire::Body::Accept(wire::Accept { version: *version }),
            Message::Refuse { reason } => wire::Body::Refuse(wire::Refuse {
                reason: reason.code(),
            }),
        };
        wire::Envelope {
            format: FORMAT_VERSION,
            body: Some(body),
        }
    }

    /// Decodes one envelope body (without the length prefix), checking the
    /// format version and the name and version-list bounds.
    pub fn decode_body(body: &[u8]) -> Result<Message, NegotiationError> {
        if body.len() > MAX_MESSAGE_LEN {
            return Err(NegotiationError::TooLarge {
                len: body.len(),
                max: MAX_MESSAGE_LEN,
            });
        }
        let envelope = wire::Envelope::decode(body)?;
        if envelope.format != FORMAT_VERSION {
            return Err(NegotiationError::UnsupportedFormat(envelope.format));
        }
        match envelope.body {
            None => Err(NegotiationError::Malformed("envelope without a body")),
            Some(wire::Body::Propose(p)) => {
                if p.name.is_empty() || p.name.len() > MAX_PROTOCOL_NAME_LEN {
                    return Err(NegotiationError::Malformed("protocol name length"));
                }
                if p.versions.is_empty() || p.versions.len() > MAX_VERSIONS {
                    return Err(NegotiationError::Malformed("number of versions"));
                }
                Ok(Message::Propose {
                    name: p.name,
                    versions: p.versions,
                })
            }
            Some(wire::Body::Accept(a)) => Ok(Message::Accept { version: a.version }),
            Some(wire::Body::Refuse(r)) => Ok(Message::Refuse {
                reason: RefuseReason::from_code(r.reason),
            }),
        }
    }
}

fn put_varint(out: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        out.put_u8((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.put_u8(value as u8);
}

/// Decodes a length prefix from the start of `buf`: `Ok(None)` if more
/// bytes are needed, else the length and the prefix size. Rejects prefixes
/// longer than two bytes and lengths over [`MAX_MESSAGE_LEN`].
fn decode_len(buf: &[u8]) -> Result<Option<(usize, usize)>, NegotiationError> {
    let mut value = 0usize;
    for (i, &byte) in buf.iter().enumerate().take(MAX_VARINT_LEN) {
        value |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            if value > MAX_MESSAGE_LEN {
                return Err(NegotiationError::TooLarge {
                    len: value,
                    max: MAX_MESSAGE_LEN,
                });
            }
            return Ok(Some((value, i + 1)));
        }
    }
    if buf.len() >= MAX_VARINT_LEN {
        return Err(NegotiationError::TooLarge {
            len: value,
            max: MAX_MESSAGE_LEN,
        });
    }
    Ok(None)
}

/// Decodes one length-prefixed message from the start of `buf`: `Ok(None)`
/// if `buf` holds only part of it, else the message and the bytes consumed.
pub fn decode_frame(buf: &[u8]) -> Result<Option<(Message, usize)>, NegotiationError> {
    let Some((len, prefix)) = decode_len(buf)? else {
        return Ok(None);
    };
    let Some(body) = buf.get(prefix..prefix + len) else {
        return Ok(None);
    };
    Ok(Some((Message::decode_body(body)?, prefix + len)))
}

/// The version both sides speak: the numerically highest one in both lists.
///
/// ```
/// use shoal::negotiation::select_version;
/// assert_eq!(select_version(&[1, 2, 10], &[2, 9, 10]), Some(10));
/// assert_eq!(select_version(&[9], &[10]), None);
/// ```
pub fn select_version(ours: &[u32], theirs: &[u32]) -> Option<u32> {
    ours.iter().copied().filter(|v| theirs.contains(v)).max()
}

/// Reads one message, byte by byte for the prefix so nothing after the
/// message is consumed from `io`.
pub(crate) async fn read_message<R: AsyncRead + Unpin>(
    io: &mut R,
) -> Result<Message, NegotiationError> {
    let mut prefix = [0u8; MAX_VARINT_LEN];
    let mut filled = 0;
    let (len, _) = loop {
        if filled == MAX_VARINT_LEN {
            // decode_len rejects a full prefix without a terminator.
            return Err(NegotiationError::Malformed("length prefix"));
        }
        prefix[filled] = io.read_u8().await?;
        filled += 1;
        if let Some(found) = decode_len(&prefix[..filled])? {
            break found;
        }
    };
    let mut body = vec![0u8; len];
    io.read_exact(&mut body).await?;
    Message::decode_body(&body)
}

/// Writes one message.
pub(crate) async fn write_message<W: AsyncWrite + Unpin>(
    io: &mut W,
    message: &Message,
) -> Result<(), NegotiationError> {
    let mut buf = BytesMut::new();
    message.encode(&mut buf);
    io.write_all(&buf).await?;
    io.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn encoded(m: &Message) -> Vec<u8> {
        let mut buf = BytesMut::new();
        m.encode(&mut buf);
        buf.to_vec()
    }

    /// The vectors printed in docs/PROTOCOL.md (section 6).
    #[test]
    fn documented_vectors() {
        let propose = Message::Propose {
            name: "/shoal/ping".into(),
            versions: vec![1, 2, 10],
        };
        assert_eq!(
            hex(&encoded(&propose)),
            "16080112120a0b2f73686f616c2f70696e67120301020a"
        );
        let accept = Message::Accept { version: 10 };
        assert_eq!(hex(&encoded(&accept)), "0608011a02080a");
        let refuse = Message::Refuse {
            reason: RefuseReason::UnknownProtocol,
        };
        assert_eq!(hex(&encoded(&refuse)), "06080122020801");
    }

    #[test]
    fn round_trips() {
        for m in [
            Message::Propose {
                name: "x".into(),
                versions: vec![u32::MAX, 0],
            },
            Message::Accept { version: 0 },
            Message::Refuse {
                reason: RefuseReason::Other(77),
            },
            Message::Refuse {
                reason: RefuseReason::Unavailable,
            },
        ] {
            let bytes = encoded(&m);
            let (decoded, used) = decode_frame(&bytes).unwrap().unwrap();
            assert_eq!(decoded, m);
            assert_eq!(used, bytes.len());
            // Every strict prefix asks for more bytes.
            for cut in 0..bytes.len() {
                assert!(decode_frame(&bytes[..cut]).unwrap().is_none());
            }
        }
    }

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(select_version(&[1, 2, 10], &[2, 9, 10]), Some(10));
        assert_eq!(select_version(&[9], &[10]), None);
        assert_eq!(select_version(&[10, 9], &[9, 10]), Some(10));
        assert_eq!(select_version(&[2, 1], &[1]), Some(1));
    }

    #[test]
    fn bounds_checked_before_allocation() {
        // 1025 as a varint.
        assert!(matches!(
            decode_frame(&[0x81, 0x08]),
            Err(NegotiationError::TooLarge { len: 1025, .. })
        ));
        // A three-byte prefix.
        assert!(matches!(
            decode_frame(&[0x80, 0x80, 0x01]),
            Err(NegotiationError::TooLarge { .. })
        ));
        let long = Message::Propose {
            name: "n".repeat(MAX_PROTOCOL_NAME_LEN + 1),
            versions: vec![1],
        };
        assert!(matches!(
            decode_frame(&encoded(&long)),
            Err(NegotiationError::Malformed(_))
        ));
        let many = Message::Propose {
            name: "n".into(),
            versions: (0..=MAX_VERSIONS as u32).collect(),
        };
        assert!(matches!(
            decode_frame(&encoded(&many)),
            Err(NegotiationError::Malformed(_))
        ));
        let none = Message::Propose {
            name: "n".into(),
            versions: vec![],
        };
        assert!(matches!(
            decode_frame(&encoded(&none)),
            Err(NegotiationError::Malformed(_))
        ));
    }

    #[test]
    fn rejects_garbage_and_other_formats() {
        assert!(decode_frame(&[0x03, 0xff, 0xff, 0xff]).is_err());
        // format = 2, empty body
        assert!(matches!(
            decode_frame(&[0x02, 0x08, 0x02]),
            Err(NegotiationError::UnsupportedFormat(2))
        ));
        // format = 1, no body
        assert!(matches!(
            decode_frame(&[0x02, 0x08, 0x01]),
            Err(NegotiationError::Malformed(_))
        ));
        // Invalid UTF-8 name.
        assert!(
            decode_frame(&[0x09, 0x08, 0x01, 0x12, 0x05, 0x0a, 0x01, 0xff, 0x12, 0x00]).is_err()
        );
    }

    #[tokio::test]
    async fn async_read_consumes_exactly_one_message() {
        let mut bytes = encoded(&Message::Accept { version: 3 });
        bytes.extend_from_slice(b"rest");
        let mut reader = &bytes[..];
        let m = read_message(&mut reader).await.unwrap();
        assert_eq!(m, Message::Accept { version: 3 });
        assert_eq!(reader, b"rest");
    }
}
