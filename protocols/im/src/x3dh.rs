//! X3DH-style first contact from a published prekey bundle.
//!
//! Bob publishes a [`PrekeyBundle`]: his [`DeviceCertificate`] and a
//! [`SignedPrekey`] (X25519, signed by his device key). Alice, knowing Bob's
//! user key, calls [`initiate`]: with her identity key `IK_a`, a fresh
//! ephemeral `EK_a`, Bob's identity key `IK_b` and prekey `SPK_b`:
//!
//! ```text
//! DH1 = DH(IK_a, SPK_b)   DH2 = DH(EK_a, IK_b)   DH3 = DH(EK_a, SPK_b)
//! SK  = kdf(X3DH_DOMAIN, 0^32, DH1 | DH2 | DH3 | CERT_a | CERT_b | EK_a | SPK_b)[..32]
//! AD  = kdf(X3DH_AD_DOMAIN, 0^32, CERT_a | CERT_b)
//! ```
//!
//! `CERT_a` and `CERT_b` are the two encoded device certificates: the user
//! keys, device keys and identity keys both ends believe in are bound into
//! the secret and into every message's associated data, so a session can
//! never be shared by a device that was told another identity than the one
//! its peer holds (an unknown-key-share).
//!
//! She sends an [`InitialHeader`] (her certificate, `EK_a`, prekey id) with
//! her first ratchet messages until Bob answers; Bob calls [`respond`] for
//! the first of them and decrypts the others (same header) with the session
//! it returned. Without one-time prekeys, two senders making first contact
//! at the same moment both succeed.
//! No one-time prekeys yet (docs/PROTOCOL.md, section 10.3).

use rand::CryptoRng;
use shoal_identity::{PublicKey, Purpose, SIGNATURE_LEN, Signature};
use x25519_dalek::{PublicKey as XPublic, StaticSecret};
use zeroize::Zeroizing;

use crate::Error;
use crate::account::{DEVICE_CERT_LEN, Device, DeviceCertificate};
use crate::kdf::{X3DH_AD_DOMAIN, X3DH_DOMAIN, kdf};
use crate::ratchet::Session;

/// Purpose of a device key's signature over a signed prekey.
pub const SIGNED_PREKEY_PURPOSE: Purpose = Purpose::new("shoal/im/signed-prekey/1");
/// Version byte of signed prekeys and bundles.
pub const X3DH_VERSION: u8 = 1;
/// Version byte of initial headers: 2 since the certificates are bound into
/// the secret (version 1 bound only the X25519 identity keys).
pub const INITIAL_HEADER_VERSION: u8 = 2;
const PREKEY_BODY_LEN: usize = 1 + 4 + 32;
/// Length of an encoded [`SignedPrekey`].
pub const SIGNED_PREKEY_LEN: usize = PREKEY_BODY_LEN + SIGNATURE_LEN;
/// Length of an encoded [`PrekeyBundle`].
pub const BUNDLE_LEN: usize = DEVICE_CERT_LEN + SIGNED_PREKEY_LEN;
/// Length of an encoded [`InitialHeader`].
pub const INITIAL_HEADER_LEN: usize = 1 + DEVICE_CERT_LEN + 32 + 4;

/// A medium-term X25519 prekey signed by the device key.
///
/// Layout: `version: u8 | id: u32 BE | prekey: 32 | signature: 64`, the
/// signature over the first 37 bytes with [`SIGNED_PREKEY_PURPOSE`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedPrekey {
    id: u32,
    public: [u8; 32],
    signature: Signature,
}

impl SignedPrekey {
    fn body(id: u32, public: &[u8; 32]) -> [u8; PREKEY_BODY_LEN] {
        let mut b = [0u8; PREKEY_BODY_LEN];
        b[0] = X3DH_VERSION;
        b[1..5].copy_from_slice(&id.to_be_bytes());
        b[5..].copy_from_slice(public);
        b
    }

    /// The prekey id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The X25519 prekey.
    pub fn public(&self) -> [u8; 32] {
        self.public
    }

    /// The exact bytes that travel.
    pub fn encode(&self) -> [u8; SIGNED_PREKEY_LEN] {
        let mut out = [0u8; SIGNED_PREKEY_LEN];
        out[..PREKEY_BODY_LEN].copy_from_slice(&Self::body(self.id, &self.public));
        out[PREKEY_BODY_LEN..].copy_from_slice(&self.signature);
        out
    }

