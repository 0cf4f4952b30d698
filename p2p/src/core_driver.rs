//! [`CoreDriver`]: the one tokio driver of every sans-IO [`Core`]. It runs
//! the core as a service-wide protocol handler and moves bytes, sessions
//! and time in and out of it; the protocol itself lives in the core.
//!
//! - Sessions: the core hears of a peer once, when the protocol opens on
//!   its first session, and loses it when its last session closes.
//! - Transmits go out by peer id through
//!   [`ServiceControl::try_send_to_peer`](crate::ServiceControl::try_send_to_peer):
//!   on an open session at once, otherwise after the service dialled the
//!   peer from its address book. A peer that cannot be reached comes back
//!   as [`Core::dial_failed`]. A frame that finds every queue full is
//!   dropped and counted ([`CoreHandle::dropped_transmits`]): cores retry or
//!   time out their requests.
//! - Addresses the core learned ([`Core::poll_addresses`]) go to the
//!   address book as hearsay, before the transmits of the same call.
//! - Time: one [`CoreTimer`] sleeps until the core's deadline. It is woken
//!   only when a call moved the deadline earlier, so a core without a
//!   deadline costs no wake-up at all.
//! - Events go to the closure given to [`CoreDriver::new`], called with
//!   the core locked: it must not call back into the [`CoreHandle`].
//!
//! The application reaches the core through a [`CoreHandle`]: every call
//! goes through [`CoreHandle::with`], which flushes afterwards.
//!
//! ```
//! use std::time::Instant;
//! use shoal::{BoxError, Core, CoreDriver, Now, ProtocolId, ProtocolMeta, Remote, Transmit};
//!
//! /// Counts the frames it receives.
//! #[derive(Default)]
//! struct Counter(u64);
//!
//! impl Core for Counter {
//!     type Event = u64;
//!     fn handle_message(&mut self, _: Now, _: &Remote, _: &[u8]) -> Result<(), BoxError> {
//!         self.0 += 1;
//!         Ok(())
//!     }
//!     fn handle_timeout(&mut self, _: Now) {}
//!     fn poll_timeout(&self) -> Option<Instant> { None }
//!     fn poll_transmit(&mut self) -> Option<Transmit> { None }
//!     fn poll_event(&mut self) -> Option<u64> { None }
//! }
//!
//! let (driver, handle) = CoreDriver::new(Counter::default(), |_count| {});
//! let meta = ProtocolMeta::builder(ProtocolId(9), "/count").service_handle(driver);
//! assert_eq!(handle.read(|core| core.0), 0);
//! # drop(meta);
//! ```

use std::{
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Instant,
};

use bytes::Bytes;

use crate::{
    Core, CoreTimer, DialError, HandlerResult, Now, PeerId, ProtocolContext, ProtocolContextMut,
    ProtocolId, Remote, ServiceControl, ServiceProtocol, address_book::AddressSource,
    peer_sessions::PeerSessions,
};

/// Rounds of one flush (see [`Shared::flush`]).
const MAX_FLUSH_ROUNDS: usize = 8;

/// The closure receiving a core's events.
type Sink<E> = Box<dyn FnMut(E) + Send>;

struct Inner<C: Core> {
    core: C,
    on_event: Sink<C::Event>,
    /// Open sessions of the protocol, per peer.
    sessions: PeerSessions,
    /// Set by the handler's `init`; until then output waits in the core.
    control: Option<(ServiceControl, ProtocolId)>,
    timer: Option<CoreTimer>,
    /// The deadline the timer sleeps until.
    armed: Option<Instant>,
}

struct Shared<C: Core> {
    inner: Mutex<Inner<C>>,
    dropped_transmits: AtomicU64,
    /// Whether a frame to a peer without a session makes the service dial
    /// it (see [`CoreDriver::connected_only`]).
    dial: AtomicBool,
    /// Whether a frame that finds the queues full waits for room (see
    /// [`CoreDriver::wait_for_room`]).
    wait: AtomicBool,
}

