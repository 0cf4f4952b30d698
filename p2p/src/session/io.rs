//! A transport wrapper that lets the session end the yamux driver
//! gracefully: after `Closer::close`, reads report end-of-file, so the
//! driver flushes what it holds (our GoAway), shuts the transport down and
//! completes.

use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
};

use futures::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

#[derive(Debug, Default)]
struct State {
    closed: AtomicBool,
    reader: AtomicWaker,
}

/// The I/O object handed to the yamux driver.
#[derive(Debug)]
pub(crate) struct Closable<T> {
    io: T,
    state: Arc<State>,
}

/// Ends the reads of a [`Closable`].
#[derive(Debug)]
pub(crate) struct Closer(Arc<State>);

impl Closer {
    pub(crate) fn close(&self) {
        self.0.closed.store(true, Ordering::Release);
        self.0.reader.wake();
    }
}

impl<T> Closable<T> {
    pub(crate) fn new(io: T) -> (Closable<T>, Closer) {
        let state = Arc::new(State::default());
        (
            Closable {
                io,
                state: state.clone(),
            },
            Closer(state),
        )
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Closable<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.state.closed.load(Ordering::Acquire) {
            return Poll::Ready(Ok(()));
        }
        self.state.reader.register(cx.waker());
        if self.state.closed.load(Ordering::Acquire) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Closable<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
