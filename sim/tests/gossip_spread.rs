//! Gossip in a simulated network of 1,000 nodes that found each other
//! through Kademlia: every subscriber gets every message exactly once, and
//! 95% of them within log2(N) hops. Deterministic: fixed seeds.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shoal_gossip::Topic;
use shoal_sim::{
    NodeIndex,
    gossip::{GossipNode, spread_of},
    kad::KadNetworkPlan,
};

const NODES: usize = 1_000;
const MESSAGES: usize = 5;

#[test]
fn every_subscriber_gets_every_message_once_within_log_n_hops() {
    let plan = KadNetworkPlan::new(NODES);
    let mut sim = plan.build::<GossipNode>(21);
    let topic = Topic::new("sim/news").unwrap();
    let nodes: Vec<NodeIndex> = sim.alive().collect();
    for n in &nodes {
        sim.with_node(*n, |node, _| node.gossip.subscribe(topic.clone()).unwrap());
    }
    // Subscriptions spread and meshes form over a few heartbeats.
    sim.run_for(Duration::from_secs(10));
    let mean_connections = nodes
        .iter()
        .map(|n| sim.node(*n).connections().len())
        .sum::<usize>() as f64
        / NODES as f64;
    assert!(mean_connections >= 8.0, "{mean_connections}");

    let mut rng = ChaCha8Rng::seed_from_u64(22);
    let log2_n = (NODES as f64).log2();
    for m in 0..MESSAGES {
        let author = nodes[rng.random_range(0..NODES)];
        let published = sim.clock().instant;
        let id = sim
            .with_node(author, |node, now| {
                node.gossip.publish(
                    now.instant,
                    topic.clone(),
                    format!("message {m}").into_bytes(),
                )
            })
            .unwrap()
            .id;
        sim.run_for(Duration::from_secs(20));
        let spread = spread_of(&sim, author, id, published);
        assert_eq!(spread.reached, NODES - 1, "message {m} reached everyone");
        assert_eq!(spread.delivered_twice, 0);
        let mut hops = spread.hops.clone();
        hops.sort_unstable();
        let p95 = hops[hops.len() * 95 / 100];
        eprintln!(
            "message {m}: p95 hops {p95}, max {}, full delivery {:?}",
            hops[hops.len() - 1],
            spread.full_delivery
        );
        assert!(f64::from(p95) <= log2_n, "p95 {p95} > log2 N {log2_n:.2}");
    }
    for n in &nodes {
        assert_eq!(sim.node(*n).rejected, 0, "honest nodes never reject frames");
    }
}
