//! Two `node` processes on loopback: the second connects to the first;
//! each prints a ping time for the other, both join the DHT, and a message
//! each publishes on the gossip topic reaches the other.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::Process;

/// Upper bound for the whole exchange.
const LIMIT: Duration = Duration::from_secs(30);

/// A `node` process with the test's common flags.
fn node(args: &[&str]) -> Process {
    let mut all = vec!["--duration", "30", "--ping-interval", "0.5"];
    all.extend_from_slice(args);
    Process::start("node", env!("CARGO_BIN_EXE_node"), all)
}

#[test]
fn two_nodes_see_and_ping_each_other() {
    let deadline = Instant::now() + LIMIT;
    let mut a = node(&["--say", "hello from a"]);
    let a_id = a.value("peer id:", deadline);
    let a_addr = a.value("listening on:", deadline);
    assert!(a_addr.starts_with("/ip4/127.0.0.1/tcp/"));
    assert!(a_addr.ends_with(&format!("/p2p/{a_id}")));

    let mut b = node(&["--connect", &a_addr, "--say", "hello from b"]);
    let b_id = b.value("peer id:", deadline);
    assert_ne!(a_id, b_id);

    b.wait_line(&format!("connected: {a_id}"), deadline);
    a.wait_line(&format!("connected: {b_id}"), deadline);
    b.wait_line(&format!("identified: {a_id}"), deadline);
    b.wait_line(&format!("discovered: {a_id}"), deadline);
    a.wait_line(&format!("discovered: {b_id}"), deadline);
    let rtt = b.wait_line(&format!("ping: {a_id} rtt="), deadline);
    assert!(rtt.ends_with(" ms"), "{rtt}");
    a.wait_line(&format!("ping: {b_id} rtt="), deadline);

    b.wait_line("dht: joined", deadline);
    a.wait_line(&format!("dht: {b_id} in bucket"), deadline);
    a.wait_line(
        &format!("gossip: {b_id} on shoal/lobby: hello from b"),
        deadline,
    );
    b.wait_line(
        &format!("gossip: {a_id} on shoal/lobby: hello from a"),
        deadline,
    );
}

#[test]
fn a_node_on_an_unspecified_address_announces_dialable_ones() {
    let deadline = Instant::now() + LIMIT;
    let mut a = node(&[
        "--listen",
        "/ip4/0.0.0.0/tcp/0",
        "--external-address",
        "/ip4/198.51.100.7/tcp/4001",
    ]);
    let id = a.value("peer id:", deadline);
    a.wait_line("listening on: /ip4/198.51.100.7/tcp/4001/p2p/", deadline);
    // External addresses come first; wait for an interface one too.
    a.wait("an interface address", deadline, |l| {
        l.starts_with("listening on:") && !l.contains("198.51.100.7")
    });
    let announced: Vec<String> = a
        .drain()
        .iter()
        .filter(|l| l.starts_with("listening on:"))
        .cloned()
        .collect();
    assert!(announced.len() >= 2, "{announced:#?}");
    for line in &announced {
        assert!(!line.contains("/0.0.0.0/"), "{line}");
        assert!(line.ends_with(&format!("/p2p/{id}")), "{line}");
    }
    // The interface address works: a second node connects through it.
    let interface = announced
        .iter()
        .find(|l| !l.contains("198.51.100.7"))
        .unwrap();
    let first = interface["listening on:".len()..].trim().to_owned();
    let mut b = node(&["--connect", &first]);
    b.wait_line(&format!("connected: {id}"), deadline);
}
