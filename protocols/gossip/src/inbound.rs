//! Handling one received frame: subscriptions, then messages, then IHAVE,
//! IWANT, GRAFT and PRUNE, each checked against the sender's budgets.

use std::time::{Duration, Instant};

use bytes::Bytes;
use shoal_identity::PeerId;

use crate::{
    Error, Event, Gossip, MessageId, Topic,
    config::MAX_PRUNE_BACKOFF,
    message,
    outbox::Entry,
    peer::Misbehaviour,
    protocol::{self, Graft, IHave, IWant, Prune, SignedMessage, Subscription},
    send::OwnSend,
};

impl Gossip {
    /// Decodes and handles a frame of a connected peer.
    pub(crate) fn handle_frame(
        &mut self,
        now: Instant,
        from: PeerId,
        bytes: &[u8],
    ) -> Result<(), Error> {
        let rpc = match protocol::decode_frame(Bytes::copy_from_slice(bytes)) {
            Ok(rpc) => rpc,
            Err(e) => {
                tracing::debug!(peer = %from, error = %e, "malformed gossip frame");
                self.penalise(from, Misbehaviour::MalformedFrame);
                return Err(e.into());
            }
        };
        // Each step stops if the peer was dropped by the one before.
        let steps_ok = self.handle_subscriptions(from, rpc.subscriptions)
            && self.handle_messages(now, from, rpc.messages)
            && self.handle_ihave(now, from, rpc.ihave)
            && self.handle_iwant(from, rpc.iwant);
        if steps_ok {
            self.handle_graft(from, rpc.graft);
            self.handle_prune(now, from, rpc.prune);
        }
        Ok(())
    }

    /// `false` if the peer was dropped.
    fn handle_subscriptions(&mut self, from: PeerId, subs: Vec<Subscription>) -> bool {
        let max_topics = self.config.max_peer_topics;
        let mut over = false;
        for sub in subs {
            let Ok(topic) = Topic::new(&sub.topic) else {
                continue; // decode_frame already rejects these
            };
            let Some(state) = self.peers.get_mut(&from) else {
                return false;
            };
            if sub.subscribe {
                if state.topics.contains(&topic) {
                    continue;
                }
                if state.topics.len() >= max_topics {
                    over = true;
                    continue;
                }
                state.topics.insert(topic.clone());
                self.topic_peers
                    .entry(topic.clone())
                    .or_default()
                    .insert(from);
                self.events
                    .push_back(Event::Subscribed { peer: from, topic });
            } else if state.topics.remove(&topic) {
                if let Some(set) = self.topic_peers.get_mut(&topic) {
                    set.remove(&from);
                    if set.is_empty() {
                        self.topic_peers.remove(&topic);
                    }
                }
                if let Some(mesh) = self.mesh.get_mut(&topic) {
                    mesh.remove(&from);
                }
                self.events
                    .push_back(Event::Unsubscribed { peer: from, topic });
            }
        }
        !(over && self.penalise(from, Misbehaviour::OverLimit))
    }

    /// Checks, delivers and forwards full messages. `false` if the peer was
    /// dropped.
    fn handle_messages(
        &mut self,
        now: Instant,
        from: PeerId,
        messages: Vec<SignedMessage>,
    ) -> bool {
        let max = self.config.max_messages_per_heartbeat;
        let mut over = false;
        for signed in messages {
            let Some(state) = self.peers.get_mut(&from) else {
                return false;
            };
            if state.messages >= max {
                over = true;
                break;
            }
            state.messages += 1;
            self.stats.received += 1;
            let id = MessageId::of_body(&signed.body);
            if self.seen.contains(&id) {
                self.stats.duplicates += 1;
                continue;
            }
            let verified = match message::verify(id, &signed, self.config.max_payload_size) {
                Ok(verified) => verified,
                Err(e) => {
                    tracing::debug!(peer = %from, error = %e, "invalid gossip message");
                    self.stats.invalid += 1;
                    // Not marked seen: a valid copy may still come.
                    if self.penalise(from, Misbehaviour::InvalidMessage) {
                        return false;
                    }
                    continue;
                }
            };
            self.seen.insert(id, now + self.config.seen_ttl);
            self.iwant_pending.remove(&id);
            let Some(mesh) = self.mesh.get(&verified.topic) else {
                continue; // not our topic: neither delivered nor forwarded
            };
            let targets: Vec<PeerId> = mesh
                .iter()
                .filter(|&&p| p != from && p != verified.author)
                .copied()
                .collect();
            for peer in targets {
                let _ = self.send_relayed(peer, from, signed.clone());
            }
            self.mcache
                .put(id, verified.topic.clone(), verified.author, signed);
            self.stats.delivered += 1;
            self.events.push_back(Event::Message {
                id,
                topic: verified.topic,
                author: verified.author,
                seq: verified.seq,
                payload: verified.payload,
                propagation_source: from,
            });
        }
        !(over && self.penalise(from, Misbehaviour::OverLimit))
    }

