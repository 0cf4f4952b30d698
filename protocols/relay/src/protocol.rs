//! The relay wire messages (version 1 of both protocols) and how they are
//! framed on a raw substream.
//!
//! Both protocols are raw: after the control messages below, the same
//! substream carries the relayed connection's bytes unchanged. Each control
//! message is one protobuf message behind a `u32` big-endian length:
//!
//! ```text
//! len: u32 big-endian | payload (len bytes, len ≤ MAX_MESSAGE_SIZE)
//! ```
//!
//! ```protobuf
//! // /shoal/relay/hop: a client and its relay.
//! message HopMessage {
//!   oneof body {              // the type tag
//!     Reserve reserve = 1;    // client → relay
//!     Connect connect = 2;    // client → relay
//!     Status  status  = 3;    // relay → client
//!   }
//! }
//! message Reserve {}
//! message Connect { bytes peer = 1; }          // 32 bytes: whom to reach
//!
//! // /shoal/relay/stop: the relay and the reserved peer it forwards to.
//! message StopMessage {
//!   oneof body {
//!     Incoming incoming = 1;  // relay → reserved peer
//!     Status   status   = 2;  // reserved peer → relay
//!   }
//! }
//! message Incoming { bytes peer = 1; Limit limit = 2; } // who asks, and the circuit's limit
//!
//! message Status {
//!   uint32 code = 1;          // see StatusCode
//!   uint32 ttl_secs = 2;      // a reservation: how long it lasts from now
//!   Limit limit = 3;          // a reservation or a circuit: what a circuit may carry
//! }
//! message Limit { uint64 bytes = 1; uint32 secs = 2; } // per direction; per circuit
//! ```
//!
//! Within version 1, unknown fields are ignored and an unknown body is an
//! error; an unknown status code is kept as [`StatusCode::Other`].

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message as _;
use shoal_identity::PeerId;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest control message accepted or sent, in bytes. Protects memory: an
/// encoded message is under 60 bytes; the rest is room for fields a later
/// version adds.
pub const MAX_MESSAGE_SIZE: usize = 1024;

mod wire {
    //! The protobuf schema.

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct HopMessage {
        #[prost(oneof = "HopBody", tags = "1, 2, 3")]
        pub(super) body: Option<HopBody>,
    }

    #[derive(Clone, PartialEq, prost::Oneof)]
    pub(super) enum HopBody {
        #[prost(message, tag = "1")]
        Reserve(Reserve),
        #[prost(message, tag = "2")]
        Connect(Connect),
        #[prost(message, tag = "3")]
        Status(Status),
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Reserve {}

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Connect {
        #[prost(bytes = "vec", tag = "1")]
        pub(super) peer: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct StopMessage {
        #[prost(oneof = "StopBody", tags = "1, 2")]
        pub(super) body: Option<StopBody>,
    }

    #[derive(Clone, PartialEq, prost::Oneof)]
    pub(super) enum StopBody {
        #[prost(message, tag = "1")]
        Incoming(Incoming),
        #[prost(message, tag = "2")]
        Status(Status),
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Incoming {
        #[prost(bytes = "vec", tag = "1")]
        pub(super) peer: Vec<u8>,
        #[prost(message, optional, tag = "2")]
        pub(super) limit: Option<Limit>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Status {
        #[prost(uint32, tag = "1")]
        pub(super) code: u32,
        #[prost(uint32, tag = "2")]
        pub(super) ttl_secs: u32,
        #[prost(message, optional, tag = "3")]
        pub(super) limit: Option<Limit>,
    }

    #[derive(Clone, Copy, PartialEq, prost::Message)]
    pub(super) struct Limit {
        #[prost(uint64, tag = "1")]
        pub(super) bytes: u64,
        #[prost(uint32, tag = "2")]
        pub(super) secs: u32,
    }
}

/// What one circuit may carry before the relay closes it: `bytes` in each
/// direction, for at most `secs` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Bytes per direction.
    pub bytes: u64,
    /// Seconds from the circuit's start.
    pub secs: u32,
}

/// The outcome a [`Status`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusCode {
    /// Code 0: done (reservation held, or circuit open).
    Ok,
    /// Code 1: the peer asked for holds no reservation on this relay.
    NoReservation,
    /// Code 2: a limit of the relay is reached (reservations, circuits, per
    /// peer or per network); try later or elsewhere.
    ResourceLimit,
    /// Code 3: the relay could not reach the reserved peer, or it refused.
    ConnectionFailed,
    /// Code 4: the request broke a rule (a malformed peer id, a circuit to
    /// the relay itself or to the asker).
    Malformed,
    /// Code 5: the receiver does not take this from the sender (a stop
    /// request from a node it holds no reservation with; a relay that does
    /// not serve the asker).
    PermissionDenied,
    /// Any other code.
    Other(u32),
}

impl StatusCode {
    /// The number on the wire.
    pub fn code(self) -> u32 {
        match self {
            StatusCode::Ok => 0,
            StatusCode::NoReservation => 1,
            StatusCode::ResourceLimit => 2,
            StatusCode::ConnectionFailed => 3,
            StatusCode::Malformed => 4,
            StatusCode::PermissionDenied => 5,
            StatusCode::Other(code) => code,
        }
    }

