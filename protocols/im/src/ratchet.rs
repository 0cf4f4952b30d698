//! The Double Ratchet: an X25519 DH ratchet over BLAKE2b KDF chains, one
//! ChaCha20-Poly1305 key per message.
//!
//! A [`Session`] is made by [`crate::x3dh`] (or [`Session::new_initiator`] /
//! [`Session::new_responder`] from a shared secret). [`Session::encrypt`]
//! takes an RNG (a new ratchet key is drawn on the first send after a DH
//! step); [`Session::decrypt`] takes none and changes the state only when
//! the message authenticates.
//!
//! # Message layout (docs/PROTOCOL.md, section 10.4)
//! ```text
//! header (53 bytes): version: u8 (2) | ratchet_key: 32 | previous_chain_length: u32 BE
//!                     | number: u32 BE | nonce: 12
//! message:           header | ciphertext (len(plaintext)) | tag: 16
//! ```
//! AEAD: ChaCha20-Poly1305 with the message key, the header's nonce and
//! associated data `AD (64 bytes, from X3DH) | header`.
//!
//! # Why every seal draws a nonce
//! A message key is meant to seal one message. But a device's stored state
//! can go back in time (a restored backup, a copied data directory, a
//! crash under relaxed syncing), and the restored ratchet then derives keys
//! it already used. Each seal therefore draws a fresh 96-bit nonce from the
//! caller's RNG: a key sealing twice after a rollback does so under two
//! nonces, which ChaCha20-Poly1305 allows, instead of repeating a
//! (key, nonce) pair, which would reveal the XOR of the two plaintexts. The
//! only requirement left is that the RNG itself does not go back in time
//! (the engine seeds it afresh on every start).
//!
//! # The skipped-key window
//! A message may jump at most [`MAX_SKIP`] numbers ahead of the next
//! expected one in its chain (counted separately for the end of the previous
//! chain and the new one); further is [`Error::OutsideWindow`]. Keys of
//! messages skipped over are kept, at most [`MAX_SKIPPED_KEYS`] of them,
//! oldest evicted first, and a message whose key was evicted (or already
//! used) is [`Error::AlreadyUsedOrEvicted`]. Both become resend requests one
//! layer up; nothing is dropped silently. The peer's last
//! [`MAX_PAST_RATCHET_KEYS`] ratchet keys are remembered so a late message of
//! an old chain is recognised as such. Keys are kept until evicted by
//! count; there is no time limit in the core (it has no clock).

use std::collections::VecDeque;

use rand::CryptoRng;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use x25519_dalek::{PublicKey as XPublic, StaticSecret};
use zeroize::{Zeroize, Zeroizing};

use crate::Error;
use crate::kdf::{chain_step, root_step};

mod state;

/// How far ahead of the next expected number one message may jump in a chain.
/// Bounds the KDF work a single (possibly forged) message can cause.
pub const MAX_SKIP: u32 = 1_000;
/// How many skipped message keys a session keeps; the oldest are evicted
/// first. Bounds the memory and stored size of a session.
pub const MAX_SKIPPED_KEYS: usize = 2_000;
/// How many of the peer's previous ratchet keys a session remembers, so a
/// late or replayed message of an old chain whose keys are gone is reported
/// as [`Error::AlreadyUsedOrEvicted`] rather than as a forgery.
pub const MAX_PAST_RATCHET_KEYS: usize = 64;
/// Version byte of the ratchet header.
pub const HEADER_VERSION: u8 = 2;
/// Length of the per-message AEAD nonce carried in the header.
pub const NONCE_LEN: usize = 12;
/// Length of an encoded [`Header`].
pub const HEADER_LEN: usize = 1 + 32 + 4 + 4 + NONCE_LEN;
/// Length of the AEAD tag at the end of each message.
pub const TAG_LEN: usize = 16;
/// Version byte of the serialised session state ([`Session::to_bytes`]).
pub const STATE_VERSION: u8 = 2;
/// Length of the associated data fixed at session start (`IK_a | IK_b`).
pub const AD_LEN: usize = 64;

/// The cleartext header of a ratchet message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The sender's current ratchet public key.
    pub ratchet_key: [u8; 32],
    /// Number of messages in the sender's previous sending chain.
    pub previous_chain_length: u32,
    /// This message's number in the current sending chain.
    pub number: u32,
    /// The AEAD nonce, drawn afresh for every seal.
    pub nonce: [u8; NONCE_LEN],
}

