//! Shared interop harness: one vocabulary for connections and streams of
//! shoal-yamux, crates.io `yamux` 0.14 and `tokio-yamux` 0.3, and the
//! per-stream scenarios run between any two of them.
//!
//! A scenario runs over one `tokio::io::duplex` pipe. The dialer opens
//! [`PER_SIDE`] streams and the listener opens [`PER_SIDE`] streams, all
//! concurrently. Each stream starts with the opener writing its 8-byte index
//! (so the acceptor knows which stream it got, and so `yamux` 0.14, which
//! sends its SYN lazily with the first frame, announces the stream). Then
//! each end plays the [`Role`] the test assigns to it; every byte is a
//! position-dependent pattern checked on arrival.

#![allow(dead_code)] // each test file uses a subset
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::StreamExt as _;
use futures::future::poll_fn;
use shoal_yamux::{Config, Driver, Mode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{Mutex, mpsc, oneshot, watch};
use tokio::time::timeout;
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt};

/// One mebibyte.
pub(crate) const MIB: u64 = 1024 * 1024;
/// Bytes sent each way on a stream.
pub(crate) const LEN: u64 = 10 * MIB;
/// The initial stream window every yamux implementation assumes.
pub(crate) const WINDOW: u64 = 256 * 1024;
/// Bytes a [`Role::Resetter`] exchanges before it resets.
pub(crate) const RESET_AFTER: u64 = MIB;
/// Most bytes a tokio-yamux [`Role::Resetter`] reads while waiting for its
/// own write to finish.
const RESET_AFTER_MAX: u64 = 4 * MIB;
/// Streams opened by each side.
pub(crate) const PER_SIDE: u64 = 2;
/// Streams in a scenario.
pub(crate) const STREAMS: usize = 2 * PER_SIDE as usize;
/// Bound of any scenario that is expected to complete.
pub(crate) const LIMIT: Duration = Duration::from_secs(60);
/// How long a scenario that is expected to hang is given.
pub(crate) const HANG: Duration = Duration::from_secs(2);

/// In-memory pipe capacity: large, so the pipe is rarely the bottleneck.
const PIPE: usize = 1024 * 1024;
/// Pattern bytes per write and most bytes per read.
const CHUNK: usize = 64 * 1024;
/// Inbound streams a peer hands out before its accept task stops.
const MAX_INBOUND: usize = 1024;
/// Inbound streams waiting in a peer's queue.
const INBOUND_QUEUE: usize = MAX_INBOUND;

/// A yamux implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Impl {
    /// This crate.
    Shoal,
    /// crates.io `yamux` 0.14 (rust-libp2p).
    Yamux014,
    /// `tokio-yamux` 0.3 (tentacle).
    TokioYamux,
}

/// Which end of the pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// Opened the connection (`Mode::Client`, odd stream ids).
    Dialer,
    /// Accepted it (`Mode::Server`, even stream ids).
    Listener,
}

impl Side {
    fn slot(self) -> usize {
        match self {
            Side::Dialer => 0,
            Side::Listener => 1,
        }
    }

    /// The other end.
    pub(crate) fn other(self) -> Side {
        match self {
            Side::Dialer => Side::Listener,
            Side::Listener => Side::Dialer,
        }
    }
}

/// A stream of any implementation as tokio `AsyncRead + AsyncWrite`.
pub(crate) enum AnyStream {
    /// shoal-yamux.
    Shoal(shoal_yamux::Stream),
    /// `yamux` 0.14 behind the futures-io → tokio-io adapter.
    Yamux014(Compat<yamux014::Stream>),
    /// `tokio-yamux` 0.3.
    TokioYamux(tokio_yamux::StreamHandle),
}

impl AnyStream {
    /// Aborts the stream with RST: `reset()` for shoal; the other two reset
    /// a stream that is dropped before it was closed.
    pub(crate) fn reset(self) {
        match self {
            AnyStream::Shoal(mut s) => {
                let _ = s.reset();
            }
            other => drop(other),
        }
    }
}

