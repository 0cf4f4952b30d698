//! A pair of `SecureStream`s over an in-memory pipe, both ends in one task:
//! the cost of a whole handshake (both sides' CPU, in series: what a
//! connection setup cannot go below), and of framing plus the AEAD, without
//! the kernel.
//!
//! ```sh
//! cargo bench -p shoal-benches --bench secio_stream
//! ```

#![allow(clippy::unwrap_used)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use shoal_identity::Keypair;
use shoal_secio::{CipherSuite, SecureStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

type Pair = (SecureStream<DuplexStream>, SecureStream<DuplexStream>);

async fn pair(suite: CipherSuite) -> Pair {
    let (a, b) = tokio::io::duplex(1 << 20);
    let ca = shoal_secio::Config::new(Keypair::generate()).with_suites([suite]);
    let cb = shoal_secio::Config::new(Keypair::generate()).with_suites([suite]);
    let (sa, sb) = tokio::join!(
        shoal_secio::handshake_outbound(a, &ca, None),
        shoal_secio::handshake_inbound(b, &cb)
    );
    (sa.unwrap(), sb.unwrap())
}

/// Moves `total` bytes from the first stream to the second.
async fn transfer(pair: &mut Pair, chunk: &[u8], sink: &mut [u8], total: usize) {
    let (a, b) = pair;
    let mut sent = 0;
    let mut received = 0;
    while received < total {
        if sent < total {
            let n = (total - sent).min(chunk.len());
            a.write_all(&chunk[..n]).await.unwrap();
            a.flush().await.unwrap();
            sent += n;
        }
        while received < sent {
            received += b.read(sink).await.unwrap();
        }
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let total = 8 << 20;
    let mut group = c.benchmark_group("secio_stream");
    group.throughput(Throughput::Bytes(total as u64));
    for (suite, name) in [
        (CipherSuite::ChaChaPoly, "chacha"),
        (CipherSuite::AesGcm, "aesgcm"),
    ] {
        for write in [16 * 1024usize, 256 * 1024] {
            let chunk = vec![0xa5u8; write];
            let mut sink = vec![0u8; write];
            let mut p = rt.block_on(pair(suite));
            group.bench_with_input(
                BenchmarkId::new(name, format!("{}KiB_writes", write / 1024)),
                &write,
                |b, _| b.iter(|| rt.block_on(transfer(&mut p, &chunk, &mut sink, total))),
            );
        }
    }
    group.finish();
}

fn bench_handshake(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("secio_handshake");
    for (suite, name) in [
        (CipherSuite::ChaChaPoly, "chacha"),
        (CipherSuite::AesGcm, "aesgcm"),
    ] {
        let ca = shoal_secio::Config::new(Keypair::generate()).with_suites([suite]);
        let cb = shoal_secio::Config::new(Keypair::generate()).with_suites([suite]);
        let expected = cb.local_peer_id();
        group.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(async {
                    let (x, y) = tokio::io::duplex(64 * 1024);
                    let (sa, sb) = tokio::join!(
                        shoal_secio::handshake_outbound(x, &ca, Some(expected)),
                        shoal_secio::handshake_inbound(y, &cb)
                    );
                    (sa.unwrap(), sb.unwrap())
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_handshake, bench);
criterion_main!(benches);