    /// Parses a signed prekey and verifies it against `device`.
    pub fn decode(bytes: &[u8], device: &PublicKey) -> Result<SignedPrekey, Error> {
        if bytes.len() != SIGNED_PREKEY_LEN {
            return Err(Error::Malformed {
                what: "signed prekey",
            });
        }
        if bytes[0] != X3DH_VERSION {
            return Err(Error::UnsupportedVersion {
                what: "signed prekey",
                found: bytes[0],
            });
        }
        device.verify(
            SIGNED_PREKEY_PURPOSE,
            &bytes[..PREKEY_BODY_LEN],
            &bytes[PREKEY_BODY_LEN..],
        )?;
        let mut id = [0u8; 4];
        id.copy_from_slice(&bytes[1..5]);
        let mut public = [0u8; 32];
        public.copy_from_slice(&bytes[5..37]);
        let mut signature = [0u8; SIGNATURE_LEN];
        signature.copy_from_slice(&bytes[PREKEY_BODY_LEN..]);
        Ok(SignedPrekey {
            id: u32::from_be_bytes(id),
            public,
            signature,
        })
    }
}

/// The secret half of a signed prekey, kept by its owner.
pub struct PrekeySecret {
    id: u32,
    secret: StaticSecret,
}

impl PrekeySecret {
    /// Rebuilds a prekey secret from its id and 32 secret bytes.
    pub fn from_bytes(id: u32, secret: [u8; 32]) -> PrekeySecret {
        PrekeySecret {
            id,
            secret: StaticSecret::from(secret),
        }
    }

    /// The prekey id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The secret bytes, for storing. Handle with care.
    pub fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.secret.to_bytes())
    }
}

impl std::fmt::Debug for PrekeySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrekeySecret")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Signs the prekey with secret `secret` and id `id` with the device key.
pub fn signed_prekey(device: &Device, id: u32, secret: [u8; 32]) -> (SignedPrekey, PrekeySecret) {
    let prekey = PrekeySecret::from_bytes(id, secret);
    let public = XPublic::from(&prekey.secret).to_bytes();
    let signature = device
        .signing_key()
        .sign(SIGNED_PREKEY_PURPOSE, &SignedPrekey::body(id, &public));
    (
        SignedPrekey {
            id,
            public,
            signature,
        },
        prekey,
    )
}

/// What a user publishes so others can start a session while it is offline.
///
/// Layout: `certificate: 169 | signed_prekey: 101`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrekeyBundle {
    /// The device certificate.
    pub certificate: DeviceCertificate,
    /// The signed prekey, signed by the certificate's device key.
    pub prekey: SignedPrekey,
}

impl PrekeyBundle {
    /// The exact bytes that travel.
    pub fn encode(&self) -> [u8; BUNDLE_LEN] {
        let mut out = [0u8; BUNDLE_LEN];
        out[..DEVICE_CERT_LEN].copy_from_slice(&self.certificate.encode());
        out[DEVICE_CERT_LEN..].copy_from_slice(&self.prekey.encode());
        out
    }

    /// Parses a bundle, verifying the certificate and the prekey signature.
    pub fn decode(bytes: &[u8]) -> Result<PrekeyBundle, Error> {
        if bytes.len() != BUNDLE_LEN {
            return Err(Error::Malformed {
                what: "prekey bundle",
            });
        }
        let certificate = DeviceCertificate::decode(&bytes[..DEVICE_CERT_LEN])?;
        let prekey = SignedPrekey::decode(&bytes[DEVICE_CERT_LEN..], &certificate.device())?;
        Ok(PrekeyBundle {
            certificate,
            prekey,
        })
    }
}

/// What the initiator sends with its first messages so the responder can
/// derive the same shared secret.
///
/// Layout: `version: u8 (2) | sender certificate: 169 | ephemeral: 32 | prekey_id: u32 BE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialHeader {
    /// The initiator's device certificate (its identity key `IK_a`).
    pub sender: DeviceCertificate,
    /// The initiator's ephemeral X25519 key `EK_a`.
    pub ephemeral: [u8; 32],
    /// Which of the responder's signed prekeys was used.
    pub prekey_id: u32,
}

impl InitialHeader {
    /// The exact bytes that travel.
    pub fn encode(&self) -> [u8; INITIAL_HEADER_LEN] {
        let mut out = [0u8; INITIAL_HEADER_LEN];
        out[0] = INITIAL_HEADER_VERSION;
        out[1..1 + DEVICE_CERT_LEN].copy_from_slice(&self.sender.encode());
        out[1 + DEVICE_CERT_LEN..1 + DEVICE_CERT_LEN + 32].copy_from_slice(&self.ephemeral);
        out[INITIAL_HEADER_LEN - 4..].copy_from_slice(&self.prekey_id.to_be_bytes());
        out
    }

    /// Parses an initial header, verifying the sender's certificate.
    pub fn decode(bytes: &[u8]) -> Result<InitialHeader, Error> {
        if bytes.len() != INITIAL_HEADER_LEN {
            return Err(Error::Malformed {
                what: "initial header",
            });
        }
        if bytes[0] != INITIAL_HEADER_VERSION {
            return Err(Error::UnsupportedVersion {
                what: "initial header",
                found: bytes[0],
            });
        }
        let sender = DeviceCertificate::decode(&bytes[1..1 + DEVICE_CERT_LEN])?;
        let mut ephemeral = [0u8; 32];
        ephemeral.copy_from_slice(&bytes[1 + DEVICE_CERT_LEN..1 + DEVICE_CERT_LEN + 32]);
        let mut id = [0u8; 4];
        id.copy_from_slice(&bytes[INITIAL_HEADER_LEN - 4..]);
        Ok(InitialHeader {
            sender,
            ephemeral,
            prekey_id: u32::from_be_bytes(id),
        })
    }
}

