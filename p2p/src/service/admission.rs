//! Inbound admission: which accepted connection may start a handshake, and
//! which may then hold a session.
//!
//! Handshakes cost CPU (Diffie-Hellman) and a slot while unfinished, and
//! nothing about the peer is known before they end: only its IP address.
//! So a connection is admitted at accept time, before any byte is read,
//! against four bounds (see [`Config`](crate::config::Config)):
//!
//! * unfinished handshakes in total (`max_inbound_handshakes`), a budget of
//!   their own, smaller than the session limit: a flood of connections that
//!   never finish their handshake cannot take the slots of established
//!   sessions, and sessions cannot starve new handshakes;
//! * connections (handshaking or established) from one IP address
//!   (`max_inbound_per_ip`) and unfinished handshakes from one IP address
//!   (`max_handshakes_per_ip`);
//! * connections from one IPv4 /24 or IPv6 /48 (`max_inbound_per_subnet`);
//! * handshakes started per second from one IP address
//!   (`handshake_rate_per_ip`, a token bucket with a burst of twice the
//!   rate).
//!
//! One address or subnet can thus hold only a small share of the slots: the
//! rest stay free for every other peer, new or known. Connections without an
//! IP address (the in-memory transport) are bounded by the totals only. A
//! refused connection is closed at once, before the handshake.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Instant,
};

use shoal_transport::{Multiaddr, subnet_of};

use super::shared::lock;
use crate::config::Config;

/// Entries kept for addresses with no connection left, only for their rate
/// bucket; past this many the idle ones are dropped. Bounds memory.
const MAX_IDLE_ENTRIES: usize = 4096;

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Too many unfinished handshakes in total.
    Handshakes,
    /// Too many connections or handshakes from this IP address.
    PerIp,
    /// Too many connections from this /24 (/48).
    PerSubnet,
    /// Handshakes started too fast from this IP address.
    Rate,
}

impl Refusal {
    /// A readable reason.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Refusal::Handshakes => "too many unfinished handshakes",
            Refusal::PerIp => "too many connections from this address",
            Refusal::PerSubnet => "too many connections from this subnet",
            Refusal::Rate => "handshakes started too fast from this address",
        }
    }
}

#[derive(Debug, Default)]
struct IpEntry {
    connections: usize,
    handshakes: usize,
    tokens: f64,
    refilled: Option<Instant>,
}

#[derive(Debug, Default)]
struct Counts {
    handshakes: usize,
    per_ip: HashMap<IpAddr, IpEntry>,
    per_subnet: HashMap<IpAddr, usize>,
}

/// The admission state of a service (shared by its listeners).
#[derive(Debug)]
pub(crate) struct Admission {
    config: Config,
    counts: Mutex<Counts>,
}

/// A connection's claim while it handshakes; [`Ticket::established`] turns
/// it into a session's claim. Dropping it gives everything back.
#[derive(Debug)]
pub(crate) struct Ticket {
    admission: Arc<Admission>,
    ip: Option<IpAddr>,
    handshaking: bool,
}

/// The IP address a connection came from (IPv4-mapped IPv6 as IPv4).
/// None for a relayed connection: its address starts with the relay's IP,
/// which all its circuits share, and the relay bounds them per peer itself.
impl Admission {
    pub(crate) fn new(config: Config) -> Admission {
        Admission {
            config,
            counts: Mutex::new(Counts::default()),
        }
    }

    /// Admits a connection from `remote` to its handshake, or says why not.
    pub(crate) fn admit(
        self: &Arc<Self>,
        remote: &Multiaddr,
        now: Instant,
    ) -> Result<Ticket, Refusal> {
        let c = &self.config;
        let ip = remote.direct_ip();
        let mut counts = lock(&self.counts);
        if counts.handshakes >= c.max_inbound_handshakes {
            return Err(Refusal::Handshakes);
        }
        if let Some(ip) = ip {
            let subnet = subnet_of(ip);
            if counts.per_subnet.get(&subnet).copied().unwrap_or(0) >= c.max_inbound_per_subnet {
                return Err(Refusal::PerSubnet);
            }
            if counts.per_ip.len() >= MAX_IDLE_ENTRIES {
                counts.per_ip.retain(|_, e| e.connections > 0);
            }
            let rate = f64::from(c.handshake_rate_per_ip);
            let burst = rate * 2.0;
            let entry = counts.per_ip.entry(ip).or_default();
            if entry.connections >= c.max_inbound_per_ip
                || entry.handshakes >= c.max_handshakes_per_ip
            {
                return Err(Refusal::PerIp);
            }
            entry.tokens = match entry.refilled {
                None => burst,
                Some(at) => (entry.tokens + now.saturating_duration_since(at).as_secs_f64() * rate)
                    .min(burst),
            };
            entry.refilled = Some(now);
            if entry.tokens < 1.0 {
                return Err(Refusal::Rate);
            }
            entry.tokens -= 1.0;
            entry.connections += 1;
            entry.handshakes += 1;
            *counts.per_subnet.entry(subnet).or_insert(0) += 1;
        }
        counts.handshakes += 1;
        Ok(Ticket {
            admission: self.clone(),
            ip,
            handshaking: true,
        })
    }

