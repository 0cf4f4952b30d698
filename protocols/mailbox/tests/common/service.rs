//! Mailbox nodes on real services over TCP: a replica or a client, on a
//! loopback address of the test's choosing.

use shoal::{ServiceBuilder, ServiceControl};
use shoal_identity::Keypair;
use shoal_mailbox::{Config, Event, Handle, MemoryStore, Replica, ReplicaConfig, ReplicaStore};
use shoal_transport::{Multiaddr, TcpTransport};
use tokio::sync::mpsc;

/// The protocol id the tests register the mailbox protocol under.
pub const MAILBOX: shoal::ProtocolId = shoal::ProtocolId(7);

/// A running node: its service, its mailbox handle and events, its address.
pub struct Node {
    pub control: ServiceControl,
    pub handle: Handle,
    pub events: mpsc::Receiver<Event>,
    pub addr: Multiaddr,
}

/// The wall clock, in milliseconds.
pub fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A node listening on `ip`, keeping mailboxes under `replica` if given
/// (a client only otherwise).
pub async fn node(ip: &str, replica: Option<ReplicaConfig>) -> Node {
    let key = Keypair::generate();
    let replica = replica.map(|config| {
        let store: Box<dyn ReplicaStore> = Box::new(MemoryStore::new());
        Replica::open(key.clone(), store, config, unix_now_ms()).unwrap()
    });
    let (meta, handle, events) = shoal_mailbox::new(MAILBOX, Config::default(), replica);
    let service = ServiceBuilder::new(key)
        .transport(TcpTransport::default())
        .protocol(meta)
        .build()
        .unwrap();
    let control = service.control();
    let addr = control
        .listen(format!("/ip4/{ip}/tcp/0").parse().unwrap())
        .await
        .unwrap();
    tokio::spawn(service);
    Node {
        control,
        handle,
        events,
        addr,
    }
}
