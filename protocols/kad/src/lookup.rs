//! The iterative lookup over disjoint paths (sans-IO).
//!
//! A [`Lookup`] looks for the `k` nodes closest to a target. Its starting
//! contacts (closest first) are dealt round-robin to `d` paths. Each path
//! runs the classic Kademlia iteration on its own candidate list, sorted by
//! distance to the target:
//!
//! - keep up to `alpha` requests in flight, always to the closest candidate
//!   not yet contacted among the path's `k` closest live ones (those not
//!   failed or skipped);
//! - a response marks its sender succeeded and adds the contacts it names
//!   (one hop deeper than the sender); a failure (timeout, error, dial
//!   failure) marks it failed, which brings the next candidate within reach;
//! - a request unanswered for a while (the core's stall timeout, after
//!   which the core sends it again) marks its node *slow*: it no longer
//!   holds a place among the `alpha` in flight, so a dead node holds a
//!   slot for one stall timeout, not the request timeout, but it still
//!   counts among the `k` closest that must answer (the first message may
//!   have been lost); unanswered for another stall timeout, it is
//!   *stalled*: no longer among those that must answer; if it answers after all,
//!   before the lookup ends, it counts as succeeded (with nobody else left
//!   to ask, the path waits for its stalled requests, unless the lookup
//!   already has `k` answers);
//! - the path is done when its `k` closest live candidates have all
//!   answered, or when nothing is in flight or stalled and nothing is left
//!   to ask.
//!
//! Contacts known to be alive (peers connected now) may be added as
//! *live seeds*: they start one more path of their own. After days away
//! the closest contacts of the table may all have left, and each costs the
//! stall timeout of a slot of its path; the live path is not held up by
//! them, since its first answer is one round trip away and names nodes
//! the answering peer knows now.
//!
//! Paths are disjoint as in S/Kademlia: every node is contacted by at most
//! one path, the first that chooses it; another path reaching it later
//! skips it (it neither counts for that path's `k` closest nor is asked
//! again). An adversary controlling some nodes must then sit on all `d`
//! paths to hide the target. The lookup ends when every path is done; the
//! result is the `k` closest nodes that answered on any path.
//!
//! Depth: a starting contact has depth 0; a contact first learned from a
//! response of a node at depth `h` has depth `h + 1` (the smallest such
//! depth if several responses name it).

use std::collections::BTreeMap;

use shoal_identity::PeerId;

use crate::{
    key::{Distance, Key},
    table::Contact,
};

/// Parameters of one lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LookupParams {
    /// Number of closest nodes wanted (and per path, the width of the set
    /// that must answer).
    pub k: usize,
    /// Requests in flight per path.
    pub alpha: usize,
    /// Disjoint paths.
    pub paths: usize,
}

/// Counters of one lookup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LookupStats {
    /// Requests sent.
    pub requests: u32,
    /// Responses received.
    pub responses: u32,
    /// Requests that failed (timeout, dial failure, bad answer).
    pub failures: u32,
    /// Largest depth of a node a request was sent to.
    pub max_depth: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    NotContacted,
    Waiting,
    /// Asked, unanswered past one stall timeout and asked again: no longer
    /// holds a place among the `alpha` in flight, but still among the `k`
    /// closest that must answer (the first message may just have been
    /// lost).
    Slow,
    /// Asked, unanswered past the stall timeout twice (still may answer).
    Stalled,
    Succeeded,
    Failed,
    /// Contacted by another path.
    Skipped,
}

#[derive(Debug, Clone)]
struct Candidate {
    contact: Contact,
    distance: Distance,
    depth: u32,
    state: State,
}

impl Candidate {
    fn live(&self) -> bool {
        !matches!(self.state, State::Failed | State::Skipped | State::Stalled)
    }
}

#[derive(Debug, Clone, Default)]
struct Path {
    /// Sorted by distance to the target, closest first.
    candidates: Vec<Candidate>,
    in_flight: usize,
    done: bool,
}

/// A request the lookup wants sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupRequest {
    /// The path asking.
    pub path: usize,
    /// The node to ask.
    pub contact: Contact,
}

/// One iterative lookup (see the module docs).
#[derive(Debug, Clone)]
pub struct Lookup {
    target: Key,
    local: PeerId,
    params: LookupParams,
    paths: Vec<Path>,
    /// The path that contacted each node.
    claimed: BTreeMap<PeerId, usize>,
    stats: LookupStats,
}

