//! The messenger as a plug-in: two nodes built by the embedder, each
//! running Kademlia, gossip, an application protocol of its own and the
//! messenger's envelope protocol on one service. All three work side by
//! side: a chat message (a request, accepted, then answered), a gossip
//! message, and an application frame.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal::{
    Bytes, HandlerResult, ProtocolContextMut, ProtocolId, ProtocolMeta, ServiceBuilder,
    ServiceControl, ServiceProtocol,
};
use shoal_gossip::Topic;
use shoal_im::MemoryStore;
use shoal_messenger::{Event, Messenger, MessengerConfig};
use shoal_transport::{MemoryNetwork, MemoryTransport, Multiaddr};
use tokio::sync::mpsc;

const KAD: ProtocolId = ProtocolId(20);
const GOSSIP: ProtocolId = ProtocolId(21);
const APP: ProtocolId = ProtocolId(22);
const IM: ProtocolId = ProtocolId(23);
const STEP: Duration = Duration::from_secs(20);

/// The application's own protocol: keeps what it receives.
#[derive(Clone, Default)]
struct App(Arc<Mutex<Vec<Bytes>>>);

impl ServiceProtocol for App {
    fn received(&mut self, _ctx: &mut ProtocolContextMut<'_>, data: Bytes) -> HandlerResult {
        self.0.lock().unwrap().push(data);
        Ok(())
    }
}

struct Node {
    control: ServiceControl,
    messenger: Messenger,
    events: mpsc::Receiver<Event>,
    gossip: shoal_gossip::Handle,
    gossip_events: mpsc::Receiver<shoal_gossip::Event>,
    app: App,
}

async fn node(network: &MemoryNetwork, bootstrap: Option<Multiaddr>) -> Node {
    let config = MessengerConfig {
        bootstrap: bootstrap.into_iter().collect(),
        ..MessengerConfig::default()
    };
    let engine = shoal_messenger::open_engine(MemoryStore::new(), &config).unwrap();
    // The node's key must be the messenger's device key.
    let key = engine.device().signing_key().clone();
    let (kad, dht, _) = shoal_kad::new(KAD, key.peer_id(), shoal_messenger::kad_config(&config));
    shoal_messenger::directory::install_validators(&dht);
    let (gossip_meta, gossip, gossip_events) =
        shoal_gossip::new(GOSSIP, shoal_gossip::Config::default(), key.clone());
    let app = App::default();
    let (im, messenger, events) = Messenger::protocol(IM, engine, dht, config);
    let service = ServiceBuilder::new(key)
        .transport(MemoryTransport::new(network))
        .protocol(kad)
        .protocol(gossip_meta)
        .protocol(ProtocolMeta::builder(APP, "/my-app").service_handle(app.clone()))
        .protocol(im)
        .build()
        .unwrap();
    let control = service.control();
    control.listen("/memory/0".parse().unwrap()).await.unwrap();
    tokio::spawn(service);
    Node {
        control,
        messenger,
        events,
        gossip,
        gossip_events,
        app,
    }
}

async fn next_event(node: &mut Node, what: &str, mut pred: impl FnMut(&Event) -> bool) -> Event {
    tokio::time::timeout(STEP, async {
        loop {
            let event = node.events.recv().await.unwrap();
            if pred(&event) {
                return event;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messenger_gossip_and_an_app_protocol_share_a_node() {
    let network = MemoryNetwork::new();
    let mut bob = node(&network, None).await;
    let seed = bob.control.listen_addrs()[0].with_peer_id(bob.control.local_peer_id());
    let mut alice = node(&network, Some(seed)).await;
    let (alice_id, bob_id) = (alice.messenger.user_id(), bob.messenger.user_id());

    // Chat: alice writes to bob, found through the DHT; bob accepts the
    // request and answers.
    alice.messenger.add_contact(bob_id, "bob").await.unwrap();
    alice.messenger.send(bob_id, "hello bob").await.unwrap();
    next_event(
        &mut bob,
        "the request",
        |e| matches!(e, Event::MessageRequest { contact } if *contact == alice_id),
    )
    .await;
    bob.messenger.add_contact(alice_id, "alice").await.unwrap();
    let got = next_event(&mut bob, "alice's message", |e| {
        matches!(e, Event::Received { .. })
    })
    .await;
    let Event::Received { message, .. } = got else {
        unreachable!()
    };
    assert_eq!(message.text(), "hello bob");
    bob.messenger.send(alice_id, "hi alice").await.unwrap();
    next_event(
        &mut alice,
        "bob's answer",
        |e| matches!(e, Event::Received { message, .. } if message.text() == "hi alice"),
    )
    .await;

    // Gossip on the same sessions.
    let topic = Topic::new("news").unwrap();
    alice.gossip.subscribe(topic.clone()).unwrap();
    bob.gossip.subscribe(topic.clone()).unwrap();
    tokio::time::timeout(STEP, async {
        loop {
            if alice.gossip.publish(topic.clone(), "extra").is_ok() {
                loop {
                    if let Some(shoal_gossip::Event::Message { payload, .. }) =
                        bob.gossip_events.recv().await
                    {
                        assert_eq!(payload, "extra");
                        return;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("gossip message not delivered");
    drop(alice.gossip_events.try_recv());

    // The application's own protocol, by peer id.
    alice
        .control
        .send_to_peer(bob.control.local_peer_id(), APP, "app frame")
        .await
        .unwrap();
    tokio::time::timeout(STEP, async {
        while bob.app.0.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("application frame not delivered");
    assert_eq!(bob.app.0.lock().unwrap()[0], "app frame");

    alice.messenger.shutdown().await;
    bob.messenger.shutdown().await;
    alice.control.shutdown().await;
    bob.control.shutdown().await;
}
