//! Users and devices: a user root key certifies the device keys it runs on.
//!
//! A user is an ed25519 root key ([`Keypair`]); messaging addresses users by
//! it. Each device has its own ed25519 signing key and X25519 identity key,
//! bound to the user by a [`DeviceCertificate`] signed with the root key.
//! One device per user for now; the format already names the device.
//!
//! Certificate layout (docs/PROTOCOL.md, section 10.2), 169 bytes:
//! ```text
//! version: u8 (2) | user: 32 | device_ed25519: 32 | device_x25519: 32 | expires: u64 BE | signature: 64
//! ```
//! The signature is by `user` over the first 105 bytes, with
//! [`DEVICE_CERT_PURPOSE`]. A certificate lives [`DEVICE_CERT_LIFETIME`]
//! and its device renews it [`DEVICE_CERT_RENEW_BEFORE`] its expiry.
//! Version 1 certificates (the same layout with the issue time where
//! version 2 has the expiry) are still read, expiring
//! [`DEVICE_CERT_LIFETIME`] after issue.

use shoal_identity::{Keypair, PublicKey, Purpose, SIGNATURE_LEN, Signature};
use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

use crate::Error;

/// Purpose of the root key's signature over a device certificate.
pub const DEVICE_CERT_PURPOSE: Purpose = Purpose::new("shoal/im/device-cert/1");
/// The certificate version this implementation writes.
pub const DEVICE_CERT_VERSION: u8 = 2;
/// The previous version, still read: its time field is the issue time.
pub const DEVICE_CERT_V1: u8 = 1;
/// How long a certificate is valid: 90 days.
pub const DEVICE_CERT_LIFETIME: u64 = 90 * 24 * 3600;
/// A device renews its certificate once it expires within 30 days.
pub const DEVICE_CERT_RENEW_BEFORE: u64 = 30 * 24 * 3600;
/// How far a reader's clock may be ahead of the issuer's: a certificate is
/// refused once `expires + DEVICE_CERT_CLOCK_SKEW` has passed.
pub const DEVICE_CERT_CLOCK_SKEW: u64 = 300;
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
    version: u8,
    user: PublicKey,
    device: PublicKey,
    identity: [u8; 32],
    /// Version 2: the expiry; version 1: the issue time.
    time: u64,
    signature: Signature,
}

impl DeviceCertificate {
    /// Signs a certificate for `device` (its ed25519 key) and `identity` (its
    /// X25519 identity public key) with the user's root key, valid until
    /// `expires` (Unix seconds).
    pub fn issue(
        user: &Keypair,
        device: PublicKey,
        identity: [u8; 32],
        expires: u64,
    ) -> DeviceCertificate {
        let mut cert = DeviceCertificate {
            version: DEVICE_CERT_VERSION,
            user: user.public(),
            device,
            identity,
            time: expires,
            signature: [0; SIGNATURE_LEN],
        };
        cert.signature = user.sign(DEVICE_CERT_PURPOSE, &cert.body());
        cert
    }

