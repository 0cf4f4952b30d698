//! Shared helpers: discovery nodes on an in-memory network, bounded waits.
#![allow(clippy::unwrap_used, dead_code, unreachable_pub)]

use std::time::Duration;

use shoal::{Direction, Multiaddr, PeerId, ProtocolId, ServiceBuilder, ServiceControl};
use shoal_discovery::{Config, Handle};
use shoal_identify::LocalRecord;
use shoal_identity::Keypair;
use shoal_transport::{MemoryNetwork, MemoryTransport};

pub const DISCOVERY: ProtocolId = ProtocolId(3);

/// Small intervals so a test network converges in a few seconds.
pub fn fast_config(bootstrap: Vec<Multiaddr>) -> Config {
    Config {
        bootstrap,
        target_connections: 4,
        tick_interval: Duration::from_millis(50),
        request_interval: Duration::from_millis(200),
        min_request_interval: Duration::from_millis(100),
        max_records_per_response: 16,
        max_failures: 3,
        dial_backoff: Duration::from_millis(50),
        max_dial_backoff: Duration::from_millis(400),
        peer_ttl: Duration::from_secs(3),
        bootstrap_retry: Duration::from_millis(500),
        ..Config::default()
    }
}

pub struct Node {
    pub control: ServiceControl,
    pub handle: Handle,
    pub addr: Multiaddr,
}

impl Node {
    pub fn id(&self) -> PeerId {
        self.control.local_peer_id()
    }

    /// The address with `/p2p/`.
    pub fn full_addr(&self) -> Multiaddr {
        self.addr.with_peer_id(self.id())
    }

    pub fn outbound(&self) -> usize {
        self.control
            .sessions()
            .iter()
            .filter(|s| s.direction == Direction::Outbound)
            .count()
    }

    /// Peers in the store that have a record.
    pub fn known(&self) -> Vec<PeerId> {
        self.handle
            .peers()
            .into_iter()
            .filter(|p| p.record.is_some())
            .map(|p| p.peer)
            .collect()
    }
}

/// Builds a discovery node, listens on `/memory/0` *before* the service
/// starts (so its first record already has its address), then spawns it.
pub async fn node(network: &MemoryNetwork, config: Config) -> Node {
    let key = Keypair::generate();
    let (meta, handle, _events) =
        shoal_discovery::new(DISCOVERY, LocalRecord::new(key.clone()), config);
    let service = ServiceBuilder::new(key)
        .transport(MemoryTransport::new(network))
        .protocol(meta)
        .build()
        .unwrap();
    let control = service.control();
    let addr = control.listen("/memory/0".parse().unwrap()).await.unwrap();
    tokio::spawn(service);
    Node {
        control,
        handle,
        addr,
    }
}

/// Polls `check` every 50 ms until it holds or `limit` passes; on timeout
/// panics with what `check` last said.
pub async fn eventually(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> Result<(), String>,
) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match check() {
            Ok(()) => return,
            Err(why) if tokio::time::Instant::now() >= deadline => {
                panic!("timed out after {limit:?} waiting for {what}: {why}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
