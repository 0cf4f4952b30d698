//! The replica: answers store, fetch and ack requests from its
//! [`ReplicaStore`], within quotas, rates and a disk budget, and pushes new
//! envelopes to live subscriptions. Sans-IO: fed requests and wall-clock
//! time, it returns answers and pushes.
//!
//! # The order of the checks
//! 1. The peer's and its network's request rates ([`Answer::Busy`]).
//! 2. A signature is required for fetch and ack, and for stores to an
//!    [`WritePolicy::Owner`] mailbox; it must be the descriptor key's over
//!    the exact body bytes ([`Refusal::BadSignature`]).
//! 3. A signed request's clock must be within [`ReplicaConfig::max_skew`]
//!    of the replica's and not before the replica started
//!    ([`Refusal::ClockSkew`], with the replica's clock); its (mailbox,
//!    nonce) must be new ([`Refusal::Replay`]). Together they refuse every
//!    replay: the cache keeps each nonce for as long as its timestamp is
//!    accepted, and a restart empties the cache but moves the start.
//! 4. Then the operation: an envelope already held (or acked) is answered
//!    with a receipt at once; a new one must fit the mailbox quota (with a
//!    small reserve for [`Class::Control`]) or gets [`Answer::Quota`], and
//!    the disk budget, of which one network may use only a share, or gets
//!    [`Answer::Busy`]. The receipt is signed after the store's insert
//!    returned, i.e. after the commit.
//!
//! Nothing is ever evicted to make room: what a replica signed for, it
//! keeps until the owner's ack or the expiry.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use shoal_identity::{Keypair, PeerId};
use shoal_transport::Multiaddr;

use crate::id::{EnvelopeHash, MailboxId, Retention, WritePolicy};
use crate::limits::{RateLimiter, ReplayCache, Seen};
use crate::receipt::{NetGroup, Receipt};
use crate::store::{Existing, ReplicaStore, StoreError, StoredEnvelope, Usage};
use crate::wire::{
    Answer, Class, Frame, Item, MAX_FETCH_BYTES, MAX_FETCH_ITEMS, Op, Refusal, Request,
};

/// Longest time a replica keeps an envelope: 14 days.
pub const MAX_TTL: Duration = Duration::from_secs(14 * 24 * 3600);

/// A replica's limits. Each default is what a service node on a small
/// machine can afford.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// Longest expiry accepted, from now; later ones are shortened to it.
    pub max_ttl: Duration,
    /// How far a signed request's clock may be from the replica's.
    pub max_skew: Duration,
    /// Envelopes of class [`Class::Normal`] one mailbox may hold.
    pub quota_envelopes: u32,
    /// Bytes one mailbox may hold (all classes).
    pub quota_bytes: u64,
    /// Envelopes of class [`Class::Control`] one mailbox may hold, beyond
    /// the normal quota.
    pub control_reserve: u32,
    /// Bytes of envelopes the replica holds in all.
    pub disk_budget: u64,
    /// The share of the disk budget one network group (an IPv4 /24, an
    /// IPv6 /48) may fill: `disk_budget / group_share`.
    pub group_share: u64,
    /// Requests per second, and burst, one peer may make.
    pub peer_rate: (u32, u32),
    /// Requests per second, and burst, one network group may make.
    pub group_rate: (u32, u32),
    /// Peers and groups whose rates are tracked at once.
    pub max_rate_keys: usize,
    /// Signed requests remembered at once (their nonces).
    pub max_replay_entries: usize,
    /// Live subscriptions one peer may hold.
    pub max_subscriptions_per_peer: usize,
    /// Live subscriptions in all.
    pub max_subscriptions: usize,
}

impl Default for ReplicaConfig {
    fn default() -> ReplicaConfig {
        ReplicaConfig {
            max_ttl: MAX_TTL,
            max_skew: Duration::from_secs(600),
            quota_envelopes: 1000,
            quota_bytes: 16 * 1024 * 1024,
            control_reserve: 64,
            disk_budget: 1024 * 1024 * 1024,
            group_share: 64,
            peer_rate: (100, 400),
            group_rate: (400, 2000),
            max_rate_keys: 65_536,
            max_replay_entries: 1_000_000,
            max_subscriptions_per_peer: 1024,
            max_subscriptions: 100_000,
        }
    }
}

/// Counters of a replica since it opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicaStats {
    /// New envelopes stored (receipts signed for them).
    pub stored: u64,
    /// Stores of envelopes already held or acked (receipts signed again).
    pub duplicates: u64,
    /// Stores answered with [`Answer::Quota`].
    pub quota: u64,
    /// Requests answered with [`Answer::Busy`].
    pub busy: u64,
    /// Requests refused, any reason.
    pub refused: u64,
    /// Of those, replays.
    pub replays: u64,
    /// Fetches answered.
    pub fetches: u64,
    /// Envelopes deleted on an ack.
    pub acked: u64,
    /// Envelopes deleted at their expiry.
    pub expired: u64,
    /// Envelopes pushed to subscriptions.
    pub pushed: u64,
}

