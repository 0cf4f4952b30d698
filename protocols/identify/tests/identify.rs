//! Identify over the in-memory transport: both sides learn each other,
//! forged or malformed messages close only that substream, and records stay
//! verifiable when relayed.
#![allow(clippy::unwrap_used)]

use std::{sync::Arc, time::Duration};

use shoal::{
    DialOptions, Multiaddr, ProtocolEvent, ProtocolEvents, ProtocolId, ProtocolMeta,
    ServiceBuilder, ServiceControl, SessionId,
};
use shoal_identify::{
    Config, Event, Handle, IdentifyError, IdentifyInfo, LocalRecord, PROTOCOL_NAME,
    SignedPeerRecord,
};
use shoal_identity::Keypair;
use shoal_transport::{MemoryNetwork, MemoryTransport};
use tokio::sync::mpsc;

const IDENTIFY: ProtocolId = ProtocolId(2);
const STEP: Duration = Duration::from_secs(5);

struct Node {
    control: ServiceControl,
    handle: Handle,
    events: mpsc::Receiver<Event>,
    addr: Multiaddr,
}

async fn spawn(network: &MemoryNetwork, meta: ProtocolMeta, key: Keypair) -> ServiceControl {
    let service = ServiceBuilder::new(key)
        .transport(MemoryTransport::new(network))
        .protocol(meta)
        .build()
        .unwrap();
    let control = service.control();
    tokio::spawn(service);
    control.listen("/memory/0".parse().unwrap()).await.unwrap();
    control
}

async fn node(network: &MemoryNetwork, agent: &str) -> Node {
    let key = Keypair::generate();
    let config = Config {
        agent_version: agent.into(),
        protocols: vec![PROTOCOL_NAME.into(), "/other/1".into()],
        ..Config::default()
    };
    let (meta, handle, events) =
        shoal_identify::new(IDENTIFY, LocalRecord::new(key.clone()), config);
    let control = spawn(network, meta, key).await;
    let addr = control.listen_addrs().pop().unwrap();
    Node {
        control,
        handle,
        events,
        addr,
    }
}

/// A hand-made peer speaking `/shoal/identify` through an event stream.
async fn raw_peer(network: &MemoryNetwork, key: Keypair) -> (ServiceControl, ProtocolEvents) {
    let (meta, events) = ProtocolMeta::builder(IDENTIFY, PROTOCOL_NAME).event_stream();
    (spawn(network, meta, key).await, events)
}

async fn next_event(events: &mut mpsc::Receiver<Event>) -> Event {
    tokio::time::timeout(STEP, events.recv())
        .await
        .expect("timed out waiting for an identify event")
        .unwrap()
}

async fn identified(node: &mut Node) -> (SessionId, Arc<IdentifyInfo>) {
    match next_event(&mut node.events).await {
        Event::Identified { session, info, .. } => (session, info),
        other => panic!("expected Identified, got {other:?}"),
    }
}

async fn until_disconnected(events: &mut ProtocolEvents) {
    tokio::time::timeout(STEP, async {
        loop {
            if let ProtocolEvent::Disconnected { .. } = events.recv().await.unwrap() {
                return;
            }
        }
    })
    .await
    .expect("identify was not closed");
}

