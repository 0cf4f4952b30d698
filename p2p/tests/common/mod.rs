//! Shared test helpers: a recording service handle, node construction and
//! bounded waits.
#![allow(clippy::unwrap_used, dead_code, unreachable_pub)]

use std::time::Duration;

use shoal::{
    Multiaddr, ProtocolEvent, ProtocolEvents, ServiceBuilder, ServiceContext, ServiceControl,
    ServiceError, ServiceEvent, ServiceHandle,
};
use shoal_identity::Keypair;
use shoal_transport::{MemoryNetwork, MemoryTransport};
use tokio::sync::mpsc;

/// Upper bound for one step of a test.
pub const STEP: Duration = Duration::from_secs(5);

/// What the recording handle saw.
#[derive(Debug)]
pub enum Notice {
    Event(ServiceEvent),
    Error(ServiceError),
}

/// Forwards every report into a bounded channel (drops when full).
pub struct Recorder(pub mpsc::Sender<Notice>);

impl ServiceHandle for Recorder {
    fn handle_event(&mut self, _ctx: &mut ServiceContext<'_>, event: ServiceEvent) {
        let _ = self.0.try_send(Notice::Event(event));
    }
    fn handle_error(&mut self, _ctx: &mut ServiceContext<'_>, error: ServiceError) {
        let _ = self.0.try_send(Notice::Error(error));
    }
}

/// A running node.
pub struct Node {
    pub control: ServiceControl,
    pub notices: mpsc::Receiver<Notice>,
    pub addr: Option<Multiaddr>,
}

impl Node {
    /// Waits (bounded) for a notice matching `pred`, skipping others.
    pub async fn wait_for(&mut self, what: &str, mut pred: impl FnMut(&Notice) -> bool) -> Notice {
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            let notice = tokio::time::timeout_at(deadline, self.notices.recv())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
                .expect("service stopped");
            if pred(&notice) {
                return notice;
            }
        }
    }
}

/// Builds, spawns and (optionally) starts listening on `/memory/0`.
pub async fn memory_node(
    network: &MemoryNetwork,
    listen: bool,
    configure: impl FnOnce(ServiceBuilder) -> ServiceBuilder,
) -> Node {
    let (tx, rx) = mpsc::channel(4096);
    let builder = ServiceBuilder::new(Keypair::generate())
        .transport(MemoryTransport::new(network))
        .handle(Recorder(tx));
    let service = configure(builder).build().unwrap();
    let control = service.control();
    tokio::spawn(service);
    let addr = if listen {
        Some(control.listen("/memory/0".parse().unwrap()).await.unwrap())
    } else {
        None
    };
    Node {
        control,
        notices: rx,
        addr,
    }
}

/// The next protocol event, bounded.
pub async fn next_event(events: &mut ProtocolEvents) -> ProtocolEvent {
    tokio::time::timeout(STEP, events.recv())
        .await
        .expect("timed out waiting for a protocol event")
        .expect("event stream ended")
}

/// Skips events until a `Received`, returning its payload.
pub async fn next_data(events: &mut ProtocolEvents) -> bytes::Bytes {
    for _ in 0..16 {
        if let ProtocolEvent::Received { data, .. } = next_event(events).await {
            return data;
        }
    }
    panic!("no data among 16 events");
}

/// Runs `f` under the step timeout.
pub async fn step<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP, f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}
