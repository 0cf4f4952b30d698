//! A [`Session`]'s stored form: the whole state, secrets included, as the
//! engine commits it (and reads it back, checking every length first).

use zeroize::Zeroizing;

use super::{
    AD_LEN, MAX_PAST_RATCHET_KEYS, MAX_SKIPPED_KEYS, PastRatchet, RatchetKeyPair, STATE_VERSION,
    Session, Skipped, be32,
};
use crate::Error;

impl Session {
    /// Serialises the whole state (secrets included) for storage:
    ///
    /// ```text
    /// version: u8 (2) | root: 32 | ad: 64 | flags: u8 | our_ratchet: 32 | their_ratchet: 32
    /// | send_chain: 32 | recv_chain: 32 | send_n: u32 | recv_n: u32 | previous_n: u32
    /// | skipped_count: u32 | skipped_count × (ratchet_key: 32 | number: u32 | key: 32)
    /// | past_count: u32 | past_count × (ratchet_key: 32 | chain_end: u32)
    /// ```
    /// Version 1 (read, never written) had no `chain_end`.
    /// `flags` bit 0..3: our_ratchet, their_ratchet, send_chain, recv_chain
    /// present (absent ones are written as zeros); bit 4: send step pending.
    /// Integers are big-endian.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(
            STATE_FIXED_LEN + self.skipped.len() * SKIPPED_LEN + 4 + self.past_ratchets.len() * 36,
        ));
        let flags = u8::from(self.our_ratchet.is_some())
            | u8::from(self.their_ratchet.is_some()) << 1
            | u8::from(self.send_chain.is_some()) << 2
            | u8::from(self.recv_chain.is_some()) << 3
            | u8::from(self.send_step_pending) << 4;
        out.push(STATE_VERSION);
        out.extend_from_slice(&self.root);
        out.extend_from_slice(&self.ad);
        out.push(flags);
        let ours = self
            .our_ratchet
            .as_ref()
            .map(|s| Zeroizing::new(s.secret.to_bytes()))
            .unwrap_or_default();
        out.extend_from_slice(ours.as_ref());
        out.extend_from_slice(&self.their_ratchet.unwrap_or_default());
        out.extend_from_slice(&self.send_chain.unwrap_or_default());
        out.extend_from_slice(&self.recv_chain.unwrap_or_default());
        out.extend_from_slice(&self.send_n.to_be_bytes());
        out.extend_from_slice(&self.recv_n.to_be_bytes());
        out.extend_from_slice(&self.previous_n.to_be_bytes());
        // At most MAX_SKIPPED_KEYS, which fits in a u32.
        out.extend_from_slice(&(self.skipped.len() as u32).to_be_bytes());
        for s in &self.skipped {
            out.extend_from_slice(&s.ratchet_key);
            out.extend_from_slice(&s.number.to_be_bytes());
            out.extend_from_slice(&s.key);
        }
        // At most MAX_PAST_RATCHET_KEYS.
        out.extend_from_slice(&(self.past_ratchets.len() as u32).to_be_bytes());
        for past in &self.past_ratchets {
            out.extend_from_slice(&past.key);
            out.extend_from_slice(&past.end.to_be_bytes());
        }
        out
    }

    /// Restores a state written by [`Session::to_bytes`], checking the version,
    /// the exact length and the skipped-key bound.
    pub fn from_bytes(bytes: &[u8]) -> Result<Session, Error> {
        const WHAT: &str = "session state";
        let malformed = Error::Malformed { what: WHAT };
        if bytes.len() < STATE_FIXED_LEN {
            return Err(malformed);
        }
        let past_len = match bytes[0] {
            STATE_VERSION => 36,
            1 => 32,
            found => return Err(Error::UnsupportedVersion { what: WHAT, found }),
        };
        let key = |at: usize| {
            let mut k = [0u8; 32];
            k.copy_from_slice(&bytes[at..at + 32]);
            k
        };
        let mut ad = [0u8; AD_LEN];
        ad.copy_from_slice(&bytes[33..33 + AD_LEN]);
        let flags = bytes[97];
        if flags >> 5 != 0 {
            return Err(malformed);
        }
        let has = |bit: u8| flags & (1 << bit) != 0;
        let count = be32(&bytes[STATE_FIXED_LEN - 4..STATE_FIXED_LEN]) as usize;
        let past_at = STATE_FIXED_LEN + count * SKIPPED_LEN;
        if count > MAX_SKIPPED_KEYS || bytes.len() < past_at + 4 {
            return Err(malformed);
        }
        let past = be32(&bytes[past_at..past_at + 4]) as usize;
        if past > MAX_PAST_RATCHET_KEYS || bytes.len() != past_at + 4 + past * past_len {
            return Err(malformed);
        }
        let past_ratchets = bytes[past_at + 4..]
            .chunks_exact(past_len)
            .map(|c| {
                let mut key = [0u8; 32];
                key.copy_from_slice(&c[..32]);
                let end = if past_len == 36 {
                    be32(&c[32..])
                } else {
                    u32::MAX
                };
                PastRatchet { key, end }
            })
            .collect();
        let skipped = bytes[STATE_FIXED_LEN..past_at]
            .chunks_exact(SKIPPED_LEN)
            .map(|c| {
                let mut ratchet_key = [0u8; 32];
                ratchet_key.copy_from_slice(&c[..32]);
                let mut key = [0u8; 32];
                key.copy_from_slice(&c[36..]);
                Skipped {
                    ratchet_key,
                    number: be32(&c[32..36]),
                    key,
                }
            })
            .collect();
        Ok(Session {
            root: key(1),
            ad,
            our_ratchet: has(0).then(|| RatchetKeyPair::new(key(98))),
            their_ratchet: has(1).then(|| key(130)),
            send_chain: has(2).then(|| key(162)),
            recv_chain: has(3).then(|| key(194)),
            send_n: be32(&bytes[226..230]),
            recv_n: be32(&bytes[230..234]),
            previous_n: be32(&bytes[234..238]),
            send_step_pending: has(4),
            skipped,
            past_ratchets,
        })
    }
}

/// Length of the fixed part of a serialised session.
const STATE_FIXED_LEN: usize = 1 + 32 + AD_LEN + 1 + 4 * 32 + 4 * 4;
/// Length of one serialised skipped key.
const SKIPPED_LEN: usize = 32 + 4 + 32;
