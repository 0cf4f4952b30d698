//! A returning recipient reads its mailboxes the way the messenger's
//! driver does: every contact's days at once, each mailbox looked up
//! progressively (a node near the mailbox is asked for it as soon as it
//! answers the lookup, before the lookup settles), every answer's
//! envelopes handed to the engine as it arrives (a slow or dead replica
//! delays nothing it does not alone hold), and acked on every replica once
//! the mailbox is read. The time from the recipient's return until the
//! last message stored for it is shown is its reconnect latency.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::time::Duration;

use shoal::PeerId;
use shoal_identity::Keypair;
use shoal_im::mailbox_keys::day_of;
use shoal_kad::{Distance, Key, QueryId, QueryResult};
use shoal_mailbox::{Answer, Descriptor, EnvelopeHash, REPLICAS, RequestId};

use super::{FETCH_ATTEMPTS, MAX_PAGES, MailboxWorld, READ_QUORUM, Replacement};
use crate::kad::KadHost;
use crate::{NodeIndex, sim_addr};

/// Envelopes asked for per fetch.
const FETCH_LIMIT: u32 = 256;

/// Contacts read at the same time (the messenger's driver reads as many).
const READS_AT_ONCE: usize = 20;

/// How long one read may take.
const READ_LIMIT: Duration = Duration::from_secs(300);

/// One day's mailbox of one contact, being read.
struct Day {
    pair: usize,
    descriptor: Descriptor,
    key: Keypair,
    device: PeerId,
    /// The final replica set (once looked up).
    replicas: Vec<PeerId>,
    /// Nodes heard of by the lookup so far (answered, or named in an
    /// answer), closest first.
    near: Vec<(Distance, PeerId)>,
    /// Nodes asked before they answered the lookup: when such a fetch
    /// fails, the node counts as not asked (it may have left long ago),
    /// and is asked again only if it answers the lookup or ends among the
    /// replicas.
    unconfirmed: HashSet<PeerId>,
    /// Nodes whose answer held envelopes (acked with the replicas).
    holders: BTreeSet<PeerId>,
    /// Per replica: the last sequence number read, pages and failures.
    after: HashMap<PeerId, u64>,
    pages: HashMap<PeerId, usize>,
    failures: HashMap<PeerId, usize>,
    answered: HashSet<PeerId>,
    seen: HashSet<EnvelopeHash>,
    taken: Vec<EnvelopeHash>,
    latest_expiry: u64,
    /// Fetches in flight.
    in_flight: usize,
    looked_up: bool,
}

impl Day {
    /// Replicas of the final set that answered to the end.
    fn replicas_answered(&self) -> usize {
        self.replicas
            .iter()
            .filter(|p| self.answered.contains(p))
            .count()
    }
}

/// What a request in flight was for.
enum Asked {
    Fetch(usize),
    Ack,
}

