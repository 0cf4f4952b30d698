//! Signed DHT records and the per-kind [`Validator`] hook.
//!
//! ```protobuf
//! message Record {             // the exact bytes that are signed
//!   uint32 version = 1;        // RECORD_VERSION = 1
//!   bytes key = 2;             // 32-byte DHT key
//!   string kind = 3;           // record type, ≤ MAX_KIND_LEN bytes; picks the validator
//!   bytes value = 4;
//!   bytes publisher = 5;       // 32-byte peer id of the signer
//!   uint64 seq = 6;            // larger = newer
//!   uint64 expires = 7;        // wall clock, seconds since the Unix epoch
//! }
//! message SignedRecord {       // what travels and is stored
//!   bytes record = 1;          // an encoded Record, exactly as signed
//!   bytes signature = 2;       // ed25519 by publisher over
//!                              // signed_input("shoal/kad/record/1", record)
//! }
//! ```
//!
//! A [`SignedRecord`] can only be made by signing or by
//! [`SignedRecord::from_bytes`], which checks sizes and the signature; so
//! holding one means the publisher signed exactly these bytes. Whether the
//! record is *acceptable* (not expired, not too far in the future, allowed
//! by its kind's validator) depends on the time and on local policy: see
//! [`RecordPolicy`].

use std::fmt;

use bytes::Bytes;
use prost::Message as _;
use shoal_identity::{Keypair, PeerId, Purpose, SIGNATURE_LEN};

use crate::key::{KEY_LEN, Key};

/// The version of [`Record`].
pub const RECORD_VERSION: u32 = 1;

/// The purpose bound into record signatures.
pub const RECORD_PURPOSE: Purpose = Purpose::new("shoal/kad/record/1");

/// Largest encoded `Record` (the signed bytes) any node accepts. Protects
/// memory of every node that stores or relays records; a node may set a
/// lower `Config::max_record_size`.
pub const MAX_RECORD_SIZE: usize = 16 * 1024;

/// Largest encoded `SignedRecord`: the record plus signature and tags.
pub const MAX_SIGNED_RECORD_SIZE: usize = MAX_RECORD_SIZE + 96;

/// Longest record kind, in bytes.
pub const MAX_KIND_LEN: usize = 64;

mod wire {
    //! The protobuf schema.

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Record {
        #[prost(uint32, tag = "1")]
        pub(super) version: u32,
        #[prost(bytes = "vec", tag = "2")]
        pub(super) key: Vec<u8>,
        #[prost(string, tag = "3")]
        pub(super) kind: String,
        #[prost(bytes = "bytes", tag = "4")]
        pub(super) value: bytes::Bytes,
        #[prost(bytes = "vec", tag = "5")]
        pub(super) publisher: Vec<u8>,
        #[prost(uint64, tag = "6")]
        pub(super) seq: u64,
        #[prost(uint64, tag = "7")]
        pub(super) expires: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct SignedRecord {
        #[prost(bytes = "bytes", tag = "1")]
        pub(super) record: bytes::Bytes,
        #[prost(bytes = "vec", tag = "2")]
        pub(super) signature: Vec<u8>,
    }
}

/// The content of a DHT record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Where the record lives in the key space.
    pub key: Key,
    /// The record type; chooses the [`Validator`] (at most
    /// [`MAX_KIND_LEN`] bytes).
    pub kind: String,
    /// The payload.
    pub value: Bytes,
    /// The peer that signs the record.
    pub publisher: PeerId,
    /// Larger is newer; a store replaces a record only by a larger `seq`.
    pub seq: u64,
    /// Wall-clock expiry, seconds since the Unix epoch; the record is dead
    /// from this second on.
    pub expires: u64,
}