    /// Asks for advertised messages we have not seen. `false` if the peer
    /// was dropped.
    fn handle_ihave(&mut self, now: Instant, from: PeerId, ihaves: Vec<IHave>) -> bool {
        let max_ids = self.config.max_ihave_ids_per_heartbeat;
        // Ask for at most half of what the peer answers per heartbeat, so
        // heartbeats out of step never push us over its budget.
        let max_asks = self.config.max_iwant_answers_per_heartbeat / 2;
        let deadline = now + self.config.iwant_timeout;
        let Some(state) = self.peers.get_mut(&from) else {
            return false;
        };
        let listen = state.in_good_standing();
        let mut over = false;
        let mut want = Vec::new();
        'entries: for ihave in ihaves {
            let ours = Topic::new(&ihave.topic).is_ok_and(|t| self.mesh.contains_key(&t));
            for id in ihave.ids {
                if state.ihave_ids >= max_ids {
                    over = true;
                    break 'entries;
                }
                state.ihave_ids += 1;
                let Some(id) = MessageId::from_slice(&id) else {
                    continue; // decode_frame already rejects these
                };
                if !listen
                    || !ours
                    || state.iwant_sent >= max_asks
                    || self.seen.contains(&id)
                    || self.iwant_pending.contains_key(&id)
                    || self.iwant_pending.len() >= self.config.max_iwant_pending
                {
                    continue;
                }
                state.iwant_sent += 1;
                self.iwant_pending.insert(id, (from, deadline));
                want.push(Bytes::copy_from_slice(&id.0));
            }
        }
        if !want.is_empty() {
            self.stats.iwant_requested += want.len() as u64;
            self.outbox.push(from, Entry::IWant(IWant { ids: want }));
        }
        !(over && self.penalise(from, Misbehaviour::OverLimit))
    }

    /// Answers IWANT from the message cache, each message at most once per
    /// peer while it is cached: an honest peer never needs a second copy,
    /// so asking again draws nothing. `false` if the peer was dropped.
    fn handle_iwant(&mut self, from: PeerId, iwants: Vec<IWant>) -> bool {
        let max = self.config.max_iwant_answers_per_heartbeat;
        let mut over = false;
        let mut answers = Vec::new();
        let Some(state) = self.peers.get_mut(&from) else {
            return false;
        };
        'entries: for iwant in iwants {
            for id in iwant.ids {
                if state.iwant_answered >= max {
                    over = true;
                    break 'entries;
                }
                state.iwant_answered += 1;
                let Some(id) = MessageId::from_slice(&id) else {
                    continue; // decode_frame already rejects these
                };
                let Some(cached) = self.mcache.get(&id) else {
                    continue;
                };
                if !state.answered.insert(id) {
                    self.stats.iwant_repeats += 1;
                    continue;
                }
                answers.push((id, cached.author, cached.message.clone()));
            }
        }
        for (id, author, message) in answers {
            let sent = if author == self.local {
                self.send_own(from, message) != OwnSend::Refused
            } else {
                // Relayed on the asker's own behalf: its fair share.
                self.send_relayed(from, from, message)
            };
            if !sent && let Some(state) = self.peers.get_mut(&from) {
                // Not answered after all: it may ask again.
                state.answered.remove(&id);
            }
        }
        !(over && self.penalise(from, Misbehaviour::OverLimit))
    }

    /// Takes the peer into our meshes, or refuses with PRUNE.
    fn handle_graft(&mut self, from: PeerId, grafts: Vec<Graft>) {
        for graft in grafts {
            let Ok(topic) = Topic::new(&graft.topic) else {
                continue;
            };
            let Some(state) = self.peers.get(&from) else {
                return;
            };
            let acceptable = state.in_good_standing()
                && state.topics.contains(&topic)
                && !self.in_backoff(&topic, &from, self.now);
            let Some(mesh) = self.mesh.get_mut(&topic) else {
                // Not our topic: refuse without backoff.
                let prune = Prune {
                    topic: graft.topic,
                    backoff_secs: 0,
                };
                self.outbox.push(from, Entry::Prune(prune));
                continue;
            };
            if mesh.contains(&from) {
                continue;
            }
            if acceptable && mesh.len() < self.config.mesh_n_high {
                mesh.insert(from);
            } else {
                self.send_prune(&topic, from);
            }
        }
    }

    /// Leaves the peer's mesh and backs off as it asks (within bounds).
    fn handle_prune(&mut self, now: Instant, from: PeerId, prunes: Vec<Prune>) {
        for prune in prunes {
            let Ok(topic) = Topic::new(&prune.topic) else {
                continue;
            };
            // Backoffs only for our topics, so a peer cannot grow the map.
            let Some(mesh) = self.mesh.get_mut(&topic) else {
                continue;
            };
            mesh.remove(&from);
            let asked = Duration::from_secs(prune.backoff_secs).min(MAX_PRUNE_BACKOFF);
            let until = now + asked;
            let entry = self.backoff.entry((topic, from)).or_insert(until);
            *entry = (*entry).max(until);
        }
    }
}
