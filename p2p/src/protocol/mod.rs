//! Protocol declarations ([`ProtocolMeta`]), handler traits, the handler
//! context, the event-stream alternative and raw streams.

mod context;
mod events;
mod handler;
pub(crate) mod task;
mod timers;

use tokio::sync::mpsc;

pub use context::{ProtocolContext, ProtocolContextMut};
pub use events::{ProtocolEvent, ProtocolEvents, RawStream, RawStreams};
pub use handler::{ServiceProtocol, SessionProtocol};
pub use timers::TooManyTimers;

use crate::{
    ProtocolId,
    config::{DEFAULT_HANDLER_QUEUE, RAW_STREAM_QUEUE},
};

/// Creates per-session handler instances.
pub(crate) type SessionFactory = Box<dyn Fn() -> Box<dyn SessionProtocol> + Send + Sync>;

/// Who consumes a protocol's traffic.
pub(crate) enum Kind {
    /// One [`ServiceProtocol`] for all sessions, on its own task.
    Service(Box<dyn ServiceProtocol>),
    /// One [`SessionProtocol`] per session, on the protocol's task.
    Session(SessionFactory),
    /// The user's [`ProtocolEvents`] stream.
    Events(mpsc::Sender<ProtocolEvent>),
    /// The user's [`RawStreams`] stream: negotiated yamux streams, unframed.
    Raw(mpsc::Sender<RawStream>),
}

/// The declaration of one protocol: id, name, versions, framing limit and
/// who handles it. Built with [`ProtocolMeta::builder`].
///
/// ```
/// use shoal::{ProtocolId, ProtocolMeta, ServiceProtocol};
///
/// struct Echo;
/// impl ServiceProtocol for Echo {}
///
/// let meta = ProtocolMeta::builder(ProtocolId(1), "/echo")
///     .versions([1, 2])
///     .max_frame_size(64 * 1024)
///     .service_handle(Echo);
/// assert_eq!(meta.name(), "/echo");
/// ```
pub struct ProtocolMeta {
    pub(crate) id: ProtocolId,
    pub(crate) name: String,
    pub(crate) versions: Vec<u32>,
    pub(crate) max_frame_size: Option<usize>,
    pub(crate) queue: Option<usize>,
    pub(crate) over_relay: bool,
    pub(crate) kind: Kind,
}

impl std::fmt::Debug for ProtocolMeta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProtocolMeta")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("versions", &self.versions)
            .finish_non_exhaustive()
    }
}

impl ProtocolMeta {
    /// Starts declaring protocol `id` named `name` (what goes on the wire in
    /// negotiation; at most 128 bytes). Defaults: version `[1]`, the
    /// service's `max_frame_size`, the service's handler queue length.
    pub fn builder(id: ProtocolId, name: impl Into<String>) -> ProtocolMetaBuilder {
        ProtocolMetaBuilder {
            id,
            name: name.into(),
            versions: vec![1],
            max_frame_size: None,
            queue: None,
            over_relay: false,
        }
    }

    /// The protocol's id.
    pub fn id(&self) -> ProtocolId {
        self.id
    }

    /// The protocol's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The versions spoken.
    pub fn versions(&self) -> &[u32] {
        &self.versions
    }
}

/// Builder of a [`ProtocolMeta`]; finish it with one of the handler
/// methods, which choose how the protocol's traffic is consumed.
#[derive(Debug)]
pub struct ProtocolMetaBuilder {
    id: ProtocolId,
    name: String,
    versions: Vec<u32>,
    max_frame_size: Option<usize>,
    queue: Option<usize>,
    over_relay: bool,
}

impl ProtocolMetaBuilder {
    /// The versions this side speaks (1 to 16; duplicates are dropped). The
    /// highest version both sides speak is chosen, comparing numerically.
    pub fn versions(mut self, versions: impl IntoIterator<Item = u32>) -> Self {
        self.versions.clear();
        for v in versions {
            if !self.versions.contains(&v) {
                self.versions.push(v);
            }
        }
        self
    }

    /// The largest frame payload sent or accepted on this protocol
    /// (default: the service's
    /// [`max_frame_size`](crate::config::DEFAULT_MAX_FRAME_SIZE)). A peer
    /// declaring a longer frame gets the substream reset.
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.max_frame_size = Some(bytes);
        self
    }

    /// Events queued for this protocol's handler or event stream (default:
    /// the service's [`handler_queue`](crate::config::DEFAULT_HANDLER_QUEUE);
    /// for [`event_stream`](Self::event_stream) and
    /// [`raw_streams`](Self::raw_streams), which create their queue here,
    /// [`DEFAULT_HANDLER_QUEUE`] and [`RAW_STREAM_QUEUE`]).
    pub fn queue(mut self, events: usize) -> Self {
        self.queue = Some(events.max(1));
        self
    }

    /// Whether the protocol may run on a relayed session (one whose
    /// connection goes through a relay: its address has a `/p2p-circuit`
    /// component). Default `false`: a relay forwards few bytes for free,
    /// so only protocols whose traffic is small (chat, mailboxes, the DHT,
    /// identify, ping) say `true`; bulk transfers and gossip meshes wait
    /// for a direct connection. On a relayed session, a protocol that says
    /// `false` is refused both ways with
    /// [`RefuseReason::NotOverRelay`](crate::negotiation::RefuseReason::NotOverRelay).
    pub fn over_relay(mut self, allowed: bool) -> Self {
        self.over_relay = allowed;
        self
    }

    fn finish(self, kind: Kind) -> ProtocolMeta {
        ProtocolMeta {
            id: self.id,
            name: self.name,
            versions: self.versions,
            max_frame_size: self.max_frame_size,
            queue: self.queue,
            over_relay: self.over_relay,
            kind,
        }
    }

    /// Handled by one service-wide instance.
    pub fn service_handle(self, handler: impl ServiceProtocol) -> ProtocolMeta {
        self.finish(Kind::Service(Box::new(handler)))
    }

    /// Handled by one instance per session, made by `factory` when the
    /// protocol opens on a session.
    pub fn session_handle<H, F>(self, factory: F) -> ProtocolMeta
    where
        H: SessionProtocol,
        F: Fn() -> H + Send + Sync + 'static,
    {
        self.finish(Kind::Session(Box::new(move || Box::new(factory()))))
    }

    /// Handled by the caller, who consumes the returned stream of
    /// [`ProtocolEvent`]s and sends through
    /// [`ServiceControl`](crate::ServiceControl). Not consuming it stops the
    /// protocol's substreams from reading (backpressure), nothing else.
    pub fn event_stream(self) -> (ProtocolMeta, ProtocolEvents) {
        let (tx, rx) = mpsc::channel(self.queue.unwrap_or(DEFAULT_HANDLER_QUEUE));
        (self.finish(Kind::Events(tx)), ProtocolEvents::new(rx))
    }

    /// The simple path: no framing, no handler. Each negotiated substream is
    /// handed over as a [`RawStream`] (`AsyncRead + AsyncWrite`): inbound
    /// ones through the returned [`RawStreams`], outbound ones from
    /// [`ServiceControl::open_raw_stream`](crate::ServiceControl::open_raw_stream).
    /// Any number of raw streams may be open per session.
    pub fn raw_streams(self) -> (ProtocolMeta, RawStreams) {
        let (tx, rx) = mpsc::channel(self.queue.unwrap_or(RAW_STREAM_QUEUE));
        (self.finish(Kind::Raw(tx)), RawStreams::new(rx))
    }
}
