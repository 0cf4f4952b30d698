//! Peer routing: reaching a peer by its id. The [address book](crate::address_book)
//! says where a peer may be; [`ServiceControl::dial_peer`] tries those
//! addresses under one backoff policy; [`ServiceControl::try_send_to_peer`]
//! queues frames (bounded) while the peer is dialled and its protocol
//! opened, and tells the protocol's handler when the dial fails
//! ([`ServiceProtocol::dial_failed`](crate::ServiceProtocol::dial_failed),
//! [`ProtocolEvent::DialFailed`](crate::ProtocolEvent::DialFailed)). No
//! protocol needs addresses, dial tasks or outboxes of its own.

use std::collections::{HashMap, HashSet, VecDeque};

use bytes::Bytes;
use shoal_identity::PeerId;
use shoal_transport::Multiaddr;

use crate::{
    Connected, DialError, DialOptions, ProtocolEvent, ProtocolId, SendError, ServiceControl,
    TargetProtocols,
    address_book::{AddressEntry, AddressSource},
    service::shared::lock,
};

/// Frames waiting for one peer while it is dialled and its protocols
/// opened.
#[derive(Debug, Default)]
pub(crate) struct PeerQueue {
    frames: VecDeque<(ProtocolId, Bytes)>,
    bytes: usize,
}

/// The queues of every peer being dialled by `try_send_to_peer`.
pub(crate) type PeerQueues = HashMap<PeerId, PeerQueue>;

/// What a `dial_peer` in progress tells the calls that wait for it.
type DialOutcome = Result<std::sync::Arc<crate::SessionInfo>, DialError>;

/// For each peer being dialled by `dial_peer`, the other calls for the
/// same peer, waiting for its outcome instead of dialling again (two
/// connections to one peer would be collapsed to one anyway, and the
/// protocols opened on the loser lost).
pub(crate) type PeerDials = HashMap<PeerId, Vec<tokio::sync::oneshot::Sender<DialOutcome>>>;

/// Calls that may wait for one peer's dial; more dial on their own.
const MAX_DIAL_WAITERS: usize = 64;

/// Ends a `dial_peer`'s entry in the waiting list, also when the call is
/// dropped before it finished (its waiters then dial themselves).
struct DialInProgress<'a> {
    dials: &'a std::sync::Mutex<PeerDials>,
    peer: PeerId,
    outcome: Option<DialOutcome>,
}

impl Drop for DialInProgress<'_> {
    fn drop(&mut self) {
        let waiters = lock(self.dials).remove(&self.peer).unwrap_or_default();
        if let Some(outcome) = &self.outcome {
            for waiter in waiters {
                let _ = waiter.send(outcome.clone());
            }
        }
    }
}

impl ServiceControl {
    /// Dials `peer` by id: returns its session if one is open, else tries
    /// the addresses the [address book](crate::address_book) holds for it,
    /// best first, until one answers. A failed address counts against it in
    /// the book (a local limit does not); when every address failed, the
    /// peer is not dialled again before a backoff
    /// ([`Config::dial_backoff`](crate::config::Config::dial_backoff),
    /// doubling up to `dial_backoff_max`): meanwhile
    /// [`DialError::Backoff`] says how long is left. `opts`' expected peer
    /// is set to `peer`.
    pub async fn dial_peer(&self, peer: PeerId, opts: DialOptions) -> Result<Connected, DialError> {
        let shared = &self.shared;
        if let Some(existing) = shared.session_with(&peer) {
            return Ok(self
                .open_targets(existing.info.clone(), &opts.protocols)
                .await);
        }
        let now = tokio::time::Instant::now();
        if let Some((next, _)) = lock(&shared.peer_backoff).get(&peer)
            && *next > now
        {
            return Err(DialError::Backoff {
                peer,
                wait: *next - now,
            });
        }
        // One dial per peer at a time: later calls wait for its outcome.
        let waiting = {
            let mut dials = lock(&shared.peer_dials);
            match dials.get_mut(&peer) {
                Some(waiters) if waiters.len() < MAX_DIAL_WAITERS => {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    waiters.push(tx);
                    Some(rx)
                }
                Some(_) => None,
                None => {
                    dials.insert(peer, Vec::new());
                    None
                }
            }
        };
        if let Some(rx) = waiting {
            if let Ok(outcome) = rx.await {
                let session = outcome?;
                return Ok(self.open_targets(session, &opts.protocols).await);
            }
            // The dial it waited for was dropped: dial now.
            return Box::pin(self.dial_peer(peer, opts)).await;
        }
        let mut progress = DialInProgress {
            dials: &shared.peer_dials,
            peer,
            outcome: None,
        };
        let result = self.dial_addresses(peer, opts).await;
        progress.outcome = Some(
            result
                .as_ref()
                .map(|c| c.session.clone())
                .map_err(Clone::clone),
        );
        drop(progress);
        result
    }

