//! Where a replica keeps envelopes: the [`ReplicaStore`] trait and the
//! in-memory [`MemoryStore`] (tests, simulations); `SqliteStore` (feature
//! `sqlite`) is the durable one.
//!
//! A store holds, per envelope: the mailbox id, a sequence number, the
//! envelope hash and bytes, the expiry, the class, and the network group
//! of the peer that stored it (for the per-network share of the disk
//! budget). Acked envelopes leave a tombstone (mailbox id, hash, expiry)
//! so that a late retry of the same bytes is not stored again.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

use crate::id::{EnvelopeHash, MailboxId};
use crate::wire::{Class, Item};

/// A store operation failed (an I/O error, a full disk). Nothing of it
/// took effect.
#[derive(Debug, thiserror::Error)]
#[error("replica store: {0}")]
pub struct StoreError(pub String);

/// An envelope as the replica keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEnvelope {
    /// The mailbox.
    pub mailbox: MailboxId,
    /// The envelope's name.
    pub hash: EnvelopeHash,
    /// The exact bytes.
    pub envelope: Bytes,
    /// Unix seconds when it goes.
    pub expiry: u64,
    /// Its quota class.
    pub class: Class,
    /// The network group (its text form) of the peer that stored it.
    pub group: String,
}

/// What a store knows of an envelope already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Held, until this expiry.
    Held {
        /// Unix seconds.
        expiry: u64,
    },
    /// Acked earlier; the tombstone lasts until this expiry.
    Tombstone {
        /// Unix seconds.
        expiry: u64,
    },
}

/// What one mailbox uses of its quota, by class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Envelopes of class [`Class::Normal`].
    pub normal: u32,
    /// Envelopes of class [`Class::Control`].
    pub control: u32,
    /// Bytes of all of them.
    pub bytes: u64,
}

impl Usage {
    pub(crate) fn add(&mut self, class: Class, bytes: usize) {
        match class {
            Class::Normal => self.normal += 1,
            Class::Control => self.control += 1,
        }
        self.bytes += bytes as u64;
    }

    pub(crate) fn remove(&mut self, class: Class, bytes: usize) {
        match class {
            Class::Normal => self.normal = self.normal.saturating_sub(1),
            Class::Control => self.control = self.control.saturating_sub(1),
        }
        self.bytes = self.bytes.saturating_sub(bytes as u64);
    }
}

/// An envelope removed from a store (acked or expired), for the replica's
/// accounting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    /// Its mailbox.
    pub mailbox: MailboxId,
    /// Its class.
    pub class: Class,
    /// Its size in bytes.
    pub len: usize,
    /// The group that stored it.
    pub group: String,
}

/// A replica's storage. Every mutating call is durable (against a process
/// crash) when it returns `Ok`: a replica signs a receipt only after
/// [`insert`](ReplicaStore::insert) returned.
pub trait ReplicaStore: Send + 'static {
    /// Every stored envelope's mailbox, class, size and group (to rebuild
    /// the replica's accounting at start).
    fn scan(&mut self) -> Result<Vec<Removed>, StoreError>;

    /// What the store holds of the envelope `hash` in `mailbox`.
    fn find(
        &mut self,
        mailbox: &MailboxId,
        hash: &EnvelopeHash,
    ) -> Result<Option<Existing>, StoreError>;

    /// Stores new envelopes (the caller checked [`find`](Self::find)), all
    /// or none (one transaction: a replica commits the stores that arrive
    /// together at once); returns their sequence numbers, in order, each
    /// above every earlier one.
    fn insert(&mut self, envelopes: &[StoredEnvelope]) -> Result<Vec<u64>, StoreError>;

    /// Up to `limit` envelopes of `mailbox` with a sequence number above
    /// `after`, oldest first, stopping after the one that brings the total
    /// size to `max_bytes` or more; and whether more follow.
    fn fetch(
        &mut self,
        mailbox: &MailboxId,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<(Vec<Item>, bool), StoreError>;

    /// Deletes the named envelopes of `mailbox`, leaving a tombstone for
    /// each until its expiry; returns what was deleted.
    fn ack(
        &mut self,
        mailbox: &MailboxId,
        hashes: &[EnvelopeHash],
    ) -> Result<Vec<Removed>, StoreError>;

    /// Deletes envelopes and tombstones whose expiry is at or before
    /// `unix_secs`; returns the envelopes deleted.
    fn expire(&mut self, unix_secs: u64) -> Result<Vec<Removed>, StoreError>;
}

