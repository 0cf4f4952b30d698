//! Session repair: asking a contact for a new session when ours cannot
//! decrypt theirs, and honouring such a request.
//!
//! Causes (docs/PROTOCOL.md 11.10): an initial envelope names a signed
//! prekey we erased; an envelope names a session we do not hold (evicted,
//! or lost in a restore); an envelope is beyond the skip window; an
//! envelope fails to decrypt on a session we hold (the chains forked: one
//! side was restored from an older copy). The first is visible from the
//! initial header alone; the others count only when the envelope came over
//! a transport session authenticated as the contact's device
//! ([`Engine::handle_envelope_from`]), so bytes anyone can forge never make
//! us ask. Requests are rate limited per device either way.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rand::RngCore;
use shoal_identity::PeerId;

use super::sessions::Sealing;
use super::{Batch, Engine, EngineError, Event, RejectReason, Transmit};
use crate::envelope::SessionId;
use crate::reset::{RESET_NONCE_LEN, ResetRequest};
use crate::store::Store;
use crate::{Error, UserId};

/// Shortest interval between two reset requests to one device, and
/// between two resets honoured for one contact.
pub const RESET_INTERVAL: Duration = Duration::from_secs(10);

/// Devices whose last reset request time is remembered (beyond it, the
/// ones outside [`RESET_INTERVAL`] are forgotten, and if none is, no
/// request goes out until one is).
const MAX_RESET_TARGETS: usize = 256;

/// How long after asking a contact for a new session the session it starts
/// is taken as the answer. Outside it, a new session from a contact whose
/// session works is verified first (see [`RejectReason::UnrequestedSession`]).
pub const RESET_ANSWER_WINDOW: Duration = Duration::from_secs(600);

/// Session ids remembered per contact (persisted): an initial envelope of
/// one of them is a replay and is refused without further ado.
pub(super) const MAX_SEEN_SESSIONS: usize = 64;

/// Sessions we challenged with a reset request, remembered per contact (in
/// memory): a replay of one of them is not the answer.
const MAX_CHALLENGED: usize = 8;

/// Why a reset request goes out, which decides whether a new session from
/// the contact is then taken as its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ResetCause {
    /// Something authenticated says the session is broken (an envelope from
    /// the contact's device that cannot be decrypted, or that names a
    /// session we do not hold): the contact's next new session is the
    /// answer.
    Broken,
    /// An initial header names a prekey we erased. Anyone can write such a
    /// header, so it does not make a later new session acceptable.
    ErasedPrekey,
    /// A new session we did not ask for (maybe a replay): only a new
    /// session other than this one answers.
    Challenge,
}

/// When reset requests last went out, by device.
#[derive(Default)]
pub(super) struct ResetLimiter {
    sent: HashMap<PeerId, Instant>,
}

impl ResetLimiter {
    /// Whether a request to `device` may go out now (and records it). When
    /// the table is full of recent entries, only contacts' devices are
    /// still admitted: strangers cannot crowd out repairs of real sessions.
    fn allow(&mut self, now: Instant, device: PeerId, contact: bool) -> bool {
        if self
            .sent
            .get(&device)
            .is_some_and(|t| now < *t + RESET_INTERVAL)
        {
            return false;
        }
        if self.sent.len() >= MAX_RESET_TARGETS {
            self.sent.retain(|_, t| now < *t + RESET_INTERVAL);
            if self.sent.len() >= MAX_RESET_TARGETS && !contact {
                return false;
            }
        }
        self.sent.insert(device, now);
        true
    }
}

impl<S: Store> Engine<S> {
    /// Takes one envelope that arrived over a transport session
    /// authenticated as device `from`. Same as [`Engine::handle_envelope`],
    /// except that an envelope the engine cannot decrypt, coming from the
    /// device of the contact whose session it names, makes the engine ask
    /// that contact for a new session (a signed reset request, rate
    /// limited). Use this whenever the sender is known: relayed or stored
    /// envelopes go through [`Engine::handle_envelope`].
    pub fn handle_envelope_from(
        &mut self,
        now: Instant,
        from: PeerId,
        bytes: &[u8],
    ) -> Result<(), EngineError> {
        self.receive_envelope(now, Some(from), bytes)
    }

    /// Reset requests sent since the engine opened (for tests and metrics).
    pub fn reset_requests_sent(&self) -> u64 {
        self.resets_sent
    }

    /// Sessions replaced at a contact's request since the engine opened.
    pub fn resets_honoured(&self) -> u64 {
        self.resets_honoured
    }

