//! A data directory made by the previous release (commit eac3e91: ratchet
//! header version 1 with a zero nonce, X3DH initial header version 1) opens
//! with the current code, keeps its history, and its conversations go on:
//! the messages left in the outboxes (one on an answered session, one on a
//! session the peer never answered) are delivered, and new messages flow
//! both ways. The fixture and how it was made: `fixtures/release-2026-12/`.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use shoal_im::UserId;
use shoal_im::engine::{Engine, EngineConfig, Event, HistoryItem};
use shoal_im::message::MessageId;
use shoal_messenger::SqliteStore;

const NAMES: [&str; 3] = ["alice", "bob", "carol"];
const ALICE: usize = 0;
const BOB: usize = 1;
const CAROL: usize = 2;
/// The fixture's wall clock (2026-12-01) plus a day.
const UNIX: u64 = 1_796_083_200 + 86_400;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/release-2026-12")
}

/// One message as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Expected {
    id: MessageId,
    outgoing: bool,
    delivered: bool,
    read: bool,
    text: String,
}

/// The manifest: user ids by name, and each (owner, peer) history, oldest
/// first.
struct Manifest {
    users: Vec<UserId>,
    histories: Vec<((usize, usize), Vec<Expected>)>,
}

fn name_index(name: &str) -> usize {
    NAMES
        .iter()
        .position(|n| *n == name)
        .unwrap_or_else(|| panic!("unknown name {name:?} in the manifest"))
}

fn parse_id(hex: &str) -> MessageId {
    assert_eq!(hex.len(), 64, "id {hex:?}");
    let mut id = [0u8; 32];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    MessageId(id)
}

fn flag(s: &str) -> bool {
    match s {
        "0" => false,
        "1" => true,
        _ => panic!("flag {s:?}"),
    }
}

fn read_manifest() -> Manifest {
    let text = std::fs::read_to_string(fixture().join("manifest.tsv")).unwrap();
    let mut users: Vec<Option<UserId>> = vec![None; NAMES.len()];
    let mut histories: Vec<((usize, usize), Vec<Expected>)> = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let fields: Vec<&str> = line.split('\t').collect();
        match fields.as_slice() {
            ["user", name, id] => users[name_index(name)] = Some(id.parse().unwrap()),
            ["msg", owner, peer, id, dir, delivered, read, text] => {
                let key = (name_index(owner), name_index(peer));
                let item = Expected {
                    id: parse_id(id),
                    outgoing: match *dir {
                        "out" => true,
                        "in" => false,
                        _ => panic!("direction {dir:?}"),
                    },
                    delivered: flag(delivered),
                    read: flag(read),
                    text: (*text).to_owned(),
                };
                match histories.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, list)) => list.push(item),
                    None => histories.push((key, vec![item])),
                }
            }
            _ => panic!("manifest line {line:?}"),
        }
    }
    Manifest {
        users: users.into_iter().map(Option::unwrap).collect(),
        histories,
    }
}

/// Copies the fixture's data directories to a temporary directory.
fn copy_fixture() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for name in NAMES {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let from = fixture().join(name).join("shoal.db");
        std::fs::copy(&from, dir.join("shoal.db")).unwrap();
    }
    tmp
}

fn open(dir: &Path, now: Instant) -> Engine<SqliteStore> {
    let store = SqliteStore::open(dir.join("shoal.db"))
        .unwrap_or_else(|e| panic!("opening the store in {}: {e}", dir.display()));
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).unwrap();
    Engine::open(store, EngineConfig::default(), seed, now, UNIX)
        .unwrap_or_else(|e| panic!("opening the engine in {}: {e}", dir.display()))
}

/// The whole history with `contact`, oldest first.
fn history(engine: &mut Engine<SqliteStore>, contact: &UserId) -> Vec<HistoryItem> {
    let mut items = engine.history(contact, None, 10_000).unwrap();
    assert!(items.len() < 10_000);
    items.reverse();
    items
}

fn text(item: &HistoryItem) -> String {
    String::from_utf8(item.message.body.clone()).unwrap()
}

