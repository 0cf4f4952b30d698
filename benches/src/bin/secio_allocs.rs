//! Counts heap allocations on the secio hot path.
//!
//! Two `SecureStream`s over an in-memory pipe exchange a warm-up transfer,
//! then a measured one; the program prints allocations (and bytes allocated)
//! per 64 KiB frame in the measured phase, on both the sending and the
//! receiving side together. Both ends run in one task on a current-thread
//! runtime, so nothing but the streams and the pipe allocates.
//!
//! ```sh
//! cargo run --release -p shoal-benches --bin secio_allocs
//! ```
//! Exits non-zero if the measured phase allocates more than once per 1000
//! frames.

use std::alloc::System;

use shoal_benches::MIB;
use shoal_identity::Keypair;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const WRITE: usize = 64 * 1024;
const MEASURED: usize = 256 * MIB;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let (a, b) = tokio::io::duplex(256 * 1024);
        let ca = shoal_secio::Config::new(Keypair::generate());
        let cb = shoal_secio::Config::new(Keypair::generate());
        let (sa, sb) = tokio::join!(
            shoal_secio::handshake_outbound(a, &ca, None),
            shoal_secio::handshake_inbound(b, &cb)
        );
        let (mut sa, mut sb) = (sa?, sb?);

        // Warm-up: buffers reach their steady-state size.
        let mut chunk = vec![7u8; WRITE];
        let mut sink = vec![0u8; WRITE];
        exchange(&mut sa, &mut sb, &mut chunk, &mut sink, 16 * MIB).await?;

        let region = Region::new(GLOBAL);
        exchange(&mut sa, &mut sb, &mut chunk, &mut sink, MEASURED).await?;
        let stats = region.change();

        let frames = MEASURED.div_ceil(shoal_secio::frame::MAX_FRAME_PLAINTEXT);
        let per_frame = stats.allocations as f64 / frames as f64;
        println!("suite: {}", sa.cipher_suite().noise_name());
        println!("measured: {} MiB in {frames} frames", MEASURED / MIB);
        println!(
            "allocations: {} ({per_frame:.5} per frame), bytes allocated: {}, reallocations: {}",
            stats.allocations, stats.bytes_allocated, stats.reallocations
        );
        if per_frame > 0.001 {
            return Err(format!("hot path allocates: {per_frame} allocations per frame").into());
        }
        Ok(())
    })
}

/// Moves `total` bytes from `a` to `b` in one task, alternating writes and
/// reads so neither side blocks on a full pipe.
async fn exchange<A, B>(
    a: &mut A,
    b: &mut B,
    chunk: &mut [u8],
    sink: &mut [u8],
    total: usize,
) -> std::io::Result<()>
where
    A: tokio::io::AsyncWrite + Unpin,
    B: tokio::io::AsyncRead + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut sent = 0;
    let mut received = 0;
    while received < total {
        if sent < total {
            let n = (total - sent).min(chunk.len());
            a.write_all(&chunk[..n]).await?;
            a.flush().await?;
            sent += n;
        }
        while received < sent {
            let n = b.read(sink).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            received += n;
        }
    }
    Ok(())
}
