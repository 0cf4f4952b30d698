//! One session: the yamux connection, its protocol slots and send budget,
//! the task accepting substreams, and the graceful close.
//!
//! ```text
//!  connection task ── run() ──▶ serve(): accept_stream ─▶ substream::inbound (task per stream)
//!        │                              idle timer, cancel token
//!        └── close(): cancel substreams → wait for streams to end → GoAway → EOF → driver done
//! ```

mod io;
pub(crate) mod substream;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use shoal_secio::SecureStream;
use shoal_transport::{BoxedConnection, Multiaddr};
use shoal_yamux::{Control, Driver, Mode};
use tokio::{
    sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc},
    task::JoinHandle,
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use crate::{
    CloseReason, DialId, Direction, ProtocolId, ServiceError, ServiceEvent, SessionId, SessionInfo,
    TargetProtocols,
    negotiation::RefuseReason,
    service::{
        connection::DialReply,
        shared::{SessionAdmission, Shared, lock},
    },
};
pub(crate) use substream::OutFrame;

/// How often a closing session checks whether its streams have ended.
const CLOSE_POLL: Duration = Duration::from_millis(2);

/// A protocol's substream on a session: being opened by us, or open.
struct Slot {
    protocol: ProtocolId,
    /// Which substream task owns the slot.
    owner: u64,
    /// `None` while our proposal is in flight.
    open: Option<(u32, mpsc::Sender<OutFrame>)>,
}

/// What every part of the service may touch of a session.
pub(crate) struct SessionShared {
    pub(crate) info: Arc<SessionInfo>,
    pub(crate) control: Control,
    /// Bytes that may be queued for sending (see `Config::send_queue_bytes`).
    pub(crate) budget: Arc<Semaphore>,
    slots: Mutex<Vec<Slot>>,
    /// Cancelled when the session starts closing; ends every substream.
    pub(crate) cancel: CancellationToken,
    /// Cancelled when the session has closed.
    pub(crate) closed: CancellationToken,
    close_reason: Mutex<Option<CloseReason>>,
    /// Live substreams (negotiating, open or raw).
    active: AtomicUsize,
    /// A newer session with the same peer replaced this one; it closes
    /// after [`crate::config::REPLACED_SESSION_GRACE`].
    pub(crate) replaced: AtomicBool,
    /// Signalled when `active` drops to zero.
    idle: Notify,
    /// Signalled (to every waiter) whenever a protocol slot changes.
    slots_changed: Notify,
}

