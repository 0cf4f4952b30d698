//! The peer store: pure bookkeeping, no I/O; every method takes the time.
//!
//! Per peer it keeps the newest verified signed record, the addresses (each
//! with its own failure count and whether a dial to it reached the peer),
//! sessions open, when the peer was last seen directly and last heard of at
//! all, consecutive dial failures and the dial backoff.
//!
//! Trust rule: a record's signature proves the *peer* wrote it, not that its
//! addresses reach the peer. An address becomes **verified** only when our
//! own dial to it completed the secure handshake with the record's
//! `PeerId`. Verified addresses are dialled first, and a new unverified
//! record may evict only unverified entries when the store is full.

use std::{
    collections::{HashMap, HashSet},
    hash::{DefaultHasher, Hash, Hasher},
    time::Duration,
};

use shoal::{Multiaddr, PeerId};
use shoal_identify::{SignedPeerRecord, record::MAX_RECORD_ADDRS};
use tokio::time::Instant;

/// Most addresses kept per peer: the record's plus ones our dials verified
/// that the record does not list (e.g. a bootstrap address).
const MAX_ADDRS_PER_PEER: usize = 2 * MAX_RECORD_ADDRS;

/// One address of a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrInfo {
    /// The address (without `/p2p/`).
    pub addr: Multiaddr,
    /// Whether one of our dials to it reached the peer.
    pub verified: bool,
    /// Consecutive failed dials to it.
    pub failures: u32,
}

#[derive(Debug)]
struct Entry {
    record: Option<SignedPeerRecord>,
    addrs: Vec<AddrInfo>,
    sessions: u32,
    last_seen: Option<Instant>,
    last_heard: Instant,
    failures: u32,
    next_dial: Instant,
    dialing: bool,
}

impl Entry {
    fn new(now: Instant) -> Entry {
        Entry {
            record: None,
            addrs: Vec::new(),
            sessions: 0,
            last_seen: None,
            last_heard: now,
            failures: 0,
            next_dial: now,
            dialing: false,
        }
    }

    fn verified(&self) -> bool {
        self.addrs.iter().any(|a| a.verified)
    }

    fn evictable(&self) -> bool {
        self.sessions == 0 && !self.dialing
    }

    /// Takes the addresses of a new record, keeping what we know of each,
    /// and verified addresses the record does not list.
    /// Takes `record`; of its addresses only those `dialable` allows are
    /// kept for dialling (the record is relayed whole: it is signed).
    fn set_record(&mut self, record: SignedPeerRecord, dialable: &dyn Fn(&Multiaddr) -> bool) {
        let mut addrs: Vec<AddrInfo> = record
            .addrs()
            .iter()
            .filter(|a| dialable(a))
            .map(|a| {
                self.addrs
                    .iter()
                    .find(|old| &old.addr == a)
                    .cloned()
                    .unwrap_or(AddrInfo {
                        addr: a.clone(),
                        verified: false,
                        failures: 0,
                    })
            })
            .collect();
        for old in self.addrs.drain(..) {
            if old.verified && !addrs.iter().any(|a| a.addr == old.addr) {
                addrs.push(old);
            }
        }
        addrs.truncate(MAX_ADDRS_PER_PEER);
        self.addrs = addrs;
        self.record = Some(record);
    }

    /// The address to dial next: verified first, then fewest failures, in
    /// record order.
    fn best_addr(&self) -> Option<&Multiaddr> {
        self.addrs
            .iter()
            .enumerate()
            .min_by_key(|(i, a)| (!a.verified, a.failures, *i))
            .map(|(_, a)| &a.addr)
    }
}

/// A snapshot of one peer in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer.
    pub peer: PeerId,
    /// Its newest verified signed record, if one arrived (a peer reached
    /// only through a bootstrap address has none until it answers).
    pub record: Option<SignedPeerRecord>,
    /// Its addresses.
    pub addrs: Vec<AddrInfo>,
    /// Whether a session with it is open.
    pub connected: bool,
    /// How long ago a session with it was last open (`Some(0)` while one is).
    pub last_seen: Option<Duration>,
    /// Consecutive failed dials.
    pub failures: u32,
}

/// What [`PeerStore::insert_record`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Inserted {
    /// A peer we did not know.
    New,
    /// A newer record replaced the one we had.
    Updated,
    /// The same or an older record: only "last heard" moved.
    Unchanged,
    /// Not stored: our own record, or the store is full of entries it may
    /// not evict. If an entry was evicted for it, it is named.
    Dropped,
    /// Stored after evicting this peer.
    Evicted(PeerId),
}

/// What [`PeerStore::dial_failed`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DialFailure {
    /// Counted; this many failures in a row now.
    Counted(u32),
    /// The peer reached the failure limit and was removed.
    Removed,
    /// The peer is not in the store (e.g. a bootstrap peer never reached).
    Unknown,
}

