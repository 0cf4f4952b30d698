//! Receiving: envelopes from the network to shown messages, acknowledgements,
//! receipts and resend requests.

use std::time::Instant;

use super::repair::{RESET_ANSWER_WINDOW, ResetCause};
use super::sessions::{Sealing, SessionEntry};
use super::{Batch, Engine, EngineError, Event, RejectReason};
use crate::conversation::{OrderingError, Received};
use crate::envelope::{Envelope, SessionRef, unpad};
use crate::message::{Message, MessageId, Payload};
use crate::reset::is_reset_request;
use crate::store::{ReceivedEnvelope, Store, StoredMessage, envelope_key};
use crate::x3dh;
use crate::{Error, UserId};
use shoal_identity::PeerId;

impl<S: Store> Engine<S> {
    /// Takes one envelope from the network whose sender is not known (a
    /// relayed or stored one): sessions are found by id. Refusals are
    /// counted ([`Engine::refusals`]), not reported as events; only store
    /// failures are errors. An envelope
    /// that fails to decrypt never makes the engine ask for a new session
    /// here; see [`Engine::handle_envelope_from`].
    pub fn handle_envelope(&mut self, now: Instant, bytes: &[u8]) -> Result<(), EngineError> {
        self.receive_envelope(now, None, bytes)
    }

    pub(super) fn receive_envelope(
        &mut self,
        now: Instant,
        from: Option<PeerId>,
        bytes: &[u8],
    ) -> Result<(), EngineError> {
        self.tick(now);
        self.check()?;
        let mut batch = Batch::default();
        let result = if is_reset_request(bytes) {
            self.take_reset(now, bytes, &mut batch)
        } else {
            self.receive(now, from, bytes, &mut batch)
        };
        if let Err((contact, reason)) = result {
            self.refused(now, contact, reason);
        }
        self.finish(batch)
    }

