//! The blobs the engine stores: the identity (device secrets and prekeys)
//! and one per contact (device certificate, ratchet sessions, heads).
//! Local storage only, never sent; protobuf so fields can be added.

use crate::Error;

/// The identity blob.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct IdentityBlob {
    /// The user's root secret key (one device per user for now).
    #[prost(bytes = "vec", tag = "1")]
    pub(crate) user_secret: Vec<u8>,
    /// The device's ed25519 secret key (also the node key).
    #[prost(bytes = "vec", tag = "2")]
    pub(crate) device_secret: Vec<u8>,
    /// The device's X25519 identity secret.
    #[prost(bytes = "vec", tag = "3")]
    pub(crate) identity_secret: Vec<u8>,
    /// The encoded device certificate.
    #[prost(bytes = "vec", tag = "4")]
    pub(crate) certificate: Vec<u8>,
    /// Signed prekeys, newest last.
    #[prost(message, repeated, tag = "5")]
    pub(crate) prekeys: Vec<PrekeyBlob>,
    /// Certificates of this device before its latest renewal, newest last:
    /// senders that fetched our bundle before it derived keys with them.
    #[prost(bytes = "vec", repeated, tag = "6")]
    pub(crate) earlier_certificates: Vec<Vec<u8>>,
}

/// One signed prekey and its secret.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct PrekeyBlob {
    #[prost(uint32, tag = "1")]
    pub(crate) id: u32,
    #[prost(bytes = "vec", tag = "2")]
    pub(crate) secret: Vec<u8>,
    /// The encoded signed prekey.
    #[prost(bytes = "vec", tag = "3")]
    pub(crate) signed: Vec<u8>,
    /// When it was made, Unix seconds.
    #[prost(uint64, tag = "4")]
    pub(crate) created: u64,
}

/// One contact.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ContactBlob {
    #[prost(string, tag = "1")]
    pub(crate) name: String,
    /// The encoded certificate of the contact's device, if known.
    #[prost(bytes = "vec", tag = "2")]
    pub(crate) device: Vec<u8>,
    /// Ratchet sessions, the active (sending) one first.
    #[prost(message, repeated, tag = "3")]
    pub(crate) sessions: Vec<SessionBlob>,
    /// Ids of the conversation's heads.
    #[prost(bytes = "vec", repeated, tag = "4")]
    pub(crate) heads: Vec<Vec<u8>>,
    /// Envelopes sealed since the last one received from the contact (the
    /// send budget survives a restart).
    #[prost(uint32, tag = "5")]
    pub(crate) unanswered: u32,
    /// Ids marked read whose receipt has not gone out yet.
    #[prost(bytes = "vec", repeated, tag = "6")]
    pub(crate) pending_read: Vec<Vec<u8>>,
    /// Our messages waiting to be written again under new counters.
    #[prost(message, repeated, tag = "7")]
    pub(crate) parked: Vec<ParkedBlob>,
    /// Ids of every session held, newest last: initial envelopes of those
    /// no longer held are replays.
    #[prost(bytes = "vec", repeated, tag = "8")]
    pub(crate) seen_sessions: Vec<Vec<u8>>,
    /// Envelopes from the contact are dropped unacknowledged.
    #[prost(bool, tag = "9")]
    pub(crate) blocked: bool,
    /// A pending message request: when it began (Unix seconds; 0: none).
    #[prost(uint64, tag = "10")]
    pub(crate) request_since: u64,
    /// Messages stored for the request.
    #[prost(uint32, tag = "11")]
    pub(crate) request_messages: u32,
    /// Bytes stored for the request.
    #[prost(uint64, tag = "12")]
    pub(crate) request_bytes: u64,
    /// The request's arrival order (the lowest is dropped first).
    #[prost(uint64, tag = "13")]
    pub(crate) request_seq: u64,
    /// The user compared safety numbers with the contact.
    #[prost(bool, tag = "14")]
    pub(crate) verified: bool,
    /// Verified, and the device changed since: sending waits.
    #[prost(bool, tag = "15")]
    pub(crate) device_changed: bool,
    /// The last UTC day whose mailboxes from the contact were all read, plus
    /// one (0: never read).
    #[prost(uint64, tag = "16")]
    pub(crate) mailbox_read: u64,
}

/// One of our messages waiting to be written again (after a restore).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ParkedBlob {
    /// Its id before.
    #[prost(bytes = "vec", tag = "1")]
    pub(crate) old: Vec<u8>,
    #[prost(uint64, tag = "2")]
    pub(crate) timestamp_ms: u64,
    #[prost(bytes = "vec", tag = "3")]
    pub(crate) body: Vec<u8>,
}

/// One ratchet session.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct SessionBlob {
    #[prost(bytes = "vec", tag = "1")]
    pub(crate) id: Vec<u8>,
    /// `Session::to_bytes`.
    #[prost(bytes = "vec", tag = "2")]
    pub(crate) state: Vec<u8>,
    /// The encoded initial header while we have not heard back (empty
    /// otherwise).
    #[prost(bytes = "vec", tag = "3")]
    pub(crate) initial: Vec<u8>,
    /// Unix seconds when the oldest skipped key still held was stored (0:
    /// none held).
    #[prost(uint64, tag = "4")]
    pub(crate) skipped_since: u64,
}

pub(crate) fn decode<T: prost::Message + Default>(
    bytes: &[u8],
    what: &'static str,
) -> Result<T, Error> {
    T::decode(bytes).map_err(|_| Error::Malformed { what })
}

pub(crate) fn encode<T: prost::Message>(value: &T) -> Vec<u8> {
    value.encode_to_vec()
}

pub(crate) fn array32(bytes: &[u8], what: &'static str) -> Result<[u8; 32], Error> {
    bytes.try_into().map_err(|_| Error::Malformed { what })
}
