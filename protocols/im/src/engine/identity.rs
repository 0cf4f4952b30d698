//! Identity and prekeys: the device's keys, the signed prekey it publishes,
//! prekey rotation and the identity blob they are stored in.

use rand::RngCore;
use rand_chacha::ChaCha20Rng;
use shoal_identity::Keypair;
use zeroize::Zeroizing;

use super::{Batch, Engine, EngineError};
use crate::persist::{self, IdentityBlob, PrekeyBlob};
use crate::store::Store;
use crate::x3dh::{self, PrekeyBundle, PrekeySecret, SignedPrekey};
use crate::{Device, DeviceCertificate, Error, UserId};

/// One signed prekey, its secret and when it was made (Unix seconds).
pub(super) struct Prekey {
    pub(super) signed: SignedPrekey,
    pub(super) secret: PrekeySecret,
    pub(super) created: u64,
}

/// How long a signed prekey stays the published one before
/// [`Engine::rotate_prekey_if_due`] replaces it.
pub const PREKEY_ROTATION_SECS: u64 = 7 * 24 * 3600;
/// Older prekey secrets kept after a rotation, for first contacts made from
/// a bundle fetched before it; older ones are erased, so a later theft of
/// the device's keys cannot open first messages made from them.
pub const PREKEYS_KEPT: usize = 2;

pub(super) fn seed_key(rng: &mut ChaCha20Rng) -> Zeroizing<[u8; 32]> {
    let mut key = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(key.as_mut());
    key
}

impl<S: Store> Engine<S> {
    pub(super) fn load_identity(blob: &[u8]) -> Result<(Keypair, Device, Vec<Prekey>), Error> {
        let blob: IdentityBlob = persist::decode(blob, "identity blob")?;
        let user = Keypair::from_secret_bytes(&persist::array32(&blob.user_secret, "identity")?);
        let signing =
            Keypair::from_secret_bytes(&persist::array32(&blob.device_secret, "identity")?);
        let certificate = DeviceCertificate::decode(&blob.certificate)?;
        let device = Device::from_parts(
            signing,
            persist::array32(&blob.identity_secret, "identity")?,
            certificate,
        )?;
        let mut prekeys = Vec::new();
        for p in &blob.prekeys {
            let signed = SignedPrekey::decode(&p.signed, &device.certificate().device())?;
            let secret = PrekeySecret::from_bytes(p.id, persist::array32(&p.secret, "prekey")?);
            prekeys.push(Prekey {
                signed,
                secret,
                created: p.created,
            });
        }
        if prekeys.is_empty() {
            return Err(Error::Malformed {
                what: "identity blob",
            });
        }
        Ok((user, device, prekeys))
    }

    /// The earlier certificates stored with the identity (any that do not
    /// parse, or certify other keys, are skipped).
    pub(super) fn load_earlier_certificates(
        blob: &[u8],
        device: &Device,
    ) -> Vec<DeviceCertificate> {
        let Ok(blob) = persist::decode::<IdentityBlob>(blob, "identity blob") else {
            return Vec::new();
        };
        blob.earlier_certificates
            .iter()
            .filter_map(|c| DeviceCertificate::decode(c).ok())
            .filter(|c| c.same_device(device.certificate()))
            .collect()
    }

    /// This user's id.
    pub fn user_id(&self) -> UserId {
        UserId::new(self.user.public())
    }

    /// The safety number of this user and `contact`, the same on both
    /// sides: what the two compare to know they talk to each other.
    pub fn safety_number(&self, contact: &UserId) -> crate::SafetyNumber {
        crate::SafetyNumber::of(&self.user_id(), contact)
    }

    /// This device (its signing key is the node key).
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The bundle to publish so others can start sessions.
    pub fn prekey_bundle(&self) -> PrekeyBundle {
        PrekeyBundle {
            certificate: self.device.certificate().clone(),
            prekey: self.prekeys[self.prekeys.len() - 1].signed.clone(),
        }
    }

    /// Replaces the published signed prekey if it is older than
    /// [`PREKEY_ROTATION_SECS`] at wall time `unix_secs`, keeping the
    /// [`PREKEYS_KEPT`] previous secrets and erasing older ones, and renews
    /// the device certificate if it expires within
    /// [`DEVICE_CERT_RENEW_BEFORE`]. Returns whether anything changed: then
    /// publish [`Engine::prekey_bundle`] (and the presence record) again.
    ///
    /// [`DEVICE_CERT_RENEW_BEFORE`]: crate::account::DEVICE_CERT_RENEW_BEFORE
    pub fn rotate_prekey_if_due(&mut self, unix_secs: u64) -> Result<bool, EngineError> {
        self.check()?;
        let renewed = self.renew_certificate(unix_secs);
        let newest = &self.prekeys[self.prekeys.len() - 1];
        if unix_secs < newest.created.saturating_add(PREKEY_ROTATION_SECS) {
            if renewed {
                self.store_identity()?;
            }
            return Ok(renewed);
        }
        let id = newest.signed.id().wrapping_add(1);
        let (signed, secret) = x3dh::signed_prekey(&self.device, id, *seed_key(&mut self.rng));
        self.prekeys.push(Prekey {
            signed,
            secret,
            created: unix_secs,
        });
        let excess = self.prekeys.len().saturating_sub(PREKEYS_KEPT + 1);
        self.prekeys.drain(..excess);
        self.store_identity()?;
        Ok(true)
    }

    /// Commits the identity blob (keys, prekeys, certificates) as memory
    /// holds it.
    pub(super) fn store_identity(&mut self) -> Result<(), EngineError> {
        let mut batch = Batch::default();
        batch.changes.identity = Some(identity_blob(
            &self.user,
            &self.device,
            &self.prekeys,
            &self.earlier_certificates,
        ));
        self.finish(batch)
    }
}

pub(super) fn identity_blob(
    user: &Keypair,
    device: &Device,
    prekeys: &[Prekey],
    earlier: &[DeviceCertificate],
) -> Vec<u8> {
    persist::encode(&IdentityBlob {
        earlier_certificates: earlier.iter().map(|c| c.encode().to_vec()).collect(),
        user_secret: user.secret_bytes().to_vec(),
        device_secret: device.signing_key().secret_bytes().to_vec(),
        identity_secret: device.identity_secret().to_vec(),
        certificate: device.certificate().encode().to_vec(),
        prekeys: prekeys
            .iter()
            .map(|p| PrekeyBlob {
                id: p.signed.id(),
                secret: p.secret.secret_bytes().to_vec(),
                signed: p.signed.encode().to_vec(),
                created: p.created,
            })
            .collect(),
    })
}
