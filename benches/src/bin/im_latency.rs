//! End-to-end message latency through the whole messenger stack on TCP
//! loopback: two `shoal_messenger::Messenger`s (alice and bob) and a seed
//! node they both bootstrap through, in this process, on a 2-worker tokio
//! runtime.
//!
//! ```sh
//! cargo run --release -p shoal-benches --bin im_latency -- --help
//! ```
//!
//! Per variant, three fresh nodes start; alice and bob add each other, alice
//! sends a first message (first contact: directory lookup in the DHT, X3DH,
//! dial, session) and `--warmup` more, then `--messages` measured ones, one
//! at a time. For each, the clock starts just before `alice.send(..)` is
//! called and stops when bob's event receiver yields `Event::Received` for
//! that id ("one way"), and when alice's yields `Event::Delivered` ("round
//! trip": bob's durable commit, his ack, alice's commit of the receipt).
//!
//! Variants, in this order:
//!
//! - `memory`: `shoal_im::MemoryStore` on both sides (no disk at all);
//! - `sqlite`: `SqliteStore` on both sides, each in a fresh temp directory
//!   (WAL, `synchronous=NORMAL`, as the messenger ships);
//! - `sqlite+fsync`: the same, plus an `fdatasync` of the WAL file after
//!   every commit, which is what `synchronous=FULL` adds in WAL mode
//!   (`SqliteStore` has no setting for it, so the bench emulates it);
//! - `raw TCP`: the baseline, a tokio `TcpStream` pair with `TCP_NODELAY`
//!   echoing one buffer of the median envelope size at a time: the round
//!   trip is measured, the one-way figure is half of it.
//!
//! Every store is wrapped to time its commits, which gives the breakdown
//! table (where a message's time goes). A last section runs the
//! `shoal_im` engine alone (both ends in one thread, memory stores, no
//! network) to separate the engine's CPU time from the node around it. `--csv` writes one row per measured
//! message: `variant,seq,send_returned_us,received_us,delivered_us,
//! bob_commit_start_us,bob_commit_us` (for `raw TCP`, `received_us` is half
//! the round trip and `delivered_us` the round trip).

#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use shoal_benches::latency::{Stats, stats};
use shoal_benches::timed_store::{CommitLog, Timed};
use shoal_im::{MemoryStore, MessageId, Store};
use shoal_messenger::{Event, Messenger, MessengerConfig, SqliteStore};
use shoal_transport::{Multiaddr, TcpTransport};
use tokio::sync::mpsc;

type BoxError = Box<dyn std::error::Error>;

/// Longest wait for one message (sent, received and delivered).
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the first message (lookup, X3DH, dial).
const FIRST_CONTACT_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause after the nodes start, so their presence records are published
/// before alice looks bob up.
const SETTLE: Duration = Duration::from_secs(1);

#[derive(Parser, Debug)]
#[command(
    about = "End-to-end message latency through the messenger on TCP loopback (SQLite, memory, SQLite+fsync), against a raw TCP ping"
)]
struct Args {
    /// Measured messages per variant, sent one at a time.
    #[arg(long, default_value_t = 2_000)]
    messages: usize,
    /// Unmeasured messages per variant after the first contact.
    #[arg(long, default_value_t = 200)]
    warmup: usize,
    /// Bytes of text per message.
    #[arg(long, default_value_t = 100)]
    text_bytes: usize,
    /// Bytes per raw TCP ping (default: the median envelope size measured).
    #[arg(long)]
    baseline_bytes: Option<usize>,
    /// Skip the `sqlite+fsync` variant.
    #[arg(long)]
    no_fsync: bool,
    /// Where the temp directories for the databases go (default: the
    /// system's temp directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Write one row per measured message to this CSV file.
    #[arg(long)]
    csv: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Memory,
    Sqlite,
    SqliteFsync,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Memory => "memory",
            Variant::Sqlite => "sqlite",
            Variant::SqliteFsync => "sqlite+fsync",
        }
    }
}

