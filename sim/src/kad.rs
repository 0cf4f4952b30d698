//! [`KadNode`]: a Kademlia core as a simulated node.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use shoal_identity::{Keypair, PeerId};
use shoal_kad::{Config, Event, Kademlia, QueryId, QueryResult, QueryStats};

use shoal::{BoxError, Core, Now, Remote, Transmit};

use crate::{Clock, NetworkModel, NodeIndex, Simulation, sim_addr};

/// A [`Kademlia`] core, fed every frame as its own handler would be. Of
/// its events it keeps the finished queries (for the test to take) and
/// counts the rest.
pub struct KadNode {
    /// The node's identity (it signs the node's records).
    pub keypair: Keypair,
    /// The core.
    pub core: Kademlia,
    /// Finished queries not yet taken.
    pub finished: BTreeMap<QueryId, (QueryResult, QueryStats)>,
    /// Other events seen.
    pub other_events: u64,
    /// Frames the core rejected (the real handler would close the stream).
    pub rejected: u64,
}

impl KadNode {
    /// A node with a core of `config`, its randomness from `seed`.
    pub fn new(keypair: Keypair, config: Config, seed: u64) -> KadNode {
        KadNode {
            core: Kademlia::new(keypair.peer_id(), config, seed),
            keypair,
            finished: BTreeMap::new(),
            other_events: 0,
            rejected: 0,
        }
    }

    /// Takes the result of query `id` if it has finished.
    pub fn take_finished(&mut self, id: QueryId) -> Option<(QueryResult, QueryStats)> {
        self.finished.remove(&id)
    }

    fn drain_events(&mut self) {
        while let Some(e) = self.core.poll_event() {
            match e {
                Event::QueryFinished { id, result, stats } => {
                    self.finished.insert(id, (result, stats));
                }
                _ => self.other_events += 1,
            }
        }
    }
}

/// A simulated node with a Kademlia core, as [`KadNetworkPlan::build`]
/// makes them.
pub trait KadHost: Core + Sized {
    /// A node for `keypair` whose Kademlia core uses `config` and `seed`.
    fn create(keypair: Keypair, config: &Config, seed: u64) -> Self;
    /// Its Kademlia core.
    fn kademlia(&mut self) -> &mut Kademlia;
    /// Called once, when the node starts.
    fn start(&mut self, _now: Clock) {}
}

impl KadHost for KadNode {
    fn create(keypair: Keypair, config: &Config, seed: u64) -> KadNode {
        KadNode::new(keypair, config.clone(), seed)
    }

    fn kademlia(&mut self) -> &mut Kademlia {
        &mut self.core
    }
}

impl Core for KadNode {
    type Event = ();

    fn handle_message(&mut self, now: Now, from: &Remote, bytes: &[u8]) -> Result<(), BoxError> {
        let result = Core::handle_message(&mut self.core, now, from, bytes);
        if result.is_err() {
            self.rejected += 1;
        }
        self.drain_events();
        result
    }

    fn handle_timeout(&mut self, now: Now) {
        Core::handle_timeout(&mut self.core, now);
        self.drain_events();
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.core.poll_timeout()
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        Core::poll_transmit(&mut self.core)
    }

    fn poll_event(&mut self) -> Option<()> {
        None
    }
}

/// How a simulated Kademlia network comes together.
#[derive(Debug, Clone)]
pub struct KadNetworkPlan {
    /// Nodes, the seed included.
    pub nodes: usize,
    /// Virtual time between two nodes starting to join.
    pub join_interval: Duration,
    /// Virtual time after the last join before the network counts as built.
    pub settle: Duration,
    /// Core configuration of every node.
    pub config: Config,
    /// The network.
    pub model: NetworkModel,
}

impl KadNetworkPlan {
    /// `nodes` nodes with default cores on the default network, one joining
    /// every 20 ms, a minute to settle.
    pub fn new(nodes: usize) -> KadNetworkPlan {
        KadNetworkPlan {
            nodes,
            join_interval: Duration::from_millis(20),
            settle: Duration::from_secs(60),
            config: Config::default(),
            model: NetworkModel::default(),
        }
    }

    /// Builds the network: node 0 starts alone; every other node knows only
    /// node 0 and joins by a bootstrap lookup through it, so routing tables
    /// are filled only by the protocol itself. Deterministic in `seed`
    /// (identities included).
    pub fn build<N: KadHost>(&self, seed: u64) -> Simulation<N> {
        let mut sim: Simulation<N> = Simulation::new(seed, self.model);
        let seed_node = self.add(&mut sim, seed, 0);
        for i in 1..self.nodes {
            self.join(&mut sim, seed, i, seed_node);
            sim.run_for(self.join_interval);
        }
        sim.run_for(self.settle);
        sim
    }

