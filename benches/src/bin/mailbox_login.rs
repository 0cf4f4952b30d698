//! Reconnect -> last waiting message: bob comes back after `--days` days
//! away, during which each of his `--contacts` contacts wrote
//! `--messages` messages that wait in mailboxes; how long until the last
//! one is shown, and how many replica lookups the login costs. Beside it,
//! in the same run, the same login with nothing waiting (the fixed cost of
//! joining and reading every day of every contact).
//!
//! ```sh
//! cargo run --release -p shoal-benches --bin mailbox_login -- --contacts 20
//! ```
//!
//! Eight service nodes keep mailboxes on 127.0.1.1 … 127.0.8.1 (eight
//! /24s); bob and the contacts are real messengers (SQLite stores) on
//! 127.0.0.1, all over TCP in this process. "Away `--days` days" is bob's
//! stored read-through day set that far back before each login, so he
//! reads `--days` + 3 days of every contact (section 12.6 of
//! docs/PROTOCOL.md); the messages wait in today's mailboxes. The contacts
//! are offline when bob logs in, so everything comes from the mailboxes.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use shoal_benches::latency::stats;
use shoal_identity::Keypair;
use shoal_im::UserId;
use shoal_im::mailbox_keys::day_of;
use shoal_mailbox::{Replica, ReplicaConfig, ReplicaStore, SqliteStore as ReplicaSqlite};
use shoal_messenger::service_node::{self, SpawnedNode};
use shoal_messenger::{Event, Messenger, MessengerConfig, SqliteStore};
use shoal_transport::{Multiaddr, TcpConfig, TcpTransport};
use tokio::sync::mpsc;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Parser, Debug)]
#[command(about = "Reconnect -> last waiting message, read from mailboxes")]
struct Args {
    /// Contacts who wrote while bob was away.
    #[arg(long, default_value_t = 20)]
    contacts: usize,
    /// Messages each contact wrote.
    #[arg(long, default_value_t = 2)]
    messages: usize,
    /// Days bob was away.
    #[arg(long, default_value_t = 7)]
    days: u64,
    /// Logins timed (each beside one with nothing waiting).
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

/// Bob's address.
const BOB_IP: &str = "127.2.0.1";

/// Upper bound for any one wait.
const LIMIT: Duration = Duration::from_secs(600);

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Each user on a loopback address of its own /24, as users on the
/// internet are (replicas limit each network's rate).
fn config(ip: &str) -> MessengerConfig {
    MessengerConfig {
        listen: vec![format!("/ip4/{ip}/tcp/0").parse().unwrap()],
        // Joined with `connect` (one user after another, as users come
        // and go), not all at once through bootstrap addresses.
        bootstrap: Vec::new(),
        ..MessengerConfig::default()
    }
}

async fn start(
    path: &Path,
    ip: &str,
    seed: &Multiaddr,
) -> Result<(Messenger, mpsc::Receiver<Event>), BoxError> {
    // The previous run's store may still be closing.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match SqliteStore::open(path) {
            Ok(store) => {
                // Dials leave from the user's own address too.
                let transport = TcpTransport::new(TcpConfig {
                    source_ip: Some(ip.parse()?),
                    ..TcpConfig::default()
                });
                let (messenger, events) = Messenger::start(store, transport, config(ip)).await?;
                messenger.connect(seed.clone()).await?;
                return Ok((messenger, events));
            }
            Err(e) if Instant::now() > deadline => return Err(e.into()),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Waits for events until `done` says so.
async fn until(
    events: &mut mpsc::Receiver<Event>,
    mut done: impl FnMut(&Event) -> bool,
) -> Result<(), BoxError> {
    tokio::time::timeout(LIMIT, async {
        while let Some(event) = events.recv().await {
            if done(&event) {
                return Ok(());
            }
        }
        Err("event stream ended".into())
    })
    .await
    .map_err(|_| "timed out")?
}

/// Sets bob's read-through day `days` back for every contact, in his store
/// (the messenger is stopped).
async fn away(path: &Path, days: u64) -> Result<(), BoxError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let store = loop {
        match SqliteStore::open(path) {
            Ok(store) => break store,
            Err(e) if Instant::now() > deadline => return Err(e.into()),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let mut engine = shoal_messenger::open_engine(store, &MessengerConfig::default())?;
    let day = day_of(unix_now()).saturating_sub(days);
    for contact in engine.contacts() {
        engine.mailbox_read_through(contact.user, day)?;
    }
    Ok(())
}

/// Contact `i`'s address (one /24 each).
fn contact_ip(i: usize) -> String {
    format!("127.1.{}.1", i % 256)
}

/// Contact `i` comes online, writes `texts` to bob, waits until each is
/// delivered (bob online) or stored (bob away), and leaves: contacts come
/// one after another, as they would over a week.
async fn contact_writes(
    i: usize,
    path: &Path,
    seed: &Multiaddr,
    bob: UserId,
    first: bool,
    texts: &[String],
) -> Result<Messenger, BoxError> {
    let (m, mut events) = start(path, &contact_ip(i), seed).await?;
    if first {
        m.add_contact(bob, "bob").await?;
    }
    for text in texts {
        m.send(bob, text).await?;
    }
    let mut done = 0;
    until(&mut events, |e| {
        if matches!(e, Event::Stored { .. } | Event::Delivered { .. }) {
            done += 1;
        }
        done == texts.len()
    })
    .await
    .map_err(|e| format!("contact {i}: {done} of {} stored: {e}", texts.len()))?;
    m.shutdown().await;
    Ok(m)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let dir = tempfile::tempdir()?;
    let mut nodes: Vec<SpawnedNode> = Vec::new();
    for i in 0..8 {
        let key = Keypair::generate();
        let path = dir.path().join(format!("node{i}.db"));
        let store: Box<dyn ReplicaStore> = Box::new(ReplicaSqlite::open(
            &path,
            shoal_mailbox::sqlite::Durability::Process,
        )?);
        let replica = Replica::open(
            key.clone(),
            store,
            ReplicaConfig::default(),
            unix_now() * 1000,
        )?;
        let listen = format!("/ip4/127.0.{}.1/tcp/0", i + 1).parse()?;
        let seed = nodes.first().map(|n| n.addr.clone());
        nodes.push(
            service_node::spawn(key, TcpTransport::default(), listen, seed.as_ref(), replica)
                .await?,
        );
    }
    let seed = nodes[0].addr.clone();
    let bob_path = dir.path().join("bob.db");
    let paths: Vec<PathBuf> = (0..args.contacts)
        .map(|i| dir.path().join(format!("contact{i}.db")))
        .collect();

    // First contact, bob online: he adds each contact first (strangers'
    // requests are rate-limited, contacts' messages are not).
    let (bob, mut bob_events) = start(&bob_path, BOB_IP, &seed).await?;
    let bob_id = bob.user_id();
    for (i, path) in paths.iter().enumerate() {
        let user = {
            let store = SqliteStore::open(path)?;
            shoal_messenger::open_engine(store, &MessengerConfig::default())?.user_id()
        };
        bob.add_contact(user, &format!("contact{i}")).await?;
        contact_writes(i, path, &seed, bob_id, true, &["hello".to_owned()]).await?;
        until(&mut bob_events, |e| matches!(e, Event::Received { .. })).await?;
    }
    bob.shutdown().await;
    drop(bob_events);
    println!(
        "set up: 8 mailbox nodes, {} contacts, {} messages each per login, away {} days",
        args.contacts, args.messages, args.days
    );

    let waiting = args.contacts * args.messages;
    let (mut last, mut empty, mut lookups, mut lookups_empty) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut passes: Vec<(Duration, bool)> = Vec::new();
    for run in 0..args.runs {
        // The contacts write while bob is away.
        for (i, path) in paths.iter().enumerate() {
            let texts: Vec<String> = (0..args.messages)
                .map(|k| format!("run {run} message {k}"))
                .collect();
            contact_writes(i, path, &seed, bob_id, false, &texts).await?;
        }

        // Bob logs in: time to the last message shown.
        away(&bob_path, args.days).await?;
        let t0 = Instant::now();
        let (bob, mut events) = start(&bob_path, BOB_IP, &seed).await?;
        let (mut shown, mut at_last, mut pass) = (0, t0, None);
        until(&mut events, |e| {
            match e {
                Event::Received { .. } => {
                    shown += 1;
                    at_last = Instant::now();
                }
                Event::MailboxesRead { complete, .. } if pass.is_none() => {
                    pass = Some((t0.elapsed(), *complete));
                }
                _ => {}
            }
            shown >= waiting && pass.is_some()
        })
        .await
        .map_err(|e| format!("login: {shown} of {waiting} shown: {e}"))?;
        last.push(at_last - t0);
        passes.push(pass.unwrap_or_default());
        lookups.push(bob.mailbox_lookups());
        bob.shutdown().await;
        drop(events);

        // The same login with nothing waiting: its first read pass.
        away(&bob_path, args.days).await?;
        let t0 = Instant::now();
        let (bob, mut events) = start(&bob_path, BOB_IP, &seed).await?;
        let mut pass = None;
        until(&mut events, |e| {
            if let Event::MailboxesRead { complete, .. } = e {
                pass = Some((t0.elapsed(), *complete));
            }
            pass.is_some()
        })
        .await?;
        let (took, complete) = pass.unwrap_or_default();
        empty.push(took);
        lookups_empty.push(bob.mailbox_lookups());
        bob.shutdown().await;
        drop(events);
        println!(
            "run {run}: last of {waiting} messages shown after {:.1} ms; its first read pass {:.1} ms ({}, {} lookups); nothing waiting: first pass {:.1} ms ({}, {} lookups)",
            last[run].as_secs_f64() * 1e3,
            passes[run].0.as_secs_f64() * 1e3,
            if passes[run].1 {
                "complete"
            } else {
                "incomplete"
            },
            lookups[run],
            took.as_secs_f64() * 1e3,
            if complete { "complete" } else { "incomplete" },
            lookups_empty[run],
        );
    }
    let (l, e) = (
        stats(last.iter().copied()).unwrap(),
        stats(empty.iter().copied()).unwrap(),
    );
    let min = |v: &[Duration]| v.iter().min().copied().unwrap_or_default();
    println!(
        "login -> last message: median {:.1} ms, min {:.1} ms; nothing waiting, first read pass: median {:.1} ms, min {:.1} ms; ratio of medians {:.2}",
        l.median.as_secs_f64() * 1e3,
        min(&last).as_secs_f64() * 1e3,
        e.median.as_secs_f64() * 1e3,
        min(&empty).as_secs_f64() * 1e3,
        l.median.as_secs_f64() / e.median.as_secs_f64().max(1e-9),
    );
    let per_login = lookups.iter().sum::<u64>() as f64 / lookups.len() as f64;
    println!(
        "lookups per login: {per_login:.0} ({} contacts x {} days)",
        args.contacts,
        args.days + 3
    );
    Ok(())
}
