//! The bounded record store.
//!
//! One record per key. Every bound is checked before a record is kept:
//! envelope size, total records, records per publisher. A key belongs to
//! the publisher of its live record: another publisher's record for the
//! same key is rejected until that one expires (so record kinds whose keys
//! several publishers may want should derive keys from the publisher, as
//! validators can enforce). Expired records are never returned and are
//! purged by [`RecordStore::remove_expired`].
//!
//! Each record also carries the replication bookkeeping of its holder: the
//! nodes believed to hold it (the closest ones this node knows), so that a
//! node learning of a closer node sends the record there once.

use std::collections::BTreeMap;

use shoal_identity::PeerId;

use crate::{
    key::{Distance, Key},
    protocol::StoreStatus,
    record::SignedRecord,
};

/// Limits of a [`RecordStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    /// Records held.
    pub max_records: usize,
    /// Largest record envelope held, in bytes.
    pub max_record_size: usize,
    /// Records held per publisher.
    pub max_per_publisher: usize,
}

#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub(crate) record: SignedRecord,
    /// Nodes believed to hold the record (sent to, or the closest known
    /// when it arrived), closest first; at most k.
    pub(crate) holders: Vec<(Distance, PeerId)>,
}

/// The records a node holds for the DHT.
#[derive(Debug, Clone)]
pub struct RecordStore {
    limits: StoreLimits,
    records: BTreeMap<Key, Stored>,
    per_publisher: BTreeMap<PeerId, usize>,
}

impl RecordStore {
    /// An empty store.
    pub fn new(limits: StoreLimits) -> RecordStore {
        RecordStore {
            limits,
            records: BTreeMap::new(),
            per_publisher: BTreeMap::new(),
        }
    }

    /// Number of records held (expired ones included until purged).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The live record at `key` at wall time `now`.
    pub fn get(&self, key: &Key, now: u64) -> Option<&SignedRecord> {
        self.records
            .get(key)
            .map(|s| &s.record)
            .filter(|r| !r.is_expired(now))
    }

    /// Every live record at `now`, by key.
    pub fn iter(&self, now: u64) -> impl Iterator<Item = &SignedRecord> {
        self.records
            .values()
            .map(|s| &s.record)
            .filter(move |r| !r.is_expired(now))
    }

    pub(crate) fn entries_mut(&mut self) -> impl Iterator<Item = (&Key, &mut Stored)> {
        self.records.iter_mut()
    }

    pub(crate) fn entry_mut(&mut self, key: &Key) -> Option<&mut Stored> {
        self.records.get_mut(key)
    }

    /// Keeps `record` (already verified and checked against the policy) if
    /// the bounds and the newer-wins rule allow it.
    pub fn put(&mut self, record: SignedRecord, now: u64) -> StoreStatus {
        if record.encoded_len() > self.limits.max_record_size {
            return StoreStatus::Rejected;
        }
        let key = record.record().key;
        let publisher = record.record().publisher;
        if let Some(existing) = self.records.get(&key) {
            let old = &existing.record;
            if !old.is_expired(now) {
                if old.record().publisher != publisher {
                    return StoreStatus::Rejected;
                }
                if !record.is_newer_than(old) {
                    return StoreStatus::Unchanged;
                }
                if let Some(s) = self.records.get_mut(&key) {
                    s.record = record;
                }
                return StoreStatus::Stored;
            }
            // The held record is dead: the slot is free for anyone.
            let old_publisher = old.record().publisher;
            if old_publisher == publisher {
                if let Some(s) = self.records.get_mut(&key) {
                    s.record = record;
                }
                return StoreStatus::Stored;
            }
            self.remove(&key);
        }
        let count = self.per_publisher.get(&publisher).copied().unwrap_or(0);
        if count >= self.limits.max_per_publisher || self.records.len() >= self.limits.max_records {
            return StoreStatus::Full;
        }
        self.per_publisher.insert(publisher, count + 1);
        self.records.insert(
            key,
            Stored {
                record,
                holders: Vec::new(),
            },
        );
        StoreStatus::Stored
    }

