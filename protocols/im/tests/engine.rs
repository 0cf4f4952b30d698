//! The engine end to end over a simulated lossy network: first contact,
//! acknowledgements, ordering under faults, restart from the store.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use shoal_im::engine::{Engine, EngineConfig, Event};
use shoal_im::{MemoryStore, MessageId, UserId};

struct Peer {
    engine: Engine<MemoryStore>,
    events: Vec<Event>,
}

fn open(store: MemoryStore, seed: u8, now: Instant) -> Engine<MemoryStore> {
    Engine::open(
        store,
        EngineConfig::default(),
        [seed; 32],
        now,
        1_700_000_000,
    )
    .unwrap()
}

/// Moves envelopes between two engines with faults, for `steps` rounds
/// of `tick` each, answering bundle requests from the other side.
struct Net {
    rng: ChaCha20Rng,
    now: Instant,
    /// (deliver at, to index, bytes)
    in_flight: Vec<(Instant, usize, Vec<u8>)>,
    fault: f64,
    /// Whether routes to the peer exist (NeedRoute gets an answer).
    link_up: bool,
}

impl Net {
    fn pump(&mut self, peers: &mut [Peer; 2], rounds: usize) {
        for _ in 0..rounds {
            for i in 0..2 {
                let other = peers[1 - i].engine.prekey_bundle();
                let other_user = peers[1 - i].engine.user_id();
                while let Some(event) = peers[i].engine.poll_event() {
                    match &event {
                        Event::NeedBundle { contact } => {
                            assert_eq!(*contact, other_user);
                            peers[i]
                                .engine
                                .set_bundle(self.now, other_user, &other)
                                .unwrap();
                        }
                        // The simulated link is always up.
                        Event::NeedRoute { contact, .. } if self.link_up => {
                            peers[i]
                                .engine
                                .set_online(self.now, *contact, true)
                                .unwrap();
                        }
                        _ => {}
                    }
                    peers[i].events.push(event);
                }
                while let Some(t) = peers[i].engine.poll_transmit() {
                    let to = 1 - i;
                    let mut delay = Duration::from_millis(self.rng.random_range(1..20));
                    if self.rng.random_bool(self.fault) {
                        continue; // dropped
                    }
                    if self.rng.random_bool(self.fault) {
                        self.in_flight
                            .push((self.now + delay * 3, to, t.envelope.clone()));
                    }
                    if self.rng.random_bool(self.fault) {
                        delay *= 10; // reordered behind later ones
                    }
                    self.in_flight.push((self.now + delay, to, t.envelope));
                }
            }
            self.now += Duration::from_millis(10);
            let now = self.now;
            let (due, rest): (Vec<_>, Vec<_>) =
                self.in_flight.drain(..).partition(|(at, _, _)| *at <= now);
            self.in_flight = rest;
            for (_, to, bytes) in due {
                peers[to].engine.handle_envelope(now, &bytes).unwrap();
            }
            for p in peers.iter_mut() {
                if p.engine.poll_timeout().is_some_and(|t| t <= now) {
                    p.engine.handle_timeout(now).unwrap();
                }
            }
        }
    }
}

fn received(events: &[Event]) -> Vec<MessageId> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Received { id, .. } => Some(*id),
            _ => None,
        })
        .collect()
}

/// The whole history, oldest first, checking that every message comes
/// after its previous message and its dependencies.
fn history(engine: &mut Engine<MemoryStore>, contact: &UserId) -> Vec<MessageId> {
    let items = history_items(engine, contact);
    let mut seen = std::collections::HashSet::new();
    for item in &items {
        for before in item.message.prev.iter().chain(&item.message.deps) {
            assert!(
                seen.contains(before),
                "causal order broken at {:?}",
                item.meta.id
            );
        }
        seen.insert(item.meta.id);
    }
    items.iter().map(|i| i.meta.id).collect()
}

