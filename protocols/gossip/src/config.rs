//! Settings of the gossip core, each with a named default.

use std::time::Duration;

/// Default for [`Config::mesh_n`]: the target mesh degree D = 6.
pub const DEFAULT_MESH_N: usize = 6;
/// Default for [`Config::mesh_n_low`]: 4.
pub const DEFAULT_MESH_N_LOW: usize = 4;
/// Default for [`Config::mesh_n_high`]: 12.
pub const DEFAULT_MESH_N_HIGH: usize = 12;
/// Default for [`Config::gossip_lazy`]: IHAVE to at least 6 peers per topic.
pub const DEFAULT_GOSSIP_LAZY: usize = 6;
/// Default for [`Config::gossip_factor_percent`]: 25 %.
pub const DEFAULT_GOSSIP_FACTOR_PERCENT: usize = 25;
/// Default for [`Config::heartbeat_interval`]: 1 s.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// Default for [`Config::history_length`]: 5 heartbeats of messages kept.
pub const DEFAULT_HISTORY_LENGTH: usize = 5;
/// Default for [`Config::history_gossip`]: the last 3 heartbeats advertised.
pub const DEFAULT_HISTORY_GOSSIP: usize = 3;
/// Default for [`Config::seen_ttl`]: 2 minutes.
pub const DEFAULT_SEEN_TTL: Duration = Duration::from_secs(120);
/// Default for [`Config::max_seen`]: 65,536 ids.
pub const DEFAULT_MAX_SEEN: usize = 65_536;
/// Default for [`Config::prune_backoff`]: 60 s.
pub const DEFAULT_PRUNE_BACKOFF: Duration = Duration::from_secs(60);
/// Longest backoff honoured from a received PRUNE: 1 hour.
pub const MAX_PRUNE_BACKOFF: Duration = Duration::from_secs(3600);
/// Default for [`Config::iwant_timeout`]: 3 s.
pub const DEFAULT_IWANT_TIMEOUT: Duration = Duration::from_secs(3);
/// Default for [`Config::max_iwant_pending`]: 4,096 ids.
pub const DEFAULT_MAX_IWANT_PENDING: usize = 4096;
/// Default for [`Config::max_payload_size`]: 64 KiB.
pub const DEFAULT_MAX_PAYLOAD_SIZE: usize = 64 * 1024;
/// Default for [`Config::max_messages_per_heartbeat`]: 512.
pub const DEFAULT_MAX_MESSAGES_PER_HEARTBEAT: u32 = 512;
/// Default for [`Config::max_ihave_ids_per_heartbeat`]: 5,000.
pub const DEFAULT_MAX_IHAVE_IDS_PER_HEARTBEAT: u32 = 5000;
/// Default for [`Config::max_iwant_answers_per_heartbeat`]: 512.
pub const DEFAULT_MAX_IWANT_ANSWERS_PER_HEARTBEAT: u32 = 512;
/// Default for [`Config::own_message_reserve_percent`]: 25 %, so with the
/// default budgets up to 64 of the 256 messages sent a peer per heartbeat.
pub const DEFAULT_OWN_MESSAGE_RESERVE_PERCENT: usize = 25;
/// Default for [`Config::max_peer_topics`]: 128.
pub const DEFAULT_MAX_PEER_TOPICS: usize = 128;
/// Default for [`Config::max_subscriptions`]: 1,024.
pub const DEFAULT_MAX_SUBSCRIPTIONS: usize = 1024;
/// Default for [`Config::event_queue`]: 1,024 events.
pub const DEFAULT_EVENT_QUEUE: usize = 1024;
/// Default for [`Config::disconnect_threshold`]: 100 penalty points.
pub const DEFAULT_DISCONNECT_THRESHOLD: u32 = 100;

