//! A replica's sync schedule: who replicates each mailbox it holds (its
//! view of the DHT, corrected by lookups where the view is in doubt), the
//! sessions it opens every [`Config::sync_interval`](super::Config), what
//! the members confirmed, and dropping a mailbox once handed over.
//!
//! The view: the [`REPLICAS`](crate::REPLICAS) nodes closest to a mailbox
//! among the routing table's contacts ([`Mailbox::set_neighbours`]) and
//! this node, leaving out peers that stopped answering (two sessions
//! unanswered, or a failed dial; until they connect or sync again) and
//! peers that said they do not replicate it. A routing table knows a node's own region of
//! the key space well and the rest only sparsely, and keeps dead contacts
//! until they fail its own requests; so for a mailbox this node holds but
//! does not think it replicates, or that a peer refused, or that a member
//! says it replicates while its view says not, it asks the host for a
//! lookup ([`Event::LookupWanted`](super::Event::LookupWanted)) and
//! trusts the answer ([`Mailbox::set_members`]) for a while.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use rand::RngCore;
use shoal::{Now, PeerId, Remote, Transmit};
use shoal_kad::Key;

use super::{Event, Mailbox};
use crate::id::MailboxId;
use crate::sync::{MAX_SYNC_MAILBOXES, Neighbourhood, Role, SyncMessage};
use crate::wire::Frame;

/// Unanswered sessions in a row after which a peer counts as gone.
const SILENT_AFTER: u32 = 2;

/// The most a peer's sync is put off: every 2^4 = 16 rounds.
const MAX_BACKOFF: u32 = 4;

/// Every this many sync intervals, a round syncs every mailbox with every
/// member, even those that confirmed and have not changed since (a
/// member that lost data, or a view that missed a change, is found then).
const FULL_ROUND_EVERY: u32 = 15;

/// How long a lookup's answer stands for a mailbox's members.
const FOUND_FOR: Duration = Duration::from_secs(30 * 60);

/// Most lookups asked for in one round (or for one message).
const LOOKUPS_PER_ROUND: usize = 16;

/// Most mailboxes looked up in the last [`FOUND_FOR`]: a peer naming
/// mailboxes at random cannot make this node look up more.
const MAX_ASKED: usize = 4096;

/// A replica's sync sessions and what they confirmed.
#[derive(Default)]
pub(super) struct SyncState {
    neighbourhood: Option<Neighbourhood>,
    pub(super) next_round: Option<Instant>,
    /// Sessions this node opened and not yet answered: id -> (peer, wall
    /// time opened, deadline).
    sessions: HashMap<u64, (PeerId, u64, Instant)>,
    /// mailbox -> peer -> wall time (ms) of the session in which the peer,
    /// a member, confirmed it holds all of this node's items.
    confirmed: HashMap<MailboxId, HashMap<PeerId, u64>>,
    bytes_sent: u64,
    bytes_received: u64,
    rounds: u64,
    /// When every mailbox was last synced with every member, changed or
    /// not.
    last_full: Option<Instant>,
    /// (mailbox, peer) -> sessions in a row the peer did not confirm: it
    /// is synced only every 2^n rounds (up to [`MAX_BACKOFF`]), so a peer
    /// that keeps taking and never holds (a liar, a full disk) costs
    /// little.
    unconfirmed: HashMap<(MailboxId, PeerId), u32>,
    /// Peers whose sessions went unanswered, in a row: from
    /// [`SILENT_AFTER`] on they are left out of the members of every
    /// mailbox, until they send a sync message again.
    silent: HashMap<PeerId, u32>,
    /// mailbox -> peers that answered they do not replicate it: left out
    /// of its members, so the next closest node takes their place.
    refused: HashMap<MailboxId, HashSet<PeerId>>,
    /// mailbox -> the nodes a lookup found closest to it, until when.
    found: HashMap<MailboxId, (Vec<PeerId>, Instant)>,
    /// mailbox -> when a lookup was last asked for.
    asked: HashMap<MailboxId, Instant>,
}

