//! The 256-bit key space: [`Key`]s, their XOR [`Distance`] and bucket index.
//!
//! Every key is a BLAKE2b-256 hash of what it names, over a purpose-prefixed
//! input (the same `len | purpose | message` layout as signatures, see
//! `shoal_identity::signed_input`), so a node key can never equal an
//! application key by construction:
//!
//! | what | hashed input |
//! |---|---|
//! | a node (its [`PeerId`]) | `0x13 "shoal/kad/node-key/1"` ‖ the 32 peer-id bytes |
//! | an application name | `len(p) p` ‖ name, with the application's purpose `p` |

use std::fmt;

use blake2::{Blake2b, Digest, digest::consts::U32};
use shoal_identity::{PeerId, Purpose, signed_input};

/// Length of a key in bytes.
pub const KEY_LEN: usize = 32;

/// The purpose prefixed to a peer id when hashing it to its node key.
pub const NODE_KEY_PURPOSE: Purpose = Purpose::new("shoal/kad/node-key/1");

/// A point of the 256-bit key space.
///
/// Keys order by their bytes (big-endian), like the distances built from
/// them.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key([u8; KEY_LEN]);

impl Key {
    /// Wraps 32 bytes (for keys computed elsewhere, or read off the wire).
    pub const fn from_bytes(bytes: [u8; KEY_LEN]) -> Key {
        Key(bytes)
    }

    /// Reads a key from a slice of exactly [`KEY_LEN`] bytes.
    pub fn try_from_slice(bytes: &[u8]) -> Option<Key> {
        bytes.try_into().ok().map(Key)
    }

    /// The node key of `peer`: BLAKE2b-256 over [`NODE_KEY_PURPOSE`] and the
    /// peer id bytes.
    pub fn for_peer(peer: &PeerId) -> Key {
        Key::for_name(NODE_KEY_PURPOSE, peer.as_bytes())
    }

    /// The key of an application `name` under `purpose` (for example
    /// `Purpose::new("shoal/im/presence/1")` and a user's root key):
    /// BLAKE2b-256 over the purpose-prefixed name.
    pub fn for_name(purpose: Purpose, name: &[u8]) -> Key {
        let digest = Blake2b::<U32>::digest(signed_input(purpose, name));
        Key(digest.into())
    }

    /// The 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// The XOR distance to `other`.
    pub fn distance(&self, other: &Key) -> Distance {
        let mut d = [0u8; KEY_LEN];
        for (i, byte) in d.iter_mut().enumerate() {
            *byte = self.0[i] ^ other.0[i];
        }
        Distance(d)
    }

    /// A key whose distance to `self` falls in bucket `bucket` (0..=255),
    /// with the free low bits taken from `random`. Used to refresh a bucket.
    pub fn random_in_bucket(&self, bucket: usize, random: [u8; KEY_LEN]) -> Key {
        let bucket = bucket.min(255);
        // Distance bit `bucket` (counting from the least significant) is the
        // highest set bit; higher bits are 0, lower bits random.
        let mut d = random;
        let top = KEY_LEN - 1 - bucket / 8;
        for byte in d.iter_mut().take(top) {
            *byte = 0;
        }
        let bit = 1u8 << (bucket % 8);
        d[top] = (d[top] & (bit - 1)) | bit;
        let mut out = self.0;
        for (o, x) in out.iter_mut().zip(d) {
            *o ^= x;
        }
        Key(out)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({self})")
    }
}

impl fmt::Display for Key {
    /// The first 8 bytes in hex, enough to tell keys apart in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// The XOR distance between two keys, ordered as a 256-bit big-endian
/// integer.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Distance([u8; KEY_LEN]);

impl Distance {
    /// The zero distance (a key to itself).
    pub const ZERO: Distance = Distance([0; KEY_LEN]);

    /// The largest distance.
    pub const MAX: Distance = Distance([0xff; KEY_LEN]);

    /// The k-bucket this distance falls in: `floor(log2(distance))`, 0..=255
    /// (bucket 255 holds the farther half of the key space); `None` for zero.
    pub fn bucket_index(&self) -> Option<usize> {
        let zeros = self.leading_zeros();
        (zeros < 256).then(|| 255 - zeros as usize)
    }

    /// Number of leading zero bits (the length of the common prefix of the
    /// two keys); 256 for zero.
    pub fn leading_zeros(&self) -> u32 {
        let mut zeros = 0;
        for b in &self.0 {
            if *b == 0 {
                zeros += 8;
            } else {
                return zeros + b.leading_zeros();
            }
        }
        zeros
    }

    /// The 32 bytes, big-endian.
    pub const fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for Distance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Distance(2^{:?}..)", self.bucket_index())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The node-key vector printed in docs/PROTOCOL.md, section 8.
    #[test]
    fn documented_node_key() {
        let peer = PeerId::from_bytes([0x01; 32]);
        let key = Key::for_peer(&peer);
        let mut input = vec![20u8];
        input.extend_from_slice(b"shoal/kad/node-key/1");
        input.extend_from_slice(&[0x01; 32]);
        let expected: [u8; 32] = Blake2b::<U32>::digest(&input).into();
        assert_eq!(key.as_bytes(), &expected);
        assert_eq!(
            hex(key.as_bytes()),
            "775e5e43eed87627949bc24b67d225cff1a8bed1f5d39f6d3605da5240a04c1d"
        );
    }

    #[test]
    fn distance_and_buckets() {
        let a = Key::from_bytes([0; 32]);
        let mut b = [0; 32];
        b[31] = 1;
        assert_eq!(a.distance(&Key::from_bytes(b)).bucket_index(), Some(0));
        b[0] = 0x80;
        assert_eq!(a.distance(&Key::from_bytes(b)).bucket_index(), Some(255));
        assert_eq!(a.distance(&a).bucket_index(), None);
        assert_eq!(a.distance(&a), Distance::ZERO);
        let x = Key::for_name(Purpose::new("t/1"), b"x");
        let y = Key::for_name(Purpose::new("t/1"), b"y");
        assert_eq!(x.distance(&y), y.distance(&x));
        assert!(x.distance(&y) > Distance::ZERO);
    }

    #[test]
    fn random_key_lands_in_its_bucket() {
        let local = Key::for_name(Purpose::new("t/1"), b"local");
        for bucket in [0, 1, 7, 8, 9, 100, 254, 255] {
            for fill in [[0u8; 32], [0xff; 32], [0x5a; 32]] {
                let k = local.random_in_bucket(bucket, fill);
                assert_eq!(local.distance(&k).bucket_index(), Some(bucket));
            }
        }
    }
}
