//! In-memory plumbing for the secure-stream target.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use shoal_identity::Keypair;
use shoal_secio::{
    HandshakeOutcome, InitiatorHandshake, ResponderHandshake, SecureStream,
    handshake::{InitiatorStep, ResponderStep},
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// Runs both handshake roles against each other without I/O; returns the
/// responder's outcome.
pub(crate) fn handshake_in_memory() -> Option<HandshakeOutcome> {
    let initiator = shoal_secio::Config::new(Keypair::from_secret_bytes(&[3; 32]));
    let responder = shoal_secio::Config::new(Keypair::from_secret_bytes(&[4; 32]));
    let (init, hello) = InitiatorHandshake::start(&initiator, None).ok()?;
    let ResponderStep::Send {
        next: resp,
        message,
    } = ResponderHandshake::new(&responder, None)
        .handle(&hello)
        .ok()?
    else {
        return None;
    };
    let InitiatorStep::Complete { message: last, .. } = init.handle(&message).ok()? else {
        return None;
    };
    match resp.handle(&last).ok()? {
        ResponderStep::Complete(outcome) => Some(outcome),
        _ => None,
    }
}

/// A transport whose incoming bytes are fixed and whose writes vanish.
struct Scripted<'a> {
    incoming: &'a [u8],
}

impl AsyncRead for Scripted<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = self.incoming.len().min(buf.remaining());
        buf.put_slice(&self.incoming[..n]);
        self.incoming = &self.incoming[n..];
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Scripted<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Reads the secure stream until it fails or ends. `Scripted` never returns
/// `Pending`, so a trivial executor suffices.
pub(crate) fn read_secure_stream(outcome: HandshakeOutcome, incoming: &[u8]) {
    let mut stream = SecureStream::new(Scripted { incoming }, outcome);
    futures::executor::block_on(async {
        let mut buf = vec![0u8; 8192];
        // Each successful read consumes input, so this ends; the bound is a
        // second guard.
        for _ in 0..=incoming.len() {
            match stream.read(&mut buf).await {
                Ok(1..) => {}
                _ => break,
            }
        }
    });
}
