//! What a service node runs to keep mailboxes for messengers: the mailbox
//! DHT as a full member (so lookups find it among a mailbox's replicas)
//! and the mailbox protocol with a [`Replica`](shoal_mailbox::Replica).
//! The `node` example runs it beside its other protocols.
//!
//! ```
//! use shoal::ServiceBuilder;
//! use shoal_identity::Keypair;
//! use shoal_mailbox::{MemoryStore, Replica, ReplicaConfig};
//! use shoal_messenger::service_node::MailboxNode;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let key = Keypair::generate();
//! let replica = Replica::open(key.clone(), Box::new(MemoryStore::new()) as _, ReplicaConfig::default(), 0)?;
//! let (node, protocols) = MailboxNode::new(key.peer_id(), replica, Default::default());
//! let mut builder = ServiceBuilder::new(key);
//! for protocol in protocols {
//!     builder = builder.protocol(protocol);
//! }
//! // ... identify lists `shoal_messenger::service_node::PROTOCOL_NAMES`,
//! // each peer it identifies goes to `node.identified(...)`, and
//! // `tokio::spawn(node.maintain())` keeps the mailboxes whole.
//! # Ok(())
//! # }
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal::{PeerId, ProtocolMeta};
use shoal_mailbox::{DynReplica, WakeToken};
use shoal_transport::{Multiaddr, ScopePolicy};
use tokio::sync::mpsc;

use crate::{MAILBOX, MAILBOX_KAD};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The names a node keeping mailboxes lists in identify: messengers join
/// the mailbox DHT through the peers that list [`DHT_PROTOCOL_NAME`].
///
/// [`DHT_PROTOCOL_NAME`]: shoal_mailbox::DHT_PROTOCOL_NAME
pub const PROTOCOL_NAMES: [&str; 2] = [
    shoal_mailbox::DHT_PROTOCOL_NAME,
    shoal_mailbox::PROTOCOL_NAME,
];

/// How often the replica learns the mailbox DHT's routing table (its view
/// of who replicates each mailbox), at most: and at least once per sync
/// interval.
const NEIGHBOURS_EVERY: Duration = Duration::from_secs(30);

/// What a node runs when a replica wakes it for one of its tokens (see
/// [`MailboxNode::on_wake`]): given the token and the replica's peer id.
pub type WakeCallback = Arc<dyn Fn(WakeToken, PeerId) + Send + Sync>;

/// The tokens a node acts on, and what it runs for them.
type OnWake = Arc<Mutex<Option<(Vec<WakeToken>, WakeCallback)>>>;

/// The mailbox DHT and the mailbox protocol of a node that keeps mailboxes.
#[derive(Clone)]
pub struct MailboxNode {
    /// The mailbox DHT.
    pub dht: shoal_kad::Handle,
    /// The mailbox protocol (its replica's counters).
    pub mailbox: shoal_mailbox::Handle,
    joined: Arc<AtomicBool>,
    events: Arc<Mutex<Option<mpsc::Receiver<shoal_mailbox::Event>>>>,
    neighbours_every: Duration,
    on_wake: OnWake,
}

impl std::fmt::Debug for MailboxNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailboxNode").finish_non_exhaustive()
    }
}

impl MailboxNode {
    /// Node `local` keeping mailboxes in `replica`, and the protocols to
    /// register with its service: [`MAILBOX_KAD`] and [`MAILBOX`]. `scope`
    /// is the DHT's address policy.
    pub fn new(
        local: PeerId,
        replica: DynReplica,
        scope: ScopePolicy,
    ) -> (MailboxNode, Vec<ProtocolMeta>) {
        Self::with_config(local, replica, scope, shoal_mailbox::Config::default())
    }

    /// [`MailboxNode::new`] with the mailbox core's `config` (its sync
    /// interval, for one).
    pub fn with_config(
        local: PeerId,
        replica: DynReplica,
        scope: ScopePolicy,
        config: shoal_mailbox::Config,
    ) -> (MailboxNode, Vec<ProtocolMeta>) {
        let (dht_meta, dht, _) = shoal_kad::new_named(
            MAILBOX_KAD,
            shoal_mailbox::DHT_PROTOCOL_NAME,
            local,
            shoal_kad::Config {
                address_scope: scope,
                ..shoal_kad::Config::default()
            },
        );
        let neighbours_every = NEIGHBOURS_EVERY.min(config.sync_interval);
        let (mailbox_meta, mailbox, events) = shoal_mailbox::new(MAILBOX, config, Some(replica));
        let node = MailboxNode {
            dht,
            mailbox,
            joined: Arc::default(),
            events: Arc::new(Mutex::new(Some(events))),
            neighbours_every,
            on_wake: Arc::default(),
        };
        (node, vec![dht_meta, mailbox_meta])
    }

    /// Makes this node a wake-up endpoint (see `shoal_mailbox::wake`):
    /// when a replica wakes it with one of `tokens` (handed to the devices
    /// that register this node), [`maintain`](MailboxNode::maintain) calls
    /// `callback`, at most once per token per
    /// [`WAKE_COALESCE`](shoal_mailbox::wake::WAKE_COALESCE). Wake-ups
    /// with other tokens are ignored. Replaces an earlier callback.
    pub fn on_wake(
        &self,
        tokens: Vec<WakeToken>,
        callback: impl Fn(WakeToken, PeerId) + Send + Sync + 'static,
    ) {
        *lock(&self.on_wake) = Some((tokens, Arc::new(callback)));
    }

