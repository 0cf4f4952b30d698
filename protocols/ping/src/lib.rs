//! Shoal ping: liveness and round-trip time of every session.
//!
//! # Tour
//! - [`new`] declares the protocol ([`PROTOCOL_NAME`], versions
//!   [`VERSIONS`]) for a [`ServiceBuilder`](shoal::ServiceBuilder) and returns
//!   a [`Handle`] (round-trip times per session) and the bounded receiver of
//!   [`Event`]s.
//! - [`Config`]: ping interval, timeout, the rate of pings answered; each
//!   default is a named `DEFAULT_*` constant.
//! - [`protocol`]: the two wire messages and their codec (also in
//!   `docs/PROTOCOL.md`, section 7).
//!
//! # Behaviour
//! ```text
//!  every `interval`, if no ping is outstanding:   Ping{nonce} ──▶
//!                                                  ◀── Pong{nonce}   → Event::Pong{rtt}
//!  no matching Pong within `timeout`               → Event::Timeout, session closed
//! ```
//! Each side pings independently, starting as soon as the protocol opens on a
//! session. Receiving a pong never closes anything: a pong that matches no
//! outstanding ping is ignored. Only a *missing* pong closes the session.
//! A peer that does not read (its send queue stays full) misses its pongs
//! the same way and is closed by the same timeout.
//!
//! Inbound pings are answered at most [`Config::max_pings_per_interval`]
//! times per `interval` and session; extra ones are ignored, and a peer
//! sending more than [`ABUSE_FACTOR`] times that many messages in one
//! interval gets the ping substream closed. Malformed messages close the
//! ping substream of that session only.
//!
//! # Example
//! ```
//! use shoal::{ProtocolId, ServiceBuilder};
//! use shoal_identity::Keypair;
//!
//! let (meta, handle, mut events) = shoal_ping::new(ProtocolId(1), shoal_ping::Config::default());
//! let service = ServiceBuilder::new(Keypair::generate()).protocol(meta).build().unwrap();
//! // spawn `service`, dial peers, then read `events`:
//! // Event::Pong { peer, rtt, .. } / Event::Timeout { peer, .. }
//! # drop((service, handle, events));
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod handler;
pub mod protocol;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use shoal::{PeerId, ProtocolId, ProtocolMeta, SessionId};
use tokio::sync::mpsc;

pub use protocol::{DecodeError, MAX_MESSAGE_SIZE, PingMessage};

/// The protocol name negotiated on the substream.
pub const PROTOCOL_NAME: &str = "/shoal/ping";

/// The protocol versions spoken (negotiated per substream).
pub const VERSIONS: [u32; 1] = [1];

/// Default for [`Config::interval`]: 15 s between pings.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(15);

/// Default for [`Config::timeout`]: 20 s without the matching pong closes the
/// session. Longer than the interval, so one slow answer is tolerated while
/// the next ping waits.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);

/// Default for [`Config::max_pings_per_interval`]: 4 pings answered per
/// interval and session. Protects CPU and the send queue from ping floods.
pub const DEFAULT_MAX_PINGS_PER_INTERVAL: u32 = 4;

/// Default for [`Config::event_queue`]: 256 events.
pub const DEFAULT_EVENT_QUEUE: usize = 256;

/// A peer sending more than `ABUSE_FACTOR × max_pings_per_interval`
/// messages (pings or pongs) in one interval gets the ping substream closed:
/// ignoring is for the slightly too eager, closing for floods.
pub const ABUSE_FACTOR: u32 = 16;

