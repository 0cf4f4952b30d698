//! The replica: answers store, fetch and ack requests from its
//! [`ReplicaStore`], within quotas, rates and a disk budget, and pushes new
//! envelopes to live subscriptions. Sans-IO: fed requests and wall-clock
//! time, it returns answers and pushes.
//!
//! # The order of the checks
//! 1. The peer's and its network's request rates ([`Answer::Busy`]).
//! 2. A signature is required for fetch and ack, and for stores to an
//!    [`WritePolicy::Owner`] mailbox; it must be the descriptor key's over
//!    the exact body bytes ([`Refusal::BadSignature`]), for this replica
//!    ([`Refusal::WrongReplica`]). A session that proved the key once is
//!    not checked again for that mailbox until it closes: the secure
//!    channel already tells its requests from anyone else's.
//! 3. A signed request's clock must be within [`ReplicaConfig::max_skew`]
//!    of the replica's and not before the replica started
//!    ([`Refusal::ClockSkew`], with the replica's clock); its (mailbox,
//!    nonce) must be new ([`Refusal::Replay`]). Together they refuse every
//!    replay: the cache keeps each nonce for as long as its timestamp is
//!    accepted, and a restart empties the cache but moves the start.
//! 4. Then the operation (the `stores` and `reads` modules).
//!
//! # Batches
//! [`Replica::handle_batch`] takes the requests that arrived together and
//! commits their new envelopes in one transaction (before any fetch or ack
//! of the batch runs, so those see them); receipts are signed after the
//! commit. [`Replica::handle`] is a batch of one.
//!
//! Nothing is ever evicted to make room: what a replica signed for, it
//! keeps until the owner's ack or the expiry.

mod config;
mod reads;
mod stores;
mod sync;
mod wake;

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use shoal_identity::{Keypair, PeerId};
use shoal_transport::Multiaddr;

use crate::id::{MailboxId, WritePolicy};
use crate::limits::{RateLimiter, ReplayCache, Seen};
use crate::receipt::NetGroup;
use crate::store::{Origin, ReplicaStore, StoreError, Usage};
use crate::wire::{Answer, Op, Refusal, Request};

pub use self::config::{MAX_TTL, ReplicaConfig, ReplicaStats};
use self::stores::PendingStores;
pub use self::sync::{SYNC_MESSAGE_BUDGET, SyncHandled};
pub use self::wake::WakeUp;

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
    /// Mailboxes whose key each live peer's session proved.
    authorized: HashMap<PeerId, HashSet<MailboxId>>,
    authorized_count: usize,
    /// Live subscriptions: mailbox -> (peer, the fetch request's id).
    subscriptions: HashMap<MailboxId, Vec<(PeerId, u64)>>,
    subscriptions_per_peer: HashMap<PeerId, usize>,
    subscription_count: usize,
    /// When each mailbox last took a new item (wall time, milliseconds).
    changed: HashMap<MailboxId, u64>,
    /// Wake-up registrations and the wake-ups waiting to go.
    wakes: wake::Wakes,
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

