//! A replica's limits ([`ReplicaConfig`]) and counters ([`ReplicaStats`]).

use std::time::Duration;

/// Longest time a replica keeps an envelope: 14 days.
pub const MAX_TTL: Duration = Duration::from_secs(14 * 24 * 3600);

/// A replica's limits. Each default is what a service node on a small
/// machine can afford.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// Longest expiry accepted, from now; later ones are shortened to it.
    pub max_ttl: Duration,
    /// How far a signed request's clock may be from the replica's.
    pub max_skew: Duration,
    /// Envelopes of class [`Class::Normal`](crate::Class::Normal) one mailbox may hold.
    pub quota_envelopes: u32,
    /// Bytes one mailbox may hold (all classes).
    pub quota_bytes: u64,
    /// Envelopes of class [`Class::Control`](crate::Class::Control) one mailbox may hold, beyond
    /// the normal quota.
    pub control_reserve: u32,
    /// Bytes of envelopes the replica holds in all.
    pub disk_budget: u64,
    /// The share of the disk budget one network group (an IPv4 /24, an
    /// IPv6 /48) may fill: `disk_budget / group_share`.
    pub group_share: u64,
    /// Requests per second, and burst, one peer may make.
    pub peer_rate: (u32, u32),
    /// Requests per second, and burst, one network group may make.
    pub group_rate: (u32, u32),
    /// Peers and groups whose rates are tracked at once.
    pub max_rate_keys: usize,
    /// Signed requests remembered at once (their nonces).
    pub max_replay_entries: usize,
    /// Live subscriptions one peer may hold.
    pub max_subscriptions_per_peer: usize,
    /// Live subscriptions in all.
    pub max_subscriptions: usize,
    /// (peer, mailbox) pairs whose sessions proved the mailbox key, in
    /// all: their later requests skip the signature check (beyond the
    /// limit, every request is checked).
    pub max_authorized: usize,
    /// How long a replica waits after a new envelope before waking a
    /// registered endpoint, so one wake-up covers a burst (see
    /// [`crate::wake`]).
    pub wake_batch: Duration,
    /// Least time between two wake-ups to one endpoint and token.
    pub wake_interval: Duration,
    /// Most wake-ups sent per second, in all.
    pub wake_rate: u32,
    /// Wake-up registrations kept, in all (beyond it new ones are
    /// answered [`Answer::Busy`](crate::Answer::Busy)).
    pub max_wake_registrations: usize,
}

impl Default for ReplicaConfig {
    fn default() -> ReplicaConfig {
        ReplicaConfig {
            max_ttl: MAX_TTL,
            max_skew: Duration::from_secs(600),
            quota_envelopes: 1000,
            quota_bytes: 16 * 1024 * 1024,
            control_reserve: 64,
            disk_budget: 1024 * 1024 * 1024,
            group_share: 64,
            peer_rate: (100, 400),
            group_rate: (400, 2000),
            max_rate_keys: 65_536,
            max_replay_entries: 1_000_000,
            max_subscriptions_per_peer: 1024,
            max_subscriptions: 100_000,
            max_authorized: 100_000,
            wake_batch: Duration::from_secs(5),
            wake_interval: Duration::from_secs(60),
            wake_rate: 100,
            max_wake_registrations: 100_000,
        }
    }
}

/// Counters of a replica since it opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicaStats {
    /// New envelopes stored (receipts signed for them).
    pub stored: u64,
    /// Stores of envelopes already held or acked (receipts signed again).
    pub duplicates: u64,
    /// Stores answered with [`Answer::Quota`](crate::Answer::Quota).
    pub quota: u64,
    /// Requests answered with [`Answer::Busy`](crate::Answer::Busy).
    pub busy: u64,
    /// Requests refused, any reason.
    pub refused: u64,
    /// Of those, replays.
    pub replays: u64,
    /// Fetches answered.
    pub fetches: u64,
    /// Envelopes deleted on an ack.
    pub acked: u64,
    /// Envelopes deleted at their expiry.
    pub expired: u64,
    /// Envelopes pushed to subscriptions.
    pub pushed: u64,
    /// Request signatures verified.
    pub verified: u64,
    /// Signed requests of sessions that had already proved the key (not
    /// verified again).
    pub preauthorized: u64,
    /// Store transactions committed (each may hold several envelopes).
    pub commits: u64,
    /// Sync messages opened or answered.
    pub sync_messages: u64,
    /// Envelopes taken from other replicas (hand-off, reconciliation).
    pub handed_in: u64,
    /// Envelopes handed to other replicas.
    pub handed_out: u64,
    /// Tombstones taken from other replicas.
    pub tombstones_in: u64,
    /// Tombstones handed to other replicas.
    pub tombstones_out: u64,
    /// Hand-offs refused: a bad proof, or a mailbox this node does not
    /// replicate.
    pub handoffs_refused: u64,
    /// Hand-offs with a good proof left out for the quota or disk budget.
    pub handoffs_dropped: u64,
    /// Envelopes deleted with a mailbox handed over to its members.
    pub dropped: u64,
    /// Wake-up registrations taken (new or renewed).
    pub wake_registrations: u64,
    /// Wake-ups sent.
    pub wakeups: u64,
}
