//! The messenger engine: every conversation of one device, from `send` to
//! envelopes and from envelopes to shown messages, acknowledgements and
//! receipts. Network-free (the caller moves envelopes and supplies time and
//! randomness seeds) but not storage-free: it owns a [`Store`] and commits
//! to it before anything leaves, which is what makes "acknowledged" mean
//! "decrypted and durably stored".
//!
//! # Driving it
//! - [`Engine::send`], [`Engine::mark_read`], [`Engine::add_contact`]: user
//!   actions.
//! - [`Engine::handle_envelope_from`]: bytes from the network, from a
//!   known device ([`Engine::handle_envelope`] when the sender is unknown).
//! - [`Engine::set_bundle`]: the contact's prekey bundle, fetched after
//!   [`Event::NeedBundle`].
//! - [`Engine::set_online`]: whether a session to the contact's device is
//!   open; retries wait for it, and [`Event::NeedRoute`] asks for one.
//! - [`Engine::handle_timeout`] at [`Engine::poll_timeout`]: retries with
//!   backoff and resend requests.
//! - [`Engine::poll_transmit`] and [`Engine::poll_event`] after each call.
//!
//! # Delivery
//! Each sent message stays in the outbox (stored, outgoing, not delivered)
//! until the recipient's [`Payload::Ack`] arrives. It is sealed once, as
//! soon as a session exists (online or not), and that envelope is stored
//! with it: while the contact is online the same envelope goes out again
//! after 1, 2, 4, ... seconds (capped at [`EngineConfig::retry_max`]);
//! while it is not, a driver stores it in a mailbox
//! ([`Engine::mailbox_outbox`], [`Engine::mark_stored`]). The recipient
//! acknowledges a message only after committing it (shown or held), and
//! acknowledges a copy of an envelope it took again (it remembers the
//! envelopes' hashes). A message whose predecessors are missing is held
//! and the missing counters are requested with [`Payload::Resend`]; states:
//! [`Engine::delivery_state`].
//!
//!
//! # Strangers
//! A first message from a user never added is a message request: stored
//! within quotas, not acknowledged, not shown until [`Engine::add_contact`]
//! accepts it ([`Event::MessageRequest`], [`Engine::requests`]).
//!
//! # Repair
//! A session that cannot be decrypted any more (an erased prekey, a session
//! lost or evicted, a window overrun, chains forked by a store that went
//! back in time) is replaced: the side that cannot decrypt sends a signed
//! [`crate::reset::ResetRequest`] and the other starts a new session,
//! sending everything unacknowledged again on it. A device whose store went
//! back in time gets back from each contact what it lost, and writes again
//! under new ids what it wrote on counters already used
//! ([`Event::Recovered`], [`Event::Renumbered`]). docs/PROTOCOL.md 11.10.
//!
//! [`Payload::Ack`]: crate::message::Payload::Ack
//! [`Payload::Resend`]: crate::message::Payload::Resend

mod config;
mod contacts;
mod copies;
mod devices;
mod events;
mod identity;
mod mailbox;
mod outbox;
mod receive;
mod recovery;
mod refusals;
mod repair;
mod requests;
mod resend;
mod sealed;
mod sessions;
mod stored;

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use shoal_identity::Keypair;

use crate::envelope::SessionId;
use crate::message::Message;
use crate::store::{Changes, HistoryCursor, MessageMeta, Store, StoreError, StoredMessage};
use crate::x3dh;
use crate::{Device, Error, UserId};

use self::contacts::Contact;
use self::identity::{Prekey, identity_blob, seed_key};
use self::stored::contact_blob;

pub use self::config::{EngineConfig, SKIPPED_KEY_LIFETIME};
pub use self::contacts::ContactInfo;
pub use self::copies::MAX_COPY_ACKS_PER_SEC;
pub use self::events::{Event, RejectReason, Transmit};
pub use self::identity::{PREKEY_ROTATION_SECS, PREKEYS_KEPT};
pub use self::mailbox::MailboxPair;
pub use self::outbox::SEND_BUDGET;
pub use self::refusals::{REFUSAL_LOG_INTERVAL, Refusals};
pub use self::repair::{RESET_ANSWER_WINDOW, RESET_INTERVAL};
pub use self::requests::{
    Counters, MAX_REQUESTS, REQUEST_BYTES_PER_STRANGER, REQUEST_BYTES_TOTAL,
    REQUEST_MESSAGES_PER_STRANGER, REQUEST_MESSAGES_TOTAL, RequestInfo,
};
pub use self::sealed::{DeliveryState, MAILBOX_TTL, MailboxEnvelope};

