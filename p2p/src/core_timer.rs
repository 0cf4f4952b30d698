//! The timer of a sans-IO core on tokio: one task that sleeps until the
//! core's deadline and fires it, and wakes early only when told that
//! something may have moved the deadline. A core without a deadline costs
//! no wake-ups at all (no polling tick).
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use std::time::{Duration, Instant};
//! use shoal::{CoreTimer, Deadline};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! // A "core" with one deadline, shared with whoever calls into it.
//! let due = Arc::new(Mutex::new(Some(Instant::now() + Duration::from_secs(5))));
//! let fired = Arc::new(Mutex::new(0));
//! let (d, f) = (due.clone(), fired.clone());
//! let timer = CoreTimer::spawn(
//!     move || d.lock().unwrap().map_or(Deadline::Never, Deadline::At),
//!     move |_now| {
//!         *f.lock().unwrap() += 1;
//!         *due.lock().unwrap() = None;
//!     },
//! );
//! tokio::time::sleep(Duration::from_secs(6)).await;
//! assert_eq!(*fired.lock().unwrap(), 1);
//! // After every call into the core: the deadline may have moved.
//! timer.rearm();
//! # }
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// What a core's next deadline is, as the timer asks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// Fire at this time (now or in the past: at once).
    At(Instant),
    /// Nothing to wait for until something calls into the core.
    Never,
    /// The core is gone: the timer task ends.
    Gone,
}

/// Shortest time between two fires, so a core that keeps reporting a
/// deadline in the past cannot make the task spin.
const MIN_SPACING: Duration = Duration::from_millis(1);

/// The timer task of one core: it sleeps until the core's deadline and
/// wakes early only when re-armed. Dropping it
/// stops the task.
#[derive(Debug)]
pub struct CoreTimer {
    wake: Arc<Notify>,
    wakeups: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl CoreTimer {
    /// Spawns the timer task on the current tokio runtime. `deadline`
    /// reads the core's next deadline; `fire` runs the core's timeout
    /// handling at `now` (tokio's clock, so paused test time works). Both
    /// run on the timer task, one after the other.
    pub fn spawn(
        mut deadline: impl FnMut() -> Deadline + Send + 'static,
        mut fire: impl FnMut(Instant) + Send + 'static,
    ) -> CoreTimer {
        let wake = Arc::new(Notify::new());
        let wakeups = Arc::new(AtomicU64::new(0));
        let (notified, count) = (wake.clone(), wakeups.clone());
        let task = tokio::spawn(async move {
            let mut last_fire: Option<Instant> = None;
            loop {
                match deadline() {
                    Deadline::Gone => return,
                    Deadline::Never => notified.notified().await,
                    Deadline::At(at) => {
                        let at = last_fire.map_or(at, |l| at.max(l + MIN_SPACING));
                        let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(at));
                        tokio::select! {
                            () = sleep => {
                                let now = tokio::time::Instant::now().into_std();
                                last_fire = Some(now);
                                fire(now);
                            }
                            () = notified.notified() => {}
                        }
                    }
                }
                count.fetch_add(1, Ordering::Relaxed);
            }
        });
        CoreTimer {
            wake,
            wakeups,
            task,
        }
    }

    /// [`CoreTimer::spawn`] for a core that lives in `shared` (behind
    /// whatever lock `T` holds), as a protocol driver's core does: the task
    /// holds only a weak reference, so dropping the last `Arc` ends it.
    /// `deadline` reads the core's deadline, `fire` handles it.
    pub fn spawn_for<T: Send + Sync + 'static>(
        shared: &Arc<T>,
        deadline: impl Fn(&T) -> Option<Instant> + Send + 'static,
        fire: impl Fn(&Arc<T>, Instant) + Send + 'static,
    ) -> CoreTimer {
        let (read, run) = (Arc::downgrade(shared), Arc::downgrade(shared));
        CoreTimer::spawn(
            move || match read.upgrade() {
                Some(shared) => deadline(&shared).map_or(Deadline::Never, Deadline::At),
                None => Deadline::Gone,
            },
            move |now| {
                if let Some(shared) = run.upgrade() {
                    fire(&shared, now);
                }
            },
        )
    }

    /// Tells the timer that the core's deadline may have moved (call after
    /// every call into the core from outside the timer).
    pub fn rearm(&self) {
        self.wake.notify_one();
    }

    /// How many times the task woke up (fired or was re-armed) so far.
    pub fn wakeups(&self) -> u64 {
        self.wakeups.load(Ordering::Relaxed)
    }
}

impl Drop for CoreTimer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
