//! A network of honest cores: mesh formation, delivery, lazy recovery,
//! determinism.

use std::collections::BTreeSet;

use super::*;
use crate::{PublishError, Topic};

const N: usize = 30;

fn subscribed_net(config: Config, seed: u64) -> (Net, Topic) {
    let mut net = Net::new(N, config, seed);
    let t = topic("news");
    for node in &mut net.nodes {
        node.subscribe(t.clone()).unwrap();
    }
    net.connect_ring_and_chords(4);
    net.run();
    (net, t)
}

#[test]
fn mesh_forms_within_bounds_and_is_symmetric() {
    let (mut net, t) = subscribed_net(Config::default(), 1);
    net.heartbeats(5);
    let config = Config::default();
    for (i, node) in net.nodes.iter().enumerate() {
        let mesh: BTreeSet<PeerId> = node.mesh_peers(&t).copied().collect();
        let available = node.topic_peers(&t).count();
        assert!(
            mesh.len() <= config.mesh_n_high,
            "node {i}: mesh of {} peers",
            mesh.len()
        );
        assert!(
            mesh.len() >= config.mesh_n_low.min(available),
            "node {i}: mesh of {} with {available} topic peers",
            mesh.len()
        );
        for peer in &mesh {
            let j = net.ids.iter().position(|p| p == peer).unwrap();
            assert!(
                net.nodes[j].mesh_peers(&t).any(|p| *p == net.ids[i]),
                "mesh link {i} -> {j} is one-sided"
            );
        }
    }
}

#[test]
fn mesh_above_high_is_pruned_to_target() {
    let config = Config::default();
    let mut net = Net::new(20, config.clone(), 3);
    let t = topic("t");
    for node in &mut net.nodes {
        node.subscribe(t.clone()).unwrap();
    }
    for i in 1..20 {
        net.connect(0, i);
    }
    net.run();
    // Everyone grafts node 0 (their only peer).
    net.heartbeats(1);
    net.heartbeats(2);
    let size = net.nodes[0].mesh_peers(&t).count();
    assert!(
        (config.mesh_n_low..=config.mesh_n_high).contains(&size),
        "hub mesh of {size}"
    );
}

fn publish_reaches_everyone_once(flood_publish: bool) {
    let config = Config {
        flood_publish,
        ..Config::default()
    };
    let (mut net, t) = subscribed_net(config, 2);
    net.heartbeats(3);
    let mut ids = Vec::new();
    for (k, publisher) in [0usize, 7, 29].into_iter().enumerate() {
        let now = net.now;
        let payload = format!("message {k}");
        let id = net.nodes[publisher]
            .publish(now, t.clone(), payload.into_bytes())
            .unwrap()
            .id;
        net.run();
        ids.push((publisher, id));
    }
    for (publisher, id) in ids {
        for i in 0..N {
            let expected = usize::from(i != publisher);
            assert_eq!(net.deliveries(i, id), expected, "node {i}, message {id:?}");
        }
    }
    // Later heartbeats gossip about the messages but never re-deliver.
    net.heartbeats(5);
    let delivered: usize = net
        .events
        .iter()
        .flatten()
        .filter(|e| matches!(e, Event::Message { .. }))
        .count();
    assert_eq!(delivered, 3 * (N - 1));
}

#[test]
fn a_published_message_reaches_every_subscriber_exactly_once() {
    publish_reaches_everyone_once(true);
}

#[test]
fn mesh_only_publish_also_reaches_everyone() {
    publish_reaches_everyone_once(false);
}

#[test]
fn delivery_reports_author_topic_payload_and_a_neighbour_as_source() {
    let (mut net, t) = subscribed_net(Config::default(), 4);
    net.heartbeats(3);
    let now = net.now;
    let id = net.nodes[5].publish(now, t.clone(), &b"hi"[..]).unwrap().id;
    net.run();
    for i in (0..N).filter(|&i| i != 5) {
        let event = net.events[i]
            .iter()
            .find(|e| matches!(e, Event::Message { .. }))
            .unwrap();
        let Event::Message {
            id: got,
            topic: tp,
            author,
            payload,
            propagation_source,
            ..
        } = event
        else {
            unreachable!()
        };
        assert_eq!((*got, tp, *author), (id, &t, net.ids[5]));
        assert_eq!(&payload[..], b"hi");
        assert!(net.nodes[i].peers().any(|p| p == propagation_source));
    }
}

