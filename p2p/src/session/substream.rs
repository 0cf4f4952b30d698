//! Protocol substreams: negotiation in both directions, then one task per
//! (session, protocol) that reads frames into the protocol's event queue and
//! writes frames from the slot's send queue.
//!
//! A full event queue stops this substream's reads only; yamux flow control
//! then pushes back on this stream only.

use std::sync::Arc;

use bytes::Bytes;
use shoal_yamux::Stream;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    sync::{OwnedSemaphorePermit, mpsc, oneshot},
    time::Instant,
};

use super::{ActiveGuard, SessionShared};
use crate::{
    ControlError, ProtocolError, ProtocolEvent, ProtocolId, RawStream, ServiceError, ServiceEvent,
    SessionInfo,
    config::MAX_QUEUED_FRAMES_PER_STREAM,
    negotiation::{self, Message, NegotiationError, RefuseReason, select_version},
    service::shared::{ProtocolEntry, Shared},
};

/// Frames coalesced into one write, at most.
const WRITE_BATCH: usize = 64 * 1024;

/// One queued frame and the send-budget bytes it holds until written.
#[derive(Debug)]
pub(crate) struct OutFrame {
    pub(crate) data: Bytes,
    pub(crate) _permit: OwnedSemaphorePermit,
}

/// Bytes of send budget a frame of `len` bytes costs: payload + prefix,
/// capped at the whole budget so a frame of the maximum size still fits.
pub(crate) fn frame_cost(len: usize, budget: usize) -> u32 {
    u32::try_from(len.saturating_add(4).min(budget)).unwrap_or(u32::MAX)
}

/// Starts opening `protocol` on `session`; the reply (if any) gets the
/// negotiated version.
pub(crate) fn spawn_open(
    shared: &Arc<Shared>,
    session: &Arc<SessionShared>,
    protocol: ProtocolId,
    reply: Option<oneshot::Sender<Result<u32, ControlError>>>,
) -> Result<(), ControlError> {
    let entry = shared
        .protocol(protocol)
        .ok_or(ControlError::UnknownProtocol(protocol))?;
    if entry.is_raw() {
        return Err(ControlError::WrongKind(protocol));
    }
    if session.is_closing() {
        return Err(ControlError::NoSession(session.info.id));
    }
    let owner = shared.next_id();
    if !session.begin_open(protocol, owner) {
        return Err(ControlError::AlreadyOpen(session.info.id, protocol));
    }
    let guard = ActiveGuard::new(session);
    let (shared, session) = (shared.clone(), session.clone());
    shared.clone().tasks.spawn(async move {
        let Some(entry) = shared.protocol(protocol) else {
            return;
        };
        let (stream, version) = match negotiate_outbound(&shared, &session, entry).await {
            Ok(ok) => ok,
            Err(error) => {
                session.release(protocol, owner);
                if let Some(reply) = reply {
                    let _ = reply.send(Err(error.clone()));
                }
                report_open_failure(&shared, &session, entry, error).await;
                return;
            }
        };
        let Some(events) = entry.events() else {
            session.release(protocol, owner);
            if let Some(reply) = reply {
                let _ = reply.send(Err(ControlError::ShuttingDown));
            }
            return;
        };
        let (tx, rx) = mpsc::channel(MAX_QUEUED_FRAMES_PER_STREAM);
        if !session.finish_open(protocol, owner, version, tx) {
            // The peer's simultaneous open won; ours just ends.
            if let Some(reply) = reply {
                let _ = reply.send(Err(ControlError::AlreadyOpen(session.info.id, protocol)));
            }
            return;
        }
        if let Some(reply) = reply {
            let _ = reply.send(Ok(version));
        }
        let sub = Substream {
            shared: &shared,
            session: &session,
            entry,
            owner,
            version,
        };
        sub.run(stream, rx, events).await;
        drop(guard);
    });
    Ok(())
}

