//! The README's chat walkthrough, followed literally: the commands and
//! typed lines are read from its code block (placeholders replaced by what
//! the chats print), and every step after it that the prose quotes is
//! checked to be in the README word for word, then done and its answer
//! awaited.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Process, TempDir};

const LIMIT: Duration = Duration::from_secs(60);
const README: &str = include_str!("../../README.md");

/// One terminal of the walkthrough: the chat's arguments and what is typed.
#[derive(Debug, Default)]
struct Terminal {
    /// The arguments after `--`, as written (placeholders may hold spaces).
    args: String,
    typed: Vec<String>,
}

/// The code block of the chat section, as terminals.
fn walkthrough() -> Vec<Terminal> {
    let section = README
        .split("## Chat between two terminals")
        .nth(1)
        .expect("the README has the chat section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("the chat section has a code block");
    let mut terminals: Vec<Terminal> = Vec::new();
    let mut pending = String::new();
    for line in block.lines() {
        if line.starts_with("# terminal") {
            terminals.push(Terminal::default());
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let terminal = terminals.last_mut().expect("a terminal comes first");
        let line = format!("{pending}{}", line.trim());
        if let Some(start) = line.strip_suffix('\\') {
            pending = format!("{start} ");
            continue;
        }
        pending.clear();
        match line.split_once(" --bin chat -- ") {
            Some((_, args)) => {
                terminal.args = args.to_owned();
            }
            None => terminal.typed.push(line),
        }
    }
    terminals
}

/// Starts the chat with the README's arguments, data directories under
/// `root`.
fn start(name: &str, root: &Path, args: &str, replace: &[(&str, &str)]) -> Process {
    let filled = fill(args, replace);
    let mut out = Vec::new();
    let mut args = filled.split_whitespace();
    while let Some(arg) = args.next() {
        out.push(arg.to_owned());
        if arg == "--data-dir" {
            let dir = args.next().expect("a directory after --data-dir");
            out.push(root.join(dir).display().to_string());
        }
    }
    Process::start(name, env!("CARGO_BIN_EXE_chat"), out)
}

fn fill(text: &str, replace: &[(&str, &str)]) -> String {
    replace
        .iter()
        .fold(text.to_owned(), |t, (from, to)| t.replace(from, to))
}

/// `quoted` as the README prints it in backticks.
fn documented(quoted: &str) {
    assert!(
        README.contains(&format!("`{quoted}`")),
        "the README no longer says `{quoted}`"
    );
}

#[test]
fn the_readme_chat_walkthrough_works_as_written() {
    let deadline = Instant::now() + LIMIT;
    let root = TempDir::new("readme");
    let terminals = walkthrough();
    assert_eq!(terminals.len(), 2, "{terminals:?}");

    let mut bob = start("bob", &root, &terminals[0].args, &[]);
    let bob_id = bob.value("user id:", deadline);
    let bob_addr = bob.value("listening on:", deadline);
    let replace = [
        ("/ip4/127.0.0.1/tcp/<port>/p2p/<peer id>", bob_addr.as_str()),
        ("SHOAL-<bob>", bob_id.as_str()),
    ];
    let mut alice = start("alice", &root, &terminals[1].args, &replace);
    let alice_id = alice.value("user id:", deadline);
    for line in &terminals[1].typed {
        alice.type_line(&fill(line, &replace));
    }

    documented("online: bob");
    alice.wait("online: bob", deadline, |l| l == "online: bob");
    documented("message request from SHOAL-<alice's first letters> (SHOAL-<alice>)");
    let tag = &alice_id[..12];
    bob.wait("the request", deadline, |l| {
        l == format!("message request from {tag} ({alice_id})")
    });
    documented("/requests");
    bob.type_line("/requests");
    bob.wait("what alice wrote", deadline, |l| l == "  hello bob");
    documented("/add <those first letters> alice");
    bob.type_line(&format!("/add {tag} alice"));
    documented("alice: hello bob");
    bob.wait("alice's message", deadline, |l| l == "alice: hello bob");
    documented("delivered to bob: hello bob");
    alice.wait("the delivery", deadline, |l| {
        l == "delivered to bob: hello bob"
    });
    documented("/msg alice hi");
    bob.type_line("/msg alice hi");
    alice.wait("bob's answer", deadline, |l| l == "bob: hi");
    documented("/read alice");
    bob.type_line("/read alice");
    alice.wait("the read receipt", deadline, |l| {
        l == "read by bob: hello bob"
    });
}