/// Settings of a [`Gossip`](crate::Gossip) core. The defaults suit
/// networks of thousands of nodes with messages up to 64 KiB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Target number of mesh peers per topic, D ([`DEFAULT_MESH_N`]).
    pub mesh_n: usize,
    /// Below this many mesh peers, the heartbeat grafts up to `mesh_n`
    /// ([`DEFAULT_MESH_N_LOW`]).
    pub mesh_n_low: usize,
    /// Above this many mesh peers, the heartbeat prunes a random selection
    /// down to `mesh_n`; a GRAFT arriving at this size is refused
    /// ([`DEFAULT_MESH_N_HIGH`]).
    pub mesh_n_high: usize,
    /// Least number of non-mesh peers sent IHAVE per topic and heartbeat
    /// ([`DEFAULT_GOSSIP_LAZY`]).
    pub gossip_lazy: usize,
    /// Share of the non-mesh topic peers sent IHAVE per heartbeat, in
    /// percent, when larger than `gossip_lazy`
    /// ([`DEFAULT_GOSSIP_FACTOR_PERCENT`]).
    pub gossip_factor_percent: usize,
    /// Time between heartbeats ([`DEFAULT_HEARTBEAT_INTERVAL`]). Also the
    /// window of every per-peer rate limit.
    pub heartbeat_interval: Duration,
    /// Heartbeats a message stays in the cache that answers IWANT
    /// ([`DEFAULT_HISTORY_LENGTH`]).
    pub history_length: usize,
    /// Heartbeats of recent messages advertised by IHAVE, at most
    /// `history_length` ([`DEFAULT_HISTORY_GOSSIP`]).
    pub history_gossip: usize,
    /// How long a message id is remembered as seen ([`DEFAULT_SEEN_TTL`]).
    pub seen_ttl: Duration,
    /// Most ids remembered as seen; beyond it the oldest are forgotten
    /// early ([`DEFAULT_MAX_SEEN`]). Bounds memory under heavy traffic.
    pub max_seen: usize,
    /// Backoff announced in our PRUNEs and applied to the pruned peer
    /// ([`DEFAULT_PRUNE_BACKOFF`]).
    pub prune_backoff: Duration,
    /// Time a peer has to deliver a message we asked for with IWANT before
    /// the promise counts as broken and another peer may be asked
    /// ([`DEFAULT_IWANT_TIMEOUT`]).
    pub iwant_timeout: Duration,
    /// Most message ids requested and not yet received, over all peers
    /// ([`DEFAULT_MAX_IWANT_PENDING`]).
    pub max_iwant_pending: usize,
    /// Largest payload published or accepted ([`DEFAULT_MAX_PAYLOAD_SIZE`]);
    /// at most [`MAX_FRAME_SIZE`](crate::MAX_FRAME_SIZE) minus 1 KiB.
    pub max_payload_size: usize,
    /// Full messages accepted from one peer per heartbeat; more are ignored
    /// and penalised ([`DEFAULT_MAX_MESSAGES_PER_HEARTBEAT`]).
    pub max_messages_per_heartbeat: u32,
    /// IHAVE ids accepted from one peer per heartbeat; more are ignored and
    /// penalised ([`DEFAULT_MAX_IHAVE_IDS_PER_HEARTBEAT`]).
    pub max_ihave_ids_per_heartbeat: u32,
    /// IWANT ids answered for one peer per heartbeat; more are ignored and
    /// penalised ([`DEFAULT_MAX_IWANT_ANSWERS_PER_HEARTBEAT`]).
    pub max_iwant_answers_per_heartbeat: u32,
    /// Most of the messages we send a peer per heartbeat (half its
    /// `max_messages_per_heartbeat`), in percent, kept free for our own
    /// messages: as many as we offered it in the previous heartbeat, up to
    /// this share, which relayed messages may not use. Protects what this
    /// node publishes from being starved by relayed traffic, a flood of
    /// valid messages from throwaway authors included, while a node that
    /// does not publish keeps its whole budget for relaying. At most 100
    /// ([`DEFAULT_OWN_MESSAGE_RESERVE_PERCENT`]).
    pub own_message_reserve_percent: usize,
    /// Topics remembered per peer; more subscriptions are ignored and
    /// penalised ([`DEFAULT_MAX_PEER_TOPICS`]).
    pub max_peer_topics: usize,
    /// Topics this node may subscribe to ([`DEFAULT_MAX_SUBSCRIPTIONS`]).
    pub max_subscriptions: usize,
    /// Penalty points at which a peer is dropped and
    /// [`Event::Disconnect`](crate::Event::Disconnect) asks the driver to
    /// close its stream ([`DEFAULT_DISCONNECT_THRESHOLD`]). See
    /// [`crate::peer`] for the points.
    pub disconnect_threshold: u32,
    /// Publish our own messages to every peer subscribed to the topic, not
    /// only the mesh: faster first hop, more robust against a bad mesh
    /// (default `true`).
    pub flood_publish: bool,
    /// Tokio driver only: capacity of the event channel returned by
    /// [`crate::new`] ([`DEFAULT_EVENT_QUEUE`]). Events that find it full
    /// are dropped and counted by [`crate::Handle::dropped_events`].
    pub event_queue: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            mesh_n: DEFAULT_MESH_N,
            mesh_n_low: DEFAULT_MESH_N_LOW,
            mesh_n_high: DEFAULT_MESH_N_HIGH,
            gossip_lazy: DEFAULT_GOSSIP_LAZY,
            gossip_factor_percent: DEFAULT_GOSSIP_FACTOR_PERCENT,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            history_length: DEFAULT_HISTORY_LENGTH,
            history_gossip: DEFAULT_HISTORY_GOSSIP,
            seen_ttl: DEFAULT_SEEN_TTL,
            max_seen: DEFAULT_MAX_SEEN,
            prune_backoff: DEFAULT_PRUNE_BACKOFF,
            iwant_timeout: DEFAULT_IWANT_TIMEOUT,
            max_iwant_pending: DEFAULT_MAX_IWANT_PENDING,
            max_payload_size: DEFAULT_MAX_PAYLOAD_SIZE,
            max_messages_per_heartbeat: DEFAULT_MAX_MESSAGES_PER_HEARTBEAT,
            max_ihave_ids_per_heartbeat: DEFAULT_MAX_IHAVE_IDS_PER_HEARTBEAT,
            max_iwant_answers_per_heartbeat: DEFAULT_MAX_IWANT_ANSWERS_PER_HEARTBEAT,
            own_message_reserve_percent: DEFAULT_OWN_MESSAGE_RESERVE_PERCENT,
            max_peer_topics: DEFAULT_MAX_PEER_TOPICS,
            max_subscriptions: DEFAULT_MAX_SUBSCRIPTIONS,
            disconnect_threshold: DEFAULT_DISCONNECT_THRESHOLD,
            flood_publish: true,
            event_queue: DEFAULT_EVENT_QUEUE,
        }
    }
}

impl Config {
    /// Makes the settings consistent: `mesh_n_low ≤ mesh_n ≤ mesh_n_high`,
    /// `1 ≤ history_gossip ≤ history_length`, a non-zero heartbeat, a
    /// payload limit that fits a frame, and an own-message reserve of at
    /// most 100 %.
    pub(crate) fn normalized(mut self) -> Config {
        self.mesh_n = self.mesh_n.max(1);
        self.mesh_n_low = self.mesh_n_low.clamp(1, self.mesh_n);
        self.mesh_n_high = self.mesh_n_high.max(self.mesh_n);
        self.history_length = self.history_length.max(1);
        self.history_gossip = self.history_gossip.clamp(1, self.history_length);
        self.heartbeat_interval = self.heartbeat_interval.max(Duration::from_millis(1));
        self.max_payload_size = self.max_payload_size.clamp(1, crate::MAX_FRAME_SIZE - 1024);
        self.max_seen = self.max_seen.max(1);
        self.disconnect_threshold = self.disconnect_threshold.max(1);
        self.own_message_reserve_percent = self.own_message_reserve_percent.min(100);
        self
    }
}
