//! `PeerSessions`: which sessions each peer has open on a protocol (for
//! the core driver, which addresses peers rather than sessions).

use std::collections::{BTreeMap, BTreeSet};

use shoal_identity::PeerId;

use crate::SessionId;

/// The open sessions of each peer on one protocol, for handlers whose core
/// addresses peers rather than sessions (a DHT, gossip). A peer has two
/// sessions for a moment when the service replaces one by a newer (one
/// session per pair of peers: the older drains for a short grace, then
/// closes) or when duplicates are allowed; the peer counts as connected from
/// its first session opening to its last closing.
#[derive(Debug, Clone, Default)]
pub(crate) struct PeerSessions {
    by_peer: BTreeMap<PeerId, BTreeSet<SessionId>>,
}

impl PeerSessions {
    /// Records that `session` with `peer` is open; `true` if it is the
    /// peer's first.
    pub(crate) fn insert(&mut self, peer: PeerId, session: SessionId) -> bool {
        let sessions = self.by_peer.entry(peer).or_default();
        let first = sessions.is_empty();
        sessions.insert(session);
        first
    }

    /// Records that `session` with `peer` closed; `true` if it was the
    /// peer's last.
    pub(crate) fn remove(&mut self, peer: &PeerId, session: SessionId) -> bool {
        let Some(sessions) = self.by_peer.get_mut(peer) else {
            return false;
        };
        if !sessions.remove(&session) {
            return false;
        }
        if sessions.is_empty() {
            self.by_peer.remove(peer);
            return true;
        }
        false
    }

    /// Forgets every session of `peer` and returns them (to close them).
    pub(crate) fn remove_peer(&mut self, peer: &PeerId) -> BTreeSet<SessionId> {
        self.by_peer.remove(peer).unwrap_or_default()
    }

    /// Whether `peer` has an open session.
    pub(crate) fn contains(&self, peer: &PeerId) -> bool {
        self.by_peer.contains_key(peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_and_last_session_of_a_peer() {
        let mut open = PeerSessions::default();
        let peer = PeerId::from_bytes([1; 32]);
        assert!(
            open.insert(peer, SessionId::new(7)),
            "first session: peer connected"
        );
        assert!(!open.insert(peer, SessionId::new(9)));
        assert!(!open.remove(&peer, SessionId::new(7)));
        assert!(
            open.remove(&peer, SessionId::new(9)),
            "last session: peer disconnected"
        );
        assert!(!open.contains(&peer));
    }
}
