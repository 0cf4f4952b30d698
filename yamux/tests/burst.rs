//! A thousand streams opened at once between two Shoal connections over
//! TCP on loopback: with the default limits all complete; with a stream limit
//! of 100, 900 are refused with RST and the connection carries on.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::time::Duration;

use shoal_yamux::{Config, Control, Driver, Mode, Stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

/// Streams opened in one burst.
const BURST: usize = 1000;
/// Bound of each test.
const LIMIT: Duration = Duration::from_secs(10);

/// A client and a server connection over one loopback TCP connection.
async fn tcp_pair(server_config: Config) -> (Control, Control) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (dialed, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let (dialed, (accepted, _)) = (dialed.unwrap(), accepted.unwrap());
    dialed.set_nodelay(true).unwrap();
    accepted.set_nodelay(true).unwrap();
    let (cd, client) = Driver::new(dialed, Config::default(), Mode::Client);
    let (sd, server) = Driver::new(accepted, server_config, Mode::Server);
    tokio::spawn(cd);
    tokio::spawn(sd);
    (client, server)
}

/// Opens `n` streams without yielding, so all SYNs leave in one write.
async fn open_burst(client: &Control, n: usize) -> Vec<Stream> {
    let mut streams = Vec::with_capacity(n);
    for _ in 0..n {
        streams.push(client.open_stream().await.unwrap());
    }
    streams
}

/// Writes an 8-byte index, reads the echo; `Err` is the read or write error.
async fn exchange(mut stream: Stream, index: u64) -> std::io::Result<()> {
    stream.write_all(&index.to_be_bytes()).await?;
    let mut echo = [0u8; 8];
    stream.read_exact(&mut echo).await?;
    assert_eq!(u64::from_be_bytes(echo), index);
    Ok(())
}

/// Echoes the 8-byte index of the next stream `server` accepts.
fn echo_next(server: &Control) {
    let server = server.clone();
    tokio::spawn(async move {
        let mut s = server.accept_stream().await.unwrap();
        let mut b = [0u8; 8];
        s.read_exact(&mut b).await.unwrap();
        s.write_all(&b).await.unwrap();
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_streams_at_once_all_complete_with_default_limits() {
    let (client, server) = tcp_pair(Config::default()).await;
    let acceptor = tokio::spawn(async move {
        let mut served = 0usize;
        while served < BURST {
            let mut s = server.accept_stream().await.unwrap();
            served += 1;
            tokio::spawn(async move {
                let mut index = [0u8; 8];
                s.read_exact(&mut index).await?;
                s.write_all(&index).await?;
                s.shutdown().await?;
                std::io::Result::Ok(())
            });
        }
        server
    });
    timeout(LIMIT, async {
        let streams = open_burst(&client, BURST).await;
        let tasks: Vec<_> = streams
            .into_iter()
            .zip(0u64..)
            .map(|(s, i)| tokio::spawn(exchange(s, i)))
            .collect();
        let mut failed = 0;
        for t in tasks {
            if t.await.unwrap().is_err() {
                failed += 1;
            }
        }
        assert_eq!(failed, 0, "streams refused or failed");
        let server = acceptor.await.unwrap();
        assert!(client.close_reason().is_none() && server.close_reason().is_none());
        // The connection is alive: one more stream works.
        let more = client.open_stream().await.unwrap();
        echo_next(&server);
        exchange(more, 7).await.unwrap();
    })
    .await
    .expect("burst did not complete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_limit_refuses_the_rest_with_rst_and_no_go_away() {
    const LIMIT_STREAMS: usize = 100;
    let config = Config::default().with_max_concurrent_streams(LIMIT_STREAMS);
    let (client, server) = tcp_pair(config).await;
    let (release, released) = tokio::sync::watch::channel(false);
    // The server echoes each stream it accepted, then holds it open until
    // the burst is over, so exactly the first 100 are live at once.
    let acceptor = {
        let server = server.clone();
        tokio::spawn(async move {
            for _ in 0..LIMIT_STREAMS {
                let mut s = server.accept_stream().await.unwrap();
                let mut released = released.clone();
                tokio::spawn(async move {
                    let mut index = [0u8; 8];
                    s.read_exact(&mut index).await?;
                    s.write_all(&index).await?;
                    let _ = released.wait_for(|r| *r).await;
                    s.shutdown().await?;
                    std::io::Result::Ok(())
                });
            }
        })
    };
    timeout(LIMIT, async {
        let streams = open_burst(&client, BURST).await;
        let tasks: Vec<_> = streams
            .into_iter()
            .zip(0u64..)
            .map(|(s, i)| tokio::spawn(exchange(s, i)))
            .collect();
        let (mut ok, mut refused) = (0, 0);
        for t in tasks {
            match t.await.unwrap() {
                Ok(()) => ok += 1,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => refused += 1,
                Err(e) => panic!("unexpected stream error: {e}"),
            }
        }
        assert_eq!((ok, refused), (LIMIT_STREAMS, BURST - LIMIT_STREAMS));
        acceptor.await.unwrap();
        // No GoAway either way: both can still open streams.
        assert!(client.close_reason().is_none() && server.close_reason().is_none());
        release.send(true).unwrap();
        for _ in 0..1000 {
            if server.num_streams() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let fresh = client.open_stream().await.unwrap();
        echo_next(&server);
        exchange(fresh, 1).await.unwrap();
        assert!(server.open_stream().await.is_ok());
    })
    .await
    .expect("burst did not complete");
}
