//! The addresses peers observe us at, turned into announced addresses once
//! enough independent peers agree.
//!
//! A node listening on `0.0.0.0` behind a router announces its interface
//! addresses, which are private. Peers elsewhere see its public IP (the
//! `observed_addr` of their identify message). Any single peer may lie, so
//! an observed IP counts only once peers from
//! [`Config::confirm_observed`](crate::Config::confirm_observed) distinct
//! networks (/24 or /48 of the session's remote address) reported it; then
//! it is announced with each unspecified listen address's port (right for a
//! host with a public address or a router forwarding the same port; whether
//! such an address is really reachable is for a reachability check).

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
};

/// Distinct observed IPs tracked; more are ignored. Bounds memory.
pub(crate) const MAX_OBSERVED_IPS: usize = 16;

/// The /24 (IPv4) or /48 (IPv6) a reporting peer connects from.
fn network_of(ip: IpAddr) -> IpAddr {
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

/// Observations so far.
#[derive(Debug, Default)]
pub(crate) struct Observed {
    /// Observed IP → networks of the peers that reported it.
    reports: HashMap<IpAddr, HashSet<IpAddr>>,
    confirmed: HashSet<IpAddr>,
}

impl Observed {
    /// A peer connecting from `reporter` says it sees us at `observed`.
    /// Returns the IP when this report confirms it (once per IP).
    pub(crate) fn report(
        &mut self,
        observed: IpAddr,
        reporter: IpAddr,
        needed: usize,
    ) -> Option<IpAddr> {
        let observed = observed.to_canonical();
        if needed == 0
            || observed.is_unspecified()
            || observed.is_loopback()
            || self.confirmed.contains(&observed)
        {
            return None;
        }
        if !self.reports.contains_key(&observed) && self.reports.len() >= MAX_OBSERVED_IPS {
            return None;
        }
        let networks = self.reports.entry(observed).or_default();
        networks.insert(network_of(reporter));
        if networks.len() >= needed {
            self.reports.remove(&observed);
            self.confirmed.insert(observed);
            return Some(observed);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn confirmed_by_distinct_networks_only_once() {
        let mut o = Observed::default();
        let public = ip("203.0.113.9");
        assert_eq!(o.report(public, ip("198.51.100.1"), 2), None);
        // Another peer of the same /24 does not count twice.
        assert_eq!(o.report(public, ip("198.51.100.2"), 2), None);
        assert_eq!(o.report(public, ip("192.0.2.1"), 2), Some(public));
        assert_eq!(o.report(public, ip("192.0.2.77"), 2), None, "once");
    }

    #[test]
    fn loopback_and_unspecified_are_never_confirmed_and_memory_is_bounded() {
        let mut o = Observed::default();
        assert_eq!(o.report(ip("127.0.0.1"), ip("192.0.2.1"), 1), None);
        assert_eq!(o.report(ip("0.0.0.0"), ip("192.0.2.1"), 1), None);
        for i in 0..100u8 {
            o.report(IpAddr::from([203, 0, 113, i]), ip("192.0.2.1"), 2);
        }
        assert!(o.reports.len() <= MAX_OBSERVED_IPS);
    }
}
