//! Latency and loss without netem: a userspace shaper on an NFQUEUE.
//!
//! [`Lab::shape`] adds one rule to the core router,
//! `iptables -A FORWARD -j NFQUEUE --queue-num 0`, so every packet the core
//! forwards is handed to the shaper. The shaper holds each packet for the
//! one-way delay and then accepts it, in arrival order, or drops it with the
//! configured probability (a seeded ChaCha RNG: the same seed and the same
//! packet sequence give the same drops).
//!
//! Every path between two lab hosts crosses the core exactly once each way,
//! so a round trip gets the delay twice: with 20 ms, a TCP connect takes at
//! least 40 ms. Traffic that stays inside a NAT's LAN never reaches the core
//! and is not shaped.
//!
//! # Where it runs
//! The shaper is a thread of the process that owns the lab, not a separate
//! program. The thread enters the core's namespace (`setns`, which affects
//! only that thread) and opens its netlink socket there; the socket stays
//! bound to that namespace. Compared with a helper binary this needs no path
//! to an executable (Cargo only tells a package's own tests where its
//! binaries are, so other crates could not find one), leaves no orphan
//! process when a test is killed, and stops with the lab.
//!
//! # No `--queue-bypass`
//! With bypass, packets pass unshaped whenever no shaper listens. Without it
//! (our choice) they are dropped. The rule is added only after the shaper
//! has bound the queue and removed before it stops, so in normal operation
//! nothing is lost; but if the shaper thread dies, traffic through the core
//! stops, and tests fail loudly instead of quietly measuring an unshaped
//! network.
//!
//! # Limits
//! The kernel keeps at most [`QUEUE_MAX_LEN`] packets waiting for a verdict,
//! enough for a bulk transfer's window at 20 ms (GSO packets count once);
//! past it the kernel drops, as a full router buffer would. Packets are
//! released at their time plus the thread's wake-up latency (microseconds on
//! an idle machine, more on a loaded one).

use std::collections::VecDeque;
use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sched::{CloneFlags, setns};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::netns::{handle_path, iptables};
use crate::nfqueue::{Event, Queue, Verdict};
use crate::{Lab, LabError};

/// The NFQUEUE number in the core namespace (queues are per namespace, so
/// every lab can use the same one).
pub const QUEUE_NUM: u16 = 0;
/// Packets the kernel holds for the shaper before dropping new ones; also
/// bounds the shaper's own queue of held packets.
pub const QUEUE_MAX_LEN: u32 = 8192;
/// Longest accepted one-way delay.
pub const MAX_ONE_WAY_DELAY: Duration = Duration::from_secs(10);
/// How long [`Lab::shape`] waits for the shaper to report that it is bound.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How often an idle shaper checks whether it should stop.
const STOP_POLL: Duration = Duration::from_millis(50);
/// Reads per loop turn, so a flood of arrivals cannot delay releases.
const MAX_READS_PER_TURN: usize = 64;

/// What [`Lab::shape`] does to packets crossing the core.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Shaping {
    /// How long each packet is held; a round trip gets it twice.
    pub one_way_delay: Duration,
    /// Fraction of packets dropped, from 0.0 (none) to 1.0 (all).
    pub loss: f64,
    /// Seed of the drop decisions.
    pub seed: u64,
}

/// Counters of a running shaper.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShaperStats {
    /// Packets released after their delay.
    pub accepted: u64,
    /// Packets dropped by the loss setting.
    pub dropped: u64,
    /// Packets lost to overflow: dropped because the held queue was full, or
    /// dropped by the kernel because the socket buffer overflowed (ENOBUFS).
    pub overflowed: u64,
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    dropped: AtomicU64,
    overflowed: AtomicU64,
}

/// A running shaper thread.
#[derive(Debug)]
pub(crate) struct Shaper {
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    thread: JoinHandle<Result<(), String>>,
}

impl Shaper {
    /// Asks the thread to stop, waits for it, and returns its error if it
    /// failed while running.
    pub(crate) fn stop(self) -> Result<(), LabError> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.join() {
            Ok(result) => result.map_err(LabError::Shaper),
            Err(_) => Err(LabError::Shaper("the shaper thread panicked".into())),
        }
    }

    fn stats(&self) -> ShaperStats {
        ShaperStats {
            accepted: self.counters.accepted.load(Ordering::Relaxed),
            dropped: self.counters.dropped.load(Ordering::Relaxed),
            overflowed: self.counters.overflowed.load(Ordering::Relaxed),
        }
    }
}

impl Lab {
    /// Starts shaping every packet the core forwards (replacing earlier
    /// shaping). Returns once the shaper is bound and the rule is in place.
    pub fn shape(&mut self, shaping: Shaping) -> Result<(), LabError> {
        check(&shaping)?;
        self.unshape()?;
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let (ready_tx, ready_rx) = sync_channel(1);
        let namespace = self.core.clone();
        let thread = {
            let (stop, counters) = (stop.clone(), counters.clone());
            thread::Builder::new()
                .name("lab-shaper".into())
                .spawn(move || run(&namespace, shaping, &stop, &counters, ready_tx))
                .map_err(|err| LabError::Shaper(format!("cannot start thread: {err}")))?
        };
        let shaper = Shaper {
            stop,
            counters,
            thread,
        };
        match ready_rx.recv_timeout(START_TIMEOUT) {
            Ok(Ok(())) => {}
            Ok(Err(err)) => return Err(LabError::Shaper(err)),
            Err(_) => {
                return Err(shaper.stop().err().unwrap_or(LabError::Timeout {
                    command: "shaper start".into(),
                    timeout: START_TIMEOUT,
                }));
            }
        }
        // Stored first, so a failing iptables call still stops the thread.
        self.shaper = Some(shaper);
        iptables(&self.core, queue_rule("-A"))
    }

