//! Shoal identify: who is on the other end of a session, and a signed peer
//! record anyone can verify.
//!
//! # Tour
//! - [`new`] declares the protocol ([`PROTOCOL_NAME`], [`VERSIONS`]) for a
//!   [`ServiceBuilder`](shoal::ServiceBuilder), given the node's
//!   [`LocalRecord`]; it returns a [`Handle`] (what each session's peer said)
//!   and the bounded receiver of [`Event`]s.
//! - [`Config`]: agent version, the protocol names to announce, the event
//!   queue; each default is a named `DEFAULT_*` constant.
//! - [`record`]: [`PeerRecord`], [`SignedPeerRecord`] (verified on decode)
//!   and [`LocalRecord`] (our own record, re-signed when our addresses
//!   change). Discovery relays these records.
//! - [`protocol`]: the identify message and its codec (also in
//!   `docs/PROTOCOL.md`, section 7).
//!
//! # Behaviour
//! ```text
//!  protocol opens on a session ─▶ each side sends one Identify:
//!    agent version, listen addresses, protocol names,
//!    observed address (the session's remote address), signed peer record
//!  on receipt: bounds → record signature → signer == session's peer
//!    ok  → Event::Identified { info }        (Handle::info answers queries)
//!    bad → Event::Rejected { error }, identify closed on that session only
//! ```
//! A second identify message on the same substream is a protocol violation.
//! The substream stays open until the session closes; to re-identify after
//! a change of addresses, close and reopen the protocol.
//!
//! # Example
//! ```
//! use shoal::{ProtocolId, ServiceBuilder};
//! use shoal_identify::{Config, LocalRecord};
//! use shoal_identity::Keypair;
//!
//! let key = Keypair::generate();
//! let local = LocalRecord::new(key.clone());
//! let config = Config {
//!     protocols: vec![shoal_identify::PROTOCOL_NAME.into()],
//!     ..Config::default()
//! };
//! let (meta, handle, events) = shoal_identify::new(ProtocolId(2), local, config);
//! let service = ServiceBuilder::new(key).protocol(meta).build().unwrap();
//! # drop((service, handle, events));
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod handler;
mod observed;
pub mod protocol;
pub mod record;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

use shoal::{PeerId, ProtocolId, ProtocolMeta, SessionId};
use tokio::sync::mpsc;

pub use protocol::{DecodeError, IdentifyInfo, MAX_MESSAGE_SIZE};
pub use record::{LocalRecord, PeerRecord, RecordError, SignedPeerRecord};

/// The protocol name negotiated on the substream.
pub const PROTOCOL_NAME: &str = "/shoal/identify";

/// The protocol versions spoken (negotiated per substream).
pub const VERSIONS: [u32; 1] = [1];

/// Default for [`Config::agent_version`]: `shoal/<crate version>`.
pub const DEFAULT_AGENT_VERSION: &str = concat!("shoal/", env!("CARGO_PKG_VERSION"));

/// Default for [`Config::event_queue`]: 256 events.
pub const DEFAULT_EVENT_QUEUE: usize = 256;

/// Settings of the identify protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Sent as the agent version (see [`DEFAULT_AGENT_VERSION`]; cut to
    /// [`protocol::MAX_AGENT_LEN`] bytes).
    pub agent_version: String,
    /// Protocol names announced as supported (default: none). The service
    /// layer does not list its protocols to handlers, so the application
    /// names them here, e.g. `[shoal_ping::PROTOCOL_NAME, ...]`.
    pub protocols: Vec<String>,
    /// Capacity of the event channel returned by [`new`] (see
    /// [`DEFAULT_EVENT_QUEUE`]); events that find it full are dropped and
    /// counted by [`Handle::dropped_events`].
    pub event_queue: usize,
    /// Peers from this many distinct networks (/24, /48) must report the
    /// same observed IP before it is announced with the port of each
    /// unspecified listen address (see [`DEFAULT_CONFIRM_OBSERVED`]; 0
    /// never announces observed addresses).
    pub confirm_observed: usize,
    /// Which of a peer's listen addresses go into the service's address
    /// book (as the peer's own word): by default none narrower than the
    /// scope of the session it identified on (see
    /// [`ScopePolicy`](shoal_transport::ScopePolicy)).
    pub address_scope: shoal_transport::ScopePolicy,
    /// Tell peers only our relayed addresses (`…/p2p-circuit`), never our
    /// own IP addresses (a node that hides where it is; see the
    /// messenger's `hide_ip_addresses`). Off by default.
    pub announce_relayed_only: bool,
}