impl AsyncRead for AnyStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            AnyStream::Shoal(s) => Pin::new(s).poll_read(cx, buf),
            AnyStream::Yamux014(s) => Pin::new(s).poll_read(cx, buf),
            AnyStream::TokioYamux(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for AnyStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            AnyStream::Shoal(s) => Pin::new(s).poll_write(cx, buf),
            AnyStream::Yamux014(s) => Pin::new(s).poll_write(cx, buf),
            AnyStream::TokioYamux(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            AnyStream::Shoal(s) => Pin::new(s).poll_flush(cx),
            AnyStream::Yamux014(s) => Pin::new(s).poll_flush(cx),
            AnyStream::TokioYamux(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            AnyStream::Shoal(s) => Pin::new(s).poll_shutdown(cx),
            AnyStream::Yamux014(s) => Pin::new(s).poll_shutdown(cx),
            AnyStream::TokioYamux(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

type OpenReply = oneshot::Sender<yamux014::Result<yamux014::Stream>>;

enum Opener {
    Shoal(shoal_yamux::Control),
    Yamux014(mpsc::Sender<OpenReply>),
    TokioYamux(tokio_yamux::Control),
}

/// One end of a connection, whatever the implementation: opens streams and
/// hands out inbound ones. Its connection runs in a spawned task.
pub(crate) struct Peer {
    /// The implementation.
    pub(crate) kind: Impl,
    opener: Opener,
    inbound: Mutex<mpsc::Receiver<AnyStream>>,
    /// Asks a `yamux` 0.14 connection task to close.
    close: mpsc::Sender<()>,
    /// Turns `true` when the connection task ended (its transport dropped).
    ended: watch::Receiver<bool>,
}

/// What a connection task gets besides its transport.
struct Wiring {
    side: Side,
    inbound: mpsc::Sender<AnyStream>,
    close: mpsc::Receiver<()>,
    ended: watch::Sender<bool>,
}

impl Peer {
    /// Starts `kind` on `io`; the dialer is the yamux client.
    pub(crate) fn start<T>(kind: Impl, io: T, side: Side) -> Peer
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(INBOUND_QUEUE);
        let (close, close_rx) = mpsc::channel(1);
        let (ended_tx, ended) = watch::channel(false);
        let wiring = Wiring {
            side,
            inbound: tx,
            close: close_rx,
            ended: ended_tx,
        };
        let opener = match kind {
            Impl::Shoal => start_shoal(io, wiring),
            Impl::Yamux014 => start_yamux014(io, wiring),
            Impl::TokioYamux => start_tokio_yamux(io, wiring),
        };
        Peer {
            kind,
            opener,
            inbound: Mutex::new(rx),
            close,
            ended,
        }
    }

    /// Closes the connection the way the implementation offers:
    /// `Control::close` (shoal, tokio-yamux), `Connection::poll_close`
    /// (`yamux` 0.14).
    pub(crate) async fn close(&self) {
        match &self.opener {
            Opener::Shoal(c) => c.close(),
            Opener::Yamux014(_) => {
                let _ = self.close.send(()).await;
            }
            Opener::TokioYamux(c) => c.clone().close().await,
        }
    }

    /// Waits up to `wait` for the connection task to end; whether it did.
    pub(crate) async fn ended_within(&self, wait: Duration) -> bool {
        let mut ended = self.ended.clone();
        timeout(wait, ended.wait_for(|e| *e)).await.is_ok()
    }

    /// Opens a stream.
    pub(crate) async fn open(&self) -> AnyStream {
        self.try_open().await.unwrap()
    }

    /// Opens a stream; `Err` describes why the implementation refused.
    pub(crate) async fn try_open(&self) -> Result<AnyStream, String> {
        match &self.opener {
            Opener::Shoal(c) => c
                .open_stream()
                .await
                .map(AnyStream::Shoal)
                .map_err(|e| e.to_string()),
            Opener::Yamux014(requests) => {
                let (reply, answer) = oneshot::channel();
                requests.send(reply).await.map_err(|e| e.to_string())?;
                let stream = answer.await.map_err(|e| e.to_string())?;
                Ok(AnyStream::Yamux014(
                    stream.map_err(|e| e.to_string())?.compat(),
                ))
            }
            Opener::TokioYamux(c) => c
                .clone()
                .open_stream()
                .await
                .map(AnyStream::TokioYamux)
                .map_err(|e| e.to_string()),
        }
    }

    /// Why a shoal peer's connection closed, once it has (`None` for the
    /// other implementations).
    pub(crate) fn close_reason(&self) -> Option<shoal_yamux::ConnectionError> {
        match &self.opener {
            Opener::Shoal(c) => c.close_reason(),
            _ => None,
        }
    }

    /// The next inbound stream, or `None` if the connection ended or none
    /// came within `wait`.
    pub(crate) async fn try_accept(&self, wait: Duration) -> Option<AnyStream> {
        let mut inbound = self.inbound.lock().await;
        timeout(wait, inbound.recv()).await.ok().flatten()
    }

    /// The next inbound stream.
    pub(crate) async fn accept(&self) -> AnyStream {
        let mut inbound = self.inbound.lock().await;
        timeout(LIMIT, inbound.recv())
            .await
            .expect("no inbound stream")
            .expect("connection ended")
    }
}

/// A dialer and a listener connected by an in-memory pipe.
pub(crate) fn connect(dialer: Impl, listener: Impl) -> (Peer, Peer) {
    let (a, b) = tokio::io::duplex(PIPE);
    (
        Peer::start(dialer, a, Side::Dialer),
        Peer::start(listener, b, Side::Listener),
    )
}

fn start_shoal<T>(io: T, w: Wiring) -> Opener
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mode = match w.side {
        Side::Dialer => Mode::Client,
        Side::Listener => Mode::Server,
    };
    let (driver, control) = Driver::new(io, Config::default(), mode);
    let ended = w.ended;
    tokio::spawn(async move {
        let _ = driver.await;
        let _ = ended.send(true);
    });
    let acceptor = control.clone();
    let tx = w.inbound;
    tokio::spawn(async move {
        for _ in 0..MAX_INBOUND {
            let Ok(stream) = acceptor.accept_stream().await else {
                break;
            };
            if tx.send(AnyStream::Shoal(stream)).await.is_err() {
                break;
            }
        }
    });
    Opener::Shoal(control)
}

/// `yamux` 0.14 is poll-based: one task owns the `Connection`, polls
/// `poll_next_inbound` continuously (that drives all I/O) and serves open
/// requests with `poll_new_outbound`.
fn start_yamux014<T>(io: T, w: Wiring) -> Opener
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mode = match w.side {
        Side::Dialer => yamux014::Mode::Client,
        Side::Listener => yamux014::Mode::Server,
    };
    let mut conn = yamux014::Connection::new(io.compat(), yamux014::Config::default(), mode);
    let (requests, mut open_rx) = mpsc::channel::<OpenReply>(16);
    let (tx, mut close_rx, ended) = (w.inbound, w.close, w.ended);
    tokio::spawn(async move {
        let mut waiting: Option<OpenReply> = None;
        let mut closing = false;
        poll_fn(|cx| {
            if !closing && close_rx.poll_recv(cx).is_ready() {
                closing = true;
            }
            if closing {
                return conn.poll_close(cx).map(|_| ());
            }
            for _ in 0..16 {
                if waiting.is_none() {
                    match open_rx.poll_recv(cx) {
                        Poll::Ready(Some(reply)) => waiting = Some(reply),
                        Poll::Ready(None) | Poll::Pending => break,
                    }
                }
                match conn.poll_new_outbound(cx) {
                    Poll::Ready(result) => {
                        if let Some(reply) = waiting.take() {
                            let _ = reply.send(result);
                        }
                    }
                    Poll::Pending => break,
                }
            }
            for _ in 0..64 {
                match conn.poll_next_inbound(cx) {
                    Poll::Ready(Some(Ok(stream))) => {
                        // A full queue drops (resets) the stream; tests open few.
                        let _ = tx.try_send(AnyStream::Yamux014(stream.compat()));
                    }
                    Poll::Ready(Some(Err(_)) | None) => return Poll::Ready(()),
                    Poll::Pending => return Poll::Pending,
                }
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        })
        .await;
        drop(conn);
        let _ = ended.send(true);
    });
    Opener::Yamux014(requests)
}

/// `tokio-yamux`'s `Session` is a `Stream` of inbound streams that must be
/// polled for any I/O to happen.
fn start_tokio_yamux<T>(io: T, w: Wiring) -> Opener
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = tokio_yamux::Config::default();
    let mut session = match w.side {
        Side::Dialer => tokio_yamux::Session::new_client(io, config),
        Side::Listener => tokio_yamux::Session::new_server(io, config),
    };
    let control = session.control();
    let (tx, ended) = (w.inbound, w.ended);
    tokio::spawn(async move {
        for _ in 0..MAX_INBOUND {
            match session.next().await {
                // Never block the session on the queue; tests open few.
                Some(Ok(stream)) => {
                    let _ = tx.try_send(AnyStream::TokioYamux(stream));
                }
                _ => break,
            }
        }
        // It never closes its transport itself: dropping the session does.
        drop(session);
        let _ = ended.send(true);
    });
    Opener::TokioYamux(control)
}

// ----- data -----

fn mix(seed: u64, word: u64) -> u64 {
    // splitmix64 of (seed, word position).
    let mut z = seed
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(word)
        .wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Fills `buf` with the pattern of `seed` starting at stream offset
/// `offset`; any byte depends on its position, so losses, duplicates and
/// reordering are all caught.
pub(crate) fn fill(seed: u64, offset: u64, buf: &mut [u8]) {
    let mut pos = offset;
    let mut i = 0;
    while i < buf.len() {
        let word = mix(seed, pos / 8).to_le_bytes();
        let start = (pos % 8) as usize;
        let n = (8 - start).min(buf.len() - i);
        buf[i..i + n].copy_from_slice(&word[start..start + n]);
        i += n;
        pos += n as u64;
    }
}

/// How reading a stream ended.
#[derive(Debug)]
pub(crate) enum ReadEnd {
    /// All expected bytes arrived (and EOF after them, where checked).
    Complete,
    /// End-of-stream before all expected bytes.
    Eof,
    /// A read failed.
    Failed(io::Error),
}

/// Writes `len` pattern bytes, counting each accepted byte in `sent`.
pub(crate) async fn write_pattern<W: AsyncWrite + Unpin>(
    w: &mut W,
    seed: u64,
    len: u64,
    sent: &AtomicU64,
) -> io::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    let mut off = 0u64;
    for _ in 0..len.div_ceil(CHUNK as u64) {
        let n = (len - off).min(CHUNK as u64) as usize;
        fill(seed, off, &mut buf[..n]);
        let mut done = 0;
        for _ in 0..n {
            if done == n {
                break;
            }
            let k = w.write(&buf[done..n]).await?;
            if k == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            done += k;
            sent.fetch_add(k as u64, Ordering::Relaxed);
        }
        off += n as u64;
    }
    w.flush().await
}

/// Reads up to `len` bytes and checks them against the pattern (panics on a
/// wrong byte); never reads past `len`.
pub(crate) async fn read_pattern<R: AsyncRead + Unpin>(
    r: &mut R,
    seed: u64,
    len: u64,
    received: &AtomicU64,
) -> ReadEnd {
    read_pattern_at(r, seed, 0, len, received).await
}

/// [`read_pattern`] for the stream bytes `offset..len`.
pub(crate) async fn read_pattern_at<R: AsyncRead + Unpin>(
    r: &mut R,
    seed: u64,
    offset: u64,
    len: u64,
    received: &AtomicU64,
) -> ReadEnd {
    let mut buf = vec![0u8; CHUNK];
    let mut expected = vec![0u8; CHUNK];
    let mut got = offset;
    for _ in 0..=len {
        if got >= len {
            return ReadEnd::Complete;
        }
        let want = (len - got).min(CHUNK as u64) as usize;
        match r.read(&mut buf[..want]).await {
            Ok(0) => return ReadEnd::Eof,
            Ok(n) => {
                fill(seed, got, &mut expected[..n]);
                assert!(
                    buf[..n] == expected[..n],
                    "seed {seed}: wrong bytes at offset {got}"
                );
                got += n as u64;
                received.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) => return ReadEnd::Failed(e),
        }
    }
    ReadEnd::Complete
}

/// Expects end-of-stream next.
pub(crate) async fn read_eof<R: AsyncRead + Unpin>(r: &mut R) -> ReadEnd {
    match r.read(&mut [0u8; 1]).await {
        Ok(0) => ReadEnd::Complete,
        Ok(_) => panic!("bytes after the expected end of stream"),
        Err(e) => ReadEnd::Failed(e),
    }
}

/// Reads `len` pattern bytes and then expects EOF.
pub(crate) async fn read_all<R: AsyncRead + Unpin>(
    r: &mut R,
    seed: u64,
    len: u64,
    received: &AtomicU64,
) -> ReadEnd {
    match read_pattern(r, seed, len, received).await {
        ReadEnd::Complete => read_eof(r).await,
        other => other,
    }
}

// ----- scenarios -----

/// What one end of a stream does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Sends [`LEN`] bytes while receiving [`LEN`]; half-closes (FIN) only
    /// once it has both sent and received everything, then expects EOF.
    Exchange,
    /// Sends [`LEN`] bytes and FIN at once, while receiving [`LEN`] + EOF.
    FinFirst,
    /// Receives [`LEN`] bytes and the remote's FIN first, only then sends
    /// [`LEN`] bytes and FIN.
    FinSecond,
    /// Exchanges [`RESET_AFTER`] bytes each way (tokio-yamux keeps a read
    /// pending until its write is done), then resets the stream.
    Resetter,
    /// Sends and receives [`LEN`] bytes until the remote resets; reports
    /// how its read and write ended.
    Victim,
    /// Sends [`LEN`] bytes and FIN with no read pending, then reads EOF.
    WriteOnly,
    /// Receives [`LEN`] bytes and EOF, then sends FIN.
    ReadOnly,
}

