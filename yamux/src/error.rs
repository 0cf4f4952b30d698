//! Errors, each saying its scope (stream or connection), who is to blame and
//! which GoAway code, if any, went on the wire.

use std::sync::Arc;
use std::time::Duration;

use crate::StreamId;
use crate::frame::{FrameError, GoAwayCode};

/// Who caused an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// The local application (API misuse or an explicit reset/close).
    Local,
    /// The remote peer (malformed or illegal frames, resets, GoAway).
    Remote,
    /// Neither side misbehaved: the transport failed or a timer expired.
    Transport,
}

/// A well-formed frame that breaks the protocol. Blame: remote. The
/// connection sends GoAway(protocol error) and closes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolViolation {
    /// The remote sent more Data than the window we granted.
    #[error("stream {id}: {len} data bytes exceed the granted window of {credit}")]
    WindowExceeded {
        /// Stream.
        id: StreamId,
        /// Payload length of the offending frame.
        len: u32,
        /// Credit the remote had left.
        credit: u32,
    },
    /// A WindowUpdate pushed the send window past `u32::MAX`.
    #[error("stream {id}: window update overflows the send window")]
    WindowOverflow {
        /// Stream.
        id: StreamId,
    },
    /// SYN with an id of our parity, or id 0.
    #[error("stream {id}: SYN with an id of the wrong parity")]
    WrongParity {
        /// Stream.
        id: StreamId,
    },
    /// SYN for an id that is or was in use.
    #[error("stream {id}: SYN reuses a stream id")]
    ReusedId {
        /// Stream.
        id: StreamId,
    },
    /// A Data or WindowUpdate frame for an id that was never opened.
    #[error("stream {id}: frame for a stream that was never opened")]
    NeverOpened {
        /// Stream.
        id: StreamId,
    },
    /// Data or WindowUpdate on stream 0.
    #[error("stream frame on the session id 0")]
    SessionIdForStream,
    /// Data after the remote half-closed the stream.
    #[error("stream {id}: data after FIN")]
    DataAfterFin {
        /// Stream.
        id: StreamId,
    },
}

