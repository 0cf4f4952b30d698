//! The node core: one [`Kademlia`] per node, fed bytes and time, drained of
//! messages, timeouts and events. Commands and query driving are in
//! `commands.rs`, periodic upkeep in `maintenance.rs`, what the core sends
//! and reports in `core/outgoing.rs`.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    time::Instant,
};

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shoal_identity::PeerId;
use shoal_transport::Multiaddr;

mod outgoing;

use crate::{
    config::Config,
    key::Key,
    protocol::{Body, DecodeError, Message, StoreStatus},
    query::{Event, Query, QueryId},
    record::{RecordError, RecordPolicy, SignedRecord, Validator},
    store::RecordStore,
    table::{Change, Contact, RoutingTable, Update},
};

/// A message for the driver to send: one frame to `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The receiving node.
    pub to: PeerId,
    /// Where it may be reached (known addresses; may be empty if the
    /// driver already has a connection).
    pub addrs: Vec<Multiaddr>,
    /// The encoded message.
    pub bytes: Bytes,
}

/// Errors of the core. Scope and blame are per variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Remote's fault: the bytes are not a valid message. The caller
    /// closes that peer's Kademlia stream.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// Remote's fault: an answer of the wrong type for its request (the
    /// request counts as failed). The caller closes the stream.
    #[error("answer of the wrong type to request {0:#x}")]
    UnexpectedResponse(u64),
    /// Local: [`Config::max_queries`] queries are already running.
    #[error("too many queries running")]
    TooManyQueries,
    /// Local: a record given to `put_record` breaks the local policy.
    #[error("record refused: {0}")]
    Record(#[from] RecordError),
    /// Local: we already publish `max_records_per_publisher` records.
    #[error("too many records published by this node")]
    TooManyPublished,
}

/// Why we wait for an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PendingKind {
    /// A lookup step of a query path.
    Lookup { query: QueryId, path: usize },
    /// The routing table's ping of a bucket's oldest contact.
    Ping,
    /// A STORE of a record publication.
    Store { query: QueryId },
}

#[derive(Debug, Clone)]
pub(crate) struct Pending {
    pub(crate) peer: PeerId,
    pub(crate) deadline: Instant,
    pub(crate) kind: PendingKind,
    /// Attempts made so far.
    pub(crate) attempts: u32,
    /// The request as sent, for another attempt.
    pub(crate) retry: Transmit,
}

/// When each periodic duty is next due (set on the first input).
#[derive(Debug, Clone, Default)]
pub(crate) struct Timers {
    pub(crate) refresh: Option<Instant>,
    pub(crate) replication: Option<Instant>,
    pub(crate) republish: Option<Instant>,
    pub(crate) expiry: Option<Instant>,
}

/// Connected peers remembered as lookup seeds (see
/// [`Kademlia::peer_connected`]).
pub(crate) const MAX_CONNECTED_SEEDS: usize = 256;