impl Header {
    /// The exact bytes that travel.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0] = HEADER_VERSION;
        out[1..33].copy_from_slice(&self.ratchet_key);
        out[33..37].copy_from_slice(&self.previous_chain_length.to_be_bytes());
        out[37..41].copy_from_slice(&self.number.to_be_bytes());
        out[41..].copy_from_slice(&self.nonce);
        out
    }

    /// Parses the header at the start of a message (extra bytes are ignored).
    pub fn decode(bytes: &[u8]) -> Result<Header, Error> {
        let Some(h) = bytes.get(..HEADER_LEN) else {
            return Err(Error::Malformed {
                what: "ratchet header",
            });
        };
        if h[0] != HEADER_VERSION {
            return Err(Error::UnsupportedVersion {
                what: "ratchet header",
                found: h[0],
            });
        }
        let mut ratchet_key = [0u8; 32];
        ratchet_key.copy_from_slice(&h[1..33]);
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&h[41..]);
        Ok(Header {
            ratchet_key,
            previous_chain_length: be32(&h[33..37]),
            number: be32(&h[37..41]),
            nonce,
        })
    }
}

fn be32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(b);
    u32::from_be_bytes(a)
}

/// A skipped message key: (sender ratchet key, number) → key.
#[derive(Clone)]
struct Skipped {
    ratchet_key: [u8; 32],
    number: u32,
    key: [u8; 32],
}

impl Drop for Skipped {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

/// One end of a Double Ratchet session.
///
/// Call [`Session::encrypt`] to send and [`Session::decrypt`] for each
/// received message, in any order. Persist with [`Session::to_bytes`] after
/// every call that changed it, restore with [`Session::from_bytes`].
/// Secrets are zeroized on drop.
#[derive(Clone)]
pub struct Session {
    root: [u8; 32],
    ad: [u8; AD_LEN],
    /// Our current ratchet key pair; `None` for an initiator before its first send.
    our_ratchet: Option<RatchetKeyPair>,
    /// Their current ratchet key; `None` for a responder before its first receive.
    their_ratchet: Option<[u8; 32]>,
    send_chain: Option<[u8; 32]>,
    recv_chain: Option<[u8; 32]>,
    send_n: u32,
    recv_n: u32,
    previous_n: u32,
    /// A DH step was received; the next send draws a new ratchet key.
    send_step_pending: bool,
    skipped: VecDeque<Skipped>,
    /// The peer's previous ratchet keys, oldest first, each with the
    /// length of its chain as the peer announced it when it moved on.
    past_ratchets: VecDeque<PastRatchet>,
}

/// A ratchet key the peer used before its current one.
#[derive(Clone, Copy)]
struct PastRatchet {
    key: [u8; 32],
    /// Messages the peer said it sent on that key's chain
    /// (`previous_chain_length` of the first header after it); `u32::MAX`
    /// when unknown (a state stored in version 1).
    end: u32,
}

/// A ratchet key pair. The public key is derived once, when the pair is
/// made: every message header carries it, and deriving it per message was
/// a scalar multiplication per message (about 20 µs, most of the cost of
/// sending along one chain).
#[derive(Clone)]
struct RatchetKeyPair {
    secret: StaticSecret,
    public: [u8; 32],
}

impl RatchetKeyPair {
    fn new(secret: [u8; 32]) -> RatchetKeyPair {
        let secret = StaticSecret::from(secret);
        let public = XPublic::from(&secret).to_bytes();
        RatchetKeyPair { secret, public }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.root.zeroize();
        if let Some(c) = self.send_chain.as_mut() {
            c.zeroize();
        }
        if let Some(c) = self.recv_chain.as_mut() {
            c.zeroize();
        }
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("send_n", &self.send_n)
            .field("recv_n", &self.recv_n)
            .field("skipped", &self.skipped.len())
            .finish_non_exhaustive()
    }
}

fn dh(secret: &StaticSecret, public: &[u8; 32]) -> Result<Zeroizing<[u8; 32]>, Error> {
    let shared = secret.diffie_hellman(&XPublic::from(*public));
    if !shared.was_contributory() {
        return Err(Error::WeakKey);
    }
    Ok(Zeroizing::new(shared.to_bytes()))
}

fn aad(ad: &[u8; AD_LEN], header: &[u8; HEADER_LEN]) -> [u8; AD_LEN + HEADER_LEN] {
    let mut out = [0u8; AD_LEN + HEADER_LEN];
    out[..AD_LEN].copy_from_slice(ad);
    out[AD_LEN..].copy_from_slice(header);
    out
}

/// Decrypts `body` (ciphertext | tag) with `key` and the nonce in `header`;
/// the plaintext on success.
fn open(
    key: &[u8; 32],
    ad: &[u8; AD_LEN],
    header: &[u8; HEADER_LEN],
    body: &[u8],
) -> Result<Vec<u8>, Error> {
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&header[HEADER_LEN - NONCE_LEN..]);
    let Some(split) = body.len().checked_sub(TAG_LEN) else {
        return Err(Error::Malformed {
            what: "ratchet message",
        });
    };
    let mut out = body.to_vec();
    let opened = aead_key(key).and_then(|k| {
        k.open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad(ad, header)),
            &mut out,
        )
        .map(|plain| plain.len())
        .map_err(|_| Error::Decrypt)
    });
    match opened {
        Ok(len) => {
            out.truncate(len.min(split));
            Ok(out)
        }
        Err(e) => {
            out.zeroize();
            Err(e)
        }
    }
}

