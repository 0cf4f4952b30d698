//! The tokio driver: one service-wide handler runs the [`Kademlia`] core
//! for every session of the protocol.
//!
//! The core sits behind a mutex shared with the [`Handle`](crate::Handle).
//! After every call into it, [`Shared::flush`] sends its messages: on an
//! open Kademlia session if there is one (non-blocking; a message that finds
//! the queue full is dropped and its request times out), otherwise the
//! message waits in a small per-peer outbox while a dial task connects to
//! the peer's addresses; a dial that fails, or a message to a peer with
//! neither a session nor an address, is reported to the core
//! (`dial_failed`) so its request fails at once instead of timing out.
//! Query results go to the command that waits for them, other events to
//! the bounded event channel.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use shoal::{
    CoreTimer, DialOptions, Direction, HandlerResult, Multiaddr, PeerId, PeerSessions,
    ProtocolContext, ProtocolContextMut, ProtocolId, ServiceControl, ServiceProtocol,
};
use tokio::sync::{mpsc, oneshot};

use crate::{Event, Kademlia, QueryId, QueryResult, QueryStats};

/// Messages waiting per peer while it is dialled; more are dropped (their
/// requests time out).
pub const MAX_OUTBOX_PER_PEER: usize = 32;

/// Peers whose addresses the driver remembers (from
/// [`Handle::add_address`](crate::Handle::add_address) and our own dials),
/// to tell the core where a peer that talks to us can be reached.
pub const MAX_KNOWN_ADDRS: usize = 16_384;

/// The core and what the driver knows about sessions.
pub(crate) struct Inner {
    pub(crate) core: Kademlia,
    /// Open Kademlia sessions per peer; messages go to the first.
    sessions: PeerSessions,
    /// Dialable addresses per peer.
    known: BTreeMap<PeerId, Vec<Multiaddr>>,
    /// Messages waiting for a session to their peer, while it is dialled.
    outbox: BTreeMap<PeerId, Vec<Bytes>>,
    /// Set by the handler's `init`; until then messages wait in the core.
    control: Option<ServiceControl>,
    /// Commands waiting for their query's result.
    pub(crate) waiters: BTreeMap<QueryId, oneshot::Sender<(QueryResult, QueryStats)>>,
    /// Runs the core's deadlines; started by the handler's `init`.
    timer: Option<CoreTimer>,
}

/// State shared between the handler, the dial tasks and the
/// [`Handle`](crate::Handle).
pub(crate) struct Shared {
    inner: Mutex<Inner>,
    protocol: ProtocolId,
    max_dials: usize,
    events: mpsc::Sender<Event>,
    pub(crate) dropped_events: AtomicU64,
    pub(crate) dropped_messages: AtomicU64,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}

