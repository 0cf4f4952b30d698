//! The envelope: what travels between devices around one ratchet message,
//! and the padding that hides the payload's length inside it.
//!
//! A forwarding node sees exactly: the version and type bytes, the
//! recipient device's public key, either the sender's initial header (first
//! contact: the sender's device certificate, an ephemeral key and a prekey
//! id) or a 16-byte session id, the ratchet header (the sender's current
//! ratchet public key and two counters) and a ciphertext whose length is one
//! of [`BUCKETS`] plus the 16-byte tag. Message ids, counters, dependencies,
//! timestamps, bodies and even the payload type (message, ack, receipt,
//! resend request) are inside the ciphertext. Layout: docs/PROTOCOL.md,
//! section 11.

use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};
use shoal_identity::PeerId;

use crate::Error;
use crate::message::Reader;
use crate::ratchet::{HEADER_LEN, TAG_LEN};
use crate::x3dh::{INITIAL_HEADER_LEN, InitialHeader};

/// Version byte of an envelope.
pub const ENVELOPE_VERSION: u8 = 1;
/// Sizes a padded plaintext may have; the smallest that fits is used.
pub const BUCKETS: [usize; 5] = [256, 1024, 4096, 16 * 1024, 64 * 1024];
/// Largest payload that fits the largest bucket (4 bytes carry its length).
pub const MAX_PAYLOAD_LEN: usize = BUCKETS[BUCKETS.len() - 1] - 4;
/// Length of a session id.
pub const SESSION_ID_LEN: usize = 16;
/// Largest envelope: an initial envelope around the largest bucket.
pub const MAX_ENVELOPE_LEN: usize =
    2 + 32 + INITIAL_HEADER_LEN + HEADER_LEN + BUCKETS[BUCKETS.len() - 1] + TAG_LEN;
/// Hash domain of a session id.
pub const SESSION_ID_DOMAIN: &[u8] = b"shoal/im/session-id/1";

const TYPE_INITIAL: u8 = 1;
const TYPE_NORMAL: u8 = 2;
/// Type byte of a reset request ([`crate::reset`]), which shares the
/// envelope's first two bytes.
pub(crate) const TYPE_RESET: u8 = 3;

/// Names a ratchet session: the first 16 bytes of BLAKE2b-256 over
/// `len(domain) | domain | initial header`. Both ends compute it from the
/// initial header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub [u8; SESSION_ID_LEN]);

impl SessionId {
    /// The id of the session the initial header `header` starts.
    pub fn of(header: &InitialHeader) -> SessionId {
        let mut hash = Blake2b::<U32>::new();
        hash.update([SESSION_ID_DOMAIN.len() as u8]);
        hash.update(SESSION_ID_DOMAIN);
        hash.update(header.encode());
        let digest = hash.finalize();
        let mut id = [0u8; SESSION_ID_LEN];
        id.copy_from_slice(&digest[..SESSION_ID_LEN]);
        SessionId(id)
    }
}

/// How the recipient finds the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionRef {
    /// First contact: the recipient derives the session from this header
    /// (sent until the sender has heard back on the session).
    Initial(Box<InitialHeader>),
    /// An established session.
    Known(SessionId),
}

impl SessionRef {
    /// The session id either way.
    pub fn id(&self) -> SessionId {
        match self {
            SessionRef::Initial(header) => SessionId::of(header),
            SessionRef::Known(id) => *id,
        }
    }
}

/// One envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The recipient device (its ed25519 key).
    pub recipient: PeerId,
    /// The session.
    pub session: SessionRef,
    /// The ratchet message: `header | ciphertext | tag`.
    pub ratchet: Vec<u8>,
}

impl Envelope {
    /// Layout: `version: u8 | type: u8 (1 initial, 2 known) | recipient: 32 |
    /// initial header (INITIAL_HEADER_LEN) or session id: 16 | ratchet message`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + 32 + INITIAL_HEADER_LEN + self.ratchet.len());
        out.push(ENVELOPE_VERSION);
        match &self.session {
            SessionRef::Initial(header) => {
                out.push(TYPE_INITIAL);
                out.extend_from_slice(self.recipient.as_bytes());
                out.extend_from_slice(&header.encode());
            }
            SessionRef::Known(id) => {
                out.push(TYPE_NORMAL);
                out.extend_from_slice(self.recipient.as_bytes());
                out.extend_from_slice(&id.0);
            }
        }
        out.extend_from_slice(&self.ratchet);
        out
    }

    /// Parses an envelope (the initial header's certificate is verified;
    /// the ratchet message is checked by decryption).
    pub fn decode(bytes: &[u8]) -> Result<Envelope, Error> {
        const WHAT: Error = Error::Malformed { what: "envelope" };
        if bytes.len() > MAX_ENVELOPE_LEN {
            return Err(WHAT);
        }
        let mut r = Reader(bytes);
        let version = r.u8().ok_or(WHAT)?;
        if version != ENVELOPE_VERSION {
            return Err(Error::UnsupportedVersion {
                what: "envelope",
                found: version,
            });
        }
        let kind = r.u8().ok_or(WHAT)?;
        let recipient = PeerId::try_from_slice(r.take(32).ok_or(WHAT)?).map_err(|_| WHAT)?;
        let session = match kind {
            TYPE_INITIAL => SessionRef::Initial(Box::new(InitialHeader::decode(
                r.take(INITIAL_HEADER_LEN).ok_or(WHAT)?,
            )?)),
            TYPE_NORMAL => {
                let mut id = [0u8; SESSION_ID_LEN];
                id.copy_from_slice(r.take(SESSION_ID_LEN).ok_or(WHAT)?);
                SessionRef::Known(SessionId(id))
            }
            _ => return Err(WHAT),
        };
        if r.0.len() < HEADER_LEN + BUCKETS[0] + TAG_LEN {
            return Err(WHAT);
        }
        Ok(Envelope {
            recipient,
            session,
            ratchet: r.0.to_vec(),
        })
    }
}

/// Pads `payload` to the smallest bucket: `len: u32 BE | payload | zeros`.
pub fn pad(payload: &[u8]) -> Result<Vec<u8>, Error> {
    let bucket = BUCKETS
        .iter()
        .copied()
        .find(|b| payload.len() + 4 <= *b)
        .ok_or(Error::Malformed {
            what: "payload size",
        })?;
    let mut out = Vec::with_capacity(bucket);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out.resize(bucket, 0);
    Ok(out)
}

/// Removes the padding added by [`pad`], checking the length is a bucket
/// and the padding is all zeros.
pub fn unpad(padded: &[u8]) -> Result<&[u8], Error> {
    const WHAT: Error = Error::Malformed { what: "padding" };
    if !BUCKETS.contains(&padded.len()) {
        return Err(WHAT);
    }
    let mut r = Reader(padded);
    let len = r.u32().ok_or(WHAT)? as usize;
    let payload = r.take(len).ok_or(WHAT)?;
    if r.0.iter().any(|&b| b != 0) {
        return Err(WHAT);
    }
    Ok(payload)
}
