//! Connection floods from one address against a node on TCP loopback, with
//! honest peers dialling from another address at the same time: idle
//! connections that never handshake, authenticated sessions from throwaway
//! keys, free handshakes as fast as possible, and dials the node is made to
//! repeat to one address. Limits are scaled down so each flood is small and
//! quick; the bounds work the same at the default sizes.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use shoal::{DialError, DialOptions, ServiceBuilder, ServiceControl};
use shoal_identity::Keypair;
use shoal_transport::{Multiaddr, TcpTransport};
use tokio::net::{TcpSocket, TcpStream};

/// Honest dials made during a flood.
const HONEST_DIALS: usize = 40;

/// A node on TCP loopback with the given session limits; returns its control
/// and its socket address.
async fn tcp_node(max_inbound_sessions: usize) -> (ServiceControl, SocketAddr) {
    let service = ServiceBuilder::new(Keypair::generate())
        .transport(TcpTransport::default())
        .max_inbound_sessions(max_inbound_sessions)
        .handshake_timeout(Duration::from_millis(1500))
        .build()
        .unwrap();
    let control = service.control();
    tokio::spawn(service);
    let addr = control
        .listen("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .await
        .unwrap();
    let socket = addr.to_socket_addr().unwrap();
    (control, socket)
}

/// A TCP connection to `to` from the loopback address `from`.
async fn connect_from(from: [u8; 4], to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((from, 0)))?;
    socket.connect(to).await
}

/// Dials `target` from fresh honest nodes (source 127.0.0.1), one after
/// another; returns how many got a session.
async fn honest_dials(target: &ServiceControl, n: usize) -> usize {
    let addr: Multiaddr = target.listen_addrs()[0]
        .clone()
        .with_peer_id(target.local_peer_id());
    let mut ok = 0;
    for _ in 0..n {
        let service = ServiceBuilder::new(Keypair::generate())
            .transport(TcpTransport::default())
            .build()
            .unwrap();
        let control = service.control();
        tokio::spawn(service);
        let dial = control.dial(addr.clone(), DialOptions::default());
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(3), dial).await {
            ok += 1;
        }
        control.shutdown().await;
    }
    ok
}

/// Keeps up to `n` connections from `from` open to `to`: those the node
/// closes are reopened, until `stop`. `secure`: complete a handshake with a
/// throwaway key on each and hold the session. Returns how many connections
/// were opened in all.
fn flood(
    from: [u8; 4],
    to: SocketAddr,
    peer: shoal_identity::PeerId,
    n: usize,
    secure: bool,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let opened = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..n {
            let (stop, opened) = (stop.clone(), opened.clone());
            tasks.push(tokio::spawn(async move {
                // Bounded: the flood lasts as long as the honest dials.
                for _ in 0..10_000 {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let Ok(conn) = connect_from(from, to).await else {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    };
                    opened.fetch_add(1, Ordering::Relaxed);
                    let config = shoal_secio::Config::new(Keypair::generate());
                    if secure {
                        let Ok(mut s) =
                            shoal_secio::handshake_outbound(conn, &config, Some(peer)).await
                        else {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        };
                        // Hold the session until the node drops it.
                        let _ = tokio::io::AsyncReadExt::read(&mut s, &mut [0u8; 64]).await;
                    } else {
                        // Idle: never send a byte; wait until the node closes.
                        let mut conn = conn;
                        let _ = tokio::io::AsyncReadExt::read(&mut conn, &mut [0u8; 64]).await;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        opened.load(Ordering::Relaxed)
    })
}

async fn honest_dials_survive(secure: bool) {
    const LIMIT: usize = 200;
    let (node, socket) = tcp_node(LIMIT).await;
    let stop = Arc::new(AtomicBool::new(false));
    // More connections than the node has session slots, from one address.
    let attacker = flood(
        [127, 0, 0, 2],
        socket,
        node.local_peer_id(),
        LIMIT + 50,
        secure,
        stop.clone(),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ok = honest_dials(&node, HONEST_DIALS).await;
    stop.store(true, Ordering::Relaxed);
    node.shutdown().await;
    let opened = attacker.await.unwrap();
    eprintln!(
        "flood (secure: {secure}): {opened} connections opened, {ok}/{HONEST_DIALS} honest dials"
    );
    assert!(opened > LIMIT, "the flood opened only {opened} connections");
    // At least 95% of honest dials get through.
    assert!(
        ok * 100 >= HONEST_DIALS * 95,
        "{ok} of {HONEST_DIALS} honest dials succeeded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_from_one_address_leave_room_for_honest_dials() {
    honest_dials_survive(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throwaway_sessions_from_one_address_leave_room_for_honest_dials() {
    honest_dials_survive(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_are_rate_limited_per_address() {
    let (node, socket) = tcp_node(1024).await;
    let peer = node.local_peer_id();
    let started = Instant::now();
    let mut completed = 0u32;
    // As many handshakes as one address can start in one second.
    for _ in 0..2_000 {
        if started.elapsed() >= Duration::from_secs(1) {
            break;
        }
        let Ok(conn) = connect_from([127, 0, 0, 3], socket).await else {
            continue;
        };
        let config = shoal_secio::Config::new(Keypair::generate())
            .with_handshake_timeout(Duration::from_millis(200));
        if shoal_secio::handshake_outbound(conn, &config, Some(peer))
            .await
            .is_ok()
        {
            completed += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    eprintln!("{completed} handshakes from one address in {elapsed:.2} s");
    // The default: a burst of 40, then 20 a second.
    let bound = 40.0 + 20.0 * elapsed + 1.0;
    assert!(
        f64::from(completed) <= bound,
        "{completed} handshakes in {elapsed:.2} s (bound {bound:.0})"
    );
    assert!(
        completed >= 20,
        "only {completed} handshakes: the test did not flood"
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dials_to_one_address_are_rate_limited() {
    // A port nothing listens on: each real dial is refused by the kernel.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{}", closed.local_addr().unwrap().port())
        .parse()
        .unwrap();
    drop(closed);
    let service = ServiceBuilder::new(Keypair::generate())
        .transport(TcpTransport::default())
        .build()
        .unwrap();
    let control = service.control();
    tokio::spawn(service);
    let (mut attempted, mut limited) = (0, 0);
    // As if 100 records named this address within a second.
    for _ in 0..100 {
        match control.dial(addr.clone(), DialOptions::default()).await {
            Err(DialError::RateLimited(_)) => limited += 1,
            _ => attempted += 1,
        }
    }
    assert_eq!(attempted, 4, "the default burst");
    assert_eq!(limited, 96);
    // Another port of the same host has its own budget.
    let other: Multiaddr = "/ip4/127.0.0.1/tcp/9".parse().unwrap();
    assert!(!matches!(
        control.dial(other, DialOptions::default()).await,
        Err(DialError::RateLimited(_))
    ));
    control.shutdown().await;
}
