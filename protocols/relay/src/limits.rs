//! What a relay grants, and the ledger that enforces it: a sans-IO record
//! of reservations and circuits, fed the time, with every count bounded.
//!
//! A relay forwards bytes it cannot read for peers it does not know, so
//! every resource is capped three ways: in total, per peer and per network
//! (the /24 or /48 of the peer's address, so one host with many keys
//! cannot take a relay's capacity for itself). Defaults are sized for chat:
//! a circuit carries messages and receipts, not files.

use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, Instant},
};

use shoal_identity::PeerId;

use crate::protocol::{Limit, StatusCode};

/// Default [`Limits::max_reservations`]: enough for the peers behind NAT
/// of a few thousand users on one relay process.
pub const DEFAULT_MAX_RESERVATIONS: usize = 10_000;
/// Default [`Limits::max_reservations_per_network`]: a carrier NAT puts
/// many users behind one address, so this is well above one household.
pub const DEFAULT_MAX_RESERVATIONS_PER_NETWORK: usize = 128;
/// Default [`Limits::reservation_ttl`]: a client renews well before.
pub const DEFAULT_RESERVATION_TTL: Duration = Duration::from_secs(3600);
/// Default [`Limits::max_circuits`].
pub const DEFAULT_MAX_CIRCUITS: usize = 2_048;
/// Default [`Limits::max_circuits_per_peer`]: at either end of a circuit.
pub const DEFAULT_MAX_CIRCUITS_PER_PEER: usize = 16;
/// Default [`Limits::max_circuits_per_network`]: circuits asked for from
/// one network.
pub const DEFAULT_MAX_CIRCUITS_PER_NETWORK: usize = 64;
/// Default [`Limits::circuit_bytes`]: 4 MiB each way, a few thousand chat
/// messages with their receipts and the DHT and mailbox traffic around
/// them.
pub const DEFAULT_CIRCUIT_BYTES: u64 = 4 << 20;
/// Default [`Limits::circuit_duration`]. When a circuit ends, the two
/// peers dial again through the relay if they still need to talk.
pub const DEFAULT_CIRCUIT_DURATION: Duration = Duration::from_secs(30 * 60);
/// Default [`Limits::max_pending`]: requests being read or answered.
pub const DEFAULT_MAX_PENDING: usize = 512;
/// Default [`Limits::request_timeout`].
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What a relay grants. Every field has a named default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Reservations held at once.
    pub max_reservations: usize,
    /// Reservations held at once for peers of one network (/24 or /48).
    pub max_reservations_per_network: usize,
    /// How long a reservation lasts unless renewed. It also ends when the
    /// client's session to the relay closes.
    pub reservation_ttl: Duration,
    /// Circuits open at once.
    pub max_circuits: usize,
    /// Circuits open at once with one peer at either end.
    pub max_circuits_per_peer: usize,
    /// Circuits open at once asked for from one network.
    pub max_circuits_per_network: usize,
    /// Bytes a circuit forwards in each direction; then it is closed.
    pub circuit_bytes: u64,
    /// How long a circuit lasts at most.
    pub circuit_duration: Duration,
    /// Hop requests being read or answered at once; more are refused.
    pub max_pending: usize,
    /// Time for a request to arrive, and for the reserved peer to answer
    /// a circuit.
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_reservations: DEFAULT_MAX_RESERVATIONS,
            max_reservations_per_network: DEFAULT_MAX_RESERVATIONS_PER_NETWORK,
            reservation_ttl: DEFAULT_RESERVATION_TTL,
            max_circuits: DEFAULT_MAX_CIRCUITS,
            max_circuits_per_peer: DEFAULT_MAX_CIRCUITS_PER_PEER,
            max_circuits_per_network: DEFAULT_MAX_CIRCUITS_PER_NETWORK,
            circuit_bytes: DEFAULT_CIRCUIT_BYTES,
            circuit_duration: DEFAULT_CIRCUIT_DURATION,
            max_pending: DEFAULT_MAX_PENDING,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

impl Limits {
    /// The limit every circuit is given, as it goes on the wire.
    pub fn circuit_limit(&self) -> Limit {
        Limit {
            bytes: self.circuit_bytes,
            secs: u32::try_from(self.circuit_duration.as_secs()).unwrap_or(u32::MAX),
        }
    }
}

/// The network (/24 or /48) a peer's address belongs to, or `None` when
/// the session has no IP address (an in-memory transport): such peers
/// count only against the totals.
pub type Network = Option<IpAddr>;

#[derive(Debug)]
struct Reservation {
    network: Network,
    expires: Instant,
    /// Which grant this is: a renewal makes a new one, so the end of an
    /// older grant's stream does not take the renewed reservation away.
    grant: u64,
}

