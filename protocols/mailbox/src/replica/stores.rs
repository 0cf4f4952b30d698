//! Stores: admission (expiry, duplicates, quota, disk budget), the commit
//! of a batch's new envelopes, and the receipts signed after it.

use bytes::Bytes;
use shoal_identity::PeerId;

use super::{Handled, Replica, group_text};
use crate::id::{EnvelopeHash, MailboxId};
use crate::receipt::{NetGroup, Receipt};
use crate::store::{Existing, Origin, ReplicaStore, StoreError, StoredEnvelope};
use crate::wire::{Answer, Class, Frame, Item, Refusal};

/// One store request, checked.
pub(super) struct StoreOp<'a> {
    pub(super) mailbox: MailboxId,
    pub(super) group: &'a NetGroup,
    pub(super) envelope: &'a Bytes,
    pub(super) expiry: u64,
    pub(super) class: Class,
    /// The signed request it came in (kept to hand it on).
    pub(super) origin: Option<Origin>,
}

/// A receipt a store of the batch will get.
struct Wanted {
    /// The request's index in the batch.
    request: usize,
    mailbox: MailboxId,
    hash: EnvelopeHash,
    expiry: u64,
    /// The new envelope it waits for (index in `envelopes`), if any; the
    /// request that brought it also pushes it to subscribers.
    new: Option<(usize, bool)>,
}

/// The stores of a batch, waiting for their commit and their receipts.
#[derive(Default)]
pub(super) struct PendingStores {
    envelopes: Vec<StoredEnvelope>,
    wanted: Vec<Wanted>,
}

impl<S: ReplicaStore> Replica<S> {
    /// Decides a store: an answer now, or `None` if the envelope waits in
    /// `pending` (as request `index` of the batch) for the commit.
    pub(super) fn admit(
        &mut self,
        unix_ms: u64,
        op: &StoreOp<'_>,
        pending: &mut PendingStores,
        index: usize,
    ) -> Result<Option<Answer>, StoreError> {
        let now = unix_ms / 1000;
        if op.expiry <= now {
            return Ok(Some(self.refuse(Refusal::Expiry, unix_ms)));
        }
        let expiry = op
            .expiry
            .min(now.saturating_add(self.config.max_ttl.as_secs()));
        let hash = EnvelopeHash::of(op.envelope);
        if let Some(j) = pending
            .envelopes
            .iter()
            .position(|e| e.mailbox == op.mailbox && e.hash == hash)
        {
            self.stats.duplicates += 1;
            pending.wanted.push(Wanted {
                request: index,
                mailbox: op.mailbox,
                hash,
                expiry: pending.envelopes[j].expiry,
                new: Some((j, false)),
            });
            return Ok(None);
        }
        if let Some(existing) = self.store.find(&op.mailbox, &hash)? {
            // Held or acked already: the receipt again, for the expiry the
            // first store got (an ack's tombstone keeps it).
            self.stats.duplicates += 1;
            let (Existing::Held { expiry } | Existing::Tombstone { expiry }) = existing;
            pending.wanted.push(Wanted {
                request: index,
                mailbox: op.mailbox,
                hash,
                expiry,
                new: None,
            });
            return Ok(None);
        }
        let group = group_text(op.group);
        if let Some(answer) = self.no_room(&op.mailbox, op.class, op.envelope.len(), &group) {
            return Ok(Some(answer));
        }
        let envelope = StoredEnvelope {
            mailbox: op.mailbox,
            hash,
            envelope: op.envelope.clone(),
            expiry,
            class: op.class,
            group,
            origin: op.origin.clone(),
        };
        // Counted now, so later stores of the batch see it.
        self.count(&envelope, true);
        pending.wanted.push(Wanted {
            request: index,
            mailbox: op.mailbox,
            hash,
            expiry,
            new: Some((pending.envelopes.len(), true)),
        });
        pending.envelopes.push(envelope);
        Ok(None)
    }

