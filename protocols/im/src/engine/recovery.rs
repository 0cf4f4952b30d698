//! Recovery after a store went back in time (a restored backup, a copied
//! data directory, a power loss under `synchronous=NORMAL`): getting back
//! our own messages the contact holds, and writing again under new ids the
//! ones we wrote after the restore on counters we had already used.
//!
//! The restored side lost (a) the contact's messages it had acknowledged:
//! they come back through resend requests, which are answered with
//! acknowledged messages too; and (b) its own messages the contact had
//! acknowledged: the contact returns them in [`Payload::Echo`], asked by a
//! [`Payload::Recover`] (sent while a received message waits for a
//! dependency no counter gap explains, or while messages wait to be
//! renumbered) or on its own when one of our messages reuses a counter it
//! holds another message under. Our messages written after the restore on
//! those counters were never accepted by the contact: they are *parked*
//! (removed from the history and the outbox, body kept) and written again
//! after the recovered ones once every counter up to the contact's last is
//! back, as new messages with new ids ([`Event::Renumbered`]).
//!
//! An echoed message is believed because it arrives inside the session
//! with the contact and names us as sender and the contact as recipient:
//! the contact could invent what we "said" to it, in our copy of the
//! history only. Details: docs/PROTOCOL.md 11.10.

use std::time::Instant;

use super::sessions::Sealing;
use super::{Batch, Engine, Event, RejectReason};
use crate::UserId;
use crate::conversation::Received;
use crate::message::{MAX_RESEND_RANGE, Message, MessageId, Payload};
use crate::store::{MessageMeta, Store, StoredMessage};

/// One of our messages waiting to be written again under a new counter.
pub(super) struct Parked {
    /// Its id before (reported with the new one).
    pub(super) old: MessageId,
    pub(super) timestamp_ms: u64,
    pub(super) body: Vec<u8>,
}

/// Most parked messages kept per contact (beyond it the oldest are kept
/// and the rest stay lost: they were never delivered).
pub(super) const MAX_PARKED: usize = 1_024;

/// How far beyond the first counter of ours we miss an echoed message may
/// be (four resend ranges).
const ECHO_REACH: u64 = 4 * MAX_RESEND_RANGE;

