//! Shoal Kademlia DHT: routing table, iterative lookups and signed records.
//!
//! # Tour
//! - [`Kademlia`]: the sans-IO node core. Feed it frames
//!   ([`Kademlia::handle_message`]), time ([`Kademlia::handle_timeout`]) and
//!   connection news; drain [`Transmit`]s, [`Event`]s and the next timeout.
//!   No sockets, no clocks, no tokio: the simulator (`shoal-sim`) and the
//!   service handler drive the same code.
//! - [`Config`]: k, alpha, disjoint paths, timeouts, caps, intervals; each
//!   default is a named `DEFAULT_*` constant in [`config`].
//! - [`key`]: 256-bit [`Key`]s (BLAKE2b-256 of what they name) and XOR
//!   [`Distance`].
//! - [`table`]: the k-bucket [`RoutingTable`] with ping-before-evict,
//!   replacement caches and per-IP-prefix caps ([`ip`]).
//! - [`lookup`]: the iterative [`Lookup`] over disjoint paths.
//! - [`record`]: [`SignedRecord`]s, their [`Validator`] hook; [`store`]: the
//!   bounded [`RecordStore`].
//! - [`protocol`]: the wire messages (also in `docs/PROTOCOL.md`,
//!   section 8).
//! - [`new`]: the protocol on a Shoal service (the core runs under the
//!   service's [`shoal::CoreDriver`]; `handler.rs` adapts it),
//!   with a [`Handle`] whose async commands wait for their query's result.
//!
//! # Data flow
//! ```text
//!  driver ──frame──▶ handle_message ──▶ request? answer from table/store ──▶ poll_transmit
//!                                  └──▶ answer?  advance its query ──▶ more requests / Event
//!  driver ──now────▶ handle_timeout ──▶ failed requests, query deadlines, refresh,
//!                                       re-replication, republish, expiry
//!  commands (find_node, get_record, put_record, bootstrap) ──▶ QueryId … Event::QueryFinished
//!  find_node_progress ──▶ QueryId … Event::LookupResponded per answer … Event::QueryFinished
//! ```
//!
//! # Example
//! Two cores wired by hand: `b` learns of `a`, then looks `a` up.
//! ```
//! use std::time::Instant;
//! use shoal_identity::Keypair;
//! use shoal_kad::{Config, Event, Kademlia, Key, QueryResult};
//!
//! let (ka, kb) = (Keypair::generate(), Keypair::generate());
//! let mut a = Kademlia::new(ka.peer_id(), Config::default(), 1);
//! let mut b = Kademlia::new(kb.peer_id(), Config::default(), 2);
//! let now = Instant::now();
//! let unix = 1_700_000_000;
//! let addr_a = vec!["/memory/1".parse().unwrap()];
//! let addr_b = vec!["/memory/2".parse().unwrap()];
//! b.add_address(now, ka.peer_id(), addr_a.clone());
//! let id = b.find_node(now, Key::for_peer(&ka.peer_id())).unwrap();
//! // Deliver messages until both are idle.
//! loop {
//!     let mut idle = true;
//!     while let Some(t) = b.poll_transmit() {
//!         idle = false;
//!         a.handle_message(now, unix, kb.peer_id(), &addr_b, &t.bytes).unwrap();
//!     }
//!     while let Some(t) = a.poll_transmit() {
//!         idle = false;
//!         b.handle_message(now, unix, ka.peer_id(), &addr_a, &t.bytes).unwrap();
//!     }
//!     if idle { break; }
//! }
//! let finished = std::iter::from_fn(|| b.poll_event()).find_map(|e| match e {
//!     Event::QueryFinished { id: done, result: QueryResult::FindNode { closest }, stats }
//!         if done == id => Some((closest, stats)),
//!     _ => None,
//! });
//! let (closest, stats) = finished.unwrap();
//! assert_eq!(closest[0].peer, ka.peer_id());
//! assert_eq!(stats.closest_depth, Some(0));
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admission;
mod commands;
pub mod config;
mod core;
mod handler;
pub mod ip;
pub mod key;
pub mod lookup;
mod maintenance;
pub mod protocol;
mod query;
pub mod record;
pub mod store;
pub mod table;

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use shoal::{CoreDriver, CoreHandle, Multiaddr, Now, PeerId, ProtocolId, ProtocolMeta};
use tokio::sync::{mpsc, oneshot};

