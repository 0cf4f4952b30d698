//! The protocol core of one node: the client side (requests to replicas,
//! their answers, timeouts, live subscriptions) and, on nodes that keep
//! mailboxes, the [`Replica`]. It implements [`shoal::Core`], so the
//! service's driver runs it and the simulator can run the same code.
//!
//! A replica also keeps its mailboxes whole with the other replicas
//! (see [`crate::sync`]): every [`Config::sync_interval`] it opens a sync
//! session with each other member of each mailbox it holds, in its view
//! of the DHT ([`Mailbox::set_neighbours`]); a mailbox it no longer
//! replicates is handed over and dropped once every member confirmed it
//! holds all of it.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::RngCore;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use shoal::{BoxError, Core, Multiaddr, Now, PeerId, Remote, Transmit};
use shoal_identity::Keypair;

use crate::id::{Descriptor, EnvelopeHash, MailboxId};
use crate::replica::{Incoming, Replica};
use crate::store::ReplicaStore;

mod sync;
mod wake;

use self::sync::SyncState;
use self::wake::WakeState;
use crate::wire::{Answer, Class, Frame, Item, NONCE_LEN, Op, Refusal, Request, RequestBody};

/// Most requests a replica answers in one batch (one store transaction).
pub const MAX_BATCH: usize = 64;

/// A replica whose store is chosen at run time.
pub type DynReplica = Replica<Box<dyn ReplicaStore>>;

/// Names a request this node made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// Settings of the core.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long a request waits for its answer.
    pub request_timeout: Duration,
    /// How often a replica deletes what expired.
    pub expire_interval: Duration,
    /// Most requests waiting for answers; beyond it new ones fail at once.
    pub max_pending: usize,
    /// Most events queued for the application.
    pub event_queue: usize,
    /// How often a replica syncs its mailboxes with their other replicas.
    pub sync_interval: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            request_timeout: Duration::from_secs(10),
            expire_interval: Duration::from_secs(60),
            max_pending: 4096,
            event_queue: 1024,
            sync_interval: Duration::from_secs(120),
        }
    }
}

/// Why a request got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// No answer within [`Config::request_timeout`].
    #[error("the replica did not answer in time")]
    Timeout,
    /// The replica could not be reached.
    #[error("the replica could not be reached")]
    Unreachable,
    /// The connection closed before the answer.
    #[error("the replica disconnected")]
    Disconnected,
    /// Too many requests are waiting already.
    #[error("too many requests waiting")]
    TooMany,
}

/// What the core tells its application.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A replica answered request `id` over a connection to `addr`.
    Answered {
        /// The request.
        id: RequestId,
        /// The replica.
        peer: PeerId,
        /// The connection's address (for the network rule of a quorum).
        addr: Multiaddr,
        /// The answer.
        answer: Answer,
    },
    /// Request `id` failed.
    Failed {
        /// The request.
        id: RequestId,
        /// The replica.
        peer: PeerId,
        /// Why.
        error: RequestError,
    },
    /// A subscription (made by fetch `subscription`) brought a new envelope.
    Pushed {
        /// The subscribing fetch.
        subscription: RequestId,
        /// The replica.
        peer: PeerId,
        /// The mailbox.
        mailbox: MailboxId,
        /// The envelope.
        item: Item,
    },
    /// The replica needs to know who replicates `mailbox` (its view of
    /// the DHT is in doubt): look it up in the mailbox DHT and answer with
    /// [`Mailbox::set_members`].
    LookupWanted {
        /// The mailbox.
        mailbox: MailboxId,
    },
    /// A replica woke this node for `token` (a registration made with
    /// [`Mailbox::register_wake`] naming this node as the endpoint):
    /// envelopes wait. Reported once per
    /// [`WAKE_COALESCE`](crate::wake::WAKE_COALESCE) per token, however
    /// many replicas send one; the token is whatever the peer sent, so an
    /// application acts only on tokens it handed out.
    Woken {
        /// The replica that sent it.
        peer: PeerId,
        /// The token.
        token: crate::wake::WakeToken,
    },
    /// A subscription ended: its replica disconnected.
    SubscriptionEnded {
        /// The subscribing fetch.
        subscription: RequestId,
        /// The replica.
        peer: PeerId,
    },
}

struct Pending {
    peer: PeerId,
    deadline: Instant,
    /// The request, and the key that signed it (to sign it once more with
    /// the replica's clock after a [`Refusal::ClockSkew`]).
    request: Request,
    signer: Option<Keypair>,
    resigned: bool,
}

