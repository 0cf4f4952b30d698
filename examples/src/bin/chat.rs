//! An interactive end-to-end encrypted chat in the terminal, over TCP.
//!
//! Each user runs one `chat` with a data directory; the identity, the
//! contacts and every conversation live in `<data dir>/messenger.db`, so
//! restarting with the same directory keeps the same user id and history.
//! Users find each other through the DHT of the nodes they are connected to:
//! one `--bootstrap` address is enough to join.
//!
//! ```sh
//! # terminal 1: bob
//! cargo run -p shoal-examples --bin chat -- --data-dir bob
//! #   user id: SHOAL-BOB…
//! #   listening on: /ip4/127.0.0.1/tcp/41234/p2p/<bob's peer id>
//!
//! # terminal 2: alice joins through bob's address
//! cargo run -p shoal-examples --bin chat -- --data-dir alice \
//!     --bootstrap /ip4/127.0.0.1/tcp/41234/p2p/<bob's peer id>
//! /add SHOAL-BOB… bob
//! /to bob
//! hello bob
//! #   delivered to bob: hello bob
//!
//! # terminal 1 shows `new contact: SHOAL-ALICE…` and `SHOAL-ALICE: hello bob`
//! # (the first 12 characters of her id); name her and answer:
//! /add SHOAL-ALICE… alice
//! /msg alice hi alice
//! ```
//!
//! Type `/help` for the commands. Times are shown in UTC.
//!
//! This file is long on purpose (about 1,000 lines): it is the whole of a
//! chat client, meant to be read top to bottom as an example of the
//! messenger's API (start, the event loop, each command beside its output).
//! What the example binaries share (the line editor, input, output) lives
//! in `common/`.

mod common;

/// Prints a line for the user (above the prompt when the line editor runs).
macro_rules! say {
    ($($arg:tt)*) => {
        common::terminal::say(format!($($arg)*))
    };
}

use common::{
    clock,
    input::{self, Input},
    peers::PeerBook,
    terminal,
};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use shoal_identity::PeerId;
use shoal_im::engine::ContactInfo;
use shoal_im::{MessageId, UserId};
use shoal_mailbox::{WakeEndpoint, WakeToken};
use shoal_messenger::{Event, Messenger, MessengerConfig, SqliteStore};
use shoal_transport::{Multiaddr, TcpTransport};

#[derive(Parser, Debug)]
#[command(about = "End-to-end encrypted chat over TCP: one user per data directory")]
struct Args {
    /// Directory holding the identity and the conversations
    /// (`messenger.db`); created (owner-only) if missing.
    #[arg(long)]
    data_dir: PathBuf,
    /// Address to listen on (port 0 picks a free port; repeatable).
    #[arg(long, default_value = "/ip4/127.0.0.1/tcp/0")]
    listen: Vec<Multiaddr>,
    /// A node to join the network through, as `/ip4/…/tcp/…/p2p/<peer id>`
    /// (repeatable).
    #[arg(long)]
    bootstrap: Vec<Multiaddr>,
    /// An address others can reach this node at besides the listen
    /// addresses, e.g. a port forwarded by a router (repeatable). With
    /// `--listen /ip4/0.0.0.0/…` the interface addresses are announced
    /// anyway.
    #[arg(long)]
    external_address: Vec<Multiaddr>,
    /// Exit after this many seconds (default: run until /quit, the end of
    /// standard input or Ctrl-C; with it, the end of input does not stop).
    #[arg(long)]
    duration: Option<f64>,
    /// A wake-up endpoint, as `/ip4/…/tcp/…/p2p/<peer id>` (a `node` run
    /// with `--on-wake`, which prints this address and its token): while
    /// this chat is away, the nodes keeping its mailboxes wake that node
    /// when messages wait. Needs --wake-token.
    #[arg(long, requires = "wake_token")]
    wake_endpoint: Option<Multiaddr>,
    /// The endpoint's token (32 hex digits), as its `node` printed it.
    #[arg(long, requires = "wake_endpoint")]
    wake_token: Option<String>,
    /// A relay to hold a reservation on, as `/ip4/…/tcp/…/p2p/<peer id>`
    /// (a `node` run with `--serve-relay`; repeatable, two are kept):
    /// behind a NAT, contacts reach this chat through it. Its relayed
    /// address is announced first.
    #[arg(long)]
    relay: Vec<Multiaddr>,
    /// An IP range to treat as the internet when checking which of this
    /// chat's addresses others can dial, e.g. `198.18.0.0/15` for a test
    /// network (repeatable; by default only global addresses count). Peers
    /// reached over such a range may then point this node only at
    /// addresses in it or global ones, not at private networks.
    #[arg(long)]
    global_range: Vec<shoal_transport::IpRange>,
    /// Publish only the relayed addresses of `--relay`, never this
    /// device's IP addresses: contacts reach it only through a relay
    /// (slower; the relays and the nodes it asks still see its IP).
    #[arg(long, requires = "relay")]
    hide_ip: bool,
    /// Test only: abort the process right after the n-th durable commit of
    /// this run, before anything that follows it (an acknowledgement, an
    /// envelope) leaves.
    #[arg(long, hide = true)]
    abort_after_commits: Option<u64>,
}