pub use crate::core::{Error, Kademlia, Transmit};
pub use config::Config;
pub use key::{Distance, Key};
pub use lookup::Lookup;
pub use protocol::{DecodeError, MAX_MESSAGE_SIZE};
pub use query::{Event, QueryId, QueryResult, QueryStats};
pub use record::{Record, RecordError, SignedRecord, Validator};
pub use store::RecordStore;
pub use table::{Contact, RoutingTable};

/// The protocol name negotiated on the substream.
pub const PROTOCOL_NAME: &str = "/shoal/kad";

/// The protocol versions spoken (negotiated per substream).
pub const VERSIONS: [u32; 1] = [1];

/// Why a [`Handle`] command failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandleError {
    /// The core refused the command.
    #[error(transparent)]
    Core(#[from] Error),
    /// The service stopped before the query ended.
    #[error("the kad protocol stopped before the query ended")]
    Stopped,
}

/// Commands waiting for their query's result.
type Waiters = Arc<Mutex<BTreeMap<QueryId, oneshot::Sender<(QueryResult, QueryStats)>>>>;

/// Progressive lookups being watched: where their answering nodes go.
type Watchers = Arc<Mutex<BTreeMap<QueryId, mpsc::Sender<(Contact, Vec<Contact>)>>>>;

/// Answering nodes a [`LookupWatch`] holds before it drops more (a lookup
/// sends a few dozen requests).
const WATCH_QUEUE: usize = 256;

/// What [`LookupWatch::next`] reports, in order: nodes as they answer,
/// then the result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupProgress {
    /// A node answered the lookup: it is alive, and may or may not be
    /// among the `k` closest in the end.
    Responded {
        /// The node that answered.
        contact: Contact,
        /// The nodes its answer named as closer to the key (unchecked;
        /// see [`Event::LookupResponded`]).
        named: Vec<Contact>,
    },
    /// The lookup ended: the `k` closest nodes that answered, closest
    /// first (the last item).
    Finished(Vec<Contact>, QueryStats),
}

/// A lookup started by [`Handle::find_node_progress`]: its answering
/// nodes as they answer, then its result. Dropping it does not stop the
/// lookup.
#[derive(Debug)]
pub struct LookupWatch {
    responded: mpsc::Receiver<(Contact, Vec<Contact>)>,
    finished: oneshot::Receiver<(QueryResult, QueryStats)>,
    done: bool,
}

