//! Reading one day's mailbox.
//!
//! With its replica set cached, every replica is asked at once. Otherwise
//! the replicas are looked up progressively: each node the lookup hears of
//! (one that answers, or one an answer names) that is among the
//! [`REPLICAS`] closest to the mailbox so far is asked for the mailbox at
//! once, before the lookup settles (its last steps wait out nodes that
//! left, while the nodes near the mailbox answer within a few round
//! trips). A named node is asked alongside the lookup's own request to
//! it, which saves a round trip on a device back from days away; if it
//! is not among the replicas in the end, that fetch is dropped (it may
//! have left long ago). Once the lookup ends the final replicas not
//! asked yet are. Every answer's envelopes go to the engine as they arrive
//! (it drops copies); what it took is acked at once on the node that held
//! it, and once the read ends on every replica and every other holder.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use shoal::address_book::AddressSource;
use shoal::{CoreHandle, PeerId, ServiceControl};
use shoal_im::Store;
use shoal_kad::{Contact, Distance, LookupProgress};
use shoal_mailbox::{Answer, EnvelopeHash, REPLICAS, RequestId};
use tokio::task::{AbortHandle, JoinError, JoinSet};

use super::{
    FETCH_LIMIT, LOOKUP_TIMEOUT, MAX_BUSY, MAX_BUSY_WAIT, MAX_CACHED, MAX_PAGES, Mailboxes,
    READ_QUORUM, Reading, lock,
};
use crate::im_core::ImCore;

/// What one peer's fetch brought: every page's envelopes and the request
/// id of the last page (a live subscription when asked for one), or
/// `None` if it did not answer to the end.
type Fetched = (PeerId, Option<(Vec<Bytes>, RequestId)>);

/// One day's read in progress.
#[derive(Default)]
struct DayRead {
    /// Peers asked (each once, unless dropped below).
    asked: HashSet<PeerId>,
    /// Peers asked because an answer named them, before they answered
    /// the lookup themselves: their fetches, to drop if the lookup ends
    /// without them among the replicas.
    unconfirmed: HashMap<PeerId, AbortHandle>,
    /// Peers that answered every page.
    answered: HashSet<PeerId>,
    /// Peers whose answer held an envelope new to this read.
    holders: Vec<PeerId>,
    seen: HashSet<EnvelopeHash>,
    /// Hashes the engine took, to ack.
    taken: Vec<EnvelopeHash>,
    /// Acks sent to holders as their envelopes were taken.
    acks: JoinSet<()>,
}

impl Mailboxes {
    /// Reads `reading`'s mailbox (see the module docs), subscribing to it
    /// if `subscribe`. Returns whether it counts as read (every replica
    /// found, and at least [`READ_QUORUM`], answered) and how many
    /// envelopes were found (each once).
    pub(super) async fn read_day<S: Store>(
        &self,
        core: &CoreHandle<ImCore<S>>,
        control: &ServiceControl,
        reading: &Reading,
        subscribe: bool,
    ) -> (bool, usize) {
        let id = reading.descriptor.id();
        let mut read = DayRead::default();
        let mut tasks = JoinSet::new();
        let replicas = match self.cached_replicas(&id) {
            Some(replicas) => {
                for &peer in &replicas {
                    self.spawn_fetch(&mut tasks, &mut read, peer, reading, subscribe);
                }
                replicas
            }
            None => {
                let lookup = Lookup {
                    core,
                    control,
                    reading,
                    subscribe,
                };
                self.look_up_and_fetch(lookup, &mut read, &mut tasks).await
            }
        };
        while let Some(done) = tasks.join_next().await {
            self.fetched(core, reading, subscribe, &mut read, done);
        }
        let answered = replicas
            .iter()
            .filter(|p| read.answered.contains(p))
            .count();
        let complete = answered >= replicas.len().max(READ_QUORUM);
        if !complete {
            self.forget_replicas(&id);
        }
        let found = read.seen.len();
        while read.acks.join_next().await.is_some() {}
        let mut to = replicas;
        for holder in read.holders {
            if !to.contains(&holder) {
                to.push(holder);
            }
        }
        self.ack_all(&to, reading, read.taken).await;
        (complete, found)
    }

