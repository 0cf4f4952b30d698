//! Shoal discovery: peers exchange signed peer records, keep them in a
//! bounded peer store, and each node keeps a target number of outbound
//! connections by dialling peers from its store.
//!
//! # Tour
//! - [`new`] declares the protocol ([`PROTOCOL_NAME`], [`VERSIONS`]) for a
//!   [`ServiceBuilder`](shoal::ServiceBuilder), given the node's
//!   [`LocalRecord`] (share it with identify); it returns a [`Handle`]
//!   (snapshots of the peer store) and the bounded receiver of [`Event`]s.
//! - [`Config`]: bootstrap addresses, target connections, store size,
//!   intervals, rate limits, retry policy; each default is a named
//!   `DEFAULT_*` constant.
//! - [`protocol`]: `GetPeers` / `Peers` and their codec (also in
//!   `docs/PROTOCOL.md`, section 7).
//! - The store (`store.rs`) is plain bookkeeping with the time passed in;
//!   the handler (`handler.rs`) drives it from protocol events and one
//!   timer.
//!
//! # Behaviour
//! ```text
//!  start ─▶ dial every bootstrap address (again whenever no session is left)
//!  protocol opens on a session ─▶ GetPeers{max} ─▶ ◀─ Peers[own record, relayable records…]
//!  every tick:
//!    dial results → verified address / failure count / removal
//!    expire peers not heard of for `peer_ttl`
//!    GetPeers to each session every `request_interval`
//!    outbound sessions < target → dial the best unconnected peers
//! ```
//!
//! # Trust and relay rules
//! - Every record is verified (signature by the key its peer id names)
//!   before it is stored; a newer `seq` replaces an older record, an older
//!   or equal one never does.
//! - A record's addresses are only its peer's claim. An address is
//!   **verified** once our own dial to it completed the secure handshake
//!   with that `PeerId` (the dial names the expected peer). Unverified
//!   addresses may be dialled, after verified ones.
//! - We relay (answer `GetPeers` with) our own record, records of peers we
//!   have a session with now, and records of peers one of whose addresses
//!   we verified and whom we saw directly within `peer_ttl`. Records heard
//!   only second-hand are never relayed, so a made-up record travels at
//!   most one hop.
//! - A peer is removed after `max_failures` consecutive failed dials, or
//!   when not connected and not heard of for `peer_ttl`; so peers that die
//!   leave every store within a bounded time.
//!
//! # Limits
//! `GetPeers` is answered at most once per `min_request_interval` per
//! session; more are ignored, and [`MAX_IGNORED_MESSAGES`] ignored messages
//! in a row close the substream. Answers carry at most
//! `max_records_per_response` records, messages at most
//! [`protocol::MAX_MESSAGE_SIZE`] bytes, the store at most `max_peers`
//! peers, and at most `max_concurrent_dials` dials run at once.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod handler;
pub mod protocol;
mod store;

