//! Where a replica keeps envelopes: the [`ReplicaStore`] trait and the
//! in-memory [`MemoryStore`] (tests, simulations); `SqliteStore` (feature
//! `sqlite`) is the durable one.
//!
//! A store holds, per envelope: the mailbox id, a sequence number, the
//! envelope hash and bytes, the expiry, the class, and the network group
//! of the peer that stored it (for the per-network share of the disk
//! budget). Acked envelopes leave a tombstone (mailbox id, hash, expiry)
//! so that a late retry of the same bytes is not stored again.
//!
//! Each envelope also keeps its [`Origin`] (the owner's signed store
//! request) and each tombstone its [`AckProof`] (the owner's signed ack),
//! so a replica can hand them to another that checks them: see
//! [`crate::sync`]. Items without one (stored before version 2 of the
//! SQLite schema) are served but not handed on.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use shoal_identity::SIGNATURE_LEN;

use crate::id::{EnvelopeHash, MailboxId};
use crate::sync::{State, SyncItem, SyncKey};
use crate::wire::{Class, Item, Request};

/// The signed store request an envelope came with, kept without the
/// envelope's bytes (they sit between `head` and `tail` in the request's
/// body), so the body can be rebuilt exactly and its signature checked by
/// the replica it is handed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The body's bytes before the envelope.
    pub head: Bytes,
    /// The body's bytes after the envelope.
    pub tail: Bytes,
    /// The mailbox key's signature over the body (none for an open
    /// mailbox).
    pub signature: Option<[u8; SIGNATURE_LEN]>,
}

impl Origin {
    /// The origin of `request`, a store: `None` if it is not one.
    pub fn of(request: &Request) -> Option<Origin> {
        let (start, end) = crate::wire::envelope_span(&request.body_bytes)?;
        Some(Origin {
            head: request.body_bytes.slice(..start),
            tail: request.body_bytes.slice(end..),
            signature: request.signature,
        })
    }

    /// The request body, rebuilt around `envelope`.
    pub fn body(&self, envelope: &[u8]) -> Bytes {
        let mut body = Vec::with_capacity(self.head.len() + envelope.len() + self.tail.len());
        body.extend_from_slice(&self.head);
        body.extend_from_slice(envelope);
        body.extend_from_slice(&self.tail);
        Bytes::from(body)
    }
}

/// The owner's signed ack request: proof that the owner took the
/// envelopes it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckProof {
    /// The request body, exactly as signed.
    pub body: Bytes,
    /// The mailbox key's signature over it.
    pub signature: [u8; SIGNATURE_LEN],
}

/// What a replica hands another for items of a mailbox, with the owner's
/// proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handoff {
    /// A held envelope: its store request as signed, and the expiry the
    /// holder keeps it to.
    Envelope {
        /// The store request's body (the envelope inside).
        body: Bytes,
        /// The mailbox key's signature over it (none for an open mailbox).
        signature: Option<[u8; SIGNATURE_LEN]>,
        /// Unix seconds.
        expiry: u64,
    },
    /// Tombstones left by one ack: the ack as signed, and (hash, expiry)
    /// of each.
    Tombstones {
        /// The owner's ack.
        ack: AckProof,
        /// The acked envelopes it covers, with their expiries.
        entries: Vec<(EnvelopeHash, u64)>,
    },
}

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
    /// The signed request it came with, if known.
    pub origin: Option<Origin>,
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
    /// each until its expiry (kept with `proof`, the owner's ack); returns
    /// what was deleted.
    fn ack(
        &mut self,
        mailbox: &MailboxId,
        hashes: &[EnvelopeHash],
        proof: Option<&AckProof>,
    ) -> Result<Vec<Removed>, StoreError>;

    /// Leaves tombstones, with `proof`, for `entries` (hash, expiry) of
    /// `mailbox` (handed over by another replica), deleting the envelopes
    /// held of them; returns what was deleted.
    fn tombstone(
        &mut self,
        mailbox: &MailboxId,
        entries: &[(EnvelopeHash, u64)],
        proof: &AckProof,
    ) -> Result<Vec<Removed>, StoreError>;

    /// The items of `mailbox` that can be handed on (held envelopes with
    /// their origin, tombstones with their proof), in any order.
    fn sync_items(&mut self, mailbox: &MailboxId) -> Result<Vec<SyncItem>, StoreError>;

    /// What to hand another replica for `hashes` of `mailbox` (those
    /// unknown or without proof are left out).
    fn handoffs(
        &mut self,
        mailbox: &MailboxId,
        hashes: &[EnvelopeHash],
    ) -> Result<Vec<Handoff>, StoreError>;

    /// Every mailbox with an envelope or a tombstone.
    fn mailboxes(&mut self) -> Result<Vec<MailboxId>, StoreError>;

    /// Deletes everything of `mailbox` (its replicas are others now, and
    /// hold it); returns the envelopes deleted.
    fn drop_mailbox(&mut self, mailbox: &MailboxId) -> Result<Vec<Removed>, StoreError>;

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
    /// (mailbox, hash) -> tombstone expiry, and its proof.
    tombstones: BTreeMap<(MailboxId, EnvelopeHash), Tomb>,
}

/// A tombstone in memory: its expiry and the ack that made it.
type Tomb = (u64, Option<Arc<AckProof>>);

