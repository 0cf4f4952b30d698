//! The thin tokio layer: a driver future moving bytes between a transport
//! and the [`Connection`] core, and a cloneable [`Control`] handle.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Sleep;

use crate::connection::{Connection, Event};
use crate::error::{ConnectionError, OpenError};
use crate::stream::Stream;
use crate::{Config, Mode, StreamId};

/// Largest read from the transport. Large reads keep syscalls (and
/// decryption calls of an encrypted transport below) few.
const READ_CHUNK: usize = 64 * 1024;

/// First size of the read buffer. It doubles (up to [`READ_CHUNK`]) each
/// time a read fills it, so idle connections stay small and busy ones soon
/// read in large chunks.
const FIRST_READ_CHUNK: usize = 8 * 1024;

/// A read buffer that grew past [`FIRST_READ_CHUNK`] is freed once the
/// transport has had nothing to read and no read filled the buffer for this
/// long; a buffer of the first size is freed whenever the transport has
/// nothing to read. An idle connection thus holds no read buffer.
const RELEASE_READ_BUFFER_AFTER: Duration = Duration::from_secs(1);

/// Loop iterations per `poll` before yielding to other tasks.
const POLL_BUDGET: usize = 32;

/// How long a closed connection may spend flushing its last frames (the
/// GoAway) to a peer that does not read, and then waiting for the peer to
/// close its side. A peer that answered our GoAway closes within one round
/// trip; this bounds the wait for one that never does.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// The current time on tokio's clock (so paused test time applies).
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Wakers of one stream handle.
#[derive(Debug, Default)]
pub(crate) struct StreamWakers {
    pub(crate) read: Option<Waker>,
    pub(crate) write: Option<Waker>,
}

impl StreamWakers {
    fn wake_all(&mut self) {
        for waker in [self.read.take(), self.write.take()].into_iter().flatten() {
            waker.wake();
        }
    }
}

/// State shared by the driver, the control handles and the streams.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) conn: Connection,
    pub(crate) wakers: HashMap<StreamId, StreamWakers>,
    driver: Option<Waker>,
}

impl Shared {
    /// Wakes the driver so it transmits what the last command queued.
    pub(crate) fn wake_driver(&mut self) {
        if let Some(w) = &self.driver {
            w.wake_by_ref();
        }
    }

    /// Turns queued core events into wake-ups.
    fn dispatch_events(&mut self, accept: &Notify) {
        while let Some(event) = self.conn.poll_event() {
            match event {
                Event::InboundStream(_) => accept.notify_waiters(),
                Event::Readable(id) | Event::Finished(id) => {
                    if let Some(w) = self.wakers.get_mut(&id).and_then(|w| w.read.take()) {
                        w.wake();
                    }
                }
                Event::Writable(id) => {
                    if let Some(w) = self.wakers.get_mut(&id).and_then(|w| w.write.take()) {
                        w.wake();
                    }
                }
                Event::Reset(id) => {
                    if let Some(w) = self.wakers.get_mut(&id) {
                        w.wake_all();
                    }
                }
                // accept_stream ends once the queue is empty.
                Event::GoAwayReceived(_) => accept.notify_waiters(),
                Event::Closed(_) => {
                    self.wakers.values_mut().for_each(StreamWakers::wake_all);
                    accept.notify_waiters();
                }
            }
        }
    }
}

/// The lock and the accept notifier.
#[derive(Debug)]
pub(crate) struct Inner {
    shared: Mutex<Shared>,
    accept: Notify,
}

impl Inner {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Shared> {
        // Nothing in `Shared` is left half-updated by a panic of another
        // holder that matters more than tearing the connection down.
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A cloneable handle to open and accept streams of one connection.
#[derive(Clone)]
pub struct Control {
    inner: Arc<Inner>,
}

impl fmt::Debug for Control {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Control").finish_non_exhaustive()
    }
}

impl Control {
    /// Opens a stream. Fails at once (without waiting) when the stream
    /// limit is reached, a GoAway was exchanged or the connection closed.
    pub async fn open_stream(&self) -> Result<Stream, OpenError> {
        let mut s = self.inner.lock();
        let id = s.conn.open_stream()?;
        s.wakers.insert(id, StreamWakers::default());
        s.wake_driver();
        Ok(Stream::new(id, self.inner.clone()))
    }

    /// Waits for the next inbound stream. Fails with the connection's close
    /// reason, or with [`ConnectionError::Closed`] once the remote sent
    /// GoAway and every stream it opened before was accepted.
    pub async fn accept_stream(&self) -> Result<Stream, ConnectionError> {
        loop {
            let mut notified = pin!(self.inner.accept.notified());
            notified.as_mut().enable();
            {
                let mut s = self.inner.lock();
                if let Some(id) = s.conn.accept_stream() {
                    s.wakers.insert(id, StreamWakers::default());
                    s.wake_driver();
                    return Ok(Stream::new(id, self.inner.clone()));
                }
                if let Some(e) = s.conn.close_reason() {
                    return Err(e.clone());
                }
                if s.conn.go_away_received() {
                    return Err(ConnectionError::Closed);
                }
            }
            notified.await;
        }
    }

