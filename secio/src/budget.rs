//! The receive budget: a bound, shared by many streams, on the memory their
//! receive buffers hold beyond a small per-stream floor.
//!
//! A peer chooses how much of a frame it sends before it stalls, and every
//! byte it sent must be held until the rest arrives. One stream holds at
//! most one frame plus read-ahead (see `stream/read.rs`), but a process
//! with thousands of streams would still hold thousands of frames. The
//! budget bounds the sum: each stream's first [`RECEIVE_BUFFER_FLOOR`]
//! bytes are its own; a stream whose buffer grows past them first reserves
//! a *slot*, what a maximal frame needs beyond the floor, and read-ahead
//! beyond one frame reserves what it uses. A whole slot at once means a
//! stream never waits while holding part of one, so streams cannot hold
//! part each and wait for each other.
//!
//! When a stream needs a slot to finish the frame it is receiving and the
//! budget is spent, it stops reading from its socket (so TCP pushes back on
//! the sender) and resumes as soon as another stream gives bytes back. It
//! is not closed at once: the stream that finds the budget spent is not
//! necessarily one that spent it, and closing it would let a few stalling
//! peers end everyone else's connections on the spot. A stream still
//! waiting after [`MAX_RECEIVE_BUDGET_WAIT`] fails with a clear error, so a
//! budget held for good (by peers that stall until the layers above time
//! them out) costs the others a bounded delay, not a hang. Buffers go back
//! to the budget when they empty and go quiet (at once while others wait),
//! when a read fails, and when the stream is dropped.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    sync::{AcquireError, OwnedSemaphorePermit, Semaphore},
    time::Sleep,
};

use crate::{RECEIVE_BUFFER_FLOOR, frame::MAX_FRAME_WIRE_LEN};

/// Default size of a [`ReceiveBudget`] made by
/// [`Config::new`](crate::Config::new): 32 MiB, about 580 slots, so 580
/// streams can be in the middle of a large frame at once (read-ahead during
/// bulk transfers may take half of it). Bounds what any number of stalling
/// peers can make a process hold in receive buffers to this plus
/// [`RECEIVE_BUFFER_FLOOR`] per stream.
pub const DEFAULT_RECEIVE_BUDGET: usize = 32 * 1024 * 1024;

/// Longest a stream waits for its [`ReceiveBudget`] before failing with
/// [`StreamError::ReceiveBudgetExhausted`](crate::StreamError::ReceiveBudgetExhausted)
/// (a handshake fails with
/// [`HandshakeError::ReceiveBudgetExhausted`](crate::HandshakeError::ReceiveBudgetExhausted)).
/// Long enough to ride out a burst of large frames on many streams; short
/// enough that a budget held for good (by streams whose peers stall until
/// the layers above time them out) delays the other streams a bounded time
/// instead of hanging them. The wait uses tokio's timer, so a stream that
/// may wait needs a runtime with time enabled (as the handshake does).
pub const MAX_RECEIVE_BUDGET_WAIT: Duration = Duration::from_secs(10);

/// Smallest [`ReceiveBudget`], and the *slot* a stream reserves when its
/// receive buffer grows past [`RECEIVE_BUFFER_FLOOR`]: what a maximal frame
/// on the wire needs beyond the floor (57,345 bytes). Smaller budgets are
/// raised to it, so one stream can always finish a frame.
pub const MIN_RECEIVE_BUDGET: usize = MAX_FRAME_WIRE_LEN - RECEIVE_BUFFER_FLOOR;

/// Largest budget a [`ReceiveBudget`] can hold (larger requests are
/// clamped to it).
const MAX_BUDGET: usize = Semaphore::MAX_PERMITS;

/// A shared bound on the receive-buffer memory of many secure streams,
/// beyond [`RECEIVE_BUFFER_FLOOR`] each.
///
/// Cloning shares the budget. Every [`Config`](crate::Config) starts with its
/// own [`DEFAULT_RECEIVE_BUDGET`], shared by its clones and so by every
/// stream secured with them; give several configurations the same budget
/// with [`Config::with_receive_budget`](crate::Config::with_receive_budget)
/// for one bound per process.
///
/// ```
/// use shoal_identity::Keypair;
/// use shoal_secio::{Config, ReceiveBudget};
///
/// let budget = ReceiveBudget::new(64 << 20);
/// let a = Config::new(Keypair::generate()).with_receive_budget(budget.clone());
/// let b = Config::new(Keypair::generate()).with_receive_budget(budget.clone());
/// assert_eq!(a.receive_budget().total(), 64 << 20);
/// assert_eq!(budget.in_use(), 0);
/// # drop(b);
/// ```
#[derive(Clone)]
pub struct ReceiveBudget {
    inner: Arc<Inner>,
}

