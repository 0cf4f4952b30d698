//! The sans-IO gossip core: state, the application-facing calls and the
//! output queues. Frame handling is in `inbound.rs`, the heartbeat in
//! `heartbeat.rs`.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    time::Instant,
};

use bytes::Bytes;
use rand::{Rng, SeedableRng, seq::SliceRandom};
use rand_chacha::ChaCha8Rng;
use shoal_identity::{Keypair, PeerId};

use crate::{
    Config, DecodeError, MessageId, Topic,
    cache::{MessageCache, SeenCache},
    message,
    outbox::{Entry, Outbox, Transmit},
    peer::{Misbehaviour, PeerState},
    protocol::{Graft, Prune, Subscription},
    send::{OwnSend, SendLimits},
};

/// What the core reports to its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A new message of a subscribed topic, signature checked. Each message
    /// is reported once.
    Message {
        /// Its id.
        id: MessageId,
        /// Its topic.
        topic: Topic,
        /// Its author (signer).
        author: PeerId,
        /// The author's sequence number.
        seq: u64,
        /// The application data.
        payload: Bytes,
        /// The peer that delivered it to us first.
        propagation_source: PeerId,
    },
    /// A peer joined a topic.
    Subscribed {
        /// The peer.
        peer: PeerId,
        /// The topic.
        topic: Topic,
    },
    /// A peer left a topic.
    Unsubscribed {
        /// The peer.
        peer: PeerId,
        /// The topic.
        topic: Topic,
    },
    /// The peer crossed the disconnect threshold and has been forgotten:
    /// the driver should close its gossip stream (and then call
    /// [`Gossip::peer_disconnected`], which is then a no-op).
    Disconnect {
        /// The peer.
        peer: PeerId,
        /// The misbehaviour that crossed the threshold.
        reason: Misbehaviour,
    },
}

/// Why [`Gossip::handle_message`] rejected a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The peer is not connected (never announced, or already dropped).
    /// Blame: the driver, or a frame in flight when the peer was dropped.
    #[error("frame from {0}, which is not connected")]
    UnknownPeer(PeerId),
    /// The frame is malformed. Blame: the remote, which has been dropped
    /// ([`Event::Disconnect`]).
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// Why [`Gossip::publish`] refused a message. Blame: the local caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The payload is larger than [`Config::max_payload_size`].
    #[error("payload of {size} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The payload size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// No connected peer (in good standing) is subscribed to the topic.
    #[error("no peer to publish to")]
    NoPeers,
    /// Every target has had its share of messages for this heartbeat (half
    /// of [`Config::max_messages_per_heartbeat`]), or has own messages
    /// waiting already; retry after the next heartbeat. Nothing was sent
    /// or queued.
    #[error("publishing faster than peers accept; retry after the next heartbeat")]
    Throttled,
}

/// What [`Gossip::publish`] did with a new message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Published {
    /// The message's id.
    pub id: MessageId,
    /// Peers it was sent to now: at least one.
    pub sent: usize,
    /// Peers whose send budget for this heartbeat was used up: it waits
    /// for them and is sent first at the next heartbeat.
    pub queued: usize,
    /// Peers it went to neither way (their backlog was full); they get it
    /// through the mesh or IHAVE/IWANT.
    pub missed: usize,
}

/// Why [`Gossip::subscribe`] refused a topic. Blame: the local caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("already subscribed to {0} topics, the limit")]
pub struct SubscribeError(pub usize);

/// Counters for tests, simulations and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Messages published here.
    pub published: u64,
    /// Messages reported by [`Event::Message`].
    pub delivered: u64,
    /// Full messages received (including duplicates and invalid ones).
    pub received: u64,
    /// Received messages already seen.
    pub duplicates: u64,
    /// Received messages with a bad body or signature.
    pub invalid: u64,
    /// Message copies sent (forwarded, published or answering IWANT).
    pub sent: u64,
    /// Message copies not sent when first tried, because the peer's budget
    /// (or the relay's share of it) for this heartbeat was used up.
    pub throttled: u64,
    /// Own message copies queued for a peer's next heartbeat (counted in
    /// `throttled` too; sent later, and then counted in `sent`).
    pub queued: u64,
    /// Message ids asked for with IWANT.
    pub iwant_requested: u64,
    /// IWANT ids not answered because we had answered that peer with the
    /// message already.
    pub iwant_repeats: u64,
    /// Penalties given, and peers dropped for them.
    pub penalties: u64,
    /// Peers dropped for misbehaviour.
    pub disconnects: u64,
}