fn open_store(variant: Variant, dir: &Path, name: &str) -> Result<(Timed, CommitLog), BoxError> {
    let log = CommitLog::default();
    let (inner, wal): (Box<dyn Store>, Option<File>) = match variant {
        Variant::Memory => (Box::new(MemoryStore::new()), None),
        Variant::Sqlite => (Box::new(SqliteStore::open(dir.join(name))?), None),
        Variant::SqliteFsync => {
            let store = SqliteStore::open(dir.join(name))?;
            // The WAL exists once the schema has been written.
            let wal = File::open(dir.join(format!("{name}-wal")))?;
            (Box::new(store), Some(wal))
        }
    };
    Ok((Timed::new(inner, log.clone(), wal), log))
}

/// A messenger, its events and its store's commit log.
struct Node {
    messenger: Messenger,
    events: mpsc::Receiver<Event>,
    commits: CommitLog,
}

async fn start_node(
    store: impl Store,
    commits: CommitLog,
    bootstrap: Option<Multiaddr>,
    tap: Option<mpsc::Sender<Bytes>>,
) -> Result<Node, BoxError> {
    let config = MessengerConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse()?],
        bootstrap: bootstrap.into_iter().collect(),
        envelope_tap: tap,
        ..MessengerConfig::default()
    };
    let (messenger, events) = tokio::time::timeout(
        FIRST_CONTACT_TIMEOUT,
        Messenger::start(store, TcpTransport::default(), config),
    )
    .await
    .map_err(|_| "messenger start timed out")??;
    Ok(Node {
        messenger,
        events,
        commits,
    })
}

/// One message's timeline, from just before `send` was called.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// `send` returned (alice's engine composed, encrypted and committed).
    send_returned: Duration,
    /// Bob's event receiver yielded `Received`.
    received: Duration,
    /// Alice's event receiver yielded `Delivered`.
    delivered: Duration,
    /// Bob's store began the commit of the message.
    bob_commit_start: Option<Duration>,
    /// How long that commit took.
    bob_commit: Option<Duration>,
    /// Alice's commits in this message's round (the send, the receipt).
    alice_commits: [Option<Duration>; 2],
}

/// The next event `pick` accepts, with the moment the receiver yielded it.
async fn next_event(
    events: &mut mpsc::Receiver<Event>,
    pick: impl Fn(&Event) -> Option<MessageId>,
) -> Result<(MessageId, Instant), String> {
    loop {
        let Some(event) = events.recv().await else {
            return Err("event stream ended".to_owned());
        };
        if let Some(id) = pick(&event) {
            return Ok((id, Instant::now()));
        }
        if let Event::Error { error, .. } = event {
            eprintln!("messenger error: {error}");
        }
    }
}

fn received_id(e: &Event) -> Option<MessageId> {
    match e {
        Event::Received { id, .. } => Some(*id),
        _ => None,
    }
}

fn delivered_id(e: &Event) -> Option<MessageId> {
    match e {
        Event::Delivered { id, .. } => Some(*id),
        _ => None,
    }
}

/// Sends one message from alice to bob and waits for bob's `Received` and
/// alice's `Delivered`, all three in one task so each is timestamped the
/// moment it happens.
async fn one_message(
    alice: &mut Node,
    bob: &mut Node,
    text: &str,
    limit: Duration,
) -> Result<Sample, BoxError> {
    let to = bob.messenger.user_id();
    let bob_seen = bob.commits.lock().unwrap().len();
    let alice_seen = alice.commits.lock().unwrap().len();
    let messenger = &alice.messenger;
    let alice_events = &mut alice.events;
    let bob_events = &mut bob.events;
    let t0 = Instant::now();
    let send = async {
        let id = messenger.send(to, text).await?;
        Ok::<_, shoal_messenger::MessengerError>((id, t0.elapsed()))
    };
    let (sent, received, delivered) = tokio::time::timeout(limit, async {
        tokio::join!(
            send,
            next_event(bob_events, received_id),
            next_event(alice_events, delivered_id),
        )
    })
    .await
    .map_err(|_| format!("message not received and delivered within {limit:?}"))?;
    let (id, send_returned) = sent?;
    let (rid, received) = received?;
    let (did, delivered) = delivered?;
    if rid != id || did != id {
        return Err(format!("sent {id}, bob received {rid}, alice got a receipt for {did}").into());
    }
    let bob_commit = bob.commits.lock().unwrap().get(bob_seen).copied();
    let alice_log = alice.commits.lock().unwrap();
    let alice_commits = [
        alice_log.get(alice_seen).map(|c| c.1),
        alice_log.get(alice_seen + 1).map(|c| c.1),
    ];
    Ok(Sample {
        send_returned,
        received: received - t0,
        delivered: delivered - t0,
        bob_commit_start: bob_commit.map(|c| c.0.saturating_duration_since(t0)),
        bob_commit: bob_commit.map(|c| c.1),
        alice_commits,
    })
}