impl<C: Core> Shared<C> {
    fn lock(&self) -> MutexGuard<'_, Inner<C>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands out what the core produced; call after every call into it.
    /// Handing out an event may make the core produce more (a core that
    /// acts on its own events as they are polled): the rounds repeat until
    /// a round finds nothing, a few times at most.
    fn flush(&self, inner: &mut Inner<C>) {
        for _ in 0..MAX_FLUSH_ROUNDS {
            if !self.flush_round(inner) {
                break;
            }
        }
        // Wake the timer only if the deadline moved earlier: a later one
        // is found when the timer fires at the old one.
        if let Some(timer) = &inner.timer
            && let Some(next) = inner.core.poll_timeout()
            && inner.armed.is_none_or(|armed| next < armed)
        {
            inner.armed = Some(next);
            timer.rearm();
        }
    }

    /// One round of [`Shared::flush`]; `true` if it handed anything out.
    fn flush_round(&self, inner: &mut Inner<C>) -> bool {
        let mut any = false;
        if let Some((control, protocol)) = &inner.control {
            while let Some((peer, addrs)) = inner.core.poll_addresses() {
                control.add_addresses(peer, &addrs, AddressSource::Hearsay);
            }
            let dial = self.dial.load(Ordering::Relaxed);
            let wait = self.wait.load(Ordering::Relaxed);
            while let Some(t) = inner.core.poll_transmit() {
                any = true;
                // The service picks the peer's session that stays (not one
                // a crossed dial is replacing).
                let sent = if dial || inner.sessions.contains(&t.peer) {
                    control.try_send_to_peer(t.peer, *protocol, t.bytes.clone())
                } else {
                    Err(crate::SendError::Unreachable(t.peer))
                };
                if wait
                    && let Err(crate::SendError::QueueFull(_) | crate::SendError::PeerQueueFull(_)) =
                        sent
                {
                    let (control, protocol) = (control.clone(), *protocol);
                    tokio::spawn(async move {
                        let _ = control.send_to_peer(t.peer, protocol, t.bytes).await;
                    });
                    continue;
                }
                if let Err(error) = sent {
                    self.dropped_transmits.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(peer = %t.peer, %protocol, %error, "frame dropped");
                }
            }
            while let Some(peer) = inner.core.poll_close() {
                tracing::debug!(%peer, %protocol, "closing the protocol with a misbehaving peer");
                for session in inner.sessions.remove_peer(&peer) {
                    // The session may be closing already.
                    let _ = control.close_protocol(session, *protocol);
                }
            }
        }
        while let Some(event) = inner.core.poll_event() {
            any = true;
            (inner.on_event)(event);
        }
        any
    }

    /// Calls `f` on the core at the current time, then flushes.
    fn call<R>(&self, f: impl FnOnce(&mut C, Now) -> R) -> R {
        let mut inner = self.lock();
        let result = f(&mut inner.core, Now::system());
        self.flush(&mut inner);
        result
    }
}

/// The protocol handler running a [`Core`]: register it with
/// [`ProtocolMetaBuilder::service_handle`](crate::ProtocolMetaBuilder::service_handle).
pub struct CoreDriver<C: Core> {
    shared: Arc<Shared<C>>,
}

/// The application's side of a [`CoreDriver`]: calls into the core.
/// Cheap to clone.
pub struct CoreHandle<C: Core> {
    shared: Arc<Shared<C>>,
}

impl<C: Core> Clone for CoreHandle<C> {
    fn clone(&self) -> Self {
        CoreHandle {
            shared: self.shared.clone(),
        }
    }
}

impl<C: Core> std::fmt::Debug for CoreDriver<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreDriver").finish_non_exhaustive()
    }
}

impl<C: Core> std::fmt::Debug for CoreHandle<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreHandle").finish_non_exhaustive()
    }
}

impl<C: Core> CoreDriver<C> {
    /// A driver of `core` whose events go to `on_event` (called with the
    /// core locked: hand them on, e.g. to a channel, and return).
    pub fn new(
        core: C,
        on_event: impl FnMut(C::Event) + Send + 'static,
    ) -> (CoreDriver<C>, CoreHandle<C>) {
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                core,
                on_event: Box::new(on_event),
                sessions: PeerSessions::default(),
                control: None,
                timer: None,
                armed: None,
            }),
            dropped_transmits: AtomicU64::new(0),
            dial: AtomicBool::new(true),
            wait: AtomicBool::new(false),
        });
        (
            CoreDriver {
                shared: shared.clone(),
            },
            CoreHandle { shared },
        )
    }
}

