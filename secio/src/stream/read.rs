//! The receiving half of a secure stream: ciphertext in, plaintext out.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll, ready},
};

use snow::TransportState;
use tokio::io::{AsyncRead, ReadBuf};

use crate::{
    MAX_RECEIVE_BUDGET_WAIT, RECEIVE_BUFFER_FLOOR, ReceiveBudget, StreamError,
    budget::Reservation,
    frame::{FrameDecoder, LEN_PREFIX, MAX_FRAME_LEN, MAX_FRAME_WIRE_LEN, decode_len},
};

use super::buffer::ElasticBuffer;

/// Most ciphertext buffered from the socket; the buffer grows to this size
/// while reads keep filling it. At least two maximal frames, so a partial
/// frame always fits after moving it to the front.
pub(super) const READ_BUFFER_LEN: usize = 256 * 1024;

/// Budget a ciphertext buffer larger than the floor holds: at least one
/// *slot*, what a maximal frame needs beyond the floor, so a stream never
/// waits for the budget while holding part of it (no two streams can each
/// hold part and wait for the other's). Read-ahead beyond one frame holds
/// what it uses.
fn budget_for(capacity: usize) -> usize {
    if capacity <= RECEIVE_BUFFER_FLOOR {
        0
    } else {
        (capacity - RECEIVE_BUFFER_FLOOR).max(MAX_FRAME_WIRE_LEN - RECEIVE_BUFFER_FLOOR)
    }
}

/// Socket reads one `poll_read` may make without producing plaintext (a
/// peer sending only empty frames) before yielding to the scheduler.
const MAX_SOCKET_READS_PER_POLL: usize = 4;

const _: () = assert!(READ_BUFFER_LEN >= 2 * MAX_FRAME_WIRE_LEN);

pub(super) struct ReadState {
    /// Ciphertext received but not yet decrypted: `buf[start..end]`.
    buf: ElasticBuffer,
    start: usize,
    end: usize,
    /// The last socket read filled all the space it was given: grow before
    /// the next one.
    grow: bool,
    /// The budget bytes `buf` draws on: `budget_for(buf.capacity())`.
    reservation: Reservation,
    /// Decrypted plaintext not yet handed out: `plain[plain_start..plain_end]`.
    /// Only needed for reads smaller than a frame.
    plain: ElasticBuffer,
    plain_start: usize,
    plain_end: usize,
    /// The socket reported end of file.
    eof: bool,
    /// A read failed; every later read fails too.
    failed: bool,
}

impl ReadState {
    pub(super) fn new(budget: ReceiveBudget) -> ReadState {
        ReadState {
            buf: ElasticBuffer::default(),
            start: 0,
            end: 0,
            grow: false,
            reservation: Reservation::new(budget),
            plain: ElasticBuffer::default(),
            plain_start: 0,
            plain_end: 0,
            eof: false,
            failed: false,
        }
    }

    /// Bytes of buffer memory held.
    pub(super) fn buffer_memory(&self) -> usize {
        self.buf.len() + self.plain.len()
    }

    /// Bytes of memory held by the ciphertext buffer.
    pub(super) fn ciphertext_capacity(&self) -> usize {
        self.buf.capacity()
    }

