//! Users and devices: a user root key certifies the device keys it runs on.
//!
//! A user is an ed25519 root key ([`Keypair`]); messaging addresses users by
//! it. Each device has its own ed25519 signing key and X25519 identity key,
//! bound to the user by a [`DeviceCertificate`] signed with the root key.
//! One device per user for now; the format already names the device.
//!
//! Certificate layout (docs/PROTOCOL.md, section 10.2), 169 bytes:
//! ```text
//! version: u8 (1) | user: 32 | device_ed25519: 32 | device_x25519: 32 | created: u64 BE | signature: 64
//! ```
//! The signature is by `user` over the first 105 bytes, with
//! [`DEVICE_CERT_PURPOSE`].

use shoal_identity::{Keypair, PublicKey, Purpose, SIGNATURE_LEN, Signature};
use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

use crate::Error;

/// Purpose of the root key's signature over a device certificate.
pub const DEVICE_CERT_PURPOSE: Purpose = Purpose::new("shoal/im/device-cert/1");
/// The only certificate version this implementation writes and accepts.
pub const DEVICE_CERT_VERSION: u8 = 1;
/// Length of the signed part of a certificate.
const BODY_LEN: usize = 1 + 32 + 32 + 32 + 8;
/// Length of an encoded [`DeviceCertificate`].
pub const DEVICE_CERT_LEN: usize = BODY_LEN + SIGNATURE_LEN;

/// A user's statement "this device key and X25519 identity key are mine".
///
/// A value of this type has always been verified: [`DeviceCertificate::decode`]
/// checks the signature, and [`DeviceCertificate::issue`] makes it.
#[derive(Clone, PartialEq, Eq)]
pub struct DeviceCertificate {
    user: PublicKey,
    device: PublicKey,
    identity: [u8; 32],
    created: u64,
    signature: Signature,
}

impl DeviceCertificate {
    /// Signs a certificate for `device` (its ed25519 key) and `identity` (its
    /// X25519 identity public key) with the user's root key; `created` is
    /// the wall-clock time in Unix seconds.
    pub fn issue(
        user: &Keypair,
        device: PublicKey,
        identity: [u8; 32],
        created: u64,
    ) -> DeviceCertificate {
        let mut cert = DeviceCertificate {
            user: user.public(),
            device,
            identity,
            created,
            signature: [0; SIGNATURE_LEN],
        };
        cert.signature = user.sign(DEVICE_CERT_PURPOSE, &cert.body());
        cert
    }

    fn body(&self) -> [u8; BODY_LEN] {
        let mut body = [0u8; BODY_LEN];
        body[0] = DEVICE_CERT_VERSION;
        body[1..33].copy_from_slice(&self.user.to_bytes());
        body[33..65].copy_from_slice(&self.device.to_bytes());
        body[65..97].copy_from_slice(&self.identity);
        body[97..105].copy_from_slice(&self.created.to_be_bytes());
        body
    }

    /// The exact bytes that travel.
    pub fn encode(&self) -> [u8; DEVICE_CERT_LEN] {
        let mut out = [0u8; DEVICE_CERT_LEN];
        out[..BODY_LEN].copy_from_slice(&self.body());
        out[BODY_LEN..].copy_from_slice(&self.signature);
        out
    }

    /// Parses and verifies a certificate (exactly [`DEVICE_CERT_LEN`] bytes).
    pub fn decode(bytes: &[u8]) -> Result<DeviceCertificate, Error> {
        if bytes.len() != DEVICE_CERT_LEN {
            return Err(Error::Malformed {
                what: "device certificate",
            });
        }
        if bytes[0] != DEVICE_CERT_VERSION {
            return Err(Error::UnsupportedVersion {
                what: "device certificate",
                found: bytes[0],
            });
        }
        let user = PublicKey::from_bytes(&bytes[1..33])?;
        let device = PublicKey::from_bytes(&bytes[33..65])?;
        let mut identity = [0u8; 32];
        identity.copy_from_slice(&bytes[65..97]);
        let mut created = [0u8; 8];
        created.copy_from_slice(&bytes[97..105]);
        let mut signature = [0u8; SIGNATURE_LEN];
        signature.copy_from_slice(&bytes[BODY_LEN..]);
        user.verify(DEVICE_CERT_PURPOSE, &bytes[..BODY_LEN], &signature)?;
        Ok(DeviceCertificate {
            user,
            device,
            identity,
            created: u64::from_be_bytes(created),
            signature,
        })
    }