async fn report_open_failure(
    shared: &Shared,
    session: &SessionShared,
    entry: &ProtocolEntry,
    error: ControlError,
) {
    let error = match error {
        // A lost simultaneous-open race or a closing session is no failure.
        ControlError::Negotiation(NegotiationError::Refused(RefuseReason::AlreadyOpen))
        | ControlError::ShuttingDown => return,
        ControlError::Negotiation(e) => e,
        ControlError::Open(e) => NegotiationError::Io(Arc::new(std::io::Error::other(e))),
        other => {
            tracing::debug!(error = %other, "protocol open failed");
            return;
        }
    };
    shared
        .report_error(ServiceError::Negotiation {
            session: session.info.id,
            peer: session.info.peer,
            protocol: entry.name.clone(),
            error,
        })
        .await;
}

/// Opens a yamux stream and negotiates `entry` on it, under the
/// negotiation timeout and the session's cancellation.
pub(crate) async fn negotiate_outbound(
    shared: &Shared,
    session: &SessionShared,
    entry: &ProtocolEntry,
) -> Result<(Stream, u32), ControlError> {
    if session.info.is_relayed() && !entry.over_relay {
        return Err(ControlError::Negotiation(NegotiationError::Refused(
            RefuseReason::NotOverRelay,
        )));
    }
    let mut stream = session
        .control
        .open_stream()
        .await
        .map_err(ControlError::Open)?;
    let propose = Message::Propose {
        name: entry.name.clone(),
        versions: entry.versions.clone(),
    };
    let timeout = shared.config.negotiation_timeout;
    let exchange = async {
        negotiation::write_message(&mut stream, &propose).await?;
        match negotiation::read_message(&mut stream).await? {
            Message::Accept { version } if entry.versions.contains(&version) => Ok(version),
            Message::Accept { version } => Err(NegotiationError::VersionNotProposed(version)),
            Message::Refuse { reason } => Err(NegotiationError::Refused(reason)),
            Message::Propose { .. } => Err(NegotiationError::Unexpected("a proposal as answer")),
        }
    };
    let result = tokio::select! {
        () = session.cancel.cancelled() => Err(ControlError::ShuttingDown),
        r = tokio::time::timeout(timeout, exchange) => match r {
            Ok(Ok(version)) => Ok(version),
            Ok(Err(e)) => Err(ControlError::Negotiation(e)),
            Err(_) => Err(ControlError::Negotiation(NegotiationError::Timeout(timeout))),
        },
    };
    match result {
        Ok(version) => Ok((stream, version)),
        Err(e) => {
            let _ = stream.reset();
            Err(e)
        }
    }
}

/// Handles a substream the peer opened.
pub(crate) fn spawn_inbound(shared: &Arc<Shared>, session: &Arc<SessionShared>, stream: Stream) {
    let guard = ActiveGuard::new(session);
    let (shared, session) = (shared.clone(), session.clone());
    shared.clone().tasks.spawn(async move {
        inbound(&shared, &session, stream, guard).await;
    });
}

async fn refuse(stream: &mut Stream, reason: RefuseReason) {
    let _ = negotiation::write_message(stream, &Message::Refuse { reason }).await;
    let _ = stream.shutdown().await;
}

