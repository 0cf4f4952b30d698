//! Copies of envelopes already taken: a sender resends the very same
//! envelope until our acknowledgement comes (a message is sealed once), and
//! a copy cannot be decrypted twice, so the store remembers which message
//! each envelope carried and a copy is acknowledged again.

use std::time::Instant;

use super::sessions::Sealing;
use super::{Batch, Engine};
use crate::UserId;
use crate::message::{MessageId, Payload};
use crate::store::{Store, envelope_key};

/// Most acknowledgements sealed a second, per contact, for copies of
/// envelopes already taken.
pub const MAX_COPY_ACKS_PER_SEC: u32 = 64;

impl<S: Store> Engine<S> {
    /// The message an envelope carried, if we took it before.
    pub(super) fn copy_of(&mut self, bytes: &[u8]) -> Option<MessageId> {
        match self.store.received(&envelope_key(bytes)) {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!(%e, "looking up a received envelope failed");
                None
            }
        }
    }

    /// Acknowledges again message `id`, carried by a copy of a taken
    /// envelope, while the contact is online and at most
    /// [`MAX_COPY_ACKS_PER_SEC`] a second: a replay of old envelopes cannot
    /// make us seal more than that, and never beyond the budget.
    pub(super) fn ack_copy(
        &mut self,
        now: Instant,
        contact: UserId,
        id: MessageId,
        batch: &mut Batch,
    ) {
        let Some(c) = self.contacts.get_mut(&contact) else {
            return;
        };
        if !c.online {
            return;
        }
        match c.copy_acks {
            Some((since, count))
                if now.saturating_duration_since(since) < std::time::Duration::from_secs(1) =>
            {
                if count >= MAX_COPY_ACKS_PER_SEC {
                    return;
                }
            }
            _ => c.copy_acks = Some((now, 0)),
        }
        if self.seal(contact, &Payload::Ack(vec![id]), Sealing::Own, batch)
            && let Some((_, count)) = self
                .contacts
                .get_mut(&contact)
                .and_then(|c| c.copy_acks.as_mut())
        {
            *count += 1;
        }
    }
}