fn history_items(
    engine: &mut Engine<MemoryStore>,
    contact: &UserId,
) -> Vec<shoal_im::engine::HistoryItem> {
    let mut all = Vec::new();
    let mut cursor = None;
    loop {
        let page = engine.history(contact, cursor, 50).unwrap();
        let Some(last) = page.last() else { break };
        cursor = Some((last.meta.height, last.meta.id));
        all.extend(page);
    }
    all.reverse();
    all
}

fn pair(now: Instant) -> [Peer; 2] {
    let mut a = open(MemoryStore::new(), 1, now);
    let mut b = open(MemoryStore::new(), 2, now);
    a.add_contact(b.user_id(), "bob").unwrap();
    b.add_contact(a.user_id(), "alice").unwrap();
    [
        Peer {
            engine: a,
            events: Vec::new(),
        },
        Peer {
            engine: b,
            events: Vec::new(),
        },
    ]
}

#[test]
fn first_contact_ack_and_reply() {
    let now = Instant::now();
    let mut peers = pair(now);
    let mut net = Net {
        rng: ChaCha20Rng::seed_from_u64(1),
        now,
        in_flight: Vec::new(),
        fault: 0.0,
        link_up: true,
    };
    let bob = peers[1].engine.user_id();
    let alice = peers[0].engine.user_id();
    let id = peers[0].engine.send(now, 1, bob, "hello bob").unwrap();
    net.pump(&mut peers, 20);
    assert_eq!(received(&peers[1].events), vec![id]);
    assert!(
        peers[0]
            .events
            .contains(&Event::Delivered { contact: bob, id })
    );
    let reply = peers[1].engine.send(net.now, 2, alice, "hi alice").unwrap();
    net.pump(&mut peers, 20);
    assert_eq!(received(&peers[0].events), vec![reply]);
    peers[0].engine.mark_read(bob, &[reply]).unwrap();
    net.pump(&mut peers, 20);
    assert!(peers[1].events.contains(&Event::Read {
        contact: alice,
        id: reply
    }));
    assert_eq!(
        history(&mut peers[0].engine, &bob),
        history(&mut peers[1].engine, &alice)
    );
}

#[test]
fn faults_keep_histories_identical_and_causal() {
    let now = Instant::now();
    let mut peers = pair(now);
    let mut net = Net {
        rng: ChaCha20Rng::seed_from_u64(7),
        now,
        in_flight: Vec::new(),
        fault: 0.1,
        link_up: true,
    };
    let users = [peers[0].engine.user_id(), peers[1].engine.user_id()];
    let mut sent = [Vec::new(), Vec::new()];
    for n in 0..300 {
        let i = net.rng.random_range(0..2);
        let id = peers[i]
            .engine
            .send(net.now, n, users[1 - i], &format!("m{n} from {i}"))
            .unwrap();
        sent[i].push(id);
        let rounds = net.rng.random_range(0..3);
        net.pump(&mut peers, rounds);
    }
    net.pump(&mut peers, 6000);
    for i in 0..2 {
        let got = received(&peers[i].events);
        let mut unique = got.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), got.len(), "a message shown twice");
        let mut want = sent[1 - i].clone();
        want.sort();
        assert_eq!(unique, want, "peer {i} misses messages");
        let delivered = peers[i]
            .events
            .iter()
            .filter(|e| matches!(e, Event::Delivered { .. }))
            .count();
        assert_eq!(delivered, sent[i].len());
    }
    let ha = history(&mut peers[0].engine, &users[1]);
    let hb = history(&mut peers[1].engine, &users[0]);
    assert_eq!(ha.len(), 300);
    assert_eq!(ha, hb);
}

