//! The service's address book: where each peer may be reached, where that
//! was learned, and how it went the last times. One bounded book per
//! service, fed by the application, by the service's own dials and by
//! protocols (identify, discovery, Kademlia), so protocols dial peers by id
//! instead of keeping books of their own.
//!
//! Pure bookkeeping (no I/O; every method takes the wall clock in Unix
//! seconds), so it can be saved and loaded through [`AddressStore`].
//!
//! Bounds: at most [`AddressBookConfig::max_peers`] peers (the one heard of
//! least recently goes first) and [`AddressBookConfig::max_per_peer`]
//! addresses each (the least useful goes first). An address that failed
//! [`AddressBookConfig::max_failures`] dials in a row is forgotten.

use std::collections::HashMap;

use shoal_identity::PeerId;
use shoal_transport::{AddressScope, Multiaddr};

/// Where an address was learned, from the most to the least trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AddressSource {
    /// A dial of ours reached the peer there.
    Dialled,
    /// The application said so.
    Application,
    /// The peer said so itself (identify, its signed records).
    Peer,
    /// Another peer said so (discovery, Kademlia answers).
    Hearsay,
}

/// One address of a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressEntry {
    /// The address (without `/p2p/`).
    pub addr: Multiaddr,
    /// The most trusted source it was learned from.
    pub source: AddressSource,
    /// Its scope.
    pub scope: AddressScope,
    /// When it was last learned or reached (Unix seconds).
    pub last_seen: u64,
    /// Dials to it that failed in a row.
    pub failures: u32,
}

/// Bounds of an [`AddressBook`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressBookConfig {
    /// Peers kept (default 16,384).
    pub max_peers: usize,
    /// Addresses kept per peer (default 8).
    pub max_per_peer: usize,
    /// Failed dials in a row after which an address is forgotten (default
    /// 3).
    pub max_failures: u32,
}

impl Default for AddressBookConfig {
    fn default() -> AddressBookConfig {
        AddressBookConfig {
            max_peers: 16_384,
            max_per_peer: 8,
            max_failures: 3,
        }
    }
}

/// Saves and loads an [`AddressBook`] (a file, a database table): what a
/// node needs to find its peers again after a restart.
pub trait AddressStore: Send + 'static {
    /// Every peer's addresses, as last saved.
    fn load(&mut self) -> std::io::Result<Vec<(PeerId, Vec<AddressEntry>)>>;
    /// Replaces what is saved with `peers`.
    fn save(&mut self, peers: &[(PeerId, Vec<AddressEntry>)]) -> std::io::Result<()>;
}

/// The address book (see the [module docs](self)).
#[derive(Debug, Clone, Default)]
pub struct AddressBook {
    config: AddressBookConfig,
    peers: HashMap<PeerId, Peer>,
}

#[derive(Debug, Clone, Default)]
struct Peer {
    entries: Vec<AddressEntry>,
    /// When anything was last learned about the peer.
    last_seen: u64,
}

impl AddressBook {
    /// An empty book with `config`'s bounds.
    pub fn new(config: AddressBookConfig) -> AddressBook {
        AddressBook {
            config,
            peers: HashMap::new(),
        }
    }

    /// Peers in the book.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether the book is empty.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Learns `addrs` of `peer` from `source` at wall time `now`. An
    /// address already known keeps the more trusted source and is seen
    /// again.
    pub fn add(&mut self, peer: PeerId, addrs: &[Multiaddr], source: AddressSource, now: u64) {
        if addrs.is_empty() {
            return;
        }
        if !self.peers.contains_key(&peer) && self.peers.len() >= self.config.max_peers {
            self.evict_one();
        }
        let max = self.config.max_per_peer.max(1);
        let entry = self.peers.entry(peer).or_default();
        entry.last_seen = entry.last_seen.max(now);
        for addr in addrs {
            let addr = addr.without_peer_id();
            match entry.entries.iter_mut().find(|e| e.addr == addr) {
                Some(known) => {
                    known.source = known.source.min(source);
                    known.last_seen = known.last_seen.max(now);
                }
                None => entry.entries.push(AddressEntry {
                    scope: AddressScope::of(&addr),
                    addr,
                    source,
                    last_seen: now,
                    failures: 0,
                }),
            }
        }
        sort(&mut entry.entries);
        entry.entries.truncate(max);
    }

