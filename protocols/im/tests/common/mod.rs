//! Shared set-up of the shoal-im tests: the two test devices of the
//! X3DH and ratchet tests, and a harness of two engines on a simulated link.
#![allow(clippy::unwrap_used, dead_code)]

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use shoal_identity::Keypair;
use shoal_im::engine::{Engine, EngineConfig, Event, HistoryItem};
use shoal_im::{Device, MemoryStore, MessageId, PrekeyBundle, PrekeySecret, UserId, x3dh};

// ---------------------------------------------------------------------------
// Devices
// ---------------------------------------------------------------------------

/// Alice's and Bob's user keys and devices, the devices certified at
/// `created`: `(alice_user, alice, bob_user, bob)`.
pub(crate) fn devices(created: u64) -> (Keypair, Device, Keypair, Device) {
    let alice_user = Keypair::from_secret_bytes(&[1; 32]);
    let bob_user = Keypair::from_secret_bytes(&[2; 32]);
    let alice = Device::new(
        &alice_user,
        Keypair::from_secret_bytes(&[3; 32]),
        [4; 32],
        created,
    );
    let bob = Device::new(
        &bob_user,
        Keypair::from_secret_bytes(&[5; 32]),
        [6; 32],
        created,
    );
    (alice_user, alice, bob_user, bob)
}

/// `device`'s prekey bundle with a signed prekey `id` made from `secret`,
/// and the prekey's secret.
pub(crate) fn signed_bundle(
    device: &Device,
    id: u32,
    secret: [u8; 32],
) -> (PrekeyBundle, PrekeySecret) {
    let (prekey, secret) = x3dh::signed_prekey(device, id, secret);
    let bundle = PrekeyBundle {
        certificate: device.certificate().clone(),
        prekey,
    };
    (bundle, secret)
}

// ---------------------------------------------------------------------------
// Engines
// ---------------------------------------------------------------------------

/// An engine with the events it has emitted so far.
pub(crate) struct Peer {
    pub(crate) engine: Engine<MemoryStore>,
    pub(crate) events: Vec<Event>,
}

/// Opens an engine on `store` with the random seed `[seed; 32]`.
pub(crate) fn open(store: MemoryStore, seed: u8, now: Instant) -> Engine<MemoryStore> {
    Engine::open(
        store,
        EngineConfig::default(),
        [seed; 32],
        now,
        1_700_000_000,
    )
    .unwrap()
}

/// Alice (seed 1) and Bob (seed 2), each the other's contact.
pub(crate) fn pair(now: Instant) -> [Peer; 2] {
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

/// Records peer `i`'s events, answering bundle requests with the other
/// peer's bundle and, while `link_up`, route requests with `set_online`.
fn answer_events(peers: &mut [Peer; 2], i: usize, now: Instant, link_up: bool) {
    let other_bundle = peers[1 - i].engine.prekey_bundle();
    let other_user = peers[1 - i].engine.user_id();
    while let Some(event) = peers[i].engine.poll_event() {
        match &event {
            Event::NeedBundle { contact } => {
                assert_eq!(*contact, other_user);
                peers[i]
                    .engine
                    .set_bundle(now, other_user, &other_bundle)
                    .unwrap();
            }
            Event::NeedRoute { contact, .. } if link_up => {
                peers[i].engine.set_online(now, *contact, true).unwrap();
            }
            _ => {}
        }
        peers[i].events.push(event);
    }
}

/// Moves envelopes between two engines with faults, in rounds of 10 ms,
/// answering bundle and route requests from the other side.
pub(crate) struct Net {
    pub(crate) rng: ChaCha20Rng,
    pub(crate) now: Instant,
    /// (deliver at, to index, bytes)
    in_flight: Vec<(Instant, usize, Vec<u8>)>,
    /// How likely each envelope is dropped, duplicated, and delayed behind
    /// later ones.
    pub(crate) fault: f64,
    /// Whether routes to the peer exist (NeedRoute gets an answer, and
    /// envelopes are carried).
    pub(crate) link_up: bool,
}

/// A link up, starting at `now`, with faults of probability `fault`.
pub(crate) fn net(seed: u64, now: Instant, fault: f64) -> Net {
    Net {
        rng: ChaCha20Rng::seed_from_u64(seed),
        now,
        in_flight: Vec::new(),
        fault,
        link_up: true,
    }
}

impl Net {
    /// Runs `rounds` rounds: events answered, envelopes sent with faults,
    /// the clock moved on, due envelopes and timeouts handled.
    pub(crate) fn pump(&mut self, peers: &mut [Peer; 2], rounds: usize) {
        for _ in 0..rounds {
            for i in 0..2 {
                answer_events(peers, i, self.now, self.link_up);
                while let Some(t) = peers[i].engine.poll_transmit() {
                    if !self.link_up {
                        // No route: what is sealed now would wait in a
                        // mailbox; here it is lost, and only retries
                        // (the same envelope again) can bring it.
                        continue;
                    }
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

/// Delivers every envelope both ways at once, losslessly and in order,
/// until none is left, answering bundle and route requests (the two are
/// always connected; the clock stands still at `now`); returns alice's
/// (peer 0's) envelopes to bob in the order sent.
pub(crate) fn settle(peers: &mut [Peer; 2], now: Instant) -> Vec<Vec<u8>> {
    let mut a_to_b = Vec::new();
    for _ in 0..100 {
        let mut moved = false;
        for i in 0..2 {
            answer_events(peers, i, now, true);
            let mut out = Vec::new();
            while let Some(t) = peers[i].engine.poll_transmit() {
                out.push(t.envelope);
            }
            for envelope in out {
                moved = true;
                if i == 0 {
                    a_to_b.push(envelope.clone());
                }
                peers[1 - i].engine.handle_envelope(now, &envelope).unwrap();
            }
        }
        if !moved {
            return a_to_b;
        }
    }
    panic!("envelopes kept flowing");
}

/// Feeds `envelopes` to `engine` in order, dropping what it sends; returns
/// its events.
pub(crate) fn feed(
    engine: &mut Engine<MemoryStore>,
    now: Instant,
    envelopes: &[Vec<u8>],
) -> Vec<Event> {
    let mut events = Vec::new();
    for envelope in envelopes {
        engine.handle_envelope(now, envelope).unwrap();
        while let Some(e) = engine.poll_event() {
            events.push(e);
        }
        while engine.poll_transmit().is_some() {}
    }
    events
}

/// The ids of the messages shown (`Event::Received`), in order.
pub(crate) fn received(events: &[Event]) -> Vec<MessageId> {
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
pub(crate) fn history<S: shoal_im::Store>(
    engine: &mut Engine<S>,
    contact: &UserId,
) -> Vec<MessageId> {
    let items = history_items(engine, contact);
    let mut seen = HashSet::new();
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

/// The whole history, oldest first, read in pages of 50.
pub(crate) fn history_items<S: shoal_im::Store>(
    engine: &mut Engine<S>,
    contact: &UserId,
) -> Vec<HistoryItem> {
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
