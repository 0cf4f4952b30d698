//! [`MailboxWorld`]: offline delivery end to end in the simulator. Service
//! nodes keep mailboxes (the real mailbox core and replica) and form the
//! mailbox DHT (the real Kademlia core); users run the real `shoal-im`
//! engine and, as clients of both, store and read their 1:1 mailboxes the
//! way the messenger's driver does: store while the contact is offline and
//! count W verified receipts, read every day since the last one read
//! through from every replica, ack what the engine took.
//!
//! Each pair is a sender and a recipient. The recipient leaves for a
//! random time; the sender writes (restarting now and then, its state
//! durable) and leaves before the recipient returns, so what the recipient
//! gets came through the mailboxes alone. Some replicas of each mailbox
//! lie: they sign receipts and keep nothing ([`SimStore::lie_for`]).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shoal::{Bytes, PeerId};
use shoal_identity::Keypair;
use shoal_im::MessageId;
use shoal_im::engine::{Engine, EngineConfig, Event as ImEvent};
use shoal_im::mailbox_keys::{DAY_SECS, day_of};
use shoal_kad::{Key, QueryResult};
use shoal_mailbox::store::Existing;
use shoal_mailbox::{
    Answer, Class, Descriptor, EnvelopeHash, MailboxId, Quorum, REPLICAS, RequestId, WRITE_QUORUM,
};

mod reader;

use super::churn::{Change, Churn, ChurnModel};
use super::host::{MailboxHost, Reply, SimStore};
use crate::kad::{KadHost, KadNetworkPlan};
use crate::{NetworkModel, NodeIndex, Simulation, sim_addr};

/// Replicas that must answer at least for a day to count as read.
const READ_QUORUM: usize = REPLICAS - WRITE_QUORUM + 1;
/// How long one round of requests may take.
const REQUEST_LIMIT: Duration = Duration::from_secs(30);
/// How long a lookup may take: the DHT's own query deadline, and a little.
const LOOKUP_LIMIT: Duration = Duration::from_secs(65);
/// Rounds of fetches per mailbox per read (pages, and fetches asked again).
const MAX_PAGES: usize = 16;
/// Times a fetch that got no answer is asked again in one read.
const FETCH_ATTEMPTS: usize = 3;

/// What a run looks like.
#[derive(Debug, Clone)]
pub struct WorldConfig {
    /// Nodes keeping mailboxes.
    pub replicas: usize,
    /// Sender and recipient pairs.
    pub pairs: usize,
    /// Contacts (senders) per recipient: `pairs / contacts` recipients,
    /// each reading all its contacts' mailboxes at once when it returns.
    pub contacts: usize,
    /// Replicas of each mailbox that sign and then discard.
    pub liars: usize,
    /// Shortest and longest time a recipient is away.
    pub offline: (Duration, Duration),
    /// Simulation step (how often users act).
    pub step: Duration,
    /// Chance a sender writes in a step while its contact is away.
    pub send_chance: f64,
    /// Chance a sender restarts in a step (its state is durable).
    pub restart_chance: f64,
    /// The network.
    pub model: NetworkModel,
    /// Seed of everything random.
    pub seed: u64,
    /// How the nodes keeping mailboxes come and go (none: they stay).
    pub churn: Option<ChurnModel>,
    /// Receipts a sender waits for before a message counts as stored.
    pub write_quorum: usize,
    /// Replicas a sender asks to store each message: all R (what the
    /// messenger does), or fewer, picked at random among them (one is what
    /// Session's clients do).
    pub store_fanout: usize,
    /// How often replicas sync their mailboxes.
    pub sync_interval: Duration,
    /// How often the DHT refreshes its buckets (its default is 15
    /// minutes; without churn, 6 hours keeps days of virtual time cheap).
    pub kad_refresh: Duration,
}