async fn inbound(shared: &Shared, session: &SessionShared, mut stream: Stream, guard: ActiveGuard) {
    let timeout = shared.config.negotiation_timeout;
    let read = tokio::select! {
        () = session.cancel.cancelled() => return,
        r = tokio::time::timeout(timeout, negotiation::read_message(&mut stream)) => r,
    };
    let (name, versions) = match read {
        Ok(Ok(Message::Propose { name, versions })) => (name, versions),
        other => {
            let error = match other {
                Ok(Ok(_)) => NegotiationError::Unexpected("an answer as the first message"),
                Ok(Err(e)) => e,
                Err(_) => NegotiationError::Timeout(timeout),
            };
            if matches!(error, NegotiationError::UnsupportedFormat(_)) {
                refuse(&mut stream, RefuseReason::UnsupportedFormat).await;
            } else {
                let _ = stream.reset();
            }
            if !matches!(error, NegotiationError::Io(_)) || !session.is_closing() {
                shared
                    .report_error(ServiceError::Negotiation {
                        session: session.info.id,
                        peer: session.info.peer,
                        protocol: String::new(),
                        error,
                    })
                    .await;
            }
            return;
        }
    };
    let Some(entry) = shared.protocol_by_name(&name) else {
        tracing::debug!(session = %session.info.id, protocol = %name, "refused unknown protocol");
        return refuse(&mut stream, RefuseReason::UnknownProtocol).await;
    };
    if session.info.is_relayed() && !entry.over_relay {
        tracing::debug!(session = %session.info.id, protocol = %name, "refused over a relay");
        return refuse(&mut stream, RefuseReason::NotOverRelay).await;
    }
    let Some(version) = select_version(&entry.versions, &versions) else {
        tracing::debug!(session = %session.info.id, protocol = %name, ?versions, "no common version");
        return refuse(&mut stream, RefuseReason::NoCommonVersion).await;
    };
    if entry.is_raw() {
        let permit = match entry.raw().map(|tx| tx.try_reserve_owned()) {
            Some(Ok(permit)) => permit,
            _ => return refuse(&mut stream, RefuseReason::Unavailable).await,
        };
        if negotiation::write_message(&mut stream, &Message::Accept { version })
            .await
            .is_ok()
        {
            permit.send(RawStream::new(
                session.info.clone(),
                entry.id,
                version,
                stream,
                guard,
            ));
        }
        return;
    }
    let Some(events) = entry.events() else {
        return refuse(&mut stream, RefuseReason::Unavailable).await;
    };
    let owner = shared.next_id();
    let (tx, rx) = mpsc::channel(MAX_QUEUED_FRAMES_PER_STREAM);
    if let Err(reason) = session.accept_inbound(entry.id, owner, version, tx) {
        return refuse(&mut stream, reason).await;
    }
    if negotiation::write_message(&mut stream, &Message::Accept { version })
        .await
        .is_err()
    {
        session.release(entry.id, owner);
        return;
    }
    let sub = Substream {
        shared,
        session,
        entry,
        owner,
        version,
    };
    sub.run(stream, rx, events).await;
    drop(guard);
}

/// How a substream ended.
enum End {
    /// The session is closing.
    Cancelled,
    /// We closed the protocol (its send queue was dropped).
    Local,
    /// The peer finished the stream.
    Remote,
    /// The handler's queue is gone.
    HandlerGone,
    /// Something broke.
    Error(ProtocolError),
}

fn io_error(e: std::io::Error) -> End {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        End::Error(ProtocolError::Truncated)
    } else {
        End::Error(ProtocolError::Io(Arc::new(e)))
    }
}

struct Substream<'a> {
    shared: &'a Shared,
    session: &'a SessionShared,
    entry: &'a ProtocolEntry,
    owner: u64,
    version: u32,
}

