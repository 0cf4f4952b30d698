//! Listen/dial behaviour of the TCP and in-memory transports.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap freely

use std::time::Duration;

use shoal_transport::{
    BoxedTransport, Listener as _, ListenerExt, MemoryConfig, MemoryNetwork, MemoryTransport,
    Multiaddr, Protocol, TcpConfig, TcpTransport, Transport, TransportError,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const STEP: Duration = Duration::from_secs(10);

async fn echo_once<T: Transport>(transport: &T, listen: &str) -> Multiaddr {
    let mut listener = transport.listen(&listen.parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().clone();
    let server = tokio::spawn(async move {
        let mut inbound = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 5];
        inbound.connection.read_exact(&mut buf).await.unwrap();
        inbound.connection.write_all(&buf).await.unwrap();
        inbound.remote_addr
    });
    let mut conn = tokio::time::timeout(STEP, transport.dial(&addr))
        .await
        .unwrap()
        .unwrap();
    conn.write_all(b"hello").await.unwrap();
    let mut buf = [0u8; 5];
    tokio::time::timeout(STEP, conn.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"hello");
    let remote = tokio::time::timeout(STEP, server).await.unwrap().unwrap();
    assert!(!remote.is_empty());
    addr
}

#[tokio::test]
async fn tcp_ipv4_reports_bound_port_and_echoes() {
    let addr = echo_once(&TcpTransport::default(), "/ip4/127.0.0.1/tcp/0").await;
    let sock = addr.to_socket_addr().unwrap();
    assert_ne!(sock.port(), 0);
    assert!(sock.ip().is_loopback());
}

#[tokio::test]
async fn tcp_ipv6_echoes() {
    // Some sandboxes have no IPv6 loopback; only then is skipping honest.
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback on this machine; skipping");
        return;
    }
    let addr = echo_once(&TcpTransport::default(), "/ip6/::1/tcp/0").await;
    assert!(matches!(addr.iter().next(), Some(Protocol::Ip6(_))));
}

#[tokio::test]
async fn tcp_dials_dns_names_and_ignores_p2p_suffix() {
    let transport = TcpTransport::default();
    let mut listener = transport
        .listen(&"/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .await
        .unwrap();
    let port = listener.local_addr().to_socket_addr().unwrap().port();
    let peer = shoal_identity::Keypair::generate().peer_id();
    let addr: Multiaddr = format!("/dns4/localhost/tcp/{port}/p2p/{peer}")
        .parse()
        .unwrap();
    let accept = tokio::spawn(async move { listener.accept().await.map(|_| ()) });
    tokio::time::timeout(STEP, transport.dial(&addr))
        .await
        .unwrap()
        .unwrap();
    tokio::time::timeout(STEP, accept)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn tcp_refused_and_unsupported() {
    let transport = TcpTransport::default();
    // Bind then drop to find a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap();
    assert!(matches!(
        transport.dial(&addr).await,
        Err(TransportError::ConnectionRefused(_))
    ));
    let memory: Multiaddr = "/memory/1".parse().unwrap();
    assert!(!transport.supports(&memory));
    assert!(matches!(
        transport.dial(&memory).await,
        Err(TransportError::UnsupportedAddress(_))
    ));
}

#[tokio::test]
async fn tcp_dial_times_out_against_a_full_accept_queue() {
    // A listener that never accepts and has a tiny backlog: once its accept
    // queue is full, Linux drops further SYNs, so a dial hangs until our
    // timeout ends it.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let target = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(target),
        )
        .await
        {
            fillers.push(s);
        }
    }
    let transport = TcpTransport::new(TcpConfig {
        dial_timeout: Duration::from_millis(300),
        ..TcpConfig::default()
    });
    let started = std::time::Instant::now();
    let result = tokio::time::timeout(STEP, transport.dial(&Multiaddr::from(target)))
        .await
        .unwrap();
    assert!(
        matches!(result, Err(TransportError::DialTimeout { .. })),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(listener);
}

#[tokio::test]
async fn memory_echoes_and_assigns_ports() {
    let network = MemoryNetwork::new();
    let transport = MemoryTransport::new(&network);
    let a = echo_once(&transport, "/memory/0").await;
    let b = echo_once(&transport, "/memory/0").await;
    assert_ne!(a, b, "each listener gets its own port");
}

#[tokio::test]
async fn memory_port_reuse_and_release() {
    let network = MemoryNetwork::new();
    let transport = MemoryTransport::new(&network);
    let addr: Multiaddr = "/memory/4001".parse().unwrap();
    let listener = transport.listen(&addr).await.unwrap();
    assert!(matches!(
        transport.listen(&addr).await,
        Err(TransportError::AddressInUse(_))
    ));
    drop(listener);
    assert!(matches!(
        transport.dial(&addr).await,
        Err(TransportError::ConnectionRefused(_))
    ));
    transport.listen(&addr).await.unwrap();
}

#[tokio::test]
async fn memory_networks_are_isolated() {
    let one = MemoryTransport::new(&MemoryNetwork::new());
    let two = MemoryTransport::new(&MemoryNetwork::new());
    let listener = one.listen(&"/memory/7".parse().unwrap()).await.unwrap();
    assert!(matches!(
        two.dial(listener.local_addr()).await,
        Err(TransportError::ConnectionRefused(_))
    ));
}

#[tokio::test]
async fn memory_backlog_refuses_when_full() {
    let network = MemoryNetwork::new();
    let transport = MemoryTransport::with_config(
        &network,
        MemoryConfig {
            backlog: 2,
            ..MemoryConfig::default()
        },
    );
    let listener = transport
        .listen(&"/memory/0".parse().unwrap())
        .await
        .unwrap();
    let addr = listener.local_addr().clone();
    let _a = transport.dial(&addr).await.unwrap();
    let _b = transport.dial(&addr).await.unwrap();
    assert!(matches!(
        transport.dial(&addr).await,
        Err(TransportError::ConnectionRefused(_))
    ));
}

#[tokio::test]
async fn boxed_transport_works_like_the_inner_one() {
    let network = MemoryNetwork::new();
    let boxed = BoxedTransport::new(MemoryTransport::new(&network));
    echo_once(&boxed, "/memory/0").await;
    let boxed_tcp = BoxedTransport::new(TcpTransport::default());
    echo_once(&boxed_tcp, "/ip4/127.0.0.1/tcp/0").await;
}

#[tokio::test]
async fn tcp_dials_leave_from_the_configured_source_ip() {
    let listener_side = TcpTransport::default();
    let mut listener = listener_side
        .listen(&"/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .await
        .unwrap();
    let addr = listener.local_addr().clone();
    for source in [None, Some("127.0.0.7")] {
        let dialer = TcpTransport::new(TcpConfig {
            source_ip: source.map(|ip| ip.parse().unwrap()),
            ..TcpConfig::default()
        });
        let _conn = tokio::time::timeout(STEP, dialer.dial(&addr))
            .await
            .unwrap()
            .unwrap();
        let inbound = tokio::time::timeout(STEP, listener.accept())
            .await
            .unwrap()
            .unwrap();
        let seen = inbound.remote_addr.to_string();
        let expected = source.unwrap_or("127.0.0.1");
        assert!(seen.starts_with(&format!("/ip4/{expected}/tcp/")), "{seen}");
    }
}