fn as_expected(items: &[HistoryItem]) -> Vec<Expected> {
    items
        .iter()
        .map(|h| {
            assert!(!h.meta.flags.held, "a held message in the history");
            Expected {
                id: h.meta.id,
                outgoing: h.meta.outgoing,
                delivered: h.meta.flags.delivered,
                read: h.meta.flags.read,
                text: text(h),
            }
        })
        .collect()
}

/// What the engines told their users while running.
#[derive(Default)]
struct Seen {
    /// (engine, contact, id)
    delivered: Vec<(usize, UserId, MessageId)>,
    received: Vec<(usize, UserId, MessageId)>,
    added: Vec<(usize, UserId)>,
}

struct Net {
    engines: Vec<Engine<SqliteStore>>,
    users: Vec<UserId>,
    seen: Seen,
}

impl Net {
    fn index(&self, user: &UserId) -> usize {
        self.users.iter().position(|u| u == user).unwrap()
    }

    /// Answers engine `i`'s events: every bundle and route is available.
    fn answer(&mut self, i: usize, now: Instant) {
        for _ in 0..10_000 {
            let Some(event) = self.engines[i].poll_event() else {
                return;
            };
            match event {
                Event::NeedBundle { contact } => {
                    let bundle = self.engines[self.index(&contact)].prekey_bundle();
                    self.engines[i].set_bundle(now, contact, &bundle).unwrap();
                }
                Event::NeedRoute { contact, .. } => {
                    self.engines[i].set_online(now, contact, true).unwrap();
                }
                Event::Delivered { contact, id } => self.seen.delivered.push((i, contact, id)),
                Event::Received { contact, id, .. } => self.seen.received.push((i, contact, id)),
                Event::MessageRequest { contact } => {
                    // Accepted as soon as it arrives, online.
                    self.seen.added.push((i, contact));
                    let name = NAMES[self.index(&contact)];
                    self.engines[i].set_online(now, contact, true).unwrap();
                    self.engines[i].add_contact(contact, name).unwrap();
                }
                Event::Read { .. }
                | Event::SessionReset { .. }
                | Event::DeviceChanged { .. }
                | Event::Recovered { .. }
                | Event::Renumbered { .. } => {}
                _ => {}
            }
        }
        panic!("{} never ran out of events", NAMES[i]);
    }

    /// Delivers everything in flight until all engines are quiet.
    fn settle(&mut self, now: Instant) {
        for _ in 0..10_000 {
            let mut any = false;
            for (i, name) in NAMES.iter().enumerate() {
                self.answer(i, now);
                while let Some(t) = self.engines[i].poll_transmit() {
                    let to = self.index(&t.contact.expect("every envelope here names its contact"));
                    assert_eq!(
                        t.device,
                        self.engines[to].device().certificate().device().peer_id(),
                        "{name} addressed {}'s envelope to another device",
                        NAMES[to]
                    );
                    self.engines[to].handle_envelope(now, &t.envelope).unwrap();
                    if let Some((contact, reason)) = &self.engines[to].refusals().last {
                        panic!(
                            "{} refused an envelope from {contact:?}: {reason}",
                            NAMES[to]
                        );
                    }
                    any = true;
                }
            }
            if !any {
                return;
            }
        }
        panic!("the engines never went quiet");
    }

    /// Runs all engines, timers included, until `until`.
    fn run_until(&mut self, now: &mut Instant, until: Instant) {
        for _ in 0..100_000 {
            self.settle(*now);
            let next = self.engines.iter().filter_map(Engine::poll_timeout).min();
            match next {
                Some(t) if t <= until => {
                    *now = t.max(*now);
                    for engine in &mut self.engines {
                        engine.handle_timeout(*now).unwrap();
                    }
                }
                _ => {
                    *now = until;
                    return;
                }
            }
        }
        panic!("timers never ran out");
    }
}

