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
//! - [`Engine::handle_envelope`]: bytes from the network.
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
//! until the recipient's [`Payload::Ack`] arrives; until then it is
//! re-encrypted and sent again after 1, 2, 4, ... seconds (capped at
//! [`EngineConfig::retry_max`]). The recipient acknowledges a message only
//! after committing it (shown or held), acknowledges duplicates again, and
//! drops them otherwise. A message whose predecessors are missing is held
//! and the missing counters are requested with [`Payload::Resend`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use shoal_identity::{Keypair, PeerId};
use zeroize::Zeroizing;

use crate::conversation::{Conversation, OrderingError, Received};
use crate::envelope::{Envelope, SessionId, SessionRef, pad, unpad};
use crate::message::{MAX_BODY_LEN, MAX_IDS_PER_RECEIPT, Message, MessageId, Payload};
use crate::persist::{self, ContactBlob, IdentityBlob, PrekeyBlob, SessionBlob};
use crate::store::{Changes, HistoryCursor, MessageMeta, Store, StoreError, StoredMessage};
use crate::x3dh::{self, InitialHeader, PrekeyBundle, PrekeySecret, SignedPrekey};
use crate::{Device, DeviceCertificate, Error, Session, UserId};

/// Tunables of an [`Engine`].
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// First retry of an unacknowledged message.
    pub retry_initial: Duration,
    /// Longest wait between retries.
    pub retry_max: Duration,
    /// Shortest interval between two resend requests to one contact.
    pub resend_interval: Duration,
    /// Sessions kept per contact for decrypting late messages.
    pub max_sessions: usize,
    /// Test only: append every plaintext payload to its envelope, in the
    /// clear, so tests can prove their plaintext checks can fail. Never set
    /// this anywhere else.
    #[doc(hidden)]
    pub leak_plaintext_for_tests: bool,
    /// Test only: abort the process right after the n-th commit that is
    /// followed by envelopes (between the durable commit and the ack), to
    /// test crash recovery. Never set this anywhere else.
    #[doc(hidden)]
    pub abort_after_commits_for_tests: Option<u64>,
}

impl Default for EngineConfig {
    fn default() -> EngineConfig {
        EngineConfig {
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(30),
            resend_interval: Duration::from_secs(1),
            max_sessions: 4,
            leak_plaintext_for_tests: false,
            abort_after_commits_for_tests: None,
        }
    }
}

/// Why an engine operation failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The store failed; the engine refuses further work (reopen it).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The engine failed before and refuses further work.
    #[error("engine stopped after a store failure")]
    Poisoned,
    /// Stored state did not parse.
    #[error("stored state: {0}")]
    Corrupt(Error),
    /// The contact is not known.
    #[error("unknown contact {0}")]
    UnknownContact(UserId),
    /// A message body is over [`MAX_BODY_LEN`].
    #[error("message body of {0} bytes is over the limit")]
    TooLarge(usize),
    /// A bundle does not belong to the contact.
    #[error("prekey bundle: {0}")]
    Bundle(Error),
}

/// Why a received envelope was refused (reported in [`Event::Rejected`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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
    /// A stranger started a conversation while [`MAX_UNNAMED_CONTACTS`]
    /// others wait to be named with [`Engine::add_contact`].
    #[error("too many conversations from strangers")]
    TooManyStrangers,
}

/// What the engine tells its user.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// A user we had not added started a conversation; they are a contact now.
    ContactAdded {
        /// The new contact.
        contact: UserId,
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
    /// An envelope was refused; nothing else changed.
    Rejected {
        /// The contact, when the envelope could be attributed.
        contact: Option<UserId>,
        /// Why.
        reason: RejectReason,
    },
}

/// An envelope to send to a contact's device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The conversation.
    pub contact: UserId,
    /// The device to deliver to.
    pub device: PeerId,
    /// The encoded envelope.
    pub envelope: Vec<u8>,
}

/// A message of a conversation's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryItem {
    /// Metadata (direction, counter, height, flags).
    pub meta: MessageMeta,
    /// The message.
    pub message: Message,
}

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
}

/// One signed prekey, its secret and when it was made (Unix seconds).
struct Prekey {
    signed: SignedPrekey,
    secret: PrekeySecret,
    created: u64,
}