impl SessionShared {
    /// Why the session is closing, if someone said.
    pub(crate) fn set_close_reason(&self, reason: CloseReason) {
        lock(&self.close_reason).get_or_insert(reason);
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Closing, or replaced by a newer session and about to close.
    pub(crate) fn is_leaving(&self) -> bool {
        self.is_closing() || self.replaced.load(Ordering::Acquire)
    }

    /// Reserves the slot of `protocol` for an outbound open.
    pub(crate) fn begin_open(&self, protocol: ProtocolId, owner: u64) -> bool {
        let mut slots = lock(&self.slots);
        if slots.iter().any(|s| s.protocol == protocol) {
            return false;
        }
        slots.push(Slot {
            protocol,
            owner,
            open: None,
        });
        true
    }

    /// Completes our outbound open; `false` if the slot was taken over by
    /// the peer's simultaneous open.
    pub(crate) fn finish_open(
        &self,
        protocol: ProtocolId,
        owner: u64,
        version: u32,
        tx: mpsc::Sender<OutFrame>,
    ) -> bool {
        let mut slots = lock(&self.slots);
        match slots
            .iter_mut()
            .find(|s| s.protocol == protocol && s.owner == owner)
        {
            Some(slot) => {
                slot.open = Some((version, tx));
                self.slots_changed.notify_waiters();
                true
            }
            None => false,
        }
    }

    /// Registers a substream the peer opened. When both sides open the same
    /// protocol at once, the dialler's substream wins on both ends.
    pub(crate) fn accept_inbound(
        &self,
        protocol: ProtocolId,
        owner: u64,
        version: u32,
        tx: mpsc::Sender<OutFrame>,
    ) -> Result<(), RefuseReason> {
        let mut slots = lock(&self.slots);
        let slot = Slot {
            protocol,
            owner,
            open: Some((version, tx)),
        };
        match slots.iter_mut().find(|s| s.protocol == protocol) {
            None => slots.push(slot),
            // We are the listener and only proposing: the dialler's wins.
            Some(s) if s.open.is_none() && self.info.direction == Direction::Inbound => *s = slot,
            Some(_) => return Err(RefuseReason::AlreadyOpen),
        }
        self.slots_changed.notify_waiters();
        Ok(())
    }

    /// Frees the slot if `owner` still holds it.
    pub(crate) fn release(&self, protocol: ProtocolId, owner: u64) {
        lock(&self.slots).retain(|s| !(s.protocol == protocol && s.owner == owner));
        self.slots_changed.notify_waiters();
    }

    /// Closes the protocol's substream (after its queued frames) by dropping
    /// the slot's sender. Returns whether there was one.
    pub(crate) fn close_protocol(&self, protocol: ProtocolId) -> bool {
        let mut slots = lock(&self.slots);
        let before = slots.len();
        slots.retain(|s| s.protocol != protocol);
        let closed = slots.len() != before;
        drop(slots);
        self.slots_changed.notify_waiters();
        closed
    }

    /// Waits while `protocol` is being opened (by either side): its version
    /// once open, `None` if the open failed, nobody is opening it, or the
    /// session closes. With `expected`, a missing slot is waited for too
    /// (the peer said it is opening the protocol), up to `expected`. A
    /// stalled open is bounded by the negotiation timeout of its own task.
    pub(crate) async fn wait_open(
        &self,
        protocol: ProtocolId,
        expected: Option<Duration>,
    ) -> Option<u32> {
        let give_up = tokio::time::sleep(expected.unwrap_or_default());
        tokio::pin!(give_up);
        loop {
            let changed = self.slots_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let slots = lock(&self.slots);
                match slots.iter().find(|s| s.protocol == protocol) {
                    None if expected.is_none() => return None,
                    Some(Slot {
                        open: Some((v, _)), ..
                    }) => return Some(*v),
                    _ => {}
                }
            }
            tokio::select! {
                () = changed => {}
                () = self.cancel.cancelled() => return None,
                () = &mut give_up, if expected.is_some() => return None,
            }
        }
    }

    /// The send queue of an open protocol.
    pub(crate) fn sender(&self, protocol: ProtocolId) -> Option<mpsc::Sender<OutFrame>> {
        lock(&self.slots)
            .iter()
            .find(|s| s.protocol == protocol)
            .and_then(|s| s.open.as_ref().map(|(_, tx)| tx.clone()))
    }

    /// The negotiated version of an open protocol.
    pub(crate) fn version(&self, protocol: ProtocolId) -> Option<u32> {
        lock(&self.slots)
            .iter()
            .find(|s| s.protocol == protocol)
            .and_then(|s| s.open.as_ref().map(|(v, _)| *v))
    }
}

/// Counts a substream as activity for the idle timeout while it lives.
pub(crate) struct ActiveGuard(Arc<SessionShared>);

impl std::fmt::Debug for ActiveGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ActiveGuard").field(&self.0.info.id).finish()
    }
}

impl ActiveGuard {
    pub(crate) fn new(session: &Arc<SessionShared>) -> ActiveGuard {
        session.active.fetch_add(1, Ordering::AcqRel);
        ActiveGuard(session.clone())
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_one();
        }
    }
}

/// How a session came to be.
pub(crate) struct Opened {
    pub(crate) direction: Direction,
    pub(crate) remote_addr: Multiaddr,
    pub(crate) dial: Option<DialId>,
    pub(crate) reply: Option<DialReply>,
    pub(crate) open: TargetProtocols,
}

type Secure = SecureStream<BoxedConnection>;

