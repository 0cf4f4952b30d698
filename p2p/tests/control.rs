//! Broadcast targets, raw streams (the simple path), simultaneous opens.
#![allow(clippy::unwrap_used)]

mod common;

use common::{memory_node, next_data, next_event, step};
use shoal::{
    DialOptions, ProtocolEvent, ProtocolId, ProtocolMeta, SendError, TargetProtocols,
    TargetSessions,
};
use shoal_transport::MemoryNetwork;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CHAT: ProtocolId = ProtocolId(1);
const RAW: ProtocolId = ProtocolId(2);

#[tokio::test]
async fn broadcast_reaches_the_targeted_sessions() {
    let network = MemoryNetwork::new();
    let (meta, mut server_events) = ProtocolMeta::builder(CHAT, "/chat").event_stream();
    let server = memory_node(&network, true, |b| b.protocol(meta)).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let (meta, mut events) = ProtocolMeta::builder(CHAT, "/chat").event_stream();
        let node = memory_node(&network, false, |b| b.protocol(meta)).await;
        node.control
            .dial(server.addr.clone().unwrap(), DialOptions::default())
            .await
            .unwrap();
        assert!(matches!(
            next_event(&mut events).await,
            ProtocolEvent::Connected { .. }
        ));
        assert!(matches!(
            next_event(&mut server_events).await,
            ProtocolEvent::Connected { .. }
        ));
        clients.push((node, events));
    }

    let all = server
        .control
        .broadcast(TargetSessions::All, CHAT, "to all")
        .await;
    assert_eq!((all.sent.len(), all.failed.len()), (3, 0));
    for (_, events) in &mut clients {
        assert_eq!(next_data(events).await, "to all");
    }

    let chosen = clients[1].0.control.local_peer_id();
    let some = server.control.try_broadcast(
        TargetSessions::Filter(Box::new(move |s| s.peer == chosen)),
        CHAT,
        "just you",
    );
    assert_eq!(some.sent.len(), 1);
    assert_eq!(next_data(&mut clients[1].1).await, "just you");
    // The others got nothing more: a marker sent to all arrives first.
    server
        .control
        .broadcast(TargetSessions::All, CHAT, "marker")
        .await;
    assert_eq!(next_data(&mut clients[0].1).await, "marker");
    assert_eq!(next_data(&mut clients[2].1).await, "marker");

    let missing = server.control.try_broadcast(
        TargetSessions::Multi(vec![some.sent[0], shoal::SessionId::new(u64::MAX)]),
        CHAT,
        "x",
    );
    assert_eq!(missing.sent, some.sent);
    assert!(matches!(missing.failed[..], [(_, SendError::NoSession(_))]));
}

#[tokio::test]
async fn raw_streams_are_the_simple_path() {
    let network = MemoryNetwork::new();
    let (meta, mut inbound) = ProtocolMeta::builder(RAW, "/raw").raw_streams();
    let server = memory_node(&network, true, |b| b.protocol(meta)).await;
    let (meta, _unused) = ProtocolMeta::builder(RAW, "/raw").raw_streams();
    let client = memory_node(&network, false, |b| b.protocol(meta)).await;
    let session = client
        .control
        .dial(server.addr.clone().unwrap(), DialOptions::default())
        .await
        .unwrap();

    let server_task = tokio::spawn(async move {
        let mut stream = step("accept raw", inbound.accept()).await.unwrap();
        assert_eq!(stream.protocol(), RAW);
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).await.unwrap();
        stream.write_all(&buf).await.unwrap();
        stream.shutdown().await.unwrap();
    });
    let mut stream = client
        .control
        .open_raw_stream(session.id, RAW)
        .await
        .unwrap();
    assert_eq!(stream.version(), 1);
    stream.write_all(b"no framing at all").await.unwrap();
    stream.shutdown().await.unwrap();
    let mut echo = Vec::new();
    step("echo", stream.read_to_end(&mut echo)).await.unwrap();
    assert_eq!(echo, b"no framing at all");
    step("server", server_task).await.unwrap();
    // Raw protocols cannot be used as framed ones and vice versa.
    assert!(client.control.open_protocol(session.id, RAW).await.is_err());
}

#[tokio::test]
async fn simultaneous_open_leaves_exactly_one_substream() {
    let network = MemoryNetwork::new();
    for _ in 0..5 {
        let (meta, mut server_events) = ProtocolMeta::builder(CHAT, "/chat").event_stream();
        let server = memory_node(&network, true, |b| b.protocol(meta)).await;
        let (meta, mut client_events) = ProtocolMeta::builder(CHAT, "/chat").event_stream();
        let client = memory_node(&network, false, |b| b.protocol(meta)).await;
        let session = client
            .control
            .dial(
                server.addr.clone().unwrap(),
                DialOptions::default().protocols(TargetProtocols::None),
            )
            .await
            .unwrap();
        let server_session = step("server session", async {
            loop {
                if let Some(s) = server.control.sessions().first() {
                    break s.id;
                }
                tokio::task::yield_now().await;
            }
        })
        .await;
        let _ = tokio::join!(
            client.control.open_protocol(session.id, CHAT),
            server.control.open_protocol(server_session, CHAT),
        );
        assert!(matches!(
            next_event(&mut client_events).await,
            ProtocolEvent::Connected { .. }
        ));
        assert!(matches!(
            next_event(&mut server_events).await,
            ProtocolEvent::Connected { .. }
        ));
        client.control.send(session.id, CHAT, "a").await.unwrap();
        server
            .control
            .send(server_session, CHAT, "b")
            .await
            .unwrap();
        // Exactly one substream: the next events are the data, not a
        // second Connected.
        assert_eq!(next_data_strict(&mut server_events).await, "a");
        assert_eq!(next_data_strict(&mut client_events).await, "b");
    }
}

async fn next_data_strict(events: &mut shoal::ProtocolEvents) -> bytes::Bytes {
    match next_event(events).await {
        ProtocolEvent::Received { data, .. } => data,
        other => panic!("expected data, got {other:?}"),
    }
}
