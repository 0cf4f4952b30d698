//! The node's own dials: its bootstrap addresses (`--connect`) and the
//! peers remembered in its data directory, each retried with a capped
//! exponential backoff, and every failure turned into one short line.
//!
//! [`Dialer`] holds no I/O and no clock: [`Dialer::poll_dials`] says which
//! dials to start now, [`Dialer::handle_result`] takes their outcomes (and
//! returns the line to print, if any).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use shoal::DialError;
use shoal_identity::PeerId;
use shoal_secio::HandshakeError;
use shoal_transport::{Multiaddr, TransportError};

/// First retry delay after a failed dial; it doubles with each failure.
pub(crate) const BACKOFF_START: Duration = Duration::from_secs(1);
/// Longest retry delay: a dead address costs one dial a minute.
pub(crate) const BACKOFF_CAP: Duration = Duration::from_secs(60);
/// Dials of this module in flight at once, so a long list of remembered
/// peers does not open hundreds of connections at the same moment.
pub(crate) const MAX_DIALS_IN_FLIGHT: usize = 8;

/// Where a target comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A `--connect` address: kept connected, every failure printed.
    Bootstrap,
    /// A peer of the data directory: dialled while the node has fewer
    /// peers than it wants; its first failure is printed.
    Remembered,
}

#[derive(Debug)]
struct Target {
    origin: Origin,
    /// The peer that must answer: the address's `/p2p/` part, the
    /// remembered id, or the peer that answered a first dial.
    peer: Option<PeerId>,
    /// Addresses without `/p2p/`, tried in turn.
    addrs: Vec<Multiaddr>,
    /// How the user wrote it (bootstrap) or the first address (remembered),
    /// for messages.
    label: Multiaddr,
    next_addr: usize,
    delay: Duration,
    due: Instant,
    in_flight: bool,
    failures: u32,
}

/// One dial to start: its outcome goes back to
/// [`Dialer::handle_result`] with `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Dial {
    pub(crate) target: usize,
    /// With `/p2p/` when the peer is known.
    pub(crate) addr: Multiaddr,
}

/// The targets and their backoff.
#[derive(Debug)]
pub(crate) struct Dialer {
    targets: Vec<Target>,
    in_flight: usize,
}

impl Dialer {
    /// Targets for `bootstrap` addresses and `remembered` peers (a peer
    /// named by a bootstrap address is not added twice), all due at `now`.
    /// Returns the lines to print about addresses that cannot be used.
    pub(crate) fn new(
        local: PeerId,
        bootstrap: &[Multiaddr],
        remembered: Vec<(PeerId, Vec<Multiaddr>)>,
        now: Instant,
    ) -> (Dialer, Vec<String>) {
        let mut dialer = Dialer {
            targets: Vec::new(),
            in_flight: 0,
        };
        let mut notes = Vec::new();
        for addr in bootstrap {
            if addr.peer_id() == Some(local) {
                notes.push(format!("bootstrap {addr} is this node itself; ignored"));
                continue;
            }
            dialer.push(
                Origin::Bootstrap,
                addr.peer_id(),
                vec![addr.without_peer_id()],
                addr.clone(),
                now,
            );
        }
        let named: HashSet<PeerId> = bootstrap.iter().filter_map(Multiaddr::peer_id).collect();
        for (peer, addrs) in remembered {
            if peer == local || named.contains(&peer) || addrs.is_empty() {
                continue;
            }
            let label = addrs[0].clone();
            dialer.push(Origin::Remembered, Some(peer), addrs, label, now);
        }
        (dialer, notes)
    }

    fn push(
        &mut self,
        origin: Origin,
        peer: Option<PeerId>,
        addrs: Vec<Multiaddr>,
        label: Multiaddr,
        now: Instant,
    ) {
        self.targets.push(Target {
            origin,
            peer,
            addrs,
            label,
            next_addr: 0,
            delay: BACKOFF_START,
            due: now,
            in_flight: false,
            failures: 0,
        });
    }

    /// Addresses this module dials (without `/p2p/`): it reports their
    /// failures itself.
    pub(crate) fn addresses(&self) -> HashSet<Multiaddr> {
        self.targets
            .iter()
            .flat_map(|t| t.addrs.iter().cloned())
            .collect()
    }