    /// Looks up `lookup.reading`'s replicas progressively, asking nodes
    /// near the mailbox as they answer; returns the final replica set
    /// (empty if the lookup failed or timed out: what the nodes asked
    /// meanwhile hold is still read).
    async fn look_up_and_fetch<S: Store>(
        &self,
        lookup: Lookup<'_, S>,
        read: &mut DayRead,
        tasks: &mut JoinSet<Fetched>,
    ) -> Vec<PeerId> {
        let Lookup {
            core,
            control,
            reading,
            subscribe,
        } = lookup;
        let id = reading.descriptor.id();
        let key = shoal_kad::Key::from_bytes(*id.as_bytes());
        self.count_lookup();
        let Ok(mut progress) = self.dht.find_node_progress(key) else {
            tracing::debug!(?id, "replica lookup refused");
            return Vec::new();
        };
        let deadline = tokio::time::Instant::now() + LOOKUP_TIMEOUT;
        let mut near: Vec<(Distance, PeerId)> = Vec::new();
        let dial = |c: &Contact| control.add_addresses(c.peer, &c.addrs, AddressSource::Hearsay);
        loop {
            tokio::select! {
                item = tokio::time::timeout_at(deadline, progress.next()) => match item {
                    Ok(Some(LookupProgress::Responded { contact, named })) => {
                        read.unconfirmed.remove(&contact.peer);
                        let heard = std::iter::once((contact, true))
                            .chain(named.into_iter().map(|c| (c, false)));
                        for (contact, answered) in heard {
                            let entry = (contact.key.distance(&key), contact.peer);
                            let at = near.partition_point(|x| *x < entry);
                            if near.get(at) != Some(&entry) {
                                near.insert(at, entry);
                            }
                            if at < REPLICAS && !read.asked.contains(&contact.peer) {
                                dial(&contact);
                                let fetch =
                                    self.spawn_fetch(tasks, read, contact.peer, reading, subscribe);
                                if !answered {
                                    read.unconfirmed.insert(contact.peer, fetch);
                                }
                            }
                        }
                    }
                    Ok(Some(LookupProgress::Finished(closest, _))) => {
                        let replicas: Vec<PeerId> = closest
                            .iter()
                            .take(REPLICAS)
                            .map(|c| {
                                dial(c);
                                c.peer
                            })
                            .collect();
                        // Named nodes that are not replicas after all
                        // are not waited for.
                        for (peer, fetch) in std::mem::take(&mut read.unconfirmed) {
                            if !replicas.contains(&peer) {
                                fetch.abort();
                            }
                        }
                        for &peer in &replicas {
                            if !read.asked.contains(&peer) {
                                self.spawn_fetch(tasks, read, peer, reading, subscribe);
                            }
                        }
                        self.remember_replicas(id, &replicas);
                        return replicas;
                    }
                    Ok(None) | Err(_) => {
                        tracing::debug!(?id, "replica lookup failed");
                        return Vec::new();
                    }
                },
                Some(done) = tasks.join_next() => {
                    self.fetched(core, reading, subscribe, read, done);
                }
            }
        }
    }