struct Inner {
    bytes: Arc<Semaphore>,
    total: usize,
    /// Reservations waiting for bytes: while there are any, streams give
    /// back buffers they are not using at once instead of after a quiet
    /// period.
    waiters: AtomicUsize,
}

impl ReceiveBudget {
    /// A new budget of `bytes`, raised to [`MIN_RECEIVE_BUDGET`] (and
    /// clamped to about 2^61).
    pub fn new(bytes: usize) -> ReceiveBudget {
        let total = bytes.clamp(MIN_RECEIVE_BUDGET, MAX_BUDGET);
        ReceiveBudget {
            inner: Arc::new(Inner {
                bytes: Arc::new(Semaphore::new(total)),
                total,
                waiters: AtomicUsize::new(0),
            }),
        }
    }

    /// The size of the budget.
    pub fn total(&self) -> usize {
        self.inner.total
    }

    /// Bytes reserved by receive buffers right now.
    pub fn in_use(&self) -> usize {
        self.inner.total.saturating_sub(self.available())
    }

    /// Bytes not reserved right now.
    pub fn available(&self) -> usize {
        self.inner.bytes.available_permits()
    }

    /// A wait for `n` bytes (at most `u32::MAX` at once; our requests are
    /// at most a read buffer).
    fn acquire(
        &self,
        n: usize,
    ) -> Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send>> {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        Box::pin(self.inner.bytes.clone().acquire_many_owned(n))
    }

    /// True if both handles share one budget.
    pub fn ptr_eq(&self, other: &ReceiveBudget) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Default for ReceiveBudget {
    /// A budget of [`DEFAULT_RECEIVE_BUDGET`].
    fn default() -> ReceiveBudget {
        ReceiveBudget::new(DEFAULT_RECEIVE_BUDGET)
    }
}

impl fmt::Debug for ReceiveBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReceiveBudget")
            .field("total", &self.total())
            .field("in_use", &self.in_use())
            .finish()
    }
}

/// A wait for budget bytes, started when a reservation could not be made at
/// once: the total asked for, tokio's acquire future (boxed: it has no
/// name) and the deadline. The mutex only makes it `Sync`; it is always
/// reached through `&mut` and never locked.
struct Wait {
    target: usize,
    acquire: Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send>>,
    deadline: Pin<Box<Sleep>>,
}

/// The budget bytes one buffer holds; gives them back when dropped.
pub(crate) struct Reservation {
    budget: ReceiveBudget,
    held: usize,
    waiting: Option<Mutex<Wait>>,
}

/// A reservation waited [`MAX_RECEIVE_BUDGET_WAIT`] in vain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WaitedTooLong;

impl Reservation {
    pub(crate) fn new(budget: ReceiveBudget) -> Reservation {
        Reservation {
            budget,
            held: 0,
            waiting: None,
        }
    }

    /// The size of the budget.
    pub(crate) fn budget_total(&self) -> usize {
        self.budget.total()
    }

    /// True if some reservation of this budget is waiting for bytes.
    pub(crate) fn budget_has_waiters(&self) -> bool {
        self.budget.inner.waiters.load(Ordering::Relaxed) > 0
    }

    /// Makes the reservation `target` bytes if the budget has the missing
    /// bytes now and keeps at least `keep_free` unreserved; true if the
    /// reservation is now at least `target`. Never waits.
    pub(crate) fn try_reserve(&mut self, target: usize, keep_free: usize) -> bool {
        let missing = target.saturating_sub(self.held);
        if missing == 0 {
            return true;
        }
        if self.waiting.is_some() || self.budget.available() < missing.saturating_add(keep_free) {
            return false;
        }
        self.take(missing)
    }

    /// Makes the reservation `target` bytes, waiting (with a wake-up
    /// registered for the task) until the budget has the missing bytes, at
    /// most [`MAX_RECEIVE_BUDGET_WAIT`].
    pub(crate) fn poll_reserve(
        &mut self,
        cx: &mut Context<'_>,
        target: usize,
    ) -> Poll<Result<(), WaitedTooLong>> {
        let missing = target.saturating_sub(self.held);
        if missing == 0 {
            self.stop_waiting();
            return Poll::Ready(Ok(()));
        }
        if self.waiting.is_none() && self.take(missing) {
            return Poll::Ready(Ok(()));
        }
        let wait = match &mut self.waiting {
            // A wait for another total starts over (dropping the old one
            // gives back what it was granted so far) but keeps its deadline.
            Some(wait) => {
                let wait = wait.get_mut().unwrap_or_else(PoisonError::into_inner);
                if wait.target != target {
                    wait.target = target;
                    wait.acquire = self.budget.acquire(missing);
                }
                wait
            }
            None => {
                tracing::debug!(
                    missing,
                    in_use = self.budget.in_use(),
                    total = self.budget.total(),
                    "secio: receive budget spent, pausing reads"
                );
                self.budget.inner.waiters.fetch_add(1, Ordering::Relaxed);
                let wait = Wait {
                    target,
                    acquire: self.budget.acquire(missing),
                    deadline: Box::pin(tokio::time::sleep(MAX_RECEIVE_BUDGET_WAIT)),
                };
                self.waiting
                    .insert(Mutex::new(wait))
                    .get_mut()
                    .unwrap_or_else(PoisonError::into_inner)
            }
        };
        if let Poll::Ready(result) = wait.acquire.as_mut().poll(cx) {
            // The semaphore is never closed, so this is always Ok.
            if let Ok(permit) = result {
                self.held += permit.num_permits();
                permit.forget();
            }
            self.stop_waiting();
            return Poll::Ready(Ok(()));
        }
        if wait.deadline.as_mut().poll(cx).is_ready() {
            self.stop_waiting();
            return Poll::Ready(Err(WaitedTooLong));
        }
        Poll::Pending
    }

