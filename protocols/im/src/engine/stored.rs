//! Contacts on disk: loading every contact (sessions, conversation,
//! outbox) from the store when the engine opens, and the blob each one is
//! stored as.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use super::contacts::Contact;
use super::outbox::Pending;
use super::recovery::Parked;
use super::sealed::Sealed;
use super::sessions::SessionEntry;
use super::{Engine, EngineError};
use crate::conversation::Conversation;
use crate::envelope::SessionId;
use crate::message::{Message, MessageId};
use crate::persist::{self, ContactBlob, ParkedBlob, SessionBlob};
use crate::store::{MessageMeta, Store};
use crate::x3dh::InitialHeader;
use crate::{DeviceCertificate, Error, Session, UserId};

impl<S: Store> Engine<S> {
    pub(super) fn load_contacts(&mut self, now: Instant) -> Result<(), EngineError> {
        let mut index: HashMap<[u8; 32], Vec<MessageMeta>> = HashMap::new();
        for meta in self.store.load_index()? {
            index.entry(meta.contact).or_default().push(meta);
        }
        let mut sealed: HashMap<MessageId, crate::SealedRecord> = self
            .store
            .load_sealed()?
            .into_iter()
            .map(|r| (r.id, r))
            .collect();
        for (key, blob) in self.store.load_contacts()? {
            let user = UserId::from_bytes(&key).map_err(|_| {
                EngineError::Corrupt(Error::Malformed {
                    what: "contact key",
                })
            })?;
            let blob: ContactBlob =
                persist::decode(&blob, "contact blob").map_err(EngineError::Corrupt)?;
            let device = if blob.device.is_empty() {
                None
            } else {
                Some(DeviceCertificate::decode(&blob.device).map_err(EngineError::Corrupt)?)
            };
            let mut sessions = Vec::new();
            for s in &blob.sessions {
                let id: [u8; 16] =
                    s.id.as_slice().try_into().map_err(|_| {
                        EngineError::Corrupt(Error::Malformed { what: "session id" })
                    })?;
                let initial = if s.initial.is_empty() {
                    None
                } else {
                    match InitialHeader::decode(&s.initial) {
                        Ok(header) => Some(header),
                        // A session we started before the certificates were
                        // bound into X3DH and that was never answered: its
                        // peer cannot derive it any more. Drop it; a fresh
                        // bundle starts a new one and the outbox goes out
                        // again on it.
                        Err(Error::UnsupportedVersion { .. }) => continue,
                        Err(e) => return Err(EngineError::Corrupt(e)),
                    }
                };
                let session = Session::from_bytes(&s.state).map_err(EngineError::Corrupt)?;
                let skipped = session.skipped_keys();
                sessions.push(SessionEntry {
                    id: SessionId(id),
                    session,
                    initial,
                    // Stored before the lifetime existed: count from now.
                    skipped_since: match (s.skipped_since, skipped) {
                        (0, 0) => None,
                        (0, _) => Some(self.opened.1),
                        (since, _) => Some(since),
                    },
                });
                self.sessions.insert(SessionId(id), user);
            }
            let mut conversation = Conversation::new(key);
            let mut outbox = BTreeMap::new();
            for meta in index.remove(&key).unwrap_or_default() {
                let needs_body = meta.flags.held || (meta.outgoing && !meta.flags.delivered);
                let mut held = None;
                if needs_body {
                    let stored = self.store.message(&meta.id)?.ok_or(EngineError::Corrupt(
                        Error::Malformed {
                            what: "missing message",
                        },
                    ))?;
                    let message = Message::decode(&stored.encoded).map_err(EngineError::Corrupt)?;
                    if meta.outgoing && !meta.flags.delivered {
                        let mut pending = Pending::new(stored.encoded, now);
                        pending.sealed = sealed.remove(&meta.id).map(|r| Sealed {
                            envelope: r.envelope,
                            session: SessionId(r.session),
                            stored: r.stored,
                            sealed_at: r.sealed_at,
                            expired: false,
                        });
                        outbox.insert(meta.counter, pending);
                    }
                    if meta.flags.held {
                        held = Some(message);
                    }
                }
                conversation.restore(meta, held.as_ref());
            }
            conversation.restore_heads(message_ids(&blob.heads));
            let sync_due = !sessions.is_empty();
            // Held or parked messages after a restart: ask for what is
            // missing soon.
            let next_resend_request =
                (conversation.held_len() > 0 || !blob.parked.is_empty()).then_some(now);
            self.contacts.insert(
                user,
                Contact {
                    user,
                    name: blob.name,
                    device,
                    sessions,
                    conversation,
                    outbox,
                    next_resend_request,
                    next_reply_request: None,
                    next_resend_answer: None,
                    next_route_request: None,
                    route_wait: std::time::Duration::ZERO,
                    online: false,
                    unanswered: blob.unanswered,
                    pending_read: message_ids(&blob.pending_read).collect(),
                    copy_acks: None,
                    resend_requests: 0,
                    last_reset: None,
                    reset_requested: None,
                    challenged: Vec::new(),
                    seen_sessions: blob
                        .seen_sessions
                        .iter()
                        .filter_map(|b| <[u8; 16]>::try_from(b.as_slice()).ok().map(SessionId))
                        .collect(),
                    parked: blob
                        .parked
                        .into_iter()
                        .filter_map(|p| {
                            Some(Parked {
                                old: MessageId(p.old.as_slice().try_into().ok()?),
                                timestamp_ms: p.timestamp_ms,
                                body: p.body,
                            })
                        })
                        .collect(),
                    next_echo_answer: None,
                    sync_due,
                    blocked: blob.blocked,
                    verified: blob.verified,
                    device_changed: blob.device_changed,
                    mailbox_read: blob.mailbox_read.checked_sub(1),
                    request: (blob.request_since > 0).then_some(super::requests::Request {
                        since: blob.request_since,
                        seq: blob.request_seq,
                        messages: blob.request_messages,
                        bytes: blob.request_bytes,
                    }),
                },
            );
        }
        Ok(())
    }
}

