//! Lookups, records and upkeep across a few dozen cores wired by hand.

#![allow(clippy::unwrap_used)]

mod common;

use std::{collections::BTreeSet, time::Duration};

use bytes::Bytes;
use common::{Net, random_key};
use shoal_kad::{
    Config, Event, Key, QueryResult, Record, SignedRecord,
    protocol::{Body, Message},
};

fn record(net: &Net, publisher: usize, key: Key, seq: u64, ttl: u64) -> SignedRecord {
    let keypair = &net.nodes[publisher].keypair;
    let record = Record {
        key,
        kind: "test".into(),
        value: Bytes::from(format!("value {seq}")),
        publisher: keypair.peer_id(),
        seq,
        expires: net.unix() + ttl,
    };
    SignedRecord::sign(keypair, record).unwrap()
}

#[test]
fn lookups_find_the_closest_node() {
    let mut net = Net::joined(40, Config::default());
    for q in 0..20u64 {
        let from = (q as usize * 7) % 40;
        let key = random_key(q);
        let id = net.nodes[from].core.find_node(net.now, key).unwrap();
        let (result, stats) = net.run_until_finished(from, id);
        let QueryResult::FindNode { closest } = result else {
            panic!("wrong result {result:?}");
        };
        // The querying node itself is never in its own result.
        let expected = {
            let me = net.peer(from);
            let mut all: Vec<_> = net.index.keys().filter(|p| **p != me).copied().collect();
            all.sort_by_key(|p| Key::for_peer(p).distance(&key));
            all
        };
        assert_eq!(closest[0].peer, expected[0], "query {q}");
        assert_eq!(closest.len(), 20);
        assert!(stats.requests >= stats.responses && stats.responses >= 20);
        assert!(stats.closest_depth.is_some());
        assert!(stats.max_depth >= stats.closest_depth.unwrap());
        assert!(!stats.timed_out);
    }
}

#[test]
fn disjoint_paths_ask_each_node_once() {
    let mut net = Net::joined(40, Config::default());
    net.run_for(Duration::from_secs(60));
    net.keep_log = true;
    net.log.clear();
    let id = net.nodes[5]
        .core
        .find_node(net.now, random_key(99))
        .unwrap();
    let (_, stats) = net.run_until_finished(5, id);
    let mut asked = BTreeSet::new();
    let mut requests = 0;
    for (from, to, bytes) in &net.log {
        if *from != 5 {
            continue;
        }
        if let Ok(Message {
            body: Body::FindNode(_),
            ..
        }) = Message::decode(bytes)
        {
            requests += 1;
            assert!(asked.insert(*to), "node {to} asked twice");
        }
    }
    assert_eq!(requests, stats.requests);
    assert!(requests as usize > 20, "three paths ask more than k nodes");
}

#[test]
fn lookups_survive_crashed_nodes() {
    let mut net = Net::joined(40, Config::default());
    for i in (3..40).step_by(5) {
        net.down.insert(i);
    }
    let mut ok = 0;
    for q in 0..15u64 {
        let from = [0, 1, 2, 4, 6][q as usize % 5];
        let key = random_key(1000 + q);
        let id = net.nodes[from].core.find_node(net.now, key).unwrap();
        let (result, stats) = net.run_until_finished(from, id);
        let QueryResult::FindNode { closest } = result else {
            panic!("wrong result");
        };
        let live_closest = {
            let me = net.peer(from);
            net.index
                .iter()
                .filter(|(p, i)| **p != me && !net.down.contains(i))
                .map(|(p, _)| *p)
                .min_by_key(|p| Key::for_peer(p).distance(&key))
                .unwrap()
        };
        if closest.first().map(|c| c.peer) == Some(live_closest) {
            ok += 1;
        }
        assert!(
            closest
                .iter()
                .all(|c| !net.down.contains(&net.index[&c.peer]))
        );
        let _ = stats;
    }
    assert_eq!(ok, 15);
}