    pub(super) fn poll_read<IO: AsyncRead + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut IO,
        transport: &mut TransportState,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.failed {
            return Poll::Ready(Err(StreamError::Poisoned.into_io()));
        }
        let result = self.poll_read_inner(cx, io, transport, out);
        if let Poll::Ready(Err(e)) = &result {
            tracing::debug!(error = %e, "secio: read failed, stream closed for reading");
            self.failed = true;
            // Nothing buffered can be read any more: give it all back.
            self.buf.release();
            self.plain.release();
            self.reservation.release_to(0);
        }
        result
    }

    fn poll_read_inner<IO: AsyncRead + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut IO,
        transport: &mut TransportState,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.copy_pending_plaintext(out) || out.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let filled_before = out.filled().len();
        let mut socket_reads = 0;
        loop {
            self.decrypt_buffered(transport, out)
                .map_err(StreamError::into_io)?;
            if out.filled().len() > filled_before {
                return Poll::Ready(Ok(()));
            }
            if self.eof {
                return if self.start == self.end {
                    Poll::Ready(Ok(()))
                } else {
                    Poll::Ready(Err(StreamError::Truncated.into_io()))
                };
            }
            if socket_reads == MAX_SOCKET_READS_PER_POLL {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            ready!(self.poll_fill(cx, io))?;
            socket_reads += 1;
        }
    }

    /// Copies buffered plaintext into `out`; true if there was any.
    fn copy_pending_plaintext(&mut self, out: &mut ReadBuf<'_>) -> bool {
        if self.plain_start == self.plain_end {
            return false;
        }
        let n = out.remaining().min(self.plain_end - self.plain_start);
        out.put_slice(&self.plain.as_slice()[self.plain_start..self.plain_start + n]);
        self.plain_start += n;
        true
    }

    /// Decrypts complete buffered frames while `out` has room. A frame
    /// whose plaintext does not fit goes to the plaintext buffer and is
    /// handed out in pieces.
    fn decrypt_buffered(
        &mut self,
        transport: &mut TransportState,
        out: &mut ReadBuf<'_>,
    ) -> Result<(), StreamError> {
        let decoder = FrameDecoder::transport();
        // Each pass consumes a whole frame or returns.
        while out.remaining() > 0 {
            let Some(body) = decoder.decode(&self.buf.as_slice()[self.start..self.end])? else {
                return Ok(());
            };
            let consumed = LEN_PREFIX + body.len();
            // The AEAD opens in place only when the destination can hold the
            // whole ciphertext (otherwise it would allocate a copy).
            if out.remaining() >= body.len() {
                let dst = out.initialize_unfilled_to(body.len());
                let n = transport
                    .read_message(body, dst)
                    .map_err(|_| StreamError::Decrypt)?;
                out.advance(n);
                self.start += consumed;
            } else {
                self.plain.grow_to(body.len(), MAX_FRAME_LEN);
                let n = transport
                    .read_message(body, self.plain.as_mut_slice())
                    .map_err(|_| StreamError::Decrypt)?;
                self.plain.note_transfer(n);
                self.start += consumed;
                self.plain_start = 0;
                self.plain_end = n;
                self.copy_pending_plaintext(out);
                return Ok(());
            }
        }
        Ok(())
    }

    /// Reads more ciphertext from the socket. Only a partial frame (or
    /// nothing) is buffered here: whole frames were consumed first.
    ///
    /// First makes room. A buffer full of the partial frame doubles (from
    /// the floor, at most to the frame's length), so what a stream holds
    /// follows the bytes its peer actually sent, never the length a header
    /// declares; past the floor this draws on the receive budget and may
    /// wait for it. After a read that filled all its space and brought a
    /// whole frame and more (a bulk transfer), the buffer also doubles for
    /// read-ahead, up to [`READ_BUFFER_LEN`], if the budget is at least
    /// half free; otherwise it reads in smaller steps. A partial frame
    /// moves to the front when the space behind it runs short.
    ///
    /// When the socket has nothing: an empty buffer is freed if small or
    /// quiet (at once if other streams wait for the budget), and a buffer
    /// much larger than its partial frame shrinks likewise.
    fn poll_fill<IO: AsyncRead + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut IO,
    ) -> Poll<io::Result<()>> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        let buffered = self.end - self.start;
        let frame = decode_len(&self.buf.as_slice()[self.start..self.end])
            .map_or(LEN_PREFIX, |len| LEN_PREFIX + len);
        let len = self.buf.len();
        if buffered == len {
            let target = (2 * len)
                .max(RECEIVE_BUFFER_FLOOR)
                .min(frame.max(RECEIVE_BUFFER_FLOOR));
            if ready!(self.reservation.poll_reserve(cx, budget_for(target))).is_err() {
                return Poll::Ready(Err(StreamError::ReceiveBudgetExhausted(
                    MAX_RECEIVE_BUDGET_WAIT,
                )
                .into_io()));
            }
            self.buf.grow_to(target, target);
        }
        if self.grow {
            self.grow = false;
            let len = self.buf.len();
            let target = (2 * len).min(READ_BUFFER_LEN);
            let keep_free = self.reservation_total() / 2;
            if target > len && self.reservation.try_reserve(budget_for(target), keep_free) {
                self.buf.grow_to(target, target);
            }
        }
        let len = self.buf.len();
        if self.start > 0 && len - self.end < (frame - buffered).max(len / 4) {
            self.buf.as_mut_slice().copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let mut space = ReadBuf::new(&mut self.buf.as_mut_slice()[self.end..]);
        let offered = space.capacity();
        if Pin::new(io).poll_read(cx, &mut space)?.is_pending() {
            self.release_idle(frame);
            return Poll::Pending;
        }
        let n = space.filled().len();
        if n == 0 {
            self.eof = true;
        } else {
            tracing::trace!(bytes = n, "secio: read ciphertext");
            self.end += n;
            self.buf.note_transfer(n);
            // Read ahead only for a peer sending frames faster than we read
            // them: a read that filled its space and brought a whole frame
            // and more. One large frame trickling in grows as it arrives.
            let buffered = &self.buf.as_slice()[self.start..self.end];
            let more = decode_len(buffered).is_some_and(|l| LEN_PREFIX + l < buffered.len());
            self.grow = n == offered && len < READ_BUFFER_LEN && more;
        }
        Poll::Ready(Ok(()))
    }

    /// Gives memory back while the socket has nothing to read (`frame`: the
    /// wire length of the partial frame buffered, if any).
    fn release_idle(&mut self, frame: usize) {
        let buffered = self.end - self.start;
        let urgent = self.reservation.budget_has_waiters();
        if buffered == 0 {
            if urgent {
                self.buf.release();
            } else {
                self.buf.release_if_idle();
            }
        } else {
            let fit = (2 * buffered)
                .max(RECEIVE_BUFFER_FLOOR)
                .min(frame.max(RECEIVE_BUFFER_FLOOR));
            if self.buf.len() > fit && (urgent || self.buf.is_quiet()) {
                self.buf.as_mut_slice().copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
                self.buf.shrink_to(fit);
            }
        }
        self.reservation.release_to(budget_for(self.buf.capacity()));
        if self.plain_start == self.plain_end {
            self.plain.release_if_idle();
        }
    }

    fn reservation_total(&self) -> usize {
        self.reservation.budget_total()
    }
}