/// Most envelopes sealed to a contact since the last one received from it.
/// Beyond it, retries and new messages wait (one probe per
/// [`EngineConfig::retry_max`] goes out) until the contact answers: keys
/// spent on envelopes that may all be lost are keys the recipient has to
/// skip, and more than [`crate::ratchet::MAX_SKIP`] of them in one chain
/// would make everything after unreadable.
pub const SEND_BUDGET: u32 = crate::ratchet::MAX_SKIP / 2;

/// Most contacts that started a conversation and were never named with
/// [`Engine::add_contact`]; first contact from further strangers is refused.
pub const MAX_UNNAMED_CONTACTS: usize = 64;

/// How long a signed prekey stays the published one before
/// [`Engine::rotate_prekey_if_due`] replaces it.
pub const PREKEY_ROTATION_SECS: u64 = 7 * 24 * 3600;
/// Older prekey secrets kept after a rotation, for first contacts made from
/// a bundle fetched before it; older ones are erased, so a later theft of
/// the device's keys cannot open first messages made from them.
pub const PREKEYS_KEPT: usize = 2;

struct SessionEntry {
    id: SessionId,
    session: Session,
    /// Sent with every message until the peer answers on this session.
    initial: Option<InitialHeader>,
}

struct Pending {
    encoded: Vec<u8>,
    attempts: u32,
    next: Instant,
}

struct Contact {
    user: UserId,
    name: String,
    device: Option<DeviceCertificate>,
    sessions: Vec<SessionEntry>,
    conversation: Conversation,
    outbox: BTreeMap<u64, Pending>,
    next_resend_request: Option<Instant>,
    /// When we may answer the contact's next resend request.
    next_resend_answer: Option<Instant>,
    next_route_request: Option<Instant>,
    /// A session to the contact's device is open (told by the driver).
    online: bool,
    /// Envelopes sealed since the last envelope received from the contact.
    unanswered: u32,
    /// When the next probe may go out while over [`SEND_BUDGET`].
    next_probe: Option<Instant>,
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
    contacts: HashMap<UserId, Contact>,
    sessions: HashMap<SessionId, UserId>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    poisoned: bool,
    commits: u64,
}

impl<S: Store> std::fmt::Debug for Engine<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("user", &self.user_id())
            .field("contacts", &self.contacts.len())
            .finish_non_exhaustive()
    }
}