    /// Unfinished inbound handshakes now.
    #[cfg(test)]
    fn handshakes(&self) -> usize {
        lock(&self.counts).handshakes
    }
}

impl Ticket {
    /// The handshake finished: the handshake slot is freed, the per-address
    /// and per-subnet counts stay with the session.
    pub(crate) fn established(&mut self) {
        if !self.handshaking {
            return;
        }
        self.handshaking = false;
        let mut counts = lock(&self.admission.counts);
        counts.handshakes = counts.handshakes.saturating_sub(1);
        if let Some(e) = self.ip.and_then(|ip| counts.per_ip.get_mut(&ip)) {
            e.handshakes = e.handshakes.saturating_sub(1);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut counts = lock(&self.admission.counts);
        if self.handshaking {
            counts.handshakes = counts.handshakes.saturating_sub(1);
        }
        let Some(ip) = self.ip else {
            return;
        };
        if let Some(e) = counts.per_ip.get_mut(&ip) {
            e.connections = e.connections.saturating_sub(1);
            if self.handshaking {
                e.handshakes = e.handshakes.saturating_sub(1);
            }
        }
        let subnet = subnet_of(ip);
        if let Some(n) = counts.per_subnet.get_mut(&subnet) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.per_subnet.remove(&subnet);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Duration;

    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    fn admission(f: impl FnOnce(&mut Config)) -> Arc<Admission> {
        let mut c = Config::default();
        f(&mut c);
        Arc::new(Admission::new(c))
    }

    #[test]
    fn per_ip_bounds_leave_room_for_other_addresses() {
        let a = admission(|c| {
            c.max_inbound_per_ip = 4;
            c.max_handshakes_per_ip = 2;
        });
        let now = Instant::now();
        let attacker = addr("/ip4/10.0.0.1/tcp/1");
        let mut held: Vec<Ticket> = (0..2).map(|_| a.admit(&attacker, now).unwrap()).collect();
        assert_eq!(a.admit(&attacker, now).unwrap_err(), Refusal::PerIp);
        // Finished handshakes free the handshake bound, not the address bound.
        held.iter_mut().for_each(Ticket::established);
        held.extend((0..2).map(|_| a.admit(&attacker, now).unwrap()));
        assert_eq!(a.admit(&attacker, now).unwrap_err(), Refusal::PerIp);
        assert!(a.admit(&addr("/ip4/10.0.1.1/tcp/1"), now).is_ok());
        drop(held);
        assert!(a.admit(&attacker, now).is_ok());
    }

    #[test]
    fn per_subnet_bound() {
        let a = admission(|c| c.max_inbound_per_subnet = 3);
        let now = Instant::now();
        let held: Vec<_> = (1..=3)
            .map(|i| {
                a.admit(&addr(&format!("/ip4/10.0.0.{i}/tcp/1")), now)
                    .unwrap()
            })
            .collect();
        let err = a.admit(&addr("/ip4/10.0.0.9/tcp/1"), now).unwrap_err();
        assert_eq!(err, Refusal::PerSubnet);
        assert!(a.admit(&addr("/ip4/10.0.1.9/tcp/1"), now).is_ok());
        drop(held);
    }

    #[test]
    fn handshake_rate_per_ip_is_a_token_bucket() {
        let a = admission(|c| c.handshake_rate_per_ip = 5);
        let t0 = Instant::now();
        let ip = addr("/ip6/2001:db8::1/tcp/1");
        for _ in 0..10 {
            drop(a.admit(&ip, t0).unwrap());
        }
        assert_eq!(a.admit(&ip, t0).unwrap_err(), Refusal::Rate);
        assert!(a.admit(&ip, t0 + Duration::from_millis(200)).is_ok());
        assert_eq!(a.handshakes(), 0);
    }

    #[test]
    fn total_handshake_budget_applies_without_ip() {
        let a = admission(|c| c.max_inbound_handshakes = 2);
        let now = Instant::now();
        let mem = addr("/memory/7");
        let mut t1 = a.admit(&mem, now).unwrap();
        let _t2 = a.admit(&mem, now).unwrap();
        assert_eq!(a.admit(&mem, now).unwrap_err(), Refusal::Handshakes);
        t1.established();
        assert!(a.admit(&mem, now).is_ok());
    }
}
