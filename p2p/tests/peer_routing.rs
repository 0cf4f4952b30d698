//! Reaching peers by id through the service: frames queued while the peer
//! is dialled arrive in order; a peer that cannot be reached is reported
//! to the protocol's handler; `dial` returns with the protocols open and
//! names those refused; the cipher suite is chosen per service and shown on
//! the session; service events come as a stream too.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal::address_book::AddressSource;
use shoal::{
    CipherSuite, DialError, DialOptions, HandlerResult, PeerId, ProtocolContext, ProtocolEvent,
    ProtocolId, ProtocolMeta, SendError, ServiceBuilder, ServiceEvent, ServiceProtocol,
    ServiceReport,
};
use shoal_identity::Keypair;
use shoal_transport::{MemoryNetwork, MemoryTransport, Multiaddr};

const STEP: Duration = Duration::from_secs(5);
const CHAT: ProtocolId = ProtocolId(1);
const OTHER: ProtocolId = ProtocolId(2);

/// Records the peers whose dial failed.
#[derive(Clone, Default)]
struct Failures(Arc<Mutex<Vec<PeerId>>>);

impl ServiceProtocol for Failures {
    fn dial_failed(
        &mut self,
        _ctx: &mut ProtocolContext,
        peer: PeerId,
        _error: &DialError,
    ) -> HandlerResult {
        self.0.lock().unwrap().push(peer);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_wait_for_the_dial_and_failures_reach_the_handler() {
    let network = MemoryNetwork::new();
    let (meta, mut events) = ProtocolMeta::builder(CHAT, "/chat").event_stream();
    let server = ServiceBuilder::new(Keypair::generate())
        .transport(MemoryTransport::new(&network))
        .protocol(meta)
        .build()
        .unwrap();
    let server_control = server.control();
    tokio::spawn(server);
    let addr = server_control
        .listen("/memory/0".parse().unwrap())
        .await
        .unwrap();

    let failures = Failures::default();
    let client = ServiceBuilder::new(Keypair::generate())
        .transport(MemoryTransport::new(&network))
        .protocol(ProtocolMeta::builder(CHAT, "/chat").service_handle(failures.clone()))
        .build()
        .unwrap();
    let control = client.control();
    tokio::spawn(client);

    // Ten frames to a peer we have no session with: they wait, the service
    // dials it from the address book, and they arrive in order.
    let server_id = server_control.local_peer_id();
    control.add_addresses(server_id, &[addr], AddressSource::Application);
    for i in 0..10u8 {
        control.try_send_to_peer(server_id, CHAT, vec![i]).unwrap();
    }
    let mut got = Vec::new();
    tokio::time::timeout(STEP, async {
        while got.len() < 10 {
            if let Some(ProtocolEvent::Received { data, .. }) = events.recv().await {
                got.push(data[0]);
            }
        }
    })
    .await
    .expect("queued frames did not arrive");
    assert_eq!(got, (0..10).collect::<Vec<u8>>());
    // Connected now: the next one goes straight to the session.
    control.try_send_to_peer(server_id, CHAT, vec![10]).unwrap();

    // A peer with a dead address: the frames are dropped and the handler
    // hears of it.
    let nobody = Keypair::generate().peer_id();
    let dead: Multiaddr = "/memory/987654".parse().unwrap();
    control.add_addresses(nobody, &[dead], AddressSource::Application);
    control.try_send_to_peer(nobody, CHAT, "lost").unwrap();
    // A peer with no address at all.
    let unknown = Keypair::generate().peer_id();
    control.try_send_to_peer(unknown, CHAT, "lost").unwrap();
    tokio::time::timeout(STEP, async {
        while failures.0.lock().unwrap().len() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the handler was not told");
    let mut told = failures.0.lock().unwrap().clone();
    told.sort();
    let mut expected = vec![nobody, unknown];
    expected.sort();
    assert_eq!(told, expected);
    // The async form says so directly.
    assert_eq!(
        control.send_to_peer(unknown, CHAT, "x").await,
        Err(SendError::Unreachable(unknown))
    );

    control.shutdown().await;
    server_control.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dial_returns_with_protocols_open_and_names_the_refused() {
    let network = MemoryNetwork::new();
    // The server speaks only CHAT, and only ChaChaPoly.
    let (meta, _events) = ProtocolMeta::builder(CHAT, "/chat").event_stream();
    let (server, mut reports) = ServiceBuilder::new(Keypair::generate())
        .transport(MemoryTransport::new(&network))
        .protocol(meta)
        .cipher_suites([CipherSuite::ChaChaPoly])
        .event_stream();
    let server = server.build().unwrap();
    let server_control = server.control();
    tokio::spawn(server);
    let addr = server_control
        .listen("/memory/0".parse().unwrap())
        .await
        .unwrap();

    let (chat, mut chat_events) = ProtocolMeta::builder(CHAT, "/chat").event_stream();
    let (other, _other_events) = ProtocolMeta::builder(OTHER, "/other").event_stream();
    let client = ServiceBuilder::new(Keypair::generate())
        .transport(MemoryTransport::new(&network))
        .protocol(chat)
        .protocol(other)
        .build()
        .unwrap();
    let control = client.control();
    tokio::spawn(client);

    let session = control.dial(addr, DialOptions::default()).await.unwrap();
    assert_eq!(session.opened.len(), 1);
    assert_eq!(session.opened[0].0, CHAT);
    assert_eq!(session.refused.len(), 1);
    assert_eq!(session.refused[0].0, OTHER);
    assert_eq!(session.cipher_suite, CipherSuite::ChaChaPoly);
    assert_eq!(
        control.protocol_version(session.id, CHAT),
        Some(1),
        "open when dial returns: a send cannot fail"
    );
    control.send(session.id, CHAT, "now").await.unwrap();
    drop(chat_events.try_recv());

    // The server's stream saw the session open.
    let opened = tokio::time::timeout(STEP, async {
        loop {
            match reports.recv().await {
                Some(ServiceReport::Event(ServiceEvent::SessionOpened { session, .. })) => {
                    return session;
                }
                Some(_) => {}
                None => panic!("stream ended"),
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(opened.peer, control.local_peer_id());
    assert_eq!(opened.cipher_suite, CipherSuite::ChaChaPoly);
    assert_eq!(reports.dropped(), 0);
    control.shutdown().await;
    server_control.shutdown().await;
}

#[tokio::test]
async fn frames_waiting_for_a_peer_are_bounded() {
    let network = MemoryNetwork::new();
    let (meta, _events) = ProtocolMeta::builder(CHAT, "/chat").event_stream();
    let client = ServiceBuilder::new(Keypair::generate())
        .transport(MemoryTransport::new(&network))
        .protocol(meta)
        .build()
        .unwrap();
    let control = client.control();
    tokio::spawn(client);
    // On this single-threaded runtime the dial cannot start before the
    // loop yields, so the queue fills.
    let slow = Keypair::generate().peer_id();
    let limit = shoal::config::MAX_QUEUED_FRAMES_PER_PEER;
    for _ in 0..limit {
        control.try_send_to_peer(slow, CHAT, "x").unwrap();
    }
    assert_eq!(
        control.try_send_to_peer(slow, CHAT, "x"),
        Err(SendError::PeerQueueFull(slow))
    );
    control.shutdown().await;
}