type Error = Box<dyn std::error::Error + Send + Sync>;

const HELP: &str = "\
commands:
  /add <user id> <name>     add a contact (or accept a message request: /add <tag> <name>)
  /to <name>                talk to <name>: plain lines are sent to them
  /msg <name> <text>        send one message without switching
  /history [<name>] [<n>]   the last n messages (default 20), oldest first
  /read [<name>]            mark the conversation's received messages read
  /contacts                 contacts: name, user id, state, messages in flight
  /requests                 messages from strangers, waiting for /add (accept) or /block
  /peers                    connected peers
  /connect <address>        join the network through a node (…/p2p/<peer id>)
  /id                       this user id and the listen addresses
  /verify <name>            the safety number to compare with a contact
  /verified <name>          mark a contact verified once the numbers match
  /accept <name>            accept a verified contact's new device and send again
  /block <name>             drop everything from a contact (/add unblocks)
  /remove <name>            erase a contact's conversation and block them
  /quit                     exit (asks again while messages wait; also Ctrl-C, or the end of input)
  /help                     this list
a <name> can also be a full user id (SHOAL-…)";

/// Longest input line: the largest message body (a command is shorter).
const MAX_LINE: usize = shoal_im::message::MAX_BODY_LEN;

/// How often the peers reached are written to the data directory.
const REMEMBER_EVERY: Duration = Duration::from_secs(30);

/// Remembered peers dialled at start, most recently seen first.
const REJOIN_AT_MOST: usize = 8;

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Notes the peers reached now and saves the book if it changed (always
/// with `force`); a failed save is one line.
fn remember_peers(messenger: &Messenger, book: &mut PeerBook, force: bool) {
    let now = unix_now();
    for (peer, addr) in messenger.reached_peers() {
        book.seen(peer, &[addr], now);
    }
    if let Err(e) = book.save(now, force) {
        say!("error: cannot save {}: {e}", book.path().display());
    }
}

/// Joins through remembered peers in the background, trying them one by
/// one until one answers; says so only if none does.
fn rejoin(messenger: &Messenger, remembered: Vec<(PeerId, Vec<Multiaddr>)>) {
    if remembered.is_empty() {
        return;
    }
    let messenger = messenger.clone();
    tokio::spawn(async move {
        let tried = remembered.len().min(REJOIN_AT_MOST);
        for (peer, addrs) in remembered.into_iter().take(REJOIN_AT_MOST) {
            for addr in addrs {
                if messenger.connect(addr.with_peer_id(peer)).await.is_ok() {
                    say!("rejoined the network through {peer}");
                    return;
                }
            }
        }
        say!(
            "none of the {tried} peers remembered from the last run answered; /connect <address> joins through a node"
        );
    });
}

/// Says which relays were gained and lost since `before` (or let go, once
/// checks found the chat public and it does not `hide_ip`); returns the
/// relays now.
fn tell_relays(messenger: &Messenger, before: Vec<PeerId>, hide_ip: bool) -> Vec<PeerId> {
    let now = messenger.relays();
    for relay in now.iter().filter(|r| !before.contains(r)) {
        say!("relay: reachable through {relay}");
    }
    // A chat that checks found others can dial lets its reservations go
    // (unless it hides its addresses): it needs no relay.
    let released = messenger.reachability().is_reachable() && !hide_ip;
    for relay in before.iter().filter(|r| !now.contains(r)) {
        if released {
            say!("relay: released {relay} (others dial this chat directly)");
        } else {
            say!("relay: lost {relay}");
        }
    }
    now
}

/// Says what reachability checks concluded when it changes; returns the
/// line said (or that would be).
fn tell_reachability(messenger: &Messenger, before: String) -> String {
    let status = messenger.reachability();
    let line = if let Some(addr) = status.reachable.first() {
        format!("reachability: public at {addr}")
    } else if status.is_unreachable() {
        "reachability: private (no address others can dial; reached through relays)".to_owned()
    } else {
        String::new()
    };
    if !line.is_empty() && line != before {
        say!("{line}");
    }
    line
}

/// How often the chat checks whether it still has a peer.
const PEER_CHECK: Duration = Duration::from_secs(2);

/// Length of the short form of a user id shown for unnamed contacts.
const SHORT_ID: usize = 12;
/// Characters of a message quoted in receipts.
const QUOTE: usize = 24;

/// Replaces control characters (terminal escapes, newlines) in text that
/// came from someone else.
fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '�' } else { c })
        .collect()
}

