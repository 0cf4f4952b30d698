//! Our messages' envelopes as mailboxes see them: each is sealed once
//! (see the outbox), stored in the contact's mailbox by the driver while the
//! contact is offline ([`Engine::mailbox_outbox`], [`Engine::mark_stored`]),
//! and reported expired when mailboxes no longer keep it; and the state of
//! each of our messages ([`Engine::delivery_state`]).

use std::time::{Duration, Instant};

use super::{Batch, Engine, EngineError, Event};
use crate::UserId;
use crate::envelope::SessionId;
use crate::message::MessageId;
use crate::store::{SealedRecord, Store};

/// How long mailboxes keep an envelope: a message sealed longer ago and
/// still not delivered is reported [`Event::Expired`] (it stays in the
/// outbox and goes out directly once the contact is online).
pub const MAILBOX_TTL: Duration = Duration::from_secs(14 * 24 * 3600);

/// A message's envelope, sealed once.
pub(super) struct Sealed {
    pub(super) envelope: Vec<u8>,
    pub(super) session: SessionId,
    /// W mailbox replicas signed for it.
    pub(super) stored: bool,
    /// Unix seconds.
    pub(super) sealed_at: u64,
    /// [`Event::Expired`] was reported (not stored: reported again after a
    /// restart).
    pub(super) expired: bool,
}

impl Sealed {
    pub(super) fn record(&self, id: MessageId, contact: UserId) -> SealedRecord {
        SealedRecord {
            id,
            contact: contact.to_bytes(),
            session: self.session.0,
            envelope: self.envelope.clone(),
            stored: self.stored,
            sealed_at: self.sealed_at,
        }
    }
}

/// One of our envelopes to store in the contact's mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxEnvelope {
    /// The message it carries.
    pub id: MessageId,
    /// The envelope, as sealed once.
    pub envelope: Vec<u8>,
    /// Until when mailboxes keep it (Unix seconds): [`MAILBOX_TTL`] after
    /// it was sealed, the same for every retry, so a replica that already
    /// holds it (and answers with its first receipt) still counts.
    pub expiry: u64,
}

/// Where one of our messages is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeliveryState {
    /// Waiting: not sealed yet (no session, or over the send budget), or
    /// sealed and sent but neither stored nor acknowledged.
    Queued,
    /// W mailbox replicas signed for its envelope ([`Engine::mark_stored`]).
    Stored,
    /// Sealed more than [`MAILBOX_TTL`] ago and still not delivered:
    /// mailboxes dropped it; it goes out again directly once the contact
    /// is online.
    Expired,
    /// The contact acknowledged it.
    Delivered,
    /// The contact read it.
    Read,
}

impl<S: Store> Engine<S> {
    /// Our messages to `contact` whose envelopes are sealed but not yet
    /// stored in a mailbox, oldest first: what a driver stores while the
    /// contact is offline (then [`Engine::mark_stored`]).
    pub fn mailbox_outbox(&self, contact: &UserId) -> Vec<MailboxEnvelope> {
        let Some(c) = self.contacts.get(contact) else {
            return Vec::new();
        };
        let active = c.sessions.first().map(|s| s.id);
        c.outbox
            .values()
            .filter_map(|p| {
                let s = p.sealed.as_ref()?;
                (!s.stored && Some(s.session) == active).then(|| MailboxEnvelope {
                    id: p.id,
                    envelope: s.envelope.clone(),
                    expiry: s.sealed_at.saturating_add(MAILBOX_TTL.as_secs()),
                })
            })
            .collect()
    }

    /// How many of our messages to `contact` [`Engine::mailbox_outbox`]
    /// lists (without copying their envelopes).
    pub fn mailbox_pending(&self, contact: &UserId) -> usize {
        let Some(c) = self.contacts.get(contact) else {
            return 0;
        };
        let active = c.sessions.first().map(|s| s.id);
        c.outbox
            .values()
            .filter_map(|p| p.sealed.as_ref())
            .filter(|s| !s.stored && Some(s.session) == active)
            .count()
    }

    /// Notes that W mailbox replicas signed for the envelope of our message
    /// `id` to `contact` ([`Event::Stored`]). Unknown or delivered
    /// messages are ignored.
    pub fn mark_stored(&mut self, contact: UserId, id: MessageId) -> Result<(), EngineError> {
        self.check()?;
        let Some(c) = self.contacts.get_mut(&contact) else {
            return Ok(());
        };
        let Some(p) = c.outbox.values_mut().find(|p| p.id == id) else {
            return Ok(());
        };
        let Some(sealed) = p.sealed.as_mut().filter(|s| !s.stored) else {
            return Ok(());
        };
        sealed.stored = true;
        let mut batch = Batch::default();
        batch.changes.sealed.push(sealed.record(id, contact));
        batch.events.push(Event::Stored { contact, id });
        self.finish(batch)
    }

    /// Where our message `id` to `contact` is (`None` for a message that is
    /// not ours or not known).
    pub fn delivery_state(&self, contact: &UserId, id: &MessageId) -> Option<DeliveryState> {
        let c = self.contacts.get(contact)?;
        let meta = c.conversation.get(id)?;
        if !meta.outgoing {
            return None;
        }
        if meta.flags.read {
            return Some(DeliveryState::Read);
        }
        if meta.flags.delivered {
            return Some(DeliveryState::Delivered);
        }
        let sealed = c.outbox.get(&meta.counter).and_then(|p| p.sealed.as_ref());
        let unix = self.unix_at(self.last_now);
        Some(match sealed {
            Some(s) if s.sealed_at.saturating_add(MAILBOX_TTL.as_secs()) <= unix => {
                DeliveryState::Expired
            }
            Some(s) if s.stored => DeliveryState::Stored,
            _ => DeliveryState::Queued,
        })
    }

    /// Reports the envelopes that have been in mailboxes for
    /// [`MAILBOX_TTL`] without a delivery.
    pub(super) fn report_expired(&mut self, now: Instant, batch: &mut Batch) {
        let unix = self.unix_at(now);
        for c in self.contacts.values_mut() {
            for p in c.outbox.values_mut() {
                if let Some(s) = p.sealed.as_mut()
                    && !s.expired
                    && s.sealed_at.saturating_add(MAILBOX_TTL.as_secs()) <= unix
                {
                    s.expired = true;
                    batch.events.push(Event::Expired {
                        contact: c.user,
                        id: p.id,
                    });
                }
            }
        }
    }

    /// When the next sealed envelope expires in the mailboxes.
    pub(super) fn next_mailbox_expiry(&self) -> Option<Instant> {
        self.contacts
            .values()
            .flat_map(|c| c.outbox.values())
            .filter_map(|p| p.sealed.as_ref().filter(|s| !s.expired))
            .map(|s| s.sealed_at.saturating_add(MAILBOX_TTL.as_secs()))
            .min()
            .and_then(|unix| self.instant_at(unix))
    }
}