impl LookupWatch {
    /// The next news of the lookup: [`LookupProgress::Responded`] for
    /// each node that answered (at most 256 waiting; more are
    /// dropped, which changes only how early the caller hears of them),
    /// then one [`LookupProgress::Finished`]; then `None`. `None` early
    /// only if the service stopped. Cancel-safe.
    pub async fn next(&mut self) -> Option<LookupProgress> {
        if self.done {
            return None;
        }
        tokio::select! {
            biased;
            Some((contact, named)) = self.responded.recv() => {
                Some(LookupProgress::Responded { contact, named })
            }
            result = &mut self.finished => {
                self.done = true;
                match result {
                    Ok((QueryResult::FindNode { closest }, stats)) => {
                        Some(LookupProgress::Finished(closest, stats))
                    }
                    Ok((_, stats)) => Some(LookupProgress::Finished(Vec::new(), stats)),
                    Err(_) => None,
                }
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Application access to a running Kademlia protocol. Cheap to clone.
///
/// Commands wait for their query's result; the query runs in the service
/// whether or not the future is polled to the end.
#[derive(Debug, Clone)]
pub struct Handle {
    core: CoreHandle<Kademlia>,
    waiters: Waiters,
    watchers: Watchers,
    dropped_events: Arc<AtomicU64>,
}

impl Handle {
    async fn run(
        &self,
        start: impl FnOnce(&mut Kademlia, Now) -> Result<QueryId, Error>,
    ) -> Result<(QueryResult, QueryStats), HandleError> {
        // The waiter is registered before the call returns, so a query
        // that ends within the call finds it.
        let rx = self.core.with(|core, now| {
            let id = start(core, now)?;
            let (tx, rx) = oneshot::channel();
            lock(&self.waiters).insert(id, tx);
            Ok::<_, Error>(rx)
        })?;
        rx.await.map_err(|_| HandleError::Stopped)
    }

    /// Joins through `seeds` (see [`Kademlia::bootstrap`]).
    pub async fn bootstrap(
        &self,
        seeds: Vec<(PeerId, Vec<Multiaddr>)>,
    ) -> Result<(QueryResult, QueryStats), HandleError> {
        self.run(|core, now| core.bootstrap(now.instant, &seeds))
            .await
    }

    /// The `k` nodes closest to `key` (see [`Kademlia::find_node`]).
    pub async fn find_node(&self, key: Key) -> Result<(Vec<Contact>, QueryStats), HandleError> {
        let (result, stats) = self
            .run(|core, now| core.find_node(now.instant, key))
            .await?;
        match result {
            QueryResult::FindNode { closest } => Ok((closest, stats)),
            _ => Ok((Vec::new(), stats)),
        }
    }

    /// Looks up the `k` nodes closest to `key`, reporting every node as it
    /// answers (see [`Kademlia::find_node_progress`] and [`LookupWatch`]).
    pub fn find_node_progress(&self, key: Key) -> Result<LookupWatch, HandleError> {
        // Registered inside the call, so no answer is missed.
        Ok(self.core.with(|core, now| {
            let id = core.find_node_progress(now.instant, key)?;
            let (tx, responded) = mpsc::channel(WATCH_QUEUE);
            let (done, finished) = oneshot::channel();
            lock(&self.watchers).insert(id, tx);
            lock(&self.waiters).insert(id, done);
            Ok::<_, Error>(LookupWatch {
                responded,
                finished,
                done: false,
            })
        })?)
    }

    /// The newest record at `key`, if found (see [`Kademlia::get_record`]).
    pub async fn get_record(
        &self,
        key: Key,
    ) -> Result<(Option<SignedRecord>, QueryStats), HandleError> {
        let (result, stats) = self
            .run(|core, now| core.get_record(now.instant, now.unix_secs(), key))
            .await?;
        match result {
            QueryResult::GetRecord { record, .. } => Ok((record, stats)),
            _ => Ok((None, stats)),
        }
    }

    /// Publishes `record`; returns how many nodes confirmed holding it (see
    /// [`Kademlia::put_record`]).
    pub async fn put_record(
        &self,
        record: SignedRecord,
    ) -> Result<(usize, QueryStats), HandleError> {
        let (result, stats) = self
            .run(|core, now| core.put_record(now.instant, now.unix_secs(), record))
            .await?;
        match result {
            QueryResult::PutRecord { stored, .. } => Ok((stored, stats)),
            _ => Ok((0, stats)),
        }
    }

    /// Tells the core where `peer` listens (from identify or discovery);
    /// see [`Kademlia::add_address`].
    pub fn add_address(&self, peer: PeerId, addrs: Vec<Multiaddr>) {
        let addrs: Vec<Multiaddr> = addrs.iter().map(Multiaddr::without_peer_id).collect();
        self.core
            .with(|core, now| core.add_address(now.instant, peer, addrs));
    }

    /// Sets the validator for records of `kind` (see [`Validator`]).
    pub fn set_validator(&self, kind: &str, validator: Box<dyn Validator>) {
        self.core
            .with(|core, _| core.set_validator(kind, validator));
    }

    /// Switches between serving the DHT and being a client of it (see
    /// [`Kademlia::set_client`]).
    pub fn set_client(&self, client: bool) {
        self.core.with(|core, _| core.set_client(client));
    }

    /// Whether the node is a client of the DHT now.
    pub fn is_client(&self) -> bool {
        self.core.read(|core| core.config().client)
    }

    /// Contacts in the routing table.
    pub fn routing_table_len(&self) -> usize {
        self.core.read(|core| core.routing_table().len())
    }

    /// The peers in the routing table.
    pub fn table_peers(&self) -> Vec<PeerId> {
        self.core
            .read(|core| core.routing_table().iter().map(|c| c.peer).collect())
    }

    /// Whether `peer` is in the routing table.
    pub fn in_routing_table(&self, peer: &PeerId) -> bool {
        self.core.read(|core| core.routing_table().contains(peer))
    }

    /// Records held.
    pub fn record_count(&self) -> usize {
        self.core.read(|core| core.record_store().len())
    }

    /// Events dropped because the event channel was full.
    pub fn dropped_events(&self) -> u64 {
        self.dropped_events.load(Ordering::Relaxed)
    }

    /// Messages dropped (the core's queue, or the service's queues, full).
    pub fn dropped_messages(&self) -> u64 {
        self.core.read(Kademlia::dropped_transmits) + self.core.dropped_transmits()
    }

    /// How often the core's timer woke up.
    pub fn timer_wakeups(&self) -> u64 {
        self.core.timer_wakeups()
    }
}

/// Declares the Kademlia protocol as `id` for the node `local` (the
/// service's peer id): register the returned [`ProtocolMeta`] with a
/// [`ServiceBuilder`](shoal::ServiceBuilder), run commands through the
/// [`Handle`], and read the other [`Event`]s (routing changes, stored
/// records; results of queries no command waits for).
pub fn new(
    id: ProtocolId,
    local: PeerId,
    config: Config,
) -> (ProtocolMeta, Handle, mpsc::Receiver<Event>) {
    new_named(id, PROTOCOL_NAME, local, config)
}

/// Declares a Kademlia network of its own under the protocol name `name`
/// (otherwise as [`new`]): nodes that speak only `name` form a DHT apart
/// from the main one, e.g. the nodes that keep mailboxes, which clients
/// ([`Config::client`]) query to find the replicas of a mailbox.
pub fn new_named(
    id: ProtocolId,
    name: &'static str,
    local: PeerId,
    config: Config,
) -> (ProtocolMeta, Handle, mpsc::Receiver<Event>) {
    use std::hash::{BuildHasher, Hasher};
    let (tx, rx) = mpsc::channel(config.event_queue.max(1));
    // Only simulations need reproducible runs; a live node takes a seed
    // from the standard library's per-process random keys.
    let seed = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let waiters: Waiters = Arc::default();
    let watchers: Watchers = Arc::default();
    let dropped_events = Arc::new(AtomicU64::new(0));
    let (w, watched, dropped) = (waiters.clone(), watchers.clone(), dropped_events.clone());
    let on_event = move |event: Event| {
        let event = match event {
            Event::LookupResponded { id, contact, named } => {
                if let Some(watcher) = lock(&watched).get(&id) {
                    let _ = watcher.try_send((contact, named));
                }
                return;
            }
            Event::QueryFinished { id, result, stats } => {
                lock(&watched).remove(&id);
                match lock(&w).remove(&id) {
                    Some(waiter) => {
                        let _ = waiter.send((result, stats));
                        return;
                    }
                    None => Event::QueryFinished { id, result, stats },
                }
            }
            other => other,
        };
        if let Err(mpsc::error::TrySendError::Full(event)) = tx.try_send(event) {
            dropped.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(?event, "kad event queue full; event dropped");
        }
    };
    let (driver, core) = CoreDriver::new(Kademlia::new(local, config, seed), on_event);
    let meta = ProtocolMeta::builder(id, name)
        .versions(VERSIONS)
        .max_frame_size(MAX_MESSAGE_SIZE)
        // Lookups of a node behind NAT (a DHT client) go out over
        // whatever session it has, relayed ones included.
        .over_relay(true)
        .service_handle(driver);
    let handle = Handle {
        core,
        waiters,
        watchers,
        dropped_events,
    };
    (meta, handle, rx)
}