/// The sans-IO Kademlia node: routing table, lookups and record store.
///
/// # Driving it
/// Inputs:
/// - [`handle_message`](Kademlia::handle_message) for every frame received
///   from a peer (requests and answers alike);
/// - [`handle_timeout`](Kademlia::handle_timeout) when the time returned by
///   [`poll_timeout`](Kademlia::poll_timeout) has come;
/// - connection news: [`add_address`](Kademlia::add_address),
///   [`peer_connected`](Kademlia::peer_connected),
///   [`peer_disconnected`](Kademlia::peer_disconnected),
///   [`dial_failed`](Kademlia::dial_failed);
/// - commands: `bootstrap`, `find_node`, `find_node_progress`, `get_record`,
///   `put_record`.
///
/// After any input, drain [`poll_transmit`](Kademlia::poll_transmit) (send
/// each message) and [`poll_event`](Kademlia::poll_event), then sleep until
/// [`poll_timeout`](Kademlia::poll_timeout).
///
/// Time comes in as parameters: `now` (monotonic, for timeouts) and
/// `unix_secs` (wall clock, for record expiry). Randomness comes from a
/// ChaCha8 generator seeded in [`new`](Kademlia::new), and every internal
/// map is ordered, so the same inputs give the same outputs.
pub struct Kademlia {
    pub(crate) local: PeerId,
    pub(crate) local_key: Key,
    pub(crate) config: Config,
    pub(crate) rng: ChaCha8Rng,
    pub(crate) table: RoutingTable,
    pub(crate) store: RecordStore,
    pub(crate) policy: RecordPolicy,
    /// Our own records, republished while live.
    pub(crate) published: BTreeMap<Key, SignedRecord>,
    pub(crate) queries: BTreeMap<QueryId, Query>,
    pub(crate) pending: BTreeMap<u64, Pending>,
    pub(crate) deadlines: BTreeSet<(Instant, u64)>,
    /// When each lookup request stalls (entries of requests answered
    /// since are skipped when due).
    pub(crate) stalls: BTreeSet<(Instant, u64)>,
    pub(crate) query_deadlines: BTreeSet<(Instant, QueryId)>,
    pub(crate) next_request_id: u64,
    pub(crate) next_query_id: u64,
    pub(crate) transmits: VecDeque<Transmit>,
    pub(crate) events: VecDeque<Event>,
    pub(crate) timers: Timers,
    /// When a lookup last targeted each bucket (for refresh).
    pub(crate) bucket_lookups: BTreeMap<usize, Instant>,
    /// The wall clock at the last input.
    pub(crate) unix: u64,
    pub(crate) admission: crate::admission::StoreAdmission,
    /// Peers connected now that we can dial: known alive, so every lookup
    /// also starts from the few of them closest to its target (at most
    /// [`MAX_CONNECTED_SEEDS`] remembered).
    pub(crate) connected: BTreeMap<PeerId, Contact>,
    dropped_transmits: u64,
    dropped_events: u64,
}