/// The mailbox protocol core of one node. See the [module docs](self).
pub struct Mailbox {
    config: Config,
    replica: Option<DynReplica>,
    rng: ChaCha20Rng,
    next_id: u64,
    pending: HashMap<u64, Pending>,
    /// Live subscriptions this node made: fetch id -> (replica, mailbox).
    subscriptions: HashMap<u64, (PeerId, MailboxId)>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    next_expire: Option<Instant>,
    dropped_events: u64,
    /// Requests for the replica, answered together at the next timeout
    /// (due at once): what arrives in one burst shares one commit.
    inbox: Vec<(Remote, u64, Request)>,
    inbox_since: Option<Instant>,
    sync: SyncState,
    wake: WakeState,
}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailbox")
            .field("replica", &self.replica)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl Mailbox {
    /// A core that makes requests; with `replica`, it also keeps
    /// mailboxes. `seed` seeds request nonces (fresh random bytes).
    pub fn new(config: Config, replica: Option<DynReplica>, seed: [u8; 32]) -> Mailbox {
        Mailbox {
            config,
            replica,
            rng: ChaCha20Rng::from_seed(seed),
            next_id: 1,
            pending: HashMap::new(),
            subscriptions: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            next_expire: None,
            dropped_events: 0,
            inbox: Vec::new(),
            inbox_since: None,
            sync: SyncState::default(),
            wake: WakeState::default(),
        }
    }

    /// The replica, on a node that keeps mailboxes.
    pub fn replica(&self) -> Option<&DynReplica> {
        self.replica.as_ref()
    }

    /// Takes the replica out (a simulated restart reopens its store).
    pub fn take_replica(&mut self) -> Option<DynReplica> {
        self.replica.take()
    }

    /// Requests waiting for their answers.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Events dropped because the application did not keep up.
    pub fn dropped_events(&self) -> u64 {
        self.dropped_events
    }

    fn event(&mut self, event: Event) {
        if self.events.len() >= self.config.event_queue {
            self.dropped_events += 1;
            return;
        }
        self.events.push_back(event);
    }

    fn body(&mut self, now: Now, replica: PeerId, descriptor: Descriptor, op: Op) -> RequestBody {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill_bytes(&mut nonce);
        RequestBody {
            descriptor,
            unix_ms: now.unix_ms,
            nonce,
            op,
            replica,
        }
    }

    fn send(
        &mut self,
        now: Now,
        peer: PeerId,
        body: RequestBody,
        signer: Option<&Keypair>,
    ) -> RequestId {
        let id = self.next_id;
        self.next_id += 1;
        if self.pending.len() >= self.config.max_pending {
            self.event(Event::Failed {
                id: RequestId(id),
                peer,
                error: RequestError::TooMany,
            });
            return RequestId(id);
        }
        let request = match signer {
            Some(key) => Request::signed(body, key),
            None => Request::unsigned(body),
        };
        self.transmits.push_back(Transmit {
            peer,
            bytes: Frame::Request {
                id,
                request: request.clone(),
            }
            .encode(),
        });
        self.pending.insert(
            id,
            Pending {
                peer,
                deadline: now.instant + self.config.request_timeout,
                request,
                signer: signer.cloned(),
                resigned: false,
            },
        );
        RequestId(id)
    }

    /// Asks `replica` to keep `envelope` in the mailbox of `descriptor`
    /// until `expiry` (Unix seconds). `signer` (the mailbox key pair) is
    /// needed for an [`Owner`](crate::WritePolicy::Owner) mailbox.
    #[allow(clippy::too_many_arguments)]
    pub fn store(
        &mut self,
        now: Now,
        replica: PeerId,
        descriptor: Descriptor,
        signer: Option<&Keypair>,
        envelope: Bytes,
        expiry: u64,
        class: Class,
    ) -> RequestId {
        let op = Op::Store {
            envelope,
            expiry,
            class,
        };
        let body = self.body(now, replica, descriptor, op);
        self.send(now, replica, body, signer)
    }

    /// Asks `replica` for envelopes of the mailbox of `key` (the mailbox
    /// key pair; `descriptor` names its policies) after sequence number
    /// `after`; with `subscribe`, later ones are pushed as
    /// [`Event::Pushed`] until the replica disconnects.
    #[allow(clippy::too_many_arguments)]
    pub fn fetch(
        &mut self,
        now: Now,
        replica: PeerId,
        descriptor: Descriptor,
        key: &Keypair,
        after: u64,
        limit: u32,
        subscribe: bool,
    ) -> RequestId {
        let op = Op::Fetch {
            after,
            limit,
            subscribe,
        };
        let body = self.body(now, replica, descriptor, op);
        let id = self.send(now, replica, body, Some(key));
        if subscribe {
            self.subscriptions
                .retain(|_, (p, m)| !(*p == replica && *m == descriptor.id()));
            self.subscriptions.insert(id.0, (replica, descriptor.id()));
        }
        id
    }

    /// Asks `replica` to delete the envelopes `hashes` of the mailbox.
    pub fn ack(
        &mut self,
        now: Now,
        replica: PeerId,
        descriptor: Descriptor,
        key: &Keypair,
        hashes: Vec<EnvelopeHash>,
    ) -> RequestId {
        let body = self.body(now, replica, descriptor, Op::Ack { hashes });
        self.send(now, replica, body, Some(key))
    }

    fn answered(&mut self, now: Now, from: &Remote, id: u64, answer: Answer) {
        let Some(p) = self.pending.get(&id) else {
            // Late (timed out) or never asked: nothing to do.
            return;
        };
        if p.peer != from.peer {
            return;
        }
        if let Answer::Refused {
            reason: Refusal::ClockSkew,
            replica_unix_ms,
        } = answer
            && !p.resigned
            && let Some(key) = p.signer.clone()
        {
            // Sign once more on the replica's clock.
            let mut body = p.request.body.clone();
            body.unix_ms = replica_unix_ms;
            self.rng.fill_bytes(&mut body.nonce);
            let request = Request::signed(body, &key);
            self.transmits.push_back(Transmit {
                peer: from.peer,
                bytes: Frame::Request {
                    id,
                    request: request.clone(),
                }
                .encode(),
            });
            if let Some(p) = self.pending.get_mut(&id) {
                p.request = request;
                p.resigned = true;
                p.deadline = now.instant + self.config.request_timeout;
            }
            return;
        }
        self.pending.remove(&id);
        if !matches!(answer, Answer::Items { .. }) {
            self.subscriptions.remove(&id);
        }
        self.event(Event::Answered {
            id: RequestId(id),
            peer: from.peer,
            addr: from.addr.clone(),
            answer,
        });
    }

    fn fail_peer(&mut self, peer: PeerId, error: RequestError) {
        let mut ids: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.peer == peer)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        for id in ids {
            self.pending.remove(&id);
            self.event(Event::Failed {
                id: RequestId(id),
                peer,
                error,
            });
        }
        let mut ended: Vec<u64> = self
            .subscriptions
            .iter()
            .filter(|(_, (p, _))| *p == peer)
            .map(|(id, _)| *id)
            .collect();
        ended.sort_unstable();
        for id in ended {
            self.subscriptions.remove(&id);
            self.event(Event::SubscriptionEnded {
                subscription: RequestId(id),
                peer,
            });
        }
    }
}

