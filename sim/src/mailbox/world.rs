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

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shoal::{Bytes, PeerId};
use shoal_identity::Keypair;
use shoal_im::MessageId;
use shoal_im::engine::{Engine, EngineConfig, Event as ImEvent};
use shoal_im::mailbox_keys::{DAY_SECS, day_of};
use shoal_kad::{Key, QueryResult};
use shoal_mailbox::{
    Answer, Class, Descriptor, EnvelopeHash, MailboxId, Quorum, REPLICAS, RequestId, WRITE_QUORUM,
};

use super::host::{MailboxHost, Reply, SimStore};
use crate::kad::{KadHost, KadNetworkPlan};
use crate::{NetworkModel, NodeIndex, Simulation, sim_addr};

/// Replicas that must answer at least for a day to count as read.
const READ_QUORUM: usize = REPLICAS - WRITE_QUORUM + 1;
/// How long one lookup or one round of requests may take.
const REQUEST_LIMIT: Duration = Duration::from_secs(30);
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
}

impl Default for WorldConfig {
    /// 200 replicas, 30 pairs, R - W liars, away 1 hour to 3 days, 10-minute
    /// steps, 15% of messages lost by the network.
    fn default() -> WorldConfig {
        WorldConfig {
            replicas: 200,
            pairs: 30,
            liars: REPLICAS - WRITE_QUORUM,
            offline: (Duration::from_secs(3600), Duration::from_secs(3 * DAY_SECS)),
            step: Duration::from_secs(600),
            send_chance: 0.1,
            restart_chance: 0.01,
            model: NetworkModel::default().with_loss(0.15),
            seed: 14,
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
            // Bucket refresh every 6 hours: days of virtual time stay cheap.
            refresh_interval: Duration::from_secs(6 * 3600),
            ..shoal_kad::Config::default()
        };
        let mut plan = KadNetworkPlan::new(config.replicas);
        plan.config = kad.clone();
        plan.model = config.model;
        let mut sim: Simulation<MailboxHost> = plan.build(config.seed);
        let seed_peer = sim.peer_id(NodeIndex(0));
        let client = shoal_kad::Config {
            client: true,
            ..kad
        };
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let mut users = Vec::new();
        let mut by_device = HashMap::new();
        for i in 0..config.pairs * 2 {
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
        let mut world = MailboxWorld {
            sim,
            rng,
            users,
            pairs: Vec::new(),
            by_device,
            lying: HashSet::new(),
            report: WorldReport::default(),
            config,
        };
        world.pair_up();
        world
    }

    /// Pairs users up, and each pair exchanges a first message online.
    fn pair_up(&mut self) {
        let (min, max) = self.config.offline;
        for p in 0..self.config.pairs {
            let (s, r) = (2 * p, 2 * p + 1);
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
            let leaves = Duration::from_secs(self.rng.random_range(3600..12 * 3600));
            let away = self.rng.random_range(min.as_secs()..=max.as_secs());
            let returns = leaves + Duration::from_secs(away);
            self.pairs.push(Pair {
                sender: s,
                recipient: r,
                leaves,
                sender_exits: returns.saturating_sub(Duration::from_secs(600)),
                returns,
                left_day: 0,
                sent: Vec::new(),
                stored: Vec::new(),
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
            for p in 0..self.pairs.len() {
                self.act(p, t);
            }
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
            self.pairs[p].left_day = day_of(now.unix_secs);
            self.set_online(r, false);
            // Alice writes at once when Bob has just left.
            self.send(p);
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
        if self.users[r].online && t >= returns && !self.pairs[p].read_complete {
            self.read(p);
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
        let partner = u ^ 1;
        let both = online && self.users[partner].online;
        let now = self.sim.clock().instant;
        let (me, them) = (
            self.users[u].engine.user_id(),
            self.users[partner].engine.user_id(),
        );
        self.users[u].engine.set_online(now, them, both).ok();
        self.users[partner].engine.set_online(now, me, both).ok();
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
        let them = self.users[u ^ 1].engine.user_id();
        let both = self.users[u ^ 1].online;
        let now = self.sim.clock().instant;
        self.users[u].engine.set_online(now, them, both).ok();
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
        self.sim.run_until(REQUEST_LIMIT, |s| {
            s.node(node).finished.contains_key(&query)
        });
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
            let replies = self.requests(s, &replicas, |n, now, peer| {
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
                WRITE_QUORUM,
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
            if self.users[s].engine.mark_stored(ru, message).is_ok() {
                self.pairs[p].stored.push(message);
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

    /// The recipient reads every day since the last one read through, from
    /// every replica, hands the envelopes to its engine and acks them.
    fn read(&mut self, p: usize) {
        let (s, r) = (self.pairs[p].sender, self.pairs[p].recipient);
        let su = self.users[s].engine.user_id();
        let unix = self.sim.clock().unix_secs;
        let engine = &self.users[r].engine;
        let Some(pair) = engine.mailbox_pair(&su) else {
            return;
        };
        let mut complete = true;
        for day in engine.mailbox_days(&su, unix) {
            let key = pair.secret.mailbox_key(&pair.device_key, day);
            let descriptor = Descriptor::owner_until_ack(key.public());
            let replicas = self.lookup(r, descriptor.id());
            let mut answered = HashSet::new();
            let mut seen = HashSet::new();
            let mut envelopes = Vec::new();
            let mut after: HashMap<PeerId, u64> = HashMap::new();
            let mut asking = replicas.clone();
            let mut failures: HashMap<PeerId, usize> = HashMap::new();
            for _ in 0..MAX_PAGES {
                if asking.is_empty() {
                    break;
                }
                let replies = self.requests(r, &asking, |n, now, peer| {
                    let from = after.get(&peer).copied().unwrap_or(0);
                    n.mailbox
                        .fetch(now, peer, descriptor, &key, from, 256, false)
                });
                asking.clear();
                for (peer, reply) in replies {
                    let Ok((_, Answer::Items { items, more })) = reply else {
                        // Asked again, a few times (a lost message).
                        let failed = failures.entry(peer).or_default();
                        *failed += 1;
                        if *failed < FETCH_ATTEMPTS {
                            asking.push(peer);
                        }
                        continue;
                    };
                    if let Some(last) = items.last() {
                        after.insert(peer, last.seq);
                    }
                    for item in items {
                        if seen.insert(EnvelopeHash::of(&item.envelope)) {
                            envelopes.push(item.envelope);
                        }
                    }
                    if more {
                        asking.push(peer);
                    } else {
                        answered.insert(peer);
                    }
                }
            }
            if answered.len() < replicas.len().max(READ_QUORUM) {
                complete = false;
            }
            let now = self.sim.clock().instant;
            let mut taken = Vec::new();
            for envelope in envelopes {
                let engine = &mut self.users[r].engine;
                if engine
                    .handle_envelope_from(now, pair.device, &envelope)
                    .is_ok()
                {
                    taken.push(EnvelopeHash::of(&envelope));
                }
            }
            self.pump();
            if !taken.is_empty() {
                self.requests(r, &replicas, |n, now, peer| {
                    n.mailbox.ack(now, peer, descriptor, &key, taken.clone())
                });
            }
        }
        if complete {
            let today = day_of(unix);
            self.users[r].engine.mailbox_read_through(su, today).ok();
            self.pairs[p].read_complete = true;
        }
    }

    fn finish(mut self) -> WorldReport {
        self.pump();
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
