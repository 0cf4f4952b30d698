//! Connection and stream lifecycle against every implementation, each side
//! in turn dialing: a close ends both ends within a round trip plus a
//! bounded grace, a stream shoal drops with data unread (or data arriving
//! after) fails its writer, write-shutdown-drop delivers everything, and a
//! burst of streams opened at once all complete. The peer is shoal itself,
//! crates.io `yamux` 0.14 or `tokio-yamux` 0.3; their own quirks are
//! asserted as documented in `docs/PROTOCOL.md` §5.8, never waited out.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::io;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use common::Impl::{Shoal, TokioYamux, Yamux014};
use common::Side::{Dialer, Listener};
use common::{AnyStream, Impl, Peer, ReadEnd, Side, connect, read_all, write_pattern};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

/// How long a close may take on an in-memory pipe: one round trip plus
/// scheduling, far below the 2 s the driver waits for a silent peer.
const CLOSE_BOUND: Duration = Duration::from_secs(1);
/// Bound of every step expected to complete.
const STEP: Duration = Duration::from_secs(8);

/// The two ends with `shoal` on side `shoal_side` and `other` opposite.
fn pair(shoal_side: Side, other: Impl) -> (Peer, Peer) {
    match shoal_side {
        Dialer => connect(Shoal, other),
        Listener => connect(other, Shoal),
    }
}

/// (shoal's end, the other end) of a pair made by [`pair`].
fn ends(shoal_side: Side, pair: &(Peer, Peer)) -> (&Peer, &Peer) {
    match shoal_side {
        Dialer => (&pair.0, &pair.1),
        Listener => (&pair.1, &pair.0),
    }
}

/// Opens a stream on `opener` and takes it on `acceptor`. The opener's
/// first write (an 8-byte tag) is what announces the stream for `yamux`
/// 0.14; the acceptor reads it.
async fn stream_between(opener: &Peer, acceptor: &Peer) -> (AnyStream, AnyStream) {
    let mut a = opener.open().await;
    a.write_all(&7u64.to_be_bytes()).await.unwrap();
    let mut b = timeout(STEP, acceptor.accept()).await.unwrap();
    let mut tag = [0u8; 8];
    b.read_exact(&mut tag).await.unwrap();
    assert_eq!(u64::from_be_bytes(tag), 7);
    (a, b)
}

// ----- close -----

/// One stream goes both ways, then `closer` closes: both connections end
/// within [`CLOSE_BOUND`], and a shoal end sees a graceful close and its
/// accept ending.
async fn close_by(closer: Side, dialer: Impl, listener: Impl) {
    let (d, l) = connect(dialer, listener);
    let (mut a, mut b) = stream_between(&d, &l).await;
    a.shutdown().await.unwrap();
    let mut rest = Vec::new();
    b.read_to_end(&mut rest).await.unwrap();
    b.write_all(b"ok").await.unwrap();
    b.shutdown().await.unwrap();
    a.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, b"ok");
    drop((a, b));
    let (closing, other) = match closer {
        Dialer => (&d, &l),
        Listener => (&l, &d),
    };
    let started = Instant::now();
    closing.close().await;
    let (closer_ended, other_ended) = tokio::join!(
        closing.ended_within(CLOSE_BOUND),
        other.ended_within(CLOSE_BOUND)
    );
    assert!(
        closer_ended && other_ended,
        "{:?} closing {:?}: closer ended {closer_ended}, other ended {other_ended} after {:?}",
        closing.kind,
        other.kind,
        started.elapsed()
    );
    for peer in [&d, &l] {
        if peer.kind == Shoal {
            let reason = peer.close_reason().unwrap();
            assert!(reason.is_graceful(), "{reason}");
            assert!(peer.try_accept(Duration::from_millis(100)).await.is_none());
        }
    }
}

macro_rules! close_tests {
    ($($name:ident: $closer:expr, $dialer:expr, $listener:expr;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            close_by($closer, $dialer, $listener).await;
        }
    )*};
}

