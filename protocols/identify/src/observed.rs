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
    time::{Duration, Instant},
};

/// Distinct observed IPs tracked; a new one pushes out the oldest. Bounds
/// memory, and one peer reporting many IPs cannot jam the tracker.
pub(crate) const MAX_OBSERVED_IPS: usize = 16;

/// Reports older than this are forgotten (a network change, or one-off
/// claims, must not count forever).
pub(crate) const OBSERVATION_TTL: Duration = Duration::from_secs(600);

/// Observed IPs confirmed at most: each becomes an announced address, and
/// those are few.
pub(crate) const MAX_CONFIRMED: usize = 4;

/// Observations so far.
#[derive(Debug, Default)]
pub(crate) struct Observed {
    /// Observed IP → networks of the peers that reported it, and when it
    /// was first reported.
    reports: HashMap<IpAddr, (HashSet<IpAddr>, Instant)>,
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
        now: Instant,
    ) -> Option<IpAddr> {
        let observed = observed.to_canonical();
        if needed == 0
            || observed.is_unspecified()
            || observed.is_loopback()
            || self.confirmed.contains(&observed)
            || self.confirmed.len() >= MAX_CONFIRMED
        {
            return None;
        }
        self.reports
            .retain(|_, (_, first)| now.saturating_duration_since(*first) < OBSERVATION_TTL);
        if !self.reports.contains_key(&observed) && self.reports.len() >= MAX_OBSERVED_IPS {
            let oldest = self
                .reports
                .iter()
                .min_by_key(|(_, (_, first))| *first)
                .map(|(ip, _)| *ip);
            if let Some(ip) = oldest {
                self.reports.remove(&ip);
            }
        }
        let (networks, _) = self
            .reports
            .entry(observed)
            .or_insert_with(|| (HashSet::new(), now));
        networks.insert(shoal_transport::subnet_of(reporter));
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
        let now = Instant::now();
        let public = ip("203.0.113.9");
        assert_eq!(o.report(public, ip("198.51.100.1"), 2, now), None);
        // Another peer of the same /24 does not count twice.
        assert_eq!(o.report(public, ip("198.51.100.2"), 2, now), None);
        assert_eq!(o.report(public, ip("192.0.2.1"), 2, now), Some(public));
        assert_eq!(o.report(public, ip("192.0.2.77"), 2, now), None, "once");
    }

    #[test]
    fn loopback_and_unspecified_never_count_and_memory_is_bounded() {
        let mut o = Observed::default();
        let now = Instant::now();
        assert_eq!(o.report(ip("127.0.0.1"), ip("192.0.2.1"), 1, now), None);
        assert_eq!(o.report(ip("0.0.0.0"), ip("192.0.2.1"), 1, now), None);
        for i in 0..100u8 {
            o.report(IpAddr::from([203, 0, 113, i]), ip("192.0.2.1"), 2, now);
        }
        assert!(o.reports.len() <= MAX_OBSERVED_IPS);
    }

    #[test]
    fn junk_reports_cannot_jam_the_tracker_and_confirmations_are_few() {
        let mut o = Observed::default();
        let t0 = Instant::now();
        // One peer claims 16 different IPs...
        for i in 0..16u8 {
            o.report(IpAddr::from([203, 0, 113, i]), ip("192.0.2.1"), 2, t0);
        }
        // ...the real one is still confirmed by two networks.
        let real = ip("198.18.0.9");
        assert_eq!(o.report(real, ip("198.51.100.1"), 2, t0), None);
        assert_eq!(o.report(real, ip("192.0.2.1"), 2, t0), Some(real));
        // Reports expire.
        let late = t0 + OBSERVATION_TTL;
        o.report(ip("203.0.113.200"), ip("198.51.100.1"), 2, late);
        assert_eq!(o.reports.len(), 1);
        // At most MAX_CONFIRMED confirmations.
        for i in 0..10u8 {
            let seen = IpAddr::from([198, 18, 1, i]);
            o.report(seen, ip("198.51.100.1"), 2, late);
            o.report(seen, ip("192.0.2.1"), 2, late);
        }
        assert_eq!(o.confirmed.len(), MAX_CONFIRMED);
    }
}