impl Default for WorldConfig {
    /// 200 replicas, 30 pairs, R - W liars, away 1 hour to 3 days, 10-minute
    /// steps, 15% of messages lost by the network.
    fn default() -> WorldConfig {
        WorldConfig {
            replicas: 200,
            pairs: 30,
            contacts: 1,
            liars: REPLICAS - WRITE_QUORUM,
            offline: (Duration::from_secs(3600), Duration::from_secs(3 * DAY_SECS)),
            step: Duration::from_secs(600),
            send_chance: 0.1,
            restart_chance: 0.01,
            model: NetworkModel::default().with_loss(0.15),
            seed: 14,
            churn: None,
            write_quorum: WRITE_QUORUM,
            store_fanout: REPLICAS,
            sync_interval: shoal_mailbox::Config::default().sync_interval,
            kad_refresh: Duration::from_secs(6 * 3600),
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone, Default)]
pub struct WorldReport {
    /// Messages sent while the recipient was away.
    pub sent: usize,
    /// Of those, messages reported stored (W receipts counted).
    pub stored: usize,
    /// Stored messages the recipient showed exactly once.
    pub delivered_once: usize,
    /// Stored messages the recipient never showed.
    pub lost: usize,
    /// Messages shown more than once.
    pub shown_twice: usize,
    /// Messages stored in a mailbox of a later day than the one when the
    /// recipient left (the day's mailbox id rotated while it was away).
    pub day_rotations: usize,
    /// Receipts that counted and came from a lying replica.
    pub liar_receipts: usize,
    /// Sender restarts.
    pub sender_restarts: usize,
    /// Replica lookups made.
    pub lookups: usize,
    /// Longest time a recipient was away, in hours.
    pub longest_offline_hours: u64,
    /// Shortest time a recipient was away, in hours.
    pub shortest_offline_hours: u64,
    /// Per mailbox: how many of its replicas were replaced between its
    /// first store and the recipient's read.
    pub replaced: Vec<Replacement>,
    /// Nodes that joined during the run.
    pub arrivals: usize,
    /// Session ends for good.
    pub departures: usize,
    /// Nodes that came back after a downtime.
    pub returns: usize,
    /// Envelopes that nodes which joined during the run took from other
    /// replicas.
    pub handoffs_to_newcomers: u64,
    /// Acked envelopes held by a replica that was away during the ack and
    /// came back before their expiry.
    pub away_during_ack_returned: usize,
    /// Acked envelopes (not expired) still held at the end by a replica
    /// online for the last hour: resurrected.
    pub acked_still_held: usize,
    /// Bytes of sync frames the replicas sent.
    pub sync_bytes: u64,
    /// Hours the replicas were online, in all.
    pub replica_hours: f64,
    /// Per recipient that had messages stored for it: from its return
    /// until the last of them was shown.
    pub reconnect: Vec<Duration>,
    /// Per recipient, as in `reconnect`: the least time any reader could
    /// take (see [`MailboxWorld`]'s `reconnect_floor`).
    pub reconnect_floor: Vec<Duration>,
}

/// How much of one mailbox's replica set changed while it waited.
#[derive(Debug, Clone, Copy, Default)]
pub struct Replacement {
    /// The share of its replicas at the first store (the R live nodes
    /// closest to it) that were no longer among them at the read.
    pub share: f64,
    /// From the first store to the read.
    pub waited: Duration,
}

impl WorldReport {
    /// The median share of replicas replaced per mailbox, and the mailboxes
    /// that waited at least `waited` with less than `share` replaced.
    pub fn replacement(&self, share: f64, waited: Duration) -> (f64, usize) {
        let mut shares: Vec<f64> = self.replaced.iter().map(|r| r.share).collect();
        shares.sort_by(f64::total_cmp);
        let median = shares.get(shares.len() / 2).copied().unwrap_or(0.0);
        let below = self
            .replaced
            .iter()
            .filter(|r| r.waited >= waited && r.share < share)
            .count();
        (median, below)
    }

    /// Stored messages not shown, as a share of those stored.
    pub fn loss_rate(&self) -> f64 {
        self.lost as f64 / self.stored.max(1) as f64
    }

    /// Sync bytes sent per replica per hour online.
    pub fn sync_bytes_per_node_hour(&self) -> f64 {
        self.sync_bytes as f64 / self.replica_hours.max(1e-9)
    }

    /// The `q`-quantile (0 to 1, nearest rank) of the reconnect latencies.
    pub fn reconnect_quantile(&self, q: f64) -> Duration {
        quantile(&self.reconnect, q)
    }

