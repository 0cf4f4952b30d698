//! Bulk transfers over in-memory pipes and TCP loopback, verified byte for
//! byte, with random write and read sizes.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod common;

use common::{Rng, config, handshake_pair, within};
use shoal_secio::CipherSuite::{AesGcm, ChaChaPoly};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const TRANSFER_LEN: usize = 4 * 1024 * 1024;

/// Writes `data` in random-sized pieces, flushing now and then, then shuts
/// down.
async fn send_all<W: AsyncWrite + Unpin>(mut w: W, data: &[u8], seed: u64) {
    let mut rng = Rng::new(seed);
    let mut sent = 0;
    while sent < data.len() {
        let n = rng.range(1, 200_000).min(data.len() - sent);
        within(w.write_all(&data[sent..sent + n])).await.unwrap();
        sent += n;
        if rng.range(0, 3) == 0 {
            within(w.flush()).await.unwrap();
        }
    }
    within(w.shutdown()).await.unwrap();
}

/// Reads until end of stream with random-sized buffers (including tiny
/// ones, which go through the stream's plaintext buffer).
async fn receive_all<R: AsyncRead + Unpin>(mut r: R, expected_len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(expected_len);
    let mut buf = vec![0u8; 300_000];
    // Bounded: every read returns data or ends the loop.
    for _ in 0..=expected_len {
        let size = match rng.range(0, 3) {
            0 => rng.range(1, 16),
            1 => rng.range(1, 70_000),
            _ => rng.range(1, buf.len()),
        };
        let n = within(r.read(&mut buf[..size])).await.unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n]);
    }
    panic!("stream did not end");
}

async fn exchange<A, B>(a: A, b: B, seed: u64)
where
    A: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    B: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut rng = Rng::new(seed);
    let a_to_b = rng.bytes(TRANSFER_LEN);
    let b_to_a = rng.bytes(TRANSFER_LEN + 12_345);
    let (a_read, a_write) = tokio::io::split(a);
    let (b_read, b_write) = tokio::io::split(b);
    let (a_got, b_got, (), ()) = within(async {
        tokio::join!(
            receive_all(a_read, b_to_a.len(), seed + 1),
            receive_all(b_read, a_to_b.len(), seed + 2),
            send_all(a_write, &a_to_b, seed + 3),
            send_all(b_write, &b_to_a, seed + 4),
        )
    })
    .await;
    assert!(a_got == b_to_a, "b -> a corrupted ({} bytes)", a_got.len());
    assert!(b_got == a_to_b, "a -> b corrupted ({} bytes)", b_got.len());
}

#[tokio::test]
async fn duplex_transfer_both_ways_each_suite() {
    for (seed, suite) in [(1, ChaChaPoly), (2, AesGcm)] {
        let a = config(&[suite]);
        let b = config(&[AesGcm, ChaChaPoly]);
        let (x, y) = tokio::io::duplex(64 * 1024);
        let (sa, sb) = handshake_pair(x, y, &a, &b).await;
        let (sa, sb) = (sa.unwrap(), sb.unwrap());
        assert_eq!(sa.cipher_suite(), suite);
        assert_eq!(sa.remote_peer(), b.local_peer_id());
        assert_eq!(sb.remote_peer(), a.local_peer_id());
        assert_eq!(sb.remote_public_key(), a.identity().public());
        exchange(sa, sb, seed).await;
    }
}

#[tokio::test]
async fn duplex_transfer_after_suite_retry() {
    let a = config(&[AesGcm, ChaChaPoly]);
    let b = config(&[ChaChaPoly]);
    let (x, y) = tokio::io::duplex(4096);
    let (sa, sb) = handshake_pair(x, y, &a, &b).await;
    let (sa, sb) = (sa.unwrap(), sb.unwrap());
    assert_eq!(sa.cipher_suite(), ChaChaPoly);
    assert_eq!(sb.cipher_suite(), ChaChaPoly);
    exchange(sa, sb, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_loopback_transfer_both_ways() {
    let a = config(&[AesGcm, ChaChaPoly]);
    let b = config(&[AesGcm, ChaChaPoly]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (dialed, accepted) =
        within(async { tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept()) })
            .await;
    let dialed = dialed.unwrap();
    let (accepted, _) = accepted.unwrap();
    let (sa, sb) = handshake_pair(dialed, accepted, &a, &b).await;
    exchange(sa.unwrap(), sb.unwrap(), 4).await;
}

#[tokio::test]
async fn empty_writes_and_small_messages() {
    let a = config(&[ChaChaPoly]);
    let b = config(&[ChaChaPoly]);
    let (x, y) = tokio::io::duplex(1024);
    let (sa, sb) = handshake_pair(x, y, &a, &b).await;
    let (mut sa, mut sb) = (sa.unwrap(), sb.unwrap());
    assert_eq!(within(sa.write(&[])).await.unwrap(), 0);
    for i in 0..100u8 {
        within(sa.write_all(&[i; 3])).await.unwrap();
        within(sa.flush()).await.unwrap();
        let mut got = [0u8; 3];
        within(sb.read_exact(&mut got)).await.unwrap();
        assert_eq!(got, [i; 3]);
    }
    within(sa.shutdown()).await.unwrap();
    let mut rest = Vec::new();
    within(sb.read_to_end(&mut rest)).await.unwrap();
    assert!(rest.is_empty());
}

/// The driver futures and the stream can move between threads.
#[test]
fn futures_and_streams_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    fn assert_send_sync<T: Send + Sync + Unpin>() {}
    let a = config(&[ChaChaPoly]);
    let (x, y) = tokio::io::duplex(16);
    let outbound = shoal_secio::handshake_outbound(x, &a, None);
    let inbound = shoal_secio::handshake_inbound(y, &a);
    assert_send(&outbound);
    assert_send(&inbound);
    assert_send_sync::<shoal_secio::SecureStream<tokio::net::TcpStream>>();
}
