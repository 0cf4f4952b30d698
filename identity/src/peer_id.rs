//! Peer ids and their text form.

use std::{fmt, str::FromStr};

use crate::{IdentityError, PublicKey};

/// Length of a peer id in bytes.
pub const PEER_ID_LEN: usize = 32;

/// The identity of a node: its 32-byte ed25519 public key.
///
/// Text form: base58 with the Bitcoin alphabet (43 or 44 characters). Peer
/// ids compare, hash and order by their bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerId([u8; PEER_ID_LEN]);

impl PeerId {
    /// Wraps 32 bytes without checking that they are a valid ed25519 point.
    /// Use [`PeerId::public_key`] to check.
    pub const fn from_bytes(bytes: [u8; PEER_ID_LEN]) -> PeerId {
        PeerId(bytes)
    }

    /// Parses a peer id from a byte slice that must be exactly 32 bytes long.
    pub fn try_from_slice(bytes: &[u8]) -> Result<PeerId, PeerIdError> {
        let bytes: [u8; PEER_ID_LEN] = bytes
            .try_into()
            .map_err(|_| PeerIdError::Length(bytes.len()))?;
        Ok(PeerId(bytes))
    }

    /// The 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; PEER_ID_LEN] {
        &self.0
    }

    /// The public key this peer id names, if the bytes are a valid key.
    pub fn public_key(&self) -> Result<PublicKey, IdentityError> {
        PublicKey::from_bytes(&self.0)
    }
}

/// Why a peer id could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerIdError {
    /// The text is not valid base58.
    #[error("peer id is not valid base58: {0}")]
    Base58(String),
    /// The decoded bytes have the wrong length.
    #[error("peer id must be {PEER_ID_LEN} bytes, got {0}")]
    Length(usize),
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&bs58::encode(&self.0).into_string())
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({self})")
    }
}

impl FromStr for PeerId {
    type Err = PeerIdError;

    fn from_str(s: &str) -> Result<PeerId, PeerIdError> {
        // 32 bytes are at most 44 base58 characters; refuse to decode more.
        if s.len() > 44 {
            return Err(PeerIdError::Length(s.len() * 733 / 1000));
        }
        let mut buf = [0u8; 64];
        let n = bs58::decode(s)
            .onto(&mut buf[..])
            .map_err(|e| PeerIdError::Base58(e.to_string()))?;
        PeerId::try_from_slice(&buf[..n])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_text_form() {
        // All-zero bytes encode to 32 '1's in base58.
        assert_eq!(PeerId::from_bytes([0; 32]).to_string(), "1".repeat(32));
        let max = PeerId::from_bytes([0xff; 32]).to_string();
        assert_eq!(max, "JEKNVnkbo3jma5nREBBJCDoXFVeKkD56V3xKrvRmWxFG");
        assert_eq!(
            max.parse::<PeerId>().unwrap(),
            PeerId::from_bytes([0xff; 32])
        );
    }

    #[test]
    fn rejects_bad_text() {
        assert!(matches!(
            "0OIl".parse::<PeerId>(),
            Err(PeerIdError::Base58(_))
        ));
        assert_eq!("abc".parse::<PeerId>(), Err(PeerIdError::Length(3)));
        assert!(matches!(
            "1".repeat(100).parse::<PeerId>(),
            Err(PeerIdError::Length(_))
        ));
    }

    proptest! {
        #[test]
        fn text_round_trip(bytes in any::<[u8; 32]>()) {
            let id = PeerId::from_bytes(bytes);
            prop_assert_eq!(id.to_string().parse::<PeerId>().unwrap(), id);
        }

        #[test]
        fn parse_never_panics(s in ".{0,64}") {
            let _ = s.parse::<PeerId>();
        }
    }
}
