//! Offline delivery through mailboxes, in process: six service nodes keep
//! mailboxes; alice writes while bob is away and then leaves too; bob
//! comes back and reads everything once and in order; the replicas end up
//! empty; alice, back, sees her messages delivered.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{Node, collect_until, received};
use shoal_identity::{Keypair, PeerId};
use shoal_mailbox::{MemoryStore, Replica, ReplicaConfig, ReplicaStore};
use shoal_messenger::service_node::{self, SpawnedNode};
use shoal_messenger::{Event, MessengerConfig, SqliteStore};
use shoal_transport::{MemoryNetwork, MemoryTransport, Multiaddr};

const LIMIT: Duration = Duration::from_secs(60);

/// A node keeping mailboxes in memory, joined through `seed`.
async fn service_node(network: &MemoryNetwork, seed: Option<&Multiaddr>) -> SpawnedNode {
    let key = Keypair::generate();
    let store: Box<dyn ReplicaStore> = Box::new(MemoryStore::new());
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let replica = Replica::open(key.clone(), store, ReplicaConfig::default(), now_ms).unwrap();
    let listen = "/memory/0".parse().unwrap();
    service_node::spawn(key, MemoryTransport::new(network), listen, seed, replica)
        .await
        .unwrap()
}

async fn chat(network: &MemoryNetwork, path: &std::path::Path, seed: &Multiaddr) -> Node {
    let config = MessengerConfig {
        listen: vec!["/memory/0".parse().unwrap()],
        bootstrap: vec![seed.clone()],
        mailbox_poll: Duration::from_secs(2),
        ..MessengerConfig::default()
    };
    common::start(network, SqliteStore::open(path).unwrap(), config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_wait_in_mailboxes_for_an_offline_contact() {
    let network = MemoryNetwork::new();
    let mut nodes = vec![service_node(&network, None).await];
    let seed = nodes[0].addr.clone();
    for _ in 0..5 {
        nodes.push(service_node(&network, Some(&seed)).await);
    }
    let dir = tempfile::tempdir().unwrap();
    let (alice_db, bob_db) = (dir.path().join("alice.db"), dir.path().join("bob.db"));
    let mut alice = chat(&network, &alice_db, &seed).await;
    let mut bob = chat(&network, &bob_db, &seed).await;
    let (a, b) = (alice.messenger.user_id(), bob.messenger.user_id());
    alice.messenger.add_contact(b, "bob").await.unwrap();
    bob.messenger.add_contact(a, "alice").await.unwrap();

    // Both online: the first message goes directly.
    let hello = alice.messenger.send(b, "hello").await.unwrap();
    let mut bob_seen = Vec::new();
    collect_until(&mut bob.events, &mut bob_seen, LIMIT, |e| {
        received(e).contains(&hello)
    })
    .await;

    // Bob leaves; alice writes five messages, each stored on W replicas.
    bob.messenger.shutdown().await;
    drop(bob);
    let mut alice_seen = Vec::new();
    collect_until(&mut alice.events, &mut alice_seen, LIMIT, |e| {
        e.iter().any(|e| matches!(e, Event::ContactOffline { .. }))
    })
    .await;
    let mut sent = Vec::new();
    for i in 0..5 {
        sent.push(
            alice
                .messenger
                .send(b, &format!("offline {i}"))
                .await
                .unwrap(),
        );
    }
    // Only the offline messages: "hello" is stored too if bob left before
    // its delivery receipt reached alice (bob must not show it twice).
    let stored = |events: &[Event]| -> Vec<(shoal_im::MessageId, Vec<PeerId>)> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Stored { id, replicas, .. } if *id != hello => Some((*id, replicas.clone())),
                _ => None,
            })
            .collect()
    };
    collect_until(&mut alice.events, &mut alice_seen, LIMIT, |e| {
        stored(e).len() >= sent.len()
    })
    .await;
    let replicas: HashSet<PeerId> = nodes.iter().map(|n| n.control.local_peer_id()).collect();
    for (id, signers) in stored(&alice_seen) {
        assert!(sent.contains(&id));
        assert_eq!(signers.len(), shoal_mailbox::WRITE_QUORUM);
        assert!(signers.iter().all(|s| replicas.contains(s)));
    }
    let held: u64 = nodes
        .iter()
        .map(|n| n.mailboxes.mailbox.replica_bytes().unwrap())
        .sum();
    assert!(held > 0, "the replicas hold the envelopes");
    alice.messenger.shutdown().await;
    drop(alice);

    // Bob comes back while alice is away: everything arrives once, in order.
    let mut bob = chat(&network, &bob_db, &seed).await;
    let mut bob_seen = Vec::new();
    collect_until(&mut bob.events, &mut bob_seen, LIMIT, |e| {
        received(e).len() >= sent.len()
    })
    .await;
    assert_eq!(received(&bob_seen), sent, "once each, in order");
    // Bob acked them on every replica: all of them delete.
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let held: u64 = nodes
            .iter()
            .map(|n| n.mailboxes.mailbox.replica_bytes().unwrap())
            .sum();
        if held == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{held} bytes left on the replicas"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Alice comes back: her messages are delivered.
    let mut alice = chat(&network, &alice_db, &seed).await;
    let mut alice_seen = Vec::new();
    collect_until(&mut alice.events, &mut alice_seen, LIMIT, |e| {
        common::delivered(e) >= sent.len()
    })
    .await;
    // Nothing new for bob in the meantime: no message shown twice.
    tokio::time::sleep(Duration::from_secs(3)).await;
    while let Ok(event) = bob.events.try_recv() {
        bob_seen.push(event);
    }
    assert_eq!(received(&bob_seen), sent);
}
