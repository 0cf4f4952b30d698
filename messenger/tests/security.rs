//! Security properties through the public API.
//!
//! On an in-process network (a few relay/DHT messengers, alice, bob and
//! sometimes carol, all on a `MemoryNetwork`):
//! - no message body crosses the wire in the clear, and the check that says
//!   so fails when the engine leaks plaintext on purpose;
//! - a raw attacker node that alters any field of a genuine envelope only
//!   gets refusals (counted by `Messenger::refusals`, never an application
//!   event), never a shown message, and bob keeps working;
//! - replayed envelopes (messages and acknowledgements) show nothing twice;
//! - an envelope sealed for another device is refused.
//!
//! The engine-level security tests (forward secrecy, post-compromise
//! security, envelopes refused before they authenticate) live in
//! protocols/im/tests/security.rs.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{Node, collect_until, full_history, received, start};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use shoal::{DialOptions, ProtocolEvent, ProtocolEvents, ProtocolMeta, ServiceBuilder};
use shoal_identity::Keypair;
use shoal_im::engine::EngineConfig;
use shoal_im::envelope::SESSION_ID_LEN;
use shoal_im::ratchet::{HEADER_LEN, TAG_LEN};
use shoal_im::store::{Changes, ContactRecord, HistoryCursor, MessageMeta, StoredMessage};
use shoal_im::x3dh::INITIAL_HEADER_LEN;
use shoal_im::{MemoryStore, MessageId, Store, StoreError};
use shoal_messenger::{Event, MessengerConfig};
use shoal_transport::{MemoryNetwork, MemoryTransport, Multiaddr};
use tokio::sync::mpsc;

/// Longest wait for anything that should happen on the network.
const WAIT: Duration = Duration::from_secs(10);
/// How long we listen for something that must not happen.
const QUIET: Duration = Duration::from_millis(600);

// ---------------------------------------------------------------------------
// Network set-up
// ---------------------------------------------------------------------------

type Tap = mpsc::Receiver<Bytes>;
/// Room in a tap: far more than any test here receives (a full tap drops).
const TAP_CAPACITY: usize = 1 << 16;

fn config(bootstrap: Option<&Multiaddr>, tap: mpsc::Sender<Bytes>) -> MessengerConfig {
    MessengerConfig {
        listen: vec!["/memory/0".parse().unwrap()],
        bootstrap: bootstrap.into_iter().cloned().collect(),
        envelope_tap: Some(tap),
        engine: EngineConfig {
            route_retry: Duration::from_millis(200),
            route_retry_max: Duration::from_secs(1),
            ..EngineConfig::default()
        },
        ..MessengerConfig::default()
    }
}

/// `n` relay/DHT messengers, each with a tap, bootstrapped through the first.
async fn relays(net: &MemoryNetwork, n: usize) -> (Vec<Node>, Vec<Tap>) {
    let (mut nodes, mut taps) = (Vec::<Node>::new(), Vec::new());
    for _ in 0..n {
        let (tx, rx) = mpsc::channel(TAP_CAPACITY);
        let seed = nodes.first().map(|n| n.messenger.listen_addrs()[0].clone());
        nodes.push(start(net, MemoryStore::new(), config(seed.as_ref(), tx)).await);
        taps.push(rx);
    }
    (nodes, taps)
}

/// A user's messenger on `store` with its tap.
async fn user(
    net: &MemoryNetwork,
    relays: &[Node],
    store: impl Store,
    engine: EngineConfig,
) -> (Node, Tap) {
    let (tx, rx) = mpsc::channel(TAP_CAPACITY);
    let seed = common::seed(relays);
    let config = MessengerConfig {
        engine,
        ..config(Some(&seed), tx)
    };
    (start(net, store, config).await, rx)
}

/// Everything the tap holds now.
fn drain(tap: &mut Tap) -> Vec<Bytes> {
    let mut out = Vec::new();
    while let Ok(bytes) = tap.try_recv() {
        out.push(bytes);
    }
    out
}