/// Bytes sent and received by one end of one stream, readable while the
/// scenario runs (so a hang can be measured).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Bytes the stream accepted for sending.
    pub(crate) sent: AtomicU64,
    /// Bytes read from the stream.
    pub(crate) received: AtomicU64,
}

/// Counters of every stream end of a scenario.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    ends: [[Counters; STREAMS]; 2],
}

impl Progress {
    /// The counters of `side`'s end of stream `index`.
    pub(crate) fn end(&self, side: Side, index: u64) -> &Counters {
        &self.ends[side.slot()][index as usize]
    }

    /// Bytes `side` sent on `index`.
    pub(crate) fn sent(&self, side: Side, index: u64) -> u64 {
        self.end(side, index).sent.load(Ordering::Relaxed)
    }

    /// Bytes `side` received on `index`.
    pub(crate) fn received(&self, side: Side, index: u64) -> u64 {
        self.end(side, index).received.load(Ordering::Relaxed)
    }
}

/// How one end of one stream finished.
#[derive(Debug)]
pub(crate) struct Report {
    /// Which end.
    pub(crate) side: Side,
    /// Its implementation.
    pub(crate) kind: Impl,
    /// The stream.
    pub(crate) index: u64,
    /// What it did.
    pub(crate) role: Role,
    /// How reading ended.
    pub(crate) read: ReadEnd,
    /// How writing ended.
    pub(crate) write: io::Result<()>,
}