    fn receive(
        &mut self,
        now: Instant,
        from: Option<PeerId>,
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
                SessionRef::Known(_) => {
                    // Evicted, or lost with a restore: ask the device that
                    // sent it (known from the transport) for a new session.
                    // It honours the request only if this is its active
                    // session with us, so a device that merely sends
                    // made-up ids gains nothing.
                    let contact = from.and_then(|d| self.contact_of_device(&d));
                    if contact.is_some_and(|c| self.is_blocked(&c)) {
                        return Err((contact, RejectReason::Blocked));
                    }
                    if let Some(device) = from {
                        let cause = ResetCause::Broken;
                        self.request_reset(now, contact, device, session_id, cause, batch);
                    }
                    return Err((contact, RejectReason::UnknownSession));
                }
                SessionRef::Initial(header) => {
                    let user = UserId::new(header.sender.user());
                    if user == self.user_id() {
                        return Err((Some(user), RejectReason::FromSelf));
                    }
                    if self.is_blocked(&user) {
                        return Err((Some(user), RejectReason::Blocked));
                    }
                    if self
                        .contacts
                        .get(&user)
                        .is_some_and(|c| c.seen_sessions.contains(&session_id))
                    {
                        // A session we held and dropped: a replay.
                        return Err((Some(user), RejectReason::ReplayedSession));
                    }
                    let Some(prekey) = self
                        .prekeys
                        .iter()
                        .position(|p| p.signed.id() == header.prekey_id)
                    else {
                        // Started from a prekey we erased: the sender must
                        // start again from our current bundle. The header
                        // is not authenticated, so the request goes to the
                        // device it names, rate limited, and only a
                        // session that device really has is ever replaced.
                        // Only over a connection that device opened (no
                        // lookup, no dial): anyone can write this header,
                        // naming anyone's device.
                        let device = header.sender.device().peer_id();
                        let cause = ResetCause::ErasedPrekey;
                        self.request_reset(now, None, device, session_id, cause, batch);
                        return Err((
                            Some(user),
                            RejectReason::Crypto(Error::PrekeyMismatch {
                                found: header.prekey_id,
                                expected: self.prekeys[self.prekeys.len() - 1].signed.id(),
                            }),
                        ));
                    };
                    header
                        .sender
                        .check_time(self.unix_at(now))
                        .map_err(|e| (Some(user), e.into()))?;
                    // Our current certificate, then earlier ones: the
                    // sender may have fetched our bundle before a renewal.
                    let secret = &self.prekeys[prekey].secret;
                    let mut candidates = vec![
                        x3dh::respond(&self.device, secret, header)
                            .map_err(|e| (Some(user), e.into()))?,
                    ];
                    for cert in self.earlier_certificates.iter().rev() {
                        if let Ok(s) = x3dh::respond_as(&self.device, cert, secret, header) {
                            candidates.push(s);
                        }
                    }
                    (user, Some((candidates, (**header).clone())))
                }
            },
        };
        if self.is_blocked(&contact) {
            return Err((Some(contact), RejectReason::Blocked));
        }
        // Decrypt on a copy: nothing changes unless the whole envelope is good.
        let (session, padded) = match &new_session {
            Some((candidates, _)) => {
                let mut last = Error::Decrypt;
                let mut found = None;
                for candidate in candidates {
                    let mut session = candidate.clone();
                    match session.decrypt(&envelope.ratchet) {
                        Ok(padded) => {
                            found = Some((session, padded));
                            break;
                        }
                        Err(e) => last = e,
                    }
                }
                found.ok_or((Some(contact), last.into()))?
            }
            None => {
                let mut session = self
                    .contacts
                    .get(&contact)
                    .and_then(|c| c.sessions.iter().find(|s| s.id == session_id))
                    .map(|s| s.session.clone())
                    .ok_or((Some(contact), RejectReason::UnknownSession))?;
                match session.decrypt(&envelope.ratchet) {
                    Ok(padded) => (session, padded),
                    Err(e) => {
                        // A copy of an envelope already taken (its sender
                        // sends the same envelope until our ack comes, and
                        // a mailbox may return it late, from a chain long
                        // gone): acknowledged again, nothing else.
                        if let Some(id) = self.copy_of(bytes) {
                            self.ack_copy(now, contact, id, batch);
                            return Ok(());
                        }
                        if matches!(e, Error::AlreadyUsedOrEvicted { .. }) {
                            // A replay, or an envelope whose key we no
                            // longer hold (skipped, then erased with age):
                            // its sender resends the same envelope until
                            // acknowledged, so ask for what follows what we
                            // have, which it seals anew. Rate limited, as
                            // the header is not authenticated.
                            self.request_missing(now, contact, true, Sealing::Reply, batch);
                            return Ok(());
                        }
                        self.after_decrypt_failure(now, from, contact, session_id, &e, batch);
                        return Err((Some(contact), e.into()));
                    }
                }
            }
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

        // A new session replaces one that works only if we asked for it:
        // otherwise it may be a replay of an old initial envelope. A
        // contact that really lost our session gets a reset request and
        // answers it with another new session, which we then take.
        if let Some((_, header)) = &new_session
            && let Some(c) = self.contacts.get(&contact)
            && c.sessions.first().is_some_and(|s| s.initial.is_none())
            && (c
                .reset_requested
                .is_none_or(|t| now >= t + RESET_ANSWER_WINDOW)
                || c.challenged.contains(&session_id))
        {
            let device = header.sender.device().peer_id();
            let cause = ResetCause::Challenge;
            self.request_reset(now, Some(contact), device, session_id, cause, batch);
            return Err((Some(contact), RejectReason::UnrequestedSession));
        }

        // Accepted: install the session state. A stranger's first envelope
        // starts a message request (anyone can mint user keys: the
        // requests module bounds what they cost).
        if !self.contacts.contains_key(&contact) {
            self.admit_stranger(now, contact, batch);
        }
        let unix = self.unix_at(now);
        let c = self.contact_entry(contact);
        // They are reading: the send budget is theirs again.
        c.unanswered = 0;
        c.resend_requests = 0;
        let mut replaced = false;
        match new_session {
            Some((_, header)) => {
                // Both sides started a session at once: both keep the one
                // with the smaller id. Otherwise the peer's new session wins
                // (they lost ours, or replaced it at our request), and what
                // we had not delivered goes out again on it.
                c.reset_requested = None;
                c.challenged.clear();
                let ours_pending = c.sessions.first().is_some_and(|s| s.initial.is_some());
                let at = usize::from(ours_pending && c.sessions[0].id < session_id);
                self.note_device(contact, &header.sender, batch);
                let c = self.contact_entry(contact);
                if at == 0 {
                    // They lost our session or replaced it at our request:
                    // either side may have lost messages too, and answers
                    // sent on the old session may never have arrived.
                    c.sync_due = true;
                    c.next_resend_answer = None;
                    c.next_echo_answer = None;
                    replaced = true;
                    for pending in c.outbox.values_mut() {
                        pending.next = now;
                    }
                }
                self.install_session(
                    contact,
                    at,
                    SessionEntry {
                        id: session_id,
                        skipped_since: (session.skipped_keys() > 0).then_some(unix),
                        session,
                        initial: None,
                    },
                );
            }
            None => {
                if let Some(entry) = c.sessions.iter_mut().find(|s| s.id == session_id) {
                    entry.skipped_since = match session.skipped_keys() {
                        0 => None,
                        _ => entry.skipped_since.or(Some(unix)),
                    };
                    entry.session = session;
                    entry.initial = None;
                }
            }
        }
        batch.dirty(contact);
        if self.is_request(&contact) {
            // Only messages count for a request; nothing is answered.
            return match (payload, chat) {
                (Payload::Chat(encoded), Some(message)) => {
                    self.take_request_chat(contact, message, encoded, batch)
                }
                _ => Ok(()),
            };
        }
        let result = match payload {
            Payload::Chat(encoded) => match chat {
                Some(message) => {
                    let id = message.id();
                    let taken = self.take_chat(now, contact, message, encoded, batch);
                    if taken.is_ok() {
                        batch.changes.received.push(ReceivedEnvelope {
                            key: envelope_key(bytes),
                            id,
                            contact: contact.to_bytes(),
                        });
                    }
                    taken
                }
                None => Ok(()),
            },
            Payload::Ack(ids) => {
                self.take_receipt(contact, &ids, false, batch);
                Ok(())
            }
            Payload::Read(ids) => {
                self.take_receipt(contact, &ids, true, batch);
                Ok(())
            }
            Payload::Recover { from } => {
                self.echo_from(now, contact, from, batch);
                Ok(())
            }
            Payload::Echo { last, message } => self.take_echo(now, contact, last, message, batch),
            Payload::Resend { from, to } => {
                self.answer_resend(now, contact, from, to, batch);
                Ok(())
            }
        };
        // The peer's new session replaced ours: what is still undelivered
        // (after this envelope's acknowledgements) goes out again on it.
        if replaced {
            self.flush_outbox(now, contact, batch);
        }
        result
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
            Err(e) => {
                // A counter of theirs we hold another message under: their
                // store went back in time. Return what they lost, so they
                // can write theirs again after it.
                match e {
                    OrderingError::Equivocation(n) => self.echo_from(now, contact, n, batch),
                    OrderingError::BrokenChain(n) => {
                        self.echo_from(now, contact, n.saturating_sub(1), batch);
                    }
                    OrderingError::TooManyHeld => {}
                }
                return Err((Some(contact), e.into()));
            }
            Ok(Received::Duplicate) => {}
            Ok(Received::Held { meta, missing }) => {
                batch.changes.messages.push(StoredMessage { meta, encoded });
                if missing.is_some() {
                    self.request_missing(now, contact, false, Sealing::Reply, batch);
                }
            }
            Ok(Received::Shown { meta, released }) => {
                self.take_shown(contact, meta, shown_message, encoded, released, batch);
            }
        }
        // Acknowledged once committed (finish commits before sending).
        self.seal(contact, &Payload::Ack(vec![id]), Sealing::Reply, batch);
        Ok(())
    }

    pub(super) fn take_receipt(
        &mut self,
        contact: UserId,
        ids: &[MessageId],
        read: bool,
        batch: &mut Batch,
    ) {
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
                if c.outbox
                    .remove(&counter)
                    .is_some_and(|p| p.sealed.is_some())
                {
                    batch.changes.unsealed.push(*id);
                }
                batch.events.push(Event::Delivered { contact, id: *id });
            }
            if read && !was.read {
                batch.events.push(Event::Read { contact, id: *id });
            }
        }
    }
}