impl SyncState {
    /// The members of `mailbox` in this node's view (`local` among them
    /// if it is one).
    fn members(&self, local: PeerId, mailbox: &MailboxId, now: Instant) -> Vec<PeerId> {
        let nobody = HashSet::new();
        let refused = self.refused.get(mailbox).unwrap_or(&nobody);
        if let Some((found, until)) = self.found.get(mailbox)
            && *until > now
        {
            let target = Key::from_bytes(*mailbox.as_bytes());
            let mut nodes: Vec<_> = found
                .iter()
                .copied()
                .chain(std::iter::once(local))
                .filter(|p| !refused.contains(p) && !self.is_silent(p))
                .map(|p| (Key::for_peer(&p).distance(&target), p))
                .collect();
            nodes.sort_by_key(|(d, _)| *d);
            nodes.dedup_by_key(|(_, p)| *p);
            return nodes
                .into_iter()
                .take(crate::REPLICAS)
                .map(|(_, p)| p)
                .collect();
        }
        match self.neighbourhood.as_ref() {
            Some(n) => n.members_without(mailbox, refused),
            None => vec![local],
        }
    }

    fn is_silent(&self, peer: &PeerId) -> bool {
        self.silent.get(peer).is_some_and(|m| *m >= SILENT_AFTER)
    }

    fn update_silent(&mut self) {
        let silent: Vec<PeerId> = self
            .silent
            .iter()
            .filter(|(_, misses)| **misses >= SILENT_AFTER)
            .map(|(p, _)| *p)
            .collect();
        if let Some(n) = self.neighbourhood.as_mut() {
            n.set_silent(silent);
        }
    }
}

impl Mailbox {
    /// Tells a replica which peers keep mailboxes near it (the contacts of
    /// its mailbox-DHT routing table): the members of a mailbox are the
    /// [`REPLICAS`](crate::REPLICAS) closest to it among them and itself.
    /// Sync starts once it knows one peer.
    pub fn set_neighbours(&mut self, peers: impl IntoIterator<Item = PeerId>) {
        let Some(replica) = self.replica.as_ref() else {
            return;
        };
        let local = replica.peer_id();
        self.sync
            .neighbourhood
            .get_or_insert_with(|| Neighbourhood::new(local))
            .set_peers(peers);
        self.sync.update_silent();
    }

    /// Answers an [`Event::LookupWanted`]: `found` are the nodes a lookup
    /// of `mailbox` found closest to it (this node's own id need not be
    /// among them). They stand as its members' candidates for a while.
    pub fn set_members(&mut self, now: Now, mailbox: MailboxId, found: Vec<PeerId>) {
        if self.replica.is_some() && !found.is_empty() {
            self.sync
                .found
                .insert(mailbox, (found, now.instant + FOUND_FOR));
            self.sync.refused.remove(&mailbox);
        }
    }

    /// Whether a sync round runs at the next timeout at `now`: a host that
    /// computes the neighbours on demand gives them just before.
    pub fn sync_due(&self, now: Instant) -> bool {
        self.replica.is_some() && self.sync.next_round.is_some_and(|t| t <= now)
    }

    /// The replica's view of who replicates `mailbox` at `now`, if it
    /// keeps mailboxes.
    pub fn members(&self, mailbox: &MailboxId, now: Instant) -> Option<Vec<PeerId>> {
        let local = self.replica.as_ref()?.peer_id();
        Some(self.sync.members(local, mailbox, now))
    }

    /// Bytes of sync frames sent and received.
    pub fn sync_bytes(&self) -> (u64, u64) {
        (self.sync.bytes_sent, self.sync.bytes_received)
    }

    /// Sync rounds run.
    pub fn sync_rounds(&self) -> u64 {
        self.sync.rounds
    }

    /// Runs a sync round at the next timeout (instead of at the interval).
    pub fn sync_soon(&mut self, now: Now) {
        if self.replica.is_some() {
            self.sync.next_round = Some(now.instant);
        }
    }

    /// The sync interval, give or take a tenth (so replicas do not all
    /// sync at once).
    pub(super) fn jittered_interval(&mut self) -> Duration {
        let interval = self.config.sync_interval;
        let tenth = (interval.as_millis() / 10).max(1) as u64;
        let jitter = self.rng.next_u64() % (2 * tenth);
        (interval + Duration::from_millis(jitter)).saturating_sub(Duration::from_millis(tenth))
    }

