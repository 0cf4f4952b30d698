//! Where a messenger keeps its state: the [`Store`] trait, the changes it
//! commits atomically, and [`MemoryStore`] for tests.
//!
//! The engine ([`crate::engine::Engine`]) writes through [`Store::commit`] before
//! anything leaves the node: a ratchet step, the message it decrypted and
//! the flags that follow are one [`Changes`] and therefore one transaction;
//! the acknowledgement goes out only after `commit` returned. A store that
//! loses a committed transaction breaks the "nothing acknowledged is lost"
//! promise, so implementations must make `commit` durable against a process
//! crash (SQLite in WAL mode with `synchronous=NORMAL` is).

use std::collections::BTreeMap;

use crate::message::MessageId;

/// Why the store failed. The engine treats every store error as fatal for
/// the operation: nothing is sent that was not committed.
#[derive(Debug, thiserror::Error)]
#[error("store: {0}")]
pub struct StoreError(pub String);

/// The flags of one stored message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MessageFlags {
    /// Received but waiting for messages it follows: not in the history yet.
    pub held: bool,
    /// Outgoing: the recipient acknowledged it. Incoming: always true.
    pub delivered: bool,
    /// Outgoing: the recipient read it. Incoming: the local user read it.
    pub read: bool,
}

/// Everything about a stored message except its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageMeta {
    /// The message id.
    pub id: MessageId,
    /// The other user of the conversation (32-byte root key).
    pub contact: [u8; 32],
    /// Sent by the local user.
    pub outgoing: bool,
    /// The sender's per-conversation counter.
    pub counter: u64,
    /// Causal height: 0 for a message following nothing, else one more
    /// than the highest message it follows. History is ordered by
    /// `(height, id)`.
    pub height: u64,
    /// The sender's advisory timestamp (ms since the Unix epoch).
    pub timestamp_ms: u64,
    /// Delivery and read state.
    pub flags: MessageFlags,
}

/// A stored message: its metadata and the encoded [`crate::Message`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Metadata.
    pub meta: MessageMeta,
    /// The exact encoded message (its id is the hash of these bytes).
    pub encoded: Vec<u8>,
}

/// An outgoing message's envelope, sealed once: every retry, direct or
/// through a mailbox, sends these bytes again (a retry that sealed anew
/// would spend a message key the recipient may have to skip).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedRecord {
    /// The message it carries.
    pub id: MessageId,
    /// The conversation (the contact's 32-byte root key).
    pub contact: [u8; 32],
    /// The session it was sealed on (a session reset seals anew).
    pub session: [u8; 16],
    /// The exact envelope.
    pub envelope: Vec<u8>,
    /// W mailbox replicas signed for it.
    pub stored: bool,
    /// When it was sealed (Unix seconds): mailboxes keep it 14 days.
    pub sealed_at: u64,
}

/// A set of changes committed in one transaction.
#[derive(Debug, Default, Clone)]
pub struct Changes {
    /// Replace the identity blob (device secrets and prekeys).
    pub identity: Option<Vec<u8>>,
    /// Insert or replace contact blobs, keyed by the contact's root key.
    pub contacts: Vec<ContactRecord>,
    /// Delete contacts with every message of theirs (applied first, then
    /// `contacts`, so a contact removed and added back in one commit
    /// starts empty).
    pub removed_contacts: Vec<[u8; 32]>,
    /// Delete messages (applied before `messages`): our own messages that
    /// were never delivered and are written again under new ids.
    pub removed: Vec<MessageId>,
    /// Insert messages (an id already stored is left as it is).
    pub messages: Vec<StoredMessage>,
    /// Set the flags (and height) of stored messages.
    pub updates: Vec<(MessageId, u64, MessageFlags)>,
    /// Insert or replace sealed envelopes (applied after `unsealed`).
    pub sealed: Vec<SealedRecord>,
    /// Delete sealed envelopes (their messages were delivered, or are
    /// written again under new ids). Removing a contact or a message also
    /// deletes its sealed envelopes.
    pub unsealed: Vec<MessageId>,
    /// Envelopes received (by [`envelope_key`]) and the message each
    /// carried: a sender resends the very same envelope until it has our
    /// acknowledgement, and a copy cannot be decrypted twice, so a copy is
    /// recognised by its key and acknowledged again. Removing a contact
    /// deletes its entries.
    pub received: Vec<ReceivedEnvelope>,
}

/// An envelope received, by key, and the message it carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceivedEnvelope {
    /// [`envelope_key`] of the envelope.
    pub key: [u8; 32],
    /// The message it carried.
    pub id: MessageId,
    /// The sender (the contact's 32-byte root key).
    pub contact: [u8; 32],
}

/// Domain of [`envelope_key`].
pub const ENVELOPE_KEY_DOMAIN: &[u8] = b"shoal/im/envelope-key/1";

/// The key under which a received envelope is remembered: BLAKE2b-256
/// over `len(d) | d | envelope`, `d` = [`ENVELOPE_KEY_DOMAIN`].
pub fn envelope_key(envelope: &[u8]) -> [u8; 32] {
    use blake2::{Blake2b, Digest, digest::consts::U32};
    let mut h = Blake2b::<U32>::new();
    h.update([ENVELOPE_KEY_DOMAIN.len() as u8]);
    h.update(ENVELOPE_KEY_DOMAIN);
    h.update(envelope);
    h.finalize().into()
}

