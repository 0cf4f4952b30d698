//! Two `chat` processes on loopback: bob starts first, alice joins through
//! his address; they add each other by user id, exchange a message each
//! way with a delivery and a read receipt, alice's history shows both
//! lines in order, and bob restarted on the same data directory keeps his
//! user id and the conversation and gets what alice wrote while he was
//! away.
#![allow(clippy::unwrap_used)]

mod common;

use std::{
    ffi::OsStr,
    path::Path,
    time::{Duration, Instant},
};

use common::{Process, TempDir};

/// Upper bound for the whole exchange.
const LIMIT: Duration = Duration::from_secs(60);

/// A `chat` process on `data_dir`.
fn chat(name: &str, data_dir: &Path, args: &[&str]) -> Process {
    let mut all = vec![OsStr::new("--data-dir"), data_dir.as_os_str()];
    all.extend(args.iter().map(OsStr::new));
    Process::start(name, env!("CARGO_BIN_EXE_chat"), all)
}

/// Types `/history <args>` and returns the lines it printed.
fn typed_history(chat: &mut Process, args: &str, deadline: Instant) -> Vec<String> {
    let from = chat.seen.len();
    chat.type_line(&format!("/history {args}"));
    let (at, header) = chat.wait_from(from, "starting with \"history with\"", deadline, |l| {
        l.starts_with("history with ")
    });
    let count: usize = header
        .split('(')
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    let mut lines = Vec::new();
    for k in 1..=count {
        let (_, line) = chat.wait_from(at + k, "of the history", deadline, |_| true);
        lines.push(line);
    }
    lines
}

#[test]
fn two_chats_talk_and_keep_their_history() {
    let deadline = Instant::now() + LIMIT;
    let started = Instant::now();
    let root = TempDir::new("chat-test");
    let (bob_dir, alice_dir) = (root.join("bob"), root.join("alice"));

    let mut bob = chat("bob", &bob_dir, &[]);
    let bob_id = bob.value("user id:", deadline);
    assert!(bob_id.starts_with("SHOAL-"), "{bob_id}");
    let bob_addr = bob.value("listening on:", deadline);
    assert!(bob_addr.starts_with("/ip4/127.0.0.1/tcp/"), "{bob_addr}");
    assert!(bob_addr.contains("/p2p/"), "{bob_addr}");
    bob.wait("\"type /help for commands\"", deadline, |l| {
        l == "type /help for commands"
    });
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&bob_dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "data dir mode {mode:o}");
        assert!(bob_dir.join("messenger.db").exists());
    }

    let mut alice = chat("alice", &alice_dir, &["--bootstrap", &bob_addr]);
    let alice_id = alice.value("user id:", deadline);
    assert_ne!(alice_id, bob_id);
    let alice_addr = alice.value("listening on:", deadline);

    // Mistakes get an answer, never a crash.
    alice.type_line("/frobnicate");
    alice.wait("about the unknown command", deadline, |l| {
        l.starts_with("unknown command /frobnicate")
    });
    alice.type_line("/msg carol hi");
    alice.wait("about the unknown name", deadline, |l| {
        l.starts_with("no contact named \"carol\"")
    });
    alice.type_line("/add SHOAL-NOTANID bob");
    alice.wait("about the bad id", deadline, |l| {
        l.contains("is not a user id")
    });

    alice.type_line(&format!("/add {bob_id} bob"));
    alice.type_line("/msg bob hello from alice");
    // Alice is a stranger to bob: her message is a request, shown under
    // the start of her id, and nothing goes back until he accepts it.
    let tag = &alice_id[..12];
    bob.wait("the message request", deadline, |l| {
        l == format!("message request from {tag} ({alice_id})")
    });
    let first = started.elapsed();
    bob.type_line("/requests");
    bob.wait("the request's text", deadline, |l| {
        l == "  hello from alice"
    });
    bob.type_line(&format!("/add {tag} alice"));
    bob.wait("\"alice: hello from alice\"", deadline, |l| {
        l == "alice: hello from alice"
    });
    alice.wait("\"delivered to bob: hello from alice\"", deadline, |l| {
        l == "delivered to bob: hello from alice"
    });

    bob.type_line("/msg alice hi alice");
    alice.wait("\"bob: hi alice\"", deadline, |l| l == "bob: hi alice");
    bob.wait("\"delivered to alice: hi alice\"", deadline, |l| {
        l == "delivered to alice: hi alice"
    });

    // Alice reads the conversation: bob gets the receipt.
    alice.type_line("/to bob");
    alice.wait("\"talking to bob\"", deadline, |l| l == "talking to bob");
    alice.type_line("/read");
    alice.wait("\"marked 1 message(s) read\"", deadline, |l| {
        l == "marked 1 message(s) read"
    });
    bob.wait("\"read by alice: hi alice\"", deadline, |l| {
        l == "read by alice: hi alice"
    });

    let history = typed_history(&mut alice, "bob", deadline);
    assert_eq!(history.len(), 2, "{history:#?}");
    assert!(
        history[0].starts_with('[') && history[0].ends_with("] me: hello from alice ✓"),
        "{history:#?}"
    );
    assert!(history[1].ends_with("] bob: hi alice"), "{history:#?}");
    let history = typed_history(&mut bob, "alice 5", deadline);
    assert_eq!(history.len(), 2, "{history:#?}");
    assert!(history[0].ends_with("] alice: hello from alice"));
    assert!(history[1].ends_with("] me: hi alice ✓✓"), "{history:#?}");

    // Bob quits; alice writes while he is away.
    bob.type_line("/quit");
    let quit_by = Instant::now() + Duration::from_secs(10);
    while bob.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < quit_by, "bob did not exit on /quit");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(bob);
    alice.type_line("/msg bob are you back?");

    // Bob restarts on the same directory, joining through alice: same id,
    // same conversation, and the message that waited arrives.
    let mut bob = chat("bob again", &bob_dir, &["--bootstrap", &alice_addr]);
    assert_eq!(bob.value("user id:", deadline), bob_id);
    bob.wait("listing alice", deadline, |l| l == "contacts: alice");
    bob.wait("\"alice: are you back?\"", deadline, |l| {
        l == "alice: are you back?"
    });
    alice.wait("\"delivered to bob: are you back?\"", deadline, |l| {
        l == "delivered to bob: are you back?"
    });
    let history = typed_history(&mut bob, "alice", deadline);
    assert_eq!(history.len(), 3, "{history:#?}");
    assert!(history[1].ends_with("] me: hi alice ✓✓"), "{history:#?}");
    assert!(
        history[2].ends_with("] alice: are you back?"),
        "{history:#?}"
    );

    eprintln!(
        "first message delivered after {:.1} s, whole test {:.1} s",
        first.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    drop(alice);
    drop(bob);
}

