//! Latency figures of the bench programs: the statistics they report and
//! the raw TCP round trip they compare against.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type BoxError = Box<dyn std::error::Error>;

/// Median, p90, p99, max and mean of a set of durations.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    /// Median.
    pub median: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Largest.
    pub max: Duration,
    /// Mean.
    pub mean: Duration,
}

/// `sorted[q]` for a fraction `q`.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The [`Stats`] of `values` (`None` if there are none).
pub fn stats(values: impl IntoIterator<Item = Duration>) -> Option<Stats> {
    let mut v: Vec<Duration> = values.into_iter().collect();
    if v.is_empty() {
        return None;
    }
    v.sort();
    Some(Stats {
        median: quantile(&v, 0.5),
        p90: quantile(&v, 0.9),
        p99: quantile(&v, 0.99),
        max: v[v.len() - 1],
        mean: v.iter().sum::<Duration>() / v.len() as u32,
    })
}

/// Round trips of `size`-byte buffers through a TCP loopback echo with
/// `TCP_NODELAY` on both ends, one at a time.
pub async fn tcp_echo_round_trips(
    size: usize,
    warmup: usize,
    n: usize,
    step: Duration,
) -> Result<Vec<Duration>, BoxError> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await?;
        socket.set_nodelay(true)?;
        let mut buf = vec![0u8; size];
        loop {
            match socket.read_exact(&mut buf).await {
                Ok(_) => socket.write_all(&buf).await?,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return Ok::<_, std::io::Error>(());
                }
                Err(e) => return Err(e),
            }
        }
    });
    let mut socket = TcpStream::connect(addr).await?;
    socket.set_nodelay(true)?;
    let out = vec![0x5au8; size];
    let mut back = vec![0u8; size];
    let mut rtts = Vec::with_capacity(n);
    for i in 0..warmup + n {
        let t0 = Instant::now();
        tokio::time::timeout(step, async {
            socket.write_all(&out).await?;
            socket.read_exact(&mut back).await
        })
        .await
        .map_err(|_| "TCP echo timed out")??;
        if i >= warmup {
            rtts.push(t0.elapsed());
        }
    }
    drop(socket);
    tokio::time::timeout(step, server)
        .await
        .map_err(|_| "TCP echo server did not stop")???;
    Ok(rtts)
}