impl std::fmt::Debug for Kademlia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kademlia")
            .field("local", &self.local)
            .field("contacts", &self.table.len())
            .field("records", &self.store.len())
            .field("queries", &self.queries.len())
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl Kademlia {
    /// A node `local` with `config`; `seed` seeds every random choice.
    pub fn new(local: PeerId, config: Config, seed: u64) -> Kademlia {
        let config = config.normalized();
        let local_key = Key::for_peer(&local);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let next_request_id = rng.random();
        Kademlia {
            local,
            local_key,
            table: RoutingTable::new(local_key, config.table_limits()),
            store: RecordStore::new(config.store_limits()),
            policy: RecordPolicy::new(
                config.max_record_ttl.as_secs(),
                config.clock_skew.as_secs(),
                config.accept_unknown_kinds,
            ),
            config,
            rng,
            published: BTreeMap::new(),
            queries: BTreeMap::new(),
            pending: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            stalls: BTreeSet::new(),
            query_deadlines: BTreeSet::new(),
            next_request_id,
            next_query_id: 1,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            timers: Timers::default(),
            bucket_lookups: BTreeMap::new(),
            unix: 0,
            admission: Default::default(),
            connected: BTreeMap::new(),
            dropped_transmits: 0,
            dropped_events: 0,
        }
    }

    /// This node's peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.local
    }

    /// The settings in use (normalized).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Switches between serving the DHT and being a client of it (see
    /// [`Config::client`]): a node that learns it cannot be dialled becomes
    /// a client, so nobody keeps it as a contact; peers drop it from their
    /// tables at its next message. One that can be dialled again serves.
    pub fn set_client(&mut self, client: bool) {
        self.config.client = client;
    }

    /// The routing table (read only).
    pub fn routing_table(&self) -> &RoutingTable {
        &self.table
    }

    /// The record store (read only).
    pub fn record_store(&self) -> &RecordStore {
        &self.store
    }

    /// Queries running now.
    pub fn active_queries(&self) -> usize {
        self.queries.len()
    }

    /// Messages dropped because the transmit queue was full.
    pub fn dropped_transmits(&self) -> u64 {
        self.dropped_transmits
    }

    /// Routing and record events dropped because the event queue was full.
    pub fn dropped_events(&self) -> u64 {
        self.dropped_events
    }

    /// Sets the validator for records of `kind` (replacing any).
    pub fn set_validator(&mut self, kind: &str, validator: Box<dyn Validator>) {
        self.policy.set_validator(kind, validator);
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The addresses of the next queued message that carries some, taken
    /// out of it (the driver gives them to its address book before sending).
    pub fn take_transmit_addrs(&mut self) -> Option<(PeerId, Vec<Multiaddr>)> {
        self.transmits
            .iter_mut()
            .find(|t| !t.addrs.is_empty())
            .map(|t| (t.to, std::mem::take(&mut t.addrs)))
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Kademlia::handle_timeout) should next be
    /// called (`None` before the first input).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let t = &self.timers;
        [
            self.deadlines.first().map(|(t, _)| *t),
            self.stalls.first().map(|(t, _)| *t),
            self.query_deadlines.first().map(|(t, _)| *t),
            t.refresh,
            t.replication,
            t.republish,
            t.expiry,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Handles one frame from `from`, who is reachable at `from_addrs` (the
    /// address of its connection first). A request is answered through
    /// [`poll_transmit`](Kademlia::poll_transmit); an answer advances its
    /// query. `Err` means the peer misbehaved: close its stream.
    pub fn handle_message(
        &mut self,
        now: Instant,
        unix_secs: u64,
        from: PeerId,
        from_addrs: &[Multiaddr],
        bytes: &[u8],
    ) -> Result<(), Error> {
        let source = from_addrs.first().cloned();
        self.handle_message_via(now, unix_secs, from, from_addrs, source.as_ref(), bytes)
    }

    /// [`handle_message`](Kademlia::handle_message) with the address of the
    /// connection the frame came over given apart (an inbound session's
    /// address is not one to dial, so it is not among `from_addrs`): it
    /// decides which addresses of the contacts in an answer are kept
    /// ([`Config::address_scope`](crate::Config::address_scope); `None`
    /// counts as global).
    pub fn handle_message_via(
        &mut self,
        now: Instant,
        unix_secs: u64,
        from: PeerId,
        from_addrs: &[Multiaddr],
        source: Option<&Multiaddr>,
        bytes: &[u8],
    ) -> Result<(), Error> {
        let (message, from_client) = Message::decode_with_role(bytes)?;
        self.unix = unix_secs;
        self.start_timers(now);
        if from == self.local {
            return Ok(());
        }
        let id = message.request_id;
        if from_client {
            // A client asks but serves nothing: it is never a contact. One
            // that got in (a session we dialled for another protocol)
            // leaves, and its answer makes it no lookup's result.
            if self.table.contains(&from) {
                let change = self.table.remove(&from);
                self.apply_change(change);
            }
            if message.body.is_response() {
                if let Some(p) = self.pending.remove(&id).filter(|p| p.peer == from) {
                    self.deadlines.remove(&(p.deadline, id));
                    self.request_failed(now, p);
                }
                return Ok(());
            }
        } else {
            self.saw(now, Contact::new(from, from_addrs.to_vec()));
        }
        if self.config.client && !message.body.is_response() {
            // A client serves nothing: it answers that it is one, so the
            // asker drops it at once instead of waiting for a timeout.
            let body = match message.body {
                Body::Ping => Body::Pong,
                _ => Body::Nodes(Vec::new()),
            };
            let bytes = Message {
                request_id: id,
                body,
            }
            .encode_as_client();
            self.push_response(from, from_addrs, bytes);
            return Ok(());
        }
        match message.body {
            Body::Ping => self.respond(from, from_addrs, id, Body::Pong),
            Body::FindNode(key) => {
                let closer = self.answer_contacts(&key, &from);
                let bytes = Message::encode_nodes(id, &closer);
                self.push_response(from, from_addrs, bytes);
            }
            Body::FindValue(key) => {
                let record = self.store.get(&key, unix_secs);
                let closer = self.answer_contacts(&key, &from);
                let bytes = Message::encode_value(id, record, &closer);
                self.push_response(from, from_addrs, bytes);
            }
            Body::Store(record) => {
                let status = self.accept_store(from, record);
                self.respond(from, from_addrs, id, Body::StoreAck(status));
            }
            answer => self.on_answer(now, from, from_addrs, source, id, answer)?,
        }
        Ok(())
    }

    /// The contacts an answer to `asker` names for `key`: the `k` closest
    /// of the table that have an address. A contact known only from a
    /// session it opened to us (no listen address learnt yet) is of no use
    /// to the asker, which could not dial it: its request would only wait
    /// for its timeouts.
    fn answer_contacts(&self, key: &Key, asker: &PeerId) -> Vec<&Contact> {
        self.table.closest_where(key, self.config.k, |c| {
            c.peer != *asker && !c.addrs.is_empty()
        })
    }

    /// Handles every deadline and periodic duty due at `now`.
    pub fn handle_timeout(&mut self, now: Instant, unix_secs: u64) {
        self.unix = unix_secs;
        self.start_timers(now);
        while let Some(&(t, id)) = self.deadlines.first() {
            if t > now {
                break;
            }
            self.deadlines.pop_first();
            if let Some(p) = self.pending.remove(&id) {
                self.request_timed_out(now, id, p);
            }
        }
        while let Some(&(t, id)) = self.stalls.first() {
            if t > now {
                break;
            }
            self.stalls.pop_first();
            self.request_stalled(now, id);
        }
        while let Some(&(t, query)) = self.query_deadlines.first() {
            if t > now {
                break;
            }
            self.query_deadlines.pop_first();
            self.query_timed_out(now, query);
        }
        self.run_duties(now);
    }

    /// Tells the core where `peer` may be reached (from identify,
    /// discovery, configuration). It enters the routing table if its bucket
    /// has room (a full bucket pings its oldest contact first).
    pub fn add_address(&mut self, now: Instant, peer: PeerId, addrs: Vec<Multiaddr>) {
        self.start_timers(now);
        if peer != self.local {
            self.saw(now, Contact::new(peer, addrs));
        }
    }

    /// A connection to `peer` opened (it is alive at `addrs`). A peer that
    /// dialled us (no address to dial it back) becomes a contact only once
    /// it sends a message that is not a client's.
    ///
    /// While connected, a peer we can dial also seeds every lookup (beside
    /// the table's closest contacts): after days away the table is mostly
    /// nodes that left, and a lookup whose every starting contact is gone
    /// would wait out their timeouts, while the peers we just connected to
    /// answer at once with fresh contacts.
    pub fn peer_connected(&mut self, now: Instant, peer: PeerId, addrs: Vec<Multiaddr>) {
        if addrs.is_empty() || peer == self.local {
            self.start_timers(now);
            return;
        }
        if self.connected.len() < MAX_CONNECTED_SEEDS || self.connected.contains_key(&peer) {
            self.connected
                .insert(peer, Contact::new(peer, addrs.clone()));
        }
        self.add_address(now, peer, addrs);
    }

    /// The connection to `peer` closed: answers still awaited from it will
    /// not come, so its requests fail now. The contact stays in the table,
    /// but does not count as a live contact (for the nearness rule of
    /// STOREs) until it is heard from again.
    pub fn peer_disconnected(&mut self, now: Instant, peer: PeerId) {
        self.connected.remove(&peer);
        self.table.mark_disconnected(&peer);
        self.fail_requests_to(now, &peer);
    }

    /// The driver could not reach `peer`: its requests fail and it leaves
    /// the routing table (replaced from the bucket's cache).
    pub fn dial_failed(&mut self, now: Instant, peer: PeerId) {
        self.connected.remove(&peer);
        self.fail_requests_to(now, &peer);
        let change = self.table.remove(&peer);
        self.apply_change(change);
    }

    fn fail_requests_to(&mut self, now: Instant, peer: &PeerId) {
        let ids: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.peer == *peer)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some(p) = self.pending.remove(&id) {
                self.deadlines.remove(&(p.deadline, id));
                self.request_failed(now, p);
            }
        }
    }

    /// A peer's STORE: admission (nearness, the peer's rate), policy, then
    /// the store's bounds.
    fn accept_store(&mut self, from: PeerId, record: SignedRecord) -> StoreStatus {
        let limits = (self.config.store_nearness, self.config.max_stores_per_peer);
        let admitted = self.admission.admit(
            &self.table,
            &self.local_key,
            &record.record().key,
            from,
            self.unix,
            limits,
        );
        if let Err(why) = admitted {
            tracing::debug!(%from, ?why, "STORE not admitted");
            return StoreStatus::Rejected;
        }
        if let Err(e) = self.policy.check(&record, self.unix) {
            tracing::debug!(%from, error = %e, "STORE refused");
            return StoreStatus::Rejected;
        }
        let key = record.record().key;
        let publisher = record.record().publisher;
        let status = self.store.put(record, self.unix);
        if status == StoreStatus::Stored {
            let holders = self
                .table
                .closest(&key, self.config.k, None)
                .into_iter()
                .map(|c| (c.key.distance(&key), c.peer))
                .collect();
            if let Some(entry) = self.store.entry_mut(&key) {
                entry.holders = holders;
            }
            self.emit(Event::RecordStored {
                key,
                publisher,
                from,
            });
        }
        status
    }

    /// The contacts of an answer that came over a connection at `source`,
    /// each with only the addresses [`Config::address_scope`] lets us dial.
    ///
    /// [`Config::address_scope`]: crate::Config::address_scope
    fn in_scope(&self, source: Option<&Multiaddr>, mut closer: Vec<Contact>) -> Vec<Contact> {
        let policy = &self.config.address_scope;
        for contact in &mut closer {
            let before = contact.addrs.len();
            contact.addrs.retain(|a| policy.allows(a, source));
            if contact.addrs.len() < before {
                tracing::debug!(peer = %contact.peer, "addresses out of the source's scope dropped");
            }
        }
        closer
    }

    /// An answer: match it to its request, then to whoever waits for it.
    fn on_answer(
        &mut self,
        now: Instant,
        from: PeerId,
        from_addrs: &[Multiaddr],
        source: Option<&Multiaddr>,
        id: u64,
        answer: Body,
    ) -> Result<(), Error> {
        // Late, unknown or from someone else: ignore (never an error: a
        // timed-out request's answer arrives late).
        if self.pending.get(&id).is_none_or(|p| p.peer != from) {
            return Ok(());
        }
        let Some(p) = self.pending.remove(&id) else {
            return Ok(());
        };
        self.deadlines.remove(&(p.deadline, id));
        match (p.kind, answer) {
            (PendingKind::Ping, Body::Pong) => {
                let change = self.table.ping_result(&from, true);
                self.apply_change(change);
            }
            (PendingKind::Lookup { query, path }, Body::Nodes(closer)) => {
                let closer = self.in_scope(source, closer);
                self.lookup_answer(now, query, path, from, from_addrs, closer, None);
            }
            (PendingKind::Lookup { query, path }, Body::Value { record, closer }) => {
                let closer = self.in_scope(source, closer);
                self.lookup_answer(now, query, path, from, from_addrs, closer, record);
            }
            (PendingKind::Store { query }, Body::StoreAck(status)) => {
                self.store_acked(now, query, status.is_held());
            }
            (_, _) => {
                self.request_failed(now, p);
                return Err(Error::UnexpectedResponse(id));
            }
        }
        Ok(())
    }

    /// An attempt got no answer in time: send the same request (same id,
    /// so a late answer to the first attempt still counts) once more, or
    /// give up.
    fn request_timed_out(&mut self, now: Instant, id: u64, mut p: Pending) {
        if p.attempts >= self.config.request_attempts.max(1) {
            self.request_failed(now, p);
            return;
        }
        p.attempts += 1;
        p.deadline = now + self.config.request_timeout;
        self.deadlines.insert((p.deadline, id));
        self.push_transmit(p.retry.clone());
        self.pending.insert(id, p);
    }

    /// A lookup request is still unanswered at its stall time. If it has
    /// an attempt left it is sent once more at once (a lost message costs
    /// one stall timeout, not the request timeout) and stops holding a
    /// slot of its path, which asks the next candidate meanwhile (a node
    /// that left costs a slot one stall timeout); its lookup still waits
    /// for it. Unanswered at the next stall time, the lookup goes on
    /// without waiting for it (it may still answer).
    fn request_stalled(&mut self, now: Instant, id: u64) {
        let attempts = self.config.request_attempts.max(1);
        let timeout = self.config.request_timeout;
        let Some(p) = self.pending.get_mut(&id) else {
            return;
        };
        let PendingKind::Lookup { query, path } = p.kind else {
            return;
        };
        let peer = p.peer;
        let moved = if p.attempts < attempts {
            p.attempts += 1;
            let (old, retry) = (p.deadline, p.retry.clone());
            p.deadline = now + timeout;
            let deadline = p.deadline;
            self.deadlines.remove(&(old, id));
            self.deadlines.insert((deadline, id));
            self.stalls.insert((now + self.config.stall_timeout, id));
            self.push_transmit(retry);
            self.queries
                .get_mut(&query)
                .is_some_and(|q| q.lookup.on_slow(path, &peer))
        } else {
            self.queries
                .get_mut(&query)
                .is_some_and(|q| q.lookup.on_stalled(path, &peer))
        };
        if moved {
            self.advance(now, query);
        }
    }

    /// A request got no (valid) answer.
    pub(crate) fn request_failed(&mut self, now: Instant, p: Pending) {
        match p.kind {
            PendingKind::Ping => {
                let change = self.table.ping_result(&p.peer, false);
                self.apply_change(change);
            }
            PendingKind::Lookup { query, path } => {
                let change = self.table.record_failure(&p.peer, self.config.max_failures);
                self.apply_change(change);
                if let Some(q) = self.queries.get_mut(&query)
                    && q.lookup.on_failure(path, &p.peer)
                {
                    self.advance(now, query);
                }
            }
            PendingKind::Store { query } => self.store_acked(now, query, false),
        }
    }

    /// `contact` proved alive: update the routing table.
    pub(crate) fn saw(&mut self, now: Instant, contact: Contact) {
        match self.table.update(contact.clone()) {
            Update::Inserted { bucket } => {
                self.emit(Event::RoutingUpdated {
                    peer: contact.peer,
                    bucket,
                });
                self.replicate_to_new(&contact);
            }
            Update::Ping(oldest) => {
                self.send_request(
                    now,
                    &oldest.peer,
                    oldest.addrs,
                    Body::Ping,
                    PendingKind::Ping,
                );
            }
            Update::Refreshed | Update::Cached | Update::Local => {}
        }
    }

    /// Reports a routing-table change and replicates to a newcomer.
    pub(crate) fn apply_change(&mut self, change: Change) {
        if let Some(peer) = change.removed {
            self.emit(Event::PeerRemoved { peer });
        }
        if let Some(contact) = change.inserted {
            if let Some(bucket) = self.table.bucket_of(&contact.key) {
                self.emit(Event::RoutingUpdated {
                    peer: contact.peer,
                    bucket,
                });
            }
            self.replicate_to_new(&contact);
        }
    }
}
