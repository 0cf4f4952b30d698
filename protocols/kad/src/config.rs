//! Settings of the Kademlia core, each default a named constant.

use std::time::Duration;

use crate::{
    protocol::MAX_PEERS_PER_MESSAGE, record::MAX_SIGNED_RECORD_SIZE, store::StoreLimits,
    table::TableLimits,
};

/// Default for [`Config::k`]: 20 contacts per bucket, 20 nodes per answer
/// and 20 holders per record.
pub const DEFAULT_K: usize = 20;

/// Default for [`Config::alpha`]: 3 requests in flight per lookup path.
pub const DEFAULT_ALPHA: usize = 3;

/// Default for [`Config::disjoint_paths`]: 3 disjoint paths per lookup.
/// S/Kademlia shows that a few paths already make hiding a key from a
/// lookup require control of far more nodes; each path costs about one
/// classic lookup, so 3 is a middle ground between safety and messages.
pub const DEFAULT_DISJOINT_PATHS: usize = 3;

/// Default for [`Config::request_timeout`]: 5 s for an answer to one
/// attempt.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Default for [`Config::request_attempts`]: a request that times out is
/// sent once more before it counts as failed. One lost message must not
/// make a lookup miss a live node: with 5% loss each way, a single attempt
/// fails about one time in ten, two attempts one time in a hundred.
pub const DEFAULT_REQUEST_ATTEMPTS: u32 = 2;

/// Default for [`Config::stall_timeout`]: 400 ms. A lookup request
/// unanswered then is sent once more at once (if it has an attempt left:
/// a lost message costs 400 ms, not the request timeout) and stops
/// holding its place among the `alpha` in flight, so the lookup asks the
/// next node meanwhile; unanswered again, it no longer counts among the
/// `k` closest that must answer either (see [`crate::lookup`]). Under churn most
/// lookups meet nodes that left, and each used to hold its lookup for the
/// request timeout and its second attempt (10 s). A slow node that answers
/// later still counts, so a short stall costs extra requests, not answers.
/// 400 ms is four round trips of a 50 ms link.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_millis(400);

/// Default for [`Config::query_timeout`]: a query ends after 60 s with what
/// it has.
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(60);

/// Default for [`Config::max_queries`]: 256 queries at once (user and
/// upkeep together). Bounds lookup state and requests in flight.
pub const DEFAULT_MAX_QUERIES: usize = 256;

/// Default for [`Config::bucket_ip_limit`]: 2 contacts of one IP prefix per
/// bucket.
pub const DEFAULT_BUCKET_IP_LIMIT: usize = 2;

/// Default for [`Config::table_ip_limit`]: 10 contacts of one IP prefix in
/// the table.
pub const DEFAULT_TABLE_IP_LIMIT: usize = 10;

/// Default for [`Config::replacement_cache`]: 8 waiting contacts per
/// bucket.
pub const DEFAULT_REPLACEMENT_CACHE: usize = 8;

/// Default for [`Config::max_failures`]: 2 failed requests in a row remove
/// a contact (one lost message does not).
pub const DEFAULT_MAX_FAILURES: u32 = 2;

/// Default for [`Config::refresh_interval`]: 15 min.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(15 * 60);

/// Default for [`Config::max_refresh_lookups`]: 4 bucket lookups per round.
pub const DEFAULT_MAX_REFRESH_LOOKUPS: usize = 4;

/// Default for [`Config::replication_interval`]: 10 min.
pub const DEFAULT_REPLICATION_INTERVAL: Duration = Duration::from_secs(10 * 60);

/// Default for [`Config::republish_interval`]: 1 h.
pub const DEFAULT_REPUBLISH_INTERVAL: Duration = Duration::from_secs(60 * 60);

/// Default for [`Config::expiry_check_interval`]: 60 s.
pub const DEFAULT_EXPIRY_CHECK_INTERVAL: Duration = Duration::from_secs(60);

/// Default for [`Config::max_records`]: 4096 records held.
pub const DEFAULT_MAX_RECORDS: usize = 4096;

/// Default for [`Config::max_records_per_publisher`]: 64.
pub const DEFAULT_MAX_RECORDS_PER_PUBLISHER: usize = 64;

/// Default for [`Config::store_nearness`]: twice [`DEFAULT_K`].
pub const DEFAULT_STORE_NEARNESS: usize = 2 * DEFAULT_K;

/// Default for [`Config::max_stores_per_peer`]: 600 a minute (a node
/// handing its records to a newcomer sends them in bursts).
pub const DEFAULT_MAX_STORES_PER_PEER: u32 = 600;