impl Changes {
    /// True when there is nothing to commit.
    pub fn is_empty(&self) -> bool {
        self.identity.is_none()
            && self.contacts.is_empty()
            && self.removed_contacts.is_empty()
            && self.removed.is_empty()
            && self.messages.is_empty()
            && self.updates.is_empty()
            && self.sealed.is_empty()
            && self.unsealed.is_empty()
            && self.received.is_empty()
    }
}

/// A stored contact: its root key and the engine's blob for it.
pub type ContactRecord = ([u8; 32], Vec<u8>);

/// A cursor into a conversation's history: messages strictly before this
/// `(height, id)` position.
pub type HistoryCursor = (u64, MessageId);

/// Persistent state of one messenger.
pub trait Store: Send + 'static {
    /// The identity blob, if one was saved.
    fn load_identity(&mut self) -> Result<Option<Vec<u8>>, StoreError>;
    /// All contact blobs.
    fn load_contacts(&mut self) -> Result<Vec<ContactRecord>, StoreError>;
    /// Metadata of every stored message.
    fn load_index(&mut self) -> Result<Vec<MessageMeta>, StoreError>;
    /// One message with its body.
    fn message(&mut self, id: &MessageId) -> Result<Option<StoredMessage>, StoreError>;
    /// Up to `limit` shown (not held) messages of the conversation with
    /// `contact`, newest first, strictly before `before` if given.
    fn history(
        &mut self,
        contact: &[u8; 32],
        before: Option<HistoryCursor>,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError>;
    /// Every sealed envelope.
    fn load_sealed(&mut self) -> Result<Vec<SealedRecord>, StoreError>;
    /// The message the envelope with [`envelope_key`] `key` carried, if it
    /// was received.
    fn received(&mut self, key: &[u8; 32]) -> Result<Option<MessageId>, StoreError>;
    /// Applies `changes` atomically and durably (against a process crash).
    fn commit(&mut self, changes: &Changes) -> Result<(), StoreError>;
}

/// A store in memory: for tests and for nodes that keep nothing.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    identity: Option<Vec<u8>>,
    contacts: BTreeMap<[u8; 32], Vec<u8>>,
    messages: BTreeMap<MessageId, StoredMessage>,
    sealed: BTreeMap<MessageId, SealedRecord>,
    received: BTreeMap<[u8; 32], ReceivedEnvelope>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }
}

impl Store for MemoryStore {
    fn load_identity(&mut self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.identity.clone())
    }

    fn load_contacts(&mut self) -> Result<Vec<ContactRecord>, StoreError> {
        Ok(self.contacts.iter().map(|(k, v)| (*k, v.clone())).collect())
    }

    fn load_index(&mut self) -> Result<Vec<MessageMeta>, StoreError> {
        Ok(self.messages.values().map(|m| m.meta.clone()).collect())
    }

    fn message(&mut self, id: &MessageId) -> Result<Option<StoredMessage>, StoreError> {
        Ok(self.messages.get(id).cloned())
    }

    fn history(
        &mut self,
        contact: &[u8; 32],
        before: Option<HistoryCursor>,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let mut shown: Vec<&StoredMessage> = self
            .messages
            .values()
            .filter(|m| &m.meta.contact == contact && !m.meta.flags.held)
            .filter(|m| before.is_none_or(|b| (m.meta.height, m.meta.id) < b))
            .collect();
        shown.sort_by_key(|m| std::cmp::Reverse((m.meta.height, m.meta.id)));
        Ok(shown.into_iter().take(limit).cloned().collect())
    }

    fn load_sealed(&mut self) -> Result<Vec<SealedRecord>, StoreError> {
        Ok(self.sealed.values().cloned().collect())
    }

    fn received(&mut self, key: &[u8; 32]) -> Result<Option<MessageId>, StoreError> {
        Ok(self.received.get(key).map(|r| r.id))
    }

    fn commit(&mut self, changes: &Changes) -> Result<(), StoreError> {
        if let Some(identity) = &changes.identity {
            self.identity = Some(identity.clone());
        }
        for key in &changes.removed_contacts {
            self.contacts.remove(key);
            self.messages.retain(|_, m| &m.meta.contact != key);
            self.sealed.retain(|_, s| &s.contact != key);
            self.received.retain(|_, r| &r.contact != key);
        }
        for (key, blob) in &changes.contacts {
            self.contacts.insert(*key, blob.clone());
        }
        for id in &changes.removed {
            self.messages.remove(id);
            self.sealed.remove(id);
        }
        for id in &changes.unsealed {
            self.sealed.remove(id);
        }
        for record in &changes.sealed {
            self.sealed.insert(record.id, record.clone());
        }
        for r in &changes.received {
            self.received.entry(r.key).or_insert(*r);
        }
        for message in &changes.messages {
            self.messages
                .entry(message.meta.id)
                .or_insert_with(|| message.clone());
        }
        for (id, height, flags) in &changes.updates {
            if let Some(message) = self.messages.get_mut(id) {
                message.meta.height = *height;
                message.meta.flags = *flags;
            }
        }
        Ok(())
    }
}