    /// `dial_peer`'s dial: the book's addresses one after the other.
    async fn dial_addresses(
        &self,
        peer: PeerId,
        opts: DialOptions,
    ) -> Result<Connected, DialError> {
        let shared = &self.shared;
        let addrs = lock(&shared.address_book).addresses(&peer);
        if addrs.is_empty() {
            return Err(DialError::NoAddress(peer));
        }
        let mut last = DialError::NoAddress(peer);
        let mut peer_failed = false;
        // Best first; the next starts when one fails or after the stagger,
        // and the first that answers wins (happy eyeballs, RFC 8305).
        // Addresses learned while the dial runs (a fresh record with the
        // relay the peer just reserved on, say) join it when the ones it
        // started with are all under way.
        let mut tried: HashSet<Multiaddr> = HashSet::new();
        let mut waiting: VecDeque<Multiaddr> = addrs.into();
        let mut next_address = |waiting: &mut VecDeque<Multiaddr>| {
            if waiting.is_empty() {
                waiting.extend(
                    lock(&shared.address_book)
                        .addresses(&peer)
                        .into_iter()
                        .filter(|a| !tried.contains(a)),
                );
            }
            let addr = waiting.pop_front()?;
            tried.insert(addr.clone());
            Some(addr)
        };
        let mut running = futures::stream::FuturesUnordered::new();
        let stagger = shared.config.dial_stagger;
        let start = |addr: Multiaddr| {
            let opts = opts.clone().expect(peer);
            async move { (self.dial(addr.clone(), opts).await, addr) }
        };
        if let Some(first) = next_address(&mut waiting) {
            running.push(start(first));
        }
        loop {
            // The peer may connect to us meanwhile (a contact answering
            // through a relay while we still try its old addresses): its
            // session ends the dial.
            if let Some(existing) = shared.session_with(&peer) {
                lock(&shared.peer_backoff).remove(&peer);
                return Ok(self
                    .open_targets(existing.info.clone(), &opts.protocols)
                    .await);
            }
            let next = tokio::time::timeout(stagger, futures::StreamExt::next(&mut running));
            let done = match next.await {
                Ok(Some(done)) => Some(done),
                Ok(None) => None,
                Err(_) => {
                    // The running ones are slow: one more, if any is left.
                    if let Some(addr) = next_address(&mut waiting) {
                        running.push(start(addr));
                    }
                    continue;
                }
            };
            match done {
                Some((Ok(session), _)) => {
                    lock(&shared.peer_backoff).remove(&peer);
                    return Ok(session);
                }
                Some((Err(e), addr)) => {
                    if !e.is_local() {
                        peer_failed = true;
                        lock(&shared.address_book).failed(peer, &addr);
                    }
                    last = e;
                    if let Some(addr) = next_address(&mut waiting) {
                        running.push(start(addr));
                    }
                }
                None => break,
            }
        }
        if peer_failed {
            let config = &shared.config;
            let mut backoff = lock(&shared.peer_backoff);
            let wait = backoff
                .get(&peer)
                .map_or(config.dial_backoff, |(_, wait)| *wait);
            backoff.insert(
                peer,
                (
                    tokio::time::Instant::now() + wait,
                    wait.saturating_mul(2).min(config.dial_backoff_max),
                ),
            );
        }
        Err(last)
    }

