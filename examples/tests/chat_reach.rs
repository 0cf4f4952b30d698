//! Reaching people: two chats in two network namespaces (made by the test,
//! joined by a veth pair) that listen on `0.0.0.0` announce their real
//! addresses and talk; a dead bootstrap address gets a clear line; and a
//! chat started alone joins later with `/connect`.
#![allow(clippy::unwrap_used)]

mod common;

use std::{
    ffi::OsStr,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use common::{Process, TempDir, closed_port};

/// Upper bound for each test.
const LIMIT: Duration = Duration::from_secs(60);

/// A `chat` process, optionally inside network namespace `netns`.
fn chat(name: &str, netns: Option<&str>, data_dir: &Path, args: &[&str]) -> Process {
    let binary = env!("CARGO_BIN_EXE_chat");
    let mut all: Vec<&OsStr> = Vec::new();
    if let Some(ns) = netns {
        all.extend(["netns", "exec", ns, binary].map(OsStr::new));
    }
    all.extend([OsStr::new("--data-dir"), data_dir.as_os_str()]);
    all.extend(args.iter().map(OsStr::new));
    match netns {
        Some(_) => Process::start(name, "ip", all),
        None => Process::start(name, binary, all),
    }
}

/// Two network namespaces joined by a veth pair, 198.18.7.1 and
/// 198.18.7.2 (a range reserved for testing); removed on drop, also when a
/// test panics.
struct Namespaces {
    a: String,
    b: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Namespaces {
    fn create() -> Result<Namespaces, String> {
        let tag = std::process::id() % 100_000;
        let ns = Namespaces {
            a: format!("shoal-{tag}-a"),
            b: format!("shoal-{tag}-b"),
        };
        let (va, vb) = (format!("sh{tag}a"), format!("sh{tag}b"));
        ip(&["netns", "add", &ns.a])?;
        ip(&["netns", "add", &ns.b])?;
        ip(&[
            "link", "add", &va, "netns", &ns.a, "type", "veth", "peer", "name", &vb, "netns", &ns.b,
        ])?;
        for (n, dev, addr) in [(&ns.a, &va, "198.18.7.1/24"), (&ns.b, &vb, "198.18.7.2/24")] {
            ip(&["-n", n, "addr", "add", addr, "dev", dev])?;
            ip(&["-n", n, "link", "set", dev, "up"])?;
            ip(&["-n", n, "link", "set", "lo", "up"])?;
        }
        Ok(ns)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.a]);
        let _ = ip(&["netns", "del", &self.b]);
    }
}

#[test]
fn chats_listening_on_unspecified_addresses_in_two_namespaces_talk() {
    let ns = match Namespaces::create() {
        Ok(ns) => ns,
        // CI runs as root with iproute2: there the test must run.
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("skipped: cannot create network namespaces ({e})");
            return;
        }
        Err(e) => panic!("cannot create network namespaces: {e}"),
    };
    let deadline = Instant::now() + LIMIT;
    let root = TempDir::new("chat-netns");
    let any = ["--listen", "/ip4/0.0.0.0/tcp/0"];
    let mut bob = chat("bob", Some(&ns.a), &root.join("bob"), &any);
    let bob_id = bob.value("user id:", deadline);
    let bob_addr = bob.value("listening on:", deadline);
    assert!(
        bob_addr.starts_with("/ip4/198.18.7.1/tcp/"),
        "announces its interface address, never 0.0.0.0: {bob_addr}"
    );
    let mut args = any.to_vec();
    args.extend(["--bootstrap", &bob_addr]);
    let mut alice = chat("alice", Some(&ns.b), &root.join("alice"), &args);
    let alice_id = alice.value("user id:", deadline);
    let alice_addr = alice.value("listening on:", deadline);
    assert!(
        alice_addr.starts_with("/ip4/198.18.7.2/tcp/"),
        "{alice_addr}"
    );

    alice.type_line(&format!("/add {bob_id} bob"));
    alice.type_line("/msg bob hello across namespaces");
    bob.wait("alice's request", deadline, |l| {
        l.starts_with("message request from ")
    });
    // Bob accepts and answers: he finds alice through her presence record,
    // which must carry her real address.
    bob.type_line(&format!("/add {alice_id} alice"));
    bob.wait("alice's message", deadline, |l| {
        l == "alice: hello across namespaces"
    });
    alice.wait("the delivery", deadline, |l| {
        l == "delivered to bob: hello across namespaces"
    });
    bob.type_line("/msg alice hi back");
    alice.wait("bob's answer", deadline, |l| l == "bob: hi back");
    bob.wait("the delivery", deadline, |l| {
        l == "delivered to alice: hi back"
    });
}

