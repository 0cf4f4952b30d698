//! The length-prefixed framing shared by handshake messages and transport
//! frames.
//!
//! ```text
//! +----------------+----------------------+
//! | len: u16 (BE)  | body: len bytes      |
//! +----------------+----------------------+
//! ```
//!
//! This module checks only frame-local rules (the declared length against a
//! lower and an upper bound); what a body means is decided elsewhere. The
//! length is always checked *before* anything is allocated for the body.
//!
//! ```
//! use shoal_secio::frame::{FrameDecoder, FrameError, decode_len};
//!
//! assert_eq!(decode_len(&[0x01, 0x02, 0xff]), Some(0x0102));
//! assert_eq!(decode_len(&[0x01]), None);
//!
//! let decoder = FrameDecoder::transport();
//! // A complete 16-byte frame (the smallest: an empty plaintext and its tag).
//! let mut wire = vec![0x00, 0x10];
//! wire.extend_from_slice(&[0xaa; 16]);
//! let body = decoder.decode(&wire).unwrap().unwrap();
//! assert_eq!(body.len(), 16);
//! // Too short to hold a tag: rejected as soon as the prefix is seen.
//! assert!(matches!(decoder.decode(&[0x00, 0x03]), Err(FrameError::TooShort { .. })));
//! ```

/// Bytes in the length prefix.
pub const LEN_PREFIX: usize = 2;

/// Bytes of AEAD tag at the end of every transport frame.
pub const TAG_LEN: usize = 16;

/// Largest body a u16 prefix can declare; also Noise's maximum message size.
pub const MAX_FRAME_LEN: usize = u16::MAX as usize;

/// Smallest transport frame body: a tag over an empty plaintext.
pub const MIN_TRANSPORT_FRAME_LEN: usize = TAG_LEN;

/// Most plaintext one transport frame carries.
pub const MAX_FRAME_PLAINTEXT: usize = MAX_FRAME_LEN - TAG_LEN;

/// Most bytes one transport frame occupies on the wire, prefix included.
pub const MAX_FRAME_WIRE_LEN: usize = LEN_PREFIX + MAX_FRAME_LEN;

/// A frame's declared length broke a bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The declared body length is below the minimum.
    #[error("frame body of {len} bytes is shorter than the minimum {min}")]
    TooShort {
        /// Declared length.
        len: usize,
        /// Minimum allowed.
        min: usize,
    },
    /// The declared body length is above the maximum.
    #[error("frame body of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Declared length.
        len: usize,
        /// Maximum allowed.
        max: usize,
    },
}

/// Reads the big-endian length prefix at the start of `buf`, or `None` if
/// fewer than [`LEN_PREFIX`] bytes are available.
pub fn decode_len(buf: &[u8]) -> Option<usize> {
    match buf {
        [hi, lo, ..] => Some(usize::from(u16::from_be_bytes([*hi, *lo]))),
        _ => None,
    }
}

/// Writes the length prefix for a body of `len` bytes.
///
/// Returns `None` if `len` does not fit in a u16.
pub fn encode_len(len: usize) -> Option<[u8; LEN_PREFIX]> {
    u16::try_from(len).ok().map(u16::to_be_bytes)
}

/// Splits complete frames off the front of a byte buffer, enforcing length
/// bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameDecoder {
    min: usize,
    max: usize,
}

impl FrameDecoder {
    /// The decoder for transport frames: bodies of
    /// [`MIN_TRANSPORT_FRAME_LEN`]`..=`[`MAX_FRAME_LEN`] bytes.
    pub const fn transport() -> FrameDecoder {
        FrameDecoder {
            min: MIN_TRANSPORT_FRAME_LEN,
            max: MAX_FRAME_LEN,
        }
    }

    /// The decoder for handshake messages: bodies of `1..=max` bytes (`max`
    /// is capped at [`MAX_FRAME_LEN`]).
    pub const fn handshake(max: usize) -> FrameDecoder {
        FrameDecoder {
            min: 1,
            max: if max < MAX_FRAME_LEN {
                max
            } else {
                MAX_FRAME_LEN
            },
        }
    }

    /// The largest body this decoder accepts.
    pub const fn max_len(&self) -> usize {
        self.max
    }

    /// Checks a declared body length against the bounds.
    pub fn check_len(&self, len: usize) -> Result<(), FrameError> {
        if len < self.min {
            Err(FrameError::TooShort { len, min: self.min })
        } else if len > self.max {
            Err(FrameError::TooLarge { len, max: self.max })
        } else {
            Ok(())
        }
    }

    /// Decodes the frame at the start of `buf`.
    ///
    /// Returns `Ok(Some(body))` for a complete frame (it occupies
    /// `LEN_PREFIX + body.len()` bytes of `buf`), `Ok(None)` when more bytes
    /// are needed, and an error as soon as the prefix declares an
    /// out-of-bounds length.
    pub fn decode<'a>(&self, buf: &'a [u8]) -> Result<Option<&'a [u8]>, FrameError> {
        let Some(len) = decode_len(buf) else {
            return Ok(None);
        };
        self.check_len(len)?;
        Ok(buf.get(LEN_PREFIX..LEN_PREFIX + len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bounds() {
        let d = FrameDecoder::transport();
        assert_eq!(
            d.check_len(15),
            Err(FrameError::TooShort { len: 15, min: 16 })
        );
        assert_eq!(d.check_len(16), Ok(()));
        assert_eq!(d.check_len(65535), Ok(()));
        let h = FrameDecoder::handshake(4096);
        assert_eq!(h.check_len(0), Err(FrameError::TooShort { len: 0, min: 1 }));
        assert_eq!(
            h.check_len(4097),
            Err(FrameError::TooLarge {
                len: 4097,
                max: 4096
            })
        );
        assert_eq!(FrameDecoder::handshake(1 << 20).max_len(), MAX_FRAME_LEN);
    }

    #[test]
    fn partial_and_complete() {
        let d = FrameDecoder::handshake(10);
        assert_eq!(d.decode(&[]), Ok(None));
        assert_eq!(d.decode(&[0]), Ok(None));
        assert_eq!(d.decode(&[0, 3, 1, 2]), Ok(None));
        assert_eq!(d.decode(&[0, 3, 1, 2, 3, 4]), Ok(Some(&[1u8, 2, 3][..])));
        assert_eq!(
            d.decode(&[0, 11]),
            Err(FrameError::TooLarge { len: 11, max: 10 })
        );
    }

    #[test]
    fn encode_len_round_trip() {
        assert_eq!(encode_len(0x0102), Some([1, 2]));
        assert_eq!(encode_len(65536), None);
        assert_eq!(decode_len(&encode_len(65535).unwrap()), Some(65535));
    }

    proptest! {
        #[test]
        fn decode_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..64), max in 0usize..70000) {
            let _ = FrameDecoder::handshake(max).decode(&buf);
            if let Ok(Some(body)) = FrameDecoder::transport().decode(&buf) {
                prop_assert!(body.len() >= MIN_TRANSPORT_FRAME_LEN);
                prop_assert_eq!(body.len() + LEN_PREFIX, decode_len(&buf).unwrap() + LEN_PREFIX);
            }
        }
    }
}