    /// Learns addresses of `peer` from `source` (see
    /// [`crate::address_book`]); `dial_peer` tries them.
    ///
    /// An address the book did not hold for `peer` lifts the peer's dial
    /// backoff: the backoff is for addresses that failed, and a new one
    /// (a relay reservation the peer just made, say) has not.
    pub fn add_addresses(&self, peer: PeerId, addrs: &[Multiaddr], source: AddressSource) {
        let mut book = lock(&self.shared.address_book);
        let known = book.addresses(&peer);
        let new = addrs.iter().any(|a| !known.contains(&a.without_peer_id()));
        book.add(peer, addrs, source, crate::control::unix_now());
        drop(book);
        if new {
            lock(&self.shared.peer_backoff).remove(&peer);
        }
    }

    /// The addresses the book holds for `peer`, best first.
    pub fn addresses(&self, peer: &PeerId) -> Vec<Multiaddr> {
        lock(&self.shared.address_book).addresses(peer)
    }

    /// The whole address book, to save it (see
    /// [`AddressStore`](crate::address_book::AddressStore)).
    pub fn address_book(&self) -> Vec<(PeerId, Vec<AddressEntry>)> {
        lock(&self.shared.address_book).snapshot()
    }

    /// Takes back a saved address book (within its bounds).
    pub fn restore_address_book(&self, peers: Vec<(PeerId, Vec<AddressEntry>)>) {
        lock(&self.shared.address_book).restore(peers);
    }

    /// Queues `data` as one frame of `protocol` to `peer`, whatever the
    /// state of the connection: sent at once on an open session with the
    /// protocol open, otherwise kept while the service dials the peer
    /// ([`dial_peer`](Self::dial_peer): the address book, the backoff) and
    /// opens the protocol, then sent in order. If the dial fails, the
    /// frames waiting are dropped and the protocol's handler is told
    /// ([`ServiceProtocol::dial_failed`](crate::ServiceProtocol::dial_failed),
    /// or [`ProtocolEvent::DialFailed`] on an event stream), so a core can
    /// fail its requests at once instead of waiting for their timeouts.
    ///
    /// Bounded: at most [`MAX_QUEUED_FRAMES_PER_PEER`](crate::config::MAX_QUEUED_FRAMES_PER_PEER) frames and
    /// [`Config::send_queue_bytes`](crate::config::Config::send_queue_bytes)
    /// bytes wait per peer, and at most
    /// [`Config::max_outbound_sessions`](crate::config::Config::max_outbound_sessions)
    /// peers have frames waiting; beyond that, [`SendError::PeerQueueFull`].
    pub fn try_send_to_peer(
        &self,
        peer: PeerId,
        protocol: ProtocolId,
        data: impl Into<Bytes>,
    ) -> Result<(), SendError> {
        let data = data.into();
        let shared = &self.shared;
        let entry = shared
            .protocol(protocol)
            .ok_or(SendError::UnknownProtocol(protocol))?;
        if entry.is_raw() {
            return Err(SendError::UnknownProtocol(protocol));
        }
        if data.len() > entry.max_frame_size {
            return Err(SendError::TooLarge {
                len: data.len(),
                max: entry.max_frame_size,
            });
        }
        let mut queues = lock(&shared.peer_queues);
        if !queues.contains_key(&peer)
            && let Some(session) = shared.session_with(&peer)
            && session.version(protocol).is_some()
        {
            drop(queues);
            return self.try_send(session.info.id, protocol, data);
        }
        let config = &shared.config;
        let start = !queues.contains_key(&peer);
        if start && queues.len() >= config.max_outbound_sessions {
            return Err(SendError::PeerQueueFull(peer));
        }
        let queue = queues.entry(peer).or_default();
        if queue.frames.len() >= crate::config::MAX_QUEUED_FRAMES_PER_PEER
            || queue.bytes + data.len() > config.send_queue_bytes
        {
            return Err(SendError::PeerQueueFull(peer));
        }
        queue.bytes += data.len();
        queue.frames.push_back((protocol, data));
        drop(queues);
        if start {
            shared.tasks.spawn(self.clone().deliver_queue(peer));
        }
        Ok(())
    }