/// The gossip state machine of one node.
///
/// Drive it like this: tell it about peers ([`peer_connected`],
/// [`peer_disconnected`]) and their frames ([`handle_message`]); call
/// [`handle_timeout`] when [`poll_timeout`] passes; after *every* call,
/// drain [`poll_transmit`] (frames to send) and [`poll_event`]. It never
/// reads a clock: time is the `now` handed in. All choices come from a
/// ChaCha RNG seeded in [`Gossip::new`], and every iteration that shapes
/// the output is in a fixed order, so the same inputs give the same outputs.
///
/// [`peer_connected`]: Gossip::peer_connected
/// [`peer_disconnected`]: Gossip::peer_disconnected
/// [`handle_message`]: Gossip::handle_message
/// [`handle_timeout`]: Gossip::handle_timeout
/// [`poll_timeout`]: Gossip::poll_timeout
/// [`poll_transmit`]: Gossip::poll_transmit
/// [`poll_event`]: Gossip::poll_event
#[derive(Debug)]
pub struct Gossip {
    pub(crate) keypair: Keypair,
    pub(crate) local: PeerId,
    pub(crate) config: Config,
    pub(crate) send_limits: SendLimits,
    pub(crate) rng: ChaCha8Rng,
    pub(crate) peers: BTreeMap<PeerId, PeerState>,
    /// Connected peers per topic they announced.
    pub(crate) topic_peers: BTreeMap<Topic, BTreeSet<PeerId>>,
    /// Our topics and, for each, our mesh.
    pub(crate) mesh: BTreeMap<Topic, BTreeSet<PeerId>>,
    /// No GRAFT to (topic, peer) before this time.
    pub(crate) backoff: BTreeMap<(Topic, PeerId), Instant>,
    pub(crate) seen: SeenCache,
    pub(crate) mcache: MessageCache,
    /// Ids asked for with IWANT: the asked peer and the deadline.
    pub(crate) iwant_pending: BTreeMap<MessageId, (PeerId, Instant)>,
    pub(crate) next_seq: u64,
    pub(crate) next_heartbeat: Option<Instant>,
    /// The latest time handed in.
    pub(crate) now: Option<Instant>,
    pub(crate) outbox: Outbox,
    pub(crate) events: VecDeque<Event>,
    /// Peers dropped for misbehaviour whose streams the driver must close.
    to_close: VecDeque<PeerId>,
    pub(crate) stats: Stats,
}