/// The monotonic time as the core takes it (tokio's clock, so paused test
/// time works too).
pub(crate) fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// The wall clock in Unix seconds.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Shared {
    pub(crate) fn new(
        core: Kademlia,
        protocol: ProtocolId,
        max_dials: usize,
        events: mpsc::Sender<Event>,
    ) -> Shared {
        Shared {
            inner: Mutex::new(Inner {
                core,
                sessions: PeerSessions::default(),
                known: BTreeMap::new(),
                outbox: BTreeMap::new(),
                control: None,
                waiters: BTreeMap::new(),
                timer: None,
            }),
            protocol,
            max_dials: max_dials.max(1),
            events,
            dropped_events: AtomicU64::new(0),
            dropped_messages: AtomicU64::new(0),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Remembers dialable addresses of `peer` (bounded).
    pub(crate) fn remember(inner: &mut Inner, peer: PeerId, addrs: &[Multiaddr]) {
        if addrs.is_empty() {
            return;
        }
        if !inner.known.contains_key(&peer) && inner.known.len() >= MAX_KNOWN_ADDRS {
            return;
        }
        let list = inner.known.entry(peer).or_default();
        for a in addrs.iter().rev() {
            let a = a.without_peer_id();
            list.retain(|x| *x != a);
            list.insert(0, a);
        }
        list.truncate(crate::table::MAX_ADDRS_PER_CONTACT);
    }

    /// Sends the core's messages and hands out its events. Call after
    /// every call into the core, with the lock held.
    pub(crate) fn flush(self: &Arc<Self>, inner: &mut Inner) {
        if let Some(timer) = &inner.timer {
            timer.rearm();
        }
        let Some(control) = inner.control.clone() else {
            return;
        };
        while let Some(t) = inner.core.poll_transmit() {
            if let Some(session) = inner.sessions.first(&t.to) {
                if control.try_send(session, self.protocol, t.bytes).is_err() {
                    self.dropped_messages.fetch_add(1, Ordering::Relaxed);
                }
                continue;
            }
            if let Some(queue) = inner.outbox.get_mut(&t.to) {
                // A dial is running.
                if queue.len() < MAX_OUTBOX_PER_PEER {
                    queue.push(t.bytes);
                } else {
                    self.dropped_messages.fetch_add(1, Ordering::Relaxed);
                }
                continue;
            }
            let mut addrs = t.addrs;
            if let Some(known) = inner.known.get(&t.to) {
                addrs.extend(known.iter().cloned());
            }
            if addrs.is_empty() {
                // No session and no address: the peer cannot be reached.
                // Say so now; a silent drop would hold its query up for
                // every attempt's request timeout.
                self.dropped_messages.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(peer = %t.to, "kad: no session and no address; message dropped");
                inner.core.dial_failed(now(), t.to);
                continue;
            }
            if inner.outbox.len() >= self.max_dials {
                self.dropped_messages.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            inner.outbox.insert(t.to, vec![t.bytes]);
            self.spawn_dial(control.clone(), t.to, addrs);
        }
        while let Some(event) = inner.core.poll_event() {
            if let Event::QueryFinished { id, result, stats } = event {
                if let Some(waiter) = inner.waiters.remove(&id) {
                    let _ = waiter.send((result, stats));
                    continue;
                }
                self.emit(Event::QueryFinished { id, result, stats });
                continue;
            }
            self.emit(event);
        }
    }

    fn emit(&self, event: Event) {
        if let Err(mpsc::error::TrySendError::Full(event)) = self.events.try_send(event) {
            self.dropped_events.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(?event, "kad event queue full; event dropped");
        }
    }

    /// Dials `peer` at each address in turn; its outbox is sent when the
    /// protocol opens on the new session (see `connected`).
    fn spawn_dial(self: &Arc<Self>, control: ServiceControl, peer: PeerId, addrs: Vec<Multiaddr>) {
        let shared = self.clone();
        tokio::spawn(async move {
            let mut reached = false;
            // Only failures that say something about the peer count.
            let mut peer_failed = false;
            for addr in addrs {
                let opts = DialOptions::default().expect(peer);
                match control.dial(addr.without_peer_id(), opts).await {
                    Ok(_) => {
                        reached = true;
                        break;
                    }
                    Err(e) => {
                        peer_failed |= !e.is_local();
                        tracing::debug!(%peer, %addr, error = %e, "kad dial failed");
                    }
                }
            }
            let mut inner = shared.lock();
            if reached {
                // The protocol may have opened already (outbox sent) or
                // will open shortly; if it never does, the requests time
                // out and the outbox goes with the next dial.
                if inner.sessions.contains(&peer) {
                    inner.outbox.remove(&peer);
                }
                return;
            }
            inner.outbox.remove(&peer);
            if peer_failed {
                inner.core.dial_failed(now(), peer);
            } else {
                // Not tried (a local limit or the dial pacing): its requests
                // fail, it keeps its place in the routing table.
                inner.core.peer_disconnected(now(), peer);
            }
            shared.flush(&mut inner);
        });
    }
}

/// The service-wide handler.
pub(crate) struct KadHandler {
    pub(crate) shared: Arc<Shared>,
}

impl ServiceProtocol for KadHandler {
    fn init(&mut self, ctx: &mut ProtocolContext) -> HandlerResult {
        let timer = CoreTimer::spawn_for(
            &self.shared,
            |shared| shared.lock().core.poll_timeout(),
            |shared, now| {
                let mut inner = shared.lock();
                inner.core.handle_timeout(now, unix_now());
                shared.flush(&mut inner);
            },
        );
        let mut inner = self.shared.lock();
        inner.control = Some(ctx.control().clone());
        inner.timer = Some(timer);
        self.shared.flush(&mut inner);
        Ok(())
    }

    fn connected(&mut self, ctx: &mut ProtocolContextMut<'_>, _version: u32) -> HandlerResult {
        let session = ctx.session().clone();
        let mut inner = self.shared.lock();
        if session.direction == Direction::Outbound {
            Shared::remember(
                &mut inner,
                session.peer,
                std::slice::from_ref(&session.remote_addr),
            );
        }
        inner.sessions.insert(session.peer, session.id);
        let addrs = inner.known.get(&session.peer).cloned().unwrap_or_default();
        inner.core.peer_connected(now(), session.peer, addrs);
        // Messages that waited for this session.
        if let Some(queue) = inner.outbox.remove(&session.peer)
            && let Some(control) = inner.control.clone()
        {
            for bytes in queue {
                if control
                    .try_send(session.id, self.shared.protocol, bytes)
                    .is_err()
                {
                    self.shared.dropped_messages.fetch_add(1, Ordering::Relaxed);
                }
            }
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
        let (peer, source) = (ctx.session().peer, &ctx.session().remote_addr);
        let mut inner = self.shared.lock();
        let addrs = inner.known.get(&peer).cloned().unwrap_or_default();
        let result =
            inner
                .core
                .handle_message_via(now(), unix_now(), peer, &addrs, Some(source), &data);
        self.shared.flush(&mut inner);
        result.map_err(Into::into)
    }
}