#[test]
fn records_are_stored_and_found() {
    let mut net = Net::joined(30, Config::default());
    let key = random_key(7);
    let r = record(&net, 3, key, 1, 3600);
    let id = net.put(3, r.clone());
    let (result, stats) = net.run_until_finished(3, id);
    let QueryResult::PutRecord { stored, failed, .. } = result else {
        panic!("wrong result");
    };
    assert_eq!((stored, failed), (20, 0));
    assert_eq!(stats.stores, 20);
    for from in [0, 11, 29] {
        let id = net.get(from, key);
        let (result, stats) = net.run_until_finished(from, id);
        let QueryResult::GetRecord {
            record: Some(got),
            found,
        } = result
        else {
            panic!("record not found from {from}: {result:?}");
        };
        assert_eq!(got, r);
        assert!(found >= 1);
        assert!(stats.record_depth.is_some());
    }
    // A newer version replaces it everywhere it is asked for.
    let newer = record(&net, 3, key, 2, 3600);
    let id = net.put(3, newer.clone());
    net.run_until_finished(3, id);
    let id = net.get(20, key);
    let (result, _) = net.run_until_finished(20, id);
    assert!(matches!(result, QueryResult::GetRecord { record: Some(ref g), .. } if *g == newer));
    // An older one is refused by the holders and never returned.
    let older = record(&net, 3, key, 1, 3600);
    let id = net.put(3, older);
    let (result, _) = net.run_until_finished(3, id);
    assert!(matches!(result, QueryResult::PutRecord { .. }));
    let id = net.get(21, key);
    let (result, _) = net.run_until_finished(21, id);
    assert!(matches!(result, QueryResult::GetRecord { record: Some(ref g), .. } if *g == newer));
}

#[test]
fn expired_records_are_never_returned() {
    let mut net = Net::joined(20, Config::default());
    let key = random_key(8);
    let r = record(&net, 2, key, 1, 100);
    let id = net.put(2, r);
    net.run_until_finished(2, id);
    net.run_for(Duration::from_secs(101));
    let id = net.get(9, key);
    let (result, _) = net.run_until_finished(9, id);
    assert!(
        matches!(
            result,
            QueryResult::GetRecord {
                record: None,
                found: 0
            }
        ),
        "{result:?}"
    );
}

#[test]
fn records_follow_new_closer_nodes() {
    // Publisher gone, no republish: holders leave one by one, spaced wider
    // than the replication interval, while new nodes join.
    let config = Config {
        replication_interval: Duration::from_secs(60),
        republish_interval: Duration::from_secs(1_000_000),
        ..Config::default()
    };
    let mut net = Net::joined(30, config.clone());
    let key = random_key(42);
    let r = record(&net, 1, key, 1, 48 * 3600 - 600);
    let id = net.put(1, r.clone());
    net.run_until_finished(1, id);
    net.down.insert(1);
    for next_seed in 1000..1025 {
        // The closest live holder leaves.
        let holder = (0..net.nodes.len())
            .filter(|i| !net.down.contains(i))
            .filter(|i| {
                net.nodes[*i]
                    .core
                    .record_store()
                    .get(&key, net.unix())
                    .is_some()
            })
            .min_by_key(|i| Key::for_peer(&net.peer(*i)).distance(&key))
            .unwrap();
        net.down.insert(holder);
        // A new node joins through a live one.
        let n = net.add(next_seed, config.clone());
        let via = (0..n).find(|i| !net.down.contains(i)).unwrap();
        net.join(n, via);
        net.run_for(Duration::from_secs(150));
    }
    let asker = (0..net.nodes.len())
        .find(|i| !net.down.contains(i))
        .unwrap();
    let id = net.get(asker, key);
    let (result, _) = net.run_until_finished(asker, id);
    assert!(
        matches!(result, QueryResult::GetRecord { record: Some(ref g), .. } if *g == r),
        "{result:?}"
    );
}

