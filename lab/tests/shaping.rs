//! The userspace shaper: delay, loss, and unshaped speed.

mod common;

use std::net::SocketAddrV4;
use std::time::Duration;

use common::{FAILS, PORT, connect, reach, serve};
use shoal_lab::{Lab, Shaping};

const DELAY: Duration = Duration::from_millis(20);
/// A round trip crosses the core twice.
const MIN_RTT_MS: f64 = 40.0;
/// Generous: a loaded two-core machine can be slow, but not this slow.
const MAX_SHAPED_CONNECT_MS: f64 = 1000.0;
/// Bytes pushed through the shaper to check that bulk transfers survive it.
const BULK_BYTES: &str = "8000000";

#[test]
fn delay_and_loss_apply_to_forwarded_packets() {
    let Some(mut lab) = Lab::new_or_skip() else {
        return;
    };
    let a = lab.add_public_host("a").expect("a");
    let b = lab.add_public_host("b").expect("b");
    let _server = serve(&b);
    let to_b = SocketAddrV4::new(b.ip(), PORT);

    let fast = reach(&a, to_b, &[]);
    println!("unshaped connect: {:.2} ms", fast.connect_ms);
    assert!(fast.connect_ms < MIN_RTT_MS / 2.0, "unshaped: {fast:?}");

    lab.shape(Shaping {
        one_way_delay: DELAY,
        loss: 0.0,
        seed: 1,
    })
    .expect("shape");
    let slow = reach(&a, to_b, &[]);
    println!("connect with 20 ms each way: {:.2} ms", slow.connect_ms);
    assert!(slow.connect_ms >= MIN_RTT_MS, "shaped: {slow:?}");
    assert!(slow.connect_ms < MAX_SHAPED_CONNECT_MS, "shaped: {slow:?}");

    let bulk = reach(&a, to_b, &["--send", BULK_BYTES]);
    let stats = lab.shaper_stats().expect("shaping");
    println!(
        "{BULK_BYTES} bytes through the shaper: {:.0} ms, {stats:?}",
        bulk.total_ms
    );
    assert!(stats.accepted > 0 && stats.dropped == 0, "{stats:?}");
    assert_eq!(stats.overflowed, 0, "{stats:?}");

    lab.shape(Shaping {
        one_way_delay: DELAY,
        loss: 1.0,
        seed: 1,
    })
    .expect("shape");
    let lost = connect(&a, to_b, &[], FAILS);
    assert!(lost.is_err(), "got through with loss 1.0: {lost:?}");
    let stats = lab.shaper_stats().expect("shaping");
    assert!(stats.dropped > 0 && stats.accepted == 0, "{stats:?}");

    lab.unshape().expect("unshape");
    assert!(lab.shaper_stats().is_none());
    let again = reach(&a, to_b, &[]);
    assert!(
        again.connect_ms < MIN_RTT_MS / 2.0,
        "after unshape: {again:?}"
    );
}

#[test]
fn bad_shaping_is_refused() {
    let Some(mut lab) = Lab::new_or_skip() else {
        return;
    };
    let bad = Shaping {
        one_way_delay: DELAY,
        loss: 2.0,
        seed: 0,
    };
    assert!(lab.shape(bad).is_err());
    assert!(lab.shaper_stats().is_none());
}
