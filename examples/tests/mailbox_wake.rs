//! Content-free wake-ups between real processes: six `node` processes
//! keep mailboxes; a seventh runs with `--on-wake`, whose hook appends the
//! token it is woken with to a file. Bob registers that endpoint with the
//! replicas of his mailboxes and leaves; alice writes ten messages; the
//! endpoint is woken (with its token and nothing else), and bob, started
//! once the hook ran, gets all ten, once and in order.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::mailboxes::{chat, chat_with, introduce, node};
use common::{Process, TempDir};

/// Upper bound for the whole test.
const LIMIT: Duration = Duration::from_secs(150);
const NODES: usize = 6;
const MESSAGES: usize = 10;

#[test]
fn a_woken_bob_fetches_all_ten() {
    let deadline = Instant::now() + LIMIT;
    let root = TempDir::new("mailbox-wake");
    let mut nodes: Vec<Process> = Vec::new();
    let mut addrs = Vec::new();
    for i in 0..NODES {
        let mut p = node(
            i,
            &root.join(format!("node{i}")),
            addrs.first().map(String::as_str),
            &[],
        );
        addrs.push(p.value("listening on:", deadline));
        nodes.push(p);
    }
    let woken_file = root.join("woken");
    let hook = format!("echo \"$SHOAL_WAKE_TOKEN\" >> '{}'", woken_file.display());
    let mut endpoint = node(
        NODES,
        &root.join("endpoint"),
        Some(&addrs[0]),
        &["--on-wake", &hook],
    );
    let line = endpoint.value("wake-up endpoint:", deadline);
    let (endpoint_addr, token) = line.split_once(" token ").unwrap();
    assert_eq!(token.len(), 32, "{line}");

    let (alice_dir, bob_dir) = (root.join("alice"), root.join("bob"));
    let wake_args = ["--wake-endpoint", endpoint_addr, "--wake-token", token];
    let mut bob = chat_with("bob", "127.20.2.1", &bob_dir, &addrs, &wake_args);
    let bob_id = bob.value("user id:", deadline);
    let mut alice = chat("alice", "127.20.1.1", &alice_dir, &addrs);
    let alice_id = alice.value("user id:", deadline);
    introduce(&mut alice, &alice_id, &mut bob, &bob_id, deadline);

    // Bob, knowing alice's device now, registers at his next start (the
    // read of his mailboxes), then leaves.
    bob.type_line("/quit");
    assert!(bob.wait_exit(deadline).success());
    let mut bob = chat_with("bob", "127.20.2.1", &bob_dir, &addrs, &wake_args);
    let registered = bob.value("wake-ups: registered with", deadline);
    let count: usize = registered
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(count >= 3, "{registered}");
    bob.type_line("/quit");
    assert!(bob.wait_exit(deadline).success());
    alice.wait_line("offline: bob", deadline);
    assert!(!woken_file.exists(), "woken before anything was stored");

    for i in 0..MESSAGES {
        alice.type_line(&format!("/msg bob m{i}"));
    }
    let mut from = 0;
    for _ in 0..MESSAGES {
        let (at, _) = alice.wait_from(from, "stored for bob", deadline, |l| {
            l.starts_with("stored for bob on ")
        });
        from = at + 1;
    }

    // The endpoint is woken: its hook gets the token, the same bytes
    // every time, and nothing about the messages.
    endpoint.wait_line("woken by", deadline);
    let mut lines = Vec::new();
    while Instant::now() < deadline {
        let text = std::fs::read_to_string(&woken_file).unwrap_or_default();
        lines = text.lines().map(str::to_owned).collect();
        if !lines.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!lines.is_empty(), "the hook never ran");
    assert!(lines.iter().all(|l| l == token), "{lines:?}");

    // Woken, bob comes back: all ten, once, in order.
    let mut bob = chat("bob", "127.20.2.1", &bob_dir, &addrs);
    for i in 0..MESSAGES {
        bob.wait_line(&format!("alice: m{i}"), deadline);
    }
    let shown: Vec<String> = bob
        .drain()
        .iter()
        .filter(|l| l.starts_with("alice: m"))
        .cloned()
        .collect();
    let expected: Vec<String> = (0..MESSAGES).map(|i| format!("alice: m{i}")).collect();
    assert_eq!(shown, expected, "once each, in order");
}
