//! State shared by the service task, the control handles, the connection
//! tasks and the handler tasks.
//!
//! Locks here are short and never held across an `.await`: the session map
//! (read-mostly), the listener list and each protocol's sink slot.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
    },
};

use shoal_identity::PeerId;
use shoal_transport::{BoxedTransport, Multiaddr, Transport};

use super::admission::Admission;
use super::dial_limit::DialLimit;
use super::pairing::{self, Verdict};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    ListenerId, ProtocolEvent, ProtocolId, RawStream, ServiceError, ServiceEvent, SessionId,
    config::Config, session::SessionShared,
};

/// Locks a mutex; a poisoned lock is still usable (holders never leave the
/// data half-updated).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The outcome of [`Shared::admit_session`].
pub(crate) enum SessionAdmission {
    /// Inserted; these older sessions with the same peer must close.
    Admitted { replaced: Vec<Arc<SessionShared>> },
    /// Not inserted: this session with the same peer is kept instead.
    Duplicate(Arc<SessionShared>),
}

/// Something for the [`ServiceHandle`](crate::ServiceHandle).
#[derive(Debug)]
pub(crate) enum Report {
    Event(ServiceEvent),
    Error(ServiceError),
}

/// Where a protocol's traffic goes.
pub(crate) enum Sink {
    /// Handler task or user event stream. `None` once disabled or stopped.
    Events(Mutex<Option<mpsc::Sender<ProtocolEvent>>>),
    /// User raw-stream queue.
    Raw(Mutex<Option<mpsc::Sender<RawStream>>>),
}

/// A registered protocol.
pub(crate) struct ProtocolEntry {
    pub(crate) id: ProtocolId,
    pub(crate) name: String,
    pub(crate) versions: Vec<u32>,
    pub(crate) max_frame_size: usize,
    /// Whether it may run on a relayed session.
    pub(crate) over_relay: bool,
    pub(crate) sink: Sink,
}

impl ProtocolEntry {
    pub(crate) fn is_raw(&self) -> bool {
        matches!(self.sink, Sink::Raw(_))
    }

    pub(crate) fn events(&self) -> Option<mpsc::Sender<ProtocolEvent>> {
        match &self.sink {
            Sink::Events(tx) => lock(tx).clone(),
            Sink::Raw(_) => None,
        }
    }

    pub(crate) fn raw(&self) -> Option<mpsc::Sender<RawStream>> {
        match &self.sink {
            Sink::Raw(tx) => lock(tx).clone(),
            Sink::Events(_) => None,
        }
    }

    /// Drops our sender: the consumer sees the end once every substream
    /// holding a clone has finished.
    pub(crate) fn close_sink(&self) {
        match &self.sink {
            Sink::Events(tx) => drop(lock(tx).take()),
            Sink::Raw(tx) => drop(lock(tx).take()),
        }
    }
}

pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) secio: shoal_secio::Config,
    pub(crate) yamux: shoal_yamux::Config,
    pub(crate) transports: Vec<BoxedTransport>,
    pub(crate) protocols: Vec<ProtocolEntry>,
    pub(crate) sessions: RwLock<HashMap<SessionId, Arc<SessionShared>>>,
    pub(crate) listeners: Mutex<HashMap<ListenerId, Multiaddr>>,
    /// Addresses announced besides the listen addresses.
    pub(crate) external_addrs: Mutex<Vec<Multiaddr>>,
    /// Bumped whenever the announced addresses may have changed.
    pub(crate) addrs_changed: tokio::sync::watch::Sender<u64>,
    /// Where peers may be reached (see [`crate::address_book`]).
    pub(crate) address_book: Mutex<crate::address_book::AddressBook>,
    /// `dial_peer` backoff per peer: when the next dial is allowed, and the
    /// wait after the next failure.
    pub(crate) peer_backoff: Mutex<HashMap<PeerId, (tokio::time::Instant, std::time::Duration)>>,
    /// Frames waiting for peers being dialled by `try_send_to_peer`.
    pub(crate) peer_queues: Mutex<crate::routing::PeerQueues>,
    /// `dial_peer` calls waiting for another one's dial of the same peer.
    pub(crate) peer_dials: Mutex<crate::routing::PeerDials>,
    next_id: AtomicU64,
    /// Established inbound sessions.
    pub(crate) inbound: Arc<Semaphore>,
    /// Inbound handshakes and per-address bounds.
    pub(crate) admission: Arc<Admission>,
    /// Outbound dials per socket address.
    pub(crate) dial_limit: DialLimit,
    /// Outbound sessions plus dials in progress.
    pub(crate) outbound: Arc<Semaphore>,
    /// Cancelled when shutdown starts; parent of every session's token.
    pub(crate) shutdown: CancellationToken,
    /// Cancelled when the service future has finished.
    pub(crate) stopped: CancellationToken,
    /// Listener, connection and substream tasks.
    pub(crate) tasks: TaskTracker,
    /// Protocol handler tasks.
    pub(crate) handler_tasks: TaskTracker,
    reports: mpsc::Sender<Report>,
}