    /// The `q`-quantile of the reconnect floors.
    pub fn reconnect_floor_quantile(&self, q: f64) -> Duration {
        quantile(&self.reconnect_floor, q)
    }
}

/// The `q`-quantile (0 to 1, nearest rank) of `values`; zero if none.
fn quantile(values: &[Duration], q: f64) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Where a node keeping mailboxes is in its life.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Life {
    Online { since: Duration },
    Away,
    Departed,
}

/// A node keeping mailboxes.
struct Service {
    node: NodeIndex,
    /// Joined during the run.
    arrived: bool,
    life: Life,
}

struct User {
    node: NodeIndex,
    engine: Engine<shoal_im::MemoryStore>,
    device: PeerId,
    online: bool,
    restarts: u8,
    /// Times each message was shown.
    shown: HashMap<MessageId, u32>,
}

struct Pair {
    sender: usize,
    recipient: usize,
    leaves: Duration,
    sender_exits: Duration,
    returns: Duration,
    left_day: u64,
    sent: Vec<MessageId>,
    stored: Vec<MessageId>,
    /// The mailboxes its stored messages went to.
    mailboxes: BTreeSet<MailboxId>,
    read_complete: bool,
}

/// Service nodes, users and their pairs in one simulation.
pub struct MailboxWorld {
    /// The simulation (every node a [`MailboxHost`]).
    pub sim: Simulation<MailboxHost>,
    config: WorldConfig,
    rng: ChaCha8Rng,
    users: Vec<User>,
    pairs: Vec<Pair>,
    by_device: HashMap<PeerId, usize>,
    lying: HashSet<MailboxId>,
    report: WorldReport,
    plan: KadNetworkPlan,
    service: Vec<Service>,
    service_of: HashMap<NodeIndex, usize>,
    churn: Option<Churn>,
    /// Per mailbox: its R closest live replicas at its first store, and
    /// when.
    store_sets: HashMap<MailboxId, (Vec<PeerId>, Duration)>,
    /// Per mailbox: how many of them were replaced at the recipient's read.
    replaced: HashMap<MailboxId, Replacement>,
    /// Replicas away during an ack: (node, envelopes held, expiry).
    away_acks: Vec<(NodeIndex, usize, u64)>,
    /// Acked envelopes: (mailbox, hash, expiry).
    acked: Vec<(MailboxId, EnvelopeHash, u64)>,
    /// Each user's contacts (by index into `users`).
    contacts_of: Vec<Vec<usize>>,
    /// Recipients back online with stored messages not all shown yet, and
    /// when they came back.
    reconnected: HashMap<usize, Duration>,
    /// Users back online that have not joined the DHT again yet.
    rejoining: HashSet<usize>,
}

fn engine(
    seed: u64,
    restarts: u8,
    store: shoal_im::MemoryStore,
    sim: &Simulation<MailboxHost>,
) -> Engine<shoal_im::MemoryStore> {
    let mut secret = [restarts; 32];
    secret[..8].copy_from_slice(&seed.to_be_bytes());
    let now = sim.clock();
    Engine::open(
        store,
        EngineConfig::default(),
        secret,
        now.instant,
        now.unix_secs,
    )
    .unwrap_or_else(|e| unreachable!("a memory store opens: {e}"))
}

impl MailboxWorld {
    /// Builds the mailbox DHT of `config.replicas` nodes, then adds the
    /// users (DHT clients) and lets each pair exchange a first message
    /// while both are online.
    pub fn new(config: WorldConfig) -> MailboxWorld {
        let kad = shoal_kad::Config {
            refresh_interval: config.kad_refresh,
            ..shoal_kad::Config::default()
        };
        let mut plan = KadNetworkPlan::new(config.replicas);
        plan.config = kad.clone();
        plan.model = config.model;
        let mut sim: Simulation<MailboxHost> = plan.build(config.seed);
        let mailbox_config = shoal_mailbox::Config {
            sync_interval: config.sync_interval,
            ..shoal_mailbox::Config::default()
        };
        let mut service = Vec::new();
        let mut service_of = HashMap::new();
        for i in 0..config.replicas {
            let node = NodeIndex(i);
            sim.with_node(node, |n, now| {
                n.set_mailbox_config(mailbox_config.clone(), now)
            });
            service_of.insert(node, service.len());
            service.push(Service {
                node,
                arrived: false,
                life: Life::Online {
                    since: sim.elapsed(),
                },
            });
        }
        let seed_peer = sim.peer_id(NodeIndex(0));
        let client = shoal_kad::Config {
            client: true,
            ..kad
        };
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let mut users = Vec::new();
        let mut by_device = HashMap::new();
        let recipients = config.pairs.div_ceil(config.contacts.max(1));
        for i in 0..recipients * (1 + config.contacts.max(1)) {
            let keypair = Keypair::from_secret_bytes(&rng.random());
            let peer = keypair.peer_id();
            let now_ms = sim.clock().unix_secs * 1000;
            let host = MailboxHost::new(
                keypair,
                &client,
                config.seed ^ (i as u64) << 24,
                None,
                now_ms,
            );
            let node = sim.add_node(peer, host);
            sim.with_node(node, |n, now| {
                // As the messenger does with a peer identify names.
                let kad = n.kademlia();
                kad.add_address(now.instant, seed_peer, vec![sim_addr(&seed_peer)]);
                let _ = kad.bootstrap(now.instant, &[(seed_peer, vec![sim_addr(&seed_peer)])]);
            });
            let engine = engine(
                config.seed ^ i as u64,
                0,
                shoal_im::MemoryStore::new(),
                &sim,
            );
            let device = engine.device().certificate().device().peer_id();
            by_device.insert(device, users.len());
            users.push(User {
                node,
                engine,
                device,
                online: true,
                restarts: 0,
                shown: HashMap::new(),
            });
        }
        sim.run_for(Duration::from_secs(60));
        let churn = config.churn.map(|model| {
            let mut churn = Churn::new(model, config.replicas, config.seed ^ 0xc4, sim.elapsed());
            for s in service.iter().skip(model.stable) {
                churn.online(s.node, sim.elapsed());
            }
            churn
        });
        let mut world = MailboxWorld {
            sim,
            rng,
            users,
            pairs: Vec::new(),
            by_device,
            lying: HashSet::new(),
            report: WorldReport::default(),
            config,
            plan,
            service,
            service_of,
            churn,
            store_sets: HashMap::new(),
            replaced: HashMap::new(),
            away_acks: Vec::new(),
            acked: Vec::new(),
            contacts_of: Vec::new(),
            reconnected: HashMap::new(),
            rejoining: HashSet::new(),
        };
        world.pair_up();
        world
    }

