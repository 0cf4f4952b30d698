//! A DHT of its own under another protocol name, queried by a client: the
//! nodes that speak it find each other, the client finds them, and none of
//! them ever keeps the client as a contact. Identify tells each node where
//! its peers listen and which protocols they serve; only peers that serve
//! the named DHT are given to it (the client serves nothing).

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use shoal::{ProtocolId, ServiceBuilder, ServiceControl};
use shoal_identity::Keypair;
use shoal_kad::{Config, Handle, Key};
use shoal_transport::{MemoryNetwork, MemoryTransport, Multiaddr};

const KAD: ProtocolId = ProtocolId(9);
const IDENTIFY: ProtocolId = ProtocolId(2);
const NAME: &str = "/test/kad/other";
const PHASE: Duration = Duration::from_secs(30);

struct Node {
    key: Keypair,
    control: ServiceControl,
    handle: Handle,
    addr: Multiaddr,
}

async fn spawn(network: &MemoryNetwork, client: bool) -> Node {
    let key = Keypair::generate();
    let config = Config {
        client,
        request_timeout: Duration::from_secs(3),
        query_timeout: Duration::from_secs(10),
        ..Config::default()
    };
    let (meta, handle, mut events) = shoal_kad::new_named(KAD, NAME, key.peer_id(), config);
    let served = if client {
        vec![]
    } else {
        vec![NAME.to_owned()]
    };
    let (id_meta, _id_handle, mut id_events) = shoal_identify::new(
        IDENTIFY,
        shoal_identify::LocalRecord::new(key.clone()),
        shoal_identify::Config {
            protocols: served,
            ..shoal_identify::Config::default()
        },
    );
    let service = ServiceBuilder::new(key.clone())
        .transport(MemoryTransport::new(network))
        .protocol(meta)
        .protocol(id_meta)
        .build()
        .unwrap();
    let feed = handle.clone();
    tokio::spawn(async move {
        while let Some(event) = id_events.recv().await {
            if let shoal_identify::Event::Identified { peer, info, .. } = event
                && info.protocols.iter().any(|p| p == NAME)
            {
                feed.add_address(peer, info.listen_addrs.clone());
            }
        }
    });
    let control = service.control();
    tokio::spawn(service);
    let addr = control.listen("/memory/0".parse().unwrap()).await.unwrap();
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    Node {
        key,
        control,
        handle,
        addr,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_finds_the_nodes_of_a_named_dht_and_is_kept_by_none() {
    let network = MemoryNetwork::new();
    let mut servers = Vec::new();
    for _ in 0..12 {
        servers.push(spawn(&network, false).await);
    }
    let seed = (servers[0].key.peer_id(), vec![servers[0].addr.clone()]);
    for s in &servers[1..] {
        tokio::time::timeout(PHASE, s.handle.bootstrap(vec![seed.clone()]))
            .await
            .unwrap()
            .unwrap();
    }
    let client = spawn(&network, true).await;
    tokio::time::timeout(PHASE, client.handle.bootstrap(vec![seed.clone()]))
        .await
        .unwrap()
        .unwrap();
    for q in 0..5u64 {
        let key = Key::for_name(shoal_identity::Purpose::new("test/key/1"), &q.to_be_bytes());
        let (closest, _) = tokio::time::timeout(PHASE, client.handle.find_node(key))
            .await
            .unwrap()
            .unwrap();
        let mut all: Vec<_> = servers.iter().map(|s| s.key.peer_id()).collect();
        all.sort_by_key(|p| Key::for_peer(p).distance(&key));
        assert_eq!(closest[0].peer, all[0], "query {q}");
        assert!(closest.iter().all(|c| c.peer != client.key.peer_id()));
    }
    // Every server's table holds servers only.
    for s in &servers {
        let table = s.handle.routing_table_len();
        assert!(table > 0);
        assert!(
            !s.handle.in_routing_table(&client.key.peer_id()),
            "a server kept the client"
        );
    }
    for n in servers.iter().chain([&client]) {
        n.control.shutdown().await;
    }
}