#[test]
fn same_seed_same_run() {
    fn run() -> Vec<(usize, usize, Vec<u8>)> {
        let mut net = Net::new();
        for s in 0..15 {
            net.add(s + 1, Config::default());
        }
        net.keep_log = true;
        for i in 1..15 {
            net.join(i, 0);
        }
        let id = net.nodes[3].core.find_node(net.now, random_key(5)).unwrap();
        net.run_until_finished(3, id);
        net.run_for(Duration::from_secs(3600));
        net.log
    }
    let (a, b) = (run(), run());
    assert!(a.len() > 100);
    assert!(a == b, "runs differ");
}

#[test]
fn routing_events_are_reported() {
    let mut net = Net::joined(5, Config::default());
    let events = &net.nodes[0].events;
    let inserted = events
        .iter()
        .filter(|e| matches!(e, Event::RoutingUpdated { .. }))
        .count();
    assert_eq!(inserted, 4);
    net.run_for(Duration::from_secs(1));
}

#[test]
fn a_client_looks_up_but_is_never_a_contact() {
    let mut net = Net::joined(30, Config::default());
    let client = net.add(
        1_000,
        Config {
            client: true,
            ..Config::default()
        },
    );
    net.join(client, 0);
    for q in 0..10u64 {
        let key = random_key(500 + q);
        let id = net.nodes[client].core.find_node(net.now, key).unwrap();
        let (result, _) = net.run_until_finished(client, id);
        let QueryResult::FindNode { closest } = result else {
            panic!("wrong result {result:?}");
        };
        let servers_closest = {
            let me = net.peer(client);
            let mut all: Vec<_> = net.index.keys().filter(|p| **p != me).copied().collect();
            all.sort_by_key(|p| Key::for_peer(p).distance(&key));
            all[0]
        };
        assert_eq!(closest[0].peer, servers_closest, "query {q}");
    }
    net.run_for(Duration::from_secs(120));
    let me = net.peer(client);
    for (i, n) in net.nodes.iter().enumerate() {
        if i != client {
            assert!(
                !n.core.routing_table().contains(&me),
                "node {i} added the client"
            );
        }
    }
    // The control: a server that joins the same way is added.
    let server = net.add(1_001, Config::default());
    net.join(server, 0);
    let them = net.peer(server);
    assert!(
        net.nodes
            .iter()
            .enumerate()
            .any(|(i, n)| i != server && n.core.routing_table().contains(&them))
    );
}

/// A client can reach a server's table another way (the server dialled it
/// for another protocol and told the core): its first message, which says
/// it is a client, takes it out, and a lookup that asks it never returns it.
#[test]
fn a_client_in_a_table_leaves_it_and_is_never_a_result() {
    let mut net = Net::joined(20, Config::default());
    let client = net.add(
        2_000,
        Config {
            client: true,
            ..Config::default()
        },
    );
    let (me, my_addrs) = net.seed_of(client);
    // Every server believes it is a contact.
    for i in 0..20 {
        let now = net.now;
        net.nodes[i].core.add_address(now, me, my_addrs.clone());
    }
    assert!(net.nodes[0].core.routing_table().contains(&me));
    // Lookups by servers ask it, among others: it answers as a client.
    for q in 0..5u64 {
        let id = net.nodes[q as usize]
            .core
            .find_node(net.now, Key::for_peer(&me))
            .unwrap();
        let (result, _) = net.run_until_finished(q as usize, id);
        let QueryResult::FindNode { closest } = result else {
            panic!("wrong result {result:?}");
        };
        assert!(
            closest.iter().all(|c| c.peer != me),
            "query {q} returned the client"
        );
    }
    // Its own lookups tell the servers it asks what it is.
    net.join(client, 0);
    net.run_for(Duration::from_secs(60));
    for q in 0..5 {
        assert!(
            !net.nodes[q].core.routing_table().contains(&me),
            "node {q} kept the client"
        );
    }
}

