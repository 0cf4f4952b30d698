//! Signed peer records: a peer's own statement of its addresses, signed with
//! its identity key so anyone can verify it when it is relayed.
//!
//! ```protobuf
//! message PeerRecord {          // the bytes that are signed
//!   uint32 version = 1;         // RECORD_VERSION = 1
//!   bytes peer_id = 2;          // 32-byte ed25519 public key
//!   uint64 seq = 3;             // larger = newer (ms since the Unix epoch at creation)
//!   repeated string addrs = 4;  // multiaddr text, without /p2p/
//! }
//! message SignedPeerRecord {    // the envelope that travels
//!   uint32 version = 1;         // RECORD_VERSION = 1
//!   bytes public_key = 2;       // must equal PeerRecord.peer_id
//!   bytes record = 3;           // an encoded PeerRecord, exactly as signed
//!   bytes signature = 4;        // ed25519 over signed_input("shoal/peer-record/1", record)
//! }
//! ```
//!
//! The signature covers the exact `record` bytes (never a re-encoding); a
//! relay forwards the envelope bytes unchanged.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use prost::Message as _;
use shoal_identity::{Keypair, PeerId, PublicKey, Purpose, SIGNATURE_LEN, Signature};
use shoal_transport::Multiaddr;

/// The version of [`PeerRecord`] and of its envelope.
pub const RECORD_VERSION: u32 = 1;

/// Largest encoded [`PeerRecord`] (the signed bytes). Protects memory of
/// every node that stores or relays records.
pub const MAX_RECORD_SIZE: usize = 4096;

/// Largest encoded envelope: the record plus key, signature and tags.
pub const MAX_SIGNED_RECORD_SIZE: usize = MAX_RECORD_SIZE + 128;

/// Most addresses in one record.
pub const MAX_RECORD_ADDRS: usize = 16;

/// Longest address text, in bytes, in a record or an identify message.
pub const MAX_ADDR_LEN: usize = 256;

mod wire {
    //! The protobuf schema.

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct PeerRecord {
        #[prost(uint32, tag = "1")]
        pub(super) version: u32,
        #[prost(bytes = "vec", tag = "2")]
        pub(super) peer_id: Vec<u8>,
        #[prost(uint64, tag = "3")]
        pub(super) seq: u64,
        #[prost(string, repeated, tag = "4")]
        pub(super) addrs: Vec<String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct SignedPeerRecord {
        #[prost(uint32, tag = "1")]
        pub(super) version: u32,
        #[prost(bytes = "vec", tag = "2")]
        pub(super) public_key: Vec<u8>,
        #[prost(bytes = "bytes", tag = "3")]
        pub(super) record: bytes::Bytes,
        #[prost(bytes = "vec", tag = "4")]
        pub(super) signature: Vec<u8>,
    }
}

/// Why a peer record was rejected. Blame: whoever sent it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The envelope or record is over its size limit.
    #[error("peer record of {len} bytes exceeds {max}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes are not valid protobuf for the schema.
    #[error("malformed peer record: {0}")]
    Malformed(#[from] prost::DecodeError),
    /// The envelope or record has a version this implementation does not
    /// know.
    #[error("unsupported peer record version {0}")]
    UnsupportedVersion(u32),
    /// The public key is not a valid ed25519 key.
    #[error("invalid public key in peer record")]
    InvalidKey,
    /// The record's peer id is not 32 bytes.
    #[error("invalid peer id in peer record")]
    InvalidPeerId,
    /// The record names another peer than the key that signed it.
    #[error("peer record names {named} but is signed by {signer}")]
    PeerMismatch {
        /// The signing key's peer id.
        signer: PeerId,
        /// The peer id inside the record.
        named: PeerId,
    },
    /// The signature does not verify.
    #[error("bad peer record signature")]
    BadSignature,
    /// More than [`MAX_RECORD_ADDRS`] addresses.
    #[error("peer record lists {0} addresses, over {MAX_RECORD_ADDRS}")]
    TooManyAddrs(usize),
    /// An address longer than [`MAX_ADDR_LEN`].
    #[error("address of {0} bytes in peer record, over {MAX_ADDR_LEN}")]
    AddrTooLong(usize),
}

/// A peer's statement of its addresses at sequence number `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRecord {
    /// Whose record it is.
    pub peer_id: PeerId,
    /// Larger is newer; a store never replaces a record by one with a
    /// smaller or equal `seq`.
    pub seq: u64,
    /// The addresses, without `/p2p/`. Addresses in the signed bytes that
    /// this implementation cannot parse (newer address kinds) are left out
    /// here but stay in the bytes that are relayed.
    pub addrs: Vec<Multiaddr>,
}