fn dh(secret: &StaticSecret, public: &[u8; 32]) -> Result<Zeroizing<[u8; 32]>, Error> {
    let shared = secret.diffie_hellman(&XPublic::from(*public));
    if !shared.was_contributory() {
        return Err(Error::WeakKey);
    }
    Ok(Zeroizing::new(shared.to_bytes()))
}

/// The X3DH shared secret and associated data from the three DH outputs
/// and both certificates.
fn derive(
    dhs: [&[u8; 32]; 3],
    cert_a: &DeviceCertificate,
    cert_b: &DeviceCertificate,
    ek_a: &[u8; 32],
    spk_b: &[u8; 32],
) -> (Zeroizing<[u8; 32]>, [u8; 64]) {
    let (cert_a, cert_b) = (cert_a.encode(), cert_b.encode());
    let out = kdf(
        X3DH_DOMAIN,
        &[0u8; 32],
        &[dhs[0], dhs[1], dhs[2], &cert_a, &cert_b, ek_a, spk_b],
    );
    let mut sk = Zeroizing::new([0u8; 32]);
    sk.copy_from_slice(&out[..32]);
    let ad = *kdf(X3DH_AD_DOMAIN, &[0u8; 32], &[&cert_a, &cert_b]);
    (sk, ad)
}

/// Starts a session with the owner of `bundle`, which must be certified by
/// `their_user`. `ephemeral_secret` is `EK_a` (draw it from a CSPRNG; see
/// [`initiate_with_rng`]).
pub fn initiate(
    device: &Device,
    their_user: &PublicKey,
    bundle: &PrekeyBundle,
    ephemeral_secret: [u8; 32],
) -> Result<(InitialHeader, Session), Error> {
    if bundle.certificate.user() != *their_user {
        return Err(Error::WrongUser);
    }
    let ek = StaticSecret::from(ephemeral_secret);
    let ek_pub = XPublic::from(&ek).to_bytes();
    let ik_b = bundle.certificate.identity_key();
    let spk_b = bundle.prekey.public();
    let dh1 = dh(device.identity(), &spk_b)?;
    let dh2 = dh(&ek, &ik_b)?;
    let dh3 = dh(&ek, &spk_b)?;
    let (sk, ad) = derive(
        [&dh1, &dh2, &dh3],
        device.certificate(),
        &bundle.certificate,
        &ek_pub,
        &spk_b,
    );
    let header = InitialHeader {
        sender: device.certificate().clone(),
        ephemeral: ek_pub,
        prekey_id: bundle.prekey.id(),
    };
    Ok((header, Session::new_initiator(*sk, ad, spk_b)))
}

/// [`initiate`] with the ephemeral key drawn from `rng`.
pub fn initiate_with_rng<R: CryptoRng + ?Sized>(
    rng: &mut R,
    device: &Device,
    their_user: &PublicKey,
    bundle: &PrekeyBundle,
) -> Result<(InitialHeader, Session), Error> {
    let mut ek = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(ek.as_mut());
    initiate(device, their_user, bundle, *ek)
}

/// The responder's side: derives the session from an initiator's header and
/// the prekey secret it names. The sender's user is `header.sender.user()`;
/// the caller decides whether to accept it.
pub fn respond(
    device: &Device,
    prekey: &PrekeySecret,
    header: &InitialHeader,
) -> Result<Session, Error> {
    respond_as(device, device.certificate(), prekey, header)
}

/// [`respond`] for a sender that saw `certificate`, an earlier certificate
/// of this device (the same keys, an earlier expiry: the sender fetched our
/// bundle before we renewed it). The certificate is bound into the key
/// derivation, so the one the sender used must be the one given here.
pub fn respond_as(
    device: &Device,
    certificate: &DeviceCertificate,
    prekey: &PrekeySecret,
    header: &InitialHeader,
) -> Result<Session, Error> {
    if header.prekey_id != prekey.id {
        return Err(Error::PrekeyMismatch {
            found: header.prekey_id,
            expected: prekey.id,
        });
    }
    let ik_a = header.sender.identity_key();
    let spk_b = XPublic::from(&prekey.secret).to_bytes();
    let dh1 = dh(&prekey.secret, &ik_a)?;
    let dh2 = dh(device.identity(), &header.ephemeral)?;
    let dh3 = dh(&prekey.secret, &header.ephemeral)?;
    let (sk, ad) = derive(
        [&dh1, &dh2, &dh3],
        &header.sender,
        certificate,
        &header.ephemeral,
        &spk_b,
    );
    Ok(Session::new_responder(*sk, ad, *prekey.secret_bytes()))
}