impl Mailbox {
    /// Answers the requests waiting for the replica, as one batch.
    fn answer_inbox(&mut self, now: Now) {
        self.inbox_since = None;
        let inbox = std::mem::take(&mut self.inbox);
        let Some(replica) = self.replica.as_mut() else {
            return;
        };
        let batch: Vec<Incoming<'_>> = inbox
            .iter()
            .map(|(from, id, request)| Incoming {
                peer: from.peer,
                addr: &from.addr,
                id: *id,
                request,
            })
            .collect();
        let handled = replica.handle_batch(now.unix_ms, &batch);
        for ((from, id, _), handled) in inbox.iter().zip(handled) {
            self.transmits.push_back(Transmit {
                peer: from.peer,
                bytes: Frame::Answer {
                    id: *id,
                    answer: handled.answer,
                }
                .encode(),
            });
            for (peer, bytes) in handled.pushes {
                self.transmits.push_back(Transmit { peer, bytes });
            }
        }
        self.send_wakeups(now);
    }

    /// Starts the replica's timers (expiry, sync rounds) if they are not
    /// running yet. A core reads no clock of its own, so they start at the
    /// first input, or here: a host calls this when it starts the core
    /// (or gives it its neighbours), so that a replica restarted over a
    /// store of mailboxes syncs them even if no peer speaks to it first.
    pub fn start(&mut self, now: Now) {
        self.arm(now);
    }

    /// Arms the replica's timers at the first input or [`Mailbox::start`].
    fn arm(&mut self, now: Now) {
        if self.replica.is_some() && self.next_expire.is_none() {
            self.next_expire = Some(now.instant);
            self.sync.next_round = Some(now.instant + self.jittered_interval());
        }
    }
}