/// Why a connection ended. Every stream operation afterwards fails with
/// [`StreamError::Connection`] carrying this value.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectionError {
    /// Graceful end: a GoAway(normal) went one way or the other and no
    /// stream was left (after our GoAway, streams that outlive the close
    /// timeout are reset first). Also what
    /// [`Control::accept_stream`](crate::Control::accept_stream) returns once
    /// the remote's GoAway means no inbound stream will come. Blame: none; no
    /// code sent beyond GoAway(normal).
    #[error("connection closed gracefully")]
    Closed,
    /// The remote sent bytes that are not a frame. Blame: remote; we sent
    /// GoAway(protocol error).
    #[error("remote sent a malformed frame: {0}; sent GoAway(protocol error)")]
    Malformed(#[from] FrameError),
    /// The remote sent a well-formed but illegal frame. Blame: remote; we
    /// sent GoAway(protocol error).
    #[error("remote violated the protocol: {0}; sent GoAway(protocol error)")]
    Protocol(#[from] ProtocolViolation),
    /// The remote exceeded a control-frame limit (ping flood, SYN flood,
    /// empty frames, or pongs it never reads). Blame: remote; we sent
    /// GoAway(protocol error).
    #[error("remote flooded control frames: {0}; sent GoAway(protocol error)")]
    ControlFlood(&'static str),
    /// A keep-alive ping went unanswered. Blame: transport; we sent
    /// GoAway(internal error).
    #[error("keep-alive ping unanswered for {0:?}; sent GoAway(internal error)")]
    KeepAliveTimeout(Duration),
    /// The remote sent GoAway with an error code (or an unknown code).
    /// Blame: remote; nothing sent.
    #[error("remote sent GoAway({0})")]
    RemoteGoAway(GoAwayCode),
    /// The transport reached end-of-file while the connection was in use.
    /// Blame: transport; nothing sent.
    #[error("transport closed with the connection still open")]
    TransportClosed,
    /// The transport failed. Blame: transport; nothing sent.
    #[error("transport error: {0}")]
    Io(Arc<std::io::Error>),
}

impl ConnectionError {
    /// Who caused the error.
    pub fn blame(&self) -> Blame {
        match self {
            ConnectionError::Closed => Blame::Local,
            ConnectionError::Malformed(_)
            | ConnectionError::Protocol(_)
            | ConnectionError::ControlFlood(_)
            | ConnectionError::RemoteGoAway(_) => Blame::Remote,
            ConnectionError::KeepAliveTimeout(_)
            | ConnectionError::TransportClosed
            | ConnectionError::Io(_) => Blame::Transport,
        }
    }

    /// The GoAway code we put on the wire for this error, if any.
    pub fn go_away_code(&self) -> Option<GoAwayCode> {
        match self {
            ConnectionError::Closed => Some(GoAwayCode::Normal),
            ConnectionError::Malformed(_)
            | ConnectionError::Protocol(_)
            | ConnectionError::ControlFlood(_) => Some(GoAwayCode::ProtocolError),
            ConnectionError::KeepAliveTimeout(_) => Some(GoAwayCode::InternalError),
            ConnectionError::RemoteGoAway(_)
            | ConnectionError::TransportClosed
            | ConnectionError::Io(_) => None,
        }
    }

    /// Whether this is the graceful [`ConnectionError::Closed`].
    pub fn is_graceful(&self) -> bool {
        matches!(self, ConnectionError::Closed)
    }
}

impl From<std::io::Error> for ConnectionError {
    fn from(e: std::io::Error) -> Self {
        ConnectionError::Io(Arc::new(e))
    }
}

/// Why opening a stream failed. Blame: local (limits and state); nothing is
/// sent on the wire.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OpenError {
    /// [`Config::max_concurrent_streams`](crate::Config::max_concurrent_streams) live streams exist.
    #[error("stream limit of {0} reached")]
    TooManyStreams(usize),
    /// We sent GoAway; no new streams.
    #[error("we sent GoAway; no new streams")]
    GoAwaySent,
    /// The remote sent GoAway; it accepts no new streams.
    #[error("remote sent GoAway; it accepts no new streams")]
    GoAwayReceived,
    /// All stream ids of our parity were used.
    #[error("stream ids exhausted")]
    IdsExhausted,
    /// The connection is closed.
    #[error(transparent)]
    Connection(ConnectionError),
}

/// Why a stream operation failed. Scope: this stream, unless
/// [`StreamError::Connection`].
#[derive(Debug, Clone, thiserror::Error)]
pub enum StreamError {
    /// The stream was reset. Blame says by whom: remote (RST received) or
    /// local (we called reset). Code on the wire: the RST flag.
    #[error("stream reset by the {} side", if *.0 == Blame::Remote { "remote" } else { "local" })]
    Reset(Blame),
    /// Write after `finish`. Blame: local API misuse; nothing sent.
    #[error("write after finish")]
    WriteAfterFinish,
    /// Unknown or long-closed stream id. Blame: local API misuse.
    #[error("unknown stream {0}")]
    UnknownStream(StreamId),
    /// The whole connection ended.
    #[error("connection closed: {0}")]
    Connection(ConnectionError),
}

impl StreamError {
    /// Who caused the error.
    pub fn blame(&self) -> Blame {
        match self {
            StreamError::Reset(blame) => *blame,
            StreamError::WriteAfterFinish | StreamError::UnknownStream(_) => Blame::Local,
            StreamError::Connection(e) => e.blame(),
        }
    }

    /// The closest `std::io::ErrorKind`, used by the tokio stream adapter.
    pub fn io_kind(&self) -> std::io::ErrorKind {
        use std::io::ErrorKind;
        match self {
            StreamError::Reset(_) => ErrorKind::ConnectionReset,
            StreamError::WriteAfterFinish => ErrorKind::BrokenPipe,
            StreamError::UnknownStream(_) => ErrorKind::NotConnected,
            StreamError::Connection(ConnectionError::Io(e)) => e.kind(),
            StreamError::Connection(_) => ErrorKind::ConnectionAborted,
        }
    }
}

impl From<StreamError> for std::io::Error {
    fn from(e: StreamError) -> Self {
        std::io::Error::new(e.io_kind(), e)
    }
}
