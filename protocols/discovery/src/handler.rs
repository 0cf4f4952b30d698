//! The service-wide discovery handler: answers and sends `GetPeers`, feeds
//! the store and the service's address book, and on every tick asks the
//! service to dial peers to hold the target.
//!
//! The service does the dialling ([`ProtocolContext::dial_peer`]: the
//! address book, its backoff) and reports back to this handler: a session
//! we dialled opens the protocol (`connected`, which verifies the address
//! reached), a peer that cannot be reached comes as `dial_failed`. A dial
//! that ends neither way (the peer does not speak discovery) stops counting
//! against `max_concurrent_dials` after [`DIAL_WAIT`].

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use shoal::{
    DialError, DialOptions, Direction, HandlerResult, Multiaddr, PeerId, ProtocolContext,
    ProtocolContextMut, ServiceProtocol, SessionId, address_book::AddressSource,
};
use shoal_identify::LocalRecord;
use tokio::time::Instant;

use crate::{
    DiscoveryMessage, Event, MAX_IGNORED_MESSAGES, MAX_MESSAGE_SIZE, MAX_PEERS_PER_MESSAGE,
    RemoveReason, Shared,
    store::{Backoff, DialFailure, Inserted},
};

/// The upkeep timer.
const TICK: u64 = 1;

/// How long a dial counts as in flight without news of it.
const DIAL_WAIT: Duration = Duration::from_secs(60);

/// Why a session's discovery substream is closed by us.
#[derive(Debug, thiserror::Error)]
enum DiscoveryError {
    #[error("{0} ignored discovery messages in a row")]
    Flood(u32),
    #[error("{got} records in an answer to a request for {asked}")]
    TooManyRecords { got: usize, asked: usize },
}

struct SessionState {
    peer: PeerId,
    /// When we last sent `GetPeers`, and whether its answer is pending.
    last_request: Instant,
    awaiting: bool,
    /// When we last answered a `GetPeers`.
    last_answer: Option<Instant>,
    /// Ignored messages since the last accepted one.
    ignored: u32,
    /// Where the next answer starts in the list of relayable records, so
    /// repeated requests walk the whole list.
    cursor: usize,
}

pub(crate) struct DiscoveryHandler {
    shared: Arc<Shared>,
    local: LocalRecord,
    sessions: HashMap<SessionId, SessionState>,
    /// Our dials in flight: the address the store chose, and since when.
    dialing: HashMap<PeerId, (Multiaddr, Instant)>,
    next_bootstrap: Instant,
    /// Bootstrap rounds since the node last had a session.
    bootstrap_rounds: u32,
}

impl DiscoveryHandler {
    pub(crate) fn new(shared: Arc<Shared>, local: LocalRecord) -> DiscoveryHandler {
        DiscoveryHandler {
            shared,
            local,
            sessions: HashMap::new(),
            dialing: HashMap::new(),
            next_bootstrap: Instant::now(),
            bootstrap_rounds: 0,
        }
    }

    fn request_size(&self) -> u32 {
        self.shared
            .config
            .max_records_per_response
            .clamp(1, MAX_PEERS_PER_MESSAGE) as u32
    }

    fn send_request(&self, ctx: &ProtocolContext, session: SessionId) -> bool {
        let message = DiscoveryMessage::GetPeers {
            max: self.request_size(),
        };
        ctx.send(session, message.encode()).is_ok()
    }