    /// Closes the connection gracefully: sends GoAway(normal), so no new
    /// streams either way; existing streams go on until they end or
    /// [`Config::close_timeout`] resets them. Then the driver flushes, shuts
    /// the transport's write side down and completes when the remote closed
    /// its side too (within one round trip for a remote that answers
    /// GoAway, at most 2 s after ours otherwise).
    pub fn go_away(&self) {
        let mut s = self.inner.lock();
        s.conn.go_away(now());
        s.wake_driver();
    }

    /// Alias of [`go_away`](Self::go_away).
    pub fn close(&self) {
        self.go_away();
    }

    /// Live streams of the connection.
    pub fn num_streams(&self) -> usize {
        self.inner.lock().conn.num_streams()
    }

    /// The last measured round-trip time.
    pub fn rtt(&self) -> Option<Duration> {
        self.inner.lock().conn.rtt()
    }

    /// Why the connection closed, once it has.
    pub fn close_reason(&self) -> Option<ConnectionError> {
        self.inner.lock().conn.close_reason().cloned()
    }
}

/// The future that runs a connection: spawn it.
///
/// It completes with `Ok(())` after a graceful close and with the
/// [`ConnectionError`] otherwise. Each wake-up follows one discipline: wake
/// streams for queued events, flush outbound frames, run timers, then read
/// from the transport. Reading continues while a write is pending, so two
/// peers writing to each other cannot deadlock; what is read ahead is bounded
/// by the windows we granted and by the control-frame limits. Dropping the
/// driver fails all streams.
pub struct Driver<T> {
    io: T,
    inner: Arc<Inner>,
    /// Where the transport reads into: reused while the connection is busy,
    /// so the transport never has to zero fresh memory (an encrypted
    /// transport decrypts straight into it), and freed when it goes quiet.
    scratch: Vec<u8>,
    /// When a transport read last filled `scratch`.
    last_full_read: Option<Instant>,
    wbuf: BytesMut,
    need_flush: bool,
    read_closed: bool,
    /// Our write side was shut down after the connection closed.
    write_shut: bool,
    sleep: Pin<Box<Sleep>>,
    armed: Option<Instant>,
    linger_until: Option<Instant>,
    done: bool,
}

impl<T> fmt::Debug for Driver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver").finish_non_exhaustive()
    }
}

impl<T> Driver<T>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// Creates a connection over `io`; returns the driver future to spawn
    /// and the control handle.
    pub fn new(io: T, config: Config, mode: Mode) -> (Driver<T>, Control) {
        let now = now();
        let inner = Arc::new(Inner {
            shared: Mutex::new(Shared {
                conn: Connection::new(config, mode, now),
                wakers: HashMap::new(),
                driver: None,
            }),
            accept: Notify::new(),
        });
        let driver = Driver {
            io,
            inner: inner.clone(),
            scratch: Vec::new(),
            last_full_read: None,
            wbuf: BytesMut::new(),
            need_flush: false,
            read_closed: false,
            write_shut: false,
            sleep: Box::pin(tokio::time::sleep_until(tokio::time::Instant::now())),
            armed: None,
            linger_until: None,
            done: false,
        };
        (driver, Control { inner })
    }
}

