//! Offline delivery through mailboxes at network scale: 200 nodes keep
//! mailboxes, 30 recipients are away from 1 hour to 3 days while their
//! senders write, restart and leave, and R - W replicas of every mailbox
//! sign receipts and keep nothing. Every message reported stored is shown
//! exactly once. The same run with R - W + 1 liars loses messages: the
//! check can fail.

use std::time::Instant;

use shoal_mailbox::{REPLICAS, WRITE_QUORUM};
use shoal_sim::mailbox::{MailboxWorld, WorldConfig, WorldReport};

fn run(liars: usize) -> WorldReport {
    let started = Instant::now();
    let config = WorldConfig {
        liars,
        // No churn here: replicas sync every 10 minutes, which keeps the
        // run short.
        sync_interval: std::time::Duration::from_secs(600),
        ..WorldConfig::default()
    };
    let report = MailboxWorld::new(config).run();
    let mut summary = report.clone();
    summary.reconnect.clear();
    println!(
        "{liars} liars per mailbox, {:.1} s: {summary:#?}",
        started.elapsed().as_secs_f64()
    );
    println!(
        "reconnect to last message: p50 {:?}, max {:?}",
        report.reconnect_quantile(0.5),
        report.reconnect_quantile(1.0)
    );
    report
}

#[test]
fn every_stored_message_is_shown_once_despite_r_minus_w_liars() {
    let report = run(REPLICAS - WRITE_QUORUM);
    assert!(report.stored > 100, "{report:?}");
    assert_eq!(report.delivered_once, report.stored, "{report:?}");
    assert_eq!(report.lost, 0);
    assert_eq!(report.shown_twice, 0);
    // Each way to fail was there to be taken.
    assert!(report.day_rotations > 0, "no day rotation while away");
    assert!(report.liar_receipts > 0, "no liar signed a counted receipt");
    assert!(report.sender_restarts > 0);
    assert!(report.shortest_offline_hours <= 2 && report.longest_offline_hours >= 48);
}

#[test]
fn one_liar_more_than_r_minus_w_loses_messages() {
    let report = run(REPLICAS - WRITE_QUORUM + 1);
    assert!(report.stored > 100, "{report:?}");
    assert!(report.lost > 0, "R - W + 1 liars lost nothing: {report:?}");
}
