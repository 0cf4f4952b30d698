//! The outbox: sending messages and read receipts, retries with backoff, the
//! send budget, and the timers that drive them.
//!
//! A message is sealed once, on the session it first goes out on, and that
//! envelope is stored with it: every retry, direct or through a mailbox,
//! sends the same bytes, so no message key is spent twice and an offline
//! recipient never has keys to skip for copies it will not see. Only a new
//! session (a reset, a new device) seals it again.

use std::time::{Duration, Instant};

use super::sealed::Sealed;
use super::sessions::Sealing;
use super::{Batch, Engine, EngineError, Event, Transmit};
use crate::UserId;
use crate::envelope::SessionId;
use crate::message::{MAX_BODY_LEN, MAX_IDS_PER_RECEIPT, MessageId, Payload};
use crate::store::{Store, StoredMessage};

/// Most envelopes of any kind (messages, acknowledgements, read receipts,
/// resend requests) sealed to a contact since the last one received from
/// it. Beyond it, new messages wait, unsealed, until the contact answers
/// (what is sealed already still goes out again, unchanged): a recipient
/// that gets a later envelope before earlier ones must skip their keys,
/// and it can skip at most [`crate::ratchet::MAX_SKIP`] in one chain.
pub const SEND_BUDGET: u32 = crate::ratchet::MAX_SKIP / 2;

/// Most read receipts kept waiting for a contact; beyond it the oldest are
/// dropped (receipts are advisory, messages are not).
const MAX_PENDING_READ: usize = 4 * MAX_IDS_PER_RECEIPT;

pub(super) struct Pending {
    pub(super) id: MessageId,
    pub(super) encoded: Vec<u8>,
    pub(super) attempts: u32,
    pub(super) next: Instant,
    /// The envelope it was sealed into, once it was.
    pub(super) sealed: Option<Sealed>,
}

impl Pending {
    /// A message to send, due at `now`.
    pub(super) fn new(encoded: Vec<u8>, now: Instant) -> Pending {
        Pending {
            id: MessageId::of(&encoded),
            encoded,
            attempts: 0,
            next: now,
            sealed: None,
        }
    }
}

impl<S: Store> Engine<S> {
    /// Messages to `contact` waiting for their acknowledgement.
    pub fn outbox_len(&self, contact: &UserId) -> usize {
        self.contacts.get(contact).map_or(0, |c| c.outbox.len())
    }

    /// Tells the engine whether a session to `contact`'s device is open.
    /// Unacknowledged messages are retried only while it is (each retry
    /// uses a new message key, which an offline recipient would have to
    /// skip); going online sends them all at once.
    pub fn set_online(
        &mut self,
        now: Instant,
        contact: UserId,
        online: bool,
    ) -> Result<(), EngineError> {
        self.tick(now);
        self.check()?;
        let Some(c) = self.contacts.get_mut(&contact) else {
            return Ok(());
        };
        let was = std::mem::replace(&mut c.online, online);
        if online {
            // A route: the next search starts from the first wait again.
            c.route_wait = std::time::Duration::ZERO;
        }
        if online && !was {
            self.retry_now(now, contact)?;
        }
        Ok(())
    }

    /// Sends every unacknowledged message to `contact` now instead of at
    /// its backoff time (if online).
    pub fn retry_now(&mut self, now: Instant, contact: UserId) -> Result<(), EngineError> {
        self.tick(now);
        self.check()?;
        let Some(c) = self.contacts.get_mut(&contact) else {
            return Ok(());
        };
        for pending in c.outbox.values_mut() {
            pending.next = now;
        }
        c.next_route_request = None;
        let mut batch = Batch::default();
        self.flush_outbox(now, contact, &mut batch);
        self.finish(batch)
    }

