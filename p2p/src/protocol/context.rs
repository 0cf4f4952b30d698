//! The context handed to protocol handler callbacks.

use std::{
    ops::{Deref, DerefMut},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;

use super::timers::{Timers, TooManyTimers};
use crate::{
    BroadcastResult, ControlError, DialError, DialOptions, PeerId, ProtocolId, SendError,
    ServiceControl, SessionId, SessionInfo, TargetSessions,
};

/// What a handler can do from a callback. Every operation is non-blocking:
/// sends fail with [`SendError::QueueFull`] rather than wait, so a slow peer
/// never stalls the handler (and through it, other sessions).
pub struct ProtocolContext {
    control: ServiceControl,
    protocol: ProtocolId,
    pub(crate) timers: Timers,
    /// Timer scope of the current callback: `None` for service-wide
    /// handlers, the session for per-session instances.
    pub(crate) scope: Option<SessionId>,
}

impl std::fmt::Debug for ProtocolContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProtocolContext")
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}

impl ProtocolContext {
    pub(crate) fn new(control: ServiceControl, protocol: ProtocolId) -> ProtocolContext {
        ProtocolContext {
            control,
            protocol,
            timers: Timers::default(),
            scope: None,
        }
    }

    /// The protocol this handler serves.
    pub fn protocol(&self) -> ProtocolId {
        self.protocol
    }

    /// The service's control handle, for anything not offered here (e.g.
    /// dialling). Prefer its `try_*` methods inside callbacks.
    pub fn control(&self) -> &ServiceControl {
        &self.control
    }

    /// Queues `data` as one frame of this protocol to `session`.
    pub fn send(&self, session: SessionId, data: impl Into<Bytes>) -> Result<(), SendError> {
        self.control.try_send(session, self.protocol, data)
    }

    /// Queues `data` as one frame of this protocol to every targeted session
    /// where the protocol is open.
    pub fn broadcast(&self, target: TargetSessions, data: impl Into<Bytes>) -> BroadcastResult {
        self.control.try_broadcast(target, self.protocol, data)
    }

    /// Starts opening `protocol` on `session`; the outcome is reported as
    /// [`ServiceEvent::ProtocolOpened`](crate::ServiceEvent::ProtocolOpened)
    /// or [`ServiceError::Negotiation`](crate::ServiceError::Negotiation).
    pub fn open_protocol(
        &self,
        session: SessionId,
        protocol: ProtocolId,
    ) -> Result<(), ControlError> {
        self.control.try_open_protocol(session, protocol)
    }

    /// Closes `protocol` on `session` once its queued frames are written.
    pub fn close_protocol(
        &self,
        session: SessionId,
        protocol: ProtocolId,
    ) -> Result<(), ControlError> {
        self.control.close_protocol(session, protocol)
    }

    /// Starts dialling `peer` from the service's address book (see
    /// [`ServiceControl::try_dial_peer`]): the session comes as `connected`
    /// once this protocol opens on it, a failure as `dial_failed`.
    pub fn dial_peer(&self, peer: PeerId) -> Result<(), DialError> {
        self.control
            .try_dial_peer(peer, DialOptions::default(), Some(self.protocol))
    }

    /// Queues `data` as one frame of this protocol to `peer`, by id (see
    /// [`ServiceControl::try_send_to_peer`]).
    pub fn send_to_peer(&self, peer: PeerId, data: impl Into<Bytes>) -> Result<(), SendError> {
        self.control.try_send_to_peer(peer, self.protocol, data)
    }

    /// Starts closing `session`.
    pub fn disconnect(&self, session: SessionId) -> Result<(), ControlError> {
        self.control.try_disconnect(session)
    }

    /// Calls `notify(token)` every `interval` until removed. A service-wide
    /// handler's timers live until removed or the service stops; a
    /// per-session instance's timers die with its session's protocol.
    /// Setting an existing token again replaces its interval.
    pub fn set_notify(&mut self, interval: Duration, token: u64) -> Result<(), TooManyTimers> {
        self.timers.set(self.scope, token, interval)
    }

    /// Calls `notify(token)` once at `at` (at once if it has passed), then
    /// forgets the timer: a core's next deadline, for instance. Setting an
    /// existing token again moves it. Scoped like
    /// [`set_notify`](Self::set_notify).
    pub fn wake_at(&mut self, at: tokio::time::Instant, token: u64) -> Result<(), TooManyTimers> {
        self.timers.wake_at(self.scope, token, at)
    }

    /// The protocols registered on this service: id and name, in
    /// registration order.
    pub fn protocol_names(&self) -> Vec<(ProtocolId, String)> {
        self.control.protocol_names()
    }

    /// Stops the timer `token` (of this scope).
    pub fn remove_notify(&mut self, token: u64) {
        self.timers.remove(self.scope, token);
    }
}

/// The context of a callback about one session: a [`ProtocolContext`]
/// (through `Deref`) plus that session.
pub struct ProtocolContextMut<'a> {
    ctx: &'a mut ProtocolContext,
    session: &'a Arc<SessionInfo>,
}

impl std::fmt::Debug for ProtocolContextMut<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProtocolContextMut")
            .field("protocol", &self.ctx.protocol)
            .field("session", &self.session.id)
            .finish_non_exhaustive()
    }
}

impl<'a> ProtocolContextMut<'a> {
    pub(crate) fn new(
        ctx: &'a mut ProtocolContext,
        session: &'a Arc<SessionInfo>,
    ) -> ProtocolContextMut<'a> {
        ProtocolContextMut { ctx, session }
    }

    /// The session concerned.
    pub fn session(&self) -> &Arc<SessionInfo> {
        self.session
    }

    /// Queues `data` as one frame of this protocol back to the session.
    pub fn reply(&self, data: impl Into<Bytes>) -> Result<(), SendError> {
        self.ctx.send(self.session.id, data)
    }

    /// Closes this protocol on this session once queued frames are written.
    pub fn close(&self) -> Result<(), ControlError> {
        self.ctx.close_protocol(self.session.id, self.ctx.protocol)
    }

    /// Starts closing the whole session.
    pub fn disconnect_session(&self) -> Result<(), ControlError> {
        self.ctx.disconnect(self.session.id)
    }
}

impl Deref for ProtocolContextMut<'_> {
    type Target = ProtocolContext;

    fn deref(&self) -> &ProtocolContext {
        self.ctx
    }
}

impl DerefMut for ProtocolContextMut<'_> {
    fn deref_mut(&mut self) -> &mut ProtocolContext {
        self.ctx
    }
}