/// Why an engine operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The store failed (a full disk, an I/O error). Nothing of the
    /// operation took effect or left: the engine reloads its state from the
    /// store on its next call and carries on, and inbound envelopes stay
    /// unacknowledged, so their senders retry.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Stored state did not parse.
    #[error("stored state: {0}")]
    Corrupt(Error),
    /// The contact is not known.
    #[error("unknown contact {0}")]
    UnknownContact(UserId),
    /// A message body is over [`MAX_BODY_LEN`].
    ///
    /// [`MAX_BODY_LEN`]: crate::message::MAX_BODY_LEN
    #[error("message body of {0} bytes is over the limit")]
    TooLarge(usize),
    /// The verified contact's device changed and the user has not
    /// acknowledged it yet ([`Engine::acknowledge_device_change`]).
    #[error("the device of verified contact {0} changed; acknowledge it before sending")]
    DeviceChanged(UserId),
    /// The user's message request was not accepted yet
    /// ([`Engine::add_contact`] accepts it).
    #[error("message request from {0} not accepted yet")]
    NotAccepted(UserId),
    /// A bundle does not belong to the contact.
    #[error("prekey bundle: {0}")]
    Bundle(Error),
}

/// A message of a conversation's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryItem {
    /// Metadata (direction, counter, height, flags).
    pub meta: MessageMeta,
    /// The message.
    pub message: Message,
}

/// Work collected during one operation, committed before anything in it
/// leaves.
#[derive(Default)]
struct Batch {
    changes: Changes,
    dirty: Vec<UserId>,
    transmits: Vec<Transmit>,
    events: Vec<Event>,
}

impl Batch {
    /// Stores a known message's new height and flags.
    fn update(&mut self, meta: &MessageMeta) {
        self.changes
            .updates
            .push((meta.id, meta.height, meta.flags));
    }

    fn dirty(&mut self, user: UserId) {
        if !self.dirty.contains(&user) {
            self.dirty.push(user);
        }
    }
}

/// The messenger engine of one device. See the [module docs](self).
pub struct Engine<S: Store> {
    store: S,
    config: EngineConfig,
    rng: ChaCha20Rng,
    user: Keypair,
    device: Device,
    prekeys: Vec<Prekey>,
    /// Our certificates before the latest renewals (same keys), newest
    /// last: a sender that fetched an older bundle derived its first
    /// session's keys with one of them.
    earlier_certificates: Vec<crate::DeviceCertificate>,
    contacts: HashMap<UserId, Contact>,
    sessions: HashMap<SessionId, UserId>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    /// A commit failed: memory is ahead of the store and must be reloaded
    /// from it before anything else happens.
    stale: bool,
    /// The latest monotonic time a caller gave (for reloading timers).
    last_now: Instant,
    /// The monotonic and wall clocks at open: wall time for timestamps
    /// that must survive a restart is derived from them.
    opened: (Instant, u64),
    /// When reset requests last went out, by device.
    reset_limiter: self::repair::ResetLimiter,
    /// Reset requests sent since opening.
    resets_sent: u64,
    /// Sessions replaced at a contact's request since opening.
    resets_honoured: u64,
    /// Envelopes refused, and when they were last logged.
    refusals: self::refusals::RefusalLog,
    /// Message requests dropped to make room since opening.
    requests_dropped: u64,
}

impl<S: Store> std::fmt::Debug for Engine<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("user", &self.user_id())
            .field("contacts", &self.contacts.len())
            .finish_non_exhaustive()
    }
}

impl<S: Store> Engine<S> {
    /// Opens the engine on `store`: loads the identity, contacts, sessions
    /// and outbox, or creates a new identity (user root key, device key,
    /// X25519 identity key, signed prekey) from `seed`-derived randomness
    /// when the store is empty. `seed` must be fresh random bytes; `now` and
    /// `unix_secs` are the monotonic and wall clocks.
    pub fn open(
        mut store: S,
        config: EngineConfig,
        seed: [u8; 32],
        now: Instant,
        unix_secs: u64,
    ) -> Result<Engine<S>, EngineError> {
        let mut rng = ChaCha20Rng::from_seed(seed);
        let (user, device, prekeys, earlier_certificates) = match store.load_identity()? {
            Some(blob) => {
                let (user, device, prekeys) =
                    Self::load_identity(&blob).map_err(EngineError::Corrupt)?;
                let earlier = Self::load_earlier_certificates(&blob, &device);
                (user, device, prekeys, earlier)
            }
            None => {
                let user = Keypair::from_secret_bytes(&seed_key(&mut rng));
                let signing = Keypair::from_secret_bytes(&seed_key(&mut rng));
                let device = Device::new(&user, signing, *seed_key(&mut rng), unix_secs);
                let (signed, secret) = x3dh::signed_prekey(&device, 1, *seed_key(&mut rng));
                let prekey = Prekey {
                    signed,
                    secret,
                    created: unix_secs,
                };
                let blob = identity_blob(&user, &device, std::slice::from_ref(&prekey), &[]);
                store.commit(&Changes {
                    identity: Some(blob),
                    ..Changes::default()
                })?;
                (user, device, vec![prekey], Vec::new())
            }
        };
        let mut engine = Engine {
            store,
            config,
            rng,
            user,
            device,
            prekeys,
            earlier_certificates,
            contacts: HashMap::new(),
            sessions: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stale: false,
            last_now: now,
            opened: (now, unix_secs),
            reset_limiter: Default::default(),
            resets_sent: 0,
            resets_honoured: 0,
            refusals: Default::default(),
            requests_dropped: 0,
        };
        engine.load_contacts(now)?;
        if engine.renew_certificate(unix_secs) {
            engine.store_identity()?;
        }
        Ok(engine)
    }