/// Settings of the ping protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Time between two pings on a session (see [`DEFAULT_INTERVAL`]). A new
    /// ping is sent only once the previous one is answered. Peers should use
    /// an interval no shorter than each other's, or they exceed the rate
    /// the other side answers.
    pub interval: Duration,
    /// Time allowed for the pong; when it passes, [`Event::Timeout`] is
    /// emitted and the session is closed (see [`DEFAULT_TIMEOUT`]).
    pub timeout: Duration,
    /// Pings answered per `interval` and session; more are ignored (see
    /// [`DEFAULT_MAX_PINGS_PER_INTERVAL`] and [`ABUSE_FACTOR`]).
    pub max_pings_per_interval: u32,
    /// Capacity of the event channel returned by [`new`] (see
    /// [`DEFAULT_EVENT_QUEUE`]); events that find it full are dropped and
    /// counted by [`Handle::dropped_events`].
    pub event_queue: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
            max_pings_per_interval: DEFAULT_MAX_PINGS_PER_INTERVAL,
            event_queue: DEFAULT_EVENT_QUEUE,
        }
    }
}

/// What the ping protocol reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A pong answered our ping.
    Pong {
        /// The remote peer.
        peer: PeerId,
        /// The session.
        session: SessionId,
        /// Time from sending the ping to receiving its pong.
        rtt: Duration,
    },
    /// The peer did not answer a ping within [`Config::timeout`]; the
    /// session has been asked to close.
    Timeout {
        /// The silent peer.
        peer: PeerId,
        /// The session being closed.
        session: SessionId,
        /// The timeout that passed.
        timeout: Duration,
    },
}

/// State shared between the handler instances and the [`Handle`].
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    rtts: Mutex<HashMap<SessionId, (PeerId, Duration)>>,
    events: mpsc::Sender<Event>,
    dropped: AtomicU64,
}

impl Shared {
    /// Queues an event without waiting; counts it if the queue is full.
    pub(crate) fn emit(&self, event: Event) {
        if let Err(mpsc::error::TrySendError::Full(event)) = self.events.try_send(event) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(?event, "ping event queue full; event dropped");
        }
    }

    fn rtts(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, (PeerId, Duration)>> {
        self.rtts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn set_rtt(&self, session: SessionId, peer: PeerId, rtt: Duration) {
        self.rtts().insert(session, (peer, rtt));
    }

    pub(crate) fn forget(&self, session: SessionId) {
        self.rtts().remove(&session);
    }
}

/// Queries the ping state of a running service. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

impl Handle {
    /// The last measured round-trip time on `session`, if the protocol is
    /// open there and a pong has arrived.
    pub fn rtt(&self, session: SessionId) -> Option<Duration> {
        self.shared.rtts().get(&session).map(|(_, rtt)| *rtt)
    }

    /// The last round-trip time of every session that has one.
    pub fn rtts(&self) -> Vec<(SessionId, PeerId, Duration)> {
        let mut all: Vec<_> = self
            .shared
            .rtts()
            .iter()
            .map(|(s, (p, rtt))| (*s, *p, *rtt))
            .collect();
        all.sort_by_key(|(s, _, _)| *s);
        all
    }

    /// Events dropped because the event channel was full.
    pub fn dropped_events(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

/// Declares the ping protocol as `id`: register the returned
/// [`ProtocolMeta`] with a [`ServiceBuilder`](shoal::ServiceBuilder), keep
/// the [`Handle`] for queries and read the [`Event`]s.
pub fn new(id: ProtocolId, config: Config) -> (ProtocolMeta, Handle, mpsc::Receiver<Event>) {
    let (tx, rx) = mpsc::channel(config.event_queue.max(1));
    let shared = Arc::new(Shared {
        config,
        rtts: Mutex::new(HashMap::new()),
        events: tx,
        dropped: AtomicU64::new(0),
    });
    let factory = {
        let shared = shared.clone();
        move || handler::PingSession::new(shared.clone())
    };
    let meta = ProtocolMeta::builder(id, PROTOCOL_NAME)
        .versions(VERSIONS)
        .max_frame_size(MAX_MESSAGE_SIZE)
        // A few bytes a minute: ping keeps relayed sessions alive too.
        .over_relay(true)
        .session_handle(factory);
    (meta, Handle { shared }, rx)
}
