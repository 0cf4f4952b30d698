//! Two services connect, negotiate and exchange messages; version
//! selection; unknown protocols are refused per stream.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Notice, memory_node, next_data, next_event, step};
use shoal::{
    ControlError, DialOptions, ProtocolEvent, ProtocolId, ProtocolMeta, ServiceBuilder,
    ServiceError, SessionInfo, negotiation::NegotiationError, negotiation::RefuseReason,
};
use shoal_identity::Keypair;
use shoal_transport::{MemoryNetwork, TcpTransport};
use std::sync::Arc;

const CHAT: ProtocolId = ProtocolId(1);
const OTHER: ProtocolId = ProtocolId(2);

async fn connected(events: &mut shoal::ProtocolEvents) -> (Arc<SessionInfo>, u32) {
    match next_event(events).await {
        ProtocolEvent::Connected { session, version } => (session, version),
        other => panic!("expected Connected, got {other:?}"),
    }
}

#[tokio::test]
async fn memory_services_exchange_messages_both_ways() {
    let network = MemoryNetwork::new();
    let (meta, mut server_events) = ProtocolMeta::builder(CHAT, "/chat").event_stream();
    let server = memory_node(&network, true, |b| b.protocol(meta)).await;
    let (meta, mut client_events) = ProtocolMeta::builder(CHAT, "/chat").event_stream();
    let client = memory_node(&network, false, |b| b.protocol(meta)).await;

    let addr = server.addr.clone().unwrap();
    let session = step("dial", client.control.dial(addr, DialOptions::default()))
        .await
        .unwrap();
    assert_eq!(session.peer, server.control.local_peer_id());

    let (server_side, version) = connected(&mut server_events).await;
    assert_eq!(version, 1);
    assert_eq!(server_side.peer, client.control.local_peer_id());
    let (client_side, _) = connected(&mut client_events).await;
    assert_eq!(client_side.id, session.id);

    for i in 0..10u32 {
        client
            .control
            .send(session.id, CHAT, format!("ping {i}"))
            .await
            .unwrap();
        assert_eq!(next_data(&mut server_events).await, format!("ping {i}"));
        server
            .control
            .send(server_side.id, CHAT, format!("pong {i}"))
            .await
            .unwrap();
        assert_eq!(next_data(&mut client_events).await, format!("pong {i}"));
    }
    // Zero-length frames are frames too.
    client.control.send(session.id, CHAT, "").await.unwrap();
    assert_eq!(next_data(&mut server_events).await, "");

    step("client shutdown", client.control.shutdown()).await;
    assert!(matches!(
        next_event(&mut server_events).await,
        ProtocolEvent::Disconnected { .. }
    ));
    step("server shutdown", server.control.shutdown()).await;
}

