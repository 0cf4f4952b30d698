//! Crash recovery of the whole messenger: bob runs the `chat` binary as a
//! child process and is killed with SIGKILL at random points of a
//! conversation (and, in some runs, aborts himself right after a durable
//! commit, before the acknowledgement leaves), then restarted on the same
//! SQLite file. Alice and a seed node run in this process. At the end:
//! everything alice saw acknowledged is in bob's history, nothing is in it
//! twice, both histories are identical, and both sides still use the
//! ratchet session of their first contact (no silent new handshake).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Process, TempDir};

use shoal_im::engine::{Engine, EngineConfig};
use shoal_im::{MemoryStore, MessageId, UserId};
use shoal_messenger::{Event, Messenger, MessengerConfig, SqliteStore};
use shoal_transport::{Multiaddr, TcpTransport};
use tokio::sync::mpsc;

/// Runs of bob that end in a crash.
const CRASHES: usize = 12;
/// Messages alice sends per run.
const PER_RUN: usize = 8;

/// splitmix64: reproducible random points without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Bob's `chat` process on `dir`, joining through `seed`; `abort_after`
/// sets the test hook that aborts right after the n-th durable commit of
/// the run (a store wrapper in the chat binary).
fn bob(dir: &Path, seed: &Multiaddr, abort_after: Option<u64>) -> Process {
    let mut args = vec![
        "--data-dir".to_owned(),
        dir.display().to_string(),
        "--listen".to_owned(),
        "/ip4/127.0.0.1/tcp/0".to_owned(),
        "--bootstrap".to_owned(),
        seed.to_string(),
    ];
    if let Some(n) = abort_after {
        args.extend(["--abort-after-commits".to_owned(), n.to_string()]);
    }
    Process::start("bob", env!("CARGO_BIN_EXE_chat"), args)
}

async fn messenger(seed: Option<&Multiaddr>) -> (Messenger, mpsc::Receiver<Event>) {
    let config = MessengerConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        bootstrap: seed.into_iter().cloned().collect(),
        ..MessengerConfig::default()
    };
    Messenger::start(MemoryStore::new(), TcpTransport::default(), config)
        .await
        .unwrap()
}

