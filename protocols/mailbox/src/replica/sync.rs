//! A replica's side of sync (see [`crate::sync`]): the first message of a
//! session, answers to the other replica's messages, and taking what it
//! hands over once the owner's proof checks out.
//!
//! The rules that keep a mailbox whole under churn:
//! - A replica takes items only for mailboxes it is a member of (one of
//!   the [`REPLICAS`](crate::REPLICAS) nodes closest to the mailbox in its
//!   view of the DHT), and sends items only to a peer that said it is a
//!   member in its last message: a newcomer is fed only after it confirmed.
//! - A node that is no longer a member ([`Role::Leaving`]) hands over what
//!   it holds and takes nothing but tombstones (which delete what it still
//!   holds); the caller drops the mailbox once every
//!   member confirmed it holds all of it (an answer of all skips and no
//!   needs: [`SyncHandled::in_sync`]).
//! - An envelope is taken only with the owner's signed store request, a
//!   tombstone only with the owner's signed ack naming it; a tombstone
//!   deletes the envelope and keeps it from coming back.

use shoal_identity::PeerId;
use shoal_transport::Multiaddr;

use super::{Replica, group_text};
use crate::id::{EnvelopeHash, MailboxId, Retention, WritePolicy};
use crate::receipt::NetGroup;
use crate::store::{AckProof, Handoff, Origin, ReplicaStore, StoreError, StoredEnvelope};
use crate::sync::message::{handoff_size, part_size};
use crate::sync::{ItemSet, MailboxSync, Mode, Role, SyncMessage};
use crate::wire::{Op, Request, parse_body};

/// Bytes of hand-offs and ranges put in one message; what is left goes in
/// the next session (see [`SyncHandled::more`]).
pub const SYNC_MESSAGE_BUDGET: usize = 384 * 1024;

/// What answering a sync message gave.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncHandled {
    /// The answer (send it unless [empty](SyncMessage::is_empty)).
    pub reply: SyncMessage,
    /// Mailboxes for which the peer, a member, said it has nothing left to
    /// compare and needs nothing. In the first answer to a session opened
    /// as [`Role::Leaving`] (which lists every item), that means the peer
    /// holds everything this replica does.
    pub in_sync: Vec<MailboxId>,
    /// Mailboxes the peer said it is not a member of.
    pub refused: Vec<MailboxId>,
    /// Items were left out for size: sync with this peer again soon.
    pub more: bool,
}

impl<S: ReplicaStore> Replica<S> {
    /// The first message of a session about `mailboxes`, each with what
    /// this node is to it: fingerprints from a member, the whole list from
    /// a leaving replica.
    pub fn sync_open(
        &mut self,
        mailboxes: &[(MailboxId, Role)],
    ) -> Result<SyncMessage, StoreError> {
        let mut message = SyncMessage::default();
        for (mailbox, role) in mailboxes {
            let set = ItemSet::new(self.store.sync_items(mailbox)?);
            let ranges = match role {
                Role::Leaving => set.list_all(),
                _ => set.initiate(),
            };
            message.mailboxes.push(MailboxSync {
                mailbox: *mailbox,
                role: *role,
                ranges,
                need: Vec::new(),
            });
        }
        self.stats.sync_messages += 1;
        Ok(message)
    }

