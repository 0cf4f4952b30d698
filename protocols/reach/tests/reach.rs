//! Reachability checks over TCP on loopback: three checkers on distinct
//! /24s of 127/8 dial a node back and agree that its listen address is
//! reachable and an address nobody listens on is not; a requester that
//! asks a checker to dial another host gets a refusal, and that host sees
//! no connection.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use shoal::{DialOptions, ProtocolEvent, ProtocolId, ProtocolMeta, ServiceBuilder, ServiceControl};
use shoal_identity::Keypair;
use shoal_reach::{
    Config, Prober, Reach, ReachHandle, Status,
    protocol::{ReachMessage, ResultCode},
};
use shoal_transport::{IpRange, Multiaddr, TcpConfig, TcpTransport};

const CHECK: ProtocolId = ProtocolId(11);
const BACK: ProtocolId = ProtocolId(12);
/// Bound on every wait.
const LIMIT: Duration = Duration::from_secs(20);

fn config() -> Config {
    Config {
        // Loopback plays the internet here.
        global_ranges: vec!["127.0.0.0/8".parse::<IpRange>().unwrap()],
        ..Config::default()
    }
}

fn tcp_from(ip: &str) -> TcpTransport {
    TcpTransport::new(TcpConfig {
        source_ip: Some(ip.parse().unwrap()),
        ..TcpConfig::default()
    })
}

/// A node listening on `ip`, dialling from it, with a prober.
async fn node(ip: &str) -> (ServiceControl, ReachHandle, Multiaddr) {
    let mut reach = Reach::new(CHECK, BACK, config());
    let service = reach
        .install(ServiceBuilder::new(Keypair::generate()).transport(tcp_from(ip)))
        .build()
        .unwrap();
    let control = service.control();
    tokio::spawn(service);
    let addr = control
        .listen(format!("/ip4/{ip}/tcp/0").parse().unwrap())
        .await
        .unwrap();
    let prober = Prober::start(tcp_from(ip), Duration::from_secs(5)).unwrap();
    let handle = reach.start(control.clone(), Some(prober));
    let addr = addr.with_peer_id(control.local_peer_id());
    (control, handle, addr)
}

async fn settled(handle: &ReachHandle, done: impl Fn(&Status) -> bool) -> Status {
    let mut changes = handle.changes();
    match tokio::time::timeout(LIMIT, changes.wait_for(|s| done(s))).await {
        Ok(status) => status.unwrap().clone(),
        Err(_) => panic!("no verdict in time: {:?}", handle.status()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkers_on_three_networks_find_what_is_reachable_and_what_is_not() {
    let mut checkers = Vec::new();
    for n in 1..=3 {
        checkers.push(node(&format!("127.10.{n}.1")).await);
    }
    let (control, handle, own) = node("127.0.0.1").await;
    // An address nobody listens on, announced as if a router forwarded it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead: Multiaddr = closed.local_addr().unwrap().into();
    drop(closed);
    control.add_external_address(dead.clone()).unwrap();
    for (_, _, addr) in &checkers {
        control
            .dial(addr.clone(), DialOptions::default())
            .await
            .unwrap();
    }
    let status = settled(&handle, |s| s.unknown.is_empty() && !s.reachable.is_empty()).await;
    assert_eq!(status.reachable, vec![own.without_peer_id()]);
    assert_eq!(status.unreachable, vec![dead]);
    assert!(status.is_reachable());
    // The checkers check and dial back; none of them has been checked
    // (they dialled nobody): their own status is unknown.
    assert!(!checkers[0].1.status().is_reachable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checker_never_dials_an_address_other_than_the_requesters() {
    let (_checker, _, checker_addr) = node("127.10.7.1").await;
    // The victim: a listener on another loopback address that counts
    // connections.
    let victim = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let victim_addr: Multiaddr = victim.local_addr().unwrap().into();
    let hits = tokio::spawn(async move {
        let mut n = 0;
        while tokio::time::timeout(Duration::from_secs(3), victim.accept())
            .await
            .is_ok()
        {
            n += 1;
        }
        n
    });
    // A requester that speaks the protocol by hand.
    let (meta, mut events) =
        ProtocolMeta::builder(CHECK, shoal_reach::PROTOCOL_NAME).event_stream();
    let service = ServiceBuilder::new(Keypair::generate())
        .transport(tcp_from("127.0.0.1"))
        .protocol(meta)
        .build()
        .unwrap();
    let control = service.control();
    tokio::spawn(service);
    let session = control
        .dial(checker_addr, DialOptions::default())
        .await
        .unwrap();
    let check = ReachMessage::Check {
        nonce: 42,
        addr: victim_addr,
    };
    control
        .send(session.id, CHECK, check.encode())
        .await
        .unwrap();
    let answer = tokio::time::timeout(LIMIT, async {
        loop {
            // The checker checks its own address too: skip its checks.
            if let Some(ProtocolEvent::Received { data, .. }) = events.recv().await
                && let m @ ReachMessage::Result { .. } = ReachMessage::decode(&data).unwrap()
            {
                return m;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(
        answer,
        ReachMessage::Result {
            nonce: 42,
            code: ResultCode::Refused
        }
    );
    assert_eq!(hits.await.unwrap(), 0, "the victim saw a connection");
}
