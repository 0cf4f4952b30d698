//! The user directory: presence records and prekey bundles in the Kademlia
//! DHT, so a user known only by its [`UserId`] can be found and contacted.
//!
//! Each user's device publishes two DHT records, both signed (as DHT
//! records) by the device's node key:
//!
//! | kind | key | value |
//! |---|---|---|
//! | [`PRESENCE_KIND`] | [`presence_key`]: `Key::for_name(PRESENCE_KEY_PURPOSE, user root key)` | an encoded [`PresenceRecord`] |
//! | [`PREKEYS_KIND`] | [`prekeys_key`]: `Key::for_name(PREKEY_KEY_PURPOSE, user root key)` | an encoded [`PrekeyBundle`] |
//!
//! The [`PresenceValidator`] and [`PrekeysValidator`] (install them on every
//! node with [`install_validators`]) accept a record only if its value
//! parses and verifies, its key is the one derived from the user the
//! certificate names, and its publisher is the certified device. So only a
//! device certified by the user's root key can publish under that user's
//! keys. [`lookup`] repeats every check on what the DHT returns, whatever
//! the answering nodes did.
//!
//! One device per user: the DHT holds one record per key and keeps it for
//! its publisher while it lives, so a user's new device can take over the
//! keys only once the old device's records have expired.
//!
//! Format details: docs/PROTOCOL.md, section 11.3.

use shoal::{Multiaddr, PeerId};
use shoal_im::presence::{PREKEY_KEY_PURPOSE, PRESENCE_KEY_PURPOSE, PresenceRecord};
use shoal_im::{Device, DeviceCertificate, PrekeyBundle, UserId};
use shoal_kad::{Handle, HandleError, Key, Record, RecordError, SignedRecord, Validator};

/// DHT record kind of presence records.
pub const PRESENCE_KIND: &str = "shoal/im/presence";
/// DHT record kind of prekey bundles.
pub const PREKEYS_KIND: &str = "shoal/im/prekeys";
/// Suggested lifetime of published records (24 h); well under the DHT's
/// default limit of 48 h.
pub const DEFAULT_TTL_SECS: u64 = 24 * 3600;
/// Suggested interval between publications with a fresh `seq` and expiry
/// (6 h), so records never lapse while the device runs, even if a few
/// publications fail.
pub const REPUBLISH_INTERVAL_SECS: u64 = 6 * 3600;