    /// Gives each recipient its contacts (the users after it), and each
    /// pair exchanges a first message online.
    fn pair_up(&mut self) {
        let (min, max) = self.config.offline;
        let per = self.config.contacts.max(1);
        self.contacts_of = vec![Vec::new(); self.users.len()];
        for p in 0..self.config.pairs {
            let (k, c) = (p / per, p % per);
            let r = k * (per + 1);
            let s = r + 1 + c;
            self.contacts_of[r].push(s);
            self.contacts_of[s].push(r);
            let (su, ru) = (
                self.users[s].engine.user_id(),
                self.users[r].engine.user_id(),
            );
            let now = self.sim.clock();
            let bundle = self.users[r].engine.prekey_bundle();
            let sender = &mut self.users[s].engine;
            sender.add_contact(ru, "recipient").ok();
            sender.set_online(now.instant, ru, true).ok();
            sender.set_bundle(now.instant, ru, &bundle).ok();
            sender
                .send(now.instant, now.unix_secs * 1000, ru, "hello")
                .ok();
            let recipient = &mut self.users[r].engine;
            recipient.add_contact(su, "sender").ok();
            recipient.set_online(now.instant, su, true).ok();
            // A recipient leaves and returns once, for all its contacts.
            let (leaves, returns) = match self.pairs.iter().find(|q| q.recipient == r) {
                Some(q) => (q.leaves, q.returns),
                None => {
                    let leaves = Duration::from_secs(self.rng.random_range(3600..12 * 3600));
                    let away = self.rng.random_range(min.as_secs()..=max.as_secs());
                    (leaves, leaves + Duration::from_secs(away))
                }
            };
            self.pairs.push(Pair {
                sender: s,
                recipient: r,
                leaves,
                sender_exits: returns.saturating_sub(Duration::from_secs(600)),
                returns,
                left_day: 0,
                sent: Vec::new(),
                stored: Vec::new(),
                mailboxes: BTreeSet::new(),
                read_complete: false,
            });
        }
        self.pump();
    }

    /// Runs the whole scenario and returns what it measured.
    pub fn run(mut self) -> WorldReport {
        let end = self
            .pairs
            .iter()
            .map(|p| p.returns)
            .max()
            .unwrap_or_default()
            + Duration::from_secs(3 * 3600);
        let start = self.sim.elapsed();
        while self.sim.elapsed() < start + end {
            let t = self.sim.elapsed() - start;
            self.churn_step();
            for p in 0..self.pairs.len() {
                self.act(p, t);
            }
            self.read_returned(t);
            self.timers();
            self.pump();
            self.sim.run_for(self.config.step);
        }
        self.finish()
    }

    /// What pair `p` does at time `t` of the scenario.
    fn act(&mut self, p: usize, t: Duration) {
        let (s, r) = (self.pairs[p].sender, self.pairs[p].recipient);
        let pair = &self.pairs[p];
        let (leaves, exits, returns) = (pair.leaves, pair.sender_exits, pair.returns);
        if t >= leaves && t < returns && self.users[r].online {
            let now = self.sim.clock();
            self.set_online(r, false);
            // Each contact writes at once when the recipient has just left;
            // the recipient, online until now, had read its mailboxes
            // through today (as the messenger does every poll).
            let today = day_of(now.unix_secs);
            for q in 0..self.pairs.len() {
                if self.pairs[q].recipient == r {
                    self.pairs[q].left_day = today;
                    let su = self.users[self.pairs[q].sender].engine.user_id();
                    self.users[r].engine.mailbox_read_through(su, today).ok();
                    self.send(q);
                }
            }
        }
        if t >= exits && self.users[s].online {
            self.set_online(s, false);
        }
        if t >= returns && !self.users[r].online {
            self.set_online(r, true);
            let hours = (returns - leaves).as_secs() / 3600;
            let report = &mut self.report;
            report.longest_offline_hours = report.longest_offline_hours.max(hours);
            report.shortest_offline_hours = match report.shortest_offline_hours {
                0 => hours,
                h => h.min(hours),
            };
            // It reads at once, before anyone else's turn moves the clock.
            let unread: Vec<usize> = (0..self.pairs.len())
                .filter(|&q| self.pairs[q].recipient == r && !self.pairs[q].read_complete)
                .collect();
            self.read_all(r, &unread);
        }
        if self.users[s].online && !self.users[r].online {
            if self.rng.random_bool(self.config.restart_chance) {
                self.restart(s);
            }
            if t + Duration::from_secs(1800) < exits
                && self.rng.random_bool(self.config.send_chance)
            {
                self.send(p);
            }
            self.store(p);
        }
    }

