//! Tests of the core: a small in-process network of cores wired by a
//! bounded delivery loop, and hand-made peers for adversarial cases.
#![allow(clippy::unwrap_used)]

mod adversarial;
mod flood;
mod network;
mod vectors;

use std::{
    collections::{BTreeMap, VecDeque},
    time::{Duration, Instant},
};

use shoal_identity::{Keypair, PeerId};

use crate::{Config, Event, Gossip, Transmit, protocol};

/// A deterministic key from a number.
pub(crate) fn key(n: u64) -> Keypair {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&n.to_be_bytes());
    seed[31] = 7;
    Keypair::from_secret_bytes(&seed)
}

pub(crate) fn topic(name: &str) -> crate::Topic {
    crate::Topic::new(name).unwrap()
}

/// Which transmits to drop: `(from, to, frame) -> drop?`.
type Filter = Box<dyn FnMut(usize, usize, &Transmit) -> bool>;

/// Cores wired together; frames are delivered in order, instantly.
pub(crate) struct Net {
    pub(crate) nodes: Vec<Gossip>,
    pub(crate) ids: Vec<PeerId>,
    index: BTreeMap<PeerId, usize>,
    pub(crate) now: Instant,
    /// Events per node, in order.
    pub(crate) events: Vec<Vec<Event>>,
    pub(crate) filter: Option<Filter>,
    /// Every frame delivered, for determinism checks.
    pub(crate) trace: Vec<(usize, usize, bytes::Bytes)>,
}

impl Net {
    pub(crate) fn new(n: usize, config: Config, seed: u64) -> Net {
        let mut nodes = Vec::new();
        let mut ids = Vec::new();
        for i in 0..n {
            let k = key(i as u64);
            ids.push(k.peer_id());
            nodes.push(Gossip::new(k, config.clone(), seed.wrapping_add(i as u64)));
        }
        let index = ids.iter().enumerate().map(|(i, p)| (*p, i)).collect();
        Net {
            nodes,
            ids,
            index,
            now: Instant::now(),
            events: vec![Vec::new(); n],
            filter: None,
            trace: Vec::new(),
        }
    }

    /// Connects `a` and `b` both ways.
    pub(crate) fn connect(&mut self, a: usize, b: usize) {
        let (ida, idb) = (self.ids[a], self.ids[b]);
        self.nodes[a].peer_connected(self.now, idb);
        self.nodes[b].peer_connected(self.now, ida);
    }

    /// A ring plus `extra` deterministic chords per node.
    pub(crate) fn connect_ring_and_chords(&mut self, extra: usize) {
        let n = self.nodes.len();
        for i in 0..n {
            self.connect(i, (i + 1) % n);
            for k in 1..=extra {
                let j = (i * 7 + k * 13 + k * k * 5) % n;
                if j != i && (j + 1) % n != i && (i + 1) % n != j {
                    self.connect(i, j);
                }
            }
        }
    }

    /// Delivers frames until nobody has anything to send.
    pub(crate) fn run(&mut self) {
        let mut queue = VecDeque::new();
        let mut delivered = 0usize;
        loop {
            for (from, node) in self.nodes.iter_mut().enumerate() {
                while let Some(t) = node.poll_transmit() {
                    queue.push_back((from, t));
                }
            }
            for (i, node) in self.nodes.iter_mut().enumerate() {
                while let Some(e) = node.poll_event() {
                    self.events[i].push(e);
                }
            }
            let Some((from, t)) = queue.pop_front() else {
                return;
            };
            delivered += 1;
            assert!(delivered < 1_000_000, "the network never went idle");
            let Some(&to) = self.index.get(&t.peer) else {
                continue;
            };
            if let Some(filter) = self.filter.as_mut()
                && filter(from, to, &t)
            {
                continue;
            }
            self.trace.push((from, to, t.frame.clone()));
            // Errors are the receiving core's business (it penalises).
            let _ = self.nodes[to].handle_message(self.now, self.ids[from], &t.frame);
        }
    }

    /// Advances time by `dt`, running every timer that comes due.
    pub(crate) fn advance(&mut self, dt: Duration) {
        let end = self.now + dt;
        loop {
            let next = self
                .nodes
                .iter()
                .filter_map(Gossip::poll_timeout)
                .filter(|t| *t <= end)
                .min();
            let Some(next) = next else { break };
            self.now = self.now.max(next);
            for node in &mut self.nodes {
                if node.poll_timeout().is_some_and(|t| t <= self.now) {
                    node.handle_timeout(self.now);
                }
            }
            self.run();
        }
        self.now = end;
    }

    pub(crate) fn heartbeats(&mut self, n: u32) {
        let interval = self.nodes[0].config().heartbeat_interval;
        self.advance(interval * n);
    }

    /// How many times node `i` reported message `id`.
    pub(crate) fn deliveries(&self, i: usize, id: crate::MessageId) -> usize {
        self.events[i]
            .iter()
            .filter(|e| matches!(e, Event::Message { id: m, .. } if *m == id))
            .count()
    }
}

/// Whether a frame carries full messages.
pub(crate) fn has_messages(t: &Transmit) -> bool {
    protocol::decode_frame(t.frame.clone()).is_ok_and(|rpc| !rpc.messages.is_empty())
}
