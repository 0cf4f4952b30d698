//! Rough throughput comparison against the bare transport. Ignored by
//! default; run with
//! `cargo test -p shoal-yamux --release --test throughput -- --ignored --nocapture`.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::time::{Duration, Instant};

use shoal_yamux::{Config, Driver, Mode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const TOTAL: usize = 512 * 1024 * 1024;
const CHUNK: usize = 256 * 1024;

async fn pump<W, R>(mut wr: W, mut rd: R) -> Duration
where
    W: AsyncWrite + Unpin + Send + 'static,
    R: AsyncRead + Unpin,
{
    let start = Instant::now();
    let writer = tokio::spawn(async move {
        let buf = vec![0x5au8; CHUNK];
        for _ in 0..TOTAL / CHUNK {
            wr.write_all(&buf).await.unwrap();
        }
        wr.shutdown().await.unwrap();
        wr
    });
    let mut buf = vec![0u8; CHUNK];
    let mut got = 0;
    loop {
        let n = rd.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        got += n;
    }
    let _keep = writer.await.unwrap();
    assert_eq!(got, TOTAL);
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark"]
async fn yamux_vs_raw_duplex() {
    let (a, b) = tokio::io::duplex(1024 * 1024);
    let raw = pump(a, b).await;

    let (a, b) = tokio::io::duplex(1024 * 1024);
    let (cd, client) = Driver::new(a, Config::default(), Mode::Client);
    let (sd, server) = Driver::new(b, Config::default(), Mode::Server);
    tokio::spawn(cd);
    tokio::spawn(sd);
    // The SYN goes out as soon as the driver runs; no write needed.
    let wr = client.open_stream().await.unwrap();
    let rd = server.accept_stream().await.unwrap();
    let muxed = pump(wr, rd).await;
    let mib = (TOTAL / (1024 * 1024)) as f64;
    println!(
        "raw duplex: {:.0} MiB/s, yamux: {:.0} MiB/s",
        mib / raw.as_secs_f64(),
        mib / muxed.as_secs_f64()
    );
}
