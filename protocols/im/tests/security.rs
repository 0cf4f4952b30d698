//! Security properties of the engine (no network): forward secrecy (today's
//! stored state does not open yesterday's envelopes) and post-compromise
//! security (yesterday's stored state does not open today's envelopes once
//! both sides made a DH ratchet step); an envelope refused before it
//! authenticated changes no contact list and makes us send at most one
//! resend request a second; once the signed prekey that first contact used
//! has been rotated away, a later theft of the identity blob does not open
//! first-contact envelopes.
//!
//! The network-level security tests (through the messenger) are in
//! messenger/tests/security.rs.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Instant;

use common::{Peer, feed, history, open, pair, received, settle};
use shoal_im::engine::Event;
use shoal_im::envelope::SESSION_ID_LEN;
use shoal_im::store::Changes;
use shoal_im::x3dh::INITIAL_HEADER_LEN;
use shoal_im::{MemoryStore, Store};

const TYPE_INITIAL: u8 = 1;
const TYPE_KNOWN: u8 = 2;

/// Alice and bob, each the other's contact and online.
fn connected_pair(now: Instant) -> [Peer; 2] {
    let mut peers = pair(now);
    let (a, b) = (peers[0].engine.user_id(), peers[1].engine.user_id());
    peers[0].engine.set_online(now, b, true).unwrap();
    peers[1].engine.set_online(now, a, true).unwrap();
    peers
}

// ---------------------------------------------------------------------------
// Forward secrecy and post-compromise security
// ---------------------------------------------------------------------------

/// Yesterday: alice and bob talk; the test records alice's envelopes to
/// bob and snapshots bob's store. Today: four rounds each way (DH ratchet
/// steps), again recorded, and bob's store snapshotted again.
///
/// Forward secrecy: an engine opened on today's snapshot (a thief of bob's
/// device today, with a fresh random seed) shows nothing from yesterday's
/// envelopes, although it still opens alice's new messages.
///
/// Post-compromise security: an engine opened on yesterday's snapshot
/// (a thief of yesterday's state) opens alice's first message of today —
/// sent before bob's next fresh ratchet key reached her, the compromise is
/// not healed yet — but none after the first round trip.
#[test]
fn forward_secrecy_and_post_compromise_security() {
    let now = Instant::now();
    let mut peers = connected_pair(now);
    let (a, b) = (peers[0].engine.user_id(), peers[1].engine.user_id());

    // Yesterday.
    let mut yesterday = Vec::new();
    let mut yesterday_ids = Vec::new();
    for round in 0..3 {
        for i in 0..2 {
            let text = format!("yesterday a{round}.{i}");
            yesterday_ids.push(peers[0].engine.send(now, 0, b, &text).unwrap());
        }
        yesterday.extend(settle(&mut peers, now));
        peers[1]
            .engine
            .send(now, 0, a, &format!("yesterday b{round}"))
            .unwrap();
        yesterday.extend(settle(&mut peers, now));
    }
    assert_eq!(received(&peers[1].events), yesterday_ids);
    let bob_yesterday = peers[1].engine.store().clone();

    // Today.
    let mut today: Vec<Vec<Vec<u8>>> = Vec::new();
    let mut today_ids = Vec::new();
    for round in 0..4 {
        today_ids.push(
            peers[0]
                .engine
                .send(now, 0, b, &format!("today a{round}"))
                .unwrap(),
        );
        let mut captured = settle(&mut peers, now);
        peers[1]
            .engine
            .send(now, 0, a, &format!("today b{round}"))
            .unwrap();
        captured.extend(settle(&mut peers, now));
        today.push(captured);
    }
    let shown = received(&peers[1].events);
    assert_eq!(shown[yesterday_ids.len()..], today_ids[..]);
    let bob_today = peers[1].engine.store().clone();

    // Forward secrecy.
    let mut thief = open(bob_today.clone(), 99, now);
    let before = history(&mut thief, &a).len();
    let events = feed(&mut thief, now, &yesterday);
    assert!(
        received(&events).is_empty(),
        "today's state opened yesterday's envelopes: {events:?}"
    );
    assert_eq!(history(&mut thief, &a).len(), before);
    // The thief's engine works: it opens what alice sends from now on.
    let fresh = peers[0].engine.send(now, 0, b, "after the theft").unwrap();
    let mut after = Vec::new();
    while let Some(t) = peers[0].engine.poll_transmit() {
        after.push(t.envelope);
    }
    assert_eq!(received(&feed(&mut thief, now, &after)), vec![fresh]);

    // Post-compromise security.
    let mut thief = open(bob_yesterday, 98, now);
    let mut opened = Vec::new();
    for (round, envelopes) in today.iter().enumerate() {
        let got = received(&feed(&mut thief, now, envelopes));
        eprintln!("yesterday's state, today's round {round}: opened {got:?}");
        opened.push(got);
    }
    // Not healed yet: alice's first message of today uses the ratchet key
    // bob sent her yesterday (that the thief holds).
    assert_eq!(opened[0], vec![today_ids[0]], "the check cannot fail");
    // Healed after one round trip of fresh ratchet keys.
    for (round, got) in opened.iter().enumerate().skip(1) {
        assert!(
            got.is_empty(),
            "round {round}: yesterday's state opened {got:?}"
        );
    }
}