/// Tombstones of one ack, gathered to be handed on.
type AckGroup = (Arc<AckProof>, Vec<(EnvelopeHash, u64)>);

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
        if let Some((expiry, _)) = self.tombstones.get(&key) {
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
        proof: Option<&AckProof>,
    ) -> Result<Vec<Removed>, StoreError> {
        let proof = proof.map(|p| Arc::new(p.clone()));
        let mut out = Vec::new();
        for hash in hashes {
            let key = (*mailbox, *hash);
            if let Some(seq) = self.by_hash.remove(&key)
                && let Some(e) = self.rows.remove(&(*mailbox, seq))
            {
                self.tombstones.insert(key, (e.expiry, proof.clone()));
                out.push(removed(&e));
            }
        }
        Ok(out)
    }

    fn tombstone(
        &mut self,
        mailbox: &MailboxId,
        entries: &[(EnvelopeHash, u64)],
        proof: &AckProof,
    ) -> Result<Vec<Removed>, StoreError> {
        let proof = Arc::new(proof.clone());
        let mut out = Vec::new();
        for (hash, expiry) in entries {
            let key = (*mailbox, *hash);
            if let Some(seq) = self.by_hash.remove(&key)
                && let Some(e) = self.rows.remove(&(*mailbox, seq))
            {
                out.push(removed(&e));
            }
            self.tombstones.insert(key, (*expiry, Some(proof.clone())));
        }
        Ok(out)
    }

    fn sync_items(&mut self, mailbox: &MailboxId) -> Result<Vec<SyncItem>, StoreError> {
        let held = self
            .rows
            .range((*mailbox, 0)..=(*mailbox, u64::MAX))
            .filter(|(_, e)| e.origin.is_some())
            .map(|(_, e)| SyncItem {
                key: SyncKey {
                    expiry: e.expiry,
                    hash: e.hash,
                },
                state: State::Held,
            });
        let (first, last) = (
            EnvelopeHash::from_bytes([0; 32]),
            EnvelopeHash::from_bytes([0xff; 32]),
        );
        let tombs = self
            .tombstones
            .range((*mailbox, first)..=(*mailbox, last))
            .filter(|(_, (_, proof))| proof.is_some())
            .map(|((_, hash), (expiry, _))| SyncItem {
                key: SyncKey {
                    expiry: *expiry,
                    hash: *hash,
                },
                state: State::Tombstone,
            });
        Ok(held.chain(tombs).collect())
    }

    fn handoffs(
        &mut self,
        mailbox: &MailboxId,
        hashes: &[EnvelopeHash],
    ) -> Result<Vec<Handoff>, StoreError> {
        let mut out = Vec::new();
        let mut acks: Vec<AckGroup> = Vec::new();
        for hash in hashes {
            let key = (*mailbox, *hash);
            if let Some((expiry, Some(proof))) = self.tombstones.get(&key) {
                match acks.iter_mut().find(|(p, _)| Arc::ptr_eq(p, proof)) {
                    Some((_, entries)) => entries.push((*hash, *expiry)),
                    None => acks.push((proof.clone(), vec![(*hash, *expiry)])),
                }
            } else if let Some(seq) = self.by_hash.get(&key)
                && let Some(e) = self.rows.get(&(*mailbox, *seq))
                && let Some(origin) = &e.origin
            {
                out.push(Handoff::Envelope {
                    body: origin.body(&e.envelope),
                    signature: origin.signature,
                    expiry: e.expiry,
                });
            }
        }
        out.extend(acks.into_iter().map(|(ack, entries)| Handoff::Tombstones {
            ack: (*ack).clone(),
            entries,
        }));
        Ok(out)
    }

    fn mailboxes(&mut self) -> Result<Vec<MailboxId>, StoreError> {
        let mut out: Vec<MailboxId> = self.rows.keys().map(|(m, _)| *m).collect();
        out.extend(self.tombstones.keys().map(|(m, _)| *m));
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    fn drop_mailbox(&mut self, mailbox: &MailboxId) -> Result<Vec<Removed>, StoreError> {
        let keys: Vec<(MailboxId, u64)> = self
            .rows
            .range((*mailbox, 0)..=(*mailbox, u64::MAX))
            .map(|(k, _)| *k)
            .collect();
        let mut out = Vec::new();
        for key in keys {
            if let Some(e) = self.rows.remove(&key) {
                self.by_hash.remove(&(e.mailbox, e.hash));
                out.push(removed(&e));
            }
        }
        self.tombstones.retain(|(m, _), _| m != mailbox);
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
        self.tombstones.retain(|_, (expiry, _)| *expiry > unix_secs);
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
        proof: Option<&AckProof>,
    ) -> Result<Vec<Removed>, StoreError> {
        (**self).ack(mailbox, hashes, proof)
    }

    fn tombstone(
        &mut self,
        mailbox: &MailboxId,
        entries: &[(EnvelopeHash, u64)],
        proof: &AckProof,
    ) -> Result<Vec<Removed>, StoreError> {
        (**self).tombstone(mailbox, entries, proof)
    }

    fn sync_items(&mut self, mailbox: &MailboxId) -> Result<Vec<SyncItem>, StoreError> {
        (**self).sync_items(mailbox)
    }

    fn handoffs(
        &mut self,
        mailbox: &MailboxId,
        hashes: &[EnvelopeHash],
    ) -> Result<Vec<Handoff>, StoreError> {
        (**self).handoffs(mailbox, hashes)
    }

    fn mailboxes(&mut self) -> Result<Vec<MailboxId>, StoreError> {
        (**self).mailboxes()
    }

    fn drop_mailbox(&mut self, mailbox: &MailboxId) -> Result<Vec<Removed>, StoreError> {
        (**self).drop_mailbox(mailbox)
    }

    fn expire(&mut self, unix_secs: u64) -> Result<Vec<Removed>, StoreError> {
        (**self).expire(unix_secs)
    }
}
