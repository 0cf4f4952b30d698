//! [`SecureStream`]: the encrypted byte stream a handshake produces.
//!
//! ```text
//! poll_write(plaintext) ─▶ seal whole frames ─▶ write buffer (≤ 256 KiB) ─▶ socket
//! poll_read(ReadBuf)    ◀─ open frames ◀─ read buffer (≤ 256 KiB) ◀─ socket
//!                          (straight into the caller's buffer when a whole
//!                           frame fits, else via a plaintext buffer)
//! ```
//!
//! Buffers start at 8 KiB, grow with the traffic and are freed when the
//! stream goes quiet (see `buffer.rs`), so an idle stream holds next to no
//! memory while a busy one neither allocates nor zeroes memory in the
//! steady state.

mod buffer;
mod read;
mod write;

/// Receive-buffer bytes each stream may hold without drawing on its
/// [`ReceiveBudget`](crate::ReceiveBudget): the first size of a receive
/// buffer (8 KiB), enough for the small frames of an interactive
/// connection. A larger frame grows the buffer only as its bytes arrive.
/// Keeps small frames (pings, acknowledgements) flowing on every stream
/// while the budget is spent.
pub const RECEIVE_BUFFER_FLOOR: usize = 8 * 1024;

use std::{
    fmt, io,
    pin::Pin,
    task::{Context, Poll},
};

use shoal_identity::{PeerId, PublicKey};
use snow::TransportState;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::{handshake::HandshakeOutcome, suite::CipherSuite};

use self::{read::ReadState, write::WriteState};

/// An authenticated, encrypted byte stream over `IO`.
///
/// Writes are cut into frames of at most 65535 − 16 bytes of plaintext and
/// sealed; frames are buffered and written to `IO` in large chunks, so call
/// `flush` (as with any buffered writer) when the peer must see the data.
/// A frame that fails to authenticate (corruption, replay, reordering) is
/// fatal: that read and every later one fail with
/// [`io::ErrorKind::InvalidData`] carrying a [`StreamError`](crate::StreamError).
pub struct SecureStream<IO> {
    io: IO,
    transport: TransportState,
    remote: PublicKey,
    suite: CipherSuite,
    read: ReadState,
    write: WriteState,
}

impl<IO> SecureStream<IO> {
    /// Wraps `io` with the keys of a completed handshake. Use this with the
    /// sans-IO [`handshake`](crate::handshake) core; the tokio drivers
    /// ([`handshake_outbound`](crate::handshake_outbound),
    /// [`handshake_inbound`](crate::handshake_inbound)) call it for you.
    pub fn new(io: IO, outcome: HandshakeOutcome) -> SecureStream<IO> {
        let remote = outcome.remote_public_key();
        let suite = outcome.cipher_suite();
        let budget = outcome.receive_budget().clone();
        SecureStream {
            io,
            transport: outcome.into_transport(),
            remote,
            suite,
            read: ReadState::new(budget),
            write: WriteState::new(),
        }
    }

    /// The authenticated peer id of the remote.
    pub fn remote_peer(&self) -> PeerId {
        self.remote.peer_id()
    }

    /// The authenticated identity key of the remote.
    pub fn remote_public_key(&self) -> PublicKey {
        self.remote
    }

    /// The cipher suite in use.
    pub fn cipher_suite(&self) -> CipherSuite {
        self.suite
    }

    /// Bytes of buffer memory the stream holds right now (ciphertext and
    /// plaintext, both directions). Near zero while the stream is idle;
    /// up to about 580 KiB during a bulk transfer.
    pub fn buffer_memory(&self) -> usize {
        self.read.buffer_memory() + self.write.buffer_memory()
    }

    /// Bytes of memory held by the receive side's ciphertext buffer: the
    /// frame being received (and any read-ahead). Grows with the bytes that
    /// arrive, never with the length a frame header declares; zero while
    /// the stream is idle. For tests and monitoring.
    pub fn receive_buffer_capacity(&self) -> usize {
        self.read.ciphertext_capacity()
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    /// The underlying stream, mutably. Reading or writing it directly
    /// corrupts the secure stream; use it for socket options.
    pub fn get_mut(&mut self) -> &mut IO {
        &mut self.io
    }

    /// Returns the underlying stream. Buffered data (received but unread,
    /// written but unflushed) is lost.
    pub fn into_inner(self) -> IO {
        self.io
    }
}

impl<IO> fmt::Debug for SecureStream<IO> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecureStream")
            .field("remote", &self.remote.peer_id())
            .field("suite", &self.suite)
            .finish_non_exhaustive()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for SecureStream<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.read
            .poll_read(cx, &mut this.io, &mut this.transport, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for SecureStream<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.write
            .poll_write(cx, &mut this.io, &mut this.transport, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.write.poll_flush(cx, &mut this.io)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.write.poll_shutdown(cx, &mut this.io)
    }
}

#[cfg(test)]
mod tests {
    /// Callers move streams across tasks and share them behind locks; the
    /// receive-budget wait a stream may hold must not take that away.
    #[test]
    fn secure_stream_is_send_and_sync() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<super::SecureStream<tokio::io::DuplexStream>>();
    }
}
