//! A larger network: run with `cargo test -p shoal-kad --test scale -- --ignored --nocapture`.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Instant;

use common::{Net, random_key};
use shoal_kad::{Config, Key, QueryResult};

#[test]
#[ignore = "takes a while; prints hop and message counts"]
fn thousand_nodes() {
    let n = 1000;
    let started = Instant::now();
    let net_start = Instant::now();
    let mut net = Net::new();
    for s in 0..n {
        net.add(s as u64 + 1, Config::default());
    }
    for i in 1..n {
        net.join(i, (i * 7919) % i);
    }
    println!("joined {n} nodes in {:?}", net_start.elapsed());
    let lookups = 200u64;
    let (mut found, mut requests, mut depth) = (0, 0u64, 0u64);
    for q in 0..lookups {
        let from = (q as usize * 37) % n;
        let key = random_key(q);
        let id = net.nodes[from].core.find_node(net.now, key).unwrap();
        let (result, stats) = net.run_until_finished(from, id);
        let QueryResult::FindNode { closest } = result else {
            panic!()
        };
        let me = net.peer(from);
        let best = net
            .index
            .keys()
            .filter(|p| **p != me)
            .min_by_key(|p| Key::for_peer(p).distance(&key))
            .unwrap();
        if closest.first().map(|c| c.peer) == Some(*best) {
            found += 1;
        }
        requests += u64::from(stats.requests);
        depth += u64::from(stats.closest_depth.unwrap_or(0));
    }
    println!(
        "{found}/{lookups} found; {:.1} requests and closest depth {:.2} per lookup; total {:?}",
        requests as f64 / lookups as f64,
        depth as f64 / lookups as f64,
        started.elapsed()
    );
    assert!(found * 100 >= lookups * 99);
}
