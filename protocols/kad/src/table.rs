//! The routing table: 256 k-buckets around the local key (sans-IO).
//!
//! Each bucket keeps at most `k` contacts in least-recently-seen order
//! (index 0 is the contact heard from longest ago). Contacts that prove to be
//! alive stay: a full bucket never drops a working old contact for a new
//! one. Instead [`RoutingTable::update`] returns [`Update::Ping`] and the
//! caller pings the least-recently-seen contact; [`RoutingTable::ping_result`]
//! then keeps it (the newcomer goes to the bucket's replacement cache) or
//! evicts it for the newcomer. Contacts removed for failing are replaced
//! from the cache, most recently seen first.
//!
//! Per-prefix caps (see [`IpPrefix`]) bound how many contacts of one
//! network a bucket and the whole table hold; a contact over a cap is not
//! inserted (it may still sit in the replacement cache, and is checked again
//! when promoted).

use std::collections::BTreeMap;

use shoal_identity::PeerId;
use shoal_transport::Multiaddr;

use crate::{
    ip::IpPrefix,
    key::{Distance, KEY_LEN, Key},
};

/// Most addresses kept (and sent) per contact.
pub const MAX_ADDRS_PER_CONTACT: usize = 8;

/// Number of buckets: one per bit of the key.
pub const NUM_BUCKETS: usize = KEY_LEN * 8;

/// A node as the routing table and lookups know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    /// The node's identity.
    pub peer: PeerId,
    /// Its node key (the hash of `peer`).
    pub key: Key,
    /// Where it can be reached (at most [`MAX_ADDRS_PER_CONTACT`]; the
    /// first IP address decides its [`IpPrefix`]).
    pub addrs: Vec<Multiaddr>,
}

impl Contact {
    /// A contact for `peer` with `addrs` (cut to [`MAX_ADDRS_PER_CONTACT`]).
    pub fn new(peer: PeerId, mut addrs: Vec<Multiaddr>) -> Contact {
        addrs.truncate(MAX_ADDRS_PER_CONTACT);
        Contact {
            peer,
            key: Key::for_peer(&peer),
            addrs,
        }
    }

    /// Adds the addresses of `other` not yet known, new ones first, keeping
    /// at most [`MAX_ADDRS_PER_CONTACT`].
    fn merge_addrs(&mut self, addrs: &[Multiaddr]) {
        if addrs.is_empty() || addrs == self.addrs.as_slice() {
            return;
        }
        let mut merged: Vec<Multiaddr> =
            addrs.iter().take(MAX_ADDRS_PER_CONTACT).cloned().collect();
        for a in &self.addrs {
            if merged.len() == MAX_ADDRS_PER_CONTACT {
                break;
            }
            if !merged.contains(a) {
                merged.push(a.clone());
            }
        }
        self.addrs = merged;
    }
}

/// Limits of a [`RoutingTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableLimits {
    /// Contacts per bucket (k).
    pub k: usize,
    /// Contacts per bucket sharing one [`IpPrefix`].
    pub bucket_ip_limit: usize,
    /// Contacts in the whole table sharing one [`IpPrefix`].
    pub table_ip_limit: usize,
    /// Entries in each bucket's replacement cache.
    pub replacement_cache: usize,
}

/// What [`RoutingTable::update`] did with a contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// The contact was new and is now in bucket `bucket`.
    Inserted {
        /// Its bucket index.
        bucket: usize,
    },
    /// The contact was known; it is now the most recently seen of its bucket.
    Refreshed,
    /// The bucket is full: ping this least-recently-seen contact and report
    /// the outcome with [`RoutingTable::ping_result`]. The newcomer waits.
    Ping(Contact),
    /// The bucket is full and already pinging, or a prefix cap is reached:
    /// the contact went to the replacement cache.
    Cached,
    /// The contact is the local node; ignored.
    Local,
}

/// The outcome of [`RoutingTable::ping_result`] or [`RoutingTable::remove`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Change {
    /// The contact that left the table, if any.
    pub removed: Option<PeerId>,
    /// The contact that entered it (newcomer or replacement), if any.
    pub inserted: Option<Contact>,
}

#[derive(Debug, Clone)]
struct Entry {
    contact: Contact,
    /// Requests to it that failed since it last answered.
    failures: u32,
    /// Our connection to it closed and it has not been heard from since:
    /// it may have left the network.
    unverified: bool,
}

#[derive(Debug, Clone, Default)]
struct Bucket {
    /// Least recently seen first.
    entries: Vec<Entry>,
    /// Most recently seen last.
    replacements: Vec<Contact>,
    /// The contact being pinged and the newcomer waiting for its slot.
    pending: Option<(PeerId, Contact)>,
}

