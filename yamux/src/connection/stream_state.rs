//! Per-stream state: receive buffer and window, send credit, half-close flags.

use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};

use crate::config::INITIAL_WINDOW;
use crate::frame::Flags;

/// State of one live stream inside the connection core.
#[derive(Debug)]
pub(crate) struct StreamState {
    /// Arrived payload not yet read by the application. Payloads are copied
    /// in (rather than kept as slices of the connection's read buffer) so
    /// the read buffer is reused for every read and this buffer is reused
    /// across reads: a busy stream allocates nothing in the steady state.
    recv_buf: BytesMut,
    /// Bytes announced by received Data headers and not yet read. Counts the
    /// body of a frame still being received, so window arithmetic never
    /// hands out credit for bytes already on their way.
    pub(crate) unread: u32,
    /// Current receive window (grows by auto-tuning).
    pub(crate) recv_window: u32,
    /// Credit the remote still has: bytes it may send before our next update.
    pub(crate) recv_credit: u32,
    /// When we last granted credit (or the stream was created).
    pub(crate) last_update: Instant,
    /// The remote half-closed (FIN received and its body fully arrived).
    pub(crate) remote_fin: bool,
    /// Bytes we may still send.
    pub(crate) send_credit: u32,
    /// We half-closed (FIN queued).
    pub(crate) local_fin: bool,
    /// SYN or ACK still owed on our next frame for this stream.
    pub(crate) pending_flag: Flags,
    /// A write was cut short; tell the application when it may retry.
    pub(crate) write_blocked: bool,
    /// The application read since the last Readable event.
    pub(crate) notify_readable: bool,
    /// The application dropped its handle: data arriving resets the stream;
    /// no events are raised for it.
    pub(crate) dropped: bool,
}

impl StreamState {
    /// A stream whose remote already knows the 256 KiB initial windows.
    pub(crate) fn new(now: Instant, send_credit: u32, pending_flag: Flags) -> Self {
        StreamState {
            recv_buf: BytesMut::new(),
            unread: 0,
            recv_window: INITIAL_WINDOW,
            recv_credit: INITIAL_WINDOW,
            last_update: now,
            remote_fin: false,
            send_credit,
            local_fin: false,
            pending_flag,
            write_blocked: false,
            notify_readable: true,
            dropped: false,
        }
    }

    /// Appends arrived payload.
    pub(crate) fn push(&mut self, chunk: &[u8]) {
        self.recv_buf.extend_from_slice(chunk);
    }

    /// The application dropped its handle (with nothing left unread).
    pub(crate) fn mark_dropped(&mut self) {
        self.dropped = true;
        self.recv_buf = BytesMut::new();
        self.notify_readable = false;
    }

    /// Whether arrived bytes are waiting.
    pub(crate) fn has_data(&self) -> bool {
        !self.recv_buf.is_empty()
    }

    /// Copies arrived bytes into `buf`; returns how many.
    pub(crate) fn read_into(&mut self, buf: &mut [u8]) -> usize {
        let n = self.recv_buf.len().min(buf.len());
        buf[..n].copy_from_slice(&self.recv_buf[..n]);
        self.recv_buf.advance(n);
        self.consume(n);
        n
    }

    /// Takes up to `max` arrived bytes as one chunk without copying.
    pub(crate) fn read_chunk(&mut self, max: usize) -> Option<Bytes> {
        if self.recv_buf.is_empty() {
            return None;
        }
        let n = self.recv_buf.len().min(max);
        let chunk = self.recv_buf.split_to(n).freeze();
        self.consume(n);
        Some(chunk)
    }

    fn consume(&mut self, n: usize) {
        // `n` never exceeds what arrived, which never exceeds `unread`.
        self.unread = self
            .unread
            .saturating_sub(u32::try_from(n).unwrap_or(u32::MAX));
    }

    /// Credit we could grant now without letting unread bytes exceed the window.
    pub(crate) fn grantable(&self) -> u32 {
        self.recv_window
            .saturating_sub(self.unread)
            .saturating_sub(self.recv_credit)
    }

    /// Both directions are finished and everything was read.
    pub(crate) fn is_done(&self) -> bool {
        self.local_fin && self.remote_fin && self.unread == 0
    }

    /// Takes the SYN/ACK owed on the next frame.
    pub(crate) fn take_flag(&mut self) -> Flags {
        std::mem::take(&mut self.pending_flag)
    }
}
