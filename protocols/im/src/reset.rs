//! The reset request: how a device that cannot decrypt a session asks its
//! peer to start a new one.
//!
//! A session breaks when one side lost what the other still uses: the
//! signed prekey an initial envelope names was rotated away, the session
//! was evicted or lost in a restore, more envelopes were lost than the
//! skip window allows, or a restored side's chains forked from what its
//! peer holds. The side that cannot decrypt sends a reset request: it names
//! the broken session, carries a fresh nonce and the requester's current
//! prekey bundle, and is signed by the requester's device key. The peer
//! honours it only when the request names its *active* session with the
//! requester (so a replay, after the reset or of an old request, changes
//! nothing) and then starts a new session from the bundle, sending every
//! unacknowledged message again on it with its id unchanged.
//!
//! What triggers a request is decided by the engine (docs/PROTOCOL.md
//! 11.10): never an envelope that merely fails to decrypt, unless it came
//! over a transport session authenticated as the contact's device.
//!
//! Layout (docs/PROTOCOL.md 11.10): `version: u8 (1) | type: u8 (3) |
//! recipient: 32 | session id: 16 | nonce: 16 | requester bundle:
//! BUNDLE_LEN | signature: 64` over every byte before it, purpose
//! [`RESET_PURPOSE`].

use shoal_identity::{PeerId, Purpose, SIGNATURE_LEN};

use crate::envelope::{ENVELOPE_VERSION, SESSION_ID_LEN, SessionId, TYPE_RESET};
use crate::x3dh::{BUNDLE_LEN, PrekeyBundle};
use crate::{Device, Error};

/// Purpose of the device signature over a reset request.
pub const RESET_PURPOSE: Purpose = Purpose::new("shoal/im/reset-request/1");
/// Length of a reset request's nonce.
pub const RESET_NONCE_LEN: usize = 16;
/// Length of a reset request.
pub const RESET_REQUEST_LEN: usize =
    2 + 32 + SESSION_ID_LEN + RESET_NONCE_LEN + BUNDLE_LEN + SIGNATURE_LEN;
const SIGNED_LEN: usize = RESET_REQUEST_LEN - SIGNATURE_LEN;

/// A verified request to replace a broken session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetRequest {
    /// The device asked to start a new session (its ed25519 key).
    pub recipient: PeerId,
    /// The session the requester cannot decrypt.
    pub session: SessionId,
    /// Fresh random bytes: no two requests are the same.
    pub nonce: [u8; RESET_NONCE_LEN],
    /// The requester's certificate and current signed prekey: the new
    /// session starts from it.
    pub bundle: PrekeyBundle,
}

impl ResetRequest {
    /// Encodes the request and signs it with `device` (which must be the
    /// device the bundle certifies).
    pub fn sign(&self, device: &Device) -> Vec<u8> {
        let mut out = Vec::with_capacity(RESET_REQUEST_LEN);
        out.push(ENVELOPE_VERSION);
        out.push(TYPE_RESET);
        out.extend_from_slice(self.recipient.as_bytes());
        out.extend_from_slice(&self.session.0);
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.bundle.encode());
        let signature = device.signing_key().sign(RESET_PURPOSE, &out);
        out.extend_from_slice(&signature);
        out
    }

    /// Parses a request and verifies it: the bundle's certificate and
    /// prekey signature, and the request's signature by the device the
    /// certificate names.
    pub fn decode(bytes: &[u8]) -> Result<ResetRequest, Error> {
        const WHAT: Error = Error::Malformed {
            what: "reset request",
        };
        if bytes.len() != RESET_REQUEST_LEN {
            return Err(WHAT);
        }
        if bytes[0] != ENVELOPE_VERSION {
            return Err(Error::UnsupportedVersion {
                what: "reset request",
                found: bytes[0],
            });
        }
        if bytes[1] != TYPE_RESET {
            return Err(WHAT);
        }
        let recipient = PeerId::try_from_slice(&bytes[2..34]).map_err(|_| WHAT)?;
        let mut at = 34;
        let mut session = [0u8; SESSION_ID_LEN];
        session.copy_from_slice(&bytes[at..at + SESSION_ID_LEN]);
        at += SESSION_ID_LEN;
        let mut nonce = [0u8; RESET_NONCE_LEN];
        nonce.copy_from_slice(&bytes[at..at + RESET_NONCE_LEN]);
        at += RESET_NONCE_LEN;
        let bundle = PrekeyBundle::decode(&bytes[at..at + BUNDLE_LEN])?;
        bundle.certificate.device().verify(
            RESET_PURPOSE,
            &bytes[..SIGNED_LEN],
            &bytes[SIGNED_LEN..],
        )?;
        Ok(ResetRequest {
            recipient,
            session: SessionId(session),
            nonce,
            bundle,
        })
    }
}

/// Whether `bytes` claims to be a reset request (by its type byte).
pub fn is_reset_request(bytes: &[u8]) -> bool {
    bytes.get(1) == Some(&TYPE_RESET)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_identity::Keypair;

    fn device(seed: u8) -> Device {
        let user = Keypair::from_secret_bytes(&[seed; 32]);
        Device::new(
            &user,
            Keypair::from_secret_bytes(&[seed + 1; 32]),
            [seed + 2; 32],
            1_700_000_000,
        )
    }

    fn request(requester: &Device, to: &Device) -> ResetRequest {
        let (prekey, _) = crate::x3dh::signed_prekey(requester, 9, [42; 32]);
        ResetRequest {
            recipient: to.certificate().device().peer_id(),
            session: SessionId([5; SESSION_ID_LEN]),
            nonce: [6; RESET_NONCE_LEN],
            bundle: PrekeyBundle {
                certificate: requester.certificate().clone(),
                prekey,
            },
        }
    }

    #[test]
    fn round_trips_and_every_flipped_bit_is_refused() {
        let (bob, alice) = (device(10), device(20));
        let request = request(&bob, &alice);
        let bytes = request.sign(&bob);
        assert_eq!(bytes.len(), RESET_REQUEST_LEN);
        assert!(is_reset_request(&bytes));
        assert_eq!(ResetRequest::decode(&bytes).unwrap(), request);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert!(ResetRequest::decode(&bad).is_err(), "flip at byte {i}");
        }
        assert!(ResetRequest::decode(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn signed_by_another_device_is_refused() {
        let (bob, alice, mallory) = (device(10), device(20), device(30));
        // Mallory signs a request carrying Bob's bundle.
        let bytes = request(&bob, &alice).sign(&mallory);
        assert!(matches!(
            ResetRequest::decode(&bytes),
            Err(Error::Identity(_))
        ));
    }
}
