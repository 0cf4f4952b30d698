//! A user's id and its text form.
//!
//! A [`UserId`] is a user's root public key. Its text form is short enough to
//! paste and uses only characters of a QR code's alphanumeric mode:
//! `SHOAL-` followed by 56 base32 characters (RFC 4648 alphabet, no padding)
//! encoding the 32-byte key and a 3-byte checksum, the first bytes of
//! BLAKE2b-256 over `len(domain) | domain | key` with domain
//! [`USER_ID_DOMAIN`]. Parsing ignores case and surrounding whitespace.

use std::{fmt, str::FromStr};

use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};
use shoal_identity::PublicKey;

/// Prefix of the text form.
pub const USER_ID_PREFIX: &str = "SHOAL-";
/// Checksum domain of the text form.
pub const USER_ID_DOMAIN: &[u8] = b"shoal/im/user-id/1";
/// Length of the text form.
pub const USER_ID_TEXT_LEN: usize = USER_ID_PREFIX.len() + 56;
const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// A user, named by its root public key (32 bytes, checked to be a valid
/// ed25519 key when the id is made).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId([u8; 32]);

/// Why a user id text did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserIdError {
    /// Not `SHOAL-` followed by 56 base32 characters.
    #[error("a user id is SHOAL- followed by 56 letters and digits 2-7")]
    Format,
    /// The checksum does not match: a typo.
    #[error("user id checksum mismatch (typo?)")]
    Checksum,
    /// The key is not a valid ed25519 public key.
    #[error("user id is not a valid public key")]
    Key,
}

impl UserId {
    /// The user whose root key is `key`.
    pub fn new(key: PublicKey) -> UserId {
        UserId(key.to_bytes())
    }

    /// The root public key.
    pub fn public_key(&self) -> PublicKey {
        // The bytes were checked to be a valid key when the id was made.
        #[allow(clippy::expect_used)]
        PublicKey::from_bytes(&self.0).expect("a UserId holds a valid key")
    }

    /// The 32 key bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }

    /// The user with root key bytes `bytes`.
    pub fn from_bytes(bytes: &[u8]) -> Result<UserId, UserIdError> {
        let key = PublicKey::from_bytes(bytes).map_err(|_| UserIdError::Key)?;
        Ok(UserId(key.to_bytes()))
    }
}

fn checksum(key: &[u8; 32]) -> [u8; 3] {
    let mut hash = Blake2b::<U32>::new();
    hash.update([USER_ID_DOMAIN.len() as u8]);
    hash.update(USER_ID_DOMAIN);
    hash.update(key);
    let out = hash.finalize();
    [out[0], out[1], out[2]]
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = self.to_bytes();
        let mut bytes = [0u8; 35];
        bytes[..32].copy_from_slice(&key);
        bytes[32..].copy_from_slice(&checksum(&key));
        let mut text = String::with_capacity(USER_ID_TEXT_LEN);
        text.push_str(USER_ID_PREFIX);
        // 35 bytes = 280 bits = 56 groups of 5 bits, no padding.
        let (mut acc, mut bits) = (0u32, 0u32);
        for byte in bytes {
            acc = (acc << 8) | u32::from(byte);
            bits += 8;
            while bits >= 5 {
                bits -= 5;
                text.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
            }
        }
        f.write_str(&text)
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserId({self})")
    }
}

impl FromStr for UserId {
    type Err = UserIdError;

    fn from_str(text: &str) -> Result<UserId, UserIdError> {
        let text = text.trim().to_ascii_uppercase();
        let body = text
            .strip_prefix(USER_ID_PREFIX)
            .ok_or(UserIdError::Format)?;
        if body.len() != 56 {
            return Err(UserIdError::Format);
        }
        let mut bytes = Vec::with_capacity(35);
        let (mut acc, mut bits) = (0u32, 0u32);
        for c in body.bytes() {
            let value = ALPHABET
                .iter()
                .position(|&a| a == c)
                .ok_or(UserIdError::Format)?;
            acc = (acc << 5) | value as u32;
            bits += 5;
            if bits >= 8 {
                bits -= 8;
                bytes.push((acc >> bits) as u8);
                acc &= (1 << bits) - 1;
            }
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(&bytes[..32]);
        if bytes[32..] != checksum(&key) {
            return Err(UserIdError::Checksum);
        }
        UserId::from_bytes(&key)
    }
}