impl Report {
    /// Panics unless everything was sent and everything (plus EOF) received.
    pub(crate) fn assert_clean(&self) {
        assert!(
            matches!(self.read, ReadEnd::Complete) && self.write.is_ok(),
            "{self:?}"
        );
    }
}

/// Who the opener of stream `index` is.
pub(crate) fn opener_of(index: u64) -> Side {
    if index < PER_SIDE {
        Side::Dialer
    } else {
        Side::Listener
    }
}

fn seeds(index: u64, side: Side) -> (u64, u64) {
    let from_opener = index * 2;
    let to_opener = index * 2 + 1;
    if opener_of(index) == side {
        (from_opener, to_opener)
    } else {
        (to_opener, from_opener)
    }
}

/// Runs one scenario: streams 0..[`PER_SIDE`] opened by the dialer, the
/// rest by the listener, every end playing `role(side, kind, index)`.
/// Returns every end's report once all streams finished.
pub(crate) async fn run<F>(
    dialer: &Peer,
    listener: &Peer,
    role: F,
    progress: Arc<Progress>,
) -> Vec<Report>
where
    F: Fn(Side, Impl, u64) -> Role,
{
    let mut tasks = Vec::new();
    let peers = [(Side::Dialer, dialer), (Side::Listener, listener)];
    for (side, peer) in peers {
        for k in 0..PER_SIDE {
            let index = if side == Side::Dialer {
                k
            } else {
                PER_SIDE + k
            };
            let mut stream = peer.open().await;
            stream.write_all(&index.to_be_bytes()).await.unwrap();
            let (kind, role) = (peer.kind, role(side, peer.kind, index));
            let progress = progress.clone();
            tasks.push(tokio::spawn(play(
                side, kind, index, role, stream, progress,
            )));
        }
    }
    for (side, peer) in peers {
        for _ in 0..PER_SIDE {
            let mut stream = peer.accept().await;
            let mut tag = [0u8; 8];
            stream.read_exact(&mut tag).await.unwrap();
            let index = u64::from_be_bytes(tag);
            let (kind, role) = (peer.kind, role(side, peer.kind, index));
            let progress = progress.clone();
            tasks.push(tokio::spawn(play(
                side, kind, index, role, stream, progress,
            )));
        }
    }
    let mut reports = Vec::new();
    for task in tasks {
        reports.push(task.await.unwrap());
    }
    reports
}

