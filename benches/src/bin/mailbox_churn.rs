//! Mailboxes under churn at scale, in the simulator: 1,000 nodes keeping
//! mailboxes come and go (sessions and downtimes Weibull with shape 0.5 and
//! median 2 hours, half of session ends for good, Poisson arrivals making
//! up for them) for 7 simulated days, over links of 10 to 90 ms one way
//! (median 50 ms), where a new connection costs 3 round trips before its
//! first message (TCP, secio's handshake, the protocol's negotiation). Recipients with 20 contacts each are away from 1 hour
//! to 7 days while every contact writes; back, each reads all its
//! contacts' mailboxes at once, as the messenger does.
//!
//! Prints the delivery figures (stored, shown once, lost, shown twice,
//! acked envelopes come back), the reconnect latency (from a recipient's
//! return until the last message stored for it is shown: p50, p99, max)
//! beside its floor (the least any reader could take over these links),
//! and the reconciliation traffic per node and hour online, then exits
//! non-zero if an invariant failed.
//!
//! ```sh
//! cargo run --release -p shoal-benches --bin mailbox_churn
//! cargo run --release -p shoal-benches --bin mailbox_churn -- --nodes 200 --recipients 4
//! ```

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use shoal_sim::NetworkModel;
use shoal_sim::mailbox::{ChurnModel, MailboxWorld, WorldConfig};

const HOUR: Duration = Duration::from_secs(3600);

#[derive(Parser, Debug)]
#[command(about = "Mailboxes under churn at scale (simulated)")]
struct Args {
    /// Nodes keeping mailboxes at the start.
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Recipients (each with --contacts senders).
    #[arg(long, default_value_t = 10)]
    recipients: usize,
    /// Contacts per recipient.
    #[arg(long, default_value_t = 20)]
    contacts: usize,
    /// Longest time a recipient is away, in days (the run lasts about
    /// that long, plus up to 15 hours).
    #[arg(long, default_value_t = 7)]
    days: u32,
    /// Share of messages the network loses.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// How often replicas sync, in minutes (the default is the mailbox
    /// core's).
    #[arg(long, default_value_t = 2)]
    sync_minutes: u64,
    /// How often the DHT refreshes its buckets, in minutes.
    #[arg(long, default_value_t = 60)]
    kad_refresh_minutes: u64,
    /// Round trips a new connection costs before its first message: TCP
    /// (1), secio's Noise XX handshake (1) and the negotiation of the
    /// protocol's substream (1); 0 models free connections.
    #[arg(long, default_value_t = 3)]
    connect_round_trips: u32,
    /// Seed of everything random.
    #[arg(long, default_value_t = 15)]
    seed: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = WorldConfig {
        replicas: args.nodes,
        pairs: args.recipients * args.contacts,
        contacts: args.contacts,
        liars: 0,
        offline: (HOUR, HOUR * 24 * args.days),
        churn: Some(ChurnModel {
            departure: 0.5,
            ..ChurnModel::default()
        }),
        model: NetworkModel {
            min_latency: Duration::from_millis(10),
            max_latency: Duration::from_millis(90),
            jitter: Duration::from_millis(5),
            loss: args.loss,
            connect_round_trips: args.connect_round_trips,
        },
        sync_interval: Duration::from_secs(60 * args.sync_minutes),
        kad_refresh: Duration::from_secs(60 * args.kad_refresh_minutes),
        seed: args.seed,
        ..WorldConfig::default()
    };
    println!("{args:?}");
    let started = Instant::now();
    let report = MailboxWorld::new(config).run();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (median, _) = report.replacement(0.4, Duration::ZERO);
    println!("wall time: {:.0} s", started.elapsed().as_secs_f64());
    println!(
        "nodes: {} at the start, {} joined, {} left for good, {} came back",
        args.nodes, report.arrivals, report.departures, report.returns
    );
    println!(
        "messages: {} sent, {} stored, {} shown once, {} lost, {} shown twice",
        report.sent, report.stored, report.delivered_once, report.lost, report.shown_twice
    );
    println!(
        "acked envelopes back on a replica online for the last hour: {}",
        report.acked_still_held
    );
    println!(
        "opportunities to fail: {} envelopes handed to newcomers, {} acked envelopes on \
         replicas away during the ack that came back, {} day rotations",
        report.handoffs_to_newcomers, report.away_during_ack_returned, report.day_rotations
    );
    println!(
        "replicas replaced per mailbox: median {:.0}% over {} mailboxes",
        median * 100.0,
        report.replaced.len()
    );
    println!(
        "reconnect to last message ({} recipients): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        report.reconnect.len(),
        ms(report.reconnect_quantile(0.5)),
        ms(report.reconnect_quantile(0.99)),
        ms(report.reconnect_quantile(1.0)),
    );
    println!(
        "floor of reconnect (the least any reader could take): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        ms(report.reconnect_floor_quantile(0.5)),
        ms(report.reconnect_floor_quantile(0.99)),
        ms(report.reconnect_floor_quantile(1.0)),
    );
    println!(
        "reconciliation: {:.0} bytes per node per hour online ({:.0} node-hours)",
        report.sync_bytes_per_node_hour(),
        report.replica_hours
    );
    let held = report.lost == 0
        && report.shown_twice == 0
        && report.delivered_once == report.stored
        && report.acked_still_held == 0
        && report.stored > 0;
    if held {
        println!("invariants: held");
        ExitCode::SUCCESS
    } else {
        println!("invariants: FAILED");
        ExitCode::FAILURE
    }
}