    /// The user's root public key.
    pub fn user(&self) -> PublicKey {
        self.user
    }

    /// The device's ed25519 signing key.
    pub fn device(&self) -> PublicKey {
        self.device
    }

    /// The device's X25519 identity public key.
    pub fn identity_key(&self) -> [u8; 32] {
        self.identity
    }

    /// When the certificate was issued (Unix seconds).
    pub fn created(&self) -> u64 {
        self.created
    }
}

impl std::fmt::Debug for DeviceCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceCertificate")
            .field("user", &self.user)
            .field("device", &self.device)
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

/// The secrets of one device plus its certificate.
pub struct Device {
    signing: Keypair,
    identity: StaticSecret,
    certificate: DeviceCertificate,
}

impl Device {
    /// Builds a device from its signing key and X25519 identity secret, and
    /// certifies it with the user's root key.
    pub fn new(
        user: &Keypair,
        signing: Keypair,
        identity_secret: [u8; 32],
        created: u64,
    ) -> Device {
        let identity_secret = Zeroizing::new(identity_secret);
        let identity = StaticSecret::from(*identity_secret);
        let public = x25519_dalek::PublicKey::from(&identity).to_bytes();
        let certificate = DeviceCertificate::issue(user, signing.public(), public, created);
        Device {
            signing,
            identity,
            certificate,
        }
    }

    /// Reassembles a device from stored parts, checking that the
    /// certificate names exactly these keys.
    pub fn from_parts(
        signing: Keypair,
        identity_secret: [u8; 32],
        certificate: DeviceCertificate,
    ) -> Result<Device, Error> {
        let identity = StaticSecret::from(identity_secret);
        let public = x25519_dalek::PublicKey::from(&identity).to_bytes();
        if certificate.device != signing.public() || certificate.identity != public {
            return Err(Error::WrongUser);
        }
        Ok(Device {
            signing,
            identity,
            certificate,
        })
    }

    /// The device certificate.
    pub fn certificate(&self) -> &DeviceCertificate {
        &self.certificate
    }

    /// The device's ed25519 signing key.
    pub fn signing_key(&self) -> &Keypair {
        &self.signing
    }

    /// The X25519 identity secret, for storing. Handle with care.
    pub fn identity_secret(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.identity.to_bytes())
    }

    pub(crate) fn identity(&self) -> &StaticSecret {
        &self.identity
    }
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("certificate", &self.certificate)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_roundtrip_and_tamper() {
        let user = Keypair::from_secret_bytes(&[1; 32]);
        let device = Device::new(
            &user,
            Keypair::from_secret_bytes(&[2; 32]),
            [3; 32],
            1_700_000_000,
        );
        let bytes = device.certificate().encode();
        let back = DeviceCertificate::decode(&bytes).unwrap();
        assert_eq!(&back, device.certificate());
        assert_eq!(back.user(), user.public());
        for i in [0, 1, 40, 70, 100, 150] {
            let mut bad = bytes;
            bad[i] ^= 1;
            assert!(DeviceCertificate::decode(&bad).is_err(), "byte {i}");
        }
        assert!(DeviceCertificate::decode(&bytes[1..]).is_err());
        let stored = Device::from_parts(
            device.signing_key().clone(),
            *device.identity_secret(),
            back,
        )
        .unwrap();
        assert_eq!(stored.certificate().encode(), bytes);
    }
}