#[test]
fn a_dead_bootstrap_address_is_reported_and_connect_joins_later() {
    let deadline = Instant::now() + LIMIT;
    let root = TempDir::new("chat-connect");
    let mut bob = chat("bob", None, &root.join("bob"), &[]);
    let bob_id = bob.value("user id:", deadline);
    let bob_addr = bob.value("listening on:", deadline);
    let peer = bob_addr.rsplit('/').next().unwrap().to_owned();

    // Nothing listens on that port: the user is told, in one line.
    let dead = format!("/ip4/127.0.0.1/tcp/{}/p2p/{peer}", closed_port());
    let mut alice = chat("alice", None, &root.join("alice"), &["--bootstrap", &dead]);
    let line = alice.wait("about the dead bootstrap", deadline, |l| {
        l.starts_with("error: bootstrap ")
    });
    assert!(line.contains("unreachable"), "{line}");
    assert!(
        !line.contains('{'),
        "one readable line, no debug dump: {line}"
    );

    // Later she joins through bob's real address and reaches him.
    alice.type_line(&format!("/connect {bob_addr}"));
    alice.wait("the join", deadline, |l| {
        l.starts_with("connected: joined the network through")
    });
    alice.type_line(&format!("/add {bob_id} bob"));
    alice.type_line("/msg bob found you");
    let request = bob.wait("her request", deadline, |l| {
        l.starts_with("message request from ")
    });
    let tag = request["message request from ".len()..]
        .split(' ')
        .next()
        .unwrap();
    bob.type_line(&format!("/add {tag} alice"));
    bob.wait("her message", deadline, |l| l == "alice: found you");
    alice.wait("the delivery", deadline, |l| {
        l == "delivered to bob: found you"
    });

    // A wrong address gets an answer too.
    alice.type_line("/connect /ip4/127.0.0.1/tcp/1");
    alice.wait("about the missing peer id", deadline, |l| {
        l.contains("needs /p2p/<peer id>")
    });
}

#[test]
fn a_restarted_chat_rejoins_through_remembered_peers_and_long_lines_are_refused() {
    let deadline = Instant::now() + LIMIT;
    let root = TempDir::new("chat-remember");
    let mut bob = chat("bob", None, &root.join("bob"), &[]);
    let bob_id = bob.value("user id:", deadline);
    let bob_addr = bob.value("listening on:", deadline);
    let bob_peer = bob_addr.rsplit('/').next().unwrap().to_owned();

    let alice_dir = root.join("alice");
    let mut alice = chat("alice", None, &alice_dir, &["--bootstrap", &bob_addr]);
    let alice_id = alice.value("user id:", deadline);
    bob.type_line(&format!("/add {alice_id} alice"));
    // A line longer than any message is refused, and the chat goes on.
    alice.type_line(&"x".repeat(40_000));
    let refused = alice.wait("the refusal", deadline, |l| l.starts_with("line too long"));
    assert!(refused.contains("40000 bytes"), "{refused}");
    // Asked until bob is connected (joining takes a moment), bounded.
    for attempt in 0..100 {
        let from = alice.seen.len();
        alice.type_line("/peers");
        let (_, line) = alice.wait_from(from, "the peers", deadline, |l| {
            l.starts_with("peer: ") || l == "no peers connected"
        });
        if line == format!("peer: {bob_peer}") {
            break;
        }
        assert!(attempt < 99, "alice never connected to bob");
        std::thread::sleep(Duration::from_millis(100));
    }
    alice.type_line("/quit");
    let exit = alice.wait_exit(deadline);
    assert!(exit.success(), "{exit}");
    let remembered = std::fs::read_to_string(alice_dir.join("peers")).unwrap();
    assert!(remembered.contains(&bob_peer), "{remembered}");

    // Restarted without --bootstrap, she finds bob by herself.
    let mut alice = chat("alice", None, &alice_dir, &[]);
    alice.wait("the rejoin", deadline, |l| {
        l == format!("rejoined the network through {bob_peer}")
    });
    alice.type_line(&format!("/add {bob_id} bob"));
    alice.type_line("/msg bob back again");
    bob.wait("her message", deadline, |l| l == "alice: back again");
}