impl Gossip {
    /// A core for the node `keypair`, with all randomness drawn from `seed`.
    pub fn new(keypair: Keypair, config: Config, seed: u64) -> Gossip {
        let config = config.normalized();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // A random start, so a restarted node does not reuse (author, seq)
        // pairs and with them message ids; the top bit stays free.
        let next_seq = rng.random::<u64>() >> 1;
        Gossip {
            local: keypair.peer_id(),
            keypair,
            seen: SeenCache::new(config.max_seen),
            mcache: MessageCache::new(config.history_length),
            send_limits: SendLimits::new(&config),
            config,
            rng,
            peers: BTreeMap::new(),
            topic_peers: BTreeMap::new(),
            mesh: BTreeMap::new(),
            backoff: BTreeMap::new(),
            iwant_pending: BTreeMap::new(),
            next_seq,
            next_heartbeat: None,
            now: None,
            outbox: Outbox::default(),
            events: VecDeque::new(),
            to_close: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    /// A peer opened its gossip stream: it learns our topics.
    pub fn peer_connected(&mut self, now: Instant, peer: PeerId) {
        self.advance(now);
        if peer == self.local || self.peers.contains_key(&peer) {
            return;
        }
        self.peers.insert(peer, PeerState::default());
        for topic in self.mesh.keys() {
            let entry = Entry::Subscription(Subscription {
                subscribe: true,
                topic: topic.as_str().to_owned(),
            });
            self.outbox.push(peer, entry);
        }
        self.outbox.flush();
    }

    /// A peer's gossip stream closed: everything about it is forgotten.
    pub fn peer_disconnected(&mut self, now: Instant, peer: PeerId) {
        self.advance(now);
        self.forget_peer(&peer);
    }

    /// Handles one frame from `from`. Malformed frames return an error and
    /// drop the peer; everything else a peer may do wrong is ignored and
    /// penalised (see [`crate::peer`]).
    pub fn handle_message(
        &mut self,
        now: Instant,
        from: PeerId,
        bytes: &[u8],
    ) -> Result<(), Error> {
        self.advance(now);
        if !self.peers.contains_key(&from) {
            return Err(Error::UnknownPeer(from));
        }
        let result = self.handle_frame(now, from, bytes);
        self.outbox.flush();
        result
    }

    /// Joins `topic`: tells every peer and grafts a mesh from the peers
    /// known to be in it. `Ok(false)` if already subscribed.
    pub fn subscribe(&mut self, topic: Topic) -> Result<bool, SubscribeError> {
        if self.mesh.contains_key(&topic) {
            return Ok(false);
        }
        if self.mesh.len() >= self.config.max_subscriptions {
            return Err(SubscribeError(self.mesh.len()));
        }
        self.mesh.insert(topic.clone(), BTreeSet::new());
        for &peer in self.peers.keys() {
            let entry = Entry::Subscription(Subscription {
                subscribe: true,
                topic: topic.as_str().to_owned(),
            });
            self.outbox.push(peer, entry);
        }
        let wanted = self.config.mesh_n;
        for peer in self.graft_candidates(&topic, wanted) {
            self.graft(&topic, peer);
        }
        self.outbox.flush();
        Ok(true)
    }

    /// Leaves `topic`: prunes its mesh and tells every peer. `false` if
    /// not subscribed.
    pub fn unsubscribe(&mut self, topic: &Topic) -> bool {
        let Some(mesh) = self.mesh.remove(topic) else {
            return false;
        };
        for peer in mesh {
            self.send_prune(topic, peer);
        }
        for &peer in self.peers.keys() {
            let entry = Entry::Subscription(Subscription {
                subscribe: false,
                topic: topic.as_str().to_owned(),
            });
            self.outbox.push(peer, entry);
        }
        self.outbox.flush();
        true
    }

    /// Signs and sends a new message. With [`Config::flood_publish`] it
    /// goes to every peer in good standing subscribed to `topic`; otherwise
    /// to our mesh, or `mesh_n` random topic peers when not subscribed. Our
    /// own messages are not reported as [`Event::Message`].
    ///
    /// A peer is sent at most half its message budget per heartbeat, part
    /// of which only our own messages may use
    /// ([`Config::own_message_reserve_percent`]). A message no target can
    /// take now fails with [`PublishError::Throttled`]; one that some
    /// targets can take goes to those and waits for the others until their
    /// next heartbeat. [`Published`] says how many peers it went to.
    pub fn publish(
        &mut self,
        now: Instant,
        topic: Topic,
        payload: impl Into<Bytes>,
    ) -> Result<Published, PublishError> {
        self.advance(now);
        let payload = payload.into();
        let max = self.config.max_payload_size;
        if payload.len() > max {
            return Err(PublishError::TooLarge {
                size: payload.len(),
                max,
            });
        }
        let targets = self.publish_targets(&topic);
        if targets.is_empty() {
            return Err(PublishError::NoPeers);
        }
        if !targets.iter().any(|p| self.has_room_for_own(p)) {
            self.stats.throttled += targets.len() as u64;
            return Err(PublishError::Throttled);
        }
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        let (id, signed) = message::sign(&self.keypair, seq, &topic, payload);
        let mut published = Published {
            id,
            sent: 0,
            queued: 0,
            missed: 0,
        };
        for peer in targets {
            match self.send_own(peer, signed.clone()) {
                OwnSend::Sent => published.sent += 1,
                OwnSend::Queued => published.queued += 1,
                OwnSend::Refused => published.missed += 1,
            }
        }
        self.outbox.flush();
        self.seen.insert(id, now + self.config.seen_ttl);
        self.mcache.put(id, topic, self.local, signed);
        self.stats.published += 1;
        Ok(published)
    }

    /// Runs the heartbeat if it is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
        let Some(due) = self.next_heartbeat else {
            return;
        };
        if now < due {
            return;
        }
        let mut next = due + self.config.heartbeat_interval;
        if next <= now {
            next = now + self.config.heartbeat_interval;
        }
        self.next_heartbeat = Some(next);
        self.heartbeat(now);
        self.outbox.flush();
    }

    /// When [`Gossip::handle_timeout`] should be called next. `None` until
    /// the core has been handed a time for the first time.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_heartbeat
    }

