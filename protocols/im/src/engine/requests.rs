//! Message requests: what a stranger (a user never named with
//! [`Engine::add_contact`]) can make a node keep, and what its user sees.
//!
//! Anyone who knows a user id can write to it, so a first message from an
//! unknown user is a *request*: its messages are stored within quotas
//! (per stranger and in total, count and bytes), nothing is sent back (no
//! acknowledgement, so a stranger cannot learn whether the user is online
//! or read anything), and nothing is shown until the user accepts it with
//! [`Engine::add_contact`]. Then its messages are reported as received and
//! acknowledged, and the conversation goes on like any other. Until then
//! the stranger's device keeps its messages in its outbox and retries, so
//! a request dropped to make room for a newer one (the oldest goes first
//! when the total quota is full) loses nothing its sender was told was
//! delivered. [`Engine::block`] drops a request for good.

use std::time::Instant;

use super::sessions::Sealing;
use super::{Batch, Engine, EngineError, Event, HistoryItem, RejectReason};
use crate::UserId;
use crate::conversation::Received;
use crate::message::{MAX_IDS_PER_RECEIPT, Message, MessageId, Payload};
use crate::store::{Store, StoredMessage};

/// Most messages stored for one request; further ones are refused
/// unacknowledged (their sender retries them, and they arrive once the
/// request is accepted).
pub const REQUEST_MESSAGES_PER_STRANGER: u32 = 16;
/// Most bytes (encoded messages) stored for one request.
pub const REQUEST_BYTES_PER_STRANGER: u64 = 64 * 1024;
/// Most requests pending at once; a new stranger beyond it drops the
/// oldest request.
pub const MAX_REQUESTS: usize = 64;
/// Most messages stored for all requests together.
pub const REQUEST_MESSAGES_TOTAL: u32 = 256;
/// Most bytes stored for all requests together.
pub const REQUEST_BYTES_TOTAL: u64 = 1024 * 1024;

/// A pending request, kept with its contact.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Request {
    /// When the stranger's first envelope was taken (Unix seconds).
    pub(super) since: u64,
    /// Arrival order among requests: the lowest is dropped first.
    pub(super) seq: u64,
    /// Messages stored.
    pub(super) messages: u32,
    /// Bytes of the stored messages.
    pub(super) bytes: u64,
}

/// A pending message request as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestInfo {
    /// The stranger.
    pub user: UserId,
    /// Their device.
    pub device: Option<shoal_identity::PeerId>,
    /// When their first envelope arrived (Unix seconds).
    pub since: u64,
    /// Messages stored.
    pub messages: u32,
    /// Bytes stored.
    pub bytes: u64,
}

/// What strangers and held messages cost this engine, for monitoring and
/// for tests that bound them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Contacts the user never named: pending requests (at most
    /// [`MAX_REQUESTS`]).
    pub unnamed_contacts: usize,
    /// Messages stored for pending requests.
    pub request_messages: u32,
    /// Bytes stored on disk for pending requests (encoded messages).
    pub request_bytes: u64,
    /// Held messages (waiting for what they follow) of every conversation.
    pub held_messages: usize,
    /// Bytes held messages keep in memory: only what they name (their
    /// bodies are in the store).
    pub held_bytes_in_memory: usize,
    /// Requests dropped to make room for newer ones since opening.
    pub requests_dropped: u64,
}

impl<S: Store> Engine<S> {
    /// The pending message requests, oldest first.
    pub fn requests(&self) -> Vec<RequestInfo> {
        let mut list = self
            .contacts
            .values()
            .filter_map(|c| {
                let r = c.request?;
                Some((
                    r.seq,
                    RequestInfo {
                        user: c.user,
                        device: c.device.as_ref().map(|d| d.device().peer_id()),
                        since: r.since,
                        messages: r.messages,
                        bytes: r.bytes,
                    },
                ))
            })
            .collect::<Vec<_>>();
        list.sort_by_key(|(seq, _)| *seq);
        list.into_iter().map(|(_, r)| r).collect()
    }

    /// Whether `user` has a pending request.
    pub fn is_request(&self, user: &UserId) -> bool {
        self.contacts.get(user).is_some_and(|c| c.request.is_some())
    }

    /// The messages of `user`'s pending request, oldest first, read from
    /// the store (for the user to decide; reading them sends nothing).
    pub fn request_messages(&mut self, user: &UserId) -> Result<Vec<HistoryItem>, EngineError> {
        self.check()?;
        if !self.is_request(user) {
            return Err(EngineError::UnknownContact(*user));
        }
        let limit = REQUEST_MESSAGES_PER_STRANGER as usize;
        let mut items = self.stored_history(user, limit)?;
        items.reverse();
        Ok(items)
    }

    /// What strangers and held messages cost now.
    pub fn counters(&self) -> Counters {
        let mut counters = Counters {
            requests_dropped: self.requests_dropped,
            ..Counters::default()
        };
        for c in self.contacts.values() {
            if c.name.is_empty() && !c.blocked {
                counters.unnamed_contacts += 1;
            }
            if let Some(r) = c.request {
                counters.request_messages += r.messages;
                counters.request_bytes += r.bytes;
            }
            counters.held_messages += c.conversation.held_len();
            counters.held_bytes_in_memory += c.conversation.held_bytes();
        }
        counters
    }

