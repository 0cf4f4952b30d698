//! The handshake payload: the identity key and its signature over the
//! sender's Noise static key.
//!
//! ```text
//! message HandshakePayload {
//!   uint32 version = 1;      // payload format, PAYLOAD_VERSION
//!   bytes identity_key = 2;  // 32-byte ed25519 public key
//!   bytes identity_sig = 3;  // 64-byte signature, Purpose::SECIO_HANDSHAKE,
//!                            // over the sender's 32-byte Noise static key
//! }
//! ```
//!
//! Unknown fields are ignored: within a payload version, fields may be
//! added; an incompatible change gets a new version number.

use shoal_identity::{Keypair, PublicKey, Purpose, SIGNATURE_LEN};

use crate::HandshakeError;

/// The payload format version this implementation writes and accepts.
pub const PAYLOAD_VERSION: u32 = 1;

/// Length of an ed25519 public key (and of an X25519 Noise static key).
pub const KEY_LEN: usize = 32;

/// The protobuf message each side sends inside the encrypted part of its
/// Noise message carrying its static key.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct HandshakePayload {
    /// Payload format version, [`PAYLOAD_VERSION`].
    #[prost(uint32, tag = "1")]
    pub version: u32,
    /// The sender's 32-byte ed25519 identity key.
    #[prost(bytes = "vec", tag = "2")]
    pub identity_key: Vec<u8>,
    /// 64-byte ed25519 signature with [`Purpose::SECIO_HANDSHAKE`] over the
    /// sender's 32-byte Noise static public key.
    #[prost(bytes = "vec", tag = "3")]
    pub identity_sig: Vec<u8>,
}

impl HandshakePayload {
    /// The payload binding `noise_static_public` to `identity`.
    pub fn sign(identity: &Keypair, noise_static_public: &[u8; KEY_LEN]) -> HandshakePayload {
        HandshakePayload {
            version: PAYLOAD_VERSION,
            identity_key: identity.public().to_bytes().to_vec(),
            identity_sig: identity
                .sign(Purpose::SECIO_HANDSHAKE, noise_static_public)
                .to_vec(),
        }
    }

    /// The protobuf encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        prost::Message::encode_to_vec(self)
    }

    /// Decodes `bytes` and checks that it binds `noise_static_public`,
    /// returning the authenticated identity key.
    pub fn verify_bytes(
        bytes: &[u8],
        noise_static_public: &[u8],
    ) -> Result<PublicKey, HandshakeError> {
        let payload: HandshakePayload = prost::Message::decode(bytes)?;
        payload.verify(noise_static_public)
    }

    /// Checks that this payload binds `noise_static_public`, returning the
    /// authenticated identity key.
    pub fn verify(&self, noise_static_public: &[u8]) -> Result<PublicKey, HandshakeError> {
        if self.version != PAYLOAD_VERSION {
            return Err(HandshakeError::UnsupportedPayloadVersion(self.version));
        }
        if self.identity_key.len() != KEY_LEN {
            return Err(HandshakeError::InvalidIdentityKey);
        }
        if self.identity_sig.len() != SIGNATURE_LEN {
            return Err(HandshakeError::BadSignature);
        }
        let key = PublicKey::from_bytes(&self.identity_key)
            .map_err(|_| HandshakeError::InvalidIdentityKey)?;
        key.verify(
            Purpose::SECIO_HANDSHAKE,
            noise_static_public,
            &self.identity_sig,
        )
        .map_err(|_| HandshakeError::BadSignature)?;
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_identity::signed_input;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The test vectors published in docs/PROTOCOL.md (section 4).
    #[test]
    fn published_test_vectors() {
        let identity = Keypair::from_secret_bytes(&[0x01; 32]);
        let static_public = [0x02; 32];
        assert_eq!(
            hex(&identity.public().to_bytes()),
            "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c"
        );
        assert_eq!(
            hex(&signed_input(Purpose::SECIO_HANDSHAKE, &static_public)),
            concat!(
                "17",
                "73686f616c2f736563696f2f68616e647368616b652f31",
                "0202020202020202020202020202020202020202020202020202020202020202"
            )
        );
        let payload = HandshakePayload::sign(&identity, &static_public);
        let bytes = payload.to_bytes();
        assert_eq!(hex(&bytes), VECTOR_PAYLOAD_HEX);
        let key = HandshakePayload::verify_bytes(&bytes, &static_public).unwrap();
        assert_eq!(key, identity.public());
    }

    const VECTOR_PAYLOAD_HEX: &str = concat!(
        "0801",
        "1220",
        "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c",
        "1a40",
        "94289ad137693b9d51853b049c46e0af8e9114729e6fc8eeda30d18d8600d41e",
        "362bab1582f0c274259f264350697409578f285bb8b0d8ad97a18bd435015507",
    );

    #[test]
    fn rejects_wrong_static_key_and_purpose() {
        let identity = Keypair::from_secret_bytes(&[7; 32]);
        let bytes = HandshakePayload::sign(&identity, &[2; 32]).to_bytes();
        assert!(matches!(
            HandshakePayload::verify_bytes(&bytes, &[3; 32]),
            Err(HandshakeError::BadSignature)
        ));
        let other_purpose = HandshakePayload {
            version: PAYLOAD_VERSION,
            identity_key: identity.public().to_bytes().to_vec(),
            identity_sig: identity.sign(Purpose::PEER_RECORD, &[2; 32]).to_vec(),
        };
        assert!(matches!(
            other_purpose.verify(&[2; 32]),
            Err(HandshakeError::BadSignature)
        ));
    }

    #[test]
    fn rejects_bad_fields() {
        let identity = Keypair::from_secret_bytes(&[7; 32]);
        let good = HandshakePayload::sign(&identity, &[2; 32]);

        let mut p = good.clone();
        p.version = 2;
        assert!(matches!(
            p.verify(&[2; 32]),
            Err(HandshakeError::UnsupportedPayloadVersion(2))
        ));
        let mut p = good.clone();
        p.identity_key.pop();
        assert!(matches!(
            p.verify(&[2; 32]),
            Err(HandshakeError::InvalidIdentityKey)
        ));
        let mut p = good.clone();
        p.identity_sig.push(0);
        assert!(matches!(
            p.verify(&[2; 32]),
            Err(HandshakeError::BadSignature)
        ));
        // Not a point on the curve.
        let mut p = good.clone();
        p.identity_key = vec![0xff; 32];
        p.identity_key[31] = 0x7f;
        assert!(matches!(
            p.verify(&[2; 32]),
            Err(HandshakeError::InvalidIdentityKey | HandshakeError::BadSignature)
        ));
        assert!(matches!(
            HandshakePayload::verify_bytes(&[0xff, 0xff], &[2; 32]),
            Err(HandshakeError::PayloadDecode(_))
        ));
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let identity = Keypair::from_secret_bytes(&[7; 32]);
        let mut bytes = HandshakePayload::sign(&identity, &[2; 32]).to_bytes();
        // Field 15, varint 1.
        bytes.extend_from_slice(&[0x78, 0x01]);
        assert_eq!(
            HandshakePayload::verify_bytes(&bytes, &[2; 32]).unwrap(),
            identity.public()
        );
    }
}