impl Substream<'_> {
    async fn run(
        self,
        stream: Stream,
        rx: mpsc::Receiver<OutFrame>,
        events: mpsc::Sender<ProtocolEvent>,
    ) {
        let info = self.session.info.clone();
        let protocol = self.entry.id;
        let connected = ProtocolEvent::Connected {
            session: info.clone(),
            version: self.version,
        };
        let delivered = tokio::select! {
            () = self.session.cancel.cancelled() => false,
            r = events.send(connected) => r.is_ok(),
        };
        if !delivered {
            self.session.release(protocol, self.owner);
            return;
        }
        self.shared
            .report_event(ServiceEvent::ProtocolOpened {
                session: info.clone(),
                protocol,
                version: self.version,
            })
            .await;

        let (mut r, mut w) = tokio::io::split(stream);
        let end = tokio::select! {
            biased;
            () = self.session.cancel.cancelled() => End::Cancelled,
            end = read_loop(&mut r, self.entry.max_frame_size, &info, &events) => end,
            end = write_loop(&mut w, rx) => end,
        };
        let mut stream = r.unsplit(w);
        self.session.release(protocol, self.owner);
        match end {
            End::Error(_) => {
                let _ = stream.reset();
            }
            // We end it: half-close, then take (and drop) what the peer still
            // sends until it ends its side, so the stream closes cleanly on
            // both ends instead of being reset for data arriving after the
            // drop. Bounded by the close timeout.
            End::Cancelled | End::Local | End::HandlerGone => {
                let linger = self.shared.config.close_timeout;
                let _ = tokio::time::timeout(linger, finish_and_drain(&mut stream)).await;
            }
            End::Remote => {}
        }
        drop(stream);

        // Deliver the disconnect, but never wait forever on a consumer that
        // stopped reading.
        let deadline = Instant::now() + self.shared.config.close_timeout;
        let disconnected = ProtocolEvent::Disconnected {
            session: info.clone(),
        };
        if tokio::time::timeout_at(deadline, events.send(disconnected))
            .await
            .is_err()
        {
            tracing::warn!(session = %info.id, %protocol, "protocol consumer did not take the disconnect event");
        }
        self.shared
            .report_event(ServiceEvent::ProtocolClosed {
                session: info.clone(),
                protocol,
            })
            .await;
        let error = match end {
            End::Error(ProtocolError::Io(_)) if self.session.is_closing() => None,
            End::Error(e) => Some(ServiceError::Protocol {
                session: info.id,
                peer: info.peer,
                protocol,
                error: e,
            }),
            End::HandlerGone if !self.session.is_closing() => {
                Some(ServiceError::HandlerGone(protocol))
            }
            _ => None,
        };
        if let Some(error) = error {
            self.shared.report_error(error).await;
        }
    }
}

/// Half-closes `stream` and reads it to its end, discarding the bytes.
async fn finish_and_drain(stream: &mut Stream) {
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 4096];
    loop {
        match stream.read(&mut sink).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

async fn read_loop<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
    info: &Arc<SessionInfo>,
    events: &mpsc::Sender<ProtocolEvent>,
) -> End {
    loop {
        let mut header = [0u8; 4];
        let mut got = 0;
        while got < header.len() {
            match r.read(&mut header[got..]).await {
                Ok(0) if got == 0 => return End::Remote,
                Ok(0) => return End::Error(ProtocolError::Truncated),
                Ok(n) => got += n,
                Err(e) => return io_error(e),
            }
        }
        let len = u32::from_be_bytes(header) as usize;
        if len > max {
            return End::Error(ProtocolError::FrameTooLarge { len, max });
        }
        let mut body = vec![0u8; len];
        if let Err(e) = r.read_exact(&mut body).await {
            return io_error(e);
        }
        let event = ProtocolEvent::Received {
            session: info.clone(),
            data: Bytes::from(body),
        };
        if events.send(event).await.is_err() {
            return End::HandlerGone;
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(w: &mut W, mut rx: mpsc::Receiver<OutFrame>) -> End {
    let mut batch: Vec<u8> = Vec::new();
    let mut held: Vec<OutFrame> = Vec::new();
    while let Some(frame) = rx.recv().await {
        held.push(frame);
        let mut size: usize = held[0].data.len() + 4;
        while size < WRITE_BATCH {
            match rx.try_recv() {
                Ok(frame) => {
                    size += frame.data.len() + 4;
                    held.push(frame);
                }
                Err(_) => break,
            }
        }
        for frame in &held {
            let len = frame.data.len() as u32;
            if frame.data.len() > WRITE_BATCH / 4 {
                // Large payload: write what is batched, then it, uncopied.
                batch.extend_from_slice(&len.to_be_bytes());
                if let Err(e) = w.write_all(&batch).await {
                    return io_error(e);
                }
                batch.clear();
                if let Err(e) = w.write_all(&frame.data).await {
                    return io_error(e);
                }
            } else {
                batch.extend_from_slice(&len.to_be_bytes());
                batch.extend_from_slice(&frame.data);
            }
        }
        if !batch.is_empty()
            && let Err(e) = w.write_all(&batch).await
        {
            return io_error(e);
        }
        // Written: release the send budget, and the batch buffer so an idle
        // substream holds no memory.
        held = Vec::new();
        batch = Vec::new();
    }
    let _ = w.shutdown().await;
    End::Local
}