impl<T> Driver<T>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    fn arm(&mut self, deadline: Instant) {
        if self.armed != Some(deadline) {
            self.armed = Some(deadline);
            self.sleep
                .as_mut()
                .reset(tokio::time::Instant::from_std(deadline));
        }
    }

    /// Writes `wbuf` until the transport pushes back; flushes when empty.
    fn poll_flush_out(&mut self, cx: &mut Context<'_>) -> Result<bool, std::io::Error> {
        let mut progress = false;
        while !self.wbuf.is_empty() {
            match Pin::new(&mut self.io).poll_write(cx, &self.wbuf) {
                Poll::Ready(Ok(0)) => return Err(std::io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => {
                    self.wbuf.advance(n);
                    self.need_flush = true;
                    progress = true;
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => return Ok(progress),
            }
        }
        if self.need_flush {
            match Pin::new(&mut self.io).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.need_flush = false,
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => {}
            }
        }
        Ok(progress)
    }

    fn poll_once(&mut self, cx: &mut Context<'_>) -> Step {
        // 1. Events → wake-ups; take outbound frames; learn the deadline.
        let (deadline, closed) = {
            let mut s = self.inner.lock();
            if !s.driver.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                s.driver = Some(cx.waker().clone());
            }
            s.dispatch_events(&self.inner.accept);
            if self.wbuf.is_empty() {
                s.conn.poll_transmit(&mut self.wbuf);
                // poll_transmit may have freed room for blocked writers.
                s.dispatch_events(&self.inner.accept);
            }
            (s.conn.poll_timeout(), s.conn.close_reason().cloned())
        };

        // 2. Flush outbound. A failed write ends the connection at once:
        // nothing more can reach the peer.
        let mut progress = match self.poll_flush_out(cx) {
            Ok(p) => p,
            Err(e) => {
                let mut s = self.inner.lock();
                s.conn.handle_transport_error(e);
                s.dispatch_events(&self.inner.accept);
                let reason = s.conn.close_reason().cloned();
                drop(s);
                return Step::Done(match reason {
                    Some(reason) if !reason.is_graceful() => Err(reason),
                    _ => Ok(()),
                });
            }
        };

        if let Some(reason) = closed {
            return self.poll_closed(cx, reason, progress);
        }

        // 3. Timers.
        if let Some(deadline) = deadline {
            self.arm(deadline);
            if self.sleep.as_mut().poll(cx).is_ready() {
                self.armed = None;
                self.inner.lock().conn.handle_timeout(now());
                progress = true;
            }
        }

        // 4. Read from the transport, even while a write is pending (unless
        // the core holds too many answers the peer has not taken yet).
        if !self.read_closed && self.inner.lock().conn.wants_input() {
            if self.scratch.is_empty() {
                self.scratch.resize(FIRST_READ_CHUNK, 0);
            }
            let mut buf = ReadBuf::new(&mut self.scratch);
            let read = Pin::new(&mut self.io)
                .poll_read(cx, &mut buf)
                .map_ok(|()| buf.filled().len());
            match read {
                Poll::Ready(Ok(0)) => {
                    self.read_closed = true;
                    self.inner.lock().conn.handle_transport_closed();
                    progress = true;
                }
                Poll::Ready(Ok(n)) => {
                    // Errors are recorded in the core and surface next round.
                    let _ = self
                        .inner
                        .lock()
                        .conn
                        .handle_bytes(&self.scratch[..n], now());
                    if n == self.scratch.len() {
                        self.last_full_read = Some(now());
                        if n < READ_CHUNK {
                            self.scratch.resize(n * 2, 0);
                        }
                    }
                    progress = true;
                }
                Poll::Ready(Err(e)) => {
                    self.read_closed = true;
                    self.inner.lock().conn.handle_transport_error(e);
                    progress = true;
                }
                Poll::Pending if !progress => self.release_idle_read_buffer(),
                Poll::Pending => {}
            }
        }

        if progress { Step::Progress } else { Step::Idle }
    }

    /// A closed connection: drain its last frames (the GoAway), shut the
    /// write side down, then read (and drop) until the peer closes its
    /// side, all within [`CLOSE_LINGER`].
    fn poll_closed(
        &mut self,
        cx: &mut Context<'_>,
        reason: ConnectionError,
        progress: bool,
    ) -> Step {
        let done = |reason: ConnectionError| {
            Step::Done(if reason.is_graceful() {
                Ok(())
            } else {
                Err(reason)
            })
        };
        let linger = *self
            .linger_until
            .get_or_insert_with(|| now() + CLOSE_LINGER);
        self.arm(linger);
        if self.sleep.as_mut().poll(cx).is_ready() {
            tracing::debug!("yamux close linger expired");
            return done(reason);
        }
        let drained =
            self.wbuf.is_empty() && !self.need_flush && !self.inner.lock().conn.has_transmit();
        if drained && !self.write_shut && Pin::new(&mut self.io).poll_shutdown(cx).is_ready() {
            self.write_shut = true;
        }
        if self.read_closed && (drained || self.write_shut) {
            // The peer closed its side and our last frames are out.
            return done(reason);
        }
        if !self.write_shut {
            return if progress { Step::Progress } else { Step::Idle };
        }
        // Wait for the peer's end of file, discarding what it still sends.
        if self.scratch.is_empty() {
            self.scratch.resize(FIRST_READ_CHUNK, 0);
        }
        for _ in 0..POLL_BUDGET {
            let mut buf = ReadBuf::new(&mut self.scratch);
            match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => {}
                Poll::Ready(_) => {
                    self.read_closed = true;
                    return done(reason);
                }
                Poll::Pending => return Step::Idle,
            }
        }
        Step::Progress
    }

    /// Frees the read buffer if the connection is quiet (see
    /// [`RELEASE_READ_BUFFER_AFTER`]).
    fn release_idle_read_buffer(&mut self) {
        let quiet = self
            .last_full_read
            .is_none_or(|at| now().saturating_duration_since(at) >= RELEASE_READ_BUFFER_AFTER);
        if self.scratch.len() <= FIRST_READ_CHUNK || quiet {
            self.scratch = Vec::new();
        }
    }
}

/// Outcome of one round of the driver loop.
enum Step {
    Progress,
    Idle,
    Done(Result<(), ConnectionError>),
}

impl<T> Future for Driver<T>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    type Output = Result<(), ConnectionError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(Ok(()));
        }
        for _ in 0..POLL_BUDGET {
            match this.poll_once(cx) {
                Step::Progress => {}
                Step::Idle => return Poll::Pending,
                Step::Done(result) => {
                    this.done = true;
                    return Poll::Ready(result);
                }
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<T> Drop for Driver<T> {
    fn drop(&mut self) {
        let mut s = self.inner.lock();
        s.conn
            .handle_transport_error(std::io::Error::other("yamux driver dropped"));
        s.dispatch_events(&self.inner.accept);
    }
}
