//! A node under a flood of valid messages from throwaway authors, each
//! connected peer sending under every per-peer budget: what still reaches
//! an honest mesh peer of the node.

use std::collections::BTreeSet;

use rand::{SeedableRng, seq::SliceRandom};
use rand_chacha::ChaCha8Rng;

use super::{
    adversarial::{Rig, messages, signed},
    *,
};
use crate::{
    MessageId, Published,
    protocol::{Graft, Rpc, decode_frame},
};

/// Rig peer 0: an honest mesh peer of the node.
const HONEST: usize = 0;
/// Rig peers 1 to 10: throwaway authors, each signing with its own key.
const SYBILS: std::ops::RangeInclusive<usize> = 1..=10;
/// Rig peer 11: an honest peer relaying the messages of an honest author.
const RELAY: usize = 11;
/// The honest author whose messages peer 11 relays (not connected).
const HONEST_AUTHOR: u64 = 500;
/// Messages each throwaway author sends per heartbeat: under the default
/// budget of 512, so none is ignored or penalised.
const FLOOD: u64 = 500;
/// Messages per flood frame.
const FLOOD_FRAME: u64 = 50;

/// One step of a flood heartbeat; the steps are shuffled.
enum Step {
    Sybil(usize),
    Own,
    Relayed,
}

struct Flood {
    rig: Rig,
    rng: ChaCha8Rng,
    seq: u64,
    /// Every message id the node sent to the honest peer.
    to_honest: BTreeSet<MessageId>,
    /// What each local publish returned.
    published: Vec<Published>,
}

impl Flood {
    /// The rig with the honest peer in the node's mesh.
    fn new(seed: u64) -> Flood {
        let mut rig = Rig::new(12, Config::default());
        let graft = Rpc {
            graft: vec![Graft { topic: "t".into() }],
            ..Rpc::default()
        };
        rig.send(HONEST, graft).unwrap();
        rig.heartbeat();
        rig.drain();
        let honest = rig.peers[HONEST];
        assert!(rig.g.mesh_peers(&rig.t).any(|p| *p == honest));
        Flood {
            rig,
            rng: ChaCha8Rng::seed_from_u64(seed),
            seq: 0,
            to_honest: BTreeSet::new(),
            published: Vec::new(),
        }
    }

    /// Drains the node's output, noting the messages sent to the honest
    /// peer.
    fn drain(&mut self) {
        let (transmits, _) = self.rig.drain();
        let honest = self.rig.peers[HONEST];
        for t in transmits.iter().filter(|t| t.peer == honest) {
            let rpc = decode_frame(t.frame.clone()).unwrap();
            let ids = rpc.messages.iter().map(|m| MessageId::of_body(&m.body));
            self.to_honest.extend(ids);
        }
    }

    /// One heartbeat's traffic, up to the next heartbeat: with `flood`,
    /// every throwaway author sends [`FLOOD`] messages, and `own` local
    /// publishes and `relayed` messages of the honest author (through
    /// peer 11) happen at random points among them. Returns the ids of
    /// both kinds.
    fn traffic(
        &mut self,
        flood: bool,
        own: usize,
        relayed: usize,
    ) -> (Vec<MessageId>, Vec<MessageId>) {
        let mut steps = Vec::new();
        for s in SYBILS.filter(|_| flood) {
            steps.extend((0..FLOOD / FLOOD_FRAME).map(|_| Step::Sybil(s)));
        }
        steps.extend((0..own).map(|_| Step::Own));
        steps.extend((0..relayed).map(|_| Step::Relayed));
        steps.shuffle(&mut self.rng);
        let (mut own_ids, mut relayed_ids) = (Vec::new(), Vec::new());
        for step in steps {
            match step {
                Step::Sybil(s) => {
                    let t = self.rig.t.clone();
                    let batch = (0..FLOOD_FRAME)
                        .map(|_| {
                            self.seq += 1;
                            signed(s as u64, self.seq, &t, b"flood").1
                        })
                        .collect();
                    self.rig.send(s, messages(batch)).unwrap();
                }
                Step::Own => {
                    let now = self.rig.now;
                    let t = self.rig.t.clone();
                    let published = self.rig.g.publish(now, t, &b"own"[..]).unwrap();
                    own_ids.push(published.id);
                    self.published.push(published);
                }
                Step::Relayed => {
                    self.seq += 1;
                    let (id, m) = signed(HONEST_AUTHOR, self.seq, &self.rig.t, b"honest");
                    self.rig.send(RELAY, messages(vec![m])).unwrap();
                    relayed_ids.push(id);
                }
            }
            self.drain();
        }
        (own_ids, relayed_ids)
    }

