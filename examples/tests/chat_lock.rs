//! Two chat processes on one data directory: the second exits at once with
//! a clear error; after the first is killed (SIGKILL), a new one starts.
#![allow(clippy::unwrap_used)]

mod common;

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{Process, TempDir, assert_readable};

/// Upper bound for the test.
const LIMIT: Duration = Duration::from_secs(30);

#[test]
fn one_chat_per_data_directory_and_a_kill_releases_it() {
    let deadline = Instant::now() + LIMIT;
    let dir = TempDir::new("chat-lock");
    let data = dir.join("alice");
    let data_arg = data.to_str().unwrap();
    let mut first = Process::start(
        "first",
        env!("CARGO_BIN_EXE_chat"),
        ["--data-dir", data_arg],
    );
    let id = first.value("user id:", deadline);

    // The second exits at once, status 1, one readable line.
    let started = Instant::now();
    let second = Command::new(env!("CARGO_BIN_EXE_chat"))
        .args(["--data-dir", data_arg, "--duration", "20"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(second.status.code(), Some(1), "{second:?}");
    let stderr = String::from_utf8_lossy(&second.stderr);
    let line = stderr
        .lines()
        .find(|l| l.contains("in use by another process"))
        .unwrap_or_else(|| panic!("no clear error: {stderr}"));
    assert_readable(line);

    // kill -9 the holder: the kernel drops its lock; a new chat starts with
    // the same identity.
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let mut third = Process::start(
        "third",
        env!("CARGO_BIN_EXE_chat"),
        ["--data-dir", data_arg],
    );
    assert_eq!(third.value("user id:", deadline), id);
}