    /// Answers `message` from `peer`, connected at `addr`, at wall time
    /// `unix_ms`; `is_member` tells whether this node replicates a mailbox
    /// (its view of the DHT).
    pub fn sync_handle(
        &mut self,
        unix_ms: u64,
        peer: PeerId,
        addr: &Multiaddr,
        message: &SyncMessage,
        is_member: &dyn Fn(&MailboxId) -> bool,
    ) -> Result<SyncHandled, StoreError> {
        let mut handled = SyncHandled::default();
        if self.peer_rate.take(&peer, unix_ms).is_err() {
            self.stats.busy += 1;
            return Ok(handled);
        }
        self.stats.sync_messages += 1;
        self.take_handoffs(unix_ms, addr, &message.items, is_member)?;
        let mut budget = SYNC_MESSAGE_BUDGET;
        for part in &message.mailboxes {
            let mailbox = part.mailbox;
            if part.role == Role::Refused {
                handled.refused.push(mailbox);
                continue;
            }
            let member = is_member(&mailbox);
            let items = self.store.sync_items(&mailbox)?;
            if !member && items.is_empty() {
                handled.reply.mailboxes.push(MailboxSync {
                    mailbox,
                    role: Role::Refused,
                    ranges: Vec::new(),
                    need: Vec::new(),
                });
                continue;
            }
            let set = ItemSet::new(items);
            let step = set.respond(&part.ranges);
            let peer_done = part.ranges.iter().all(|r| r.mode == Mode::Skip);
            if part.role == Role::Member && peer_done && part.need.is_empty() {
                handled.in_sync.push(mailbox);
            }
            // A member takes everything it lacks; a leaving replica only
            // tombstones (they delete what it still holds).
            let mut send: Vec<EnvelopeHash> = Vec::new();
            match part.role {
                Role::Member => {
                    send.extend(step.send.iter().map(|i| i.key.hash));
                    send.extend(part.need.iter().copied());
                }
                _ => send.extend(
                    step.send
                        .iter()
                        .filter(|i| i.state == crate::sync::State::Tombstone)
                        .map(|i| i.key.hash),
                ),
            }
            send.sort_unstable();
            send.dedup();
            let done = step.done();
            let need = if member { step.need } else { Vec::new() };
            if !(done && need.is_empty() && peer_done) {
                let reply = MailboxSync {
                    mailbox,
                    role: if member { Role::Member } else { Role::Leaving },
                    ranges: if done { Vec::new() } else { step.ranges },
                    need,
                };
                budget = budget.saturating_sub(part_size(&reply));
                handled.reply.mailboxes.push(reply);
            }
            if send.is_empty() {
                continue;
            }
            for item in self.store.handoffs(&mailbox, &send)? {
                let size = handoff_size(&item);
                if size > budget {
                    handled.more = true;
                    break;
                }
                budget -= size;
                match &item {
                    Handoff::Envelope { .. } => self.stats.handed_out += 1,
                    Handoff::Tombstones { entries, .. } => {
                        self.stats.tombstones_out += entries.len() as u64
                    }
                }
                handled.reply.items.push((mailbox, item));
            }
        }
        Ok(handled)
    }

    /// Takes what a peer handed over, for the mailboxes this node is a
    /// member of, once each item's proof checks out: tombstones first (so
    /// one wins over an envelope in the same message), then the envelopes
    /// in one transaction.
    fn take_handoffs(
        &mut self,
        unix_ms: u64,
        addr: &Multiaddr,
        items: &[(MailboxId, Handoff)],
        is_member: &dyn Fn(&MailboxId) -> bool,
    ) -> Result<(), StoreError> {
        let now = unix_ms / 1000;
        let latest = now.saturating_add(self.config.max_ttl.as_secs());
        let group = group_text(&NetGroup::of(addr));
        for (mailbox, item) in items {
            let Handoff::Tombstones { ack, entries } = item else {
                continue;
            };
            // Tombstones only delete: a replica leaving a mailbox takes
            // them for what it still holds.
            if !is_member(mailbox) && self.usage(mailbox) == Default::default() {
                self.stats.handoffs_refused += 1;
                continue;
            }
            let Some(acked) = checked_ack(mailbox, ack) else {
                self.stats.handoffs_refused += 1;
                continue;
            };
            let entries: Vec<(EnvelopeHash, u64)> = entries
                .iter()
                .filter(|(hash, expiry)| *expiry > now && acked.contains(hash))
                .map(|(hash, expiry)| (*hash, (*expiry).min(latest)))
                .collect();
            if entries.is_empty() {
                continue;
            }
            let removed = self.store.tombstone(mailbox, &entries, ack)?;
            self.stats.tombstones_in += entries.len() as u64;
            self.forget(removed);
            self.changed.insert(*mailbox, unix_ms);
        }
        let mut new: Vec<StoredEnvelope> = Vec::new();
        for (mailbox, item) in items {
            let Handoff::Envelope {
                body,
                signature,
                expiry,
            } = item
            else {
                continue;
            };
            if !is_member(mailbox) {
                self.stats.handoffs_refused += 1;
                continue;
            }
            // Already held or acked: nothing to check.
            let hash = match crate::wire::envelope_span(body) {
                Some((start, end)) => EnvelopeHash::of(&body[start..end]),
                None => {
                    self.stats.handoffs_refused += 1;
                    continue;
                }
            };
            let known = new.iter().any(|e| e.mailbox == *mailbox && e.hash == hash)
                || self.store.find(mailbox, &hash)?.is_some();
            if known {
                continue;
            }
            let Some(envelope) = checked_store(mailbox, body, *signature, now, latest, *expiry)
            else {
                self.stats.handoffs_refused += 1;
                continue;
            };
            if self
                .no_room(mailbox, envelope.class, envelope.envelope.len(), &group)
                .is_some()
            {
                self.stats.handoffs_dropped += 1;
                continue;
            }
            let e = StoredEnvelope {
                group: group.clone(),
                ..envelope
            };
            self.count(&e, true);
            new.push(e);
        }
        if new.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.store.insert(&new) {
            for e in &new {
                self.count(e, false);
            }
            return Err(e);
        }
        self.stats.commits += 1;
        self.stats.handed_in += new.len() as u64;
        for e in &new {
            self.changed.insert(e.mailbox, unix_ms);
        }
        Ok(())
    }

