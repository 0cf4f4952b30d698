//! The tokio driver: one service-wide handler runs the [`Gossip`] core for
//! every session of the protocol.
//!
//! The core lives behind a mutex shared with the [`Handle`](crate::Handle),
//! so application calls (subscribe, publish) and network callbacks go
//! through the same state. After every call into the core, [`Shared::flush`]
//! sends its frames with non-blocking sends (a frame that finds a session's
//! queue full is dropped and counted: gossip recovers it through IHAVE and
//! IWANT) and hands its events to the bounded event channel. The core's
//! heartbeat and other deadlines run on a [`CoreTimer`], re-armed after
//! every call: no polling tick.

use std::sync::{
    Arc, Mutex, MutexGuard, PoisonError,
    atomic::{AtomicU64, Ordering},
};

use bytes::Bytes;
use shoal::{
    CoreTimer, HandlerResult, PeerSessions, ProtocolContext, ProtocolContextMut, ProtocolId,
    ServiceControl, ServiceProtocol,
};
use tokio::sync::mpsc;

use crate::{Error, Event, Gossip};

/// The core and what the driver knows about sessions.
pub(crate) struct Inner {
    pub(crate) core: Gossip,
    /// Open gossip sessions per peer; frames go to the first.
    sessions: PeerSessions,
    /// Set by the handler's `init`; until then frames wait in the core.
    control: Option<ServiceControl>,
    /// Runs the core's deadlines; started by the handler's `init`.
    timer: Option<CoreTimer>,
}

/// State shared between the handler and the [`Handle`](crate::Handle).
pub(crate) struct Shared {
    inner: Mutex<Inner>,
    protocol: ProtocolId,
    events: mpsc::Sender<Event>,
    pub(crate) dropped_events: AtomicU64,
    pub(crate) dropped_frames: AtomicU64,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}

/// The current time as the core takes it (tokio's clock, so paused test
/// time works too).
pub(crate) fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

impl Shared {
    pub(crate) fn new(core: Gossip, protocol: ProtocolId, events: mpsc::Sender<Event>) -> Shared {
        Shared {
            inner: Mutex::new(Inner {
                core,
                sessions: PeerSessions::default(),
                control: None,
                timer: None,
            }),
            protocol,
            events,
            dropped_events: AtomicU64::new(0),
            dropped_frames: AtomicU64::new(0),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends the core's frames and hands out its events. Call after every
    /// call into the core, with the lock held.
    pub(crate) fn flush(&self, inner: &mut Inner) {
        if let Some(timer) = &inner.timer {
            timer.rearm();
        }
        let Some(control) = inner.control.as_ref() else {
            return;
        };
        while let Some(t) = inner.core.poll_transmit() {
            let session = inner.sessions.first(&t.peer);
            let sent = session.is_some_and(|s| control.try_send(s, self.protocol, t.frame).is_ok());
            if !sent {
                self.dropped_frames.fetch_add(1, Ordering::Relaxed);
            }
        }
        while let Some(event) = inner.core.poll_event() {
            if let Event::Disconnect { peer, reason } = &event {
                tracing::debug!(%peer, ?reason, "closing gossip with a misbehaving peer");
                for session in inner.sessions.remove_peer(peer) {
                    // The session may be closing already.
                    let _ = control.close_protocol(session, self.protocol);
                }
            }
            if let Err(mpsc::error::TrySendError::Full(event)) = self.events.try_send(event) {
                self.dropped_events.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(?event, "gossip event queue full; event dropped");
            }
        }
    }
}

/// The service-wide handler.
pub(crate) struct GossipHandler {
    pub(crate) shared: Arc<Shared>,
}

impl ServiceProtocol for GossipHandler {
    fn init(&mut self, ctx: &mut ProtocolContext) -> HandlerResult {
        let timer = CoreTimer::spawn_for(
            &self.shared,
            |shared| shared.lock().core.poll_timeout(),
            |shared, now| {
                let mut inner = shared.lock();
                inner.core.handle_timeout(now);
                shared.flush(&mut inner);
            },
        );
        let mut inner = self.shared.lock();
        inner.control = Some(ctx.control().clone());
        inner.timer = Some(timer);
        // Frames of calls made before the service ran.
        self.shared.flush(&mut inner);
        Ok(())
    }

    fn connected(&mut self, ctx: &mut ProtocolContextMut<'_>, _version: u32) -> HandlerResult {
        let session = ctx.session();
        let mut inner = self.shared.lock();
        if inner.sessions.insert(session.peer, session.id) {
            inner.core.peer_connected(now(), session.peer);
        }
        self.shared.flush(&mut inner);
        Ok(())
    }

    fn disconnected(&mut self, ctx: &mut ProtocolContextMut<'_>) -> HandlerResult {
        let session = ctx.session();
        let mut inner = self.shared.lock();
        if inner.sessions.remove(&session.peer, session.id) {
            inner.core.peer_disconnected(now(), session.peer);
        }
        self.shared.flush(&mut inner);
        Ok(())
    }

    fn received(&mut self, ctx: &mut ProtocolContextMut<'_>, data: Bytes) -> HandlerResult {
        let peer = ctx.session().peer;
        let mut inner = self.shared.lock();
        let result = inner.core.handle_message(now(), peer, &data);
        self.shared.flush(&mut inner);
        match result {
            Ok(()) => Ok(()),
            // Dropped for misbehaviour: its substreams are being closed.
            Err(Error::UnknownPeer(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