/// What a user types that would have gone wrong quietly: renaming a contact
/// with `/add`, giving two contacts one name, leaving with messages in
/// flight; answering someone by the tag the chat shows for them; and
/// removing a contact with what waited for it.
#[test]
fn the_chat_refuses_ambiguity_answers_by_tag_and_warns_before_quitting() {
    let deadline = Instant::now() + LIMIT;
    let root = TempDir::new("chat-commands");
    let (bob_dir, alice_dir) = (root.join("bob"), root.join("alice"));
    let mut bob = chat("bob", &bob_dir, &[]);
    let bob_id = bob.value("user id:", deadline);
    let bob_addr = bob.value("listening on:", deadline);
    let mut alice = chat("alice", &alice_dir, &["--bootstrap", &bob_addr]);
    let alice_id = alice.value("user id:", deadline);

    alice.type_line(&format!("/add {bob_id} bob"));
    alice.wait("\"added bob\"", deadline, |l| l.starts_with("added bob"));
    alice.type_line(&format!("/add {bob_id} robert"));
    alice.wait("a refusal to rename", deadline, |l| {
        l.ends_with("is already a contact, named bob; not renamed")
    });
    // Nobody answers to this id: what is sent to it stays in the outbox.
    let nobody =
        shoal_im::UserId::new(shoal_identity::Keypair::from_secret_bytes(&[0x77; 32]).public());
    alice.type_line(&format!("/add {nobody} Bob"));
    alice.wait("a refusal of a taken name", deadline, |l| {
        l.starts_with("the name \"Bob\" is taken by ")
    });

    // Bob accepts alice's request and answers her by the tag he is shown.
    alice.type_line("/msg bob hello from alice");
    let line = bob.wait("alice's request", deadline, |l| {
        l.starts_with("message request from ")
    });
    let tag = line["message request from ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .to_owned();
    assert!(
        alice_id.starts_with(&tag),
        "{tag} is not the start of {alice_id}"
    );
    bob.type_line(&format!("/msg {tag} too early"));
    bob.wait("a refusal before accepting", deadline, |l| {
        l == format!("error: {tag} wrote to you first: /add {tag} <name> accepts their request")
    });
    bob.type_line(&format!("/add {tag} alice"));
    bob.wait("alice's message", deadline, |l| {
        l == "alice: hello from alice"
    });
    bob.type_line(&format!("/msg {tag} hi back"));
    alice.wait("\"bob: hi back\"", deadline, |l| l == "bob: hi back");

    // Both see the same safety number.
    alice.type_line("/verify bob");
    let alice_sees = alice.value("safety number with bob:", deadline);
    bob.type_line(&format!("/verify {tag}"));
    let bob_sees = bob.value(&format!("safety number with {tag}:"), deadline);
    assert_eq!(alice_sees, bob_sees);
    assert_eq!(alice_sees.len(), 12 * 5 + 11, "{alice_sees}");

    alice.type_line(&format!("/add {nobody} carol"));
    alice.type_line("/msg carol are you there?");
    alice.type_line("/quit");
    alice.wait("the warning", deadline, |l| {
        l.starts_with("1 message(s) neither delivered nor stored")
    });
    assert!(
        alice.child.try_wait().unwrap().is_none(),
        "alice left at once"
    );
    // Removing carol erases what waited for her: nothing is in flight now.
    alice.type_line("/remove carol");
    alice.wait("the removal", deadline, |l| {
        l == "removed carol: the conversation is erased, and they are blocked"
    });
    alice.type_line("/quit");
    let quit_by = Instant::now() + Duration::from_secs(10);
    while alice.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < quit_by, "alice did not exit on /quit");
        std::thread::sleep(Duration::from_millis(50));
    }
}