/// The first `n` characters of `text`, with an ellipsis if cut.
fn quote(text: &str, n: usize) -> String {
    let mut chars = text.chars();
    let head: String = chars.by_ref().take(n).collect();
    if chars.next().is_some() {
        format!("{head}…")
    } else {
        head
    }
}

/// The chat's state besides the messenger.
struct Chat {
    messenger: Messenger,
    /// The conversation plain lines go to.
    current: Option<UserId>,
    /// Texts of the messages sent since start, for receipts.
    sent: HashMap<MessageId, String>,
    /// Contacts whose presence was found.
    online: HashSet<UserId>,
    /// `/quit` was refused once because messages were still in flight.
    quit_warned: bool,
}

/// What a command asks of the main loop.
enum Flow {
    Continue,
    Quit,
}

impl Chat {
    async fn contacts(&self) -> Vec<ContactInfo> {
        match self.messenger.contacts().await {
            Ok(contacts) => contacts,
            Err(e) => {
                say!("error: {e}");
                Vec::new()
            }
        }
    }

    /// The name shown for `user`: its contact name, else its tag.
    async fn name(&self, user: UserId) -> String {
        let contacts = self.contacts().await;
        match contacts.iter().find(|c| c.user == user) {
            Some(c) if !c.name.is_empty() => clean(&c.name),
            _ => tag(&user),
        }
    }

    /// A contact named `name`, or the user whose id `name` is.
    async fn resolve(&self, name: &str) -> Result<UserId, String> {
        if let Ok(user) = name.parse::<UserId>() {
            return Ok(user);
        }
        let contacts = self.contacts().await;
        let mut found: Vec<&ContactInfo> = contacts.iter().filter(|c| c.name == name).collect();
        if found.is_empty() {
            found = contacts
                .iter()
                .filter(|c| c.name.eq_ignore_ascii_case(name))
                .collect();
        }
        if found.is_empty() && name.len() >= SHORT_ID {
            // The tag shown for someone without a name: the start of the id.
            found = contacts
                .iter()
                .filter(|c| {
                    c.user
                        .to_string()
                        .to_ascii_uppercase()
                        .starts_with(&name.to_ascii_uppercase())
                })
                .collect();
        }
        match found.as_slice() {
            [one] => Ok(one.user),
            [] if let Some(user) = self.request_by_tag(name).await => Ok(user),
            [] if name
                .to_ascii_uppercase()
                .starts_with(shoal_im::contact::USER_ID_PREFIX) =>
            {
                Err(format!("{name} is not a valid user id"))
            }
            [] => Err(format!(
                "no contact named {name:?}; /contacts lists them, /add <user id> <name> adds one"
            )),
            _ => Err(format!(
                "several contacts are named {name:?}; use the user id"
            )),
        }
    }

    async fn send(&mut self, contact: UserId, text: &str) {
        match self.messenger.send(contact, text).await {
            Ok(id) => {
                self.sent.insert(id, text.to_owned());
            }
            Err(shoal_messenger::MessengerError::Engine(
                shoal_im::engine::EngineError::UnknownContact(_),
            )) => say!("error: {contact} is not a contact; /add {contact} <name> first"),
            Err(shoal_messenger::MessengerError::Engine(
                shoal_im::engine::EngineError::DeviceChanged(_),
            )) => {
                let name = self.name(contact).await;
                say!(
                    "error: not sent: {name}'s device changed; /verify {name}, then /accept {name}"
                );
            }
            Err(shoal_messenger::MessengerError::Engine(
                shoal_im::engine::EngineError::NotAccepted(_),
            )) => {
                let tag = tag(&contact);
                say!("error: {tag} wrote to you first: /add {tag} <name> accepts their request");
            }
            Err(e) => say!("error: not sent: {e}"),
        }
    }