    /// Sends a text message to `contact`; it is stored (in the history and
    /// the outbox) before this returns. `unix_ms` is the advisory timestamp.
    pub fn send(
        &mut self,
        now: Instant,
        unix_ms: u64,
        contact: UserId,
        text: &str,
    ) -> Result<MessageId, EngineError> {
        self.tick(now);
        self.check()?;
        if text.len() > MAX_BODY_LEN {
            return Err(EngineError::TooLarge(text.len()));
        }
        let sender = self.user_id();
        let Some(c) = self.contacts.get_mut(&contact) else {
            return Err(EngineError::UnknownContact(contact));
        };
        if c.request.is_some() {
            return Err(EngineError::NotAccepted(contact));
        }
        if c.device_changed {
            return Err(EngineError::DeviceChanged(contact));
        }
        let (message, meta) =
            c.conversation
                .compose(sender, contact, text.as_bytes().to_vec(), unix_ms);
        let encoded = message.encode();
        let id = meta.id;
        c.outbox
            .insert(meta.counter, Pending::new(encoded.clone(), now));
        let mut batch = Batch::default();
        batch.changes.messages.push(StoredMessage { meta, encoded });
        batch.dirty(contact);
        self.flush_outbox(now, contact, &mut batch);
        self.finish(batch)?;
        Ok(id)
    }

    /// Marks received messages as read and tells their sender (now, or
    /// once it is online and the send budget allows).
    pub fn mark_read(&mut self, contact: UserId, ids: &[MessageId]) -> Result<(), EngineError> {
        self.check()?;
        let Some(c) = self.contacts.get_mut(&contact) else {
            return Err(EngineError::UnknownContact(contact));
        };
        if c.request.is_some() {
            return Err(EngineError::NotAccepted(contact));
        }
        let mut batch = Batch::default();
        for id in ids {
            if let Some(meta) = c.conversation.get_mut(id)
                && !meta.outgoing
                && !meta.flags.read
            {
                meta.flags.read = true;
                batch.changes.updates.push((*id, meta.height, meta.flags));
                c.pending_read.push(*id);
            }
        }
        let excess = c.pending_read.len().saturating_sub(MAX_PENDING_READ);
        c.pending_read.drain(..excess);
        batch.dirty(contact);
        self.flush_reads(contact, &mut batch);
        self.finish(batch)
    }

    /// Seals the waiting read receipts of `contact`, as far as the budget
    /// allows.
    fn flush_reads(&mut self, contact: UserId, batch: &mut Batch) {
        loop {
            let Some(c) = self.contacts.get(&contact) else {
                return;
            };
            if c.pending_read.is_empty() {
                return;
            }
            let n = c.pending_read.len().min(MAX_IDS_PER_RECEIPT);
            let chunk = c.pending_read[..n].to_vec();
            if !self.seal(contact, &Payload::Read(chunk), Sealing::Own, batch) {
                return;
            }
            if let Some(c) = self.contacts.get_mut(&contact) {
                c.pending_read.drain(..n);
            }
        }
    }

    /// Seals what can be sealed of `contact`'s outbox (online or not: a
    /// mailbox takes it), and sends again, while the contact is online, the
    /// sealed envelopes that are due.
    pub(super) fn flush_outbox(&mut self, now: Instant, contact: UserId, batch: &mut Batch) {
        let (route_first, route_max) = (self.config.route_retry, self.config.route_retry_max);
        let Some(c) = self.contacts.get_mut(&contact) else {
            return;
        };
        if c.blocked {
            return;
        }
        if (c.sessions.is_empty() || !c.online)
            && !c.outbox.is_empty()
            && c.next_route_request.is_none_or(|t| t <= now)
        {
            // Direct delivery needs a route: one rate limit for every route
            // request, doubling while none is found (each is a lookup or a
            // dial). Without a session, nothing can be sealed before it.
            let wait = c.route_wait.max(route_first);
            c.next_route_request = Some(now + wait);
            c.route_wait = wait.saturating_mul(2).min(route_max.max(route_first));
            match (&c.device, c.sessions.is_empty()) {
                (Some(device), false) => batch.events.push(Event::NeedRoute {
                    contact,
                    device: device.device().peer_id(),
                }),
                _ => batch.events.push(Event::NeedBundle { contact }),
            }
        }
        let Some(active) = c.sessions.first().map(|s| s.id) else {
            return;
        };
        if c.online
            && c.sync_due
            && self.sync_after_open(contact, batch)
            && let Some(c) = self.contacts.get_mut(&contact)
        {
            c.sync_due = false;
        }
        self.seal_outbox(now, contact, active, batch);
        self.resend_sealed(now, contact, active, batch);
        self.flush_reads(contact, batch);
    }

