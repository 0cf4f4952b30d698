//! Offline delivery between real processes: eight `node` processes keep
//! mailboxes, each on its own loopback /24 (127.10.N.1), so the rule that
//! counted receipts come from distinct networks is exercised. Alice writes
//! 20 messages while bob is offline and leaves; the test kills two of the
//! nodes that signed receipts for them (read from alice's output); bob
//! starts and gets all 20 once and in order; alice, back, sees them
//! delivered.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::mailboxes::{chat, introduce, node, signers};
use common::{Process, TempDir};

/// Upper bound for the whole test.
const LIMIT: Duration = Duration::from_secs(150);
const NODES: usize = 8;
const MESSAGES: usize = 20;

#[test]
fn twenty_messages_wait_for_bob_while_two_signers_die() {
    let deadline = Instant::now() + LIMIT;
    let root = TempDir::new("mailbox-offline");
    let mut nodes: Vec<Option<(String, Process)>> = Vec::new();
    let mut addrs = Vec::new();
    for i in 0..NODES {
        let mut p = node(
            i,
            &root.join(format!("node{i}")),
            addrs.first().map(String::as_str),
            &[],
        );
        let id = p.value("peer id:", deadline);
        let addr = p.value("listening on:", deadline);
        assert!(addr.contains(&format!("127.10.{i}.1")), "{addr}");
        addrs.push(addr);
        nodes.push(Some((id, p)));
    }
    let (alice_dir, bob_dir) = (root.join("alice"), root.join("bob"));
    let mut bob = chat("bob", "127.20.2.1", &bob_dir, &addrs);
    let bob_id = bob.value("user id:", deadline);
    let mut alice = chat("alice", "127.20.1.1", &alice_dir, &addrs);
    let alice_id = alice.value("user id:", deadline);

    // They know each other, and bob learns alice's device from a first
    // message while both are online.
    introduce(&mut alice, &alice_id, &mut bob, &bob_id, deadline);

    // Bob leaves; alice writes 20 messages, each stored on 3 mailbox nodes.
    bob.type_line("/quit");
    assert!(bob.wait_exit(deadline).success());
    alice.wait_line("offline: bob", deadline);
    for i in 0..MESSAGES {
        alice.type_line(&format!("/msg bob m{i}"));
    }
    let (mut from, mut stored) = (0, Vec::new());
    for _ in 0..MESSAGES {
        let (at, line) = alice.wait_from(from, "stored for bob", deadline, |l| {
            l.starts_with("stored for bob on ")
        });
        from = at + 1;
        stored.push(line);
    }
    let mut counts: HashMap<String, usize> = HashMap::new();
    for line in &stored {
        let s = signers(line);
        assert_eq!(s.len(), 3, "{line}");
        for id in s {
            *counts.entry(id).or_default() += 1;
        }
    }
    alice.type_line("/quit");
    assert!(alice.wait_exit(deadline).success());

    // Kill the two nodes that signed the most receipts.
    let mut ranked: Vec<(String, usize)> = counts.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let doomed: Vec<String> = ranked.iter().take(2).map(|(id, _)| id.clone()).collect();
    for slot in nodes.iter_mut() {
        if slot.as_ref().is_some_and(|(id, _)| doomed.contains(id)) {
            let (_, process) = slot.take().unwrap();
            drop(process); // SIGKILL
        }
    }
    assert_eq!(
        nodes.iter().filter(|n| n.is_none()).count(),
        2,
        "{doomed:?}"
    );
    let alive: Vec<String> = nodes
        .iter()
        .zip(&addrs)
        .filter(|(n, _)| n.is_some())
        .map(|(_, a)| a.clone())
        .collect();

    // Bob comes back: all 20, once, in order.
    let mut bob = chat("bob", "127.20.2.1", &bob_dir, &alive);
    bob.expect_shown_once_in_order("alice", MESSAGES, Duration::ZERO, deadline);

    // Alice comes back: each is delivered.
    let mut alice = chat("alice", "127.20.1.1", &alice_dir, &alive);
    for i in 0..MESSAGES {
        alice.wait_line(&format!("delivered to bob: m{i}"), deadline);
    }
    std::thread::sleep(Duration::from_secs(2));
    let shown = bob
        .drain()
        .iter()
        .filter(|l| l.starts_with("alice: m"))
        .count();
    assert_eq!(shown, MESSAGES, "nothing shown twice");
}