    /// Each recipient back online reads the mailboxes of every contact
    /// with something unread, all at once.
    fn read_returned(&mut self, t: Duration) {
        let mut unread: Vec<(usize, Vec<usize>)> = Vec::new();
        for (p, pair) in self.pairs.iter().enumerate() {
            let r = pair.recipient;
            if !self.users[r].online || t < pair.returns || pair.read_complete {
                continue;
            }
            match unread.iter_mut().find(|(u, _)| *u == r) {
                Some((_, pairs)) => pairs.push(p),
                None => unread.push((r, vec![p])),
            }
        }
        for (r, pairs) in unread {
            self.read_all(r, &pairs);
        }
    }

    fn send(&mut self, p: usize) {
        let (s, r) = (self.pairs[p].sender, self.pairs[p].recipient);
        let ru = self.users[r].engine.user_id();
        let now = self.sim.clock();
        let n = self.pairs[p].sent.len();
        let sender = &mut self.users[s].engine;
        if let Ok(id) = sender.send(now.instant, now.unix_secs * 1000, ru, &format!("m{n}")) {
            self.pairs[p].sent.push(id);
        }
    }

    /// A user goes offline (its node stops; its contacts see it go) or
    /// comes back.
    fn set_online(&mut self, u: usize, online: bool) {
        self.users[u].online = online;
        let node = self.users[u].node;
        if online {
            self.sim.revive(node);
        } else {
            self.sim.crash(node);
        }
        let now = self.sim.clock().instant;
        let me = self.users[u].engine.user_id();
        for partner in self.contacts_of[u].clone() {
            let both = online && self.users[partner].online;
            let them = self.users[partner].engine.user_id();
            self.users[u].engine.set_online(now, them, both).ok();
            self.users[partner].engine.set_online(now, me, both).ok();
        }
        let waiting = self
            .pairs
            .iter()
            .any(|p| p.recipient == u && !p.stored.is_empty());
        if online && waiting {
            self.reconnected.insert(u, self.sim.elapsed());
            let floor = self.reconnect_floor(u);
            self.report.reconnect_floor.push(floor);
        }
        if online {
            self.rejoining.insert(u);
        }
    }

    /// The sender's process restarts on its durable store.
    fn restart(&mut self, u: usize) {
        let user = &mut self.users[u];
        user.restarts += 1;
        let store = user.engine.store().clone();
        let seed = self.config.seed ^ u as u64;
        self.users[u].engine = engine(seed, self.users[u].restarts, store, &self.sim);
        let node = self.users[u].node;
        self.sim.with_node(node, |n, now| n.restart(now));
        let now = self.sim.clock().instant;
        for partner in self.contacts_of[u].clone() {
            let them = self.users[partner].engine.user_id();
            let both = self.users[partner].online;
            self.users[u].engine.set_online(now, them, both).ok();
        }
        self.report.sender_restarts += 1;
    }

    /// Runs the engines' timers that are due.
    fn timers(&mut self) {
        let now = self.sim.clock().instant;
        for user in self.users.iter_mut().filter(|u| u.online) {
            if user.engine.poll_timeout().is_some_and(|t| t <= now) {
                user.engine.handle_timeout(now).ok();
            }
        }
    }

    /// Moves envelopes between online users (the direct path), and notes
    /// what each user showed.
    fn pump(&mut self) {
        for _ in 0..100 {
            let mut moved = Vec::new();
            for user in &mut self.users {
                while let Some(t) = user.engine.poll_transmit() {
                    moved.push((user.device, t.device, t.envelope));
                }
                while let Some(event) = user.engine.poll_event() {
                    if let ImEvent::Received { id, .. } = event {
                        *user.shown.entry(id).or_default() += 1;
                    }
                }
            }
            if moved.is_empty() {
                return;
            }
            let now = self.sim.clock().instant;
            for (from, to, envelope) in moved {
                let Some(&u) = self.by_device.get(&to) else {
                    continue;
                };
                let from_online = self
                    .by_device
                    .get(&from)
                    .is_some_and(|&f| self.users[f].online);
                if self.users[u].online && from_online {
                    self.users[u]
                        .engine
                        .handle_envelope_from(now, from, &envelope)
                        .ok();
                }
            }
        }
    }