    /// The code for a number from the wire.
    pub fn from_code(code: u32) -> StatusCode {
        match code {
            0 => StatusCode::Ok,
            1 => StatusCode::NoReservation,
            2 => StatusCode::ResourceLimit,
            3 => StatusCode::ConnectionFailed,
            4 => StatusCode::Malformed,
            5 => StatusCode::PermissionDenied,
            other => StatusCode::Other(other),
        }
    }
}

/// An answer: its code, and for a reservation its lifetime and the limit
/// of each circuit; for a circuit its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// The outcome.
    pub code: StatusCode,
    /// A reservation's remaining lifetime in seconds (0 otherwise).
    pub ttl_secs: u32,
    /// The limit of circuits, if the answer states one.
    pub limit: Option<Limit>,
}

impl Status {
    /// An answer with `code` and nothing else.
    pub fn new(code: StatusCode) -> Status {
        Status {
            code,
            ttl_secs: 0,
            limit: None,
        }
    }
}

/// A message of `/shoal/relay/hop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HopMessage {
    /// Asks the relay to hold (or renew) a reservation for the sender.
    Reserve,
    /// Asks the relay for a circuit to `peer`, which must hold a
    /// reservation there.
    Connect(PeerId),
    /// The relay's answer.
    Status(Status),
}

/// A message of `/shoal/relay/stop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMessage {
    /// The relay has a circuit for the reserved peer, from `peer`.
    Incoming {
        /// Who asked for the circuit (as the relay authenticated it).
        peer: PeerId,
        /// What the circuit may carry.
        limit: Option<Limit>,
    },
    /// The reserved peer's answer.
    Status(Status),
}