/// Why a record was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The envelope or the record is over its size limit.
    #[error("record of {0} bytes is over the limit")]
    TooLarge(usize),
    /// Not valid protobuf for the schema.
    #[error("malformed record: {0}")]
    Malformed(#[from] prost::DecodeError),
    /// A record version this implementation does not know.
    #[error("unsupported record version {0}")]
    UnsupportedVersion(u32),
    /// The key is not 32 bytes.
    #[error("record key of {0} bytes, expected {KEY_LEN}")]
    KeyLength(usize),
    /// The publisher is not a 32-byte valid ed25519 key.
    #[error("invalid record publisher")]
    InvalidPublisher,
    /// The kind is longer than [`MAX_KIND_LEN`].
    #[error("record kind of {0} bytes is over {MAX_KIND_LEN}")]
    KindTooLong(usize),
    /// The signature is not [`SIGNATURE_LEN`] bytes or does not verify.
    #[error("bad record signature")]
    BadSignature,
    /// The signing key is not the record's publisher.
    #[error("record signed by a key other than its publisher")]
    WrongSigner,
    /// The record's expiry has passed.
    #[error("record expired at {expires} (now {now})")]
    Expired {
        /// The record's expiry.
        expires: u64,
        /// The wall clock when checked.
        now: u64,
    },
    /// The expiry is further in the future than the policy allows.
    #[error("record expiry {expires} is beyond the allowed {limit}")]
    ExpiryTooFar {
        /// The record's expiry.
        expires: u64,
        /// The latest expiry accepted now.
        limit: u64,
    },
    /// The kind's validator refused the record.
    #[error("record refused by the {kind:?} validator: {reason}")]
    Refused {
        /// The record kind.
        kind: String,
        /// The validator's reason.
        reason: String,
    },
}

impl Record {
    /// Encodes the record (the bytes to sign).
    fn encode(&self) -> Vec<u8> {
        wire::Record {
            version: RECORD_VERSION,
            key: self.key.as_bytes().to_vec(),
            kind: self.kind.clone(),
            value: self.value.clone(),
            publisher: self.publisher.as_bytes().to_vec(),
            seq: self.seq,
            expires: self.expires,
        }
        .encode_to_vec()
    }

    fn decode(bytes: &Bytes) -> Result<Record, RecordError> {
        if bytes.len() > MAX_RECORD_SIZE {
            return Err(RecordError::TooLarge(bytes.len()));
        }
        let w = wire::Record::decode(bytes.clone())?;
        if w.version != RECORD_VERSION {
            return Err(RecordError::UnsupportedVersion(w.version));
        }
        let key = Key::try_from_slice(&w.key).ok_or(RecordError::KeyLength(w.key.len()))?;
        if w.kind.len() > MAX_KIND_LEN {
            return Err(RecordError::KindTooLong(w.kind.len()));
        }
        let publisher =
            PeerId::try_from_slice(&w.publisher).map_err(|_| RecordError::InvalidPublisher)?;
        Ok(Record {
            key,
            kind: w.kind,
            value: w.value,
            publisher,
            seq: w.seq,
            expires: w.expires,
        })
    }
}

/// A [`Record`] with a verified signature by its publisher, plus the exact
/// bytes that travel.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedRecord {
    record: Record,
    /// The encoded `SignedRecord` envelope, as received or built.
    envelope: Bytes,
}

impl fmt::Debug for SignedRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedRecord")
            .field("key", &self.record.key)
            .field("kind", &self.record.kind)
            .field("publisher", &self.record.publisher)
            .field("seq", &self.record.seq)
            .field("expires", &self.record.expires)
            .field("value_len", &self.record.value.len())
            .finish()
    }
}

impl SignedRecord {
    /// Signs `record` with `keypair`, which must be the record's publisher.
    pub fn sign(keypair: &Keypair, record: Record) -> Result<SignedRecord, RecordError> {
        if keypair.peer_id() != record.publisher {
            return Err(RecordError::WrongSigner);
        }
        if record.kind.len() > MAX_KIND_LEN {
            return Err(RecordError::KindTooLong(record.kind.len()));
        }
        let bytes = record.encode();
        if bytes.len() > MAX_RECORD_SIZE {
            return Err(RecordError::TooLarge(bytes.len()));
        }
        let signature = keypair.sign(RECORD_PURPOSE, &bytes);
        let envelope = wire::SignedRecord {
            record: Bytes::from(bytes),
            signature: signature.to_vec(),
        }
        .encode_to_vec();
        Ok(SignedRecord {
            record,
            envelope: Bytes::from(envelope),
        })
    }

