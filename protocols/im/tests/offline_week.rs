//! A recipient offline for seven days while its contact sends 600 messages
//! and restarts ten times: everything the sender seals waits in a mailbox
//! (modelled here as a list the sender's driver appends to), the recipient
//! decrypts all of it when it comes back, and the sender never spends more
//! message keys in one chain than the recipient can skip.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use shoal_im::engine::{DeliveryState, Engine, EngineConfig, Event, SEND_BUDGET};
use shoal_im::envelope::Envelope;
use shoal_im::ratchet::MAX_SKIP;
use shoal_im::{Header, MemoryStore, MessageId, UserId};

const UNIX0: u64 = 1_700_000_000;
const MESSAGES: usize = 600;
const RESTARTS: usize = 10;
const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);

struct Side {
    engine: Engine<MemoryStore>,
    events: Vec<Event>,
    opened: (Instant, u64),
    seed: u8,
}

impl Side {
    fn open(store: MemoryStore, seed: u8, now: Instant, unix: u64) -> Side {
        Side {
            engine: Engine::open(store, EngineConfig::default(), [seed; 32], now, unix).unwrap(),
            events: Vec::new(),
            opened: (now, unix),
            seed,
        }
    }

    fn unix(&self, now: Instant) -> u64 {
        self.opened.1 + now.duration_since(self.opened.0).as_secs()
    }

    /// Closes the engine and opens it again on what its store holds.
    fn restart(&mut self, now: Instant) {
        let store = self.engine.store().clone();
        self.seed = self.seed.wrapping_add(16);
        let unix = self.unix(now);
        *self = Side {
            events: std::mem::take(&mut self.events),
            ..Side::open(store, self.seed, now, unix)
        };
    }
}

/// The ratchet message number of a sealed envelope (its key's position in
/// the sending chain) and the chain's ratchet key.
fn chain_position(envelope: &[u8]) -> ([u8; 32], u32) {
    let envelope = Envelope::decode(envelope).unwrap();
    let header = Header::decode(&envelope.ratchet).unwrap();
    (header.ratchet_key, header.number)
}