/// One end of one stream playing `role`.
async fn play(
    side: Side,
    kind: Impl,
    index: u64,
    role: Role,
    stream: AnyStream,
    progress: Arc<Progress>,
) -> Report {
    let (out_seed, in_seed) = seeds(index, side);
    let c = progress.end(side, index);
    let (read, write) = match role {
        Role::Exchange => {
            let (mut rd, mut wr) = tokio::io::split(stream);
            let (got_all, all_got) = oneshot::channel::<()>();
            let reader = async {
                match read_pattern(&mut rd, in_seed, LEN, &c.received).await {
                    ReadEnd::Complete => {
                        let _ = got_all.send(());
                        read_eof(&mut rd).await
                    }
                    other => other,
                }
            };
            let writer = async {
                write_pattern(&mut wr, out_seed, LEN, &c.sent).await?;
                // FIN only after everything came in (see Role::Exchange).
                let _ = all_got.await;
                wr.shutdown().await
            };
            tokio::join!(reader, writer)
        }
        Role::FinFirst => {
            let (mut rd, mut wr) = tokio::io::split(stream);
            let writer = async {
                write_pattern(&mut wr, out_seed, LEN, &c.sent).await?;
                wr.shutdown().await
            };
            tokio::join!(read_all(&mut rd, in_seed, LEN, &c.received), writer)
        }
        Role::FinSecond => {
            let mut s = stream;
            let read = read_all(&mut s, in_seed, LEN, &c.received).await;
            let write = async {
                write_pattern(&mut s, out_seed, LEN, &c.sent).await?;
                s.shutdown().await
            }
            .await;
            (read, write)
        }
        Role::Resetter => {
            let (mut rd, mut wr) = tokio::io::split(stream);
            let (wrote, written) = oneshot::channel::<()>();
            let reader = async {
                let first = read_pattern(&mut rd, in_seed, RESET_AFTER, &c.received).await;
                if kind == Impl::TokioYamux && matches!(first, ReadEnd::Complete) {
                    // Keep a read pending until our write is done: tokio-yamux
                    // stalls a writer without one (see Role::WriteOnly). Read
                    // at most a few MiB more: with its fixed 256 KiB window
                    // the victim stays far from finishing its LEN.
                    let extra = read_pattern_at(
                        &mut rd,
                        in_seed,
                        RESET_AFTER,
                        RESET_AFTER_MAX,
                        &c.received,
                    );
                    tokio::select! {
                        _ = written => {}
                        _ = extra => {}
                    }
                }
                first
            };
            let writer = async {
                let result = write_pattern(&mut wr, out_seed, RESET_AFTER, &c.sent).await;
                let _ = wrote.send(());
                result
            };
            let (read, write) = tokio::join!(reader, writer);
            rd.unsplit(wr).reset();
            (read, write)
        }
        Role::Victim => {
            let (mut rd, mut wr) = tokio::io::split(stream);
            tokio::join!(
                read_all(&mut rd, in_seed, LEN, &c.received),
                write_pattern(&mut wr, out_seed, LEN, &c.sent)
            )
        }
        Role::WriteOnly => {
            let mut s = stream;
            let write = async {
                write_pattern(&mut s, out_seed, LEN, &c.sent).await?;
                s.shutdown().await
            }
            .await;
            (read_eof(&mut s).await, write)
        }
        Role::ReadOnly => {
            let mut s = stream;
            let read = read_all(&mut s, in_seed, LEN, &c.received).await;
            (read, s.shutdown().await)
        }
    };
    Report {
        side,
        kind,
        index,
        role,
        read,
        write,
    }
}

