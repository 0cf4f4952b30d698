//! The sending half of a secure stream: plaintext in, frames out.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll, ready},
};

use snow::TransportState;
use tokio::io::AsyncWrite;

use crate::{
    StreamError,
    frame::{LEN_PREFIX, MAX_FRAME_PLAINTEXT, MAX_FRAME_WIRE_LEN, TAG_LEN, encode_len},
};

use super::buffer::ElasticBuffer;

/// Most bytes of encrypted frames buffered before they must go to the
/// socket: four maximal frames (about 256 KiB of plaintext). The buffer
/// grows to this size as writes need it.
pub(super) const WRITE_BUFFER_LEN: usize = 4 * MAX_FRAME_WIRE_LEN;

/// Once this many encrypted bytes are buffered, `poll_write` starts handing
/// them to the socket without waiting for a flush, so bulk transfers keep
/// the socket busy with large writes.
const EAGER_WRITE_THRESHOLD: usize = MAX_FRAME_WIRE_LEN;

pub(super) struct WriteState {
    /// Encrypted frames not yet written: `buf[start..end]`.
    buf: ElasticBuffer,
    start: usize,
    end: usize,
    /// An error from an eager write after the caller's data was accepted;
    /// reported by the next call.
    deferred: Option<io::Error>,
    /// A write failed; every later write fails too.
    failed: bool,
}

impl WriteState {
    pub(super) fn new() -> WriteState {
        WriteState {
            buf: ElasticBuffer::default(),
            start: 0,
            end: 0,
            deferred: None,
            failed: false,
        }
    }

    /// Bytes of buffer memory held.
    pub(super) fn buffer_memory(&self) -> usize {
        self.buf.len()
    }

    /// Encrypts as many whole frames of `data` as fit in the buffer and
    /// returns how much plaintext it took.
    pub(super) fn poll_write<IO: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut IO,
        transport: &mut TransportState,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check()?;
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let first_frame = LEN_PREFIX + data.len().min(MAX_FRAME_PLAINTEXT) + TAG_LEN;
        if WRITE_BUFFER_LEN - self.pending() < first_frame {
            match self.poll_drain(cx, io) {
                Poll::Ready(result) => self.record(result)?,
                Poll::Pending if WRITE_BUFFER_LEN - self.pending() < first_frame => {
                    return Poll::Pending;
                }
                Poll::Pending => {}
            }
        }
        // Room for all of `data` if the buffer may grow that far; at least
        // for its first frame.
        let want = (self.pending() + wire_len(data.len())).min(WRITE_BUFFER_LEN);
        self.buf.grow_to(want, WRITE_BUFFER_LEN);
        if self.buf.len() - self.end < first_frame {
            self.buf.as_mut_slice().copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let taken = self.encrypt(transport, data).map_err(|e| {
            self.failed = true;
            e.into_io()
        })?;
        if self.pending() >= EAGER_WRITE_THRESHOLD
            && let Poll::Ready(Err(e)) = self.poll_drain(cx, io)
        {
            self.deferred = Some(e);
        }
        Poll::Ready(Ok(taken))
    }

    /// Writes out every buffered frame, then flushes the socket.
    pub(super) fn poll_flush<IO: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut IO,
    ) -> Poll<io::Result<()>> {
        self.check()?;
        let drained = ready!(self.poll_drain(cx, io));
        self.record(drained)?;
        self.buf.release_if_idle();
        let flushed = ready!(Pin::new(io).poll_flush(cx));
        Poll::Ready(self.record(flushed))
    }

    /// Writes out every buffered frame, then shuts the socket down.
    pub(super) fn poll_shutdown<IO: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut IO,
    ) -> Poll<io::Result<()>> {
        self.check()?;
        let drained = ready!(self.poll_drain(cx, io));
        self.record(drained)?;
        let shut = ready!(Pin::new(io).poll_shutdown(cx));
        Poll::Ready(self.record(shut))
    }

    fn pending(&self) -> usize {
        self.end - self.start
    }

    /// Fails if an earlier write failed.
    fn check(&mut self) -> io::Result<()> {
        if let Some(e) = self.deferred.take() {
            self.failed = true;
            return Err(e);
        }
        if self.failed {
            return Err(StreamError::Poisoned.into_io());
        }
        Ok(())
    }

    /// Marks the stream failed on error.
    fn record(&mut self, result: io::Result<()>) -> io::Result<()> {
        if let Err(e) = &result {
            tracing::debug!(error = %e, "secio: write failed, stream closed for writing");
            self.failed = true;
        }
        result
    }

    /// Seals frames of `data` into the free space after `end`.
    fn encrypt(
        &mut self,
        transport: &mut TransportState,
        data: &[u8],
    ) -> Result<usize, StreamError> {
        let mut taken = 0;
        while taken < data.len() {
            let chunk = (data.len() - taken).min(MAX_FRAME_PLAINTEXT);
            let wire = LEN_PREFIX + chunk + TAG_LEN;
            let Some(frame) = self.buf.as_mut_slice().get_mut(self.end..self.end + wire) else {
                break;
            };
            let (header, body) = frame.split_at_mut(LEN_PREFIX);
            let n = transport
                .write_message(&data[taken..taken + chunk], body)
                .map_err(StreamError::Encrypt)?;
            // n == chunk + TAG_LEN <= MAX_FRAME_LEN, so the prefix always fits.
            header.copy_from_slice(&encode_len(n).ok_or(StreamError::Encrypt(snow::Error::Input))?);
            self.end += LEN_PREFIX + n;
            taken += chunk;
        }
        Ok(taken)
    }

    /// Hands buffered frames to the socket until none are left.
    fn poll_drain<IO: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut IO,
    ) -> Poll<io::Result<()>> {
        // Each pass writes at least one byte or returns.
        while self.start < self.end {
            let n = ready!(
                Pin::new(&mut *io).poll_write(cx, &self.buf.as_slice()[self.start..self.end])
            )?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            tracing::trace!(bytes = n, "secio: wrote ciphertext");
            self.start += n;
        }
        self.buf.note_transfer(self.end);
        self.start = 0;
        self.end = 0;
        Poll::Ready(Ok(()))
    }
}

/// Bytes on the wire for `plaintext` bytes cut into maximal frames.
fn wire_len(plaintext: usize) -> usize {
    plaintext + plaintext.div_ceil(MAX_FRAME_PLAINTEXT) * (LEN_PREFIX + TAG_LEN)
}