/// The k-bucket routing table of one node.
#[derive(Debug, Clone)]
pub struct RoutingTable {
    local: Key,
    limits: TableLimits,
    buckets: Vec<Bucket>,
    per_prefix: BTreeMap<IpPrefix, usize>,
    len: usize,
}

impl RoutingTable {
    /// An empty table around `local`.
    pub fn new(local: Key, limits: TableLimits) -> RoutingTable {
        RoutingTable {
            local,
            limits,
            buckets: vec![Bucket::default(); NUM_BUCKETS],
            per_prefix: BTreeMap::new(),
            len: 0,
        }
    }

    /// The local node's key.
    pub fn local_key(&self) -> &Key {
        &self.local
    }

    /// Number of contacts in the table.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the table has no contact.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bucket index of `key` relative to the local key.
    pub fn bucket_of(&self, key: &Key) -> Option<usize> {
        self.local.distance(key).bucket_index()
    }

    /// Contacts in bucket `bucket`, least recently seen first.
    pub fn bucket(&self, bucket: usize) -> impl Iterator<Item = &Contact> {
        self.buckets
            .get(bucket)
            .into_iter()
            .flat_map(|b| b.entries.iter().map(|e| &e.contact))
    }

    /// Every contact, bucket by bucket (farthest bucket first).
    pub fn iter(&self) -> impl Iterator<Item = &Contact> {
        self.buckets
            .iter()
            .rev()
            .flat_map(|b| b.entries.iter().map(|e| &e.contact))
    }

    /// The contact of `peer`, if in the table.
    pub fn get(&self, peer: &PeerId) -> Option<&Contact> {
        let (b, i) = self.position(&Key::for_peer(peer), peer)?;
        Some(&self.buckets[b].entries[i].contact)
    }

    /// Whether `peer` is in the table.
    pub fn contains(&self, peer: &PeerId) -> bool {
        self.get(peer).is_some()
    }

    /// The index of the closest non-empty bucket, if any.
    pub fn closest_nonempty_bucket(&self) -> Option<usize> {
        self.buckets.iter().position(|b| !b.entries.is_empty())
    }