impl<S: Store> Engine<S> {
    /// Returns to `contact` its own messages from counter `from` on (at
    /// most [`MAX_RESEND_RANGE`], up to the last we hold), once per resend
    /// interval.
    pub(super) fn echo_from(
        &mut self,
        now: Instant,
        contact: UserId,
        from: u64,
        batch: &mut Batch,
    ) {
        let interval = self.config.resend_interval;
        let Some(c) = self.contacts.get_mut(&contact) else {
            return;
        };
        let Some(last) = c.conversation.peer_last() else {
            return;
        };
        if c.next_echo_answer.is_some_and(|t| t > now) {
            return;
        }
        c.next_echo_answer = Some(now + interval);
        let to = last.min(from.saturating_add(MAX_RESEND_RANGE - 1));
        let ids: Vec<MessageId> = (from..=to)
            .filter_map(|n| c.conversation.peer_at(n))
            .collect();
        for id in ids {
            match self.store.message(&id) {
                Ok(Some(stored)) => {
                    let echo = Payload::Echo {
                        last,
                        message: stored.encoded,
                    };
                    if !self.seal(contact, &echo, Sealing::Reply, batch) {
                        return;
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(%e, "echo: store read failed"),
            }
        }
    }

    /// Takes back one of our messages that `contact` returned.
    pub(super) fn take_echo(
        &mut self,
        now: Instant,
        contact: UserId,
        last: u64,
        encoded: Vec<u8>,
        batch: &mut Batch,
    ) -> Result<(), (Option<UserId>, RejectReason)> {
        let message = Message::decode(&encoded).map_err(|e| (Some(contact), e.into()))?;
        if message.sender != self.user_id() || message.recipient != contact {
            return Err((Some(contact), RejectReason::WrongSender));
        }
        let id = message.id();
        let c = self.contact_entry(contact);
        // What we lost is at most a few windows beyond what we hold: a
        // counter far ahead is made up (and would exhaust our counters).
        let reach = c.conversation.own_next().saturating_add(ECHO_REACH);
        if message.counter > reach {
            return Err((Some(contact), RejectReason::WrongSender));
        }
        // We lost what we had sent since some copy: we may have lost what
        // the contact sent us since too, and nothing may reveal the gap.
        // Ask for whatever follows what we hold (rate limited).
        self.request_missing(now, contact, true, Sealing::Reply, batch);
        let c = self.contact_entry(contact);
        let mut result = Ok(());
        if c.conversation.get_mut(&id).is_some() {
            // Still ours: the contact has it, so it was delivered.
            self.take_receipt(contact, &[id], false, batch);
        } else {
            if c.conversation
                .own_at(message.counter)
                .is_some_and(|other| other != id)
            {
                self.park_from(now, contact, message.counter, batch);
            }
            let c = self.contact_entry(contact);
            let shown = message.clone();
            match c.conversation.receive_own(message) {
                Err(e) => result = Err((Some(contact), e.into())),
                Ok(Received::Duplicate) => {}
                Ok(Received::Held { meta, .. }) => {
                    batch.changes.messages.push(StoredMessage { meta, encoded });
                }
                Ok(Received::Shown { meta, released }) => {
                    self.take_shown(contact, meta, shown, encoded, released, batch);
                }
            }
        }
        batch.dirty(contact);
        self.write_parked(now, contact, last, batch);
        result
    }

    /// Stores a message that arrived and is shown at once, reports it and
    /// the held ones it released (the contact's as received, ours as
    /// recovered; their bodies are read back from the store), and stores
    /// their new heights and flags.
    pub(super) fn take_shown(
        &mut self,
        contact: UserId,
        meta: MessageMeta,
        message: Message,
        encoded: Vec<u8>,
        released: Vec<MessageMeta>,
        batch: &mut Batch,
    ) {
        batch.events.push(shown_event(contact, &meta, message));
        batch.changes.messages.push(StoredMessage { meta, encoded });
        for meta in released {
            batch.update(&meta);
            let stored = match batch.changes.messages.iter().find(|m| m.meta.id == meta.id) {
                Some(m) => Some(m.encoded.clone()),
                None => match self.store.message(&meta.id) {
                    Ok(m) => m.map(|m| m.encoded),
                    Err(e) => {
                        // Shown in the history all the same; only the
                        // event is missed.
                        tracing::warn!(%e, "released message: store read failed");
                        None
                    }
                },
            };
            match stored.as_deref().map(Message::decode) {
                Some(Ok(message)) => batch.events.push(shown_event(contact, &meta, message)),
                _ => tracing::warn!(id = %meta.id, "released message missing from the store"),
            }
        }
    }

    /// Parks our undelivered messages from `counter` on: the contact holds
    /// other messages of ours under those counters.
    fn park_from(&mut self, now: Instant, contact: UserId, counter: u64, batch: &mut Batch) {
        let interval = self.config.resend_interval;
        let Some(c) = self.contacts.get(&contact) else {
            return;
        };
        let forks: Vec<(u64, MessageId)> = c
            .conversation
            .own_from(counter)
            .into_iter()
            .filter(|(_, id)| c.conversation.get(id).is_some_and(|m| !m.flags.delivered))
            .collect();
        for (n, id) in forks {
            let message = match self.store.message(&id) {
                Ok(Some(stored)) => match Message::decode(&stored.encoded) {
                    Ok(m) => m,
                    Err(_) => continue,
                },
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(%e, "park: store read failed");
                    continue;
                }
            };
            let Some(c) = self.contacts.get_mut(&contact) else {
                return;
            };
            if c.parked.len() >= MAX_PARKED {
                // Left as they are (the contact keeps refusing them) rather
                // than lost.
                tracing::warn!(%contact, "too many messages to rewrite; the rest stay as written");
                break;
            }
            c.conversation.remove_own(&message);
            c.outbox.remove(&n);
            batch.changes.removed.push(id);
            c.parked.push(Parked {
                old: id,
                timestamp_ms: message.timestamp_ms,
                body: message.body,
            });
            // Ask for the rest of what we lost if it does not come.
            c.next_resend_request.get_or_insert(now + interval);
        }
        batch.dirty(contact);
    }

    /// Writes the parked messages again, after the recovered ones, once our
    /// counter `last` (the highest the contact holds) is back. Echoes come
    /// in counter order, so by then the ones before it normally are too; a
    /// counter that never comes back (a message only our lost state had)
    /// does not keep the parked ones from going out.
    fn write_parked(&mut self, now: Instant, contact: UserId, last: u64, batch: &mut Batch) {
        let sender = self.user_id();
        let Some(c) = self.contacts.get_mut(&contact) else {
            return;
        };
        if c.parked.is_empty() || c.conversation.own_last().is_none_or(|own| own < last) {
            return;
        }
        for parked in std::mem::take(&mut c.parked) {
            let (message, meta) =
                c.conversation
                    .compose(sender, contact, parked.body, parked.timestamp_ms);
            let encoded = message.encode();
            c.outbox.insert(
                meta.counter,
                super::outbox::Pending::new(encoded.clone(), now),
            );
            batch.events.push(Event::Renumbered {
                contact,
                old: parked.old,
                new: meta.id,
            });
            batch.changes.messages.push(StoredMessage { meta, encoded });
        }
        batch.dirty(contact);
        self.flush_outbox(now, contact, batch);
    }

    /// The first time a contact is online after the engine opened: asks
    /// for its messages after the ones we hold and for ours after the ones
    /// we hold. Both are answered only if we lost something (our store
    /// went back in time while the engine was closed), and cost two small
    /// envelopes per contact and start otherwise.
    pub(super) fn sync_after_open(&mut self, contact: UserId, batch: &mut Batch) -> bool {
        let Some(c) = self.contacts.get(&contact) else {
            return false;
        };
        let floor = c.conversation.floor();
        let resend = Payload::Resend {
            from: floor,
            to: floor + MAX_RESEND_RANGE - 1,
        };
        if !self.seal(contact, &resend, Sealing::Own, batch) {
            return false;
        }
        if let Some(from) = self.recover_from(&contact) {
            return self.seal(contact, &Payload::Recover { from }, Sealing::Own, batch);
        }
        true
    }

    /// The first of our counters to ask the contact for: the first one we
    /// do not hold, or the first undelivered one if lower.
    pub(super) fn recover_from(&self, contact: &UserId) -> Option<u64> {
        let c = self.contacts.get(contact)?;
        let next = c.conversation.own_next();
        Some(c.outbox.keys().next().map_or(next, |n| next.min(*n)))
    }
}

/// The event for a message now shown: the contact's is received, ours
/// (recovered after a restore) is recovered.
fn shown_event(contact: UserId, meta: &MessageMeta, message: Message) -> Event {
    let (id, height) = (meta.id, meta.height);
    if meta.outgoing {
        Event::Recovered {
            contact,
            id,
            message,
            height,
        }
    } else {
        Event::Received {
            contact,
            id,
            message,
            height,
        }
    }
}
