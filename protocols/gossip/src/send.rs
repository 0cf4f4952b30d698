//! What we send one peer per heartbeat: full messages within half its
//! budget, our own messages first, a fair share for each peer we relay
//! for, and a backlog of our own messages that found no room.
//!
//! ```text
//!  per peer and heartbeat, at most B = max_messages_per_heartbeat / 2:
//!    own messages waiting in the backlog        first, at the heartbeat
//!    own messages (published, or asked by IWANT) any free slot
//!      as many as went out last heartbeat        kept free for them
//!      (at most own_message_reserve_percent of B)
//!    relayed messages                           what is left, fairly:
//!      each source relayed for last heartbeat    a guaranteed equal share
//!      anyone                                    what nobody is guaranteed
//!  own message with no room → backlog → first thing next heartbeat
//! ```
//!
//! Without this, sending was first come, first served: a few peers each
//! sending valid messages under every budget filled what we could send an
//! honest mesh peer early in each heartbeat, and our own messages, and
//! those of honest authors arriving later, were not sent to it at all.
//!
//! Guarantees follow the demand of the previous heartbeat, so nothing is
//! kept for whoever is idle: a node that does not publish lends the whole
//! budget to relaying, and a single busy source may use all of it.
//!
//! Fair shares are kept per *source*, the connected peer a message came
//! from (or the peer asking for it with IWANT), not per author: author keys
//! cost nothing to make, so a flood can come from as many authors as it
//! likes, while the sources are our connections, whose number the service
//! layer limits.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use shoal_identity::PeerId;

use crate::{Config, Gossip, outbox::Entry, protocol::SignedMessage};

/// Heartbeats' worth of a peer's send budget that our own messages may
/// wait in its backlog. Bounds the memory a slow or flooded peer makes us
/// hold for it; an own message that finds the backlog full is not queued
/// for that peer (it still reaches it through the mesh or IHAVE/IWANT).
pub const OWN_BACKLOG_HEARTBEATS: u32 = 4;

/// The per-peer send limits derived from a [`Config`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct SendLimits {
    /// Full messages per heartbeat: half the peer's budget.
    pub(crate) budget: u32,
    /// Most of them kept free for our own messages.
    pub(crate) reserve: u32,
    /// Own messages waiting per peer.
    pub(crate) backlog: usize,
}

impl SendLimits {
    pub(crate) fn new(config: &Config) -> SendLimits {
        let budget = (config.max_messages_per_heartbeat / 2).max(1);
        let percent = config.own_message_reserve_percent.min(100) as u64;
        let reserve = u64::from(budget) * percent / 100;
        SendLimits {
            budget,
            reserve: u32::try_from(reserve).unwrap_or(budget),
            backlog: budget.saturating_mul(OWN_BACKLOG_HEARTBEATS) as usize,
        }
    }
}

/// What happened to an own message for one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OwnSend {
    /// Queued for sending now.
    Sent,
    /// In the peer's backlog, for the next heartbeat.
    Queued,
    /// Neither: the backlog is full.
    Refused,
}

/// Messages sent to one peer in the current heartbeat.
#[derive(Debug, Default)]
pub(crate) struct SendWindow {
    /// Full messages sent this heartbeat, of every kind.
    sent: u32,
    /// Own messages that were to go this heartbeat (sent or not), backlog
    /// aside: the demand the next heartbeat keeps room for.
    own_offered: u32,
    /// Of those, sent.
    own_sent: u32,
    /// Slots kept for own messages this heartbeat.
    own_guarantee: u32,
    /// Messages relayed this heartbeat per source; a source refused every
    /// time is there with 0. At most one entry per connected peer.
    by_source: BTreeMap<PeerId, u32>,
    /// The sources of the previous heartbeat: each is guaranteed `share`
    /// relayed messages in this one.
    guaranteed: BTreeSet<PeerId>,
    /// Relayed messages guaranteed to each source of `guaranteed`.
    share: u32,
    /// Guaranteed relayed messages the sources have not used yet.
    outstanding: u32,
    /// Own messages that found no room, oldest first.
    backlog: VecDeque<SignedMessage>,
}

impl SendWindow {
    /// Starts a heartbeat: as many own messages as were offered in the
    /// last one (up to the reserve) get room kept for them; whoever we
    /// relayed for (or refused) gets an equal share of the rest, and one
    /// more share is left to sources new in this heartbeat.
    pub(crate) fn new_window(&mut self, limits: &SendLimits) {
        self.own_guarantee = self.own_offered.min(limits.reserve);
        self.own_offered = 0;
        self.own_sent = 0;
        self.guaranteed = std::mem::take(&mut self.by_source).into_keys().collect();
        let sources = u32::try_from(self.guaranteed.len()).unwrap_or(u32::MAX);
        let relay = limits.budget - self.own_guarantee;
        self.share = relay / sources.saturating_add(1);
        self.outstanding = self.share * sources;
        self.sent = 0;
    }

    /// Whether an own message could go now: any free slot, unless older
    /// own messages are still waiting.
    fn has_room_for_own(&self, limits: &SendLimits) -> bool {
        self.sent < limits.budget && self.backlog.is_empty()
    }

    /// Counts an own message if it may go now.
    fn admit_own(&mut self, limits: &SendLimits) -> bool {
        self.own_offered = self.own_offered.saturating_add(1);
        if !self.has_room_for_own(limits) {
            return false;
        }
        self.sent += 1;
        self.own_sent += 1;
        true
    }