    /// Adds node `i` of the network built from `seed`, which joins by a
    /// bootstrap lookup through the live node `via` (and knows no other).
    pub fn join<N: KadHost>(
        &self,
        sim: &mut Simulation<N>,
        seed: u64,
        i: usize,
        via: NodeIndex,
    ) -> NodeIndex {
        let via_peer = sim.peer_id(via);
        let seeds = [(via_peer, vec![sim_addr(&via_peer)])];
        let node = self.add(sim, seed, i);
        sim.with_node(node, |n, now| {
            // A fresh core with one seed has room for its first query.
            let _ = n.kademlia().bootstrap(now.instant, &seeds);
        });
        node
    }

    /// Adds node `i` of the network built from `seed` and starts it.
    pub fn add<N: KadHost>(&self, sim: &mut Simulation<N>, seed: u64, i: usize) -> NodeIndex {
        let keypair = Keypair::from_secret_bytes(&node_secret(seed, i));
        let peer = keypair.peer_id();
        let node = N::create(keypair, &self.config, seed ^ ((i as u64) << 20));
        let index = sim.add_node(peer, node);
        sim.with_node(index, |n, now| n.start(now));
        index
    }
}

/// The secret key of node `i` of the network built from `seed`.
fn node_secret(seed: u64, i: usize) -> [u8; 32] {
    let mut secret = [0u8; 32];
    secret[..8].copy_from_slice(&seed.to_be_bytes());
    secret[8..16].copy_from_slice(&(i as u64).to_be_bytes());
    secret[16..21].copy_from_slice(b"sim-k");
    secret
}

/// Runs until every query in `pending` (node, query) has finished or
/// `limit` passes; returns the results in the order given (`None` for
/// those that did not finish).
pub fn await_queries(
    sim: &mut Simulation<KadNode>,
    pending: &[(NodeIndex, QueryId)],
    limit: Duration,
) -> Vec<Option<(QueryResult, QueryStats)>> {
    sim.run_until(limit, |s| {
        pending
            .iter()
            .all(|(n, q)| !s.is_alive(*n) || s.node(*n).finished.contains_key(q))
    });
    pending
        .iter()
        .map(|(n, q)| sim.node_mut(*n).take_finished(*q))
        .collect()
}

/// The live node other than `asking` whose key is closest to `key`: the
/// ground truth for the first result of a lookup by `asking` (a lookup
/// returns other nodes, never the one asking).
pub fn closest_live<N: KadHost>(
    sim: &Simulation<N>,
    key: &shoal_kad::Key,
    asking: NodeIndex,
) -> Option<PeerId> {
    sim.alive()
        .filter(|i| *i != asking)
        .map(|i| sim.peer_id(i))
        .min_by_key(|p| shoal_kad::Key::for_peer(p).distance(key))
}

/// What a batch of lookups found.
#[derive(Debug, Clone, Default)]
pub struct LookupReport {
    /// Lookups started.
    pub lookups: usize,
    /// Lookups that found what they were after (the closest live node, or
    /// the record).
    pub successes: usize,
    /// Per finished lookup: the hop count (depth of the closest node, or of
    /// the node that returned the record).
    pub hops: Vec<u32>,
    /// Per finished lookup: requests sent.
    pub requests: Vec<u32>,
}

impl LookupReport {
    /// Share of lookups that succeeded.
    pub fn success_rate(&self) -> f64 {
        self.successes as f64 / self.lookups.max(1) as f64
    }

    /// Mean of `values`.
    pub fn mean(values: &[u32]) -> f64 {
        values.iter().map(|v| f64::from(*v)).sum::<f64>() / values.len().max(1) as f64
    }
}

/// Lookups started together.
const LOOKUP_BATCH: usize = 100;

