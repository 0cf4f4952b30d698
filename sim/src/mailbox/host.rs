//! [`MailboxHost`]: one simulated node of the mailbox network: the
//! Kademlia core of the mailbox DHT and the mailbox core (a replica on
//! service nodes, a client only on users), their frames told apart by a
//! leading tag byte as the service layer's protocol ids would.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use shoal::{BoxError, Bytes, Core, Multiaddr, Now, PeerId, Remote, Transmit};
use shoal_identity::Keypair;
use shoal_kad::{Kademlia, QueryId, QueryResult, QueryStats};
use shoal_mailbox::store::{AckProof, Existing, Handoff, Removed, StoredEnvelope};
use shoal_mailbox::sync::SyncItem;
use shoal_mailbox::{
    Answer, EnvelopeHash, Item, Mailbox, MailboxId, MemoryStore, Replica, ReplicaConfig,
    ReplicaStore, RequestError, RequestId, StoreError,
};

use crate::Clock;
use crate::kad::KadHost;

const KAD_TAG: u8 = 0;
const MAILBOX_TAG: u8 = 1;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A replica's storage in the simulation: durable across a simulated
/// restart (the rows are shared with the next [`Replica`] opened on it),
/// and able to lie: for the mailboxes in its lie set it answers an insert
/// as done (so the replica signs) and keeps nothing.
#[derive(Clone, Default)]
pub struct SimStore {
    rows: Arc<Mutex<MemoryStore>>,
    lies: Arc<Mutex<HashSet<MailboxId>>>,
    fake_seq: Arc<AtomicU64>,
}

impl SimStore {
    /// Makes this replica sign for `mailbox` and discard what it is given.
    pub fn lie_for(&self, mailbox: MailboxId) {
        lock(&self.lies).insert(mailbox);
    }

    /// Whether this replica lies about `mailbox`.
    pub fn lies_about(&self, mailbox: &MailboxId) -> bool {
        lock(&self.lies).contains(mailbox)
    }
}

impl ReplicaStore for SimStore {
    fn scan(&mut self) -> Result<Vec<Removed>, StoreError> {
        lock(&self.rows).scan()
    }

    fn find(
        &mut self,
        mailbox: &MailboxId,
        hash: &EnvelopeHash,
    ) -> Result<Option<Existing>, StoreError> {
        lock(&self.rows).find(mailbox, hash)
    }

    fn insert(&mut self, envelopes: &[StoredEnvelope]) -> Result<Vec<u64>, StoreError> {
        let lies = lock(&self.lies).clone();
        let kept: Vec<StoredEnvelope> = envelopes
            .iter()
            .filter(|e| !lies.contains(&e.mailbox))
            .cloned()
            .collect();
        let mut seqs = lock(&self.rows).insert(&kept)?.into_iter();
        Ok(envelopes
            .iter()
            .map(|e| match lies.contains(&e.mailbox) {
                true => (1 << 62) + self.fake_seq.fetch_add(1, Ordering::Relaxed),
                false => seqs.next().unwrap_or_default(),
            })
            .collect())
    }

