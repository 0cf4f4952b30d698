//! Twenty nodes on the in-memory transport start together and all bootstrap
//! through node 0 at once, while identify feeds the addresses of the peers
//! that dial them into kad. Node 0 meets most joiners through sessions they
//! opened before it learns where they listen; such contacts must not be
//! handed out (the asker could not dial them, and each request to one
//! waited out every attempt's timeout: bootstraps took 5 to 30 s). A second
//! round, once node 0 knows every address, makes the nodes dial each other
//! at once (simultaneous dials). Every bootstrap must end in well under a
//! request timeout, with no failed request.

#![allow(clippy::unwrap_used)]

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use shoal::{Multiaddr, PeerId, ProtocolId, ServiceBuilder, ServiceControl};
use shoal_identify::LocalRecord;
use shoal_identity::Keypair;
use shoal_kad::{Config, Handle, QueryStats};
use shoal_transport::{MemoryNetwork, MemoryTransport};

const KAD: ProtocolId = ProtocolId(1);
const IDENTIFY: ProtocolId = ProtocolId(2);
const NODES: usize = 20;
/// Each bootstrap must end well before one request timeout.
const BOUND: Duration = Duration::from_secs(2);
/// The request timeout (the default).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

struct Node {
    key: Keypair,
    control: ServiceControl,
    handle: Handle,
    /// Peers identify told this node about.
    identified: Arc<Mutex<BTreeSet<PeerId>>>,
}

async fn spawn(network: &MemoryNetwork) -> Node {
    let key = Keypair::generate();
    let config = Config {
        request_timeout: REQUEST_TIMEOUT,
        query_timeout: Duration::from_secs(30),
        ..Config::default()
    };
    let (meta, handle, mut events) = shoal_kad::new(KAD, key.peer_id(), config);
    let (id_meta, _id_handle, mut id_events) = shoal_identify::new(
        IDENTIFY,
        LocalRecord::new(key.clone()),
        shoal_identify::Config::default(),
    );
    let service = ServiceBuilder::new(key.clone())
        .protocol(meta)
        .protocol(id_meta)
        .transport(MemoryTransport::new(network))
        .build()
        .unwrap();
    let control = service.control();
    tokio::spawn(service);
    control.listen("/memory/0".parse().unwrap()).await.unwrap();
    let feed = handle.clone();
    let identified = Arc::new(Mutex::new(BTreeSet::new()));
    let seen = identified.clone();
    tokio::spawn(async move {
        while let Some(event) = id_events.recv().await {
            if let shoal_identify::Event::Identified { peer, info, .. } = event {
                feed.add_address(peer, info.listen_addrs.clone());
                seen.lock().unwrap().insert(peer);
            }
        }
    });
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    Node {
        key,
        control,
        handle,
        identified,
    }
}

/// Bootstraps every node but the seed through it, all at once; returns
/// each one's time and stats.
async fn bootstrap_all(nodes: &[Node]) -> Vec<(Duration, QueryStats)> {
    let seed: (PeerId, Vec<Multiaddr>) = (nodes[0].key.peer_id(), nodes[0].control.listen_addrs());
    let tasks: Vec<_> = nodes[1..]
        .iter()
        .map(|node| {
            let handle = node.handle.clone();
            let seed = seed.clone();
            tokio::spawn(async move {
                let start = Instant::now();
                let (_, stats) = handle.bootstrap(vec![seed]).await.unwrap();
                (start.elapsed(), stats)
            })
        })
        .collect();
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.unwrap());
    }
    out
}

fn check(round: u32, results: &[(Duration, QueryStats)]) {
    let mut bad = Vec::new();
    for (i, (took, stats)) in results.iter().enumerate() {
        eprintln!("round {round} node {}: {took:?} {stats:?}", i + 1);
        if *took > BOUND || stats.failures > 0 || stats.timed_out {
            bad.push((i + 1, took, stats));
        }
    }
    assert!(
        bad.is_empty(),
        "round {round}: slow or failed bootstraps: {bad:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_nodes_bootstrap_at_once() {
    let network = MemoryNetwork::new();
    let mut nodes = Vec::new();
    for _ in 0..NODES {
        nodes.push(spawn(&network).await);
    }
    // Round 1: the seed meets the joiners as they ask it.
    let first = bootstrap_all(&nodes).await;
    check(1, &first);
    // Wait until identify has told the seed where every joiner listens.
    tokio::time::timeout(Duration::from_secs(10), async {
        while nodes[0].identified.lock().unwrap().len() < NODES - 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("identify did not reach the seed");
    // Round 2: the seed names everyone; the joiners dial each other at once.
    let second = bootstrap_all(&nodes).await;
    check(2, &second);
    for (i, node) in nodes.iter().enumerate() {
        assert!(
            node.handle.routing_table_len() > 1,
            "node {i} knows too little"
        );
        assert_eq!(
            node.handle.dropped_messages(),
            0,
            "node {i} dropped messages"
        );
    }
    for node in &nodes {
        node.control.shutdown().await;
    }
}