    /// Runs one line typed by the user.
    async fn line(&mut self, line: &str) -> Flow {
        let line = line.trim();
        if line.is_empty() {
            return Flow::Continue;
        }
        let Some(command) = line.strip_prefix('/') else {
            match self.current {
                Some(contact) => self.send(contact, line).await,
                None => {
                    say!("no conversation selected: /to <name> first, or /msg <name> <text>")
                }
            }
            return Flow::Continue;
        };
        let (verb, rest) = command
            .split_once(char::is_whitespace)
            .map_or((command, ""), |(v, r)| (v, r.trim()));
        let args: Vec<&str> = rest.split_whitespace().collect();
        if !matches!(verb, "quit" | "exit") {
            // A warning holds for the very next command only.
            self.quit_warned = false;
        }
        match verb {
            "add" => self.add(&args).await,
            "to" => match args.as_slice() {
                [name] => match self.resolve(name).await {
                    Ok(user) => {
                        self.current = Some(user);
                        say!("talking to {}", self.name(user).await);
                    }
                    Err(e) => say!("{e}"),
                },
                _ => say!("usage: /to <name>"),
            },
            "msg" => match rest.split_once(char::is_whitespace) {
                Some((name, text)) if !text.trim().is_empty() => match self.resolve(name).await {
                    Ok(user) => self.send(user, text.trim()).await,
                    Err(e) => say!("{e}"),
                },
                _ => say!("usage: /msg <name> <text>"),
            },
            "history" => self.history(&args).await,
            "read" => self.read(&args).await,
            "contacts" => self.list_contacts().await,
            "requests" => self.list_requests().await,
            "verify" => match args.as_slice() {
                [name] => match self.resolve(name).await {
                    Ok(user) => {
                        say!(
                            "safety number with {name}: {}",
                            self.messenger.safety_number(&user)
                        );
                        say!(
                            "  compare it with what {name} sees (in person, or on a call): the same digits mean you talk to each other's keys"
                        );
                    }
                    Err(e) => say!("{e}"),
                },
                _ => say!("usage: /verify <name>"),
            },
            "verified" => match args.as_slice() {
                [name] => match self.resolve(name).await {
                    Ok(user) => match self.messenger.set_verified(user, true).await {
                        Ok(()) => say!(
                            "{name} is verified: if their device changes, sending waits for /accept {name}"
                        ),
                        Err(e) => say!("error: {e}"),
                    },
                    Err(e) => say!("{e}"),
                },
                _ => say!("usage: /verified <name>"),
            },
            "accept" => match args.as_slice() {
                [name] => match self.resolve(name).await {
                    Ok(user) => match self.messenger.acknowledge_device_change(user).await {
                        Ok(()) => say!("accepted {name}'s new device: messages go out again"),
                        Err(e) => say!("error: {e}"),
                    },
                    Err(e) => say!("{e}"),
                },
                _ => say!("usage: /accept <name>"),
            },
            "block" => match args.as_slice() {
                [name] => match self.resolve(name).await {
                    Ok(user) => match self.messenger.block(user).await {
                        Ok(()) => say!(
                            "blocked {name}: nothing from them is taken, nothing goes to them; /add unblocks"
                        ),
                        Err(e) => say!("error: {e}"),
                    },
                    Err(e) => say!("{e}"),
                },
                _ => say!("usage: /block <name>"),
            },
            "remove" => match args.as_slice() {
                [name] => match self.resolve(name).await {
                    Ok(user) => match self.messenger.remove_contact(user).await {
                        Ok(()) => {
                            if self.current == Some(user) {
                                self.current = None;
                            }
                            say!(
                                "removed {name}: the conversation is erased, and they are blocked"
                            );
                        }
                        Err(e) => say!("error: {e}"),
                    },
                    Err(e) => say!("{e}"),
                },
                _ => say!("usage: /remove <name>"),
            },
            "peers" => {
                let peers = self.messenger.peer_paths();
                if peers.is_empty() {
                    say!("no peers connected");
                }
                for (peer, relay) in peers {
                    match relay {
                        Some(relay) => say!("peer: {peer} (through relay {relay})"),
                        None => say!("peer: {peer}"),
                    }
                }
            }
            "id" => self.print_id(),
            "connect" => match args.as_slice() {
                [addr] => match addr.parse::<Multiaddr>() {
                    Ok(addr) => {
                        say!("connecting to {addr} ...");
                        match self.messenger.connect(addr.clone()).await {
                            Ok(()) => say!("connected: joined the network through {addr}"),
                            Err(e) => say!("error: {e}"),
                        }
                    }
                    Err(e) => say!("not an address: {e}"),
                },
                _ => say!("usage: /connect /ip4/<address>/tcp/<port>/p2p/<peer id>"),
            },
            "quit" | "exit" => {
                // Messages stored in mailboxes reach the contact without us.
                let waiting: usize = self
                    .contacts()
                    .await
                    .iter()
                    .map(|c| c.outbox - c.stored)
                    .sum();
                if waiting == 0 || self.quit_warned {
                    return Flow::Quit;
                }
                self.quit_warned = true;
                say!(
                    "{waiting} message(s) neither delivered nor stored in mailboxes yet: they go out when you come back; /quit again to leave now"
                );
            }
            "help" | "?" => say!("{HELP}"),
            _ => say!("unknown command /{verb}; /help lists the commands"),
        }
        Flow::Continue
    }

