//! Commands and the driving of their queries: lookup steps, record
//! collection, STOREs, and the final event.

use std::time::Instant;

use shoal_identity::PeerId;
use shoal_transport::Multiaddr;

use crate::{
    core::{Error, Kademlia, PendingKind},
    key::Key,
    lookup::{Lookup, LookupParams},
    protocol::Body,
    query::{Event, Kind, Query, QueryId, QueryResult, QueryStats},
    record::SignedRecord,
    table::Contact,
};

impl Kademlia {
    /// Joins the network: adds the `seeds` (peer and addresses) to the
    /// routing table and looks up our own key through them and the table.
    /// When it ends, a refresh of the buckets farther out starts.
    pub fn bootstrap(
        &mut self,
        now: Instant,
        seeds: &[(PeerId, Vec<Multiaddr>)],
    ) -> Result<QueryId, Error> {
        let contacts: Vec<Contact> = seeds
            .iter()
            .filter(|(p, _)| *p != self.local)
            .map(|(p, a)| Contact::new(*p, a.clone()))
            .collect();
        for c in &contacts {
            self.add_address(now, c.peer, c.addrs.clone());
        }
        let key = self.local_key;
        let paths = self.config.disjoint_paths;
        self.start_query(now, Kind::Bootstrap, key, paths, contacts)
    }

    /// Looks up the `k` nodes closest to `key`.
    pub fn find_node(&mut self, now: Instant, key: Key) -> Result<QueryId, Error> {
        let paths = self.config.disjoint_paths;
        let kind = Kind::FindNode { progress: false };
        self.start_query(now, kind, key, paths, Vec::new())
    }

    /// Like [`find_node`](Kademlia::find_node), and reports every node
    /// that answers as it answers ([`Event::LookupResponded`]), so the
    /// caller can start talking to the nodes near `key` before the lookup
    /// ends: the last few of the `k` closest are often the slowest to
    /// settle (a node that left costs the stall timeout), while the first
    /// nodes near the key answer within a few round trips. A node that
    /// answered is alive but not necessarily among the final `k` closest;
    /// the [`Event::QueryFinished`] result is authoritative.
    pub fn find_node_progress(&mut self, now: Instant, key: Key) -> Result<QueryId, Error> {
        let paths = self.config.disjoint_paths;
        let kind = Kind::FindNode { progress: true };
        self.start_query(now, kind, key, paths, Vec::new())
    }

    /// Looks up the record at `key`. The lookup runs to the end, like
    /// [`find_node`](Kademlia::find_node), since any node may answer with
    /// a validly signed record that is not the right one: an older copy
    /// replayed, or a record of another publisher for the key. The key
    /// belongs to the publisher whose records most of the `k` closest
    /// nodes that answered returned (our own copy counts as one of them;
    /// on a tie, the closest node decides); the result is that
    /// publisher's newest record found. So a forger must be the majority
    /// of the key's closest nodes, not just on the lookup's way.
    pub fn get_record(&mut self, now: Instant, unix_secs: u64, key: Key) -> Result<QueryId, Error> {
        self.unix = unix_secs;
        let local = self.store.get(&key, unix_secs).cloned();
        let kind = Kind::GetRecord {
            found: Vec::new(),
            local,
        };
        let paths = self.config.disjoint_paths;
        self.start_query(now, kind, key, paths, Vec::new())
    }

    /// Publishes `record`: checks it against the local policy, keeps a copy,
    /// looks up the `k` nodes closest to its key and sends each a STORE. A
    /// record of our own is also republished every
    /// [`Config::republish_interval`](crate::Config::republish_interval)
    /// while it lives.
    pub fn put_record(
        &mut self,
        now: Instant,
        unix_secs: u64,
        record: SignedRecord,
    ) -> Result<QueryId, Error> {
        self.unix = unix_secs;
        self.start_timers(now);
        if record.encoded_len() > self.config.max_record_size {
            return Err(Error::Record(crate::RecordError::TooLarge(
                record.encoded_len(),
            )));
        }
        self.policy.check(&record, unix_secs)?;
        if self.queries.len() >= self.config.max_queries {
            return Err(Error::TooManyQueries);
        }
        let key = record.record().key;
        if record.record().publisher == self.local {
            if !self.published.contains_key(&key)
                && self.published.len() >= self.config.max_records_per_publisher
            {
                return Err(Error::TooManyPublished);
            }
            self.published.insert(key, record.clone());
        }
        let _ = self.store.put(record.clone(), unix_secs);
        self.start_put(now, record, false)
    }

    /// Starts the publication of `record` (a command, or a republication).
    pub(crate) fn start_put(
        &mut self,
        now: Instant,
        record: SignedRecord,
        internal: bool,
    ) -> Result<QueryId, Error> {
        let key = record.record().key;
        let kind = Kind::PutRecord {
            record,
            storing: false,
            outstanding: 0,
            stored: 0,
            failed: 0,
            internal,
        };
        let paths = self.config.disjoint_paths;
        self.start_query(now, kind, key, paths, Vec::new())
    }