impl PeerRecord {
    /// Encodes the record (the bytes that get signed).
    pub fn encode(&self) -> Result<Vec<u8>, RecordError> {
        check_addrs(self.addrs.iter().map(|a| a.to_string().len()))?;
        let wire = wire::PeerRecord {
            version: RECORD_VERSION,
            peer_id: self.peer_id.as_bytes().to_vec(),
            seq: self.seq,
            addrs: self.addrs.iter().map(|a| a.to_string()).collect(),
        };
        let bytes = wire.encode_to_vec();
        if bytes.len() > MAX_RECORD_SIZE {
            return Err(RecordError::TooLarge {
                len: bytes.len(),
                max: MAX_RECORD_SIZE,
            });
        }
        Ok(bytes)
    }

    /// Decodes record bytes, checking sizes and bounds (not a signature).
    pub fn decode(bytes: &[u8]) -> Result<PeerRecord, RecordError> {
        if bytes.len() > MAX_RECORD_SIZE {
            return Err(RecordError::TooLarge {
                len: bytes.len(),
                max: MAX_RECORD_SIZE,
            });
        }
        let wire = wire::PeerRecord::decode(bytes)?;
        if wire.version != RECORD_VERSION {
            return Err(RecordError::UnsupportedVersion(wire.version));
        }
        let peer_id =
            PeerId::try_from_slice(&wire.peer_id).map_err(|_| RecordError::InvalidPeerId)?;
        check_addrs(wire.addrs.iter().map(String::len))?;
        Ok(PeerRecord {
            peer_id,
            seq: wire.seq,
            addrs: parse_addrs(&wire.addrs),
        })
    }
}

fn check_addrs(lens: impl ExactSizeIterator<Item = usize>) -> Result<(), RecordError> {
    if lens.len() > MAX_RECORD_ADDRS {
        return Err(RecordError::TooManyAddrs(lens.len()));
    }
    for len in lens {
        if len > MAX_ADDR_LEN {
            return Err(RecordError::AddrTooLong(len));
        }
    }
    Ok(())
}

/// Parses address texts, skipping (with a debug log) those that do not
/// parse: they may be address kinds of a newer implementation.
pub(crate) fn parse_addrs(texts: &[String]) -> Vec<Multiaddr> {
    texts
        .iter()
        .filter_map(|t| match t.parse::<Multiaddr>() {
            Ok(a) => Some(a.without_peer_id()),
            Err(e) => {
                tracing::debug!(addr = %t, error = %e, "skipping an address that does not parse");
                None
            }
        })
        .collect()
}

/// A [`PeerRecord`] with a verified signature by the peer it names. The only
/// ways to get one are [`SignedPeerRecord::sign`] and
/// [`SignedPeerRecord::from_bytes`], which verifies; so holding one means
/// the record is authentic (though its addresses are only the peer's claim).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedPeerRecord {
    record: PeerRecord,
    /// The exact signed bytes.
    record_bytes: Bytes,
    signature: Signature,
    /// The envelope encoding, as received or as built.
    envelope: Bytes,
}

