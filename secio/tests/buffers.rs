//! Buffer memory of a secure stream: next to nothing while idle, grown
//! during a bulk transfer, given back once the stream goes quiet.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod common;

use std::time::Duration;

use common::{config, handshake_pair, within};
use shoal_secio::CipherSuite::AesGcm;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

type Stream = shoal_secio::SecureStream<DuplexStream>;

async fn pair() -> (Stream, Stream) {
    let c = config(&[AesGcm]);
    let (x, y) = tokio::io::duplex(1 << 20);
    let (a, b) = handshake_pair(x, y, &c, &c).await;
    (a.unwrap(), b.unwrap())
}

/// Sends `data` from `a` and reads it at `b` with reads of `read_len`, then
/// lets `b` find the pipe empty once (so its read side goes idle).
async fn send(a: &mut Stream, b: &mut Stream, data: &[u8], read_len: usize) {
    let writer = async {
        a.write_all(data).await.unwrap();
        a.flush().await.unwrap();
    };
    let reader = async {
        let mut got = vec![0u8; data.len()];
        for chunk in got.chunks_mut(read_len) {
            b.read_exact(chunk).await.unwrap();
        }
        assert_eq!(got, data);
    };
    within(async { tokio::join!(writer, reader) }).await;
    let mut probe = [0u8; 1];
    let idle = tokio::time::timeout(Duration::from_millis(20), b.read(&mut probe)).await;
    assert!(idle.is_err(), "nothing more was sent");
}

#[tokio::test]
async fn small_messages_leave_no_buffers_behind() {
    let (mut a, mut b) = pair().await;
    for i in 0..50u8 {
        send(&mut a, &mut b, &[i; 100], 100).await;
        assert_eq!(a.buffer_memory(), 0, "sender after a flush");
        assert_eq!(b.buffer_memory(), 0, "receiver with nothing to read");
    }
}

#[tokio::test]
async fn bulk_buffers_grow_and_are_released_after_a_quiet_second() {
    let (mut a, mut b) = pair().await;
    let bulk: Vec<u8> = (0..8 << 20).map(|i: u32| (i % 251) as u8).collect();
    // Small reads force the receiver through its plaintext buffer too.
    send(&mut a, &mut b, &bulk, 1000).await;
    assert!(
        a.buffer_memory() > 64 * 1024,
        "a busy sender keeps its grown buffer: {}",
        a.buffer_memory()
    );
    assert!(
        b.buffer_memory() > 64 * 1024,
        "a busy receiver keeps its grown buffers: {}",
        b.buffer_memory()
    );

    // Quiet for longer than the release period, then one small message
    // wakes both halves: the grown buffers go.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    send(&mut a, &mut b, b"ping", 4).await;
    assert_eq!(a.buffer_memory(), 0);
    assert_eq!(b.buffer_memory(), 0);

    // And they grow again for the next transfer, which still arrives intact.
    send(&mut a, &mut b, &bulk, 64 * 1024).await;
    assert!(b.buffer_memory() > 64 * 1024);
}