    /// The node's heartbeat.
    fn tick(&mut self) {
        self.rig.heartbeat();
        self.drain();
    }

    /// How many of `ids` the honest peer was sent.
    fn reached(&self, ids: &[MessageId]) -> usize {
        ids.iter().filter(|id| self.to_honest.contains(id)).count()
    }

    /// No peer was penalised: every one stayed under every budget.
    fn assert_no_penalties(&self) {
        for p in &self.rig.peers {
            assert_eq!(self.rig.g.penalty(p), Some(0));
        }
    }
}

/// The attack measured on a live node: ten throwaway authors used up the
/// node's sends to an honest mesh peer, and only 4 of 32 of the node's own
/// messages reached it, never repaired, while `publish` succeeded. All 32
/// must reach it: those of the first flood heartbeat (when the node had
/// not been publishing) at its end, the others in the heartbeat they are
/// published. And `publish` says which.
#[test]
fn own_messages_reach_an_honest_mesh_peer_through_a_flood_of_throwaway_authors() {
    let mut f = Flood::new(1);
    let mut own = Vec::new();
    let mut at_once = Vec::new();
    for beat in 0..8 {
        let (ids, _) = f.traffic(true, 4, 0);
        at_once.push(f.reached(&ids));
        if beat > 0 {
            assert_eq!(f.reached(&ids), ids.len(), "heartbeat {beat}");
        }
        own.extend(ids);
        f.tick();
    }
    let reached = f.reached(&own);
    let queued: usize = f.published.iter().map(|p| p.queued).sum();
    eprintln!(
        "own messages at the honest mesh peer: {reached} of {}; in their heartbeat, per \
         heartbeat: {at_once:?}; publish reported {queued} waiting",
        own.len(),
    );
    f.assert_no_penalties();
    assert_eq!(reached, own.len());
    // Every publish went to all 12 topic peers, at once or from their
    // backlogs (the sybils' sends fill up too, when they are in the mesh).
    for p in &f.published {
        assert_eq!((p.sent + p.queued, p.missed), (12, 0), "{p:?}");
    }
    assert!(queued >= 4 - at_once[0]);
}

/// An honest author's messages relayed through the node are not starved by
/// the flood either: the relay was relayed for in the heartbeat before, so
/// it gets a fair share of what the node sends each peer, and all of them
/// get through at once.
#[test]
fn relayed_messages_of_an_honest_author_get_a_fair_share_through_the_flood() {
    let mut f = Flood::new(2);
    // The relay was active before the flood began.
    let (_, warm) = f.traffic(false, 0, 2);
    f.tick();
    let mut relayed = Vec::new();
    for _ in 0..8 {
        relayed.extend(f.traffic(true, 0, 4).1);
        f.tick();
    }
    let reached = f.reached(&relayed);
    eprintln!(
        "relayed messages of an honest author at the honest mesh peer: {reached} of {}",
        relayed.len()
    );
    assert_eq!(f.reached(&warm), warm.len());
    f.assert_no_penalties();
    assert_eq!(reached, relayed.len());
}

/// A burst of own messages larger than what the flood leaves room for:
/// those the honest mesh peer had no room for wait in its backlog, and
/// reach it first thing at the next heartbeat.
#[test]
fn own_messages_a_mesh_peer_had_no_room_for_reach_it_at_the_next_heartbeat() {
    let mut f = Flood::new(3);
    let (own, _) = f.traffic(true, 200, 0);
    let during = f.reached(&own);
    f.tick();
    let next = f.reached(&own);
    f.traffic(true, 0, 0);
    f.tick();
    let queued: usize = f.published.iter().map(|p| p.queued).sum();
    eprintln!(
        "a burst of {} own messages at the honest mesh peer: {during} in its heartbeat, \
         {next} after the next heartbeat; publish reported {queued} waiting",
        own.len(),
    );
    f.assert_no_penalties();
    assert!(during < own.len(), "the burst did not fill the budget");
    assert!(queued >= own.len() - during);
    assert_eq!(next, own.len());
}