    fn print_id(&self) {
        say!("user id: {}", self.messenger.user_id());
        for addr in self.messenger.listen_addrs() {
            say!("listening on: {addr}");
        }
    }

    async fn add(&mut self, args: &[&str]) {
        let (id, name) = match args {
            [id, name] => (*id, *name),
            [_, _, ..] => {
                say!("a name is one word: /add <user id> <name>");
                return;
            }
            _ => {
                say!("usage: /add <user id> <name>");
                return;
            }
        };
        let user = match id.parse::<UserId>() {
            Ok(user) => user,
            Err(e) => match self.request_by_tag(id).await {
                Some(user) => user,
                None => {
                    say!("{id:?} is not a user id: {e}");
                    return;
                }
            },
        };
        if user == self.messenger.user_id() {
            say!("that is your own user id");
            return;
        }
        if name.parse::<UserId>().is_ok() {
            say!("a name cannot be a user id");
            return;
        }
        let contacts = self.contacts().await;
        if let Some(known) = contacts
            .iter()
            .find(|c| c.user == user && !c.name.is_empty())
        {
            say!(
                "{user} is already a contact, named {}; not renamed",
                clean(&known.name)
            );
            return;
        }
        if let Some(other) = contacts
            .iter()
            .find(|c| c.user != user && c.name.eq_ignore_ascii_case(name))
        {
            say!(
                "the name {name:?} is taken by {}; choose another",
                other.user
            );
            return;
        }
        match self.messenger.add_contact(user, name).await {
            Ok(()) => {
                say!("added {name} ({user})");
                if self.current.is_none() {
                    say!("/to {name} to talk to them, or /msg {name} <text>");
                }
            }
            Err(e) => say!("error: {e}"),
        }
    }

    /// `[<name>] [<n>]`: the conversation (default the current one) and count.
    async fn conversation_and_count(&self, args: &[&str]) -> Option<(UserId, usize)> {
        let (name, n) = match args {
            [] => (None, None),
            [one] => match one.parse::<usize>() {
                Ok(n) => (None, Some(n)),
                Err(_) => (Some(*one), None),
            },
            [name, n] => match n.parse::<usize>() {
                Ok(n) => (Some(*name), Some(n)),
                Err(_) => {
                    say!("{n:?} is not a number");
                    return None;
                }
            },
            _ => {
                say!("usage: /history [<name>] [<n>]");
                return None;
            }
        };
        let user = match name {
            Some(name) => match self.resolve(name).await {
                Ok(user) => user,
                Err(e) => {
                    say!("{e}");
                    return None;
                }
            },
            None => match self.current {
                Some(user) => user,
                None => {
                    say!("no conversation selected: give a name or /to <name> first");
                    return None;
                }
            },
        };
        Some((user, n.unwrap_or(20).clamp(1, 10_000)))
    }

    async fn history(&self, args: &[&str]) {
        let Some((user, n)) = self.conversation_and_count(args).await else {
            return;
        };
        let who = self.name(user).await;
        let mut items = match self.messenger.history(user, None, n).await {
            Ok(items) => items,
            Err(e) => {
                say!("error: {e}");
                return;
            }
        };
        items.reverse();
        say!("history with {who} ({} shown):", items.len());
        for item in items {
            let text = clean(&item.message.text());
            let time = clock(item.message.timestamp_ms);
            if item.meta.outgoing {
                let mark = if item.meta.flags.read {
                    " ✓✓"
                } else if item.meta.flags.delivered {
                    " ✓"
                } else {
                    ""
                };
                say!("[{time}] me: {text}{mark}");
            } else {
                say!("[{time}] {who}: {text}");
            }
        }
    }

    async fn read(&self, args: &[&str]) {
        let user = match args {
            [] => match self.current {
                Some(user) => user,
                None => {
                    say!("no conversation selected: /read <name> or /to <name> first");
                    return;
                }
            },
            [name] => match self.resolve(name).await {
                Ok(user) => user,
                Err(e) => {
                    say!("{e}");
                    return;
                }
            },
            _ => {
                say!("usage: /read [<name>]");
                return;
            }
        };
        let mut unread = Vec::new();
        let mut cursor = None;
        // Walks the whole conversation, a page at a time.
        for _ in 0..1_000 {
            let page = match self.messenger.history(user, cursor, 200).await {
                Ok(page) => page,
                Err(e) => {
                    say!("error: {e}");
                    return;
                }
            };
            let Some(last) = page.last() else { break };
            cursor = Some((last.meta.height, last.meta.id));
            unread.extend(
                page.iter()
                    .filter(|i| !i.meta.outgoing && !i.meta.flags.read)
                    .map(|i| i.meta.id),
            );
        }
        let count = unread.len();
        match self.messenger.mark_read(user, unread).await {
            Ok(()) => say!("marked {count} message(s) read"),
            Err(e) => say!("error: {e}"),
        }
    }

