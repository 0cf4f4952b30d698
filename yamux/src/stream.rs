//! A multiplexed stream as tokio `AsyncRead + AsyncWrite`.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::StreamId;
use crate::driver::{Inner, now};
use crate::error::StreamError;

/// One yamux stream.
///
/// * `poll_shutdown` half-closes our direction (FIN); reading continues
///   until the remote finishes too.
/// * [`Stream::reset`] aborts both directions (RST): the remote's reads and
///   writes fail and its unread data is discarded.
/// * **Dropping a stream closes it as TCP closes a socket** (RFC 1122
///   4.2.2.13): if received data was left unread, or data arrives after the
///   drop, the stream is reset (RST), so the remote's writes fail instead of
///   its peer reading a clean end after a truncated prefix. Otherwise a
///   write side still open is finished (FIN): everything written before,
///   even bytes the remote has not read yet, is delivered and the remote
///   reads end-of-stream after it. So "write, shut down, read the reply to
///   its end, drop" delivers everything. The state is freed once the
///   remote's FIN or RST arrives (at once if it already came); until then it
///   counts toward
///   [`Config::max_concurrent_streams`](crate::Config::max_concurrent_streams).
///   Call [`Stream::reset`] before dropping to abort in any case.
/// * Once the connection dies, pending and later reads and writes fail.
///
/// See [`Connection::drop_stream`](crate::Connection::drop_stream) for the
/// core's side of dropping.
pub struct Stream {
    id: StreamId,
    inner: Arc<Inner>,
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stream")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Stream {
    pub(crate) fn new(id: StreamId, inner: Arc<Inner>) -> Self {
        Stream { id, inner }
    }

    /// The stream id.
    pub fn id(&self) -> StreamId {
        self.id
    }

    /// Bytes received on this stream and not yet read (`None` once the
    /// stream's state is freed). Never exceeds the stream's receive window.
    pub fn unread_bytes(&self) -> Option<u32> {
        self.inner.lock().conn.stream_unread(self.id)
    }

    /// This stream's current receive window (`None` once freed).
    pub fn receive_window(&self) -> Option<u32> {
        self.inner.lock().conn.stream_receive_window(self.id)
    }

    /// Resets the stream (RST): both directions end at once and unread
    /// data is discarded.
    pub fn reset(&mut self) -> Result<(), StreamError> {
        let mut s = self.inner.lock();
        let result = s.conn.reset(self.id);
        s.wake_driver();
        result
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let id = self.id;
        let mut s = self.inner.lock();
        match s.conn.read_chunk(id, buf.remaining(), now()) {
            Ok(Some(chunk)) => {
                buf.put_slice(&chunk);
                if s.conn.has_transmit() {
                    s.wake_driver();
                }
                Poll::Ready(Ok(()))
            }
            Ok(None) => {
                let w = s.wakers.entry(id).or_default();
                if !w.read.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    w.read = Some(cx.waker().clone());
                }
                Poll::Pending
            }
            Err(e) => Poll::Ready(Err(e.into())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let id = self.id;
        let mut s = self.inner.lock();
        match s.conn.write(id, buf) {
            Ok(0) => {
                let w = s.wakers.entry(id).or_default();
                if !w.write.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    w.write = Some(cx.waker().clone());
                }
                Poll::Pending
            }
            Ok(n) => {
                s.wake_driver();
                Poll::Ready(Ok(n))
            }
            Err(e) => Poll::Ready(Err(e.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Written bytes are already queued in the connection; the driver
        // flushes the transport.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let id = self.id;
        let mut s = self.inner.lock();
        let result = match s.conn.finish(id) {
            // Already finished and freed.
            Err(StreamError::UnknownStream(_)) => Ok(()),
            other => other,
        };
        s.wake_driver();
        Poll::Ready(result.map_err(Into::into))
    }
}

impl Drop for Stream {
    /// Finishes the write side (FIN) if still open, or resets the stream
    /// if received data was left unread (see the type's documentation).
    fn drop(&mut self) {
        let mut s = self.inner.lock();
        s.conn.drop_stream(self.id);
        if s.conn.has_transmit() {
            s.wake_driver();
        }
        s.wakers.remove(&self.id);
    }
}