    /// A dial of ours reached `peer` at `addr`: the address is the most
    /// trusted kind now, and its failures are forgotten.
    pub fn reached(&mut self, peer: PeerId, addr: &Multiaddr, now: u64) {
        self.add(
            peer,
            std::slice::from_ref(addr),
            AddressSource::Dialled,
            now,
        );
        if let Some(e) = self.peers.get_mut(&peer).and_then(|p| {
            p.entries
                .iter_mut()
                .find(|e| e.addr == addr.without_peer_id())
        }) {
            e.failures = 0;
        }
    }

    /// A dial to `peer` at `addr` failed for a reason that concerns the
    /// peer (not a local limit). After [`AddressBookConfig::max_failures`]
    /// in a row the address is forgotten, and a peer without addresses
    /// leaves the book.
    pub fn failed(&mut self, peer: PeerId, addr: &Multiaddr) {
        let max = self.config.max_failures.max(1);
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let addr = addr.without_peer_id();
        if let Some(e) = p.entries.iter_mut().find(|e| e.addr == addr) {
            e.failures = e.failures.saturating_add(1);
        }
        p.entries.retain(|e| e.failures < max);
        sort(&mut p.entries);
        if p.entries.is_empty() {
            self.peers.remove(&peer);
        }
    }

    /// `peer`'s addresses, the ones to try first first: reached by us,
    /// then by source, then fewer failures, then most recently seen.
    pub fn addresses(&self, peer: &PeerId) -> Vec<Multiaddr> {
        self.peers
            .get(peer)
            .map(|p| p.entries.iter().map(|e| e.addr.clone()).collect())
            .unwrap_or_default()
    }

    /// `peer`'s entries, in the order of [`AddressBook::addresses`].
    pub fn entries(&self, peer: &PeerId) -> &[AddressEntry] {
        self.peers.get(peer).map_or(&[], |p| p.entries.as_slice())
    }

    /// Forgets `peer`.
    pub fn remove(&mut self, peer: &PeerId) {
        self.peers.remove(peer);
    }

    /// Every peer with its entries (to save), sorted by peer id.
    pub fn snapshot(&self) -> Vec<(PeerId, Vec<AddressEntry>)> {
        let mut out: Vec<(PeerId, Vec<AddressEntry>)> = self
            .peers
            .iter()
            .map(|(peer, p)| (*peer, p.entries.clone()))
            .collect();
        out.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        out
    }

    /// Takes back what [`AddressBook::snapshot`] gave, within the bounds
    /// (entries beyond them are dropped).
    pub fn restore(&mut self, peers: Vec<(PeerId, Vec<AddressEntry>)>) {
        for (peer, entries) in peers {
            for e in entries {
                let now = e.last_seen;
                self.add(peer, std::slice::from_ref(&e.addr), e.source, now);
                if let Some(known) = self
                    .peers
                    .get_mut(&peer)
                    .and_then(|p| p.entries.iter_mut().find(|k| k.addr == e.addr))
                {
                    known.failures = e.failures;
                }
            }
        }
    }

    /// Drops the peer heard of least recently.
    fn evict_one(&mut self) {
        if let Some(oldest) = self
            .peers
            .iter()
            .min_by_key(|(peer, p)| (p.last_seen, *peer.as_bytes()))
            .map(|(peer, _)| *peer)
        {
            self.peers.remove(&oldest);
        }
    }
}

