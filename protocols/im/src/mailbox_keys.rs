//! The keys of 1:1 mailboxes: where a message waits while its recipient is
//! offline.
//!
//! Two devices share a [`PairSecret`]: the static X25519 agreement of their
//! certified identity keys, so it survives session resets and changes only
//! with a device. From it, each direction and each day gets an ed25519 key
//! pair ([`PairSecret::mailbox_key`]); the mailbox is the one that key
//! verifies (the messenger makes it an owner-written, ack-deleted mailbox),
//! and its id is a hash of the public key. Storage nodes therefore cannot
//! link a user's mailboxes across contacts or days, and only the two
//! devices can write, read or delete.
//!
//! Days are whole UTC days ([`day_of`]). A sender writes to its current
//! day's mailbox; a recipient reads the days from the day before the last
//! one it read through the day after today ([`days_to_fetch`]), so clocks
//! up to 24 hours apart still meet.

use std::ops::RangeInclusive;

use shoal_identity::{Keypair, PublicKey};
use x25519_dalek::PublicKey as X25519Public;
use zeroize::Zeroizing;

use crate::account::{Device, DeviceCertificate};
use crate::kdf::kdf;

/// Domain of the pair secret.
pub const PAIR_DOMAIN: &str = "shoal/im/mailbox-pair/1";

/// Domain of a day's mailbox key.
pub const DAY_KEY_DOMAIN: &str = "shoal/im/mailbox-day/1";

/// Length of a day, in seconds.
pub const DAY_SECS: u64 = 86_400;

/// The most days a recipient reads at once: the longest a replica keeps an
/// envelope (14 days), plus the two days of clock tolerance.
pub const MAX_FETCH_DAYS: u64 = 16;

/// The UTC day of wall time `unix_secs`.
pub fn day_of(unix_secs: u64) -> u64 {
    unix_secs / DAY_SECS
}

/// The days a recipient reads at `now_unix`, having last read through
/// `last_read` (a day): from the day before that (before today, if it read
/// "later") through tomorrow, at most [`MAX_FETCH_DAYS`]; never read: the
/// whole [`MAX_FETCH_DAYS`] (a contact may have written before we first
/// read, while we were away).
pub fn days_to_fetch(last_read: Option<u64>, now_unix: u64) -> RangeInclusive<u64> {
    let today = day_of(now_unix);
    let end = today + 1;
    let start = last_read
        .unwrap_or(0)
        .min(today)
        .saturating_sub(1)
        .max(end.saturating_sub(MAX_FETCH_DAYS - 1));
    start..=end
}

/// The secret two devices share for their mailboxes. See the
/// [module docs](self).
pub struct PairSecret(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for PairSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PairSecret(..)")
    }
}

impl PairSecret {
    /// The secret `device` shares with the device certified by `theirs`:
    /// KDF of the X25519 agreement of the two identity keys, over both
    /// device keys in byte order. `None` if the agreement is degenerate
    /// (a low-order identity key).
    pub fn new(device: &Device, theirs: &DeviceCertificate) -> Option<PairSecret> {
        let shared = device
            .identity()
            .diffie_hellman(&X25519Public::from(theirs.identity_key()));
        if !shared.was_contributory() {
            return None;
        }
        let (a, b) = (
            device.certificate().device().to_bytes(),
            theirs.device().to_bytes(),
        );
        let (first, second) = if a <= b { (a, b) } else { (b, a) };
        let dh = Zeroizing::new(shared.to_bytes());
        let out = kdf(PAIR_DOMAIN, &dh, &[&first, &second]);
        let mut secret = Zeroizing::new([0u8; 32]);
        secret.copy_from_slice(&out[..32]);
        Some(PairSecret(secret))
    }

    /// The key pair of the mailbox the device `sender` (one of the pair,
    /// by its signing key) writes to on `day`.
    pub fn mailbox_key(&self, sender: &PublicKey, day: u64) -> Keypair {
        let out = kdf(
            DAY_KEY_DOMAIN,
            &self.0,
            &[&sender.to_bytes(), &day.to_be_bytes()],
        );
        let mut seed = Zeroizing::new([0u8; 32]);
        seed.copy_from_slice(&out[..32]);
        Keypair::from_secret_bytes(&seed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(n: u8) -> Device {
        let user = Keypair::from_secret_bytes(&[n; 32]);
        Device::new(
            &user,
            Keypair::from_secret_bytes(&[n + 1; 32]),
            [n + 2; 32],
            1_700_000_000,
        )
    }

    #[test]
    fn both_devices_derive_the_same_keys_and_nobody_else_does() {
        let (a, b, c) = (device(10), device(20), device(30));
        let ab = PairSecret::new(&a, b.certificate()).unwrap();
        let ba = PairSecret::new(&b, a.certificate()).unwrap();
        let ac = PairSecret::new(&a, c.certificate()).unwrap();
        let a_key = a.certificate().device();
        let b_key = b.certificate().device();
        let day = day_of(1_700_000_000);
        let k = ab.mailbox_key(&a_key, day);
        assert_eq!(k.public(), ba.mailbox_key(&a_key, day).public());
        // Each direction, day and pair has its own mailbox.
        assert_ne!(k.public(), ab.mailbox_key(&b_key, day).public());
        assert_ne!(k.public(), ab.mailbox_key(&a_key, day + 1).public());
        assert_ne!(k.public(), ac.mailbox_key(&a_key, day).public());
    }

    /// The vector printed in docs/PROTOCOL.md, section 12.6.
    #[test]
    fn documented_vector() {
        let device = |user: u8, signing: u8, identity: u8| {
            Device::new(
                &Keypair::from_secret_bytes(&[user; 32]),
                Keypair::from_secret_bytes(&[signing; 32]),
                [identity; 32],
                1_700_000_000,
            )
        };
        let a = device(0x31, 0x32, 0x33);
        let b = device(0x36, 0x37, 0x38);
        let pair = PairSecret::new(&a, b.certificate()).unwrap();
        let key = pair.mailbox_key(&a.certificate().device(), 20_000);
        let hex: String = key
            .public()
            .to_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "f9945310469c613a1a28b886867cd26e4c72f5b48ecf79c1c22988d0e86d2f9d"
        );
    }

    #[test]
    fn the_days_a_recipient_reads() {
        let now = 100 * DAY_SECS + 5;
        assert_eq!(days_to_fetch(None, now), 86..=101);
        assert_eq!(days_to_fetch(Some(100), now), 99..=101);
        assert_eq!(days_to_fetch(Some(97), now), 96..=101);
        // Back from months away: the last 16 days (what replicas still hold).
        assert_eq!(days_to_fetch(Some(10), now), 86..=101);
        // A clock that ran ahead before: still around today.
        assert_eq!(days_to_fetch(Some(150), now), 99..=101);
    }
}
