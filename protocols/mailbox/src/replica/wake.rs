//! The replica's wake-up registrations and when it sends each wake-up
//! (see [`crate::wake`] for the rules).

use std::collections::{BTreeSet, HashMap};

use bytes::Bytes;
use shoal_identity::PeerId;
use shoal_transport::Multiaddr;

use super::Replica;
use crate::id::MailboxId;
use crate::store::ReplicaStore;
use crate::wake::{MAX_WAKE_PER_MAILBOX, WakeEndpoint, WakeToken};
use crate::wire::{Answer, Frame};

/// An endpoint and token: what one wake-up goes to.
type Target = (PeerId, WakeToken);

/// A wake-up to send: dial `endpoint` (at `addrs`, if it is not connected)
/// and send it `frame`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WakeUp {
    /// The endpoint.
    pub endpoint: PeerId,
    /// Where the registration said to dial it.
    pub addrs: Vec<Multiaddr>,
    /// The wake-up frame ([`WAKE_FRAME_LEN`](crate::wake::WAKE_FRAME_LEN) bytes).
    pub frame: Bytes,
}

#[derive(Debug)]
struct TargetState {
    addrs: Vec<Multiaddr>,
    /// Registrations (mailboxes) naming this target.
    mailboxes: usize,
    /// When its next wake-up goes (wall time, milliseconds), if one waits.
    due: Option<u64>,
    /// When its last wake-up went.
    last_sent: Option<u64>,
}

/// The registrations of one replica and the wake-ups they wait for.
#[derive(Debug, Default)]
pub(super) struct Wakes {
    /// Mailbox -> its registrations: (target, until in Unix seconds).
    by_mailbox: HashMap<MailboxId, Vec<(Target, u64)>>,
    targets: HashMap<Target, TargetState>,
    /// (due, target), earliest first.
    queue: BTreeSet<(u64, Target)>,
    count: usize,
    /// The second of the last wake-ups sent, and how many went in it.
    window: (u64, u32),
}

impl Wakes {
    fn unlink(&mut self, target: Target) {
        let Some(state) = self.targets.get_mut(&target) else {
            return;
        };
        state.mailboxes -= 1;
        if state.mailboxes == 0 {
            if let Some(due) = state.due {
                self.queue.remove(&(due, target));
            }
            self.targets.remove(&target);
        }
        self.count -= 1;
    }

    fn remove(&mut self, mailbox: &MailboxId, target: Target) {
        let Some(list) = self.by_mailbox.get_mut(mailbox) else {
            return;
        };
        let before = list.len();
        list.retain(|(t, _)| *t != target);
        let removed = before != list.len();
        if list.is_empty() {
            self.by_mailbox.remove(mailbox);
        }
        if removed {
            self.unlink(target);
        }
    }

    /// Forgets every registration of `mailbox`.
    pub(super) fn drop_mailbox(&mut self, mailbox: &MailboxId) {
        for (target, _) in self.by_mailbox.remove(mailbox).unwrap_or_default() {
            self.unlink(target);
        }
    }

    /// Forgets the registrations that ran out by `unix_secs`.
    pub(super) fn expire(&mut self, unix_secs: u64) {
        let mut gone = Vec::new();
        for (mailbox, list) in &self.by_mailbox {
            for (target, until) in list {
                if *until <= unix_secs {
                    gone.push((*mailbox, *target));
                }
            }
        }
        for (mailbox, target) in gone {
            self.remove(&mailbox, target);
        }
    }

    /// Registrations held.
    pub(super) fn len(&self) -> usize {
        self.count
    }
}