/// Default for [`Config::confirm_observed`]: 2 networks.
pub const DEFAULT_CONFIRM_OBSERVED: usize = 2;

impl Default for Config {
    fn default() -> Config {
        Config {
            agent_version: DEFAULT_AGENT_VERSION.to_owned(),
            protocols: Vec::new(),
            event_queue: DEFAULT_EVENT_QUEUE,
            confirm_observed: DEFAULT_CONFIRM_OBSERVED,
            address_scope: shoal_transport::ScopePolicy::default(),
            announce_relayed_only: false,
        }
    }
}

/// Why a peer's identify message was rejected. Scope: the identify
/// substream of that session, which is closed. Blame: the remote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentifyError {
    /// The frame did not decode, broke a bound, or carried an invalid
    /// record.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The record is validly signed, but by another peer than the session's:
    /// identify only accepts a peer's own record.
    #[error("identify record signed by {signer}, but the session's peer is {session_peer}")]
    SignerMismatch {
        /// Who signed the record.
        signer: PeerId,
        /// The authenticated peer of the session.
        session_peer: PeerId,
    },
    /// A second identify message on the same substream.
    #[error("more than one identify message on a substream")]
    Repeated,
}

/// What the identify protocol reports.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// A peer identified itself; its record is verified and signed by the
    /// session's peer.
    Identified {
        /// The peer.
        peer: PeerId,
        /// The session.
        session: SessionId,
        /// What it said.
        info: Arc<IdentifyInfo>,
    },
    /// A peer's identify message was rejected and identify closed on that
    /// session.
    Rejected {
        /// The peer.
        peer: PeerId,
        /// The session.
        session: SessionId,
        /// Why.
        error: IdentifyError,
    },
}

/// State shared by the handler and the [`Handle`].
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    infos: Mutex<HashMap<SessionId, (PeerId, Arc<IdentifyInfo>)>>,
    events: mpsc::Sender<Event>,
    dropped: AtomicU64,
}

type Infos = HashMap<SessionId, (PeerId, Arc<IdentifyInfo>)>;

impl Shared {
    fn infos(&self) -> std::sync::MutexGuard<'_, Infos> {
        self.infos.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn emit(&self, event: Event) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.events.try_send(event) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("identify event queue full; event dropped");
        }
    }

    pub(crate) fn remember(&self, session: SessionId, info: Arc<IdentifyInfo>) {
        let peer = info.record.peer_id();
        self.infos().insert(session, (peer, info));
    }

    pub(crate) fn forget(&self, session: SessionId) {
        self.infos().remove(&session);
    }
}

/// Queries what peers said about themselves. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

impl Handle {
    /// What the peer of `session` said, once identified (until the session
    /// closes).
    pub fn info(&self, session: SessionId) -> Option<Arc<IdentifyInfo>> {
        self.shared.infos().get(&session).map(|(_, i)| i.clone())
    }

    /// What `peer` said on any open session, the newest record first.
    pub fn peer_info(&self, peer: PeerId) -> Option<Arc<IdentifyInfo>> {
        self.shared
            .infos()
            .values()
            .filter(|(p, _)| *p == peer)
            .max_by_key(|(_, i)| i.record.seq())
            .map(|(_, i)| i.clone())
    }

    /// Every identified session.
    pub fn all(&self) -> Vec<(SessionId, Arc<IdentifyInfo>)> {
        let mut all: Vec<_> = self
            .shared
            .infos()
            .iter()
            .map(|(s, (_, i))| (*s, i.clone()))
            .collect();
        all.sort_by_key(|(s, _)| *s);
        all
    }

    /// Events dropped because the event channel was full.
    pub fn dropped_events(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

/// Declares the identify protocol as `id` for the node whose record is
/// `local` (its key must be the service's key, or peers reject the record).
pub fn new(
    id: ProtocolId,
    local: LocalRecord,
    config: Config,
) -> (ProtocolMeta, Handle, mpsc::Receiver<Event>) {
    let (tx, rx) = mpsc::channel(config.event_queue.max(1));
    let shared = Arc::new(Shared {
        config,
        infos: Mutex::new(HashMap::new()),
        events: tx,
        dropped: AtomicU64::new(0),
    });
    let meta = ProtocolMeta::builder(id, PROTOCOL_NAME)
        .versions(VERSIONS)
        .max_frame_size(MAX_MESSAGE_SIZE)
        // One message per session, and a peer reached through a relay
        // needs its record as much as any other.
        .over_relay(true)
        .service_handle(handler::IdentifyHandler::new(shared.clone(), local));
    (meta, Handle { shared }, rx)
}
