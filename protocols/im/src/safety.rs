//! Safety numbers: what two users compare (read aloud, or side by side) to
//! know they talk to each other's real keys.
//!
//! The number of a pair of users is the same on both sides: 60 digits in
//! 12 groups of 5, from BLAKE2b-512 over `len(domain) | domain | lower
//! user key | higher user key` (keys compared as bytes), domain
//! [`SAFETY_NUMBER_DOMAIN`]; group `i` is the big-endian 24-bit number in
//! digest bytes `3i .. 3i + 3`, modulo 100,000. It depends on the users'
//! root keys only, so it does not change when a contact moves to a new
//! device (that is reported separately); it changes when the user id does.
//! Layout and vectors: docs/PROTOCOL.md 11.1.

use std::fmt;

use blake2::Blake2b512;
use blake2::Digest;

use crate::UserId;

/// Hash domain of a safety number.
pub const SAFETY_NUMBER_DOMAIN: &[u8] = b"shoal/im/safety-number/1";
/// Groups of five digits in a safety number.
pub const SAFETY_NUMBER_GROUPS: usize = 12;

/// The safety number of two users (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SafetyNumber([u32; SAFETY_NUMBER_GROUPS]);

impl SafetyNumber {
    /// The number of `a` and `b`, the same whichever is first.
    pub fn of(a: &UserId, b: &UserId) -> SafetyNumber {
        let (a, b) = (a.to_bytes(), b.to_bytes());
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        let mut hash = Blake2b512::new();
        hash.update([SAFETY_NUMBER_DOMAIN.len() as u8]);
        hash.update(SAFETY_NUMBER_DOMAIN);
        hash.update(lo);
        hash.update(hi);
        let digest = hash.finalize();
        let mut groups = [0u32; SAFETY_NUMBER_GROUPS];
        for (i, group) in groups.iter_mut().enumerate() {
            let b = &digest[3 * i..3 * i + 3];
            *group = u32::from_be_bytes([0, b[0], b[1], b[2]]) % 100_000;
        }
        SafetyNumber(groups)
    }
}

impl fmt::Display for SafetyNumber {
    /// Twelve groups of five digits, separated by spaces.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, group) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{group:05}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_identity::Keypair;

    fn user(seed: u8) -> UserId {
        UserId::new(Keypair::from_secret_bytes(&[seed; 32]).public())
    }

    #[test]
    fn both_sides_see_the_same_number_and_other_pairs_another() {
        let (a, b, c) = (user(1), user(2), user(3));
        assert_eq!(SafetyNumber::of(&a, &b), SafetyNumber::of(&b, &a));
        assert_ne!(SafetyNumber::of(&a, &b), SafetyNumber::of(&a, &c));
        let text = SafetyNumber::of(&a, &b).to_string();
        assert_eq!(text.len(), 12 * 5 + 11);
        assert!(
            text.split(' ')
                .all(|g| g.len() == 5 && g.bytes().all(|d| d.is_ascii_digit()))
        );
    }
}
