//! Session repair through the public `Engine` API on real `SqliteStore`s:
//! one test per way a session breaks, each ending with both histories
//! identical; and what must not cause a reset (garbage, replays).
#![allow(clippy::unwrap_used)]

mod pair;

use std::time::Duration;

use pair::Pair;
use rand::{RngCore, SeedableRng};
use shoal_im::engine::{EngineConfig, Event, PREKEY_ROTATION_SECS, PREKEYS_KEPT, RejectReason};
use shoal_im::ratchet::MAX_SKIP;
use shoal_im::reset::is_reset_request;

fn configs() -> [EngineConfig; 2] {
    [EngineConfig::default(), EngineConfig::default()]
}

/// Envelope type byte: 1 initial, 2 known session, 3 reset request.
fn kind(envelope: &[u8]) -> u8 {
    envelope[1]
}

/// The first envelope of type `of` that side `side` put on the wire.
fn first_sent(pair: &Pair, side: usize, of: u8) -> Vec<u8> {
    pair.wire
        .iter()
        .find(|(from, e)| *from == side && kind(e) == of)
        .map(|(_, e)| e.clone())
        .unwrap()
}

/// Alice fetched Bob's bundle, Bob rotated his prekey until that one was
/// erased, then Alice writes (three weeks later): Bob cannot derive the
/// session, asks for a new one, and Alice's message arrives on it.
/// Alice holds a session started from Bob's bundle, and Bob has since
/// rotated his signed prekey until that bundle's was erased.
fn with_a_stale_bundle(seed: u64) -> Pair {
    let mut pair = Pair::new(seed, configs());
    let users = pair.users();
    let stale = pair.engine(1).prekey_bundle();
    let now = pair.now;
    pair.engine(0).set_bundle(now, users[1], &stale).unwrap();
    for k in 1..=(PREKEYS_KEPT as u64 + 1) {
        let unix = pair.unix() + k * PREKEY_ROTATION_SECS;
        assert!(pair.engine(1).rotate_prekey_if_due(unix).unwrap());
    }
    pair
}

#[test]
fn an_erased_prekey_is_repaired() {
    let mut pair = with_a_stale_bundle(1);
    let users = pair.users();
    let sent = pair.send(0, "three weeks later");
    let healed = pair.run_until_identical(Duration::from_secs(60));
    assert!(healed.is_some(), "never delivered");
    assert_eq!(pair.engine(1).reset_requests_sent(), 1);
    assert_eq!(pair.engine(0).resets_honoured(), 1);
    assert!(pair.sides[1].history_ids(users[0]).contains(&sent));

    // The reset request again (a replay): nothing changes.
    let request = first_sent(&pair, 1, 3);
    assert!(is_reset_request(&request));
    let sessions = pair.engine(0).contacts()[0].sessions;
    let (now, bob) = (
        pair.now,
        pair.engine(1).device().certificate().device().peer_id(),
    );
    pair.engine(0)
        .handle_envelope_from(now, bob, &request)
        .unwrap();
    pair.settle();
    assert_eq!(pair.engine(0).resets_honoured(), 1);
    assert_eq!(pair.engine(0).contacts()[0].sessions, sessions);
    pair.send(1, "still fine");
    pair.send(0, "yes");
    assert!(pair.run_until_identical(Duration::from_secs(10)).is_some());
}

/// A fresh bundle replaces a session that was never answered and was
/// started from another prekey, without waiting for a reset request.
#[test]
fn a_fresh_bundle_replaces_an_unanswered_session_from_an_old_prekey() {
    let mut pair = with_a_stale_bundle(2);
    let users = pair.users();
    let now = pair.now;
    let fresh = pair.engine(1).prekey_bundle();
    pair.engine(0).set_bundle(now, users[1], &fresh).unwrap();
    pair.send(0, "hello");
    assert!(pair.run_until_identical(Duration::from_secs(10)).is_some());
    assert_eq!(pair.engine(1).reset_requests_sent(), 0);
}