    /// Sends `data` as one frame of `protocol` to `peer`: dials it if
    /// needed ([`dial_peer`](Self::dial_peer)), opens the protocol, then
    /// queues the frame, waiting for room. [`SendError::Unreachable`] if the
    /// peer could not be reached (the reason is also reported as
    /// [`ServiceError::DialFailed`](crate::ServiceError::DialFailed)).
    pub async fn send_to_peer(
        &self,
        peer: PeerId,
        protocol: ProtocolId,
        data: impl Into<Bytes>,
    ) -> Result<(), SendError> {
        let connected = self
            .dial_peer(peer, self.opens_for(&peer, vec![protocol]))
            .await
            .map_err(|_| SendError::Unreachable(peer))?;
        self.send(connected.id, protocol, data).await
    }

    /// Starts [`dial_peer`](Self::dial_peer) on a task of the service's
    /// and returns at once: the session shows up as
    /// [`ServiceEvent::SessionOpened`](crate::ServiceEvent::SessionOpened)
    /// (and `connected` on each protocol that opens); a failure is
    /// reported as [`ProtocolEvent::DialFailed`] to `report_to`'s handler,
    /// if given. For handlers, [`ProtocolContext::dial_peer`](crate::ProtocolContext::dial_peer)
    /// reports to their own protocol.
    pub fn try_dial_peer(
        &self,
        peer: PeerId,
        opts: DialOptions,
        report_to: Option<ProtocolId>,
    ) -> Result<(), DialError> {
        if self.shared.shutdown.is_cancelled() {
            return Err(DialError::ShuttingDown);
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(DialError::NoRuntime);
        }
        let control = self.clone();
        self.shared.tasks.spawn(async move {
            if let Err(error) = control.dial_peer(peer, opts).await
                && let Some(protocol) = report_to
            {
                control.tell_dial_failed(protocol, peer, error).await;
            }
        });
        Ok(())
    }

    /// What a send to `peer` opens: on a new session every protocol (as a
    /// dial does, so identify and the like run), on an open one only
    /// `protocols`.
    fn opens_for(&self, peer: &PeerId, protocols: Vec<ProtocolId>) -> DialOptions {
        let targets = match self.shared.session_with(peer) {
            Some(_) => TargetProtocols::Only(protocols),
            None => TargetProtocols::All,
        };
        DialOptions::default().protocols(targets)
    }