/// Waits until `n` `Received` events are in `seen` (fails after `WAIT`).
async fn wait_received(node: &mut Node, seen: &mut Vec<Event>, n: usize) {
    collect_until(&mut node.events, seen, WAIT, |e| received(e).len() >= n).await;
}

async fn wait_delivered(node: &mut Node, seen: &mut Vec<Event>, n: usize) {
    collect_until(&mut node.events, seen, WAIT, |e| common::delivered(e) >= n).await;
}

/// Every event arriving within `QUIET`.
async fn quiet_events(node: &mut Node) -> Vec<Event> {
    let deadline = tokio::time::Instant::now() + QUIET;
    let mut out = Vec::new();
    while let Ok(Some(event)) = tokio::time::timeout_at(deadline, node.events.recv()).await {
        out.push(event);
    }
    out
}

/// `n` random 24-character alphanumeric strings.
fn random_bodies(n: usize) -> Vec<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).unwrap();
    let mut rng = ChaCha20Rng::from_seed(seed);
    (0..n)
        .map(|_| {
            (0..24)
                .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
                .collect()
        })
        .collect()
}

/// A store the test can snapshot while a messenger runs on it.
#[derive(Clone, Default)]
struct SharedStore(Arc<Mutex<MemoryStore>>);

impl SharedStore {
    fn snapshot(&self) -> MemoryStore {
        self.0.lock().unwrap().clone()
    }
}

impl Store for SharedStore {
    fn load_identity(&mut self) -> Result<Option<Vec<u8>>, StoreError> {
        self.0.lock().unwrap().load_identity()
    }
    fn load_contacts(&mut self) -> Result<Vec<ContactRecord>, StoreError> {
        self.0.lock().unwrap().load_contacts()
    }
    fn load_index(&mut self) -> Result<Vec<MessageMeta>, StoreError> {
        self.0.lock().unwrap().load_index()
    }
    fn message(&mut self, id: &MessageId) -> Result<Option<StoredMessage>, StoreError> {
        self.0.lock().unwrap().message(id)
    }
    fn load_sealed(&mut self) -> Result<Vec<shoal_im::SealedRecord>, StoreError> {
        self.0.lock().unwrap().load_sealed()
    }
    fn received(&mut self, key: &[u8; 32]) -> Result<Option<MessageId>, StoreError> {
        self.0.lock().unwrap().received(key)
    }
    fn history(
        &mut self,
        contact: &[u8; 32],
        before: Option<HistoryCursor>,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.0.lock().unwrap().history(contact, before, limit)
    }
    fn commit(&mut self, changes: &Changes) -> Result<(), StoreError> {
        self.0.lock().unwrap().commit(changes)
    }
}

/// A raw node speaking only `/shoal/im`: it can send any bytes as an
/// envelope to a messenger.
struct Attacker {
    control: shoal::ServiceControl,
    events: ProtocolEvents,
}

impl Attacker {
    fn new(net: &MemoryNetwork) -> Attacker {
        let (meta, events) =
            ProtocolMeta::builder(shoal_messenger::IM, shoal_messenger::IM_PROTOCOL_NAME)
                .max_frame_size(shoal_im::envelope::MAX_ENVELOPE_LEN + 1024)
                .event_stream();
        let service = ServiceBuilder::new(Keypair::generate())
            .transport(MemoryTransport::new(net))
            .protocol(meta)
            .build()
            .unwrap();
        let control = service.control();
        tokio::spawn(service);
        Attacker { control, events }
    }

    /// Dials `addr` and waits until `/shoal/im` is open on the session.
    async fn connect(&mut self, addr: Multiaddr) -> shoal::SessionId {
        let dial = self.control.dial(addr, DialOptions::default());
        let session = tokio::time::timeout(WAIT, dial).await.unwrap().unwrap();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(ProtocolEvent::Connected { session: s, .. })) if s.id == session.id => {
                    return session.id;
                }
                Ok(Some(_)) => {}
                Ok(None) => panic!("attacker service stopped"),
                Err(_) => panic!("/shoal/im did not open"),
            }
        }
    }

    async fn send(&self, session: shoal::SessionId, bytes: &[u8]) {
        let send = self
            .control
            .send(session, shoal_messenger::IM, Bytes::copy_from_slice(bytes));
        tokio::time::timeout(WAIT, send).await.unwrap().unwrap();
    }

    async fn shutdown(&self) {
        self.control.shutdown().await;
    }
}

