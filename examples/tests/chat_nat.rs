//! Chats behind NAT routers, in a lab of network namespaces the test builds
//! (see `shoal-lab`): a public segment (198.18.0.0/15) with a bootstrap
//! node and a second node, both serving as relays, and users on public
//! hosts and behind endpoint-independent, symmetric and double NATs that
//! drop unsolicited inbound packets. For every pairing of those kinds, two
//! fresh users make first contact and exchange messages; each pairing
//! reports whether its session went direct or through a relay.
#![allow(clippy::unwrap_used)]

mod common;

use std::{
    path::Path,
    time::{Duration, Instant},
};

use common::{Process, TempDir};
use shoal_lab::{Host, Lab, NatKind, Place};

/// Upper bound for the whole test.
const LIMIT: Duration = Duration::from_secs(120);

/// Pairings run side by side, and the time each batch may take.
const PAIRINGS_AT_ONCE: usize = 4;
const PAIRING_LIMIT: Duration = Duration::from_secs(90);

/// The tests of this file each build a lab and a dozen processes: one at a
/// time, so they do not slow each other past their deadlines.
static ONE_LAB_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_lab_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_LAB_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The lab's "internet": nodes treat it as global when they check which
/// of their addresses others can dial.
const LAB_RANGE: &str = "198.18.0.0/15";

/// A binary of this package running in `host`.
fn start_in(host: &Host, name: &str, binary: &str, args: &[&str]) -> Process {
    let mut all = vec!["netns", "exec", host.namespace(), binary];
    all.extend_from_slice(args);
    Process::start(name, "ip", all)
}

fn node_in(host: &Host, name: &str) -> Process {
    node_with(host, name, &[])
}

fn node_with(host: &Host, name: &str, extra: &[&str]) -> Process {
    let mut args = vec![
        "--listen",
        "/ip4/0.0.0.0/tcp/4001",
        "--serve-relay",
        "--global-range",
        LAB_RANGE,
    ];
    args.extend_from_slice(extra);
    start_in(host, name, env!("CARGO_BIN_EXE_node"), &args)
}

fn chat_in(host: &Host, name: &str, dir: &Path, extra: &[&str]) -> Process {
    let dir = dir.to_str().unwrap();
    let mut args = vec![
        "--data-dir",
        dir,
        "--listen",
        "/ip4/0.0.0.0/tcp/0",
        "--global-range",
        LAB_RANGE,
    ];
    args.extend_from_slice(extra);
    start_in(host, name, env!("CARGO_BIN_EXE_chat"), &args)
}

/// The line `/peers` prints for `peer` in `chat`: it names the relay if
/// the session goes through one.
fn peer_line(chat: &mut Process, peer: &str, deadline: Instant) -> String {
    let seen = chat.drain().len();
    chat.type_line("/peers");
    let (_, line) = chat.wait_from(seen, "the peer in the peer list", deadline, |l| {
        l.starts_with("peer: ") && l.contains(peer)
    });
    line
}

/// What one pairing showed.
struct Outcome {
    pair: (Place, Place),
    path: &'static str,
    first_message: Duration,
}

/// Alice (in `a`) adds Bob (in `b`), writes; Bob accepts and answers.
fn pairing(
    (a, a_place): (&Host, Place),
    (b, b_place): (&Host, Place),
    root: &Path,
    network: &[&str],
    deadline: Instant,
) -> Outcome {
    let tag = format!("{a_place:?}-{b_place:?}");
    // Users that cannot be dialled hold reservations on the relays.
    let args = |place: Place| -> Vec<&str> {
        match place {
            Place::Public => network[..2].to_vec(),
            Place::Behind(_) => network.to_vec(),
        }
    };
    let mut bob = chat_in(
        b,
        &format!("bob {tag}"),
        &root.join(format!("bob-{tag}")),
        &args(b_place),
    );
    let bob_id = bob.value("user id:", deadline);
    let bob_addr = bob.value("listening on:", deadline);
    let bob_peer = bob_addr.rsplit('/').next().unwrap().to_owned();
    if b_place != Place::Public {
        bob.wait_line("relay: reachable through", deadline);
    }
    let mut alice = chat_in(
        a,
        &format!("alice {tag}"),
        &root.join(format!("alice-{tag}")),
        &args(a_place),
    );
    let alice_id = alice.value("user id:", deadline);
    if a_place != Place::Public {
        alice.wait_line("relay: reachable through", deadline);
    }
    let started = Instant::now();
    alice.type_line(&format!("/add {bob_id} bob"));
    alice.type_line("/msg bob hello from behind");
    bob.wait("alice's request", deadline, |l| {
        l.starts_with("message request from ")
    });
    let first_message = started.elapsed();
    bob.type_line(&format!("/add {alice_id} alice"));
    bob.wait("alice's message", deadline, |l| {
        l == "alice: hello from behind"
    });
    alice.wait("the delivery", deadline, |l| {
        l == "delivered to bob: hello from behind"
    });
    bob.type_line("/msg alice and back");
    alice.wait("bob's answer", deadline, |l| l == "bob: and back");
    // Which path: alice's session with bob's node, as she lists it.
    let line = peer_line(&mut alice, &bob_peer, deadline);
    let relayed = line.contains("(through relay ");
    Outcome {
        pair: (a_place, b_place),
        path: if relayed { "relay" } else { "direct" },
        first_message,
    }
}

