//! Interoperability with `tokio-yamux` 0.3 (tentacle), each side in turn
//! dialing, streams opened by both sides, 10 MiB each way per stream (every
//! byte checked), half-close and resets by either side.
//!
//! Where a bug of tokio-yamux blocks a scenario, a test shows two copies of
//! tokio-yamux hang the same way and that we hang identically opposite it,
//! with the exact number of bytes that got through. Scenario vocabulary:
//! `tests/common/mod.rs`; findings: `docs/PROTOCOL.md` §5.8,
//! "Interoperability".

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use common::Impl::{Shoal, TokioYamux};
use common::Side::{Dialer, Listener};
use common::{
    HANG, Impl, LEN, Progress, STREAMS, Side, WINDOW, assert_all_clean, assert_reset_outcome,
    completes, connect, exchange, half_close, hangs, reset_by, tag_bytes, write_only,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

// ----- exchange: 2 streams opened by each side, 10 MiB both ways each -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_shoal_dials_tokio_yamux() {
    assert_all_clean(&completes(Shoal, TokioYamux, exchange()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_tokio_yamux_dials_shoal() {
    assert_all_clean(&completes(TokioYamux, Shoal, exchange()).await);
}

// ----- half-close: one side sends 10 MiB + FIN, the other reads to EOF,
// then sends its 10 MiB + FIN -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_tokio_yamux_fins_first_shoal_dials() {
    assert_all_clean(&completes(Shoal, TokioYamux, half_close(Listener)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_tokio_yamux_fins_first_tokio_yamux_dials() {
    assert_all_clean(&completes(TokioYamux, Shoal, half_close(Dialer)).await);
}

/// The end that received FIN first (`stalled`) got all [`LEN`] bytes, then
/// sent exactly what was left of its 256 KiB window (the opener's 8-byte
/// tag used some) and nothing more; the other end got exactly that.
fn assert_stalled_after_fin(p: &Progress, stalled: Side) {
    let first = stalled.other();
    for index in 0..STREAMS as u64 {
        let left = WINDOW - tag_bytes(stalled, index);
        assert_eq!(p.sent(first, index), LEN, "stream {index}");
        assert_eq!(p.received(stalled, index), LEN, "stream {index}");
        assert_eq!(p.sent(stalled, index), left, "stream {index}");
        assert_eq!(p.received(first, index), left, "stream {index}");
    }
}

/// tokio-yamux bug: once it has received FIN it ignores WindowUpdates, so
/// it can send only the window it had left. Between two copies of
/// tokio-yamux the stream hangs after that many bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_yamux_after_fin_sends_only_its_window_between_two_copies() {
    let progress = hangs(TokioYamux, TokioYamux, half_close(Dialer)).await;
    assert_stalled_after_fin(&progress, Listener);
}

/// …and opposite us it hangs identically (the bug is on its side).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_shoal_fins_first_shoal_dials_hangs_like_tokio_yamux() {
    let progress = hangs(Shoal, TokioYamux, half_close(Dialer)).await;
    assert_stalled_after_fin(&progress, Listener);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_shoal_fins_first_tokio_yamux_dials_hangs_like_tokio_yamux() {
    let progress = hangs(TokioYamux, Shoal, half_close(Listener)).await;
    assert_stalled_after_fin(&progress, Dialer);
}

// ----- reset mid-transfer (after 1 MiB each way) on one stream opened by
// each side, beside two full 10 MiB exchanges; new streams work after -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_by_shoal_shoal_dials() {
    assert_reset_outcome(&completes(Shoal, TokioYamux, reset_by(Dialer)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_by_tokio_yamux_shoal_dials() {
    assert_reset_outcome(&completes(Shoal, TokioYamux, reset_by(Listener)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_by_shoal_tokio_yamux_dials() {
    assert_reset_outcome(&completes(TokioYamux, Shoal, reset_by(Listener)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_by_tokio_yamux_tokio_yamux_dials() {
    assert_reset_outcome(&completes(TokioYamux, Shoal, reset_by(Dialer)).await);
}

// ----- write-only streams (no read pending while writing) -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shoal_write_only_streams_to_tokio_yamux() {
    assert_all_clean(&completes(Shoal, TokioYamux, write_only(Dialer)).await);
    assert_all_clean(&completes(TokioYamux, Shoal, write_only(Listener)).await);
}

/// The writer sent no more than its window (plus at most one update that
/// slipped in while it was still writing; observed: exactly the window),
/// and the reader got all of it, then nothing.
fn assert_write_only_stalled(p: &Progress, writer: Side) {
    for index in 0..STREAMS as u64 {
        let sent = p.sent(writer, index);
        assert!(sent > 0 && sent <= 2 * WINDOW, "stream {index}: {sent}");
        assert_eq!(p.received(writer.other(), index), sent, "stream {index}");
    }
}

/// tokio-yamux bug: a stream processes incoming frames (WindowUpdates
/// included) only inside `poll_read`/`poll_write`, and a `poll_write`
/// blocked on the window is woken only through a pending read. A stream
/// that is only written therefore stalls after the 256 KiB window, between
/// two copies of tokio-yamux too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_yamux_write_only_stream_stalls_between_two_copies() {
    let progress = hangs(TokioYamux, TokioYamux, write_only(Dialer)).await;
    assert_write_only_stalled(&progress, Dialer);
}

/// …and identically when we are the reader (the bug is on its side).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_yamux_write_only_stream_stalls_with_shoal_reader() {
    let progress = hangs(TokioYamux, Shoal, write_only(Dialer)).await;
    assert_write_only_stalled(&progress, Dialer);
    let progress = hangs(Shoal, TokioYamux, write_only(Listener)).await;
    assert_write_only_stalled(&progress, Listener);
}

// ----- one unread stream vs the whole connection -----

/// The dialer writes 32 × 1 KiB (32 Data frames) on a stream the listener
/// accepts but never reads, then opens a second stream carrying "hello".
/// Returns whether "hello" and EOF arrived within [`HANG`].
async fn second_stream_gets_through(dialer: Impl, listener: Impl) -> bool {
    let (d, l) = connect(dialer, listener);
    let mut unread = d.open().await;
    for _ in 0..32 {
        unread.write_all(&[1u8; 1024]).await.unwrap();
    }
    let _held = l.accept().await;
    timeout(HANG, async {
        let mut s = d.open().await;
        s.write_all(b"hello").await.unwrap();
        s.shutdown().await.unwrap();
        let mut t = l.accept().await;
        let mut got = Vec::new();
        t.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hello");
    })
    .await
    .is_ok()
}

/// tokio-yamux limitation: each stream has a queue of 8 frames; when an
/// unread stream's queue is full the session stops reading the transport,
/// so every other stream stalls too. It happens between two copies of
/// tokio-yamux and with us as the sender (we send one Data frame per write
/// call), never with us as the receiver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_tokio_yamux_stream_stalls_its_whole_session() {
    let (two_copies, shoal_sender, shoal_receiver) = tokio::join!(
        second_stream_gets_through(TokioYamux, TokioYamux),
        second_stream_gets_through(Shoal, TokioYamux),
        second_stream_gets_through(TokioYamux, Shoal),
    );
    assert!(!two_copies, "tokio-yamux ↔ tokio-yamux did not stall");
    assert!(!shoal_sender, "shoal → tokio-yamux did not stall");
    assert!(
        shoal_receiver,
        "an unread shoal stream stalled the connection"
    );
}
