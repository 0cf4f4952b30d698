//! Shoal messaging core: user identities, X3DH first contact, the Double
//! Ratchet, messages with causal order, and the engine that runs every
//! conversation of one device. No sockets, no clocks, no global RNG: time
//! and randomness come from the caller; the engine's only I/O is its
//! [`Store`].
//!
//! # Tour
//! - [`account`]: a user's root key certifies each device's ed25519 and
//!   X25519 identity keys in a [`DeviceCertificate`]; a [`Device`] holds the
//!   device's secrets. [`contact`]: a [`UserId`] and its `SHOAL-…` text form.
//! - [`presence`]: the signed record saying where a user's device listens.
//! - [`safety`]: the [`SafetyNumber`] two users compare to check each
//!   other's keys.
//! - [`x3dh`]: a [`PrekeyBundle`] (certificate + signed prekey) and the
//!   first contact: [`x3dh::initiate`] on the sender, [`x3dh::respond`] on
//!   the recipient, both yielding a [`Session`].
//! - [`ratchet`]: the Double Ratchet [`Session`]: `encrypt`, `decrypt`
//!   (state changes only on success), `to_bytes` / `from_bytes`, and the
//!   skipped-key window [`ratchet::MAX_SKIP`], [`ratchet::MAX_SKIPPED_KEYS`].
//! - [`message`]: a [`Message`] (sender, counter, previous id, causal
//!   dependencies, body), its [`MessageId`], and the [`Payload`]s a ratchet
//!   message carries (message, ack, read receipt, resend request).
//! - [`envelope`]: what travels: recipient, session, ratchet message around
//!   a payload padded to a size bucket.
//! - [`reset`]: the signed request that makes a peer replace a session
//!   the requester can no longer decrypt.
//! - [`conversation`]: causal order, held messages and gaps.
//! - [`engine`]: the [`engine::Engine`]: send, receive, acknowledge, retry;
//!   commits every step to its [`Store`] before anything leaves.
//! - [`store`]: the [`Store`] trait and [`MemoryStore`].
//! - [`kdf`]: the keyed-BLAKE2b KDF and its domain constants.
//! - [`mailbox_keys`]: the [`mailbox_keys::PairSecret`] two devices share,
//!   and the per-day key pairs of the 1:1 mailboxes derived from it.
//! - [`Error`]: one error type; `OutsideWindow` and `AlreadyUsedOrEvicted`
//!   mean "ask for a resend".
//!
//! Formats and test vectors: docs/PROTOCOL.md, sections 10 and 11. The
//! engine on a live node is `shoal-messenger`.
//!
//! # Data flow
//! ```text
//!  Bob:   Device ──signed_prekey──▶ PrekeyBundle ──(published)──▶ Alice
//!  Alice: initiate(bundle) ──▶ InitialHeader + Session ──encrypt──▶ message
//!  Bob:   respond(header, prekey secret) ──▶ Session ──decrypt──▶ plaintext
//!
//!  Engine::send ─▶ compose + commit ─▶ encrypt ─▶ Transmit (envelope)
//!  Engine::handle_envelope ─▶ decrypt ─▶ order ─▶ commit ─▶ Event + ack
//! ```
//!
//! # Example
//! ```
//! use rand_chacha::ChaCha20Rng;
//! use rand::SeedableRng;
//! use shoal_identity::Keypair;
//! use shoal_im::{Device, PrekeyBundle, x3dh};
//!
//! let mut rng = ChaCha20Rng::seed_from_u64(7);
//! let (alice_user, bob_user) = (Keypair::from_secret_bytes(&[1; 32]), Keypair::from_secret_bytes(&[2; 32]));
//! let alice = Device::new(&alice_user, Keypair::from_secret_bytes(&[3; 32]), [4; 32], 1_700_000_000);
//! let bob = Device::new(&bob_user, Keypair::from_secret_bytes(&[5; 32]), [6; 32], 1_700_000_000);
//!
//! // Bob publishes a bundle; Alice fetches and verifies it.
//! let (prekey, prekey_secret) = x3dh::signed_prekey(&bob, 1, [7; 32]);
//! let published = PrekeyBundle { certificate: bob.certificate().clone(), prekey }.encode();
//! let bundle = PrekeyBundle::decode(&published)?;
//!
//! let (header, mut a) = x3dh::initiate_with_rng(&mut rng, &alice, &bob_user.public(), &bundle)?;
//! let message = a.encrypt(&mut rng, b"hello bob")?;
//!
//! let header = x3dh::InitialHeader::decode(&header.encode())?;
//! assert_eq!(header.sender.user(), alice_user.public());
//! let mut b = x3dh::respond(&bob, &prekey_secret, &header)?;
//! assert_eq!(b.decrypt(&message)?, b"hello bob");
//! let reply = b.encrypt(&mut rng, b"hi alice")?;
//! assert_eq!(a.decrypt(&reply)?, b"hi alice");
//! # Ok::<(), shoal_im::Error>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod account;
#[cfg(feature = "seal-audit")]
pub mod audit;
pub mod contact;
pub mod conversation;
pub mod engine;
pub mod envelope;
mod error;
pub mod kdf;
pub mod mailbox_keys;
pub mod message;
mod persist;
pub mod presence;
pub mod ratchet;
pub mod reset;
pub mod safety;
pub mod store;
pub mod x3dh;

pub use account::{Device, DeviceCertificate};
pub use contact::{UserId, UserIdError};
pub use error::Error;
pub use message::{Message, MessageId, Payload};
pub use ratchet::{Header, Session};
pub use reset::ResetRequest;
pub use safety::SafetyNumber;
pub use store::{
    Changes, MemoryStore, MessageFlags, MessageMeta, ReceivedEnvelope, SealedRecord, Store,
    StoreError, StoredMessage,
};
pub use x3dh::{InitialHeader, PrekeyBundle, PrekeySecret, SignedPrekey};
