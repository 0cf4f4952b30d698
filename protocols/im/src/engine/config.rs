//! The engine's tunables.

use std::time::Duration;

/// Default of [`EngineConfig::skipped_key_lifetime`]: a week.
pub const SKIPPED_KEY_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

/// Tunables of an [`Engine`](super::Engine).
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// First retry of an unacknowledged message.
    pub retry_initial: Duration,
    /// Longest wait between retries.
    pub retry_max: Duration,
    /// Shortest interval between two resend requests to one contact.
    pub resend_interval: Duration,
    /// Sessions kept per contact for decrypting late messages.
    pub max_sessions: usize,
    /// How long skipped message keys (kept to decrypt envelopes that arrive
    /// late or out of order) are kept; then all of a session's are erased,
    /// and a message that arrives after that comes with its sender's retry.
    pub skipped_key_lifetime: Duration,
    /// First wait before asking again for a route to a contact whose
    /// messages wait ([`Event::NeedBundle`](super::Event::NeedBundle),
    /// [`Event::NeedRoute`](super::Event::NeedRoute): each is
    /// one directory lookup or dial); doubles while no route is found.
    pub route_retry: Duration,
    /// Longest wait between two route requests for one contact.
    pub route_retry_max: Duration,
}

impl Default for EngineConfig {
    fn default() -> EngineConfig {
        EngineConfig {
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(30),
            resend_interval: Duration::from_secs(1),
            max_sessions: 4,
            skipped_key_lifetime: SKIPPED_KEY_LIFETIME,
            route_retry: Duration::from_millis(100),
            route_retry_max: Duration::from_secs(60),
        }
    }
}
