//! Outbound dials per address: a node must never be made to hammer one
//! host:port, whatever records, peers or applications name it.
//!
//! Each socket address has a token bucket of
//! [`Config::dials_per_addr_burst`](crate::config::Config::dials_per_addr_burst)
//! dials, refilled by one every
//! [`Config::dial_interval_per_addr`](crate::config::Config::dial_interval_per_addr).
//! A dial beyond it fails at once with
//! [`DialError::RateLimited`](crate::DialError::RateLimited), before any
//! packet is sent. A dial to a peer that already has a session never gets
//! here (it returns that session).

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use super::shared::lock;

/// Addresses remembered; past this, those whose bucket is full again are
/// forgotten. Bounds memory.
const MAX_ENTRIES: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The per-address dial buckets of a service.
#[derive(Debug)]
pub(crate) struct DialLimit {
    burst: f64,
    interval: Duration,
    buckets: Mutex<HashMap<SocketAddr, Bucket>>,
}

impl DialLimit {
    pub(crate) fn new(burst: u32, interval: Duration) -> DialLimit {
        DialLimit {
            burst: f64::from(burst.max(1)),
            interval: interval.max(Duration::from_millis(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn refill(&self, b: Bucket, now: Instant) -> f64 {
        let earned =
            now.saturating_duration_since(b.at).as_secs_f64() / self.interval.as_secs_f64();
        (b.tokens + earned).min(self.burst)
    }

    /// Takes a dial to `addr` from its bucket; `false` if it is empty.
    pub(crate) fn try_take(&self, addr: SocketAddr, now: Instant) -> bool {
        let mut buckets = lock(&self.buckets);
        if buckets.len() >= MAX_ENTRIES {
            buckets.retain(|_, b| self.refill(*b, now) < self.burst);
        }
        let tokens = buckets
            .get(&addr)
            .map_or(self.burst, |b| self.refill(*b, now));
        if tokens < 1.0 {
            return false;
        }
        buckets.insert(
            addr,
            Bucket {
                tokens: tokens - 1.0,
                at: now,
            },
        );
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_one_per_interval() {
        let limit = DialLimit::new(3, Duration::from_secs(5));
        let addr: SocketAddr = "192.0.2.1:4001".parse().unwrap_or_else(|_| unreachable!());
        let other: SocketAddr = "192.0.2.1:4002".parse().unwrap_or_else(|_| unreachable!());
        let t0 = Instant::now();
        assert!((0..3).all(|_| limit.try_take(addr, t0)));
        assert!(!limit.try_take(addr, t0));
        assert!(limit.try_take(other, t0), "another port has its own bucket");
        assert!(!limit.try_take(addr, t0 + Duration::from_secs(4)));
        assert!(limit.try_take(addr, t0 + Duration::from_secs(5)));
        assert!(!limit.try_take(addr, t0 + Duration::from_secs(5)));
    }
}