    /// How many bootstrap addresses and remembered peers there are.
    pub(crate) fn counts(&self) -> (usize, usize) {
        let bootstrap = self
            .targets
            .iter()
            .filter(|t| t.origin == Origin::Bootstrap)
            .count();
        (bootstrap, self.targets.len() - bootstrap)
    }

    /// The dials to start at `now`, given the connected peers;
    /// remembered peers are dialled only if `want_more` peers.
    pub(crate) fn poll_dials(
        &mut self,
        now: Instant,
        connected: &HashSet<PeerId>,
        want_more: bool,
    ) -> Vec<Dial> {
        let mut dials = Vec::new();
        for (i, t) in self.targets.iter_mut().enumerate() {
            if t.in_flight {
                continue;
            }
            if t.peer.is_some_and(|p| connected.contains(&p)) {
                // Connected: once it goes, the first retry comes soon.
                t.delay = BACKOFF_START;
                t.due = now + BACKOFF_START;
                continue;
            }
            if now < t.due
                || (t.origin == Origin::Remembered && !want_more)
                || self.in_flight >= MAX_DIALS_IN_FLIGHT
            {
                continue;
            }
            let addr = &t.addrs[t.next_addr % t.addrs.len()];
            t.next_addr = t.next_addr.wrapping_add(1);
            t.in_flight = true;
            self.in_flight += 1;
            dials.push(Dial {
                target: i,
                addr: match t.peer {
                    Some(peer) => addr.with_peer_id(peer),
                    None => addr.clone(),
                },
            });
        }
        dials
    }

    /// Takes the outcome of a dial of [`Dialer::poll_dials`] (the peer that
    /// answered, or why not); returns the line to print, if any.
    pub(crate) fn handle_result(
        &mut self,
        dial: &Dial,
        result: Result<PeerId, &DialError>,
        now: Instant,
    ) -> Option<String> {
        let t = self.targets.get_mut(dial.target)?;
        if t.in_flight {
            t.in_flight = false;
            self.in_flight = self.in_flight.saturating_sub(1);
        }
        let error = match result {
            Ok(peer) => {
                t.peer.get_or_insert(peer);
                t.failures = 0;
                t.delay = BACKOFF_START;
                t.due = now + BACKOFF_START;
                return None;
            }
            Err(e) => e,
        };
        let next = t.delay;
        t.due = now + next;
        if is_local(error) {
            // Nothing was tried: no news about the peer, no longer wait.
            tracing::debug!(addr = %dial.addr, %error, "dial not attempted");
            return None;
        }
        t.failures = t.failures.saturating_add(1);
        t.delay = (t.delay * 2).min(BACKOFF_CAP);
        let secs = next.as_secs();
        match t.origin {
            Origin::Bootstrap => Some(match error.actual_peer() {
                Some(actual) => format!(
                    "bootstrap {} answered as another peer ({actual}); check its /p2p/ part; \
                     next try in {secs} s",
                    t.label
                ),
                None => format!(
                    "bootstrap {} unreachable: {}; next try in {secs} s",
                    t.label,
                    short_reason(error)
                ),
            }),
            Origin::Remembered if t.failures == 1 => Some(format!(
                "remembered peer {} unreachable at {}: {}; retrying up to every {} s",
                t.peer.map_or_else(|| "?".to_owned(), |p| p.to_string()),
                dial.addr.without_peer_id(),
                short_reason(error),
                BACKOFF_CAP.as_secs()
            )),
            Origin::Remembered => {
                tracing::debug!(addr = %dial.addr, %error, "remembered peer unreachable");
                None
            }
        }
    }
}

/// Dial errors that tried nothing, so say nothing about the address.
fn is_local(e: &DialError) -> bool {
    matches!(
        e,
        DialError::RateLimited(_)
            | DialError::TooManySessions(_)
            | DialError::ShuttingDown
            | DialError::ServiceStopped
            | DialError::NoRuntime
            | DialError::AlreadyConnected(_)
    )
}

/// Why a dial failed, in a few words (the address is printed beside it).
pub(crate) fn short_reason(e: &DialError) -> String {
    match e {
        DialError::Transport(t) => match &**t {
            TransportError::ConnectionRefused(_) => "connection refused".to_owned(),
            TransportError::DialTimeout { after, .. } => {
                format!("no answer within {} s", after.as_secs_f64())
            }
            TransportError::Io { source, .. } => io_reason(source),
            TransportError::Resolve { name, reason } => format!("cannot resolve {name}: {reason}"),
            other => other.to_string(),
        },
        DialError::Handshake(h) => match &**h {
            HandshakeError::PeerIdMismatch { actual, .. } => {
                format!("answered as another peer ({actual})")
            }
            HandshakeError::Timeout(after) => format!(
                "secure handshake not finished within {} s",
                after.as_secs_f64()
            ),
            HandshakeError::Io(io) => {
                format!(
                    "connection lost in the secure handshake ({})",
                    io_reason(io)
                )
            }
            other => format!("secure handshake failed: {other}"),
        },
        DialError::NoTransport(_) => "not a TCP address".to_owned(),
        other => other.to_string(),
    }
}