    /// The replicas of mailbox `id` as user `u`'s lookup finds them.
    fn lookup(&mut self, u: usize, id: MailboxId) -> Vec<PeerId> {
        self.report.lookups += 1;
        let node = self.users[u].node;
        let key = Key::from_bytes(*id.as_bytes());
        let Some(query) = self
            .sim
            .with_node(node, |n, now| n.kad.find_node(now.instant, key).ok())
        else {
            return Vec::new();
        };
        self.sim
            .run_until(LOOKUP_LIMIT, |s| s.node(node).finished.contains_key(&query));
        let found: Vec<PeerId> = match self.sim.node_mut(node).finished.remove(&query) {
            Some((QueryResult::FindNode { closest }, _)) => {
                closest.into_iter().take(REPLICAS).map(|c| c.peer).collect()
            }
            _ => Vec::new(),
        };
        if found.is_empty() {
            // Lost touch with the DHT (its contacts timed out): join again
            // through the seed, as the messenger does through the peers it
            // connects to.
            let seed = self.sim.peer_id(NodeIndex(0));
            self.sim.with_node(node, |n, now| {
                let kad = n.kademlia();
                kad.add_address(now.instant, seed, vec![sim_addr(&seed)]);
                let _ = kad.bootstrap(now.instant, &[(seed, vec![sim_addr(&seed)])]);
            });
        }
        found
    }

    /// Sends one request per replica from user `u` and waits for the
    /// replies, in arrival order.
    fn requests(
        &mut self,
        u: usize,
        replicas: &[PeerId],
        mut make: impl FnMut(&mut MailboxHost, shoal::Now, PeerId) -> RequestId,
    ) -> Vec<(PeerId, Reply)> {
        let node = self.users[u].node;
        let ids: HashSet<RequestId> = self.sim.with_node(node, |n, now| {
            replicas
                .iter()
                .map(|&p| make(n, crate::now_of(now), p))
                .collect()
        });
        self.sim.run_until(REQUEST_LIMIT, |s| {
            let got: HashSet<_> = s.node(node).replies.iter().map(|(id, _, _)| *id).collect();
            ids.is_subset(&got)
        });
        self.sim
            .node_mut(node)
            .take_replies(&ids)
            .into_iter()
            .map(|(_, peer, reply)| (peer, reply))
            .collect()
    }

    /// The sender stores its sealed envelopes that are not stored yet in
    /// today's mailbox, each counted stored at W verified receipts.
    fn store(&mut self, p: usize) {
        let (s, r) = (self.pairs[p].sender, self.pairs[p].recipient);
        let ru = self.users[r].engine.user_id();
        let engine = &self.users[s].engine;
        let (Some(pair), outbox) = (engine.mailbox_pair(&ru), engine.mailbox_outbox(&ru)) else {
            return;
        };
        if outbox.is_empty() {
            return;
        }
        let own = engine.device().certificate().device();
        let today = day_of(self.sim.clock().unix_secs);
        let key = pair.secret.mailbox_key(&own, today);
        let descriptor = Descriptor::owner_until_ack(key.public());
        let id = descriptor.id();
        let replicas = self.lookup(s, id);
        if replicas.len() < WRITE_QUORUM {
            return;
        }
        if self.lying.insert(id) {
            // The closest replicas lie about this mailbox.
            for peer in replicas.iter().take(self.config.liars) {
                if let Some(store) = self.store_of(peer) {
                    store.lie_for(id);
                }
            }
        }
        for stored in outbox {
            let (message, expiry) = (stored.id, stored.expiry);
            let envelope = Bytes::from(stored.envelope);
            let mut asked = replicas.clone();
            if self.config.store_fanout < asked.len() {
                asked.shuffle(&mut self.rng);
                asked.truncate(self.config.store_fanout);
            }
            let replies = self.requests(s, &asked, |n, now, peer| {
                n.mailbox.store(
                    now,
                    peer,
                    descriptor,
                    Some(&key),
                    envelope.clone(),
                    expiry,
                    Class::Normal,
                )
            });
            let mut quorum = Quorum::new(
                id,
                EnvelopeHash::of(&envelope),
                expiry,
                replicas.clone(),
                self.config.write_quorum,
            );
            let mut signers = Vec::new();
            for (peer, reply) in replies {
                if quorum.is_met() {
                    break;
                }
                if let Ok((
                    addr,
                    Answer::Stored {
                        signature,
                        expiry,
                        proof,
                    },
                )) = reply
                    && quorum.add(peer, &addr, signature, proof, expiry).is_ok()
                {
                    signers.push(peer);
                }
            }
            if !quorum.is_met() {
                // Tried again at the next step, with the same bytes.
                return;
            }
            let liars = signers
                .iter()
                .filter(|peer| self.store_of(peer).is_some_and(|s| s.lies_about(&id)))
                .count();
            self.report.liar_receipts += liars;
            if !self.store_sets.contains_key(&id) {
                let set = self.closest_alive(&id);
                self.store_sets.insert(id, (set, self.sim.elapsed()));
            }
            if self.users[s].engine.mark_stored(ru, message).is_ok() {
                self.pairs[p].stored.push(message);
                self.pairs[p].mailboxes.insert(id);
                if today > self.pairs[p].left_day {
                    self.report.day_rotations += 1;
                }
            }
        }
    }

