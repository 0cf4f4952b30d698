//! Virtual time: what a core is told "now" is.

use std::time::{Duration, Instant};

/// The simulated time handed to a core: both clocks the cores take as
/// parameters, advancing together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    /// Monotonic time, for timers and timeouts.
    pub instant: Instant,
    /// Wall-clock time in seconds since the Unix epoch, for signed expiries.
    pub unix_secs: u64,
}

/// The origin of a simulation's virtual time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Origin {
    instant: Instant,
    unix_secs: u64,
}

impl Origin {
    /// Virtual time starts at an arbitrary real `Instant` (only differences
    /// between instants matter to a core, so runs stay deterministic) and at
    /// `unix_secs` on the wall clock.
    pub(crate) fn new(unix_secs: u64) -> Origin {
        Origin {
            instant: Instant::now(),
            unix_secs,
        }
    }

    /// The clocks `elapsed` after the start.
    pub(crate) fn at(&self, elapsed: Duration) -> Clock {
        Clock {
            instant: self.instant + elapsed,
            unix_secs: self.unix_secs + elapsed.as_secs(),
        }
    }

    /// Time since the start of `instant` (zero if before it).
    pub(crate) fn elapsed(&self, instant: Instant) -> Duration {
        instant.saturating_duration_since(self.instant)
    }
}
