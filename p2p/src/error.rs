//! Error types. Each says its scope (a send, a substream, a session, the
//! service), who is to blame, and names the peer or address concerned.

use std::{sync::Arc, time::Duration};

use shoal_identity::PeerId;
use shoal_transport::{Multiaddr, TransportError};

use crate::{DialId, ListenerId, ProtocolId, SessionId, negotiation::NegotiationError};

/// A boxed error returned by protocol handler callbacks.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What a protocol handler callback returns; an error closes the protocol on
/// the session concerned (or everywhere, for a service-wide handler's
/// `init`) and is reported as [`ServiceError::Handler`].
pub type HandlerResult = Result<(), BoxError>;

/// Why a [`ServiceBuilder`](crate::ServiceBuilder) refused its settings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// Two protocols share an id.
    #[error("protocol id {0} is used twice")]
    DuplicateId(ProtocolId),
    /// Two protocols share a name.
    #[error("protocol name {0:?} is used twice")]
    DuplicateName(String),
    /// A protocol name is empty or longer than
    /// [`MAX_PROTOCOL_NAME_LEN`](crate::negotiation::MAX_PROTOCOL_NAME_LEN).
    #[error("protocol name {0:?} must be 1 to 128 bytes")]
    BadName(String),
    /// A protocol lists no versions or more than
    /// [`MAX_VERSIONS`](crate::negotiation::MAX_VERSIONS).
    #[error("protocol {0:?} must list 1 to 16 versions")]
    BadVersions(String),
    /// A limit is zero where it must not be.
    #[error("configuration value {0} must be greater than zero")]
    Zero(&'static str),
    /// The secure-channel configuration could not be created.
    #[error("secio configuration: {0}")]
    Secio(String),
    /// A frame limit is larger than the send queue, so such frames could
    /// never be queued.
    #[error("max frame size {frame} of {name:?} exceeds the send queue of {queue} bytes")]
    FrameOverQueue {
        /// Protocol name.
        name: String,
        /// Its frame limit.
        frame: usize,
        /// The send-queue bound.
        queue: usize,
    },
}

/// Why a dial failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum DialError {
    /// No configured transport supports the address.
    #[error("no transport supports {0}")]
    NoTransport(Multiaddr),
    /// The outbound-session limit is reached.
    #[error("outbound session limit of {0} reached")]
    TooManySessions(usize),
    /// The address's `/p2p/` component and the expected peer id differ.
    #[error("address names peer {in_addr}, but {expected} was expected")]
    ConflictingPeerId {
        /// The peer id given in the dial options.
        expected: PeerId,
        /// The peer id in the address.
        in_addr: PeerId,
    },
    /// The transport could not connect.
    #[error("transport: {0}")]
    Transport(#[source] Arc<TransportError>),
    /// The secure handshake failed (including
    /// [`HandshakeError::PeerIdMismatch`](shoal_secio::HandshakeError::PeerIdMismatch)
    /// when the remote is not the expected peer, and the handshake timeout).
    #[error("secure handshake: {0}")]
    Handshake(#[source] Arc<shoal_secio::HandshakeError>),
    /// The service is shutting down.
    #[error("the service is shutting down")]
    ShuttingDown,
    /// The service stopped before the dial completed.
    #[error("the service stopped")]
    ServiceStopped,
    /// Not called from within a tokio runtime.
    #[error("no tokio runtime")]
    NoRuntime,
    /// Dials to this socket address are over their rate (see
    /// [`Config::dials_per_addr_burst`](crate::config::Config::dials_per_addr_burst));
    /// nothing was sent.
    #[error("dials to {0} are rate-limited; try again later")]
    RateLimited(Multiaddr),
    /// `try_dial` to a peer that already has this session (one session per
    /// pair of peers); `dial` returns the session instead.
    #[error("already connected (session {0})")]
    AlreadyConnected(SessionId),
    /// `dial_peer` to a peer the address book has no address for.
    #[error("no known address of {0}")]
    NoAddress(PeerId),
    /// `dial_peer` to a peer whose last dials all failed, before its
    /// backoff ended; nothing was sent.
    #[error("{peer} failed recently; next dial allowed in {wait:?}")]
    Backoff {
        /// The peer.
        peer: PeerId,
        /// How long until the next dial is allowed.
        wait: std::time::Duration,
    },
}

impl DialError {
    /// Whether the dial failed for a reason of ours (a local limit, the dial
    /// pacing, shutdown) that says nothing about the peer or its address:
    /// nothing was sent, so it must not count as the peer failing.
    pub fn is_local(&self) -> bool {
        matches!(
            self,
            DialError::TooManySessions(_)
                | DialError::RateLimited(_)
                | DialError::Backoff { .. }
                | DialError::AlreadyConnected(_)
                | DialError::ShuttingDown
                | DialError::ServiceStopped
                | DialError::NoRuntime
        )
    }

    /// The remote's actual peer id, if the dial failed because another peer
    /// answered.
    pub fn actual_peer(&self) -> Option<PeerId> {
        match self {
            DialError::Handshake(e) => match &**e {
                shoal_secio::HandshakeError::PeerIdMismatch { actual, .. } => Some(*actual),
                _ => None,
            },
            _ => None,
        }
    }
}

/// Why `listen` failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ListenError {
    /// No configured transport supports the address.
    #[error("no transport supports {0}")]
    NoTransport(Multiaddr),
    /// The transport could not listen.
    #[error("transport: {0}")]
    Transport(#[source] Arc<TransportError>),
    /// The service is shutting down.
    #[error("the service is shutting down")]
    ShuttingDown,
    /// Not called from within a tokio runtime.
    #[error("no tokio runtime")]
    NoRuntime,
}

/// Why a message could not be queued. Scope: that message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The session's send queue (bytes or frames) is full: the peer is not
    /// reading fast enough. Try again later or drop the message.
    #[error("send queue of session {0} is full")]
    QueueFull(SessionId),
    /// No such session (never existed or closed).
    #[error("session {0} does not exist")]
    NoSession(SessionId),
    /// The protocol is not open on the session.
    #[error("protocol {1} is not open on session {0}")]
    ProtocolNotOpen(SessionId, ProtocolId),
    /// The message is larger than the protocol's frame limit.
    #[error("message of {len} bytes exceeds the frame limit of {max}")]
    TooLarge {
        /// Message length.
        len: usize,
        /// The protocol's `max_frame_size`.
        max: usize,
    },
    /// No protocol with this id is registered (or it is a raw protocol,
    /// which has no frames).
    #[error("unknown protocol {0}")]
    UnknownProtocol(ProtocolId),
    /// Too much already waits for this peer while it is dialled (or too
    /// many peers are being dialled): see
    /// [`ServiceControl::try_send_to_peer`](crate::ServiceControl::try_send_to_peer).
    #[error("too many frames wait for peer {0}")]
    PeerQueueFull(PeerId),
    /// The peer could not be reached (no address, every address failed, or
    /// it is backing off).
    #[error("peer {0} could not be reached")]
    Unreachable(PeerId),
}

