//! Ratchet sessions: starting one from a contact's prekey bundle and
//! sealing payloads on the active one.

use std::time::Instant;

use super::outbox::SEND_BUDGET;
use super::repair::MAX_SEEN_SESSIONS;
use super::{Batch, Engine, EngineError, Transmit};
use crate::envelope::{Envelope, SessionId, SessionRef, pad};
use crate::message::Payload;
use crate::store::Store;
use crate::x3dh::{self, InitialHeader, PrekeyBundle};
use crate::{Error, Session, UserId};

/// Why an envelope is sealed, which decides what the send budget allows.
///
/// Every envelope sealed toward a contact spends a message key the contact
/// must skip if the envelope is lost, and a contact can skip at most
/// [`crate::ratchet::MAX_SKIP`] in one chain. So every seal, control or
/// data, goes through [`Engine::seal`], which counts it and refuses what the
/// budget does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sealing {
    /// An answer to an envelope just received from the contact (an ack, a
    /// resent message, a request for the gap it revealed): allowed while
    /// under [`SEND_BUDGET`], online or not (it just reached us).
    Reply,
    /// Our own initiative (a read receipt, a timed resend request): only
    /// while the contact is online and under [`SEND_BUDGET`].
    Own,
    /// One of our messages: under [`SEND_BUDGET`], online or not. It is
    /// sealed once and kept: while the contact is offline a mailbox holds
    /// it, and every retry sends the same envelope.
    Message,
}

pub(super) struct SessionEntry {
    pub(super) id: SessionId,
    pub(super) session: Session,
    /// Sent with every message until the peer answers on this session.
    pub(super) initial: Option<InitialHeader>,
    /// Unix seconds since skipped keys have been held without a break (the
    /// oldest of them is at most this old); they are all erased once
    /// [`EngineConfig::skipped_key_lifetime`] has passed.
    ///
    /// [`EngineConfig::skipped_key_lifetime`]: super::EngineConfig::skipped_key_lifetime
    pub(super) skipped_since: Option<u64>,
}

impl<S: Store> Engine<S> {
    /// Whether a ratchet session with `contact` exists.
    pub fn has_session(&self, contact: &UserId) -> bool {
        self.contacts
            .get(contact)
            .is_some_and(|c| !c.sessions.is_empty())
    }

    /// Gives the engine `contact`'s prekey bundle (from the directory). A
    /// session is started from it when none exists, when the bundle names
    /// another device than the one we know (the contact moved), or when our
    /// active session was never answered and was started from another
    /// prekey (the contact may have erased it); waiting messages go out on
    /// it once the device is online.
    pub fn set_bundle(
        &mut self,
        now: Instant,
        contact: UserId,
        bundle: &PrekeyBundle,
    ) -> Result<(), EngineError> {
        self.tick(now);
        self.check()?;
        if bundle.certificate.user() != contact.public_key() {
            return Err(EngineError::Bundle(Error::WrongUser));
        }
        let Some(c) = self.contacts.get(&contact) else {
            return Err(EngineError::UnknownContact(contact));
        };
        if c.blocked {
            return Ok(());
        }
        let moved = c
            .device
            .as_ref()
            .is_some_and(|d| d.device() != bundle.certificate.device());
        let stale_prekey = c.sessions.first().is_some_and(|s| {
            s.initial
                .as_ref()
                .is_some_and(|h| h.prekey_id != bundle.prekey.id())
        });
        if !c.sessions.is_empty() && !moved && !stale_prekey {
            // A renewed certificate of the same device: keep the later one.
            let renewed = c
                .device
                .as_ref()
                .is_some_and(|d| bundle.certificate.expires() > d.expires());
            if !renewed {
                return Ok(());
            }
            let mut batch = Batch::default();
            self.note_device(contact, &bundle.certificate, &mut batch);
            return self.finish(batch);
        }
        let mut batch = Batch::default();
        self.start_session(now, contact, bundle, &mut batch)
            .map_err(EngineError::Bundle)?;
        batch.dirty(contact);
        self.flush_outbox(now, contact, &mut batch);
        self.finish(batch)
    }

    /// Starts a session with the device `bundle` names (X3DH as the
    /// initiator) and makes it the one we send on; every unacknowledged
    /// message becomes due on it. An expired certificate is refused. The
    /// caller commits and flushes.
    pub(super) fn start_session(
        &mut self,
        now: Instant,
        contact: UserId,
        bundle: &PrekeyBundle,
        batch: &mut Batch,
    ) -> Result<(), Error> {
        bundle.certificate.check_time(self.unix_at(now))?;
        let (header, session) =
            x3dh::initiate_with_rng(&mut self.rng, &self.device, &contact.public_key(), bundle)?;
        let id = SessionId::of(&header);
        let moved = self.note_device(contact, &bundle.certificate, batch);
        let entry = self.contact_entry(contact);
        // The send budget was about the old session's chains: a new
        // session starts with nothing for the peer to skip.
        entry.unanswered = 0;
        if moved {
            // Online was about the old device.
            entry.online = false;
        }
        for pending in entry.outbox.values_mut() {
            pending.next = now;
        }
        entry.next_route_request = None;
        self.install_session(
            contact,
            0,
            SessionEntry {
                id,
                session,
                initial: Some(header),
                skipped_since: None,
            },
        );
        Ok(())
    }

