//! Small identifiers and the description of a session.

use std::fmt;

use shoal_identity::PeerId;
use shoal_transport::Multiaddr;

/// A session (one secure, multiplexed connection), numbered locally from 1
/// in the order sessions are created. Never reused within a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(pub(crate) u64);

impl SessionId {
    /// Wraps a number. Only ids handed out by a service name its sessions;
    /// others simply match none.
    pub const fn new(n: u64) -> SessionId {
        SessionId(n)
    }

    /// The number.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A protocol, as numbered by the application (a small integer chosen when
/// building the service; it never goes on the wire — the protocol *name*
/// does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProtocolId(pub u32);

impl fmt::Display for ProtocolId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "protocol {}", self.0)
    }
}

impl From<u32> for ProtocolId {
    fn from(id: u32) -> ProtocolId {
        ProtocolId(id)
    }
}

/// Names one dial; echoed by the
/// [`ServiceEvent::SessionOpened`](crate::ServiceEvent::SessionOpened) or
/// [`ServiceError::DialFailed`](crate::ServiceError::DialFailed) that ends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DialId(pub(crate) u64);

/// Names one listener; echoed by
/// [`ServiceEvent::ListenStarted`](crate::ServiceEvent::ListenStarted),
/// [`ServiceEvent::ListenClosed`](crate::ServiceEvent::ListenClosed) and
/// [`ServiceError::ListenFailed`](crate::ServiceError::ListenFailed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListenerId(pub(crate) u64);

/// Who opened the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The remote dialled us.
    Inbound,
    /// We dialled the remote.
    Outbound,
}

/// What is known about a session. Shared as `Arc<SessionInfo>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// Local number of the session.
    pub id: SessionId,
    /// The authenticated remote peer.
    pub peer: PeerId,
    /// The remote address (for outbound sessions, the address dialled).
    pub remote_addr: Multiaddr,
    /// Who dialled.
    pub direction: Direction,
    /// The cipher suite the handshake agreed on (see
    /// [`ServiceBuilder::cipher_suites`](crate::ServiceBuilder::cipher_suites)).
    pub cipher_suite: shoal_secio::CipherSuite,
}

impl SessionInfo {
    /// Whether the connection goes through a relay (the remote address
    /// has a `/p2p-circuit` component): only protocols declared
    /// [`over_relay`](crate::ProtocolMetaBuilder::over_relay) run on it.
    pub fn is_relayed(&self) -> bool {
        self.remote_addr.is_relayed()
    }
}