    /// Signs `record` with `keypair` and encodes the envelope *without*
    /// the checks of [`SignedRecord::sign`] (signer is the publisher, kind
    /// and size limits).
    ///
    /// Only for tests and tools that play a forger: a record claiming a
    /// publisher that did not sign it, or an oversized one. Receivers
    /// reject such bytes in [`SignedRecord::from_bytes`].
    pub fn sign_unchecked(keypair: &Keypair, record: &Record) -> Bytes {
        let bytes = record.encode();
        let signature = keypair.sign(RECORD_PURPOSE, &bytes);
        let envelope = wire::SignedRecord {
            record: Bytes::from(bytes),
            signature: signature.to_vec(),
        };
        Bytes::from(envelope.encode_to_vec())
    }

    /// Decodes an envelope: sizes, version, fields, then the signature.
    pub fn from_bytes(envelope: Bytes) -> Result<SignedRecord, RecordError> {
        if envelope.len() > MAX_SIGNED_RECORD_SIZE {
            return Err(RecordError::TooLarge(envelope.len()));
        }
        let w = wire::SignedRecord::decode(envelope.clone())?;
        let record = Record::decode(&w.record)?;
        if w.signature.len() != SIGNATURE_LEN {
            return Err(RecordError::BadSignature);
        }
        let key = record
            .publisher
            .public_key()
            .map_err(|_| RecordError::InvalidPublisher)?;
        key.verify(RECORD_PURPOSE, &w.record, &w.signature)
            .map_err(|_| RecordError::BadSignature)?;
        Ok(SignedRecord { record, envelope })
    }

    /// The record.
    pub fn record(&self) -> &Record {
        &self.record
    }

    /// The envelope bytes, exactly as they travel.
    pub fn to_bytes(&self) -> Bytes {
        self.envelope.clone()
    }

    /// Size of the envelope in bytes.
    pub fn encoded_len(&self) -> usize {
        self.envelope.len()
    }

    /// Whether the record is dead at wall time `now` (unix seconds).
    pub fn is_expired(&self, now: u64) -> bool {
        now >= self.record.expires
    }

    /// Whether `self` should replace `other` (same key): a larger `seq`
    /// wins; for equal `seq` the smaller envelope bytes win, so every node
    /// picks the same record.
    pub fn is_newer_than(&self, other: &SignedRecord) -> bool {
        (self.record.seq, std::cmp::Reverse(&self.envelope))
            > (other.record.seq, std::cmp::Reverse(&other.envelope))
    }
}

/// Decides whether records of one kind are acceptable, beyond the
/// signature, size and expiry checks every record gets.
///
/// A validator typically checks that the key matches the content (for
/// example that a presence record's key is the hash of the user key that
/// signed the value) and that the value parses. It runs once per record
/// received (stored, or returned by a lookup).
pub trait Validator: Send + Sync {
    /// `Ok` if `record` may be stored and returned; the error text is kept
    /// in [`RecordError::Refused`].
    fn validate(&self, record: &Record) -> Result<(), String>;
}

impl<F> Validator for F
where
    F: Fn(&Record) -> Result<(), String> + Send + Sync,
{
    fn validate(&self, record: &Record) -> Result<(), String> {
        self(record)
    }
}

/// The local acceptance rules: time limits and validators per kind.
#[derive(Default)]
pub struct RecordPolicy {
    /// Latest expiry accepted, as seconds after now (plus the skew
    /// tolerance).
    pub(crate) max_ttl: u64,
    /// Clock skew tolerated on `expires`.
    pub(crate) skew: u64,
    /// Whether kinds without a validator are accepted.
    pub(crate) accept_unknown_kinds: bool,
    validators: std::collections::BTreeMap<String, Box<dyn Validator>>,
}

