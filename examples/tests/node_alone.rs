//! A `node` is never silently alone:
//! - a `--connect` address nobody listens on, or where another peer
//!   answers, is named with the reason, and retried with a growing delay;
//! - when its last peer goes it says so, and it reconnects by itself once
//!   the bootstrap node is back.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Process, TempDir, assert_readable, closed_port};

/// Upper bound for each test.
const LIMIT: Duration = Duration::from_secs(30);

fn node(name: &str, args: &[&str]) -> Process {
    let mut all = vec!["--duration", "40", "--ping-interval", "1"];
    all.extend_from_slice(args);
    Process::start(name, env!("CARGO_BIN_EXE_node"), all)
}

fn new_peer_id() -> String {
    shoal_identity::Keypair::try_generate()
        .unwrap()
        .peer_id()
        .to_string()
}

#[test]
fn dead_or_wrong_bootstrap_is_reported_and_retried() {
    let deadline = Instant::now() + LIMIT;
    let mut a = node("a", &[]);
    let a_id = a.value("peer id:", deadline);
    let a_addr = a.value("listening on:", deadline);
    let dead = format!("/ip4/127.0.0.1/tcp/{}/p2p/{a_id}", closed_port());
    let wrong = format!(
        "{}/p2p/{}",
        a_addr.rsplit_once("/p2p/").unwrap().0,
        new_peer_id()
    );

    let mut b = node("b", &["--connect", &dead, "--connect", &wrong]);
    b.wait_line(
        "dialling 2 bootstrap addresses and 0 remembered peers",
        deadline,
    );
    let first = b.wait_line(&format!("bootstrap {dead} unreachable: "), deadline);
    assert_eq!(
        first,
        format!("bootstrap {dead} unreachable: connection refused; next try in 1 s")
    );
    // Retried, each time after a longer wait.
    b.wait_line(
        &format!("bootstrap {dead} unreachable: connection refused; next try in 2 s"),
        deadline,
    );
    let other = b.wait_line(
        &format!("bootstrap {wrong} answered as another peer"),
        deadline,
    );
    assert_eq!(
        other,
        format!(
            "bootstrap {wrong} answered as another peer ({a_id}); check its /p2p/ part; \
             next try in 1 s"
        )
    );
    for line in b.drain() {
        assert_readable(line);
    }
    assert!(!b.drain().iter().any(|l| l.starts_with("connected:")));
}

#[test]
fn losing_the_last_peer_is_said_and_healed() {
    let deadline = Instant::now() + LIMIT;
    let dir = TempDir::new("node-alone-heal");
    let key = dir.join("a.key");
    let key = key.to_str().unwrap();
    let mut a = node("a", &["--key-file", key]);
    let a_id = a.value("peer id:", deadline);
    let a_addr = a.value("listening on:", deadline);
    let mut b = node("b", &["--connect", &a_addr]);
    b.wait_line(&format!("identified: {a_id}"), deadline);

    drop(a); // SIGKILL
    let (gone, _) = b.wait_from(0, "disconnected from a", deadline, |l| {
        l.starts_with(&format!("disconnected: {a_id}"))
    });
    let (alone, line) = b.wait_from(gone, "no peers connected", deadline, |l| {
        l.starts_with("no peers connected")
    });
    assert_eq!(
        line,
        "no peers connected; retrying 1 bootstrap address and 0 remembered peers \
         (every 1 s at first, then up to every 60 s)"
    );
    let (failed, line) = b.wait_from(alone, "a failed redial", deadline, |l| {
        l.starts_with(&format!("bootstrap {a_addr} unreachable"))
    });
    assert_readable(&line);

    // a comes back on the same port with the same key: b finds it again.
    let listen = a_addr.rsplit_once("/p2p/").unwrap().0;
    let mut a = node("a again", &["--key-file", key, "--listen", listen]);
    assert_eq!(a.value("listening on:", deadline), a_addr);
    // Whichever of b's dials gets there first: all go to a's address.
    b.wait_from(failed, "reconnected to a", deadline, |l| {
        l.starts_with(&format!("connected: {a_id} via {listen}")) && l.ends_with("(Outbound)")
    });
    a.wait_line("connected: ", deadline);
}