    /// Why an envelope of `len` bytes and `class`, from `group`, cannot be
    /// kept in `mailbox` now (its quota, the disk budget, the group's
    /// share), if it cannot.
    pub(super) fn no_room(
        &mut self,
        mailbox: &MailboxId,
        class: Class,
        len: usize,
        group: &str,
    ) -> Option<Answer> {
        let usage = self.usage(mailbox);
        let len = len as u64;
        let over_quota = match class {
            Class::Normal => {
                usage.normal >= self.config.quota_envelopes
                    || usage.bytes + len > self.config.quota_bytes
            }
            Class::Control => usage.control >= self.config.control_reserve,
        };
        if over_quota {
            self.stats.quota += 1;
            return Some(Answer::Quota {
                retry_after_ms: 60_000,
            });
        }
        let group_used = self.group_bytes.get(group).copied().unwrap_or(0);
        let group_budget = self.config.disk_budget / self.config.group_share.max(1);
        if self.total_bytes + len > self.config.disk_budget || group_used + len > group_budget {
            self.stats.busy += 1;
            return Some(Answer::Busy {
                retry_after_ms: 60_000,
            });
        }
        None
    }

    /// Adds (or takes back) an envelope in the accounting.
    pub(super) fn count(&mut self, e: &StoredEnvelope, add: bool) {
        let len = e.envelope.len();
        let usage = self.usage.entry(e.mailbox).or_default();
        let group = self.group_bytes.entry(e.group.clone()).or_default();
        if add {
            usage.add(e.class, len);
            *group += len as u64;
            self.total_bytes += len as u64;
        } else {
            usage.remove(e.class, len);
            *group = group.saturating_sub(len as u64);
            self.total_bytes = self.total_bytes.saturating_sub(len as u64);
        }
    }

    /// Commits the pending envelopes in one transaction, then answers the
    /// batch's stores with receipts under one signature (or, for the new
    /// envelopes, with a refusal if the commit failed) and pushes the new
    /// envelopes to their mailboxes' subscribers.
    pub(super) fn commit(
        &mut self,
        unix_ms: u64,
        pending: &mut PendingStores,
        out: &mut [Handled],
    ) {
        let envelopes = std::mem::take(&mut pending.envelopes);
        let mut wanted = std::mem::take(&mut pending.wanted);
        if wanted.is_empty() {
            return;
        }
        let mut seqs = Vec::new();
        if !envelopes.is_empty() {
            match self.store.insert(&envelopes) {
                Ok(s) => {
                    for e in &envelopes {
                        self.changed.insert(e.mailbox, unix_ms);
                    }
                    self.stats.commits += 1;
                    self.stats.stored += envelopes.len() as u64;
                    seqs = s;
                }
                Err(e) => {
                    tracing::warn!(%e, "mailbox store failed");
                    for e in &envelopes {
                        self.count(e, false);
                    }
                    for w in wanted.iter().filter(|w| w.new.is_some()) {
                        out[w.request].answer = self.refuse(Refusal::StoreFailed, unix_ms);
                    }
                    wanted.retain(|w| w.new.is_none());
                }
            }
        }
        let fields: Vec<_> = wanted
            .iter()
            .map(|w| (w.mailbox, w.hash, w.expiry))
            .collect();
        let receipts = Receipt::sign_batch(&self.key, &fields);
        for (w, receipt) in wanted.iter().zip(receipts) {
            out[w.request].answer = Answer::Stored {
                signature: receipt.signature,
                expiry: receipt.expiry,
                proof: receipt.proof,
            };
            if let Some((j, true)) = w.new
                && let (Some(e), Some(seq)) = (envelopes.get(j), seqs.get(j))
            {
                out[w.request].pushes = self.pushes(e, *seq);
                if out[w.request].pushes.is_empty() {
                    // Nobody is live: a registered endpoint is woken.
                    self.wake_for(&e.mailbox, unix_ms);
                }
            }
        }
    }

    fn pushes(&mut self, e: &StoredEnvelope, seq: u64) -> Vec<(PeerId, Bytes)> {
        let Some(subscribers) = self.subscriptions.get(&e.mailbox) else {
            return Vec::new();
        };
        let item = Item {
            seq,
            envelope: e.envelope.clone(),
            expiry: e.expiry,
        };
        let pushes: Vec<(PeerId, Bytes)> = subscribers
            .iter()
            .map(|(peer, id)| {
                let frame = Frame::Push {
                    id: *id,
                    item: item.clone(),
                };
                (*peer, frame.encode())
            })
            .collect();
        self.stats.pushed += pushes.len() as u64;
        pushes
    }
}
