//! The owner's side: fetches (with live subscriptions), acks, and the
//! expiry that deletes what nobody acked.

use shoal_identity::PeerId;

use super::{Incoming, Replica};
use crate::id::{EnvelopeHash, MailboxId, Retention};
use crate::store::{AckProof, Removed, ReplicaStore, StoreError, Usage};
use crate::wire::{Answer, MAX_FETCH_BYTES, MAX_FETCH_ITEMS, Op, Refusal};

impl<S: ReplicaStore> Replica<S> {
    /// Answers a checked fetch or ack.
    pub(super) fn read(
        &mut self,
        unix_ms: u64,
        incoming: &Incoming<'_>,
        mailbox: MailboxId,
    ) -> Option<Answer> {
        let body = &incoming.request.body;
        let result = match &body.op {
            Op::Fetch {
                after,
                limit,
                subscribe,
            } => self.fetch(mailbox, incoming, *after, *limit, *subscribe),
            Op::Ack { hashes } => {
                if body.descriptor.retention == Retention::Expiry {
                    return Some(self.refuse(Refusal::NotAckable, unix_ms));
                }
                let proof = incoming.request.signature.map(|signature| AckProof {
                    body: incoming.request.body_bytes.clone(),
                    signature,
                });
                self.ack(unix_ms, mailbox, hashes, proof.as_ref())
            }
            Op::Store { .. } | Op::Register { .. } => return None,
        };
        Some(result.unwrap_or_else(|e| {
            tracing::warn!(%e, "mailbox store failed");
            self.refuse(Refusal::StoreFailed, unix_ms)
        }))
    }

    fn fetch(
        &mut self,
        mailbox: MailboxId,
        incoming: &Incoming<'_>,
        after: u64,
        limit: u32,
        subscribe: bool,
    ) -> Result<Answer, StoreError> {
        let limit = limit.clamp(1, MAX_FETCH_ITEMS) as usize;
        let (items, more) = self.store.fetch(&mailbox, after, limit, MAX_FETCH_BYTES)?;
        self.stats.fetches += 1;
        if subscribe {
            self.subscribe(mailbox, incoming.peer, incoming.id);
        }
        Ok(Answer::Items { items, more })
    }

    /// Registers (or renews, under the new id) `peer`'s subscription to
    /// `mailbox`, within the limits; beyond them the fetch is answered
    /// without one.
    fn subscribe(&mut self, mailbox: MailboxId, peer: PeerId, id: u64) {
        let subscribers = self.subscriptions.entry(mailbox).or_default();
        if let Some(s) = subscribers.iter_mut().find(|(p, _)| *p == peer) {
            s.1 = id;
            return;
        }
        let mine = self.subscriptions_per_peer.entry(peer).or_default();
        if *mine >= self.config.max_subscriptions_per_peer
            || self.subscription_count >= self.config.max_subscriptions
        {
            return;
        }
        *mine += 1;
        self.subscription_count += 1;
        subscribers.push((peer, id));
    }

    pub(super) fn drop_subscriptions(&mut self, peer: &PeerId) {
        if self.subscriptions_per_peer.remove(peer).is_none() {
            return;
        }
        let mut dropped = 0;
        self.subscriptions.retain(|_, subscribers| {
            let before = subscribers.len();
            subscribers.retain(|(p, _)| p != peer);
            dropped += before - subscribers.len();
            !subscribers.is_empty()
        });
        self.subscription_count -= dropped;
    }

    /// Live subscriptions.
    pub fn subscriptions(&self) -> usize {
        self.subscription_count
    }

    fn ack(
        &mut self,
        unix_ms: u64,
        mailbox: MailboxId,
        hashes: &[EnvelopeHash],
        proof: Option<&AckProof>,
    ) -> Result<Answer, StoreError> {
        let removed = self.store.ack(&mailbox, hashes, proof)?;
        let n = removed.len();
        if n > 0 {
            self.changed.insert(mailbox, unix_ms);
        }
        self.forget(removed);
        self.stats.acked += n as u64;
        Ok(Answer::Acked {
            removed: u32::try_from(n).unwrap_or(u32::MAX),
        })
    }

    pub(super) fn forget(&mut self, removed: Vec<Removed>) {
        for r in removed {
            if let Some(u) = self.usage.get_mut(&r.mailbox) {
                u.remove(r.class, r.len);
                if *u == Usage::default() {
                    self.usage.remove(&r.mailbox);
                }
            }
            if let Some(g) = self.group_bytes.get_mut(&r.group) {
                *g = g.saturating_sub(r.len as u64);
                if *g == 0 {
                    self.group_bytes.remove(&r.group);
                }
            }
            self.total_bytes = self.total_bytes.saturating_sub(r.len as u64);
        }
    }

    /// Deletes what expired by `unix_secs`.
    pub fn expire(&mut self, unix_secs: u64) -> Result<(), StoreError> {
        let removed = self.store.expire(unix_secs)?;
        self.stats.expired += removed.len() as u64;
        self.forget(removed);
        self.wakes.expire(unix_secs);
        Ok(())
    }
}