/// Forward secrecy of first-contact envelopes against a thief of the whole
/// device state, who is not bound to the engine's replay check: with the
/// identity key and the signed prekey, X3DH can be redone for any recorded
/// initial envelope (there are no one-time prekeys, docs/PROTOCOL.md 11.3).
/// Rotating the signed prekey and erasing old secrets bounds that: once the
/// prekey alice used is gone, today's identity blob opens nothing of
/// yesterday.
#[test]
fn initial_envelopes_stay_secret_after_a_later_theft() {
    let now = Instant::now();
    let (mut peers, yesterday) = talking_pair(now);
    assert_eq!(yesterday[0][1], TYPE_INITIAL);
    let first = received(&peers[1].events)[0];

    // Weeks pass: bob's signed prekey is rotated until the one alice used
    // is erased.
    let mut unix = 1_700_000_000;
    for _ in 0..=shoal_im::engine::PREKEYS_KEPT {
        unix += shoal_im::engine::PREKEY_ROTATION_SECS;
        assert!(peers[1].engine.rotate_prekey_if_due(unix).unwrap());
    }

    // Today's theft: the identity blob (device secrets and prekeys) only.
    let mut today = peers[1].engine.store().clone();
    let mut stolen = MemoryStore::new();
    stolen
        .commit(&Changes {
            identity: today.load_identity().unwrap(),
            ..Changes::default()
        })
        .unwrap();
    let mut thief = open(stolen, 97, now);
    let opened = received(&feed(&mut thief, now, &yesterday[..1]));
    assert!(
        opened.is_empty(),
        "today's identity blob opened yesterday's first message {first:?}: {opened:?}"
    );
}

// ---------------------------------------------------------------------------
// Envelopes refused before they authenticate
// ---------------------------------------------------------------------------

/// A two-engine conversation, three rounds each way; returns the peers and
/// alice's envelopes to bob.
fn talking_pair(now: Instant) -> ([Peer; 2], Vec<Vec<u8>>) {
    let mut peers = connected_pair(now);
    let (a, b) = (peers[0].engine.user_id(), peers[1].engine.user_id());
    let mut log = Vec::new();
    for i in 0..3 {
        peers[0].engine.send(now, 0, b, &format!("a{i}")).unwrap();
        log.extend(settle(&mut peers, now));
        peers[1].engine.send(now, 0, a, &format!("b{i}")).unwrap();
        log.extend(settle(&mut peers, now));
    }
    (peers, log)
}

/// Sets the ratchet header's message number of an envelope.
fn with_number(envelope: &[u8], number: u32) -> Vec<u8> {
    let session_len = match envelope[1] {
        TYPE_INITIAL => INITIAL_HEADER_LEN,
        _ => SESSION_ID_LEN,
    };
    let at = 2 + 32 + session_len + 37;
    let mut out = envelope.to_vec();
    out[at..at + 4].copy_from_slice(&number.to_be_bytes());
    out
}

/// An initial envelope refused before it authenticated (its message number
/// is beyond the skip window) must not make its claimed sender a contact.
/// (Regression: `request_missing` used to create the contact entry, so any
/// valid device certificate, e.g. one read from the DHT, put a nameless
/// contact in `contacts()`, one per forged certificate.)
#[test]
fn forged_initial_envelope_adds_no_contact() {
    let now = Instant::now();
    let mut bob = open(MemoryStore::new(), 2, now);
    let mut mallory = open(MemoryStore::new(), 3, now);
    let b = bob.user_id();
    mallory.add_contact(b, "bob").unwrap();
    mallory.set_online(now, b, true).unwrap();
    mallory.set_bundle(now, b, &bob.prekey_bundle()).unwrap();
    let hi = mallory.send(now, 0, b, "hi").unwrap();
    let genuine = mallory.poll_transmit().unwrap().envelope;
    assert_eq!(genuine[1], TYPE_INITIAL);

    let events = feed(&mut bob, now, &[with_number(&genuine, u32::MAX)]);
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(bob.refusals().total, 1);
    assert!(bob.contacts().is_empty(), "{:?}", bob.contacts());
    // The genuine envelope is still taken, as a message request.
    let events = feed(&mut bob, now, &[genuine]);
    assert_eq!(
        events,
        vec![Event::MessageRequest {
            contact: mallory.user_id()
        }]
    );
    assert_eq!(bob.requests().len(), 1);
    bob.add_contact(mallory.user_id(), "mallory").unwrap();
    let events: Vec<Event> = std::iter::from_fn(|| bob.poll_event()).collect();
    assert_eq!(received(&events), vec![hi]);
    assert_eq!(bob.contacts().len(), 1);
}

/// Unauthenticated envelopes must not make bob send: a forged envelope
/// on a known session (the session id travels in the clear) with a message
/// number beyond the skip window is refused before authentication and
/// would make bob encrypt, commit and send a forced resend
/// request to alice. Forced requests are rate limited like the others
/// (one a second per contact), so 100 forged envelopes make bob send at
/// most one.
#[test]
fn forged_envelopes_do_not_make_bob_send() {
    let now = Instant::now();
    let (mut peers, log) = talking_pair(now);
    let genuine = log.last().unwrap();
    assert_eq!(genuine[1], TYPE_KNOWN);
    let forged = with_number(genuine, u32::MAX);
    let mut sent = 0;
    for _ in 0..100 {
        peers[1].engine.handle_envelope(now, &forged).unwrap();
        while peers[1].engine.poll_transmit().is_some() {
            sent += 1;
        }
    }
    assert!(sent <= 1, "100 forged envelopes made bob send {sent}");
}
