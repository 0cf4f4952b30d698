//! [`ServiceControl`]: the cloneable handle that drives a service.
//!
//! Every command has an `async` form that waits for its outcome (or for
//! queue capacity) and a non-blocking `try_*` form that returns at once,
//! with an id echoed by the completion event where the outcome comes later.
//! Commands go straight to the session or spawn their own task: no command
//! waits behind another session's traffic.

use std::sync::Arc;

use shoal_identity::PeerId;
use shoal_transport::{Multiaddr, Transport};
use tokio::sync::oneshot;

use crate::{
    ControlError, DialError, DialId, ListenError, ListenerId, ProtocolId, RawStream, SendError,
    ServiceError, SessionId, SessionInfo,
    service::{
        connection, listen,
        shared::{Shared, lock},
    },
    session::{ActiveGuard, SessionShared, substream},
};

mod send;

/// Which protocols a dial opens once the session is up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TargetProtocols {
    /// Every registered protocol except raw ones (the default).
    #[default]
    All,
    /// None; open them later with [`ServiceControl::open_protocol`].
    None,
    /// These.
    Only(Vec<ProtocolId>),
}

impl TargetProtocols {
    pub(crate) fn includes(&self, id: ProtocolId) -> bool {
        match self {
            TargetProtocols::All => true,
            TargetProtocols::None => false,
            TargetProtocols::Only(ids) => ids.contains(&id),
        }
    }
}

/// Options of a dial.
#[derive(Debug, Clone, Default)]
pub struct DialOptions {
    /// The peer that must answer; the dial fails with
    /// [`HandshakeError::PeerIdMismatch`](shoal_secio::HandshakeError::PeerIdMismatch)
    /// otherwise. Taken from the address's `/p2p/` component when unset.
    pub expected_peer: Option<PeerId>,
    /// Protocols to open once the session is up.
    pub protocols: TargetProtocols,
}

impl DialOptions {
    /// Expect `peer` to answer.
    pub fn expect(mut self, peer: PeerId) -> DialOptions {
        self.expected_peer = Some(peer);
        self
    }

    /// Open these protocols once the session is up.
    pub fn protocols(mut self, protocols: TargetProtocols) -> DialOptions {
        self.protocols = protocols;
        self
    }
}

/// A session a dial reached, with the outcome of opening the protocols the
/// dial asked for: [`ServiceControl::dial`] returns once each is open or
/// refused. Dereferences to the [`SessionInfo`].
#[derive(Debug, Clone)]
pub struct Connected {
    /// The session.
    pub session: Arc<SessionInfo>,
    /// The protocols open on it, with their negotiated version.
    pub opened: Vec<(ProtocolId, u32)>,
    /// The protocols asked for that could not be opened, and why (the
    /// peer does not speak them, refused them, or the session closed).
    pub refused: Vec<(ProtocolId, ControlError)>,
}

impl std::ops::Deref for Connected {
    type Target = SessionInfo;

    fn deref(&self) -> &SessionInfo {
        &self.session
    }
}

/// The sessions a broadcast goes to.
pub enum TargetSessions {
    /// Every session where the protocol is open.
    All,
    /// One session.
    Single(SessionId),
    /// These sessions.
    Multi(Vec<SessionId>),
    /// Sessions (with the protocol open) matching the predicate.
    Filter(Box<dyn Fn(&SessionInfo) -> bool + Send + Sync>),
}

impl std::fmt::Debug for TargetSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TargetSessions::All => f.write_str("All"),
            TargetSessions::Single(id) => write!(f, "Single({id})"),
            TargetSessions::Multi(ids) => write!(f, "Multi({ids:?})"),
            TargetSessions::Filter(_) => f.write_str("Filter(..)"),
        }
    }
}

/// What a broadcast did, per session.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BroadcastResult {
    /// Sessions the frame was queued for.
    pub sent: Vec<SessionId>,
    /// Sessions it could not be queued for, and why.
    pub failed: Vec<(SessionId, SendError)>,
}

/// Drives a service: listen, dial, open and close protocols, send, shut
/// down. Cheap to clone, `Send + Sync`; all methods work from any task.
#[derive(Clone)]
pub struct ServiceControl {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for ServiceControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceControl")
            .field("peer_id", &self.local_peer_id())
            .finish_non_exhaustive()
    }
}