    /// Asks the service to dial `peer`, which the store says is at `addr`.
    fn dial(&mut self, ctx: &ProtocolContext, peer: PeerId, addr: Multiaddr) {
        ctx.control()
            .add_addresses(peer, std::slice::from_ref(&addr), AddressSource::Peer);
        match ctx.dial_peer(peer) {
            Ok(()) => {
                self.dialing.insert(peer, (addr, Instant::now()));
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "dial not attempted");
                self.shared.store().dial_cancelled(peer);
            }
        }
    }

    fn answer(&mut self, ctx: &ProtocolContextMut<'_>, max: u32) -> HandlerResult {
        let now = Instant::now();
        let session = ctx.session().clone();
        let config = &self.shared.config;
        let Some(state) = self.sessions.get_mut(&session.id) else {
            return Ok(());
        };
        if state
            .last_answer
            .is_some_and(|t| now.duration_since(t) < config.min_request_interval)
        {
            return ignore(state, "GetPeers over the rate limit");
        }
        state.last_answer = Some(now);
        state.ignored = 0;
        let n = (max as usize).min(
            config
                .max_records_per_response
                .clamp(1, MAX_PEERS_PER_MESSAGE),
        );
        let own = self.local.current(&ctx.control().announce_addrs())?;
        let relayable = self
            .shared
            .store()
            .relayable(now, config.peer_ttl, session.peer);
        let mut records = vec![own];
        let take = (n - 1).min(relayable.len());
        if take > 0 {
            let start = state.cursor % relayable.len();
            records.extend(relayable.iter().cycle().skip(start).take(take).cloned());
            state.cursor = (start + take) % relayable.len();
        }
        let mut encoded = DiscoveryMessage::Peers(records.clone()).encode();
        while encoded.len() > MAX_MESSAGE_SIZE && records.len() > 1 {
            records.pop();
            encoded = DiscoveryMessage::Peers(records.clone()).encode();
        }
        if let Err(e) = ctx.reply(encoded) {
            tracing::debug!(session = %session.id, error = %e, "discovery answer not queued");
        }
        Ok(())
    }

    fn learn(
        &mut self,
        ctx: &ProtocolContextMut<'_>,
        records: Vec<shoal_identify::SignedPeerRecord>,
    ) -> HandlerResult {
        let asked = self.request_size() as usize;
        let session = ctx.session().id;
        let (policy, source) = (
            self.shared.config.address_scope.clone(),
            ctx.session().remote_addr.clone(),
        );
        let dialable = move |a: &Multiaddr| policy.allows(a, Some(&source));
        let Some(state) = self.sessions.get_mut(&session) else {
            return Ok(());
        };
        if !state.awaiting {
            return ignore(state, "unsolicited Peers");
        }
        state.awaiting = false;
        state.ignored = 0;
        if records.len() > asked {
            return Err(DiscoveryError::TooManyRecords {
                got: records.len(),
                asked,
            }
            .into());
        }
        let now = Instant::now();
        let mut store = self.shared.store();
        for record in records {
            let peer = record.peer_id();
            // Reported as the store keeps them for dialling.
            let addrs: Vec<Multiaddr> = record
                .addrs()
                .iter()
                .filter(|a| dialable(a))
                .cloned()
                .collect();
            let seq = record.seq();
            // Signed by the peer itself: its own word on where it listens.
            ctx.control()
                .add_addresses(peer, &addrs, AddressSource::Peer);
            match store.insert_record(record, now, &dialable) {
                Inserted::New => self.shared.emit(Event::Discovered { peer, addrs }),
                Inserted::Updated => self.shared.emit(Event::Updated { peer, seq }),
                Inserted::Evicted(old) => {
                    self.shared.emit(Event::Removed {
                        peer: old,
                        reason: RemoveReason::Evicted,
                    });
                    self.shared.emit(Event::Discovered { peer, addrs });
                }
                Inserted::Unchanged | Inserted::Dropped => {}
            }
        }
        Ok(())
    }

    /// The service reached `peer` (a session we dialled opened the
    /// protocol at `addr`).
    fn dial_succeeded(&mut self, peer: PeerId, addr: &Multiaddr) {
        let bootstrap = self
            .shared
            .config
            .bootstrap
            .iter()
            .any(|b| b.without_peer_id() == addr.without_peer_id());
        if self.dialing.remove(&peer).is_none() && !bootstrap {
            return;
        }
        self.shared
            .store()
            .dial_succeeded(peer, addr, Instant::now());
        self.shared.emit(Event::Verified {
            peer,
            addr: addr.without_peer_id(),
        });
    }

    /// The service could not reach `peer`.
    fn dial_failed(&mut self, peer: PeerId, error: &DialError) {
        let Some((addr, _)) = self.dialing.remove(&peer) else {
            return;
        };
        let mut store = self.shared.store();
        if error.is_local() {
            tracing::debug!(%peer, %error, "dial not attempted");
            store.dial_cancelled(peer);
            return;
        }
        let policy = Backoff {
            base: self.shared.config.dial_backoff,
            max: self.shared.config.max_dial_backoff,
            max_failures: self.shared.config.max_failures.max(1),
        };
        let failure = store.dial_failed(peer, &addr, Instant::now(), &policy);
        self.shared.emit(Event::DialFailed {
            peer,
            addr,
            error: error.to_string(),
        });
        if failure == DialFailure::Removed {
            self.shared.emit(Event::Removed {
                peer,
                reason: RemoveReason::Unreachable,
            });
        }
    }

    fn upkeep(&mut self, ctx: &ProtocolContext) {
        let now = Instant::now();
        let config = self.shared.config.clone();
        let control = ctx.control().clone();
        // Dials that never reported back (the peer does not speak
        // discovery, so no `connected`) stop counting.
        let mut store = self.shared.store();
        self.dialing.retain(|peer, (_, since)| {
            let waiting = now.duration_since(*since) < DIAL_WAIT;
            if !waiting {
                store.dial_cancelled(*peer);
            }
            waiting
        });
        drop(store);

        for peer in self.shared.store().expire(now, config.peer_ttl) {
            self.shared.emit(Event::Removed {
                peer,
                reason: RemoveReason::Expired,
            });
        }

        // Periodic requests; a request left unanswered for a whole interval
        // is given up and sent again.
        let due: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| now.duration_since(s.last_request) >= config.request_interval)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let sent = self.send_request(ctx, id);
            if let Some(s) = self.sessions.get_mut(&id) {
                s.last_request = now;
                s.awaiting = sent;
            }
        }

        // Connection upkeep.
        let sessions = control.sessions();
        let connected: HashSet<PeerId> = sessions.iter().map(|s| s.peer).collect();
        // A dial that found the peer connected already (a crossed dial
        // whose survivor is the peer's) brings no `connected`: it reached.
        let reached: Vec<(PeerId, Multiaddr)> = self
            .dialing
            .iter()
            .filter(|(p, _)| connected.contains(p))
            .map(|(p, (a, _))| (*p, a.clone()))
            .collect();
        for (peer, addr) in reached {
            self.dial_succeeded(peer, &addr);
        }
        let outbound = sessions
            .iter()
            .filter(|s| s.direction == Direction::Outbound)
            .count();
        if !sessions.is_empty() {
            self.bootstrap_rounds = 0;
        }
        if sessions.is_empty() && self.dialing.is_empty() && now >= self.next_bootstrap {
            self.next_bootstrap = now
                + bootstrap_delay(
                    config.bootstrap_retry,
                    config.max_dial_backoff,
                    self.bootstrap_rounds,
                );
            self.bootstrap_rounds = self.bootstrap_rounds.saturating_add(1);
            let room = config.max_concurrent_dials;
            for addr in config.bootstrap.iter().take(room) {
                match addr.peer_id() {
                    Some(peer) => self.dial(ctx, peer, addr.without_peer_id()),
                    // Whoever answers there: no peer to report about.
                    None => {
                        if let Err(e) = control.try_dial(addr.clone(), DialOptions::default()) {
                            tracing::debug!(%addr, error = %e, "bootstrap dial not attempted");
                        }
                    }
                }
            }
        }
        let in_flight = self.dialing.len();
        let room = config.max_concurrent_dials.saturating_sub(in_flight);
        let wanted = config
            .target_connections
            .saturating_sub(outbound + in_flight)
            .min(room);
        let picks = self.shared.store().dial_candidates(now, wanted, &connected);
        for (peer, addr) in picks {
            self.dial(ctx, peer, addr);
        }
    }
}