#[test]
fn crash_and_reopen_loses_nothing_acknowledged() {
    let now = Instant::now();
    let mut peers = pair(now);
    let mut net = Net {
        rng: ChaCha20Rng::seed_from_u64(11),
        now,
        in_flight: Vec::new(),
        fault: 0.05,
        link_up: true,
    };
    let users = [peers[0].engine.user_id(), peers[1].engine.user_id()];
    let mut sent = [Vec::new(), Vec::new()];
    for n in 0..200u64 {
        let i = net.rng.random_range(0..2);
        let id = peers[i]
            .engine
            .send(net.now, n, users[1 - i], &format!("m{n}"))
            .unwrap();
        sent[i].push(id);
        let rounds = net.rng.random_range(0..3);
        net.pump(&mut peers, rounds);
        if n % 13 == 5 {
            // Crash: everything not committed is gone; reopen from the store.
            let victim = net.rng.random_range(0..2);
            let store = peers[victim].engine.store().clone();
            peers[victim].engine = open(store, 50 + n as u8, net.now);
        }
    }
    net.pump(&mut peers, 6000);
    let ha = history(&mut peers[0].engine, &users[1]);
    let hb = history(&mut peers[1].engine, &users[0]);
    assert_eq!(ha.len(), 200);
    assert_eq!(ha, hb);
    // No new handshake: each side still has exactly the sessions of first contact.
    for p in &peers {
        for c in p.engine.contacts() {
            assert!(c.has_session);
            assert_eq!(c.outbox, 0);
        }
    }
}

fn net(seed: u64, now: Instant, fault: f64) -> Net {
    Net {
        rng: ChaCha20Rng::seed_from_u64(seed),
        now,
        in_flight: Vec::new(),
        fault,
        link_up: true,
    }
}

#[test]
fn simultaneous_first_contact_converges() {
    let now = Instant::now();
    let mut peers = pair(now);
    let mut net = net(3, now, 0.0);
    let users = [peers[0].engine.user_id(), peers[1].engine.user_id()];
    // Both start a session before either hears from the other.
    let a0 = peers[0].engine.send(now, 1, users[1], "hi from a").unwrap();
    let b0 = peers[1].engine.send(now, 1, users[0], "hi from b").unwrap();
    net.pump(&mut peers, 50);
    assert_eq!(received(&peers[1].events), vec![a0]);
    assert_eq!(received(&peers[0].events), vec![b0]);
    for n in 0..20 {
        peers[0].engine.send(net.now, n, users[1], "a").unwrap();
        peers[1].engine.send(net.now, n, users[0], "b").unwrap();
        net.pump(&mut peers, 2);
    }
    net.pump(&mut peers, 200);
    assert_eq!(received(&peers[0].events).len(), 21);
    assert_eq!(received(&peers[1].events).len(), 21);
    assert_eq!(
        history(&mut peers[0].engine, &users[1]),
        history(&mut peers[1].engine, &users[0])
    );
    for p in &peers {
        for c in p.engine.contacts() {
            assert_eq!(c.outbox, 0);
            assert_eq!(c.sessions, 2, "both sessions kept for late messages");
        }
    }
}

#[test]
fn offline_recipient_does_not_exhaust_the_window() {
    // Alice writes 1,500 messages (more than the ratchet's skip window)
    // while Bob is unreachable; retries must not burn message keys, so
    // when Bob comes back every message decrypts.
    let now = Instant::now();
    let mut peers = pair(now);
    let mut net = net(5, now, 0.0);
    let bob = peers[1].engine.user_id();
    net.link_up = false;
    let mut sent = Vec::new();
    for n in 0..1_500u64 {
        sent.push(
            peers[0]
                .engine
                .send(net.now, n, bob, &format!("m{n}"))
                .unwrap(),
        );
        if n % 100 == 0 {
            net.pump(&mut peers, 300); // 3 s of retries and route requests
        }
    }
    assert!(received(&peers[1].events).is_empty());
    net.link_up = true;
    net.pump(&mut peers, 500);
    let mut got = received(&peers[1].events);
    got.sort();
    sent.sort();
    assert_eq!(got, sent);
    assert!(
        !peers[1]
            .events
            .iter()
            .any(|e| matches!(e, Event::Rejected { .. })),
        "no envelope was outside the window"
    );
}