    /// The stranger whose pending request is shown under `tag` (the start
    /// of their id).
    async fn request_by_tag(&self, tag: &str) -> Option<UserId> {
        if tag.len() < SHORT_ID {
            return None;
        }
        let requests = self.messenger.requests().await.ok()?;
        let mut found = requests.iter().filter(|r| {
            r.user
                .to_string()
                .to_ascii_uppercase()
                .starts_with(&tag.to_ascii_uppercase())
        });
        match (found.next(), found.next()) {
            (Some(one), None) => Some(one.user),
            _ => None,
        }
    }

    /// `/requests`: each pending request with its messages.
    async fn list_requests(&self) {
        let requests = match self.messenger.requests().await {
            Ok(r) => r,
            Err(e) => return say!("error: {e}"),
        };
        if requests.is_empty() {
            say!("no message requests");
        }
        for r in requests {
            let tag = tag(&r.user);
            say!("{tag}  {}  {} message(s)", r.user, r.messages);
            match self.messenger.request_messages(r.user).await {
                Ok(items) => {
                    for item in items {
                        say!("  {}", quote(&clean(&item.message.text()), QUOTE));
                    }
                }
                Err(e) => say!("  error: {e}"),
            }
            say!("  /add {tag} <name> to accept, /block {tag} to refuse");
        }
    }

    async fn list_contacts(&self) {
        let contacts = self.contacts().await;
        if contacts.is_empty() {
            say!("no contacts yet: /add <user id> <name>");
        }
        let peers = self.messenger.peers();
        for c in contacts {
            let name = if c.name.is_empty() {
                "(unnamed)".to_owned()
            } else {
                clean(&c.name)
            };
            let state = match c.device {
                _ if c.blocked => "blocked",
                Some(device) if peers.contains(&device) => "connected",
                _ if self.online.contains(&c.user) => "online",
                _ => "not seen",
            };
            let session = if c.has_session {
                "session"
            } else {
                "no session"
            };
            say!(
                "{name}  {}  {state}, {session}, {} in flight ({} stored in mailboxes)",
                c.user,
                c.outbox,
                c.stored
            );
        }
    }

    /// The text of one of our messages for a receipt: sent since start,
    /// else found among the latest messages, else its short id.
    async fn quoted(&self, contact: UserId, id: &MessageId) -> String {
        if let Some(text) = self.sent.get(id) {
            return quote(text, QUOTE);
        }
        let recent = self.messenger.history(contact, None, 200).await;
        match recent
            .ok()
            .and_then(|r| r.into_iter().find(|i| i.meta.id == *id))
        {
            Some(item) => quote(&clean(&item.message.text()), QUOTE),
            None => id.short(),
        }
    }

    async fn event(&mut self, event: Event) {
        match event {
            Event::Received {
                contact, message, ..
            } => say!("{}: {}", self.name(contact).await, clean(&message.text())),
            Event::Delivered { contact, id } => {
                say!(
                    "delivered to {}: {}",
                    self.name(contact).await,
                    self.quoted(contact, &id).await
                );
            }
            Event::Stored {
                contact,
                id,
                replicas,
            } => {
                // The replicas whose receipts counted, in full: a user (or a
                // test) can check who holds the message.
                let replicas: Vec<String> = replicas.iter().map(ToString::to_string).collect();
                say!(
                    "stored for {} on {} mailbox nodes [{}]: {}",
                    self.name(contact).await,
                    replicas.len(),
                    replicas.join(" "),
                    self.quoted(contact, &id).await
                );
            }
            Event::WaitingForSpace { contact } => {
                say!(
                    "waiting for space: {}'s mailbox is full; messages wait here",
                    self.name(contact).await
                );
            }
            Event::Expired { contact, id } => {
                say!(
                    "expired in the mailboxes (sent again when {} is online): {}",
                    self.name(contact).await,
                    self.quoted(contact, &id).await
                );
            }
            Event::Read { contact, id } => {
                say!(
                    "read by {}: {}",
                    self.name(contact).await,
                    self.quoted(contact, &id).await
                );
            }
            Event::ContactOnline { contact, .. } => {
                self.online.insert(contact);
                say!("online: {}", self.name(contact).await);
            }
            Event::ContactOffline { contact } => {
                self.online.remove(&contact);
                say!("offline: {}", self.name(contact).await);
            }
            Event::DeviceChanged {
                contact, verified, ..
            } => {
                let name = self.name(contact).await;
                say!("{name} now writes from another device");
                if verified {
                    say!(
                        "  {name} was verified: nothing goes to them until you compare safety numbers again (/verify {name}) and /accept {name}"
                    );
                } else {
                    say!("  if you did not expect it, compare safety numbers: /verify {name}");
                }
            }
            Event::MessageRequest { contact } => {
                let tag = tag(&contact);
                say!("message request from {tag} ({contact})");
                say!(
                    "  /requests to read it, /add {tag} <name> to accept, /block {tag} to refuse; they see nothing until you accept"
                );
            }
            Event::Error { contact, error } => match contact {
                Some(contact) => say!("error: {}: {error}", self.name(contact).await),
                None => say!("error: {error}"),
            },
            Event::MailboxesRead {
                wake_registrations, ..
            } if wake_registrations > 0 => {
                say!("wake-ups: registered with {wake_registrations} mailbox nodes");
            }
            other => tracing::debug!(?other, "event not shown"),
        }
    }
}

