//! Interoperability with other yamux implementations: crates.io `yamux`
//! 0.14 (rust-libp2p) and `tokio-yamux` 0.3 (tentacle), both directions.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::time::Duration;

use futures::future::poll_fn;
use futures::{AsyncReadExt as _, AsyncWriteExt as _, StreamExt as _};
use shoal_yamux::{Config, Control, Driver, Mode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;
use tokio_util::compat::TokioAsyncReadCompatExt;

const STREAMS: usize = 10;
const LEN: usize = 1024 * 1024;
const LIMIT: Duration = Duration::from_secs(60);

fn pattern(seed: usize) -> Vec<u8> {
    (0..LEN)
        .map(|i| (i.wrapping_mul(13).wrapping_add(seed)) as u8)
        .collect()
}

/// Echoes every inbound stream of our implementation.
fn our_echo_server(control: Control) {
    tokio::spawn(async move {
        while let Ok(stream) = control.accept_stream().await {
            tokio::spawn(async move {
                let (mut rd, mut wr) = tokio::io::split(stream);
                tokio::io::copy(&mut rd, &mut wr).await?;
                wr.shutdown().await?;
                // Keep the stream until the peer finished reading.
                let _ = rd.read(&mut [0u8; 1]).await;
                std::io::Result::Ok(())
            });
        }
    });
}

/// Opens streams on our side and checks the echo, byte for byte.
async fn our_client_round_trips(control: Control) {
    let mut tasks = Vec::new();
    for i in 0..STREAMS {
        let stream = control.open_stream().await.unwrap();
        tasks.push(tokio::spawn(async move {
            let data = pattern(i);
            let (mut rd, mut wr) = tokio::io::split(stream);
            let expected = data.clone();
            let writer = tokio::spawn(async move {
                wr.write_all(&data).await.unwrap();
                wr.shutdown().await.unwrap();
                wr
            });
            let mut got = Vec::new();
            rd.read_to_end(&mut got).await.unwrap();
            let _wr = writer.await.unwrap();
            assert!(got == expected, "stream {i}: echo differs");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shoal_client_with_yamux014_server() {
    let (a, b) = tokio::io::duplex(256 * 1024);
    let mut theirs = yamux014::Connection::new(
        b.compat(),
        yamux014::Config::default(),
        yamux014::Mode::Server,
    );
    tokio::spawn(async move {
        while let Some(Ok(stream)) = poll_fn(|cx| theirs.poll_next_inbound(cx)).await {
            tokio::spawn(async move {
                let (rd, mut wr) = futures::AsyncReadExt::split(stream);
                futures::io::copy(rd, &mut wr).await?;
                wr.close().await
            });
        }
    });
    let (driver, control) = Driver::new(a, Config::default(), Mode::Client);
    tokio::spawn(driver);
    timeout(LIMIT, our_client_round_trips(control))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yamux014_client_with_shoal_server() {
    let (a, b) = tokio::io::duplex(256 * 1024);
    let (driver, control) = Driver::new(b, Config::default(), Mode::Server);
    tokio::spawn(driver);
    our_echo_server(control);

    let mut theirs = yamux014::Connection::new(
        a.compat(),
        yamux014::Config::default(),
        yamux014::Mode::Client,
    );
    let (tx, mut rx) = tokio::sync::mpsc::channel(STREAMS);
    tokio::spawn(async move {
        let mut opened = 0;
        poll_fn(|cx| {
            while opened < STREAMS {
                match theirs.poll_new_outbound(cx) {
                    std::task::Poll::Ready(Ok(s)) => {
                        tx.try_send(s).unwrap();
                        opened += 1;
                    }
                    std::task::Poll::Ready(Err(_)) => return std::task::Poll::Ready(()),
                    std::task::Poll::Pending => break,
                }
            }
            loop {
                match theirs.poll_next_inbound(cx) {
                    std::task::Poll::Ready(Some(Ok(_))) => {}
                    std::task::Poll::Ready(_) => return std::task::Poll::Ready(()),
                    std::task::Poll::Pending => return std::task::Poll::Pending,
                }
            }
        })
        .await;
    });
    timeout(LIMIT, async {
        let mut tasks = Vec::new();
        for i in 0..STREAMS {
            let stream = rx.recv().await.unwrap();
            tasks.push(tokio::spawn(async move {
                let (mut rd, mut wr) = futures::AsyncReadExt::split(stream);
                let data = pattern(i);
                let expected = data.clone();
                let writer = tokio::spawn(async move {
                    wr.write_all(&data).await.unwrap();
                    wr.close().await.unwrap();
                });
                let mut got = Vec::new();
                rd.read_to_end(&mut got).await.unwrap();
                writer.await.unwrap();
                assert!(got == expected, "stream {i}: echo differs");
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shoal_client_with_tokio_yamux_server() {
    let (a, b) = tokio::io::duplex(256 * 1024);
    let mut session = tokio_yamux::Session::new_server(b, tokio_yamux::Config::default());
    tokio::spawn(async move {
        while let Some(Ok(stream)) = session.next().await {
            tokio::spawn(async move {
                let (mut rd, mut wr) = tokio::io::split(stream);
                tokio::io::copy(&mut rd, &mut wr).await?;
                wr.shutdown().await?;
                let _ = rd.read(&mut [0u8; 1]).await;
                std::io::Result::Ok(())
            });
        }
    });
    let (driver, control) = Driver::new(a, Config::default(), Mode::Client);
    tokio::spawn(driver);
    timeout(LIMIT, our_client_round_trips(control))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_yamux_client_with_shoal_server() {
    let (a, b) = tokio::io::duplex(256 * 1024);
    let (driver, control) = Driver::new(b, Config::default(), Mode::Server);
    tokio::spawn(driver);
    our_echo_server(control);

    let mut session = tokio_yamux::Session::new_client(a, tokio_yamux::Config::default());
    let mut theirs = session.control();
    tokio::spawn(async move { while session.next().await.is_some() {} });
    timeout(LIMIT, async {
        let mut tasks = Vec::new();
        for i in 0..STREAMS {
            let stream = theirs.open_stream().await.unwrap();
            tasks.push(tokio::spawn(async move {
                let (mut rd, mut wr) = tokio::io::split(stream);
                let data = pattern(i);
                let expected = data.clone();
                let writer = tokio::spawn(async move {
                    wr.write_all(&data).await.unwrap();
                    wr.shutdown().await.unwrap();
                    wr
                });
                let mut got = Vec::new();
                rd.read_to_end(&mut got).await.unwrap();
                let _wr = writer.await.unwrap();
                assert!(got == expected, "stream {i}: echo differs");
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    })
    .await
    .unwrap();
}
