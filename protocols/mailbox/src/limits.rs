//! The replica's defences that are not about one mailbox: token-bucket
//! rate limits per peer and per network, and the cache that refuses a
//! signed request seen before.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::Hash;

use crate::id::MailboxId;
use crate::wire::NONCE_LEN;

/// A token bucket per key, in milliseconds of wall-clock time: `rate`
/// tokens a second up to `burst`. At most `max_keys` keys are tracked;
/// full buckets are forgotten to make room, and a new key finding no room
/// is refused (a flood of new keys cannot push out the limits of old ones).
#[derive(Debug)]
pub(crate) struct RateLimiter<K> {
    rate_per_sec: f64,
    burst: f64,
    max_keys: usize,
    buckets: HashMap<K, (f64, u64)>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    pub(crate) fn new(rate_per_sec: u32, burst: u32, max_keys: usize) -> RateLimiter<K> {
        RateLimiter {
            rate_per_sec: f64::from(rate_per_sec.max(1)),
            burst: f64::from(burst.max(1)),
            max_keys: max_keys.max(1),
            buckets: HashMap::new(),
        }
    }

    fn refill(&self, tokens: f64, since: u64, now_ms: u64) -> f64 {
        let elapsed = now_ms.saturating_sub(since) as f64 / 1000.0;
        (tokens + elapsed * self.rate_per_sec).min(self.burst)
    }

    /// Takes a token for `key` at `now_ms`; on refusal, the milliseconds
    /// until one is there.
    pub(crate) fn take(&mut self, key: &K, now_ms: u64) -> Result<(), u64> {
        if !self.buckets.contains_key(key) && self.buckets.len() >= self.max_keys {
            let (rate, burst) = (self.rate_per_sec, self.burst);
            self.buckets.retain(|_, (tokens, since)| {
                let elapsed = now_ms.saturating_sub(*since) as f64 / 1000.0;
                *tokens + elapsed * rate < burst
            });
            if self.buckets.len() >= self.max_keys {
                return Err(1000);
            }
        }
        let (tokens, since) = self
            .buckets
            .get(key)
            .copied()
            .unwrap_or((self.burst, now_ms));
        let tokens = self.refill(tokens, since, now_ms);
        if tokens < 1.0 {
            self.buckets.insert(key.clone(), (tokens, now_ms));
            let wait = ((1.0 - tokens) / self.rate_per_sec * 1000.0).ceil();
            return Err(wait as u64);
        }
        self.buckets.insert(key.clone(), (tokens - 1.0, now_ms));
        Ok(())
    }
}

/// Signed requests seen within the accepted clock window, by (mailbox,
/// nonce), until their timestamp leaves the window.
#[derive(Debug)]
pub(crate) struct ReplayCache {
    max_entries: usize,
    seen: HashSet<(MailboxId, [u8; NONCE_LEN])>,
    by_expiry: BTreeSet<(u64, MailboxId, [u8; NONCE_LEN])>,
}

/// What the replay cache says about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// New: remembered now.
    Fresh,
    /// Seen before.
    Replay,
    /// The cache is full of live entries: refuse for now.
    Full,
}

impl ReplayCache {
    pub(crate) fn new(max_entries: usize) -> ReplayCache {
        ReplayCache {
            max_entries: max_entries.max(1),
            seen: HashSet::new(),
            by_expiry: BTreeSet::new(),
        }
    }

    /// Checks and remembers a request until `forget_at_ms`.
    pub(crate) fn check(
        &mut self,
        mailbox: MailboxId,
        nonce: [u8; NONCE_LEN],
        forget_at_ms: u64,
        now_ms: u64,
    ) -> Seen {
        while let Some(first) = self.by_expiry.first().copied() {
            if first.0 > now_ms {
                break;
            }
            self.by_expiry.pop_first();
            self.seen.remove(&(first.1, first.2));
        }
        if self.seen.contains(&(mailbox, nonce)) {
            return Seen::Replay;
        }
        if self.seen.len() >= self.max_entries {
            return Seen::Full;
        }
        self.seen.insert((mailbox, nonce));
        self.by_expiry.insert((forget_at_ms, mailbox, nonce));
        Seen::Fresh
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills_and_bounds_keys() {
        let mut r = RateLimiter::new(10, 2, 2);
        assert!(r.take(&1, 0).is_ok());
        assert!(r.take(&1, 0).is_ok());
        let wait = r.take(&1, 0).unwrap_err();
        assert_eq!(wait, 100);
        assert!(r.take(&1, 100).is_ok());
        assert!(r.take(&2, 100).is_ok());
        // No room for a third key while both buckets are in use.
        assert!(r.take(&3, 100).is_err());
        // Once key 2's bucket is full again, it is forgotten for key 3.
        assert!(r.take(&3, 5_000).is_ok());
    }

    #[test]
    fn replay_cache_forgets_after_the_window() {
        let mut c = ReplayCache::new(2);
        let m = MailboxId::from_bytes([1; 32]);
        assert_eq!(c.check(m, [1; 16], 100, 0), Seen::Fresh);
        assert_eq!(c.check(m, [1; 16], 100, 50), Seen::Replay);
        assert_eq!(c.check(m, [2; 16], 200, 50), Seen::Fresh);
        assert_eq!(c.check(m, [3; 16], 200, 50), Seen::Full);
        assert_eq!(c.check(m, [3; 16], 200, 100), Seen::Fresh);
        assert_eq!(c.len(), 2);
    }
}