/// After a scenario: one fresh stream each way still works (a short
/// request/response each).
pub(crate) async fn still_serves(dialer: &Peer, listener: &Peer) {
    for (opener, acceptor) in [(dialer, listener), (listener, dialer)] {
        let mut s = opener.open().await;
        s.write_all(b"ping").await.unwrap();
        s.shutdown().await.unwrap();
        let mut t = acceptor.accept().await;
        let mut got = Vec::new();
        t.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"ping");
        t.write_all(b"pong").await.unwrap();
        t.shutdown().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"pong");
    }
}

// ----- role assignments -----

/// Every end exchanges [`LEN`] bytes each way (FIN after both directions
/// are complete).
pub(crate) fn exchange() -> impl Fn(Side, Impl, u64) -> Role {
    |_, _, _| Role::Exchange
}

/// On every stream `first` sends FIN right after its data; the other end
/// reads to EOF and only then sends its [`LEN`] bytes and FIN.
pub(crate) fn half_close(first: Side) -> impl Fn(Side, Impl, u64) -> Role {
    move |side, _, _| {
        if side == first {
            Role::FinFirst
        } else {
            Role::FinSecond
        }
    }
}

/// Streams 0 (dialer-opened) and [`PER_SIDE`] (listener-opened) are reset
/// by `resetter` mid-transfer; the others carry a full exchange alongside.
pub(crate) fn reset_by(resetter: Side) -> impl Fn(Side, Impl, u64) -> Role {
    move |side, _, index| {
        if index % PER_SIDE != 0 {
            Role::Exchange
        } else if side == resetter {
            Role::Resetter
        } else {
            Role::Victim
        }
    }
}

