//! The protocol handler traits.
//!
//! Callbacks are synchronous: they cannot wait on I/O, so one handler can
//! never stall a session's reading or writing. Anything they send goes
//! through bounded queues and fails with
//! [`SendError::QueueFull`](crate::SendError::QueueFull) instead of waiting.
//! Each callback returns a [`HandlerResult`]; an error closes the protocol on
//! the session concerned and is reported, and a panic is caught and treated
//! the same way (service-wide handlers: see [`ServiceProtocol`]).

use bytes::Bytes;

use crate::{DialError, HandlerResult, PeerId, ProtocolContext, ProtocolContextMut};

/// A service-wide protocol handler: one instance serves the protocol on
/// every session. Its callbacks run one at a time on the handler's own task.
///
/// Errors returned from `connected`, `received` and `disconnected` close the
/// protocol on that session. An error from `init` or `notify`, or a panic in
/// any callback, disables the protocol: it is closed on every session and
/// refused from then on.
pub trait ServiceProtocol: Send + 'static {
    /// Called once, before any other callback.
    fn init(&mut self, ctx: &mut ProtocolContext) -> HandlerResult {
        let _ = ctx;
        Ok(())
    }

    /// The protocol was opened on a session, at `version`.
    fn connected(&mut self, ctx: &mut ProtocolContextMut<'_>, version: u32) -> HandlerResult {
        let _ = (ctx, version);
        Ok(())
    }

    /// The protocol was closed on a session (by either side, or because the
    /// session closed).
    fn disconnected(&mut self, ctx: &mut ProtocolContextMut<'_>) -> HandlerResult {
        let _ = ctx;
        Ok(())
    }

    /// A frame arrived from a session.
    fn received(&mut self, ctx: &mut ProtocolContextMut<'_>, data: Bytes) -> HandlerResult {
        let _ = (ctx, data);
        Ok(())
    }

    /// A timer set with [`ProtocolContext::set_notify`] or
    /// [`ProtocolContext::wake_at`] fired.
    fn notify(&mut self, ctx: &mut ProtocolContext, token: u64) -> HandlerResult {
        let _ = (ctx, token);
        Ok(())
    }

    /// Frames of this protocol waited for `peer`
    /// ([`ServiceControl::try_send_to_peer`](crate::ServiceControl::try_send_to_peer))
    /// and it could not be reached: they were dropped.
    fn dial_failed(
        &mut self,
        ctx: &mut ProtocolContext,
        peer: PeerId,
        error: &DialError,
    ) -> HandlerResult {
        let _ = (ctx, peer, error);
        Ok(())
    }
}

/// A per-session protocol handler: a fresh instance (from the factory given
/// to [`ProtocolMetaBuilder::session_handle`](crate::ProtocolMetaBuilder::session_handle))
/// per session on which the protocol opens, dropped when it closes. Instance
/// state is therefore isolated per session and costs nothing on sessions
/// where the protocol is not open.
///
/// An error or panic in any callback closes the protocol on that session and
/// drops the instance; other sessions are unaffected. Timers set from an
/// instance belong to its session and die with it.
pub trait SessionProtocol: Send + 'static {
    /// The protocol was opened on this instance's session, at `version`.
    fn connected(&mut self, ctx: &mut ProtocolContextMut<'_>, version: u32) -> HandlerResult {
        let _ = (ctx, version);
        Ok(())
    }

    /// The protocol was closed; the instance is dropped afterwards.
    fn disconnected(&mut self, ctx: &mut ProtocolContextMut<'_>) -> HandlerResult {
        let _ = ctx;
        Ok(())
    }

    /// A frame arrived.
    fn received(&mut self, ctx: &mut ProtocolContextMut<'_>, data: Bytes) -> HandlerResult {
        let _ = (ctx, data);
        Ok(())
    }

    /// A timer set with [`ProtocolContext::set_notify`] fired.
    fn notify(&mut self, ctx: &mut ProtocolContextMut<'_>, token: u64) -> HandlerResult {
        let _ = (ctx, token);
        Ok(())
    }
}