/// The order in which a peer's addresses are tried.
fn sort(entries: &mut [AddressEntry]) {
    entries.sort_by(|a, b| {
        (a.source, a.failures, std::cmp::Reverse(a.last_seen)).cmp(&(
            b.source,
            b.failures,
            std::cmp::Reverse(b.last_seen),
        ))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(i: u8) -> PeerId {
        PeerId::from_bytes([i; 32])
    }

    fn a(s: &str) -> Multiaddr {
        s.parse()
            .unwrap_or_else(|_| unreachable!("valid address {s}"))
    }

    #[test]
    fn order_merge_and_failures() {
        let mut book = AddressBook::new(AddressBookConfig::default());
        let p = peer(1);
        book.add(p, &[a("/ip4/1.1.1.1/tcp/1")], AddressSource::Hearsay, 10);
        book.add(p, &[a("/ip4/2.2.2.2/tcp/1")], AddressSource::Peer, 5);
        assert_eq!(
            book.addresses(&p),
            vec![a("/ip4/2.2.2.2/tcp/1"), a("/ip4/1.1.1.1/tcp/1")],
            "the peer's own word before hearsay"
        );
        // Hearsay about an address the application gave keeps the better source.
        book.add(
            p,
            &[a(
                "/ip4/3.3.3.3/tcp/1/p2p/AKnL4NNf3DGWZJS6cPknBuEGnVsV4A4m5tgebLHaRSZ9",
            )],
            AddressSource::Application,
            1,
        );
        book.add(p, &[a("/ip4/3.3.3.3/tcp/1")], AddressSource::Hearsay, 20);
        assert_eq!(book.entries(&p)[0].addr, a("/ip4/3.3.3.3/tcp/1"));
        assert_eq!(book.entries(&p)[0].source, AddressSource::Application);
        assert_eq!(book.entries(&p)[0].last_seen, 20);
        // Reached: first from now on.
        book.reached(p, &a("/ip4/1.1.1.1/tcp/1"), 30);
        assert_eq!(book.addresses(&p)[0], a("/ip4/1.1.1.1/tcp/1"));
        // Three failures in a row forget an address; the last one the peer.
        for _ in 0..3 {
            book.failed(p, &a("/ip4/2.2.2.2/tcp/1"));
        }
        assert!(!book.addresses(&p).contains(&a("/ip4/2.2.2.2/tcp/1")));
        for addr in book.addresses(&p) {
            for _ in 0..3 {
                book.failed(p, &addr);
            }
        }
        assert!(book.is_empty());
    }

    #[test]
    fn bounded_in_peers_and_addresses() {
        let mut book = AddressBook::new(AddressBookConfig {
            max_peers: 3,
            max_per_peer: 2,
            max_failures: 3,
        });
        for i in 0..5u8 {
            book.add(
                peer(i),
                &[a(&format!("/ip4/9.9.9.{i}/tcp/1"))],
                AddressSource::Peer,
                u64::from(i),
            );
        }
        assert_eq!(book.len(), 3);
        assert!(
            book.addresses(&peer(0)).is_empty(),
            "the least recently heard of went first"
        );
        assert!(!book.addresses(&peer(4)).is_empty());
        let many: Vec<Multiaddr> = (0..10)
            .map(|i| a(&format!("/ip4/8.8.8.{i}/tcp/1")))
            .collect();
        book.add(peer(4), &many, AddressSource::Hearsay, 9);
        assert_eq!(book.entries(&peer(4)).len(), 2);
        assert_eq!(book.entries(&peer(4))[0].source, AddressSource::Peer);
    }

    #[test]
    fn snapshot_and_restore() {
        let mut book = AddressBook::new(AddressBookConfig::default());
        book.add(
            peer(1),
            &[a("/ip4/1.1.1.1/tcp/1"), a("/ip4/127.0.0.1/tcp/2")],
            AddressSource::Peer,
            7,
        );
        book.failed(peer(1), &a("/ip4/1.1.1.1/tcp/1"));
        let saved = book.snapshot();
        let mut again = AddressBook::new(AddressBookConfig::default());
        again.restore(saved.clone());
        assert_eq!(again.snapshot(), saved);
        assert_eq!(again.entries(&peer(1))[0].scope, AddressScope::Loopback);
    }
}