/// `writer` only writes (no read pending), the other end only reads.
pub(crate) fn write_only(writer: Side) -> impl Fn(Side, Impl, u64) -> Role {
    move |side, _, _| {
        if side == writer {
            Role::WriteOnly
        } else {
            Role::ReadOnly
        }
    }
}

// ----- running and judging -----

/// Connects `dialer` to `listener`, runs a scenario that must complete
/// within [`LIMIT`], then checks the connection still serves fresh streams
/// both ways. Returns every end's report.
pub(crate) async fn completes<F>(dialer: Impl, listener: Impl, roles: F) -> Vec<Report>
where
    F: Fn(Side, Impl, u64) -> Role,
{
    let (d, l) = connect(dialer, listener);
    let progress = Arc::new(Progress::default());
    let Ok(reports) = timeout(LIMIT, run(&d, &l, roles, progress.clone())).await else {
        panic!("scenario did not complete: {progress:?}");
    };
    timeout(LIMIT, still_serves(&d, &l))
        .await
        .expect("connection stopped serving new streams");
    reports
}

/// Connects `dialer` to `listener` and runs a scenario that must hang:
/// asserts it is unfinished after [`HANG`] (a healthy run takes well under
/// a second) and returns the progress each stream end made.
pub(crate) async fn hangs<F>(dialer: Impl, listener: Impl, roles: F) -> Arc<Progress>
where
    F: Fn(Side, Impl, u64) -> Role,
{
    let (d, l) = connect(dialer, listener);
    let progress = Arc::new(Progress::default());
    let outcome = timeout(HANG, run(&d, &l, roles, progress.clone())).await;
    assert!(outcome.is_err(), "expected the scenario to hang");
    progress
}

