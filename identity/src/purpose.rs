//! Domain separation for signatures and hashes.

/// The context a signature or hash is made for.
///
/// The purpose string is prefixed to the signed bytes (see [`signed_input`]),
/// so a signature made for one purpose never verifies for another. Purpose
/// strings carry a version number; a new encoding of what is signed gets a new
/// purpose rather than a reinterpretation of the old one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Purpose(&'static str);

impl Purpose {
    /// The secio handshake: an identity key signs the Noise static key.
    pub const SECIO_HANDSHAKE: Purpose = Purpose("shoal/secio/handshake/1");
    /// A signed peer record (peer id, addresses, sequence number).
    pub const PEER_RECORD: Purpose = Purpose("shoal/peer-record/1");

    /// Defines a purpose. Use a string of the form `shoal/<layer>/<what>/<version>`,
    /// at most 255 bytes long.
    ///
    /// # Panics
    /// If `name` is longer than 255 bytes (a programming error, never input-driven).
    pub const fn new(name: &'static str) -> Purpose {
        assert!(name.len() <= 255, "purpose strings are at most 255 bytes");
        Purpose(name)
    }

    /// The purpose string.
    pub const fn as_str(&self) -> &'static str {
        self.0
    }
}

/// The exact bytes that are signed for `message` under `purpose`:
///
/// ```text
/// purpose_len: u8 | purpose: purpose_len bytes (UTF-8) | message
/// ```
///
/// The length byte makes the split between purpose and message unambiguous.
///
/// ```
/// use shoal_identity::{signed_input, Purpose};
/// let input = signed_input(Purpose::new("x/1"), b"ab");
/// assert_eq!(input, b"\x03x/1ab");
/// ```
pub fn signed_input(purpose: Purpose, message: &[u8]) -> Vec<u8> {
    let name = purpose.as_str().as_bytes();
    let mut out = Vec::with_capacity(1 + name.len() + message.len());
    // `Purpose::new` guarantees the length fits in a byte.
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.extend_from_slice(message);
    out
}