    /// Asks the device `device` of `contact` (a contact, the stranger an
    /// initial header names, or `None`: a device that sent an envelope of
    /// a session we do not hold) to replace session `session`.
    pub(super) fn request_reset(
        &mut self,
        now: Instant,
        contact: Option<UserId>,
        device: PeerId,
        session: SessionId,
        cause: ResetCause,
        batch: &mut Batch,
    ) {
        // A stranger whose request is pending hears nothing from us.
        if contact.is_some_and(|u| self.is_request(&u)) {
            return;
        }
        let known = contact.is_some_and(|u| self.contacts.contains_key(&u));
        if !self.reset_limiter.allow(now, device, known) {
            return;
        }
        let mut nonce = [0u8; RESET_NONCE_LEN];
        self.rng.fill_bytes(&mut nonce);
        let request = ResetRequest {
            recipient: device,
            session,
            nonce,
            bundle: self.prekey_bundle(),
        };
        tracing::debug!(?contact, %device, "asking the device for a new session");
        self.resets_sent += 1;
        if let Some(c) = contact.and_then(|u| self.contacts.get_mut(&u)) {
            match cause {
                ResetCause::Broken => c.reset_requested = Some(now),
                ResetCause::Challenge => {
                    c.reset_requested = Some(now);
                    c.challenged.push(session);
                    let excess = c.challenged.len().saturating_sub(MAX_CHALLENGED);
                    c.challenged.drain(..excess);
                }
                ResetCause::ErasedPrekey => {}
            }
        }
        batch.transmits.push(Transmit {
            contact,
            device,
            envelope: request.sign(&self.device),
            message: None,
        });
    }

    /// Whether `from` is the device we know for `contact`.
    pub(super) fn is_device_of(&self, contact: &UserId, from: Option<PeerId>) -> bool {
        from.is_some_and(|from| self.contact_device(contact) == Some(from))
    }

    /// Honours a reset request if it is genuine, names our active session
    /// with its sender and none was honoured for that contact within
    /// [`RESET_INTERVAL`]; anything else changes nothing.
    pub(super) fn take_reset(
        &mut self,
        now: Instant,
        bytes: &[u8],
        batch: &mut Batch,
    ) -> Result<(), (Option<UserId>, RejectReason)> {
        let request = ResetRequest::decode(bytes).map_err(|e| (None, e.into()))?;
        if request.recipient != self.device.certificate().device().peer_id() {
            return Err((None, RejectReason::WrongRecipient));
        }
        let contact = UserId::new(request.bundle.certificate.user());
        let Some(c) = self.contacts.get(&contact) else {
            // No conversation, nothing to repair.
            return Err((Some(contact), RejectReason::UnknownSession));
        };
        if c.blocked {
            return Err((Some(contact), RejectReason::Blocked));
        }
        if c.request.is_some() {
            // Not a conversation yet: nothing to repair, nothing to send.
            return Err((Some(contact), RejectReason::UnknownSession));
        }
        // Only the device we know may ask (a device the user certified
        // earlier, or a stolen one, must not take the conversation over);
        // a contact that moved reaches us with a new session instead.
        if c.device
            .as_ref()
            .is_some_and(|d| d.device() != request.bundle.certificate.device())
        {
            tracing::debug!(%contact, "reset request from another device of the contact");
            return Ok(());
        }
        if c.sessions.first().map(|s| s.id) != Some(request.session) {
            // A replay, or a request about a session already replaced.
            tracing::debug!(%contact, "reset request for a session that is not the active one");
            return Ok(());
        }
        if c.last_reset.is_some_and(|t| now < t + RESET_INTERVAL) {
            return Ok(());
        }
        self.start_session(now, contact, &request.bundle, batch)
            .map_err(|e| (Some(contact), RejectReason::Crypto(e)))?;
        let c = self.contact_entry(contact);
        c.last_reset = Some(now);
        // Something must go out on the new session even with nothing to
        // send, or the requester never learns it: the sync asks. Answers
        // sent on the old session may never have arrived.
        c.sync_due = true;
        c.next_resend_answer = None;
        c.next_echo_answer = None;
        tracing::info!(%contact, "session replaced at the contact's request");
        self.resets_honoured += 1;
        batch.events.push(Event::SessionReset { contact });
        batch.dirty(contact);
        self.flush_outbox(now, contact, batch);
        Ok(())
    }

    /// After an envelope on a session we hold failed to decrypt: ask for a
    /// new session if the failure means the session is broken and the
    /// envelope provably came from the contact's device.
    pub(super) fn after_decrypt_failure(
        &mut self,
        now: Instant,
        from: Option<PeerId>,
        contact: UserId,
        session: SessionId,
        error: &Error,
        batch: &mut Batch,
    ) {
        let broken = matches!(
            error,
            Error::OutsideWindow { .. } | Error::Decrypt | Error::BeyondChainEnd { .. }
        );
        if broken
            && self.is_device_of(&contact, from)
            && let Some(device) = from
        {
            self.request_reset(
                now,
                Some(contact),
                device,
                session,
                ResetCause::Broken,
                batch,
            );
        } else if matches!(error, Error::OutsideWindow { .. }) {
            // Unauthenticated: the most it may cost is a rate-limited
            // request for what follows what we have.
            self.request_missing(now, contact, true, Sealing::Reply, batch);
        }
    }
}
