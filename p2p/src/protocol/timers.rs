//! Timers of one handler task (repeating, or one-shot wake-ups), keyed by (scope, token); a scope is
//! the whole service (`None`) or one session. Removing a scope is O(1), so
//! closing a session never leaves its timers behind.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
    time::Duration,
};

use tokio::time::Instant;

use crate::{SessionId, config::MAX_TIMERS_PER_HANDLER};

type Scope = Option<SessionId>;

#[derive(Debug, Default)]
pub(crate) struct Timers {
    /// Deadlines; entries whose sequence number no longer matches `live`
    /// are stale and skipped.
    heap: BinaryHeap<Reverse<(Instant, u64, Scope, u64)>>,
    /// Per scope and token: the interval (`None`: one-shot) and sequence.
    live: HashMap<Scope, HashMap<u64, (Option<Duration>, u64)>>,
    count: usize,
    next_seq: u64,
}

/// Too many timers are registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a handler may have at most {MAX_TIMERS_PER_HANDLER} timers")]
pub struct TooManyTimers;

impl Timers {
    /// Fires `token` every `interval` (at least 1 ms) from now on, replacing
    /// a timer with the same scope and token.
    pub(crate) fn set(
        &mut self,
        scope: Scope,
        token: u64,
        interval: Duration,
    ) -> Result<(), TooManyTimers> {
        let interval = interval.max(Duration::from_millis(1));
        self.insert(scope, token, Some(interval), Instant::now() + interval)
    }

    /// Fires `token` once at `at` (at once if it has passed), replacing a
    /// timer with the same scope and token.
    pub(crate) fn wake_at(
        &mut self,
        scope: Scope,
        token: u64,
        at: Instant,
    ) -> Result<(), TooManyTimers> {
        self.insert(scope, token, None, at)
    }

    fn insert(
        &mut self,
        scope: Scope,
        token: u64,
        interval: Option<Duration>,
        at: Instant,
    ) -> Result<(), TooManyTimers> {
        let entries = self.live.entry(scope).or_default();
        if !entries.contains_key(&token) {
            if self.count >= MAX_TIMERS_PER_HANDLER {
                return Err(TooManyTimers);
            }
            self.count += 1;
        }
        self.next_seq += 1;
        entries.insert(token, (interval, self.next_seq));
        self.heap.push(Reverse((at, self.next_seq, scope, token)));
        self.compact();
        Ok(())
    }

    pub(crate) fn remove(&mut self, scope: Scope, token: u64) {
        if let Some(entries) = self.live.get_mut(&scope) {
            if entries.remove(&token).is_some() {
                self.count -= 1;
            }
            if entries.is_empty() {
                self.live.remove(&scope);
            }
        }
    }

    pub(crate) fn remove_scope(&mut self, scope: Scope) {
        if let Some(entries) = self.live.remove(&scope) {
            self.count -= entries.len();
        }
        self.compact();
    }

    /// Rebuilds the heap when stale entries dominate it.
    fn compact(&mut self) {
        if self.heap.len() > 2 * self.count + 64 {
            let live = &self.live;
            self.heap.retain(|Reverse((_, seq, scope, token))| {
                live.get(scope)
                    .and_then(|e| e.get(token))
                    .is_some_and(|(_, s)| s == seq)
            });
        }
    }

    fn is_live(&self, seq: u64, scope: Scope, token: u64) -> bool {
        self.live
            .get(&scope)
            .and_then(|e| e.get(&token))
            .is_some_and(|(_, s)| *s == seq)
    }

    /// The earliest live deadline.
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, seq, scope, token))) = self.heap.peek().copied() {
            if self.is_live(seq, scope, token) {
                return Some(at);
            }
            self.heap.pop();
        }
        None
    }

    /// Pops one timer due at `now`, rescheduling a repeating one and
    /// forgetting a one-shot one.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(Scope, u64)> {
        while let Some(Reverse((at, seq, scope, token))) = self.heap.peek().copied() {
            if at > now {
                return None;
            }
            self.heap.pop();
            if !self.is_live(seq, scope, token) {
                continue;
            }
            let interval = self
                .live
                .get(&scope)
                .and_then(|e| e.get(&token))
                .and_then(|(i, _)| *i);
            match interval {
                Some(interval) => self.heap.push(Reverse((now + interval, seq, scope, token))),
                None => self.remove(scope, token),
            }
            return Some((scope, token));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn fire_replace_and_remove() {
        let mut t = Timers::default();
        let s = Some(SessionId(1));
        t.set(None, 1, Duration::from_secs(1)).unwrap();
        t.set(s, 2, Duration::from_secs(2)).unwrap();
        t.set(s, 2, Duration::from_secs(3)).unwrap(); // replaces
        assert_eq!(t.count, 2);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(t.pop_due(Instant::now()), Some((None, 1)));
        assert_eq!(t.pop_due(Instant::now()), None);
        tokio::time::advance(Duration::from_secs(2)).await;
        let now = Instant::now();
        let mut fired = vec![t.pop_due(now), t.pop_due(now)];
        fired.sort();
        assert_eq!(fired, vec![Some((None, 1)), Some((s, 2))]);
        t.remove_scope(s);
        t.remove(None, 1);
        assert_eq!(t.count, 0);
        assert_eq!(t.next_deadline(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn one_shot_fires_once() {
        let mut t = Timers::default();
        t.wake_at(None, 7, Instant::now() + Duration::from_secs(5))
            .unwrap();
        assert_eq!(t.count, 1);
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(t.pop_due(Instant::now()), None);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(t.pop_due(Instant::now()), Some((None, 7)));
        assert_eq!(t.count, 0);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(t.pop_due(Instant::now()), None);
        assert_eq!(t.next_deadline(), None);
    }
}
