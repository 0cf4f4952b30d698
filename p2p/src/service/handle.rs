//! The service-level event sink: [`ServiceHandle`], [`ServiceEvent`] and
//! [`ServiceContext`].

use std::sync::Arc;

use shoal_identity::PeerId;
use shoal_transport::Multiaddr;

use crate::{
    CloseReason, DialId, ListenerId, ProtocolId, ServiceControl, ServiceError, SessionInfo,
};

/// Something that happened at the service level.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ServiceEvent {
    /// A listener is accepting connections on `addr` (the address actually
    /// bound).
    ListenStarted {
        /// The listener.
        id: ListenerId,
        /// Where.
        addr: Multiaddr,
    },
    /// A listener stopped.
    ListenClosed {
        /// The listener.
        id: ListenerId,
        /// Where it listened.
        addr: Multiaddr,
    },
    /// A session is up (secured, multiplexed).
    SessionOpened {
        /// The session.
        session: Arc<SessionInfo>,
        /// The dial that made it, for outbound sessions.
        dial: Option<DialId>,
    },
    /// A session ended; all its protocols were closed before.
    SessionClosed {
        /// The session.
        session: Arc<SessionInfo>,
        /// Why.
        reason: CloseReason,
    },
    /// A protocol substream was negotiated on a session (either side opened
    /// it).
    ProtocolOpened {
        /// The session.
        session: Arc<SessionInfo>,
        /// The protocol.
        protocol: ProtocolId,
        /// The negotiated version.
        version: u32,
    },
    /// A protocol substream closed.
    ProtocolClosed {
        /// The session.
        session: Arc<SessionInfo>,
        /// The protocol.
        protocol: ProtocolId,
    },
}

/// What a [`ServiceHandle`] callback can use.
#[derive(Debug)]
pub struct ServiceContext<'a> {
    pub(crate) control: &'a ServiceControl,
}

impl ServiceContext<'_> {
    /// The control handle (prefer its `try_*` methods in callbacks).
    pub fn control(&self) -> &ServiceControl {
        self.control
    }

    /// Our peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.control.local_peer_id()
    }
}

/// Receives service events and errors, one at a time, on the service task.
/// Callbacks are synchronous and should be quick: while one runs, further
/// reports queue up (bounded).
pub trait ServiceHandle: Send + 'static {
    /// A service event.
    fn handle_event(&mut self, ctx: &mut ServiceContext<'_>, event: ServiceEvent) {
        let _ = (ctx, event);
    }

    /// A failure; see [`ServiceError`] for what was closed.
    fn handle_error(&mut self, ctx: &mut ServiceContext<'_>, error: ServiceError) {
        let _ = ctx;
        tracing::debug!(%error, "unhandled service error");
    }
}

/// Ignores everything (errors are logged at debug level).
impl ServiceHandle for () {}
