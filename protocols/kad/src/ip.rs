//! IP prefixes of contacts, for the per-prefix caps of the routing table.
//!
//! Node ids cost nothing to make, but addresses do: capping how many
//! contacts of one network prefix a bucket (and the whole table) holds makes
//! filling a table with Sybils cost many networks, not many keys.

use std::net::IpAddr;

use shoal_transport::{Multiaddr, Protocol};

/// The network a contact's address belongs to: an IPv4 /24 or an IPv6 /48.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IpPrefix {
    /// The first three bytes of an IPv4 address.
    V4([u8; 3]),
    /// The first six bytes of an IPv6 address.
    V6([u8; 6]),
}

impl IpPrefix {
    /// The prefix of `ip`, or `None` for loopback and unspecified addresses,
    /// which are exempt from the caps (a single machine running a test
    /// network is not an attack).
    pub fn of(ip: IpAddr) -> Option<IpPrefix> {
        if ip.is_loopback() || ip.is_unspecified() {
            return None;
        }
        match ip {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                Some(IpPrefix::V4([o[0], o[1], o[2]]))
            }
            IpAddr::V6(v6) => {
                if let Some(v4) = v6.to_ipv4_mapped() {
                    return IpPrefix::of(IpAddr::V4(v4));
                }
                let o = v6.octets();
                Some(IpPrefix::V6([o[0], o[1], o[2], o[3], o[4], o[5]]))
            }
        }
    }

    /// The prefix of the first IP address among `addrs` (the driver lists
    /// the address it saw the peer connect from first). Addresses without
    /// an IP component (DNS, in-memory) have no prefix and are not capped.
    pub fn of_addrs(addrs: &[Multiaddr]) -> Option<IpPrefix> {
        addrs.iter().find_map(|a| match a.iter().next() {
            Some(Protocol::Ip4(ip)) => Some(IpPrefix::of(IpAddr::V4(*ip))),
            Some(Protocol::Ip6(ip)) => Some(IpPrefix::of(IpAddr::V6(*ip))),
            _ => None,
        })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        let a: Multiaddr = "/ip4/10.1.2.3/tcp/1".parse().unwrap();
        let b: Multiaddr = "/ip4/10.1.2.200/tcp/9".parse().unwrap();
        let c: Multiaddr = "/ip4/10.1.3.3/tcp/1".parse().unwrap();
        let pa = IpPrefix::of_addrs(std::slice::from_ref(&a));
        assert_eq!(pa, Some(IpPrefix::V4([10, 1, 2])));
        assert_eq!(pa, IpPrefix::of_addrs(&[b]));
        assert_ne!(pa, IpPrefix::of_addrs(&[c]));
        let lo: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
        assert_eq!(IpPrefix::of_addrs(&[lo]), None);
        let mem: Multiaddr = "/memory/5".parse().unwrap();
        assert_eq!(IpPrefix::of_addrs(&[mem, a]), pa);
        let v6: Multiaddr = "/ip6/2001:db8:1:2::1/tcp/1".parse().unwrap();
        assert_eq!(
            IpPrefix::of_addrs(&[v6]),
            Some(IpPrefix::V6([0x20, 0x01, 0x0d, 0xb8, 0, 1]))
        );
    }
}