/// Why a directory operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryError {
    /// Building or checking a presence record or bundle failed (bounds,
    /// signatures, wrong user, expired).
    #[error(transparent)]
    Im(#[from] shoal_im::Error),
    /// The DHT record could not be signed (too large, kind too long).
    #[error(transparent)]
    Record(#[from] RecordError),
    /// The DHT command failed (refused by the local policy, or the
    /// Kademlia service stopped).
    #[error(transparent)]
    Kad(#[from] HandleError),
    /// A record returned by the DHT does not pass its kind's checks.
    #[error("invalid {kind} record: {reason}")]
    Invalid {
        /// The record kind.
        kind: &'static str,
        /// What was wrong.
        reason: String,
    },
}

/// What [`lookup`] found about a user: the device to talk to and, if one is
/// published, the bundle to start a session with. Everything in it has been
/// verified against the user's root key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryEntry {
    /// The device's node (its peer id is the certified device key).
    pub device: PeerId,
    /// The device certificate, signed by the user's root key.
    pub certificate: DeviceCertificate,
    /// Where the device listens. Addresses this build cannot parse are
    /// left out.
    pub addresses: Vec<Multiaddr>,
    /// The presence record's sequence number.
    pub seq: u64,
    /// The presence record's expiry, Unix seconds.
    pub expires: u64,
    /// The prekey bundle, if one was found that is live and made with the
    /// same certificate as the presence record.
    pub bundle: Option<PrekeyBundle>,
}

/// DHT key of `user`'s presence record.
pub fn presence_key(user: &UserId) -> Key {
    Key::for_name(PRESENCE_KEY_PURPOSE, &user.to_bytes())
}

/// DHT key of `user`'s prekey bundle.
pub fn prekeys_key(user: &UserId) -> Key {
    Key::for_name(PREKEY_KEY_PURPOSE, &user.to_bytes())
}

fn user_of(certificate: &DeviceCertificate) -> UserId {
    UserId::new(certificate.user())
}

/// Signs `device`'s presence record (addresses without their `/p2p/`
/// suffix: the peer id is in the certificate) and wraps it in a DHT
/// record published by the device's node key, with the same `seq` and
/// `expires` as the presence record.
pub fn presence_record(
    device: &Device,
    addresses: &[Multiaddr],
    seq: u64,
    expires: u64,
) -> Result<SignedRecord, DirectoryError> {
    let texts: Vec<String> = addresses
        .iter()
        .map(|a| a.without_peer_id().to_string())
        .collect();
    let value = PresenceRecord::sign(device, &texts, seq, expires)?;
    let record = Record {
        key: presence_key(&user_of(device.certificate())),
        kind: PRESENCE_KIND.to_owned(),
        value: value.into(),
        publisher: device.signing_key().peer_id(),
        seq,
        expires,
    };
    Ok(SignedRecord::sign(device.signing_key(), record)?)
}

/// Wraps `bundle`, which must be made with `device`'s certificate
/// ([`shoal_im::Error::WrongUser`] otherwise), in a DHT record published by
/// the device's node key.
pub fn prekeys_record(
    device: &Device,
    bundle: &PrekeyBundle,
    seq: u64,
    expires: u64,
) -> Result<SignedRecord, DirectoryError> {
    if bundle.certificate != *device.certificate() {
        return Err(shoal_im::Error::WrongUser.into());
    }
    let record = Record {
        key: prekeys_key(&user_of(device.certificate())),
        kind: PREKEYS_KIND.to_owned(),
        value: bundle.encode().to_vec().into(),
        publisher: device.signing_key().peer_id(),
        seq,
        expires,
    };
    Ok(SignedRecord::sign(device.signing_key(), record)?)
}

/// The checks of [`PresenceValidator`], returning the parsed value.
fn check_presence(record: &Record) -> Result<PresenceRecord, String> {
    let presence = PresenceRecord::decode(&record.value).map_err(|e| e.to_string())?;
    if record.key != presence_key(&presence.user()) {
        return Err("key is not the presence key of the certificate's user".into());
    }
    if record.publisher != presence.certificate().device().peer_id() {
        return Err("publisher is not the certified device".into());
    }
    if record.seq != presence.seq() || record.expires != presence.expires() {
        return Err("seq or expiry differs from the presence record's".into());
    }
    Ok(presence)
}

/// The checks of [`PrekeysValidator`], returning the parsed value.
fn check_prekeys(record: &Record) -> Result<PrekeyBundle, String> {
    let bundle = PrekeyBundle::decode(&record.value).map_err(|e| e.to_string())?;
    if record.key != prekeys_key(&user_of(&bundle.certificate)) {
        return Err("key is not the prekeys key of the certificate's user".into());
    }
    if record.publisher != bundle.certificate.device().peer_id() {
        return Err("publisher is not the certified device".into());
    }
    Ok(bundle)
}

/// Validator of [`PRESENCE_KIND`] records: the value is a valid
/// [`PresenceRecord`] (certificate, bounds, device signature), the key is
/// [`presence_key`] of the certificate's user, the publisher is the
/// certified device, and the DHT record's `seq` and `expires` equal the
/// presence record's (so the DHT's expiry check covers the value).
#[derive(Debug, Clone, Copy, Default)]
pub struct PresenceValidator;

impl Validator for PresenceValidator {
    fn validate(&self, record: &Record) -> Result<(), String> {
        check_presence(record).map(|_| ())
    }
}

/// Validator of [`PREKEYS_KIND`] records: the value is a valid
/// [`PrekeyBundle`] (certificate and prekey signatures), the key is
/// [`prekeys_key`] of the certificate's user, and the publisher is the
/// certified device.
#[derive(Debug, Clone, Copy, Default)]
pub struct PrekeysValidator;

impl Validator for PrekeysValidator {
    fn validate(&self, record: &Record) -> Result<(), String> {
        check_prekeys(record).map(|_| ())
    }
}

/// Installs [`PresenceValidator`] and [`PrekeysValidator`] on a Kademlia
/// node. Every node of a messaging network should, so that no node stores
/// or serves a forged record.
pub fn install_validators(handle: &Handle) {
    handle.set_validator(PRESENCE_KIND, Box::new(PresenceValidator));
    handle.set_validator(PREKEYS_KIND, Box::new(PrekeysValidator));
}

/// Publishes `device`'s presence (at `addresses`) and `bundle`, both with
/// sequence number `seq` (use a value larger than any earlier publication's,
/// such as the wall time) and expiry `now_unix + ttl_secs`. The two
/// publications run concurrently. Returns how many nodes confirmed storing
/// each: `(presence, prekeys)`.
pub async fn publish(
    handle: &Handle,
    device: &Device,
    addresses: &[Multiaddr],
    bundle: &PrekeyBundle,
    seq: u64,
    ttl_secs: u64,
    now_unix: u64,
) -> Result<(usize, usize), DirectoryError> {
    let expires = now_unix.saturating_add(ttl_secs);
    let presence = presence_record(device, addresses, seq, expires)?;
    let prekeys = prekeys_record(device, bundle, seq, expires)?;
    let (p, b) = tokio::join!(handle.put_record(presence), handle.put_record(prekeys));
    let (stored_presence, _) = p?;
    let (stored_prekeys, _) = b?;
    tracing::debug!(
        user = %user_of(device.certificate()),
        stored_presence,
        stored_prekeys,
        "published presence and prekeys"
    );
    Ok((stored_presence, stored_prekeys))
}

/// Looks up `user`'s presence record and prekey bundle (two DHT lookups,
/// run concurrently) and verifies them at wall time `now_unix`: signatures,
/// keys, publishers, the user, the presence record's expiry (with
/// [`shoal_im::presence::PRESENCE_CLOCK_SKEW`]), and that the bundle was
/// made with the presence record's certificate.
///
/// `Ok(None)` if no presence record is found. A presence record that fails
/// a check is an error ([`DirectoryError::Invalid`], or
/// [`DirectoryError::Im`] for the wrong user or an expired record); a
/// bundle that fails one is left out (`bundle: None`), since the device can
/// still be reached.
pub async fn lookup(
    handle: &Handle,
    user: &UserId,
    now_unix: u64,
) -> Result<Option<DirectoryEntry>, DirectoryError> {
    let (p, b) = tokio::join!(
        handle.get_record(presence_key(user)),
        handle.get_record(prekeys_key(user))
    );
    let (presence, _) = p?;
    let Some(presence) = presence else {
        return Ok(None);
    };
    let record = presence.record();
    if record.kind != PRESENCE_KIND {
        return Err(DirectoryError::Invalid {
            kind: PRESENCE_KIND,
            reason: format!("record of kind {:?}", record.kind),
        });
    }
    let parsed = check_presence(record).map_err(|reason| DirectoryError::Invalid {
        kind: PRESENCE_KIND,
        reason,
    })?;
    parsed.verify_for(user, now_unix)?;
    let certificate = parsed.certificate().clone();
    let addresses = parsed
        .addresses()
        .iter()
        .filter_map(|text| match text.parse::<Multiaddr>() {
            Ok(addr) => Some(addr),
            Err(e) => {
                tracing::debug!(%user, address = %text, error = %e, "unparsable address skipped");
                None
            }
        })
        .collect();
    let bundle = match b {
        Ok((Some(signed), _)) => match verify_bundle(&signed, &certificate, now_unix) {
            Ok(bundle) => Some(bundle),
            Err(reason) => {
                tracing::warn!(%user, %reason, "prekey bundle ignored");
                None
            }
        },
        Ok((None, _)) => None,
        Err(e) => {
            tracing::debug!(%user, error = %e, "prekey lookup failed");
            None
        }
    };
    Ok(Some(DirectoryEntry {
        device: certificate.device().peer_id(),
        certificate,
        addresses,
        seq: parsed.seq(),
        expires: parsed.expires(),
        bundle,
    }))
}

/// Checks a prekeys record found for the user of `certificate`.
fn verify_bundle(
    signed: &SignedRecord,
    certificate: &DeviceCertificate,
    now_unix: u64,
) -> Result<PrekeyBundle, String> {
    let record = signed.record();
    if record.kind != PREKEYS_KIND {
        return Err(format!("record of kind {:?}", record.kind));
    }
    let bundle = check_prekeys(record)?;
    if bundle.certificate != *certificate {
        return Err("bundle certificate differs from the presence certificate".into());
    }
    let limit = record
        .expires
        .saturating_add(shoal_im::presence::PRESENCE_CLOCK_SKEW);
    if now_unix >= limit {
        return Err(format!("expired at {}", record.expires));
    }
    Ok(bundle)
}