/// Runs a secured connection as a session until it closes.
pub(crate) async fn run(
    shared: Arc<Shared>,
    secure: Secure,
    opened: Opened,
    permit: OwnedSemaphorePermit,
) {
    let peer = secure.remote_peer();
    let cipher_suite = secure.cipher_suite();
    let (io, closer) = io::Closable::new(secure);
    let mode = match opened.direction {
        Direction::Outbound => Mode::Client,
        Direction::Inbound => Mode::Server,
    };
    let (driver, control) = Driver::new(io, shared.yamux.clone(), mode);
    let mut driver = tokio::spawn(driver);
    let info = Arc::new(SessionInfo {
        id: SessionId(shared.next_id()),
        peer,
        remote_addr: opened.remote_addr,
        direction: opened.direction,
        cipher_suite,
    });
    let session = Arc::new(SessionShared {
        info: info.clone(),
        control,
        budget: Arc::new(Semaphore::new(shared.config.send_queue_bytes)),
        slots: Mutex::new(Vec::new()),
        cancel: shared.shutdown.child_token(),
        closed: CancellationToken::new(),
        close_reason: Mutex::new(None),
        active: AtomicUsize::new(0),
        replaced: AtomicBool::new(false),
        idle: Notify::new(),
        slots_changed: Notify::new(),
    });
    match shared.admit_session(&session) {
        SessionAdmission::Duplicate(kept) => {
            tracing::debug!(session = %info.id, %peer, kept = %kept.info.id, "duplicate session: closing it");
            match (opened.reply, opened.dial) {
                (Some(reply), _) => {
                    let _ = reply.send(Ok(kept.info.clone()));
                }
                // A `try_dial` learns the outcome as a report.
                (None, Some(id)) => {
                    shared
                        .report_error(ServiceError::DialFailed {
                            id,
                            addr: info.remote_addr.clone(),
                            expected: Some(peer),
                            error: crate::DialError::AlreadyConnected(kept.info.id),
                        })
                        .await;
                }
                (None, None) => {}
            }
            open_protocols(&shared, &kept, &opened.open);
            session.set_close_reason(CloseReason::Duplicate);
            close_duplicate(&shared, &session, &mut driver, closer).await;
            session.budget.close();
            drop(permit);
            session.closed.cancel();
            return;
        }
        SessionAdmission::Admitted { replaced } => {
            for old in replaced {
                tracing::debug!(session = %old.info.id, %peer, kept = %info.id, "replacing a duplicate session");
                old.set_close_reason(CloseReason::Duplicate);
                let cancel = old.cancel.clone();
                shared.tasks.spawn(async move {
                    tokio::select! {
                        () = cancel.cancelled() => {}
                        () = tokio::time::sleep(crate::config::REPLACED_SESSION_GRACE) => cancel.cancel(),
                    }
                });
            }
        }
    }
    tracing::debug!(session = %info.id, %peer, direction = ?info.direction, "session opened");
    shared
        .report_event(ServiceEvent::SessionOpened {
            session: info.clone(),
            dial: opened.dial,
        })
        .await;
    if let Some(reply) = opened.reply {
        let _ = reply.send(Ok(info.clone()));
    }
    open_protocols(&shared, &session, &opened.open);

    let reason = serve(&shared, &session).await;
    close(&shared, &session, &mut driver, closer).await;

    shared.remove_session(info.id);
    session.budget.close();
    drop(permit);
    tracing::debug!(session = %info.id, %peer, %reason, "session closed");
    if let CloseReason::Muxer(error) = &reason {
        shared
            .report_error(ServiceError::Muxer {
                session: info.id,
                peer,
                error: error.clone(),
            })
            .await;
    }
    shared
        .report_event(ServiceEvent::SessionClosed {
            session: info,
            reason,
        })
        .await;
    session.closed.cancel();
}

/// Opens the `targets` protocols on `session` (those already open stay).
pub(crate) fn open_protocols(
    shared: &Arc<Shared>,
    session: &Arc<SessionShared>,
    targets: &TargetProtocols,
) {
    for entry in shared.protocols.iter().filter(|p| !p.is_raw()) {
        if targets.includes(entry.id) {
            let _ = substream::spawn_open(shared, session, entry.id, None);
        }
    }
}

