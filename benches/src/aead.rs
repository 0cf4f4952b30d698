//! One-core throughput of the AEADs a secure channel may use, through the
//! same `snow` cipher implementations the channel uses.

use std::time::{Duration, Instant};

use snow::{
    params::CipherChoice,
    resolvers::{CryptoResolver, DefaultResolver, RingResolver},
};

/// Largest plaintext of one Noise transport message (65535 minus the tag).
pub const MAX_FRAME_PLAINTEXT: usize = 65535 - 16;

/// Which implementation of a cipher to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `ring`'s assembly implementations.
    Ring,
    /// The RustCrypto crates (snow's default resolver).
    RustCrypto,
}

/// Encrypt and decrypt throughput in bytes per second of plaintext.
#[derive(Debug, Clone, Copy)]
pub struct AeadThroughput {
    /// Sealing rate.
    pub encrypt: f64,
    /// Opening rate.
    pub decrypt: f64,
}

impl AeadThroughput {
    /// The slower direction: the bound for a pipeline with one core per side.
    pub fn bound(&self) -> f64 {
        self.encrypt.min(self.decrypt)
    }
}

/// Measures `cipher` from `backend` on maximal Noise frames for about
/// `duration` per direction. Returns `None` if the backend lacks the cipher.
pub fn measure(
    backend: Backend,
    cipher: CipherChoice,
    duration: Duration,
) -> Option<AeadThroughput> {
    let resolve = |choice: &CipherChoice| match backend {
        Backend::Ring => RingResolver.resolve_cipher(choice),
        Backend::RustCrypto => DefaultResolver.resolve_cipher(choice),
    };
    let mut sealer = resolve(&cipher)?;
    let mut opener = resolve(&cipher)?;
    let key = [0x42u8; 32];
    sealer.set(&key);
    opener.set(&key);
    let plaintext = vec![0xa5u8; MAX_FRAME_PLAINTEXT];
    let mut ciphertext = vec![0u8; MAX_FRAME_PLAINTEXT + 16];
    let mut opened = vec![0u8; MAX_FRAME_PLAINTEXT];

    let start = Instant::now();
    let mut frames = 0u64;
    while start.elapsed() < duration {
        sealer.encrypt(frames, &[], &plaintext, &mut ciphertext);
        frames += 1;
    }
    let encrypt = (frames as f64 * MAX_FRAME_PLAINTEXT as f64) / start.elapsed().as_secs_f64();

    sealer.encrypt(0, &[], &plaintext, &mut ciphertext);
    let start = Instant::now();
    let mut opens = 0u64;
    while start.elapsed() < duration {
        // Re-open the same frame with its nonce: same work as a fresh one.
        opener.decrypt(0, &[], &ciphertext, &mut opened).ok()?;
        opens += 1;
    }
    std::hint::black_box(&opened);
    let decrypt = (opens as f64 * MAX_FRAME_PLAINTEXT as f64) / start.elapsed().as_secs_f64();
    Some(AeadThroughput { encrypt, decrypt })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_backends_measure_both_ciphers() {
        for backend in [Backend::Ring, Backend::RustCrypto] {
            for cipher in [CipherChoice::ChaChaPoly, CipherChoice::AESGCM] {
                let t = measure(backend, cipher, Duration::from_millis(20)).unwrap();
                assert!(t.encrypt > 0.0 && t.decrypt > 0.0);
            }
        }
    }
}
