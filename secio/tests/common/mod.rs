//! Helpers shared by the integration tests.

#![allow(dead_code, unreachable_pub)]

use std::{
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use shoal_identity::Keypair;
use shoal_secio::{CipherSuite, Config, HandshakeError, SecureStream, StreamError};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Upper bound on any single awaited step in a test.
pub const STEP_LIMIT: Duration = Duration::from_secs(60);

/// Awaits `fut`, failing the test if it takes longer than [`STEP_LIMIT`].
pub async fn within<F: Future>(fut: F) -> F::Output {
    tokio::time::timeout(STEP_LIMIT, fut)
        .await
        .expect("test step timed out")
}

pub fn config(suites: &[CipherSuite]) -> Config {
    Config::new(Keypair::generate()).with_suites(suites.iter().copied())
}

/// A current-thread runtime with paused time (timeouts fire as soon as
/// everything is idle), for property tests.
pub fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime")
}

/// Runs both sides of a handshake over `a`/`b`.
pub async fn handshake_pair<A, B>(
    a: A,
    b: B,
    initiator: &Config,
    responder: &Config,
) -> (
    Result<SecureStream<A>, HandshakeError>,
    Result<SecureStream<B>, HandshakeError>,
)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    within(async {
        tokio::join!(
            shoal_secio::handshake_outbound(a, initiator, Some(responder.local_peer_id())),
            shoal_secio::handshake_inbound(b, responder),
        )
    })
    .await
}

/// The [`StreamError`] inside an `io::Error`, if any.
pub fn stream_error(e: &io::Error) -> Option<&StreamError> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<StreamError>())
}

/// A small deterministic PRNG (xorshift64*), so failures replay.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-ish in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

/// Wraps a stream's write side to corrupt, count or capture bytes.
pub struct Tap<IO> {
    inner: IO,
    /// Bytes handed to `inner` so far.
    pub written: u64,
    /// Flip `mask` into the byte at this absolute write offset.
    pub flip: Option<(u64, u8)>,
    /// While true, writes are swallowed into `captured` instead of sent.
    pub capture: bool,
    pub captured: Vec<u8>,
}

impl<IO> Tap<IO> {
    pub fn new(inner: IO) -> Tap<IO> {
        Tap {
            inner,
            written: 0,
            flip: None,
            capture: false,
            captured: Vec::new(),
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Tap<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Tap<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.capture {
            self.captured.extend_from_slice(buf);
            return Poll::Ready(Ok(buf.len()));
        }
        let mut data = buf.to_vec();
        if let Some((at, mask)) = self.flip
            && let Some(offset) = at.checked_sub(self.written)
            && let Some(byte) = data.get_mut(offset as usize)
        {
            *byte ^= mask;
        }
        let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &data))?;
        self.written += n as u64;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