impl SignedPeerRecord {
    /// Signs a record of `key`'s peer id with `seq` and `addrs` (any `/p2p/`
    /// suffix is removed).
    pub fn sign(
        key: &Keypair,
        seq: u64,
        addrs: Vec<Multiaddr>,
    ) -> Result<SignedPeerRecord, RecordError> {
        let record = PeerRecord {
            peer_id: key.peer_id(),
            seq,
            addrs: addrs.iter().map(Multiaddr::without_peer_id).collect(),
        };
        let record_bytes = Bytes::from(record.encode()?);
        let signature = key.sign(Purpose::PEER_RECORD, &record_bytes);
        let envelope = wire::SignedPeerRecord {
            version: RECORD_VERSION,
            public_key: key.public().to_bytes().to_vec(),
            record: record_bytes.clone(),
            signature: signature.to_vec(),
        }
        .encode_to_vec();
        Ok(SignedPeerRecord {
            record,
            record_bytes,
            signature,
            envelope: Bytes::from(envelope),
        })
    }

    /// Decodes an envelope and verifies it: sizes, versions, that the key
    /// is valid and is the peer the record names, and the signature.
    pub fn from_bytes(envelope: &[u8]) -> Result<SignedPeerRecord, RecordError> {
        if envelope.len() > MAX_SIGNED_RECORD_SIZE {
            return Err(RecordError::TooLarge {
                len: envelope.len(),
                max: MAX_SIGNED_RECORD_SIZE,
            });
        }
        let wire = wire::SignedPeerRecord::decode(envelope)?;
        if wire.version != RECORD_VERSION {
            return Err(RecordError::UnsupportedVersion(wire.version));
        }
        let key = PublicKey::from_bytes(&wire.public_key).map_err(|_| RecordError::InvalidKey)?;
        let record = PeerRecord::decode(&wire.record)?;
        if record.peer_id != key.peer_id() {
            return Err(RecordError::PeerMismatch {
                signer: key.peer_id(),
                named: record.peer_id,
            });
        }
        let signature: Signature = wire
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| RecordError::BadSignature)?;
        key.verify(Purpose::PEER_RECORD, &wire.record, &signature)
            .map_err(|_| RecordError::BadSignature)?;
        Ok(SignedPeerRecord {
            record,
            record_bytes: wire.record,
            signature,
            envelope: Bytes::copy_from_slice(envelope),
        })
    }

    /// The envelope bytes, to send or relay.
    pub fn to_bytes(&self) -> Bytes {
        self.envelope.clone()
    }

    /// The verified record.
    pub fn record(&self) -> &PeerRecord {
        &self.record
    }

    /// Whose record it is (and who signed it).
    pub fn peer_id(&self) -> PeerId {
        self.record.peer_id
    }

    /// Its sequence number.
    pub fn seq(&self) -> u64 {
        self.record.seq
    }

    /// Its addresses (the peer's claim, not verified).
    pub fn addrs(&self) -> &[Multiaddr] {
        &self.record.addrs
    }

    /// The exact bytes the signature covers.
    pub fn record_bytes(&self) -> &[u8] {
        &self.record_bytes
    }

    /// The signature (`SIGNATURE_LEN` bytes).
    pub fn signature(&self) -> &[u8; SIGNATURE_LEN] {
        &self.signature
    }
}

/// This node's own record: signs a new [`SignedPeerRecord`] whenever its
/// address set changes, with a sequence number that never goes back (the
/// wall clock in ms, or the previous `seq + 1` if the clock is behind).
/// Cheap to clone; share one between identify and discovery so both hand
/// out the same record.
#[derive(Debug, Clone)]
pub struct LocalRecord {
    inner: Arc<Mutex<LocalInner>>,
}

#[derive(Debug)]
struct LocalInner {
    key: Keypair,
    advertised: Option<Vec<Multiaddr>>,
    current: Option<SignedPeerRecord>,
}