    /// Seals, in counter order and within the send budget, the outbox
    /// entries with no envelope on the active session.
    fn seal_outbox(&mut self, now: Instant, contact: UserId, active: SessionId, batch: &mut Batch) {
        let initial = self.config.retry_initial;
        let unix = self.unix_at(now);
        let Some(c) = self.contacts.get(&contact) else {
            return;
        };
        let unsealed: Vec<(u64, MessageId, Vec<u8>)> = c
            .outbox
            .iter()
            .filter(|(_, p)| p.sealed.as_ref().is_none_or(|s| s.session != active))
            .map(|(n, p)| (*n, p.id, p.encoded.clone()))
            .collect();
        for (counter, id, encoded) in unsealed {
            let Some(envelope) = self.seal_message(contact, id, &Payload::Chat(encoded), batch)
            else {
                // Over the budget: the rest waits for the contact's answer.
                break;
            };
            let Some(p) = self
                .contacts
                .get_mut(&contact)
                .and_then(|c| c.outbox.get_mut(&counter))
            else {
                continue;
            };
            let sealed = Sealed {
                envelope,
                session: active,
                stored: false,
                sealed_at: unix,
                expired: false,
            };
            batch.changes.sealed.push(sealed.record(id, contact));
            p.sealed = Some(sealed);
            p.attempts = 1;
            p.next = now + initial;
        }
    }

    /// Sends again, unchanged, the sealed envelopes that are due, with
    /// backoff; only while the contact is online (offline, a mailbox holds
    /// them).
    fn resend_sealed(
        &mut self,
        now: Instant,
        contact: UserId,
        active: SessionId,
        batch: &mut Batch,
    ) {
        let (initial, max) = (self.config.retry_initial, self.config.retry_max);
        let Some(c) = self.contacts.get_mut(&contact) else {
            return;
        };
        if !c.online || c.device_changed {
            return;
        }
        let Some(device) = c.device.as_ref().map(|d| d.device().peer_id()) else {
            return;
        };
        for p in c.outbox.values_mut() {
            let Some(sealed) = p.sealed.as_ref().filter(|s| s.session == active) else {
                continue;
            };
            if p.next > now {
                continue;
            }
            batch.transmits.push(Transmit {
                contact: Some(contact),
                device,
                envelope: sealed.envelope.clone(),
                message: Some(p.id),
            });
            let backoff = initial.saturating_mul(1u32 << p.attempts.min(16)).min(max);
            p.attempts = p.attempts.saturating_add(1);
            p.next = now + backoff;
        }
    }

    /// When [`Engine::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.stale {
            // Reload (and so retry) a second after a failed commit.
            return Some(self.last_now + Duration::from_secs(1));
        }
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        if let Some(t) = self.next_skipped_expiry() {
            consider(t);
        }
        if let Some(t) = self.next_mailbox_expiry() {
            consider(t);
        }
        for c in self
            .contacts
            .values()
            .filter(|c| !c.blocked && c.request.is_none())
        {
            let active = c.sessions.first().map(|s| s.id);
            let sealable = active.is_some()
                && c.unanswered < SEND_BUDGET
                && !c.device_changed
                && c.outbox
                    .values()
                    .any(|p| p.sealed.as_ref().map(|s| s.session) != active);
            if sealable {
                // The budget has room again (the contact answered): seal
                // what waits.
                consider(self.last_now);
            }
            if !c.outbox.is_empty() {
                if c.sessions.is_empty() || !c.online {
                    // The first route request is due at once.
                    consider(c.next_route_request.unwrap_or(self.last_now));
                } else if let Some(t) = c
                    .outbox
                    .values()
                    .filter(|p| p.sealed.is_some())
                    .map(|p| p.next)
                    .min()
                {
                    consider(t);
                }
            }
            if (c.conversation.held_len() > 0 || !c.parked.is_empty())
                && let Some(t) = c.next_resend_request
            {
                consider(t);
            }
        }
        next
    }

    /// Retries due messages, repeats resend requests for held messages and
    /// bundle requests for contacts without a session.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), EngineError> {
        self.tick(now);
        self.check()?;
        let mut batch = Batch::default();
        self.expire_skipped(now, &mut batch);
        self.report_expired(now, &mut batch);
        let users: Vec<UserId> = self.contacts.keys().copied().collect();
        for user in users {
            self.flush_outbox(now, user, &mut batch);
            if self
                .contacts
                .get(&user)
                .is_some_and(|c| c.conversation.held_len() > 0 || !c.parked.is_empty())
            {
                self.request_missing(now, user, false, Sealing::Own, &mut batch);
            }
        }
        self.finish(batch)
    }
}