/// Opens `protocol` on `session` (or waits for an open already under way,
/// by either side) and returns its version once open.
pub(crate) async fn open_and_wait(
    shared: &Arc<Shared>,
    session: &Arc<SessionShared>,
    protocol: ProtocolId,
) -> Result<u32, crate::ControlError> {
    // An open can lose to the peer's, or a wait can see a failed open of
    // someone else's: a few rounds settle it.
    let mut last = crate::ControlError::NoSession(session.info.id);
    for _ in 0..3 {
        if let Some(version) = session.version(protocol) {
            return Ok(version);
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        // Whether the peer said it opens the protocol itself.
        let mut peer_opens = false;
        match substream::spawn_open(shared, session, protocol, Some(tx)) {
            Ok(()) => match rx.await {
                Ok(Ok(version)) => return Ok(version),
                Ok(Err(e @ crate::ControlError::AlreadyOpen(..))) => last = e,
                // Both sides opened it at once and the peer's won.
                Ok(Err(
                    e @ crate::ControlError::Negotiation(
                        crate::negotiation::NegotiationError::Refused(RefuseReason::AlreadyOpen),
                    ),
                )) => {
                    peer_opens = true;
                    last = e;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(crate::ControlError::ShuttingDown),
            },
            Err(e @ crate::ControlError::AlreadyOpen(..)) => last = e,
            Err(e) => return Err(e),
        }
        let expected = peer_opens.then_some(shared.config.negotiation_timeout);
        if let Some(version) = session.wait_open(protocol, expected).await {
            return Ok(version);
        }
        if session.is_closing() {
            return Err(crate::ControlError::NoSession(session.info.id));
        }
    }
    Err(last)
}

/// Accepts substreams until the session must close; returns why.
async fn serve(shared: &Arc<Shared>, session: &Arc<SessionShared>) -> CloseReason {
    let idle_timeout = shared.config.idle_timeout;
    let mut idle_since = Instant::now();
    loop {
        let idle_at =
            (session.active.load(Ordering::Acquire) == 0).then(|| idle_since + idle_timeout);
        tokio::select! {
            biased;
            () = session.cancel.cancelled() => {
                return lock(&session.close_reason).take().unwrap_or(CloseReason::Shutdown);
            }
            accepted = session.control.accept_stream() => match accepted {
                Ok(stream) => substream::spawn_inbound(shared, session, stream),
                Err(e) if e.is_graceful() => return CloseReason::Remote,
                Err(e) => return CloseReason::Muxer(e),
            },
            () = session.idle.notified() => {
                if session.active.load(Ordering::Acquire) == 0 {
                    idle_since = Instant::now();
                }
            }
            () = tokio::time::sleep_until(idle_at.unwrap_or(idle_since)), if idle_at.is_some() => {
                if session.active.load(Ordering::Acquire) == 0 {
                    return CloseReason::Idle(idle_timeout);
                }
            }
        }
    }
}

/// Closes a session that lost to another with the same peer before it was
/// used: GoAway at once, and any stream the peer opened meanwhile is reset
/// (nobody will serve it), so the close takes one round trip.
async fn close_duplicate(
    shared: &Shared,
    session: &SessionShared,
    driver: &mut JoinHandle<Result<(), shoal_yamux::ConnectionError>>,
    closer: io::Closer,
) {
    session.cancel.cancel();
    session.control.close();
    while let Ok(Ok(mut stream)) =
        tokio::time::timeout(Duration::ZERO, session.control.accept_stream()).await
    {
        let _ = stream.reset();
    }
    let deadline = Instant::now() + shared.config.close_timeout;
    if tokio::time::timeout_at(deadline, &mut *driver)
        .await
        .is_err()
    {
        closer.close();
        if tokio::time::timeout(CLOSE_POLL, &mut *driver)
            .await
            .is_err()
        {
            driver.abort();
        }
    }
}

/// Graceful close: end our substreams (FIN), give the peer `close_timeout`
/// to end its side, send GoAway, then end the driver.
async fn close(
    shared: &Shared,
    session: &SessionShared,
    driver: &mut JoinHandle<Result<(), shoal_yamux::ConnectionError>>,
    closer: io::Closer,
) {
    session.cancel.cancel();
    let deadline = Instant::now() + shared.config.close_timeout;
    while session.control.num_streams() > 0
        && session.control.close_reason().is_none()
        && !driver.is_finished()
        && Instant::now() < deadline
    {
        tokio::time::sleep(CLOSE_POLL).await;
    }
    session.control.close();
    closer.close();
    if tokio::time::timeout_at(deadline.max(Instant::now() + CLOSE_POLL), &mut *driver)
        .await
        .is_err()
    {
        driver.abort();
    }
}
