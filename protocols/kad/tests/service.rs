//! Kademlia on real services: 50 nodes over the in-memory transport and 10
//! over TCP loopback join through one seed, then store and find records.
//! Identify tells each node where the peers that dial it listen.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use shoal::{Multiaddr, PeerId, ProtocolId, ServiceBuilder, ServiceControl};
use shoal_identify::LocalRecord;
use shoal_identity::Keypair;
use shoal_kad::{Config, Handle, Key, LookupProgress, Record, SignedRecord};
use shoal_transport::{MemoryNetwork, MemoryTransport};

const KAD: ProtocolId = ProtocolId(1);
const IDENTIFY: ProtocolId = ProtocolId(2);
/// Upper bound for each phase.
const PHASE: Duration = Duration::from_secs(60);

struct Node {
    key: Keypair,
    control: ServiceControl,
    handle: Handle,
}

fn config() -> Config {
    Config {
        request_timeout: Duration::from_secs(3),
        query_timeout: Duration::from_secs(20),
        ..Config::default()
    }
}

async fn spawn(memory: Option<&MemoryNetwork>) -> Node {
    let key = Keypair::generate();
    let (meta, handle, mut events) = shoal_kad::new(KAD, key.peer_id(), config());
    let (id_meta, _id_handle, mut id_events) = shoal_identify::new(
        IDENTIFY,
        LocalRecord::new(key.clone()),
        shoal_identify::Config::default(),
    );
    let mut builder = ServiceBuilder::new(key.clone())
        .protocol(meta)
        .protocol(id_meta);
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
    // Identify feeds the routing table with listen addresses.
    let feed = handle.clone();
    tokio::spawn(async move {
        while let Some(event) = id_events.recv().await {
            if let shoal_identify::Event::Identified { peer, info, .. } = event {
                feed.add_address(peer, info.listen_addrs.clone());
            }
        }
    });
    // Drain the other kad events.
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    Node {
        key,
        control,
        handle,
    }
}

fn seed(node: &Node) -> (PeerId, Vec<Multiaddr>) {
    (node.key.peer_id(), node.control.listen_addrs())
}

fn record(node: &Node, i: u64) -> SignedRecord {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let record = Record {
        key: Key::for_name(
            shoal_identity::Purpose::new("shoal/test/1"),
            &i.to_be_bytes(),
        ),
        kind: "test".into(),
        value: Bytes::from(format!("record {i}")),
        publisher: node.key.peer_id(),
        seq: 1,
        expires: unix + 3600,
    };
    SignedRecord::sign(&node.key, record).unwrap()
}

async fn run(nodes: Vec<Node>, records: u64) {
    let n = nodes.len();
    let first = seed(&nodes[0]);
    tokio::time::timeout(PHASE, async {
        for node in &nodes[1..] {
            node.handle.bootstrap(vec![first.clone()]).await.unwrap();
        }
    })
    .await
    .expect("bootstrap took too long");
    // Every node knows more than the seed.
    for (i, node) in nodes.iter().enumerate() {
        assert!(
            node.handle.routing_table_len() > 1,
            "node {i} knows too little"
        );
    }
    tokio::time::timeout(PHASE, async {
        // Lookups find the true closest node.
        for q in 0..5u64 {
            let from = &nodes[(q as usize * 7 + 3) % n];
            let key = Key::for_name(shoal_identity::Purpose::new("shoal/test/1"), &[q as u8]);
            let (closest, _) = from.handle.find_node(key).await.unwrap();
            let best = nodes
                .iter()
                .map(|x| x.key.peer_id())
                .filter(|p| *p != from.key.peer_id())
                .min_by_key(|p| Key::for_peer(p).distance(&key))
                .unwrap();
            assert_eq!(closest.first().map(|c| c.peer), Some(best));
            // The same lookup, progressive: every node in the result was
            // reported as it answered, before the result, with the nodes
            // its answer named.
            let mut watch = from.handle.find_node_progress(key).unwrap();
            let (mut responded, mut named) = (Vec::new(), HashSet::new());
            let (closest, _) = loop {
                match watch.next().await.expect("a result") {
                    LookupProgress::Responded { contact, named: n } => {
                        responded.push(contact.peer);
                        named.extend(n.into_iter().map(|c| c.peer));
                    }
                    LookupProgress::Finished(closest, stats) => break (closest, stats),
                }
            };
            assert!(watch.next().await.is_none());
            assert_eq!(closest.first().map(|c| c.peer), Some(best));
            assert!(closest.iter().all(|c| responded.contains(&c.peer)));
            assert!(!named.is_empty() && !named.contains(&from.key.peer_id()));
        }
        // Records stored by one node are found by others.
        for i in 0..records {
            let publisher = &nodes[(i as usize * 5 + 1) % n];
            let r = record(publisher, i);
            let (stored, _) = publisher.handle.put_record(r.clone()).await.unwrap();
            assert!(
                stored >= (n - 1).min(20) / 2,
                "record {i} stored on {stored} nodes"
            );
            let reader = &nodes[(i as usize * 11 + 2) % n];
            let (got, stats) = reader.handle.get_record(r.record().key).await.unwrap();
            assert_eq!(got, Some(r), "record {i} not found ({stats:?})");
        }
    })
    .await
    .expect("lookups took too long");
    for node in &nodes {
        node.control.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_nodes_in_memory() {
    let network = MemoryNetwork::new();
    let mut nodes = Vec::new();
    for _ in 0..50 {
        nodes.push(spawn(Some(&network)).await);
    }
    run(nodes, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_nodes_over_tcp_loopback() {
    let mut nodes = Vec::new();
    for _ in 0..10 {
        nodes.push(spawn(None).await);
    }
    run(nodes, 5).await;
}
