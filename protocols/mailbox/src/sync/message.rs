//! The sync message replicas exchange (a frame of the mailbox protocol,
//! docs/PROTOCOL.md 12.9):
//!
//! ```protobuf
//! message Sync {                  // Frame body 5; request_id names the session
//!   repeated MailboxSync mailboxes = 1;
//!   repeated Handoff items = 2;
//! }
//! message MailboxSync {
//!   bytes mailbox = 1;            // 32 bytes
//!   uint32 role = 2;              // 0 member, 1 leaving (hands off only), 2 refused (not a member)
//!   bytes ranges = 3;             // see the codec module; empty: all skipped
//!   repeated bytes need = 4;      // 32-byte hashes the sender lacks
//! }
//! message Handoff {
//!   bytes mailbox = 1;
//!   oneof item {
//!     Held envelope = 2;          // { bytes body = 1; bytes signature = 2; fixed64 expiry = 3; }
//!     Tombstones tombstones = 3;  // { bytes ack_body = 1; bytes ack_signature = 2;
//!                                 //   repeated Tomb entries = 3; }  Tomb: { bytes hash = 1; fixed64 expiry = 2; }
//!   }
//! }
//! ```

use shoal_identity::SIGNATURE_LEN;

use super::codec::{MAX_LIST, decode_ranges, encode_ranges};
use super::ranges::Range;
use crate::id::{EnvelopeHash, MailboxId};
use crate::store::{AckProof, Handoff};
use crate::wire::{DecodeError, MAX_ACK_HASHES, MAX_ENVELOPE_LEN};

/// Most mailboxes named in one sync message.
pub const MAX_SYNC_MAILBOXES: usize = 512;

/// Most hand-offs in one sync message.
pub const MAX_HANDOFFS: usize = 4096;

/// Largest store or ack body handed off: an envelope at its limit and the
/// rest of its request, or an ack of [`MAX_ACK_HASHES`] hashes.
pub const MAX_BODY_LEN: usize = MAX_ENVELOPE_LEN + 4096;

