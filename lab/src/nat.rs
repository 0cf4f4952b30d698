//! NAT routers: the kinds, their iptables rules, and building them.

use std::net::Ipv4Addr;

use crate::links::{HOST_IF, WAN, join_lan, make_lan, to_core};
use crate::netns::{check_name, enable_forwarding, iptables_restore};
use crate::plan::{MAX_HOSTS_PER_NAT, MAX_NATS, carrier, lan};
use crate::{Host, Lab, LabError};

/// How a NAT maps its LAN onto its public address.
///
/// Every kind also filters like a home router: from the WAN side it lets in
/// only packets of connections its LAN opened (conntrack `ESTABLISHED` or
/// `RELATED`), both to the LAN and to the router itself. Nothing is port
/// forwarded. For a host without NAT use [`Lab::add_public_host`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NatKind {
    /// One router, `MASQUERADE`: Linux keeps the LAN host's source port when
    /// it is free, so one local port maps to the same public port whatever
    /// the destination (endpoint-independent mapping, as most home routers).
    EndpointIndependent,
    /// One router, `MASQUERADE --random`: each connection gets a fresh
    /// random public port (address-and-port-dependent mapping), the NAT that
    /// defeats hole punching.
    Symmetric,
    /// A carrier-grade NAT (WAN on the core, LAN in `100.64.n.0/24`) with a
    /// home router behind it (WAN on the carrier LAN, LAN in `10.0.n.0/24`).
    /// Both masquerade like [`NatKind::EndpointIndependent`].
    Double,
}

/// A NAT network of a [`Lab`]: its router(s) and the LAN behind them.
///
/// Add hosts to it with [`Lab::add_host_behind`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nat {
    pub(crate) name: String,
    pub(crate) kind: NatKind,
    /// Which LAN subnet (`10.0.index.0/24`).
    pub(crate) index: u8,
    pub(crate) public_ip: Ipv4Addr,
    /// The router whose LAN bridge hosts join (the home router for Double).
    pub(crate) router: String,
    /// The carrier router of a Double NAT.
    pub(crate) carrier: Option<String>,
    /// The tag of the lab that made it.
    pub(crate) lab: String,
}

impl Nat {
    /// The name given when the NAT was added.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What kind of NAT this is.
    pub fn kind(&self) -> NatKind {
        self.kind
    }

    /// The address the internet sees for this NAT's hosts: the router's WAN
    /// address, for [`NatKind::Double`] the carrier router's.
    pub fn public_ip(&self) -> Ipv4Addr {
        self.public_ip
    }

    /// The LAN router's address, the hosts' default gateway.
    pub fn lan_gateway(&self) -> Ipv4Addr {
        lan(self.index, 1)
    }

    /// The namespace of the router the LAN hosts sit behind (for
    /// [`NatKind::Double`], the home router).
    pub fn router_namespace(&self) -> &str {
        &self.router
    }

    /// The carrier router's namespace, for [`NatKind::Double`] only.
    pub fn carrier_namespace(&self) -> Option<&str> {
        self.carrier.as_deref()
    }
}

/// Masquerading out of the WAN, and a home router's inbound filter.
fn router_rules(random_ports: bool) -> String {
    let random = if random_ports { " --random" } else { "" };
    format!(
        "*nat\n\
         -A POSTROUTING -o {WAN} -j MASQUERADE{random}\n\
         COMMIT\n\
         *filter\n\
         -A FORWARD -i {WAN} -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n\
         -A FORWARD -i {WAN} -j DROP\n\
         -A INPUT -i {WAN} -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n\
         -A INPUT -i {WAN} -j DROP\n\
         COMMIT\n"
    )
}

/// Makes `router` a NAT router: forwarding on, a LAN at `gateway`,
/// masquerading and filtering on its `wan` interface.
fn make_router(router: &str, gateway: Ipv4Addr, random_ports: bool) -> Result<(), LabError> {
    enable_forwarding(router)?;
    make_lan(router, gateway)?;
    iptables_restore(router, &router_rules(random_ports))
}

/// Where a host sits: on the public segment, or alone behind a NAT of its
/// own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Place {
    /// A public host.
    Public,
    /// The one host of a new NAT network of this kind.
    Behind(NatKind),
}

impl Place {
    /// Every place, public first, then each kind of NAT.
    pub const ALL: [Place; 4] = [
        Place::Public,
        Place::Behind(NatKind::EndpointIndependent),
        Place::Behind(NatKind::Symmetric),
        Place::Behind(NatKind::Double),
    ];