/// Panics unless every end sent and received everything, EOF included.
pub(crate) fn assert_all_clean(reports: &[Report]) {
    assert_eq!(reports.len(), 2 * STREAMS);
    reports.iter().for_each(Report::assert_clean);
}

/// Window bytes the 8-byte stream tag took from `side` on stream `index`.
pub(crate) fn tag_bytes(side: Side, index: u64) -> u64 {
    if opener_of(index) == side { 8 } else { 0 }
}

/// Checks a [`reset_by`] run: the resetter exchanged its bytes, the
/// streams beside it completed, and the victim's write failed and its read
/// ended early (no hang), with each implementation's way of saying so:
///
/// | victim       | read                         | write            |
/// |--------------|------------------------------|------------------|
/// | shoal        | `ConnectionReset`            | `ConnectionReset`|
/// | tokio-yamux  | `ConnectionReset`            | `BrokenPipe`     |
/// | yamux 0.14   | EOF (`Ok(0)`): reset looks like a clean end | `WriteZero` |
pub(crate) fn assert_reset_outcome(reports: &[Report]) {
    assert_eq!(reports.len(), 2 * STREAMS);
    for r in reports {
        match r.role {
            Role::Exchange => r.assert_clean(),
            Role::Resetter => {
                assert!(matches!(r.read, ReadEnd::Complete), "{r:?}");
                assert!(r.write.is_ok(), "{r:?}");
            }
            Role::Victim => {
                let write = r.write.as_ref().expect_err("write survived a reset");
                let (read_kind, write_kind) = match r.kind {
                    Impl::Shoal => (
                        Some(io::ErrorKind::ConnectionReset),
                        io::ErrorKind::ConnectionReset,
                    ),
                    Impl::TokioYamux => (
                        Some(io::ErrorKind::ConnectionReset),
                        io::ErrorKind::BrokenPipe,
                    ),
                    Impl::Yamux014 => (None, io::ErrorKind::WriteZero),
                };
                assert_eq!(write.kind(), write_kind, "{r:?}");
                match (&r.read, read_kind) {
                    (ReadEnd::Failed(e), Some(kind)) => assert_eq!(e.kind(), kind, "{r:?}"),
                    (ReadEnd::Eof, None) => {}
                    _ => panic!("unexpected end of a reset stream: {r:?}"),
                }
            }
            other => panic!("role {other:?} in a reset scenario"),
        }
    }
}
