//! The simulated network: how long a message takes and whether it arrives.

use std::time::Duration;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Latency and loss of the simulated network.
///
/// Each ordered pair of nodes has a base latency drawn uniformly from
/// `[min_latency, max_latency]` (fixed for the pair, derived from the
/// simulation seed and the two indices); each message adds a uniform
/// jitter in `[0, jitter]`, so messages on one link may be reordered. Each
/// message is lost with probability `loss`.
///
/// With `connect_round_trips` above 0, two nodes are connected only once
/// one sent the other a message: the first message of a pair waits that
/// many round trips of the pair (the handshakes of a real connection),
/// and so does every message sent while the connection opens. A
/// connection lasts until either end crashes.
#[derive(Debug, Clone, Copy)]
pub struct NetworkModel {
    /// Smallest one-way base latency of a link.
    pub min_latency: Duration,
    /// Largest one-way base latency of a link.
    pub max_latency: Duration,
    /// Largest extra delay of one message.
    pub jitter: Duration,
    /// Probability that a message is lost, in `[0, 1]`.
    pub loss: f64,
    /// Round trips a new connection costs before its first message
    /// arrives (TCP's handshake, secio's Noise XX handshake and the
    /// negotiation of the first substream: 3); 0 models none.
    pub connect_round_trips: u32,
}

impl Default for NetworkModel {
    /// A wide-area network: 10–100 ms one way, up to 5 ms jitter, no loss,
    /// connections free.
    fn default() -> NetworkModel {
        NetworkModel {
            min_latency: Duration::from_millis(10),
            max_latency: Duration::from_millis(100),
            jitter: Duration::from_millis(5),
            loss: 0.0,
            connect_round_trips: 0,
        }
    }
}

impl NetworkModel {
    /// The same network losing `loss` of all messages.
    pub fn with_loss(self, loss: f64) -> NetworkModel {
        NetworkModel { loss, ..self }
    }

    /// The base latency of the link `from → to`, stable for the pair.
    pub(crate) fn link_latency(&self, seed: u64, from: usize, to: usize) -> Duration {
        let spread = self.max_latency.saturating_sub(self.min_latency);
        if spread.is_zero() {
            return self.min_latency;
        }
        let h = mix(seed ^ mix((from as u64) << 32 | to as u64));
        let nanos = spread.as_nanos() as u64;
        self.min_latency + Duration::from_nanos(h % (nanos + 1))
    }

    /// Whether the next message is lost, and otherwise its jitter.
    pub(crate) fn sample(&self, rng: &mut ChaCha8Rng) -> Option<Duration> {
        if self.loss > 0.0 && rng.random_bool(self.loss.clamp(0.0, 1.0)) {
            return None;
        }
        let jitter = self.jitter.as_nanos() as u64;
        Some(Duration::from_nanos(if jitter == 0 {
            0
        } else {
            rng.random_range(0..=jitter)
        }))
    }
}

/// A 64-bit finaliser (SplitMix64): spreads the bits of `x`.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn link_latency_is_stable_and_in_range() {
        let m = NetworkModel::default();
        for (a, b) in [(0, 1), (1, 0), (7, 4000), (4999, 3)] {
            let l = m.link_latency(42, a, b);
            assert_eq!(l, m.link_latency(42, a, b));
            assert!(l >= m.min_latency && l <= m.max_latency, "{l:?}");
        }
        assert_ne!(m.link_latency(42, 0, 1), m.link_latency(43, 0, 1));
    }

    #[test]
    fn loss_rate_is_close_to_the_setting() {
        let m = NetworkModel::default().with_loss(0.1);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let lost = (0..10_000).filter(|_| m.sample(&mut rng).is_none()).count();
        assert!((800..1200).contains(&lost), "{lost}");
    }
}