    fn store_of(&self, peer: &PeerId) -> Option<SimStore> {
        let node = self.sim.index_of(peer)?;
        self.sim.node(node).store.clone()
    }

    fn finish(mut self) -> WorldReport {
        self.pump();
        self.churn_finish();
        let mut report = self.report.clone();
        for pair in &self.pairs {
            let shown = &self.users[pair.recipient].shown;
            report.sent += pair.sent.len();
            report.stored += pair.stored.len();
            for id in &pair.stored {
                match shown.get(id).copied().unwrap_or(0) {
                    0 => report.lost += 1,
                    1 => report.delivered_once += 1,
                    _ => {}
                }
            }
        }
        report.shown_twice = self
            .users
            .iter()
            .flat_map(|u| u.shown.values())
            .filter(|n| **n > 1)
            .count();
        report
    }
}

/// Churn: nodes leaving, coming back and joining; and what it measured.
impl MailboxWorld {
    /// Applies the churn due by now.
    fn churn_step(&mut self) {
        let Some(mut churn) = self.churn.take() else {
            return;
        };
        let now = self.sim.elapsed();
        for change in churn.due(now) {
            match change {
                Change::Leave(node) => self.leave(&mut churn, node, now),
                Change::Return(node) => self.come_back(&mut churn, node, now),
            }
        }
        for _ in 0..churn.arrivals(now) {
            self.arrive(&mut churn, now);
        }
        self.churn = Some(churn);
    }

    fn leave(&mut self, churn: &mut Churn, node: NodeIndex, now: Duration) {
        let Some(&s) = self.service_of.get(&node) else {
            return;
        };
        let Life::Online { since } = self.service[s].life else {
            return;
        };
        self.sim.crash(node);
        self.report.replica_hours += (now - since).as_secs_f64() / 3600.0;
        self.collect_counters(s);
        self.service[s].life = if churn.left(node, now) {
            self.report.departures += 1;
            Life::Departed
        } else {
            Life::Away
        };
    }

    fn come_back(&mut self, churn: &mut Churn, node: NodeIndex, now: Duration) {
        let Some(&s) = self.service_of.get(&node) else {
            return;
        };
        if self.service[s].life != Life::Away {
            return;
        }
        self.sim.revive(node);
        // A process that starts again over its durable store.
        self.sim.with_node(node, |n, clock| n.restart(clock));
        self.service[s].life = Life::Online { since: now };
        churn.online(node, now);
        self.report.returns += 1;
        let unix = self.sim.clock().unix_secs;
        let (back, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.away_acks)
            .into_iter()
            .partition(|(n, _, _)| *n == node);
        self.away_acks = waiting;
        self.report.away_during_ack_returned += back
            .iter()
            .filter(|(_, _, expiry)| *expiry > unix)
            .map(|(_, held, _)| held)
            .sum::<usize>();
    }

    fn arrive(&mut self, churn: &mut Churn, now: Duration) {
        let stable: Vec<NodeIndex> = self
            .service
            .iter()
            .take(churn.model.stable.max(1))
            .map(|s| s.node)
            .filter(|n| self.sim.is_alive(*n))
            .collect();
        let Some(&via) = stable.get(self.rng.random_range(0..stable.len().max(1))) else {
            return;
        };
        let index = self.config.replicas + self.report.arrivals;
        let node = self.plan.join(&mut self.sim, self.config.seed, index, via);
        let config = shoal_mailbox::Config {
            sync_interval: self.config.sync_interval,
            ..shoal_mailbox::Config::default()
        };
        self.sim
            .with_node(node, |n, clock| n.set_mailbox_config(config, clock));
        self.service_of.insert(node, self.service.len());
        self.service.push(Service {
            node,
            arrived: true,
            life: Life::Online { since: now },
        });
        churn.online(node, now);
        self.report.arrivals += 1;
    }

    /// Adds a replica's counters to the report (before its core restarts,
    /// and at the end).
    fn collect_counters(&mut self, s: usize) {
        let service = &self.service[s];
        let host = self.sim.node(service.node);
        self.report.sync_bytes += host.mailbox.sync_bytes().0;
        if service.arrived {
            self.report.handoffs_to_newcomers +=
                host.mailbox.replica().map_or(0, |r| r.stats().handed_in);
        }
    }

