//! Receiving: envelopes from the network to shown messages, acknowledgements,
//! receipts and resend requests.

use std::time::Instant;

use super::sessions::{Sealing, SessionEntry};
use super::{Batch, Engine, EngineError, Event, MAX_UNNAMED_CONTACTS, RejectReason};
use crate::conversation::Received;
use crate::envelope::{Envelope, SessionRef, unpad};
use crate::message::{Message, MessageId, Payload};
use crate::store::{Store, StoredMessage};
use crate::x3dh;
use crate::{Error, UserId};

impl<S: Store> Engine<S> {
    /// Takes one envelope from the network. `from` is the device the
    /// envelope arrived from, when the transport knows it (informational:
    /// sessions are found by id, so relayed envelopes work too). Refusals
    /// become [`Event::Rejected`]; only store failures are errors.
    pub fn handle_envelope(&mut self, now: Instant, bytes: &[u8]) -> Result<(), EngineError> {
        self.tick(now);
        self.check()?;
        let mut batch = Batch::default();
        if let Err((contact, reason)) = self.receive(now, bytes, &mut batch) {
            tracing::debug!(?contact, %reason, "envelope refused");
            batch.events.push(Event::Rejected { contact, reason });
        }
        self.finish(batch)
    }

    fn receive(
        &mut self,
        now: Instant,
        bytes: &[u8],
        batch: &mut Batch,
    ) -> Result<(), (Option<UserId>, RejectReason)> {
        let envelope = Envelope::decode(bytes).map_err(|e| (None, e.into()))?;
        if envelope.recipient != self.device.certificate().device().peer_id() {
            return Err((None, RejectReason::WrongRecipient));
        }
        let session_id = envelope.session.id();
        let (contact, new_session) = match self.sessions.get(&session_id) {
            Some(user) => (*user, None),
            None => match &envelope.session {
                SessionRef::Known(_) => return Err((None, RejectReason::UnknownSession)),
                SessionRef::Initial(header) => {
                    let user = UserId::new(header.sender.user());
                    if user == self.user_id() {
                        return Err((Some(user), RejectReason::FromSelf));
                    }
                    // Anyone can mint user keys: bound the conversations
                    // strangers can open (contacts never named by the user).
                    if !self.contacts.contains_key(&user)
                        && self.contacts.values().filter(|c| c.name.is_empty()).count()
                            >= MAX_UNNAMED_CONTACTS
                    {
                        return Err((Some(user), RejectReason::TooManyStrangers));
                    }
                    let secret = self
                        .prekeys
                        .iter()
                        .find(|p| p.signed.id() == header.prekey_id)
                        .map(|p| &p.secret)
                        .ok_or((
                            Some(user),
                            RejectReason::Crypto(Error::PrekeyMismatch {
                                found: header.prekey_id,
                                expected: self.prekeys[self.prekeys.len() - 1].signed.id(),
                            }),
                        ))?;
                    let session = x3dh::respond(&self.device, secret, header)
                        .map_err(|e| (Some(user), e.into()))?;
                    (user, Some((session, (**header).clone())))
                }
            },
        };
        // Decrypt on a copy: nothing changes unless the whole envelope is good.
        let mut session = match &new_session {
            Some((session, _)) => session.clone(),
            None => self
                .contacts
                .get(&contact)
                .and_then(|c| c.sessions.iter().find(|s| s.id == session_id))
                .map(|s| s.session.clone())
                .ok_or((Some(contact), RejectReason::UnknownSession))?,
        };
        let padded = match session.decrypt(&envelope.ratchet) {
            Ok(padded) => padded,
            Err(Error::AlreadyUsedOrEvicted { .. }) if new_session.is_none() => {
                // A replay or duplicate of a message already taken: drop.
                return Ok(());
            }
            Err(e @ Error::OutsideWindow { .. }) => {
                self.request_missing(now, contact, true, Sealing::Reply, batch);
                return Err((Some(contact), e.into()));
            }
            Err(e) => return Err((Some(contact), e.into())),
        };
        let payload = unpad(&padded)
            .and_then(Payload::decode)
            .map_err(|e| (Some(contact), RejectReason::from(e)))?;
        let chat = match &payload {
            Payload::Chat(encoded) => {
                let message = Message::decode(encoded).map_err(|e| (Some(contact), e.into()))?;
                if message.sender != contact || message.recipient != self.user_id() {
                    return Err((Some(contact), RejectReason::WrongSender));
                }
                Some(message)
            }
            _ => None,
        };

        // Accepted: install the session state.
        if !self.contacts.contains_key(&contact) {
            batch.events.push(Event::ContactAdded { contact });
        }
        let max_sessions = self.config.max_sessions.max(1);
        let c = self.contact_entry(contact);
        // They are reading: the send budget is theirs again.
        c.unanswered = 0;
        c.next_probe = None;
        c.resend_requests = 0;
        match new_session {
            Some((_, header)) => {
                let entry = SessionEntry {
                    id: session_id,
                    session,
                    initial: None,
                };
                // Both sides started a session at once: both keep the one
                // with the smaller id. Otherwise the peer's new session wins
                // (they lost ours).
                let ours_pending = c.sessions.first().is_some_and(|s| s.initial.is_some());
                if ours_pending && c.sessions[0].id < session_id {
                    c.sessions.insert(1, entry);
                } else {
                    c.sessions.insert(0, entry);
                }
                c.device = Some(header.sender.clone());
                let mut dropped = Vec::new();
                while c.sessions.len() > max_sessions {
                    if let Some(old) = c.sessions.pop() {
                        dropped.push(old.id);
                    }
                }
                for old in dropped {
                    self.sessions.remove(&old);
                }
                self.sessions.insert(session_id, contact);
            }
            None => {
                if let Some(entry) = c.sessions.iter_mut().find(|s| s.id == session_id) {
                    entry.session = session;
                    entry.initial = None;
                }
            }
        }
        batch.dirty(contact);

        match payload {
            Payload::Chat(encoded) => {
                if let Some(message) = chat {
                    self.take_chat(now, contact, message, encoded, batch)?;
                }
            }
            Payload::Ack(ids) => self.take_receipt(contact, &ids, false, batch),
            Payload::Read(ids) => self.take_receipt(contact, &ids, true, batch),
            Payload::Resend { from, to } => {
                let interval = self.config.resend_interval;
                let c = self.contact_entry(contact);
                // One answer per interval, and only what was never
                // acknowledged: each resent message costs a message key
                // and up to a bucket of bandwidth.
                if c.next_resend_answer.is_some_and(|t| t > now) {
                    return Ok(());
                }
                c.next_resend_answer = Some(now + interval);
                let ids: Vec<MessageId> = (from..=to)
                    .filter_map(|n| c.conversation.own_at(n))
                    .filter(|id| c.conversation.get(id).is_some_and(|m| !m.flags.delivered))
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
                        Err(e) => {
                            tracing::warn!(%e, "resend: store read failed");
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn take_chat(
        &mut self,
        now: Instant,
        contact: UserId,
        message: Message,
        encoded: Vec<u8>,
        batch: &mut Batch,
    ) -> Result<(), (Option<UserId>, RejectReason)> {
        let c = self.contact_entry(contact);
        let id = message.id();
        let shown_message = message.clone();
        match c.conversation.receive(message) {
            Err(e) => return Err((Some(contact), e.into())),
            Ok(Received::Duplicate) => {}
            Ok(Received::Held { meta, missing }) => {
                batch.changes.messages.push(StoredMessage { meta, encoded });
                if missing.is_some() {
                    self.request_missing(now, contact, false, Sealing::Reply, batch);
                }
            }
            Ok(Received::Shown { meta, released }) => {
                batch.events.push(Event::Received {
                    contact,
                    id,
                    message: shown_message,
                    height: meta.height,
                });
                batch.changes.messages.push(StoredMessage { meta, encoded });
                for (meta, message) in released {
                    batch
                        .changes
                        .updates
                        .push((meta.id, meta.height, meta.flags));
                    batch.events.push(Event::Received {
                        contact,
                        id: meta.id,
                        message,
                        height: meta.height,
                    });
                }
            }
        }
        // Acknowledged once committed (finish commits before sending).
        self.seal(contact, &Payload::Ack(vec![id]), Sealing::Reply, batch);
        Ok(())
    }

    fn take_receipt(&mut self, contact: UserId, ids: &[MessageId], read: bool, batch: &mut Batch) {
        let c = self.contact_entry(contact);
        for id in ids {
            let Some(meta) = c.conversation.get_mut(id) else {
                continue;
            };
            if !meta.outgoing {
                continue;
            }
            let was = meta.flags;
            meta.flags.delivered = true;
            if read {
                meta.flags.read = true;
            }
            if meta.flags == was {
                continue;
            }
            batch.changes.updates.push((*id, meta.height, meta.flags));
            let counter = meta.counter;
            if !was.delivered {
                c.outbox.remove(&counter);
                batch.events.push(Event::Delivered { contact, id: *id });
            }
            if read && !was.read {
                batch.events.push(Event::Read { contact, id: *id });
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
        // authenticated (a forged initial header) may name anyone.
        let Some(c) = self.contacts.get_mut(&contact) else {
            return;
        };
        // Rate limited even when forced: a forged envelope (its header is
        // not authenticated before decryption fails) must not make us send.
        if c.next_resend_request.is_some_and(|t| t > now) {
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
        if let Some((from, to)) = range {
            self.seal(contact, &Payload::Resend { from, to }, sealing, batch);
        }
    }
}