/// Sends `bytes` and waits for the refusal to be counted: exactly what a
/// bad envelope must cause. Fails on any application event but contacts
/// going on- or offline (acceptance, a changed state, or an event for the
/// refusal itself). Returns the reason.
async fn expect_refused(
    attacker: &Attacker,
    session: shoal::SessionId,
    node: &mut Node,
    what: &str,
    bytes: &[u8],
) -> String {
    let before = node.messenger.refusals().await.unwrap().total;
    attacker.send(session, bytes).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        while let Ok(event) = node.events.try_recv() {
            match event {
                Event::ContactOnline { .. } | Event::ContactOffline { .. } => {}
                other => panic!("{what}: an application event: {other:?}"),
            }
        }
        let refusals = node.messenger.refusals().await.unwrap();
        if refusals.total > before {
            assert_eq!(refusals.total, before + 1, "{what}: refused twice");
            let (_, reason) = refusals.last.unwrap();
            return reason.to_string();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not refused within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn shutdown(nodes: impl IntoIterator<Item = &Node>) {
    for node in nodes {
        node.messenger.shutdown().await;
    }
}

// ---------------------------------------------------------------------------
// 1, 2: no plaintext on the wire
// ---------------------------------------------------------------------------

/// The bodies that occur, as byte substrings, in any of `envelopes`.
fn plaintext_leaks(envelopes: &[Bytes], bodies: &[String]) -> Vec<String> {
    bodies
        .iter()
        .filter(|body| {
            let needle = body.as_bytes();
            envelopes
                .iter()
                .any(|e| e.windows(needle.len()).any(|w| w == needle))
        })
        .cloned()
        .collect()
}

/// What one plaintext run saw.
struct Wire {
    /// Bodies alice sent, then bodies bob sent.
    bodies_a: Vec<String>,
    bodies_b: Vec<String>,
    /// Every envelope that arrived at any node (alice, bob, relays).
    envelopes: Vec<Bytes>,
    /// Envelopes that arrived at relay nodes (should be none).
    at_relays: usize,
}

/// alice and bob exchange `n` random bodies each way on a 3-relay network;
/// alice's engine leaks plaintext if `leak`. Returns every envelope any
/// node's service layer received.
async fn plaintext_run(n: usize, leak: bool) -> Wire {
    let net = MemoryNetwork::new();
    let (relays, mut relay_taps) = relays(&net, 3).await;
    let (mut alice, mut tap_a) =
        user(&net, &relays, MemoryStore::new(), EngineConfig::default()).await;
    if leak {
        shoal_im::audit::leak_plaintext_of(alice.messenger.user_id());
    }
    let (mut bob, mut tap_b) =
        user(&net, &relays, MemoryStore::new(), EngineConfig::default()).await;
    let (a, b) = (alice.messenger.user_id(), bob.messenger.user_id());
    alice.messenger.add_contact(b, "bob").await.unwrap();
    bob.messenger.add_contact(a, "alice").await.unwrap();

    let bodies_a = random_bodies(n);
    let bodies_b = random_bodies(n);
    for body in &bodies_a {
        alice.messenger.send(b, body).await.unwrap();
    }
    let (mut seen_a, mut seen_b) = (Vec::new(), Vec::new());
    let mut envelopes = Vec::new();
    if leak {
        // bob refuses alice's leaking envelopes (the appended plaintext
        // breaks the tag): wait until every body went out at least once.
        let deadline = tokio::time::Instant::now() + WAIT;
        while envelopes.len() < n {
            match tokio::time::timeout_at(deadline, tap_b.recv()).await {
                Ok(Some(bytes)) => envelopes.push(bytes),
                _ => panic!("alice's envelopes did not reach bob"),
            }
        }
    } else {
        wait_received(&mut bob, &mut seen_b, n).await;
        for body in &bodies_b {
            bob.messenger.send(a, body).await.unwrap();
        }
        wait_received(&mut alice, &mut seen_a, n).await;
        wait_delivered(&mut alice, &mut seen_a, n).await;
        wait_delivered(&mut bob, &mut seen_b, n).await;
        // The bodies really went through, unchanged.
        let shown = |seen: &[Event]| -> HashSet<String> {
            seen.iter()
                .filter_map(|e| match e {
                    Event::Received { message, .. } => Some(message.text()),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(shown(&seen_b), bodies_a.iter().cloned().collect());
        assert_eq!(shown(&seen_a), bodies_b.iter().cloned().collect());
    }
    shutdown(relays.iter().chain([&alice, &bob])).await;

    envelopes.extend(drain(&mut tap_a));
    envelopes.extend(drain(&mut tap_b));
    // Envelopes travel only on direct `/shoal/im` sessions between the two
    // devices (the driver delivers a Transmit only to the session of its
    // recipient device, and no fault layer is configured here to hold
    // delayed copies), so the relays' taps cover every copy another node
    // could hold in transit. What the relays hold at rest are DHT records,
    // whose validators accept only presence records and prekey bundles
    // (`directory::install_validators`); kad has no public API to list a
    // node's record store, so those are not read here.
    let mut at_relays = 0;
    for tap in &mut relay_taps {
        let got = drain(tap);
        at_relays += got.len();
        envelopes.extend(got);
    }
    Wire {
        bodies_a,
        bodies_b,
        envelopes,
        at_relays,
    }
}

/// 1. Ciphertext only: no body appears in any envelope any node received.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_plaintext_on_the_wire() {
    let wire = plaintext_run(20, false).await;
    assert!(
        wire.envelopes.len() >= 2 * 20,
        "too few envelopes captured: {}",
        wire.envelopes.len()
    );
    assert_eq!(wire.at_relays, 0, "envelopes reached relay nodes");
    let all: Vec<String> = wire
        .bodies_a
        .iter()
        .chain(&wire.bodies_b)
        .cloned()
        .collect();
    let leaks = plaintext_leaks(&wire.envelopes, &all);
    assert!(leaks.is_empty(), "plaintext on the wire: {leaks:?}");
}

/// 2. The same check finds the plaintext when alice's engine leaks it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_check_catches_a_leak() {
    let wire = plaintext_run(20, true).await;
    let leaks: HashSet<String> = plaintext_leaks(&wire.envelopes, &wire.bodies_a)
        .into_iter()
        .collect();
    assert_eq!(
        leaks,
        wire.bodies_a.iter().cloned().collect::<HashSet<_>>(),
        "the check missed leaked bodies"
    );
}

// ---------------------------------------------------------------------------
// 3: tampering
// ---------------------------------------------------------------------------

const TYPE_INITIAL: u8 = 1;
const TYPE_KNOWN: u8 = 2;

/// One altered copy of `envelope` per field (layout: version | type |
/// recipient 32 | initial header or session id | ratchet header 41 |
/// ciphertext | tag 16), plus truncated and extended copies.
fn tampered(envelope: &[u8]) -> Vec<(String, Vec<u8>)> {
    let kind = envelope[1];
    let session_len = match kind {
        TYPE_INITIAL => INITIAL_HEADER_LEN,
        TYPE_KNOWN => SESSION_ID_LEN,
        _ => panic!("unknown envelope type {kind}"),
    };
    let ratchet = 2 + 32 + session_len;
    let tag = envelope.len() - TAG_LEN;
    assert!(ratchet + HEADER_LEN < tag, "envelope too short");
    let flip = |what: &str, at: usize, mask: u8| {
        let mut copy = envelope.to_vec();
        copy[at] ^= mask;
        (format!("{what} (byte {at})"), copy)
    };
    let mut out = vec![
        flip("version byte", 0, 0x03),
        flip("type byte (initial <-> known)", 1, 0x03),
        flip("type byte (unknown type)", 1, 0x07),
        flip("recipient", 2 + 7, 0x01),
        flip("recipient, last byte", 2 + 31, 0x40),
    ];
    if kind == TYPE_INITIAL {
        let h = 2 + 32;
        out.extend([
            flip("initial header: version", h, 0x01),
            flip("initial header: certificate", h + 1 + 40, 0x01),
            flip("initial header: ephemeral key", h + 1 + 169 + 3, 0x01),
            flip(
                "initial header: prekey id",
                h + INITIAL_HEADER_LEN - 1,
                0x01,
            ),
        ]);
    } else {
        out.extend([
            flip("session id, first byte", 2 + 32, 0x01),
            flip("session id, last byte", 2 + 32 + SESSION_ID_LEN - 1, 0x80),
        ]);
    }
    out.extend([
        flip("ratchet header: version", ratchet, 0x01),
        flip("ratchet header: ratchet key", ratchet + 1 + 5, 0x01),
        flip(
            "ratchet header: previous chain length",
            ratchet + 33 + 3,
            0x01,
        ),
        flip("ratchet header: number", ratchet + 37 + 3, 0x01),
        flip("ciphertext, first byte", ratchet + HEADER_LEN, 0x01),
        flip("ciphertext, middle", (ratchet + HEADER_LEN + tag) / 2, 0x80),
        flip("ciphertext, last byte", tag - 1, 0x01),
        flip("tag, first byte", tag, 0x01),
        flip("tag, last byte", envelope.len() - 1, 0x80),
    ]);
    let mut short = envelope.to_vec();
    short.pop();
    out.push(("truncated by one byte".into(), short));
    out.push((
        "truncated to its headers".into(),
        envelope[..ratchet + HEADER_LEN].to_vec(),
    ));
    out.push(("truncated to 1 byte".into(), envelope[..1].to_vec()));
    let mut long = envelope.to_vec();
    long.push(0);
    out.push(("extended by one byte".into(), long));
    let mut long = envelope.to_vec();
    long.extend_from_slice(&[0u8; TAG_LEN]);
    out.push(("extended by 16 zero bytes".into(), long));
    // The tag moved to the end of an extended copy: the ciphertext changes.
    let mut moved = envelope[..tag].to_vec();
    moved.push(0);
    moved.extend_from_slice(&envelope[tag..]);
    out.push(("one byte inserted before the tag".into(), moved));
    out
}

/// 3. A raw node sends bob altered copies of genuine alice→bob envelopes,
/// field by field: each is refused with an error event, nothing is shown,
/// and afterwards the untouched envelope still opens (it was not consumed
/// by bob's state before the test), then the next genuine one too.
///
/// To hold genuine envelopes bob has not consumed, bob runs on a store the
/// test snapshots: bob receives m1 and stops (snapshot); a copy of bob on
/// the snapshot receives m2 and m3 (the tap captures their envelopes E2
/// and E3); then bob is restarted from the snapshot again, where E2 and E3
/// are new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_envelopes_are_refused() {
    let net = MemoryNetwork::new();
    let (relays, _relay_taps) = relays(&net, 3).await;
    let (mut alice, _tap_a) =
        user(&net, &relays, MemoryStore::new(), EngineConfig::default()).await;
    let bob_store = SharedStore::default();
    let (mut bob, mut tap_b) =
        user(&net, &relays, bob_store.clone(), EngineConfig::default()).await;
    let (a, b) = (alice.messenger.user_id(), bob.messenger.user_id());
    alice.messenger.add_contact(b, "bob").await.unwrap();
    bob.messenger.add_contact(a, "alice").await.unwrap();

    let (mut seen_a, mut seen_b) = (Vec::new(), Vec::new());
    let m1 = alice.messenger.send(b, "m1").await.unwrap();
    wait_received(&mut bob, &mut seen_b, 1).await;
    wait_delivered(&mut alice, &mut seen_a, 1).await;
    let first = drain(&mut tap_b);
    let e1 = first[0].to_vec();
    assert_eq!(
        e1[1], TYPE_INITIAL,
        "the first envelope carries the initial header"
    );
    // bob stops; his stored state now is the snapshot.
    let bob_addr = bob.messenger.listen_addrs()[0].clone();
    bob.messenger.shutdown().await;
    drop(bob);
    let snapshot = bob_store.snapshot();

    // alice writes m2 and m3 while bob is away: nothing from bob can reach
    // her before both are sealed, so both use her next sending chain, which
    // the snapshot opens.
    let m2 = alice.messenger.send(b, "m2").await.unwrap();
    let m3 = alice.messenger.send(b, "m3").await.unwrap();
    // bob comes back (same address, so alice's cached address works) on a
    // copy of the snapshot and takes them; the tap captures E2 and E3.
    let mut bob = None;
    let (tx, mut tap_b) = mpsc::channel(TAP_CAPACITY);
    for _ in 0..50 {
        let config = MessengerConfig {
            listen: vec![bob_addr.without_peer_id()],
            ..config(Some(&common::seed(&relays)), tx.clone())
        };
        let started =
            shoal_messenger::Messenger::start(snapshot.clone(), MemoryTransport::new(&net), config)
                .await;
        if let Ok((messenger, events)) = started {
            bob = Some(Node { messenger, events });
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut bob = bob.expect("bob could not listen on his address again");
    let mut seen_b = Vec::new();
    wait_received(&mut bob, &mut seen_b, 2).await;
    assert_eq!(received(&seen_b), vec![m2, m3]);
    let later = drain(&mut tap_b);
    let (e2, e3) = (later[0].to_vec(), later[1].to_vec());
    for e in [&e2, &e3] {
        assert_eq!(
            e[1], TYPE_KNOWN,
            "alice heard back: she uses the session id"
        );
    }
    let ratchet_key = |e: &[u8]| e[2 + 32 + SESSION_ID_LEN + 1..][..32].to_vec();
    assert_eq!(ratchet_key(&e2), ratchet_key(&e3));

    // bob restarts from the snapshot once more, where E2 and E3 are new.
    // (alice stops: her state moved on with this bob's acknowledgements,
    // which the next one, with fresh randomness, cannot reproduce.)
    alice.messenger.shutdown().await;
    bob.messenger.shutdown().await;
    drop(bob);
    let (mut bob, _tap) = user(&net, &relays, snapshot, EngineConfig::default()).await;
    assert_eq!(bob.messenger.user_id(), b);

    let mut attacker = Attacker::new(&net);
    let session = attacker
        .connect(bob.messenger.listen_addrs()[0].clone())
        .await;

    // The known-session envelope E2, every field; then the initial
    // envelope E1 (already taken in the snapshot), header fields only: a
    // changed initial header names another session, so it cannot pass as a
    // replay. (Changing E1's ciphertext or tag would be dropped silently as
    // a replay of a used message number, before authentication, like any
    // replay: that is checked in `replays_show_nothing_twice`.)
    let mut refusals = Vec::new();
    let e1_header_fields: Vec<_> = tampered(&e1)
        .into_iter()
        .filter(|(what, _)| {
            what.starts_with("version")
                || what.starts_with("type")
                || what.starts_with("recipient")
                || what.starts_with("initial header")
                || what.starts_with("truncated to 1")
        })
        .collect();
    assert_eq!(e1_header_fields.len(), 10);
    for (what, bytes) in tampered(&e2).into_iter().chain(
        e1_header_fields
            .into_iter()
            .map(|(what, bytes)| (format!("initial envelope: {what}"), bytes)),
    ) {
        let error = expect_refused(&attacker, session, &mut bob, &what, &bytes).await;
        refusals.push(format!("{what}: {error}"));
    }
    eprintln!("refusals:\n  {}", refusals.join("\n  "));
    assert!(refusals.len() >= 25);

    // Nothing was consumed by the altered copies: the genuine E2 opens now.
    attacker.send(session, &e2).await;
    let mut seen = Vec::new();
    wait_received(&mut bob, &mut seen, 1).await;
    assert_eq!(received(&seen), vec![m2]);
    // A replay of it is dropped without a second Received (no error needed).
    attacker.send(session, &e2).await;
    attacker.send(session, &e1).await;
    let after = quiet_events(&mut bob).await;
    assert!(received(&after).is_empty(), "replay shown: {after:?}");

    // bob keeps working: the next genuine envelope opens too.
    attacker.send(session, &e3).await;
    let mut seen = Vec::new();
    wait_received(&mut bob, &mut seen, 1).await;
    assert_eq!(received(&seen), vec![m3]);
    let history: Vec<_> = full_history(&bob.messenger, a)
        .await
        .iter()
        .map(|i| i.meta.id)
        .collect();
    assert_eq!(history, vec![m1, m2, m3]);

    attacker.shutdown().await;
    shutdown(relays.iter().chain([&bob])).await;
}

// ---------------------------------------------------------------------------
// 4: replay
// ---------------------------------------------------------------------------

/// 4. Every envelope alice ever sent bob (her messages and her
/// acknowledgements of bob's messages), replayed 20 times each by a raw
/// node: bob shows each message exactly once, reports no second delivery,
/// and his history has no duplicates; he still receives new messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_show_nothing_twice() {
    const N: usize = 5;
    const REPLAYS: usize = 20;
    let net = MemoryNetwork::new();
    let (relays, _relay_taps) = relays(&net, 3).await;
    let (mut alice, _tap_a) =
        user(&net, &relays, MemoryStore::new(), EngineConfig::default()).await;
    let (mut bob, mut tap_b) =
        user(&net, &relays, MemoryStore::new(), EngineConfig::default()).await;
    let (a, b) = (alice.messenger.user_id(), bob.messenger.user_id());
    alice.messenger.add_contact(b, "bob").await.unwrap();
    bob.messenger.add_contact(a, "alice").await.unwrap();

    let (mut seen_a, mut seen_b) = (Vec::new(), Vec::new());
    let mut sent = Vec::new();
    for i in 0..N {
        sent.push(alice.messenger.send(b, &format!("a{i}")).await.unwrap());
    }
    wait_received(&mut bob, &mut seen_b, N).await;
    wait_delivered(&mut alice, &mut seen_a, N).await;
    let chats = drain(&mut tap_b);
    // bob writes twice: what alice sends back now are acknowledgements.
    let mut ours = Vec::new();
    for i in 0..2 {
        ours.push(bob.messenger.send(a, &format!("b{i}")).await.unwrap());
    }
    wait_delivered(&mut bob, &mut seen_b, 2).await;
    wait_received(&mut alice, &mut seen_a, 2).await;
    let acks = drain(&mut tap_b);
    assert!(chats.len() >= N && !acks.is_empty());

    let mut attacker = Attacker::new(&net);
    let session = attacker
        .connect(bob.messenger.listen_addrs()[0].clone())
        .await;
    for _ in 0..REPLAYS {
        for envelope in chats.iter().chain(&acks) {
            attacker.send(session, envelope).await;
        }
    }
    // Then a genuine new message: once it is shown, every replay before it
    // has been handled (one session, frames in order).
    let last = alice.messenger.send(b, "after the replays").await.unwrap();
    let mut after = Vec::new();
    wait_received(&mut bob, &mut after, 1).await;
    after.extend(quiet_events(&mut bob).await);
    assert_eq!(
        received(&after),
        vec![last],
        "a replay was shown: {after:?}"
    );
    assert_eq!(
        common::delivered(&after),
        0,
        "a replayed ack delivered again"
    );
    let refused = bob.messenger.refusals().await.unwrap().total;
    eprintln!(
        "refused during {} replays: {refused}",
        REPLAYS * (chats.len() + acks.len())
    );
    assert!(
        !after.iter().any(|e| matches!(e, Event::Error { .. })),
        "replays became application events"
    );

    seen_b.extend(after);
    let got = received(&seen_b);
    assert_eq!(got.len(), N + 1, "a message was shown twice");
    assert_eq!(got[..N], sent[..]);
    assert_eq!(common::delivered(&seen_b), 2);
    // full_history asserts no id appears twice.
    let history: Vec<_> = full_history(&bob.messenger, a)
        .await
        .iter()
        .map(|i| i.meta.id)
        .collect();
    assert_eq!(history.len(), N + 2 + 1);
    let expected: HashSet<_> = sent.iter().chain(&ours).chain([&last]).copied().collect();
    assert_eq!(history.iter().copied().collect::<HashSet<_>>(), expected);

    attacker.shutdown().await;
    shutdown(relays.iter().chain([&alice, &bob])).await;
}

// ---------------------------------------------------------------------------
// 5: envelopes for another device
// ---------------------------------------------------------------------------

/// 5. An envelope alice sealed for carol, delivered to bob, is refused
/// (wrong recipient); so is one sealed for bob delivered to carol, and one
/// for carol whose recipient field was rewritten to bob's device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelopes_for_another_device_are_refused() {
    let net = MemoryNetwork::new();
    let (relays, _relay_taps) = relays(&net, 3).await;
    let (mut alice, _tap_a) =
        user(&net, &relays, MemoryStore::new(), EngineConfig::default()).await;
    let (mut bob, mut tap_b) =
        user(&net, &relays, MemoryStore::new(), EngineConfig::default()).await;
    let (mut carol, mut tap_c) =
        user(&net, &relays, MemoryStore::new(), EngineConfig::default()).await;
    let (a, b, c) = (
        alice.messenger.user_id(),
        bob.messenger.user_id(),
        carol.messenger.user_id(),
    );
    alice.messenger.add_contact(b, "bob").await.unwrap();
    alice.messenger.add_contact(c, "carol").await.unwrap();
    bob.messenger.add_contact(a, "alice").await.unwrap();
    carol.messenger.add_contact(a, "alice").await.unwrap();

    let (mut seen_a, mut seen_b, mut seen_c) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..2 {
        alice
            .messenger
            .send(b, &format!("for bob {i}"))
            .await
            .unwrap();
        alice
            .messenger
            .send(c, &format!("for carol {i}"))
            .await
            .unwrap();
    }
    wait_received(&mut bob, &mut seen_b, 2).await;
    wait_received(&mut carol, &mut seen_c, 2).await;
    wait_delivered(&mut alice, &mut seen_a, 4).await;
    let for_bob = drain(&mut tap_b);
    let for_carol = drain(&mut tap_c);
    // The last ones are established-session envelopes; the first initial.
    let kinds = |v: &[Bytes]| v.iter().map(|e| e[1]).collect::<HashSet<_>>();
    assert!(kinds(&for_bob).contains(&TYPE_INITIAL));
    assert!(kinds(&for_carol).contains(&TYPE_INITIAL));

    let mut attacker = Attacker::new(&net);
    let to_bob = attacker
        .connect(bob.messenger.listen_addrs()[0].clone())
        .await;
    let to_carol = attacker
        .connect(carol.messenger.listen_addrs()[0].clone())
        .await;
    for envelope in &for_carol {
        let error = expect_refused(
            &attacker,
            to_bob,
            &mut bob,
            "carol's envelope at bob",
            envelope,
        )
        .await;
        assert!(error.contains("another device"), "{error}");
        // Readdressed to bob: bob has no such session, or cannot derive
        // carol's keys from the initial header.
        let mut readdressed = envelope.to_vec();
        readdressed[2..34].copy_from_slice(bob.messenger.peer_id().as_bytes());
        let error = expect_refused(
            &attacker,
            to_bob,
            &mut bob,
            "carol's envelope readdressed to bob",
            &readdressed,
        )
        .await;
        eprintln!("readdressed to bob: {error}");
    }
    for envelope in &for_bob {
        let error = expect_refused(
            &attacker,
            to_carol,
            &mut carol,
            "bob's envelope at carol",
            envelope,
        )
        .await;
        assert!(error.contains("another device"), "{error}");
    }
    // Nothing was shown from those.
    assert!(received(&quiet_events(&mut bob).await).is_empty());
    assert!(received(&quiet_events(&mut carol).await).is_empty());
    for (node, contact) in [(&bob, a), (&carol, a)] {
        assert_eq!(full_history(&node.messenger, contact).await.len(), 2);
    }

    attacker.shutdown().await;
    shutdown(relays.iter().chain([&alice, &bob, &carol])).await;
}