    /// The least time recipient `u`, back now, could take to read the
    /// last of its messages, whatever its reader does: a node back from
    /// days away has no connection left, so it first hears from some live
    /// node it knows (its routing table, or the seed) on a new connection,
    /// and then, for each mailbox holding its messages, from one of that
    /// mailbox's live replicas on a new connection (the best case: the
    /// first answer named the replica), unless it knew that replica
    /// already. Jitter and lost messages only add.
    fn reconnect_floor(&self, u: usize) -> Duration {
        let me = self.users[u].node;
        let known: HashSet<NodeIndex> = self
            .sim
            .node(me)
            .kad
            .routing_table()
            .iter()
            .filter_map(|c| self.sim.index_of(&c.peer))
            .chain(std::iter::once(NodeIndex(0)))
            .filter(|&n| self.sim.is_alive(n))
            .collect();
        let first = known
            .iter()
            .map(|&n| self.sim.fresh_request_floor(me, n))
            .min()
            .unwrap_or_default();
        let mailboxes: BTreeSet<MailboxId> = self
            .pairs
            .iter()
            .filter(|p| p.recipient == u && !p.read_complete)
            .flat_map(|p| p.mailboxes.iter().copied())
            .collect();
        mailboxes
            .iter()
            .filter_map(|id| {
                self.closest_alive(id)
                    .iter()
                    .filter_map(|peer| self.sim.index_of(peer))
                    .map(|n| match known.contains(&n) {
                        true => self.sim.fresh_request_floor(me, n),
                        false => first + self.sim.fresh_request_floor(me, n),
                    })
                    .min()
            })
            .max()
            .unwrap_or_default()
    }

    /// The R live nodes keeping mailboxes closest to `mailbox`: its
    /// replicas, as an observer who sees every node knows them.
    fn closest_alive(&self, mailbox: &MailboxId) -> Vec<PeerId> {
        let target = Key::from_bytes(*mailbox.as_bytes());
        let mut alive: Vec<(shoal_kad::Distance, PeerId)> = self
            .service
            .iter()
            .filter(|s| matches!(s.life, Life::Online { .. }))
            .map(|s| {
                let peer = self.sim.peer_id(s.node);
                (Key::for_peer(&peer).distance(&target), peer)
            })
            .collect();
        alive.sort_by_key(|(d, _)| *d);
        alive.into_iter().take(REPLICAS).map(|(_, p)| p).collect()
    }

    /// The recipient acked `taken` of `mailbox`: notes which replicas away
    /// now still hold some of them.
    fn note_ack(&mut self, mailbox: MailboxId, taken: &[EnvelopeHash], expiry: u64) {
        for hash in taken {
            self.acked.push((mailbox, *hash, expiry));
        }
        for s in &self.service {
            if s.life != Life::Away {
                continue;
            }
            let Some(mut store) = self.sim.node(s.node).store.clone() else {
                continue;
            };
            let held = taken
                .iter()
                .filter(|h| {
                    matches!(
                        shoal_mailbox::ReplicaStore::find(&mut store, &mailbox, h),
                        Ok(Some(Existing::Held { .. }))
                    )
                })
                .count();
            if held > 0 {
                self.away_acks.push((s.node, held, expiry));
            }
        }
    }

    /// At the end: the counters of the replicas online, and the acked
    /// envelopes still held by a replica online for the last hour.
    fn churn_finish(&mut self) {
        let now = self.sim.elapsed();
        for s in 0..self.service.len() {
            if let Life::Online { since } = self.service[s].life {
                self.report.replica_hours += (now - since).as_secs_f64() / 3600.0;
                self.collect_counters(s);
            }
        }
        let unix = self.sim.clock().unix_secs;
        let settled: Vec<SimStore> = self
            .service
            .iter()
            .filter(|s| {
                matches!(s.life, Life::Online { since } if now >= since + Duration::from_secs(3600))
            })
            .filter_map(|s| self.sim.node(s.node).store.clone())
            .collect();
        for (mailbox, hash, expiry) in &self.acked {
            if *expiry <= unix {
                continue;
            }
            for store in &settled {
                let mut store = store.clone();
                if matches!(
                    shoal_mailbox::ReplicaStore::find(&mut store, mailbox, hash),
                    Ok(Some(Existing::Held { .. }))
                ) {
                    self.report.acked_still_held += 1;
                }
            }
        }
        self.report.replaced = self.replaced.values().copied().collect();
        self.report
            .replaced
            .sort_by(|a, b| a.waited.cmp(&b.waited).then(a.share.total_cmp(&b.share)));
    }
}