/// An I/O error in a few words: the kind, unless it says nothing.
fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::Other => e.to_string(),
        kind => kind.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn peer() -> PeerId {
        shoal_identity::Keypair::try_generate().unwrap().peer_id()
    }

    fn refused(addr: &Multiaddr) -> DialError {
        DialError::Transport(Arc::new(TransportError::ConnectionRefused(addr.clone())))
    }

    #[test]
    fn bootstrap_failures_back_off_to_the_cap_and_are_printed() {
        let (local, b) = (peer(), peer());
        let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/9/p2p/{b}").parse().unwrap();
        let t0 = Instant::now();
        let (mut dialer, notes) = Dialer::new(local, std::slice::from_ref(&addr), vec![], t0);
        assert!(notes.is_empty());
        let none = HashSet::new();
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..9 {
            let dials = dialer.poll_dials(now, &none, true);
            assert_eq!(dials.len(), 1);
            assert_eq!(dials[0].addr, addr);
            assert!(
                dialer.poll_dials(now, &none, true).is_empty(),
                "one at a time"
            );
            let line = dialer
                .handle_result(&dials[0], Err(&refused(&addr)), now)
                .unwrap();
            assert!(
                line.starts_with(&format!("bootstrap {addr} unreachable: connection refused")),
                "{line}"
            );
            let wait = dialer.targets[0].due - now;
            waits.push(wait.as_secs());
            assert!(
                dialer
                    .poll_dials(now + wait - Duration::from_millis(1), &none, true)
                    .is_empty()
            );
            now += wait;
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        // Connected: no dial, and the backoff starts over.
        let connected: HashSet<PeerId> = [b].into();
        assert!(dialer.poll_dials(now, &connected, true).is_empty());
        assert_eq!(dialer.targets[0].delay, BACKOFF_START);
    }

    #[test]
    fn remembered_peers_wait_while_the_node_has_enough_and_are_printed_once() {
        let (local, r) = (peer(), peer());
        let addr: Multiaddr = "/ip4/127.0.0.1/tcp/9".parse().unwrap();
        let t0 = Instant::now();
        let (mut dialer, _) = Dialer::new(local, &[], vec![(r, vec![addr.clone()])], t0);
        let none = HashSet::new();
        assert!(dialer.poll_dials(t0, &none, false).is_empty());
        let dials = dialer.poll_dials(t0, &none, true);
        assert_eq!(dials[0].addr, addr.with_peer_id(r));
        assert!(
            dialer
                .handle_result(&dials[0], Err(&refused(&addr)), t0)
                .is_some()
        );
        let later = t0 + BACKOFF_CAP;
        let dials = dialer.poll_dials(later, &none, true);
        assert!(
            dialer
                .handle_result(&dials[0], Err(&refused(&addr)), later)
                .is_none()
        );
    }

    #[test]
    fn a_wrong_peer_and_ourselves_are_named() {
        let (local, b, actual) = (peer(), peer(), peer());
        let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/9/p2p/{b}").parse().unwrap();
        let own: Multiaddr = format!("/ip4/127.0.0.1/tcp/8/p2p/{local}").parse().unwrap();
        let t0 = Instant::now();
        let (mut dialer, notes) = Dialer::new(local, &[addr.clone(), own], vec![], t0);
        assert_eq!(notes.len(), 1, "{notes:?}");
        let dials = dialer.poll_dials(t0, &HashSet::new(), true);
        assert_eq!(dials.len(), 1);
        let e = DialError::Handshake(Arc::new(HandshakeError::PeerIdMismatch {
            expected: b,
            actual,
        }));
        let line = dialer.handle_result(&dials[0], Err(&e), t0).unwrap();
        assert!(
            line.starts_with(&format!(
                "bootstrap {addr} answered as another peer ({actual})"
            )),
            "{line}"
        );
    }
}