impl Lookup {
    /// A lookup of `target` by node `local`, starting from `seeds` (any
    /// order; `local` and duplicates are dropped).
    pub fn new(target: Key, local: PeerId, seeds: Vec<Contact>, params: LookupParams) -> Lookup {
        let params = LookupParams {
            k: params.k.max(1),
            alpha: params.alpha.max(1),
            paths: params.paths.max(1),
        };
        let mut seeds: Vec<(Distance, Contact)> = seeds
            .into_iter()
            .filter(|c| c.peer != local)
            .map(|c| (c.key.distance(&target), c))
            .collect();
        seeds.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.peer.cmp(&b.1.peer)));
        seeds.dedup_by(|a, b| a.1.peer == b.1.peer);
        let mut paths = vec![Path::default(); params.paths];
        for (i, (distance, contact)) in seeds.into_iter().enumerate() {
            paths[i % params.paths].candidates.push(Candidate {
                contact,
                distance,
                depth: 0,
                state: State::NotContacted,
            });
        }
        Lookup {
            target,
            local,
            params,
            paths,
            claimed: BTreeMap::new(),
            stats: LookupStats::default(),
        }
    }

    /// Adds `live` contacts (known alive, e.g. connected now) as the
    /// starting contacts of a path of their own (see the module docs).
    /// Call before the first [`Lookup::next_requests`]; a live contact
    /// that was among the seeds moves to the new path, `local` is dropped.
    pub fn add_live_seeds(&mut self, live: Vec<Contact>) {
        let path = self.paths.len();
        self.paths.push(Path::default());
        for contact in live {
            for p in &mut self.paths[..path] {
                p.candidates.retain(|c| c.contact.peer != contact.peer);
            }
            self.add_candidate(path, contact, 0);
        }
        if self.paths[path].candidates.is_empty() {
            self.paths.pop();
        }
    }

    /// The target key.
    pub fn target(&self) -> &Key {
        &self.target
    }

    /// The counters so far.
    pub fn stats(&self) -> LookupStats {
        self.stats
    }

    /// Most candidates a path remembers; farther uncontacted ones are
    /// forgotten.
    fn max_candidates(&self) -> usize {
        self.params.k * 4
    }

    /// The requests to send now (possibly none). Call after creating the
    /// lookup and after every response or failure.
    pub fn next_requests(&mut self) -> Vec<LookupRequest> {
        let mut out = Vec::new();
        let k = self.params.k;
        for p in 0..self.paths.len() {
            if self.paths[p].done {
                continue;
            }
            loop {
                let path = &self.paths[p];
                if path.in_flight >= self.params.alpha {
                    break;
                }
                // The first not-contacted candidate among the k closest
                // live ones, and whether the k closest all answered.
                let mut next = None;
                let mut all_answered = true;
                let mut considered = 0;
                for c in path.candidates.iter().filter(|c| c.live()).take(k) {
                    considered += 1;
                    if c.state != State::Succeeded {
                        all_answered = false;
                    }
                    if c.state == State::NotContacted && next.is_none() {
                        next = Some(c.contact.peer);
                    }
                }
                // (None considered: every candidate failed, stalled or
                // was skipped; decided below.)
                if all_answered && considered > 0 {
                    self.paths[p].done = true;
                    break;
                }
                let Some(peer) = next else {
                    // Nothing left to ask: wait for stalled requests too
                    // (slow is better than nothing), unless the lookup
                    // already holds the `k` answers it wants.
                    let stalled = path.candidates.iter().any(|c| c.state == State::Stalled);
                    let slow = path.candidates.iter().any(|c| c.state == State::Slow);
                    if path.in_flight == 0 && !slow && (!stalled || self.answered() >= k) {
                        self.paths[p].done = true;
                    }
                    break;
                };
                let Some(i) = self.paths[p]
                    .candidates
                    .iter()
                    .position(|c| c.contact.peer == peer)
                else {
                    break;
                };
                if self.claimed.get(&peer).is_some_and(|owner| *owner != p) {
                    self.paths[p].candidates[i].state = State::Skipped;
                    continue;
                }
                self.claimed.insert(peer, p);
                let path = &mut self.paths[p];
                let c = &mut path.candidates[i];
                c.state = State::Waiting;
                path.in_flight += 1;
                self.stats.requests += 1;
                self.stats.max_depth = self.stats.max_depth.max(c.depth);
                out.push(LookupRequest {
                    path: p,
                    contact: c.contact.clone(),
                });
            }
        }
        out
    }

    fn find(&mut self, path: usize, peer: &PeerId) -> Option<&mut Candidate> {
        self.paths.get_mut(path)?.candidates.iter_mut().find(|c| {
            c.contact.peer == *peer
                && matches!(c.state, State::Waiting | State::Slow | State::Stalled)
        })
    }

    /// `peer`, asked by `path`, answered with `closer` contacts. Returns
    /// the depth of `peer`, or `None` (and changes nothing) if no such
    /// request is outstanding.
    pub fn on_response(&mut self, path: usize, peer: &PeerId, closer: Vec<Contact>) -> Option<u32> {
        let c = self.find(path, peer)?;
        let responder_depth = c.depth;
        let was_waiting = c.state == State::Waiting;
        c.state = State::Succeeded;
        let depth = c.depth + 1;
        if was_waiting {
            self.paths[path].in_flight -= 1;
        }
        self.stats.responses += 1;
        for contact in closer {
            self.add_candidate(path, contact, depth);
        }
        let max = self.max_candidates();
        let list = &mut self.paths[path].candidates;
        if list.len() > max {
            // Forget the farthest not-contacted candidates beyond the cap.
            let mut excess = list.len() - max;
            let mut i = list.len();
            while excess > 0 && i > 0 {
                i -= 1;
                if list[i].state == State::NotContacted {
                    list.remove(i);
                    excess -= 1;
                }
            }
        }
        Some(responder_depth)
    }

    fn add_candidate(&mut self, path: usize, contact: Contact, depth: u32) {
        if contact.peer == self.local {
            return;
        }
        if self.claimed.get(&contact.peer).is_some_and(|p| *p != path) {
            return;
        }
        let distance = contact.key.distance(&self.target);
        let list = &mut self.paths[path].candidates;
        let at = list.partition_point(|c| (c.distance, c.contact.peer) < (distance, contact.peer));
        if let Some(existing) = list.get_mut(at).filter(|c| c.contact.peer == contact.peer) {
            if existing.state == State::NotContacted {
                existing.depth = existing.depth.min(depth);
            }
            return;
        }
        list.insert(
            at,
            Candidate {
                contact,
                distance,
                depth,
                state: State::NotContacted,
            },
        );
    }

    /// The request of `path` to `peer` failed. Returns `false` if no such
    /// request is outstanding.
    pub fn on_failure(&mut self, path: usize, peer: &PeerId) -> bool {
        let Some(c) = self.find(path, peer) else {
            return false;
        };
        let was_waiting = c.state == State::Waiting;
        c.state = State::Failed;
        if was_waiting {
            self.paths[path].in_flight -= 1;
        }
        self.stats.failures += 1;
        true
    }

    /// The request of `path` to `peer` is unanswered past the stall
    /// timeout and was sent again: it stops holding a place among the
    /// `alpha` in flight, so the path asks the next candidate, but still
    /// counts among the `k` closest that must answer. Returns `false` if no
    /// such request waits.
    pub fn on_slow(&mut self, path: usize, peer: &PeerId) -> bool {
        let Some(c) = self.find(path, peer) else {
            return false;
        };
        if c.state != State::Waiting {
            return false;
        }
        c.state = State::Slow;
        self.paths[path].in_flight -= 1;
        true
    }

    /// The request of `path` to `peer` is unanswered past the stall
    /// timeout (again, if it was [slow](Lookup::on_slow)): the path stops
    /// waiting for it (see the module docs). Returns `false` if no such
    /// request waits (answered, failed, or stalled already).
    pub fn on_stalled(&mut self, path: usize, peer: &PeerId) -> bool {
        let Some(c) = self.find(path, peer) else {
            return false;
        };
        let was_waiting = match c.state {
            State::Waiting => true,
            State::Slow => false,
            _ => return false,
        };
        c.state = State::Stalled;
        if was_waiting {
            self.paths[path].in_flight -= 1;
        }
        true
    }

    /// Nodes that answered, on any path.
    fn answered(&self) -> usize {
        self.paths
            .iter()
            .flat_map(|p| &p.candidates)
            .filter(|c| c.state == State::Succeeded)
            .count()
    }

    /// Whether every path is done. Only meaningful after
    /// [`Lookup::next_requests`], which decides termination.
    pub fn is_finished(&self) -> bool {
        self.paths.iter().all(|p| p.done)
    }

    /// Stops every path now (for example when the query's own deadline
    /// passes or it found what it wanted).
    pub fn finish(&mut self) {
        for p in &mut self.paths {
            p.done = true;
        }
    }

    /// The `k` closest nodes that answered, on any path, closest first,
    /// each with its depth.
    pub fn closest(&self) -> Vec<(Contact, u32)> {
        let mut all: Vec<&Candidate> = self
            .paths
            .iter()
            .flat_map(|p| p.candidates.iter())
            .filter(|c| c.state == State::Succeeded)
            .collect();
        all.sort_by_key(|c| (c.distance, c.contact.peer));
        all.truncate(self.params.k);
        all.into_iter()
            .map(|c| (c.contact.clone(), c.depth))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contact(i: u32) -> Contact {
        let mut b = [0u8; 32];
        b[..4].copy_from_slice(&i.to_be_bytes());
        Contact::new(PeerId::from_bytes(b), vec![])
    }

    fn params(k: usize, alpha: usize, paths: usize) -> LookupParams {
        LookupParams { k, alpha, paths }
    }

    #[test]
    fn single_path_terminates_when_k_closest_answered() {
        let target = Key::from_bytes([0; 32]);
        let local = PeerId::from_bytes([0xee; 32]);
        let seeds: Vec<Contact> = (0..5).map(contact).collect();
        let mut l = Lookup::new(target, local, seeds.clone(), params(3, 2, 1));
        let reqs = l.next_requests();
        assert_eq!(reqs.len(), 2);
        // Every answer names nothing new: after the 3 closest answer, done.
        let mut asked = reqs;
        let mut answered = 0;
        while let Some(r) = asked.pop() {
            assert!(l.on_response(r.path, &r.contact.peer, vec![]).is_some());
            answered += 1;
            asked.extend(l.next_requests());
        }
        assert!(l.is_finished());
        assert_eq!(answered, 3);
        let mut sorted: Vec<_> = seeds
            .iter()
            .map(|c| (c.key.distance(&target), c.peer))
            .collect();
        sorted.sort();
        let got: Vec<_> = l.closest().iter().map(|(c, _)| c.peer).collect();
        assert_eq!(got, sorted[..3].iter().map(|x| x.1).collect::<Vec<_>>());
        assert_eq!(l.stats().requests, 3);
    }

    #[test]
    fn failures_bring_in_the_next_candidate_and_depth_grows() {
        let target = Key::from_bytes([0; 32]);
        let local = PeerId::from_bytes([0xee; 32]);
        let mut l = Lookup::new(target, local, vec![contact(1)], params(2, 1, 1));
        let r = l.next_requests();
        assert_eq!(r.len(), 1);
        // The seed answers with two contacts (depth 1) and the local node.
        let local_contact = Contact::new(local, vec![]);
        let closer = vec![contact(2), contact(3), local_contact];
        assert_eq!(l.on_response(0, &r[0].contact.peer, closer), Some(0));
        let r = l.next_requests();
        assert_eq!(r.len(), 1);
        let first = r[0].contact.peer;
        assert!(l.on_failure(0, &first));
        assert!(!l.on_failure(0, &first));
        let r = l.next_requests();
        assert_eq!(r.len(), 1);
        assert_ne!(r[0].contact.peer, first);
        assert_eq!(l.on_response(0, &r[0].contact.peer, vec![]), Some(1));
        assert!(l.next_requests().is_empty());
        assert!(l.is_finished());
        let got = l.closest();
        assert_eq!(got.len(), 2);
        assert!(got.iter().any(|(_, d)| *d == 1));
        assert_eq!(l.stats().max_depth, 1);
        assert_eq!(l.stats().failures, 1);
    }

    #[test]
    fn paths_never_share_a_node() {
        let target = Key::from_bytes([0; 32]);
        let local = PeerId::from_bytes([0xee; 32]);
        let seeds: Vec<Contact> = (0..6).map(contact).collect();
        let mut l = Lookup::new(target, local, seeds, params(4, 3, 3));
        let mut asked: BTreeMap<PeerId, usize> = BTreeMap::new();
        let mut queue = l.next_requests();
        let everyone: Vec<Contact> = (0..30).map(contact).collect();
        while let Some(r) = queue.pop() {
            // No node is asked twice, by the same or another path.
            assert!(asked.insert(r.contact.peer, r.path).is_none());
            // Every node answers with everyone: paths keep bumping into
            // each other's nodes.
            l.on_response(r.path, &r.contact.peer, everyone.clone());
            queue.extend(l.next_requests());
        }
        assert!(l.is_finished());
        let paths: std::collections::BTreeSet<_> = asked.values().collect();
        assert_eq!(paths.len(), 3);
        assert_eq!(l.closest().len(), 4);
    }
    #[test]
    fn a_stalled_request_stops_holding_the_path_but_may_still_answer() {
        let target = Key::from_bytes([0; 32]);
        let local = PeerId::from_bytes([0xee; 32]);
        let seeds: Vec<Contact> = (0..3).map(contact).collect();
        let mut l = Lookup::new(target, local, seeds, params(2, 1, 1));
        let first = l.next_requests();
        assert_eq!(first.len(), 1);
        let slow = first[0].contact.peer;
        // It stalls: the next candidate is asked without waiting.
        assert!(l.on_stalled(0, &slow));
        assert!(!l.on_stalled(0, &slow));
        let second = l.next_requests();
        assert_eq!(second.len(), 1);
        assert_ne!(second[0].contact.peer, slow);
        l.on_response(0, &second[0].contact.peer, vec![]);
        let third = l.next_requests();
        assert_eq!(third.len(), 1);
        l.on_response(0, &third[0].contact.peer, vec![]);
        // The two closest live ones answered: done without the slow one.
        assert!(l.next_requests().is_empty());
        assert!(l.is_finished());
        assert_eq!(l.closest().len(), 2);

        // With nobody else to ask, a path waits for its stalled request,
        // and a late answer counts.
        let mut l = Lookup::new(target, local, vec![contact(1)], params(2, 1, 1));
        let r = l.next_requests();
        assert!(l.on_stalled(0, &r[0].contact.peer));
        assert!(l.next_requests().is_empty());
        assert!(!l.is_finished());
        assert_eq!(l.on_response(0, &r[0].contact.peer, vec![]), Some(0));
        assert!(l.next_requests().is_empty());
        assert!(l.is_finished());
        assert_eq!(l.closest().len(), 1);
    }

    #[test]
    fn a_slow_request_frees_its_slot_but_is_still_waited_for() {
        let target = Key::from_bytes([0; 32]);
        let local = PeerId::from_bytes([0xee; 32]);
        let seeds: Vec<Contact> = (0..2).map(contact).collect();
        let mut l = Lookup::new(target, local, seeds, params(2, 1, 1));
        let first = l.next_requests();
        let slow = first[0].contact.peer;
        // Unanswered once: the next candidate is asked meanwhile ...
        assert!(l.on_slow(0, &slow));
        assert!(!l.on_slow(0, &slow));
        let second = l.next_requests();
        assert_eq!(second.len(), 1);
        l.on_response(0, &second[0].contact.peer, vec![]);
        // ... but the lookup waits for the slow one (its message may
        // just have been lost) ...
        assert!(l.next_requests().is_empty());
        assert!(!l.is_finished());
        // ... whose late answer counts.
        assert_eq!(l.on_response(0, &slow, vec![]), Some(0));
        assert!(l.next_requests().is_empty());
        assert!(l.is_finished());
        assert_eq!(l.closest().len(), 2);

        // Unanswered twice, it is stalled and no longer waited for once
        // the lookup has its k answers.
        let mut l = Lookup::new(
            target,
            local,
            (0..3).map(contact).collect(),
            params(2, 1, 1),
        );
        let first = l.next_requests();
        let slow = first[0].contact.peer;
        assert!(l.on_slow(0, &slow));
        for r in l.next_requests() {
            l.on_response(0, &r.contact.peer, vec![]);
        }
        assert!(l.on_stalled(0, &slow));
        for r in l.next_requests() {
            l.on_response(0, &r.contact.peer, vec![]);
        }
        assert!(l.next_requests().is_empty());
        assert!(l.is_finished());
        assert!(l.closest().iter().all(|(c, _)| c.peer != slow));
    }

    #[test]
    fn live_seeds_start_a_path_of_their_own() {
        let target = Key::from_bytes([0; 32]);
        let local = PeerId::from_bytes([0xee; 32]);
        let mut l = Lookup::new(
            target,
            local,
            (0..4).map(contact).collect(),
            params(3, 1, 2),
        );
        // One live seed is new and far; one was a table seed already.
        l.add_live_seeds(vec![contact(900), contact(1), Contact::new(local, vec![])]);
        let asked: Vec<(usize, PeerId)> = l
            .next_requests()
            .into_iter()
            .map(|r| (r.path, r.contact.peer))
            .collect();
        // Two table paths ask their closest; the live path asks its own
        // (the table seed that is live moved to it).
        assert_eq!(asked.len(), 3);
        let live = [contact(900).peer, contact(1).peer];
        for (path, peer) in &asked {
            assert_eq!(*path == 2, live.contains(peer), "{path} {peer}");
        }
    }
}