use std::{
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use shoal::{Multiaddr, PeerId, ProtocolId, ProtocolMeta};
use shoal_identify::LocalRecord;
use tokio::{sync::mpsc, time::Instant};

pub use protocol::{DecodeError, DiscoveryMessage, MAX_MESSAGE_SIZE, MAX_PEERS_PER_MESSAGE};
pub use store::{AddrInfo, PeerInfo, RemoveReason};

/// The protocol name negotiated on the substream.
pub const PROTOCOL_NAME: &str = "/shoal/discovery";

/// The protocol versions spoken (negotiated per substream).
pub const VERSIONS: [u32; 1] = [1];

/// Default for [`Config::target_connections`]: 8 outbound sessions.
pub const DEFAULT_TARGET_CONNECTIONS: usize = 8;

/// Default for [`Config::max_peers`]: 10 000 peers in the store. Protects
/// memory from record floods.
pub const DEFAULT_MAX_PEERS: usize = 10_000;

/// Default for [`Config::tick_interval`]: 1 s between upkeep rounds.
pub const DEFAULT_TICK_INTERVAL: Duration = Duration::from_secs(1);

/// Default for [`Config::request_interval`]: ask each session for records
/// every 60 s.
pub const DEFAULT_REQUEST_INTERVAL: Duration = Duration::from_secs(60);

/// Default for [`Config::min_request_interval`]: answer a session at most
/// every 10 s. Protects CPU (signature checks on the asker's side, record
/// selection on ours) and bandwidth.
pub const DEFAULT_MIN_REQUEST_INTERVAL: Duration = Duration::from_secs(10);

/// Default for [`Config::max_records_per_response`]: 32 records.
pub const DEFAULT_MAX_RECORDS_PER_RESPONSE: usize = 32;

/// Default for [`Config::max_failures`]: 5 consecutive failed dials remove a
/// peer.
pub const DEFAULT_MAX_FAILURES: u32 = 5;

/// Default for [`Config::dial_backoff`]: 1 s after the first failure,
/// doubling per further failure.
pub const DEFAULT_DIAL_BACKOFF: Duration = Duration::from_secs(1);

/// Default for [`Config::max_dial_backoff`]: 5 min.
pub const DEFAULT_MAX_DIAL_BACKOFF: Duration = Duration::from_secs(300);

/// Default for [`Config::peer_ttl`]: 30 min.
pub const DEFAULT_PEER_TTL: Duration = Duration::from_secs(30 * 60);

/// Default for [`Config::max_concurrent_dials`]: 4.
pub const DEFAULT_MAX_CONCURRENT_DIALS: usize = 4;

/// Default for [`Config::bootstrap_retry`]: 10 s.
pub const DEFAULT_BOOTSTRAP_RETRY: Duration = Duration::from_secs(10);

/// Default for [`Config::event_queue`]: 256 events.
pub const DEFAULT_EVENT_QUEUE: usize = 256;

/// Ignored messages (requests over the rate, unsolicited answers) in a row
/// after which a session's discovery substream is closed.
pub const MAX_IGNORED_MESSAGES: u32 = 16;

/// Settings of the discovery protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Peers dialled at start, and again whenever no session is left. With
    /// a `/p2p/` component the dial must reach that peer.
    pub bootstrap: Vec<Multiaddr>,
    /// Outbound sessions to keep (see [`DEFAULT_TARGET_CONNECTIONS`]).
    pub target_connections: usize,
    /// Peers kept in the store (see [`DEFAULT_MAX_PEERS`]).
    pub max_peers: usize,
    /// Time between upkeep rounds (see [`DEFAULT_TICK_INTERVAL`]).
    pub tick_interval: Duration,
    /// Time between two `GetPeers` to one session (see
    /// [`DEFAULT_REQUEST_INTERVAL`]). Must not be shorter than the peers'
    /// `min_request_interval`, or they ignore some requests.
    pub request_interval: Duration,
    /// A session's `GetPeers` is answered at most this often (see
    /// [`DEFAULT_MIN_REQUEST_INTERVAL`]).
    pub min_request_interval: Duration,
    /// Records per answer, and asked for per request (see
    /// [`DEFAULT_MAX_RECORDS_PER_RESPONSE`]; at most
    /// [`MAX_PEERS_PER_MESSAGE`]).
    pub max_records_per_response: usize,
    /// Consecutive failed dials that remove a peer (see
    /// [`DEFAULT_MAX_FAILURES`]).
    pub max_failures: u32,
    /// First retry delay after a failed dial (see [`DEFAULT_DIAL_BACKOFF`]).
    pub dial_backoff: Duration,
    /// Longest retry delay (see [`DEFAULT_MAX_DIAL_BACKOFF`]).
    pub max_dial_backoff: Duration,
    /// How long a peer that is not connected stays without news, and how
    /// long after we last saw it directly we still relay it (see
    /// [`DEFAULT_PEER_TTL`]).
    pub peer_ttl: Duration,
    /// Dials in flight at once (see [`DEFAULT_MAX_CONCURRENT_DIALS`]).
    pub max_concurrent_dials: usize,
    /// Time before the second bootstrap attempt while no session is open;
    /// it doubles with each further round, up to `max_dial_backoff`, and
    /// starts over once a session opened (see [`DEFAULT_BOOTSTRAP_RETRY`]).
    pub bootstrap_retry: Duration,
    /// Capacity of the event channel returned by [`new`] (see
    /// [`DEFAULT_EVENT_QUEUE`]); events that find it full are dropped and
    /// counted by [`Handle::dropped_events`].
    pub event_queue: usize,
    /// Which addresses of the records a peer relays are dialled: by default
    /// none narrower than the scope that peer was reached over, so a peer
    /// on the internet cannot make this node probe its private network
    /// (see [`ScopePolicy`](shoal_transport::ScopePolicy)).
    pub address_scope: shoal_transport::ScopePolicy,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            bootstrap: Vec::new(),
            target_connections: DEFAULT_TARGET_CONNECTIONS,
            max_peers: DEFAULT_MAX_PEERS,
            tick_interval: DEFAULT_TICK_INTERVAL,
            request_interval: DEFAULT_REQUEST_INTERVAL,
            min_request_interval: DEFAULT_MIN_REQUEST_INTERVAL,
            max_records_per_response: DEFAULT_MAX_RECORDS_PER_RESPONSE,
            max_failures: DEFAULT_MAX_FAILURES,
            dial_backoff: DEFAULT_DIAL_BACKOFF,
            max_dial_backoff: DEFAULT_MAX_DIAL_BACKOFF,
            peer_ttl: DEFAULT_PEER_TTL,
            max_concurrent_dials: DEFAULT_MAX_CONCURRENT_DIALS,
            bootstrap_retry: DEFAULT_BOOTSTRAP_RETRY,
            event_queue: DEFAULT_EVENT_QUEUE,
            address_scope: shoal_transport::ScopePolicy::default(),
        }
    }
}