/// The ChaCha20-Poly1305 key for one message.
fn aead_key(key: &[u8; 32]) -> Result<LessSafeKey, Error> {
    UnboundKey::new(&CHACHA20_POLY1305, key)
        .map(LessSafeKey::new)
        .map_err(|_| Error::Decrypt)
}

impl Session {
    /// The initiator's session from the X3DH secret `shared`, the associated
    /// data `ad` and the responder's signed prekey (its first ratchet key).
    pub fn new_initiator(shared: [u8; 32], ad: [u8; AD_LEN], their_ratchet: [u8; 32]) -> Session {
        Session {
            root: shared,
            ad,
            our_ratchet: None,
            their_ratchet: Some(their_ratchet),
            send_chain: None,
            recv_chain: None,
            send_n: 0,
            recv_n: 0,
            previous_n: 0,
            send_step_pending: true,
            skipped: VecDeque::new(),
            past_ratchets: VecDeque::new(),
        }
    }

    /// The responder's session from the X3DH secret `shared`, the associated
    /// data `ad` and the signed prekey's secret (its first ratchet key).
    pub fn new_responder(shared: [u8; 32], ad: [u8; AD_LEN], our_ratchet: [u8; 32]) -> Session {
        Session {
            root: shared,
            ad,
            our_ratchet: Some(RatchetKeyPair::new(our_ratchet)),
            their_ratchet: None,
            send_chain: None,
            recv_chain: None,
            send_n: 0,
            recv_n: 0,
            previous_n: 0,
            send_step_pending: false,
            skipped: VecDeque::new(),
            past_ratchets: VecDeque::new(),
        }
    }

    /// Number of skipped message keys currently held.
    pub fn skipped_keys(&self) -> usize {
        self.skipped.len()
    }

    /// Erases every skipped message key (they expire: a message that
    /// arrives later is refused as [`Error::AlreadyUsedOrEvicted`], and its
    /// sender's retry, under a fresh key, delivers it).
    pub fn clear_skipped(&mut self) {
        self.skipped.clear();
    }