/// One request as it arrived.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    /// The requester.
    pub peer: PeerId,
    /// The address of its session.
    pub addr: &'a Multiaddr,
    /// Its id for the request.
    pub id: u64,
    /// The request.
    pub request: &'a Request,
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
        let (peer_rate, group_rate) = (config.peer_rate, config.group_rate);
        Ok(Replica {
            replay: ReplayCache::new(config.max_replay_entries),
            peer_rate: RateLimiter::new(peer_rate.0, peer_rate.1, config.max_rate_keys),
            group_rate: RateLimiter::new(group_rate.0, group_rate.1, config.max_rate_keys),
            key,
            store,
            config,
            started_ms: unix_ms,
            usage,
            total_bytes,
            group_bytes,
            authorized: HashMap::new(),
            authorized_count: 0,
            subscriptions: HashMap::new(),
            subscriptions_per_peer: HashMap::new(),
            subscription_count: 0,
            changed: HashMap::new(),
            wakes: wake::Wakes::default(),
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
    /// `unix_ms` (a batch of one).
    pub fn handle(
        &mut self,
        unix_ms: u64,
        peer: PeerId,
        addr: &Multiaddr,
        id: u64,
        request: &Request,
    ) -> Handled {
        let incoming = Incoming {
            peer,
            addr,
            id,
            request,
        };
        let mut handled = self.handle_batch(unix_ms, &[incoming]);
        handled.pop().unwrap_or(Handled {
            answer: Answer::Refused {
                reason: Refusal::StoreFailed,
                replica_unix_ms: unix_ms,
            },
            pushes: Vec::new(),
        })
    }

    /// Answers the requests that arrived together, in order, at wall time
    /// `unix_ms`: one [`Handled`] per request.
    pub fn handle_batch(&mut self, unix_ms: u64, batch: &[Incoming<'_>]) -> Vec<Handled> {
        let mut out: Vec<Handled> = batch
            .iter()
            .map(|_| Handled {
                answer: Answer::Acked { removed: 0 },
                pushes: Vec::new(),
            })
            .collect();
        let mut pending = PendingStores::default();
        for (i, incoming) in batch.iter().enumerate() {
            let group = NetGroup::of(incoming.addr);
            if let Err(answer) = self.check(unix_ms, incoming, &group) {
                out[i].answer = answer;
                continue;
            }
            let body = &incoming.request.body;
            let mailbox = body.descriptor.id();
            let answer = match &body.op {
                Op::Store {
                    envelope,
                    expiry,
                    class,
                } => {
                    let store = stores::StoreOp {
                        mailbox,
                        group: &group,
                        envelope,
                        expiry: *expiry,
                        class: *class,
                        origin: Origin::of(incoming.request),
                    };
                    match self.admit(unix_ms, &store, &mut pending, i) {
                        Ok(answer) => answer,
                        Err(e) => self.store_failed(e, unix_ms),
                    }
                }
                Op::Fetch { .. } | Op::Ack { .. } => {
                    // A read sees every store that arrived before it.
                    self.commit(unix_ms, &mut pending, &mut out);
                    self.read(unix_ms, incoming, mailbox)
                }
                Op::Register { endpoint, until } => {
                    Some(self.register(unix_ms, mailbox, endpoint, *until))
                }
            };
            if let Some(answer) = answer {
                out[i].answer = answer;
            }
        }
        self.commit(unix_ms, &mut pending, &mut out);
        out
    }

    fn store_failed(&mut self, e: StoreError, unix_ms: u64) -> Option<Answer> {
        tracing::warn!(%e, "mailbox store failed");
        Some(self.refuse(Refusal::StoreFailed, unix_ms))
    }

    /// Steps 1 to 3 of the module docs.
    fn check(
        &mut self,
        unix_ms: u64,
        incoming: &Incoming<'_>,
        group: &NetGroup,
    ) -> Result<(), Answer> {
        let peer = incoming.peer;
        let limited = self
            .peer_rate
            .take(&peer, unix_ms)
            .and_then(|()| self.group_rate.take(group, unix_ms));
        if let Err(retry_after_ms) = limited {
            self.stats.busy += 1;
            return Err(Answer::Busy { retry_after_ms });
        }
        let request = incoming.request;
        let body = &request.body;
        let open_store =
            matches!(body.op, Op::Store { .. }) && body.descriptor.write == WritePolicy::Open;
        if open_store {
            // Anyone may store here; storing is idempotent by hash, so a
            // replayed open store does nothing new.
            return Ok(());
        }
        let mailbox = body.descriptor.id();
        let proven = self
            .authorized
            .get(&peer)
            .is_some_and(|m| m.contains(&mailbox));
        if proven {
            self.stats.preauthorized += 1;
        } else {
            self.stats.verified += 1;
            if !request.verify() {
                return Err(self.refuse(Refusal::BadSignature, unix_ms));
            }
        }
        if body.replica != self.key.peer_id() {
            return Err(self.refuse(Refusal::WrongReplica, unix_ms));
        }
        let skew = u64::try_from(self.config.max_skew.as_millis()).unwrap_or(u64::MAX);
        if body.unix_ms < self.started_ms || body.unix_ms.abs_diff(unix_ms) > skew {
            return Err(self.refuse(Refusal::ClockSkew, unix_ms));
        }
        let forget_at = body.unix_ms.saturating_add(skew).saturating_add(1);
        match self.replay.check(mailbox, body.nonce, forget_at, unix_ms) {
            Seen::Fresh => {}
            Seen::Replay => return Err(self.refuse(Refusal::Replay, unix_ms)),
            Seen::Full => {
                self.stats.busy += 1;
                return Err(Answer::Busy {
                    retry_after_ms: 1000,
                });
            }
        }
        if !proven && self.authorized_count < self.config.max_authorized {
            self.authorized.entry(peer).or_default().insert(mailbox);
            self.authorized_count += 1;
        }
        Ok(())
    }

    /// Forgets `peer`'s subscriptions and proven keys (its session closed).
    pub fn peer_gone(&mut self, peer: &PeerId) {
        if let Some(proven) = self.authorized.remove(peer) {
            self.authorized_count -= proven.len();
        }
        self.drop_subscriptions(peer);
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
