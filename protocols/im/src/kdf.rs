//! The keyed BLAKE2b KDF all derivations of the crate share.
//!
//! `kdf(domain, key, input)` = BLAKE2b-512 keyed with `key` (32 bytes) over
//! `len(domain): u8 | domain | input` (docs/PROTOCOL.md, section 10.1).
//! Each use has its own domain constant, so outputs of one use can never
//! stand in for another's.

use blake2::Blake2bMac512;
use blake2::digest::{KeyInit, Mac};
use zeroize::Zeroizing;

/// Domain of the X3DH shared secret (2: certificates bound in).
pub const X3DH_DOMAIN: &str = "shoal/im/x3dh/2";
/// Domain of the X3DH associated data (a hash of both certificates).
pub const X3DH_AD_DOMAIN: &str = "shoal/im/x3dh/ad/2";
/// Domain of the root-chain step (root key, DH output → root key, chain key).
pub const ROOT_DOMAIN: &str = "shoal/im/ratchet/root/1";
/// Domain of the symmetric-chain step (chain key → chain key, message key).
pub const CHAIN_DOMAIN: &str = "shoal/im/ratchet/chain/1";

/// BLAKE2b-512 keyed with `key` over `len(domain) | domain | input`.
pub fn kdf(domain: &str, key: &[u8; 32], input: &[&[u8]]) -> Zeroizing<[u8; 64]> {
    // A 32-byte key is always within BLAKE2b's 64-byte key limit.
    #[allow(clippy::expect_used)]
    let mut mac = <Blake2bMac512 as KeyInit>::new_from_slice(key)
        .expect("32-byte key is a valid BLAKE2b key");
    // Domain constants are short literals (< 256 bytes).
    mac.update(&[domain.len() as u8]);
    mac.update(domain.as_bytes());
    for part in input {
        mac.update(part);
    }
    let mut out = Zeroizing::new([0u8; 64]);
    out.copy_from_slice(&mac.finalize().into_bytes());
    out
}

/// Splits a 64-byte KDF output into two 32-byte keys.
pub fn split(out: &[u8; 64]) -> ([u8; 32], [u8; 32]) {
    let mut a = [0u8; 32];
    let mut b = [0u8; 32];
    a.copy_from_slice(&out[..32]);
    b.copy_from_slice(&out[32..]);
    (a, b)
}

/// The root-chain step: `(root', chain) = kdf(ROOT_DOMAIN, root, dh)`.
pub fn root_step(root: &[u8; 32], dh: &[u8; 32]) -> ([u8; 32], [u8; 32]) {
    split(&kdf(ROOT_DOMAIN, root, &[dh]))
}

/// The symmetric-chain step: `(chain', message_key) = kdf(CHAIN_DOMAIN, chain, "")`.
pub fn chain_step(chain: &[u8; 32]) -> ([u8; 32], [u8; 32]) {
    split(&kdf(CHAIN_DOMAIN, chain, &[]))
}
