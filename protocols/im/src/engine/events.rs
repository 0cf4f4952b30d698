//! What the engine hands out: events for its user, envelopes for the
//! network, and the reasons an envelope was refused.

use shoal_identity::PeerId;

use super::Engine;
use crate::conversation::OrderingError;
use crate::message::{Message, MessageId};
use crate::store::Store;
use crate::{Error, UserId};

/// Why a received envelope was refused (counted in [`Engine::refusals`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RejectReason {
    /// Parsing, decryption or a key check failed.
    #[error(transparent)]
    Crypto(#[from] Error),
    /// The envelope is for another device.
    #[error("envelope for another device")]
    WrongRecipient,
    /// No session has this id.
    #[error("unknown session")]
    UnknownSession,
    /// A message claims a sender other than the session's user, or was
    /// written to another recipient.
    #[error("message sender is not the session's user, or recipient is not us")]
    WrongSender,
    /// The message contradicts the conversation (see [`OrderingError`]).
    #[error(transparent)]
    Ordering(#[from] OrderingError),
    /// The envelope came from our own device.
    #[error("envelope from ourselves")]
    FromSelf,
    /// An initial envelope of a session we held before and dropped: a
    /// replay.
    #[error("initial envelope of a session already held")]
    ReplayedSession,
    /// A new session from a contact whose session works and whom we did
    /// not ask for one: a replay, or a contact that lost our session. We
    /// ask the device for a new session instead (a reset request, which
    /// only a device holding that session as its active one honours).
    #[error("new session not asked for; verifying with a reset request")]
    UnrequestedSession,
    /// The sender is blocked (or was removed).
    #[error("sender blocked")]
    Blocked,
    /// A message of a pending request over the per-stranger quota
    /// ([`REQUEST_MESSAGES_PER_STRANGER`], [`REQUEST_BYTES_PER_STRANGER`]);
    /// its sender retries it, and it arrives once the request is accepted.
    ///
    /// [`REQUEST_MESSAGES_PER_STRANGER`]: super::REQUEST_MESSAGES_PER_STRANGER
    /// [`REQUEST_BYTES_PER_STRANGER`]: super::REQUEST_BYTES_PER_STRANGER
    #[error("message request over its quota")]
    RequestQuota,
}

impl RejectReason {
    /// A short, stable name of the reason, for counters and logs.
    pub fn label(&self) -> &'static str {
        match self {
            RejectReason::Crypto(e) => match e {
                Error::Malformed { .. } => "malformed",
                Error::UnsupportedVersion { .. } => "unsupported-version",
                Error::Identity(_) | Error::WrongUser => "bad-signature",
                Error::PrekeyMismatch { .. } => "erased-prekey",
                Error::OutsideWindow { .. } => "outside-window",
                Error::AlreadyUsedOrEvicted { .. } => "already-used",
                Error::BeyondChainEnd { .. } => "beyond-chain-end",
                Error::Decrypt => "decrypt",
                Error::Expired { .. }
                | Error::WeakKey
                | Error::NotReady
                | Error::CounterExhausted => "key-agreement",
            },
            RejectReason::WrongRecipient => "wrong-recipient",
            RejectReason::UnknownSession => "unknown-session",
            RejectReason::WrongSender => "wrong-sender",
            RejectReason::Ordering(_) => "ordering",
            RejectReason::FromSelf => "from-self",
            RejectReason::ReplayedSession => "replayed-session",
            RejectReason::UnrequestedSession => "unrequested-session",
            RejectReason::RequestQuota => "request-quota",
            RejectReason::Blocked => "blocked",
        }
    }
}

/// What the engine tells its user.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A message is shown (in causal order: everything it follows was
    /// reported first).
    Received {
        /// The conversation.
        contact: UserId,
        /// The message id.
        id: MessageId,
        /// The message.
        message: Message,
        /// Its causal height (history order is `(height, id)`).
        height: u64,
    },
    /// One of our own messages is shown: lost when our store went back in
    /// time and returned by the contact (it is delivered), or written while
    /// the one before it was still being recovered.
    Recovered {
        /// The conversation.
        contact: UserId,
        /// The message id.
        id: MessageId,
        /// The message.
        message: Message,
        /// Its causal height.
        height: u64,
    },
    /// A message we wrote after our store went back in time reused a
    /// counter the contact already holds another message of ours under; it
    /// is written again after the recovered ones, under a new id, and goes
    /// out again. `old` is gone from the history.
    Renumbered {
        /// The conversation.
        contact: UserId,
        /// The id it had.
        old: MessageId,
        /// The id it has now.
        new: MessageId,
    },
    /// W mailbox replicas signed for the envelope of one of our messages
    /// ([`Engine::mark_stored`]): it waits for the contact even if we go.
    Stored {
        /// The conversation.
        contact: UserId,
        /// Our message.
        id: MessageId,
    },
    /// One of our messages was sealed [`MAILBOX_TTL`] ago and is still not
    /// delivered: mailboxes dropped it. It goes out again directly once
    /// the contact is online.
    ///
    /// [`MAILBOX_TTL`]: super::MAILBOX_TTL
    Expired {
        /// The conversation.
        contact: UserId,
        /// Our message.
        id: MessageId,
    },
    /// The recipient acknowledged one of our messages.
    Delivered {
        /// The conversation.
        contact: UserId,
        /// Our message.
        id: MessageId,
    },
    /// The recipient read one of our messages.
    Read {
        /// The conversation.
        contact: UserId,
        /// Our message.
        id: MessageId,
    },
    /// A user we had not added wrote to us: a message request, stored
    /// but not shown or acknowledged until [`Engine::add_contact`] accepts
    /// it (see [`Engine::requests`], [`Engine::request_messages`]).
    MessageRequest {
        /// The stranger.
        contact: UserId,
    },
    /// The contact speaks from another device than before (its root key
    /// certified a new one). If `verified`, [`Engine::send`] to it is
    /// refused until [`Engine::acknowledge_device_change`].
    DeviceChanged {
        /// The contact.
        contact: UserId,
        /// Its new device.
        device: PeerId,
        /// The contact was verified: sending waits for the user.
        verified: bool,
    },
    /// Messages wait for `contact` and there is no session: look up its
    /// prekey bundle and call [`Engine::set_bundle`].
    NeedBundle {
        /// The contact.
        contact: UserId,
    },
    /// Messages wait for `contact`, whose device is known but not
    /// connected: find its address and connect, then call
    /// [`Engine::set_online`].
    NeedRoute {
        /// The contact.
        contact: UserId,
        /// Its device.
        device: PeerId,
    },
    /// The contact could not decrypt our session and asked for a new one
    /// (a signed reset request); we started it, and every unacknowledged
    /// message goes out again on it with its id unchanged.
    SessionReset {
        /// The contact.
        contact: UserId,
    },
}

/// An envelope to send to a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The conversation; `None` for a reset request to a device we cannot
    /// attribute to a user (it sent an envelope of a session we do not
    /// hold): send it only if that device is connected.
    pub contact: Option<UserId>,
    /// The device to deliver to.
    pub device: PeerId,
    /// The encoded envelope.
    pub envelope: Vec<u8>,
    /// The message it carries, for a message's envelope: sealed once, it
    /// is the same bytes every time it goes out. A driver that cannot reach
    /// the device stores it in a mailbox and reports it with
    /// [`Engine::mark_stored`]. `None` for acknowledgements, receipts and
    /// requests.
    pub message: Option<MessageId>,
}

impl<S: Store> Engine<S> {
    /// The next envelope to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}
