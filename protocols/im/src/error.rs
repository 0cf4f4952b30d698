//! The one error type of the messaging core.

use shoal_identity::IdentityError;

/// Why an operation of the messaging core failed.
///
/// Malformed bytes, bad signatures, unusable keys, window violations and
/// API misuse are separate variants so the caller can tell "ask for a
/// resend" ([`Error::OutsideWindow`], [`Error::AlreadyUsedOrEvicted`]) from
/// "drop and report" (everything else).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The bytes do not have the documented layout (remote fault).
    #[error("malformed {what}")]
    Malformed {
        /// Which structure failed to parse.
        what: &'static str,
    },
    /// A structure carries a version this implementation does not know.
    #[error("unsupported {what} version {found}")]
    UnsupportedVersion {
        /// Which structure.
        what: &'static str,
        /// The version byte found.
        found: u8,
    },
    /// A signature or public key was rejected.
    #[error("identity check failed: {0}")]
    Identity(#[from] IdentityError),
    /// A prekey bundle or certificate belongs to another user than expected.
    #[error("certificate is for another user")]
    WrongUser,
    /// A signed statement (a presence record) is past its expiry, even
    /// allowing for the documented clock skew
    /// ([`crate::presence::PRESENCE_CLOCK_SKEW`]).
    #[error("expired at {expires} (now {now})")]
    Expired {
        /// The statement's expiry, Unix seconds.
        expires: u64,
        /// The wall clock when checked, Unix seconds.
        now: u64,
    },
    /// An initial message names a prekey id the caller's prekey does not have.
    #[error("initial message uses prekey {found}, expected {expected}")]
    PrekeyMismatch {
        /// The prekey id in the message.
        found: u32,
        /// The id of the prekey secret supplied.
        expected: u32,
    },
    /// A Diffie-Hellman output was all zeros (a low-order public key).
    #[error("non-contributory X25519 public key")]
    WeakKey,
    /// A message jumps further ahead in its chain than the skipped-key window
    /// allows ([`crate::ratchet::MAX_SKIP`]); the caller should ask for a resend.
    #[error("message {counter} is outside the window (next expected {next}, max skip {max_skip})")]
    OutsideWindow {
        /// The message number (or previous-chain length) that was too far ahead.
        counter: u32,
        /// The next message number the receiving chain expected.
        next: u32,
        /// The window, [`crate::ratchet::MAX_SKIP`].
        max_skip: u32,
    },
    /// No key exists for this message: it was already decrypted (a replay or
    /// duplicate), or its skipped key was evicted from the bounded store
    /// ([`crate::ratchet::MAX_SKIPPED_KEYS`]). The two cannot be told apart
    /// here; a resend request is safe because duplicates are dropped by message id
    /// one layer up.
    #[error("no key for message {counter}: already used or evicted")]
    AlreadyUsedOrEvicted {
        /// The message number.
        counter: u32,
    },
    /// A message on one of the peer's past ratchet keys, numbered at or
    /// beyond the length the peer announced for that chain when it moved
    /// on: the peer's state went back in time (a restored copy), or the
    /// header was forged (headers are not authenticated before decryption).
    #[error("message {counter} is beyond the end ({end}) of the peer's past chain")]
    BeyondChainEnd {
        /// The message number.
        counter: u32,
        /// The chain's announced length.
        end: u32,
    },
    /// Authentication of a message failed (tampered header or ciphertext,
    /// or a message for another session). The session state is unchanged.
    #[error("message authentication failed")]
    Decrypt,
    /// The session cannot send yet: a responder must receive a message first.
    #[error("session cannot send before it has received")]
    NotReady,
    /// A chain reached the largest message number (2^32 - 1).
    #[error("message counter exhausted")]
    CounterExhausted,
}
