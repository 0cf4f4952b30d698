//! Cipher suites: which Noise protocol a connection runs.

use std::fmt;

use snow::params::NoiseParams;

/// A Noise cipher suite, named on the wire by a one-byte id.
///
/// Both suites use the XX pattern, X25519 and BLAKE2s; they differ only in the
/// AEAD. ChaChaPoly is fast everywhere; AES-GCM is several times faster on
/// CPUs with AES instructions and slow (but constant-time) elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CipherSuite {
    /// `Noise_XX_25519_ChaChaPoly_BLAKE2s`, wire id 1.
    ChaChaPoly,
    /// `Noise_XX_25519_AESGCM_BLAKE2s`, wire id 2.
    AesGcm,
}

impl CipherSuite {
    /// Every suite this implementation knows, in id order.
    pub const ALL: [CipherSuite; 2] = [CipherSuite::ChaChaPoly, CipherSuite::AesGcm];

    /// The one-byte wire id.
    pub const fn id(self) -> u8 {
        match self {
            CipherSuite::ChaChaPoly => 1,
            CipherSuite::AesGcm => 2,
        }
    }

    /// The suite with wire id `id`, if known.
    pub const fn from_id(id: u8) -> Option<CipherSuite> {
        match id {
            1 => Some(CipherSuite::ChaChaPoly),
            2 => Some(CipherSuite::AesGcm),
            _ => None,
        }
    }

    /// The full Noise protocol name.
    pub const fn noise_name(self) -> &'static str {
        match self {
            CipherSuite::ChaChaPoly => "Noise_XX_25519_ChaChaPoly_BLAKE2s",
            CipherSuite::AesGcm => "Noise_XX_25519_AESGCM_BLAKE2s",
        }
    }

    /// The default preference order for this machine: AES-GCM first when the
    /// CPU has AES instructions (checked at run time), ChaChaPoly first
    /// otherwise. Both suites are always offered.
    pub fn default_preference() -> Vec<CipherSuite> {
        if cpu_has_aes() {
            vec![CipherSuite::AesGcm, CipherSuite::ChaChaPoly]
        } else {
            vec![CipherSuite::ChaChaPoly, CipherSuite::AesGcm]
        }
    }

    pub(crate) fn noise_params(self) -> Result<NoiseParams, snow::Error> {
        self.noise_name().parse()
    }
}

impl fmt::Display for CipherSuite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.noise_name())
    }
}

/// Whether the CPU has hardware AES (and so fast, constant-time AES-GCM).
fn cpu_has_aes() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_names_parse() {
        for suite in CipherSuite::ALL {
            assert_eq!(CipherSuite::from_id(suite.id()), Some(suite));
            assert!(suite.noise_params().is_ok());
        }
        assert_eq!(CipherSuite::from_id(0), None);
        assert_eq!(CipherSuite::from_id(3), None);
    }

    #[test]
    fn default_preference_offers_both() {
        let prefs = CipherSuite::default_preference();
        assert_eq!(prefs.len(), 2);
        assert!(prefs.contains(&CipherSuite::ChaChaPoly));
        assert!(prefs.contains(&CipherSuite::AesGcm));
    }
}