close_tests! {
    close_shoal_closes_shoal: Dialer, Shoal, Shoal;
    close_shoal_dials_and_closes_yamux014: Dialer, Shoal, Yamux014;
    close_yamux014_dials_shoal_closes: Listener, Yamux014, Shoal;
    close_yamux014_closes_on_shoal: Listener, Shoal, Yamux014;
    close_yamux014_dials_and_closes_on_shoal: Dialer, Yamux014, Shoal;
    close_shoal_dials_and_closes_tokio_yamux: Dialer, Shoal, TokioYamux;
    close_tokio_yamux_dials_shoal_closes: Listener, TokioYamux, Shoal;
    close_tokio_yamux_closes_on_shoal: Listener, Shoal, TokioYamux;
    close_tokio_yamux_dials_and_closes_on_shoal: Dialer, TokioYamux, Shoal;
}

// ----- drop -----

/// How the writer of a stream shoal dropped found out.
async fn writer_learns(stream: AnyStream, kind: Impl) {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let sent = AtomicU64::new(0);
    // Write far more than any window, keeping a read pending (tokio-yamux
    // acts on incoming frames only inside a pending read or write).
    let writer = write_pattern(&mut wr, 1, 64 * 1024 * 1024, &sent);
    let reader = async {
        let mut buf = [0u8; 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) => std::future::pending::<()>().await,
                Ok(_) => {}
                Err(e) => return e,
            }
        }
    };
    let told = timeout(STEP, async {
        tokio::select! {
            written = writer => match written {
                Ok(()) => panic!("{kind:?}: 64 MiB written to a dropped stream without an error"),
                Err(e) => e,
            },
            e = reader => e,
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{kind:?} writer never learned the stream was dropped"));
    // yamux 0.14 reports the reset on writes only (§5.8.2); the others and
    // shoal report it as a reset or a broken pipe.
    let expected = match kind {
        Shoal => vec![io::ErrorKind::ConnectionReset],
        Yamux014 => vec![io::ErrorKind::WriteZero],
        TokioYamux => vec![io::ErrorKind::ConnectionReset, io::ErrorKind::BrokenPipe],
    };
    assert!(expected.contains(&told.kind()), "{kind:?}: {told}");
}

/// Shoal drops a stream; `unread`: with received bytes unread, otherwise
/// after reading everything (data arriving later must reset it).
async fn shoal_drop_fails_writer(shoal_side: Side, other: Impl, shoal_opens: bool, unread: bool) {
    let p = pair(shoal_side, other);
    let (shoal, peer) = ends(shoal_side, &p);
    let (mine, mut theirs) = if shoal_opens {
        stream_between(shoal, peer).await
    } else {
        let (t, m) = stream_between(peer, shoal).await;
        (m, t)
    };
    if unread {
        theirs.write_all(b"a reply nobody reads").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(mine);
    writer_learns(theirs, other).await;
    assert!(shoal.close_reason().is_none(), "only the stream ends");
}

macro_rules! drop_tests {
    ($($name:ident: $side:expr, $other:expr, $opens:expr, $unread:expr;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            shoal_drop_fails_writer($side, $other, $opens, $unread).await;
        }
    )*};
}

drop_tests! {
    drop_unread_shoal_peer: Dialer, Shoal, true, true;
    drop_then_data_shoal_peer: Listener, Shoal, false, false;
    drop_unread_yamux014_shoal_dials: Dialer, Yamux014, true, true;
    drop_unread_yamux014_dials: Listener, Yamux014, false, true;
    drop_then_data_yamux014_shoal_dials: Dialer, Yamux014, false, false;
    drop_then_data_yamux014_dials: Listener, Yamux014, true, false;
    drop_unread_tokio_yamux_shoal_dials: Dialer, TokioYamux, true, true;
    drop_unread_tokio_yamux_dials: Listener, TokioYamux, false, true;
}

/// tokio-yamux ignores every frame of a stream after the remote's FIN
/// (§5.8.1, 1), the RST included: when shoal drops a stream it had read to
/// the end (FIN), then resets it as tokio-yamux's data arrives, the
/// tokio-yamux writer sends its remaining window and then waits forever.
async fn drop_then_data_tokio_yamux_writer_hangs(shoal_side: Side, shoal_opens: bool) {
    let p = pair(shoal_side, TokioYamux);
    let (shoal, peer) = ends(shoal_side, &p);
    let (mine, theirs) = if shoal_opens {
        stream_between(shoal, peer).await
    } else {
        let (t, m) = stream_between(peer, shoal).await;
        (m, t)
    };
    drop(mine);
    let (mut rd, mut wr) = tokio::io::split(theirs);
    let sent = AtomicU64::new(0);
    let mut buf = [0u8; 64];
    let outcome = timeout(common::HANG, async {
        tokio::join!(
            write_pattern(&mut wr, 1, 64 * 1024 * 1024, &sent),
            rd.read(&mut buf)
        )
    })
    .await;
    assert!(
        outcome.is_err(),
        "tokio-yamux's writer finished: {outcome:?}"
    );
    let sent = sent.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        sent <= common::WINDOW,
        "{sent} bytes accepted after our FIN"
    );
    assert!(shoal.close_reason().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_then_data_tokio_yamux_shoal_dials_hangs_like_its_bug() {
    drop_then_data_tokio_yamux_writer_hangs(Dialer, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_then_data_tokio_yamux_dials_hangs_like_its_bug() {
    drop_then_data_tokio_yamux_writer_hangs(Listener, true).await;
}

/// Shoal writes 1 MiB, shuts its write side down and drops the stream at
/// once, before the peer read anything: the peer still reads every byte
/// and then a clean end of stream.
async fn shutdown_then_drop_delivers(shoal_side: Side, other: Impl, shoal_opens: bool) {
    const LEN: u64 = 1024 * 1024;
    let p = pair(shoal_side, other);
    let (shoal, peer) = ends(shoal_side, &p);
    let (mut mine, mut theirs) = if shoal_opens {
        stream_between(shoal, peer).await
    } else {
        let (t, m) = stream_between(peer, shoal).await;
        (m, t)
    };
    let sent = AtomicU64::new(0);
    let (read, written) = tokio::join!(
        async {
            let got = AtomicU64::new(0);
            timeout(STEP, read_all(&mut theirs, 3, LEN, &got))
                .await
                .expect("the peer never got everything")
        },
        async {
            write_pattern(&mut mine, 3, LEN, &sent).await.unwrap();
            mine.shutdown().await.unwrap();
            drop(mine);
        }
    );
    let () = written;
    assert!(matches!(read, ReadEnd::Complete), "{other:?}: {read:?}");
}

macro_rules! shutdown_drop_tests {
    ($($name:ident: $side:expr, $other:expr, $opens:expr;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            shutdown_then_drop_delivers($side, $other, $opens).await;
        }
    )*};
}

shutdown_drop_tests! {
    shutdown_drop_shoal_peer: Dialer, Shoal, true;
    shutdown_drop_yamux014_shoal_dials: Dialer, Yamux014, true;
    shutdown_drop_yamux014_dials: Listener, Yamux014, false;
    shutdown_drop_tokio_yamux_shoal_dials: Dialer, TokioYamux, true;
    shutdown_drop_tokio_yamux_dials: Listener, TokioYamux, false;
}

// ----- burst -----

/// Echoes the 8-byte tag of every inbound stream of `peer`.
fn echo_tags(peer: std::sync::Arc<Peer>) {
    tokio::spawn(async move {
        while let Some(mut s) = peer.try_accept(STEP).await {
            tokio::spawn(async move {
                let mut tag = [0u8; 8];
                s.read_exact(&mut tag).await?;
                s.write_all(&tag).await?;
                s.shutdown().await?;
                let mut rest = Vec::new();
                s.read_to_end(&mut rest).await?;
                io::Result::Ok(())
            });
        }
    });
}

/// `opener` opens `n` streams without waiting for any answer, each writing
/// its tag at once (`yamux` 0.14 announces a stream only with its first
/// write, and opens no more than 256 unannounced ones); then each reads its
/// echo. Returns (completed, reset).
async fn burst(opener: &Peer, n: u64) -> (u64, u64) {
    let mut streams = Vec::new();
    for tag in 0..n {
        let mut s = opener.open().await;
        let wrote = s.write_all(&u64::to_be_bytes(tag)).await;
        streams.push((s, wrote));
    }
    let tasks: Vec<_> = streams
        .into_iter()
        .zip(0u64..)
        .map(|((mut s, wrote), tag)| {
            tokio::spawn(async move {
                wrote?;
                let mut echo = [0u8; 8];
                s.read_exact(&mut echo).await?;
                assert_eq!(u64::from_be_bytes(echo), tag);
                s.shutdown().await?;
                io::Result::Ok(())
            })
        })
        .collect();
    let (mut ok, mut reset) = (0, 0);
    for t in tasks {
        match timeout(STEP, t)
            .await
            .expect("a burst stream hung")
            .unwrap()
        {
            Ok(()) => ok += 1,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => reset += 1,
            Err(e) => panic!("burst stream failed: {e}"),
        }
    }
    (ok, reset)
}

/// The other implementation opens `n` streams at once to shoal: shoal
/// accepts every one (its default stream limit is 1024).
async fn burst_into_shoal(shoal_side: Side, other: Impl, n: u64) {
    let (a, b) = pair(shoal_side, other);
    let (a, b) = (std::sync::Arc::new(a), std::sync::Arc::new(b));
    let (shoal, peer) = match shoal_side {
        Dialer => (a, b),
        Listener => (b, a),
    };
    echo_tags(shoal.clone());
    assert_eq!(burst(&peer, n).await, (n, 0), "{other:?} into shoal");
    assert!(shoal.close_reason().is_none());
}

/// Shoal opens `n` streams at once to the other implementation: each
/// completes or is refused with a reset (its own limits), and the
/// connection lives on.
async fn burst_from_shoal(shoal_side: Side, other: Impl, n: u64) -> (u64, u64) {
    let (a, b) = pair(shoal_side, other);
    let (a, b) = (std::sync::Arc::new(a), std::sync::Arc::new(b));
    let (shoal, peer) = match shoal_side {
        Dialer => (a, b),
        Listener => (b, a),
    };
    echo_tags(peer.clone());
    let outcome = burst(&shoal, n).await;
    assert!(
        shoal.close_reason().is_none(),
        "{other:?} ended the connection"
    );
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_1000_shoal_into_shoal() {
    burst_into_shoal(Listener, Shoal, 1000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_1000_tokio_yamux_into_shoal_both_directions() {
    burst_into_shoal(Listener, TokioYamux, 1000).await;
    burst_into_shoal(Dialer, TokioYamux, 1000).await;
}

/// `yamux` 0.14 allows 512 streams per connection (§5.8.2, 2): 500 stay
/// below it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_500_yamux014_into_shoal_both_directions() {
    burst_into_shoal(Listener, Yamux014, 500).await;
    burst_into_shoal(Dialer, Yamux014, 500).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_500_shoal_into_yamux014_both_directions() {
    assert_eq!(burst_from_shoal(Dialer, Yamux014, 500).await, (500, 0));
    assert_eq!(burst_from_shoal(Listener, Yamux014, 500).await, (500, 0));
}

/// tokio-yamux refuses streams beyond its 256-stream accept backlog with a
/// reset; the connection survives and everything it accepted completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_1000_shoal_into_tokio_yamux_both_directions() {
    for side in [Dialer, Listener] {
        let (ok, reset) = burst_from_shoal(side, TokioYamux, 1000).await;
        assert_eq!(ok + reset, 1000);
        assert!(ok >= 256, "{ok} completed");
    }
}