    /// When `mailbox` last took a new item (wall time, milliseconds), if
    /// since this replica opened.
    pub fn changed_at(&self, mailbox: &MailboxId) -> Option<u64> {
        self.changed.get(mailbox).copied()
    }

    /// Mailboxes with an envelope or a tombstone.
    pub fn mailboxes(&mut self) -> Result<Vec<MailboxId>, StoreError> {
        self.store.mailboxes()
    }

    /// Deletes all of `mailbox` (handed over: its members hold it).
    pub fn drop_mailbox(&mut self, mailbox: &MailboxId) -> Result<(), StoreError> {
        let removed = self.store.drop_mailbox(mailbox)?;
        self.stats.dropped += removed.len() as u64;
        self.forget(removed);
        self.changed.remove(mailbox);
        self.wakes.drop_mailbox(mailbox);
        Ok(())
    }
}

/// The hashes an ack proof covers, if it is the owner's ack of `mailbox`.
fn checked_ack(mailbox: &MailboxId, ack: &AckProof) -> Option<Vec<EnvelopeHash>> {
    let body = parse_body(&ack.body).ok()?;
    if body.descriptor.id() != *mailbox || body.descriptor.retention != Retention::UntilAck {
        return None;
    }
    let Op::Ack { hashes } = &body.op else {
        return None;
    };
    let hashes = hashes.clone();
    let request = Request {
        body_bytes: ack.body.clone(),
        signature: Some(ack.signature),
        body,
    };
    request.verify().then_some(hashes)
}

/// The envelope a handed-over store request carries, if it is a store to
/// `mailbox` signed as its write policy requires, not expired; kept to the
/// earliest of the holder's expiry, the request's and `latest`.
fn checked_store(
    mailbox: &MailboxId,
    body: &bytes::Bytes,
    signature: Option<[u8; shoal_identity::SIGNATURE_LEN]>,
    now: u64,
    latest: u64,
    held_expiry: u64,
) -> Option<StoredEnvelope> {
    let parsed = parse_body(body).ok()?;
    if parsed.descriptor.id() != *mailbox {
        return None;
    }
    let Op::Store {
        envelope,
        expiry,
        class,
    } = parsed.op.clone()
    else {
        return None;
    };
    let request = Request {
        body_bytes: body.clone(),
        signature,
        body: parsed,
    };
    if request.body.descriptor.write == WritePolicy::Owner && !request.verify() {
        return None;
    }
    let expiry = expiry.min(held_expiry).min(latest);
    if expiry <= now {
        return None;
    }
    Some(StoredEnvelope {
        mailbox: *mailbox,
        hash: EnvelopeHash::of(&envelope),
        envelope,
        expiry,
        class,
        group: String::new(),
        origin: Origin::of(&request),
    })
}
