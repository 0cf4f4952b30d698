//! A tiny deterministic network of Kademlia cores wired by hand: messages
//! are delivered in FIFO order with no latency; time jumps to the earliest
//! timeout when nothing is in flight.

#![allow(clippy::unwrap_used, dead_code, unreachable_pub)]

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    time::{Duration, Instant},
};

use shoal_identity::{Keypair, PeerId};
use shoal_kad::{Config, Event, Kademlia, Key, QueryId, QueryResult, QueryStats};
use shoal_transport::Multiaddr;

pub const UNIX_START: u64 = 1_700_000_000;

pub struct Node {
    pub keypair: Keypair,
    pub core: Kademlia,
    pub addr: Multiaddr,
    pub events: Vec<Event>,
}

pub struct Net {
    pub nodes: Vec<Node>,
    pub index: BTreeMap<PeerId, usize>,
    pub start: Instant,
    pub now: Instant,
    pub down: BTreeSet<usize>,
    /// Every message delivered: (from, to, bytes).
    pub log: Vec<(usize, usize, Vec<u8>)>,
    pub keep_log: bool,
    queue: VecDeque<(usize, usize, bytes::Bytes)>,
}

pub fn keypair(seed: u64) -> Keypair {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&seed.to_le_bytes());
    s[31] = 0x5a;
    Keypair::from_secret_bytes(&s)
}

impl Net {
    pub fn new() -> Net {
        let start = Instant::now();
        Net {
            nodes: Vec::new(),
            index: BTreeMap::new(),
            start,
            now: start,
            down: BTreeSet::new(),
            log: Vec::new(),
            keep_log: false,
            queue: VecDeque::new(),
        }
    }

    pub fn unix(&self) -> u64 {
        UNIX_START + self.now.duration_since(self.start).as_secs()
    }

    /// Adds a node with key seed `seed`; returns its index.
    pub fn add(&mut self, seed: u64, config: Config) -> usize {
        let keypair = keypair(seed);
        let i = self.nodes.len();
        let core = Kademlia::new(keypair.peer_id(), config, seed);
        self.index.insert(keypair.peer_id(), i);
        self.nodes.push(Node {
            keypair,
            core,
            addr: format!("/memory/{}", i + 1).parse().unwrap(),
            events: Vec::new(),
        });
        i
    }

    pub fn peer(&self, i: usize) -> PeerId {
        self.nodes[i].keypair.peer_id()
    }

    pub fn seed_of(&self, i: usize) -> (PeerId, Vec<Multiaddr>) {
        (self.peer(i), vec![self.nodes[i].addr.clone()])
    }

    /// Bootstraps node `i` through node `via` and runs until it finished.
    pub fn join(&mut self, i: usize, via: usize) {
        let now = self.now;
        let seed = self.seed_of(via);
        let id = self.nodes[i].core.bootstrap(now, &[seed]).unwrap();
        self.run_until_finished(i, id);
    }

    /// Node `i` publishes `record`.
    pub fn put(&mut self, i: usize, record: shoal_kad::SignedRecord) -> QueryId {
        let (now, unix) = (self.now, self.unix());
        self.nodes[i].core.put_record(now, unix, record).unwrap()
    }

    /// Node `i` looks up the record at `key`.
    pub fn get(&mut self, i: usize, key: Key) -> QueryId {
        let (now, unix) = (self.now, self.unix());
        self.nodes[i].core.get_record(now, unix, key).unwrap()
    }

    fn collect(&mut self) {
        for i in 0..self.nodes.len() {
            self.collect_from(i);
        }
    }

    fn collect_from(&mut self, i: usize) {
        if self.down.contains(&i) {
            // A crashed node sends nothing.
            while self.nodes[i].core.poll_transmit().is_some() {}
            while self.nodes[i].core.poll_event().is_some() {}
            return;
        }
        while let Some(t) = self.nodes[i].core.poll_transmit() {
            let to = self.index[&t.to];
            self.queue.push_back((i, to, t.bytes));
        }
        while let Some(e) = self.nodes[i].core.poll_event() {
            self.nodes[i].events.push(e);
        }
    }

    /// Delivers everything in flight, then advances time to the next
    /// timeout. Returns `false` when no node has anything left to do
    /// before `limit`.
    pub fn step(&mut self, limit: Instant) -> bool {
        if self.queue.is_empty() {
            // Commands may have been given to any node.
            self.collect();
        }
        if let Some((from, to, bytes)) = self.queue.pop_front() {
            if !self.down.contains(&to) {
                if self.keep_log {
                    self.log.push((from, to, bytes.to_vec()));
                }
                let addrs = vec![self.nodes[from].addr.clone()];
                let (now, unix, peer) = (self.now, self.unix(), self.peer(from));
                let _ = self.nodes[to]
                    .core
                    .handle_message(now, unix, peer, &addrs, &bytes);
            }
            return true;
        }
        let next = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.down.contains(i))
            .filter_map(|(_, n)| n.core.poll_timeout())
            .min();
        let Some(next) = next else { return false };
        if next > limit {
            return false;
        }
        self.now = self.now.max(next);
        let (now, unix) = (self.now, self.unix());
        for i in 0..self.nodes.len() {
            let n = &mut self.nodes[i];
            if !self.down.contains(&i) && n.core.poll_timeout().is_some_and(|t| t <= now) {
                n.core.handle_timeout(now, unix);
                self.collect_from(i);
            }
        }
        true
    }

    /// Runs until node `i` reports query `id`; returns its result.
    pub fn run_until_finished(&mut self, i: usize, id: QueryId) -> (QueryResult, QueryStats) {
        let limit = self.now + Duration::from_secs(600);
        for _ in 0..10_000_000 {
            if let Some(found) = self.take_finished(i, id) {
                return found;
            }
            if !self.step(limit) {
                break;
            }
        }
        self.take_finished(i, id).expect("query never finished")
    }

    fn take_finished(&mut self, i: usize, id: QueryId) -> Option<(QueryResult, QueryStats)> {
        self.collect_from(i);
        let events = &mut self.nodes[i].events;
        let at = events
            .iter()
            .position(|e| matches!(e, Event::QueryFinished { id: done, .. } if *done == id))?;
        match events.remove(at) {
            Event::QueryFinished { result, stats, .. } => Some((result, stats)),
            _ => None,
        }
    }

    /// Runs for `d` of simulated time (deliveries and timeouts).
    pub fn run_for(&mut self, d: Duration) {
        let limit = self.now + d;
        while self.step(limit) {}
        self.now = self.now.max(limit);
    }

    /// The live node closest to `key`.
    pub fn true_closest(&self, key: &Key) -> PeerId {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.down.contains(i))
            .map(|(_, n)| n.keypair.peer_id())
            .min_by_key(|p| Key::for_peer(p).distance(key))
            .unwrap()
    }

    /// A network of `n` nodes, each joined through node 0.
    pub fn joined(n: usize, config: Config) -> Net {
        let mut net = Net::new();
        for s in 0..n {
            net.add(s as u64 + 1, config.clone());
        }
        for i in 1..n {
            net.join(i, 0);
        }
        net
    }
}

/// A key derived from `i`, spread over the key space.
pub fn random_key(i: u64) -> Key {
    Key::for_name(
        shoal_identity::Purpose::new("shoal/test/key/1"),
        &i.to_be_bytes(),
    )
}