#[test]
fn first_contact_and_messages_in_every_pairing_of_nat_kinds() {
    let _one = one_lab_at_a_time();
    let Some(mut lab) = Lab::new_or_skip() else {
        return;
    };
    let deadline = Instant::now() + LIMIT;
    let root = TempDir::new("chat-nat");
    let boot_host = lab.add_public_host("boot").unwrap();
    let relay_host = lab.add_public_host("relay").unwrap();
    let mut boot = node_in(&boot_host, "boot");
    let boot_addr = boot.value("listening on:", deadline);
    boot.wait_line("relay: serving", deadline);
    let mut relay = node_in(&relay_host, "relay");
    let relay_addr = relay.value("listening on:", deadline);
    let network = [
        "--bootstrap",
        boot_addr.as_str(),
        "--relay",
        boot_addr.as_str(),
        "--relay",
        relay_addr.as_str(),
    ];

    // Each user of a pairing sits in a network of its own; the pairings
    // run side by side.
    let mut pairs = Vec::new();
    for (n, (a, b)) in Place::pairings().into_iter().enumerate() {
        pairs.push((
            (lab.add_host_at(&format!("a{n}"), a).unwrap(), a),
            (lab.add_host_at(&format!("b{n}"), b).unwrap(), b),
        ));
    }
    // A few at a time: twenty chats starting at once on a 2-core CI
    // machine, joining one small DHT together, measure the machine more
    // than the network. Each batch has a deadline of its own.
    let mut outcomes: Vec<Outcome> = Vec::new();
    for batch in pairs.chunks(PAIRINGS_AT_ONCE) {
        let deadline = Instant::now() + PAIRING_LIMIT;
        outcomes.extend(std::thread::scope(|scope| {
            let running: Vec<_> = batch
                .iter()
                .map(|((a_host, a), (b_host, b))| {
                    let (root, network) = (&root, &network);
                    scope
                        .spawn(move || pairing((a_host, *a), (b_host, *b), root, network, deadline))
                })
                .collect();
            running
                .into_iter()
                .map(|t| t.join().unwrap())
                .collect::<Vec<_>>()
        }));
    }
    println!("| alice | bob | path | first message |");
    println!("|---|---|---|---|");
    for o in &outcomes {
        println!(
            "| {:?} | {:?} | {} | {} ms |",
            o.pair.0,
            o.pair.1,
            o.path,
            o.first_message.as_millis()
        );
    }
    assert_eq!(outcomes.len(), 10, "every pairing of the four kinds");
    for o in &outcomes {
        if o.pair.0 != Place::Public && o.pair.1 != Place::Public {
            assert_eq!(o.path, "relay", "{:?}: nobody can dial the other", o.pair);
        }
    }
}

