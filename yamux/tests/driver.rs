//! Integration tests of the tokio driver over in-memory duplex pipes.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::time::Duration;

use shoal_yamux::{Config, ConnectionError, Control, Driver, Mode, Stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::task::JoinHandle;
use tokio::time::timeout;

type DriverTask = JoinHandle<Result<(), ConnectionError>>;

/// A connected client/server pair with spawned drivers.
fn pair_with(config: Config, pipe: usize) -> (Control, Control, DriverTask, DriverTask) {
    let (a, b) = tokio::io::duplex(pipe);
    let (cd, client) = Driver::new(a, config.clone(), Mode::Client);
    let (sd, server) = Driver::new(b, config, Mode::Server);
    (client, server, tokio::spawn(cd), tokio::spawn(sd))
}

fn pair() -> (Control, Control, DriverTask, DriverTask) {
    pair_with(Config::default(), 256 * 1024)
}

fn pattern(seed: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(31).wrapping_add(seed * 7)) as u8)
        .collect()
}

/// Echoes every inbound stream: reads chunks and writes them back, then
/// finishes after EOF.
fn spawn_echo_server(server: Control) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok(mut stream) = server.accept_stream().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = stream.read(&mut buf).await?;
                    if n == 0 {
                        break;
                    }
                    stream.write_all(&buf[..n]).await?;
                }
                stream.shutdown().await?;
                std::io::Result::Ok(())
            });
        }
    })
}

