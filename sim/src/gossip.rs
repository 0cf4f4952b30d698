//! [`GossipNode`]: a gossip core over connections found through Kademlia,
//! as a simulated node.
//!
//! A real node learns peers through the DHT and discovery, keeps a target
//! number of sessions, and runs gossip on them. This node does the same
//! with the two sans-IO cores: a Kademlia core joins through the seed; every
//! [`MAINTAIN_INTERVAL`] the node opens connections to random peers of its
//! routing table until it has [`GossipNode::target_connections`]; gossip
//! runs on the connections. One tag byte in front of each simulated
//! message says which core it is for (a real session uses one substream per
//! protocol instead).

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    time::{Duration, Instant},
};

use rand::{SeedableRng, seq::IteratorRandom};
use rand_chacha::ChaCha8Rng;
use shoal_gossip::{Event, Gossip, MessageId};
use shoal_identity::{Keypair, PeerId};
use shoal_kad::Kademlia;

use shoal::{BoxError, Core, Now, Remote, Transmit};

use crate::{Clock, kad::KadHost};

/// How often a node tops up its connections.
pub const MAINTAIN_INTERVAL: Duration = Duration::from_secs(1);

/// How long a connection attempt may go unanswered.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

const TAG_KAD: u8 = 0;
const TAG_GOSSIP: u8 = 1;
const TAG_CONNECT: u8 = 2;

/// A message this node received first from `source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// Which message.
    pub id: MessageId,
    /// The peer it came from first.
    pub source: PeerId,
    /// When.
    pub at: Instant,
}

/// Kademlia and gossip cores sharing one node's connections.
pub struct GossipNode {
    /// The Kademlia core (finds peers).
    pub kad: Kademlia,
    /// The gossip core.
    pub gossip: Gossip,
    /// Messages delivered to the application, in order.
    pub deliveries: Vec<Delivery>,
    /// Connections this node opens on its own.
    pub target_connections: usize,
    /// Connections it accepts in all.
    pub max_connections: usize,
    /// Frames a core rejected (a real handler would close the stream).
    pub rejected: u64,
    /// Peers the gossip core dropped for misbehaviour
    /// ([`Event::Disconnect`]), in order; the connection to each is closed.
    pub disconnected: Vec<PeerId>,
    connected: BTreeSet<PeerId>,
    /// Connection attempts and when they give up.
    pending: BTreeMap<PeerId, Instant>,
    next_maintain: Option<Instant>,
    out: VecDeque<Transmit>,
    rng: ChaCha8Rng,
}

impl GossipNode {
    /// A node for `keypair` with the two cores' configurations and its
    /// randomness from `seed`.
    pub fn new(
        keypair: Keypair,
        kad: shoal_kad::Config,
        gossip: shoal_gossip::Config,
        seed: u64,
    ) -> GossipNode {
        GossipNode {
            kad: Kademlia::new(keypair.peer_id(), kad, seed),
            gossip: Gossip::new(keypair, gossip, seed ^ 0x0060_551b),
            deliveries: Vec::new(),
            target_connections: 8,
            max_connections: 32,
            rejected: 0,
            disconnected: Vec::new(),
            connected: BTreeSet::new(),
            pending: BTreeMap::new(),
            next_maintain: None,
            out: VecDeque::new(),
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x0c07_7ec7),
        }
    }

    /// Peers this node has a connection with.
    pub fn connections(&self) -> &BTreeSet<PeerId> {
        &self.connected
    }

    /// `frame`, a gossip frame (as from [`shoal_gossip::protocol::encode_frame`]),
    /// packed for this node type's connection to `to`: what a node that
    /// crafts its own frames (a misbehaving one, in tests) sends beside
    /// its cores' output.
    pub fn gossip_transmit(to: PeerId, frame: &[u8]) -> Transmit {
        let mut bytes = Vec::with_capacity(1 + frame.len());
        bytes.push(TAG_GOSSIP);
        bytes.extend_from_slice(frame);
        Transmit {
            peer: to,
            bytes: bytes.into(),
        }
    }

    /// The gossip frame inside `bytes`, a message between two nodes of
    /// this type, if it carries one (see [`GossipNode::gossip_transmit`]).
    pub fn gossip_frame(bytes: &[u8]) -> Option<&[u8]> {
        match bytes.split_first() {
            Some((&TAG_GOSSIP, frame)) => Some(frame),
            _ => None,
        }
    }

    fn connect(&mut self, now: Instant, peer: PeerId) {
        self.pending.remove(&peer);
        if self.connected.insert(peer) {
            self.gossip.peer_connected(now, peer);
        }
    }

    fn maintain(&mut self, now: Instant) {
        self.pending.retain(|_, deadline| *deadline > now);
        let open = self.connected.len() + self.pending.len();
        let want = self.target_connections.saturating_sub(open);
        if want == 0 {
            return;
        }
        let candidates: Vec<PeerId> = self
            .kad
            .routing_table()
            .iter()
            .map(|c| c.peer)
            .filter(|p| !self.connected.contains(p) && !self.pending.contains_key(p))
            .choose_multiple(&mut self.rng, want);
        for peer in candidates {
            self.pending.insert(peer, now + CONNECT_TIMEOUT);
            self.send(peer, TAG_CONNECT, &[]);
        }
    }

    fn send(&mut self, to: PeerId, tag: u8, frame: &[u8]) {
        let mut bytes = Vec::with_capacity(1 + frame.len());
        bytes.push(tag);
        bytes.extend_from_slice(frame);
        self.out.push_back(Transmit {
            peer: to,
            bytes: bytes.into(),
        });
    }

    /// Moves what the cores produced to the outbox; keeps deliveries.
    fn collect(&mut self, now: Instant) {
        while let Some(t) = self.kad.poll_transmit() {
            self.send(t.to, TAG_KAD, &t.bytes);
        }
        // Kademlia's events (routing changes, query results) are not needed
        // here: the routing table is read directly.
        while self.kad.poll_event().is_some() {}
        while let Some(t) = self.gossip.poll_transmit() {
            self.send(t.peer, TAG_GOSSIP, &t.frame);
        }
        while let Some(e) = self.gossip.poll_event() {
            match e {
                Event::Message {
                    id,
                    propagation_source,
                    ..
                } => self.deliveries.push(Delivery {
                    id,
                    source: propagation_source,
                    at: now,
                }),
                Event::Disconnect { peer, .. } => {
                    self.connected.remove(&peer);
                    self.disconnected.push(peer);
                }
                _ => {}
            }
        }
    }
}

