//! What 10,000 strangers cost a messenger: bob's engine on a `SqliteStore`
//! takes a first message from each of `--strangers` users with fresh keys
//! (every one a message request), then one from carol, a genuine new
//! contact, which he accepts.
//!
//! ```sh
//! cargo run --release -p shoal-benches --bin strangers -- --help
//! ```
//!
//! Each stranger is a whole engine (a new identity: root key, device key,
//! certificate, X3DH from bob's bundle) that sends one message; a tenth of
//! them send `--burst` messages (over the per-stranger quota), the others
//! one of `--size` bytes (the total byte quota fills with fewer requests
//! than the count quota allows). Bob is driven directly (no network): the
//! costs measured are his.
//!
//! Printed, one `key value` per line (`--json` for one JSON object):
//! - live heap bytes (every Rust allocation of the process, counted by the
//!   allocator; SQLite's own page cache is outside it) and
//!   `VmRSS`/`VmHWM` from `/proc/self/status`: after bob
//!   opened with nothing (the baseline), after the strangers, and after
//!   bob reopened from the files;
//! - bob's counters (pending requests, request bytes and messages, held
//!   bytes in memory, requests dropped), his refusals, the database files'
//!   sizes, the envelopes he sent to strangers (must be 0) and whether
//!   carol's message arrived once accepted.
//!
//! The process exits with status 1 if an invariant fails: a quota
//! exceeded, anything sent to a stranger, carol's message missing.

#![allow(clippy::unwrap_used)]

use std::alloc::System;
use std::path::Path;
use std::time::Instant;

use clap::Parser;
use shoal_im::engine::{
    Engine, EngineConfig, Event, MAX_REQUESTS, REQUEST_BYTES_TOTAL, REQUEST_MESSAGES_TOTAL,
};
use shoal_im::{MemoryStore, UserId};
use shoal_messenger::SqliteStore;
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

#[derive(Parser, Debug)]
#[command(about = "Memory and disk a messenger spends on message requests from strangers")]
struct Args {
    /// Strangers, each with fresh keys.
    #[arg(long, default_value_t = 10_000)]
    strangers: usize,
    /// Body size of a stranger's single message, bytes.
    #[arg(long, default_value_t = 16 * 1024)]
    size: usize,
    /// Messages sent by each of the strangers that send several (one in ten).
    #[arg(long, default_value_t = 24)]
    burst: usize,
    /// Print one JSON object instead of `key value` lines.
    #[arg(long)]
    json: bool,
}

/// A report line: name and value.
struct Report(Vec<(String, String)>);

impl Report {
    fn put(&mut self, key: &str, value: impl ToString) {
        self.0.push((key.to_owned(), value.to_string()));
    }

    fn print(&self, json: bool) {
        if json {
            let fields: Vec<String> = self
                .0
                .iter()
                .map(|(k, v)| match v.parse::<f64>() {
                    Ok(_) => format!("\"{k}\": {v}"),
                    Err(_) => format!("\"{k}\": \"{v}\""),
                })
                .collect();
            println!("{{{}}}", fields.join(", "));
        } else {
            for (k, v) in &self.0 {
                println!("{k} {v}");
            }
        }
    }
}

/// Live heap bytes of the whole process.
fn live_heap() -> i64 {
    // Reallocations are already counted in both (growth as allocated,
    // shrinking as deallocated).
    let stats = GLOBAL.stats();
    stats.bytes_allocated as i64 - stats.bytes_deallocated as i64
}

/// A `/proc/self/status` field in kB (0 where there is none).
fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

fn seed(n: u64) -> [u8; 32] {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&n.to_le_bytes());
    seed[8] = 0x5a;
    seed
}

