//! The relay's side of `/shoal/relay/hop`: reservations held on open
//! streams, and circuits bridged byte for byte under the [`Limits`].
//!
//! ```text
//!  hop stream ─▶ read one request (request_timeout)
//!    Reserve ─▶ ledger.reserve ─▶ Status{ttl, limit}; the stream stays
//!               open and carries renewals; its end ends the reservation
//!    Connect(dst) ─▶ ledger.open_circuit ─▶ stop stream to dst's session
//!               ─▶ Incoming{src, limit} ─▶ dst's Status ─▶ Status to src
//!               ─▶ bridge both streams until EOF, the byte limit or the
//!                  time limit
//! ```
//! The relay reads nothing of what it bridges: the two peers run their
//! own secure handshake through it.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use shoal::{ProtocolId, RawStream, RawStreams, ServiceControl, SessionId};
use shoal_identity::PeerId;
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt},
    sync::Semaphore,
};

use crate::{
    limits::{Ledger, Limits, Network},
    protocol::{HopMessage, Limit, Status, StatusCode, StopMessage},
};

/// Counters of a relay, for monitoring and benches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Reservations held now.
    pub reservations: usize,
    /// Circuits open now.
    pub circuits: usize,
    /// Circuits opened since the start.
    pub circuits_opened: u64,
    /// Requests refused (limits, no reservation, unreachable peer, bad
    /// requests) since the start.
    pub refused: u64,
    /// Bytes forwarded through circuits since the start (both directions).
    pub bytes_forwarded: u64,
}

#[derive(Debug)]
struct State {
    ledger: Ledger,
    /// The session each reserved peer's reservation stream is on.
    sessions: HashMap<PeerId, SessionId>,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    control: ServiceControl,
    stop: ProtocolId,
    pending: Arc<Semaphore>,
    opened: AtomicU64,
    refused: AtomicU64,
    forwarded: AtomicU64,
}

impl Inner {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn limits(&self) -> Limits {
        self.state().ledger.limits().clone()
    }
}

/// A running relay: look at its [`ServerStats`].
#[derive(Debug, Clone)]
pub struct ServerHandle {
    inner: Arc<Inner>,
}

impl ServerHandle {
    /// The relay's counters now.
    pub fn stats(&self) -> ServerStats {
        let (reservations, circuits) = {
            let s = self.inner.state();
            (s.ledger.reservations(), s.ledger.circuits())
        };
        ServerStats {
            reservations,
            circuits,
            circuits_opened: self.inner.opened.load(Ordering::Relaxed),
            refused: self.inner.refused.load(Ordering::Relaxed),
            bytes_forwarded: self.inner.forwarded.load(Ordering::Relaxed),
        }
    }
}

/// Serves the hop streams of `streams` until the service stops: the relay.
/// `stop` is the id the service registered `/shoal/relay/stop` under.
pub(crate) fn spawn(
    mut streams: RawStreams,
    control: ServiceControl,
    stop: ProtocolId,
    limits: Limits,
) -> ServerHandle {
    let inner = Arc::new(Inner {
        pending: Arc::new(Semaphore::new(limits.max_pending.max(1))),
        state: Mutex::new(State {
            ledger: Ledger::new(limits),
            sessions: HashMap::new(),
        }),
        control,
        stop,
        opened: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        forwarded: AtomicU64::new(0),
    });
    let handle = ServerHandle {
        inner: inner.clone(),
    };
    tokio::spawn(async move {
        while let Some(stream) = streams.accept().await {
            let Ok(permit) = inner.pending.clone().try_acquire_owned() else {
                inner.refused.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(refuse(stream, StatusCode::ResourceLimit));
                continue;
            };
            let inner = inner.clone();
            tokio::spawn(async move {
                serve(&inner, stream, permit).await;
            });
        }
    });
    handle
}

async fn refuse(mut stream: RawStream, code: StatusCode) {
    let _ = HopMessage::Status(Status::new(code))
        .write(&mut stream)
        .await;
    let _ = stream.shutdown().await;
}

/// The /24 or /48 a session's remote address is in.
fn network_of(stream: &RawStream) -> Network {
    stream
        .session()
        .remote_addr
        .direct_ip()
        .map(shoal_transport::subnet_of)
}

