//! How a [`Messenger`](crate::Messenger) starts.

use std::time::Duration;

use bytes::Bytes;
use shoal_im::engine::EngineConfig;
use shoal_transport::Multiaddr;
use tokio::sync::mpsc;

use crate::FaultConfig;

/// Default lifetime of published presence and prekey records.
pub const DEFAULT_RECORD_TTL: Duration = Duration::from_secs(crate::directory::DEFAULT_TTL_SECS);
/// Default interval between republications.
pub const DEFAULT_REPUBLISH: Duration =
    Duration::from_secs(crate::directory::REPUBLISH_INTERVAL_SECS);

/// Default interval between two reads of our mailboxes.
pub const DEFAULT_MAILBOX_POLL: Duration = Duration::from_secs(60);

/// Configuration of a [`Messenger`](crate::Messenger).
#[derive(Debug, Clone)]
pub struct MessengerConfig {
    /// Addresses to listen on (port 0 picks one).
    pub listen: Vec<Multiaddr>,
    /// Peers to join the network through, as `…/p2p/<peer id>` addresses.
    pub bootstrap: Vec<Multiaddr>,
    /// Addresses this node is reachable at besides its listen addresses (a
    /// port forwarded by a router), announced in the presence record.
    pub external_addresses: Vec<Multiaddr>,
    /// The engine's retry and window settings (how often a contact out of
    /// reach is looked up again is `engine.route_retry`, doubling up to
    /// `engine.route_retry_max`).
    pub engine: EngineConfig,
    /// Lifetime of the presence and prekey records.
    pub record_ttl: Duration,
    /// Interval between republications of those records.
    pub republish: Duration,
    /// Faults to inject into outgoing envelopes (tests and demos only).
    pub faults: Option<FaultConfig>,
    /// A copy of every envelope as it arrives from the service layer,
    /// before the engine sees it (for inspection by tests and tools).
    /// Copies that do not fit in the channel are dropped.
    pub envelope_tap: Option<mpsc::Sender<Bytes>>,
    /// Agent string announced by identify.
    pub agent: String,
    /// Which addresses learned from unauthenticated sources (what a peer
    /// says about itself in identify, the contacts in a DHT answer) are
    /// dialled: by default none narrower than the scope the source was
    /// reached over, so a peer on the internet cannot make the node probe
    /// its private network. Presence records are signed by a contact's
    /// device, and only named contacts are looked up (a stranger's request
    /// makes the node dial nothing). [`ScopePolicy::Any`] is for test
    /// networks whose "internet" is a private range.
    ///
    /// [`ScopePolicy::Any`]: shoal_transport::ScopePolicy::Any
    pub address_scope: shoal_transport::ScopePolicy,
    /// Use mailboxes ([`Messenger::start`](crate::Messenger::start) only):
    /// store envelopes for offline contacts on the nodes that keep
    /// mailboxes, and read what waits for us (see the `mailboxes` module).
    pub mailboxes: bool,
    /// How often our mailboxes are read again while we are online (live
    /// subscriptions bring new envelopes in between).
    pub mailbox_poll: Duration,
    /// A wake-up endpoint to register with the replicas of our mailboxes
    /// (see the `mailboxes::wake` module): while this device is away, they
    /// wake it when envelopes wait. Off by default: the replicas then
    /// learn that the registered mailboxes belong together.
    pub wake: Option<shoal_mailbox::WakeEndpoint>,
    /// Relays to hold reservations on ([`Messenger::start`](crate::Messenger::start)
    /// only), each `…/p2p/<relay's peer id>`: nodes others can dial that
    /// forward connections to this one when it cannot be dialled (behind
    /// a NAT). Their relayed addresses are announced in the presence
    /// record, first; the relay sees who connects, never what is said.
    pub relays: Vec<Multiaddr>,
    /// IP ranges to treat as the internet when checking which of this
    /// node's addresses others can dial (a test network on a reserved
    /// range, such as `198.18.0.0/15`). Empty: only global addresses are
    /// checked. A node whose checked addresses all turn out unreachable is
    /// a client of the DHT (others never keep it as a contact) and leaves
    /// those addresses out of its presence record. The same ranges count
    /// as global for [`MessengerConfig::address_scope`] (see
    /// [`MessengerConfig::dial_scope`]).
    pub global_ranges: Vec<shoal_transport::IpRange>,
    /// Publish only relayed addresses (in the presence record and in
    /// identify), never this device's own IP addresses, and stay a client
    /// of the DHT (whose contacts carry IP addresses). Needs
    /// [`MessengerConfig::relays`]: contacts then always talk through one.
    ///
    /// Off by default. A direct connection is faster and costs nobody
    /// else anything, while a relay adds a hop to every message, limits
    /// each circuit (see `shoal_relay::Limits`) and is a node that can
    /// fail. And hiding is partial: the nodes this device connects to
    /// itself (the bootstrap nodes, the relays, the DHT nodes and mailbox
    /// replicas it asks) see its IP address as on any connection. What it
    /// hides is where the device is from its contacts and from anyone who
    /// looks its presence record up.
    pub hide_ip_addresses: bool,
}

impl MessengerConfig {
    /// The rule for addresses learned from others:
    /// [`MessengerConfig::address_scope`], with the
    /// [`MessengerConfig::global_ranges`] counted as global. In a test
    /// network whose internet is `198.18.0.0/15`, a peer on it then cannot
    /// point us at a home network behind a NAT router (`10.0.3.2` is out of
    /// reach, and dialling it would only wait for a timeout).
    pub fn dial_scope(&self) -> shoal_transport::ScopePolicy {
        self.address_scope
            .clone()
            .with_global_ranges(&self.global_ranges)
    }
}

impl Default for MessengerConfig {
    fn default() -> MessengerConfig {
        MessengerConfig {
            listen: Vec::new(),
            bootstrap: Vec::new(),
            external_addresses: Vec::new(),
            engine: EngineConfig::default(),
            record_ttl: DEFAULT_RECORD_TTL,
            republish: DEFAULT_REPUBLISH,
            faults: None,
            envelope_tap: None,
            agent: concat!("shoal-messenger/", env!("CARGO_PKG_VERSION")).to_owned(),
            address_scope: shoal_transport::ScopePolicy::default(),
            mailboxes: true,
            mailbox_poll: DEFAULT_MAILBOX_POLL,
            wake: None,
            relays: Vec::new(),
            global_ranges: Vec::new(),
            hide_ip_addresses: false,
        }
    }
}