    fn body(&self) -> [u8; BODY_LEN] {
        let mut body = [0u8; BODY_LEN];
        body[0] = self.version;
        body[1..33].copy_from_slice(&self.user.to_bytes());
        body[33..65].copy_from_slice(&self.device.to_bytes());
        body[65..97].copy_from_slice(&self.identity);
        body[97..105].copy_from_slice(&self.time.to_be_bytes());
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
        let version = bytes[0];
        if version != DEVICE_CERT_VERSION && version != DEVICE_CERT_V1 {
            return Err(Error::UnsupportedVersion {
                what: "device certificate",
                found: bytes[0],
            });
        }
        let user = PublicKey::from_bytes(&bytes[1..33])?;
        let device = PublicKey::from_bytes(&bytes[33..65])?;
        let mut identity = [0u8; 32];
        identity.copy_from_slice(&bytes[65..97]);
        let mut time = [0u8; 8];
        time.copy_from_slice(&bytes[97..105]);
        let mut signature = [0u8; SIGNATURE_LEN];
        signature.copy_from_slice(&bytes[BODY_LEN..]);
        user.verify(DEVICE_CERT_PURPOSE, &bytes[..BODY_LEN], &signature)?;
        Ok(DeviceCertificate {
            version,
            user,
            device,
            identity,
            time: u64::from_be_bytes(time),
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

    /// When the certificate expires (Unix seconds).
    pub fn expires(&self) -> u64 {
        match self.version {
            DEVICE_CERT_V1 => self.time.saturating_add(DEVICE_CERT_LIFETIME),
            _ => self.time,
        }
    }

    /// Whether the certificate is still valid at `now` (Unix seconds),
    /// allowing [`DEVICE_CERT_CLOCK_SKEW`]. One valid for more than four
    /// times [`DEVICE_CERT_LIFETIME`] from `now` was issued by a clock far
    /// ahead (or this clock is far behind) and is refused too.
    pub fn check_time(&self, now: u64) -> Result<(), Error> {
        let expires = self.expires();
        if now > expires.saturating_add(DEVICE_CERT_CLOCK_SKEW) {
            return Err(Error::Expired { expires, now });
        }
        if expires > now.saturating_add(4 * DEVICE_CERT_LIFETIME) {
            return Err(Error::Malformed {
                what: "certificate expiry too far ahead",
            });
        }
        Ok(())
    }

    /// Whether `other` certifies the same device keys for the same user (a
    /// renewal, not a device change).
    pub fn same_device(&self, other: &DeviceCertificate) -> bool {
        self.user == other.user && self.device == other.device && self.identity == other.identity
    }
}

impl std::fmt::Debug for DeviceCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceCertificate")
            .field("user", &self.user)
            .field("device", &self.device)
            .field("expires", &self.expires())
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
    /// certifies it with the user's root key at wall time `now` (Unix
    /// seconds) for [`DEVICE_CERT_LIFETIME`].
    pub fn new(user: &Keypair, signing: Keypair, identity_secret: [u8; 32], now: u64) -> Device {
        let identity_secret = Zeroizing::new(identity_secret);
        let identity = StaticSecret::from(*identity_secret);
        let public = x25519_dalek::PublicKey::from(&identity).to_bytes();
        let expires = now.saturating_add(DEVICE_CERT_LIFETIME);
        let certificate = DeviceCertificate::issue(user, signing.public(), public, expires);
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

    /// Whether the certificate expires within [`DEVICE_CERT_RENEW_BEFORE`]
    /// of wall time `now` (or is of the old version): time to renew it.
    pub fn renewal_due(&self, now: u64) -> bool {
        self.certificate.version != DEVICE_CERT_VERSION
            || self.certificate.expires() <= now.saturating_add(DEVICE_CERT_RENEW_BEFORE)
    }

    /// Certifies the same keys again with the user's root key, valid
    /// [`DEVICE_CERT_LIFETIME`] from `now`.
    pub fn renew(&mut self, user: &Keypair, now: u64) {
        self.certificate = DeviceCertificate::issue(
            user,
            self.signing.public(),
            self.certificate.identity,
            now.saturating_add(DEVICE_CERT_LIFETIME),
        );
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

    #[test]
    fn expiry_renewal_and_the_old_version() {
        let user = Keypair::from_secret_bytes(&[1; 32]);
        let issued = 1_700_000_000;
        let mut device = Device::new(&user, Keypair::from_secret_bytes(&[2; 32]), [3; 32], issued);
        let cert = device.certificate().clone();
        assert_eq!(cert.expires(), issued + DEVICE_CERT_LIFETIME);
        let last = cert.expires() + DEVICE_CERT_CLOCK_SKEW;
        assert_eq!(cert.check_time(last), Ok(()));
        assert!(matches!(
            cert.check_time(last + 1),
            Err(Error::Expired { .. })
        ));
        assert!(!device.renewal_due(issued));
        let due = cert.expires() - DEVICE_CERT_RENEW_BEFORE;
        assert!(device.renewal_due(due));
        device.renew(&user, due);
        let renewed = device.certificate();
        assert!(renewed.same_device(&cert));
        assert_eq!(renewed.expires(), due + DEVICE_CERT_LIFETIME);

        // A version 1 certificate (issue time in the same field) is read,
        // expires 90 days after issue, and is renewed at once.
        let mut body = [0u8; BODY_LEN];
        body.copy_from_slice(&cert.encode()[..BODY_LEN]);
        body[0] = DEVICE_CERT_V1;
        body[97..105].copy_from_slice(&issued.to_be_bytes());
        let signature = user.sign(DEVICE_CERT_PURPOSE, &body);
        let v1 = DeviceCertificate::decode(&[&body[..], &signature[..]].concat()).unwrap();
        assert_eq!(v1.expires(), issued + DEVICE_CERT_LIFETIME);
        assert!(v1.same_device(&cert));
        let old = Device::from_parts(device.signing_key().clone(), [3; 32], v1).unwrap();
        assert!(old.renewal_due(issued));
        let mut unknown = cert.encode();
        unknown[0] = 3;
        assert!(matches!(
            DeviceCertificate::decode(&unknown),
            Err(Error::UnsupportedVersion { found: 3, .. })
        ));
    }
}