fn seed_key(rng: &mut ChaCha20Rng) -> Zeroizing<[u8; 32]> {
    let mut key = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(key.as_mut());
    key
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
        let (user, device, prekeys) = match store.load_identity()? {
            Some(blob) => Self::load_identity(&blob).map_err(EngineError::Corrupt)?,
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
                let blob = identity_blob(&user, &device, std::slice::from_ref(&prekey));
                store.commit(&Changes {
                    identity: Some(blob),
                    ..Changes::default()
                })?;
                (user, device, vec![prekey])
            }
        };
        let mut engine = Engine {
            store,
            config,
            rng,
            user,
            device,
            prekeys,
            contacts: HashMap::new(),
            sessions: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            poisoned: false,
            commits: 0,
        };
        engine.load_contacts(now)?;
        Ok(engine)
    }

    fn load_identity(blob: &[u8]) -> Result<(Keypair, Device, Vec<Prekey>), Error> {
        let blob: IdentityBlob = persist::decode(blob, "identity blob")?;
        let user = Keypair::from_secret_bytes(&persist::array32(&blob.user_secret, "identity")?);
        let signing =
            Keypair::from_secret_bytes(&persist::array32(&blob.device_secret, "identity")?);
        let certificate = DeviceCertificate::decode(&blob.certificate)?;
        let device = Device::from_parts(
            signing,
            persist::array32(&blob.identity_secret, "identity")?,
            certificate,
        )?;
        let mut prekeys = Vec::new();
        for p in &blob.prekeys {
            let signed = SignedPrekey::decode(&p.signed, &device.certificate().device())?;
            let secret = PrekeySecret::from_bytes(p.id, persist::array32(&p.secret, "prekey")?);
            prekeys.push(Prekey {
                signed,
                secret,
                created: p.created,
            });
        }
        if prekeys.is_empty() {
            return Err(Error::Malformed {
                what: "identity blob",
            });
        }
        Ok((user, device, prekeys))
    }

    fn load_contacts(&mut self, now: Instant) -> Result<(), EngineError> {
        let mut index: HashMap<[u8; 32], Vec<MessageMeta>> = HashMap::new();
        for meta in self.store.load_index()? {
            index.entry(meta.contact).or_default().push(meta);
        }
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
                    Some(InitialHeader::decode(&s.initial).map_err(EngineError::Corrupt)?)
                };
                sessions.push(SessionEntry {
                    id: SessionId(id),
                    session: Session::from_bytes(&s.state).map_err(EngineError::Corrupt)?,
                    initial,
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
                    if meta.outgoing {
                        outbox.insert(
                            meta.counter,
                            Pending {
                                encoded: stored.encoded,
                                attempts: 0,
                                next: now,
                            },
                        );
                    } else {
                        held = Some(message);
                    }
                }
                conversation.restore(meta, held);
            }
            let heads = blob
                .heads
                .iter()
                .filter_map(|h| <[u8; 32]>::try_from(h.as_slice()).ok().map(MessageId));
            conversation.restore_heads(heads);
            // Held messages after a restart: ask for what is missing soon.
            let next_resend_request = (conversation.held_len() > 0).then_some(now);
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
                    next_resend_answer: None,
                    next_route_request: None,
                    online: false,
                    unanswered: 0,
                    next_probe: None,
                },
            );
        }
        Ok(())
    }

    /// The store (what a crash would leave behind is exactly its content).
    pub fn store(&self) -> &S {
        &self.store
    }

    /// This user's id.
    pub fn user_id(&self) -> UserId {
        UserId::new(self.user.public())
    }

    /// This device (its signing key is the node key).
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The bundle to publish so others can start sessions.
    pub fn prekey_bundle(&self) -> PrekeyBundle {
        PrekeyBundle {
            certificate: self.device.certificate().clone(),
            prekey: self.prekeys[self.prekeys.len() - 1].signed.clone(),
        }
    }

    /// Replaces the published signed prekey if it is older than
    /// [`PREKEY_ROTATION_SECS`] at wall time `unix_secs`, keeping the
    /// [`PREKEYS_KEPT`] previous secrets and erasing older ones. Returns
    /// whether it rotated: then publish [`Engine::prekey_bundle`] again.
    pub fn rotate_prekey_if_due(&mut self, unix_secs: u64) -> Result<bool, EngineError> {
        self.check()?;
        let newest = &self.prekeys[self.prekeys.len() - 1];
        if unix_secs < newest.created.saturating_add(PREKEY_ROTATION_SECS) {
            return Ok(false);
        }
        let id = newest.signed.id().wrapping_add(1);
        let (signed, secret) = x3dh::signed_prekey(&self.device, id, *seed_key(&mut self.rng));
        self.prekeys.push(Prekey {
            signed,
            secret,
            created: unix_secs,
        });
        let excess = self.prekeys.len().saturating_sub(PREKEYS_KEPT + 1);
        self.prekeys.drain(..excess);
        let mut batch = Batch::default();
        batch.changes.identity = Some(identity_blob(&self.user, &self.device, &self.prekeys));
        self.finish(batch)?;
        Ok(true)
    }

    /// Every contact.
    pub fn contacts(&self) -> Vec<ContactInfo> {
        let mut list: Vec<ContactInfo> = self
            .contacts
            .values()
            .map(|c| ContactInfo {
                user: c.user,
                name: c.name.clone(),
                device: c.device.as_ref().map(|d| d.device().peer_id()),
                has_session: !c.sessions.is_empty(),
                online: c.online,
                sessions: c.sessions.len(),
                outbox: c.outbox.len(),
            })
            .collect();
        list.sort_by(|a, b| {
            a.name
                .cmp(&b.name)
                .then(a.user.to_bytes().cmp(&b.user.to_bytes()))
        });
        list
    }

    /// Adds (or renames) a contact.
    pub fn add_contact(&mut self, user: UserId, name: &str) -> Result<(), EngineError> {
        self.check()?;
        let mut batch = Batch::default();
        self.contact_entry(user).name = name.to_owned();
        batch.dirty(user);
        self.finish(batch)
    }

    fn contact_entry(&mut self, user: UserId) -> &mut Contact {
        self.contacts.entry(user).or_insert_with(|| Contact {
            user,
            name: String::new(),
            device: None,
            sessions: Vec::new(),
            conversation: Conversation::new(user.to_bytes()),
            outbox: BTreeMap::new(),
            next_resend_request: None,
            next_resend_answer: None,
            next_route_request: None,
            online: false,
            unanswered: 0,
            next_probe: None,
        })
    }

    /// Messages to `contact` waiting for their acknowledgement.
    pub fn outbox_len(&self, contact: &UserId) -> usize {
        self.contacts.get(contact).map_or(0, |c| c.outbox.len())
    }

    /// Whether a ratchet session with `contact` exists.
    pub fn has_session(&self, contact: &UserId) -> bool {
        self.contacts
            .get(contact)
            .is_some_and(|c| !c.sessions.is_empty())
    }

    /// The device of `contact`, once known.
    pub fn contact_device(&self, contact: &UserId) -> Option<PeerId> {
        self.contacts
            .get(contact)?
            .device
            .as_ref()
            .map(|d| d.device().peer_id())
    }

    /// Gives the engine `contact`'s prekey bundle (from the directory). If
    /// no session exists, or the bundle names another device than the one
    /// we know (the contact moved), a session is started from it and
    /// waiting messages go out on it once the device is online.
    pub fn set_bundle(
        &mut self,
        now: Instant,
        contact: UserId,
        bundle: &PrekeyBundle,
    ) -> Result<(), EngineError> {
        self.check()?;
        if bundle.certificate.user() != contact.public_key() {
            return Err(EngineError::Bundle(Error::WrongUser));
        }
        if !self.contacts.contains_key(&contact) {
            return Err(EngineError::UnknownContact(contact));
        }
        let moved = self.contacts.get(&contact).is_some_and(|c| {
            c.device
                .as_ref()
                .is_some_and(|d| d.device() != bundle.certificate.device())
        });
        if self.has_session(&contact) && !moved {
            return Ok(());
        }
        // No session yet, or the contact moved to another device (its
        // certificate is signed by the same user key): start a session
        // with the device the bundle names; it becomes the one we send on.
        let (header, session) =
            x3dh::initiate_with_rng(&mut self.rng, &self.device, &contact.public_key(), bundle)
                .map_err(EngineError::Bundle)?;
        let id = SessionId::of(&header);
        let max_sessions = self.config.max_sessions.max(1);
        let entry = self.contact_entry(contact);
        entry.device = Some(bundle.certificate.clone());
        if moved {
            // Online and the send budget were about the old device.
            entry.online = false;
            entry.unanswered = 0;
            entry.next_probe = None;
        }
        entry.sessions.insert(
            0,
            SessionEntry {
                id,
                session,
                initial: Some(header),
            },
        );
        for pending in entry.outbox.values_mut() {
            pending.next = now;
        }
        entry.next_route_request = None;
        let mut dropped = Vec::new();
        while entry.sessions.len() > max_sessions {
            if let Some(old) = entry.sessions.pop() {
                dropped.push(old.id);
            }
        }
        for old in dropped {
            self.sessions.remove(&old);
        }
        self.sessions.insert(id, contact);
        let mut batch = Batch::default();
        batch.dirty(contact);
        self.flush_outbox(now, contact, &mut batch);
        self.finish(batch)
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

    /// Tells the engine whether a session to `contact`'s device is open.
    /// Unacknowledged messages are retried only while it is (each retry
    /// uses a new message key, which an offline recipient would have to
    /// skip); going online sends them all at once.
    pub fn set_online(
        &mut self,
        now: Instant,
        contact: UserId,
        online: bool,
    ) -> Result<(), EngineError> {
        let Some(c) = self.contacts.get_mut(&contact) else {
            return Ok(());
        };
        let was = std::mem::replace(&mut c.online, online);
        if online && !was {
            self.retry_now(now, contact)?;
        }
        Ok(())
    }

    /// Sends every unacknowledged message to `contact` now instead of at
    /// its backoff time (if online).
    pub fn retry_now(&mut self, now: Instant, contact: UserId) -> Result<(), EngineError> {
        self.check()?;
        let Some(c) = self.contacts.get_mut(&contact) else {
            return Ok(());
        };
        for pending in c.outbox.values_mut() {
            pending.next = now;
        }
        c.next_route_request = None;
        let mut batch = Batch::default();
        self.flush_outbox(now, contact, &mut batch);
        self.finish(batch)
    }

    /// Sends a text message to `contact`; it is stored (in the history and
    /// the outbox) before this returns. `unix_ms` is the advisory timestamp.
    pub fn send(
        &mut self,
        now: Instant,
        unix_ms: u64,
        contact: UserId,
        text: &str,
    ) -> Result<MessageId, EngineError> {
        self.check()?;
        if text.len() > MAX_BODY_LEN {
            return Err(EngineError::TooLarge(text.len()));
        }
        let sender = self.user_id();
        let Some(c) = self.contacts.get_mut(&contact) else {
            return Err(EngineError::UnknownContact(contact));
        };
        let (message, meta) =
            c.conversation
                .compose(sender, contact, text.as_bytes().to_vec(), unix_ms);
        let encoded = message.encode();
        let id = meta.id;
        c.outbox.insert(
            meta.counter,
            Pending {
                encoded: encoded.clone(),
                attempts: 0,
                next: now,
            },
        );
        let mut batch = Batch::default();
        batch.changes.messages.push(StoredMessage { meta, encoded });
        batch.dirty(contact);
        self.flush_outbox(now, contact, &mut batch);
        self.finish(batch)?;
        Ok(id)
    }

    /// Marks received messages as read and tells their sender.
    pub fn mark_read(&mut self, contact: UserId, ids: &[MessageId]) -> Result<(), EngineError> {
        self.check()?;
        let Some(c) = self.contacts.get_mut(&contact) else {
            return Err(EngineError::UnknownContact(contact));
        };
        let mut batch = Batch::default();
        let mut newly = Vec::new();
        for id in ids {
            if let Some(meta) = c.conversation.get_mut(id)
                && !meta.outgoing
                && !meta.flags.read
            {
                meta.flags.read = true;
                batch.changes.updates.push((*id, meta.height, meta.flags));
                newly.push(*id);
            }
        }
        for chunk in newly.chunks(MAX_IDS_PER_RECEIPT) {
            self.seal(contact, &Payload::Read(chunk.to_vec()), &mut batch);
        }
        self.finish(batch)
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
        let stored = self.store.history(&contact.to_bytes(), before, limit)?;
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

    /// Takes one envelope from the network. `from` is the device the
    /// envelope arrived from, when the transport knows it (informational:
    /// sessions are found by id, so relayed envelopes work too). Refusals
    /// become [`Event::Rejected`]; only store failures are errors.
    pub fn handle_envelope(&mut self, now: Instant, bytes: &[u8]) -> Result<(), EngineError> {
        self.check()?;
        let mut batch = Batch::default();
        if let Err((contact, reason)) = self.receive(now, bytes, &mut batch) {
            tracing::debug!(?contact, %reason, "envelope refused");
            batch.events.push(Event::Rejected { contact, reason });
        }
        self.finish(batch)
    }

    fn receive(
        &mut self,
        now: Instant,
        bytes: &[u8],
        batch: &mut Batch,
    ) -> Result<(), (Option<UserId>, RejectReason)> {
        let envelope = Envelope::decode(bytes).map_err(|e| (None, e.into()))?;
        if envelope.recipient != self.device.certificate().device().peer_id() {
            return Err((None, RejectReason::WrongRecipient));
        }
        let session_id = envelope.session.id();
        let (contact, new_session) = match self.sessions.get(&session_id) {
            Some(user) => (*user, None),
            None => match &envelope.session {
                SessionRef::Known(_) => return Err((None, RejectReason::UnknownSession)),
                SessionRef::Initial(header) => {
                    let user = UserId::new(header.sender.user());
                    if user == self.user_id() {
                        return Err((Some(user), RejectReason::FromSelf));
                    }
                    // Anyone can mint user keys: bound the conversations
                    // strangers can open (contacts never named by the user).
                    if !self.contacts.contains_key(&user)
                        && self.contacts.values().filter(|c| c.name.is_empty()).count()
                            >= MAX_UNNAMED_CONTACTS
                    {
                        return Err((Some(user), RejectReason::TooManyStrangers));
                    }
                    let secret = self
                        .prekeys
                        .iter()
                        .find(|p| p.signed.id() == header.prekey_id)
                        .map(|p| &p.secret)
                        .ok_or((
                            Some(user),
                            RejectReason::Crypto(Error::PrekeyMismatch {
                                found: header.prekey_id,
                                expected: self.prekeys[self.prekeys.len() - 1].signed.id(),
                            }),
                        ))?;
                    let session = x3dh::respond(&self.device, secret, header)
                        .map_err(|e| (Some(user), e.into()))?;
                    (user, Some((session, (**header).clone())))
                }
            },
        };
        // Decrypt on a copy: nothing changes unless the whole envelope is good.
        let mut session = match &new_session {
            Some((session, _)) => session.clone(),
            None => self
                .contacts
                .get(&contact)
                .and_then(|c| c.sessions.iter().find(|s| s.id == session_id))
                .map(|s| s.session.clone())
                .ok_or((Some(contact), RejectReason::UnknownSession))?,
        };
        let padded = match session.decrypt(&envelope.ratchet) {
            Ok(padded) => padded,
            Err(Error::AlreadyUsedOrEvicted { .. }) if new_session.is_none() => {
                // A replay or duplicate of a message already taken: drop.
                return Ok(());
            }
            Err(e @ Error::OutsideWindow { .. }) => {
                self.request_missing(now, contact, true, batch);
                return Err((Some(contact), e.into()));
            }
            Err(e) => return Err((Some(contact), e.into())),
        };
        let payload = unpad(&padded)
            .and_then(Payload::decode)
            .map_err(|e| (Some(contact), RejectReason::from(e)))?;
        let chat = match &payload {
            Payload::Chat(encoded) => {
                let message = Message::decode(encoded).map_err(|e| (Some(contact), e.into()))?;
                if message.sender != contact || message.recipient != self.user_id() {
                    return Err((Some(contact), RejectReason::WrongSender));
                }
                Some(message)
            }
            _ => None,
        };

        // Accepted: install the session state.
        if !self.contacts.contains_key(&contact) {
            batch.events.push(Event::ContactAdded { contact });
        }
        let max_sessions = self.config.max_sessions.max(1);
        let c = self.contact_entry(contact);
        // They are reading: the send budget is theirs again.
        c.unanswered = 0;
        c.next_probe = None;
        match new_session {
            Some((_, header)) => {
                let entry = SessionEntry {
                    id: session_id,
                    session,
                    initial: None,
                };
                // Both sides started a session at once: both keep the one
                // with the smaller id. Otherwise the peer's new session wins
                // (they lost ours).
                let ours_pending = c.sessions.first().is_some_and(|s| s.initial.is_some());
                if ours_pending && c.sessions[0].id < session_id {
                    c.sessions.insert(1, entry);
                } else {
                    c.sessions.insert(0, entry);
                }
                c.device = Some(header.sender.clone());
                let mut dropped = Vec::new();
                while c.sessions.len() > max_sessions {
                    if let Some(old) = c.sessions.pop() {
                        dropped.push(old.id);
                    }
                }
                for old in dropped {
                    self.sessions.remove(&old);
                }
                self.sessions.insert(session_id, contact);
            }
            None => {
                if let Some(entry) = c.sessions.iter_mut().find(|s| s.id == session_id) {
                    entry.session = session;
                    entry.initial = None;
                }
            }
        }
        batch.dirty(contact);

        match payload {
            Payload::Chat(encoded) => {
                if let Some(message) = chat {
                    self.take_chat(now, contact, message, encoded, batch)?;
                }
            }
            Payload::Ack(ids) => self.take_receipt(contact, &ids, false, batch),
            Payload::Read(ids) => self.take_receipt(contact, &ids, true, batch),
            Payload::Resend { from, to } => {
                let interval = self.config.resend_interval;
                let c = self.contact_entry(contact);
                // One answer per interval, and only what was never
                // acknowledged: each resent message costs a message key
                // and up to a bucket of bandwidth.
                if c.next_resend_answer.is_some_and(|t| t > now) {
                    return Ok(());
                }
                c.next_resend_answer = Some(now + interval);
                let ids: Vec<MessageId> = (from..=to)
                    .filter_map(|n| c.conversation.own_at(n))
                    .filter(|id| c.conversation.get(id).is_some_and(|m| !m.flags.delivered))
                    .collect();
                for id in ids {
                    match self.store.message(&id) {
                        Ok(Some(stored)) => {
                            self.seal(contact, &Payload::Chat(stored.encoded), batch);
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(%e, "resend: store read failed");
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn take_chat(
        &mut self,
        now: Instant,
        contact: UserId,
        message: Message,
        encoded: Vec<u8>,
        batch: &mut Batch,
    ) -> Result<(), (Option<UserId>, RejectReason)> {
        let c = self.contact_entry(contact);
        let id = message.id();
        let shown_message = message.clone();
        match c.conversation.receive(message) {
            Err(e) => return Err((Some(contact), e.into())),
            Ok(Received::Duplicate) => {}
            Ok(Received::Held { meta, missing }) => {
                batch.changes.messages.push(StoredMessage { meta, encoded });
                if missing.is_some() {
                    self.request_missing(now, contact, false, batch);
                }
            }
            Ok(Received::Shown { meta, released }) => {
                batch.events.push(Event::Received {
                    contact,
                    id,
                    message: shown_message,
                    height: meta.height,
                });
                batch.changes.messages.push(StoredMessage { meta, encoded });
                for (meta, message) in released {
                    batch
                        .changes
                        .updates
                        .push((meta.id, meta.height, meta.flags));
                    batch.events.push(Event::Received {
                        contact,
                        id: meta.id,
                        message,
                        height: meta.height,
                    });
                }
            }
        }
        // Acknowledged once committed (finish commits before sending).
        self.seal(contact, &Payload::Ack(vec![id]), batch);
        Ok(())
    }

    fn take_receipt(&mut self, contact: UserId, ids: &[MessageId], read: bool, batch: &mut Batch) {
        let c = self.contact_entry(contact);
        for id in ids {
            let Some(meta) = c.conversation.get_mut(id) else {
                continue;
            };
            if !meta.outgoing {
                continue;
            }
            let was = meta.flags;
            meta.flags.delivered = true;
            if read {
                meta.flags.read = true;
            }
            if meta.flags == was {
                continue;
            }
            batch.changes.updates.push((*id, meta.height, meta.flags));
            let counter = meta.counter;
            if !was.delivered {
                c.outbox.remove(&counter);
                batch.events.push(Event::Delivered { contact, id: *id });
            }
            if read && !was.read {
                batch.events.push(Event::Read { contact, id: *id });
            }
        }
    }

    /// Asks `contact` for the missing counters (rate limited unless `force`).
    fn request_missing(&mut self, now: Instant, contact: UserId, force: bool, batch: &mut Batch) {
        let interval = self.config.resend_interval;
        // Never create a contact here: an envelope refused before it
        // authenticated (a forged initial header) may name anyone.
        let Some(c) = self.contacts.get_mut(&contact) else {
            return;
        };
        // Rate limited even when forced: a forged envelope (its header is
        // not authenticated before decryption fails) must not make us send.
        if c.next_resend_request.is_some_and(|t| t > now) {
            return;
        }
        // Forced (a message beyond the ratchet window): whatever follows
        // what we have.
        let floor = c.conversation.floor();
        let range = c
            .conversation
            .missing()
            .or(force.then(|| (floor, floor + crate::message::MAX_RESEND_RANGE - 1)));
        // Due either way: with nothing to ask for (a held message waits
        // for a dependency, not a counter) the timer must still move on.
        c.next_resend_request = Some(now + interval);
        if let Some((from, to)) = range {
            self.seal(contact, &Payload::Resend { from, to }, batch);
        }
    }

    /// Encrypts `payload` on the active session to `contact` into the
    /// batch. Returns false when there is no session.
    fn seal(&mut self, contact: UserId, payload: &Payload, batch: &mut Batch) -> bool {
        let leak = self.config.leak_plaintext_for_tests;
        let Some(c) = self.contacts.get_mut(&contact) else {
            return false;
        };
        let Some(device) = c.device.as_ref().map(|d| d.device().peer_id()) else {
            return false;
        };
        let Some(entry) = c.sessions.first_mut() else {
            return false;
        };
        let plain = payload.encode();
        let Ok(padded) = pad(&plain) else {
            return false;
        };
        let ratchet = match entry.session.encrypt(&mut self.rng, &padded) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(%e, "encrypt failed");
                return false;
            }
        };
        let session = match &entry.initial {
            Some(header) => SessionRef::Initial(Box::new(header.clone())),
            None => SessionRef::Known(entry.id),
        };
        let mut envelope = Envelope {
            recipient: device,
            session,
            ratchet,
        }
        .encode();
        if leak {
            envelope.extend_from_slice(&plain);
        }
        c.unanswered = c.unanswered.saturating_add(1);
        batch.dirty(contact);
        batch.transmits.push(Transmit {
            contact,
            device,
            envelope,
        });
        true
    }

    /// Sends every outbox entry of `contact` that is due.
    fn flush_outbox(&mut self, now: Instant, contact: UserId, batch: &mut Batch) {
        let (initial, max) = (self.config.retry_initial, self.config.retry_max);
        let Some(c) = self.contacts.get_mut(&contact) else {
            return;
        };
        let ready = !c.sessions.is_empty() && c.online;
        if !ready {
            // Encrypting now would only use up chain keys the recipient
            // may have to skip: ask for a route instead.
            if !c.outbox.is_empty() && c.next_route_request.is_none_or(|t| t <= now) {
                c.next_route_request = Some(now + initial);
                match (&c.device, c.sessions.is_empty()) {
                    (Some(device), false) => batch.events.push(Event::NeedRoute {
                        contact,
                        device: device.device().peer_id(),
                    }),
                    _ => batch.events.push(Event::NeedBundle { contact }),
                }
            }
            return;
        }
        let mut due: Vec<(u64, Vec<u8>)> = c
            .outbox
            .iter()
            .filter(|(_, p)| p.next <= now)
            .map(|(n, p)| (*n, p.encoded.clone()))
            .collect();
        if c.unanswered >= SEND_BUDGET {
            // Over budget: one probe (the oldest message) per retry_max,
            // and never so many that the recipient could not skip them.
            let probe_due = c.next_probe.is_none_or(|t| t <= now);
            if !probe_due || c.unanswered >= crate::ratchet::MAX_SKIP - 10 {
                return;
            }
            c.next_probe = Some(now + max);
            due.truncate(1);
        } else {
            due.truncate((SEND_BUDGET - c.unanswered) as usize);
        }
        for (counter, encoded) in due {
            if !self.seal(contact, &Payload::Chat(encoded), batch) {
                return;
            }
            if let Some(p) = self
                .contacts
                .get_mut(&contact)
                .and_then(|c| c.outbox.get_mut(&counter))
            {
                let backoff = initial.saturating_mul(1u32 << p.attempts.min(16)).min(max);
                p.attempts = p.attempts.saturating_add(1);
                p.next = now + backoff;
            }
        }
    }

    /// When [`Engine::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.poisoned {
            return None;
        }
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        for c in self.contacts.values() {
            if let Some(p) = c.outbox.values().map(|p| p.next).min() {
                match c.next_route_request {
                    Some(t) if c.sessions.is_empty() || !c.online => consider(t),
                    _ if c.unanswered >= crate::ratchet::MAX_SKIP - 10 => {}
                    _ if c.unanswered >= SEND_BUDGET => consider(c.next_probe.unwrap_or(p).max(p)),
                    _ => consider(p),
                }
            }
            if c.conversation.held_len() > 0
                && let Some(t) = c.next_resend_request
            {
                consider(t);
            }
        }
        next
    }

    /// Retries due messages, repeats resend requests for held messages and
    /// bundle requests for contacts without a session.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), EngineError> {
        self.check()?;
        let mut batch = Batch::default();
        let users: Vec<UserId> = self.contacts.keys().copied().collect();
        for user in users {
            self.flush_outbox(now, user, &mut batch);
            if self
                .contacts
                .get(&user)
                .is_some_and(|c| c.conversation.held_len() > 0)
            {
                self.request_missing(now, user, false, &mut batch);
            }
        }
        self.finish(batch)
    }

    /// The next envelope to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn check(&self) -> Result<(), EngineError> {
        if self.poisoned {
            Err(EngineError::Poisoned)
        } else {
            Ok(())
        }
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
            // Memory and disk disagree now: refuse further work.
            self.poisoned = true;
            return Err(e.into());
        }
        if !batch.transmits.is_empty()
            && let Some(n) = self.config.abort_after_commits_for_tests
        {
            self.commits += 1;
            if self.commits >= n {
                tracing::error!("test hook: aborting between commit and send");
                std::process::abort();
            }
        }
        self.transmits.extend(batch.transmits);
        self.events.extend(batch.events);
        Ok(())
    }
}

fn identity_blob(user: &Keypair, device: &Device, prekeys: &[Prekey]) -> Vec<u8> {
    persist::encode(&IdentityBlob {
        user_secret: user.secret_bytes().to_vec(),
        device_secret: device.signing_key().secret_bytes().to_vec(),
        identity_secret: device.identity_secret().to_vec(),
        certificate: device.certificate().encode().to_vec(),
        prekeys: prekeys
            .iter()
            .map(|p| PrekeyBlob {
                id: p.signed.id(),
                secret: p.secret.secret_bytes().to_vec(),
                signed: p.signed.encode().to_vec(),
                created: p.created,
            })
            .collect(),
    })
}

fn contact_blob(c: &Contact) -> Vec<u8> {
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
            })
            .collect(),
        heads: c.conversation.heads().map(|id| id.0.to_vec()).collect(),
    })
}