impl<C: Core> CoreDriver<C> {
    /// Frames go only to peers the protocol is open with; others are
    /// dropped and counted instead of dialled (for a protocol such as a
    /// gossip mesh, which talks only to its connected peers).
    pub fn connected_only(self) -> Self {
        self.shared.dial.store(false, Ordering::Relaxed);
        self
    }
}

impl<C: Core> CoreDriver<C> {
    /// A frame that finds the queues full waits for room (on a task of its
    /// own) instead of being dropped: for a core whose every frame costs
    /// something it cannot take back, such as a message key, and that
    /// bounds how many frames it has in flight itself.
    pub fn wait_for_room(self) -> Self {
        self.shared.wait.store(true, Ordering::Relaxed);
        self
    }
}

impl<C: Core> CoreHandle<C> {
    /// Calls `f` on the core at the current time, then sends what it
    /// produced and re-arms the timer.
    pub fn with<R>(&self, f: impl FnOnce(&mut C, Now) -> R) -> R {
        self.shared.call(f)
    }

    /// Reads the core.
    pub fn read<R>(&self, f: impl FnOnce(&C) -> R) -> R {
        f(&self.shared.lock().core)
    }

    /// Frames the core produced that could not be queued (see the module
    /// documentation).
    pub fn dropped_transmits(&self) -> u64 {
        self.shared.dropped_transmits.load(Ordering::Relaxed)
    }

    /// How often the core's timer task woke up (fired or was re-armed).
    pub fn timer_wakeups(&self) -> u64 {
        self.shared
            .lock()
            .timer
            .as_ref()
            .map_or(0, CoreTimer::wakeups)
    }

    /// The service's control handle, once the service runs.
    pub fn control(&self) -> Option<ServiceControl> {
        self.shared.lock().control.as_ref().map(|(c, _)| c.clone())
    }

    /// Whether the protocol is open with `peer`.
    pub fn is_connected(&self, peer: &PeerId) -> bool {
        self.shared.lock().sessions.contains(peer)
    }
}

impl<C: Core> ServiceProtocol for CoreDriver<C> {
    fn init(&mut self, ctx: &mut ProtocolContext) -> HandlerResult {
        let timer = CoreTimer::spawn_for(
            &self.shared,
            |shared| {
                let mut inner = shared.lock();
                inner.armed = inner.core.poll_timeout();
                inner.armed
            },
            |shared, instant| {
                let mut inner = shared.lock();
                if inner.core.poll_timeout().is_some_and(|due| due <= instant) {
                    let now = Now::at(instant, Now::system().unix_ms);
                    inner.core.handle_timeout(now);
                }
                shared.flush(&mut inner);
            },
        );
        let mut inner = self.shared.lock();
        inner.control = Some((ctx.control().clone(), ctx.protocol()));
        inner.timer = Some(timer);
        // Output of calls made before the service ran.
        self.shared.flush(&mut inner);
        Ok(())
    }

    fn connected(&mut self, ctx: &mut ProtocolContextMut<'_>, _version: u32) -> HandlerResult {
        let session = ctx.session();
        let mut inner = self.shared.lock();
        if inner.sessions.insert(session.peer, session.id) {
            inner
                .core
                .peer_connected(Now::system(), &Remote::from(&**session));
        }
        self.shared.flush(&mut inner);
        Ok(())
    }

    fn disconnected(&mut self, ctx: &mut ProtocolContextMut<'_>) -> HandlerResult {
        let session = ctx.session();
        let mut inner = self.shared.lock();
        if inner.sessions.remove(&session.peer, session.id) {
            inner.core.peer_disconnected(Now::system(), session.peer);
        }
        self.shared.flush(&mut inner);
        Ok(())
    }

    fn received(&mut self, ctx: &mut ProtocolContextMut<'_>, data: Bytes) -> HandlerResult {
        let from = Remote::from(&**ctx.session());
        self.shared
            .call(|core, now| core.handle_message(now, &from, &data))
    }

    fn dial_failed(
        &mut self,
        _ctx: &mut ProtocolContext,
        peer: PeerId,
        error: &DialError,
    ) -> HandlerResult {
        tracing::debug!(%peer, %error, "peer unreachable");
        self.shared.call(|core, now| core.dial_failed(now, peer));
        Ok(())
    }
}