/// Picks one figure out of a sample.
type Pick = dyn Fn(&Sample) -> Option<Duration>;

/// What one variant measured.
struct Report {
    variant: Variant,
    first_contact: Duration,
    samples: Vec<Sample>,
    envelope_sizes: Vec<usize>,
}

async fn run_variant(variant: Variant, args: &Args) -> Result<Report, BoxError> {
    let dir = match &args.dir {
        Some(d) => tempfile::Builder::new()
            .prefix("im_latency")
            .tempdir_in(d)?,
        None => tempfile::Builder::new().prefix("im_latency").tempdir()?,
    };
    let seed_log = CommitLog::default();
    let seed_store = Timed::new(Box::new(MemoryStore::new()), seed_log.clone(), None);
    let seed = start_node(seed_store, seed_log, None, None).await?;
    let seed_addr = seed
        .messenger
        .listen_addrs()
        .into_iter()
        .next()
        .ok_or("seed has no listen address")?;
    let (store, log) = open_store(variant, dir.path(), "alice.db")?;
    let mut alice = start_node(store, log, Some(seed_addr.clone()), None).await?;
    // Bounded: copies beyond it are dropped, which only thins the sizes.
    let (tap, mut tapped) = mpsc::channel(args.warmup + args.messages + 64);
    let (store, log) = open_store(variant, dir.path(), "bob.db")?;
    let mut bob = start_node(store, log, Some(seed_addr), Some(tap)).await?;
    tokio::time::sleep(SETTLE).await;
    let (a, b) = (alice.messenger.user_id(), bob.messenger.user_id());
    alice.messenger.add_contact(b, "bob").await?;
    bob.messenger.add_contact(a, "alice").await?;

    let text: String = "x".repeat(args.text_bytes);
    let first = one_message(&mut alice, &mut bob, &text, FIRST_CONTACT_TIMEOUT).await?;
    for _ in 0..args.warmup {
        one_message(&mut alice, &mut bob, &text, STEP_TIMEOUT).await?;
    }
    while tapped.try_recv().is_ok() {}
    let mut samples = Vec::with_capacity(args.messages);
    for _ in 0..args.messages {
        samples.push(one_message(&mut alice, &mut bob, &text, STEP_TIMEOUT).await?);
    }
    let mut envelope_sizes = Vec::new();
    while let Ok(envelope) = tapped.try_recv() {
        envelope_sizes.push(envelope.len());
    }
    for node in [&alice, &bob, &seed] {
        tokio::time::timeout(STEP_TIMEOUT, node.messenger.shutdown())
            .await
            .map_err(|_| "shutdown timed out")?;
    }
    Ok(Report {
        variant,
        first_contact: first.received,
        samples,
        envelope_sizes,
    })
}