pub(crate) mod pb {
    //! The protobuf schema of sync messages.

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct Sync {
        #[prost(message, repeated, tag = "1")]
        pub(crate) mailboxes: Vec<MailboxSync>,
        #[prost(message, repeated, tag = "2")]
        pub(crate) items: Vec<Handoff>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct MailboxSync {
        #[prost(bytes = "vec", tag = "1")]
        pub(crate) mailbox: Vec<u8>,
        #[prost(uint32, tag = "2")]
        pub(crate) role: u32,
        #[prost(bytes = "vec", tag = "3")]
        pub(crate) ranges: Vec<u8>,
        #[prost(bytes = "vec", repeated, tag = "4")]
        pub(crate) need: Vec<Vec<u8>>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct Handoff {
        #[prost(bytes = "vec", tag = "1")]
        pub(crate) mailbox: Vec<u8>,
        #[prost(oneof = "Item", tags = "2, 3")]
        pub(crate) item: Option<Item>,
    }

    #[derive(Clone, PartialEq, prost::Oneof)]
    pub(crate) enum Item {
        #[prost(message, tag = "2")]
        Envelope(Held),
        #[prost(message, tag = "3")]
        Tombstones(Tombstones),
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct Held {
        #[prost(bytes = "bytes", tag = "1")]
        pub(crate) body: bytes::Bytes,
        #[prost(bytes = "vec", tag = "2")]
        pub(crate) signature: Vec<u8>,
        #[prost(fixed64, tag = "3")]
        pub(crate) expiry: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct Tombstones {
        #[prost(bytes = "bytes", tag = "1")]
        pub(crate) ack_body: bytes::Bytes,
        #[prost(bytes = "vec", tag = "2")]
        pub(crate) ack_signature: Vec<u8>,
        #[prost(message, repeated, tag = "3")]
        pub(crate) entries: Vec<Tomb>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct Tomb {
        #[prost(bytes = "vec", tag = "1")]
        pub(crate) hash: Vec<u8>,
        #[prost(fixed64, tag = "2")]
        pub(crate) expiry: u64,
    }
}

/// What the sender of a [`MailboxSync`] is to the mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// One of its replicas: it takes what it lacks.
    Member,
    /// No longer one of its replicas: it hands over what it holds and
    /// takes nothing.
    Leaving,
    /// Not one of its replicas, and holding nothing of it: hand it
    /// nothing.
    Refused,
}

impl Role {
    fn code(self) -> u32 {
        match self {
            Role::Member => 0,
            Role::Leaving => 1,
            Role::Refused => 2,
        }
    }

    fn from_code(code: u32) -> Option<Role> {
        match code {
            0 => Some(Role::Member),
            1 => Some(Role::Leaving),
            2 => Some(Role::Refused),
            _ => None,
        }
    }
}

/// One mailbox's part of a sync message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxSync {
    /// The mailbox.
    pub mailbox: MailboxId,
    /// What the sender is to it.
    pub role: Role,
    /// The sender's ranges (empty: nothing left to compare).
    pub ranges: Vec<Range>,
    /// Items the sender lacks and asks for.
    pub need: Vec<EnvelopeHash>,
}

/// A sync message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncMessage {
    /// Per mailbox: ranges and needs.
    pub mailboxes: Vec<MailboxSync>,
    /// Items handed over, with the owner's proofs.
    pub items: Vec<(MailboxId, Handoff)>,
}

impl SyncMessage {
    /// Whether it says nothing.
    pub fn is_empty(&self) -> bool {
        self.mailboxes.is_empty() && self.items.is_empty()
    }

    pub(crate) fn to_pb(&self) -> pb::Sync {
        pb::Sync {
            mailboxes: self
                .mailboxes
                .iter()
                .map(|m| pb::MailboxSync {
                    mailbox: m.mailbox.as_bytes().to_vec(),
                    role: m.role.code(),
                    ranges: encode_ranges(&m.ranges),
                    need: m.need.iter().map(|h| h.as_bytes().to_vec()).collect(),
                })
                .collect(),
            items: self
                .items
                .iter()
                .map(|(mailbox, item)| pb::Handoff {
                    mailbox: mailbox.as_bytes().to_vec(),
                    item: Some(match item {
                        Handoff::Envelope {
                            body,
                            signature,
                            expiry,
                        } => pb::Item::Envelope(pb::Held {
                            body: body.clone(),
                            signature: signature.map(|s| s.to_vec()).unwrap_or_default(),
                            expiry: *expiry,
                        }),
                        Handoff::Tombstones { ack, entries } => {
                            pb::Item::Tombstones(pb::Tombstones {
                                ack_body: ack.body.clone(),
                                ack_signature: ack.signature.to_vec(),
                                entries: entries
                                    .iter()
                                    .map(|(hash, expiry)| pb::Tomb {
                                        hash: hash.as_bytes().to_vec(),
                                        expiry: *expiry,
                                    })
                                    .collect(),
                            })
                        }
                    }),
                })
                .collect(),
        }
    }

    pub(crate) fn from_pb(sync: pb::Sync) -> Result<SyncMessage, DecodeError> {
        if sync.mailboxes.len() > MAX_SYNC_MAILBOXES || sync.items.len() > MAX_HANDOFFS {
            return Err(DecodeError::Invalid("sync count"));
        }
        let mailbox_of = |bytes: &[u8]| {
            MailboxId::try_from_slice(bytes).ok_or(DecodeError::Invalid("sync mailbox"))
        };
        let hash_of = |bytes: &[u8]| {
            EnvelopeHash::try_from_slice(bytes).ok_or(DecodeError::Invalid("sync hash"))
        };
        let mut mailboxes = Vec::with_capacity(sync.mailboxes.len());
        for m in sync.mailboxes {
            if m.need.len() > MAX_LIST {
                return Err(DecodeError::Invalid("sync need count"));
            }
            mailboxes.push(MailboxSync {
                mailbox: mailbox_of(&m.mailbox)?,
                role: Role::from_code(m.role).ok_or(DecodeError::Invalid("sync role"))?,
                ranges: decode_ranges(&m.ranges)?,
                need: m
                    .need
                    .iter()
                    .map(|h| hash_of(h))
                    .collect::<Result<_, _>>()?,
            });
        }
        let mut items = Vec::with_capacity(sync.items.len());
        for h in sync.items {
            let mailbox = mailbox_of(&h.mailbox)?;
            let item = match h.item.ok_or(DecodeError::Invalid("sync item"))? {
                pb::Item::Envelope(held) => {
                    if held.body.is_empty() || held.body.len() > MAX_BODY_LEN {
                        return Err(DecodeError::Invalid("sync body length"));
                    }
                    let signature = match held.signature.len() {
                        0 => None,
                        _ => Some(signature(&held.signature)?),
                    };
                    Handoff::Envelope {
                        body: held.body,
                        signature,
                        expiry: held.expiry,
                    }
                }
                pb::Item::Tombstones(t) => {
                    if t.ack_body.is_empty()
                        || t.ack_body.len() > MAX_BODY_LEN
                        || t.entries.is_empty()
                        || t.entries.len() > MAX_ACK_HASHES
                    {
                        return Err(DecodeError::Invalid("sync tombstones"));
                    }
                    Handoff::Tombstones {
                        ack: AckProof {
                            body: t.ack_body,
                            signature: signature(&t.ack_signature)?,
                        },
                        entries: t
                            .entries
                            .iter()
                            .map(|e| Ok((hash_of(&e.hash)?, e.expiry)))
                            .collect::<Result<_, DecodeError>>()?,
                    }
                }
            };
            items.push((mailbox, item));
        }
        Ok(SyncMessage { mailboxes, items })
    }
}

fn signature(bytes: &[u8]) -> Result<[u8; SIGNATURE_LEN], DecodeError> {
    bytes
        .try_into()
        .map_err(|_| DecodeError::Invalid("sync signature length"))
}

/// Bytes `item` takes in a message, about (to keep messages under the
/// frame limit).
pub(crate) fn handoff_size(item: &Handoff) -> usize {
    match item {
        Handoff::Envelope { body, .. } => body.len() + 120,
        Handoff::Tombstones { ack, entries } => ack.body.len() + 120 + 44 * entries.len(),
    }
}

/// Bytes a mailbox's part takes, about.
pub(crate) fn part_size(part: &MailboxSync) -> usize {
    48 + encode_ranges(&part.ranges).len() + 34 * part.need.len()
}