    /// Creates a query looking up `target` from the table's closest
    /// contacts plus `extra` seeds, and sends its first requests.
    pub(crate) fn start_query(
        &mut self,
        now: Instant,
        kind: Kind,
        target: Key,
        paths: usize,
        extra: Vec<Contact>,
    ) -> Result<QueryId, Error> {
        self.start_timers(now);
        if self.queries.len() >= self.config.max_queries {
            return Err(Error::TooManyQueries);
        }
        let id = QueryId(self.next_query_id);
        self.next_query_id += 1;
        let mut seeds = self.closest_for_lookup(&target);
        seeds.extend(extra);
        let params = LookupParams {
            k: self.config.k,
            alpha: self.config.alpha,
            paths,
        };
        let mut lookup = Lookup::new(target, self.local, seeds, params);
        lookup.add_live_seeds(self.live_seeds(&target));
        let deadline = now + self.config.query_timeout;
        self.queries.insert(
            id,
            Query {
                kind,
                lookup,
                started: now,
                deadline,
                stats: QueryStats::default(),
            },
        );
        self.query_deadlines.insert((deadline, id));
        if let Some(bucket) = self.table.bucket_of(&target) {
            self.bucket_lookups.insert(bucket, now);
        }
        self.advance(now, id);
        Ok(id)
    }

    fn closest_for_lookup(&self, target: &Key) -> Vec<Contact> {
        self.table
            .closest(target, self.config.k, None)
            .into_iter()
            .cloned()
            .collect()
    }

    /// The `alpha` connected peers closest to `target`: known alive, every
    /// lookup asks them at once (see [`Kademlia::peer_connected`]).
    fn live_seeds(&self, target: &Key) -> Vec<Contact> {
        let mut connected: Vec<&Contact> = self.connected.values().collect();
        connected.sort_by_key(|c| (c.key.distance(target), c.peer));
        connected
            .into_iter()
            .take(self.config.alpha)
            .cloned()
            .collect()
    }

    /// Sends what the query's lookup wants sent; moves on when it is done.
    pub(crate) fn advance(&mut self, now: Instant, id: QueryId) {
        let Some(q) = self.queries.get_mut(&id) else {
            return;
        };
        if let Kind::PutRecord { storing: true, .. } = q.kind {
            return;
        }
        let requests = q.lookup.next_requests();
        let target = *q.lookup.target();
        let body = match q.kind {
            Kind::GetRecord { .. } => Body::FindValue(target),
            _ => Body::FindNode(target),
        };
        let finished = q.lookup.is_finished();
        for r in requests {
            let kind = PendingKind::Lookup {
                query: id,
                path: r.path,
            };
            self.send_request(now, &r.contact.peer, r.contact.addrs, body.clone(), kind);
        }
        if finished {
            self.lookup_done(now, id);
        }
    }

