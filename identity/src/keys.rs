//! Ed25519 key pairs, public keys and signatures.

use std::fmt;

use ed25519_dalek::Signer;
use zeroize::Zeroizing;

use crate::{IdentityError, PeerId, Purpose, signed_input};

/// Length of an ed25519 signature in bytes.
pub const SIGNATURE_LEN: usize = 64;

/// An ed25519 signature.
pub type Signature = [u8; SIGNATURE_LEN];

/// An ed25519 key pair: a node's (or a user's) identity.
///
/// The secret half is zeroized when the key pair is dropped and is never
/// printed by `Debug`.
#[derive(Clone)]
pub struct Keypair {
    secret: ed25519_dalek::SigningKey,
}

impl Keypair {
    /// Generates a fresh key pair from the operating system's random source.
    ///
    /// # Panics
    /// If the operating system cannot provide randomness; see
    /// [`Keypair::try_generate`] for the fallible form.
    pub fn generate() -> Keypair {
        match Keypair::try_generate() {
            Ok(key) => key,
            Err(e) => panic!("cannot generate a key pair: {e}"),
        }
    }

    /// Generates a fresh key pair, reporting a failing random source as an error.
    pub fn try_generate() -> Result<Keypair, IdentityError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut()).map_err(|_| IdentityError::Randomness)?;
        Ok(Keypair::from_secret_bytes(&seed))
    }

    /// Rebuilds a key pair from its 32-byte secret seed.
    pub fn from_secret_bytes(seed: &[u8; 32]) -> Keypair {
        Keypair {
            secret: ed25519_dalek::SigningKey::from_bytes(seed),
        }
    }

    /// The 32-byte secret seed, for storing the key. Handle with care.
    pub fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.secret.to_bytes())
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey {
            key: self.secret.verifying_key(),
        }
    }

    /// The peer id of this key pair.
    pub fn peer_id(&self) -> PeerId {
        self.public().peer_id()
    }

    /// Signs `message` for `purpose` (see [`signed_input`]).
    pub fn sign(&self, purpose: Purpose, message: &[u8]) -> Signature {
        self.secret.sign(&signed_input(purpose, message)).to_bytes()
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keypair")
            .field("peer_id", &self.peer_id())
            .finish_non_exhaustive()
    }
}

/// An ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey {
    key: ed25519_dalek::VerifyingKey,
}

impl PublicKey {
    /// Parses a 32-byte compressed ed25519 point, rejecting invalid encodings.
    pub fn from_bytes(bytes: &[u8]) -> Result<PublicKey, IdentityError> {
        let bytes: &[u8; 32] = bytes
            .try_into()
            .map_err(|_| IdentityError::InvalidPublicKey)?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(bytes)
            .map_err(|_| IdentityError::InvalidPublicKey)?;
        Ok(PublicKey { key })
    }

    /// The 32-byte encoding.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The peer id naming this key.
    pub fn peer_id(&self) -> PeerId {
        PeerId::from_bytes(self.key.to_bytes())
    }

    /// Verifies `signature` over `message` for `purpose`.
    ///
    /// Uses strict verification (rejects small-order keys and non-canonical
    /// signatures), so a signature cannot be malleated into a second valid one.
    pub fn verify(
        &self,
        purpose: Purpose,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), IdentityError> {
        let signature: &[u8; SIGNATURE_LEN] = signature
            .try_into()
            .map_err(|_| IdentityError::SignatureLength(signature.len()))?;
        let signature = ed25519_dalek::Signature::from_bytes(signature);
        self.key
            .verify_strict(&signed_input(purpose, message), &signature)
            .map_err(|_| IdentityError::BadSignature)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.peer_id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify_round_trip() {
        let key = Keypair::generate();
        let sig = key.sign(Purpose::PEER_RECORD, b"hello");
        key.public()
            .verify(Purpose::PEER_RECORD, b"hello", &sig)
            .unwrap();
        assert_eq!(
            key.public().verify(Purpose::PEER_RECORD, b"hellO", &sig),
            Err(IdentityError::BadSignature)
        );
        assert_eq!(
            key.public()
                .verify(Purpose::PEER_RECORD, b"hello", &sig[..63]),
            Err(IdentityError::SignatureLength(63))
        );
    }

    #[test]
    fn other_key_does_not_verify() {
        let a = Keypair::generate();
        let b = Keypair::generate();
        let sig = a.sign(Purpose::SECIO_HANDSHAKE, b"m");
        assert!(
            b.public()
                .verify(Purpose::SECIO_HANDSHAKE, b"m", &sig)
                .is_err()
        );
    }

    #[test]
    fn secret_round_trip_and_debug_hides_secret() {
        let a = Keypair::generate();
        let b = Keypair::from_secret_bytes(&a.secret_bytes());
        assert_eq!(a.peer_id(), b.peer_id());
        let debug = format!("{a:?}");
        let secret_hex: String = a
            .secret_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(!debug.contains(&secret_hex));
        assert!(debug.contains(&a.peer_id().to_string()));
    }

    #[test]
    fn rejects_invalid_public_keys() {
        assert_eq!(
            PublicKey::from_bytes(&[0u8; 31]),
            Err(IdentityError::InvalidPublicKey)
        );
    }

    /// RFC 8032 test vector 1 pins the key derivation: a stored seed must keep
    /// naming the same peer across versions.
    #[test]
    fn rfc8032_vector_public_key() {
        let seed: [u8; 32] = [
            0x9d, 0x61, 0xb1, 0x9d, 0xef, 0xfd, 0x5a, 0x60, 0xba, 0x84, 0x4a, 0xf4, 0x92, 0xec,
            0x2c, 0xc4, 0x44, 0x49, 0xc5, 0x69, 0x7b, 0x32, 0x69, 0x19, 0x70, 0x3b, 0xac, 0x03,
            0x1c, 0xae, 0x7f, 0x60,
        ];
        let public: [u8; 32] = [
            0xd7, 0x5a, 0x98, 0x01, 0x82, 0xb1, 0x0a, 0xb7, 0xd5, 0x4b, 0xfe, 0xd3, 0xc9, 0x64,
            0x07, 0x3a, 0x0e, 0xe1, 0x72, 0xf3, 0xda, 0xa6, 0x23, 0x25, 0xaf, 0x02, 0x1a, 0x68,
            0xf7, 0x07, 0x51, 0x1a,
        ];
        assert_eq!(
            Keypair::from_secret_bytes(&seed).public().to_bytes(),
            public
        );
    }
}
