//! Offline delivery under churn: the nodes keeping mailboxes come and go
//! (sessions and downtimes Weibull with shape 0.5 and median 2 hours, a
//! third of session ends for good, Poisson arrivals making up for them)
//! while recipients are away from 1 hour to 7 days. Every message reported
//! stored (W = 3 of R = 5) is shown exactly once, and no acked envelope
//! comes back. The same run with W = 1 loses messages: the churn is hard
//! enough for the check to fail.
//!
//! Per mailbox, the run measures the share of its replicas replaced
//! between the first store and the recipient's read, and prints it by how
//! long the mailbox waited.

use std::time::{Duration, Instant};

use shoal_mailbox::{REPLICAS, WRITE_QUORUM};
use shoal_sim::mailbox::{ChurnModel, MailboxWorld, WorldConfig, WorldReport};

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

fn run(write_quorum: usize, store_fanout: usize) -> WorldReport {
    let started = Instant::now();
    let config = WorldConfig {
        pairs: 20,
        liars: 0,
        offline: (HOUR, 7 * 24 * HOUR),
        churn: Some(ChurnModel {
            departure: 0.5,
            ..ChurnModel::default()
        }),
        // Replicas sync every 30 minutes, not every 2: with 2 (or 10), a
        // message held by one replica is nearly always handed on before
        // that replica leaves, and W = 1 loses too little to compare.
        sync_interval: 30 * MINUTE,
        write_quorum,
        store_fanout,
        // The DHT refreshes hourly instead of every 15 minutes: staler
        // views of who replicates a mailbox, and a run that fits CI.
        kad_refresh: HOUR,
        ..WorldConfig::default()
    };
    let report = MailboxWorld::new(config).run();
    let elapsed = started.elapsed().as_secs_f64();
    let mut summary = report.clone();
    summary.replaced.clear();
    summary.reconnect.clear();
    summary.reconnect_floor.clear();
    println!("W = {write_quorum} of {store_fanout} asked, {elapsed:.1} s: {summary:#?}");
    println!(
        "W = {write_quorum}: loss rate {:.4}, sync bytes per replica-hour {:.0}, \
         reconnect to last message p50 {:?} p99 {:?}",
        report.loss_rate(),
        report.sync_bytes_per_node_hour(),
        report.reconnect_quantile(0.5),
        report.reconnect_quantile(0.99),
    );
    println!("replicas replaced per mailbox, by how long it waited:");
    for (from, to) in [(0, 12), (12, 48), (48, 24 * 8)] {
        let mut shares: Vec<f64> = report
            .replaced
            .iter()
            .filter(|r| r.waited >= from * HOUR && r.waited < to * HOUR)
            .map(|r| r.share)
            .collect();
        shares.sort_by(f64::total_cmp);
        if let (Some(min), Some(median)) = (shares.first(), shares.get(shares.len() / 2)) {
            println!(
                "  waited {from:>3}-{to:<3} h: {:>3} mailboxes, median {:.0}%, min {:.0}%",
                shares.len(),
                median * 100.0,
                min * 100.0
            );
        }
    }
    report
}

#[test]
fn under_churn_every_stored_message_is_shown_once_and_no_ack_is_undone() {
    let report = run(WRITE_QUORUM, REPLICAS);
    assert!(report.stored > 100, "{} stored", report.stored);
    assert_eq!(report.lost, 0);
    assert_eq!(report.delivered_once, report.stored);
    assert_eq!(report.shown_twice, 0);
    assert_eq!(report.acked_still_held, 0, "an acked envelope came back");
    // Each way to fail was there to be taken.
    assert!(
        report.handoffs_to_newcomers > 0,
        "no hand-off to a newcomer"
    );
    assert!(
        report.away_during_ack_returned > 0,
        "no replica away during an ack came back"
    );
    assert!(report.day_rotations > 0, "no day rotation while away");
    assert!(report.arrivals > 0 && report.departures > 0 && report.returns > 0);
    assert!(report.longest_offline_hours >= 48);
    // The replica sets did change: at least 40% of a mailbox's replicas
    // for the median mailbox, and for every mailbox that waited two days.
    let (median, below) = report.replacement(0.4, 48 * HOUR);
    assert!(median >= 0.4, "median replaced {median}");
    assert_eq!(below, 0, "mailboxes waiting 2 days with < 40% replaced");
}

/// What Session does: one replica stores the message (the others get it
/// from that one) and one receipt counts.
#[test]
fn under_the_same_churn_w_1_loses_messages() {
    let report = run(1, 1);
    assert!(report.stored > 100, "{} stored", report.stored);
    assert!(
        report.lost > 0,
        "W = 1 lost nothing: the churn is too mild to compare"
    );
}