/// Counts an ignored message; too many in a row close the substream.
fn ignore(state: &mut SessionState, what: &str) -> HandlerResult {
    state.ignored += 1;
    tracing::debug!(peer = %state.peer, ignored = state.ignored, "{what} ignored");
    if state.ignored > MAX_IGNORED_MESSAGES {
        return Err(DiscoveryError::Flood(state.ignored).into());
    }
    Ok(())
}

/// Wait before the next bootstrap round after `rounds` rounds without a
/// session: `base` doubling each round, capped at `max`.
fn bootstrap_delay(base: Duration, max: Duration, rounds: u32) -> Duration {
    base.saturating_mul(1u32 << rounds.min(16))
        .min(max.max(base))
}

impl ServiceProtocol for DiscoveryHandler {
    fn init(&mut self, ctx: &mut ProtocolContext) -> HandlerResult {
        ctx.set_notify(self.shared.config.tick_interval, TICK)?;
        // The first tick bootstraps; run it now rather than a tick later.
        self.upkeep(ctx);
        Ok(())
    }

    fn connected(&mut self, ctx: &mut ProtocolContextMut<'_>, _version: u32) -> HandlerResult {
        let now = Instant::now();
        let session = ctx.session().clone();
        self.shared.store().session_opened(session.peer, now);
        if session.direction == Direction::Outbound {
            self.dial_succeeded(session.peer, &session.remote_addr);
        }
        let sent = self.send_request(ctx, session.id);
        self.sessions.insert(
            session.id,
            SessionState {
                peer: session.peer,
                last_request: now,
                awaiting: sent,
                last_answer: None,
                ignored: 0,
                cursor: 0,
            },
        );
        Ok(())
    }

    fn disconnected(&mut self, ctx: &mut ProtocolContextMut<'_>) -> HandlerResult {
        let session = ctx.session();
        if self.sessions.remove(&session.id).is_some() {
            self.shared
                .store()
                .session_closed(session.peer, Instant::now());
        }
        Ok(())
    }

    fn received(&mut self, ctx: &mut ProtocolContextMut<'_>, data: bytes::Bytes) -> HandlerResult {
        match DiscoveryMessage::decode(&data)? {
            DiscoveryMessage::GetPeers { max } => self.answer(ctx, max),
            DiscoveryMessage::Peers(records) => self.learn(ctx, records),
        }
    }

    fn notify(&mut self, ctx: &mut ProtocolContext, token: u64) -> HandlerResult {
        if token == TICK {
            self.upkeep(ctx);
        }
        Ok(())
    }

    fn dial_failed(
        &mut self,
        _ctx: &mut ProtocolContext,
        peer: PeerId,
        error: &DialError,
    ) -> HandlerResult {
        DiscoveryHandler::dial_failed(self, peer, error);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_rounds_back_off_to_the_cap() {
        let (base, max) = (Duration::from_secs(10), Duration::from_secs(300));
        let waits: Vec<u64> = (0..7)
            .map(|r| bootstrap_delay(base, max, r).as_secs())
            .collect();
        assert_eq!(waits, vec![10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(bootstrap_delay(base, max, u32::MAX), max);
    }
}
