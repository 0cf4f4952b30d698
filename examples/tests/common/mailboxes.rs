//! The processes of the mailbox tests: nodes that keep mailboxes, each on
//! its own loopback /24, and chats.

use std::path::Path;
use std::time::Instant;

use super::Process;

/// A `node` listening on 127.10.`i`.1 with its data in `dir`, joining
/// through `connect` (if any), with `extra` arguments.
pub(crate) fn node(i: usize, dir: &Path, connect: Option<&str>, extra: &[&str]) -> Process {
    let mut args = vec![
        "--listen".to_owned(),
        format!("/ip4/127.10.{i}.1/tcp/0"),
        "--data-dir".to_owned(),
        dir.display().to_string(),
        "--ping-interval".to_owned(),
        "60".to_owned(),
    ];
    if let Some(addr) = connect {
        args.extend(["--connect".to_owned(), addr.to_owned()]);
    }
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    Process::start(&format!("node{i}"), env!("CARGO_BIN_EXE_node"), args)
}

/// A `chat` called `name` listening on `ip`, its data in `dir`, joining
/// through `bootstrap`.
pub(crate) fn chat(name: &str, ip: &str, dir: &Path, bootstrap: &[String]) -> Process {
    chat_with(name, ip, dir, bootstrap, &[])
}

/// [`chat`] with `extra` arguments.
pub(crate) fn chat_with(
    name: &str,
    ip: &str,
    dir: &Path,
    bootstrap: &[String],
    extra: &[&str],
) -> Process {
    let mut args = vec![
        "--data-dir".to_owned(),
        dir.display().to_string(),
        "--listen".to_owned(),
        format!("/ip4/{ip}/tcp/0"),
    ];
    for addr in bootstrap {
        args.extend(["--bootstrap".to_owned(), addr.clone()]);
    }
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    Process::start(name, env!("CARGO_BIN_EXE_chat"), args)
}

/// The peer ids between the brackets of a "stored for" line.
pub(crate) fn signers(line: &str) -> Vec<String> {
    let inside = line.split('[').nth(1).unwrap().split(']').next().unwrap();
    inside.split_whitespace().map(str::to_owned).collect()
}

/// Alice and bob (user ids `alice_id` and `bob_id`) add each other and
/// exchange a first message while both are online, so each knows the
/// other's device: what the mailbox tests start from.
pub(crate) fn introduce(
    alice: &mut Process,
    alice_id: &str,
    bob: &mut Process,
    bob_id: &str,
    deadline: Instant,
) {
    alice.type_line(&format!("/add {bob_id} bob"));
    bob.type_line(&format!("/add {alice_id} alice"));
    alice.wait_line("added bob", deadline);
    bob.wait_line("added alice", deadline);
    alice.type_line("/msg bob hello");
    bob.wait_line("alice: hello", deadline);
    alice.wait_line("delivered to bob: hello", deadline);
}
