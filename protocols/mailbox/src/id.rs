//! What names a mailbox: its [`Descriptor`] (verification key, write policy,
//! retention) and its [`MailboxId`], the hash of the descriptor.
//!
//! The policies are part of what is hashed, so whoever knows an id knows
//! the rules of its mailbox, and nobody can open a mailbox under someone
//! else's id with looser rules: a request names the descriptor, and a
//! replica checks it hashes to the id before anything else.

use std::fmt;

use blake2::{Blake2b, Digest, digest::consts::U32};
use shoal_identity::{PublicKey, Purpose, signed_input};

use crate::wire::DecodeError;

/// Length of a [`MailboxId`] and of an [`EnvelopeHash`].
pub const ID_LEN: usize = 32;

/// Length of an encoded [`Descriptor`].
pub const DESCRIPTOR_LEN: usize = 35;

/// The descriptor format version (its first byte).
pub const DESCRIPTOR_VERSION: u8 = 1;

/// Domain of the hash that makes a descriptor's id.
pub const ID_PURPOSE: Purpose = Purpose::new("shoal/mailbox/id/1");

/// Domain of the hash that names an envelope in receipts and acks.
pub const ENVELOPE_PURPOSE: Purpose = Purpose::new("shoal/mailbox/envelope/1");

fn blake2b256(purpose: Purpose, bytes: &[u8]) -> [u8; ID_LEN] {
    Blake2b::<U32>::digest(signed_input(purpose, bytes)).into()
}

/// A mailbox's name: BLAKE2b-256 of its encoded [`Descriptor`]. It is also
/// the mailbox's DHT key, so its replicas are the nodes closest to it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MailboxId([u8; ID_LEN]);

impl MailboxId {
    /// The id with these bytes.
    pub const fn from_bytes(bytes: [u8; ID_LEN]) -> MailboxId {
        MailboxId(bytes)
    }

    /// The id in `bytes`, if they are exactly [`ID_LEN`] long.
    pub fn try_from_slice(bytes: &[u8]) -> Option<MailboxId> {
        bytes.try_into().ok().map(MailboxId)
    }

    /// The 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; ID_LEN] {
        &self.0
    }
}

impl fmt::Debug for MailboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MailboxId({})", hex_prefix(&self.0))
    }
}

impl fmt::Display for MailboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex_prefix(&self.0))
    }
}

/// The name of one envelope: BLAKE2b-256 of its exact bytes under
/// [`ENVELOPE_PURPOSE`]. Receipts and acks name envelopes by it, so a
/// replica never sees anything the envelope does not show.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EnvelopeHash([u8; ID_LEN]);

impl EnvelopeHash {
    /// The hash of `envelope`.
    pub fn of(envelope: &[u8]) -> EnvelopeHash {
        EnvelopeHash(blake2b256(ENVELOPE_PURPOSE, envelope))
    }

    /// The hash with these bytes.
    pub const fn from_bytes(bytes: [u8; ID_LEN]) -> EnvelopeHash {
        EnvelopeHash(bytes)
    }

    /// The hash in `bytes`, if they are exactly [`ID_LEN`] long.
    pub fn try_from_slice(bytes: &[u8]) -> Option<EnvelopeHash> {
        bytes.try_into().ok().map(EnvelopeHash)
    }

    /// The 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; ID_LEN] {
        &self.0
    }
}

impl fmt::Debug for EnvelopeHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EnvelopeHash({})", hex_prefix(&self.0))
    }
}