async fn serve(
    inner: &Arc<Inner>,
    mut stream: RawStream,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let timeout = inner.limits().request_timeout;
    let request = match tokio::time::timeout(timeout, HopMessage::read(&mut stream)).await {
        Ok(Ok(request)) => request,
        Ok(Err(error)) => {
            tracing::debug!(peer = %stream.session().peer, %error, "bad hop request");
            inner.refused.fetch_add(1, Ordering::Relaxed);
            return refuse(stream, StatusCode::Malformed).await;
        }
        Err(_) => {
            inner.refused.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    match request {
        HopMessage::Reserve => {
            drop(permit);
            hold_reservation(inner, stream).await;
        }
        HopMessage::Connect(dst) => connect(inner, stream, dst, permit).await,
        HopMessage::Status(_) => {
            inner.refused.fetch_add(1, Ordering::Relaxed);
            refuse(stream, StatusCode::Malformed).await;
        }
    }
}

/// Grants a reservation, then keeps the stream: each further `Reserve`
/// renews it, and its end (or anything else on it) ends the reservation.
async fn hold_reservation(inner: &Arc<Inner>, mut stream: RawStream) {
    let peer = stream.session().peer;
    let session = stream.session().id;
    let network = network_of(&stream);
    let mut grant = None;
    loop {
        let answer = {
            let mut state = inner.state();
            let result = state.ledger.reserve(peer, network, Instant::now());
            if let Ok(g) = result {
                state.sessions.insert(peer, session);
                grant = Some(g.id);
            }
            let limits = state.ledger.limits();
            match result {
                Ok(_) => Status {
                    code: StatusCode::Ok,
                    ttl_secs: u32::try_from(limits.reservation_ttl.as_secs()).unwrap_or(u32::MAX),
                    limit: Some(limits.circuit_limit()),
                },
                Err(code) => Status::new(code),
            }
        };
        if answer.code != StatusCode::Ok {
            inner.refused.fetch_add(1, Ordering::Relaxed);
        }
        let refused = answer.code != StatusCode::Ok;
        if HopMessage::Status(answer).write(&mut stream).await.is_err() || refused {
            break;
        }
        // Renewals come well within the lifetime; silence past it ends
        // the reservation like a closed stream.
        let ttl = inner.limits().reservation_ttl;
        match tokio::time::timeout(ttl, HopMessage::read(&mut stream)).await {
            Ok(Ok(HopMessage::Reserve)) => continue,
            _ => break,
        }
    }
    if let Some(id) = grant {
        let mut state = inner.state();
        state.ledger.release(&peer, id);
        if !state.ledger.is_reserved(&peer, Instant::now())
            && state.sessions.get(&peer) == Some(&session)
        {
            state.sessions.remove(&peer);
        }
    }
    let _ = stream.shutdown().await;
}

async fn connect(
    inner: &Arc<Inner>,
    mut src: RawStream,
    dst: PeerId,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let src_peer = src.session().peer;
    let network = network_of(&src);
    let opened = {
        let mut state = inner.state();
        let session = state.sessions.get(&dst).copied();
        state
            .ledger
            .open_circuit(src_peer, network, dst, Instant::now())
            .and_then(|ticket| match session {
                Some(s) => Ok((ticket, s)),
                None => {
                    state.ledger.close_circuit(ticket);
                    Err(StatusCode::NoReservation)
                }
            })
    };
    let (ticket, session) = match opened {
        Ok(opened) => opened,
        Err(code) => {
            inner.refused.fetch_add(1, Ordering::Relaxed);
            return refuse(src, code).await;
        }
    };
    let limits = inner.limits();
    let limit = limits.circuit_limit();
    let reached = tokio::time::timeout(limits.request_timeout, async {
        let mut dst_stream = inner
            .control
            .open_raw_stream(session, inner.stop)
            .await
            .ok()?;
        StopMessage::Incoming {
            peer: src_peer,
            limit: Some(limit),
        }
        .write(&mut dst_stream)
        .await
        .ok()?;
        match StopMessage::read(&mut dst_stream).await {
            Ok(StopMessage::Status(s)) if s.code == StatusCode::Ok => Some(dst_stream),
            _ => None,
        }
    })
    .await
    .ok()
    .flatten();
    let Some(dst_stream) = reached else {
        inner.state().ledger.close_circuit(ticket);
        inner.refused.fetch_add(1, Ordering::Relaxed);
        return refuse(src, StatusCode::ConnectionFailed).await;
    };
    let ok = Status {
        code: StatusCode::Ok,
        ttl_secs: 0,
        limit: Some(limit),
    };
    if HopMessage::Status(ok).write(&mut src).await.is_ok() {
        drop(permit);
        inner.opened.fetch_add(1, Ordering::Relaxed);
        bridge(src, dst_stream, limit, &inner.forwarded).await;
    }
    inner.state().ledger.close_circuit(ticket);
}

/// Copies both ways until both ends finished, either direction reached
/// `limit.bytes`, or `limit.secs` passed, counting every byte in
/// `forwarded` as it goes.
pub(crate) async fn bridge<A, B>(a: A, b: B, limit: Limit, forwarded: &AtomicU64)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut ar, mut aw) = tokio::io::split(a);
    let (mut br, mut bw) = tokio::io::split(b);
    let forward = async {
        tokio::try_join!(
            copy_limited(&mut ar, &mut bw, limit.bytes, forwarded),
            copy_limited(&mut br, &mut aw, limit.bytes, forwarded),
        )
    };
    let duration = std::time::Duration::from_secs(u64::from(limit.secs));
    let _ = tokio::time::timeout(duration, forward).await;
}

/// Copies until end of stream (then finishes the writer) or until `max`
/// bytes went through (an error, so the other direction stops too).
async fn copy_limited<R, W>(
    r: &mut R,
    w: &mut W,
    max: u64,
    forwarded: &AtomicU64,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 16 * 1024];
    let mut copied = 0u64;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            w.shutdown().await?;
            return Ok(());
        }
        copied += n as u64;
        if copied > max {
            return Err(std::io::Error::other("circuit byte limit reached"));
        }
        w.write_all(&buf[..n]).await?;
        w.flush().await?;
        forwarded.fetch_add(n as u64, Ordering::Relaxed);
    }
}