impl<S: ReplicaStore> Replica<S> {
    /// Answers a checked registration: keeps (or renews, or with a past
    /// `until` cancels) `endpoint` for `mailbox`.
    pub(super) fn register(
        &mut self,
        unix_ms: u64,
        mailbox: MailboxId,
        endpoint: &WakeEndpoint,
        until: u64,
    ) -> Answer {
        let now = unix_ms / 1000;
        let target = (endpoint.peer, endpoint.token);
        let wakes = &mut self.wakes;
        if until <= now {
            wakes.remove(&mailbox, target);
            return Answer::Registered { until: 0 };
        }
        let until = until.min(now.saturating_add(self.config.max_ttl.as_secs()));
        let list = wakes.by_mailbox.get_mut(&mailbox);
        if let Some(held) = list.and_then(|l| l.iter_mut().find(|(t, _)| *t == target)) {
            held.1 = until;
        } else {
            if wakes.count >= self.config.max_wake_registrations {
                self.stats.busy += 1;
                return Answer::Busy {
                    retry_after_ms: 60_000,
                };
            }
            // A full mailbox makes room by the registration that runs out
            // first.
            let oldest = wakes
                .by_mailbox
                .get(&mailbox)
                .filter(|l| l.len() >= MAX_WAKE_PER_MAILBOX)
                .and_then(|l| l.iter().min_by_key(|(_, until)| *until))
                .map(|(t, _)| *t);
            if let Some(old) = oldest {
                wakes.remove(&mailbox, old);
            }
            wakes
                .by_mailbox
                .entry(mailbox)
                .or_default()
                .push((target, until));
            wakes.count += 1;
            wakes
                .targets
                .entry(target)
                .or_insert_with(|| TargetState {
                    addrs: Vec::new(),
                    mailboxes: 0,
                    due: None,
                    last_sent: None,
                })
                .mailboxes += 1;
        }
        if let Some(state) = wakes.targets.get_mut(&target) {
            state.addrs.clone_from(&endpoint.addrs);
        }
        self.stats.wake_registrations += 1;
        Answer::Registered { until }
    }

    /// A new envelope for `mailbox` arrived at `unix_ms` and no live
    /// subscriber took it: schedules a wake-up for each registration
    /// (unless one already waits).
    pub(super) fn wake_for(&mut self, mailbox: &MailboxId, unix_ms: u64) {
        let Some(list) = self.wakes.by_mailbox.get(mailbox) else {
            return;
        };
        let now = unix_ms / 1000;
        let batch = u64::try_from(self.config.wake_batch.as_millis()).unwrap_or(u64::MAX);
        let gap = u64::try_from(self.config.wake_interval.as_millis()).unwrap_or(u64::MAX);
        for (target, until) in list {
            if *until <= now {
                continue;
            }
            let Some(state) = self.wakes.targets.get_mut(target) else {
                continue;
            };
            if state.due.is_some() {
                continue;
            }
            let due = unix_ms
                .saturating_add(batch)
                .max(state.last_sent.map_or(0, |t| t.saturating_add(gap)));
            state.due = Some(due);
            self.wakes.queue.insert((due, *target));
        }
    }

    /// The wake-ups due at `unix_ms` (within the replica's rate; the rest
    /// wait for the next second).
    pub fn wakeups(&mut self, unix_ms: u64) -> Vec<WakeUp> {
        let mut out = Vec::new();
        let second = unix_ms / 1000;
        let wakes = &mut self.wakes;
        if wakes.window.0 != second {
            wakes.window = (second, 0);
        }
        while let Some(&(due, target)) = wakes.queue.first() {
            if due > unix_ms {
                break;
            }
            wakes.queue.pop_first();
            let Some(state) = wakes.targets.get_mut(&target) else {
                continue;
            };
            if wakes.window.1 >= self.config.wake_rate {
                let later = (second + 1) * 1000;
                state.due = Some(later);
                wakes.queue.insert((later, target));
                break;
            }
            wakes.window.1 += 1;
            state.due = None;
            state.last_sent = Some(unix_ms);
            out.push(WakeUp {
                endpoint: target.0,
                addrs: state.addrs.clone(),
                frame: Frame::Wake { token: target.1 }.encode(),
            });
        }
        self.stats.wakeups += out.len() as u64;
        out
    }

    /// When the next wake-up is due (wall time, milliseconds).
    pub fn next_wakeup(&self) -> Option<u64> {
        self.wakes.queue.first().map(|(due, _)| *due)
    }

    /// Wake-up registrations held.
    pub fn wake_registrations(&self) -> usize {
        self.wakes.len()
    }
}