/// The wake-up endpoint of `--wake-endpoint` and `--wake-token`.
fn wake_endpoint(
    addr: Option<&Multiaddr>,
    token: Option<&str>,
) -> Result<Option<WakeEndpoint>, Error> {
    let (Some(addr), Some(token)) = (addr, token) else {
        return Ok(None);
    };
    let peer = addr
        .peer_id()
        .ok_or_else(|| format!("--wake-endpoint {addr}: the address needs /p2p/<peer id>"))?;
    let bytes: Option<Vec<u8>> = (token.len() == 2 * shoal_mailbox::wake::WAKE_TOKEN_LEN)
        .then(|| {
            (0..token.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok())
                .collect()
        })
        .flatten();
    let token = bytes
        .as_deref()
        .and_then(WakeToken::try_from_slice)
        .ok_or("--wake-token: expected 32 hex digits")?;
    Ok(Some(WakeEndpoint {
        peer,
        addrs: vec![addr.without_peer_id()],
        token,
    }))
}

/// The tag shown for a user without a name: the start of its id (usable
/// wherever a name is).
fn tag(user: &UserId) -> String {
    user.to_string().chars().take(SHORT_ID).collect()
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chat: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    for addr in &args.bootstrap {
        if addr.peer_id().is_none() {
            return Err(format!("--bootstrap {addr}: the address needs /p2p/<peer id>").into());
        }
    }
    let duration = args
        .duration
        .map(Duration::try_from_secs_f64)
        .transpose()
        .map_err(|e| format!("--duration: {e}"))?;
    common::create_data_dir(&args.data_dir)?;
    let db = args.data_dir.join("messenger.db");
    let store = SqliteStore::open(&db).map_err(|e| format!("{}: {e}", db.display()))?;
    let config = MessengerConfig {
        listen: args.listen.clone(),
        bootstrap: args.bootstrap.clone(),
        external_addresses: args.external_address.clone(),
        wake: wake_endpoint(args.wake_endpoint.as_ref(), args.wake_token.as_deref())?,
        relays: args.relay.clone(),
        global_ranges: args.global_range.clone(),
        hide_ip_addresses: args.hide_ip,
        ..MessengerConfig::default()
    };
    let store = AbortAfterCommits {
        inner: store,
        left: args.abort_after_commits,
    };
    let (messenger, mut events) = Messenger::start(store, TcpTransport::default(), config).await?;

    let mut chat = Chat {
        messenger,
        current: None,
        sent: HashMap::new(),
        online: HashSet::new(),
        quit_warned: false,
    };
    chat.print_id();
    say!("type /help for commands");
    let contacts: Vec<ContactInfo> = chat
        .contacts()
        .await
        .into_iter()
        .filter(|c| !c.blocked)
        .collect();
    if !contacts.is_empty() {
        let names: Vec<String> = contacts
            .iter()
            .map(|c| {
                if c.name.is_empty() {
                    c.user.to_string()
                } else {
                    clean(&c.name)
                }
            })
            .collect();
        say!("contacts: {}", names.join(", "));
    }

    let stop = async {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending::<()>().await,
        }
    };
    tokio::pin!(stop);
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(%e, "no Ctrl-C handler");
            std::future::pending::<()>().await;
        }
    };
    tokio::pin!(ctrl_c);
    // Standard input, one bounded line at a time (on a thread: tokio's
    // stdin would keep the runtime from shutting down while a read blocks).
    // In a terminal, a line editor (raw mode: a paste arrives whole, and
    // what is printed meanwhile goes above the prompt).
    let (lines_tx, mut lines) = tokio::sync::mpsc::channel::<Input>(16);
    if !terminal::is_terminal() {
        input::spawn_stdin(MAX_LINE, lines_tx);
    } else if let Err(e) = terminal::spawn_editor(MAX_LINE, lines_tx.clone()) {
        tracing::warn!(%e, "no line editor; reading plain lines");
        input::spawn_stdin(MAX_LINE, lines_tx);
    }
    let mut input_open = true;
    // The peers this node reached, remembered in the data directory: dialled
    // again now, so a restart finds the network without --bootstrap.
    let (mut book, skipped) = PeerBook::load(
        &args.data_dir.join("peers"),
        chat.messenger.peer_id(),
        unix_now(),
    )?;
    if skipped > 0 {
        tracing::debug!(skipped, "unreadable lines in the peers file");
    }
    rejoin(&chat.messenger, book.peers());
    let mut remember = tokio::time::interval(REMEMBER_EVERY);
    // Never silently alone: say when the last peer went away.
    let mut peer_check = tokio::time::interval(PEER_CHECK);
    let mut had_peers = false;
    let mut relays: Vec<PeerId> = Vec::new();
    let mut relay_changes = chat.messenger.relay_changes();
    let mut reachability = String::new();
    loop {
        tokio::select! {
            () = &mut stop => break,
            Some(()) = async { relay_changes.as_mut()?.changed().await.ok() } => {
                relays = tell_relays(&chat.messenger, relays, args.hide_ip);
            }
            _ = remember.tick() => remember_peers(&chat.messenger, &mut book, false),
            _ = peer_check.tick() => {
                let connected = !chat.messenger.peers().is_empty();
                if had_peers && !connected {
                    say!("no peers connected: messages wait until one is; /connect <address> joins through a node");
                }
                had_peers = connected;
                relays = tell_relays(&chat.messenger, relays, args.hide_ip);
                reachability = tell_reachability(&chat.messenger, reachability);
            }
            () = &mut ctrl_c => break,
            event = events.recv() => match event {
                Some(event) => chat.event(event).await,
                None => {
                    say!("error: the messenger stopped");
                    break;
                }
            },
            line = lines.recv(), if input_open => match line {
                Some(Input::Line(bytes)) => match String::from_utf8(bytes) {
                    Ok(line) => {
                        if let Flow::Quit = chat.line(&line).await {
                            break;
                        }
                    }
                    Err(_) => say!("that line is not UTF-8 text; not sent"),
                },
                Some(Input::NotText) => say!("that line is not UTF-8 text; not sent"),
                Some(Input::TooLong(n)) => {
                    say!("line too long: {n} bytes (limit {MAX_LINE}); not sent");
                }
                None => {
                    input_open = false;
                    if duration.is_none() {
                        break;
                    }
                }
            },
        }
    }
    remember_peers(&chat.messenger, &mut book, true);
    if tokio::time::timeout(Duration::from_secs(5), chat.messenger.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown timed out");
    }
    Ok(())
}

