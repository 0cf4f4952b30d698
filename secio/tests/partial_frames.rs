//! Partial frames: a peer that declares a large frame and stalls costs
//! memory in proportion to the bytes it actually sent.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod common;

use std::{
    io,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use common::{Rng, Tap, config, handshake_pair};
use shoal_secio::{
    CipherSuite::ChaChaPoly,
    Config, RECEIVE_BUFFER_FLOOR, SecureStream,
    frame::{MAX_FRAME_PLAINTEXT, MAX_FRAME_WIRE_LEN},
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};

type Attacker = SecureStream<Tap<DuplexStream>>;
type Victim = SecureStream<DuplexStream>;

/// One session whose initiator (the "attacker") can also write raw bytes.
async fn session(attacker: &Config, victim: &Config) -> (Attacker, Victim) {
    let (x, y) = tokio::io::duplex(1 << 20);
    let (a, b) = handshake_pair(Tap::new(x), y, attacker, victim).await;
    (a.unwrap(), b.unwrap())
}

/// A maximal frame sealed by `a`, as it goes on the wire, and its plaintext.
async fn sealed_frame(a: &mut Attacker, seed: u64) -> (Vec<u8>, Vec<u8>) {
    let plaintext = Rng::new(seed).bytes(MAX_FRAME_PLAINTEXT);
    a.get_mut().capture = true;
    a.write_all(&plaintext).await.unwrap();
    a.flush().await.unwrap();
    a.get_mut().capture = false;
    let wire = std::mem::take(&mut a.get_mut().captured);
    assert_eq!(wire.len(), MAX_FRAME_WIRE_LEN);
    assert_eq!(wire[..2], [0xff, 0xff], "declares a maximal body");
    (wire, plaintext)
}

/// Writes raw bytes to the victim, past the attacker's secure stream.
async fn send_raw(a: &mut Attacker, bytes: &[u8]) {
    a.get_mut().write_all(bytes).await.unwrap();
}

/// Lets `b` read until it has nothing more to do (time is paused, so the
/// short timeout only fires once everything is idle).
async fn drain(b: &mut Victim, got: &mut Vec<u8>) -> std::io::Result<()> {
    let mut buf = vec![0u8; 70_000];
    loop {
        match tokio::time::timeout(Duration::from_millis(10), b.read(&mut buf)).await {
            Err(_) | Ok(Ok(0)) => return Ok(()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => return Err(e),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn receive_buffer_grows_with_bytes_received_not_with_the_declared_length() {
    let c = config(&[ChaChaPoly]);
    let (mut a, mut b) = session(&c, &c).await;
    let (frame, plaintext) = sealed_frame(&mut a, 1).await;
    let mut got = Vec::new();
    let mut sent = 0;
    for upto in [
        12,
        1000,
        8 * 1024,
        10_000,
        20_000,
        40_000,
        MAX_FRAME_WIRE_LEN - 1,
    ] {
        send_raw(&mut a, &frame[sent..upto]).await;
        sent = upto;
        drain(&mut b, &mut got).await.unwrap();
        assert!(got.is_empty(), "the frame is not complete yet");
        let held = b.receive_buffer_capacity();
        assert!(held >= sent, "holds what it received");
        assert!(
            held <= RECEIVE_BUFFER_FLOOR.max(2 * sent),
            "{held} bytes held for {sent} received"
        );
        assert!(held <= MAX_FRAME_WIRE_LEN, "never more than the frame");
    }
    send_raw(&mut a, &frame[sent..]).await;
    drain(&mut b, &mut got).await.unwrap();
    assert_eq!(got, plaintext);
    assert!(b.receive_buffer_capacity() <= MAX_FRAME_WIRE_LEN);
}

/// A pipe end that records, for every read, the bytes delivered before it
/// and the buffer space the reader offered.
struct Offered {
    inner: DuplexStream,
    delivered: usize,
    reads: Arc<Mutex<Vec<(usize, usize)>>>,
}

impl AsyncRead for Offered {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let (delivered, offered) = (self.delivered, buf.remaining());
        self.reads.lock().unwrap().push((delivered, offered));
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.delivered += buf.filled().len() - before;
        result
    }
}

impl AsyncWrite for Offered {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[tokio::test(start_paused = true)]
async fn handshake_messages_grow_with_bytes_received() {
    let victim = config(&[ChaChaPoly]).with_max_handshake_message(65_535);
    let (mut x, y) = tokio::io::duplex(1 << 20);
    let reads = Arc::new(Mutex::new(Vec::new()));
    let io = Offered {
        inner: y,
        delivered: 0,
        reads: reads.clone(),
    };
    let handshake = tokio::spawn(async move { shoal_secio::handshake_inbound(io, &victim).await });
    // A maximal declared length, then some of the body at a time.
    x.write_all(&[0xff, 0xff]).await.unwrap();
    for chunk in [100, 10_000, 30_000] {
        x.write_all(&vec![1u8; chunk]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        for &(delivered, offered) in reads.lock().unwrap().iter() {
            assert!(
                offered <= RECEIVE_BUFFER_FLOOR.max(2 * delivered),
                "{offered} bytes of buffer offered after {delivered} received"
            );
        }
    }
    drop(x);
    assert!(handshake.await.unwrap().is_err());
}
