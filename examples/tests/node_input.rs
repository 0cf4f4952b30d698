//! A line typed into a `node` longer than a gossip message can be is
//! refused with the limit stated, and the node goes on: the lines after it
//! are published and reach the other node.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::Process;
use shoal_gossip::config::DEFAULT_MAX_PAYLOAD_SIZE as LIMIT_BYTES;

/// Upper bound for the test.
const LIMIT: Duration = Duration::from_secs(30);

fn node(name: &str, args: &[&str]) -> Process {
    let mut all = vec!["--duration", "40", "--ping-interval", "1"];
    all.extend_from_slice(args);
    Process::start(name, env!("CARGO_BIN_EXE_node"), all)
}

#[test]
fn over_long_line_is_refused_and_the_node_goes_on() {
    let deadline = Instant::now() + LIMIT;
    let mut a = node("a", &[]);
    let a_addr = a.value("listening on:", deadline);
    let mut b = node("b", &["--connect", &a_addr]);
    let b_id = b.value("peer id:", deadline);

    // Written on a thread: if b stopped reading, the test would still
    // end (at its deadline, when b is killed and the write fails).
    let mut stdin = b.take_stdin().unwrap();
    let writer = std::thread::spawn(move || {
        let long = "x".repeat(100_000);
        let full = "y".repeat(LIMIT_BYTES);
        write!(stdin, "{long}\n{full}\nafter the long line\n")?;
        stdin.flush()?;
        Ok::<_, std::io::Error>(stdin)
    });

    b.wait_line(
        &format!("line too long: 100000 bytes (limit {LIMIT_BYTES}); not published"),
        deadline,
    );
    let full = b.wait_line("published: y", deadline);
    assert_eq!(full.len(), "published: ".len() + LIMIT_BYTES);
    b.wait_line("published: after the long line", deadline);
    let on_topic = format!("gossip: {b_id} on shoal/lobby: ");
    let got = a.wait_line(&format!("{on_topic}y"), deadline);
    assert_eq!(got.len(), on_topic.len() + LIMIT_BYTES);
    a.wait_line(&format!("{on_topic}after the long line"), deadline);
    assert!(!a.drain().iter().any(|l| l.contains("xxxx")));
    assert!(!b.drain().iter().any(|l| l.starts_with("published: x")));
    assert!(b.child.try_wait().unwrap().is_none(), "b is still running");
    let mut stdin = writer.join().unwrap().unwrap();

    // And it still reads: a line typed now goes out too.
    writeln!(stdin, "one more").unwrap();
    stdin.flush().unwrap();
    a.wait_line(&format!("{on_topic}one more"), deadline);
}
