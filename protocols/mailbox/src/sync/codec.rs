//! The compact encoding of a mailbox's ranges (the `ranges` field of a
//! sync message; docs/PROTOCOL.md 12.9):
//!
//! ```text
//! ranges  := range*                       empty: every range is skipped
//! range   := bound mode
//! bound   := varint(0)                    infinity (the last range)
//!          | varint(d + 1) u8(n) n bytes  expiry = previous expiry + d,
//!                                         then n <= 32 bytes of hash prefix
//! mode    := u8(0)                        skip
//!          | u8(1) 16 bytes               fingerprint
//!          | u8(2) varint(k) k * (32 bytes hash, u8 state)   list
//! ```
//!
//! The previous expiry starts at 0. Bounds must increase strictly and the
//! last must be infinity.

use bytes::{Buf, BufMut};
use prost::encoding::{decode_varint, encode_varint};

use super::ranges::{Bound, FINGERPRINT_LEN, Mode, Range, State, check_order};
use crate::id::EnvelopeHash;
use crate::wire::DecodeError;

/// Most ranges of one mailbox in one message.
pub const MAX_RANGES: usize = 4096;

/// Most items of one list.
pub const MAX_LIST: usize = 4096;

/// The bytes of `ranges` (nothing if all are skipped).
pub fn encode_ranges(ranges: &[Range]) -> Vec<u8> {
    if ranges.iter().all(|r| r.mode == Mode::Skip) {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut previous = 0u64;
    for range in ranges {
        match &range.upper {
            Bound::Infinity => encode_varint(0, &mut out),
            Bound::Key { expiry, prefix } => {
                encode_varint(expiry.saturating_sub(previous).saturating_add(1), &mut out);
                out.put_u8(prefix.len() as u8);
                out.extend_from_slice(prefix);
                previous = *expiry;
            }
        }
        match &range.mode {
            Mode::Skip => out.put_u8(0),
            Mode::Fingerprint(fp) => {
                out.put_u8(1);
                out.extend_from_slice(fp);
            }
            Mode::List(items) => {
                out.put_u8(2);
                encode_varint(items.len() as u64, &mut out);
                for (hash, state) in items {
                    out.extend_from_slice(hash.as_bytes());
                    out.put_u8(state.code());
                }
            }
        }
    }
    out
}

fn take(buf: &mut &[u8], n: usize, what: &'static str) -> Result<Vec<u8>, DecodeError> {
    if buf.remaining() < n {
        return Err(DecodeError::Invalid(what));
    }
    let out = buf[..n].to_vec();
    buf.advance(n);
    Ok(out)
}

fn byte(buf: &mut &[u8], what: &'static str) -> Result<u8, DecodeError> {
    if !buf.has_remaining() {
        return Err(DecodeError::Invalid(what));
    }
    Ok(buf.get_u8())
}

/// Parses ranges, checking every count and length before allocating, and
/// their order.
pub fn decode_ranges(bytes: &[u8]) -> Result<Vec<Range>, DecodeError> {
    let mut buf = bytes;
    let mut ranges = Vec::new();
    let mut previous = 0u64;
    while buf.has_remaining() {
        if ranges.len() >= MAX_RANGES {
            return Err(DecodeError::Invalid("sync range count"));
        }
        let v = decode_varint(&mut buf).map_err(|_| DecodeError::Invalid("sync bound"))?;
        let upper = if v == 0 {
            Bound::Infinity
        } else {
            let expiry = previous
                .checked_add(v - 1)
                .ok_or(DecodeError::Invalid("sync bound expiry"))?;
            let n = usize::from(byte(&mut buf, "sync bound")?);
            if n > 32 {
                return Err(DecodeError::Invalid("sync bound prefix"));
            }
            previous = expiry;
            Bound::Key {
                expiry,
                prefix: take(&mut buf, n, "sync bound prefix")?,
            }
        };
        let mode = match byte(&mut buf, "sync mode")? {
            0 => Mode::Skip,
            1 => {
                let mut fp = [0u8; FINGERPRINT_LEN];
                fp.copy_from_slice(&take(&mut buf, FINGERPRINT_LEN, "sync fingerprint")?);
                Mode::Fingerprint(fp)
            }
            2 => {
                let k = decode_varint(&mut buf).map_err(|_| DecodeError::Invalid("sync list"))?;
                let k = usize::try_from(k).unwrap_or(usize::MAX);
                if k > MAX_LIST || k.saturating_mul(33) > buf.remaining() {
                    return Err(DecodeError::Invalid("sync list length"));
                }
                let mut items = Vec::with_capacity(k);
                for _ in 0..k {
                    let hash = EnvelopeHash::try_from_slice(&buf[..32])
                        .ok_or(DecodeError::Invalid("sync list hash"))?;
                    buf.advance(32);
                    let state = State::from_code(buf.get_u8())
                        .ok_or(DecodeError::Invalid("sync list state"))?;
                    items.push((hash, state));
                }
                Mode::List(items)
            }
            _ => return Err(DecodeError::Invalid("sync mode")),
        };
        ranges.push(Range { upper, mode });
    }
    if !check_order(&ranges) {
        return Err(DecodeError::Invalid("sync range order"));
    }
    Ok(ranges)
}