    /// Encrypts `plaintext` into one message (`header | ciphertext | tag`),
    /// allocating only the returned buffer. `rng` draws the message's nonce
    /// and, when a DH step is due, the new ratchet key.
    pub fn encrypt<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, Error> {
        if self.send_step_pending || self.send_chain.is_none() {
            let mut secret = Zeroizing::new([0u8; 32]);
            rng.fill_bytes(secret.as_mut());
            self.send_step(*secret)?;
        }
        if self.send_n == u32::MAX {
            return Err(Error::CounterExhausted);
        }
        let (Some(chain), Some(ours)) = (self.send_chain.as_mut(), self.our_ratchet.as_ref())
        else {
            return Err(Error::NotReady);
        };
        let (next, key) = chain_step(chain);
        let key = Zeroizing::new(key);
        *chain = next;
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let header = Header {
            ratchet_key: ours.public,
            previous_chain_length: self.previous_n,
            number: self.send_n,
            nonce,
        }
        .encode();
        #[cfg(feature = "seal-audit")]
        crate::audit::record(&key, &nonce, plaintext);
        self.send_n += 1;
        let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
        out.extend_from_slice(&header);
        out.extend_from_slice(plaintext);
        let tag = aead_key(&key)?
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(&self.ad, &header)),
                &mut out[HEADER_LEN..],
            )
            .map_err(|_| Error::Malformed {
                what: "plaintext too long",
            })?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    /// The sending half of a DH ratchet step with the new key `secret`.
    fn send_step(&mut self, secret: [u8; 32]) -> Result<(), Error> {
        let Some(theirs) = self.their_ratchet else {
            return Err(Error::NotReady);
        };
        let ours = RatchetKeyPair::new(secret);
        let shared = dh(&ours.secret, &theirs)?;
        let (root, chain) = root_step(&self.root, &shared);
        self.root = root;
        self.send_chain = Some(chain);
        self.our_ratchet = Some(ours);
        self.previous_n = self.send_n;
        self.send_n = 0;
        self.send_step_pending = false;
        Ok(())
    }

    /// Decrypts one message. On any error the session is unchanged, so a
    /// forged or damaged message cannot disturb later genuine ones.
    pub fn decrypt(&mut self, message: &[u8]) -> Result<Vec<u8>, Error> {
        let header = Header::decode(message)?;
        let mut header_bytes = [0u8; HEADER_LEN];
        header_bytes.copy_from_slice(&message[..HEADER_LEN]);
        let body = &message[HEADER_LEN..];

        // A key skipped earlier?
        let is_current = self.their_ratchet == Some(header.ratchet_key);
        if !is_current || header.number < self.recv_n {
            if let Some(i) = self
                .skipped
                .iter()
                .position(|s| s.ratchet_key == header.ratchet_key && s.number == header.number)
            {
                let plaintext = open(&self.skipped[i].key, &self.ad, &header_bytes, body)?;
                self.skipped.remove(i);
                return Ok(plaintext);
            }
            if let Some(past) = self
                .past_ratchets
                .iter()
                .find(|p| p.key == header.ratchet_key)
                && header.number >= past.end
            {
                // The peer said that chain ended before this number: its
                // state went back in time (or the header is forged; the
                // caller decides what that is worth).
                return Err(Error::BeyondChainEnd {
                    counter: header.number,
                    end: past.end,
                });
            }
            if is_current
                || self
                    .past_ratchets
                    .iter()
                    .any(|p| p.key == header.ratchet_key)
            {
                return Err(Error::AlreadyUsedOrEvicted {
                    counter: header.number,
                });
            }
        }

        // Work on copies; commit only after the message authenticates.
        let mut root = Zeroizing::new(self.root);
        let mut chain = self.recv_chain.map(Zeroizing::new);
        let mut n = self.recv_n;
        let mut new_skipped: Vec<Skipped> = Vec::new();
        if !is_current {
            // Finish the old receiving chain up to its announced length.
            if let Some(ck) = chain.as_mut() {
                skip(
                    ck,
                    &mut n,
                    header.previous_chain_length,
                    self.their_ratchet.unwrap_or_default(),
                    &mut new_skipped,
                )?;
            }
            let Some(ours) = self.our_ratchet.as_ref() else {
                return Err(Error::NotReady);
            };
            let shared = dh(&ours.secret, &header.ratchet_key)?;
            let (r, c) = root_step(&root, &shared);
            *root = r;
            chain = Some(Zeroizing::new(c));
            n = 0;
        }
        let Some(mut ck) = chain else {
            return Err(Error::NotReady);
        };
        skip(
            &mut ck,
            &mut n,
            header.number,
            header.ratchet_key,
            &mut new_skipped,
        )?;
        let (next, key) = chain_step(&ck);
        let key = Zeroizing::new(key);
        *ck = next;
        let plaintext = open(&key, &self.ad, &header_bytes, body)?;

        // Commit.
        self.root = *root;
        self.recv_chain = Some(*ck);
        self.recv_n = n.saturating_add(1);
        if !is_current {
            if let Some(old) = self.their_ratchet.replace(header.ratchet_key) {
                self.past_ratchets.push_back(PastRatchet {
                    key: old,
                    end: header.previous_chain_length,
                });
                if self.past_ratchets.len() > MAX_PAST_RATCHET_KEYS {
                    self.past_ratchets.pop_front();
                }
            }
            self.send_step_pending = true;
        }
        for s in new_skipped.drain(..) {
            self.skipped.push_back(s);
        }
        while self.skipped.len() > MAX_SKIPPED_KEYS {
            self.skipped.pop_front();
        }
        Ok(plaintext)
    }
}

/// Advances `chain` from number `*n` to `until`, storing the keys skipped over.
fn skip(
    chain: &mut [u8; 32],
    n: &mut u32,
    until: u32,
    ratchet_key: [u8; 32],
    out: &mut Vec<Skipped>,
) -> Result<(), Error> {
    if until < *n {
        return Ok(());
    }
    if until - *n > MAX_SKIP {
        return Err(Error::OutsideWindow {
            counter: until,
            next: *n,
            max_skip: MAX_SKIP,
        });
    }
    while *n < until {
        let (next, key) = chain_step(chain);
        *chain = next;
        out.push(Skipped {
            ratchet_key,
            number: *n,
            key,
        });
        *n += 1;
    }
    Ok(())
}