/// The replica of one node. See the [module docs](self).
pub struct Replica<S: ReplicaStore> {
    key: Keypair,
    store: S,
    config: ReplicaConfig,
    started_ms: u64,
    usage: HashMap<MailboxId, Usage>,
    total_bytes: u64,
    group_bytes: HashMap<String, u64>,
    replay: ReplayCache,
    peer_rate: RateLimiter<PeerId>,
    group_rate: RateLimiter<NetGroup>,
    /// Live subscriptions: mailbox -> (peer, the fetch request's id).
    subscriptions: HashMap<MailboxId, Vec<(PeerId, u64)>>,
    subscriptions_per_peer: HashMap<PeerId, usize>,
    subscription_count: usize,
    stats: ReplicaStats,
}

impl<S: ReplicaStore> std::fmt::Debug for Replica<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("peer", &self.key.peer_id())
            .field("mailboxes", &self.usage.len())
            .field("bytes", &self.total_bytes)
            .finish_non_exhaustive()
    }
}

/// The answer to one request, and the pushes it causes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handled {
    /// The answer to the requester.
    pub answer: Answer,
    /// Frames for subscribers of the mailbox: (peer, frame bytes).
    pub pushes: Vec<(PeerId, Bytes)>,
}

impl<S: ReplicaStore> Replica<S> {
    /// Opens a replica signing receipts with `key` (the node's identity) on
    /// `store`, at wall time `unix_ms`; reads the store's usage.
    pub fn open(
        key: Keypair,
        mut store: S,
        config: ReplicaConfig,
        unix_ms: u64,
    ) -> Result<Replica<S>, StoreError> {
        let mut usage: HashMap<MailboxId, Usage> = HashMap::new();
        let mut group_bytes: HashMap<String, u64> = HashMap::new();
        let mut total_bytes = 0;
        for e in store.scan()? {
            usage.entry(e.mailbox).or_default().add(e.class, e.len);
            *group_bytes.entry(e.group).or_default() += e.len as u64;
            total_bytes += e.len as u64;
        }
        Ok(Replica {
            replay: ReplayCache::new(config.max_replay_entries),
            peer_rate: RateLimiter::new(
                config.peer_rate.0,
                config.peer_rate.1,
                config.max_rate_keys,
            ),
            group_rate: RateLimiter::new(
                config.group_rate.0,
                config.group_rate.1,
                config.max_rate_keys,
            ),
            key,
            store,
            config,
            started_ms: unix_ms,
            usage,
            total_bytes,
            group_bytes,
            subscriptions: HashMap::new(),
            subscriptions_per_peer: HashMap::new(),
            subscription_count: 0,
            stats: ReplicaStats::default(),
        })
    }

    /// The replica's peer id (the key its receipts verify with).
    pub fn peer_id(&self) -> PeerId {
        self.key.peer_id()
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Takes the store back (a simulated restart reopens it).
    pub fn into_store(self) -> S {
        self.store
    }

    /// Counters since opening.
    pub fn stats(&self) -> &ReplicaStats {
        &self.stats
    }

    /// What `mailbox` holds.
    pub fn usage(&self, mailbox: &MailboxId) -> Usage {
        self.usage.get(mailbox).copied().unwrap_or_default()
    }

    /// Bytes of envelopes held in all.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    fn refuse(&mut self, reason: Refusal, unix_ms: u64) -> Answer {
        self.stats.refused += 1;
        if reason == Refusal::Replay {
            self.stats.replays += 1;
        }
        Answer::Refused {
            reason,
            replica_unix_ms: unix_ms,
        }
    }

    /// Answers request `id` from `peer`, connected at `addr`, at wall time
    /// `unix_ms`.
    pub fn handle(
        &mut self,
        unix_ms: u64,
        peer: PeerId,
        addr: &Multiaddr,
        id: u64,
        request: &Request,
    ) -> Handled {
        let group = NetGroup::of(addr);
        let mut pushes = Vec::new();
        let answer = match self.check(unix_ms, peer, &group, request) {
            Err(answer) => answer,
            Ok(()) => self.perform(unix_ms, peer, &group, id, request, &mut pushes),
        };
        Handled { answer, pushes }
    }