    /// Stops shaping: removes the rule, then stops the shaper. Reports an
    /// error the shaper hit while running. Does nothing when not shaping.
    pub fn unshape(&mut self) -> Result<(), LabError> {
        let Some(shaper) = self.shaper.take() else {
            return Ok(());
        };
        let removed = iptables(&self.core, queue_rule("-D"));
        shaper.stop()?;
        removed
    }

    /// Counters of the running shaper, `None` when not shaping.
    pub fn shaper_stats(&self) -> Option<ShaperStats> {
        self.shaper.as_ref().map(Shaper::stats)
    }
}

/// The core's FORWARD rule handing packets to the shaper, with `op` `-A`
/// (add) or `-D` (delete). No `--queue-bypass`: see the module docs.
fn queue_rule(op: &str) -> Vec<String> {
    let num = QUEUE_NUM.to_string();
    [op, "FORWARD", "-j", "NFQUEUE", "--queue-num", &num]
        .map(str::to_owned)
        .to_vec()
}

fn check(shaping: &Shaping) -> Result<(), LabError> {
    if !(0.0..=1.0).contains(&shaping.loss) {
        return Err(LabError::InvalidShaping(format!(
            "loss {} is not between 0 and 1",
            shaping.loss
        )));
    }
    if shaping.one_way_delay > MAX_ONE_WAY_DELAY {
        return Err(LabError::InvalidShaping(format!(
            "one-way delay {:?} is above {MAX_ONE_WAY_DELAY:?}",
            shaping.one_way_delay
        )));
    }
    Ok(())
}

/// The shaper thread: enter the namespace, bind, report, then shape until
/// told to stop.
fn run(
    namespace: &str,
    shaping: Shaping,
    stop: &AtomicBool,
    counters: &Counters,
    ready: SyncSender<Result<(), String>>,
) -> Result<(), String> {
    let bound = File::open(handle_path(namespace))
        .map_err(|err| format!("opening namespace {namespace}: {err}"))
        .and_then(|ns| {
            setns(ns, CloneFlags::CLONE_NEWNET)
                .map_err(|err| format!("entering namespace {namespace}: {err}"))
        })
        .and_then(|()| {
            Queue::bind(QUEUE_NUM, QUEUE_MAX_LEN)
                .map_err(|err| format!("binding NFQUEUE {QUEUE_NUM} in {namespace}: {err}"))
        });
    let mut queue = match bound {
        Ok(queue) => {
            let _ = ready.send(Ok(()));
            queue
        }
        Err(err) => {
            let _ = ready.send(Err(err.clone()));
            return Err(err);
        }
    };
    let mut rng = ChaCha8Rng::seed_from_u64(shaping.seed);
    let mut held: VecDeque<(Instant, u32)> = VecDeque::new();
    let mut events = Vec::new();
    let fail = |what: &str, err: std::io::Error| format!("{what} on NFQUEUE in {namespace}: {err}");
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        while let Some(&(due, id)) = held.front()
            && due <= now
        {
            held.pop_front();
            queue
                .verdict(id, Verdict::Accept)
                .map_err(|err| fail("verdict", err))?;
            counters.accepted.fetch_add(1, Ordering::Relaxed);
        }
        let wait = held
            .front()
            .map_or(STOP_POLL, |&(due, _)| due.saturating_duration_since(now))
            .min(STOP_POLL);
        if !queue.wait(wait).map_err(|err| fail("poll", err))? {
            continue;
        }
        for _ in 0..MAX_READS_PER_TURN {
            match queue.read(&mut events) {
                Ok(true) => {}
                Ok(false) => break,
                Err(err) if err.raw_os_error() == Some(Errno::ENOBUFS as i32) => {
                    counters.overflowed.fetch_add(1, Ordering::Relaxed);
                }
                Err(err) => return Err(fail("read", err)),
            }
        }
        let due = Instant::now() + shaping.one_way_delay;
        for event in events.drain(..) {
            let Event::Packet(id) = event else { continue };
            let lost = shaping.loss > 0.0 && rng.random::<f64>() < shaping.loss;
            if lost || held.len() >= QUEUE_MAX_LEN as usize {
                queue
                    .verdict(id, Verdict::Drop)
                    .map_err(|err| fail("verdict", err))?;
                let counter = if lost {
                    &counters.dropped
                } else {
                    &counters.overflowed
                };
                counter.fetch_add(1, Ordering::Relaxed);
            } else {
                held.push_back((due, id));
            }
        }
    }
    // After `unshape` the rule is gone, so nothing new arrives: let what we
    // still hold go on its way. (When the lab is dropped instead, the
    // namespace is about to disappear and this does no harm.)
    for (_, id) in held {
        let _ = queue.verdict(id, Verdict::Accept);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shaping_is_checked() {
        let ok = Shaping {
            one_way_delay: Duration::from_millis(20),
            loss: 0.5,
            seed: 1,
        };
        assert!(check(&ok).is_ok());
        for loss in [-0.1, 1.1, f64::NAN] {
            assert!(check(&Shaping { loss, ..ok }).is_err(), "loss {loss}");
        }
        let slow = Shaping {
            one_way_delay: MAX_ONE_WAY_DELAY + Duration::from_millis(1),
            ..ok
        };
        assert!(check(&slow).is_err());
    }
}