    /// Every unordered pair of places (a place with itself too), in the
    /// order of [`Place::ALL`]: the ten pairings of two users.
    pub fn pairings() -> Vec<(Place, Place)> {
        let mut out = Vec::new();
        for (i, &a) in Place::ALL.iter().enumerate() {
            for &b in &Place::ALL[i..] {
                out.push((a, b));
            }
        }
        out
    }

    /// A short human name: `public`, `symmetric NAT`, …
    pub fn name(self) -> &'static str {
        match self {
            Place::Public => "public",
            Place::Behind(NatKind::EndpointIndependent) => "endpoint-independent NAT",
            Place::Behind(NatKind::Symmetric) => "symmetric NAT",
            Place::Behind(NatKind::Double) => "double NAT",
        }
    }
}

impl Lab {
    /// A host named `name` at `place`: a public host, or the one host of a
    /// new NAT network named `<name>n`.
    pub fn add_host_at(&mut self, name: &str, place: Place) -> Result<Host, LabError> {
        match place {
            Place::Public => self.add_public_host(name),
            Place::Behind(kind) => {
                let nat = self.add_nat(&format!("{name}n"), kind)?;
                self.add_host_behind(&nat, name)
            }
        }
    }

    /// Adds a NAT network of `kind` named `name`, its WAN linked to the core.
    pub fn add_nat(&mut self, name: &str, kind: NatKind) -> Result<Nat, LabError> {
        check_name(name)?;
        self.claim_name(name)?;
        let index = u8::try_from(self.nats.len() + 1)
            .ok()
            .filter(|n| *n <= MAX_NATS)
            .ok_or(LabError::Exhausted("NAT subnets"))?;
        let k = self.next_link()?;
        let router = self.new_namespace(name)?;
        let (public_ip, carrier_ns) = match kind {
            NatKind::EndpointIndependent | NatKind::Symmetric => {
                let public_ip = to_core(&self.core, k, &router, WAN)?;
                make_router(&router, lan(index, 1), kind == NatKind::Symmetric)?;
                (public_ip, None)
            }
            NatKind::Double => {
                let cgn = self.new_namespace(&format!("{name}-cgn"))?;
                let public_ip = to_core(&self.core, k, &cgn, WAN)?;
                make_router(&cgn, carrier(index, 1), false)?;
                join_lan(&cgn, 1, &router, WAN, carrier(index, 2), carrier(index, 1))?;
                make_router(&router, lan(index, 1), false)?;
                (public_ip, Some(cgn))
            }
        };
        self.nats.push(2);
        Ok(Nat {
            name: name.to_owned(),
            kind,
            index,
            public_ip,
            router,
            carrier: carrier_ns,
            lab: self.tag.clone(),
        })
    }

    /// Adds a host named `name` to `nat`'s LAN: a private address
    /// `10.0.n.i`, default route via the NAT router.
    pub fn add_host_behind(&mut self, nat: &Nat, name: &str) -> Result<Host, LabError> {
        if nat.lab != self.tag {
            return Err(LabError::ForeignNat(nat.name.clone()));
        }
        check_name(name)?;
        let slot = usize::from(nat.index) - 1;
        let i = *self
            .nats
            .get(slot)
            .ok_or_else(|| LabError::ForeignNat(nat.name.clone()))?;
        if i > MAX_HOSTS_PER_NAT + 1 {
            return Err(LabError::Exhausted("addresses on this NAT's LAN"));
        }
        self.claim_name(name)?;
        let namespace = self.new_namespace(name)?;
        let (ip, gateway) = (lan(nat.index, i), lan(nat.index, 1));
        join_lan(&nat.router, i, &namespace, HOST_IF, ip, gateway)?;
        if let Some(next) = self.nats.get_mut(slot) {
            *next = i + 1;
        }
        Ok(Host {
            name: name.to_owned(),
            namespace,
            ip,
            gateway,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_symmetric_randomises_ports() {
        assert!(router_rules(true).contains("MASQUERADE --random\n"));
        assert!(router_rules(false).contains("MASQUERADE\n"));
        let rules = router_rules(false);
        assert!(rules.contains("-A FORWARD -i wan -j DROP"));
        assert!(rules.contains("-A INPUT -i wan -j DROP"));
    }
}
