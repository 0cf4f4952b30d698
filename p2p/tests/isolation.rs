//! Backpressure and isolation: slow consumers, peers that never read,
//! oversized frames and garbage negotiation affect only their own stream.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::{Notice, memory_node, next_data, next_event, step};
use shoal::{
    DialOptions, HandlerResult, ProtocolContextMut, ProtocolError, ProtocolEvent, ProtocolId,
    ProtocolMeta, SendError, ServiceError, ServiceProtocol,
    negotiation::{Message, NegotiationError, decode_frame},
};
use shoal_identity::Keypair;
use shoal_transport::{MemoryNetwork, MemoryTransport, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const FAST: ProtocolId = ProtocolId(1);
const SLOW: ProtocolId = ProtocolId(2);

struct Echo;
impl ServiceProtocol for Echo {
    fn received(&mut self, ctx: &mut ProtocolContextMut<'_>, data: Bytes) -> HandlerResult {
        ctx.reply(data)?;
        Ok(())
    }
}

/// A client with FAST and SLOW as event streams.
async fn client(
    network: &MemoryNetwork,
    configure: impl FnOnce(shoal::ServiceBuilder) -> shoal::ServiceBuilder,
) -> (common::Node, shoal::ProtocolEvents, shoal::ProtocolEvents) {
    let (f, fast) = ProtocolMeta::builder(FAST, "/fast").event_stream();
    let (s, slow) = ProtocolMeta::builder(SLOW, "/slow")
        .max_frame_size(64 * 1024)
        .event_stream();
    let node = memory_node(network, false, |b| configure(b.protocol(f).protocol(s))).await;
    (node, fast, slow)
}

async fn echo(node: &common::Node, events: &mut shoal::ProtocolEvents, session: shoal::SessionId) {
    for i in 0..20u32 {
        node.control
            .send(session, FAST, i.to_be_bytes().to_vec())
            .await
            .unwrap();
        assert_eq!(
            next_data(events).await,
            Bytes::from(i.to_be_bytes().to_vec())
        );
    }
}

async fn skip_connected(events: &mut shoal::ProtocolEvents) {
    assert!(matches!(
        next_event(events).await,
        ProtocolEvent::Connected { .. }
    ));
}

#[tokio::test]
async fn slow_consumer_stalls_only_its_protocol_and_a_silent_peer_hits_the_send_bound() {
    let network = MemoryNetwork::new();
    // SLOW on the server is an event stream nobody reads (a stuck consumer).
    let (slow_meta, mut stuck) = ProtocolMeta::builder(SLOW, "/slow")
        .max_frame_size(64 * 1024)
        .queue(4)
        .event_stream();
    let server = memory_node(&network, true, |b| {
        b.protocol(ProtocolMeta::builder(FAST, "/fast").service_handle(Echo))
            .protocol(slow_meta)
    })
    .await;
    let addr = server.addr.clone().unwrap();
    let (a, mut a_fast, _a_slow) = client(&network, |b| {
        b.send_queue_bytes(128 * 1024).max_frame_size(64 * 1024)
    })
    .await;
    let (b, mut b_fast, _b_slow) = client(&network, |b| b).await;
    let sa = a
        .control
        .dial(addr.clone(), DialOptions::default())
        .await
        .unwrap()
        .id;
    let sb = b
        .control
        .dial(addr, DialOptions::default())
        .await
        .unwrap()
        .id;
    for events in [&mut a_fast, &mut b_fast] {
        skip_connected(events).await;
    }

    // A floods SLOW until its own send queue is full: bounded memory.
    let frame = Bytes::from(vec![1u8; 1024]);
    let mut queued = 0usize;
    let full = step("fill the send queue", async {
        for _ in 0..10_000 {
            match a.control.try_send(sa, SLOW, frame.clone()) {
                Ok(()) => queued += 1,
                Err(SendError::QueueFull(s)) => return s,
                Err(SendError::ProtocolNotOpen(..)) => tokio::task::yield_now().await,
                Err(e) => panic!("unexpected {e}"),
            }
            tokio::task::yield_now().await;
        }
        panic!("the send queue never filled");
    })
    .await;
    assert_eq!(full, sa);
    // Stuck consumer queue (4) + yamux window (256 KiB) + our queue (128 KiB).
    assert!(queued * 1024 < 512 * 1024, "queued {queued} KiB");
    // The awaiting form waits instead of growing memory.
    assert!(
        tokio::time::timeout(
            Duration::from_millis(100),
            a.control.send(sa, SLOW, frame.clone())
        )
        .await
        .is_err()
    );

    // Other protocols on the same session, and other sessions, keep flowing.
    echo(&a, &mut a_fast, sa).await;
    echo(&b, &mut b_fast, sb).await;

    // Once the consumer reads again, everything arrives, in order.
    let mut received = 0usize;
    step("drain", async {
        while received < queued {
            if let ProtocolEvent::Received { data, .. } = next_event(&mut stuck).await {
                assert_eq!(data, frame);
                received += 1;
            }
        }
    })
    .await;
}

#[tokio::test]
async fn oversized_frame_closes_only_that_substream() {
    let network = MemoryNetwork::new();
    let (slow_meta, _server_slow) = ProtocolMeta::builder(SLOW, "/slow")
        .max_frame_size(1024)
        .event_stream();
    let mut server = memory_node(&network, true, |b| {
        b.protocol(ProtocolMeta::builder(FAST, "/fast").service_handle(Echo))
            .protocol(slow_meta)
    })
    .await;
    let (a, mut a_fast, mut a_slow) = client(&network, |b| b).await;
    let sa = a
        .control
        .dial(server.addr.clone().unwrap(), DialOptions::default())
        .await
        .unwrap()
        .id;
    skip_connected(&mut a_fast).await;
    skip_connected(&mut a_slow).await;

    // Our limit for SLOW is 64 KiB; the server's is 1 KiB.
    a.control.send(sa, SLOW, vec![0u8; 2048]).await.unwrap();
    assert!(matches!(
        next_event(&mut a_slow).await,
        ProtocolEvent::Disconnected { .. }
    ));
    let notice = server
        .wait_for("protocol error", |n| {
            matches!(n, Notice::Error(ServiceError::Protocol { .. }))
        })
        .await;
    let Notice::Error(ServiceError::Protocol {
        peer,
        protocol,
        error,
        ..
    }) = notice
    else {
        unreachable!()
    };
    assert_eq!(peer, a.control.local_peer_id());
    assert_eq!(protocol, SLOW);
    assert!(matches!(
        error,
        ProtocolError::FrameTooLarge {
            len: 2048,
            max: 1024
        }
    ));
    // The session and the other protocol are fine.
    echo(&a, &mut a_fast, sa).await;
    assert!(a.control.session(sa).is_some());
}

#[tokio::test]
async fn garbage_negotiation_closes_only_that_stream() {
    let network = MemoryNetwork::new();
    let mut server = memory_node(&network, true, |b| {
        b.protocol(ProtocolMeta::builder(FAST, "/fast").service_handle(Echo))
    })
    .await;
    let addr = server.addr.clone().unwrap();
    // A good peer keeps talking throughout.
    let (good, mut good_fast, _) = client(&network, |b| b).await;
    let sg = good
        .control
        .dial(addr.clone(), DialOptions::default())
        .await
        .unwrap()
        .id;
    skip_connected(&mut good_fast).await;

    // A hand-made peer: secio + yamux, then garbage on a substream.
    let key = Keypair::generate();
    let bad_peer = key.peer_id();
    let io = MemoryTransport::new(&network).dial(&addr).await.unwrap();
    let secure = shoal_secio::handshake_outbound(io, &shoal_secio::Config::new(key), None)
        .await
        .unwrap();
    let (driver, control) = shoal_yamux::Driver::new(
        secure,
        shoal_yamux::Config::default(),
        shoal_yamux::Mode::Client,
    );
    tokio::spawn(driver);
    let mut bad = control.open_stream().await.unwrap();
    bad.write_all(&[0x05, 0xff, 0xff, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    let notice = server
        .wait_for("negotiation error", |n| {
            matches!(n, Notice::Error(ServiceError::Negotiation { .. }))
        })
        .await;
    let Notice::Error(ServiceError::Negotiation { peer, error, .. }) = notice else {
        unreachable!()
    };
    assert_eq!(peer, bad_peer);
    assert!(matches!(error, NegotiationError::Decode(_)), "{error:?}");
    // That stream was reset.
    let mut buf = [0u8; 8];
    assert!(step("reset", bad.read(&mut buf)).await.is_err());

    // The same session still negotiates a proper proposal.
    let mut ok = control.open_stream().await.unwrap();
    let mut wire = BytesMut::new();
    Message::Propose {
        name: "/fast".into(),
        versions: vec![1],
    }
    .encode(&mut wire);
    wire.extend_from_slice(&[0, 0, 0, 2, b'h', b'i']);
    ok.write_all(&wire).await.unwrap();
    let mut got = Vec::new();
    step("accept and echo", async {
        loop {
            let mut chunk = [0u8; 64];
            let n = ok.read(&mut chunk).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&chunk[..n]);
            if let Ok(Some((Message::Accept { version: 1 }, used))) = decode_frame(&got)
                && got.len() >= used + 6
            {
                assert_eq!(&got[used..used + 6], &[0, 0, 0, 2, b'h', b'i']);
                break;
            }
        }
    })
    .await;
    echo(&good, &mut good_fast, sg).await;
}
