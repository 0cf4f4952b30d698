//! Identities for Shoal: ed25519 key pairs, peer ids and signatures bound to a
//! purpose.
//!
//! A node *is* its key pair. Its [`PeerId`] is the 32-byte ed25519 public key,
//! written in text as base58 (Bitcoin alphabet), e.g. in a multiaddr's `/p2p/`
//! component. Every signature Shoal makes is bound to a [`Purpose`], so that a
//! signature made for one context (say a handshake) can never be replayed in
//! another (say a DHT record): see [`signed_input`] for the exact bytes.
//!
//! ```
//! use shoal_identity::{Keypair, Purpose};
//!
//! let key = Keypair::generate();
//! let sig = key.sign(Purpose::SECIO_HANDSHAKE, b"noise static key");
//! let public = key.public();
//! assert!(public.verify(Purpose::SECIO_HANDSHAKE, b"noise static key", &sig).is_ok());
//! // The same bytes under another purpose do not verify.
//! assert!(public.verify(Purpose::PEER_RECORD, b"noise static key", &sig).is_err());
//!
//! let text = key.peer_id().to_string();
//! assert_eq!(text.parse::<shoal_identity::PeerId>().unwrap(), key.peer_id());
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod keys;
mod peer_id;
mod purpose;

pub use keys::{Keypair, PublicKey, SIGNATURE_LEN, Signature};
pub use peer_id::{PEER_ID_LEN, PeerId, PeerIdError};
pub use purpose::{Purpose, signed_input};

/// Why a signature or key was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The bytes are not a valid ed25519 public key.
    #[error("invalid ed25519 public key")]
    InvalidPublicKey,
    /// A signature had the wrong length.
    #[error("signature must be {SIGNATURE_LEN} bytes, got {0}")]
    SignatureLength(usize),
    /// The signature does not verify for this key, purpose and message.
    #[error("signature verification failed")]
    BadSignature,
    /// Reading randomness from the operating system failed.
    #[error("operating system random number generator failed")]
    Randomness,
}

#[cfg(test)]
mod protocol_vectors {
    //! The identity test vectors printed in docs/PROTOCOL.md.
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn documented_vectors() {
        let key = Keypair::from_secret_bytes(&[1u8; 32]);
        assert_eq!(
            hex(&key.public().to_bytes()),
            "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c"
        );
        assert_eq!(
            key.peer_id().to_string(),
            "AKnL4NNf3DGWZJS6cPknBuEGnVsV4A4m5tgebLHaRSZ9"
        );
        let input = signed_input(Purpose::PEER_RECORD, b"abc");
        assert_eq!(
            hex(&input),
            "1373686f616c2f706565722d7265636f72642f31616263"
        );
        let sig = key.sign(Purpose::PEER_RECORD, b"abc");
        assert_eq!(
            hex(&sig),
            "5047badc38df7b1262e0fe744873bc4740303278a649440b0a4bd66d30e328d3b1b106ed946a396e6b4c3087c1052d37687813ca08b59eb7d514c0d2bdbcf80d"
        );
    }
}
