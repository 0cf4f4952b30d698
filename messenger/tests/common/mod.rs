//! Shared set-up of the messenger tests: in-process networks of messengers.
#![allow(clippy::unwrap_used, dead_code)]

use std::collections::HashSet;
use std::time::Duration;

use shoal_im::engine::HistoryItem;
use shoal_im::{MemoryStore, MessageId, UserId};
use shoal_messenger::{Event, Messenger, MessengerConfig};
use shoal_transport::{MemoryNetwork, MemoryTransport, Multiaddr};
use tokio::sync::mpsc;

/// A messenger with its event receiver.
pub(crate) struct Node {
    pub(crate) messenger: Messenger,
    pub(crate) events: mpsc::Receiver<Event>,
}

/// Starts `n` messengers with memory stores on `network`, each bootstrapped
/// through the first.
pub(crate) async fn network(network: &MemoryNetwork, n: usize) -> Vec<Node> {
    let mut nodes: Vec<Node> = Vec::new();
    let mut seed: Option<Multiaddr> = None;
    for _ in 0..n {
        let config = MessengerConfig {
            listen: vec!["/memory/0".parse().unwrap()],
            bootstrap: seed.iter().cloned().collect(),
            ..MessengerConfig::default()
        };
        nodes.push(start(network, MemoryStore::new(), config).await);
        if seed.is_none() {
            seed = Some(nodes[0].messenger.listen_addrs()[0].clone());
        }
    }
    nodes
}

/// The bootstrap address of a network's first node.
pub(crate) fn seed(nodes: &[Node]) -> Multiaddr {
    nodes[0].messenger.listen_addrs()[0].clone()
}

pub(crate) async fn start(
    network: &MemoryNetwork,
    store: impl shoal_im::Store,
    config: MessengerConfig,
) -> Node {
    let (messenger, events) = Messenger::start(store, MemoryTransport::new(network), config)
        .await
        .unwrap();
    Node { messenger, events }
}

/// The whole history with `contact`, oldest first, asserting that every
/// message comes after its previous message and its dependencies, and
/// that no id appears twice.
pub(crate) async fn full_history(messenger: &Messenger, contact: UserId) -> Vec<HistoryItem> {
    let mut all = Vec::new();
    let mut cursor = None;
    for _ in 0..10_000 {
        let page = messenger.history(contact, cursor, 100).await.unwrap();
        let Some(last) = page.last() else { break };
        cursor = Some((last.meta.height, last.meta.id));
        all.extend(page);
    }
    all.reverse();
    let mut seen = HashSet::new();
    for item in &all {
        for before in item.message.prev.iter().chain(&item.message.deps) {
            assert!(
                seen.contains(before),
                "causal order broken at {}",
                item.meta.id
            );
        }
        assert!(seen.insert(item.meta.id), "{} shown twice", item.meta.id);
    }
    all
}

/// Collects events until `done` says so, failing after `limit`.
pub(crate) async fn collect_until(
    events: &mut mpsc::Receiver<Event>,
    seen: &mut Vec<Event>,
    limit: Duration,
    mut done: impl FnMut(&[Event]) -> bool,
) {
    let deadline = tokio::time::Instant::now() + limit;
    while !done(seen) {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(event)) => seen.push(event),
            Ok(None) => panic!("event stream ended"),
            Err(_) => panic!("timed out after {limit:?}"),
        }
    }
}

pub(crate) fn received(events: &[Event]) -> Vec<MessageId> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Received { id, .. } => Some(*id),
            _ => None,
        })
        .collect()
}

pub(crate) fn delivered(events: &[Event]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, Event::Delivered { .. }))
        .count()
}
