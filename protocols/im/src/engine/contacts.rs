//! Contacts: the per-contact state, the contact list the API shows, and
//! adding, blocking and removing contacts (loading and storing them: the
//! `stored` module).

use std::collections::BTreeMap;
use std::time::Instant;

use shoal_identity::PeerId;

use super::outbox::Pending;
use super::recovery::Parked;
use super::sessions::SessionEntry;
use super::{Batch, Engine, EngineError};
use crate::conversation::Conversation;
use crate::envelope::SessionId;
use crate::message::MessageId;
use crate::store::Store;
use crate::{DeviceCertificate, UserId};

/// A contact as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactInfo {
    /// The user.
    pub user: UserId,
    /// The local name.
    pub name: String,
    /// Their device, once known.
    pub device: Option<PeerId>,
    /// Whether a ratchet session exists.
    pub has_session: bool,
    /// A session to their device is open (as told by
    /// [`Engine::set_online`]).
    pub online: bool,
    /// Ratchet sessions kept (more than one only after a simultaneous
    /// first contact or a peer that lost its state).
    pub sessions: usize,
    /// Messages waiting for their acknowledgement.
    pub outbox: usize,
    /// Of those, how many W mailbox replicas signed for
    /// ([`Engine::mark_stored`]): they wait for the contact even while we
    /// are offline.
    pub stored: usize,
    /// Blocked ([`Engine::block`], or removed with
    /// [`Engine::remove_contact`]): their envelopes are dropped.
    pub blocked: bool,
    /// Messages held (received, or recovered after a restore, waiting for
    /// what they follow).
    pub held: usize,
    /// Our messages waiting to be written again after a restore.
    pub parked: usize,
    /// The user compared safety numbers with them ([`Engine::set_verified`]).
    pub verified: bool,
    /// Verified, and their device changed since: sending waits for
    /// [`Engine::acknowledge_device_change`].
    pub device_changed: bool,
    /// When their device certificate expires (Unix seconds), once known.
    pub device_expires: Option<u64>,
}

pub(super) struct Contact {
    pub(super) user: UserId,
    pub(super) name: String,
    pub(super) device: Option<DeviceCertificate>,
    pub(super) sessions: Vec<SessionEntry>,
    pub(super) conversation: Conversation,
    pub(super) outbox: BTreeMap<u64, Pending>,
    pub(super) next_resend_request: Option<Instant>,
    /// When we may next ask for missing messages in answer to an envelope
    /// (a gap it revealed, or one we could not decrypt).
    pub(super) next_reply_request: Option<Instant>,
    /// When we may answer the contact's next resend request.
    pub(super) next_resend_answer: Option<Instant>,
    pub(super) next_route_request: Option<Instant>,
    /// The wait after the next route request (doubles until a route is
    /// found; zero: the configured first wait).
    pub(super) route_wait: std::time::Duration,
    /// A session to the contact's device is open (told by the driver).
    pub(super) online: bool,
    /// Envelopes sealed since the last envelope received from the contact.
    pub(super) unanswered: u32,
    /// Read receipts waiting for the contact to be online and the budget
    /// to allow them, oldest first.
    pub(super) pending_read: Vec<MessageId>,
    /// Timed resend requests sent since the contact last answered (their
    /// interval doubles with each).
    pub(super) resend_requests: u32,
    /// When we last replaced the session at the contact's request.
    pub(super) last_reset: Option<Instant>,
    /// Acknowledgements sealed for copies of taken envelopes: since when,
    /// and how many (at most [`MAX_COPY_ACKS_PER_SEC`] a second).
    ///
    /// [`MAX_COPY_ACKS_PER_SEC`]: super::copies::MAX_COPY_ACKS_PER_SEC
    pub(super) copy_acks: Option<(Instant, u32)>,
    /// Our messages waiting to be written again under new counters (see
    /// the recovery module), oldest first.
    pub(super) parked: Vec<Parked>,
    /// When we may next return the contact's lost messages.
    pub(super) next_echo_answer: Option<Instant>,
    /// Set when the engine opens: the first time the contact is online,
    /// ask it for anything of either side we may have lost (our store may
    /// have gone back in time while we were away).
    pub(super) sync_due: bool,
    /// When we last asked the contact for a new session: a new session it
    /// starts is taken as the answer for [`RESET_ANSWER_WINDOW`].
    ///
    /// [`RESET_ANSWER_WINDOW`]: super::repair::RESET_ANSWER_WINDOW
    pub(super) reset_requested: Option<Instant>,
    /// New sessions we answered with a reset request to verify them: a
    /// replay of one of them is not the answer.
    pub(super) challenged: Vec<SessionId>,
    /// Ids of every session we held, newest last (at most
    /// [`MAX_SEEN_SESSIONS`]): an initial envelope of one we no longer hold
    /// is a replay.
    ///
    /// [`MAX_SEEN_SESSIONS`]: super::repair::MAX_SEEN_SESSIONS
    pub(super) seen_sessions: Vec<SessionId>,
    /// Envelopes from the contact are dropped unacknowledged, and nothing
    /// is sent to it.
    pub(super) blocked: bool,
    /// A stranger's pending message request: nothing is sent to it and
    /// nothing shown until the user accepts.
    pub(super) request: Option<super::requests::Request>,
    /// The user compared safety numbers with the contact.
    pub(super) verified: bool,
    /// Verified, and the device changed since: sending waits for the user.
    pub(super) device_changed: bool,
    /// The last UTC day through which the contact's mailboxes were read
    /// (see [`Engine::mailbox_days`]).
    pub(super) mailbox_read: Option<u64>,
}

