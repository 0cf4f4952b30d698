//! One-way bulk transfers between a writer and a reader, timed and checked.

use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::cpu::process_cpu_time;

/// Writes `total` bytes in `write_size` chunks, then shuts the writer down.
pub async fn send<W: AsyncWrite + Unpin>(
    mut writer: W,
    total: usize,
    write_size: usize,
) -> std::io::Result<()> {
    let chunk = pattern(write_size);
    let mut left = total;
    while left > 0 {
        let n = left.min(write_size);
        writer.write_all(&chunk[..n]).await?;
        left -= n;
    }
    writer.shutdown().await
}

/// Reads until end of stream with a `read_size` buffer; returns the count.
pub async fn receive<R: AsyncRead + Unpin>(
    mut reader: R,
    read_size: usize,
) -> std::io::Result<usize> {
    let mut buf = vec![0u8; read_size];
    let mut total = 0;
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            return Ok(total);
        }
        total += n;
    }
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// What one timed transfer achieved.
#[derive(Debug, Clone, Copy)]
pub struct Transfer {
    /// Bytes delivered.
    pub bytes: usize,
    /// Wall-clock time from the first write to the last byte read.
    pub elapsed: Duration,
    /// Process CPU time used meanwhile (both ends, all threads).
    pub cpu: Duration,
}

impl Transfer {
    /// Mebibytes per second.
    pub fn mib_per_sec(&self) -> f64 {
        self.bytes as f64 / crate::MIB as f64 / self.elapsed.as_secs_f64()
    }

    /// CPU seconds spent per gibibyte delivered.
    pub fn cpu_secs_per_gib(&self) -> f64 {
        self.cpu.as_secs_f64() / (self.bytes as f64 / crate::GIB)
    }
}

/// Times `work`, which must deliver `bytes`, measuring wall and CPU time.
pub async fn timed<F>(bytes: usize, work: F) -> std::io::Result<Transfer>
where
    F: std::future::Future<Output = std::io::Result<usize>>,
{
    let cpu_before = process_cpu_time().unwrap_or_default();
    let start = Instant::now();
    let delivered = work.await?;
    let elapsed = start.elapsed();
    let cpu = process_cpu_time()
        .unwrap_or_default()
        .saturating_sub(cpu_before);
    if delivered != bytes {
        return Err(std::io::Error::other(format!(
            "delivered {delivered} bytes, expected {bytes}"
        )));
    }
    Ok(Transfer {
        bytes,
        elapsed,
        cpu,
    })
}