/// Bob's data directory goes back to before the session existed: Alice's
/// envelopes name a session Bob does not hold. Bob asks for a new one; the
/// messages he had acknowledged come back too.
#[test]
fn an_unknown_session_is_repaired() {
    let mut pair = Pair::new(3, configs());
    let snapshot = tempfile::tempdir().unwrap();
    pair.sides[1].snapshot(snapshot.path());
    for i in 0..3 {
        pair.send(0, &format!("before {i}"));
    }
    assert!(pair.run_until_identical(Duration::from_secs(10)).is_some());
    let first_initial = first_sent(&pair, 0, 1);

    pair.sides[1].restore(snapshot.path());
    pair.open(1);
    assert!(!pair.identical());
    pair.send(0, "after");
    let healed = pair.run_until_identical(Duration::from_secs(120));
    assert!(healed.is_some(), "never healed");
    assert!(pair.engine(1).reset_requests_sent() >= 1);
    assert_eq!(pair.engine(0).resets_honoured(), 1);

    // Alice's very first initial envelope again, twice, past the rate
    // limit: Bob lost that session with the restore (he cannot know it is
    // old), but his own works: he challenges it and does not switch.
    let users = pair.users();
    let before = pair.sides[1].history_ids(users[0]);
    let honoured = pair.engine(0).resets_honoured();
    let active = pair.engine(1).contacts()[0].sessions;
    let alice = pair.engine(0).device().certificate().device().peer_id();
    for _ in 0..2 {
        pair.now += shoal_im::engine::RESET_INTERVAL + Duration::from_secs(1);
        let now = pair.now;
        pair.engine(1)
            .handle_envelope_from(now, alice, &first_initial)
            .unwrap();
        pair.settle();
    }
    assert_eq!(pair.engine(1).contacts()[0].sessions, active);
    assert_eq!(pair.engine(0).resets_honoured(), honoured);
    assert_eq!(pair.engine(1).refusals().count("unrequested-session"), 2);
    assert_eq!(pair.sides[1].history_ids(users[0]), before);
    pair.send(1, "after the replay");
    pair.send(0, "still here");
    assert!(pair.run_until_identical(Duration::from_secs(10)).is_some());
    assert_eq!(pair.engine(0).resets_honoured(), honoured);
}

/// More of Alice's envelopes are lost than Bob's skip window allows (Bob's
/// own messages keep reaching her, so her send budget stays open): Bob
/// cannot decrypt what follows, asks for a new session, and every one of
/// Alice's messages arrives on it, ids unchanged.
#[test]
fn a_window_overrun_is_repaired() {
    // Bob keeps one session: the repaired one pushes the first out.
    let bob = EngineConfig {
        max_sessions: 1,
        ..EngineConfig::default()
    };
    let mut pair = Pair::new(4, [EngineConfig::default(), bob]);
    pair.send(0, "hello");
    assert!(pair.run_until_identical(Duration::from_secs(10)).is_some());
    let first_initial = first_sent(&pair, 0, 1);
    // Alice -> Bob is lost from now on, Bob -> Alice is not.
    pair.drop = Box::new(|from, _| from == 0);
    let mut sent = Vec::new();
    let rounds = (MAX_SKIP as usize) / 450 + 1;
    for round in 0..rounds {
        for i in 0..450 {
            sent.push(pair.send(0, &format!("lost {round}.{i}")));
        }
        pair.send(1, &format!("bob {round}"));
        pair.settle();
    }
    pair.drop = Box::new(|_, _| false);
    sent.push(pair.send(0, "through"));
    let healed = pair.run_until_identical(Duration::from_secs(600));
    assert!(healed.is_some(), "never healed");
    assert!(pair.engine(1).reset_requests_sent() >= 1);
    assert!(pair.engine(1).refusals().count("outside-window") >= 1);
    let users = pair.users();
    let history = pair.sides[1].history_ids(users[0]);
    for id in &sent {
        assert!(history.contains(id));
    }

    // The first session's initial envelope again: Bob held that session
    // and dropped it, so it is a replay, refused outright.
    let alice = pair.engine(0).device().certificate().device().peer_id();
    let (now, requests) = (pair.now, pair.engine(1).reset_requests_sent());
    pair.engine(1)
        .handle_envelope_from(now, alice, &first_initial)
        .unwrap();
    pair.settle();
    assert_eq!(pair.engine(1).reset_requests_sent(), requests);
    assert_eq!(
        pair.engine(1).refusals().last,
        Some((Some(users[0]), RejectReason::ReplayedSession))
    );
    pair.send(0, "still fine");
    assert!(pair.run_until_identical(Duration::from_secs(10)).is_some());
}

