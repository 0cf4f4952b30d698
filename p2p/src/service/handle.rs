//! The service-level event sink: [`ServiceHandle`], [`ServiceEvent`] and
//! [`ServiceContext`].

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use shoal_identity::PeerId;
use shoal_transport::Multiaddr;
use tokio::sync::mpsc;

use crate::{
    CloseReason, DialId, ListenerId, ProtocolId, ServiceControl, ServiceError, SessionInfo,
};

/// Something that happened at the service level.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ServiceEvent {
    /// A listener is accepting connections on `addr` (the address actually
    /// bound).
    ListenStarted {
        /// The listener.
        id: ListenerId,
        /// Where.
        addr: Multiaddr,
    },
    /// A listener stopped.
    ListenClosed {
        /// The listener.
        id: ListenerId,
        /// Where it listened.
        addr: Multiaddr,
    },
    /// A session is up (secured, multiplexed).
    SessionOpened {
        /// The session.
        session: Arc<SessionInfo>,
        /// The dial that made it, for outbound sessions.
        dial: Option<DialId>,
    },
    /// A session ended; all its protocols were closed before.
    SessionClosed {
        /// The session.
        session: Arc<SessionInfo>,
        /// Why.
        reason: CloseReason,
    },
    /// A protocol substream was negotiated on a session (either side opened
    /// it).
    ProtocolOpened {
        /// The session.
        session: Arc<SessionInfo>,
        /// The protocol.
        protocol: ProtocolId,
        /// The negotiated version.
        version: u32,
    },
    /// A protocol substream closed.
    ProtocolClosed {
        /// The session.
        session: Arc<SessionInfo>,
        /// The protocol.
        protocol: ProtocolId,
    },
}

/// What a [`ServiceHandle`] callback can use.
#[derive(Debug)]
pub struct ServiceContext<'a> {
    pub(crate) control: &'a ServiceControl,
}

impl ServiceContext<'_> {
    /// The control handle (prefer its `try_*` methods in callbacks).
    pub fn control(&self) -> &ServiceControl {
        self.control
    }

    /// Our peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.control.local_peer_id()
    }
}

/// Receives service events and errors, one at a time, on the service task.
/// Callbacks are synchronous and should be quick: while one runs, further
/// reports queue up (bounded).
pub trait ServiceHandle: Send + 'static {
    /// A service event.
    fn handle_event(&mut self, ctx: &mut ServiceContext<'_>, event: ServiceEvent) {
        let _ = (ctx, event);
    }

    /// A failure; see [`ServiceError`] for what was closed.
    fn handle_error(&mut self, ctx: &mut ServiceContext<'_>, error: ServiceError) {
        let _ = ctx;
        tracing::debug!(%error, "unhandled service error");
    }
}

/// Ignores everything (errors are logged at debug level).
impl ServiceHandle for () {}

/// One report of a [`ServiceEvents`] stream.
#[derive(Debug)]
#[non_exhaustive]
pub enum ServiceReport {
    /// A service event.
    Event(ServiceEvent),
    /// A failure; see [`ServiceError`] for what was closed.
    Error(ServiceError),
}

/// Service events and errors as a stream, from
/// [`ServiceBuilder::event_stream`](crate::ServiceBuilder::event_stream).
///
/// It never slows the service down: when its buffer
/// ([`REPORT_QUEUE`](crate::config::REPORT_QUEUE) reports) is full, further
/// reports are dropped and counted ([`ServiceEvents::dropped`]) until it is
/// read again. Ends when the service has stopped.
#[derive(Debug)]
pub struct ServiceEvents {
    rx: mpsc::Receiver<ServiceReport>,
    dropped: Arc<AtomicU64>,
}

/// The [`ServiceHandle`] feeding a [`ServiceEvents`].
struct Forward {
    tx: mpsc::Sender<ServiceReport>,
    dropped: Arc<AtomicU64>,
}

impl Forward {
    fn forward(&self, report: ServiceReport) {
        if self.tx.try_send(report).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl ServiceHandle for Forward {
    fn handle_event(&mut self, _: &mut ServiceContext<'_>, event: ServiceEvent) {
        self.forward(ServiceReport::Event(event));
    }

    fn handle_error(&mut self, _: &mut ServiceContext<'_>, error: ServiceError) {
        self.forward(ServiceReport::Error(error));
    }
}

impl ServiceEvents {
    pub(crate) fn channel(capacity: usize) -> (impl ServiceHandle, ServiceEvents) {
        let (tx, rx) = mpsc::channel(capacity);
        let dropped = Arc::new(AtomicU64::new(0));
        let forward = Forward {
            tx,
            dropped: dropped.clone(),
        };
        (forward, ServiceEvents { rx, dropped })
    }

    /// The next report; `None` once the service has stopped.
    pub async fn recv(&mut self) -> Option<ServiceReport> {
        self.rx.recv().await
    }

    /// Reports dropped because the stream was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl futures::Stream for ServiceEvents {
    type Item = ServiceReport;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<ServiceReport>> {
        self.rx.poll_recv(cx)
    }
}
