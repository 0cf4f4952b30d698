//! An error that stops a `node` is one readable line on standard error,
//! `error: <message>`, and the exit status is 1.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Read;

use common::{TempDir, assert_readable};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Upper bound for the test.
const LIMIT: Duration = Duration::from_secs(30);

/// Runs the node until it exits (killed at `deadline`); returns its
/// status code and standard error.
fn run_to_exit(args: &[&str], deadline: Instant) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_node"))
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("node {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status.code(), stderr)
}

#[test]
fn fatal_errors_are_one_line_and_exit_1() {
    let deadline = Instant::now() + LIMIT;
    let dir = TempDir::new("node-errors");
    let bad_key = dir.join("bad.key");
    std::fs::write(&bad_key, "not a key\n").unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = format!("/ip4/127.0.0.1/tcp/{}", taken.local_addr().unwrap().port());
    let not_a_dir = dir.join("file");
    std::fs::write(&not_a_dir, "").unwrap();
    let cases: [(Vec<&str>, String); 4] = [
        (
            vec!["--key-file", bad_key.to_str().unwrap()],
            format!(
                "error: key file {}: expected 64 hex digits",
                bad_key.display()
            ),
        ),
        (
            vec!["--listen", &taken],
            format!("error: --listen: address {taken} is already in use"),
        ),
        (vec!["--duration=-1"], "error: --duration -1: ".to_owned()),
        (
            vec!["--data-dir", not_a_dir.to_str().unwrap()],
            format!("error: --data-dir {}: ", not_a_dir.display()),
        ),
    ];
    for (args, want) in cases {
        let (code, stderr) = run_to_exit(&args, deadline);
        assert_eq!(code, Some(1), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr:?}");
        assert!(
            stderr.starts_with(&want),
            "{args:?}: {stderr:?}, want {want:?}"
        );
        assert_readable(&stderr);
    }
}
