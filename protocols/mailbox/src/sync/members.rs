//! Who replicates a mailbox, in one node's view: the
//! [`REPLICAS`](crate::REPLICAS) nodes closest to the mailbox id (XOR
//! distance of Kademlia keys) among the node itself and the peers its
//! mailbox-DHT routing table holds.

use std::collections::HashMap;

use shoal_identity::PeerId;
use shoal_kad::Key;

use crate::REPLICAS;
use crate::id::MailboxId;

/// A node's view of the nodes that keep mailboxes near it.
#[derive(Debug, Clone)]
pub struct Neighbourhood {
    local: PeerId,
    /// (node key, peer), the node itself included.
    nodes: Vec<(Key, PeerId)>,
}

impl Neighbourhood {
    /// The view of `local`, which knows no one yet.
    pub fn new(local: PeerId) -> Neighbourhood {
        Neighbourhood {
            local,
            nodes: vec![(Key::for_peer(&local), local)],
        }
    }

    /// Replaces the peers known (the routing table's contacts).
    pub fn set_peers(&mut self, peers: impl IntoIterator<Item = PeerId>) {
        let local = self.local;
        let known: HashMap<PeerId, Key> = self.nodes.iter().map(|(k, p)| (*p, *k)).collect();
        self.nodes = std::iter::once(local)
            .chain(peers.into_iter().filter(|p| *p != local))
            .map(|p| {
                (
                    known.get(&p).copied().unwrap_or_else(|| Key::for_peer(&p)),
                    p,
                )
            })
            .collect();
        self.nodes.sort_by_key(|(_, p)| *p);
        self.nodes.dedup_by_key(|(_, p)| *p);
    }

    /// Nodes known, this one included.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether only this node is known.
    pub fn is_empty(&self) -> bool {
        self.nodes.len() <= 1
    }

    /// The replicas of `mailbox`, closest first (this node among them if it
    /// is one).
    pub fn members(&self, mailbox: &MailboxId) -> Vec<PeerId> {
        let target = Key::from_bytes(*mailbox.as_bytes());
        let mut by_distance: Vec<_> = self
            .nodes
            .iter()
            .map(|(key, peer)| (key.distance(&target), *peer))
            .collect();
        let n = REPLICAS.min(by_distance.len());
        if n < by_distance.len() {
            by_distance.select_nth_unstable_by(n, |a, b| a.0.cmp(&b.0));
            by_distance.truncate(n);
        }
        by_distance.sort_by_key(|(d, _)| *d);
        by_distance.into_iter().map(|(_, p)| p).collect()
    }

    /// Whether this node is a replica of `mailbox`.
    pub fn is_member(&self, mailbox: &MailboxId) -> bool {
        let target = Key::from_bytes(*mailbox.as_bytes());
        let mine = Key::for_peer(&self.local).distance(&target);
        let closer = self
            .nodes
            .iter()
            .filter(|(key, _)| key.distance(&target) < mine)
            .count();
        closer < REPLICAS
    }
}
