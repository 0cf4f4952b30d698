//! Partial frames: a peer that declares a large frame and stalls costs
//! memory in proportion to the bytes it actually sent, and all streams
//! sharing a receive budget hold at most that budget beyond their floors.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod common;

use std::{
    io,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use common::{Rng, Tap, config, handshake_pair, stream_error};
use shoal_secio::{
    CipherSuite::ChaChaPoly,
    Config, MAX_RECEIVE_BUDGET_WAIT, RECEIVE_BUFFER_FLOOR, ReceiveBudget, SecureStream,
    StreamError,
    frame::{MAX_FRAME_PLAINTEXT, MAX_FRAME_WIRE_LEN},
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};

type Attacker = SecureStream<Tap<DuplexStream>>;
type Victim = SecureStream<DuplexStream>;

/// Budget bytes one stream needs to hold a maximal frame.
const FRAME_OVER_FLOOR: usize = MAX_FRAME_WIRE_LEN - RECEIVE_BUFFER_FLOOR;

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

#[tokio::test(start_paused = true)]
async fn stalled_partial_frames_stay_within_the_shared_budget() {
    let budget = ReceiveBudget::new(2 * FRAME_OVER_FLOOR);
    let attacker = config(&[ChaChaPoly]);
    let victim = config(&[ChaChaPoly]).with_receive_budget(budget.clone());
    let mut sessions = Vec::new();
    for seed in 0..4 {
        let (mut a, b) = session(&attacker, &victim).await;
        let (frame, plaintext) = sealed_frame(&mut a, seed).await;
        sessions.push((a, b, frame, plaintext));
    }
    // Every attacker sends its frame but the last byte, and stalls.
    for (a, b, frame, _) in &mut sessions {
        send_raw(a, &frame[..frame.len() - 1]).await;
        let mut got = Vec::new();
        drain(b, &mut got).await.unwrap();
        assert!(got.is_empty());
    }
    let held: Vec<usize> = sessions
        .iter()
        .map(|(_, b, _, _)| b.receive_buffer_capacity())
        .collect();
    assert!(budget.in_use() <= budget.total());
    assert!(
        held.iter().sum::<usize>() <= 4 * RECEIVE_BUFFER_FLOOR + budget.total(),
        "held {held:?} with a budget of {}",
        budget.total()
    );
    assert_eq!(
        held.iter()
            .filter(|&&h| h >= MAX_FRAME_WIRE_LEN - 1)
            .count(),
        2,
        "the budget holds two stalled frames; the others wait: {held:?}"
    );

    // A stalled stream is dropped: its bytes return to the budget and a
    // waiting stream resumes, finishes its frame and reads it intact.
    let waiting = held
        .iter()
        .position(|&h| h < MAX_FRAME_WIRE_LEN - 1)
        .unwrap();
    let full = held
        .iter()
        .position(|&h| h >= MAX_FRAME_WIRE_LEN - 1)
        .unwrap();
    let (a, b, _, _) = sessions.remove(full);
    drop((a, b));
    let (a, b, frame, plaintext) = &mut sessions[waiting - usize::from(waiting > full)];
    send_raw(a, &frame[frame.len() - 1..]).await;
    let mut got = Vec::new();
    drain(b, &mut got).await.unwrap();
    assert_eq!(&got, plaintext);

    // Closing every stream gives every byte back.
    drop(sessions);
    assert_eq!(budget.in_use(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_stream_waiting_too_long_for_the_budget_fails_clearly() {
    let budget = ReceiveBudget::new(FRAME_OVER_FLOOR);
    let attacker = config(&[ChaChaPoly]);
    let victim = config(&[ChaChaPoly]).with_receive_budget(budget.clone());
    let (mut a1, mut b1) = session(&attacker, &victim).await;
    let (mut a2, mut b2) = session(&attacker, &victim).await;
    let (f1, _) = sealed_frame(&mut a1, 1).await;
    let (f2, _) = sealed_frame(&mut a2, 2).await;
    send_raw(&mut a1, &f1[..f1.len() - 1]).await;
    drain(&mut b1, &mut Vec::new()).await.unwrap();
    assert_eq!(budget.available(), 0, "the first stall holds the budget");

    send_raw(&mut a2, &f2[..f2.len() - 1]).await;
    let started = tokio::time::Instant::now();
    let mut buf = vec![0u8; 70_000];
    let e = b2.read(&mut buf).await.unwrap_err();
    assert_eq!(started.elapsed(), MAX_RECEIVE_BUDGET_WAIT);
    assert_eq!(e.kind(), std::io::ErrorKind::OutOfMemory);
    assert!(matches!(
        stream_error(&e),
        Some(StreamError::ReceiveBudgetExhausted(_))
    ));
    assert_eq!(
        b2.receive_buffer_capacity(),
        0,
        "a failed stream frees its buffer"
    );
    assert_eq!(budget.in_use(), FRAME_OVER_FLOOR);
    drop(b1);
    assert_eq!(budget.in_use(), 0);
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
    let budget = ReceiveBudget::new(FRAME_OVER_FLOOR);
    let victim = config(&[ChaChaPoly])
        .with_max_handshake_message(65_535)
        .with_receive_budget(budget.clone());
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
    let mut sent = 0;
    for chunk in [100, 10_000, 30_000] {
        x.write_all(&vec![1u8; chunk]).await.unwrap();
        sent += chunk;
        tokio::time::sleep(Duration::from_millis(10)).await;
        for &(delivered, offered) in reads.lock().unwrap().iter() {
            assert!(
                offered <= RECEIVE_BUFFER_FLOOR.max(2 * delivered),
                "{offered} bytes of buffer offered after {delivered} received"
            );
        }
        // Past the floor the rest of the message is reserved.
        let reserved = budget.in_use();
        if sent > RECEIVE_BUFFER_FLOOR {
            assert_eq!(reserved, 65_535 - RECEIVE_BUFFER_FLOOR);
        } else {
            assert_eq!(reserved, 0);
        }
    }
    drop(x);
    assert!(handshake.await.unwrap().is_err());
    assert_eq!(
        budget.in_use(),
        0,
        "a failed handshake gives the budget back"
    );
}