#[tokio::test]
async fn both_sides_learn_each_other_with_verified_records_and_observed_addresses() {
    let network = MemoryNetwork::new();
    let mut a = node(&network, "agent-a").await;
    let mut b = node(&network, "agent-b").await;
    let session = a
        .control
        .dial(b.addr.clone(), DialOptions::default())
        .await
        .unwrap();

    let (a_session, about_b) = identified(&mut a).await;
    let (b_session, about_a) = identified(&mut b).await;
    assert_eq!(a_session, session.id);
    assert_eq!(about_b.agent_version, "agent-b");
    assert_eq!(about_b.protocols, vec![PROTOCOL_NAME, "/other/1"]);
    assert_eq!(about_b.listen_addrs, vec![b.addr.clone()]);
    assert_eq!(about_b.record.peer_id(), b.control.local_peer_id());
    assert_eq!(about_b.record.addrs(), &[b.addr.clone()]);
    assert_eq!(about_a.record.peer_id(), a.control.local_peer_id());
    assert_eq!(about_a.listen_addrs, vec![a.addr.clone()]);

    // Observed addresses: A dialled B's listen address, so A tells B it sees
    // it there; B tells A the address A's connection came from.
    assert_eq!(about_a.observed_addr.as_ref(), Some(&b.addr));
    let b_view_of_a = b.control.session(b_session).unwrap().remote_addr.clone();
    assert_eq!(about_b.observed_addr, Some(b_view_of_a));

    // The handles answer the same.
    assert_eq!(a.handle.info(a_session).unwrap(), about_b);
    assert_eq!(
        b.handle.peer_info(a.control.local_peer_id()).unwrap(),
        about_a
    );
    assert_eq!(a.handle.all().len(), 1);
    // B, which never dialled A, can dial it by id now: A's listen address
    // went into B's service address book.
    assert_eq!(
        b.control.addresses(&a.control.local_peer_id()),
        vec![a.addr.without_peer_id()]
    );

    // Relayed to a third party as bytes, B's record still verifies there and
    // names B; a flipped byte anywhere breaks it.
    let relayed = about_b.record.to_bytes();
    let third = SignedPeerRecord::from_bytes(&relayed).unwrap();
    assert_eq!(third.peer_id(), b.control.local_peer_id());
    assert_eq!(third.addrs(), &[b.addr.clone()]);
    for i in [10, relayed.len() / 2, relayed.len() - 1] {
        let mut bad = relayed.to_vec();
        bad[i] ^= 1;
        assert!(SignedPeerRecord::from_bytes(&bad).is_err(), "flip at {i}");
    }
}

#[tokio::test]
async fn a_forged_record_is_rejected_and_only_that_substream_closes() {
    let network = MemoryNetwork::new();
    let mut a = node(&network, "a").await;
    let bad_key = Keypair::generate();
    let (bad, mut bad_events) = raw_peer(&network, bad_key).await;
    let session = bad
        .dial(a.addr.clone(), DialOptions::default())
        .await
        .unwrap()
        .id;

    // A validly signed record, but of another peer: relaying someone else's
    // record over identify is a forgery of identity.
    let someone = Keypair::generate();
    let forged = IdentifyInfo {
        agent_version: "forger".into(),
        listen_addrs: vec![],
        protocols: vec![],
        observed_addr: None,
        record: SignedPeerRecord::sign(&someone, 1, vec!["/memory/9".parse().unwrap()]).unwrap(),
    };
    bad.send(session, IDENTIFY, forged.encode()).await.unwrap();
    match next_event(&mut a.events).await {
        Event::Rejected { peer, error, .. } => {
            assert_eq!(peer, bad.local_peer_id());
            assert!(
                matches!(error, IdentifyError::SignerMismatch { signer, .. } if signer == someone.peer_id())
            );
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    until_disconnected(&mut bad_events).await;
    assert!(bad.session(session).is_some(), "only the substream closes");

    // A good peer identifies normally afterwards.
    let mut c = node(&network, "c").await;
    c.control
        .dial(a.addr.clone(), DialOptions::default())
        .await
        .unwrap();
    let (_, about_c) = identified(&mut a).await;
    assert_eq!(about_c.record.peer_id(), c.control.local_peer_id());
    identified(&mut c).await;
}

#[tokio::test]
async fn garbage_and_repeated_messages_close_the_substream() {
    let network = MemoryNetwork::new();
    let mut a = node(&network, "a").await;
    let key = Keypair::generate();
    let (bad, mut bad_events) = raw_peer(&network, key.clone()).await;
    let session = bad
        .dial(a.addr.clone(), DialOptions::default())
        .await
        .unwrap()
        .id;
    bad.send(session, IDENTIFY, vec![0xff; 7]).await.unwrap();
    assert!(matches!(
        next_event(&mut a.events).await,
        Event::Rejected {
            error: IdentifyError::Decode(_),
            ..
        }
    ));
    until_disconnected(&mut bad_events).await;

    // Reopen; a valid message is accepted, a second one is a violation.
    bad.open_protocol(session, IDENTIFY).await.unwrap();
    let own = IdentifyInfo {
        agent_version: "raw".into(),
        listen_addrs: vec![],
        protocols: vec![],
        observed_addr: None,
        record: SignedPeerRecord::sign(&key, 1, vec![]).unwrap(),
    };
    bad.send(session, IDENTIFY, own.encode()).await.unwrap();
    let (_, info) = identified(&mut a).await;
    assert_eq!(info.agent_version, "raw");
    bad.send(session, IDENTIFY, own.encode()).await.unwrap();
    assert!(matches!(
        next_event(&mut a.events).await,
        Event::Rejected {
            error: IdentifyError::Repeated,
            ..
        }
    ));
}