    /// The store (what a crash would leave behind is exactly its content).
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Up to `limit` messages of the conversation with `contact`, newest
    /// first, before `before` (a previous page's last `(height, id)`).
    pub fn history(
        &mut self,
        contact: &UserId,
        before: Option<HistoryCursor>,
        limit: usize,
    ) -> Result<Vec<HistoryItem>, EngineError> {
        self.check()?;
        if self.is_request(contact) {
            // Not a conversation until accepted: see `request_messages`.
            return Ok(Vec::new());
        }
        let stored = self.store.history(&contact.to_bytes(), before, limit)?;
        history_items(stored)
    }

    /// Reloads the state from the store if a commit failed since the last
    /// call; an error if the store cannot be read either.
    fn check(&mut self) -> Result<(), EngineError> {
        if self.stale {
            self.reload()?;
        }
        Ok(())
    }

    /// Notes the caller's clock (it only moves forward).
    fn tick(&mut self, now: Instant) {
        self.last_now = self.last_now.max(now);
    }

    /// Wall time, Unix seconds, at monotonic time `now`.
    fn unix_at(&self, now: Instant) -> u64 {
        let (at, unix) = self.opened;
        unix + now.saturating_duration_since(at).as_secs()
    }

    /// Monotonic time at wall time `unix` (the open time if earlier;
    /// `None` if beyond what `Instant` can hold).
    fn instant_at(&self, unix: u64) -> Option<Instant> {
        let (at, opened) = self.opened;
        at.checked_add(Duration::from_secs(unix.saturating_sub(opened)))
    }

    /// Throws away the in-memory state and loads it again from the store:
    /// after a failed commit, the store holds the truth (the last commit
    /// that succeeded). Envelopes and events of committed work that are
    /// still queued stay queued.
    fn reload(&mut self) -> Result<(), EngineError> {
        let blob = self
            .store
            .load_identity()?
            .ok_or(EngineError::Corrupt(Error::Malformed {
                what: "identity missing after a failed commit",
            }))?;
        let (user, device, prekeys) = Self::load_identity(&blob).map_err(EngineError::Corrupt)?;
        self.earlier_certificates = Self::load_earlier_certificates(&blob, &device);
        self.user = user;
        self.device = device;
        self.prekeys = prekeys;
        // Whether a contact is online is the driver's knowledge, not stored.
        let online: Vec<UserId> = self
            .contacts
            .values()
            .filter(|c| c.online)
            .map(|c| c.user)
            .collect();
        self.contacts.clear();
        self.sessions.clear();
        self.load_contacts(self.last_now)?;
        for user in online {
            if let Some(c) = self.contacts.get_mut(&user) {
                c.online = true;
            }
        }
        self.stale = false;
        tracing::info!("engine state reloaded from the store after a failed commit");
        Ok(())
    }

    /// Commits the batch (with the blobs of every contact it touched), then
    /// releases its envelopes and events.
    fn finish(&mut self, mut batch: Batch) -> Result<(), EngineError> {
        for user in &batch.dirty {
            if let Some(c) = self.contacts.get(user) {
                batch
                    .changes
                    .contacts
                    .push((user.to_bytes(), contact_blob(c)));
            }
        }
        if !batch.changes.is_empty()
            && let Err(e) = self.store.commit(&batch.changes)
        {
            // Memory is ahead of the disk now: nothing of the batch leaves,
            // and the next call reloads the state the store holds.
            tracing::warn!(%e, "commit failed; nothing of this step is kept");
            self.stale = true;
            return Err(e.into());
        }
        self.transmits.extend(batch.transmits);
        self.events.extend(batch.events);
        Ok(())
    }
}

/// Stored messages as history items (their bodies decoded).
fn history_items(stored: Vec<StoredMessage>) -> Result<Vec<HistoryItem>, EngineError> {
    stored
        .into_iter()
        .map(|s| {
            Ok(HistoryItem {
                message: Message::decode(&s.encoded).map_err(EngineError::Corrupt)?,
                meta: s.meta,
            })
        })
        .collect()
}