    /// Up to `n` contacts closest to `target`, closest first, never
    /// `exclude`.
    ///
    /// Walks buckets in order of distance to `target` instead of sorting
    /// the whole table: contacts in the target's own bucket `b` are closer
    /// than 2^b to it; those in buckets below `b` lie in [2^b, 2^(b+1));
    /// those in a bucket `i > b` in [2^i, 2^(i+1)). Each group is sorted on
    /// its own and the walk stops once `n` are found, so a full bucket
    /// answers most queries from 20 distance computations.
    pub fn closest<'a>(
        &'a self,
        target: &Key,
        n: usize,
        exclude: Option<&PeerId>,
    ) -> Vec<&'a Contact> {
        self.closest_where(target, n, |c| Some(&c.peer) != exclude)
    }

    /// Up to `n` contacts closest to `target` among those `keep` accepts,
    /// closest first (the walk of [`closest`](RoutingTable::closest)).
    pub fn closest_where<'a>(
        &'a self,
        target: &Key,
        n: usize,
        keep: impl Fn(&Contact) -> bool,
    ) -> Vec<&'a Contact> {
        self.closest_entries(target, n, |e| keep(&e.contact))
    }

    /// [`closest_where`](RoutingTable::closest_where) among the contacts
    /// not known to be gone: those whose connection closed and that have
    /// not been heard from since are left out (see
    /// [`mark_disconnected`](RoutingTable::mark_disconnected)).
    pub fn closest_verified_where<'a>(
        &'a self,
        target: &Key,
        n: usize,
        keep: impl Fn(&Contact) -> bool,
    ) -> Vec<&'a Contact> {
        self.closest_entries(target, n, |e| !e.unverified && keep(&e.contact))
    }

    /// Our connection to `peer` closed. It stays in the table (it may be
    /// back, and lookups may still try it), but until it is heard from
    /// again it does not count as a live contact.
    pub fn mark_disconnected(&mut self, peer: &PeerId) {
        if let Some((b, i)) = self.position(&Key::for_peer(peer), peer) {
            self.buckets[b].entries[i].unverified = true;
        }
    }

    fn closest_entries<'a>(
        &'a self,
        target: &Key,
        n: usize,
        keep: impl Fn(&Entry) -> bool,
    ) -> Vec<&'a Contact> {
        let mut out: Vec<(Distance, &Contact)> = Vec::with_capacity(n + self.limits.k);
        if n == 0 {
            return Vec::new();
        }
        let push = |out: &mut Vec<(Distance, &'a Contact)>, b: usize| {
            for e in &self.buckets[b].entries {
                if keep(e) {
                    out.push((e.contact.key.distance(target), &e.contact));
                }
            }
        };
        let sort_group = |out: &mut Vec<(Distance, &'a Contact)>, from: usize| {
            out[from..].sort_unstable_by_key(|(d, _)| *d);
            out.len() >= n
        };
        match self.bucket_of(target) {
            None => {
                for b in 0..NUM_BUCKETS {
                    let from = out.len();
                    push(&mut out, b);
                    if sort_group(&mut out, from) {
                        break;
                    }
                }
            }
            Some(tb) => {
                push(&mut out, tb);
                let mut done = sort_group(&mut out, 0);
                if !done {
                    let from = out.len();
                    for b in (0..tb).rev() {
                        push(&mut out, b);
                    }
                    done = sort_group(&mut out, from);
                }
                if !done {
                    for b in tb + 1..NUM_BUCKETS {
                        let from = out.len();
                        push(&mut out, b);
                        if sort_group(&mut out, from) {
                            break;
                        }
                    }
                }
            }
        }
        out.truncate(n);
        out.into_iter().map(|(_, c)| c).collect()
    }

    /// Records that `contact` was seen alive (it sent us a message or
    /// answered a request): moves it to the tail of its bucket, inserts it,
    /// or asks for a ping of the bucket's least-recently-seen contact.
    pub fn update(&mut self, contact: Contact) -> Update {
        let Some(b) = self.bucket_of(&contact.key) else {
            return Update::Local;
        };
        let limits = self.limits;
        let bucket = &mut self.buckets[b];
        if let Some(i) = bucket
            .entries
            .iter()
            .position(|e| e.contact.peer == contact.peer)
        {
            let mut entry = bucket.entries.remove(i);
            entry.failures = 0;
            entry.unverified = false;
            entry.contact.merge_addrs(&contact.addrs);
            bucket.entries.push(entry);
            return Update::Refreshed;
        }
        if bucket.entries.len() < limits.k {
            if self.prefix_allows(b, &contact) {
                self.insert_entry(b, contact);
                return Update::Inserted { bucket: b };
            }
            self.cache(b, contact);
            return Update::Cached;
        }
        let bucket = &mut self.buckets[b];
        if bucket.pending.is_some() || !self.prefix_allows_replacing(b, &contact) {
            self.cache(b, contact);
            return Update::Cached;
        }
        let bucket = &mut self.buckets[b];
        let oldest = bucket.entries[0].contact.clone();
        bucket.pending = Some((oldest.peer, contact));
        Update::Ping(oldest)
    }

    /// Reports the ping asked for by [`Update::Ping`]: an alive contact
    /// stays (now most recently seen) and the newcomer goes to the
    /// replacement cache; a dead one is evicted for the newcomer.
    pub fn ping_result(&mut self, peer: &PeerId, alive: bool) -> Change {
        let Some(b) = self.bucket_of(&Key::for_peer(peer)) else {
            return Change::default();
        };
        let Some((pinged, newcomer)) = self.buckets[b].pending.take() else {
            return Change::default();
        };
        if pinged != *peer {
            self.buckets[b].pending = Some((pinged, newcomer));
            return Change::default();
        }
        if alive {
            if let Some(i) = self.buckets[b]
                .entries
                .iter()
                .position(|e| e.contact.peer == *peer)
            {
                let entry = self.buckets[b].entries.remove(i);
                self.buckets[b].entries.push(entry);
            }
            self.cache(b, newcomer);
            return Change::default();
        }
        let removed = self.remove_entry(b, peer);
        if removed.is_none() {
            // Already gone (removed meanwhile): still take the newcomer.
        }
        let inserted =
            if self.buckets[b].entries.len() < self.limits.k && self.prefix_allows(b, &newcomer) {
                self.insert_entry(b, newcomer.clone());
                Some(newcomer)
            } else {
                self.cache(b, newcomer);
                self.promote(b)
            };
        Change {
            removed: removed.map(|c| c.peer),
            inserted,
        }
    }

    /// Counts a failed request to `peer`; after `max_failures` in a row the
    /// contact is removed and replaced from the cache.
    pub fn record_failure(&mut self, peer: &PeerId, max_failures: u32) -> Change {
        let Some((b, i)) = self.position(&Key::for_peer(peer), peer) else {
            return Change::default();
        };
        let entry = &mut self.buckets[b].entries[i];
        entry.failures = entry.failures.saturating_add(1);
        if entry.failures < max_failures {
            return Change::default();
        }
        self.remove(peer)
    }

    /// Removes `peer` (for example a failed dial) and promotes the most
    /// recently seen replacement of its bucket.
    pub fn remove(&mut self, peer: &PeerId) -> Change {
        let Some(b) = self.bucket_of(&Key::for_peer(peer)) else {
            return Change::default();
        };
        self.buckets[b].replacements.retain(|c| c.peer != *peer);
        let Some(removed) = self.remove_entry(b, peer) else {
            return Change::default();
        };
        // A pending ping for the removed contact is resolved: take the
        // newcomer in its place.
        let inserted = match self.buckets[b].pending.take() {
            Some((pinged, newcomer)) if pinged == *peer => {
                if self.prefix_allows(b, &newcomer) {
                    self.insert_entry(b, newcomer.clone());
                    Some(newcomer)
                } else {
                    self.cache(b, newcomer);
                    self.promote(b)
                }
            }
            other => {
                self.buckets[b].pending = other;
                self.promote(b)
            }
        };
        Change {
            removed: Some(removed.peer),
            inserted,
        }
    }

    fn position(&self, key: &Key, peer: &PeerId) -> Option<(usize, usize)> {
        let b = self.bucket_of(key)?;
        let i = self.buckets[b]
            .entries
            .iter()
            .position(|e| e.contact.peer == *peer)?;
        Some((b, i))
    }

    fn prefix_allows(&self, b: usize, contact: &Contact) -> bool {
        let Some(prefix) = IpPrefix::of_addrs(&contact.addrs) else {
            return true;
        };
        let in_table = self.per_prefix.get(&prefix).copied().unwrap_or(0);
        in_table < self.limits.table_ip_limit
            && self.bucket_prefix_count(b, prefix) < self.limits.bucket_ip_limit
    }

    /// Whether `contact` could take the place of the bucket's oldest entry.
    fn prefix_allows_replacing(&self, b: usize, contact: &Contact) -> bool {
        let Some(prefix) = IpPrefix::of_addrs(&contact.addrs) else {
            return true;
        };
        let oldest = self.buckets[b]
            .entries
            .first()
            .and_then(|e| IpPrefix::of_addrs(&e.contact.addrs));
        let freed = usize::from(oldest == Some(prefix));
        let in_table = self.per_prefix.get(&prefix).copied().unwrap_or(0);
        in_table - freed.min(in_table) < self.limits.table_ip_limit
            && self.bucket_prefix_count(b, prefix) - freed < self.limits.bucket_ip_limit
    }

    fn bucket_prefix_count(&self, b: usize, prefix: IpPrefix) -> usize {
        self.buckets[b]
            .entries
            .iter()
            .filter(|e| IpPrefix::of_addrs(&e.contact.addrs) == Some(prefix))
            .count()
    }

    fn insert_entry(&mut self, b: usize, contact: Contact) {
        if let Some(prefix) = IpPrefix::of_addrs(&contact.addrs) {
            *self.per_prefix.entry(prefix).or_insert(0) += 1;
        }
        let bucket = &mut self.buckets[b];
        bucket.replacements.retain(|c| c.peer != contact.peer);
        bucket.entries.push(Entry {
            contact,
            failures: 0,
            unverified: false,
        });
        self.len += 1;
    }

    fn remove_entry(&mut self, b: usize, peer: &PeerId) -> Option<Contact> {
        let bucket = &mut self.buckets[b];
        let i = bucket
            .entries
            .iter()
            .position(|e| e.contact.peer == *peer)?;
        let entry = bucket.entries.remove(i);
        self.len -= 1;
        if let Some(prefix) = IpPrefix::of_addrs(&entry.contact.addrs)
            && let Some(n) = self.per_prefix.get_mut(&prefix)
        {
            *n -= 1;
            if *n == 0 {
                self.per_prefix.remove(&prefix);
            }
        }
        Some(entry.contact)
    }

    fn cache(&mut self, b: usize, contact: Contact) {
        let max = self.limits.replacement_cache;
        let bucket = &mut self.buckets[b];
        bucket.replacements.retain(|c| c.peer != contact.peer);
        if max == 0 {
            return;
        }
        if bucket.replacements.len() >= max {
            bucket.replacements.remove(0);
        }
        bucket.replacements.push(contact);
    }

    /// Moves the most recently seen replacement that fits the prefix caps
    /// into bucket `b`, if it has room.
    fn promote(&mut self, b: usize) -> Option<Contact> {
        if self.buckets[b].entries.len() >= self.limits.k {
            return None;
        }
        let i = (0..self.buckets[b].replacements.len())
            .rev()
            .find(|&i| self.prefix_allows(b, &self.buckets[b].replacements[i]))?;
        let contact = self.buckets[b].replacements.remove(i);
        self.insert_entry(b, contact.clone());
        Some(contact)
    }
}

#[cfg(test)]
mod tests;