/// One open circuit, to be handed back to [`Ledger::close_circuit`].
#[derive(Debug, PartialEq, Eq)]
pub struct CircuitTicket {
    src: PeerId,
    dst: PeerId,
    network: Network,
}

/// The relay's record of reservations and circuits.
#[derive(Debug)]
pub struct Ledger {
    limits: Limits,
    reservations: HashMap<PeerId, Reservation>,
    reservations_per_network: HashMap<IpAddr, usize>,
    circuits: usize,
    circuits_per_peer: HashMap<PeerId, usize>,
    circuits_per_network: HashMap<IpAddr, usize>,
    next_grant: u64,
}

/// A reservation granted by [`Ledger::reserve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// When it ends unless renewed.
    pub expires: Instant,
    /// Its number, for [`Ledger::release`].
    pub id: u64,
}

fn bump(map: &mut HashMap<IpAddr, usize>, network: Network) {
    if let Some(n) = network {
        *map.entry(n).or_default() += 1;
    }
}

fn drop_one<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: K) {
    if let Some(count) = map.get_mut(&key) {
        *count -= 1;
        if *count == 0 {
            map.remove(&key);
        }
    }
}

impl Ledger {
    /// An empty ledger under `limits`.
    pub fn new(limits: Limits) -> Ledger {
        Ledger {
            limits,
            reservations: HashMap::new(),
            reservations_per_network: HashMap::new(),
            circuits: 0,
            circuits_per_peer: HashMap::new(),
            circuits_per_network: HashMap::new(),
            next_grant: 0,
        }
    }

    /// The limits it enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Reservations held (expired ones count until the next call that
    /// sweeps them: [`Ledger::reserve`]).
    pub fn reservations(&self) -> usize {
        self.reservations.len()
    }

    /// Circuits open.
    pub fn circuits(&self) -> usize {
        self.circuits
    }

    /// Grants or renews `peer`'s reservation.
    pub fn reserve(
        &mut self,
        peer: PeerId,
        network: Network,
        now: Instant,
    ) -> Result<Grant, StatusCode> {
        self.next_grant += 1;
        let grant = self.next_grant;
        let expires = now + self.limits.reservation_ttl;
        if let Some(r) = self.reservations.get_mut(&peer)
            && r.network == network
        {
            r.expires = expires;
            r.grant = grant;
            return Ok(Grant { expires, id: grant });
        }
        // A peer asking from another network: its old reservation goes.
        if let Some(old) = self.reservations.remove(&peer)
            && let Some(n) = old.network
        {
            drop_one(&mut self.reservations_per_network, n);
        }
        if self.reservations.len() >= self.limits.max_reservations {
            self.sweep(now);
        }
        if self.reservations.len() >= self.limits.max_reservations {
            return Err(StatusCode::ResourceLimit);
        }
        if let Some(n) = network
            && self.reservations_per_network.get(&n).copied().unwrap_or(0)
                >= self.limits.max_reservations_per_network
        {
            return Err(StatusCode::ResourceLimit);
        }
        bump(&mut self.reservations_per_network, network);
        self.reservations.insert(
            peer,
            Reservation {
                network,
                expires,
                grant,
            },
        );
        Ok(Grant { expires, id: grant })
    }

    /// Ends `peer`'s reservation if it is still grant `id` (its stream
    /// closed). A later renewal is left alone.
    pub fn release(&mut self, peer: &PeerId, id: u64) {
        if self.reservations.get(peer).is_some_and(|r| r.grant == id)
            && let Some(r) = self.reservations.remove(peer)
            && let Some(n) = r.network
        {
            drop_one(&mut self.reservations_per_network, n);
        }
    }

    /// Whether `peer` holds a reservation that has not expired.
    pub fn is_reserved(&self, peer: &PeerId, now: Instant) -> bool {
        self.reservations.get(peer).is_some_and(|r| r.expires > now)
    }

    fn sweep(&mut self, now: Instant) {
        let expired: Vec<PeerId> = self
            .reservations
            .iter()
            .filter(|(_, r)| r.expires <= now)
            .map(|(p, _)| *p)
            .collect();
        for peer in expired {
            if let Some(r) = self.reservations.remove(&peer)
                && let Some(n) = r.network
            {
                drop_one(&mut self.reservations_per_network, n);
            }
        }
    }