    /// Puts `entry` at position `at` of `contact`'s sessions (0: the one
    /// we send on), dropping the oldest beyond
    /// [`EngineConfig::max_sessions`].
    ///
    /// [`EngineConfig::max_sessions`]: super::EngineConfig::max_sessions
    pub(super) fn install_session(&mut self, contact: UserId, at: usize, entry: SessionEntry) {
        let max_sessions = self.config.max_sessions.max(1);
        let id = entry.id;
        let c = self.contact_entry(contact);
        c.sessions.insert(at.min(c.sessions.len()), entry);
        if !c.seen_sessions.contains(&id) {
            c.seen_sessions.push(id);
            let excess = c.seen_sessions.len().saturating_sub(MAX_SEEN_SESSIONS);
            c.seen_sessions.drain(..excess);
        }
        let mut dropped = Vec::new();
        while c.sessions.len() > max_sessions {
            if let Some(old) = c.sessions.pop() {
                dropped.push(old.id);
            }
        }
        for old in dropped {
            self.sessions.remove(&old);
        }
        self.sessions.insert(id, contact);
    }

    /// Erases the skipped keys of every session that has held them for
    /// [`EngineConfig::skipped_key_lifetime`].
    ///
    /// [`EngineConfig::skipped_key_lifetime`]: super::EngineConfig::skipped_key_lifetime
    pub(super) fn expire_skipped(&mut self, now: Instant, batch: &mut Batch) {
        let unix = self.unix_at(now);
        let lifetime = self.config.skipped_key_lifetime.as_secs();
        for c in self.contacts.values_mut() {
            let mut expired = false;
            for entry in &mut c.sessions {
                if entry
                    .skipped_since
                    .is_some_and(|since| since.saturating_add(lifetime) <= unix)
                {
                    entry.session.clear_skipped();
                    entry.skipped_since = None;
                    expired = true;
                }
            }
            if expired {
                batch.dirty(c.user);
            }
        }
    }

    /// When the next skipped keys expire.
    pub(super) fn next_skipped_expiry(&self) -> Option<Instant> {
        let lifetime = self.config.skipped_key_lifetime.as_secs();
        self.contacts
            .values()
            .flat_map(|c| &c.sessions)
            .filter_map(|s| s.skipped_since)
            .min()
            .and_then(|since| self.instant_at(since.saturating_add(lifetime)))
    }

    /// Encrypts `payload` on the active session to `contact` into the
    /// batch, if the send budget allows it for `sealing`. Returns false
    /// when it does not, or when there is no session.
    pub(super) fn seal(
        &mut self,
        contact: UserId,
        payload: &Payload,
        sealing: Sealing,
        batch: &mut Batch,
    ) -> bool {
        #[cfg(feature = "seal-audit")]
        let leak = crate::audit::leaks(&self.user_id());
        let Some(c) = self.contacts.get_mut(&contact) else {
            return false;
        };
        if c.blocked || c.request.is_some() {
            return false;
        }
        // A verified contact's new device gets nothing of ours until the
        // user acknowledges it (answers to what it sent aside).
        if c.device_changed && sealing != Sealing::Reply {
            return false;
        }
        if c.unanswered >= SEND_BUDGET || (sealing == Sealing::Own && !c.online) {
            return false;
        }
        let Some(device) = c.device.as_ref().map(|d| d.device().peer_id()) else {
            return false;
        };
        let Some(entry) = c.sessions.first_mut() else {
            return false;
        };
        let plain = payload.encode();
        let Ok(padded) = pad(&plain) else {
            return false;
        };
        let ratchet = match entry.session.encrypt(&mut self.rng, &padded) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(%e, "encrypt failed");
                return false;
            }
        };
        let session = match &entry.initial {
            Some(header) => SessionRef::Initial(Box::new(header.clone())),
            None => SessionRef::Known(entry.id),
        };
        let envelope = Envelope {
            recipient: device,
            session,
            ratchet,
        }
        .encode();
        #[cfg(feature = "seal-audit")]
        let envelope = if leak {
            [envelope, plain].concat()
        } else {
            envelope
        };
        c.unanswered = c.unanswered.saturating_add(1);
        batch.dirty(contact);
        batch.transmits.push(Transmit {
            contact: Some(contact),
            device,
            envelope,
            message: None,
        });
        true
    }

    /// Seals our message `id` (as [`Sealing::Message`]) and returns its
    /// envelope, to keep for every later retry.
    pub(super) fn seal_message(
        &mut self,
        contact: UserId,
        id: crate::MessageId,
        payload: &Payload,
        batch: &mut Batch,
    ) -> Option<Vec<u8>> {
        if !self.seal(contact, payload, Sealing::Message, batch) {
            return None;
        }
        let transmit = batch.transmits.last_mut()?;
        transmit.message = Some(id);
        Some(transmit.envelope.clone())
    }
}