    /// The next frame to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.outbox.pop()
    }

    /// The next peer dropped for misbehaviour (also reported as
    /// [`Event::Disconnect`]): the driver closes its stream.
    pub fn poll_close(&mut self) -> Option<PeerId> {
        self.to_close.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// This node's peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.local
    }

    /// The settings in use (after making them consistent).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Our topics, in order.
    pub fn subscriptions(&self) -> impl Iterator<Item = &Topic> {
        self.mesh.keys()
    }

    /// Our mesh peers of `topic`, in order.
    pub fn mesh_peers(&self, topic: &Topic) -> impl Iterator<Item = &PeerId> {
        self.mesh.get(topic).into_iter().flatten()
    }

    /// Connected peers subscribed to `topic`, in order.
    pub fn topic_peers(&self, topic: &Topic) -> impl Iterator<Item = &PeerId> {
        self.topic_peers.get(topic).into_iter().flatten()
    }

    /// Connected peers, in order.
    pub fn peers(&self) -> impl Iterator<Item = &PeerId> {
        self.peers.keys()
    }

    /// The penalty points of a connected peer.
    pub fn penalty(&self, peer: &PeerId) -> Option<u32> {
        self.peers.get(peer).map(|p| p.penalty)
    }

    /// Records the time; the first time starts the heartbeat at a random
    /// point of its first interval, so nodes started together do not beat
    /// in step.
    fn advance(&mut self, now: Instant) {
        if self.now.is_none_or(|t| now > t) {
            self.now = Some(now);
        }
        if self.next_heartbeat.is_none() {
            let interval = self.config.heartbeat_interval;
            let offset = interval.mul_f64(self.rng.random_range(0.05..=1.0));
            self.next_heartbeat = Some(now + offset);
        }
    }

    /// Targets for a message we publish.
    fn publish_targets(&mut self, topic: &Topic) -> Vec<PeerId> {
        let good = |p: &&PeerId| self.peers.get(*p).is_some_and(PeerState::in_good_standing);
        let topic_peers: Vec<PeerId> = self.topic_peers(topic).filter(good).copied().collect();
        if self.config.flood_publish {
            return topic_peers;
        }
        if let Some(mesh) = self.mesh.get(topic).filter(|m| !m.is_empty()) {
            return mesh.iter().copied().collect();
        }
        let mut peers = topic_peers;
        peers.shuffle(&mut self.rng);
        peers.truncate(self.config.mesh_n);
        peers
    }

    /// Up to `n` random peers of `topic` that may join our mesh now.
    pub(crate) fn graft_candidates(&mut self, topic: &Topic, n: usize) -> Vec<PeerId> {
        let now = self.now;
        let mesh = self.mesh.get(topic);
        let mut candidates: Vec<PeerId> = self
            .topic_peers(topic)
            .filter(|p| !mesh.is_some_and(|m| m.contains(*p)))
            .filter(|p| self.peers.get(*p).is_some_and(PeerState::in_good_standing))
            .filter(|p| !self.in_backoff(topic, p, now))
            .copied()
            .collect();
        candidates.shuffle(&mut self.rng);
        candidates.truncate(n);
        candidates
    }

    pub(crate) fn in_backoff(&self, topic: &Topic, peer: &PeerId, now: Option<Instant>) -> bool {
        let until = self.backoff.get(&(topic.clone(), *peer));
        matches!((until, now), (Some(until), Some(now)) if now < *until)
    }

    /// Adds `peer` to our mesh of `topic` and tells it.
    pub(crate) fn graft(&mut self, topic: &Topic, peer: PeerId) {
        if let Some(mesh) = self.mesh.get_mut(topic) {
            mesh.insert(peer);
            let entry = Entry::Graft(Graft {
                topic: topic.as_str().to_owned(),
            });
            self.outbox.push(peer, entry);
        }
    }

    /// Tells `peer` it is out of our mesh of `topic` (the caller removed
    /// it) and backs off from it.
    pub(crate) fn send_prune(&mut self, topic: &Topic, peer: PeerId) {
        let backoff = self.config.prune_backoff;
        if let Some(now) = self.now {
            self.backoff.insert((topic.clone(), peer), now + backoff);
        }
        let entry = Entry::Prune(Prune {
            topic: topic.as_str().to_owned(),
            backoff_secs: backoff.as_secs(),
        });
        self.outbox.push(peer, entry);
    }

    /// Adds penalty points; drops the peer at the threshold and takes it
    /// out of every mesh when it falls out of good standing. `true` if the
    /// peer was dropped.
    pub(crate) fn penalise(&mut self, peer: PeerId, reason: Misbehaviour) -> bool {
        let Some(state) = self.peers.get_mut(&peer) else {
            return true;
        };
        self.stats.penalties += 1;
        state.penalty = state.penalty.saturating_add(reason.penalty());
        tracing::debug!(%peer, ?reason, penalty = state.penalty, "gossip peer penalised");
        if state.penalty >= self.config.disconnect_threshold {
            self.forget_peer(&peer);
            self.stats.disconnects += 1;
            self.events.push_back(Event::Disconnect { peer, reason });
            self.to_close.push_back(peer);
            return true;
        }
        if !state.in_good_standing() {
            let topics: Vec<Topic> = self
                .mesh
                .iter_mut()
                .filter_map(|(topic, mesh)| mesh.remove(&peer).then(|| topic.clone()))
                .collect();
            for topic in topics {
                self.send_prune(&topic, peer);
            }
        }
        false
    }

    /// Removes every trace of a peer except its backoffs and IWANT
    /// promises, which expire by themselves.
    pub(crate) fn forget_peer(&mut self, peer: &PeerId) {
        let Some(state) = self.peers.remove(peer) else {
            return;
        };
        for topic in &state.topics {
            if let Some(set) = self.topic_peers.get_mut(topic) {
                set.remove(peer);
                if set.is_empty() {
                    self.topic_peers.remove(topic);
                }
            }
        }
        for mesh in self.mesh.values_mut() {
            mesh.remove(peer);
        }
        self.outbox.forget(peer);
    }
}