/// Runs `count` lookups from random live nodes (chosen by `rng`),
/// `LOOKUP_BATCH` at a time. `start` picks the lookup's target and starts
/// it on the asking node; `judge` scores a finished one: `Some(hops)` with
/// whether it succeeded, or `None` if the result has the wrong kind.
fn run_lookups<T: Copy>(
    sim: &mut Simulation<KadNode>,
    rng: &mut ChaCha8Rng,
    count: usize,
    limit: Duration,
    mut start: impl FnMut(&mut KadNode, Clock, &mut ChaCha8Rng) -> Option<(T, QueryId)>,
    judge: impl Fn(&Simulation<KadNode>, NodeIndex, T, &QueryResult, &QueryStats) -> Option<(u32, bool)>,
) -> LookupReport {
    let mut report = LookupReport::default();
    let alive: Vec<NodeIndex> = sim.alive().collect();
    while report.lookups < count {
        let n = LOOKUP_BATCH.min(count - report.lookups);
        let mut batch = Vec::with_capacity(n);
        for _ in 0..n {
            let from = alive[rng.random_range(0..alive.len())];
            if let Some((target, q)) = sim.with_node(from, |node, now| start(node, now, rng)) {
                batch.push(((from, q), target));
            }
            report.lookups += 1;
        }
        let pending: Vec<_> = batch.iter().map(|(p, _)| *p).collect();
        let results = await_queries(sim, &pending, limit);
        for (((from, _), target), result) in batch.iter().zip(results) {
            let Some((result, stats)) = result else {
                continue;
            };
            let Some((hops, success)) = judge(sim, *from, *target, &result, &stats) else {
                continue;
            };
            report.requests.push(stats.requests);
            report.hops.push(hops);
            report.successes += usize::from(success);
        }
    }
    report
}

/// Runs `count` FIND_NODE lookups for random keys from random live nodes
/// (chosen by `rng`); a lookup succeeds if the first node it returns is the
/// closest live node to the key (see [`closest_live`]).
pub fn find_node_lookups(
    sim: &mut Simulation<KadNode>,
    rng: &mut ChaCha8Rng,
    count: usize,
    limit: Duration,
) -> LookupReport {
    run_lookups(
        sim,
        rng,
        count,
        limit,
        |node, now, rng| {
            let key = shoal_kad::Key::from_bytes(rng.random());
            node.core.find_node(now.instant, key).ok().map(|q| (key, q))
        },
        |sim, from, key, result, stats| {
            let QueryResult::FindNode { closest } = result else {
                return None;
            };
            let found = closest.first().map(|c| c.peer) == closest_live(sim, &key, from);
            Some((stats.closest_depth.unwrap_or(0), found))
        },
    )
}

/// Publishes `count` records, each from a random live node, valid for a
/// day; returns the keys of those published, each with its publisher.
pub fn publish_records(
    sim: &mut Simulation<KadNode>,
    rng: &mut ChaCha8Rng,
    count: usize,
    limit: Duration,
) -> Vec<(shoal_kad::Key, NodeIndex)> {
    let alive: Vec<NodeIndex> = sim.alive().collect();
    let mut keys = Vec::with_capacity(count);
    let mut pending = Vec::with_capacity(count);
    for i in 0..count {
        let from = alive[rng.random_range(0..alive.len())];
        let key = shoal_kad::Key::for_name(SIM_RECORD_PURPOSE, &(i as u64).to_be_bytes());
        let started = sim.with_node(from, |node, now| {
            let record = shoal_kad::Record {
                key,
                kind: "sim".into(),
                value: bytes::Bytes::from(format!("record {i}")),
                publisher: node.keypair.peer_id(),
                seq: 1,
                expires: now.unix_secs + 24 * 3600,
            };
            let signed = shoal_kad::SignedRecord::sign(&node.keypair, record).ok()?;
            node.core
                .put_record(now.instant, now.unix_secs, signed)
                .ok()
        });
        if let Some(q) = started {
            pending.push((from, q));
            keys.push((key, from));
        }
    }
    await_queries(sim, &pending, limit);
    keys
}

/// Purpose of the names behind the simulator's test records.
pub const SIM_RECORD_PURPOSE: shoal_identity::Purpose =
    shoal_identity::Purpose::new("shoal/sim/record/1");

/// Runs `count` FIND_VALUE lookups of random `keys` from random live nodes;
/// a lookup succeeds if it returns the record.
pub fn find_value_lookups(
    sim: &mut Simulation<KadNode>,
    rng: &mut ChaCha8Rng,
    keys: &[shoal_kad::Key],
    count: usize,
    limit: Duration,
) -> LookupReport {
    run_lookups(
        sim,
        rng,
        count,
        limit,
        |node, now, rng| {
            let key = keys[rng.random_range(0..keys.len())];
            node.core
                .get_record(now.instant, now.unix_secs, key)
                .ok()
                .map(|q| (key, q))
        },
        |_, _, key, result, stats| {
            let QueryResult::GetRecord { record, .. } = result else {
                return None;
            };
            let found = record.as_ref().is_some_and(|r| r.record().key == key);
            Some((stats.record_depth.unwrap_or(0), found))
        },
    )
}