fn hex_prefix(bytes: &[u8]) -> String {
    bytes[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Who may store envelopes in a mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WritePolicy {
    /// Only requests signed with the mailbox key. A 1:1 mailbox is of this
    /// kind: both devices of the pair derive its key, nobody else can.
    Owner,
    /// Anyone who knows the id, unsigned (a first-contact inbox); only the
    /// replicas' per-mailbox quotas and per-peer rates bound it.
    Open,
}

impl WritePolicy {
    fn to_byte(self) -> u8 {
        match self {
            WritePolicy::Owner => 1,
            WritePolicy::Open => 2,
        }
    }

    fn from_byte(b: u8) -> Option<WritePolicy> {
        match b {
            1 => Some(WritePolicy::Owner),
            2 => Some(WritePolicy::Open),
            // 3 is kept for writers holding a capability the owner signed.
            _ => None,
        }
    }
}

/// When a replica deletes an envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Retention {
    /// On the owner's ack, or at the envelope's expiry if none comes.
    UntilAck,
    /// At the envelope's expiry only; acks are refused.
    Expiry,
}

impl Retention {
    fn to_byte(self) -> u8 {
        match self {
            Retention::UntilAck => 1,
            Retention::Expiry => 2,
        }
    }

    fn from_byte(b: u8) -> Option<Retention> {
        match b {
            1 => Some(Retention::UntilAck),
            2 => Some(Retention::Expiry),
            _ => None,
        }
    }
}

/// Everything a replica needs to know about a mailbox, sent with every
/// request: the key that signs the owner's requests and the two policies.
///
/// Encoding (35 bytes): `version (1) | key (32) | write (1) | retention (1)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Descriptor {
    /// Verifies the owner's fetch, ack and (for [`WritePolicy::Owner`])
    /// store requests.
    pub key: PublicKey,
    /// Who may store.
    pub write: WritePolicy,
    /// When stored envelopes go.
    pub retention: Retention,
}

impl Descriptor {
    /// A pairwise mailbox of verification key `key`: only the holders of
    /// the key pair write, and envelopes stay until the owner acks them
    /// (the 1:1 mailboxes of the messenger).
    pub fn owner_until_ack(key: PublicKey) -> Descriptor {
        Descriptor {
            key,
            write: WritePolicy::Owner,
            retention: Retention::UntilAck,
        }
    }

    /// The encoded descriptor.
    pub fn encode(&self) -> [u8; DESCRIPTOR_LEN] {
        let mut out = [0u8; DESCRIPTOR_LEN];
        out[0] = DESCRIPTOR_VERSION;
        out[1..33].copy_from_slice(&self.key.to_bytes());
        out[33] = self.write.to_byte();
        out[34] = self.retention.to_byte();
        out
    }

    /// Parses an encoded descriptor: exact length, known version and
    /// policies, a valid key.
    pub fn decode(bytes: &[u8]) -> Result<Descriptor, DecodeError> {
        let bytes: &[u8; DESCRIPTOR_LEN] = bytes
            .try_into()
            .map_err(|_| DecodeError::Invalid("descriptor length"))?;
        if bytes[0] != DESCRIPTOR_VERSION {
            return Err(DecodeError::UnknownVersion(bytes[0]));
        }
        let key = PublicKey::from_bytes(&bytes[1..33])
            .map_err(|_| DecodeError::Invalid("descriptor key"))?;
        let write =
            WritePolicy::from_byte(bytes[33]).ok_or(DecodeError::Invalid("write policy"))?;
        let retention =
            Retention::from_byte(bytes[34]).ok_or(DecodeError::Invalid("retention policy"))?;
        Ok(Descriptor {
            key,
            write,
            retention,
        })
    }

    /// The mailbox's id.
    pub fn id(&self) -> MailboxId {
        MailboxId(blake2b256(ID_PURPOSE, &self.encode()))
    }
}

#[cfg(test)]
mod tests {
    use shoal_identity::Keypair;

    use super::*;

    #[test]
    fn descriptor_round_trip_and_policy_in_id() {
        let key = Keypair::from_secret_bytes(&[9; 32]).public();
        let d = Descriptor {
            key,
            write: WritePolicy::Owner,
            retention: Retention::UntilAck,
        };
        assert_eq!(Descriptor::decode(&d.encode()).unwrap(), d);
        let open = Descriptor {
            write: WritePolicy::Open,
            ..d
        };
        assert_ne!(d.id(), open.id(), "the policy is part of the id");
        let mut bad = d.encode();
        bad[0] = 2;
        assert_eq!(
            Descriptor::decode(&bad),
            Err(DecodeError::UnknownVersion(2))
        );
        bad = d.encode();
        bad[33] = 3;
        assert!(Descriptor::decode(&bad).is_err());
        assert!(Descriptor::decode(&d.encode()[..34]).is_err());
    }
}