    /// Opens a circuit from `src` (asking from `network`) to `dst`, which
    /// must hold a reservation.
    pub fn open_circuit(
        &mut self,
        src: PeerId,
        network: Network,
        dst: PeerId,
        now: Instant,
    ) -> Result<CircuitTicket, StatusCode> {
        if src == dst {
            return Err(StatusCode::Malformed);
        }
        if !self.is_reserved(&dst, now) {
            return Err(StatusCode::NoReservation);
        }
        let per_peer = |p: &PeerId| self.circuits_per_peer.get(p).copied().unwrap_or(0);
        let per_network = network.map_or(0, |n| {
            self.circuits_per_network.get(&n).copied().unwrap_or(0)
        });
        if self.circuits >= self.limits.max_circuits
            || per_peer(&src) >= self.limits.max_circuits_per_peer
            || per_peer(&dst) >= self.limits.max_circuits_per_peer
            || per_network >= self.limits.max_circuits_per_network
        {
            return Err(StatusCode::ResourceLimit);
        }
        self.circuits += 1;
        *self.circuits_per_peer.entry(src).or_default() += 1;
        *self.circuits_per_peer.entry(dst).or_default() += 1;
        bump(&mut self.circuits_per_network, network);
        Ok(CircuitTicket { src, dst, network })
    }

    /// Closes a circuit opened by [`Ledger::open_circuit`].
    pub fn close_circuit(&mut self, ticket: CircuitTicket) {
        self.circuits = self.circuits.saturating_sub(1);
        drop_one(&mut self.circuits_per_peer, ticket.src);
        drop_one(&mut self.circuits_per_peer, ticket.dst);
        if let Some(n) = ticket.network {
            drop_one(&mut self.circuits_per_network, n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u8) -> PeerId {
        PeerId::from_bytes([n; 32])
    }

    fn net(s: &str) -> Network {
        Some(s.parse().unwrap())
    }

    #[test]
    fn reservations_are_bounded_in_total_and_per_network() {
        let limits = Limits {
            max_reservations: 3,
            max_reservations_per_network: 2,
            ..Limits::default()
        };
        let mut ledger = Ledger::new(limits);
        let now = Instant::now();
        let a = net("198.51.100.0");
        assert!(ledger.reserve(peer(1), a, now).is_ok());
        assert!(ledger.reserve(peer(2), a, now).is_ok());
        assert_eq!(
            ledger.reserve(peer(3), a, now),
            Err(StatusCode::ResourceLimit)
        );
        // A renewal is not a new reservation.
        assert!(ledger.reserve(peer(1), a, now).is_ok());
        assert!(ledger.reserve(peer(3), net("203.0.113.0"), now).is_ok());
        assert_eq!(
            ledger.reserve(peer(4), net("192.0.2.0"), now),
            Err(StatusCode::ResourceLimit)
        );
        assert_eq!(ledger.reservations(), 3);
        // Expired reservations make room.
        let later = now + DEFAULT_RESERVATION_TTL + Duration::from_secs(1);
        assert!(!ledger.is_reserved(&peer(1), later));
        assert!(ledger.reserve(peer(4), net("192.0.2.0"), later).is_ok());
        assert_eq!(ledger.reservations(), 1);
    }

    #[test]
    fn the_end_of_an_old_grant_leaves_a_renewal_alone() {
        let mut ledger = Ledger::new(Limits::default());
        let now = Instant::now();
        let first = ledger.reserve(peer(1), None, now).unwrap();
        let second = ledger.reserve(peer(1), None, now).unwrap();
        ledger.release(&peer(1), first.id);
        assert!(ledger.is_reserved(&peer(1), now));
        ledger.release(&peer(1), second.id);
        assert!(!ledger.is_reserved(&peer(1), now));
        assert_eq!(ledger.reservations(), 0);
    }

    #[test]
    fn circuits_need_a_reservation_and_are_bounded() {
        let limits = Limits {
            max_circuits: 3,
            max_circuits_per_peer: 2,
            max_circuits_per_network: 2,
            ..Limits::default()
        };
        let mut ledger = Ledger::new(limits);
        let now = Instant::now();
        let (a, b) = (net("198.51.100.0"), net("203.0.113.0"));
        assert_eq!(
            ledger.open_circuit(peer(1), a, peer(9), now),
            Err(StatusCode::NoReservation)
        );
        ledger.reserve(peer(9), None, now).unwrap();
        ledger.reserve(peer(8), None, now).unwrap();
        assert_eq!(
            ledger.open_circuit(peer(9), a, peer(9), now),
            Err(StatusCode::Malformed)
        );
        let t1 = ledger.open_circuit(peer(1), a, peer(9), now).unwrap();
        let _t2 = ledger.open_circuit(peer(2), b, peer(9), now).unwrap();
        // peer 9 is at its two circuits.
        assert_eq!(
            ledger.open_circuit(peer(3), b, peer(9), now),
            Err(StatusCode::ResourceLimit)
        );
        let _t3 = ledger.open_circuit(peer(3), a, peer(8), now).unwrap();
        // Network a has two; the total is three.
        assert_eq!(
            ledger.open_circuit(peer(4), a, peer(8), now),
            Err(StatusCode::ResourceLimit)
        );
        assert_eq!(ledger.circuits(), 3);
        ledger.close_circuit(t1);
        assert_eq!(ledger.circuits(), 2);
        assert!(ledger.open_circuit(peer(4), a, peer(8), now).is_ok());
    }
}
