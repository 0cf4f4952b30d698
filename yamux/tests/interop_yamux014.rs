//! Interoperability with crates.io `yamux` 0.14 (rust-libp2p), each side in
//! turn dialing, streams opened by both sides, 10 MiB each way per stream
//! (every byte checked), half-close in both orders and resets by either side.
//! Scenario vocabulary: `tests/common/mod.rs`; findings:
//! `docs/PROTOCOL.md` §5.8, "Interoperability".

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::time::Duration;

use common::Impl::{Shoal, Yamux014};
use common::Side::{Dialer, Listener};
use common::{
    assert_all_clean, assert_reset_outcome, completes, connect, exchange, half_close, reset_by,
    write_only,
};
use shoal_yamux::{ConnectionError, GoAwayCode};
use tokio::io::AsyncWriteExt;
use tokio::time::timeout;

// ----- exchange: 2 streams opened by each side, 10 MiB both ways each -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_shoal_dials_yamux014() {
    assert_all_clean(&completes(Shoal, Yamux014, exchange()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_yamux014_dials_shoal() {
    assert_all_clean(&completes(Yamux014, Shoal, exchange()).await);
}

// ----- half-close: one side sends 10 MiB + FIN, the other reads to EOF,
// then sends its 10 MiB + FIN -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_shoal_fins_first_shoal_dials() {
    assert_all_clean(&completes(Shoal, Yamux014, half_close(Dialer)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_yamux014_fins_first_shoal_dials() {
    assert_all_clean(&completes(Shoal, Yamux014, half_close(Listener)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_shoal_fins_first_yamux014_dials() {
    assert_all_clean(&completes(Yamux014, Shoal, half_close(Listener)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_yamux014_fins_first_yamux014_dials() {
    assert_all_clean(&completes(Yamux014, Shoal, half_close(Dialer)).await);
}

// ----- reset mid-transfer (after 1 MiB each way) on one stream opened by
// each side, beside two full 10 MiB exchanges; new streams work after -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_by_shoal_shoal_dials() {
    assert_reset_outcome(&completes(Shoal, Yamux014, reset_by(Dialer)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_by_yamux014_shoal_dials() {
    assert_reset_outcome(&completes(Shoal, Yamux014, reset_by(Listener)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_by_shoal_yamux014_dials() {
    assert_reset_outcome(&completes(Yamux014, Shoal, reset_by(Listener)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_by_yamux014_yamux014_dials() {
    assert_reset_outcome(&completes(Yamux014, Shoal, reset_by(Dialer)).await);
}

/// `yamux` 0.14 reports a remote reset to its reader as end-of-stream
/// (`Ok(0)`), not as an error, and its writer gets `WriteZero`. Two copies
/// of it do exactly the same, so the quirk is theirs, not ours.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yamux014_reports_reset_as_eof_between_two_copies_too() {
    assert_reset_outcome(&completes(Yamux014, Yamux014, reset_by(Dialer)).await);
}

// ----- write-only streams (no read pending while writing) -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_only_streams_in_every_direction() {
    for (dialer, listener) in [(Shoal, Yamux014), (Yamux014, Shoal)] {
        for writer in [Dialer, Listener] {
            assert_all_clean(&completes(dialer, listener, write_only(writer)).await);
        }
    }
}

// ----- stream limit -----

/// `yamux` 0.14 allows 512 streams per connection and answers a 513th
/// inbound stream by closing the whole connection with GoAway (internal or
/// protocol error, depending on the frame that carried the SYN). Between two copies the connection dies too: the dialer's 513th
/// `poll_new_outbound` fails with "maximum number of streams reached" and
/// takes its own connection down. Keep concurrent streams towards it below
/// 512 (our `max_concurrent_streams` defaults to 1024).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yamux014_closes_connection_on_513th_inbound_stream() {
    const LIMIT: usize = 512;
    timeout(Duration::from_secs(30), async {
        let (d, l) = connect(Shoal, Yamux014);
        let mut held = Vec::new();
        for _ in 0..LIMIT {
            let mut s = d.open().await;
            s.write_all(b"x").await.unwrap();
            held.push((s, l.accept().await));
        }
        // The 513th. Its SYN rides on a WindowUpdate or (if the write
        // comes first) on a Data frame; yamux 0.14 answers the first with
        // GoAway(protocol error), the second with GoAway(internal error).
        let mut s = d.open().await;
        let _ = s.write_all(b"x").await;
        for _ in 0..1000 {
            if d.close_reason().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            matches!(
                d.close_reason(),
                Some(ConnectionError::RemoteGoAway(
                    GoAwayCode::InternalError | GoAwayCode::ProtocolError
                ))
            ),
            "{:?}",
            d.close_reason()
        );

        // Two copies: the dialer refuses the 513th stream and closes its
        // own connection. (Its acceptor must write so the ACKs go out:
        // `yamux` 0.14 stops opening at 256 unacknowledged streams and
        // acknowledges only with its first frame.)
        let (d, l) = connect(Yamux014, Yamux014);
        let mut held = Vec::new();
        for _ in 0..LIMIT {
            let mut s = d.open().await;
            s.write_all(b"x").await.unwrap();
            let mut t = l.accept().await;
            t.write_all(b"a").await.unwrap();
            held.push((s, t));
        }
        let refused = d.try_open().await.err().expect("513th stream opened");
        assert!(refused.contains("maximum number of streams"), "{refused}");
        let (mut s, _t) = held.pop().unwrap();
        let err = s.write_all(b"y").await.expect_err("connection survived");
        assert_eq!(err.kind(), std::io::ErrorKind::WriteZero);
    })
    .await
    .expect("timed out");
}