    /// Gives back every byte above `target`.
    pub(crate) fn release_to(&mut self, target: usize) {
        if let Some(extra) = self.held.checked_sub(target).filter(|&e| e > 0) {
            self.budget.inner.bytes.add_permits(extra);
            self.held = target;
        }
    }

    /// Takes `n` bytes at once if available.
    fn take(&mut self, n: usize) -> bool {
        let Ok(n32) = u32::try_from(n) else {
            return false;
        };
        match self.budget.inner.bytes.try_acquire_many(n32) {
            Ok(permit) => {
                permit.forget();
                self.held += n;
                true
            }
            Err(_) => false,
        }
    }

    /// Ends a wait in progress, giving back what it was granted so far.
    fn stop_waiting(&mut self) {
        if self.waiting.take().is_some() {
            self.budget.inner.waiters.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.stop_waiting();
        self.release_to(0);
    }
}

impl fmt::Debug for Reservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation")
            .field("held", &self.held)
            .field("waiting", &self.waiting.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    #[test]
    fn reserve_release_and_drop() {
        let budget = ReceiveBudget::new(0);
        assert_eq!(budget.total(), MIN_RECEIVE_BUDGET);
        let mut r = Reservation::new(budget.clone());
        assert!(r.try_reserve(MIN_RECEIVE_BUDGET - 40, 0));
        assert_eq!(budget.available(), 40);
        assert!(
            !r.try_reserve(MIN_RECEIVE_BUDGET - 10, 20),
            "would leave less than 20 free"
        );
        assert!(r.try_reserve(MIN_RECEIVE_BUDGET - 20, 20));
        r.release_to(30);
        assert_eq!(budget.in_use(), 30);
        drop(r);
        assert_eq!(budget.in_use(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn waits_are_fair_and_dropped_waits_give_back() {
        let budget = ReceiveBudget::new(0);
        let total = budget.total();
        let mut a = Reservation::new(budget.clone());
        let mut b = Reservation::new(budget.clone());
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(a.poll_reserve(&mut cx, total - 30), Poll::Ready(Ok(())));
        assert!(b.poll_reserve(&mut cx, 50).is_pending());
        assert!(b.poll_reserve(&mut cx, 50).is_pending());
        assert!(a.budget_has_waiters());
        // A waiter is served before anyone who only tries.
        a.release_to(total - 60);
        let mut c = Reservation::new(budget.clone());
        assert!(!c.try_reserve(20, 0));
        assert_eq!(b.poll_reserve(&mut cx, 50), Poll::Ready(Ok(())));
        assert!(!a.budget_has_waiters());
        assert_eq!(budget.in_use(), total - 10);
        // Dropping a waiter gives back what it was partly granted.
        assert!(c.poll_reserve(&mut cx, 30).is_pending());
        drop(c);
        assert!(!a.budget_has_waiters());
        drop(a);
        assert_eq!(budget.in_use(), 50);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_ends_at_the_deadline() {
        let budget = ReceiveBudget::new(0);
        let mut a = Reservation::new(budget.clone());
        let mut b = Reservation::new(budget.clone());
        assert!(a.try_reserve(budget.total(), 0));
        let started = tokio::time::Instant::now();
        let waited = std::future::poll_fn(|cx| b.poll_reserve(cx, 1)).await;
        assert_eq!(waited, Err(WaitedTooLong));
        assert_eq!(started.elapsed(), MAX_RECEIVE_BUDGET_WAIT);
        assert!(!a.budget_has_waiters());
    }

    #[test]
    fn oversized_budgets_are_clamped() {
        assert_eq!(ReceiveBudget::new(usize::MAX).total(), MAX_BUDGET);
    }
}