    /// Removes the record at `key`.
    pub fn remove(&mut self, key: &Key) -> Option<SignedRecord> {
        let stored = self.records.remove(key)?;
        let publisher = stored.record.record().publisher;
        if let Some(n) = self.per_publisher.get_mut(&publisher) {
            *n -= 1;
            if *n == 0 {
                self.per_publisher.remove(&publisher);
            }
        }
        Some(stored.record)
    }

    /// Removes every record expired at `now`; returns how many.
    pub fn remove_expired(&mut self, now: u64) -> usize {
        let dead: Vec<Key> = self
            .records
            .iter()
            .filter(|(_, s)| s.record.is_expired(now))
            .map(|(k, _)| *k)
            .collect();
        for key in &dead {
            self.remove(key);
        }
        dead.len()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use shoal_identity::Keypair;

    use super::*;
    use crate::record::Record;

    fn signed(keypair: &Keypair, key: u8, seq: u64, expires: u64) -> SignedRecord {
        let record = Record {
            key: Key::from_bytes([key; 32]),
            kind: "t".into(),
            value: Bytes::from_static(b"v"),
            publisher: keypair.peer_id(),
            seq,
            expires,
        };
        SignedRecord::sign(keypair, record).unwrap()
    }

    fn limits() -> StoreLimits {
        StoreLimits {
            max_records: 3,
            max_record_size: 1024,
            max_per_publisher: 2,
        }
    }

    #[test]
    fn newer_wins_older_never_replaces() {
        let a = Keypair::from_secret_bytes(&[1; 32]);
        let mut s = RecordStore::new(limits());
        assert_eq!(s.put(signed(&a, 1, 5, 100), 0), StoreStatus::Stored);
        assert_eq!(s.put(signed(&a, 1, 4, 100), 0), StoreStatus::Unchanged);
        assert_eq!(s.put(signed(&a, 1, 5, 100), 0), StoreStatus::Unchanged);
        assert_eq!(s.get(&Key::from_bytes([1; 32]), 0).unwrap().record().seq, 5);
        assert_eq!(s.put(signed(&a, 1, 6, 100), 0), StoreStatus::Stored);
        assert_eq!(s.get(&Key::from_bytes([1; 32]), 0).unwrap().record().seq, 6);
        // Another publisher cannot take a live key.
        let b = Keypair::from_secret_bytes(&[2; 32]);
        assert_eq!(s.put(signed(&b, 1, 9, 100), 0), StoreStatus::Rejected);
        // Expired: never returned, and the key is free again.
        assert!(s.get(&Key::from_bytes([1; 32]), 100).is_none());
        assert_eq!(s.put(signed(&b, 1, 1, 200), 100), StoreStatus::Stored);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn bounds_hold() {
        let a = Keypair::from_secret_bytes(&[1; 32]);
        let b = Keypair::from_secret_bytes(&[2; 32]);
        let mut s = RecordStore::new(limits());
        assert_eq!(s.put(signed(&a, 1, 1, 100), 0), StoreStatus::Stored);
        assert_eq!(s.put(signed(&a, 2, 1, 100), 0), StoreStatus::Stored);
        // Per publisher.
        assert_eq!(s.put(signed(&a, 3, 1, 100), 0), StoreStatus::Full);
        assert_eq!(s.put(signed(&b, 3, 1, 50), 0), StoreStatus::Stored);
        // In total.
        assert_eq!(s.put(signed(&b, 4, 1, 100), 0), StoreStatus::Full);
        // Size.
        let mut small = RecordStore::new(StoreLimits {
            max_record_size: 100,
            ..limits()
        });
        assert_eq!(small.put(signed(&a, 1, 1, 100), 0), StoreStatus::Rejected);
        // Expiry frees room.
        assert_eq!(s.remove_expired(50), 1);
        assert_eq!(s.put(signed(&b, 4, 1, 100), 50), StoreStatus::Stored);
        assert_eq!(s.iter(50).count(), 3);
    }
}