    /// The task behind `try_send_to_peer`: dials `peer`, opens the queued
    /// frames' protocols, sends them in order until the queue is empty.
    async fn deliver_queue(self, peer: PeerId) {
        let shared = self.shared.clone();
        // A session can close under the frames (a crossed dial's loser, a
        // peer going away): the frames not sent go back to the queue and,
        // after a short pause that lets the surviving session of a crossed
        // dial arrive, the peer is reached again; a few times at most.
        let mut pause = std::time::Duration::from_millis(20);
        for round in 0..5 {
            if round > 0 {
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            let protocols: Vec<ProtocolId> = {
                let queues = lock(&shared.peer_queues);
                let Some(queue) = queues.get(&peer) else {
                    return;
                };
                let mut ids: Vec<ProtocolId> = queue.frames.iter().map(|(p, _)| *p).collect();
                ids.sort_unstable();
                ids.dedup();
                ids
            };
            let connected = match self.dial_peer(peer, self.opens_for(&peer, protocols)).await {
                Ok(connected) => connected,
                Err(error) => {
                    let queue = lock(&shared.peer_queues).remove(&peer).unwrap_or_default();
                    self.report_dial_failed(peer, queue, error).await;
                    return;
                }
            };
            if self.send_queued(peer, &connected).await {
                return;
            }
        }
        let queue = lock(&shared.peer_queues).remove(&peer).unwrap_or_default();
        tracing::debug!(%peer, frames = queue.frames.len(), "sessions kept closing; frames dropped");
    }

    /// Sends the queued frames on `connected`, in order, until the queue
    /// stays empty (`true`: done, the queue is gone) or a send fails
    /// (`false`: the rest is back in the queue).
    async fn send_queued(&self, peer: PeerId, connected: &Connected) -> bool {
        loop {
            let mut frames = {
                let mut queues = lock(&self.shared.peer_queues);
                let Some(queue) = queues.get_mut(&peer) else {
                    return true;
                };
                if queue.frames.is_empty() {
                    queues.remove(&peer);
                    return true;
                }
                queue.bytes = 0;
                std::mem::take(&mut queue.frames)
            };
            while let Some((protocol, data)) = frames.pop_front() {
                let refusal = connected.refused.iter().find(|(p, _)| *p == protocol);
                if let Some((_, error)) = refusal.filter(|(_, e)| is_refusal(e)) {
                    tracing::debug!(%peer, %protocol, %error, "peer refused the protocol; frame dropped");
                    continue;
                }
                // An open that failed otherwise (a session going away, such
                // as a crossed dial's loser) says nothing about the peer.
                if refusal.is_some()
                    || self
                        .send(connected.id, protocol, data.clone())
                        .await
                        .is_err()
                {
                    // Closed session, or a protocol queued after the dial:
                    // put it back in front of what arrived meanwhile.
                    frames.push_front((protocol, data));
                    let mut queues = lock(&self.shared.peer_queues);
                    let queue = queues.entry(peer).or_default();
                    frames.append(&mut queue.frames);
                    queue.bytes = frames.iter().map(|(_, d)| d.len()).sum();
                    queue.frames = frames;
                    return false;
                }
            }
        }
    }

    /// Tells the handlers of the protocols whose frames waited for `peer`
    /// that it could not be reached.
    async fn report_dial_failed(&self, peer: PeerId, queue: PeerQueue, error: DialError) {
        let mut protocols: Vec<ProtocolId> = queue.frames.iter().map(|(p, _)| *p).collect();
        protocols.sort_unstable();
        protocols.dedup();
        tracing::debug!(%peer, %error, frames = queue.frames.len(), "peer unreachable; queued frames dropped");
        for protocol in protocols {
            self.tell_dial_failed(protocol, peer, error.clone()).await;
        }
    }

    /// Tells `protocol`'s handler (or event stream) that `peer` could not
    /// be reached.
    async fn tell_dial_failed(&self, protocol: ProtocolId, peer: PeerId, error: DialError) {
        if let Some(events) = self.shared.protocol(protocol).and_then(|p| p.events()) {
            let _ = events.send(ProtocolEvent::DialFailed { peer, error }).await;
        }
    }
}

/// Whether an open failed because the peer does not serve the protocol
/// (rather than because the session went away).
fn is_refusal(error: &crate::ControlError) -> bool {
    use crate::negotiation::{NegotiationError, RefuseReason};
    match error {
        crate::ControlError::Negotiation(NegotiationError::Refused(reason)) => {
            *reason != RefuseReason::AlreadyOpen
        }
        crate::ControlError::Negotiation(NegotiationError::Io(_)) => false,
        crate::ControlError::Negotiation(_) => true,
        _ => false,
    }
}