async fn echo_once(stream: Stream, data: Vec<u8>) -> std::io::Result<()> {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let len = data.len();
    let writer = tokio::spawn(async move {
        wr.write_all(&data).await?;
        wr.shutdown().await?;
        std::io::Result::Ok((wr, data))
    });
    let mut echoed = Vec::with_capacity(len);
    rd.read_to_end(&mut echoed).await?;
    let (_wr, data) = writer.await.expect("writer task")?;
    assert_eq!(echoed.len(), data.len());
    assert!(echoed == data, "echoed bytes differ");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_streams_echo_one_mib_each() {
    let (client, server, _cd, _sd) = pair();
    spawn_echo_server(server);
    let mut tasks = Vec::new();
    for i in 0..100 {
        let stream = client.open_stream().await.unwrap();
        tasks.push(tokio::spawn(echo_once(stream, pattern(i, 1024 * 1024))));
    }
    timeout(Duration::from_secs(120), async {
        for t in tasks {
            t.await.unwrap().unwrap();
        }
    })
    .await
    .expect("echo timed out");
    timeout(Duration::from_secs(10), async {
        while client.num_streams() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("streams not freed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_stream_does_not_stall_others() {
    let (client, server, _cd, _sd) = pair();
    // The first inbound stream is accepted and never read.
    let (stalled_tx, stalled_rx) = tokio::sync::oneshot::channel();
    let server2 = server.clone();
    tokio::spawn(async move {
        let stalled = server2.accept_stream().await.unwrap();
        let _ = stalled_tx.send(stalled);
        spawn_echo_server(server2).await.unwrap();
    });
    let mut blocked = client.open_stream().await.unwrap();
    let blocked_writer = tokio::spawn(async move {
        let _ = blocked.write_all(&vec![1u8; 4 * 1024 * 1024]).await;
        blocked
    });
    let stalled = timeout(Duration::from_secs(10), stalled_rx)
        .await
        .unwrap()
        .unwrap();

    let mut tasks = Vec::new();
    for i in 0..10 {
        let stream = client.open_stream().await.unwrap();
        tasks.push(tokio::spawn(echo_once(stream, pattern(i, 512 * 1024))));
    }
    timeout(Duration::from_secs(60), async {
        for t in tasks {
            t.await.unwrap().unwrap();
        }
    })
    .await
    .expect("other streams stalled behind an unread one");

    // The unread stream holds exactly its window and no more.
    // The unread stream fills exactly its window and no more.
    timeout(Duration::from_secs(10), async {
        while stalled.unread_bytes() != Some(256 * 1024) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("unread stream never filled its window");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(stalled.receive_window(), Some(256 * 1024));
    assert_eq!(stalled.unread_bytes(), Some(256 * 1024));
    assert!(!blocked_writer.is_finished());
    blocked_writer.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_duplex_writers_do_not_deadlock() {
    const STREAMS: usize = 16;
    const LEN: usize = 4 * 1024 * 1024;
    // A small pipe makes both drivers hit write back-pressure constantly.
    let (client, server, _cd, _sd) = pair_with(Config::default(), 16 * 1024);

    async fn both_ways(stream: Stream, seed: usize) -> std::io::Result<()> {
        let (mut rd, mut wr) = tokio::io::split(stream);
        let writer = tokio::spawn(async move {
            let data = pattern(seed, LEN);
            for chunk in data.chunks(256 * 1024) {
                wr.write_all(chunk).await?;
            }
            wr.shutdown().await?;
            std::io::Result::Ok(wr)
        });
        let mut got = Vec::with_capacity(LEN);
        rd.read_to_end(&mut got).await?;
        assert_eq!(got.len(), LEN);
        let _wr = writer.await.expect("writer")?;
        Ok(())
    }

    let acceptor = tokio::spawn(async move {
        let mut tasks = Vec::new();
        for i in 0..STREAMS {
            let s = server.accept_stream().await.unwrap();
            tasks.push(tokio::spawn(both_ways(s, 1000 + i)));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
    });
    let mut tasks = Vec::new();
    for i in 0..STREAMS {
        let s = client.open_stream().await.unwrap();
        tasks.push(tokio::spawn(both_ways(s, i)));
    }
    timeout(Duration::from_secs(120), async {
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        acceptor.await.unwrap();
    })
    .await
    .expect("deadlock: full-duplex transfer did not finish");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_streams_are_freed() {
    let (client, server, _cd, _sd) = pair();
    let server2 = server.clone();
    tokio::spawn(async move {
        while let Ok(mut s) = server2.accept_stream().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                if s.read_to_end(&mut buf).await.is_ok() {
                    let _ = s.shutdown().await;
                }
                // Dropped here: fully closed streams are simply freed.
            });
        }
    });
    timeout(Duration::from_secs(60), async {
        for batch in 0..30 {
            let mut tasks = Vec::new();
            for i in 0..100 {
                let mut s = client.open_stream().await.unwrap();
                tasks.push(tokio::spawn(async move {
                    s.write_all(b"hello").await.unwrap();
                    match (batch + i) % 3 {
                        // Graceful close, reset, and a plain drop (FIN).
                        0 => {
                            s.shutdown().await.unwrap();
                            let mut buf = Vec::new();
                            s.read_to_end(&mut buf).await.unwrap();
                        }
                        1 => s.reset().unwrap(),
                        _ => drop(s),
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        }
        while client.num_streams() > 0 || server.num_streams() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("streams were not freed");
}

/// Writes `LEN` bytes, optionally shuts down, and drops the stream while the
/// peer still has the last 64 KiB unread; the peer must get every byte and
/// then EOF (dropping finishes, it never resets).
async fn drop_delivers_unread_data(shutdown_first: bool) {
    const LEN: usize = 4 * 1024 * 1024;
    const TAIL: usize = 64 * 1024;
    let (client, server, _cd, _sd) = pair();
    let data = pattern(3, LEN);
    let expected = data.clone();
    let writer = tokio::spawn(async move {
        let mut s = client.open_stream().await.unwrap();
        s.write_all(&data).await.unwrap();
        if shutdown_first {
            s.shutdown().await.unwrap();
        }
        drop(s);
        client
    });
    timeout(Duration::from_secs(20), async move {
        let mut s = server.accept_stream().await.unwrap();
        let mut got = vec![0u8; LEN - TAIL];
        s.read_exact(&mut got).await.unwrap();
        // The writer finishes and drops while the tail is unread here.
        let client = writer.await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        s.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), LEN);
        assert!(got == expected, "bytes differ");
        drop(s);
        for _ in 0..1000 {
            if client.num_streams() == 0 && server.num_streams() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("dropped streams were not freed");
    })
    .await
    .expect("timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_after_shutdown_delivers_all_data() {
    drop_delivers_unread_data(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_without_shutdown_finishes_and_delivers_all_data() {
    drop_delivers_unread_data(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_stream_fails_the_peer_writer() {
    const LEN: usize = 8 * 1024 * 1024;
    let (client, server, _cd, _sd) = pair();
    let mut s = client.open_stream().await.unwrap();
    s.write_all(b"x").await.unwrap();
    drop(s);
    timeout(Duration::from_secs(10), async {
        let mut s = server.accept_stream().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"x");
        // Nobody will read these on the client: the writer must fail, not
        // believe they were delivered.
        let err = s.write_all(&pattern(5, LEN)).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
        for _ in 0..1000 {
            if client.num_streams() == 0 && server.num_streams() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("dropped stream was not freed");
    })
    .await
    .expect("peer writer was never told");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_with_unread_data_fails_the_peer() {
    let (client, server, _cd, _sd) = pair();
    let mut s = client.open_stream().await.unwrap();
    s.write_all(b"request").await.unwrap();
    let mut peer = server.accept_stream().await.unwrap();
    let mut req = [0u8; 7];
    peer.read_exact(&mut req).await.unwrap();
    peer.write_all(b"a reply nobody reads").await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    drop(s);
    timeout(Duration::from_secs(10), async {
        // The peer's read ends in an error, not a clean end of stream.
        let mut rest = Vec::new();
        let err = peer.read_to_end(&mut rest).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    })
    .await
    .expect("peer was never told");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_go_away_completes_drivers() {
    let (client, server, cd, sd) = pair();
    spawn_echo_server(server.clone());
    let stream = client.open_stream().await.unwrap();
    client.go_away();
    assert!(client.open_stream().await.is_err());
    // The existing stream still works after GoAway.
    timeout(Duration::from_secs(10), echo_once(stream, pattern(1, 1000)))
        .await
        .unwrap()
        .unwrap();
    server.go_away();
    let (c, s) = timeout(Duration::from_secs(10), async { (cd.await, sd.await) })
        .await
        .expect("drivers did not finish");
    c.unwrap().unwrap();
    s.unwrap().unwrap();
    assert!(client.accept_stream().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_transport_fails_pending_operations() {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let (cd, client) = Driver::new(a, Config::default(), Mode::Client);
    let cd = tokio::spawn(cd);
    let mut stream = client.open_stream().await.unwrap();
    let reader = tokio::spawn(async move {
        let mut buf = [0u8; 16];
        stream.read(&mut buf).await
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    drop::<DuplexStream>(b);
    let read = timeout(Duration::from_secs(10), reader)
        .await
        .unwrap()
        .unwrap();
    assert!(read.is_err());
    assert!(cd.await.unwrap().is_err());
    assert!(client.open_stream().await.is_err());
}

#[tokio::test(start_paused = true)]
async fn unanswered_keepalive_closes_connection() {
    // The peer end is held open but never driven, so pings go unanswered.
    let (a, _silent) = tokio::io::duplex(64 * 1024);
    let config = Config::default()
        .with_keepalive_interval(Some(Duration::from_secs(30)))
        .with_keepalive_timeout(Duration::from_secs(10));
    let (driver, _control) = Driver::new(a, config, Mode::Client);
    let result = timeout(Duration::from_secs(60), driver).await.unwrap();
    assert!(matches!(result, Err(ConnectionError::KeepAliveTimeout(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_ends_both_drivers_within_a_round_trip() {
    let (client, server, cd, sd) = pair();
    spawn_echo_server(server.clone());
    let stream = client.open_stream().await.unwrap();
    echo_once(stream, pattern(2, 1000)).await.unwrap();
    let started = std::time::Instant::now();
    client.close();
    let (c, s) = timeout(Duration::from_secs(5), async { (cd.await, sd.await) })
        .await
        .expect("drivers did not finish");
    c.unwrap().unwrap();
    s.unwrap().unwrap();
    // One round trip on a pipe, far below the 2 s linger for silent peers.
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert!(server.close_reason().is_some_and(|e| e.is_graceful()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_ends_after_remote_go_away() {
    let (client, server, _cd, _sd) = pair();
    let mut open = client.open_stream().await.unwrap();
    open.write_all(b"x").await.unwrap();
    let mut accepted = server.accept_stream().await.unwrap();
    client.go_away();
    // No inbound stream can come: accept returns, though the stream lives.
    let end = timeout(Duration::from_secs(2), server.accept_stream())
        .await
        .expect("accept_stream kept waiting after GoAway");
    assert!(matches!(end, Err(ConnectionError::Closed)));
    assert!(server.close_reason().is_none());
    accepted.write_all(b"still works").await.unwrap();
    let mut buf = [0u8; 11];
    open.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"still works");
}

/// A transport whose reads never complete and whose writes fail once armed.
struct FailingWrites {
    fail: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl tokio::io::AsyncRead for FailingWrites {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        _buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Pending
    }
}

impl tokio::io::AsyncWrite for FailingWrites {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::task::Poll::Ready(if self.fail.load(std::sync::atomic::Ordering::Acquire) {
            Err(std::io::ErrorKind::BrokenPipe.into())
        } else {
            Ok(buf.len())
        })
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_write_error_ends_driver_at_once() {
    let fail = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let io = FailingWrites { fail: fail.clone() };
    let (driver, control) = Driver::new(io, Config::default(), Mode::Client);
    let driver = tokio::spawn(driver);
    let mut stream = control.open_stream().await.unwrap();
    stream.write_all(b"goes out").await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    fail.store(true, std::sync::atomic::Ordering::Release);
    let started = std::time::Instant::now();
    let _ = stream.write_all(b"fails").await;
    let result = timeout(Duration::from_secs(4), driver)
        .await
        .expect("driver lingered after a write error")
        .unwrap();
    assert!(matches!(result, Err(ConnectionError::Io(_))), "{result:?}");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert!(stream.write_all(b"later").await.is_err());
}
