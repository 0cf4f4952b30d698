//! Seal audit (feature `seal-audit`, for tests only): a record of every
//! (message key, nonce, plaintext) a ratchet sealed on this thread, and a
//! checker that fails when one (key, nonce) pair sealed two different
//! plaintexts, the one thing a stream cipher must never do. And
//! [`leak_plaintext_of`], which makes one user's engine append each
//! plaintext payload to its envelope in the clear, so a test can show that
//! its "no plaintext on the wire" check is able to fail.
//!
//! Only hashes are kept: BLAKE2b-256 of the key and of the plaintext.
//! Recording is per thread and off until [`start`] is called on it, so
//! tests running in parallel do not see each other's seals, and a binary
//! built with the feature (cargo unifies features across a workspace test
//! run) records nothing.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};

use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};

use crate::UserId;
use crate::ratchet::NONCE_LEN;

/// Users whose engines leak their plaintext (keyed by user, so tests
/// running in parallel in one process do not affect each other).
static LEAKING: Mutex<Option<HashSet<UserId>>> = Mutex::new(None);

/// From now on, every engine of `user` appends the plaintext payload to
/// each envelope it seals (test only: proves a plaintext check can fail).
pub fn leak_plaintext_of(user: UserId) {
    LEAKING
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get_or_insert_with(HashSet::new)
        .insert(user);
}

/// Whether `user`'s engines leak (see [`leak_plaintext_of`]).
pub(crate) fn leaks(user: &UserId) -> bool {
    LEAKING
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
        .is_some_and(|l| l.contains(user))
}

/// One seal: hashes of the key and plaintext, and the nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seal {
    /// BLAKE2b-256 of the message key.
    pub key_hash: [u8; 32],
    /// The AEAD nonce.
    pub nonce: [u8; NONCE_LEN],
    /// BLAKE2b-256 of the plaintext.
    pub plaintext_hash: [u8; 32],
}

thread_local! {
    static SEALS: RefCell<Option<Vec<Seal>>> = const { RefCell::new(None) };
}

/// Starts recording the seals made on this thread (clearing any record).
pub fn start() {
    SEALS.with(|s| *s.borrow_mut() = Some(Vec::new()));
}

fn hash(bytes: &[u8]) -> [u8; 32] {
    Blake2b::<U32>::digest(bytes).into()
}

/// Called by the ratchet for every seal.
pub(crate) fn record(key: &[u8; 32], nonce: &[u8; NONCE_LEN], plaintext: &[u8]) {
    let seal = Seal {
        key_hash: hash(key),
        nonce: *nonce,
        plaintext_hash: hash(plaintext),
    };
    SEALS.with(|s| {
        if let Some(seals) = s.borrow_mut().as_mut() {
            seals.push(seal);
        }
    });
}

/// Takes the seals recorded on this thread since the last call.
pub fn take() -> Vec<Seal> {
    SEALS.with(|s| {
        s.borrow_mut()
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    })
}

/// Remembers every (key, nonce) pair seen and the plaintext it sealed.
/// Call [`start`] first.
#[derive(Debug, Default)]
pub struct ReuseChecker {
    seen: HashMap<([u8; 32], [u8; NONCE_LEN]), [u8; 32]>,
    seals: u64,
}

/// A (key, nonce) pair that sealed two different plaintexts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("key {key:02x?}… sealed two plaintexts under one nonce")]
pub struct Reuse {
    /// The first bytes of the key's hash.
    pub key: [u8; 4],
}

impl ReuseChecker {
    /// Checks the seals recorded on this thread since the last call.
    pub fn check(&mut self) -> Result<(), Reuse> {
        for seal in take() {
            self.seals += 1;
            match self
                .seen
                .insert((seal.key_hash, seal.nonce), seal.plaintext_hash)
            {
                Some(old) if old != seal.plaintext_hash => {
                    let mut key = [0u8; 4];
                    key.copy_from_slice(&seal.key_hash[..4]);
                    return Err(Reuse { key });
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Seals checked so far.
    pub fn seals(&self) -> u64 {
        self.seals
    }

    /// Distinct message keys seen so far (a key sealing again under a new
    /// nonce, as after a rollback, counts once).
    pub fn keys(&self) -> usize {
        let keys: std::collections::HashSet<&[u8; 32]> = self.seen.keys().map(|(k, _)| k).collect();
        keys.len()
    }
}
