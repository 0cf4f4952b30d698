//! Protocol events (the event-stream alternative to handler callbacks) and
//! raw streams.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use futures::Stream;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::mpsc,
};

use crate::{DialError, PeerId, ProtocolId, SessionInfo, session::ActiveGuard};

/// What happens on a protocol, in order per session: `Connected`, any number
/// of `Received`, `Disconnected`; and, outside any session, `DialFailed`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ProtocolEvent {
    /// The protocol opened on a session.
    Connected {
        /// The session.
        session: Arc<SessionInfo>,
        /// The negotiated version.
        version: u32,
    },
    /// A frame arrived.
    Received {
        /// The session.
        session: Arc<SessionInfo>,
        /// The frame payload.
        data: Bytes,
    },
    /// The protocol closed on a session.
    Disconnected {
        /// The session.
        session: Arc<SessionInfo>,
    },
    /// Frames of this protocol waited for `peer`
    /// ([`ServiceControl::try_send_to_peer`](crate::ServiceControl::try_send_to_peer))
    /// and the peer could not be reached: they were dropped.
    DialFailed {
        /// The peer.
        peer: PeerId,
        /// Why (the last address's failure, or the backoff).
        error: DialError,
    },
}

/// The events of a protocol declared with
/// [`ProtocolMetaBuilder::event_stream`](crate::ProtocolMetaBuilder::event_stream).
/// Ends when the service has stopped.
#[derive(Debug)]
pub struct ProtocolEvents {
    rx: mpsc::Receiver<ProtocolEvent>,
}

impl ProtocolEvents {
    pub(crate) fn new(rx: mpsc::Receiver<ProtocolEvent>) -> ProtocolEvents {
        ProtocolEvents { rx }
    }

    /// The next event; `None` once the service has stopped.
    pub async fn recv(&mut self) -> Option<ProtocolEvent> {
        self.rx.recv().await
    }

    /// The next event if one is queued.
    pub fn try_recv(&mut self) -> Option<ProtocolEvent> {
        self.rx.try_recv().ok()
    }
}

impl Stream for ProtocolEvents {
    type Item = ProtocolEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ProtocolEvent>> {
        self.rx.poll_recv(cx)
    }
}

/// A negotiated substream of a raw protocol: plain bytes both ways, no
/// framing. Dropping it finishes the stream (FIN); [`RawStream::reset`]
/// aborts it.
pub struct RawStream {
    session: Arc<SessionInfo>,
    protocol: ProtocolId,
    version: u32,
    stream: shoal_yamux::Stream,
    _active: ActiveGuard,
}

impl std::fmt::Debug for RawStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawStream")
            .field("session", &self.session.id)
            .field("protocol", &self.protocol)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl RawStream {
    pub(crate) fn new(
        session: Arc<SessionInfo>,
        protocol: ProtocolId,
        version: u32,
        stream: shoal_yamux::Stream,
        active: ActiveGuard,
    ) -> RawStream {
        RawStream {
            session,
            protocol,
            version,
            stream,
            _active: active,
        }
    }

    /// The session it belongs to.
    pub fn session(&self) -> &Arc<SessionInfo> {
        &self.session
    }

    /// Its protocol.
    pub fn protocol(&self) -> ProtocolId {
        self.protocol
    }

    /// The negotiated version.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Aborts both directions (yamux RST).
    pub fn reset(&mut self) {
        let _ = self.stream.reset();
    }
}

impl AsyncRead for RawStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for RawStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Inbound streams of a protocol declared with
/// [`ProtocolMetaBuilder::raw_streams`](crate::ProtocolMetaBuilder::raw_streams).
/// When it is full, further inbound streams are refused
/// ([`RefuseReason::Unavailable`](crate::negotiation::RefuseReason::Unavailable)).
#[derive(Debug)]
pub struct RawStreams {
    rx: mpsc::Receiver<RawStream>,
}

impl RawStreams {
    pub(crate) fn new(rx: mpsc::Receiver<RawStream>) -> RawStreams {
        RawStreams { rx }
    }

    /// The next inbound stream; `None` once the service has stopped.
    pub async fn accept(&mut self) -> Option<RawStream> {
        self.rx.recv().await
    }
}

impl Stream for RawStreams {
    type Item = RawStream;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<RawStream>> {
        self.rx.poll_recv(cx)
    }
}