/// The stored message ids in `blobs` (any of the wrong length skipped).
fn message_ids(blobs: &[Vec<u8>]) -> impl Iterator<Item = MessageId> + '_ {
    blobs
        .iter()
        .filter_map(|b| <[u8; 32]>::try_from(b.as_slice()).ok().map(MessageId))
}

pub(super) fn contact_blob(c: &Contact) -> Vec<u8> {
    persist::encode(&ContactBlob {
        name: c.name.clone(),
        device: c
            .device
            .as_ref()
            .map(|d| d.encode().to_vec())
            .unwrap_or_default(),
        sessions: c
            .sessions
            .iter()
            .map(|s| SessionBlob {
                id: s.id.0.to_vec(),
                state: s.session.to_bytes().to_vec(),
                initial: s
                    .initial
                    .as_ref()
                    .map(|h| h.encode().to_vec())
                    .unwrap_or_default(),
                skipped_since: s.skipped_since.unwrap_or(0),
            })
            .collect(),
        heads: c.conversation.heads().map(|id| id.0.to_vec()).collect(),
        unanswered: c.unanswered,
        pending_read: c.pending_read.iter().map(|id| id.0.to_vec()).collect(),
        seen_sessions: c.seen_sessions.iter().map(|id| id.0.to_vec()).collect(),
        blocked: c.blocked,
        verified: c.verified,
        device_changed: c.device_changed,
        mailbox_read: c.mailbox_read.map_or(0, |day| day + 1),
        request_since: c.request.map_or(0, |r| r.since.max(1)),
        request_seq: c.request.map_or(0, |r| r.seq),
        request_messages: c.request.map_or(0, |r| r.messages),
        request_bytes: c.request.map_or(0, |r| r.bytes),
        parked: c
            .parked
            .iter()
            .map(|p| ParkedBlob {
                old: p.old.0.to_vec(),
                timestamp_ms: p.timestamp_ms,
                body: p.body.clone(),
            })
            .collect(),
    })
}
