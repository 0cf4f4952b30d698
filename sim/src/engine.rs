//! The event loop: a time-ordered queue of deliveries and timer firings.

use std::{
    cmp::Ordering,
    collections::{BinaryHeap, HashMap, HashSet},
    time::Duration,
};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use shoal::{Core, Multiaddr, Now, Remote};
use shoal_identity::PeerId;

use crate::{Clock, clock::Origin, network::NetworkModel};

/// Wall-clock start of every simulation: 2027-01-15 08:00:00 UTC. Fixed so
/// that runs are reproducible; signed expiries are relative to it.
pub const DEFAULT_UNIX_START: u64 = 1_800_000_000;

/// Delay before a core whose deadline is still past after `handle_timeout`
/// is called again.
const TIMER_RETRY: Duration = Duration::from_millis(1);

/// The simulator drives the same [`Core`] trait as the tokio driver
/// ([`shoal::CoreDriver`]): after every call it drains
/// [`Core::poll_transmit`] and reads [`Core::poll_timeout`], exactly as the
/// driver does. Every delivery comes from a peer "dialled" at its
/// [`sim_addr`], and [`Core::poll_event`] is left to the node (the
/// simulator has no application to hand events to).
///
/// The time a core gets is the simulation's [`Clock`] as a [`Now`].
pub fn now_of(clock: Clock) -> Now {
    Now::at(clock.instant, clock.unix_secs.saturating_mul(1000))
}

/// The address a simulated node is "reached" at: a memory address derived
/// from its peer id (what cores record as the peer's dialled address).
pub fn sim_addr(peer: &PeerId) -> Multiaddr {
    let bytes = peer.as_bytes();
    let mut n = [0u8; 8];
    n.copy_from_slice(&bytes[..8]);
    let text = format!("/memory/{}", u64::from_be_bytes(n) >> 1);
    text.parse()
        .unwrap_or_else(|_| unreachable!("a memory address is valid"))
}

/// A node's position in its simulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeIndex(pub usize);

/// Message counts over the whole run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Messages nodes handed to the network.
    pub sent: u64,
    /// Messages delivered to a live node.
    pub delivered: u64,
    /// Messages the network lost (see [`NetworkModel::loss`]).
    pub lost: u64,
    /// Messages that arrived at a crashed node.
    pub to_crashed: u64,
    /// Messages addressed to a peer id no node has.
    pub unroutable: u64,
    /// Messages a node's core refused (`handle_message` failed).
    pub rejected: u64,
}

/// One simulated node.
struct Slot<N> {
    peer: PeerId,
    node: N,
    alive: bool,
    /// When its earliest pending timer event fires.
    timer: Option<Duration>,
    received: u64,
    sent: u64,
    /// Nodes it has an open connection with (see [`NetworkModel`]).
    connected: HashSet<usize>,
}

enum Event {
    Deliver {
        to: usize,
        from: usize,
        bytes: shoal::Bytes,
    },
    Timer {
        node: usize,
    },
}

/// A queued event, ordered by time then by insertion (min-heap).
struct Queued {
    at: Duration,
    seq: u64,
    event: Event,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Queued) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Queued {}

impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Queued) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Queued {
    fn cmp(&self, other: &Queued) -> Ordering {
        // Reversed: BinaryHeap is a max-heap and the earliest event goes first.
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// A deterministic simulation of nodes of type `N`.
///
/// Everything random (link latencies, jitter, loss) comes from `seed`; the
/// cores get their own seeds from the caller. The same inputs give the
/// same run, event for event.
pub struct Simulation<N> {
    seed: u64,
    model: NetworkModel,
    rng: ChaCha8Rng,
    origin: Origin,
    now: Duration,
    seq: u64,
    queue: BinaryHeap<Queued>,
    slots: Vec<Slot<N>>,
    by_peer: HashMap<PeerId, usize>,
    /// Open connections (with `connect_round_trips`): the pair, lower
    /// index first, and when it carries messages.
    connections: HashMap<(usize, usize), Duration>,
    stats: SimStats,
}

impl<N: Core> Simulation<N> {
    /// An empty simulation over `model`, starting at
    /// [`DEFAULT_UNIX_START`] on the wall clock.
    pub fn new(seed: u64, model: NetworkModel) -> Simulation<N> {
        Simulation {
            seed,
            model,
            rng: ChaCha8Rng::seed_from_u64(seed),
            origin: Origin::new(DEFAULT_UNIX_START),
            now: Duration::ZERO,
            seq: 0,
            queue: BinaryHeap::new(),
            slots: Vec::new(),
            by_peer: HashMap::new(),
            connections: HashMap::new(),
            stats: SimStats::default(),
        }
    }

    /// Changes the network from now on (messages in flight keep their
    /// arrival time).
    pub fn set_network(&mut self, model: NetworkModel) {
        self.model = model;
    }

    /// Adds a live node reachable as `peer`.
    ///
    /// # Panics
    /// If a node with the same peer id exists (a test set-up error).
    pub fn add_node(&mut self, peer: PeerId, node: N) -> NodeIndex {
        let index = self.slots.len();
        let previous = self.by_peer.insert(peer, index);
        assert!(previous.is_none(), "peer {peer} added twice");
        self.slots.push(Slot {
            peer,
            node,
            alive: true,
            timer: None,
            received: 0,
            sent: 0,
            connected: HashSet::new(),
        });
        self.flush(index, Duration::ZERO);
        NodeIndex(index)
    }

    /// Stops a node without warning: it handles nothing more, and messages
    /// to it vanish (their senders see only silence).
    pub fn crash(&mut self, node: NodeIndex) {
        self.slots[node.0].alive = false;
        for peer in std::mem::take(&mut self.slots[node.0].connected) {
            self.connections.remove(&pair(node.0, peer));
            self.slots[peer].connected.remove(&node.0);
        }
    }

    /// Starts a crashed node again with the core it had (a node that was
    /// offline, or that restarted with its durable state: replace what a
    /// restart loses with [`with_node`](Self::with_node) first). Messages
    /// sent to it while it was down stay lost.
    pub fn revive(&mut self, node: NodeIndex) {
        let slot = &mut self.slots[node.0];
        if slot.alive {
            return;
        }
        slot.alive = true;
        slot.timer = None;
        self.flush(node.0, Duration::ZERO);
    }

    /// The least time a request from `from` to `to` can take to be
    /// answered when they are not connected yet: the connection's round
    /// trips (see [`NetworkModel::connect_round_trips`]) and the
    /// request's, without jitter.
    pub fn fresh_request_floor(&self, from: NodeIndex, to: NodeIndex) -> Duration {
        let rtt = self.model.link_latency(self.seed, from.0, to.0)
            + self.model.link_latency(self.seed, to.0, from.0);
        rtt * (self.model.connect_round_trips + 1)
    }

    /// Whether `node` is running.
    pub fn is_alive(&self, node: NodeIndex) -> bool {
        self.slots[node.0].alive
    }

    /// Runs `f` on a live node's core (to give it a command), then sends
    /// what it produced.
    pub fn with_node<R>(&mut self, node: NodeIndex, f: impl FnOnce(&mut N, Clock) -> R) -> R {
        let now = self.clock();
        let result = f(&mut self.slots[node.0].node, now);
        self.flush(node.0, Duration::ZERO);
        result
    }

    /// A node's core, to inspect.
    pub fn node(&self, node: NodeIndex) -> &N {
        &self.slots[node.0].node
    }

    /// A node's core, mutably, without running the network afterwards: for
    /// draining events. Give commands through [`with_node`](Self::with_node).
    pub fn node_mut(&mut self, node: NodeIndex) -> &mut N {
        &mut self.slots[node.0].node
    }

    /// A node's peer id.
    pub fn peer_id(&self, node: NodeIndex) -> PeerId {
        self.slots[node.0].peer
    }

    /// The node with `peer` id.
    pub fn index_of(&self, peer: &PeerId) -> Option<NodeIndex> {
        self.by_peer.get(peer).copied().map(NodeIndex)
    }

    /// Number of nodes ever added (crashed ones included).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no node was ever added.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Indices of the live nodes, in order.
    pub fn alive(&self) -> impl Iterator<Item = NodeIndex> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.alive)
            .map(|(i, _)| NodeIndex(i))
    }

    /// Messages `node` received and sent so far.
    pub fn node_traffic(&self, node: NodeIndex) -> (u64, u64) {
        let slot = &self.slots[node.0];
        (slot.received, slot.sent)
    }

    /// Message counts so far.
    pub fn stats(&self) -> SimStats {
        self.stats
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now
    }

    /// The clocks as the cores see them now.
    pub fn clock(&self) -> Clock {
        self.origin.at(self.now)
    }

    /// Runs every event due in the next `duration`; the clock then reads
    /// `duration` later.
    pub fn run_for(&mut self, duration: Duration) {
        let end = self.now + duration;
        while self.step_before(end) {}
        self.now = end;
    }

    /// Runs events until `done` holds (checked after each event) or `limit`
    /// of virtual time has passed; returns whether `done` held.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Self) -> bool) -> bool {
        let end = self.now + limit;
        loop {
            if done(self) {
                return true;
            }
            if !self.step_before(end) {
                self.now = end;
                return done(self);
            }
        }
    }

    /// Runs the next event if it is due no later than `end`.
    fn step_before(&mut self, end: Duration) -> bool {
        match self.queue.peek() {
            Some(q) if q.at <= end => {}
            _ => return false,
        }
        let Some(Queued { at, event, .. }) = self.queue.pop() else {
            return false;
        };
        self.now = self.now.max(at);
        match event {
            Event::Deliver { to, from, bytes } => self.deliver(to, from, &bytes),
            Event::Timer { node } => self.fire_timer(node, at),
        }
        true
    }

    fn deliver(&mut self, to: usize, from: usize, bytes: &[u8]) {
        if !self.slots[to].alive {
            self.stats.to_crashed += 1;
            return;
        }
        self.stats.delivered += 1;
        let now = self.clock();
        let from_peer = self.slots[from].peer;
        let slot = &mut self.slots[to];
        slot.received += 1;
        let remote = Remote::dialled(from_peer, sim_addr(&from_peer));
        if slot
            .node
            .handle_message(now_of(now), &remote, bytes)
            .is_err()
        {
            self.stats.rejected += 1;
        }
        self.flush(to, Duration::ZERO);
    }

    fn fire_timer(&mut self, index: usize, at: Duration) {
        let slot = &mut self.slots[index];
        if !slot.alive || slot.timer != Some(at) {
            return; // crashed, or superseded by an earlier timer
        }
        slot.timer = None;
        let due = slot
            .node
            .poll_timeout()
            .is_some_and(|t| self.origin.elapsed(t) <= self.now);
        if due {
            let now = self.origin.at(self.now);
            self.slots[index].node.handle_timeout(now_of(now));
        }
        // A core still due right after handling its timeout would otherwise
        // spin at one instant; it gets called again a millisecond later.
        self.flush(index, self.now + TIMER_RETRY);
    }

    /// Sends what node `index` produced and schedules its next timer, not
    /// before `not_before`.
    fn flush(&mut self, index: usize, not_before: Duration) {
        while let Some(t) = self.slots[index].node.poll_transmit() {
            self.stats.sent += 1;
            self.slots[index].sent += 1;
            let Some(&to) = self.by_peer.get(&t.peer) else {
                self.stats.unroutable += 1;
                continue;
            };
            let Some(jitter) = self.model.sample(&mut self.rng) else {
                self.stats.lost += 1;
                continue;
            };
            let sent = self.connected_at(index, to);
            let at = sent + self.model.link_latency(self.seed, index, to) + jitter;
            self.push(
                at,
                Event::Deliver {
                    to,
                    from: index,
                    bytes: t.bytes,
                },
            );
        }
        let slot = &self.slots[index];
        if !slot.alive {
            return;
        }
        if let Some(deadline) = slot.node.poll_timeout() {
            let at = self.origin.elapsed(deadline).max(self.now).max(not_before);
            if slot.timer.is_none_or(|scheduled| at < scheduled) {
                self.slots[index].timer = Some(at);
                self.push(at, Event::Timer { node: index });
            }
        }
    }

    /// When a message from `from` to `to` sent now leaves: now, or once
    /// their connection is open (see [`NetworkModel`]).
    fn connected_at(&mut self, from: usize, to: usize) -> Duration {
        let round_trips = self.model.connect_round_trips;
        if round_trips == 0 || from == to {
            return self.now;
        }
        let key = pair(from, to);
        if let Some(&open) = self.connections.get(&key) {
            return open.max(self.now);
        }
        if !self.slots[to].alive {
            return self.now;
        }
        let rtt = self.model.link_latency(self.seed, from, to)
            + self.model.link_latency(self.seed, to, from);
        let open = self.now + rtt * round_trips;
        self.connections.insert(key, open);
        self.slots[from].connected.insert(to);
        self.slots[to].connected.insert(from);
        open
    }

    fn push(&mut self, at: Duration, event: Event) {
        self.seq += 1;
        self.queue.push(Queued {
            at,
            seq: self.seq,
            event,
        });
    }
}

/// A connection's key: the pair, lower index first.
fn pair(a: usize, b: usize) -> (usize, usize) {
    (a.min(b), a.max(b))
}
