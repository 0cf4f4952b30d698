//! Kademlia lookups in a simulated network of 5,000 nodes that joined
//! through one seed: healthy, with 5% of messages lost, and with 20% of the
//! nodes crashed without warning. Deterministic: fixed seeds. The lossy
//! network is a test of its own, on a network built alike, so the two run
//! side by side.

use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use shoal_kad::Key;
use shoal_sim::{
    NetworkModel, NodeIndex, Simulation,
    kad::{KadNetworkPlan, KadNode, find_node_lookups, find_value_lookups, publish_records},
};

const NODES: usize = 5_000;
const LOOKUPS: usize = 1_000;
const RECORDS: usize = 200;
/// Virtual time one batch of lookups may take.
const LIMIT: Duration = Duration::from_secs(300);

/// The network every test starts from, and the records published in it.
fn network() -> (Simulation<KadNode>, ChaCha8Rng, Vec<Key>) {
    let started = std::time::Instant::now();
    let plan = KadNetworkPlan::new(NODES);
    let mut sim = plan.build::<KadNode>(11);
    eprintln!(
        "built {NODES} nodes in {:?}: {:?}",
        started.elapsed(),
        sim.stats()
    );
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let keys: Vec<_> = publish_records(&mut sim, &mut rng, RECORDS, LIMIT)
        .into_iter()
        .map(|(key, _)| key)
        .collect();
    assert_eq!(keys.len(), RECORDS);
    (sim, rng, keys)
}

#[test]
fn lookups_find_the_closest_node_and_stored_records() {
    let (mut sim, mut rng, keys) = network();
    let healthy = find_node_lookups(&mut sim, &mut rng, LOOKUPS, LIMIT);
    let values = find_value_lookups(&mut sim, &mut rng, &keys, LOOKUPS, LIMIT);
    eprintln!(
        "healthy: find_node {:.3} find_value {:.3}",
        healthy.success_rate(),
        values.success_rate(),
    );
    assert!(healthy.success_rate() >= 0.99, "{}", healthy.success_rate());
    assert!(values.success_rate() >= 0.99, "{}", values.success_rate());

    // 20% crash at once, without warning; node 0 (the seed) among them.
    let mut crashed = 0;
    for i in (0..NODES).step_by(5) {
        sim.crash(NodeIndex(i));
        crashed += 1;
    }
    assert_eq!(crashed, NODES / 5);
    let churned = find_node_lookups(&mut sim, &mut rng, LOOKUPS, LIMIT);
    let churned_values = find_value_lookups(&mut sim, &mut rng, &keys, LOOKUPS, LIMIT);
    eprintln!(
        "20% crashed: find_node {:.3} find_value {:.3}",
        churned.success_rate(),
        churned_values.success_rate(),
    );
    assert!(churned.success_rate() >= 0.98, "{}", churned.success_rate());
    assert!(
        churned_values.success_rate() >= 0.98,
        "{}",
        churned_values.success_rate()
    );
}

#[test]
fn lookups_succeed_with_five_percent_of_messages_lost() {
    let (mut sim, mut rng, keys) = network();
    sim.set_network(NetworkModel::default().with_loss(0.05));
    let lossy = find_node_lookups(&mut sim, &mut rng, LOOKUPS, LIMIT);
    let lossy_values = find_value_lookups(&mut sim, &mut rng, &keys, LOOKUPS, LIMIT);
    eprintln!(
        "5% loss: find_node {:.3} find_value {:.3}",
        lossy.success_rate(),
        lossy_values.success_rate(),
    );
    assert!(lossy.success_rate() >= 0.98, "{}", lossy.success_rate());
    assert!(
        lossy_values.success_rate() >= 0.98,
        "{}",
        lossy_values.success_rate()
    );
}
