//! The address plan: which subnet each link and LAN gets.
//!
//! - Link `k` to the core (a public host or a NAT's WAN): `198.18.k.0/24`,
//!   the core at `.1`, the far end at `.2`. 198.18.0.0/15 is reserved for
//!   benchmarking (RFC 2544), so it never collides with a real network.
//! - NAT `n`'s LAN: `10.0.n.0/24`, the router at `.1`, hosts from `.2`.
//! - A double NAT's carrier LAN: `100.64.n.0/24` (RFC 6598 shared address
//!   space, as carriers use), the carrier router at `.1`, the home router at
//!   `.2`.

use std::net::Ipv4Addr;

/// How many links the core can have (public hosts plus NATs): one /24 each.
pub const MAX_LINKS: u8 = 254;

/// How many NATs a lab can have: one LAN /24 each.
pub const MAX_NATS: u8 = 254;

/// How many hosts one NAT's LAN holds (`.2` to `.254`).
pub const MAX_HOSTS_PER_NAT: u8 = 253;

/// Prefix length of every lab subnet.
pub(crate) const PREFIX_LEN: u8 = 24;

/// Core side of link `k`.
pub(crate) fn link_core(k: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, k, 1)
}

/// Far side of link `k`.
pub(crate) fn link_far(k: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, k, 2)
}

/// Address `i` on NAT `n`'s LAN (`i == 1` is the router).
pub(crate) fn lan(n: u8, i: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, n, i)
}

/// Address `i` on double NAT `n`'s carrier LAN (`i == 1` is the carrier).
pub(crate) fn carrier(n: u8, i: u8) -> Ipv4Addr {
    Ipv4Addr::new(100, 64, n, i)
}

/// `a.b.c.d/24`, as `ip addr add` takes it.
pub(crate) fn cidr(addr: Ipv4Addr) -> String {
    format!("{addr}/{PREFIX_LEN}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_get_distinct_subnets() {
        assert_eq!(link_core(3), Ipv4Addr::new(198, 18, 3, 1));
        assert_eq!(link_far(3), Ipv4Addr::new(198, 18, 3, 2));
        assert_ne!(link_far(3).octets()[2], link_far(4).octets()[2]);
        assert_eq!(cidr(lan(2, 1)), "10.0.2.1/24");
        assert_eq!(carrier(9, 2), Ipv4Addr::new(100, 64, 9, 2));
    }
}