#[test]
fn a_release_data_directory_opens_migrates_and_keeps_its_history() {
    let manifest = read_manifest();
    let dirs = copy_fixture();
    let start = Instant::now();
    let mut now = start;

    // Open, and the history is what the old code stored.
    let mut engines: Vec<Engine<SqliteStore>> = NAMES
        .iter()
        .map(|n| open(&dirs.path().join(n), now))
        .collect();
    for (i, engine) in engines.iter().enumerate() {
        assert_eq!(
            engine.user_id(),
            manifest.users[i],
            "{}'s identity",
            NAMES[i]
        );
    }
    assert_eq!(manifest.histories.len(), 3);
    for ((owner, peer), expected) in &manifest.histories {
        let got = as_expected(&history(&mut engines[*owner], &manifest.users[*peer]));
        assert_eq!(
            &got, expected,
            "{}'s history with {} after the upgrade",
            NAMES[*owner], NAMES[*peer]
        );
    }
    let users = manifest.users.clone();
    let old_alice = history(&mut engines[ALICE], &users[BOB]);
    let old_bob = history(&mut engines[BOB], &users[ALICE]);
    let alice_pending: Vec<MessageId> = old_alice
        .iter()
        .filter(|h| h.meta.outgoing && !h.meta.flags.delivered)
        .map(|h| h.meta.id)
        .collect();
    assert_eq!(alice_pending.len(), 1, "alice's undelivered message");
    let carol_old = history(&mut engines[CAROL], &users[ALICE]);
    assert_eq!(carol_old.len(), 1);
    let carol_pending = carol_old[0].meta.id;
    assert!(!carol_old[0].meta.flags.delivered);
    assert_eq!(engines[ALICE].outbox_len(&users[BOB]), 1);
    assert_eq!(engines[BOB].outbox_len(&users[ALICE]), 0);
    assert_eq!(engines[CAROL].outbox_len(&users[ALICE]), 1);
    assert!(
        engines[ALICE]
            .contacts()
            .iter()
            .all(|c| c.user != users[CAROL]),
        "alice knew carol before carol's message arrived"
    );
    // Carol's session was started under X3DH initial header version 1 and
    // never answered: alice could not derive it any more, so it is dropped
    // at open and her message waits for a new one.
    assert!(!engines[CAROL].has_session(&users[ALICE]));
    let names: Vec<Vec<(UserId, String)>> = engines
        .iter()
        .map(|e| e.contacts().into_iter().map(|c| (c.user, c.name)).collect())
        .collect();

    // Run on: alice and bob each write once more, and everything in the
    // outboxes goes out.
    let ts = UNIX * 1000;
    engines[ALICE]
        .send(now, ts, users[BOB], "alice after the upgrade")
        .unwrap();
    engines[BOB]
        .send(now, ts + 1, users[ALICE], "bob after the upgrade")
        .unwrap();
    let mut net = Net {
        engines,
        users: users.clone(),
        seen: Seen::default(),
    };
    let until = now + Duration::from_secs(300);
    net.run_until(&mut now, until);

    // The old outbox messages arrived.
    assert!(
        net.seen
            .delivered
            .contains(&(ALICE, users[BOB], alice_pending[0])),
        "alice's message from the old release was never delivered"
    );
    assert!(
        net.seen
            .delivered
            .contains(&(CAROL, users[ALICE], carol_pending)),
        "carol's message from the old release (unanswered X3DH v1 session) was never delivered"
    );
    assert!(net.seen.added.contains(&(ALICE, users[CAROL])));
    for (i, engine) in net.engines.iter().enumerate() {
        for contact in engine.contacts() {
            assert_eq!(
                engine.outbox_len(&contact.user),
                0,
                "{}'s outbox to {} after five minutes",
                NAMES[i],
                contact.name
            );
        }
    }

    // Alice and bob hold the same history: the old one, then alice's
    // pending message and the two new ones, nothing twice.
    let alice = history(&mut net.engines[ALICE], &users[BOB]);
    let bob = history(&mut net.engines[BOB], &users[ALICE]);
    let ids = |h: &[HistoryItem]| h.iter().map(|m| m.meta.id).collect::<Vec<_>>();
    assert_eq!(ids(&alice), ids(&bob), "alice's and bob's histories differ");
    assert_eq!(
        ids(&alice).into_iter().collect::<HashSet<_>>().len(),
        alice.len(),
        "a message appears twice"
    );
    assert_eq!(alice.len(), old_alice.len() + 2);
    // The seven messages delivered before the upgrade come first, unchanged
    // on both sides (flags included); after them, in an order both sides
    // agree on, alice's pending message and the two new ones.
    let settled = old_bob.len();
    assert_eq!(old_alice.len(), settled + 1);
    for (old, new) in old_alice[..settled].iter().zip(&alice) {
        assert_eq!(old.meta, new.meta, "alice's old message changed");
    }
    for (old, new) in old_bob.iter().zip(&bob) {
        assert_eq!(old.meta, new.meta, "bob's old message changed");
    }
    let mut tail: Vec<String> = alice[settled..].iter().map(text).collect();
    tail.sort();
    let mut expected_tail = vec![
        "alice after the upgrade".to_owned(),
        "bob after the upgrade".to_owned(),
        text(&old_alice[settled]),
    ];
    expected_tail.sort();
    assert_eq!(tail, expected_tail);
    for (a, b) in alice.iter().zip(&bob) {
        assert_eq!(a.message, b.message);
        assert_eq!(a.meta.height, b.meta.height);
        assert_eq!(a.meta.outgoing, !b.meta.outgoing);
        assert!(a.meta.flags.delivered && b.meta.flags.delivered);
    }
    // The new messages went both ways.
    for (from, to, body) in [
        (ALICE, BOB, "alice after the upgrade"),
        (BOB, ALICE, "bob after the upgrade"),
    ] {
        let sent = history(&mut net.engines[from], &users[to]);
        let item = sent
            .iter()
            .find(|h| text(h) == body)
            .unwrap_or_else(|| panic!("{body:?} missing at its sender"));
        assert!(item.meta.outgoing && item.meta.flags.delivered);
        assert!(
            net.seen
                .delivered
                .contains(&(from, users[to], item.meta.id))
        );
        assert!(net.seen.received.contains(&(to, users[from], item.meta.id)));
    }
    assert!(
        net.seen
            .received
            .contains(&(BOB, users[ALICE], alice_pending[0]))
    );

    // Carol's conversation: her one message, on both sides.
    let carol = history(&mut net.engines[CAROL], &users[ALICE]);
    let alice_carol = history(&mut net.engines[ALICE], &users[CAROL]);
    assert_eq!(ids(&carol), vec![carol_pending]);
    assert_eq!(ids(&alice_carol), vec![carol_pending]);
    assert!(carol[0].meta.outgoing && carol[0].meta.flags.delivered);
    assert!(!alice_carol[0].meta.outgoing);
    assert_eq!(text(&alice_carol[0]), text(&carol_old[0]));

    // Contacts and names survived (alice has gained carol).
    for (i, before) in names.iter().enumerate() {
        let after: Vec<(UserId, String)> = net.engines[i]
            .contacts()
            .into_iter()
            .map(|c| (c.user, c.name))
            .collect();
        for contact in before {
            assert!(after.contains(contact), "{} lost {contact:?}", NAMES[i]);
        }
    }

    // And all of it is on disk: reopened, the histories are the same.
    let before: Vec<Vec<MessageId>> = [(ALICE, BOB), (BOB, ALICE), (CAROL, ALICE), (ALICE, CAROL)]
        .iter()
        .map(|(o, p)| ids(&history(&mut net.engines[*o], &users[*p])))
        .collect();
    drop(net);
    let mut engines: Vec<Engine<SqliteStore>> = NAMES
        .iter()
        .map(|n| open(&dirs.path().join(n), now))
        .collect();
    let after: Vec<Vec<MessageId>> = [(ALICE, BOB), (BOB, ALICE), (CAROL, ALICE), (ALICE, CAROL)]
        .iter()
        .map(|(o, p)| ids(&history(&mut engines[*o], &users[*p])))
        .collect();
    assert_eq!(before, after);
    for (i, engine) in engines.iter().enumerate() {
        for contact in engine.contacts() {
            assert_eq!(engine.outbox_len(&contact.user), 0, "{}", NAMES[i]);
        }
    }
}