    fn fetch(
        &mut self,
        mailbox: &MailboxId,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<(Vec<Item>, bool), StoreError> {
        lock(&self.rows).fetch(mailbox, after, limit, max_bytes)
    }

    fn ack(
        &mut self,
        mailbox: &MailboxId,
        hashes: &[EnvelopeHash],
        proof: Option<&AckProof>,
    ) -> Result<Vec<Removed>, StoreError> {
        lock(&self.rows).ack(mailbox, hashes, proof)
    }

    fn tombstone(
        &mut self,
        mailbox: &MailboxId,
        entries: &[(EnvelopeHash, u64)],
        proof: &AckProof,
    ) -> Result<Vec<Removed>, StoreError> {
        lock(&self.rows).tombstone(mailbox, entries, proof)
    }

    fn sync_items(&mut self, mailbox: &MailboxId) -> Result<Vec<SyncItem>, StoreError> {
        lock(&self.rows).sync_items(mailbox)
    }

    fn handoffs(
        &mut self,
        mailbox: &MailboxId,
        hashes: &[EnvelopeHash],
    ) -> Result<Vec<Handoff>, StoreError> {
        lock(&self.rows).handoffs(mailbox, hashes)
    }

    fn mailboxes(&mut self) -> Result<Vec<MailboxId>, StoreError> {
        lock(&self.rows).mailboxes()
    }

    fn drop_mailbox(&mut self, mailbox: &MailboxId) -> Result<Vec<Removed>, StoreError> {
        lock(&self.rows).drop_mailbox(mailbox)
    }

    fn expire(&mut self, unix_secs: u64) -> Result<Vec<Removed>, StoreError> {
        lock(&self.rows).expire(unix_secs)
    }
}

/// How a mailbox request ended.
pub type Reply = Result<(Multiaddr, Answer), RequestError>;

/// A node of the mailbox network.
pub struct MailboxHost {
    /// The node's key.
    pub keypair: Keypair,
    /// The mailbox DHT.
    pub kad: Kademlia,
    /// The mailbox core.
    pub mailbox: Mailbox,
    /// The replica's storage (service nodes only).
    pub store: Option<SimStore>,
    /// Finished lookups not yet taken.
    pub finished: BTreeMap<QueryId, (QueryResult, QueryStats)>,
    /// Nodes that answered progressive lookups, with the nodes their
    /// answers named, not yet taken, in arrival order.
    pub responded: Vec<(QueryId, shoal_kad::Contact, Vec<shoal_kad::Contact>)>,
    /// Mailbox replies not yet taken, in arrival order.
    pub replies: Vec<(RequestId, PeerId, Reply)>,
    seed: u64,
    next_core: u8,
    config: shoal_mailbox::Config,
    /// When the mailbox core last learned the DHT's table.
    neighbours_at: Option<Instant>,
    /// Lookups the replica asked for: query -> mailbox.
    member_lookups: HashMap<QueryId, MailboxId>,
}

impl MailboxHost {
    /// A node with `kad` config; a replica over `store` if given.
    pub fn new(
        keypair: Keypair,
        config: &shoal_kad::Config,
        seed: u64,
        store: Option<SimStore>,
        now_ms: u64,
    ) -> MailboxHost {
        let mailbox_config = shoal_mailbox::Config::default();
        let mailbox = Self::mailbox_core(&keypair, store.as_ref(), seed, now_ms, &mailbox_config);
        MailboxHost {
            kad: Kademlia::new(keypair.peer_id(), config.clone(), seed),
            keypair,
            mailbox,
            store,
            finished: BTreeMap::new(),
            responded: Vec::new(),
            replies: Vec::new(),
            seed,
            next_core: 0,
            config: mailbox_config,
            neighbours_at: None,
            member_lookups: HashMap::new(),
        }
    }

    /// Uses `config` for the mailbox core from now on (a fresh core over
    /// the same store, as after a restart).
    pub fn set_mailbox_config(&mut self, config: shoal_mailbox::Config, now: Clock) {
        self.config = config;
        self.restart(now);
    }

    fn mailbox_core(
        keypair: &Keypair,
        store: Option<&SimStore>,
        seed: u64,
        now_ms: u64,
        config: &shoal_mailbox::Config,
    ) -> Mailbox {
        let replica = store.map(|s| {
            let store: Box<dyn ReplicaStore> = Box::new(s.clone());
            Replica::open(keypair.clone(), store, ReplicaConfig::default(), now_ms)
                .unwrap_or_else(|e| unreachable!("a memory store opens: {e}"))
        });
        let mut core_seed = [0u8; 32];
        core_seed[..8].copy_from_slice(&seed.to_be_bytes());
        core_seed[8..16].copy_from_slice(&now_ms.to_be_bytes());
        Mailbox::new(config.clone(), replica, core_seed)
    }

    /// The process restarts: the mailbox core starts afresh over the
    /// durable store (its requests in flight are gone); the DHT keeps its
    /// routing table, as a node that remembers its peers does.
    pub fn restart(&mut self, now: Clock) {
        let now_ms = now.unix_secs.saturating_mul(1000);
        self.mailbox = Self::mailbox_core(
            &self.keypair,
            self.store.as_ref(),
            self.seed,
            now_ms,
            &self.config,
        );
        self.replies.clear();
        self.responded.clear();
        self.neighbours_at = None;
    }

    /// Takes the replies to `ids` that arrived.
    pub fn take_replies(&mut self, ids: &HashSet<RequestId>) -> Vec<(RequestId, PeerId, Reply)> {
        let (taken, kept) = std::mem::take(&mut self.replies)
            .into_iter()
            .partition(|(id, _, _)| ids.contains(id));
        self.replies = kept;
        taken
    }

