//! Periodic upkeep driven by time: bucket refresh, re-replication of held
//! records, republication of our own, and expiry.
//!
//! - **Refresh** (every `refresh_interval`, and right after a bootstrap):
//!   a self-lookup (periodic rounds only), then random-key lookups in up to
//!   `max_refresh_lookups` buckets that are not full and saw no lookup for
//!   a whole interval, farthest first, down to just above the closest
//!   non-empty bucket. Refresh lookups use one path.
//! - **Re-replication.** Each held record remembers the nodes believed to
//!   hold it (the `k` closest we knew when it arrived, and those we sent it
//!   to). A node entering the routing table that is closer to the key than
//!   the farthest of them gets a STORE at once; every
//!   `replication_interval` the `k` closest in the table that are not yet
//!   among them get one too. So records follow membership changes without
//!   a lookup per record.
//! - **Republish** (every `republish_interval`): a full publication (lookup
//!   + STOREs) of each live record we published.
//! - **Expiry** (every `expiry_check_interval`): expired records leave the
//!   store and the published set. Expired records are never returned even
//!   before that.

use std::time::Instant;

use rand::Rng;

use crate::{
    core::Kademlia,
    protocol::Body,
    query::Kind,
    table::{Contact, NUM_BUCKETS},
};

impl Kademlia {
    /// Sets the periodic timers on the first input.
    pub(crate) fn start_timers(&mut self, now: Instant) {
        if self.timers.expiry.is_some() {
            return;
        }
        let c = &self.config;
        self.timers.refresh = Some(now + c.refresh_interval);
        self.timers.replication = Some(now + c.replication_interval);
        self.timers.republish = Some(now + c.republish_interval);
        self.timers.expiry = Some(now + c.expiry_check_interval);
    }

    /// Runs every periodic duty due at `now`.
    pub(crate) fn run_duties(&mut self, now: Instant) {
        let due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        if due(self.timers.expiry) {
            self.timers.expiry = Some(now + self.config.expiry_check_interval);
            self.store.remove_expired(self.unix);
            let unix = self.unix;
            self.published.retain(|_, r| !r.is_expired(unix));
        }
        if due(self.timers.refresh) {
            self.timers.refresh = Some(now + self.config.refresh_interval);
            let key = self.local_key;
            let _ = self.start_query(now, Kind::Refresh, key, 1, Vec::new());
            self.refresh_buckets(now);
        }
        if due(self.timers.replication) {
            self.timers.replication = Some(now + self.config.replication_interval);
            self.replicate(now);
        }
        if due(self.timers.republish) {
            self.timers.republish = Some(now + self.config.republish_interval);
            let unix = self.unix;
            let records: Vec<_> = self
                .published
                .values()
                .filter(|r| !r.is_expired(unix))
                .cloned()
                .collect();
            for record in records {
                if self.start_put(now, record, true).is_err() {
                    break;
                }
            }
        }
    }

    /// Random-key lookups in stale, not-full buckets (see the module docs).
    pub(crate) fn refresh_buckets(&mut self, now: Instant) {
        let Some(lowest) = self.table.closest_nonempty_bucket() else {
            return;
        };
        let mut started = 0;
        for bucket in (lowest + 1..NUM_BUCKETS).rev() {
            if started >= self.config.max_refresh_lookups {
                break;
            }
            if self.table.bucket(bucket).count() >= self.config.k {
                continue;
            }
            let fresh = self
                .bucket_lookups
                .get(&bucket)
                .is_some_and(|t| now.saturating_duration_since(*t) < self.config.refresh_interval);
            if fresh {
                continue;
            }
            let key = self.local_key.random_in_bucket(bucket, self.rng.random());
            if self
                .start_query(now, Kind::Refresh, key, 1, Vec::new())
                .is_err()
            {
                break;
            }
            started += 1;
        }
    }

    /// Sends each held record to the closest nodes in the table that are
    /// not yet among its holders.
    fn replicate(&mut self, _now: Instant) {
        let unix = self.unix;
        let k = self.config.k;
        let mut sends = Vec::new();
        let table = &self.table;
        for (key, stored) in self.store.entries_mut() {
            if stored.record.is_expired(unix) {
                continue;
            }
            let closest = table.closest(key, k, None);
            for c in &closest {
                if !stored.holders.iter().any(|(_, p)| *p == c.peer) {
                    sends.push(((*c).clone(), stored.record.clone()));
                }
            }
            stored.holders = closest
                .iter()
                .map(|c| (c.key.distance(key), c.peer))
                .collect();
        }
        for (contact, record) in sends {
            self.send_unsolicited(contact.peer, contact.addrs, Body::Store(record));
        }
    }

    /// A node entered the routing table: send it the held records it is
    /// closer to than their farthest known holder.
    pub(crate) fn replicate_to_new(&mut self, contact: &Contact) {
        if self.store.is_empty() {
            return;
        }
        let unix = self.unix;
        let k = self.config.k;
        let mut sends = Vec::new();
        for (key, stored) in self.store.entries_mut() {
            if stored.record.is_expired(unix) {
                continue;
            }
            if stored.holders.iter().any(|(_, p)| *p == contact.peer) {
                continue;
            }
            let d = contact.key.distance(key);
            let closer = stored.holders.len() < k || stored.holders.last().is_some_and(|l| d < l.0);
            if !closer {
                continue;
            }
            let at = stored.holders.partition_point(|(hd, _)| *hd < d);
            stored.holders.insert(at, (d, contact.peer));
            stored.holders.truncate(k);
            sends.push(stored.record.clone());
        }
        for record in sends {
            self.send_unsolicited(contact.peer, contact.addrs.clone(), Body::Store(record));
        }
    }
}
