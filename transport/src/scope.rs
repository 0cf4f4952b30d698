//! How far an address reaches, and which addresses a node may dial when it
//! learned them from someone else.
//!
//! Anyone can claim anything about addresses: a peer on the internet that
//! tells a node "dial 192.168.1.1:22" makes it probe its own network. So an
//! address learned from a peer is dialled only if its scope is no narrower
//! than the scope over which that peer was reached: a peer reached over the
//! internet may point only at global addresses, one reached over a private
//! network at private or global ones, one on this machine (loopback, or an
//! in-memory transport) at anything. A test network whose "internet" is a
//! reserved range names it ([`ScopePolicy::with_global_ranges`]), so that
//! its private networks behind NAT routers stay private; one without such
//! networks may set [`ScopePolicy::Any`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use crate::{Multiaddr, Protocol};

/// How far an address reaches, from the widest to the narrowest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AddressScope {
    /// Routable on the internet.
    Global,
    /// A private, link-local, shared (carrier NAT) or reserved range.
    Private,
    /// This machine: loopback, or an in-memory transport.
    Loopback,
}

impl AddressScope {
    /// The scope of `ip`.
    pub fn of_ip(ip: IpAddr) -> AddressScope {
        match ip {
            IpAddr::V4(v4) => scope_v4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => scope_v4(v4),
                None => scope_v6(v6),
            },
        }
    }

    /// The scope of `addr`: of its IP component, [`AddressScope::Loopback`]
    /// for an in-memory address. A DNS name may resolve anywhere (a name a
    /// peer controls can point at `192.168.1.1`, `localhost` at loopback),
    /// so it counts as [`AddressScope::Private`]: taken only from sources
    /// reached over a private network or this machine.
    pub fn of(addr: &Multiaddr) -> AddressScope {
        match addr.iter().next() {
            Some(Protocol::Ip4(ip)) => scope_v4(*ip),
            Some(Protocol::Ip6(ip)) => AddressScope::of_ip(IpAddr::V6(*ip)),
            Some(Protocol::Memory(_)) => AddressScope::Loopback,
            _ => AddressScope::Private,
        }
    }
}

fn scope_v4(ip: Ipv4Addr) -> AddressScope {
    let o = ip.octets();
    if ip.is_loopback() {
        AddressScope::Loopback
    } else if ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64/10, carrier NAT
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18/15, benchmarking
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0/24
        || o[0] >= 240
    {
        AddressScope::Private
    } else {
        AddressScope::Global
    }
}

fn scope_v6(ip: Ipv6Addr) -> AddressScope {
    let s = ip.segments();
    if ip.is_loopback() {
        AddressScope::Loopback
    } else if ip.is_unspecified()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local
        || (s[0] & 0xffc0) == 0xfe80 // link local
        || (s[0] == 0x2001 && s[1] == 0x0db8)
    // documentation
    {
        AddressScope::Private
    } else {
        AddressScope::Global
    }
}

/// A block of IP addresses, `198.18.0.0/15` or `2001:db8::/32`.
///
/// ```
/// use shoal_transport::IpRange;
/// let lab: IpRange = "198.18.0.0/15".parse().unwrap();
/// assert!(lab.contains("198.19.7.1".parse().unwrap()));
/// assert!(!lab.contains("198.20.0.1".parse().unwrap()));
/// assert!("198.18.0.0/33".parse::<IpRange>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpRange {
    base: IpAddr,
    prefix: u8,
}

impl IpRange {
    /// Whether `ip` is in the block (an IPv4-mapped IPv6 address as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        // Both as 128 bits, the address at the top: the prefix counts from
        // the first bit either way.
        let bits = |a: IpAddr| -> Option<u128> {
            match (self.base, a.to_canonical()) {
                (IpAddr::V4(_), IpAddr::V4(v4)) => Some(u128::from(u32::from(v4)) << 96),
                (IpAddr::V6(_), IpAddr::V6(v6)) => Some(u128::from(v6)),
                _ => None,
            }
        };
        let (Some(base), Some(ip)) = (bits(self.base), bits(ip)) else {
            return false;
        };
        let mask = u128::MAX
            .checked_shl(128 - u32::from(self.prefix))
            .unwrap_or(0);
        base & mask == ip & mask
    }
}

impl std::str::FromStr for IpRange {
    type Err = String;

    fn from_str(s: &str) -> Result<IpRange, String> {
        let (ip, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("{s}: expected <ip>/<prefix length>"))?;
        let base: IpAddr = ip.parse().map_err(|e| format!("{s}: {e}"))?;
        let prefix: u8 = prefix.parse().map_err(|e| format!("{s}: {e}"))?;
        let max = if base.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(format!("{s}: a prefix of at most {max} bits"));
        }
        Ok(IpRange { base, prefix })
    }
}

impl std::fmt::Display for IpRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

/// Which addresses learned from others a node dials.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ScopePolicy {
    /// Only those no narrower than the scope the source was reached over
    /// (see the module docs). The default.
    #[default]
    NoNarrowerThanSource,
    /// The same rule, with the addresses in these ranges counted as
    /// [`AddressScope::Global`]: for a test network whose "internet" is a
    /// reserved range (the NAT lab's `198.18.0.0/15`), so that its private
    /// networks behind NAT routers stay private. Built by
    /// [`ScopePolicy::with_global_ranges`].
    GlobalRanges(Arc<[IpRange]>),
    /// Any address: for test networks whose "internet" is a private or
    /// reserved range and that have no narrower networks in them.
    Any,
}

