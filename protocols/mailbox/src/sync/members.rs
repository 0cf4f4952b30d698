//! Who replicates a mailbox, in one node's view: the
//! [`REPLICAS`] nodes closest to the mailbox id (XOR
//! distance of Kademlia keys) among the node itself and the peers its
//! mailbox-DHT routing table holds.

use std::collections::{HashMap, HashSet};

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
    /// Peers left out: they stopped answering.
    silent: HashSet<PeerId>,
}

impl Neighbourhood {
    /// The view of `local`, which knows no one yet.
    pub fn new(local: PeerId) -> Neighbourhood {
        Neighbourhood {
            local,
            nodes: vec![(Key::for_peer(&local), local)],
            silent: HashSet::new(),
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

    /// Leaves `peers` out of the view until they are given again by
    /// [`set_peers`](Self::set_peers) after they answer: nodes that stopped
    /// answering (a routing table keeps a dead contact until it fails
    /// requests of its own, and a mailbox whose view counts dead nodes as
    /// members hands its envelopes to no one).
    pub fn set_silent(&mut self, peers: impl IntoIterator<Item = PeerId>) {
        self.silent = peers.into_iter().filter(|p| *p != self.local).collect();
    }

    fn live(&self) -> impl Iterator<Item = &(Key, PeerId)> {
        self.nodes.iter().filter(|(_, p)| !self.silent.contains(p))
    }

    /// The replicas of `mailbox`, closest first (this node among them if it
    /// is one).
    pub fn members(&self, mailbox: &MailboxId) -> Vec<PeerId> {
        self.members_without(mailbox, &HashSet::new())
    }

    /// The replicas of `mailbox` leaving out `refused` (peers that said
    /// they do not replicate it: their own view knows nodes closer to it).
    pub fn members_without(&self, mailbox: &MailboxId, refused: &HashSet<PeerId>) -> Vec<PeerId> {
        let target = Key::from_bytes(*mailbox.as_bytes());
        let mut by_distance: Vec<_> = self
            .live()
            .filter(|(_, p)| !refused.contains(p))
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
            .live()
            .filter(|(key, _)| key.distance(&target) < mine)
            .count();
        closer < REPLICAS
    }
}
