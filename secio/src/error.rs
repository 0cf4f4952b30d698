//! Error types.
//!
//! A handshake fails with a [`HandshakeError`]: the variants separate broken
//! bytes (the peer or the path is at fault), well-formed messages that break
//! the protocol, incompatible peers, authentication failures, and local I/O
//! or time-outs. After the handshake, failures surface through
//! `std::io::Error` (the stream implements tokio's I/O traits); a
//! [`StreamError`] is carried as the source so callers can downcast it.

use std::{io, time::Duration};

use shoal_identity::PeerId;

use crate::{frame::FrameError, suite::CipherSuite};

/// Why a handshake failed. The connection is unusable afterwards.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// Reading from or writing to the underlying stream failed (including
    /// the peer closing it mid-handshake).
    #[error("i/o error during handshake: {0}")]
    Io(#[from] io::Error),
    /// The whole handshake did not finish within the configured time.
    #[error("handshake did not complete within {0:?}")]
    Timeout(Duration),
    /// A handshake message declared a length over the configured limit. It
    /// was rejected before its body was read.
    #[error("handshake message of {len} bytes exceeds the limit of {max}")]
    MessageTooLarge {
        /// Declared length.
        len: usize,
        /// Configured limit.
        max: usize,
    },
    /// A handshake message could not be parsed.
    #[error("malformed handshake message: {0}")]
    Malformed(&'static str),
    /// A well-formed message arrived where the protocol does not allow it.
    #[error("protocol violation: {0}")]
    ProtocolViolation(&'static str),
    /// The Noise layer rejected a message (bad MAC, invalid key, ...) or
    /// failed locally.
    #[error("noise handshake failed: {0}")]
    Noise(#[from] snow::Error),
    /// The handshake payload is not valid protobuf.
    #[error("invalid handshake payload: {0}")]
    PayloadDecode(#[from] prost::DecodeError),
    /// The handshake payload has a version this implementation does not know.
    #[error("unsupported handshake payload version {0}")]
    UnsupportedPayloadVersion(u32),
    /// The identity key in the payload is not a valid ed25519 key.
    #[error("invalid identity key in handshake payload")]
    InvalidIdentityKey,
    /// The identity signature over the Noise static key does not verify.
    #[error("identity signature over the noise static key does not verify")]
    BadSignature,
    /// The remote authenticated as another peer than the one expected.
    #[error("expected peer {expected}, but the remote is {actual}")]
    PeerIdMismatch {
        /// The peer we meant to reach.
        expected: PeerId,
        /// The peer that answered.
        actual: PeerId,
    },
    /// The responder supports none of our cipher suites.
    #[error("no common cipher suite: ours {ours:?}, theirs (ids) {theirs:?}")]
    NoCommonSuite {
        /// Our supported suites, in preference order.
        ours: Vec<CipherSuite>,
        /// The suite ids the responder listed.
        theirs: Vec<u8>,
    },
    /// The responder refused a suite a second time.
    #[error("the responder refused the retried cipher suite")]
    RepeatedSuiteRefusal,
    /// The initiator spoke a protocol version we do not support (we answered
    /// with the versions we do support).
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u8),
    /// Local resource limit: a handshake message needed more buffer memory
    /// than the [`ReceiveBudget`](crate::ReceiveBudget) could give within
    /// [`MAX_RECEIVE_BUDGET_WAIT`](crate::MAX_RECEIVE_BUDGET_WAIT).
    #[error("receive budget spent: no memory for the handshake message")]
    ReceiveBudgetExhausted,
    /// The responder refused our protocol version.
    #[error("the responder refused our protocol version; it supports {supported:?}")]
    VersionRefused {
        /// Versions the responder listed.
        supported: Vec<u8>,
    },
}

/// A coarse classification of handshake failures, for callers deciding what
/// to do about the peer (retry, back off, ban, report).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureClass {
    /// The connection itself failed or stalled (I/O error, time-out). Nobody
    /// is provably at fault.
    Connection,
    /// Bytes that do not parse or do not authenticate: a broken or malicious
    /// peer, or corruption on the path.
    Malformed,
    /// Well-formed messages the protocol does not allow, or a forged
    /// identity: the peer misbehaved.
    Misbehaved,
    /// The peer is honest but speaks no common version or suite.
    Incompatible,
    /// The peer authenticated as someone other than expected.
    WrongPeer,
    /// A local failure (e.g. the random source).
    Local,
}

impl HandshakeError {
    /// Classifies this failure.
    pub fn class(&self) -> FailureClass {
        match self {
            HandshakeError::Io(_) | HandshakeError::Timeout(_) => FailureClass::Connection,
            HandshakeError::Malformed(_)
            | HandshakeError::MessageTooLarge { .. }
            | HandshakeError::PayloadDecode(_) => FailureClass::Malformed,
            HandshakeError::Noise(snow::Error::Decrypt | snow::Error::Input | snow::Error::Dh) => {
                FailureClass::Malformed
            }
            HandshakeError::Noise(_) | HandshakeError::ReceiveBudgetExhausted => {
                FailureClass::Local
            }
            HandshakeError::ProtocolViolation(_)
            | HandshakeError::RepeatedSuiteRefusal
            | HandshakeError::InvalidIdentityKey
            | HandshakeError::BadSignature => FailureClass::Misbehaved,
            HandshakeError::UnsupportedPayloadVersion(_)
            | HandshakeError::NoCommonSuite { .. }
            | HandshakeError::UnsupportedVersion(_)
            | HandshakeError::VersionRefused { .. } => FailureClass::Incompatible,
            HandshakeError::PeerIdMismatch { .. } => FailureClass::WrongPeer,
        }
    }
}

/// Why a secure stream failed after the handshake; the source of the
/// `io::Error` returned by reads and writes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// A frame declared an invalid length.
    #[error("invalid frame: {0}")]
    Frame(#[from] FrameError),
    /// A frame failed authentication: it was corrupted, replayed, reordered
    /// or forged.
    #[error("frame failed to decrypt (corrupted, replayed or reordered)")]
    Decrypt,
    /// Encrypting a frame failed (nonce exhausted).
    #[error("frame encryption failed: {0}")]
    Encrypt(snow::Error),
    /// The peer closed the connection in the middle of a frame.
    #[error("connection closed in the middle of a frame")]
    Truncated,
    /// An earlier read or write on this stream failed; the stream is dead.
    #[error("the secure stream failed earlier and is unusable")]
    Poisoned,
    /// Local resource limit, no fault of the peer: the stream needed more
    /// receive-buffer memory to finish a frame, and the
    /// [`ReceiveBudget`](crate::ReceiveBudget) it shares with other streams
    /// stayed spent for this long
    /// ([`MAX_RECEIVE_BUDGET_WAIT`](crate::MAX_RECEIVE_BUDGET_WAIT)).
    #[error("receive budget spent for {0:?}: no memory to finish the frame being received")]
    ReceiveBudgetExhausted(Duration),
}

impl StreamError {
    /// The `io::Error` a stream operation returns for this failure.
    pub(crate) fn into_io(self) -> io::Error {
        let kind = match self {
            StreamError::Truncated => io::ErrorKind::UnexpectedEof,
            StreamError::Encrypt(_) | StreamError::Poisoned => io::ErrorKind::Other,
            StreamError::Frame(_) | StreamError::Decrypt => io::ErrorKind::InvalidData,
            StreamError::ReceiveBudgetExhausted(_) => io::ErrorKind::OutOfMemory,
        };
        io::Error::new(kind, self)
    }
}
