//! Mailboxes handed over between real processes: ten `node` processes
//! keep mailboxes (syncing every 2 seconds), each on its own loopback /24.
//! Alice stores 50 messages for bob while he is offline; then the four
//! nodes that signed the most receipts are replaced one by one (killed,
//! and a node with a new key on a new address started), and once three
//! nodes that never signed hold every message, the last node that signed
//! is killed too. Nothing alice was told is stored is on a node that took
//! it from her any more: bob starts and gets all 50, once, in order.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::mailboxes::{chat, introduce, node, signers};
use common::{Process, TempDir};

/// Upper bound for the whole test.
const LIMIT: Duration = Duration::from_secs(240);
const NODES: usize = 10;
const REPLACED: usize = 4;
const MESSAGES: usize = 50;

/// Envelopes a node said it took from other nodes, at its last report.
fn took(process: &mut Process) -> usize {
    process
        .drain()
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("mailboxes: took "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

struct Running {
    id: String,
    addr: String,
    process: Process,
}

fn start(i: usize, root: &Path, connect: &str, deadline: Instant) -> Running {
    let connect = (!connect.is_empty()).then_some(connect);
    let dir = root.join(format!("node{i}"));
    let mut process = node(i, &dir, connect, &["--mailbox-sync-secs", "2"]);
    let id = process.value("peer id:", deadline);
    let addr = process.value("listening on:", deadline);
    assert!(addr.contains(&format!("127.10.{i}.1")), "{addr}");
    Running { id, addr, process }
}

#[test]
fn fifty_messages_outlive_every_node_that_signed_for_them() {
    let deadline = Instant::now() + LIMIT;
    let root = TempDir::new("mailbox-churn");
    let mut nodes: Vec<Running> = Vec::new();
    for i in 0..NODES {
        let seed = nodes.first().map_or(String::new(), |n| n.addr.clone());
        nodes.push(start(i, &root, &seed, deadline));
    }
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let (alice_dir, bob_dir) = (root.join("alice"), root.join("bob"));
    let mut bob = chat("bob", "127.20.2.1", &bob_dir, &addrs);
    let bob_id = bob.value("user id:", deadline);
    let mut alice = chat("alice", "127.20.1.1", &alice_dir, &addrs);
    let alice_id = alice.value("user id:", deadline);
    introduce(&mut alice, &alice_id, &mut bob, &bob_id, deadline);

    // Bob leaves; alice stores 50 messages for him and leaves too.
    bob.type_line("/quit");
    assert!(bob.wait_exit(deadline).success());
    alice.wait_line("offline: bob", deadline);
    for i in 0..MESSAGES {
        alice.type_line(&format!("/msg bob m{i}"));
    }
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut from = 0;
    for _ in 0..MESSAGES {
        let (at, line) = alice.wait_from(from, "stored for bob", deadline, |l| {
            l.starts_with("stored for bob on ")
        });
        from = at + 1;
        for id in signers(&line) {
            *counts.entry(id).or_default() += 1;
        }
    }
    alice.type_line("/quit");
    assert!(alice.wait_exit(deadline).success());
    let mut ranked: Vec<(String, usize)> = counts.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let signed: Vec<String> = ranked.iter().map(|(id, _)| id.clone()).collect();
    assert!(signed.len() > REPLACED, "{ranked:?}");

    // Replace the four that signed the most, one by one: kill, and start a
    // node with a new key on a new address, joining through a survivor.
    for (k, victim) in signed.iter().take(REPLACED).enumerate() {
        let at = nodes.iter().position(|n| &n.id == victim).unwrap();
        drop(nodes.remove(at)); // SIGKILL
        let seed = nodes[0].addr.clone();
        nodes.push(start(NODES + k, &root, &seed, deadline));
        std::thread::sleep(Duration::from_secs(3));
    }

    // Once three nodes that never signed hold every message, the last
    // nodes that signed go too.
    loop {
        let mut holding = 0;
        for n in nodes.iter_mut().filter(|n| !signed.contains(&n.id)) {
            if took(&mut n.process) >= MESSAGES {
                holding += 1;
            }
        }
        if holding >= 3 {
            break;
        }
        assert!(Instant::now() < deadline, "hand-off did not happen");
        std::thread::sleep(Duration::from_millis(200));
    }
    nodes.retain(|n| !signed.contains(&n.id));
    assert_eq!(nodes.len(), NODES - signed.len() + REPLACED);
    let alive: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();

    // Bob comes back: all 50, once, in order.
    let mut bob = chat("bob", "127.20.2.1", &bob_dir, &alive);
    bob.expect_shown_once_in_order("alice", MESSAGES, Duration::from_secs(2), deadline);
}