#[test]
fn ihave_iwant_recovers_a_message_a_node_missed() {
    let (mut net, t) = subscribed_net(Config::default(), 5);
    net.heartbeats(3);
    // Node 10 loses every full message while the message spreads.
    net.filter = Some(Box::new(|_, to, t| to == 10 && has_messages(t)));
    let now = net.now;
    let id = net.nodes[0]
        .publish(now, t.clone(), &b"late"[..])
        .unwrap()
        .id;
    net.run();
    assert_eq!(net.deliveries(10, id), 0);
    assert_eq!(net.deliveries(20, id), 1);
    net.filter = None;
    net.heartbeats(3);
    assert_eq!(net.deliveries(10, id), 1, "recovered through IHAVE/IWANT");
    assert!(net.nodes[10].stats().iwant_requested >= 1);
}

#[test]
fn publishing_without_peers_fails_and_too_large_payloads_are_refused() {
    let mut g = Gossip::new(key(1), Config::default(), 0);
    let now = Instant::now();
    assert_eq!(
        g.publish(now, topic("t"), &b"x"[..]),
        Err(PublishError::NoPeers)
    );
    let big = vec![0u8; Config::default().max_payload_size + 1];
    assert!(matches!(
        g.publish(now, topic("t"), big),
        Err(PublishError::TooLarge { .. })
    ));
}

#[test]
fn unsubscribe_prunes_the_mesh_and_stops_delivery() {
    let (mut net, t) = subscribed_net(Config::default(), 6);
    net.heartbeats(3);
    assert!(net.nodes[3].unsubscribe(&t));
    net.run();
    let id3 = net.ids[3];
    for node in &net.nodes {
        assert!(!node.mesh_peers(&t).any(|p| *p == id3));
        assert!(!node.topic_peers(&t).any(|p| *p == id3));
    }
    net.heartbeats(3);
    let now = net.now;
    let id = net.nodes[0].publish(now, t.clone(), &b"x"[..]).unwrap().id;
    net.run();
    net.heartbeats(3);
    assert_eq!(net.deliveries(3, id), 0);
    assert_eq!(net.deliveries(4, id), 1);
}

#[test]
fn same_seed_same_run() {
    let run = |seed| {
        let (mut net, t) = subscribed_net(Config::default(), seed);
        net.heartbeats(3);
        let now = net.now;
        net.nodes[1].publish(now, t.clone(), &b"d"[..]).unwrap();
        net.run();
        net.heartbeats(4);
        net.trace
            .iter()
            .map(|(a, b, f)| (*a, *b, f.clone()))
            .collect::<Vec<_>>()
    };
    let first = run(11);
    assert!(!first.is_empty());
    assert_eq!(first, run(11));
    assert_ne!(first, run(12));
}

#[test]
fn a_thousand_nodes_deliver_everything_once() {
    let mut net = Net::new(1000, Config::default(), 77);
    let t = topic("big");
    for node in &mut net.nodes {
        node.subscribe(t.clone()).unwrap();
    }
    net.connect_ring_and_chords(5);
    net.run();
    net.heartbeats(3);
    let start = std::time::Instant::now();
    let mut ids = Vec::new();
    for publisher in [0usize, 333, 999] {
        let now = net.now;
        ids.push(
            net.nodes[publisher]
                .publish(now, t.clone(), &b"x"[..])
                .unwrap()
                .id,
        );
        net.run();
    }
    net.heartbeats(2);
    for id in ids {
        let reached = (0..1000).filter(|&i| net.deliveries(i, id) == 1).count();
        assert_eq!(reached, 999);
    }
    let dups: u64 = net.nodes.iter().map(|n| n.stats().duplicates).sum();
    eprintln!(
        "3 messages to 1000 nodes: {:?}, {dups} duplicates",
        start.elapsed()
    );
}

#[test]
fn a_publish_burst_is_throttled_not_penalised_and_still_delivered() {
    let config = Config {
        max_messages_per_heartbeat: 20,
        flood_publish: false,
        ..Config::default()
    };
    let mut net = Net::new(12, config, 8);
    let t = topic("burst");
    for node in &mut net.nodes {
        node.subscribe(t.clone()).unwrap();
    }
    net.connect_ring_and_chords(3);
    net.run();
    net.heartbeats(3);
    let mut published = Vec::new();
    let mut throttled = 0;
    for k in 0..40u32 {
        let now = net.now;
        match net.nodes[0].publish(now, t.clone(), k.to_be_bytes().to_vec()) {
            Ok(p) => published.push(p.id),
            Err(PublishError::Throttled) => throttled += 1,
            Err(e) => panic!("{e}"),
        }
        net.run();
    }
    assert_eq!(published.len(), 10, "half the budget per heartbeat");
    assert_eq!(throttled, 30);
    net.heartbeats(5);
    for id in published {
        for i in 1..12 {
            assert_eq!(net.deliveries(i, id), 1, "node {i}");
        }
    }
    for node in &net.nodes {
        for peer in node.peers() {
            assert_eq!(node.penalty(peer), Some(0));
        }
    }
}