impl ScopePolicy {
    /// This policy with the addresses in `ranges` counted as global as
    /// well; [`ScopePolicy::Any`] stays as it is, and no ranges change
    /// nothing.
    pub fn with_global_ranges(self, ranges: &[IpRange]) -> ScopePolicy {
        if ranges.is_empty() {
            return self;
        }
        match self {
            ScopePolicy::Any => ScopePolicy::Any,
            ScopePolicy::NoNarrowerThanSource => ScopePolicy::GlobalRanges(ranges.into()),
            ScopePolicy::GlobalRanges(known) => {
                let mut all = known.to_vec();
                all.extend_from_slice(ranges);
                ScopePolicy::GlobalRanges(all.into())
            }
        }
    }

    /// The scope of `addr` under this policy: [`AddressScope::of`], except
    /// that addresses in the policy's global ranges are global.
    pub fn scope_of(&self, addr: &Multiaddr) -> AddressScope {
        if let ScopePolicy::GlobalRanges(ranges) = self {
            let ip = match addr.iter().next() {
                Some(Protocol::Ip4(ip)) => Some(IpAddr::V4(*ip)),
                Some(Protocol::Ip6(ip)) => Some(IpAddr::V6(*ip)),
                _ => None,
            };
            if ip.is_some_and(|ip| ranges.iter().any(|r| r.contains(ip))) {
                return AddressScope::Global;
            }
        }
        AddressScope::of(addr)
    }

    /// Whether `addr`, learned from a peer reached over `source` (the
    /// address of that session, or `None` if unknown: treated as global),
    /// may be dialled.
    pub fn allows(&self, addr: &Multiaddr, source: Option<&Multiaddr>) -> bool {
        match self {
            ScopePolicy::Any => true,
            _ => self.scope_of(addr) <= source.map_or(AddressScope::Global, |s| self.scope_of(s)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(s: &str) -> AddressScope {
        AddressScope::of(&s.parse().unwrap())
    }

    #[test]
    fn scopes() {
        assert_eq!(scope("/ip4/127.0.0.1/tcp/1"), AddressScope::Loopback);
        assert_eq!(scope("/ip6/::1/tcp/1"), AddressScope::Loopback);
        assert_eq!(scope("/memory/7"), AddressScope::Loopback);
        for private in [
            "/ip4/10.1.2.3/tcp/1",
            "/ip4/172.16.0.1/tcp/1",
            "/ip4/192.168.1.1/tcp/22",
            "/ip4/169.254.1.1/tcp/1",
            "/ip4/100.64.0.1/tcp/1",
            "/ip4/198.18.7.1/tcp/1",
            "/ip4/0.0.0.0/tcp/1",
            "/ip6/fd00::1/tcp/1",
            "/ip6/fe80::1/tcp/1",
            "/ip6/::ffff:192.168.0.1/tcp/1",
        ] {
            assert_eq!(scope(private), AddressScope::Private, "{private}");
        }
        assert_eq!(scope("/ip4/1.1.1.1/tcp/1"), AddressScope::Global);
        assert_eq!(scope("/ip4/100.128.0.1/tcp/1"), AddressScope::Global);
        assert_eq!(scope("/ip6/2a00::1/tcp/1"), AddressScope::Global);
        assert_eq!(scope("/dns/example.org/tcp/1"), AddressScope::Private);
    }

    #[test]
    fn policy() {
        let a = |s: &str| s.parse::<Multiaddr>().unwrap();
        let policy = ScopePolicy::default();
        let internet = a("/ip4/1.2.3.4/tcp/1");
        let lan = a("/ip4/192.168.1.9/tcp/1");
        let local = a("/ip4/127.0.0.1/tcp/1");
        assert!(policy.allows(&internet, Some(&internet)));
        assert!(!policy.allows(&lan, Some(&internet)));
        assert!(!policy.allows(&local, Some(&internet)));
        assert!(!policy.allows(&lan, None));
        assert!(policy.allows(&lan, Some(&lan)));
        assert!(!policy.allows(&local, Some(&lan)));
        assert!(policy.allows(&lan, Some(&local)));
        assert!(ScopePolicy::Any.allows(&local, Some(&internet)));
    }

    #[test]
    fn global_ranges() {
        let a = |s: &str| s.parse::<Multiaddr>().unwrap();
        let lab = ScopePolicy::default().with_global_ranges(&["198.18.0.0/15".parse().unwrap()]);
        let public = a("/ip4/198.18.1.2/tcp/1");
        let behind_nat = a("/ip4/10.0.3.2/tcp/1");
        assert_eq!(lab.scope_of(&public), AddressScope::Global);
        assert_eq!(lab.scope_of(&behind_nat), AddressScope::Private);
        // A lab host reached over the lab's internet may point only at
        // lab-internet addresses, not at someone's home network.
        assert!(lab.allows(&public, Some(&public)));
        assert!(!lab.allows(&behind_nat, Some(&public)));
        assert!(lab.allows(&public, Some(&behind_nat)));
        assert!(lab.allows(&behind_nat, Some(&behind_nat)));
        // Without the range, both are private and the home address passes.
        assert!(ScopePolicy::default().allows(&behind_nat, Some(&public)));
        assert_eq!(ScopePolicy::Any.with_global_ranges(&[]), ScopePolicy::Any);
        assert_eq!(
            ScopePolicy::default().with_global_ranges(&[]),
            ScopePolicy::default()
        );
    }
}