#[tokio::test]
async fn tcp_loopback_services_exchange_messages() {
    let (meta, mut server_events) = ProtocolMeta::builder(CHAT, "/chat").event_stream();
    let server = ServiceBuilder::new(Keypair::generate())
        .transport(TcpTransport::default())
        .protocol(meta)
        .build()
        .unwrap();
    let server_control = server.control();
    tokio::spawn(server);
    let addr = server_control
        .listen("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .await
        .unwrap();

    let (meta, mut client_events) = ProtocolMeta::builder(CHAT, "/chat").event_stream();
    let client = ServiceBuilder::new(Keypair::generate())
        .protocol(meta) // default transport: TCP
        .build()
        .unwrap();
    let control = client.control();
    tokio::spawn(client);

    let full = addr.with_peer_id(server_control.local_peer_id());
    let session = step("dial", control.dial(full, DialOptions::default()))
        .await
        .unwrap();
    let (server_side, _) = connected(&mut server_events).await;
    connected(&mut client_events).await;
    let big = vec![7u8; 300 * 1024];
    control.send(session.id, CHAT, big.clone()).await.unwrap();
    assert_eq!(next_data(&mut server_events).await, big);
    server_control
        .send(server_side.id, CHAT, "back")
        .await
        .unwrap();
    assert_eq!(next_data(&mut client_events).await, "back");
    step("shutdown", control.shutdown()).await;
    step("shutdown", server_control.shutdown()).await;
}

#[tokio::test]
async fn highest_common_version_wins_numerically_and_no_common_version_refuses() {
    let network = MemoryNetwork::new();
    let (a, mut server_chat) = ProtocolMeta::builder(CHAT, "/chat")
        .versions([2, 9, 10])
        .event_stream();
    let (b, _server_other) = ProtocolMeta::builder(OTHER, "/other")
        .versions([10])
        .event_stream();
    let server = memory_node(&network, true, |s| s.protocol(a).protocol(b)).await;

    let (a, mut client_chat) = ProtocolMeta::builder(CHAT, "/chat")
        .versions([1, 2, 10])
        .event_stream();
    let (b, _client_other) = ProtocolMeta::builder(OTHER, "/other")
        .versions([9])
        .event_stream();
    let mut client = memory_node(&network, false, |s| s.protocol(a).protocol(b)).await;

    let session = client
        .control
        .dial(server.addr.clone().unwrap(), DialOptions::default())
        .await
        .unwrap();
    assert_eq!(connected(&mut server_chat).await.1, 10);
    assert_eq!(connected(&mut client_chat).await.1, 10);
    assert_eq!(client.control.protocol_version(session.id, CHAT), Some(10));

    let server_peer = server.control.local_peer_id();
    let notice = client
        .wait_for("negotiation error", |n| {
            matches!(n, Notice::Error(ServiceError::Negotiation { .. }))
        })
        .await;
    let Notice::Error(ServiceError::Negotiation {
        peer,
        protocol,
        error,
        ..
    }) = notice
    else {
        unreachable!()
    };
    assert_eq!(peer, server_peer);
    assert_eq!(protocol, "/other");
    assert!(matches!(
        error,
        NegotiationError::Refused(RefuseReason::NoCommonVersion)
    ));
    // Explicit open reports the same, and the session is still up.
    let err = client
        .control
        .open_protocol(session.id, OTHER)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        ControlError::Negotiation(NegotiationError::Refused(RefuseReason::NoCommonVersion))
    ));
    client
        .control
        .send(session.id, CHAT, "still up")
        .await
        .unwrap();
    assert_eq!(next_data(&mut server_chat).await, "still up");
}

#[tokio::test]
async fn unknown_protocol_refuses_only_its_stream() {
    let network = MemoryNetwork::new();
    let (a, mut server_chat) = ProtocolMeta::builder(CHAT, "/chat").event_stream();
    let server = memory_node(&network, true, |s| s.protocol(a)).await;

    let (a, mut client_chat) = ProtocolMeta::builder(CHAT, "/chat").event_stream();
    let (b, _) = ProtocolMeta::builder(OTHER, "/not-served").event_stream();
    let mut client = memory_node(&network, false, |s| s.protocol(b).protocol(a)).await;
    let session = client
        .control
        .dial(
            server.addr.clone().unwrap(),
            DialOptions::default().protocols(shoal::TargetProtocols::Only(vec![OTHER])),
        )
        .await
        .unwrap();
    client
        .wait_for("unknown protocol refusal", |n| {
            matches!(
                n,
                Notice::Error(ServiceError::Negotiation {
                    error: NegotiationError::Refused(RefuseReason::UnknownProtocol),
                    ..
                })
            )
        })
        .await;
    // Same session, another protocol works.
    assert_eq!(
        client
            .control
            .open_protocol(session.id, CHAT)
            .await
            .unwrap(),
        1
    );
    connected(&mut server_chat).await;
    connected(&mut client_chat).await;
    client.control.send(session.id, CHAT, "hi").await.unwrap();
    assert_eq!(next_data(&mut server_chat).await, "hi");
    assert!(client.control.session(session.id).is_some());
}