impl MailboxWorld {
    /// Recipient `r` reads the mailboxes of the pairs `pairs` (its contacts
    /// with something unread): [`READS_AT_ONCE`] contacts at a time, all
    /// days of a contact at once.
    pub(super) fn read_all(&mut self, r: usize, pairs: &[usize]) {
        let node = self.users[r].node;
        // The DHT is joined again while the mailboxes are read, not before.
        let rejoin = match self.rejoining.remove(&r) {
            true => self.rejoin(node),
            false => None,
        };
        let unix = self.sim.clock().unix_secs;
        let mut days = Vec::new();
        for &p in pairs {
            let su = self.users[self.pairs[p].sender].engine.user_id();
            let engine = &self.users[r].engine;
            let Some(pair) = engine.mailbox_pair(&su) else {
                continue;
            };
            for day in engine.mailbox_days(&su, unix) {
                let key = pair.secret.mailbox_key(&pair.device_key, day);
                days.push(Day {
                    pair: p,
                    descriptor: Descriptor::owner_until_ack(key.public()),
                    key,
                    device: pair.device,
                    replicas: Vec::new(),
                    near: Vec::new(),
                    unconfirmed: HashSet::new(),
                    holders: BTreeSet::new(),
                    after: HashMap::new(),
                    pages: HashMap::new(),
                    failures: HashMap::new(),
                    answered: HashSet::new(),
                    seen: HashSet::new(),
                    taken: Vec::new(),
                    latest_expiry: 0,
                    in_flight: 0,
                    looked_up: false,
                });
            }
        }
        let mut waiting: VecDeque<usize> = pairs.iter().copied().collect();
        let mut reading: Vec<usize> = Vec::new();
        let mut lookups: BTreeMap<QueryId, usize> = BTreeMap::new();
        let mut asked: BTreeMap<RequestId, Asked> = BTreeMap::new();
        let deadline = self.sim.elapsed() + READ_LIMIT;
        let mut lost_touch = false;
        loop {
            // A contact is read once its days are looked up and fetched.
            reading.retain(|&p| {
                days.iter()
                    .filter(|d| d.pair == p)
                    .any(|d| !d.looked_up || d.in_flight > 0)
            });
            while reading.len() < READS_AT_ONCE
                && let Some(p) = waiting.pop_front()
            {
                reading.push(p);
                for (d, day) in days.iter_mut().enumerate().filter(|(_, d)| d.pair == p) {
                    self.report.lookups += 1;
                    let key = Key::from_bytes(*day.descriptor.id().as_bytes());
                    match self.sim.with_node(node, |n, now| {
                        n.kad.find_node_progress(now.instant, key).ok()
                    }) {
                        Some(query) => {
                            lookups.insert(query, d);
                        }
                        // No lookup: the day stays unread until next time.
                        None => day.looked_up = true,
                    }
                }
            }
            if lookups.is_empty() && asked.is_empty() || self.sim.elapsed() >= deadline {
                break;
            }
            let left = deadline - self.sim.elapsed();
            self.sim.run_until(left, |s| {
                let n = s.node(node);
                lookups.keys().any(|q| n.finished.contains_key(q))
                    || n.responded.iter().any(|(q, _, _)| lookups.contains_key(q))
                    || n.replies.iter().any(|(id, _, _)| asked.contains_key(id))
            });
            // A node answered a mailbox's lookup: it, and each node its
            // answer named, is asked for the mailbox at once if it is
            // among the closest heard of so far (a named node alongside
            // the lookup's own request to it).
            let responded = std::mem::take(&mut self.sim.node_mut(node).responded);
            for (query, contact, named) in responded {
                let Some(&d) = lookups.get(&query) else {
                    continue;
                };
                let key = Key::from_bytes(*days[d].descriptor.id().as_bytes());
                let heard =
                    std::iter::once((contact, true)).chain(named.into_iter().map(|c| (c, false)));
                for (contact, answered) in heard {
                    let entry = (contact.key.distance(&key), contact.peer);
                    let near = &mut days[d].near;
                    let at = near.partition_point(|x| *x < entry);
                    if near.get(at) != Some(&entry) {
                        near.insert(at, entry);
                    }
                    if answered {
                        days[d].unconfirmed.remove(&contact.peer);
                    }
                    if at < REPLICAS && !days[d].pages.contains_key(&contact.peer) {
                        if !answered {
                            days[d].unconfirmed.insert(contact.peer);
                        }
                        self.fetch(node, &mut days, d, contact.peer, &mut asked);
                    }
                }
            }
            let done: Vec<QueryId> = lookups
                .keys()
                .filter(|q| self.sim.node(node).finished.contains_key(q))
                .copied()
                .collect();
            for query in done {
                let Some(d) = lookups.remove(&query) else {
                    continue;
                };
                let found: Vec<PeerId> = match self.sim.node_mut(node).finished.remove(&query) {
                    Some((QueryResult::FindNode { closest }, _)) => {
                        closest.into_iter().take(REPLICAS).map(|c| c.peer).collect()
                    }
                    _ => Vec::new(),
                };
                lost_touch |= found.is_empty();
                self.note_replacement(&days[d]);
                days[d].replicas = found.clone();
                days[d].looked_up = true;
                for peer in found {
                    days[d].unconfirmed.remove(&peer);
                    if !days[d].pages.contains_key(&peer) {
                        self.fetch(node, &mut days, d, peer, &mut asked);
                    }
                }
                self.ack_when_read(node, &mut days, d, &mut asked);
            }
            let ids: HashSet<RequestId> = asked.keys().copied().collect();
            let replies = self.sim.node_mut(node).take_replies(&ids);
            for (id, peer, reply) in replies {
                let Some(Asked::Fetch(d)) = asked.remove(&id) else {
                    continue;
                };
                days[d].in_flight -= 1;
                self.fetched(r, node, &mut days, d, peer, reply, &mut asked);
            }
        }
        if let Some(query) = rejoin {
            self.sim.node_mut(node).finished.remove(&query);
        }
        if lost_touch {
            // As in `lookup`: join the DHT again through the seed.
            self.rejoining.insert(r);
        }
        let today = day_of(unix);
        for &p in pairs {
            let complete = !waiting.contains(&p)
                && days.iter().filter(|d| d.pair == p).all(|d| {
                    d.looked_up && d.replicas_answered() >= d.replicas.len().max(READ_QUORUM)
                });
            if complete {
                let su = self.users[self.pairs[p].sender].engine.user_id();
                self.users[r].engine.mailbox_read_through(su, today).ok();
                self.pairs[p].read_complete = true;
            }
        }
    }

    /// A user back online joins the DHT again, as the messenger does at
    /// start (through the peers it connects to; here the seed, which never
    /// leaves): its routing table is days old. Returns the bootstrap query,
    /// which runs beside the reads.
    fn rejoin(&mut self, node: NodeIndex) -> Option<QueryId> {
        let seed = self.sim.peer_id(NodeIndex(0));
        self.sim.with_node(node, |n, now| {
            let kad = n.kademlia();
            kad.peer_connected(now.instant, seed, vec![sim_addr(&seed)]);
            kad.bootstrap(now.instant, &[(seed, vec![sim_addr(&seed)])])
                .ok()
        })
    }

