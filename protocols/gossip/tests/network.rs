//! Gossip on real services: 50 nodes over the in-memory transport and 10
//! over TCP loopback deliver every topic message to every subscriber.
#![allow(clippy::unwrap_used)]

use std::{collections::BTreeSet, time::Duration};

use shoal::{DialOptions, Multiaddr, ProtocolId, ServiceBuilder, ServiceControl};
use shoal_gossip::{Config, Event, Handle, MessageId, Topic};
use shoal_identity::Keypair;
use shoal_transport::{MemoryNetwork, MemoryTransport};
use tokio::sync::mpsc;

const GOSSIP: ProtocolId = ProtocolId(1);
/// Upper bound for each phase.
const PHASE: Duration = Duration::from_secs(30);

struct Node {
    control: ServiceControl,
    handle: Handle,
    events: mpsc::Receiver<Event>,
}

/// Fast heartbeats; publishing through the mesh only, so delivery depends
/// on mesh forwarding and IHAVE/IWANT rather than the first hop.
fn config() -> Config {
    Config {
        heartbeat_interval: Duration::from_millis(100),
        flood_publish: false,
        ..Config::default()
    }
}

async fn spawn(memory: Option<&MemoryNetwork>) -> Node {
    let key = Keypair::generate();
    let (meta, handle, events) = shoal_gossip::new(GOSSIP, config(), key.clone());
    let mut builder = ServiceBuilder::new(key).protocol(meta);
    if let Some(network) = memory {
        builder = builder.transport(MemoryTransport::new(network));
    }
    let service = builder.build().unwrap();
    let control = service.control();
    tokio::spawn(service);
    let addr: Multiaddr = if memory.is_some() {
        "/memory/0".parse().unwrap()
    } else {
        "/ip4/127.0.0.1/tcp/0".parse().unwrap()
    };
    control.listen(addr).await.unwrap();
    Node {
        control,
        handle,
        events,
    }
}

/// Node `i` dials up to `degree` earlier nodes, chosen by a fixed
/// pseudo-random pattern.
async fn wire(nodes: &[Node], degree: usize) {
    for i in 1..nodes.len() {
        let mut targets = BTreeSet::new();
        for k in 0..degree {
            let x = (i as u64 * 0x9e37_79b9 + k as u64 * 0x85eb_ca6b) >> 7;
            targets.insert(x as usize % i);
        }
        for j in targets {
            let addr = nodes[j].control.listen_addrs().pop().unwrap();
            nodes[i]
                .control
                .dial(addr, DialOptions::default())
                .await
                .unwrap();
        }
    }
}

/// Waits until every node has at least `min` topic peers.
async fn until_topic_peers(nodes: &[Node], topic: &Topic, min: usize) {
    tokio::time::timeout(PHASE, async {
        while nodes
            .iter()
            .any(|n| n.handle.topic_peers(topic).len() < min)
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("subscriptions did not spread");
}

/// Waits until every node but the publisher reports each message once.
async fn until_delivered(nodes: &mut [Node], sent: &[(usize, MessageId)]) {
    for (i, node) in nodes.iter_mut().enumerate() {
        let mut want: BTreeSet<MessageId> = sent
            .iter()
            .filter(|(p, _)| *p != i)
            .map(|(_, id)| *id)
            .collect();
        tokio::time::timeout(PHASE, async {
            while !want.is_empty() {
                if let Event::Message { id, .. } = node.events.recv().await.unwrap() {
                    assert!(want.remove(&id), "node {i}: {id:?} twice or unknown");
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("node {i} is missing {} messages", want.len()));
    }
}

async fn run(mut nodes: Vec<Node>, degree: usize) {
    let topic = Topic::new("shoal/test").unwrap();
    for node in &nodes {
        node.handle.subscribe(topic.clone()).unwrap();
    }
    wire(&nodes, degree).await;
    until_topic_peers(&nodes, &topic, 1).await;
    // A few heartbeats to build the meshes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let n = nodes.len();
    let mut sent = Vec::new();
    for (k, publisher) in [0, n / 2, n - 1].into_iter().enumerate() {
        let payload = format!("message {k} from {publisher}");
        let id = nodes[publisher]
            .handle
            .publish(topic.clone(), payload.into_bytes())
            .unwrap()
            .id;
        sent.push((publisher, id));
    }
    until_delivered(&mut nodes, &sent).await;
    // Meshes stay within bounds; a node whose few peers all pruned it
    // (they had too many) may have none, and is still reached by flood
    // publishing and IHAVE.
    let meshed = nodes
        .iter()
        .filter(|node| !node.handle.mesh_peers(&topic).is_empty())
        .count();
    assert!(meshed * 10 >= n * 9, "{meshed} of {n} nodes have a mesh");
    for node in &nodes {
        assert!(node.handle.mesh_peers(&topic).len() <= config().mesh_n_high);
        assert_eq!(node.handle.dropped_events(), 0);
    }
    for node in &nodes {
        node.control.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_nodes_over_the_memory_transport() {
    let network = MemoryNetwork::new();
    let mut nodes = Vec::new();
    for _ in 0..50 {
        nodes.push(spawn(Some(&network)).await);
    }
    run(nodes, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_nodes_over_tcp_loopback() {
    let mut nodes = Vec::new();
    for _ in 0..10 {
        nodes.push(spawn(None).await);
    }
    run(nodes, 3).await;
}