/// The store, with the crash test's hook: with `left` set, the process
/// aborts right after that many commits have become durable, between a
/// commit and whatever the engine would send after it.
struct AbortAfterCommits {
    inner: SqliteStore,
    left: Option<u64>,
}

impl shoal_im::Store for AbortAfterCommits {
    fn load_identity(&mut self) -> Result<Option<Vec<u8>>, shoal_im::StoreError> {
        self.inner.load_identity()
    }
    fn load_contacts(
        &mut self,
    ) -> Result<Vec<shoal_im::store::ContactRecord>, shoal_im::StoreError> {
        self.inner.load_contacts()
    }
    fn load_index(&mut self) -> Result<Vec<shoal_im::MessageMeta>, shoal_im::StoreError> {
        self.inner.load_index()
    }
    fn message(
        &mut self,
        id: &shoal_im::MessageId,
    ) -> Result<Option<shoal_im::StoredMessage>, shoal_im::StoreError> {
        self.inner.message(id)
    }
    fn load_sealed(&mut self) -> Result<Vec<shoal_im::SealedRecord>, shoal_im::StoreError> {
        self.inner.load_sealed()
    }
    fn received(
        &mut self,
        key: &[u8; 32],
    ) -> Result<Option<shoal_im::MessageId>, shoal_im::StoreError> {
        self.inner.received(key)
    }
    fn history(
        &mut self,
        contact: &[u8; 32],
        before: Option<shoal_im::store::HistoryCursor>,
        limit: usize,
    ) -> Result<Vec<shoal_im::StoredMessage>, shoal_im::StoreError> {
        self.inner.history(contact, before, limit)
    }
    fn commit(&mut self, changes: &shoal_im::Changes) -> Result<(), shoal_im::StoreError> {
        self.inner.commit(changes)?;
        if let Some(left) = self.left.as_mut() {
            *left = left.saturating_sub(1);
            if *left == 0 {
                eprintln!("test hook: aborting right after a durable commit");
                std::process::abort();
            }
        }
        Ok(())
    }
}
