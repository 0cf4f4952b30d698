//! Re-replication: a record outlives its publisher and every node that
//! held it, as long as holders leave slower than the replication interval.

use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use shoal_kad::Key;
use shoal_sim::{
    NodeIndex, Simulation,
    kad::{KadNetworkPlan, KadNode, find_value_lookups, publish_records},
};

const NODES: usize = 300;
const LIMIT: Duration = Duration::from_secs(300);

/// Live nodes holding a copy of the record at `key`.
fn holders(sim: &Simulation<KadNode>, key: &Key) -> usize {
    let now = sim.clock().unix_secs;
    sim.alive()
        .filter(|n| sim.node(*n).core.record_store().get(key, now).is_some())
        .count()
}

#[test]
fn record_survives_its_publisher_and_all_original_holders() {
    let plan = KadNetworkPlan::new(NODES);
    let k = plan.config.k;
    let interval = plan.config.replication_interval;
    let mut sim = plan.build::<KadNode>(31);
    let mut rng = ChaCha8Rng::seed_from_u64(32);
    let [(key, publisher)] = publish_records(&mut sim, &mut rng, 1, LIMIT)[..] else {
        panic!("the record was not published");
    };
    // The record's k closest nodes, closest first: where it was stored.
    let now = sim.clock().unix_secs;
    let mut original: Vec<NodeIndex> = sim.alive().filter(|n| *n != publisher).collect();
    original.sort_by_key(|n| Key::for_peer(&sim.peer_id(*n)).distance(&key));
    original.truncate(k);
    let stored = original
        .iter()
        .filter(|n| sim.node(**n).core.record_store().get(&key, now).is_some())
        .count();
    assert!(stored >= k - 2, "{stored} of the {k} closest hold it");

    // The publisher leaves for good: no more republishing.
    sim.crash(publisher);
    let mut next = NODES;
    // The k closest leave one by one, without warning, closest first; new
    // nodes join; the next departure comes more than a replication
    // interval later.
    for leaving in &original {
        sim.crash(*leaving);
        for _ in 0..3 {
            let via = sim.alive().next().expect("live nodes remain");
            plan.join(&mut sim, 31, next, via);
            next += 1;
        }
        sim.run_for(interval + Duration::from_secs(120));
    }
    assert!(original.iter().all(|n| !sim.is_alive(*n)));
    eprintln!(
        "all {k} original closest nodes gone, {} nodes joined, {} live nodes hold the record",
        next - NODES,
        holders(&sim, &key)
    );

    let found = find_value_lookups(&mut sim, &mut rng, &[key], 50, LIMIT);
    assert_eq!(found.success_rate(), 1.0, "{found:?}");
}