impl fmt::Debug for RecordPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordPolicy")
            .field("max_ttl", &self.max_ttl)
            .field("skew", &self.skew)
            .field("accept_unknown_kinds", &self.accept_unknown_kinds)
            .field("kinds", &self.validators.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl RecordPolicy {
    /// A policy accepting expiries up to `max_ttl + skew` seconds ahead.
    pub(crate) fn new(max_ttl: u64, skew: u64, accept_unknown_kinds: bool) -> RecordPolicy {
        RecordPolicy {
            max_ttl,
            skew,
            accept_unknown_kinds,
            validators: Default::default(),
        }
    }

    /// Sets the validator of `kind`.
    pub(crate) fn set_validator(&mut self, kind: &str, validator: Box<dyn Validator>) {
        self.validators.insert(kind.to_owned(), validator);
    }

    /// Checks a verified record at wall time `now`.
    pub fn check(&self, record: &SignedRecord, now: u64) -> Result<(), RecordError> {
        let r = record.record();
        if record.is_expired(now) {
            return Err(RecordError::Expired {
                expires: r.expires,
                now,
            });
        }
        let limit = now.saturating_add(self.max_ttl).saturating_add(self.skew);
        if r.expires > limit {
            return Err(RecordError::ExpiryTooFar {
                expires: r.expires,
                limit,
            });
        }
        match self.validators.get(&r.kind) {
            Some(v) => v.validate(r).map_err(|reason| RecordError::Refused {
                kind: r.kind.clone(),
                reason,
            }),
            None if self.accept_unknown_kinds => Ok(()),
            None => Err(RecordError::Refused {
                kind: r.kind.clone(),
                reason: "no validator for this kind".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn sample(keypair: &Keypair, seq: u64) -> Record {
        Record {
            key: Key::from_bytes([0xab; 32]),
            kind: "test".into(),
            value: Bytes::from_static(b"hello"),
            publisher: keypair.peer_id(),
            seq,
            expires: 1_700_003_600,
        }
    }

    /// The vector printed in docs/PROTOCOL.md, section 8.
    #[test]
    fn documented_vector() {
        let keypair = Keypair::from_secret_bytes(&[1u8; 32]);
        let signed = SignedRecord::sign(&keypair, sample(&keypair, 7)).unwrap();
        let w = wire::SignedRecord::decode(signed.to_bytes()).unwrap();
        assert_eq!(
            hex(&w.record),
            "0801\
             1220abababababababababababababababababababababababababababababababab\
             1a0474657374\
             220568656c6c6f\
             2a208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c\
             3007\
             3890fecfaa06"
        );
        assert_eq!(
            hex(&w.signature),
            "e4f9be396d50970e92867ba19dc46d6722dbea7e77ed0e81aef22bea187981a3\
             a9665f2bfade45c4bfe81ba8222f9b58f5c22ccd3ac0c1cef894e98a86763204"
        );
        assert_eq!(signed.encoded_len(), 159);
        assert_eq!(
            hex(&shoal_identity::signed_input(RECORD_PURPOSE, b"")),
            "1273686f616c2f6b61642f7265636f72642f31"
        );
        assert_eq!(MAX_SIGNED_RECORD_SIZE, 16_480);
        assert_eq!(SignedRecord::from_bytes(signed.to_bytes()).unwrap(), signed);
    }

    #[test]
    fn rejects_tampering_and_bad_fields() {
        let keypair = Keypair::from_secret_bytes(&[1u8; 32]);
        let other = Keypair::from_secret_bytes(&[2u8; 32]);
        assert_eq!(
            SignedRecord::sign(&other, sample(&keypair, 1)).unwrap_err(),
            RecordError::WrongSigner
        );
        let signed = SignedRecord::sign(&keypair, sample(&keypair, 1)).unwrap();
        let mut w = wire::SignedRecord::decode(signed.to_bytes()).unwrap();
        w.signature[0] ^= 1;
        let bad = Bytes::from(w.encode_to_vec());
        assert_eq!(
            SignedRecord::from_bytes(bad).unwrap_err(),
            RecordError::BadSignature
        );
        // A record claiming another publisher than the signer fails the
        // signature check.
        let mut claimed = sample(&keypair, 1);
        claimed.publisher = other.peer_id();
        let bytes = claimed.encode();
        let sig = keypair.sign(RECORD_PURPOSE, &bytes);
        let env = wire::SignedRecord {
            record: Bytes::from(bytes),
            signature: sig.to_vec(),
        };
        assert_eq!(
            SignedRecord::from_bytes(Bytes::from(env.encode_to_vec())).unwrap_err(),
            RecordError::BadSignature
        );
        assert!(matches!(
            SignedRecord::from_bytes(Bytes::from_static(&[0xff, 0xff])),
            Err(RecordError::Malformed(_))
        ));
        assert!(matches!(
            SignedRecord::from_bytes(Bytes::from(vec![0; MAX_SIGNED_RECORD_SIZE + 1])),
            Err(RecordError::TooLarge(_))
        ));
        let mut big = sample(&keypair, 1);
        big.value = Bytes::from(vec![0; MAX_RECORD_SIZE]);
        assert!(matches!(
            SignedRecord::sign(&keypair, big),
            Err(RecordError::TooLarge(_))
        ));
    }

    #[test]
    fn unchecked_signing_makes_what_receivers_refuse() {
        let keypair = Keypair::from_secret_bytes(&[1u8; 32]);
        let other = Keypair::from_secret_bytes(&[2u8; 32]);
        // With the publisher's key: the same bytes as `sign`.
        let honest = sample(&keypair, 3);
        assert_eq!(
            SignedRecord::sign_unchecked(&keypair, &honest),
            SignedRecord::sign(&keypair, honest.clone())
                .unwrap()
                .to_bytes()
        );
        // Signed by someone else than the claimed publisher.
        let forged = SignedRecord::sign_unchecked(&other, &honest);
        assert_eq!(
            SignedRecord::from_bytes(forged).unwrap_err(),
            RecordError::BadSignature
        );
        // Over the size limit.
        let mut big = sample(&keypair, 4);
        big.value = Bytes::from(vec![7; MAX_RECORD_SIZE]);
        let big = SignedRecord::sign_unchecked(&keypair, &big);
        assert!(big.len() > MAX_SIGNED_RECORD_SIZE);
        assert!(matches!(
            SignedRecord::from_bytes(big),
            Err(RecordError::TooLarge(_))
        ));
    }

    #[test]
    fn policy_checks_time_and_validators() {
        let keypair = Keypair::from_secret_bytes(&[1u8; 32]);
        let signed = SignedRecord::sign(&keypair, sample(&keypair, 1)).unwrap();
        let mut policy = RecordPolicy::new(3600, 60, true);
        assert_eq!(policy.check(&signed, 1_700_000_000), Ok(()));
        assert!(matches!(
            policy.check(&signed, 1_700_003_600),
            Err(RecordError::Expired { .. })
        ));
        assert!(matches!(
            policy.check(&signed, 1_699_990_000),
            Err(RecordError::ExpiryTooFar { .. })
        ));
        policy.set_validator(
            "test",
            Box::new(|r: &Record| {
                if r.value.starts_with(b"hello") {
                    Ok(())
                } else {
                    Err("not a greeting".to_string())
                }
            }),
        );
        assert_eq!(policy.check(&signed, 1_700_000_000), Ok(()));
        let mut rude = sample(&keypair, 2);
        rude.value = Bytes::from_static(b"go away");
        let rude = SignedRecord::sign(&keypair, rude).unwrap();
        assert!(matches!(
            policy.check(&rude, 1_700_000_000),
            Err(RecordError::Refused { .. })
        ));
        assert!(rude.is_newer_than(&signed));
        assert!(!signed.is_newer_than(&rude));
        let strict = RecordPolicy::new(3600, 60, false);
        assert!(matches!(
            strict.check(&signed, 1_700_000_000),
            Err(RecordError::Refused { .. })
        ));
    }
}