/// Why a peer left the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RemoveReason {
    /// Too many consecutive failed dials.
    Unreachable,
    /// Not connected, and not heard of for the peer TTL.
    Expired,
    /// Evicted to make room in a full store.
    Evicted,
}

/// The peers we know, bounded by `max_peers`.
#[derive(Debug)]
pub(crate) struct PeerStore {
    local: PeerId,
    max_peers: usize,
    entries: HashMap<PeerId, Entry>,
    /// Open sessions per peer, also for peers without an entry yet (their
    /// record arrives after the session opens). Bounded by the service's
    /// session limits.
    sessions: HashMap<PeerId, u32>,
}

impl PeerStore {
    pub(crate) fn new(local: PeerId, max_peers: usize) -> PeerStore {
        PeerStore {
            local,
            max_peers: max_peers.max(1),
            entries: HashMap::new(),
            sessions: HashMap::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Stores a verified record; never replaces a newer or equal `seq`.
    /// Inserts or updates a peer's record; `dialable` says which of its
    /// addresses may be dialled (see [`crate::Config::address_scope`]).
    pub(crate) fn insert_record(
        &mut self,
        record: SignedPeerRecord,
        now: Instant,
        dialable: &dyn Fn(&Multiaddr) -> bool,
    ) -> Inserted {
        let peer = record.peer_id();
        if peer == self.local {
            return Inserted::Dropped;
        }
        if let Some(entry) = self.entries.get_mut(&peer) {
            entry.last_heard = now;
            return match &entry.record {
                Some(old) if old.seq() >= record.seq() => Inserted::Unchanged,
                Some(_) => {
                    entry.set_record(record, dialable);
                    Inserted::Updated
                }
                None => {
                    entry.set_record(record, dialable);
                    Inserted::New
                }
            };
        }
        let mut evicted = None;
        if self.entries.len() >= self.max_peers {
            // A record nobody has verified may only push out another such.
            let victim = self
                .entries
                .iter()
                .filter(|(_, e)| e.evictable() && !e.verified())
                .max_by_key(|(_, e)| (e.failures, std::cmp::Reverse(e.last_heard)))
                .map(|(p, _)| *p);
            match victim {
                Some(v) => {
                    self.entries.remove(&v);
                    evicted = Some(v);
                }
                None => return Inserted::Dropped,
            }
        }
        let mut entry = Entry::new(now);
        entry.sessions = self.sessions.get(&peer).copied().unwrap_or(0);
        entry.set_record(record, dialable);
        self.entries.insert(peer, entry);
        evicted.map_or(Inserted::New, Inserted::Evicted)
    }

    /// A session with `peer` opened.
    pub(crate) fn session_opened(&mut self, peer: PeerId, now: Instant) {
        *self.sessions.entry(peer).or_insert(0) += 1;
        if let Some(e) = self.entries.get_mut(&peer) {
            e.sessions += 1;
            e.last_seen = Some(now);
            e.last_heard = now;
        }
    }

    /// A session with `peer` closed.
    pub(crate) fn session_closed(&mut self, peer: PeerId, now: Instant) {
        if let Some(n) = self.sessions.get_mut(&peer) {
            *n -= 1;
            if *n == 0 {
                self.sessions.remove(&peer);
            }
        }
        if let Some(e) = self.entries.get_mut(&peer) {
            e.sessions = e.sessions.saturating_sub(1);
            e.last_seen = Some(now);
            e.last_heard = now;
        }
    }

    /// Our dial of `addr` reached `peer`: the address is verified. Creates
    /// the entry if needed (a bootstrap peer before its record arrives).
    pub(crate) fn dial_succeeded(&mut self, peer: PeerId, addr: &Multiaddr, now: Instant) {
        if peer == self.local {
            return;
        }
        if !self.entries.contains_key(&peer) && self.entries.len() >= self.max_peers {
            return;
        }
        let sessions = self.sessions.get(&peer).copied().unwrap_or(0);
        let e = self.entries.entry(peer).or_insert_with(|| Entry {
            sessions,
            ..Entry::new(now)
        });
        e.dialing = false;
        e.failures = 0;
        e.last_heard = now;
        e.last_seen = Some(now);
        e.next_dial = now;
        let addr = addr.without_peer_id();
        if let Some(a) = e.addrs.iter_mut().find(|a| a.addr == addr) {
            a.verified = true;
            a.failures = 0;
        } else if e.addrs.len() < MAX_ADDRS_PER_PEER {
            e.addrs.push(AddrInfo {
                addr,
                verified: true,
                failures: 0,
            });
        }
    }

    /// Our dial of `addr` for `peer` failed: counts it, and removes the
    /// peer after `max_failures` in a row (unless a session is open).
    pub(crate) fn dial_failed(
        &mut self,
        peer: PeerId,
        addr: &Multiaddr,
        now: Instant,
        policy: &Backoff,
    ) -> DialFailure {
        let Some(e) = self.entries.get_mut(&peer) else {
            return DialFailure::Unknown;
        };
        e.dialing = false;
        e.failures = e.failures.saturating_add(1);
        let addr = addr.without_peer_id();
        if let Some(a) = e.addrs.iter_mut().find(|a| a.addr == addr) {
            a.failures = a.failures.saturating_add(1);
            // An address that stops answering must be proven again.
            a.verified = false;
        }
        if e.failures >= policy.max_failures && e.sessions == 0 {
            self.entries.remove(&peer);
            return DialFailure::Removed;
        }
        e.next_dial = now + policy.delay(e.failures);
        DialFailure::Counted(e.failures)
    }

    /// A dial was not attempted after all (a local limit): forget it.
    pub(crate) fn dial_cancelled(&mut self, peer: PeerId) {
        if let Some(e) = self.entries.get_mut(&peer) {
            e.dialing = false;
        }
    }

    /// Removes entries not connected and not heard of for `ttl`.
    pub(crate) fn expire(&mut self, now: Instant, ttl: Duration) -> Vec<PeerId> {
        let gone: Vec<PeerId> = self
            .entries
            .iter()
            .filter(|(_, e)| e.evictable() && now.duration_since(e.last_heard) > ttl)
            .map(|(p, _)| *p)
            .collect();
        for p in &gone {
            self.entries.remove(p);
        }
        gone
    }

    /// Picks up to `n` peers to dial and marks them dialling: not in
    /// `connected`, not already dialling, out of backoff, with an address;
    /// peers with a verified address first, then fewer failures, then an
    /// order private to this node (so nodes do not all pick the same peers).
    pub(crate) fn dial_candidates(
        &mut self,
        now: Instant,
        n: usize,
        connected: &HashSet<PeerId>,
    ) -> Vec<(PeerId, Multiaddr)> {
        if n == 0 {
            return Vec::new();
        }
        let local = self.local;
        let mut candidates: Vec<(bool, u32, u64, PeerId)> = self
            .entries
            .iter()
            .filter(|(p, e)| {
                !connected.contains(p) && !e.dialing && e.next_dial <= now && !e.addrs.is_empty()
            })
            .map(|(p, e)| (!e.verified(), e.failures, mix(&local, p), *p))
            .collect();
        candidates.sort_unstable();
        let mut out = Vec::new();
        for (_, _, _, peer) in candidates.into_iter().take(n) {
            if let Some(e) = self.entries.get_mut(&peer)
                && let Some(addr) = e.best_addr().cloned()
            {
                e.dialing = true;
                out.push((peer, addr));
            }
        }
        out
    }

    /// Records we may relay: of peers connected now, or with an address our
    /// own dial verified and seen directly within `ttl`. Sorted by peer id,
    /// without `exclude`.
    pub(crate) fn relayable(
        &self,
        now: Instant,
        ttl: Duration,
        exclude: PeerId,
    ) -> Vec<SignedPeerRecord> {
        let mut out: Vec<&SignedPeerRecord> = self
            .entries
            .iter()
            .filter(|(p, _)| **p != exclude)
            .filter(|(_, e)| {
                e.sessions > 0
                    || (e.verified()
                        && e.last_seen
                            .is_some_and(|seen| now.duration_since(seen) <= ttl))
            })
            .filter_map(|(_, e)| e.record.as_ref())
            .collect();
        out.sort_unstable_by_key(|r| r.peer_id());
        out.into_iter().cloned().collect()
    }

    fn info(&self, peer: &PeerId, e: &Entry, now: Instant) -> PeerInfo {
        PeerInfo {
            peer: *peer,
            record: e.record.clone(),
            addrs: e.addrs.clone(),
            connected: e.sessions > 0,
            last_seen: e.last_seen.map(|s| {
                if e.sessions > 0 {
                    Duration::ZERO
                } else {
                    now.duration_since(s)
                }
            }),
            failures: e.failures,
        }
    }

    pub(crate) fn get(&self, peer: &PeerId, now: Instant) -> Option<PeerInfo> {
        self.entries.get(peer).map(|e| self.info(peer, e, now))
    }

    pub(crate) fn snapshot(&self, now: Instant) -> Vec<PeerInfo> {
        let mut all: Vec<PeerInfo> = self
            .entries
            .iter()
            .map(|(p, e)| self.info(p, e, now))
            .collect();
        all.sort_by_key(|i| i.peer);
        all
    }
}

/// The dial retry policy.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    pub(crate) base: Duration,
    pub(crate) max: Duration,
    pub(crate) max_failures: u32,
}

impl Backoff {
    /// Wait after `failures` consecutive failures: base × 2^(failures−1),
    /// capped.
    pub(crate) fn delay(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.saturating_sub(1).min(16);
        self.base.saturating_mul(factor).min(self.max)
    }
}

/// A per-node order of peers, stable for this node, different across nodes.
fn mix(local: &PeerId, peer: &PeerId) -> u64 {
    let mut h = DefaultHasher::new();
    local.hash(&mut h);
    peer.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests;