/// Default for [`Config::max_record_ttl`]: 48 h.
pub const DEFAULT_MAX_RECORD_TTL: Duration = Duration::from_secs(48 * 3600);

/// Default for [`Config::clock_skew`]: 5 min.
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(300);

/// Default for [`Config::max_queued_transmits`]: 4096 messages.
pub const DEFAULT_MAX_QUEUED_TRANSMITS: usize = 4096;

/// Default for [`Config::max_queued_events`]: 1024 events.
pub const DEFAULT_MAX_QUEUED_EVENTS: usize = 1024;

/// Default for [`Config::event_queue`]: 256 events.
pub const DEFAULT_EVENT_QUEUE: usize = 256;

/// Settings of a [`Kademlia`](crate::Kademlia) core (and, for the last two
/// fields, of its tokio driver).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Bucket size, answer size and replication factor (see [`DEFAULT_K`]);
    /// at most [`MAX_PEERS_PER_MESSAGE`].
    pub k: usize,
    /// Requests in flight per lookup path (see [`DEFAULT_ALPHA`]).
    pub alpha: usize,
    /// Disjoint paths per user lookup (see [`DEFAULT_DISJOINT_PATHS`]);
    /// upkeep lookups (bucket refresh) use one.
    pub disjoint_paths: usize,
    /// Time allowed for an answer to one attempt (see
    /// [`DEFAULT_REQUEST_TIMEOUT`]).
    pub request_timeout: Duration,
    /// Time after which an unanswered lookup request stops holding its
    /// lookup back (see [`DEFAULT_STALL_TIMEOUT`]).
    pub stall_timeout: Duration,
    /// Attempts of a request before it fails; at least 1 (see
    /// [`DEFAULT_REQUEST_ATTEMPTS`]).
    pub request_attempts: u32,
    /// Time allowed for a whole query (see [`DEFAULT_QUERY_TIMEOUT`]).
    pub query_timeout: Duration,
    /// Queries at once (see [`DEFAULT_MAX_QUERIES`]); commands beyond fail
    /// with [`Error::TooManyQueries`](crate::Error::TooManyQueries).
    pub max_queries: usize,
    /// Contacts per bucket sharing an IPv4 /24 or IPv6 /48 (see
    /// [`DEFAULT_BUCKET_IP_LIMIT`]).
    pub bucket_ip_limit: usize,
    /// Contacts in the table sharing a prefix (see
    /// [`DEFAULT_TABLE_IP_LIMIT`]).
    pub table_ip_limit: usize,
    /// Replacement cache size per bucket (see
    /// [`DEFAULT_REPLACEMENT_CACHE`]).
    pub replacement_cache: usize,
    /// Failed requests in a row that remove a contact (see
    /// [`DEFAULT_MAX_FAILURES`]).
    pub max_failures: u32,
    /// Time between bucket refresh rounds (see
    /// [`DEFAULT_REFRESH_INTERVAL`]).
    pub refresh_interval: Duration,
    /// Random-key lookups per refresh round (see
    /// [`DEFAULT_MAX_REFRESH_LOOKUPS`]).
    pub max_refresh_lookups: usize,
    /// Time between re-replication rounds of held records (see
    /// [`DEFAULT_REPLICATION_INTERVAL`]).
    pub replication_interval: Duration,
    /// Time between republications of our own records (see
    /// [`DEFAULT_REPUBLISH_INTERVAL`]).
    pub republish_interval: Duration,
    /// Time between purges of expired records (see
    /// [`DEFAULT_EXPIRY_CHECK_INTERVAL`]).
    pub expiry_check_interval: Duration,
    /// Records held (see [`DEFAULT_MAX_RECORDS`]).
    pub max_records: usize,
    /// Largest record envelope held or sent, in bytes; at most (and by
    /// default) [`MAX_SIGNED_RECORD_SIZE`].
    pub max_record_size: usize,
    /// Records held per publisher (see
    /// [`DEFAULT_MAX_RECORDS_PER_PUBLISHER`]); also the most records we
    /// publish ourselves.
    pub max_records_per_publisher: usize,
    /// A peer's STORE is refused when this many of our contacts are
    /// closer to the key than we are (see [`crate::admission`] and
    /// [`DEFAULT_STORE_NEARNESS`]).
    pub store_nearness: usize,
    /// STOREs accepted from one peer per minute (see [`crate::admission`]
    /// and [`DEFAULT_MAX_STORES_PER_PEER`]).
    pub max_stores_per_peer: u32,
    /// Latest expiry accepted, counted from now (see
    /// [`DEFAULT_MAX_RECORD_TTL`]).
    pub max_record_ttl: Duration,
    /// Wall-clock skew tolerated on expiries (see [`DEFAULT_CLOCK_SKEW`]).
    pub clock_skew: Duration,
    /// Whether records of kinds without a validator are accepted (default
    /// `true`: signature, size and expiry are still checked).
    pub accept_unknown_kinds: bool,
    /// Which addresses of the contacts in an answer are kept and dialled:
    /// by default none narrower than the scope the answering peer was
    /// reached over, so a peer on the internet cannot make this node probe
    /// its private network or its loopback (see
    /// [`ScopePolicy`](shoal_transport::ScopePolicy)).
    pub address_scope: shoal_transport::ScopePolicy,
    /// Messages waiting for [`poll_transmit`](crate::Kademlia::poll_transmit)
    /// (see [`DEFAULT_MAX_QUEUED_TRANSMITS`]); more are dropped and counted.
    pub max_queued_transmits: usize,
    /// Routing and record events waiting for
    /// [`poll_event`](crate::Kademlia::poll_event) (see
    /// [`DEFAULT_MAX_QUEUED_EVENTS`]); more are dropped and counted. Query
    /// results are never dropped.
    pub max_queued_events: usize,
    /// Driver only: capacity of the event channel returned by
    /// [`new`](crate::new) (see [`DEFAULT_EVENT_QUEUE`]); events that find
    /// it full are dropped and counted.
    pub event_queue: usize,
    /// Client mode: the node looks things up (and may publish) but keeps
    /// nothing for others. Its requests say so, and the nodes it asks answer
    /// without adding it to their routing tables, so lookups never lead to
    /// it. A chat that queries a DHT of service nodes runs as a client.
    pub client: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            k: DEFAULT_K,
            alpha: DEFAULT_ALPHA,
            disjoint_paths: DEFAULT_DISJOINT_PATHS,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            request_attempts: DEFAULT_REQUEST_ATTEMPTS,
            query_timeout: DEFAULT_QUERY_TIMEOUT,
            max_queries: DEFAULT_MAX_QUERIES,
            bucket_ip_limit: DEFAULT_BUCKET_IP_LIMIT,
            table_ip_limit: DEFAULT_TABLE_IP_LIMIT,
            replacement_cache: DEFAULT_REPLACEMENT_CACHE,
            max_failures: DEFAULT_MAX_FAILURES,
            refresh_interval: DEFAULT_REFRESH_INTERVAL,
            max_refresh_lookups: DEFAULT_MAX_REFRESH_LOOKUPS,
            replication_interval: DEFAULT_REPLICATION_INTERVAL,
            republish_interval: DEFAULT_REPUBLISH_INTERVAL,
            expiry_check_interval: DEFAULT_EXPIRY_CHECK_INTERVAL,
            max_records: DEFAULT_MAX_RECORDS,
            max_record_size: MAX_SIGNED_RECORD_SIZE,
            max_records_per_publisher: DEFAULT_MAX_RECORDS_PER_PUBLISHER,
            store_nearness: DEFAULT_STORE_NEARNESS,
            max_stores_per_peer: DEFAULT_MAX_STORES_PER_PEER,
            max_record_ttl: DEFAULT_MAX_RECORD_TTL,
            clock_skew: DEFAULT_CLOCK_SKEW,
            accept_unknown_kinds: true,
            address_scope: shoal_transport::ScopePolicy::default(),
            max_queued_transmits: DEFAULT_MAX_QUEUED_TRANSMITS,
            max_queued_events: DEFAULT_MAX_QUEUED_EVENTS,
            event_queue: DEFAULT_EVENT_QUEUE,
            client: false,
        }
    }
}

impl Config {
    /// The config with every value clamped into its valid range (k within
    /// 1..=[`MAX_PEERS_PER_MESSAGE`], at least one path, …).
    pub(crate) fn normalized(mut self) -> Config {
        self.k = self.k.clamp(1, MAX_PEERS_PER_MESSAGE);
        self.alpha = self.alpha.max(1);
        self.disjoint_paths = self.disjoint_paths.max(1);
        self.max_queries = self.max_queries.max(1);
        self.max_failures = self.max_failures.max(1);
        self.max_record_size = self.max_record_size.min(MAX_SIGNED_RECORD_SIZE);
        self
    }

    pub(crate) fn table_limits(&self) -> TableLimits {
        TableLimits {
            k: self.k,
            bucket_ip_limit: self.bucket_ip_limit,
            table_ip_limit: self.table_ip_limit,
            replacement_cache: self.replacement_cache,
        }
    }

    pub(crate) fn store_limits(&self) -> StoreLimits {
        StoreLimits {
            max_records: self.max_records,
            max_record_size: self.max_record_size,
            max_per_publisher: self.max_records_per_publisher,
        }
    }
}
