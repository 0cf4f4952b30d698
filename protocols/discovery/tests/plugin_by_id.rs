//! A custom protocol plug-in reaches a peer it learned of only through
//! discovery, by peer id: no address in its code. Alice and bob bootstrap
//! through one seed and dial nobody else (a target of one connection);
//! alice's discovery learns bob's signed record from the seed, which puts
//! bob's address in the service's address book; alice's plug-in then sends
//! "hello" to bob's peer id, and the service dials bob to deliver it.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal::{
    Bytes, Direction, HandlerResult, PeerId, ProtocolContextMut, ProtocolId, ProtocolMeta,
    ServiceBuilder, ServiceControl, ServiceProtocol,
};
use shoal_discovery::{Config, Event};
use shoal_identify::LocalRecord;
use shoal_identity::Keypair;
use shoal_transport::{MemoryNetwork, MemoryTransport, Multiaddr};
use tokio::sync::mpsc;

const DISCOVERY: ProtocolId = ProtocolId(3);
const HELLO: ProtocolId = ProtocolId(10);
const STEP: Duration = Duration::from_secs(10);

/// The plug-in: greets every peer the application names, by id, and
/// keeps what it was sent. Nothing about addresses or sessions.
#[derive(Clone, Default)]
struct Hello {
    heard: Arc<Mutex<Vec<(PeerId, Bytes)>>>,
}

impl ServiceProtocol for Hello {
    fn received(&mut self, ctx: &mut ProtocolContextMut<'_>, data: Bytes) -> HandlerResult {
        self.heard.lock().unwrap().push((ctx.session().peer, data));
        Ok(())
    }
}

struct Node {
    control: ServiceControl,
    hello: Hello,
    events: mpsc::Receiver<Event>,
    addr: Multiaddr,
}

async fn node(network: &MemoryNetwork, bootstrap: Vec<Multiaddr>) -> Node {
    let key = Keypair::generate();
    let config = Config {
        bootstrap,
        // Only the seed: nobody dials anybody else on its own.
        target_connections: 1,
        tick_interval: Duration::from_millis(50),
        request_interval: Duration::from_millis(200),
        min_request_interval: Duration::from_millis(100),
        ..Config::default()
    };
    let (meta, _handle, events) =
        shoal_discovery::new(DISCOVERY, LocalRecord::new(key.clone()), config);
    let hello = Hello::default();
    let service = ServiceBuilder::new(key)
        .transport(MemoryTransport::new(network))
        .protocol(meta)
        .protocol(ProtocolMeta::builder(HELLO, "/hello").service_handle(hello.clone()))
        .build()
        .unwrap();
    let control = service.control();
    let addr = control.listen("/memory/0".parse().unwrap()).await.unwrap();
    tokio::spawn(service);
    Node {
        control,
        hello,
        events,
        addr,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_sends_to_a_peer_known_only_through_discovery() {
    let network = MemoryNetwork::new();
    let seed = node(&network, vec![]).await;
    let seed_addr = seed.addr.with_peer_id(seed.control.local_peer_id());
    let mut alice = node(&network, vec![seed_addr.clone()]).await;
    let bob = node(&network, vec![seed_addr]).await;
    let bob_id = bob.control.local_peer_id();

    // Alice learns of bob from the seed's answer, and only so.
    tokio::time::timeout(STEP, async {
        loop {
            match alice.events.recv().await.unwrap() {
                Event::Discovered { peer, .. } if peer == bob_id => return,
                _ => {}
            }
        }
    })
    .await
    .expect("alice never discovered bob");
    assert!(
        alice.control.sessions().iter().all(|s| s.peer != bob_id),
        "alice was not to be connected to bob yet"
    );

    // The plug-in sends by peer id; the service finds bob's address in its
    // book (put there by discovery) and dials.
    alice
        .control
        .try_send_to_peer(bob_id, HELLO, "hello bob")
        .unwrap();
    let alice_id = alice.control.local_peer_id();
    tokio::time::timeout(STEP, async {
        loop {
            if !bob.hello.heard.lock().unwrap().is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("bob never heard alice");
    assert_eq!(
        bob.hello.heard.lock().unwrap().as_slice(),
        &[(alice_id, Bytes::from("hello bob"))]
    );
    let session = alice
        .control
        .sessions()
        .into_iter()
        .find(|s| s.peer == bob_id)
        .unwrap();
    assert_eq!(session.direction, Direction::Outbound);
    assert!(alice.hello.heard.lock().unwrap().is_empty());
    for n in [&alice, &bob, &seed] {
        n.control.shutdown().await;
    }
}