/// The engine alone, both ends in this thread on memory stores, no
/// network: per message, alice's `send` (compose, encrypt, commit), bob's
/// `handle_envelope` (decrypt, commit, seal the ack) and alice's
/// `handle_envelope` of the ack.
fn engine_only(warmup: usize, n: usize, text: &str) -> Result<Vec<[Duration; 3]>, BoxError> {
    use shoal_im::engine::{Engine, EngineConfig, Event as EngineEvent};
    let unix_s = 1_800_000_000;
    let now = Instant::now();
    let mut alice = Engine::open(
        MemoryStore::new(),
        EngineConfig::default(),
        [1; 32],
        now,
        unix_s,
    )?;
    let mut bob = Engine::open(
        MemoryStore::new(),
        EngineConfig::default(),
        [2; 32],
        now,
        unix_s,
    )?;
    let (a, b) = (alice.user_id(), bob.user_id());
    alice.add_contact(b, "bob")?;
    bob.add_contact(a, "alice")?;
    alice.set_bundle(now, b, &bob.prekey_bundle())?;
    alice.set_online(now, b, true)?;
    bob.set_online(now, a, true)?;
    while alice.poll_transmit().is_some() {}
    let mut out = Vec::with_capacity(n);
    for i in 0..warmup + n {
        let t0 = Instant::now();
        let id = alice.send(t0, unix_s * 1000, b, text)?;
        let t1 = Instant::now();
        while let Some(t) = alice.poll_transmit() {
            bob.handle_envelope(Instant::now(), &t.envelope)?;
        }
        let t2 = Instant::now();
        let mut shown = false;
        while let Some(e) = bob.poll_event() {
            shown |= matches!(e, EngineEvent::Received { id: r, .. } if r == id);
        }
        let t3 = Instant::now();
        while let Some(t) = bob.poll_transmit() {
            alice.handle_envelope(Instant::now(), &t.envelope)?;
        }
        let t4 = Instant::now();
        let mut delivered = false;
        while let Some(e) = alice.poll_event() {
            delivered |= matches!(e, EngineEvent::Delivered { id: d, .. } if d == id);
        }
        if !shown || !delivered {
            return Err(format!("engine only: message {i} not received or not delivered").into());
        }
        if i >= warmup {
            out.push([t1 - t0, t2 - t1, t4 - t3]);
        }
    }
    Ok(out)
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

fn us(d: Duration) -> u128 {
    d.as_micros()
}

fn row(variant: &str, figure: &str, s: &Stats) {
    println!(
        "| {variant} | {figure} | {} | {} | {} | {} | {} |",
        ms(s.median),
        ms(s.p90),
        ms(s.p99),
        ms(s.max),
        ms(s.mean)
    );
}

fn median_usize(mut v: Vec<usize>) -> Option<usize> {
    v.sort_unstable();
    v.get(v.len() / 2).copied()
}

fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> Result<(), BoxError> {
    if args.messages == 0 {
        return Err("--messages must be at least 1".into());
    }
    let mut variants = vec![Variant::Memory, Variant::Sqlite];
    if !args.no_fsync {
        variants.push(Variant::SqliteFsync);
    }
    let mut reports = Vec::new();
    for variant in variants {
        eprintln!("running {} ...", variant.name());
        reports.push(run_variant(variant, &args).await?);
    }
    let envelope = median_usize(
        reports
            .iter()
            .flat_map(|r| r.envelope_sizes.iter().copied())
            .collect(),
    )
    .unwrap_or(300);
    let baseline_bytes = args.baseline_bytes.unwrap_or(envelope);
    eprintln!("running engine only ...");
    let text: String = "x".repeat(args.text_bytes);
    let engine = engine_only(args.warmup, args.messages, &text)?;
    eprintln!("running raw TCP ...");
    let rtts = shoal_benches::latency::tcp_echo_round_trips(
        baseline_bytes,
        args.warmup,
        args.messages,
        STEP_TIMEOUT,
    )
    .await?;
    let rtt = stats(rtts.iter().copied()).ok_or("no round trips")?;
    let half = stats(rtts.iter().map(|d| *d / 2)).ok_or("no round trips")?;

    println!(
        "## Messaging latency, TCP loopback: {} messages one at a time after {} warm-up, {}-byte texts, {}-byte envelopes (median)\n",
        args.messages, args.warmup, args.text_bytes, envelope
    );
    println!(
        "One way = just before `alice.send` → bob's receiver yields `Received`; round trip = → alice's receiver yields `Delivered`. Raw TCP: {baseline_bytes}-byte echo with TCP_NODELAY, round trip measured, one way = RTT/2.\n"
    );
    println!("| variant | figure | median ms | p90 ms | p99 ms | max ms | mean ms |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    let mut one_way = Vec::new();
    for r in &reports {
        let name = r.variant.name();
        let recv = stats(r.samples.iter().map(|s| s.received)).ok_or("no samples")?;
        let deliv = stats(r.samples.iter().map(|s| s.delivered)).ok_or("no samples")?;
        row(name, "one way (→ Received)", &recv);
        row(name, "round trip (→ Delivered)", &deliv);
        one_way.push((name, recv, deliv));
    }
    row("raw TCP", "one way (RTT/2)", &half);
    row("raw TCP", "round trip", &rtt);

    println!("\n### Ratios to raw TCP (same run)\n");
    println!(
        "| variant | one way median / (RTT/2) | one way p99 / (RTT/2 p99) | round trip median / RTT |"
    );
    println!("|---|---:|---:|---:|");
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    for (name, recv, deliv) in &one_way {
        println!(
            "| {name} | {:.1}× | {:.1}× | {:.1}× |",
            ratio(recv.median, half.median),
            ratio(recv.p99, half.p99),
            ratio(deliv.median, rtt.median)
        );
    }
    if let (Some(m), Some(s)) = (
        one_way.iter().find(|o| o.0 == "memory"),
        one_way.iter().find(|o| o.0 == "sqlite"),
    ) {
        println!(
            "\nSQLite over memory: one way median +{} ms ({:.2}×), round trip median +{} ms ({:.2}×).",
            ms(s.1.median.saturating_sub(m.1.median)),
            ratio(s.1.median, m.1.median),
            ms(s.2.median.saturating_sub(m.2.median)),
            ratio(s.2.median, m.2.median)
        );
    }

    println!("\n### Where the time goes (medians, ms from just before `send`)\n");
    println!(
        "| variant | first contact | `send` returned | bob's commit starts | bob's commit | bob's commit ends → `Received` | `Received` → `Delivered` | alice's commit (send) | alice's commit (receipt) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &reports {
        let med = |f: &Pick| {
            stats(r.samples.iter().filter_map(f)).map_or("-".to_owned(), |s| ms(s.median))
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.variant.name(),
            ms(r.first_contact),
            med(&|s| Some(s.send_returned)),
            med(&|s| s.bob_commit_start),
            med(&|s| s.bob_commit),
            med(&|s| {
                let end = s.bob_commit_start? + s.bob_commit?;
                Some(s.received.saturating_sub(end))
            }),
            med(&|s| Some(s.delivered.saturating_sub(s.received))),
            med(&|s| s.alice_commits[0]),
            med(&|s| s.alice_commits[1]),
        );
    }
    println!("\n### The engine alone (memory stores, both ends in one thread, no network; ms)\n");
    println!("| step | median | p90 | p99 | max | mean |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (i, step) in [
        "alice `send` (compose, encrypt, commit)",
        "bob `handle_envelope` (decrypt, commit, seal ack)",
        "alice `handle_envelope` (the ack)",
    ]
    .iter()
    .enumerate()
    {
        let s = stats(engine.iter().map(|e| e[i])).ok_or("no samples")?;
        println!(
            "| {step} | {} | {} | {} | {} | {} |",
            ms(s.median),
            ms(s.p90),
            ms(s.p99),
            ms(s.max),
            ms(s.mean)
        );
    }
    println!("\n### Commit durations (ms)\n");
    println!("| variant | commit | median | p90 | p99 | max | mean | over 1 ms |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for r in &reports {
        let picks: [(&str, &Pick); 3] = [
            ("bob (message + ack)", &|s| s.bob_commit),
            ("alice (send)", &|s| s.alice_commits[0]),
            ("alice (receipt)", &|s| s.alice_commits[1]),
        ];
        for (name, pick) in picks {
            let all: Vec<Duration> = r.samples.iter().filter_map(pick).collect();
            let slow = all
                .iter()
                .filter(|d| **d > Duration::from_millis(1))
                .count();
            if let Some(s) = stats(all) {
                println!(
                    "| {} | {name} | {} | {} | {} | {} | {} | {slow} |",
                    r.variant.name(),
                    ms(s.median),
                    ms(s.p90),
                    ms(s.p99),
                    ms(s.max),
                    ms(s.mean)
                );
            }
        }
    }

    if let Some(path) = &args.csv {
        let mut out = String::from(
            "variant,seq,send_returned_us,received_us,delivered_us,bob_commit_start_us,bob_commit_us\n",
        );
        let opt = |d: Option<Duration>| d.map_or(String::new(), |d| us(d).to_string());
        for r in &reports {
            for (i, s) in r.samples.iter().enumerate() {
                out.push_str(&format!(
                    "{},{i},{},{},{},{},{}\n",
                    r.variant.name(),
                    us(s.send_returned),
                    us(s.received),
                    us(s.delivered),
                    opt(s.bob_commit_start),
                    opt(s.bob_commit)
                ));
            }
        }
        for (i, d) in rtts.iter().enumerate() {
            out.push_str(&format!("raw_tcp,{i},,{},{},,\n", us(*d / 2), us(*d)));
        }
        std::fs::write(path, out)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