/// A new user (fresh keys) who writes `bodies` to bob: the envelopes.
fn stranger(
    n: u64,
    bob: &Engine<SqliteStore>,
    now: Instant,
    bodies: &[String],
) -> (UserId, Vec<Vec<u8>>) {
    let mut engine = Engine::open(
        MemoryStore::new(),
        EngineConfig::default(),
        seed(n),
        now,
        1_800_000_000,
    )
    .unwrap();
    let b = bob.user_id();
    engine.add_contact(b, "bob").unwrap();
    engine.set_online(now, b, true).unwrap();
    engine.set_bundle(now, b, &bob.prekey_bundle()).unwrap();
    for body in bodies {
        engine.send(now, 1, b, body).unwrap();
    }
    let envelopes = std::iter::from_fn(|| engine.poll_transmit())
        .map(|t| t.envelope)
        .collect();
    (engine.user_id(), envelopes)
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("messenger.db");
    let now = Instant::now();
    let mut report = Report(Vec::new());
    let open = |now| {
        Engine::open(
            SqliteStore::open(&db).unwrap(),
            EngineConfig::default(),
            seed(u64::MAX),
            now,
            1_800_000_000,
        )
        .unwrap()
    };
    let mut bob = open(now);
    let heap_base = live_heap();
    report.put("strangers", args.strangers);
    report.put("baseline_heap_bytes", heap_base);
    report.put("baseline_rss_kb", status_kb("VmRSS:"));

    let started = Instant::now();
    let (mut requests, mut other_events, mut sent) = (0usize, 0usize, 0usize);
    let big = "x".repeat(args.size);
    for n in 0..args.strangers as u64 {
        let bodies: Vec<String> = if n % 10 == 0 {
            (0..args.burst).map(|i| format!("hello {i}")).collect()
        } else {
            vec![big.clone()]
        };
        let (_, envelopes) = stranger(n, &bob, now, &bodies);
        for e in envelopes {
            bob.handle_envelope(now, &e).unwrap();
        }
        while let Some(event) = bob.poll_event() {
            match event {
                Event::MessageRequest { .. } => requests += 1,
                _ => other_events += 1,
            }
        }
        while bob.poll_transmit().is_some() {
            sent += 1;
        }
    }
    let flood_secs = started.elapsed().as_secs_f64();
    let counters = bob.counters();
    report.put("flood_seconds", format!("{flood_secs:.1}"));
    report.put("flood_heap_bytes", live_heap());
    report.put("flood_rss_kb", status_kb("VmRSS:"));
    report.put("peak_rss_kb", status_kb("VmHWM:"));
    report.put("request_events", requests);
    report.put("other_events", other_events);
    report.put("envelopes_sent_to_strangers", sent);
    report.put("pending_requests", bob.requests().len());
    report.put("unnamed_contacts", counters.unnamed_contacts);
    report.put("request_messages", counters.request_messages);
    report.put("request_bytes", counters.request_bytes);
    report.put("held_bytes_in_memory", counters.held_bytes_in_memory);
    report.put("requests_dropped", counters.requests_dropped);
    report.put("refused_over_quota", bob.refusals().count("request-quota"));

    // Reopened from the files: what a restart loads.
    drop(bob);
    let mut bob = open(now);
    report.put("reopened_heap_bytes", live_heap());
    report.put("reopened_unnamed_contacts", bob.counters().unnamed_contacts);

    // A genuine new contact still gets through, and is heard once accepted.
    let (carol, envelopes) = stranger(
        u64::MAX - 1,
        &bob,
        now,
        &["hello bob, it's carol".to_owned()],
    );
    for e in envelopes {
        bob.handle_envelope(now, &e).unwrap();
    }
    let asked = std::iter::from_fn(|| bob.poll_event())
        .any(|e| e == Event::MessageRequest { contact: carol });
    bob.set_online(now, carol, true).unwrap();
    bob.add_contact(carol, "carol").unwrap();
    let heard = std::iter::from_fn(|| bob.poll_event()).any(|e| {
        matches!(e, Event::Received { contact, ref message, .. }
            if contact == carol && message.text() == "hello bob, it's carol")
    });
    let acked = std::iter::from_fn(|| bob.poll_transmit()).count();
    report.put("genuine_request_arrived", asked);
    report.put("genuine_message_shown_on_accept", heard);
    report.put("genuine_acknowledgements", acked);
    drop(bob);

    let files: u64 = ["", "-wal", "-shm"]
        .iter()
        .map(|s| file_len(&dir.path().join(format!("messenger.db{s}"))))
        .sum();
    report.put("db_bytes", file_len(&db));
    report.put("db_files_bytes", files);
    report.print(args.json);

    let ok = sent == 0
        && other_events == 0
        && counters.unnamed_contacts <= MAX_REQUESTS
        && counters.request_bytes <= REQUEST_BYTES_TOTAL
        && counters.request_messages <= REQUEST_MESSAGES_TOTAL
        && counters.held_bytes_in_memory == 0
        && asked
        && heard
        && acked > 0;
    if ok {
        std::process::ExitCode::SUCCESS
    } else {
        eprintln!("strangers: an invariant failed (see the figures above)");
        std::process::ExitCode::FAILURE
    }
}
