//! One session per pair of peers.
//!
//! Two nodes often dial each other at the same moment (both learn of the
//! other from the DHT), or one dials twice (two protocols looking for the
//! same peer). Each extra connection costs a handshake, a multiplexer and
//! keep-alives on both ends, and splits a peer's traffic in two. The service
//! therefore keeps one session per remote peer, chosen by a rule both ends
//! evaluate alike, without a round trip:
//!
//! * **Crossed dials** (one session each way): the session dialled by the
//!   peer with the smaller `PeerId` (bytewise) survives. Both ends compare the
//!   same two ids, so both keep the same connection and close the other.
//! * **Repeated dials from one side**: the dialler keeps the session that
//!   was established first and closes the newer one; a listener never
//!   closes a duplicate itself (it could not tell which one the dialler
//!   kept), it sees the dialler's graceful close.
//!
//! A session that loses is closed gracefully before anything is reported
//! for it on the side that decides; an awaited dial whose connection lost
//! returns the surviving session. A dial to a peer that already has a
//! session returns that session without connecting at all.

use shoal_identity::PeerId;

use crate::Direction;

/// Which session to keep when a new one meets one with the same peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Keep the new session and close the existing one.
    New,
    /// Close the new session; the existing one stays.
    Existing,
    /// Keep both: the remote dialled twice and will close one itself.
    Both,
}

/// The rule of the module docs for a new session in direction `new`, given
/// an open session with the same peer in direction `existing`.
pub(crate) fn verdict(
    local: &PeerId,
    remote: &PeerId,
    existing: Direction,
    new: Direction,
) -> Verdict {
    match (existing, new) {
        (Direction::Outbound, Direction::Outbound) => Verdict::Existing,
        (Direction::Inbound, Direction::Inbound) => Verdict::Both,
        (_, new) => {
            let dialler = match new {
                Direction::Outbound => local,
                Direction::Inbound => remote,
            };
            let smaller = if local.as_bytes() < remote.as_bytes() {
                local
            } else {
                remote
            };
            if dialler == smaller {
                Verdict::New
            } else {
                Verdict::Existing
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_identity::Keypair;

    fn two() -> (PeerId, PeerId) {
        let a = Keypair::generate().peer_id();
        let b = Keypair::generate().peer_id();
        if a.as_bytes() < b.as_bytes() {
            (a, b)
        } else {
            (b, a)
        }
    }

    #[test]
    fn crossed_dials_keep_the_smaller_peers_connection_on_both_ends() {
        let (small, big) = two();
        // The small peer's view: its outbound is the survivor, whichever
        // completed first.
        assert_eq!(
            verdict(&small, &big, Direction::Inbound, Direction::Outbound),
            Verdict::New
        );
        assert_eq!(
            verdict(&small, &big, Direction::Outbound, Direction::Inbound),
            Verdict::Existing
        );
        // The big peer's view: its inbound (the small peer's dial) survives.
        assert_eq!(
            verdict(&big, &small, Direction::Outbound, Direction::Inbound),
            Verdict::New
        );
        assert_eq!(
            verdict(&big, &small, Direction::Inbound, Direction::Outbound),
            Verdict::Existing
        );
    }

    #[test]
    fn repeated_dials_are_settled_by_the_dialler() {
        let (a, b) = two();
        for (local, remote) in [(a, b), (b, a)] {
            assert_eq!(
                verdict(&local, &remote, Direction::Outbound, Direction::Outbound),
                Verdict::Existing
            );
            assert_eq!(
                verdict(&local, &remote, Direction::Inbound, Direction::Inbound),
                Verdict::Both
            );
        }
    }
}