impl<S: Store> Engine<S> {
    /// Every contact (pending message requests are listed by
    /// [`Engine::requests`] instead).
    pub fn contacts(&self) -> Vec<ContactInfo> {
        let mut list: Vec<ContactInfo> = self
            .contacts
            .values()
            .filter(|c| c.request.is_none())
            .map(|c| ContactInfo {
                user: c.user,
                name: c.name.clone(),
                device: c.device.as_ref().map(|d| d.device().peer_id()),
                has_session: !c.sessions.is_empty(),
                online: c.online,
                sessions: c.sessions.len(),
                outbox: c.outbox.len(),
                stored: c
                    .outbox
                    .values()
                    .filter(|p| p.sealed.as_ref().is_some_and(|s| s.stored))
                    .count(),
                blocked: c.blocked,
                held: c.conversation.held_len(),
                parked: c.parked.len(),
                verified: c.verified,
                device_changed: c.device_changed,
                device_expires: c.device.as_ref().map(|d| d.expires()),
            })
            .collect();
        list.sort_by(|a, b| {
            a.name
                .cmp(&b.name)
                .then(a.user.to_bytes().cmp(&b.user.to_bytes()))
        });
        list
    }

    /// Adds (or renames) a contact; a blocked one is unblocked, and a
    /// pending message request is accepted: its messages are reported
    /// ([`Event::Received`]) and acknowledged.
    ///
    /// [`Event::Received`]: super::Event::Received
    pub fn add_contact(&mut self, user: UserId, name: &str) -> Result<(), EngineError> {
        self.check()?;
        let now = self.last_now;
        let mut batch = Batch::default();
        let c = self.contact_entry(user);
        c.name = name.to_owned();
        c.blocked = false;
        batch.dirty(user);
        self.accept_request(now, user, &mut batch)?;
        self.finish(batch)
    }

    /// Blocks `user`: their envelopes are dropped unacknowledged (counted
    /// as refusals) and nothing is sent to them; the conversation is kept.
    /// [`Engine::add_contact`] unblocks.
    pub fn block(&mut self, user: UserId) -> Result<(), EngineError> {
        self.check()?;
        let mut batch = Batch::default();
        let c = self.contact_entry(user);
        c.blocked = true;
        c.online = false;
        if c.request.take().is_some() {
            // A blocked stranger's request is not kept: erased like a
            // removed contact's conversation.
            let device = c.device.take();
            let sessions: Vec<_> = c.sessions.drain(..).map(|s| s.id).collect();
            let user_key = user.to_bytes();
            *c = Self::blank_contact(user);
            c.device = device;
            c.blocked = true;
            for id in sessions {
                self.sessions.remove(&id);
            }
            batch.changes.removed_contacts.push(user_key);
        }
        batch.dirty(user);
        self.finish(batch)
    }

    /// Whether `user` is blocked (or was removed).
    pub fn is_blocked(&self, user: &UserId) -> bool {
        self.contacts.get(user).is_some_and(|c| c.blocked)
    }

    /// Removes `user`: its ratchet sessions, its outbox and every message
    /// of the conversation are deleted from the store (with
    /// `SqliteStore`, gone from its files within its WAL truncation
    /// interval). What stays is a blocked record (the user id and the
    /// device certificate, both public): without it the contact's next
    /// envelope would open a new session and its gap requests would bring
    /// the erased conversation back. [`Engine::add_contact`] lets them
    /// write again, as a new conversation.
    pub fn remove_contact(&mut self, user: UserId) -> Result<(), EngineError> {
        self.check()?;
        let Some(c) = self.contacts.remove(&user) else {
            return Err(EngineError::UnknownContact(user));
        };
        for session in &c.sessions {
            self.sessions.remove(&session.id);
        }
        let tombstone = self.contact_entry(user);
        tombstone.device = c.device;
        tombstone.blocked = true;
        let mut batch = Batch::default();
        batch.changes.removed_contacts.push(user.to_bytes());
        batch.dirty(user);
        self.finish(batch)
    }

    pub(super) fn contact_entry(&mut self, user: UserId) -> &mut Contact {
        self.contacts
            .entry(user)
            .or_insert_with(|| Self::blank_contact(user))
    }

    fn blank_contact(user: UserId) -> Contact {
        Contact {
            user,
            name: String::new(),
            device: None,
            sessions: Vec::new(),
            conversation: Conversation::new(user.to_bytes()),
            outbox: BTreeMap::new(),
            next_resend_request: None,
            next_reply_request: None,
            next_resend_answer: None,
            next_route_request: None,
            route_wait: std::time::Duration::ZERO,
            online: false,
            unanswered: 0,
            pending_read: Vec::new(),
            copy_acks: None,
            resend_requests: 0,
            last_reset: None,
            reset_requested: None,
            challenged: Vec::new(),
            seen_sessions: Vec::new(),
            blocked: false,
            parked: Vec::new(),
            next_echo_answer: None,
            sync_due: false,
            request: None,
            verified: false,
            device_changed: false,
            mailbox_read: None,
        }
    }

    /// The device of `contact`, once known.
    pub fn contact_device(&self, contact: &UserId) -> Option<PeerId> {
        self.contacts
            .get(contact)?
            .device
            .as_ref()
            .map(|d| d.device().peer_id())
    }

    /// The contact whose device is `device`, if any.
    pub fn contact_of_device(&self, device: &PeerId) -> Option<UserId> {
        self.contacts
            .values()
            .find(|c| {
                c.device
                    .as_ref()
                    .is_some_and(|d| d.device().peer_id() == *device)
            })
            .map(|c| c.user)
    }
}
