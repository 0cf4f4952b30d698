//! A fault-injecting layer between the engine and the network, for tests
//! and demonstrations of the delivery guarantees: it drops, duplicates and
//! delays (and so reorders) outgoing envelopes at configured rates.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// Rates of each fault, applied independently to every outgoing envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultConfig {
    /// Probability an envelope is dropped.
    pub drop: f64,
    /// Probability an envelope is sent twice (the copy later).
    pub duplicate: f64,
    /// Probability an envelope is held back by up to `max_delay`, so later
    /// ones overtake it.
    pub delay: f64,
    /// Longest added delay.
    pub max_delay: Duration,
    /// Seed of the fault decisions.
    pub seed: u64,
}

impl FaultConfig {
    /// Every fault at rate `rate`, delays up to 50 ms.
    pub fn uniform(rate: f64, seed: u64) -> FaultConfig {
        FaultConfig {
            drop: rate,
            duplicate: rate,
            delay: rate,
            max_delay: Duration::from_millis(50),
            seed,
        }
    }
}

/// The decisions for one envelope: send a copy after each listed delay
/// (empty: dropped).
pub(crate) struct Faults {
    config: FaultConfig,
    rng: ChaCha20Rng,
}

impl Faults {
    pub(crate) fn new(config: FaultConfig) -> Faults {
        let rng = ChaCha20Rng::seed_from_u64(config.seed);
        Faults { config, rng }
    }

    /// The delays of the copies to send (none when dropped).
    pub(crate) fn plan(&mut self) -> Vec<Duration> {
        let mut copies = Vec::with_capacity(2);
        if self.rng.random_bool(self.config.drop.clamp(0.0, 1.0)) {
            return copies;
        }
        let max = self.config.max_delay.max(Duration::from_millis(1));
        let first = if self.rng.random_bool(self.config.delay.clamp(0.0, 1.0)) {
            max.mul_f64(self.rng.random_range(0.1..1.0))
        } else {
            Duration::ZERO
        };
        copies.push(first);
        if self.rng.random_bool(self.config.duplicate.clamp(0.0, 1.0)) {
            copies.push(first + max.mul_f64(self.rng.random_range(0.0..1.0)));
        }
        copies
    }
}