/// Why a control command could not be carried out.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// No such session.
    #[error("session {0} does not exist")]
    NoSession(SessionId),
    /// No protocol with this id is registered.
    #[error("unknown protocol {0}")]
    UnknownProtocol(ProtocolId),
    /// The protocol already has (or is opening) its substream on the session.
    #[error("protocol {1} is already open on session {0}")]
    AlreadyOpen(SessionId, ProtocolId),
    /// Raw-stream operations need a raw protocol and vice versa.
    #[error("protocol {0} has the wrong kind for this operation")]
    WrongKind(ProtocolId),
    /// The multiplexer refused to open a stream (limit, GoAway, closed).
    #[error("cannot open a substream: {0}")]
    Open(#[source] shoal_yamux::OpenError),
    /// Negotiation of the substream failed.
    #[error("negotiation failed: {0}")]
    Negotiation(#[source] NegotiationError),
    /// The service is shutting down or stopped.
    #[error("the service is shutting down")]
    ShuttingDown,
    /// Not called from within a tokio runtime.
    #[error("no tokio runtime")]
    NoRuntime,
    /// An unspecified address (`0.0.0.0`, `::`) cannot be announced.
    #[error("{0} is unspecified: peers cannot dial it")]
    UnspecifiedAddress(Multiaddr),
    /// As many external addresses as allowed are announced already.
    #[error("at most {0} external addresses are announced")]
    TooManyExternalAddresses(usize),
}

/// A failure on one protocol substream of a session, after negotiation.
/// Scope: that substream; the session and other protocols go on.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The peer declared a frame over the protocol's `max_frame_size`; the
    /// substream was reset before reading it. Blame: remote.
    #[error("peer sent a frame of {len} bytes, over the limit of {max}")]
    FrameTooLarge {
        /// Declared length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The substream ended in the middle of a frame. Blame: remote.
    #[error("substream ended in the middle of a frame")]
    Truncated,
    /// Reading or writing the substream failed (reset by the peer, session
    /// closing...).
    #[error("substream i/o: {0}")]
    Io(Arc<std::io::Error>),
}

/// Why a protocol handler failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandlerError {
    /// A callback returned an error.
    #[error("handler returned an error: {0}")]
    Returned(#[source] BoxError),
    /// A callback panicked; the panic was caught.
    #[error("handler panicked: {0}")]
    Panicked(String),
}

/// Why a session closed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum CloseReason {
    /// We closed it (`disconnect`).
    #[error("closed locally")]
    Local,
    /// The service shut down.
    #[error("service shut down")]
    Shutdown,
    /// No protocol was open for the idle timeout.
    #[error("idle for {0:?}")]
    Idle(Duration),
    /// The remote closed it gracefully.
    #[error("closed by the remote")]
    Remote,
    /// The multiplexer failed (see the error's blame).
    #[error("multiplexer: {0}")]
    Muxer(#[source] shoal_yamux::ConnectionError),
    /// Another session with the same peer was kept: one session per pair
    /// of peers (see [`ServiceControl::dial`](crate::ServiceControl::dial)).
    #[error("replaced by another session with the same peer")]
    Duplicate,
}

/// A failure the service reports to its
/// [`ServiceHandle`](crate::ServiceHandle). Each variant names its cause and
/// the peer or address concerned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// A dial failed.
    #[error("dial {id:?} to {addr} failed: {error}")]
    DialFailed {
        /// The id returned by `try_dial` / used by `dial`.
        id: DialId,
        /// The address dialled.
        addr: Multiaddr,
        /// The peer we expected, if any.
        expected: Option<PeerId>,
        /// Why.
        #[source]
        error: DialError,
    },
    /// Listening failed.
    #[error("listen {id:?} on {addr} failed: {error}")]
    ListenFailed {
        /// The listener id.
        id: ListenerId,
        /// The address.
        addr: Multiaddr,
        /// Why.
        #[source]
        error: ListenError,
    },
    /// Accepting a connection failed; the listener goes on.
    #[error("accept on {addr} failed: {error}")]
    AcceptFailed {
        /// The listening address.
        addr: Multiaddr,
        /// Why.
        #[source]
        error: Arc<TransportError>,
    },
    /// An inbound connection finished its handshake but the inbound-session
    /// limit of established sessions is reached; it was closed.
    #[error("refused inbound connection from {remote_addr}: limit of {limit} reached")]
    InboundLimit {
        /// Who connected.
        remote_addr: Multiaddr,
        /// The limit.
        limit: usize,
    },
    /// An inbound connection was closed at once, before its handshake: its
    /// address, its subnet or the handshakes in progress are over a bound of
    /// [`Config`](crate::config::Config) (see its `max_inbound_*`,
    /// `max_handshakes_per_ip` and `handshake_rate_per_ip`).
    #[error("refused inbound connection from {remote_addr}: {reason}")]
    InboundRefused {
        /// Who connected.
        remote_addr: Multiaddr,
        /// Which bound.
        reason: &'static str,
    },
    /// The secure handshake of an inbound connection failed (including its
    /// timeout).
    #[error("inbound handshake from {remote_addr} failed: {error}")]
    HandshakeFailed {
        /// Who connected.
        remote_addr: Multiaddr,
        /// Why.
        #[source]
        error: Arc<shoal_secio::HandshakeError>,
    },
    /// Negotiating a protocol substream failed; only that substream closed.
    #[error("negotiation with {peer} on session {session} failed ({protocol}): {error}")]
    Negotiation {
        /// The session.
        session: SessionId,
        /// The peer.
        peer: PeerId,
        /// The protocol name proposed (by us or the peer), if known.
        protocol: String,
        /// Why.
        #[source]
        error: NegotiationError,
    },
    /// A protocol substream failed after negotiation; only that substream
    /// closed.
    #[error("protocol {protocol} with {peer} on session {session}: {error}")]
    Protocol {
        /// The session.
        session: SessionId,
        /// The peer.
        peer: PeerId,
        /// The protocol.
        protocol: ProtocolId,
        /// Why.
        #[source]
        error: ProtocolError,
    },
    /// A protocol handler failed. For a per-session handler (or a
    /// service-wide handler's per-session callback) the protocol was closed
    /// on that session; for a service-wide handler's `init`/`notify` or
    /// panic, the protocol was closed everywhere and is refused from now on.
    #[error("handler of protocol {protocol} failed (session {session:?}, peer {peer:?}): {error}")]
    Handler {
        /// The protocol.
        protocol: ProtocolId,
        /// The session, if the failure concerns one.
        session: Option<SessionId>,
        /// Its peer.
        peer: Option<PeerId>,
        /// Why.
        #[source]
        error: HandlerError,
    },
    /// The multiplexer of a session failed; the session closed (a
    /// [`ServiceEvent::SessionClosed`](crate::ServiceEvent::SessionClosed)
    /// follows).
    #[error("multiplexer of session {session} with {peer} failed: {error}")]
    Muxer {
        /// The session.
        session: SessionId,
        /// The peer.
        peer: PeerId,
        /// Why.
        #[source]
        error: shoal_yamux::ConnectionError,
    },
    /// A protocol handler's queue or the event stream of a protocol was
    /// dropped while sessions still used it.
    #[error("protocol {0} lost its handler")]
    HandlerGone(ProtocolId),
}