impl KadHost for GossipNode {
    fn create(keypair: Keypair, config: &shoal_kad::Config, seed: u64) -> GossipNode {
        GossipNode::new(
            keypair,
            config.clone(),
            shoal_gossip::Config::default(),
            seed,
        )
    }

    fn kademlia(&mut self) -> &mut Kademlia {
        &mut self.kad
    }

    fn start(&mut self, now: Clock) {
        self.next_maintain = Some(now.instant);
        self.gossip.handle_timeout(now.instant);
        self.collect(now.instant);
    }
}

impl Core for GossipNode {
    type Event = ();

    fn handle_message(&mut self, now: Now, from: &Remote, bytes: &[u8]) -> Result<(), BoxError> {
        let from_addr = &from.addr;
        let from = from.peer;
        let Some((&tag, frame)) = bytes.split_first() else {
            self.rejected += 1;
            return Ok(());
        };
        match tag {
            TAG_KAD => {
                let addrs = [from_addr.clone()];
                if self
                    .kad
                    .handle_message(now.instant, now.unix_secs(), from, &addrs, frame)
                    .is_err()
                {
                    self.rejected += 1;
                }
            }
            TAG_GOSSIP if self.connected.contains(&from) => {
                if self
                    .gossip
                    .handle_message(now.instant, from, frame)
                    .is_err()
                {
                    self.rejected += 1;
                }
            }
            TAG_CONNECT => {
                if self.pending.contains_key(&from) {
                    // The answer to ours.
                    self.connect(now.instant, from);
                } else if !self.connected.contains(&from)
                    && self.connected.len() < self.max_connections
                {
                    self.connect(now.instant, from);
                    self.send(from, TAG_CONNECT, &[]);
                }
            }
            _ => self.rejected += 1,
        }
        self.collect(now.instant);
        Ok(())
    }

    fn handle_timeout(&mut self, now: Now) {
        if self.kad.poll_timeout().is_some_and(|t| t <= now.instant) {
            self.kad.handle_timeout(now.instant, now.unix_secs());
        }
        if self.gossip.poll_timeout().is_some_and(|t| t <= now.instant) {
            self.gossip.handle_timeout(now.instant);
        }
        if self.next_maintain.is_some_and(|t| t <= now.instant) {
            self.next_maintain = Some(now.instant + MAINTAIN_INTERVAL);
            self.maintain(now.instant);
        }
        self.collect(now.instant);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        [
            self.kad.poll_timeout(),
            self.gossip.poll_timeout(),
            self.next_maintain,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    fn poll_event(&mut self) -> Option<()> {
        None
    }
}

/// How one message spread.
#[derive(Debug, Clone, Default)]
pub struct SpreadReport {
    /// Nodes (besides the author) that delivered it.
    pub reached: usize,
    /// Nodes that delivered it more than once (must stay 0).
    pub delivered_twice: usize,
    /// Per reached node: hops from the author (following, for each node,
    /// the peer it first got the message from).
    pub hops: Vec<u32>,
    /// From publication to the last delivery.
    pub full_delivery: Duration,
}

/// Follows message `id`, published by `author` at `published`, through
/// every live node's deliveries.
pub fn spread_of(
    sim: &crate::Simulation<GossipNode>,
    author: crate::NodeIndex,
    id: MessageId,
    published: Instant,
) -> SpreadReport {
    let mut arrivals: Vec<(Instant, PeerId, PeerId)> = Vec::new();
    let mut report = SpreadReport::default();
    for n in sim.alive() {
        let mine: Vec<&Delivery> = sim
            .node(n)
            .deliveries
            .iter()
            .filter(|d| d.id == id)
            .collect();
        if mine.len() > 1 {
            report.delivered_twice += 1;
        }
        if let Some(first) = mine.first() {
            arrivals.push((first.at, sim.peer_id(n), first.source));
        }
    }
    // A node forwards only after it delivered, and every link has latency,
    // so in time order each source's hop count is known before it is used.
    arrivals.sort();
    let mut hops: BTreeMap<PeerId, u32> = BTreeMap::new();
    hops.insert(sim.peer_id(author), 0);
    for (at, node, source) in arrivals {
        let h = hops.get(&source).map_or(u32::MAX, |h| h + 1);
        hops.insert(node, h);
        report.hops.push(h);
        report.reached += 1;
        report.full_delivery = report
            .full_delivery
            .max(at.saturating_duration_since(published));
    }
    report
}