    /// Steps 1 to 3 of the module docs.
    fn check(
        &mut self,
        unix_ms: u64,
        peer: PeerId,
        group: &NetGroup,
        request: &Request,
    ) -> Result<(), Answer> {
        let limited = self
            .peer_rate
            .take(&peer, unix_ms)
            .and_then(|()| self.group_rate.take(group, unix_ms));
        if let Err(retry_after_ms) = limited {
            self.stats.busy += 1;
            return Err(Answer::Busy { retry_after_ms });
        }
        let body = &request.body;
        let open_store =
            matches!(body.op, Op::Store { .. }) && body.descriptor.write == WritePolicy::Open;
        if open_store {
            // Anyone may store here; storing is idempotent by hash, so a
            // replayed open store does nothing new.
            return Ok(());
        }
        if !request.verify() {
            return Err(self.refuse(Refusal::BadSignature, unix_ms));
        }
        let skew = u64::try_from(self.config.max_skew.as_millis()).unwrap_or(u64::MAX);
        if body.unix_ms < self.started_ms || body.unix_ms.abs_diff(unix_ms) > skew {
            return Err(self.refuse(Refusal::ClockSkew, unix_ms));
        }
        let mailbox = body.descriptor.id();
        let forget_at = body.unix_ms.saturating_add(skew).saturating_add(1);
        match self.replay.check(mailbox, body.nonce, forget_at, unix_ms) {
            Seen::Fresh => Ok(()),
            Seen::Replay => Err(self.refuse(Refusal::Replay, unix_ms)),
            Seen::Full => {
                self.stats.busy += 1;
                Err(Answer::Busy {
                    retry_after_ms: 1000,
                })
            }
        }
    }