    /// One sync round: opens a session with each other member of each
    /// mailbox held, asks for lookups where the view is in doubt, and
    /// drops the mailboxes handed over.
    pub(super) fn sync_round(&mut self, now: Now) {
        self.sync.rounds += 1;
        self.note_silent(now);
        let Some(replica) = self.replica.as_mut() else {
            return;
        };
        if self
            .sync
            .neighbourhood
            .as_ref()
            .is_none_or(|n| n.is_empty())
        {
            return;
        }
        let local = replica.peer_id();
        let mailboxes = match replica.mailboxes() {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(%e, "listing mailboxes for sync failed");
                return;
            }
        };
        let sync = &mut self.sync;
        let full = sync
            .last_full
            .is_none_or(|t| now.instant >= t + self.config.sync_interval * FULL_ROUND_EVERY);
        if full {
            sync.last_full = Some(now.instant);
        }
        // What is known of mailboxes gone (expired, dropped) is forgotten.
        let held: HashSet<MailboxId> = mailboxes.iter().copied().collect();
        sync.confirmed.retain(|m, _| held.contains(m));
        sync.unconfirmed.retain(|(m, _), _| held.contains(m));
        sync.refused.retain(|m, _| held.contains(m));
        // Lookups stand for a while, also for mailboxes not held (a member
        // said this node replicates them).
        sync.found.retain(|_, (_, until)| *until > now.instant);
        sync.asked.retain(|_, at| now.instant < *at + FOUND_FOR);
        let mut lookups = Vec::new();
        let mut per_peer: BTreeMap<PeerId, Vec<(MailboxId, Role)>> = BTreeMap::new();
        for mailbox in mailboxes {
            let members = sync.members(local, &mailbox, now.instant);
            let member = members.contains(&local);
            // In doubt: a mailbox held but not replicated, or refused by a
            // peer, in a view no lookup corrected lately.
            let doubtful = !member || sync.refused.get(&mailbox).is_some_and(|r| !r.is_empty());
            let asked_lately = sync
                .asked
                .get(&mailbox)
                .is_some_and(|t| now.instant < *t + FOUND_FOR);
            if doubtful
                && !sync.found.contains_key(&mailbox)
                && !asked_lately
                && lookups.len() < LOOKUPS_PER_ROUND
            {
                sync.asked.insert(mailbox, now.instant);
                lookups.push(mailbox);
            }
            let changed = replica.changed_at(&mailbox).unwrap_or(0);
            let confirmed = sync.confirmed.get(&mailbox);
            let in_sync = |peer: &PeerId| {
                confirmed
                    .and_then(|c| c.get(peer))
                    .is_some_and(|at| *at > changed)
            };
            if !member {
                let handed_over = members.len() >= crate::REPLICAS && members.iter().all(in_sync);
                if handed_over {
                    if let Err(e) = replica.drop_mailbox(&mailbox) {
                        tracing::warn!(%e, "dropping a handed-over mailbox failed");
                    }
                    sync.confirmed.remove(&mailbox);
                    sync.refused.remove(&mailbox);
                    sync.unconfirmed.retain(|(m, _), _| *m != mailbox);
                    continue;
                }
            }
            let role = if member { Role::Member } else { Role::Leaving };
            let round = sync.rounds;
            for peer in members.into_iter().filter(|p| *p != local) {
                if in_sync(&peer) {
                    sync.unconfirmed.remove(&(mailbox, peer));
                    // Confirmed, and nothing changed since: only in a full
                    // round (its own changes, the peer syncs itself).
                    if member && !full {
                        continue;
                    }
                }
                let misses = sync.unconfirmed.entry((mailbox, peer)).or_default();
                if !round.is_multiple_of(1u64 << (*misses).min(MAX_BACKOFF)) {
                    continue;
                }
                *misses = misses.saturating_add(1);
                per_peer.entry(peer).or_default().push((mailbox, role));
            }
        }
        let deadline = now.instant + self.config.request_timeout * 3;
        for (peer, list) in per_peer {
            for chunk in list.chunks(MAX_SYNC_MAILBOXES) {
                let message = match replica.sync_open(chunk) {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(%e, "opening a sync session failed");
                        continue;
                    }
                };
                let id = self.rng.next_u64();
                self.sync.sessions.insert(id, (peer, now.unix_ms, deadline));
                let bytes = Frame::Sync { id, sync: message }.encode();
                self.sync.bytes_sent += bytes.len() as u64;
                self.transmits.push_back(Transmit { peer, bytes });
            }
        }
        for mailbox in lookups {
            self.event(Event::LookupWanted { mailbox });
        }
    }

    /// A dial to `peer` failed: it counts as gone at once (its sessions
    /// would go unanswered), until it connects or syncs again.
    pub(super) fn sync_peer_unreachable(&mut self, peer: PeerId) {
        if self.replica.is_none() {
            return;
        }
        self.sync.sessions.retain(|_, (p, _, _)| *p != peer);
        self.sync.silent.insert(peer, SILENT_AFTER);
        self.sync.update_silent();
    }

    /// A session with `peer` opened: it is back in the views.
    pub(super) fn sync_peer_reachable(&mut self, peer: PeerId) {
        if self
            .sync
            .silent
            .remove(&peer)
            .is_some_and(|m| m >= SILENT_AFTER)
        {
            self.sync.update_silent();
        }
    }

    /// Counts the sessions that went unanswered, and leaves peers silent
    /// for [`SILENT_AFTER`] sessions out of the members.
    fn note_silent(&mut self, now: Now) {
        let sync = &mut self.sync;
        let mut unanswered = Vec::new();
        sync.sessions.retain(|_, (peer, _, deadline)| {
            let open = *deadline > now.instant;
            if !open {
                unanswered.push(*peer);
            }
            open
        });
        for peer in unanswered {
            *sync.silent.entry(peer).or_default() += 1;
        }
        sync.update_silent();
    }

    /// Answers a sync message from `from` in session `id`.
    pub(super) fn sync_message(
        &mut self,
        now: Now,
        from: &Remote,
        id: u64,
        sync: &SyncMessage,
        len: usize,
    ) {
        self.sync.bytes_received += len as u64;
        if self
            .sync
            .silent
            .remove(&from.peer)
            .is_some_and(|m| m >= SILENT_AFTER)
        {
            self.sync.update_silent();
        }
        let Some(replica) = self.replica.as_mut() else {
            return;
        };
        let local = replica.peer_id();
        let state = &self.sync;
        let is_member = |m: &MailboxId| state.members(local, m, now.instant).contains(&local);
        let handled =
            match replica.sync_handle(now.unix_ms, from.peer, &from.addr, sync, &is_member) {
                Ok(h) => h,
                Err(e) => {
                    tracing::warn!(%e, "answering a sync message failed");
                    return;
                }
            };
        // The first answer to a session this node opened: a confirmation
        // there covers every item it listed (see `SyncHandled::in_sync`).
        if self
            .sync
            .sessions
            .get(&id)
            .is_some_and(|(peer, _, _)| *peer == from.peer)
            && let Some((peer, opened, _)) = self.sync.sessions.remove(&id)
        {
            for mailbox in handled.in_sync {
                self.sync.unconfirmed.remove(&(mailbox, peer));
                self.sync
                    .confirmed
                    .entry(mailbox)
                    .or_default()
                    .insert(peer, opened);
            }
        }
        for mailbox in handled.refused {
            self.sync
                .refused
                .entry(mailbox)
                .or_default()
                .insert(from.peer);
        }
        // A member thinks this node replicates a mailbox its own view says
        // it does not: the view may count nodes that are gone. Look it up.
        let refusing: Vec<MailboxId> = handled
            .reply
            .mailboxes
            .iter()
            .filter(|m| m.role == Role::Refused)
            .map(|m| m.mailbox)
            .collect();
        for mailbox in refusing.into_iter().take(LOOKUPS_PER_ROUND) {
            if self.sync.asked.len() >= MAX_ASKED {
                break;
            }
            let asked_lately = self
                .sync
                .asked
                .get(&mailbox)
                .is_some_and(|t| now.instant < *t + FOUND_FOR);
            if !asked_lately && !self.sync.found.contains_key(&mailbox) {
                self.sync.asked.insert(mailbox, now.instant);
                self.event(Event::LookupWanted { mailbox });
            }
        }
        if handled.more {
            self.sync.next_round = Some(now.instant + Duration::from_secs(1));
        }
        if !handled.reply.is_empty() {
            let bytes = Frame::Sync {
                id,
                sync: handled.reply,
            }
            .encode();
            self.sync.bytes_sent += bytes.len() as u64;
            self.transmits.push_back(Transmit {
                peer: from.peer,
                bytes,
            });
        }
    }
}