/// What discovery reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A record of a peer we did not have a record of was stored.
    Discovered {
        /// The peer.
        peer: PeerId,
        /// Its addresses (its claim, unverified).
        addrs: Vec<Multiaddr>,
    },
    /// A newer record replaced the one we had.
    Updated {
        /// The peer.
        peer: PeerId,
        /// The new sequence number.
        seq: u64,
    },
    /// A dial of ours reached `peer` at `addr`: the address is verified.
    Verified {
        /// The peer.
        peer: PeerId,
        /// The address.
        addr: Multiaddr,
    },
    /// A dial of ours failed.
    DialFailed {
        /// The peer expected.
        peer: PeerId,
        /// The address dialled.
        addr: Multiaddr,
        /// Why, as text.
        error: String,
    },
    /// A peer left the store.
    Removed {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: RemoveReason,
    },
}

/// State shared by the handler and the [`Handle`].
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    store: Mutex<store::PeerStore>,
    events: mpsc::Sender<Event>,
    dropped: AtomicU64,
}

impl Shared {
    pub(crate) fn store(&self) -> std::sync::MutexGuard<'_, store::PeerStore> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn emit(&self, event: Event) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.events.try_send(event) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("discovery event queue full; event dropped");
        }
    }
}

/// Reads the peer store of a running service. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

impl Handle {
    /// Every peer in the store, sorted by peer id.
    pub fn peers(&self) -> Vec<PeerInfo> {
        self.shared.store().snapshot(Instant::now())
    }

    /// One peer.
    pub fn peer(&self, peer: PeerId) -> Option<PeerInfo> {
        self.shared.store().get(&peer, Instant::now())
    }

    /// Number of peers in the store.
    pub fn len(&self) -> usize {
        self.shared.store().len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Events dropped because the event channel was full.
    pub fn dropped_events(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

/// Declares the discovery protocol as `id` for the node whose record is
/// `local` (its key must be the service's key).
pub fn new(
    id: ProtocolId,
    local: LocalRecord,
    config: Config,
) -> (ProtocolMeta, Handle, mpsc::Receiver<Event>) {
    let (tx, rx) = mpsc::channel(config.event_queue.max(1));
    let shared = Arc::new(Shared {
        store: Mutex::new(store::PeerStore::new(local.peer_id(), config.max_peers)),
        config,
        events: tx,
        dropped: AtomicU64::new(0),
    });
    let meta = ProtocolMeta::builder(id, PROTOCOL_NAME)
        .versions(VERSIONS)
        .max_frame_size(MAX_MESSAGE_SIZE)
        .service_handle(handler::DiscoveryHandler::new(shared.clone(), local));
    (meta, Handle { shared }, rx)
}
