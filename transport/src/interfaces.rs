//! Turning a listen address on an unspecified IP (`0.0.0.0`, `::`) into the
//! addresses other hosts can dial: one per address of this host's network
//! interfaces, of the same family.
//!
//! An unspecified address accepts connections on every interface but means
//! nothing to a peer (dialling `0.0.0.0` reaches the dialler itself), so it
//! must never be announced. Loopback addresses are announced only when the
//! host has no other address of that family (a peer elsewhere reaching its
//! own loopback would dial itself); IPv6 link-local addresses need a scope
//! no multiaddr carries, so they are left out.

use std::net::IpAddr;

use crate::{Multiaddr, Protocol};

/// The IP addresses of this host's network interfaces (those that are up),
/// in the order the operating system lists them. Empty if they cannot be
/// read.
pub fn interface_ips() -> Vec<IpAddr> {
    match if_addrs::get_if_addrs() {
        Ok(list) => list.into_iter().map(|i| i.ip()).collect(),
        Err(e) => {
            tracing::debug!(error = %e, "cannot list network interfaces");
            Vec::new()
        }
    }
}

/// The network an address belongs to, as one party usually holds it: its
/// /24 for IPv4, its /48 for IPv6 (IPv4-mapped IPv6 counts as IPv4). Used
/// to count connections or reports per network rather than per address.
///
/// ```
/// use shoal_transport::subnet_of;
///
/// let ip = "198.51.100.77".parse().unwrap();
/// assert_eq!(subnet_of(ip), "198.51.100.0".parse::<std::net::IpAddr>().unwrap());
/// ```
pub fn subnet_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpAddr::from([a, b, c, 0])
        }
        IpAddr::V6(v6) => {
            let mut o = v6.octets();
            o[6..].fill(0);
            IpAddr::from(o)
        }
    }
}

fn link_local_v6(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
}

/// `addr` itself if its IP is specified (or it has none); otherwise one
/// address per usable IP of `ips` of the same family, the rest of `addr`
/// unchanged (see the module docs for which are usable).
///
/// ```
/// use shoal_transport::{Multiaddr, expand_unspecified};
///
/// let listen: Multiaddr = "/ip4/0.0.0.0/tcp/4001".parse().unwrap();
/// let ips = ["127.0.0.1".parse().unwrap(), "198.18.0.7".parse().unwrap()];
/// let out = expand_unspecified(&listen, &ips);
/// assert_eq!(out, vec!["/ip4/198.18.0.7/tcp/4001".parse::<Multiaddr>().unwrap()]);
/// ```
pub fn expand_unspecified(addr: &Multiaddr, ips: &[IpAddr]) -> Vec<Multiaddr> {
    let v4 = match addr.iter().next() {
        Some(Protocol::Ip4(ip)) if ip.is_unspecified() => true,
        Some(Protocol::Ip6(ip)) if ip.is_unspecified() => false,
        _ => return vec![addr.clone()],
    };
    let family: Vec<IpAddr> = ips
        .iter()
        .copied()
        .filter(|ip| ip.is_ipv4() == v4 && !ip.is_unspecified() && !link_local_v6(ip))
        .collect();
    let routable: Vec<IpAddr> = family
        .iter()
        .copied()
        .filter(|ip| !ip.is_loopback())
        .collect();
    let chosen = if routable.is_empty() {
        family
    } else {
        routable
    };
    chosen
        .into_iter()
        .map(|ip| {
            let mut out = Multiaddr::empty().with(match ip {
                IpAddr::V4(v4) => Protocol::Ip4(v4),
                IpAddr::V6(v6) => Protocol::Ip6(v6),
            });
            for p in addr.iter().skip(1) {
                out.push(p.clone());
            }
            out
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn specified_addresses_stay() {
        let a: Multiaddr = "/ip4/198.18.0.1/tcp/1".parse().unwrap();
        assert_eq!(expand_unspecified(&a, &ips(&["198.18.0.7"])), vec![a]);
    }

    #[test]
    fn each_family_gets_its_own_interfaces_and_loopback_only_alone() {
        let host = ips(&["127.0.0.1", "::1", "198.18.0.7", "fe80::1", "2001:db8::7"]);
        let v6: Multiaddr = "/ip6/::/tcp/9".parse().unwrap();
        let out = expand_unspecified(&v6, &host);
        assert_eq!(out.len(), 1);
        assert!(out[0].to_string().starts_with("/ip6/2001:db8::7/tcp/9"));
        let lo_only = ips(&["127.0.0.1"]);
        let v4: Multiaddr = "/ip4/0.0.0.0/tcp/9".parse().unwrap();
        assert_eq!(
            expand_unspecified(&v4, &lo_only),
            vec!["/ip4/127.0.0.1/tcp/9".parse::<Multiaddr>().unwrap()]
        );
        assert!(expand_unspecified(&v4, &[]).is_empty());
    }

    #[test]
    fn this_host_has_interfaces() {
        // Every host running the tests has at least loopback.
        assert!(interface_ips().iter().any(IpAddr::is_loopback));
    }
}