    /// Starts fetching every page of `reading`'s mailbox from `peer`.
    fn spawn_fetch(
        &self,
        tasks: &mut JoinSet<Fetched>,
        read: &mut DayRead,
        peer: PeerId,
        reading: &Reading,
        subscribe: bool,
    ) -> AbortHandle {
        read.asked.insert(peer);
        let (client, reading) = (self.client.clone(), reading.clone());
        tasks.spawn(async move {
            let (mut after, mut items, mut busy) = (0, Vec::new(), 0);
            for _ in 0..MAX_PAGES + MAX_BUSY {
                let answer = client
                    .fetch(
                        peer,
                        reading.descriptor,
                        &reading.key,
                        after,
                        FETCH_LIMIT,
                        subscribe,
                    )
                    .await;
                let (id, page, more) = match answer {
                    Ok((id, Answer::Items { items, more })) => (id, items, more),
                    // Over the replica's rate for us: wait as told
                    // (bounded), then ask again.
                    Ok((_, Answer::Busy { retry_after_ms })) if busy < MAX_BUSY => {
                        busy += 1;
                        let wait =
                            std::time::Duration::from_millis(retry_after_ms).min(MAX_BUSY_WAIT);
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    _ => return (peer, None),
                };
                after = page.last().map_or(after, |i| i.seq);
                items.extend(page.into_iter().map(|i| i.envelope));
                if !more {
                    return (peer, Some((items, id)));
                }
            }
            (peer, None)
        })
    }

    /// A fetch ended: its new envelopes go to the engine.
    fn fetched<S: Store>(
        &self,
        core: &CoreHandle<ImCore<S>>,
        reading: &Reading,
        subscribe: bool,
        read: &mut DayRead,
        done: Result<Fetched, JoinError>,
    ) {
        let (peer, items, last) = match done {
            Ok((peer, Some((items, last)))) => (peer, items, last),
            Ok((peer, None)) => {
                // A named node that failed is asked again if it answers
                // the lookup, or ends among the replicas.
                if read.unconfirmed.remove(&peer).is_some() {
                    read.asked.remove(&peer);
                }
                return;
            }
            Err(_) => return,
        };
        read.answered.insert(peer);
        if subscribe {
            let mut subscriptions = lock(&self.subscriptions);
            if subscriptions.len() >= MAX_CACHED {
                subscriptions.clear();
            }
            subscriptions.insert(last, reading.clone());
        }
        let new: Vec<Bytes> = items
            .into_iter()
            .filter(|e| read.seen.insert(EnvelopeHash::of(e)))
            .collect();
        if new.is_empty() {
            return;
        }
        read.holders.push(peer);
        let taken = deliver(core, reading, new);
        if taken.is_empty() {
            return;
        }
        // Acked on the node that held them at once: the read may go on
        // for a while (the lookup settling, slower replicas), and a device
        // that stops meanwhile must not find them again.
        let (client, reading, hashes) = (self.client.clone(), reading.clone(), taken.clone());
        read.acks.spawn(async move {
            let _ = client
                .ack(peer, reading.descriptor, &reading.key, hashes)
                .await;
        });
        read.taken.extend(taken);
    }

    /// Asks every one of `peers` to delete `hashes` (failures are left to
    /// expiry and the next read: the engine drops copies).
    pub(super) async fn ack_all(
        &self,
        peers: &[PeerId],
        reading: &Reading,
        hashes: Vec<EnvelopeHash>,
    ) {
        if hashes.is_empty() {
            return;
        }
        let mut tasks = JoinSet::new();
        for &peer in peers {
            let (client, reading, hashes) = (self.client.clone(), reading.clone(), hashes.clone());
            tasks.spawn(async move {
                client
                    .ack(peer, reading.descriptor, &reading.key, hashes)
                    .await
            });
        }
        while tasks.join_next().await.is_some() {}
    }
}

/// What a progressive lookup reads for.
struct Lookup<'a, S: Store> {
    core: &'a CoreHandle<ImCore<S>>,
    control: &'a ServiceControl,
    reading: &'a Reading,
    subscribe: bool,
}

/// Hands `envelopes` to the engine as sent by the contact's device; returns
/// the hashes of those it committed (refused ones included: they would be
/// refused again).
pub(super) fn deliver<S: Store>(
    core: &CoreHandle<ImCore<S>>,
    reading: &Reading,
    envelopes: Vec<Bytes>,
) -> Vec<EnvelopeHash> {
    if envelopes.is_empty() {
        return Vec::new();
    }
    core.with(|c, now| {
        let mut taken = Vec::new();
        for envelope in envelopes {
            let result = c
                .engine
                .handle_envelope_from(now.instant, reading.device, &envelope);
            if c.run(result).is_some() {
                taken.push(EnvelopeHash::of(&envelope));
            }
        }
        tracing::debug!(contact = %reading.contact, taken = taken.len(), "mailbox envelopes read");
        taken
    })
}
