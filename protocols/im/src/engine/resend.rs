//! Resend requests: asking a contact for the counters we miss, and
//! answering its requests with our messages again.

use std::time::Instant;

use super::sessions::Sealing;
use super::{Batch, Engine};
use crate::UserId;
use crate::message::{MessageId, Payload};
use crate::store::Store;

impl<S: Store> Engine<S> {
    /// Sends our messages with counters `from..=to` again, once per resend
    /// interval: each costs a message key and up to a bucket of bandwidth.
    /// Messages the contact acknowledged are sent too: a contact whose
    /// disk went back in time lost them.
    pub(super) fn answer_resend(
        &mut self,
        now: Instant,
        contact: UserId,
        from: u64,
        to: u64,
        batch: &mut Batch,
    ) {
        let interval = self.config.resend_interval;
        let c = self.contact_entry(contact);
        if c.next_resend_answer.is_some_and(|t| t > now) {
            return;
        }
        c.next_resend_answer = Some(now + interval);
        let ids: Vec<MessageId> = (from..=to)
            .filter_map(|n| c.conversation.own_at(n))
            .collect();
        for id in ids {
            match self.store.message(&id) {
                Ok(Some(stored)) => {
                    self.seal(
                        contact,
                        &Payload::Chat(stored.encoded),
                        Sealing::Reply,
                        batch,
                    );
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(%e, "resend: store read failed"),
            }
        }
    }

    /// Asks `contact` for the missing counters (`force`: whatever follows
    /// what we have). Rate limited either way; timed requests (`sealing` is
    /// [`Sealing::Own`]) back off, doubling up to the retry maximum, until
    /// the contact answers.
    pub(super) fn request_missing(
        &mut self,
        now: Instant,
        contact: UserId,
        force: bool,
        sealing: Sealing,
        batch: &mut Batch,
    ) {
        let interval = self.config.resend_interval;
        let max = self.config.retry_max.max(interval);
        // Never create a contact here: an envelope refused before it
        // authenticated (a forged initial header) may name anyone. Nothing
        // is asked of a stranger whose request is pending.
        let Some(c) = self
            .contacts
            .get_mut(&contact)
            .filter(|c| c.request.is_none())
        else {
            return;
        };
        // Rate limited even when forced: a forged envelope (its header is
        // not authenticated before decryption fails) must not make us send.
        // Answers to what arrived and timed requests have limits of their
        // own: timed requests wait while the contact is offline, and must
        // not hold back the answer to an envelope it just sent.
        if sealing == Sealing::Reply {
            if c.next_reply_request.is_some_and(|t| t > now) {
                return;
            }
            c.next_reply_request = Some(now + interval);
        } else if c.next_resend_request.is_some_and(|t| t > now) {
            return;
        }
        // Forced (a message beyond the ratchet window): whatever follows
        // what we have.
        let floor = c.conversation.floor();
        let range = c
            .conversation
            .missing()
            .or(force.then(|| (floor, floor + crate::message::MAX_RESEND_RANGE - 1)));
        // Due either way: with nothing to ask for (a held message waits
        // for a dependency, not a counter) the timer must still move on.
        let wait = if sealing == Sealing::Own {
            c.resend_requests = c.resend_requests.saturating_add(1);
            interval
                .saturating_mul(1u32 << (c.resend_requests - 1).min(16))
                .min(max)
        } else {
            interval
        };
        c.next_resend_request = Some(now + wait);
        // A held message no counter gap explains waits for one of our own
        // messages, and parked ones wait for ours to come back: we lost
        // them (see the recovery module).
        let own_lost = (c.conversation.held_len() > 0 && range.is_none())
            || c.conversation.own_held()
            || !c.parked.is_empty();
        if let Some((from, to)) = range {
            self.seal(contact, &Payload::Resend { from, to }, sealing, batch);
        }
        if own_lost && let Some(from) = self.recover_from(&contact) {
            self.seal(contact, &Payload::Recover { from }, sealing, batch);
        }
    }
}