/// Alice's events until `until`, folded into `delivered` and `received`.
async fn watch(
    events: &mut mpsc::Receiver<Event>,
    delivered: &mut HashSet<MessageId>,
    received: &mut Vec<MessageId>,
    until: tokio::time::Instant,
) {
    while let Ok(Some(event)) = tokio::time::timeout_at(until, events.recv()).await {
        match event {
            Event::Delivered { id, .. } => {
                delivered.insert(id);
            }
            Event::Received { id, .. } => received.push(id),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_points_loses_nothing_acknowledged() {
    let seed_value = std::env::var("SHOAL_RESTART_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_u64);
    eprintln!("seed {seed_value} (set SHOAL_RESTART_SEED to replay)");
    let mut rng = Rng(seed_value);
    let (seed_node, _seed_events) = messenger(None).await;
    let seed = seed_node.listen_addrs()[0].clone();
    let (alice, mut alice_events) = messenger(Some(&seed)).await;
    let dir = TempDir::new("restart");

    let mut sent = Vec::new();
    let mut delivered = HashSet::new();
    let mut received = Vec::new();
    let mut bob_user: Option<UserId> = None;
    let mut bob_sent = 0usize;
    let mut aborted = 0usize;
    for run in 0..=CRASHES {
        let last = run == CRASHES;
        // Some runs abort themselves between a commit and its ack.
        let abort_after = (!last && rng.below(3) == 0).then(|| 1 + rng.below(12));
        let mut bob = bob(&dir, &seed, abort_after);
        let id: UserId = bob
            .value("user id:", Instant::now() + Duration::from_secs(30))
            .parse()
            .unwrap();
        match bob_user {
            None => {
                bob_user = Some(id);
                alice.add_contact(id, "bob").await.unwrap();
            }
            Some(known) => assert_eq!(known, id, "bob's identity survives restarts"),
        }
        bob.type_line(&format!("/add {} alice", alice.user_id()));
        for i in 0..PER_RUN {
            sent.push(alice.send(id, &format!("a{run}-{i}")).await.unwrap());
            if rng.below(2) == 0 {
                bob.type_line(&format!("/msg alice b{run}-{i}"));
                bob_sent += 1;
            }
            let pause = Duration::from_millis(rng.below(60));
            let until = tokio::time::Instant::now() + pause;
            watch(&mut alice_events, &mut delivered, &mut received, until).await;
        }
        if !last {
            // Kill at a random point of the exchange.
            let until = tokio::time::Instant::now() + Duration::from_millis(rng.below(400));
            watch(&mut alice_events, &mut delivered, &mut received, until).await;
            if let Ok(Some(_)) = bob.child.try_wait() {
                aborted += 1; // died by its own hook, between commit and ack
            }
            drop(bob); // SIGKILL (if it has not aborted itself already)
            continue;
        }
        // The last run stays up until everything is delivered both ways.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while delivered.len() < sent.len() && tokio::time::Instant::now() < deadline {
            let until = tokio::time::Instant::now() + Duration::from_millis(200);
            watch(&mut alice_events, &mut delivered, &mut received, until).await;
        }
        assert_eq!(
            delivered.len(),
            sent.len(),
            "all of alice's messages delivered"
        );
        // Let bob's own outbox drain too (his "delivered to" lines stop
        // changing), then stop him.
        let (mut last_count, mut quiet) = (usize::MAX, 0);
        for _ in 0..60 {
            let until = tokio::time::Instant::now() + Duration::from_millis(500);
            watch(&mut alice_events, &mut delivered, &mut received, until).await;
            let count = bob
                .drain()
                .iter()
                .filter(|l| l.starts_with("delivered to"))
                .count();
            quiet = if count == last_count { quiet + 1 } else { 0 };
            last_count = count;
            if quiet >= 4 {
                break;
            }
        }
        let printed = bob.drain().to_vec();
        drop(bob);
        // Within one run (one stdout), bob shows each message once.
        let mut shown = HashSet::new();
        // Received lines are `<name or short id>: a<run>-<i>`.
        let received_lines = printed.iter().filter(|l| {
            l.split_once(": ").is_some_and(|(who, text)| {
                !who.contains(' ') && who != "error" && text.starts_with('a') && text.contains('-')
            })
        });
        for line in received_lines {
            assert!(shown.insert(line.clone()), "bob showed {line:?} twice");
        }
    }
    let bob = bob_user.unwrap();

    // Bob's file, reopened: every acknowledged message, nothing twice.
    let store = SqliteStore::open(dir.join("messenger.db")).unwrap();
    let mut engine =
        Engine::open(store, EngineConfig::default(), [9; 32], Instant::now(), 0).unwrap();
    let mut bob_history = Vec::new();
    let mut cursor = None;
    for _ in 0..1_000 {
        let page = engine.history(&alice.user_id(), cursor, 100).unwrap();
        let Some(last) = page.last() else { break };
        cursor = Some((last.meta.height, last.meta.id));
        bob_history.extend(page.iter().map(|i| i.meta.id));
    }
    bob_history.reverse();
    let unique: HashSet<MessageId> = bob_history.iter().copied().collect();
    assert_eq!(
        unique.len(),
        bob_history.len(),
        "a message is twice in bob's history"
    );
    for id in &delivered {
        assert!(unique.contains(id), "acknowledged message {id} lost");
    }
    assert_eq!(engine.contacts()[0].outbox, 0, "bob's outbox drained");
    // Alice shows each of bob's messages once.
    let got: HashSet<MessageId> = received.iter().copied().collect();
    assert_eq!(got.len(), received.len(), "alice showed a message twice");

    // Same histories on both sides.
    let mut alice_history = Vec::new();
    let mut cursor = None;
    for _ in 0..1_000 {
        let page = alice.history(bob, cursor, 100).await.unwrap();
        let Some(last) = page.last() else { break };
        cursor = Some((last.meta.height, last.meta.id));
        alice_history.extend(page.iter().map(|i| i.meta.id));
    }
    alice_history.reverse();
    assert_eq!(alice_history.len(), sent.len() + got.len());
    assert_eq!(bob_history, alice_history, "histories differ");
    assert!(aborted > 0, "no run crashed between a commit and its ack");
    eprintln!(
        "{} runs ({aborted} aborted between commit and ack, the others killed), \
         {} of alice's and {} of bob's messages ({bob_sent} typed), all in both histories",
        CRASHES + 1,
        sent.len(),
        got.len()
    );

    // No silent new handshake: one session each, the one of first contact.
    let alice_view = alice.contacts().await.unwrap();
    assert_eq!(alice_view.len(), 1);
    assert_eq!(alice_view[0].sessions, 1, "alice: a new session appeared");
    let bob_view = engine.contacts();
    assert_eq!(bob_view.len(), 1);
    assert_eq!(bob_view[0].sessions, 1, "bob: a new session appeared");
    drop(engine);
}