/// Sends `record` to node `to` as a STORE from node `from`; its answer.
fn store_at(
    net: &mut Net,
    from: usize,
    to: usize,
    record: SignedRecord,
) -> shoal_kad::protocol::StoreStatus {
    let (now, unix) = (net.now, net.unix());
    let (peer, addrs) = net.seed_of(from);
    let frame = Message {
        request_id: 77,
        body: Body::Store(record),
    }
    .encode();
    net.nodes[to]
        .core
        .handle_message(now, unix, peer, &addrs, &frame)
        .unwrap();
    let mut status = None;
    while let Some(t) = net.nodes[to].core.poll_transmit() {
        if let Ok(Message {
            request_id: 77,
            body: Body::StoreAck(s),
        }) = Message::decode(&t.bytes)
        {
            status = Some(s);
        }
    }
    status.expect("no answer to the STORE")
}

#[test]
fn a_store_far_from_the_node_or_over_the_peers_rate_is_refused() {
    use shoal_kad::protocol::StoreStatus;
    let mut net = Net::joined(80, Config::default());
    net.run_for(Duration::from_secs(60));
    let key = random_key(4242);
    let mut by_distance: Vec<usize> = (0..80).collect();
    by_distance.sort_by_key(|i| Key::for_peer(&net.peer(*i)).distance(&key));
    let (near, far) = (by_distance[0], by_distance[79]);
    let publisher = by_distance[40];
    let r = record(&net, publisher, key, 1, 600);
    assert_eq!(
        store_at(&mut net, publisher, far, r.clone()),
        StoreStatus::Rejected
    );
    assert_eq!(store_at(&mut net, publisher, near, r), StoreStatus::Stored);
    assert_eq!(net.nodes[far].core.record_store().len(), 0);

    // A publish still reaches the k closest.
    let key = random_key(4343);
    let r = record(&net, 3, key, 1, 600);
    let id = net.put(3, r);
    let (result, _) = net.run_until_finished(3, id);
    let QueryResult::PutRecord { stored, .. } = result else {
        panic!("wrong result {result:?}");
    };
    assert!(stored >= 15, "stored on {stored}");

    // One peer's rate: 120 a minute here, then refused; another peer is
    // not.
    let config = Config {
        max_stores_per_peer: 120,
        ..Config::default()
    };
    let mut small = Net::joined(10, config);
    small.run_for(Duration::from_secs(10));
    let mut accepted = 0;
    for n in 0..130u64 {
        let publisher = (n % 9) as usize + 1;
        let r = record(&small, publisher, random_key(10_000 + n), 1, 600);
        if store_at(&mut small, 1, 0, r) == StoreStatus::Stored {
            accepted += 1;
        }
    }
    assert_eq!(accepted, 120);
    let r = record(&small, 2, random_key(99_999), 1, 600);
    assert_eq!(store_at(&mut small, 2, 0, r), StoreStatus::Stored);
}

/// A server that learns it cannot be dialled becomes a client: at its
/// next messages the others drop it, and lookups stop naming it; back to
/// server, it is added again.
#[test]
fn a_node_that_turns_client_leaves_the_tables_and_can_come_back() {
    let mut net = Net::joined(20, Config::default());
    let node = 7;
    let me = net.peer(node);
    let holders = |net: &Net| {
        net.nodes
            .iter()
            .enumerate()
            .filter(|(i, n)| *i != node && n.core.routing_table().contains(&me))
            .count()
    };
    assert!(holders(&net) > 0, "a server is someone's contact");
    net.nodes[node].core.set_client(true);
    // Its lookups reach most of the network.
    for q in 0..6u64 {
        let id = net.nodes[node]
            .core
            .find_node(net.now, random_key(900 + q))
            .unwrap();
        net.run_until_finished(node, id);
    }
    assert_eq!(holders(&net), 0, "every node it spoke to dropped it");
    net.nodes[node].core.set_client(false);
    for q in 0..3u64 {
        let id = net.nodes[node]
            .core
            .find_node(net.now, random_key(950 + q))
            .unwrap();
        net.run_until_finished(node, id);
    }
    assert!(holders(&net) > 0, "a server again");
}
