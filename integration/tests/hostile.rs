//! Hostile peers against a node running transport + secio + yamux. Each test
//! shows that the node closes only the offending connection and keeps
//! serving a good client at the same time.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use proptest::{
    prelude::*,
    test_runner::{Config as ProptestConfig, TestRunner},
};
use shoal_identity::Keypair;
use shoal_integration::{
    Client, ConnectError, EchoNode, NodeStats, STEP_TIMEOUT, connect, echo_many, echo_one,
    proxy::{self, Tamper},
    start_echo_node,
};
use shoal_transport::{
    Listener as _, ListenerExt, MemoryNetwork, MemoryTransport, TcpTransport, Transport,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Short limits so that every failure mode resolves within a second or two.
fn node_secio(key: &Keypair) -> shoal_secio::Config {
    shoal_secio::Config::new(key.clone()).with_handshake_timeout(Duration::from_millis(800))
}

fn yamux_config() -> shoal_yamux::Config {
    shoal_yamux::Config::default()
        .with_keepalive_interval(Some(Duration::from_millis(200)))
        .with_keepalive_timeout(Duration::from_millis(800))
}

async fn tcp_node() -> (TcpTransport, EchoNode) {
    let transport = TcpTransport::default();
    let key = Keypair::generate();
    let node = start_echo_node(
        &transport,
        "/ip4/127.0.0.1/tcp/0",
        node_secio(&key),
        yamux_config(),
    )
    .await;
    (transport, node)
}

/// A well-behaved client echoing several streams through `node`.
async fn good_client<T: Transport>(transport: &T, node: &EchoNode) {
    let client = client_of(transport, node).await;
    tokio::time::timeout(STEP_TIMEOUT, echo_many(&client.control, 8, 256 * 1024))
        .await
        .expect("good client finished in time")
        .expect("good client's data intact");
}

/// A yamux client of `node` (over `transport`) with the test's settings.
async fn client_of<T: Transport>(transport: &T, node: &EchoNode) -> Client {
    connect(
        transport,
        &node.full_addr(),
        Keypair::generate(),
        Some(node.peer_id),
        yamux_config(),
    )
    .await
    .unwrap()
}

/// Completes a secio handshake with `node` as a scripted peer and returns
/// the secure stream, on which the test writes raw yamux bytes.
async fn scripted_peer(
    transport: &TcpTransport,
    node: &EchoNode,
) -> shoal_secio::SecureStream<tokio::net::TcpStream> {
    let conn = transport.dial(&node.addr).await.unwrap();
    let config = shoal_secio::Config::new(Keypair::generate());
    shoal_secio::handshake_outbound(conn, &config, Some(node.peer_id))
        .await
        .unwrap()
}

/// A yamux header, written out by hand from the spec.
fn yamux_header(kind: u8, flags: u16, stream: u32, length: u32) -> [u8; 12] {
    let mut h = [0u8; 12];
    h[0] = 0; // version
    h[1] = kind;
    h[2..4].copy_from_slice(&flags.to_be_bytes());
    h[4..8].copy_from_slice(&stream.to_be_bytes());
    h[8..12].copy_from_slice(&length.to_be_bytes());
    h
}
const DATA: u8 = 0;
const PING: u8 = 2;
const SYN: u16 = 1;

/// Reads until the node closes the connection (EOF or error); returns how
/// long that took. Panics if it stays open for `limit`.
async fn closed_by_node<R: tokio::io::AsyncRead + Unpin>(mut r: R, limit: Duration) -> Duration {
    let start = tokio::time::Instant::now();
    let mut buf = vec![0u8; 64 * 1024];
    let closed = tokio::time::timeout(limit, async {
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the node kept the bad connection open for {limit:?}"
    );
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_before_handshake_is_dropped() {
    let (transport, node) = tcp_node().await;
    let attack = async {
        let mut conn = transport.dial(&node.addr).await.unwrap();
        let garbage: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let _ = conn.write_all(&garbage).await;
        closed_by_node(conn, Duration::from_secs(5)).await;
    };
    tokio::join!(attack, good_client(&transport, &node));
    assert!(NodeStats::get(&node.stats.handshakes_failed) >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_handshake_is_dropped_at_the_timeout() {
    let (transport, node) = tcp_node().await;
    let attack = async {
        let mut conn = transport.dial(&node.addr).await.unwrap();
        // A length prefix promising 40 bytes, then only two of them.
        conn.write_all(&[0, 40, 1, 2]).await.unwrap();
        let took = closed_by_node(conn, Duration::from_secs(5)).await;
        assert!(
            took >= Duration::from_millis(500),
            "dropped before the timeout: {took:?}"
        );
    };
    tokio::join!(attack, good_client(&transport, &node));
    assert_eq!(NodeStats::get(&node.stats.handshakes_failed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expected_peer_id_mismatch_fails_the_handshake() {
    let (transport, node) = tcp_node().await;
    let attack = async {
        let impostor_expected = Keypair::generate().peer_id();
        let result = connect(
            &transport,
            &node.addr,
            Keypair::generate(),
            Some(impostor_expected),
            yamux_config(),
        )
        .await;
        match result {
            Err(ConnectError::Handshake(e)) => {
                let text = e.to_string();
                assert!(
                    text.contains(&impostor_expected.to_string())
                        || text.to_lowercase().contains("mismatch"),
                    "{text}"
                );
            }
            other => panic!("expected a handshake error, got {other:?}"),
        }
    };
    tokio::join!(attack, good_client(&transport, &node));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yamux_length_of_4_gib_closes_the_connection() {
    let (transport, node) = tcp_node().await;
    let attack = async {
        let mut secure = scripted_peer(&transport, &node).await;
        secure
            .write_all(&yamux_header(DATA, SYN, 1, u32::MAX))
            .await
            .unwrap();
        secure.write_all(&[0u8; 1024]).await.unwrap();
        secure.flush().await.unwrap();
        closed_by_node(secure, Duration::from_secs(5)).await;
    };
    tokio::join!(attack, good_client(&transport, &node));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writing_past_the_window_closes_the_connection() {
    let (transport, node) = tcp_node().await;
    let attack = async {
        let mut secure = scripted_peer(&transport, &node).await;
        // The initial window is 256 KiB; one frame one byte larger.
        let len = 256 * 1024 + 1;
        secure
            .write_all(&yamux_header(DATA, SYN, 1, len))
            .await
            .unwrap();
        let _ = secure.write_all(&vec![0x55u8; len as usize]).await;
        let _ = secure.flush().await;
        closed_by_node(secure, Duration::from_secs(5)).await;
    };
    tokio::join!(attack, good_client(&transport, &node));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_flood_closes_the_connection() {
    let (transport, node) = tcp_node().await;
    let attack = async {
        let secure = scripted_peer(&transport, &node).await;
        let (r, mut w) = tokio::io::split(secure);
        let flood = async move {
            let mut batch = Vec::with_capacity(12 * 1000);
            for i in 0..1000u32 {
                batch.extend_from_slice(&yamux_header(PING, SYN, 0, i));
            }
            // At most 200 batches (200,000 pings); the node should give up
            // on us long before.
            for _ in 0..200 {
                if w.write_all(&batch).await.is_err() || w.flush().await.is_err() {
                    break;
                }
            }
        };
        // Drain our side too: a flooder that never reads would only
        // measure TCP back-pressure.
        let (_, took) = tokio::join!(flood, closed_by_node(r, Duration::from_secs(10)));
        took
    };
    tokio::join!(attack, good_client(&transport, &node));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_past_the_limit_are_refused_but_the_connection_lives() {
    let transport = TcpTransport::default();
    let key = Keypair::generate();
    let node = start_echo_node(
        &transport,
        "/ip4/127.0.0.1/tcp/0",
        node_secio(&key),
        yamux_config().with_max_concurrent_streams(8),
    )
    .await;
    let client: Client = client_of(&transport, &node).await;
    // Hold 20 streams open: each sends a byte and waits for its echo.
    let mut open = Vec::new();
    let mut refused = 0;
    for _ in 0..20 {
        let mut s = client.control.open_stream().await.unwrap();
        s.write_all(b"x").await.unwrap();
        s.flush().await.unwrap();
        let mut byte = [0u8; 1];
        match tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut byte)).await {
            Ok(Ok(_)) => open.push(s),
            Ok(Err(_)) => refused += 1,
            Err(_) => panic!("stream neither echoed nor refused"),
        }
    }
    assert_eq!(open.len(), 8, "the node serves up to its limit");
    assert_eq!(refused, 12, "streams over the limit are reset");
    // Free the held streams; the same connection serves new streams again.
    for mut s in open {
        s.shutdown().await.unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.unwrap();
    }
    tokio::time::timeout(STEP_TIMEOUT, echo_many(&client.control, 4, 64 * 1024))
        .await
        .unwrap()
        .unwrap();
    assert!(!client.driver.is_finished());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_nobody_reads_does_not_stall_the_others() {
    let (transport, node) = tcp_node().await;
    let client = client_of(&transport, &node).await;
    // Stream A: write 2 MiB, never read the echo. Its windows fill on both
    // sides and its writer parks.
    let mut stuck = client.control.open_stream().await.unwrap();
    let stuck_writer = tokio::spawn(async move {
        let chunk = vec![1u8; 64 * 1024];
        for _ in 0..32 {
            if stuck.write_all(&chunk).await.is_err() {
                break;
            }
        }
        stuck
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !stuck_writer.is_finished(),
        "window back-pressure holds the writer"
    );
    // Meanwhile 16 other streams on the same connection finish 1 MiB each.
    tokio::time::timeout(STEP_TIMEOUT, echo_many(&client.control, 16, 1024 * 1024))
        .await
        .expect("no head-of-line stall")
        .unwrap();
    stuck_writer.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_half_closed_and_reset_streams_are_freed() {
    let network = MemoryNetwork::new();
    let transport = MemoryTransport::new(&network);
    let key = Keypair::generate();
    let node = start_echo_node(&transport, "/memory/0", node_secio(&key), yamux_config()).await;
    let client = client_of(&transport, &node).await;
    let work = async {
        for round in 0..20u64 {
            let mut tasks = Vec::new();
            for i in 0..100u64 {
                let control = client.control.clone();
                tasks.push(tokio::spawn(async move {
                    if i % 2 == 0 {
                        echo_one(&control, round * 100 + i, 100).await.unwrap();
                    } else {
                        let mut s = control.open_stream().await.unwrap();
                        s.write_all(b"about to reset").await.unwrap();
                        s.reset().unwrap();
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        }
    };
    tokio::time::timeout(STEP_TIMEOUT, work).await.unwrap();
    // Resets and finished streams leave no state behind.
    let mut live = usize::MAX;
    for _ in 0..200 {
        live = client.control.num_streams();
        if live == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(live, 0);
}

/// One connection through a tampering proxy on the in-memory network: the
/// client echoes one stream; returns whether the echo succeeded.
async fn echo_through_proxy(
    transport: &MemoryTransport,
    node: &EchoNode,
    to_server: Tamper,
    to_client: Tamper,
) -> bool {
    let mut front = transport
        .listen(&"/memory/0".parse().unwrap())
        .await
        .unwrap();
    let front_addr = front.local_addr().clone();
    let upstream_addr = node.addr.clone();
    let proxy_transport = transport.clone();
    let proxy_task = tokio::spawn(async move {
        let inbound = front.accept().await.unwrap();
        let upstream = proxy_transport.dial(&upstream_addr).await.unwrap();
        proxy::run(inbound.connection, upstream, to_server, to_client).await;
    });
    let outcome = async {
        let client = connect(
            transport,
            &front_addr,
            Keypair::generate(),
            Some(node.peer_id),
            yamux_config(),
        )
        .await
        .ok()?;
        let ok = echo_one(&client.control, 7, 32 * 1024).await.is_ok();
        Some((ok, client))
    };
    let result = match tokio::time::timeout(Duration::from_secs(10), outcome).await {
        Ok(Some((true, _))) => true,
        Ok(Some((false, client))) => {
            // The corrupted connection must end, not linger.
            let ended = tokio::time::timeout(Duration::from_secs(5), client.driver).await;
            assert!(ended.is_ok(), "corrupted connection still open");
            false
        }
        Ok(None) => false,
        Err(_) => panic!("a corrupted connection hung instead of failing"),
    };
    proxy_task.abort();
    result
}

#[test]
fn flipped_bytes_anywhere_close_only_that_connection() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let network = MemoryNetwork::new();
    let transport = MemoryTransport::new(&network);
    let key = Keypair::generate();
    let node = rt.block_on(start_echo_node(
        &transport,
        "/memory/0",
        node_secio(&key),
        yamux_config(),
    ));

    // Untampered, the echo succeeds: the check below can fail.
    assert!(rt.block_on(echo_through_proxy(
        &transport,
        &node,
        Tamper::None,
        Tamper::None
    )));

    let mut runner = TestRunner::new(ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    // Offsets cover both handshake messages of each side and the first
    // transport frames (the 32 KiB echo sends more than 2,000 bytes each way).
    runner
        .run(
            &(0u64..2000, 1u8..=255, any::<bool>()),
            |(offset, mask, to_server)| {
                let flip = Tamper::FlipByte { offset, mask };
                let (up, down) = if to_server {
                    (flip, Tamper::None)
                } else {
                    (Tamper::None, flip)
                };
                let ok = rt.block_on(echo_through_proxy(&transport, &node, up, down));
                prop_assert!(!ok, "a flipped byte at {offset} went unnoticed");
                Ok(())
            },
        )
        .unwrap();

    // And the node still serves a good client after all that.
    rt.block_on(good_client(&transport, &node));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_frames_close_the_connection() {
    let network = MemoryNetwork::new();
    let transport = MemoryTransport::new(&network);
    let key = Keypair::generate();
    let node = start_echo_node(&transport, "/memory/0", node_secio(&key), yamux_config()).await;
    // Frames 0 and 1 are the client's handshake messages; 2 and 3 are its
    // first transport frames. Replaying any of them must fail.
    for frame in 0..4 {
        assert!(
            !echo_through_proxy(&transport, &node, Tamper::ReplayFrame(frame), Tamper::None).await,
            "replayed client frame {frame} went unnoticed"
        );
    }
    for frame in 0..3 {
        assert!(
            !echo_through_proxy(&transport, &node, Tamper::None, Tamper::ReplayFrame(frame)).await,
            "replayed server frame {frame} went unnoticed"
        );
    }
    good_client(&transport, &node).await;
}
