//! Replicas of a mailbox keep each other whole: set reconciliation of
//! their envelopes and tombstones ([`ranges`], [`codec`]).
//!
//! A replica's set for a mailbox is one [`SyncItem`] per envelope it holds
//! and per tombstone (an acked envelope) it keeps, each with the owner's
//! signed request that proves it: what a replica hands over can be checked
//! by the one that takes it, so a replica can neither forge an envelope
//! nor delete one with a forged tombstone.

pub mod codec;
pub mod members;
pub mod message;
pub mod ranges;

pub use codec::{MAX_LIST, MAX_RANGES, decode_ranges, encode_ranges};
pub use members::Neighbourhood;
pub use message::{MAX_HANDOFFS, MAX_SYNC_MAILBOXES, MailboxSync, Role, SyncMessage};
pub use ranges::{
    BRANCHES, Bound, FINGERPRINT_LEN, ItemSet, LIST_MAX, Mode, Range, State, Step, SyncItem,
    SyncKey, check_order,
};

#[cfg(test)]
mod tests;
