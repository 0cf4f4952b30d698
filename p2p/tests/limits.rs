//! Dial identity checks, session limits counted at accept, handshake and
//! idle timeouts, graceful shutdown.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Notice, memory_node, next_event, step};
use shoal::{
    CloseReason, DialError, DialOptions, ProtocolEvent, ProtocolId, ProtocolMeta, ServiceError,
    ServiceEvent, TargetProtocols,
};
use shoal_identity::Keypair;
use shoal_secio::HandshakeError;
use shoal_transport::{MemoryNetwork, MemoryTransport, Transport};

const CHAT: ProtocolId = ProtocolId(1);

#[tokio::test]
async fn dial_with_wrong_expected_peer_fails_naming_both_peers() {
    let network = MemoryNetwork::new();
    let server = memory_node(&network, true, |b| b).await;
    let mut client = memory_node(&network, false, |b| b).await;
    let wrong = Keypair::generate().peer_id();
    let err = step(
        "dial",
        client.control.dial(
            server.addr.clone().unwrap(),
            DialOptions::default().expect(wrong),
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(err.actual_peer(), Some(server.control.local_peer_id()));
    let DialError::Handshake(e) = &err else {
        panic!("unexpected {err:?}")
    };
    assert!(matches!(&**e, HandshakeError::PeerIdMismatch { expected, .. } if *expected == wrong));
    let notice = client
        .wait_for("dial failure", |n| {
            matches!(n, Notice::Error(ServiceError::DialFailed { .. }))
        })
        .await;
    let Notice::Error(ServiceError::DialFailed { expected, .. }) = notice else {
        unreachable!()
    };
    assert_eq!(expected, Some(wrong));
    assert!(client.control.sessions().is_empty());

    // The /p2p/ component of the address is checked the same way.
    let addr = server.addr.clone().unwrap().with_peer_id(wrong);
    assert!(
        client
            .control
            .dial(addr, DialOptions::default())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn half_open_handshakes_have_their_own_budget() {
    let network = MemoryNetwork::new();
    let mut server = memory_node(&network, true, |b| {
        b.max_inbound_handshakes(2)
            .handshake_timeout(Duration::from_millis(300))
    })
    .await;
    let addr = server.addr.clone().unwrap();

    // Two connections that never start a handshake take both handshake slots.
    let raw = MemoryTransport::new(&network);
    let _half_open_1 = raw.dial(&addr).await.unwrap();
    let _half_open_2 = raw.dial(&addr).await.unwrap();
    let client = memory_node(&network, false, |b| {
        b.handshake_timeout(Duration::from_millis(1000))
    })
    .await;
    let err = step(
        "refused dial",
        client.control.dial(addr.clone(), DialOptions::default()),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, DialError::Handshake(_)), "{err:?}");
    server
        .wait_for("handshake budget", |n| {
            matches!(
                n,
                Notice::Error(ServiceError::InboundRefused { reason, .. })
                    if reason.contains("unfinished handshakes")
            )
        })
        .await;

    // The stalled handshakes time out and free their slots.
    for _ in 0..2 {
        let notice = server
            .wait_for("handshake timeout", |n| {
                matches!(n, Notice::Error(ServiceError::HandshakeFailed { .. }))
            })
            .await;
        let Notice::Error(ServiceError::HandshakeFailed { error, .. }) = notice else {
            unreachable!()
        };
        assert!(matches!(&*error, HandshakeError::Timeout(_)), "{error:?}");
    }
    step("dial", client.control.dial(addr, DialOptions::default()))
        .await
        .unwrap();
}

#[tokio::test]
async fn inbound_session_limit_applies_after_the_handshake() {
    let network = MemoryNetwork::new();
    let mut server = memory_node(&network, true, |b| b.max_inbound_sessions(1)).await;
    let addr = server.addr.clone().unwrap();
    let first = memory_node(&network, false, |b| b).await;
    first
        .control
        .dial(addr.clone(), DialOptions::default())
        .await
        .unwrap();
    let second = memory_node(&network, false, |b| b).await;
    // The handshake completes, then the session is refused for lack of a slot.
    let _ = step(
        "second dial",
        second.control.dial(addr, DialOptions::default()),
    )
    .await;
    server
        .wait_for("inbound limit", |n| {
            matches!(
                n,
                Notice::Error(ServiceError::InboundLimit { limit: 1, .. })
            )
        })
        .await;
    assert_eq!(server.control.sessions().len(), 1);
}

#[tokio::test]
async fn outbound_limit_refuses_extra_dials() {
    let network = MemoryNetwork::new();
    let server = memory_node(&network, true, |b| b).await;
    let client = memory_node(&network, false, |b| b.max_outbound_sessions(1)).await;
    let addr = server.addr.clone().unwrap();
    client
        .control
        .dial(addr.clone(), DialOptions::default())
        .await
        .unwrap();
    assert!(matches!(
        client.control.try_dial(addr, DialOptions::default()),
        Err(DialError::TooManySessions(1))
    ));
}

#[tokio::test]
async fn idle_sessions_close_and_busy_ones_stay() {
    let network = MemoryNetwork::new();
    let (meta, _server_events) = ProtocolMeta::builder(CHAT, "/chat").event_stream();
    let mut server = memory_node(&network, true, |b| {
        b.protocol(meta).idle_timeout(Duration::from_millis(200))
    })
    .await;
    let (meta, mut events) = ProtocolMeta::builder(CHAT, "/chat").event_stream();
    // Two sessions between the same two nodes: one busy, one idle.
    let mut client = memory_node(&network, false, |b| {
        b.protocol(meta).allow_duplicate_sessions(true)
    })
    .await;
    let addr = server.addr.clone().unwrap();

    let busy = client
        .control
        .dial(addr.clone(), DialOptions::default())
        .await
        .unwrap();
    assert!(matches!(
        next_event(&mut events).await,
        ProtocolEvent::Connected { .. }
    ));
    let idle = client
        .control
        .dial(
            addr,
            DialOptions::default().protocols(TargetProtocols::None),
        )
        .await
        .unwrap();

    let notice = server
        .wait_for("idle close", |n| {
            matches!(n, Notice::Event(ServiceEvent::SessionClosed { .. }))
        })
        .await;
    let Notice::Event(ServiceEvent::SessionClosed { reason, session }) = notice else {
        unreachable!()
    };
    assert!(matches!(reason, CloseReason::Idle(_)), "{reason:?}");
    assert_eq!(session.peer, client.control.local_peer_id());
    let notice = client
        .wait_for("remote close", |n| {
            matches!(n, Notice::Event(ServiceEvent::SessionClosed { .. }))
        })
        .await;
    let Notice::Event(ServiceEvent::SessionClosed { reason, session }) = notice else {
        unreachable!()
    };
    assert_eq!(session.id, idle.id);
    assert!(matches!(reason, CloseReason::Remote), "{reason:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(client.control.session(busy.id).is_some());
}

#[tokio::test]
async fn graceful_shutdown_notifies_everyone_and_completes() {
    let network = MemoryNetwork::new();
    let (meta, mut server_events) = ProtocolMeta::builder(CHAT, "/chat").event_stream();
    let server = memory_node(&network, true, |b| b.protocol(meta)).await;
    let (meta, mut client_events) = ProtocolMeta::builder(CHAT, "/chat").event_stream();
    let mut client = memory_node(&network, false, |b| b.protocol(meta)).await;
    client
        .control
        .dial(server.addr.clone().unwrap(), DialOptions::default())
        .await
        .unwrap();
    assert!(matches!(
        next_event(&mut server_events).await,
        ProtocolEvent::Connected { .. }
    ));
    assert!(matches!(
        next_event(&mut client_events).await,
        ProtocolEvent::Connected { .. }
    ));

    let started = tokio::time::Instant::now();
    step("shutdown", server.control.shutdown()).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(server.control.is_stopped());
    assert!(matches!(
        next_event(&mut server_events).await,
        ProtocolEvent::Disconnected { .. }
    ));
    // The event stream ends with the service.
    assert!(step("end", server_events.recv()).await.is_none());
    assert!(matches!(
        next_event(&mut client_events).await,
        ProtocolEvent::Disconnected { .. }
    ));
    let notice = client
        .wait_for("session closed", |n| {
            matches!(n, Notice::Event(ServiceEvent::SessionClosed { .. }))
        })
        .await;
    let Notice::Event(ServiceEvent::SessionClosed { reason, .. }) = notice else {
        unreachable!()
    };
    assert!(matches!(reason, CloseReason::Remote), "{reason:?}");
    // Further commands are refused.
    assert!(matches!(
        server
            .control
            .try_dial("/memory/1".parse().unwrap(), DialOptions::default()),
        Err(DialError::ShuttingDown)
    ));
}
