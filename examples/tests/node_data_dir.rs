//! `--data-dir` keeps a node's key and the peers it met: a node restarted
//! with no `--connect` at all dials the peers it remembers and finds its
//! network again.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Process, TempDir};

/// Upper bound for the test.
const LIMIT: Duration = Duration::from_secs(30);

fn node(name: &str, args: &[&str]) -> Process {
    let mut all = vec!["--duration", "40", "--ping-interval", "1"];
    all.extend_from_slice(args);
    Process::start(name, env!("CARGO_BIN_EXE_node"), all)
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Asks the node to stop as a service manager would (SIGTERM) and waits
/// (until `deadline`) for it to exit; returns its status code.
fn terminate(p: &mut Process, deadline: Instant) -> Option<i32> {
    let status = Command::new("kill")
        .args(["-TERM", &p.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    loop {
        if let Some(status) = p.child.try_wait().unwrap() {
            return status.code();
        }
        assert!(Instant::now() < deadline, "{} did not exit", p.name);
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn restarted_node_redials_remembered_peer() {
    let deadline = Instant::now() + LIMIT;
    let root = TempDir::new("node-data-dir");
    let data = root.join("a");
    let data_arg = data.to_str().unwrap();
    let b_key = root.join("b.key");
    let b_key = b_key.to_str().unwrap();

    let mut a = node("a", &["--data-dir", data_arg]);
    let a_id = a.value("peer id:", deadline);
    let a_addr = a.value("listening on:", deadline);
    a.wait_line("no peers connected yet", deadline);
    let mut b = node("b", &["--key-file", b_key, "--connect", &a_addr]);
    let b_id = b.value("peer id:", deadline);
    let b_addr = b.value("listening on:", deadline);
    let b_listen = b_addr.rsplit_once("/p2p/").unwrap().0.to_owned();
    a.wait_line(&format!("identified: {b_id}"), deadline);

    // a stops cleanly and writes what it met.
    assert_eq!(terminate(&mut a, deadline), Some(0));
    let peers = data.join("peers");
    a.wait_line(
        &format!("saved 1 remembered peer to {}", peers.display()),
        deadline,
    );
    let text = std::fs::read_to_string(&peers).unwrap();
    let entry = text.lines().find(|l| !l.starts_with('#')).unwrap();
    let fields: Vec<&str> = entry.split(' ').collect();
    assert_eq!(fields[0], b_id, "{text}");
    assert!(fields[2..].contains(&b_listen.as_str()), "{text}");
    assert!(data.join("node.key").exists());
    #[cfg(unix)]
    {
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&peers), 0o600);
        assert_eq!(mode(&data.join("node.key")), 0o600);
    }

    // b restarts on the same port with the same key and connects nowhere;
    // a restarts on a new port with its data directory and no --connect.
    drop(b);
    let mut b = node("b again", &["--key-file", b_key, "--listen", &b_listen]);
    assert_eq!(b.value("listening on:", deadline), b_addr);
    let mut a = node("a again", &["--data-dir", data_arg]);
    assert_eq!(a.value("peer id:", deadline), a_id, "the key is kept");
    a.wait_line(
        "dialling 0 bootstrap addresses and 1 remembered peer",
        deadline,
    );
    a.wait("connected to b by itself", deadline, |l| {
        l == format!("connected: {b_id} via {b_addr} (Outbound)")
    });
    b.wait_line(&format!("connected: {a_id}"), deadline);
    b.wait_line(&format!("identified: {a_id}"), deadline);
    drop(a);
}