/// Whether the address's IP is `0.0.0.0` or `::`.
fn is_unspecified(addr: &Multiaddr) -> bool {
    addr.to_socket_addr()
        .is_some_and(|s| s.ip().is_unspecified())
}

fn in_runtime() -> bool {
    tokio::runtime::Handle::try_current().is_ok()
}

impl ServiceControl {
    /// Our peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.shared.secio.local_peer_id()
    }

    /// Addresses we listen on (as bound; an unspecified IP such as
    /// `0.0.0.0` stays as it is: see [`announce_addrs`](Self::announce_addrs)).
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        lock(&self.shared.listeners).values().cloned().collect()
    }

    /// The addresses to tell others (in signed records, identify, the
    /// DHT): first the external addresses added with
    /// [`add_external_address`](Self::add_external_address) (the ones a
    /// remote peer is most likely to reach; relayed ones before the
    /// others), then every listen address, with
    /// an unspecified IP (`0.0.0.0`, `::`) replaced by this host's interface
    /// addresses of that family (see [`shoal_transport::expand_unspecified`]).
    /// Never an unspecified address; no duplicates; at most
    /// [`MAX_ANNOUNCED_ADDRS`](crate::config::MAX_ANNOUNCED_ADDRS), so a
    /// host with many interfaces still fits in a signed record.
    pub fn announce_addrs(&self) -> Vec<Multiaddr> {
        let listen = self.listen_addrs();
        let ips = if listen.iter().any(is_unspecified) {
            shoal_transport::interface_ips()
        } else {
            Vec::new()
        };
        let mut out: Vec<Multiaddr> = Vec::new();
        let mut external = lock(&self.shared.external_addrs).clone();
        // Relayed addresses first: a node holds relay reservations because
        // it cannot be dialled directly, so they are the ones that work.
        external.sort_by_key(|a| !a.is_relayed());
        // Listening for circuits (`/p2p-circuit`) is no address anyone can
        // dial: the relays' addresses are added as external ones.
        for addr in external.into_iter().chain(
            listen
                .iter()
                .filter(|a| !a.is_relayed())
                .flat_map(|a| shoal_transport::expand_unspecified(a, &ips)),
        ) {
            if out.len() >= crate::config::MAX_ANNOUNCED_ADDRS {
                break;
            }
            if !out.contains(&addr) {
                out.push(addr);
            }
        }
        out
    }

    /// Adds an address others can reach this node at that it does not
    /// listen on itself (a port forwarded by a router, a public address in
    /// front of a NAT). It is announced after the listen addresses, from
    /// the next record on. At most [`MAX_EXTERNAL_ADDRS`](crate::config::MAX_EXTERNAL_ADDRS)
    /// are kept: beyond them new ones are refused (those added first, such
    /// as configured ones, stay); an unspecified address is refused.
    pub fn add_external_address(&self, addr: Multiaddr) -> Result<(), ControlError> {
        if is_unspecified(&addr) {
            return Err(ControlError::UnspecifiedAddress(addr));
        }
        let addr = addr.without_peer_id();
        let mut external = lock(&self.shared.external_addrs);
        if !external.contains(&addr) {
            if external.len() >= crate::config::MAX_EXTERNAL_ADDRS {
                return Err(ControlError::TooManyExternalAddresses(
                    crate::config::MAX_EXTERNAL_ADDRS,
                ));
            }
            external.push(addr);
            drop(external);
            self.shared.addrs_changed();
        }
        Ok(())
    }

    /// Stops announcing an address added with
    /// [`add_external_address`](Self::add_external_address) (a relay
    /// reservation that ended, a mapping that expired). Returns whether it
    /// was there.
    pub fn remove_external_address(&self, addr: &Multiaddr) -> bool {
        let addr = addr.without_peer_id();
        let mut external = lock(&self.shared.external_addrs);
        let before = external.len();
        external.retain(|a| *a != addr);
        let removed = external.len() != before;
        drop(external);
        if removed {
            self.shared.addrs_changed();
        }
        removed
    }

    /// A receiver that sees a new value whenever the
    /// [announced addresses](Self::announce_addrs) may have changed: a
    /// listener started or stopped, an external address (a relay's, an
    /// observed one) came or went. Whoever publishes the addresses in a
    /// record (identify's peer record, the messenger's presence) watches
    /// it to publish again.
    pub fn announce_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.addrs_changed.subscribe()
    }

    /// The protocols registered on this service: id and name, in
    /// registration order.
    pub fn protocol_names(&self) -> Vec<(ProtocolId, String)> {
        self.shared
            .protocols
            .iter()
            .map(|p| (p.id, p.name.clone()))
            .collect()
    }

    /// Open sessions.
    pub fn sessions(&self) -> Vec<Arc<SessionInfo>> {
        self.shared
            .sessions_where(|s| !s.is_closing())
            .into_iter()
            .map(|s| s.info.clone())
            .collect()
    }

    /// One session, if open.
    pub fn session(&self, id: SessionId) -> Option<Arc<SessionInfo>> {
        self.open_session(id).map(|s| s.info.clone())
    }

    /// The negotiated version of `protocol` on `session`, if open.
    pub fn protocol_version(&self, session: SessionId, protocol: ProtocolId) -> Option<u32> {
        self.open_session(session)?.version(protocol)
    }

    fn open_session(&self, id: SessionId) -> Option<Arc<SessionShared>> {
        self.shared.session(id).filter(|s| !s.is_closing())
    }

    /// Listens on `addr`; returns the address actually bound (port 0 picks
    /// one). Also reported as
    /// [`ServiceEvent::ListenStarted`](crate::ServiceEvent::ListenStarted).
    pub async fn listen(&self, addr: Multiaddr) -> Result<Multiaddr, ListenError> {
        let shared = &self.shared;
        let id = self.check_listen(&addr)?;
        let Some(transport) = shared.transport_for(&addr) else {
            return Err(ListenError::NoTransport(addr));
        };
        match transport.listen(&addr).await {
            Ok(listener) => {
                let bound = shoal_transport::Listener::local_addr(&listener).clone();
                lock(&shared.listeners).insert(id, bound.clone());
                shared.addrs_changed();
                shared
                    .tasks
                    .spawn(listen::run(shared.clone(), id, listener));
                Ok(bound)
            }
            Err(e) => {
                let error = ListenError::Transport(Arc::new(e));
                shared
                    .report_error(ServiceError::ListenFailed {
                        id,
                        addr,
                        error: error.clone(),
                    })
                    .await;
                Err(error)
            }
        }
    }

    /// Starts listening on `addr`; the outcome is reported as
    /// [`ServiceEvent::ListenStarted`](crate::ServiceEvent::ListenStarted) or
    /// [`ServiceError::ListenFailed`] with the returned id.
    pub fn try_listen(&self, addr: Multiaddr) -> Result<ListenerId, ListenError> {
        let id = self.check_listen(&addr)?;
        let shared = self.shared.clone();
        self.shared.tasks.spawn(async move {
            let Some(transport) = shared.transport_for(&addr) else {
                return;
            };
            match transport.listen(&addr).await {
                Ok(listener) => {
                    let bound = shoal_transport::Listener::local_addr(&listener).clone();
                    lock(&shared.listeners).insert(id, bound);
                    shared.addrs_changed();
                    listen::run(shared, id, listener).await;
                }
                Err(e) => {
                    let error = ListenError::Transport(Arc::new(e));
                    shared
                        .report_error(ServiceError::ListenFailed { id, addr, error })
                        .await;
                }
            }
        });
        Ok(id)
    }

    fn check_listen(&self, addr: &Multiaddr) -> Result<ListenerId, ListenError> {
        if self.shared.shutdown.is_cancelled() {
            return Err(ListenError::ShuttingDown);
        }
        if !in_runtime() {
            return Err(ListenError::NoRuntime);
        }
        if self.shared.transport_for(addr).is_none() {
            return Err(ListenError::NoTransport(addr.clone()));
        }
        Ok(ListenerId(self.shared.next_id()))
    }

    /// Dials `addr` and waits for the session (secured, multiplexed; the
    /// protocols of `opts` are being opened when this returns). Failures are
    /// also reported as [`ServiceError::DialFailed`].
    ///
    /// The service keeps one session per pair of peers: a dial to a peer
    /// that already has a session (known from `opts` or the address's
    /// `/p2p/` part) returns that session without connecting, and when two
    /// dials cross or repeat, one connection survives by a rule both ends
    /// apply alike (the one dialled by the smaller peer id; for repeated
    /// dials, the first). A dial whose connection lost returns the
    /// survivor. See [`Config::allow_duplicate_sessions`](crate::config::Config::allow_duplicate_sessions).
    pub async fn dial(&self, addr: Multiaddr, opts: DialOptions) -> Result<Connected, DialError> {
        let targets = opts.protocols.clone();
        let (tx, rx) = oneshot::channel();
        self.start_dial(
            addr.clone(),
            opts.protocols(TargetProtocols::None),
            Some(tx),
        )?;
        let session = rx.await.unwrap_or(Err(DialError::ServiceStopped))?;
        if session.direction == crate::Direction::Outbound
            && session.remote_addr.without_peer_id() == addr.without_peer_id()
        {
            // Reached there: the best kind of address the book can hold.
            lock(&self.shared.address_book).reached(session.peer, &addr, unix_now());
        }
        Ok(self.open_targets(session, &targets).await)
    }

    /// Opens `targets` on `session` and waits for each to open or fail.
    pub(crate) async fn open_targets(
        &self,
        session: Arc<SessionInfo>,
        targets: &TargetProtocols,
    ) -> Connected {
        let mut connected = Connected {
            session,
            opened: Vec::new(),
            refused: Vec::new(),
        };
        let Some(s) = self.shared.session(connected.session.id) else {
            return connected;
        };
        let ids: Vec<ProtocolId> = self
            .shared
            .protocols
            .iter()
            .filter(|p| !p.is_raw() && targets.includes(p.id))
            .map(|p| p.id)
            .collect();
        let opens = ids
            .iter()
            .map(|&id| crate::session::open_and_wait(&self.shared, &s, id));
        for (id, result) in ids.iter().zip(futures::future::join_all(opens).await) {
            match result {
                Ok(version) => connected.opened.push((*id, version)),
                Err(error) => connected.refused.push((*id, error)),
            }
        }
        connected
    }

    /// Starts a dial; the outcome is reported as
    /// [`ServiceEvent::SessionOpened`](crate::ServiceEvent::SessionOpened) or
    /// [`ServiceError::DialFailed`] with the returned id. Errors found before
    /// any I/O (limit, address) are returned here and not reported.
    pub fn try_dial(&self, addr: Multiaddr, opts: DialOptions) -> Result<DialId, DialError> {
        self.start_dial(addr, opts, None)
    }

    fn start_dial(
        &self,
        addr: Multiaddr,
        opts: DialOptions,
        reply: Option<connection::DialReply>,
    ) -> Result<DialId, DialError> {
        let shared = &self.shared;
        if shared.shutdown.is_cancelled() {
            return Err(DialError::ShuttingDown);
        }
        if !in_runtime() {
            return Err(DialError::NoRuntime);
        }
        let expected = connection::expected_peer(&addr, &opts)?;
        if shared.transport_for(&addr).is_none() {
            return Err(DialError::NoTransport(addr));
        }
        // One session per pair of peers: a connected peer is not dialled again.
        if let Some(existing) = expected
            .filter(|_| !shared.config.allow_duplicate_sessions)
            .and_then(|peer| shared.session_with(&peer))
        {
            crate::session::open_protocols(shared, &existing, &opts.protocols);
            return match reply {
                Some(reply) => {
                    let _ = reply.send(Ok(existing.info.clone()));
                    Ok(DialId(shared.next_id()))
                }
                None => Err(DialError::AlreadyConnected(existing.info.id)),
            };
        }
        let permit = shared
            .outbound
            .clone()
            .try_acquire_owned()
            .map_err(|_| DialError::TooManySessions(shared.config.max_outbound_sessions))?;
        // After the permit: a dial refused for the session limit spends no
        // token of the address.
        if let Some(socket) = addr.to_socket_addr()
            && !shared
                .dial_limit
                .try_take(socket, std::time::Instant::now())
        {
            tracing::debug!(%addr, "dial rate-limited");
            return Err(DialError::RateLimited(addr));
        }
        let id = DialId(shared.next_id());
        shared.tasks.spawn(connection::outbound(
            shared.clone(),
            id,
            addr,
            opts,
            permit,
            reply,
        ));
        Ok(id)
    }

    /// Closes a session gracefully and waits until it is closed.
    pub async fn disconnect(&self, session: SessionId) -> Result<(), ControlError> {
        let s = self
            .shared
            .session(session)
            .ok_or(ControlError::NoSession(session))?;
        s.set_close_reason(crate::CloseReason::Local);
        s.cancel.cancel();
        s.closed.cancelled().await;
        Ok(())
    }

    /// Starts closing a session; completion is reported as
    /// [`ServiceEvent::SessionClosed`](crate::ServiceEvent::SessionClosed).
    pub fn try_disconnect(&self, session: SessionId) -> Result<(), ControlError> {
        let s = self
            .shared
            .session(session)
            .ok_or(ControlError::NoSession(session))?;
        s.set_close_reason(crate::CloseReason::Local);
        s.cancel.cancel();
        Ok(())
    }

    /// Opens `protocol` on `session` and returns the negotiated version.
    pub async fn open_protocol(
        &self,
        session: SessionId,
        protocol: ProtocolId,
    ) -> Result<u32, ControlError> {
        let s = self
            .open_session(session)
            .ok_or(ControlError::NoSession(session))?;
        let (tx, rx) = oneshot::channel();
        substream::spawn_open(&self.shared, &s, protocol, Some(tx))?;
        rx.await.unwrap_or(Err(ControlError::ShuttingDown))
    }

    /// Starts opening `protocol` on `session`; the outcome is reported as
    /// [`ServiceEvent::ProtocolOpened`](crate::ServiceEvent::ProtocolOpened)
    /// or [`ServiceError::Negotiation`].
    pub fn try_open_protocol(
        &self,
        session: SessionId,
        protocol: ProtocolId,
    ) -> Result<(), ControlError> {
        if !in_runtime() {
            return Err(ControlError::NoRuntime);
        }
        let s = self
            .open_session(session)
            .ok_or(ControlError::NoSession(session))?;
        substream::spawn_open(&self.shared, &s, protocol, None)
    }

    /// Closes `protocol` on `session` after its queued frames are written
    /// (FIN to the peer). A no-op if it is not open.
    pub fn close_protocol(
        &self,
        session: SessionId,
        protocol: ProtocolId,
    ) -> Result<(), ControlError> {
        self.shared
            .protocol(protocol)
            .ok_or(ControlError::UnknownProtocol(protocol))?;
        let s = self
            .shared
            .session(session)
            .ok_or(ControlError::NoSession(session))?;
        s.close_protocol(protocol);
        Ok(())
    }

    /// Opens a substream of raw `protocol` on `session` (see
    /// [`ProtocolMetaBuilder::raw_streams`](crate::ProtocolMetaBuilder::raw_streams)).
    pub async fn open_raw_stream(
        &self,
        session: SessionId,
        protocol: ProtocolId,
    ) -> Result<RawStream, ControlError> {
        let entry = self
            .shared
            .protocol(protocol)
            .ok_or(ControlError::UnknownProtocol(protocol))?;
        if !entry.is_raw() {
            return Err(ControlError::WrongKind(protocol));
        }
        let s = self
            .open_session(session)
            .ok_or(ControlError::NoSession(session))?;
        let guard = ActiveGuard::new(&s);
        let (stream, version) = substream::negotiate_outbound(&self.shared, &s, entry).await?;
        Ok(RawStream::new(
            s.info.clone(),
            protocol,
            version,
            stream,
            guard,
        ))
    }

    /// Shuts the service down gracefully and waits until its future has
    /// completed: listeners stop, sessions close (handlers get
    /// `disconnected`), handler tasks end. Needs the [`Service`](crate::Service)
    /// to be polled (spawned).
    pub async fn shutdown(&self) {
        self.shared.shutdown.cancel();
        self.shared.stopped.cancelled().await;
    }

    /// Starts a graceful shutdown without waiting.
    pub fn try_shutdown(&self) {
        self.shared.shutdown.cancel();
    }

    /// Whether the service future has completed.
    pub fn is_stopped(&self) -> bool {
        self.shared.stopped.is_cancelled()
    }
}

/// The wall clock in Unix seconds (the address book's clock).
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