    fn perform(
        &mut self,
        unix_ms: u64,
        peer: PeerId,
        group: &NetGroup,
        id: u64,
        request: &Request,
        pushes: &mut Vec<(PeerId, Bytes)>,
    ) -> Answer {
        let body = &request.body;
        let mailbox = body.descriptor.id();
        let result = match &body.op {
            Op::Store {
                envelope,
                expiry,
                class,
            } => self.store_envelope(unix_ms, mailbox, group, envelope, *expiry, *class, pushes),
            Op::Fetch {
                after,
                limit,
                subscribe,
            } => self.fetch(mailbox, peer, id, *after, *limit, *subscribe),
            Op::Ack { hashes } => {
                if body.descriptor.retention == Retention::Expiry {
                    return self.refuse(Refusal::NotAckable, unix_ms);
                }
                self.ack(mailbox, hashes)
            }
        };
        result.unwrap_or_else(|e| {
            tracing::warn!(%e, "mailbox store failed");
            self.refuse(Refusal::StoreFailed, unix_ms)
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn store_envelope(
        &mut self,
        unix_ms: u64,
        mailbox: MailboxId,
        group: &NetGroup,
        envelope: &Bytes,
        expiry: u64,
        class: Class,
        pushes: &mut Vec<(PeerId, Bytes)>,
    ) -> Result<Answer, StoreError> {
        let now = unix_ms / 1000;
        if expiry <= now {
            return Ok(self.refuse(Refusal::Expiry, unix_ms));
        }
        let expiry = expiry.min(now.saturating_add(self.config.max_ttl.as_secs()));
        let hash = EnvelopeHash::of(envelope);
        if let Some(existing) = self.store.find(&mailbox, &hash)? {
            // Held or acked already: the receipt again, for the expiry the
            // first store got (an ack's tombstone keeps it).
            self.stats.duplicates += 1;
            let (Existing::Held { expiry } | Existing::Tombstone { expiry }) = existing;
            return Ok(self.receipt(mailbox, hash, expiry));
        }
        let usage = self.usage(&mailbox);
        let len = envelope.len() as u64;
        let over_quota = match class {
            Class::Normal => {
                usage.normal >= self.config.quota_envelopes
                    || usage.bytes + len > self.config.quota_bytes
            }
            Class::Control => usage.control >= self.config.control_reserve,
        };
        if over_quota {
            self.stats.quota += 1;
            return Ok(Answer::Quota {
                retry_after_ms: 60_000,
            });
        }
        let group_key = group_text(group);
        let group_used = self.group_bytes.get(&group_key).copied().unwrap_or(0);
        let group_budget = self.config.disk_budget / self.config.group_share.max(1);
        if self.total_bytes + len > self.config.disk_budget || group_used + len > group_budget {
            self.stats.busy += 1;
            return Ok(Answer::Busy {
                retry_after_ms: 60_000,
            });
        }
        let seq = self.store.insert(&StoredEnvelope {
            mailbox,
            hash,
            envelope: envelope.clone(),
            expiry,
            class,
            group: group_key.clone(),
        })?;
        self.usage
            .entry(mailbox)
            .or_default()
            .add(class, envelope.len());
        *self.group_bytes.entry(group_key).or_default() += len;
        self.total_bytes += len;
        self.stats.stored += 1;
        if let Some(subscribers) = self.subscriptions.get(&mailbox) {
            let item = Item {
                seq,
                envelope: envelope.clone(),
                expiry,
            };
            for (peer, id) in subscribers {
                let frame = Frame::Push {
                    id: *id,
                    item: item.clone(),
                };
                pushes.push((*peer, frame.encode()));
                self.stats.pushed += 1;
            }
        }
        Ok(self.receipt(mailbox, hash, expiry))
    }

    fn receipt(&self, mailbox: MailboxId, hash: EnvelopeHash, expiry: u64) -> Answer {
        let receipt = Receipt::sign(&self.key, mailbox, hash, expiry);
        Answer::Stored {
            signature: receipt.signature,
            expiry,
        }
    }

    fn fetch(
        &mut self,
        mailbox: MailboxId,
        peer: PeerId,
        id: u64,
        after: u64,
        limit: u32,
        subscribe: bool,
    ) -> Result<Answer, StoreError> {
        let limit = limit.clamp(1, MAX_FETCH_ITEMS) as usize;
        let (items, more) = self.store.fetch(&mailbox, after, limit, MAX_FETCH_BYTES)?;
        self.stats.fetches += 1;
        if subscribe {
            self.subscribe(mailbox, peer, id);
        }
        Ok(Answer::Items { items, more })
    }

    /// Registers (or renews, under the new id) `peer`'s subscription to
    /// `mailbox`, within the limits; beyond them the fetch is answered
    /// without one.
    fn subscribe(&mut self, mailbox: MailboxId, peer: PeerId, id: u64) {
        let subscribers = self.subscriptions.entry(mailbox).or_default();
        if let Some(s) = subscribers.iter_mut().find(|(p, _)| *p == peer) {
            s.1 = id;
            return;
        }
        let mine = self.subscriptions_per_peer.entry(peer).or_default();
        if *mine >= self.config.max_subscriptions_per_peer
            || self.subscription_count >= self.config.max_subscriptions
        {
            return;
        }
        *mine += 1;
        self.subscription_count += 1;
        subscribers.push((peer, id));
    }

    /// Drops `peer`'s subscriptions (it disconnected).
    pub fn peer_gone(&mut self, peer: &PeerId) {
        if self.subscriptions_per_peer.remove(peer).is_none() {
            return;
        }
        let mut dropped = 0;
        self.subscriptions.retain(|_, subscribers| {
            let before = subscribers.len();
            subscribers.retain(|(p, _)| p != peer);
            dropped += before - subscribers.len();
            !subscribers.is_empty()
        });
        self.subscription_count -= dropped;
    }

    /// Live subscriptions.
    pub fn subscriptions(&self) -> usize {
        self.subscription_count
    }

    fn ack(&mut self, mailbox: MailboxId, hashes: &[EnvelopeHash]) -> Result<Answer, StoreError> {
        let removed = self.store.ack(&mailbox, hashes)?;
        let n = removed.len();
        self.forget(removed);
        self.stats.acked += n as u64;
        Ok(Answer::Acked {
            removed: u32::try_from(n).unwrap_or(u32::MAX),
        })
    }

    fn forget(&mut self, removed: Vec<crate::store::Removed>) {
        for r in removed {
            if let Some(u) = self.usage.get_mut(&r.mailbox) {
                u.remove(r.class, r.len);
                if *u == Usage::default() {
                    self.usage.remove(&r.mailbox);
                }
            }
            if let Some(g) = self.group_bytes.get_mut(&r.group) {
                *g = g.saturating_sub(r.len as u64);
                if *g == 0 {
                    self.group_bytes.remove(&r.group);
                }
            }
            self.total_bytes = self.total_bytes.saturating_sub(r.len as u64);
        }
    }

    /// Deletes what expired by `unix_secs`.
    pub fn expire(&mut self, unix_secs: u64) -> Result<(), StoreError> {
        let removed = self.store.expire(unix_secs)?;
        self.stats.expired += removed.len() as u64;
        self.forget(removed);
        Ok(())
    }
}

fn group_text(group: &NetGroup) -> String {
    match group {
        NetGroup::V4(o) => format!("{}.{}.{}.0/24", o[0], o[1], o[2]),
        NetGroup::V6(o) => format!(
            "{:02x}{:02x}:{:02x}{:02x}:{:02x}{:02x}::/48",
            o[0], o[1], o[2], o[3], o[4], o[5]
        ),
        NetGroup::Other(a) => a.clone(),
    }
}
