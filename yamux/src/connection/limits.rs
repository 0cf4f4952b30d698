//! Bookkeeping for peer-driven accumulations: the control-frame budget and
//! the bounded memory of recently closed stream ids.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::StreamId;

/// Counts peer-triggered control frames per one-second window and the
/// answers waiting for `poll_transmit`.
#[derive(Debug)]
pub(crate) struct ControlBudget {
    per_sec: u32,
    pub(crate) max_pending: usize,
    window_start: Option<Instant>,
    in_window: u32,
    /// Pongs queued since the last `poll_transmit`.
    pub(crate) pending: usize,
    /// RSTs for refused streams queued since the last `poll_transmit`. Not
    /// held against the peer: beyond `max_pending` the driver stops reading.
    pub(crate) pending_refusals: usize,
}

impl ControlBudget {
    pub(crate) fn new(per_sec: u32, max_pending: usize) -> Self {
        ControlBudget {
            per_sec,
            max_pending,
            window_start: None,
            in_window: 0,
            pending: 0,
            pending_refusals: 0,
        }
    }

    /// Everything queued went out.
    pub(crate) fn transmitted(&mut self) {
        self.pending = 0;
        self.pending_refusals = 0;
    }

    /// Counts one frame; `Err` names the limit that was crossed.
    pub(crate) fn count(&mut self, now: Instant, answered: bool) -> Result<(), &'static str> {
        match self.window_start {
            Some(start) if now.saturating_duration_since(start) < Duration::from_secs(1) => {}
            _ => {
                self.window_start = Some(now);
                self.in_window = 0;
            }
        }
        self.in_window = self.in_window.saturating_add(1);
        if self.in_window > self.per_sec {
            return Err("more control frames per second than allowed");
        }
        if answered {
            self.pending += 1;
            if self.pending > self.max_pending {
                return Err("too many answers waiting for transmission");
            }
        }
        Ok(())
    }
}

/// How a stream ended, remembered for late frames and late API calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// Both sides finished.
    Finished,
    /// We reset it (or refused it).
    ResetLocal,
    /// The remote reset it.
    ResetRemote,
}

/// The last [`crate::config::RECENTLY_CLOSED_CAPACITY`] closed streams.
#[derive(Debug)]
pub(crate) struct RecentlyClosed {
    order: VecDeque<StreamId>,
    ended: HashMap<StreamId, Ended>,
    capacity: usize,
}

impl RecentlyClosed {
    pub(crate) fn new(capacity: usize) -> Self {
        RecentlyClosed {
            order: VecDeque::new(),
            ended: HashMap::new(),
            capacity,
        }
    }

    pub(crate) fn insert(&mut self, id: StreamId, how: Ended) {
        if self.ended.insert(id, how).is_none() {
            self.order.push_back(id);
            while self.order.len() > self.capacity {
                if let Some(old) = self.order.pop_front() {
                    self.ended.remove(&old);
                }
            }
        }
    }

    pub(crate) fn get(&self, id: StreamId) -> Option<Ended> {
        self.ended.get(&id).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_resets_each_second() {
        let t0 = Instant::now();
        let mut b = ControlBudget::new(2, 10);
        assert!(b.count(t0, false).is_ok());
        assert!(b.count(t0, false).is_ok());
        assert!(b.count(t0, false).is_err());
        assert!(b.count(t0 + Duration::from_secs(1), false).is_ok());
    }

    #[test]
    fn budget_bounds_pending_answers() {
        let t0 = Instant::now();
        let mut b = ControlBudget::new(100, 2);
        assert!(b.count(t0, true).is_ok());
        assert!(b.count(t0, true).is_ok());
        assert!(b.count(t0, true).is_err());
    }

    #[test]
    fn recently_closed_is_bounded() {
        let mut r = RecentlyClosed::new(2);
        for i in 1..=3 {
            r.insert(StreamId::new(i), Ended::Finished);
        }
        assert_eq!(r.get(StreamId::new(1)), None);
        assert_eq!(r.get(StreamId::new(3)), Some(Ended::Finished));
    }
}