    /// Keeps the replica's mailboxes whole with the other replicas: gives
    /// it the DHT's routing table every 30 seconds (or sync interval, if
    /// shorter) and answers its
    /// lookups (see `shoal_mailbox::core`'s sync). Spawn it once; a second
    /// call returns at once.
    pub async fn maintain(self) {
        let taken = lock(&self.events).take();
        let Some(mut events) = taken else {
            return;
        };
        let mut tick = tokio::time::interval(self.neighbours_every);
        loop {
            tokio::select! {
                _ = tick.tick() => self.mailbox.set_neighbours(self.dht.table_peers()),
                event = events.recv() => match event {
                    None => return,
                    Some(shoal_mailbox::Event::LookupWanted { mailbox }) => {
                        let (dht, handle) = (self.dht.clone(), self.mailbox.clone());
                        tokio::spawn(async move {
                            let key = shoal_kad::Key::from_bytes(*mailbox.as_bytes());
                            if let Ok((closest, _)) = dht.find_node(key).await {
                                let found = closest.into_iter().map(|c| c.peer).collect();
                                handle.set_members(mailbox, found);
                            }
                        });
                    }
                    Some(shoal_mailbox::Event::Woken { peer, token }) => {
                        let wanted = lock(&self.on_wake)
                            .as_ref()
                            .filter(|(tokens, _)| tokens.contains(&token))
                            .map(|(_, callback)| callback.clone());
                        if let Some(callback) = wanted {
                            callback(token, peer);
                        }
                    }
                    Some(_) => {}
                },
            }
        }
    }

    /// Identify told us of `peer` at `addrs` speaking `protocols`: a peer
    /// keeping mailboxes joins the mailbox DHT's routing table, and the
    /// first one is this node's way into that DHT.
    pub fn identified(&self, peer: PeerId, addrs: &[Multiaddr], protocols: &[String]) {
        if !protocols
            .iter()
            .any(|p| p == shoal_mailbox::DHT_PROTOCOL_NAME)
        {
            return;
        }
        self.dht.add_address(peer, addrs.to_vec());
        if !self.joined.swap(true, Ordering::Relaxed) {
            let (dht, seeds) = (self.dht.clone(), vec![(peer, addrs.to_vec())]);
            tokio::spawn(async move {
                let _ = dht.bootstrap(seeds).await;
            });
        }
    }
}

/// A service node started by [`spawn`]: identify, the main DHT (with the
/// messenger's record validators), the mailbox DHT and a replica.
#[derive(Debug, Clone)]
pub struct SpawnedNode {
    /// Its address, with its peer id.
    pub addr: Multiaddr,
    /// The node's service.
    pub control: shoal::ServiceControl,
    /// Its mailboxes.
    pub mailboxes: MailboxNode,
}

/// Starts a service node keeping mailboxes in `replica`, listening on
/// `listen` over `transport` and joining through `seed` (if any): the
/// smallest node messengers can use, for tests, benches and examples (the
/// `node` example runs more: ping, discovery, gossip). Needs a tokio
/// runtime.
pub async fn spawn(
    key: shoal_identity::Keypair,
    transport: impl shoal_transport::Transport,
    listen: Multiaddr,
    seed: Option<&Multiaddr>,
    replica: DynReplica,
) -> Result<SpawnedNode, Box<dyn std::error::Error + Send + Sync>> {
    use shoal::address_book::AddressSource;
    let config = crate::MessengerConfig::default();
    let (kad, dht, _) = shoal_kad::new(crate::KAD, key.peer_id(), crate::kad_config(&config));
    crate::directory::install_validators(&dht);
    let (mailboxes, protocols) = MailboxNode::new(key.peer_id(), replica, config.address_scope);
    let mut names = vec![
        shoal_identify::PROTOCOL_NAME.to_owned(),
        shoal_kad::PROTOCOL_NAME.to_owned(),
    ];
    names.extend(PROTOCOL_NAMES.iter().map(|n| n.to_string()));
    let (identify, _, mut identified) = shoal_identify::new(
        crate::IDENTIFY,
        shoal_identify::LocalRecord::new(key.clone()),
        shoal_identify::Config {
            protocols: names,
            ..shoal_identify::Config::default()
        },
    );
    let mut builder = shoal::ServiceBuilder::new(key)
        .transport(transport)
        .protocol(identify)
        .protocol(kad);
    for protocol in protocols {
        builder = builder.protocol(protocol);
    }
    let service = builder.build()?;
    let control = service.control();
    let addr = control
        .listen(listen)
        .await?
        .with_peer_id(control.local_peer_id());
    tokio::spawn(service);
    tokio::spawn(mailboxes.clone().maintain());
    let (node, main) = (mailboxes.clone(), dht.clone());
    tokio::spawn(async move {
        while let Some(event) = identified.recv().await {
            if let shoal_identify::Event::Identified { peer, info, .. } = event {
                main.add_address(peer, info.listen_addrs.clone());
                node.identified(peer, &info.listen_addrs, &info.protocols);
            }
        }
    });
    if let Some(seed) = seed
        && let Some(peer) = seed.peer_id()
    {
        let at = seed.without_peer_id();
        control.add_addresses(peer, std::slice::from_ref(&at), AddressSource::Application);
        control
            .dial(seed.clone(), shoal::DialOptions::default())
            .await
            .map_err(|e| format!("dial {seed}: {e}"))?;
        let _ = dht.bootstrap(vec![(peer, vec![at])]).await;
    }
    Ok(SpawnedNode {
        addr,
        control,
        mailboxes,
    })
}