/// Milliseconds since the Unix epoch by the system clock (0 before it).
pub fn unix_time_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl LocalRecord {
    /// The record source of the node with identity `key`.
    pub fn new(key: Keypair) -> LocalRecord {
        LocalRecord {
            inner: Arc::new(Mutex::new(LocalInner {
                key,
                advertised: None,
                current: None,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LocalInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Our peer id.
    pub fn peer_id(&self) -> PeerId {
        self.lock().key.peer_id()
    }

    /// Advertise exactly `addrs` (e.g. a public address behind a port
    /// forward) instead of the listen addresses; `None` goes back to the
    /// listen addresses.
    pub fn set_advertised(&self, addrs: Option<Vec<Multiaddr>>) {
        self.lock().advertised = addrs;
    }

    /// The addresses a record made from `listen_addrs` states: the
    /// advertised ones if set, else `listen_addrs`; without `/p2p/`,
    /// deduplicated, at most [`MAX_RECORD_ADDRS`], over-long ones left out.
    pub fn addrs(&self, listen_addrs: &[Multiaddr]) -> Vec<Multiaddr> {
        let inner = self.lock();
        let source = inner.advertised.as_deref().unwrap_or(listen_addrs);
        let mut out: Vec<Multiaddr> = Vec::new();
        for a in source.iter().map(Multiaddr::without_peer_id) {
            if out.len() < MAX_RECORD_ADDRS
                && a.to_string().len() <= MAX_ADDR_LEN
                && !out.contains(&a)
            {
                out.push(a);
            }
        }
        out
    }

    /// The current signed record for `listen_addrs` at wall-clock time
    /// `now_ms`; re-signed only when the address set changed.
    pub fn current_at(
        &self,
        listen_addrs: &[Multiaddr],
        now_ms: u64,
    ) -> Result<SignedPeerRecord, RecordError> {
        let addrs = self.addrs(listen_addrs);
        let mut inner = self.lock();
        if let Some(current) = &inner.current
            && current.addrs() == addrs.as_slice()
        {
            return Ok(current.clone());
        }
        let seq = match &inner.current {
            Some(current) => now_ms.max(current.seq().saturating_add(1)),
            None => now_ms,
        };
        let record = SignedPeerRecord::sign(&inner.key, seq, addrs)?;
        inner.current = Some(record.clone());
        Ok(record)
    }

    /// [`LocalRecord::current_at`] with the system clock.
    pub fn current(&self, listen_addrs: &[Multiaddr]) -> Result<SignedPeerRecord, RecordError> {
        self.current_at(listen_addrs, unix_time_ms())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn seed_key() -> Keypair {
        Keypair::from_secret_bytes(&[1u8; 32])
    }

    /// The vectors printed in docs/PROTOCOL.md, section 7.3.
    #[test]
    fn documented_vectors() {
        let signed = SignedPeerRecord::sign(
            &seed_key(),
            1_700_000_000_000,
            vec!["/ip4/127.0.0.1/tcp/4001".parse().unwrap()],
        )
        .unwrap();
        assert_eq!(
            hex(signed.record_bytes()),
            "080112208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c\
             1880d095ffbc31\
             22172f6970342f3132372e302e302e312f7463702f34303031"
        );
        let input = shoal_identity::signed_input(Purpose::PEER_RECORD, signed.record_bytes());
        assert_eq!(
            hex(&input[..20]),
            "1373686f616c2f706565722d7265636f72642f31"
        );
        assert_eq!(hex(signed.signature()), SIGNATURE_HEX);
        let envelope = signed.to_bytes();
        assert_eq!(
            hex(&envelope),
            format!(
                "08011220{}1a{:02x}{}2240{}",
                "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c",
                signed.record_bytes().len(),
                hex(signed.record_bytes()),
                SIGNATURE_HEX
            )
        );
        let back = SignedPeerRecord::from_bytes(&envelope).unwrap();
        assert_eq!(back, signed);
    }

    const SIGNATURE_HEX: &str = "8cd1b4050d69acc9de648a53e361d75cca47fc3de042a821c1e798eff3af4947\
                                 ba85e31faabe1727a59566b701d7d3a4bd23670bd9df8c83cc82379b19721b03";

    #[test]
    fn forged_and_malformed_records_are_rejected() {
        let key = seed_key();
        let other = Keypair::from_secret_bytes(&[2u8; 32]);
        let good = SignedPeerRecord::sign(&key, 5, vec!["/memory/7".parse().unwrap()]).unwrap();

        // Signed by another key but naming `key`'s peer: the envelope's key
        // is `other`, which is not the peer named.
        let forged = wire::SignedPeerRecord {
            version: RECORD_VERSION,
            public_key: other.public().to_bytes().to_vec(),
            record: Bytes::copy_from_slice(good.record_bytes()),
            signature: other
                .sign(Purpose::PEER_RECORD, good.record_bytes())
                .to_vec(),
        };
        assert!(matches!(
            SignedPeerRecord::from_bytes(&forged.encode_to_vec()),
            Err(RecordError::PeerMismatch { .. })
        ));
        // The right key, a signature by another key.
        let bad_sig = wire::SignedPeerRecord {
            public_key: key.public().to_bytes().to_vec(),
            ..forged.clone()
        };
        assert_eq!(
            SignedPeerRecord::from_bytes(&bad_sig.encode_to_vec()),
            Err(RecordError::BadSignature)
        );
        // A signature for another purpose.
        let wrong_purpose = wire::SignedPeerRecord {
            public_key: key.public().to_bytes().to_vec(),
            signature: key
                .sign(Purpose::SECIO_HANDSHAKE, good.record_bytes())
                .to_vec(),
            ..forged.clone()
        };
        assert_eq!(
            SignedPeerRecord::from_bytes(&wrong_purpose.encode_to_vec()),
            Err(RecordError::BadSignature)
        );
        // A tampered record (seq changed) under the original signature.
        let mut tampered = wire::SignedPeerRecord::decode(&good.to_bytes()[..]).unwrap();
        let mut record = wire::PeerRecord::decode(&tampered.record[..]).unwrap();
        record.seq += 1;
        tampered.record = Bytes::from(record.encode_to_vec());
        assert_eq!(
            SignedPeerRecord::from_bytes(&tampered.encode_to_vec()),
            Err(RecordError::BadSignature)
        );
        // Versions, garbage, size.
        let mut v2 = wire::SignedPeerRecord::decode(&good.to_bytes()[..]).unwrap();
        v2.version = 2;
        assert_eq!(
            SignedPeerRecord::from_bytes(&v2.encode_to_vec()),
            Err(RecordError::UnsupportedVersion(2))
        );
        assert!(matches!(
            SignedPeerRecord::from_bytes(&[0xff; 10]),
            Err(RecordError::Malformed(_))
        ));
        assert!(matches!(
            SignedPeerRecord::from_bytes(&vec![0; MAX_SIGNED_RECORD_SIZE + 1]),
            Err(RecordError::TooLarge { .. })
        ));
        // Too many addresses cannot even be signed.
        let many = vec!["/memory/1".parse().unwrap(); MAX_RECORD_ADDRS + 1];
        assert_eq!(
            SignedPeerRecord::sign(&key, 1, many),
            Err(RecordError::TooManyAddrs(MAX_RECORD_ADDRS + 1))
        );
    }

    #[test]
    fn local_record_resigns_on_change_with_a_monotonic_seq() {
        let local = LocalRecord::new(seed_key());
        let a: Multiaddr = "/memory/1".parse().unwrap();
        let b: Multiaddr = "/memory/2".parse().unwrap();
        let r1 = local.current_at(std::slice::from_ref(&a), 1000).unwrap();
        assert_eq!(r1.seq(), 1000);
        // Same addresses: same record, whatever the clock says.
        assert_eq!(
            local.current_at(std::slice::from_ref(&a), 5000).unwrap(),
            r1
        );
        // New addresses with a clock that went back: seq still grows.
        let r2 = local.current_at(&[a.clone(), b.clone()], 10).unwrap();
        assert_eq!(r2.seq(), 1001);
        // /p2p/ suffixes are stripped and duplicates dropped.
        let with_id = a.with_peer_id(local.peer_id());
        assert_eq!(local.addrs(&[with_id, a.clone()]), vec![a.clone()]);
        // Advertised addresses win over listen addresses.
        local.set_advertised(Some(vec![b.clone()]));
        let r3 = local.current_at(&[a], 2000).unwrap();
        assert_eq!((r3.seq(), r3.addrs()), (2000, &[b][..]));
    }
}