#[test]
fn a_week_offline_600_messages_and_ten_restarts_all_decrypt() {
    let t0 = Instant::now();
    let mut now = t0;
    let mut alice = Side::open(MemoryStore::new(), 1, now, UNIX0);
    let mut bob = Side::open(MemoryStore::new(), 2, now, UNIX0);
    let (a, b): (UserId, UserId) = (alice.engine.user_id(), bob.engine.user_id());
    alice.engine.add_contact(b, "bob").unwrap();
    bob.engine.add_contact(a, "alice").unwrap();
    let bob_device = bob.engine.device().certificate().device().peer_id();
    let alice_device = alice.engine.device().certificate().device().peer_id();

    // A first exchange while both are online: sessions on both sides.
    alice.engine.set_online(now, b, true).unwrap();
    bob.engine.set_online(now, a, true).unwrap();
    let bundle = bob.engine.prekey_bundle();
    alice.engine.set_bundle(now, b, &bundle).unwrap();
    let hello = alice.engine.send(now, UNIX0 * 1000, b, "hello").unwrap();
    exchange(&mut alice, &mut bob, now, alice_device, bob_device);
    assert!(alice.events.contains(&Event::Delivered {
        contact: b,
        id: hello
    }));

    // Bob goes away for a week. Alice's driver stores every envelope she
    // seals for him in his mailbox, and says so.
    alice.engine.set_online(now, b, false).unwrap();
    let mut mailbox: Vec<Vec<u8>> = Vec::new();
    let mut sent: Vec<MessageId> = Vec::new();
    let mut positions: BTreeSet<([u8; 32], u32)> = BTreeSet::new();
    let step = WEEK / MESSAGES as u32;
    let restart_every = MESSAGES / RESTARTS;
    for n in 0..MESSAGES {
        now += step;
        let unix_ms = alice.unix(now) * 1000;
        sent.push(
            alice
                .engine
                .send(now, unix_ms, b, &format!("m{n}"))
                .unwrap(),
        );
        if alice.engine.poll_timeout().is_some_and(|t| t <= now) {
            alice.engine.handle_timeout(now).unwrap();
        }
        store_in_mailbox(&mut alice, b, &mut mailbox, &mut positions);
        if (n + 1) % restart_every == 0 {
            alice.restart(now);
            // What was sealed before the restart and not yet stored.
            store_in_mailbox(&mut alice, b, &mut mailbox, &mut positions);
        }
    }
    let restarts = alice.seed / 16;
    assert_eq!(usize::from(restarts), RESTARTS);

    // Never more keys spent in one chain than the recipient can skip: the
    // budget stops sealing; the rest waits, queued.
    let max_position = positions.iter().map(|(_, n)| *n).max().unwrap();
    assert!(max_position < SEND_BUDGET, "position {max_position}");
    assert!(max_position < MAX_SKIP);
    let stored = sent
        .iter()
        .filter(|id| alice.engine.delivery_state(&b, id) == Some(DeliveryState::Stored))
        .count();
    let queued = sent
        .iter()
        .filter(|id| alice.engine.delivery_state(&b, id) == Some(DeliveryState::Queued))
        .count();
    assert_eq!(stored, mailbox.len());
    assert_eq!(stored + queued, MESSAGES);
    assert!(stored > 0 && queued > 0, "stored {stored}, queued {queued}");
    println!(
        "after a week: {stored} stored in the mailbox, {queued} queued; {} mailbox envelopes",
        mailbox.len()
    );

    // Bob is back: he reads his mailbox, oldest first (his clock kept
    // running), and is online with Alice again.
    now += Duration::from_secs(60);
    bob.engine.handle_timeout(now).unwrap();
    for envelope in &mailbox {
        bob.engine
            .handle_envelope_from(now, alice_device, envelope)
            .unwrap();
    }
    alice.engine.set_online(now, b, true).unwrap();
    bob.engine.set_online(now, a, true).unwrap();
    for _ in 0..20 {
        exchange(&mut alice, &mut bob, now, alice_device, bob_device);
        now += Duration::from_secs(2);
        for side in [&mut alice, &mut bob] {
            if side.engine.poll_timeout().is_some_and(|t| t <= now) {
                side.engine.handle_timeout(now).unwrap();
            }
        }
    }
    exchange(&mut alice, &mut bob, now, alice_device, bob_device);

    let received: Vec<MessageId> = bob
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Received { id, .. } => Some(*id),
            _ => None,
        })
        .collect();
    let mut expected = vec![hello];
    expected.extend(&sent);
    assert_eq!(received, expected, "every message once, in order");
    assert_eq!(
        bob.engine.refusals().total,
        0,
        "{:?}",
        bob.engine.refusals()
    );
    for id in &sent {
        assert_eq!(
            alice.engine.delivery_state(&b, id),
            Some(DeliveryState::Delivered)
        );
    }
    assert_eq!(alice.engine.outbox_len(&b), 0);
}

/// Stores what Alice sealed for Bob and has not stored yet (her driver,
/// while Bob is offline), and drains her other output.
fn store_in_mailbox(
    alice: &mut Side,
    bob: UserId,
    mailbox: &mut Vec<Vec<u8>>,
    positions: &mut BTreeSet<([u8; 32], u32)>,
) {
    while let Some(t) = alice.engine.poll_transmit() {
        positions.insert(chain_position(&t.envelope));
    }
    for stored in alice.engine.mailbox_outbox(&bob) {
        let (id, envelope) = (stored.id, stored.envelope);
        positions.insert(chain_position(&envelope));
        mailbox.push(envelope);
        alice.engine.mark_stored(bob, id).unwrap();
    }
    while let Some(e) = alice.engine.poll_event() {
        alice.events.push(e);
    }
}

/// Moves envelopes both ways, in order and without loss, answering route
/// and bundle requests, until neither side has anything to send.
fn exchange(
    alice: &mut Side,
    bob: &mut Side,
    now: Instant,
    alice_device: shoal_identity::PeerId,
    bob_device: shoal_identity::PeerId,
) {
    for _ in 0..10_000 {
        let mut moved = false;
        while let Some(t) = alice.engine.poll_transmit() {
            bob.engine
                .handle_envelope_from(now, alice_device, &t.envelope)
                .unwrap();
            moved = true;
        }
        while let Some(t) = bob.engine.poll_transmit() {
            alice
                .engine
                .handle_envelope_from(now, bob_device, &t.envelope)
                .unwrap();
            moved = true;
        }
        for side in [&mut *alice, &mut *bob] {
            while let Some(e) = side.engine.poll_event() {
                side.events.push(e);
            }
        }
        if !moved {
            return;
        }
    }
    panic!("the two engines never went quiet");
}