/// Public users with relays: carol, once checks find her public, lets
/// her reservations go; bob, who hides his IP addresses (`--hide-ip`),
/// keeps his, and alice, who would dial a public bob directly, talks to
/// him through a relay.
#[test]
fn a_public_user_releases_his_relays_unless_he_hides_his_ip() {
    let _one = one_lab_at_a_time();
    let Some(mut lab) = Lab::new_or_skip() else {
        return;
    };
    let deadline = Instant::now() + LIMIT;
    let root = TempDir::new("chat-nat-hidden");
    // Three nodes on three /24s: enough checkers for a verdict.
    let mut nodes = Vec::new();
    for name in ["boot", "r1", "r2"] {
        let host = lab.add_public_host(name).unwrap();
        let mut node = node_in(&host, name);
        let addr = node.value("listening on:", deadline);
        node.wait_line("relay: serving", deadline);
        nodes.push((node, addr, host));
    }
    let network = [
        "--bootstrap",
        nodes[0].1.as_str(),
        "--relay",
        nodes[1].1.as_str(),
        "--relay",
        nodes[2].1.as_str(),
    ];
    let hosts = ["a", "b", "c"].map(|name| lab.add_public_host(name).unwrap());
    let mut bob_args = network.to_vec();
    bob_args.push("--hide-ip");
    let mut users: Vec<(Process, String, String)> = Vec::new();
    for (name, host, args) in [
        ("bob", &hosts[1], &bob_args[..]),
        ("carol", &hosts[2], &network[..]),
    ] {
        let mut chat = chat_in(host, name, &root.join(name), args);
        let id = chat.value("user id:", deadline);
        let peer = chat
            .value("listening on:", deadline)
            .rsplit('/')
            .next()
            .unwrap()
            .to_owned();
        users.push((chat, id, peer));
    }
    for (chat, ..) in &mut users {
        chat.wait_line("reachability: public at", deadline);
    }
    users[0].0.wait_line("relay: reachable through", deadline);
    // Carol's record, republished a second after her relays went, is
    // stored by then.
    std::thread::sleep(Duration::from_secs(3));
    let mut alice = chat_in(&hosts[0], "alice", &root.join("alice"), &network[..2]);
    let alice_id = alice.value("user id:", deadline);
    let mut paths = Vec::new();
    for (name, (chat, id, peer)) in ["bob", "carol"].into_iter().zip(&mut users) {
        alice.type_line(&format!("/add {id} {name}"));
        alice.type_line(&format!("/msg {name} where are you"));
        chat.wait("alice's request", deadline, |l| {
            l.starts_with("message request from ")
        });
        chat.type_line(&format!("/add {alice_id} alice"));
        chat.wait("alice's message", deadline, |l| l == "alice: where are you");
        let delivered = format!("delivered to {name}: where are you");
        alice.wait("the delivery", deadline, |l| l == delivered);
        paths.push(peer_line(&mut alice, peer, deadline));
    }
    assert!(paths[0].contains("(through relay "), "bob: {}", paths[0]);
    assert!(!paths[1].contains("(through relay "), "carol: {}", paths[1]);
    assert!(
        !users[0]
            .0
            .drain()
            .iter()
            .any(|l| l.starts_with("relay: released")),
        "bob keeps his relays"
    );
}

/// Two users behind NATs talk through a relay; that relay dies. Within
/// 30 s they talk through the other one, and every message sent around
/// the death arrives once.
#[test]
fn killing_the_relay_in_use_moves_the_conversation_to_the_other() {
    let _one = one_lab_at_a_time();
    let Some(mut lab) = Lab::new_or_skip() else {
        return;
    };
    let deadline = Instant::now() + LIMIT;
    let root = TempDir::new("chat-nat-failover");
    let boot_host = lab.add_public_host("boot").unwrap();
    let mut boot = node_in(&boot_host, "boot");
    let boot_addr = boot.value("listening on:", deadline);
    let mut relays = Vec::new();
    for name in ["r1", "r2"] {
        let host = lab.add_public_host(name).unwrap();
        let mut relay = node_in(&host, name);
        let id = relay.value("peer id:", deadline);
        let addr = relay.value("listening on:", deadline);
        relays.push((relay, id, addr, host));
    }
    let network = [
        "--bootstrap",
        boot_addr.as_str(),
        "--relay",
        relays[0].2.as_str(),
        "--relay",
        relays[1].2.as_str(),
    ];
    let home = lab.add_nat("an", NatKind::EndpointIndependent).unwrap();
    let a_host = lab.add_host_behind(&home, "a").unwrap();
    let office = lab.add_nat("bn", NatKind::Symmetric).unwrap();
    let b_host = lab.add_host_behind(&office, "b").unwrap();
    let mut bob = chat_in(&b_host, "bob", &root.join("bob"), &network);
    let bob_id = bob.value("user id:", deadline);
    let bob_peer = bob
        .value("listening on:", deadline)
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let mut alice = chat_in(&a_host, "alice", &root.join("alice"), &network);
    let alice_id = alice.value("user id:", deadline);
    for chat in [&mut alice, &mut bob] {
        let (i, _) = chat.wait_from(0, "a relay", deadline, |l| {
            l.starts_with("relay: reachable through")
        });
        chat.wait_from(i + 1, "a second relay", deadline, |l| {
            l.starts_with("relay: reachable through")
        });
    }
    alice.type_line(&format!("/add {bob_id} bob"));
    bob.type_line(&format!("/add {alice_id} alice"));
    alice.type_line("/msg bob before");
    bob.wait("the first message", deadline, |l| l == "alice: before");

    // The relay their session goes through dies.
    let line = peer_line(&mut alice, &bob_peer, deadline);
    let used = line
        .split("(through relay ")
        .nth(1)
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not through a relay: {line}"))
        .to_owned();
    let (dead, _, _, _) = relays
        .iter_mut()
        .find(|(_, id, _, _)| *id == used)
        .expect("one of the two relays");
    dead.child.kill().unwrap();
    let killed = Instant::now();
    for i in 1..=5 {
        alice.type_line(&format!("/msg bob after {i}"));
    }
    let within = killed + Duration::from_secs(30);
    for i in 1..=5 {
        bob.wait(&format!("message {i} after the relay died"), within, |l| {
            l == format!("alice: after {i}")
        });
    }
    println!(
        "relay {used} killed: the conversation went on in {} ms",
        killed.elapsed().as_millis()
    );
    bob.wait("the news", within, |l| l == format!("relay: lost {used}"));
    let seen = bob.drain().to_vec();
    for i in 1..=5 {
        let copies = seen
            .iter()
            .filter(|l| **l == format!("alice: after {i}"))
            .count();
        assert_eq!(copies, 1, "message {i} shown {copies} times");
    }
    // And the other way.
    bob.type_line("/msg alice still here");
    alice.wait("bob's answer", within, |l| l == "bob: still here");
    // Through the relay left.
    let line = peer_line(&mut alice, &bob_peer, within);
    assert!(
        line.contains("(through relay ") && !line.contains(&used),
        "{line}"
    );
}