    /// A lookup answer from `from`, with an optional record.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn lookup_answer(
        &mut self,
        now: Instant,
        id: QueryId,
        path: usize,
        from: PeerId,
        from_addrs: &[Multiaddr],
        closer: Vec<Contact>,
        record: Option<SignedRecord>,
    ) {
        let Some(q) = self.queries.get_mut(&id) else {
            return;
        };
        let named = match q.kind {
            Kind::FindNode { progress: true } => {
                let local = self.local;
                closer.iter().filter(|c| c.peer != local).cloned().collect()
            }
            _ => Vec::new(),
        };
        let Some(depth) = q.lookup.on_response(path, &from, closer) else {
            return;
        };
        let target = *q.lookup.target();
        if let Kind::FindNode { progress: true } = q.kind {
            let contact = Contact::new(from, from_addrs.to_vec());
            self.emit(Event::LookupResponded { id, contact, named });
            return self.advance(now, id);
        }
        if let (Kind::GetRecord { found, .. }, Some(record)) = (&mut q.kind, record) {
            let fits = record.record().key == target
                && record.encoded_len() <= self.config.max_record_size;
            match self.policy.check(&record, self.unix) {
                Ok(()) if fits => {
                    if q.stats.record_depth.is_none() {
                        q.stats.record_depth = Some(depth);
                    }
                    found.push((Contact::new(from, from_addrs.to_vec()), record));
                }
                Ok(()) => tracing::debug!(%from, "record for another key ignored"),
                Err(e) => tracing::debug!(%from, error = %e, "invalid record ignored"),
            }
        }
        self.advance(now, id);
    }

    /// The lookup of query `id` is over: publish, or finish.
    fn lookup_done(&mut self, now: Instant, id: QueryId) {
        let Some(q) = self.queries.get_mut(&id) else {
            return;
        };
        let Kind::PutRecord {
            record,
            storing,
            outstanding,
            ..
        } = &mut q.kind
        else {
            self.finish(now, id);
            return;
        };
        *storing = true;
        let record = record.clone();
        let closest = q.lookup.closest();
        *outstanding = closest.len();
        q.stats.stores = closest.len() as u32;
        if closest.is_empty() {
            self.finish(now, id);
            return;
        }
        for (contact, _) in closest {
            let body = Body::Store(record.clone());
            let kind = PendingKind::Store { query: id };
            self.send_request(now, &contact.peer, contact.addrs, body, kind);
        }
    }

    /// A STORE of query `id` ended (`held`: the node holds the record).
    pub(crate) fn store_acked(&mut self, now: Instant, id: QueryId, held: bool) {
        let Some(q) = self.queries.get_mut(&id) else {
            return;
        };
        let Kind::PutRecord {
            outstanding,
            stored,
            failed,
            ..
        } = &mut q.kind
        else {
            return;
        };
        *outstanding = outstanding.saturating_sub(1);
        if held {
            *stored += 1;
        } else {
            *failed += 1;
        }
        if *outstanding == 0 {
            self.finish(now, id);
        }
    }

    /// The query's deadline passed: stop looking; a publication still
    /// sends its STOREs to the closest found so far.
    pub(crate) fn query_timed_out(&mut self, now: Instant, id: QueryId) {
        let Some(q) = self.queries.get_mut(&id) else {
            return;
        };
        q.stats.timed_out = true;
        q.lookup.finish();
        match q.kind {
            Kind::PutRecord { storing: true, .. } => self.finish(now, id),
            _ => self.lookup_done(now, id),
        }
    }

    /// Removes query `id` and reports its result.
    fn finish(&mut self, now: Instant, id: QueryId) {
        let Some(q) = self.queries.remove(&id) else {
            return;
        };
        self.query_deadlines.remove(&(q.deadline, id));
        let closest = q.lookup.closest();
        let ls = q.lookup.stats();
        let stats = QueryStats {
            requests: ls.requests,
            responses: ls.responses,
            failures: ls.failures,
            closest_depth: closest.first().map(|(_, d)| *d),
            max_depth: ls.max_depth,
            duration: now.saturating_duration_since(q.started),
            ..q.stats
        };
        let reports = q.reports();
        let closest: Vec<Contact> = closest.into_iter().map(|(c, _)| c).collect();
        let result = match q.kind {
            Kind::Bootstrap => {
                self.refresh_buckets(now);
                QueryResult::Bootstrap { closest }
            }
            Kind::FindNode { .. } | Kind::Refresh => QueryResult::FindNode { closest },
            Kind::GetRecord { found, local } => {
                let count = found.len();
                let best = choose_record(&found, local.as_ref(), &closest, self.unix).cloned();
                // Holders of an older copy of the same publisher get the
                // newest one.
                if let Some(best) = &best {
                    for (contact, r) in &found {
                        let same = r.record().publisher == best.record().publisher;
                        if same && best.is_newer_than(r) {
                            let body = Body::Store(best.clone());
                            self.send_unsolicited(contact.peer, contact.addrs.clone(), body);
                        }
                    }
                }
                QueryResult::GetRecord {
                    record: best,
                    found: count,
                }
            }
            Kind::PutRecord {
                record,
                stored,
                failed,
                outstanding,
                ..
            } => QueryResult::PutRecord {
                key: record.record().key,
                stored,
                failed: failed + outstanding,
            },
        };
        if reports {
            // Query results are never dropped: at most `max_queries` exist.
            self.events
                .push_back(Event::QueryFinished { id, result, stats });
        }
    }
}

/// The record a record lookup returns (see [`Kademlia::get_record`]):
/// `found` are the valid records with the node that returned each, `local`
/// our own copy, `closest` the `k` closest nodes that answered.
fn choose_record<'a>(
    found: &'a [(Contact, SignedRecord)],
    local: Option<&'a SignedRecord>,
    closest: &[Contact],
    unix: u64,
) -> Option<&'a SignedRecord> {
    let live: Vec<(Option<&Contact>, &SignedRecord)> = found
        .iter()
        .map(|(c, r)| (Some(c), r))
        .chain(local.map(|r| (None, r)))
        .filter(|(_, r)| !r.is_expired(unix))
        .collect();
    // Voters: the k closest nodes that returned a live record, closest
    // first, and ourselves; everyone who returned one if none of them did.
    let rank = |c: Option<&Contact>| match c {
        None => Some(0),
        Some(c) => closest.iter().position(|k| k.peer == c.peer).map(|i| i + 1),
    };
    let mut voters: Vec<(usize, &SignedRecord)> = live
        .iter()
        .filter_map(|(c, r)| rank(*c).map(|i| (i, *r)))
        .collect();
    if voters.is_empty() {
        voters = live.iter().enumerate().map(|(i, (_, r))| (i, *r)).collect();
    }
    voters.sort_by_key(|(i, _)| *i);
    // Votes per publisher, and the rank of its closest voter for ties.
    let mut votes: std::collections::BTreeMap<PeerId, (usize, usize)> = Default::default();
    for (i, r) in &voters {
        let v = votes.entry(r.record().publisher).or_insert((0, *i));
        v.0 += 1;
    }
    let owner = votes
        .iter()
        .max_by_key(|(_, (n, first))| (*n, std::cmp::Reverse(*first)))
        .map(|(p, _)| *p)?;
    live.iter()
        .map(|(_, r)| *r)
        .filter(|r| r.record().publisher == owner)
        .fold(None::<&SignedRecord>, |best, r| match best {
            Some(b) if !r.is_newer_than(b) => Some(b),
            _ => Some(r),
        })
}