    fn drain(&mut self, now: Now) {
        // The replica's lookups first answered, then its new requests, then
        // what they finished at once.
        for _ in 0..2 {
            while let Some(event) = self.kad.poll_event() {
                if let shoal_kad::Event::LookupResponded { id, contact, named } = event {
                    self.responded.push((id, contact, named));
                } else if let shoal_kad::Event::QueryFinished { id, result, stats } = event {
                    match self.member_lookups.remove(&id) {
                        Some(mailbox) => {
                            if let QueryResult::FindNode { closest } = result {
                                let found = closest.into_iter().map(|c| c.peer).collect();
                                self.mailbox.set_members(now, mailbox, found);
                            }
                        }
                        None => {
                            self.finished.insert(id, (result, stats));
                        }
                    }
                }
            }
            self.drain_mailbox(now);
        }
    }

    fn drain_mailbox(&mut self, now: Now) {
        while let Some(event) = Core::poll_event(&mut self.mailbox) {
            match event {
                shoal_mailbox::Event::LookupWanted { mailbox } => {
                    let key = shoal_kad::Key::from_bytes(*mailbox.as_bytes());
                    if let Ok(query) = self.kad.find_node(now.instant, key) {
                        self.member_lookups.insert(query, mailbox);
                    }
                }
                shoal_mailbox::Event::Answered {
                    id,
                    peer,
                    addr,
                    answer,
                } => self.replies.push((id, peer, Ok((addr, answer)))),
                shoal_mailbox::Event::Failed { id, peer, error } => {
                    self.replies.push((id, peer, Err(error)));
                }
                _ => {}
            }
        }
    }
}

impl KadHost for MailboxHost {
    /// A service node: a replica over a fresh [`SimStore`].
    fn create(keypair: Keypair, config: &shoal_kad::Config, seed: u64) -> MailboxHost {
        let now_ms = crate::DEFAULT_UNIX_START * 1000;
        MailboxHost::new(keypair, config, seed, Some(SimStore::default()), now_ms)
    }

    fn kademlia(&mut self) -> &mut Kademlia {
        &mut self.kad
    }
}

impl Core for MailboxHost {
    type Event = ();

    fn handle_message(&mut self, now: Now, from: &Remote, bytes: &[u8]) -> Result<(), BoxError> {
        let result = match bytes.split_first() {
            Some((&KAD_TAG, rest)) => Core::handle_message(&mut self.kad, now, from, rest),
            Some((&MAILBOX_TAG, rest)) => Core::handle_message(&mut self.mailbox, now, from, rest),
            _ => Err("unknown protocol tag".into()),
        };
        self.drain(now);
        result
    }

    fn handle_timeout(&mut self, now: Now) {
        if self.kad.poll_timeout().is_some_and(|t| t <= now.instant) {
            Core::handle_timeout(&mut self.kad, now);
        }
        // A replica's view of who else keeps mailboxes near it: the DHT's
        // routing table, given before each sync round (and at the start).
        if self.store.is_some()
            && (self.neighbours_at.is_none() || self.mailbox.sync_due(now.instant))
        {
            self.neighbours_at = Some(now.instant);
            let peers: Vec<PeerId> = self.kad.routing_table().iter().map(|c| c.peer).collect();
            self.mailbox.set_neighbours(peers);
            self.mailbox.start(now);
        }
        if Core::poll_timeout(&self.mailbox).is_some_and(|t| t <= now.instant) {
            Core::handle_timeout(&mut self.mailbox, now);
        }
        self.drain(now);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let (a, b) = (self.kad.poll_timeout(), Core::poll_timeout(&self.mailbox));
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        // Alternate, so neither core starves the other.
        for _ in 0..2 {
            self.next_core ^= 1;
            let (tag, t) = match self.next_core {
                0 => (KAD_TAG, Core::poll_transmit(&mut self.kad)),
                _ => (MAILBOX_TAG, Core::poll_transmit(&mut self.mailbox)),
            };
            if let Some(t) = t {
                let mut bytes = Vec::with_capacity(t.bytes.len() + 1);
                bytes.push(tag);
                bytes.extend_from_slice(&t.bytes);
                return Some(Transmit {
                    peer: t.peer,
                    bytes: Bytes::from(bytes),
                });
            }
        }
        None
    }

    fn poll_event(&mut self) -> Option<()> {
        None
    }
}