/// Why a control message could not be read. Blame: the remote; only the
/// substream it came on is closed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The declared length is over [`MAX_MESSAGE_SIZE`]; nothing was read.
    #[error("relay message of {0} bytes exceeds {MAX_MESSAGE_SIZE}")]
    TooLarge(usize),
    /// The bytes are not valid protobuf for the schema.
    #[error("malformed relay message: {0}")]
    Malformed(#[from] prost::DecodeError),
    /// The message has no body this version knows.
    #[error("relay message of unknown type")]
    UnknownType,
    /// A peer id is not 32 bytes.
    #[error("peer id of {0} bytes in a relay message")]
    PeerIdLength(usize),
    /// Reading failed (including end of stream before a whole message).
    #[error("reading a relay message: {0}")]
    Io(#[from] std::io::Error),
}

fn limit_to_wire(limit: Option<Limit>) -> Option<wire::Limit> {
    limit.map(|l| wire::Limit {
        bytes: l.bytes,
        secs: l.secs,
    })
}

fn status_to_wire(s: Status) -> wire::Status {
    wire::Status {
        code: s.code.code(),
        ttl_secs: s.ttl_secs,
        limit: limit_to_wire(s.limit),
    }
}

fn status_from_wire(s: wire::Status) -> Status {
    Status {
        code: StatusCode::from_code(s.code),
        ttl_secs: s.ttl_secs,
        limit: s.limit.map(|l| Limit {
            bytes: l.bytes,
            secs: l.secs,
        }),
    }
}

fn peer_from_wire(bytes: &[u8]) -> Result<PeerId, DecodeError> {
    PeerId::try_from_slice(bytes).map_err(|_| DecodeError::PeerIdLength(bytes.len()))
}

/// The payload with its length prefix.
fn framed(message: &impl prost::Message) -> Bytes {
    let len = message.encoded_len();
    let mut out = BytesMut::with_capacity(4 + len);
    // Every message of this module encodes to far less than u32::MAX.
    out.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    message.encode_raw(&mut out);
    out.freeze()
}

impl HopMessage {
    /// The framed message (length prefix included).
    pub fn encode(&self) -> Bytes {
        let body = match *self {
            HopMessage::Reserve => wire::HopBody::Reserve(wire::Reserve {}),
            HopMessage::Connect(peer) => wire::HopBody::Connect(wire::Connect {
                peer: peer.as_bytes().to_vec(),
            }),
            HopMessage::Status(s) => wire::HopBody::Status(status_to_wire(s)),
        };
        framed(&wire::HopMessage { body: Some(body) })
    }

    /// Decodes one payload (without its length prefix).
    pub fn decode(payload: &[u8]) -> Result<HopMessage, DecodeError> {
        if payload.len() > MAX_MESSAGE_SIZE {
            return Err(DecodeError::TooLarge(payload.len()));
        }
        match wire::HopMessage::decode(payload)?.body {
            Some(wire::HopBody::Reserve(_)) => Ok(HopMessage::Reserve),
            Some(wire::HopBody::Connect(c)) => Ok(HopMessage::Connect(peer_from_wire(&c.peer)?)),
            Some(wire::HopBody::Status(s)) => Ok(HopMessage::Status(status_from_wire(s))),
            None => Err(DecodeError::UnknownType),
        }
    }

    /// Reads one message from `io`, exactly: not a byte past it, so what
    /// follows (a relayed connection) stays in the stream.
    pub async fn read(io: &mut (impl AsyncRead + Unpin)) -> Result<HopMessage, DecodeError> {
        HopMessage::decode(&read_payload(io).await?)
    }

    /// Writes the message to `io` and flushes.
    pub async fn write(&self, io: &mut (impl AsyncWrite + Unpin)) -> std::io::Result<()> {
        io.write_all(&self.encode()).await?;
        io.flush().await
    }
}

impl StopMessage {
    /// The framed message (length prefix included).
    pub fn encode(&self) -> Bytes {
        let body = match *self {
            StopMessage::Incoming { peer, limit } => wire::StopBody::Incoming(wire::Incoming {
                peer: peer.as_bytes().to_vec(),
                limit: limit_to_wire(limit),
            }),
            StopMessage::Status(s) => wire::StopBody::Status(status_to_wire(s)),
        };
        framed(&wire::StopMessage { body: Some(body) })
    }

    /// Decodes one payload (without its length prefix).
    pub fn decode(payload: &[u8]) -> Result<StopMessage, DecodeError> {
        if payload.len() > MAX_MESSAGE_SIZE {
            return Err(DecodeError::TooLarge(payload.len()));
        }
        match wire::StopMessage::decode(payload)?.body {
            Some(wire::StopBody::Incoming(i)) => Ok(StopMessage::Incoming {
                peer: peer_from_wire(&i.peer)?,
                limit: i.limit.map(|l| Limit {
                    bytes: l.bytes,
                    secs: l.secs,
                }),
            }),
            Some(wire::StopBody::Status(s)) => Ok(StopMessage::Status(status_from_wire(s))),
            None => Err(DecodeError::UnknownType),
        }
    }

    /// Reads one message from `io`, exactly (see [`HopMessage::read`]).
    pub async fn read(io: &mut (impl AsyncRead + Unpin)) -> Result<StopMessage, DecodeError> {
        StopMessage::decode(&read_payload(io).await?)
    }

    /// Writes the message to `io` and flushes.
    pub async fn write(&self, io: &mut (impl AsyncWrite + Unpin)) -> std::io::Result<()> {
        io.write_all(&self.encode()).await?;
        io.flush().await
    }
}

/// Reads a length prefix and that many bytes, checking the length before
/// allocating.
async fn read_payload(io: &mut (impl AsyncRead + Unpin)) -> Result<Vec<u8>, DecodeError> {
    let len = io.read_u32().await?;
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    if len > MAX_MESSAGE_SIZE {
        return Err(DecodeError::TooLarge(len));
    }
    let mut payload = vec![0; len];
    io.read_exact(&mut payload).await?;
    Ok(payload)
}

#[cfg(test)]
mod tests;