    /// Asks `peer` for the next page of day `d`.
    fn fetch(
        &mut self,
        node: NodeIndex,
        days: &mut [Day],
        d: usize,
        peer: PeerId,
        asked: &mut BTreeMap<RequestId, Asked>,
    ) {
        let day = &mut days[d];
        let from = day.after.get(&peer).copied().unwrap_or(0);
        let (descriptor, key) = (day.descriptor, day.key.clone());
        let id = self.sim.with_node(node, |n, now| {
            n.mailbox.fetch(
                crate::now_of(now),
                peer,
                descriptor,
                &key,
                from,
                FETCH_LIMIT,
                false,
            )
        });
        day.in_flight += 1;
        *day.pages.entry(peer).or_default() += 1;
        asked.insert(id, Asked::Fetch(d));
    }

    /// A fetch of day `d` from `peer` came back: its envelopes go to the
    /// engine at once; the next page, or the fetch again, is asked; once
    /// nothing is in flight, what was taken is acked everywhere.
    #[allow(clippy::too_many_arguments)]
    fn fetched(
        &mut self,
        r: usize,
        node: NodeIndex,
        days: &mut [Day],
        d: usize,
        peer: PeerId,
        reply: super::Reply,
        asked: &mut BTreeMap<RequestId, Asked>,
    ) {
        match reply {
            Ok((_, Answer::Items { items, more })) => {
                let day = &mut days[d];
                if let Some(last) = items.last() {
                    day.after.insert(peer, last.seq);
                }
                let now = self.sim.clock().instant;
                for item in items {
                    day.latest_expiry = day.latest_expiry.max(item.expiry);
                    let hash = EnvelopeHash::of(&item.envelope);
                    if !day.seen.insert(hash) {
                        continue;
                    }
                    let engine = &mut self.users[r].engine;
                    if engine
                        .handle_envelope_from(now, day.device, &item.envelope)
                        .is_ok()
                    {
                        day.taken.push(hash);
                        day.holders.insert(peer);
                    }
                }
                self.pump();
                self.note_shown(r);
                let pages = days[d].pages.get(&peer).copied().unwrap_or(0);
                if more && pages < MAX_PAGES {
                    self.fetch(node, days, d, peer, asked);
                } else if !more {
                    days[d].answered.insert(peer);
                }
            }
            _ => {
                // Asked again, a few times (a lost message), unless only
                // named by others: the lookup finds whether it is there.
                let failed = days[d].failures.entry(peer).or_default();
                *failed += 1;
                if days[d].unconfirmed.remove(&peer) {
                    days[d].pages.remove(&peer);
                    days[d].failures.remove(&peer);
                } else if *failed < FETCH_ATTEMPTS {
                    self.fetch(node, days, d, peer, asked);
                }
            }
        }
        self.ack_when_read(node, days, d, asked);
    }

    /// Once day `d` is looked up and nothing is in flight, what was taken
    /// is acked on every replica and every node that held some of it.
    fn ack_when_read(
        &mut self,
        node: NodeIndex,
        days: &mut [Day],
        d: usize,
        asked: &mut BTreeMap<RequestId, Asked>,
    ) {
        let day = &days[d];
        if day.looked_up && day.in_flight == 0 && !day.taken.is_empty() {
            let (descriptor, key, taken) = (day.descriptor, day.key.clone(), day.taken.clone());
            let mut to: Vec<PeerId> = day.replicas.clone();
            to.extend(day.holders.iter().filter(|p| !day.replicas.contains(p)));
            for replica in to {
                let id = self.sim.with_node(node, |n, now| {
                    n.mailbox
                        .ack(crate::now_of(now), replica, descriptor, &key, taken.clone())
                });
                asked.insert(id, Asked::Ack);
            }
            self.note_ack(descriptor.id(), &taken, day.latest_expiry);
            days[d].taken.clear();
        }
    }

    /// How much of day `d`'s replica set changed since its first store.
    fn note_replacement(&mut self, day: &Day) {
        let id = day.descriptor.id();
        if let Some((before, stored_at)) = self.store_sets.get(&id).cloned() {
            let now = self.closest_alive(&id);
            let gone = before.iter().filter(|p| !now.contains(p)).count();
            self.replaced.insert(
                id,
                Replacement {
                    share: gone as f64 / before.len().max(1) as f64,
                    waited: self.sim.elapsed().saturating_sub(stored_at),
                },
            );
        }
    }

    /// Notes the reconnect latency of recipient `r` once every message
    /// stored for it has been shown.
    fn note_shown(&mut self, r: usize) {
        let Some(back) = self.reconnected.get(&r).copied() else {
            return;
        };
        let shown = &self.users[r].shown;
        let all = self
            .pairs
            .iter()
            .filter(|p| p.recipient == r)
            .flat_map(|p| &p.stored)
            .all(|id| shown.contains_key(id));
        if all {
            self.reconnected.remove(&r);
            let took: Duration = self.sim.elapsed().saturating_sub(back);
            self.report.reconnect.push(took);
        }
    }
}