impl Core for Mailbox {
    type Event = Event;

    fn peer_connected(&mut self, now: Now, remote: &Remote) {
        self.arm(now);
        self.sync_peer_reachable(remote.peer);
    }

    fn peer_disconnected(&mut self, now: Now, peer: PeerId) {
        // What the peer asked before it left is answered (and committed)
        // before its proven keys are forgotten.
        if self.inbox.iter().any(|(from, _, _)| from.peer == peer) {
            self.answer_inbox(now);
        }
        if let Some(replica) = self.replica.as_mut() {
            replica.peer_gone(&peer);
        }
        self.fail_peer(peer, RequestError::Disconnected);
    }

    fn handle_message(&mut self, now: Now, from: &Remote, bytes: &[u8]) -> Result<(), BoxError> {
        self.arm(now);
        match Frame::decode(bytes)? {
            Frame::Request { id, request } => {
                let answer = match self.replica.as_mut() {
                    Some(replica) => {
                        let handled =
                            replica.handle(now.unix_ms, from.peer, &from.addr, id, &request);
                        for (peer, bytes) in handled.pushes {
                            self.transmits.push_back(Transmit { peer, bytes });
                        }
                        let answer = handled.answer;
                        self.send_wakeups(now);
                        answer
                    }
                    None => Answer::Refused {
                        reason: Refusal::NotServing,
                        replica_unix_ms: now.unix_ms,
                    },
                };
                self.transmits.push_back(Transmit {
                    peer: from.peer,
                    bytes: Frame::Answer { id, answer }.encode(),
                });
            }
            Frame::Answer { id, answer } => self.answered(now, from, id, answer),
            Frame::Sync { id, sync } => self.sync_message(now, from, id, &sync, bytes.len()),
            Frame::Push { id, item } => match self.subscriptions.get(&id) {
                Some((peer, mailbox)) if *peer == from.peer => {
                    let mailbox = *mailbox;
                    self.event(Event::Pushed {
                        subscription: RequestId(id),
                        peer: from.peer,
                        mailbox,
                        item,
                    });
                }
                // A push for a subscription we dropped: ignored.
                _ => {}
            },
            Frame::Wake { token } => {
                // Only the one size: a longer frame (unknown fields) could
                // carry what a wake-up must not.
                if bytes.len() != crate::wake::WAKE_FRAME_LEN {
                    return Err(format!("a wake-up frame of {} bytes", bytes.len()).into());
                }
                self.woken(now, from.peer, token);
            }
        }
        Ok(())
    }

    fn handle_timeout(&mut self, now: Now) {
        if !self.inbox.is_empty() {
            self.answer_inbox(now);
        }
        let mut expired: Vec<(u64, PeerId)> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now.instant)
            .map(|(id, p)| (*id, p.peer))
            .collect();
        expired.sort_unstable();
        for (id, peer) in expired {
            self.pending.remove(&id);
            self.subscriptions.remove(&id);
            self.event(Event::Failed {
                id: RequestId(id),
                peer,
                error: RequestError::Timeout,
            });
        }
        if let Some(replica) = self.replica.as_mut() {
            let due = self.next_expire.is_none_or(|t| t <= now.instant);
            if due {
                if let Err(e) = replica.expire(now.unix_secs()) {
                    tracing::warn!(%e, "expiring mailbox envelopes failed");
                }
                self.next_expire = Some(now.instant + self.config.expire_interval);
            }
        }
        if self.sync.next_round.is_some_and(|t| t <= now.instant) {
            self.sync.next_round = Some(now.instant + self.jittered_interval());
            self.sync_round(now);
        }
        if self.wake.next.is_some_and(|t| t <= now.instant) {
            self.send_wakeups(now);
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let pending = self.pending.values().map(|p| p.deadline).min();
        let expire = self.replica.as_ref().and(self.next_expire);
        let sync = self.replica.as_ref().and(self.sync.next_round);
        let wake = self.replica.as_ref().and(self.wake.next);
        [pending, expire, self.inbox_since, sync, wake]
            .into_iter()
            .flatten()
            .min()
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn poll_addresses(&mut self) -> Option<(PeerId, Vec<Multiaddr>)> {
        self.wake.addresses.pop_front()
    }

    fn dial_failed(&mut self, _now: Now, peer: PeerId) {
        self.fail_peer(peer, RequestError::Unreachable);
        self.sync_peer_unreachable(peer);
    }
}
