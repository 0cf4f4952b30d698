//! Two `node` processes on loopback: the second connects to the first;
//! each prints a ping time for the other, both join the DHT, and a message
//! each publishes on the gossip topic reaches the other.
#![allow(clippy::unwrap_used)]

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

/// Upper bound for the whole exchange.
const LIMIT: Duration = Duration::from_secs(30);

/// A child process killed when dropped, with its stdout lines on a channel.
struct Node {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    fn start(args: &[&str]) -> Node {
        let mut child = Command::new(env!("CARGO_BIN_EXE_node"))
            .args(["--duration", "30", "--ping-interval", "0.5"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::sync_channel(1024);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Node {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (until `deadline`) for a line starting with `prefix`.
    fn wait_line(&mut self, prefix: &str, deadline: Instant) -> String {
        if let Some(line) = self.seen.iter().find(|l| l.starts_with(prefix)) {
            return line.clone();
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.starts_with(prefix) {
                        return line;
                    }
                }
                Err(_) => panic!("no line starting with {prefix:?}; saw {:#?}", self.seen),
            }
        }
    }

    fn value(&mut self, prefix: &str, deadline: Instant) -> String {
        let line = self.wait_line(prefix, deadline);
        line[prefix.len()..].trim().to_owned()
    }
}

#[test]
fn two_nodes_see_and_ping_each_other() {
    let deadline = Instant::now() + LIMIT;
    let mut a = Node::start(&["--say", "hello from a"]);
    let a_id = a.value("peer id:", deadline);
    let a_addr = a.value("listening on:", deadline);
    assert!(a_addr.starts_with("/ip4/127.0.0.1/tcp/"));
    assert!(a_addr.ends_with(&format!("/p2p/{a_id}")));

    let mut b = Node::start(&["--connect", &a_addr, "--say", "hello from b"]);
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
