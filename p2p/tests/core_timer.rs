//! The core timer in paused tokio time: no deadline, no wake-ups; a
//! deadline fires once at its time; a re-armed earlier deadline wins; a
//! deadline stuck in the past does not spin.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal::{CoreTimer, Deadline};

/// A stand-in core: its next deadline and when it fired.
#[derive(Default)]
struct Core {
    due: Option<Instant>,
    fired: Vec<Instant>,
    /// Keep the deadline after firing (a misbehaving core).
    sticky: bool,
}

fn timer(core: &Arc<Mutex<Core>>) -> CoreTimer {
    let (a, b) = (core.clone(), core.clone());
    CoreTimer::spawn(
        move || a.lock().unwrap().due.map_or(Deadline::Never, Deadline::At),
        move |now| {
            let mut core = b.lock().unwrap();
            core.fired.push(now);
            if !core.sticky {
                core.due = None;
            }
        },
    )
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

#[tokio::test(start_paused = true)]
async fn a_core_without_a_deadline_costs_no_wakeups() {
    let core = Arc::new(Mutex::new(Core::default()));
    let timer = timer(&core);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(timer.wakeups(), 0);
    assert!(core.lock().unwrap().fired.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_deadline_fires_once_at_its_time_and_rearming_moves_it() {
    let start = now();
    let core = Arc::new(Mutex::new(Core {
        due: Some(start + Duration::from_secs(10)),
        ..Core::default()
    }));
    let timer = timer(&core);
    tokio::time::sleep(Duration::from_secs(1)).await;
    // An earlier deadline, told to the timer.
    core.lock().unwrap().due = Some(start + Duration::from_secs(3));
    timer.rearm();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let fired = core.lock().unwrap().fired.clone();
    assert_eq!(fired, vec![start + Duration::from_secs(3)]);
    // One wake-up to re-arm, one to fire; none while waiting for nothing.
    assert_eq!(timer.wakeups(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_deadline_stuck_in_the_past_does_not_spin() {
    let core = Arc::new(Mutex::new(Core {
        due: Some(now()),
        sticky: true,
        ..Core::default()
    }));
    let timer = timer(&core);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let fired = core.lock().unwrap().fired.len();
    assert!((50..=101).contains(&fired), "{fired} fires in 100 ms");
    drop(timer);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        core.lock().unwrap().fired.len(),
        fired,
        "dropped timers stop"
    );
}