/// Bob's disk goes back to before his last two messages and Alice's
/// answer (both acknowledged): his chains fork from what Alice holds. His
/// next message reuses a counter Alice holds another message under; the
/// session is repaired, Alice returns what he lost, and what he wrote after
/// the restore goes out again under a new id.
#[test]
fn a_counter_fork_after_a_rollback_is_repaired() {
    let mut pair = Pair::new(6, configs());
    pair.send(0, "hello");
    pair.send(1, "hi");
    assert!(pair.run_until_identical(Duration::from_secs(10)).is_some());
    let snapshot = tempfile::tempdir().unwrap();
    pair.sides[1].snapshot(snapshot.path());
    let lost = [pair.send(1, "lost one"), pair.send(1, "lost two")];
    pair.settle();
    let answer = pair.send(0, "got both");
    assert!(pair.run_until_identical(Duration::from_secs(10)).is_some());

    pair.sides[1].restore(snapshot.path());
    pair.open(1);
    pair.events.clear();
    let forked = pair.send(1, "written after the restore");
    let healed = pair.run_until_identical(Duration::from_secs(120));
    assert!(healed.is_some(), "never healed");
    let users = pair.users();
    let history = pair.sides[1].history_ids(users[0]);
    for id in lost.iter().chain([&answer]) {
        assert!(history.contains(id), "{id} not recovered");
    }
    assert!(!history.contains(&forked), "the forked id is still shown");
    let renumbered: Vec<_> = pair
        .events
        .iter()
        .filter_map(|(side, e)| match e {
            Event::Renumbered { old, new, .. } if *side == 1 => Some((*old, *new)),
            _ => None,
        })
        .collect();
    assert_eq!(renumbered.len(), 1);
    assert_eq!(renumbered[0].0, forked);
    assert!(history.contains(&renumbered[0].1));
    let recovered = pair
        .events
        .iter()
        .filter(|(side, e)| *side == 1 && matches!(e, Event::Recovered { .. }))
        .count();
    assert_eq!(recovered, 2);
    println!(
        "healed in {:?}; {} reset requests",
        healed.unwrap(),
        pair.engine(1).reset_requests_sent() + pair.engine(0).reset_requests_sent()
    );
}

/// 1,000 envelopes with the live session's id and random contents, from
/// the network (sender unknown) and from a device that is not the
/// contact's: no reset request, no reset, and the conversation goes on.
#[test]
fn garbage_with_a_known_session_id_never_resets() {
    let mut pair = Pair::new(5, configs());
    pair.send(0, "hello");
    pair.send(1, "hi");
    assert!(pair.run_until_identical(Duration::from_secs(10)).is_some());
    let genuine = pair
        .wire
        .iter()
        .rev()
        .find(|(from, e)| *from == 0 && kind(e) == 2)
        .map(|(_, e)| e.clone())
        .unwrap();
    let stranger = shoal_identity::Keypair::from_secret_bytes(&[77; 32])
        .public()
        .peer_id();
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(9);
    for n in 0..1_000 {
        let mut bytes = genuine.clone();
        // Keep version, type, recipient and session id; randomise the rest.
        rng.fill_bytes(&mut bytes[2 + 32 + 16..]);
        let now = pair.now;
        if n % 2 == 0 {
            pair.engine(1).handle_envelope(now, &bytes).unwrap();
        } else {
            pair.engine(1)
                .handle_envelope_from(now, stranger, &bytes)
                .unwrap();
        }
        pair.settle();
    }
    assert_eq!(pair.engine(1).reset_requests_sent(), 0);
    assert_eq!(pair.engine(0).resets_honoured(), 0);
    pair.send(0, "after the garbage");
    pair.send(1, "still fine");
    assert!(pair.run_until_identical(Duration::from_secs(10)).is_some());
}
