//! What a driver needs to reach a contact's 1:1 mailboxes (see
//! [`crate::mailbox_keys`]): the pair secret with the contact's device, the
//! days to read, and the day read through, kept across restarts so a
//! recipient away for a week reads every day it missed.

use std::ops::RangeInclusive;

use shoal_identity::PeerId;

use super::{Batch, Engine, EngineError};
use crate::UserId;
use crate::mailbox_keys::{PairSecret, days_to_fetch};
use crate::store::Store;

/// The mailboxes of one contact's device, as a driver needs them.
#[derive(Debug)]
pub struct MailboxPair {
    /// The secret both devices derive the mailbox keys from.
    pub secret: PairSecret,
    /// The contact's device (the peer its envelopes are authenticated as).
    pub device: PeerId,
    /// Its signing key: the `sender` of the mailboxes it writes to.
    pub device_key: shoal_identity::PublicKey,
}

impl<S: Store> Engine<S> {
    /// The mailbox pair with `contact`'s device, once the device is known
    /// (`None` before, or for a degenerate identity key).
    pub fn mailbox_pair(&self, contact: &UserId) -> Option<MailboxPair> {
        let theirs = self.contacts.get(contact)?.device.as_ref()?;
        Some(MailboxPair {
            secret: PairSecret::new(self.device(), theirs)?,
            device: theirs.device().peer_id(),
            device_key: theirs.device(),
        })
    }

    /// The days whose mailboxes from `contact` to read at `now_unix`: from
    /// the day before the last one read through to tomorrow (see
    /// [`days_to_fetch`]).
    pub fn mailbox_days(&self, contact: &UserId, now_unix: u64) -> RangeInclusive<u64> {
        let read = self.contacts.get(contact).and_then(|c| c.mailbox_read);
        days_to_fetch(read, now_unix)
    }

    /// Notes that `contact`'s mailboxes were read through `day` (every
    /// envelope found was handled); stored with the contact.
    pub fn mailbox_read_through(&mut self, contact: UserId, day: u64) -> Result<(), EngineError> {
        self.check()?;
        let Some(c) = self.contacts.get_mut(&contact) else {
            return Ok(());
        };
        if c.mailbox_read == Some(day) {
            return Ok(());
        }
        c.mailbox_read = Some(day);
        let mut batch = Batch::default();
        batch.dirty(contact);
        self.finish(batch)
    }

    /// Contacts with a known device, and whether a session to it is open
    /// (as the driver told [`Engine::set_online`]).
    pub fn contacts_with_devices(&self) -> Vec<(UserId, bool)> {
        self.contacts
            .values()
            .filter(|c| c.device.is_some() && c.request.is_none() && !c.blocked)
            .map(|c| (c.user, c.online))
            .collect()
    }
}