    /// Counts a message relayed for `source` if it may go now: leaving the
    /// room kept for own messages and every other source's unused share.
    fn admit_relay(&mut self, limits: &SendLimits, source: PeerId) -> bool {
        let used = *self.by_source.entry(source).or_insert(0);
        let mine = if self.guaranteed.contains(&source) {
            self.share.saturating_sub(used)
        } else {
            0
        };
        let own = self.own_guarantee.saturating_sub(self.own_sent);
        let others = self.outstanding - mine;
        if self.sent + 1 + own + others > limits.budget {
            return false;
        }
        self.sent += 1;
        self.by_source.insert(source, used + 1);
        if mine > 0 {
            self.outstanding -= 1;
        }
        true
    }
}

impl Gossip {
    /// Sends `peer` one of our own messages now, or else puts it in the
    /// peer's backlog for the next heartbeat.
    pub(crate) fn send_own(&mut self, peer: PeerId, message: SignedMessage) -> OwnSend {
        let limits = self.send_limits;
        let Some(state) = self.peers.get_mut(&peer) else {
            return OwnSend::Refused;
        };
        if state.send.admit_own(&limits) {
            self.stats.sent += 1;
            self.outbox.push(peer, Entry::Message(message));
            return OwnSend::Sent;
        }
        self.stats.throttled += 1;
        if state.send.backlog.len() < limits.backlog {
            state.send.backlog.push_back(message);
            self.stats.queued += 1;
            return OwnSend::Queued;
        }
        OwnSend::Refused
    }

    /// Whether `peer` could take an own message now.
    pub(crate) fn has_room_for_own(&self, peer: &PeerId) -> bool {
        let limits = &self.send_limits;
        self.peers
            .get(peer)
            .is_some_and(|state| state.send.has_room_for_own(limits))
    }

    /// Sends `peer` a message of another author on behalf of `source` (the
    /// peer it came from, or `peer` itself when it asked with IWANT).
    /// `false` if it was not sent.
    pub(crate) fn send_relayed(
        &mut self,
        peer: PeerId,
        source: PeerId,
        message: SignedMessage,
    ) -> bool {
        let limits = self.send_limits;
        let Some(state) = self.peers.get_mut(&peer) else {
            return false;
        };
        if !state.send.admit_relay(&limits, source) {
            self.stats.throttled += 1;
            return false;
        }
        self.stats.sent += 1;
        self.outbox.push(peer, Entry::Message(message));
        true
    }

    /// At the start of a heartbeat, after the windows restarted: sends
    /// each peer the own messages waiting for it, before anything else.
    pub(crate) fn send_backlogs(&mut self) {
        let limits = self.send_limits;
        for (&peer, state) in &mut self.peers {
            while state.send.sent < limits.budget {
                let Some(message) = state.send.backlog.pop_front() else {
                    break;
                };
                state.send.sent += 1;
                self.stats.sent += 1;
                self.outbox.push(peer, Entry::Message(message));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::key;

    const LIMITS: SendLimits = SendLimits {
        budget: 16,
        reserve: 4,
        backlog: 8,
    };

    fn admitted(n: usize, mut f: impl FnMut() -> bool) -> usize {
        (0..n).filter(|_| f()).count()
    }

    #[test]
    fn relaying_leaves_each_recent_source_its_share() {
        let l = LIMITS;
        let (a, b, c) = (key(1).peer_id(), key(2).peer_id(), key(3).peer_id());
        let mut w = SendWindow::default();
        // A heartbeat where only `a` relays: it may use everything.
        assert_eq!(admitted(20, || w.admit_relay(&l, a)), 16);
        // `b` asked too: next heartbeat, 16 / 3 = 5 each for `a` and `b`.
        assert!(!w.admit_relay(&l, b));
        w.new_window(&l);
        assert_eq!(w.share, 5);
        // `a` floods first: its share and the 6 nobody is guaranteed.
        assert_eq!(admitted(20, || w.admit_relay(&l, a)), 11);
        // `c`, new, finds nothing left; `b` still has its 5.
        assert!(!w.admit_relay(&l, c));
        assert_eq!(admitted(20, || w.admit_relay(&l, b)), 5);
        // Next heartbeat, `c` is among the guaranteed too.
        w.new_window(&l);
        assert_eq!((w.guaranteed.len(), w.share), (3, 4));
    }

    #[test]
    fn own_messages_keep_the_room_they_used_up_to_the_reserve() {
        let l = LIMITS;
        let a = key(1).peer_id();
        let mut w = SendWindow::default();
        // No own messages last heartbeat: relays may take everything, and
        // an own message finds no room.
        assert_eq!(admitted(20, || w.admit_relay(&l, a)), 16);
        assert!(!w.admit_own(&l));
        // It was offered, so the next heartbeat keeps a slot for one.
        w.new_window(&l);
        assert_eq!(admitted(20, || w.admit_relay(&l, a)), 15);
        assert!(w.admit_own(&l));
        // Never more than the reserve, however many were offered.
        for _ in 0..10 {
            w.admit_own(&l);
        }
        w.new_window(&l);
        assert_eq!(w.own_guarantee, 4);
        assert_eq!(admitted(20, || w.admit_relay(&l, a)), 12);
        assert_eq!(admitted(20, || w.admit_own(&l)), 4);
        // A heartbeat without own messages: nothing kept in the next.
        w.new_window(&l);
        w.new_window(&l);
        assert_eq!(admitted(20, || w.admit_relay(&l, a)), 16);
    }
}