/// Every node keeping mailboxes is on the public segment; alice and bob
/// are behind NATs. Bob leaves, alice writes, her messages are stored on
/// the public nodes; bob comes back and gets each once.
#[test]
fn mailboxes_on_the_public_segment_keep_messages_between_users_behind_nats() {
    let _one = one_lab_at_a_time();
    let Some(mut lab) = Lab::new_or_skip() else {
        return;
    };
    let deadline = Instant::now() + LIMIT;
    let root = TempDir::new("chat-nat-mailboxes");
    let mut nodes = Vec::new();
    let mut boot_addr = String::new();
    for i in 0..6 {
        let host = lab.add_public_host(&format!("m{i}")).unwrap();
        let connect = ["--connect", boot_addr.as_str()];
        let extra: &[&str] = if i == 0 { &[] } else { &connect };
        let mut node = node_with(&host, &format!("m{i}"), extra);
        let addr = node.value("listening on:", deadline);
        if i == 0 {
            boot_addr = addr.clone();
        }
        nodes.push((node, addr, host));
    }
    let network = [
        "--bootstrap",
        boot_addr.as_str(),
        "--relay",
        nodes[1].1.as_str(),
        "--relay",
        nodes[2].1.as_str(),
    ];
    let home = lab.add_nat("an", NatKind::EndpointIndependent).unwrap();
    let a_host = lab.add_host_behind(&home, "a").unwrap();
    let carrier = lab.add_nat("bn", NatKind::Double).unwrap();
    let b_host = lab.add_host_behind(&carrier, "b").unwrap();
    let (alice_dir, bob_dir) = (root.join("alice"), root.join("bob"));
    let mut bob = chat_in(&b_host, "bob", &bob_dir, &network);
    let bob_id = bob.value("user id:", deadline);
    bob.wait_line("relay: reachable through", deadline);
    let mut alice = chat_in(&a_host, "alice", &alice_dir, &network);
    let alice_id = alice.value("user id:", deadline);
    alice.wait_line("relay: reachable through", deadline);
    alice.type_line(&format!("/add {bob_id} bob"));
    bob.type_line(&format!("/add {alice_id} alice"));
    alice.type_line("/msg bob hello");
    bob.wait_line("alice: hello", deadline);
    alice.wait_line("delivered to bob: hello", deadline);

    bob.type_line("/quit");
    assert!(bob.wait_exit(deadline).success());
    alice.wait_line("offline: bob", deadline);
    const MESSAGES: usize = 5;
    for i in 0..MESSAGES {
        alice.type_line(&format!("/msg bob m{i}"));
    }
    let mut from = 0;
    for _ in 0..MESSAGES {
        let (at, line) = alice.wait_from(from, "stored for bob", deadline, |l| {
            l.starts_with("stored for bob on ")
        });
        from = at + 1;
        assert!(line.contains("on 3 mailbox nodes"), "{line}");
    }
    alice.type_line("/quit");
    assert!(alice.wait_exit(deadline).success());

    let mut bob = chat_in(&b_host, "bob again", &bob_dir, &network);
    bob.expect_shown_once_in_order("alice", MESSAGES, Duration::from_secs(1), deadline);
}
