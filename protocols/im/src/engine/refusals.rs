//! Refused envelopes: counted, logged at a bounded rate, never events.
//!
//! Anyone who can reach a device can send it envelopes, and most refusals
//! (bytes that do not parse, do not decrypt, name no session) cannot even
//! be attributed. An application event per refusal would let any peer flood
//! or stall the application, so the engine only counts them
//! ([`Engine::refusals`]) and writes one log line per
//! [`REFUSAL_LOG_INTERVAL`] at most.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::{Engine, RejectReason};
use crate::UserId;
use crate::store::Store;

/// Shortest interval between two log lines about refused envelopes.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Envelopes refused since the engine opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Refusals {
    /// All of them.
    pub total: u64,
    /// By reason ([`RejectReason::label`]).
    pub by_reason: BTreeMap<&'static str, u64>,
    /// The latest one: the contact it could be attributed to, and why.
    pub last: Option<(Option<UserId>, RejectReason)>,
    /// Log lines written about them (at most one per
    /// [`REFUSAL_LOG_INTERVAL`]).
    pub reports: u64,
}

impl Refusals {
    /// How many were refused for the reason labelled `label`.
    pub fn count(&self, label: &str) -> u64 {
        self.by_reason.get(label).copied().unwrap_or(0)
    }
}

/// The counters and the log's rate limit.
#[derive(Default)]
pub(super) struct RefusalLog {
    counts: Refusals,
    /// When the last line was written, and the total then.
    logged: Option<(Instant, u64)>,
}

impl<S: Store> Engine<S> {
    /// Envelopes refused since the engine opened, by reason.
    pub fn refusals(&self) -> &Refusals {
        &self.refusals.counts
    }

    /// Counts a refused envelope and logs, at most once per
    /// [`REFUSAL_LOG_INTERVAL`], how many were refused since the last line.
    pub(super) fn refused(&mut self, now: Instant, contact: Option<UserId>, reason: RejectReason) {
        let log = &mut self.refusals;
        log.counts.total += 1;
        *log.counts.by_reason.entry(reason.label()).or_default() += 1;
        tracing::trace!(?contact, %reason, "envelope refused");
        let due = log
            .logged
            .is_none_or(|(at, _)| now >= at + REFUSAL_LOG_INTERVAL);
        if due {
            let since = log.logged.map_or(0, |(_, total)| total);
            tracing::info!(
                refused = log.counts.total - since,
                latest = %reason,
                "envelopes refused since the last report"
            );
            log.logged = Some((now, log.counts.total));
            log.counts.reports += 1;
        }
        log.counts.last = Some((contact, reason));
    }
}
