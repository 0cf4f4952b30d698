//! Hostile peers on the discovery protocol: garbage, forged records and
//! request floods close only that peer's discovery substream, while a good
//! peer keeps learning records through the same node.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{DISCOVERY, Node, eventually, fast_config, node};
use shoal::{
    DialOptions, ProtocolEvent, ProtocolEvents, ProtocolMeta, ServiceBuilder, ServiceControl,
    SessionId,
};
use shoal_discovery::{DiscoveryMessage, MAX_IGNORED_MESSAGES, PROTOCOL_NAME};
use shoal_identify::SignedPeerRecord;
use shoal_identity::Keypair;
use shoal_transport::{MemoryNetwork, MemoryTransport};

const STEP: Duration = Duration::from_secs(5);

/// A hand-made peer speaking `/shoal/discovery` through an event stream,
/// connected to `target`.
async fn raw_peer(
    network: &MemoryNetwork,
    target: &Node,
) -> (ServiceControl, ProtocolEvents, SessionId) {
    let (meta, mut events) = ProtocolMeta::builder(DISCOVERY, PROTOCOL_NAME).event_stream();
    let service = ServiceBuilder::new(Keypair::generate())
        .transport(MemoryTransport::new(network))
        .protocol(meta)
        .build()
        .unwrap();
    let control = service.control();
    tokio::spawn(service);
    let session = control
        .dial(target.full_addr(), DialOptions::default())
        .await
        .unwrap()
        .id;
    // The target asks for records as soon as the protocol opens.
    let mut asked = false;
    while !asked {
        match next(&mut events).await {
            ProtocolEvent::Received { data, .. } => {
                asked = matches!(
                    DiscoveryMessage::decode(&data),
                    Ok(DiscoveryMessage::GetPeers { .. })
                );
            }
            ProtocolEvent::Disconnected { .. } => panic!("closed before any request"),
            _ => {}
        }
    }
    (control, events, session)
}

async fn next(events: &mut ProtocolEvents) -> ProtocolEvent {
    tokio::time::timeout(STEP, events.recv())
        .await
        .expect("timed out waiting for a protocol event")
        .unwrap()
}

/// Counts `Peers` answers until the substream closes.
async fn answers_until_closed(events: &mut ProtocolEvents) -> usize {
    let mut answers = 0;
    loop {
        match next(events).await {
            ProtocolEvent::Received { data, .. } => {
                if let Ok(DiscoveryMessage::Peers(_)) = DiscoveryMessage::decode(&data) {
                    answers += 1;
                }
            }
            ProtocolEvent::Disconnected { .. } => return answers,
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_peers_lose_their_substream_while_a_good_peer_keeps_learning() {
    let network = MemoryNetwork::new();
    let hub = node(
        &network,
        shoal_discovery::Config {
            min_request_interval: Duration::from_secs(1),
            ..fast_config(vec![])
        },
    )
    .await;
    let good = node(
        &network,
        shoal_discovery::Config {
            request_interval: Duration::from_secs(1),
            ..fast_config(vec![hub.full_addr()])
        },
    )
    .await;
    eventually("good to learn the hub", STEP, || {
        good.handle
            .peer(hub.id())
            .and_then(|p| p.record)
            .map(|_| ())
            .ok_or_else(|| "no record yet".to_string())
    })
    .await;

    // Garbage.
    let (garbage, mut events, session) = raw_peer(&network, &hub).await;
    garbage
        .send(session, DISCOVERY, vec![0x0a, 0xff, 0xff])
        .await
        .unwrap();
    assert_eq!(answers_until_closed(&mut events).await, 0);
    assert!(
        garbage.session(session).is_some(),
        "only the substream closes"
    );

    // A forged record in an answer: another peer's record, tampered.
    let (forger, mut events, session) = raw_peer(&network, &hub).await;
    let victim = Keypair::generate();
    let record = SignedPeerRecord::sign(&victim, 1, vec!["/memory/1".parse().unwrap()]).unwrap();
    let mut bytes = DiscoveryMessage::Peers(vec![record]).encode().to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01; // inside the signature
    forger.send(session, DISCOVERY, bytes).await.unwrap();
    assert_eq!(answers_until_closed(&mut events).await, 0);
    assert!(hub.handle.peer(victim.peer_id()).is_none());

    // A flood of requests: one is answered, the rest ignored until the
    // substream is closed.
    let (flooder, mut events, session) = raw_peer(&network, &hub).await;
    let request = DiscoveryMessage::GetPeers { max: 64 }.encode();
    for _ in 0..=MAX_IGNORED_MESSAGES + 1 {
        flooder
            .send(session, DISCOVERY, request.clone())
            .await
            .unwrap();
    }
    assert_eq!(answers_until_closed(&mut events).await, 1);

    // Meanwhile the good peer's discovery goes on: a newcomer that
    // bootstraps from the hub shows up in its store.
    let late = node(&network, fast_config(vec![hub.full_addr()])).await;
    eventually("good to learn the newcomer", STEP, || {
        good.handle
            .peer(late.id())
            .and_then(|p| p.record)
            .map(|_| ())
            .ok_or_else(|| "not yet".to_string())
    })
    .await;
    // The hostile peers never made it into the hub's relayable set with a
    // record (they sent none that verified).
    for hostile in [&garbage, &forger] {
        assert!(
            hub.handle
                .peer(hostile.local_peer_id())
                .and_then(|p| p.record)
                .is_none()
        );
    }
}