impl Shared {
    pub(crate) fn new(
        config: Config,
        secio: shoal_secio::Config,
        yamux: shoal_yamux::Config,
        transports: Vec<BoxedTransport>,
        protocols: Vec<ProtocolEntry>,
        reports: mpsc::Sender<Report>,
    ) -> Shared {
        let book = config.address_book;
        Shared {
            inbound: Arc::new(Semaphore::new(config.max_inbound_sessions)),
            admission: Arc::new(Admission::new(config.clone())),
            dial_limit: DialLimit::new(config.dials_per_addr_burst, config.dial_interval_per_addr),
            outbound: Arc::new(Semaphore::new(config.max_outbound_sessions)),
            config,
            secio,
            yamux,
            transports,
            protocols,
            sessions: RwLock::new(HashMap::new()),
            listeners: Mutex::new(HashMap::new()),
            external_addrs: Mutex::new(Vec::new()),
            addrs_changed: tokio::sync::watch::channel(0).0,
            address_book: Mutex::new(crate::address_book::AddressBook::new(book)),
            peer_backoff: Mutex::new(HashMap::new()),
            peer_queues: Mutex::new(HashMap::new()),
            peer_dials: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            shutdown: CancellationToken::new(),
            stopped: CancellationToken::new(),
            tasks: TaskTracker::new(),
            handler_tasks: TaskTracker::new(),
            reports,
        }
    }

    /// Tells watchers of the announced addresses to look again.
    pub(crate) fn addrs_changed(&self) {
        self.addrs_changed.send_modify(|n| *n += 1);
    }

    /// A fresh number for a session, dial or listener.
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn transport_for(&self, addr: &Multiaddr) -> Option<&BoxedTransport> {
        self.transports.iter().find(|t| t.supports(addr))
    }

    pub(crate) fn protocol(&self, id: ProtocolId) -> Option<&ProtocolEntry> {
        self.protocols.iter().find(|p| p.id == id)
    }

    pub(crate) fn protocol_by_name(&self, name: &str) -> Option<&ProtocolEntry> {
        self.protocols.iter().find(|p| p.name == name)
    }

    pub(crate) fn session(&self, id: SessionId) -> Option<Arc<SessionShared>> {
        self.sessions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned()
    }

    /// Inserts a new session unless it duplicates one with the same peer
    /// (see [`pairing`](super::pairing)); the check and the insert are one
    /// step under the lock, so crossed dials completing at once agree.
    pub(crate) fn admit_session(&self, session: &Arc<SessionShared>) -> SessionAdmission {
        let mut sessions = self
            .sessions
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let mut replaced = Vec::new();
        if !self.config.allow_duplicate_sessions {
            let local = self.secio.local_peer_id();
            let new = &session.info;
            for existing in sessions.values() {
                if existing.info.peer != new.peer || existing.is_leaving() {
                    continue;
                }
                match pairing::verdict(&local, &new.peer, existing.info.direction, new.direction) {
                    Verdict::Existing => return SessionAdmission::Duplicate(existing.clone()),
                    Verdict::New => replaced.push(existing.clone()),
                    Verdict::Both => {}
                }
            }
        }
        // Marked under the lock, so a concurrent admission never keeps one.
        for old in &replaced {
            old.replaced
                .store(true, std::sync::atomic::Ordering::Release);
        }
        sessions.insert(session.info.id, session.clone());
        SessionAdmission::Admitted { replaced }
    }

    /// An open (not closing) session with `peer`, if any.
    pub(crate) fn session_with(&self, peer: &PeerId) -> Option<Arc<SessionShared>> {
        self.sessions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .find(|s| s.info.peer == *peer && !s.is_leaving())
            .cloned()
    }

    pub(crate) fn remove_session(&self, id: SessionId) {
        self.sessions
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }

    /// Sessions matching `filter`, collected under the read lock.
    pub(crate) fn sessions_where(
        &self,
        mut filter: impl FnMut(&SessionShared) -> bool,
    ) -> Vec<Arc<SessionShared>> {
        self.sessions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter(|s| filter(s))
            .cloned()
            .collect()
    }

    /// Closes a failed protocol everywhere and refuses it from now on.
    pub(crate) fn disable_protocol(&self, id: ProtocolId) {
        if let Some(entry) = self.protocol(id) {
            entry.close_sink();
        }
        for session in self.sessions_where(|_| true) {
            session.close_protocol(id);
        }
    }

    pub(crate) async fn report_event(&self, event: ServiceEvent) {
        let _ = self.reports.send(Report::Event(event)).await;
    }

    pub(crate) async fn report_error(&self, error: ServiceError) {
        tracing::debug!(%error, "service error");
        let _ = self.reports.send(Report::Error(error)).await;
    }

    /// Reports without waiting; drops the report if the queue is full (used
    /// where waiting would slow down accepting, e.g. under a connection
    /// flood).
    pub(crate) fn try_report_error(&self, error: ServiceError) {
        tracing::debug!(%error, "service error");
        if self.reports.try_send(Report::Error(error)).is_err() {
            tracing::warn!("service report queue full; dropped an error report");
        }
    }
}