/// A [`ReplicaStore`] in memory (lost with the process; for tests and
/// simulations, where "durable" means "survives the simulated restart",
/// which keeps the store value).
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    next_seq: u64,
    /// (mailbox, seq) -> envelope.
    rows: BTreeMap<(MailboxId, u64), StoredEnvelope>,
    /// (mailbox, hash) -> seq.
    by_hash: HashMap<(MailboxId, EnvelopeHash), u64>,
    /// (mailbox, hash) -> tombstone expiry.
    tombstones: HashMap<(MailboxId, EnvelopeHash), u64>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// Every stored envelope, in sequence order per mailbox (what a replica
    /// holds; for tests that inspect it).
    pub fn rows(&self) -> impl Iterator<Item = &StoredEnvelope> {
        self.rows.values()
    }

    /// Tombstones held.
    pub fn tombstones(&self) -> usize {
        self.tombstones.len()
    }
}

fn removed(e: &StoredEnvelope) -> Removed {
    Removed {
        mailbox: e.mailbox,
        class: e.class,
        len: e.envelope.len(),
        group: e.group.clone(),
    }
}

impl ReplicaStore for MemoryStore {
    fn scan(&mut self) -> Result<Vec<Removed>, StoreError> {
        Ok(self.rows.values().map(removed).collect())
    }

    fn find(
        &mut self,
        mailbox: &MailboxId,
        hash: &EnvelopeHash,
    ) -> Result<Option<Existing>, StoreError> {
        let key = (*mailbox, *hash);
        if let Some(expiry) = self.tombstones.get(&key) {
            return Ok(Some(Existing::Tombstone { expiry: *expiry }));
        }
        Ok(self.by_hash.get(&key).map(|seq| Existing::Held {
            expiry: self.rows.get(&(*mailbox, *seq)).map_or(0, |e| e.expiry),
        }))
    }

    fn insert(&mut self, envelopes: &[StoredEnvelope]) -> Result<Vec<u64>, StoreError> {
        let mut seqs = Vec::with_capacity(envelopes.len());
        for envelope in envelopes {
            self.next_seq += 1;
            let seq = self.next_seq;
            self.by_hash.insert((envelope.mailbox, envelope.hash), seq);
            self.rows.insert((envelope.mailbox, seq), envelope.clone());
            seqs.push(seq);
        }
        Ok(seqs)
    }

    fn fetch(
        &mut self,
        mailbox: &MailboxId,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<(Vec<Item>, bool), StoreError> {
        let mut items = Vec::new();
        let mut bytes = 0;
        let mut range = self
            .rows
            .range((*mailbox, after.saturating_add(1))..=(*mailbox, u64::MAX));
        for ((_, seq), e) in range.by_ref() {
            items.push(Item {
                seq: *seq,
                envelope: e.envelope.clone(),
                expiry: e.expiry,
            });
            bytes += e.envelope.len();
            if items.len() >= limit || bytes >= max_bytes {
                break;
            }
        }
        Ok((items, range.next().is_some()))
    }

    fn ack(
        &mut self,
        mailbox: &MailboxId,
        hashes: &[EnvelopeHash],
    ) -> Result<Vec<Removed>, StoreError> {
        let mut out = Vec::new();
        for hash in hashes {
            let key = (*mailbox, *hash);
            if let Some(seq) = self.by_hash.remove(&key)
                && let Some(e) = self.rows.remove(&(*mailbox, seq))
            {
                self.tombstones.insert(key, e.expiry);
                out.push(removed(&e));
            }
        }
        Ok(out)
    }

    fn expire(&mut self, unix_secs: u64) -> Result<Vec<Removed>, StoreError> {
        let gone: Vec<(MailboxId, u64)> = self
            .rows
            .iter()
            .filter(|(_, e)| e.expiry <= unix_secs)
            .map(|(k, _)| *k)
            .collect();
        let mut out = Vec::new();
        for key in gone {
            if let Some(e) = self.rows.remove(&key) {
                self.by_hash.remove(&(e.mailbox, e.hash));
                out.push(removed(&e));
            }
        }
        self.tombstones.retain(|_, expiry| *expiry > unix_secs);
        Ok(out)
    }
}

impl ReplicaStore for Box<dyn ReplicaStore> {
    fn scan(&mut self) -> Result<Vec<Removed>, StoreError> {
        (**self).scan()
    }

    fn find(
        &mut self,
        mailbox: &MailboxId,
        hash: &EnvelopeHash,
    ) -> Result<Option<Existing>, StoreError> {
        (**self).find(mailbox, hash)
    }

    fn insert(&mut self, envelopes: &[StoredEnvelope]) -> Result<Vec<u64>, StoreError> {
        (**self).insert(envelopes)
    }

    fn fetch(
        &mut self,
        mailbox: &MailboxId,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<(Vec<Item>, bool), StoreError> {
        (**self).fetch(mailbox, after, limit, max_bytes)
    }

    fn ack(
        &mut self,
        mailbox: &MailboxId,
        hashes: &[EnvelopeHash],
    ) -> Result<Vec<Removed>, StoreError> {
        (**self).ack(mailbox, hashes)
    }

    fn expire(&mut self, unix_secs: u64) -> Result<Vec<Removed>, StoreError> {
        (**self).expire(unix_secs)
    }
}