    /// A stranger's first envelope authenticated: makes room for its
    /// request (dropping the oldest when [`MAX_REQUESTS`] are pending).
    pub(super) fn admit_stranger(&mut self, now: Instant, user: UserId, batch: &mut Batch) {
        let pending = self
            .contacts
            .values()
            .filter(|c| c.request.is_some())
            .count();
        if pending >= MAX_REQUESTS {
            self.drop_oldest_request(&user, batch);
        }
        let since = self.unix_at(now);
        let seq = self
            .contacts
            .values()
            .filter_map(|c| c.request.map(|r| r.seq))
            .max()
            .map_or(1, |s| s + 1);
        self.contact_entry(user).request = Some(Request {
            since,
            seq,
            ..Request::default()
        });
        batch.dirty(user);
    }

    /// Stores a message of a pending request within the quotas; nothing is
    /// shown and nothing is sent.
    pub(super) fn take_request_chat(
        &mut self,
        contact: UserId,
        message: Message,
        encoded: Vec<u8>,
        batch: &mut Batch,
    ) -> Result<(), (Option<UserId>, RejectReason)> {
        let refuse = Err((Some(contact), RejectReason::RequestQuota));
        let size = encoded.len() as u64;
        let Some(c) = self.contacts.get(&contact) else {
            return Ok(());
        };
        let Some(r) = c.request else {
            return Ok(());
        };
        if c.conversation.get(&message.id()).is_some() {
            return Ok(()); // A retry of one stored already.
        }
        if r.messages >= REQUEST_MESSAGES_PER_STRANGER
            || r.bytes + size > REQUEST_BYTES_PER_STRANGER
        {
            return refuse;
        }
        // Over a total quota: older requests make room.
        loop {
            let counters = self.counters();
            if counters.request_messages < REQUEST_MESSAGES_TOTAL
                && counters.request_bytes + size <= REQUEST_BYTES_TOTAL
            {
                break;
            }
            if !self.drop_oldest_request(&contact, batch) {
                return refuse;
            }
        }
        let Some(c) = self.contacts.get_mut(&contact) else {
            return Ok(());
        };
        let id = message.id();
        match c.conversation.receive(message) {
            Err(e) => return Err((Some(contact), e.into())),
            Ok(Received::Duplicate) => return Ok(()),
            Ok(Received::Held { meta, .. }) => {
                batch.changes.messages.push(StoredMessage { meta, encoded });
            }
            Ok(Received::Shown { meta, released }) => {
                batch.changes.messages.push(StoredMessage { meta, encoded });
                for meta in &released {
                    batch.update(meta);
                }
            }
        }
        let first = r.messages == 0;
        c.request = Some(Request {
            messages: r.messages + 1,
            bytes: r.bytes + size,
            ..r
        });
        batch.dirty(contact);
        if first {
            batch.events.push(Event::MessageRequest { contact });
        }
        tracing::debug!(%contact, %id, "message request stored");
        Ok(())
    }

    /// Accepts `user`'s pending request: its messages are reported as
    /// received (oldest first) and acknowledged, and what is missing is
    /// asked for. The caller names the contact and commits.
    pub(super) fn accept_request(
        &mut self,
        now: Instant,
        user: UserId,
        batch: &mut Batch,
    ) -> Result<(), EngineError> {
        if !self.is_request(&user) {
            return Ok(());
        }
        // Read first: if the store fails, nothing has changed.
        let mut shown = self.stored_history(&user, REQUEST_MESSAGES_PER_STRANGER as usize)?;
        shown.reverse();
        if let Some(c) = self.contacts.get_mut(&user) {
            c.request = None;
        }
        batch.dirty(user);
        let mut ids: Vec<MessageId> = Vec::new();
        for item in shown {
            ids.push(item.meta.id);
            batch.events.push(Event::Received {
                contact: user,
                id: item.meta.id,
                message: item.message,
                height: item.meta.height,
            });
        }
        // Held ones are acknowledged too: they are stored.
        if let Some(c) = self.contacts.get(&user) {
            ids.extend(
                c.conversation
                    .held_ids()
                    .filter(|id| c.conversation.get(id).is_some_and(|m| !m.outgoing)),
            );
        }
        // Answers to envelopes that reached us (their sender waits for
        // them), so they go out whether or not it is connected now.
        for chunk in ids.chunks(MAX_IDS_PER_RECEIPT) {
            self.seal(user, &Payload::Ack(chunk.to_vec()), Sealing::Reply, batch);
        }
        self.request_missing(now, user, false, Sealing::Own, batch);
        Ok(())
    }

    /// Drops the oldest pending request other than `keep`'s: its session
    /// and messages are deleted and nothing of it stays. False if there
    /// is none.
    fn drop_oldest_request(&mut self, keep: &UserId, batch: &mut Batch) -> bool {
        let Some(oldest) = self
            .contacts
            .values()
            .filter(|c| c.user != *keep)
            .filter_map(|c| Some((c.request?.seq, c.user)))
            .min_by_key(|(seq, _)| *seq)
            .map(|(_, user)| user)
        else {
            return false;
        };
        if let Some(c) = self.contacts.remove(&oldest) {
            for s in &c.sessions {
                self.sessions.remove(&s.id);
            }
        }
        batch.changes.removed_contacts.push(oldest.to_bytes());
        self.requests_dropped += 1;
        tracing::debug!(user = %oldest, "oldest message request dropped to make room");
        true
    }

    /// Up to `limit` stored, shown messages of `user`, newest first.
    fn stored_history(
        &mut self,
        user: &UserId,
        limit: usize,
    ) -> Result<Vec<HistoryItem>, EngineError> {
        let stored = self.store.history(&user.to_bytes(), None, limit)?;
        super::history_items(stored)
    }
}
