//! The heartbeat: new budget windows, expiries, mesh maintenance and lazy
//! gossip.
//!
//! ```text
//!  every heartbeat_interval:
//!    budgets reset, penalties decay, own messages waiting for a peer sent
//!    broken IWANT promises penalised
//!    seen ids, backoffs expire
//!    per topic:  mesh < mesh_n_low  → GRAFT random peers up to mesh_n
//!                mesh > mesh_n_high → PRUNE random peers down to mesh_n
//!                IHAVE(ids of the last history_gossip heartbeats)
//!                  → max(gossip_lazy, gossip_factor × others) random non-mesh peers
//!    message cache shifts one window; ids it dropped are forgotten as
//!      answered to IWANT
//! ```

use std::{collections::BTreeSet, time::Instant};

use bytes::Bytes;
use rand::seq::SliceRandom;
use shoal_identity::PeerId;

use crate::{
    Gossip, Topic,
    outbox::Entry,
    peer::{Misbehaviour, PeerState},
    protocol::{IHave, MAX_IDS_PER_FRAME},
};

impl Gossip {
    pub(crate) fn heartbeat(&mut self, now: Instant) {
        for state in self.peers.values_mut() {
            state.new_window(&self.send_limits);
        }
        self.send_backlogs();
        self.expire_promises(now);
        self.seen.expire(now);
        self.backoff.retain(|_, until| *until > now);
        let topics: Vec<Topic> = self.mesh.keys().cloned().collect();
        for topic in &topics {
            self.maintain_mesh(topic);
        }
        for topic in &topics {
            self.emit_gossip(topic);
        }
        self.mcache.shift();
        let mcache = &self.mcache;
        for state in self.peers.values_mut() {
            state.answered.retain(|id| mcache.contains(id));
        }
    }

    /// Penalises, once per heartbeat, each peer that did not deliver a
    /// message it advertised and we asked for.
    fn expire_promises(&mut self, now: Instant) {
        let mut broken = BTreeSet::new();
        self.iwant_pending.retain(|_, (peer, deadline)| {
            if *deadline > now {
                return true;
            }
            broken.insert(*peer);
            false
        });
        for peer in broken {
            self.penalise(peer, Misbehaviour::BrokenPromise);
        }
    }

    fn maintain_mesh(&mut self, topic: &Topic) {
        let len = self.mesh.get(topic).map_or(0, |m| m.len());
        let config = &self.config;
        let (low, target, high) = (config.mesh_n_low, config.mesh_n, config.mesh_n_high);
        if len < low {
            for peer in self.graft_candidates(topic, target - len) {
                self.graft(topic, peer);
            }
        } else if len > high {
            let Some(mesh) = self.mesh.get_mut(topic) else {
                return;
            };
            let mut members: Vec<PeerId> = mesh.iter().copied().collect();
            members.shuffle(&mut self.rng);
            let removed = members.split_off(target);
            for peer in &removed {
                mesh.remove(peer);
            }
            for peer in removed {
                self.send_prune(topic, peer);
            }
        }
    }

    /// Sends IHAVE with the recent ids of `topic` to random non-mesh peers.
    fn emit_gossip(&mut self, topic: &Topic) {
        let mut ids = self.mcache.gossip_ids(topic, self.config.history_gossip);
        if ids.is_empty() {
            return;
        }
        // Half the receiver's budget (heartbeats may be out of step), over
        // all topics.
        let budget = (self.config.max_ihave_ids_per_heartbeat / 2).max(1);
        let cap = (budget as usize).min(MAX_IDS_PER_FRAME);
        if ids.len() > cap {
            ids.shuffle(&mut self.rng);
            ids.truncate(cap);
        }
        let mesh = self.mesh.get(topic);
        let mut others: Vec<PeerId> = self
            .topic_peers(topic)
            .filter(|p| !mesh.is_some_and(|m| m.contains(*p)))
            .filter(|p| self.peers.get(*p).is_some_and(PeerState::in_good_standing))
            .copied()
            .collect();
        let share = others
            .len()
            .saturating_mul(self.config.gossip_factor_percent)
            / 100;
        let n = self.config.gossip_lazy.max(share);
        others.shuffle(&mut self.rng);
        others.truncate(n);
        for peer in others {
            let Some(state) = self.peers.get_mut(&peer) else {
                continue;
            };
            let room = budget.saturating_sub(state.ihave_sent) as usize;
            // Not the ones it has had from us through IWANT.
            let ids: Vec<Bytes> = ids
                .iter()
                .filter(|id| !state.answered.contains(id))
                .take(room)
                .map(|id| Bytes::copy_from_slice(&id.0))
                .collect();
            if ids.is_empty() {
                continue;
            }
            state.ihave_sent += ids.len() as u32;
            let ihave = IHave {
                topic: topic.as_str().to_owned(),
                ids,
            };
            self.outbox.push(peer, Entry::IHave(ihave));
        }
    }
}
