//! A disk that goes back in time: a conversation on real `SqliteStore`s,
//! every snapshot of either side restored while the other keeps its state,
//! neither, one or both users write again and both engines run on. Every seal of every run
//! is checked (no message key and nonce ever seal two plaintexts), and
//! every run must heal: identical histories, nothing shown twice, every
//! message the other side held before the restore back on the restored
//! side, within a stated virtual time.
#![allow(clippy::unwrap_used)]

mod pair;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use pair::Pair;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use shoal_im::audit::{self, ReuseChecker};
use shoal_im::engine::{EngineConfig, Event};
use shoal_im::{PrekeyBundle, Session, x3dh};

/// Who speaks at each step: runs of one side then the other, so the
/// conversation takes many DH ratchet steps.
const SCRIPT: [usize; 40] = [
    0, 0, 0, 1, 1, 0, 1, 1, 1, 0, 0, 1, 0, 1, 0, 0, 1, 1, 0, 1, //
    1, 0, 0, 0, 1, 0, 1, 1, 0, 1, 0, 0, 1, 0, 1, 1, 1, 0, 1, 0,
];

/// Longest a restored pair may take to heal, in virtual time (PROTOCOL.md
/// 11.9 states it).
const HEAL_LIMIT: Duration = Duration::from_secs(120);

#[test]
fn every_restored_snapshot_heals_without_reusing_a_key() {
    audit::start();
    let mut checker = ReuseChecker::default();
    let snapshots = tempfile::tempdir().unwrap();
    let mut pair = Pair::new(11, [EngineConfig::default(), EngineConfig::default()]);
    let users = pair.users();
    let mut snaps = [0usize; 2];
    let snapshot = |pair: &Pair, i: usize, snaps: &mut [usize; 2]| {
        pair.sides[i].snapshot(&snapshots.path().join(format!("{i}-{}", snaps[i])));
        snaps[i] += 1;
    };
    for i in 0..2 {
        snapshot(&pair, i, &mut snaps);
    }

    // The conversation: each step one message, delivered and acknowledged;
    // every few steps the reader marks what it got as read.
    let mut direction_changes = 0;
    for (step, &from) in SCRIPT.iter().enumerate() {
        if step > 0 && SCRIPT[step - 1] != from {
            direction_changes += 1;
        }
        pair.now += Duration::from_secs(5);
        pair.send(from, &format!("step {step}"));
        // A snapshot with the message stored and sealed but not delivered.
        snapshot(&pair, from, &mut snaps);
        pair.settle();
        if step % 4 == 3 {
            let reader = 1 - from;
            let unread: Vec<_> = pair
                .engine(reader)
                .history(&users[from], None, 1_000)
                .unwrap()
                .into_iter()
                .filter(|h| !h.meta.outgoing && !h.meta.flags.read)
                .map(|h| h.meta.id)
                .collect();
            pair.engine(reader).mark_read(users[from], &unread).unwrap();
            pair.settle();
        }
        for i in 0..2 {
            snapshot(&pair, i, &mut snaps);
        }
    }
    checker.check().unwrap();
    assert!(direction_changes >= 3 * 2, "too few DH ratchet steps");
    assert!(pair.identical());
    let before = pair.sides[0].history_ids(users[1]);
    let originals = checker.seals();

    // Every snapshot of either side, restored alone; then neither, one or
    // both users write again, and both engines run on until both histories
    // agree.
    let mut heal_times = Vec::new();
    let (mut resets, mut recovered, mut renumbered) = (0, 0, 0);
    for restored in 0..2 {
        for at in 0..snaps[restored] {
            let other = 1 - restored;
            pair.sides[restored].restore(&snapshots.path().join(format!("{restored}-{at}")));
            let last = snaps[other] - 1;
            pair.sides[other].restore(&snapshots.path().join(format!("{other}-{last}")));
            pair.events.clear();
            for i in 0..2 {
                pair.open(i);
            }
            let start = pair.now;
            // Who writes after the restore: nobody, the restored side, the
            // other side, or both, in turn.
            let mut written = Vec::new();
            for i in 0..2 {
                let side_bit = if i == restored { 1 } else { 2 };
                if (at % 4) & side_bit != 0 {
                    written.push(pair.send(i, "after the restore"));
                }
            }
            pair.run_until_identical(HEAL_LIMIT).unwrap_or_else(|| {
                panic!("side {restored} restored at snapshot {at} never healed")
            });
            heal_times.push(pair.now - start);
            checker
                .check()
                .unwrap_or_else(|e| panic!("side {restored} restored at snapshot {at}: {e}"));
            // Everything either side held before is on both sides again.
            let now_held: HashSet<_> = pair.sides[restored]
                .history_ids(users[other])
                .into_iter()
                .collect();
            for id in &before {
                assert!(now_held.contains(id), "side {restored} at {at}: {id} lost");
            }
            // And what was written after it, under its id or its new one.
            for id in &written {
                let renamed = pair.events.iter().find_map(|(_, e)| match e {
                    Event::Renumbered { old, new, .. } if old == id => Some(*new),
                    _ => None,
                });
                let id = renamed.unwrap_or(*id);
                assert!(now_held.contains(&id), "side {restored} at {at}: {id} lost");
            }
            // Nothing shown twice.
            let mut shown: HashMap<(usize, shoal_im::MessageId), usize> = HashMap::new();
            for (side, event) in &pair.events {
                match event {
                    Event::Received { id, .. } | Event::Recovered { id, .. } => {
                        *shown.entry((*side, *id)).or_default() += 1;
                    }
                    Event::SessionReset { .. } => resets += 1,
                    _ => {}
                }
                if matches!(event, Event::Recovered { .. }) {
                    recovered += 1;
                }
                if matches!(event, Event::Renumbered { .. }) {
                    renumbered += 1;
                }
            }
            if let Some(((side, id), n)) = shown.iter().find(|(_, n)| **n > 1) {
                panic!("side {side} showed {id} {n} times (side {restored} restored at {at})");
            }
            for side in &mut pair.sides {
                side.engine = None;
            }
        }
    }
    assert!(
        checker.seals() > originals,
        "the restored runs sealed nothing"
    );
    heal_times.sort();
    println!(
        "{} restores healed: heal time median {:?}, max {:?}; {} sessions reset, {} own \
         messages recovered, {} renumbered; {} seals checked, {} distinct message keys",
        heal_times.len(),
        heal_times[heal_times.len() / 2],
        heal_times[heal_times.len() - 1],
        resets,
        recovered,
        renumbered,
        checker.seals(),
        checker.keys()
    );
    assert!(
        recovered > 0 && renumbered > 0,
        "no restore lost own messages"
    );
}

/// The checker is not vacuous: two seals from one cloned ratchet state and
/// one cloned random generator reuse a (key, nonce) pair, and it says so.
#[test]
fn the_checker_catches_a_constructed_reuse() {
    audit::start();
    let mut checker = ReuseChecker::default();
    let (alice, bob_bundle, bob_user) = two_devices();
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let (_header, mut session) =
        x3dh::initiate_with_rng(&mut rng, &alice, &bob_user, &bob_bundle).unwrap();
    session.encrypt(&mut rng, b"first").unwrap();
    checker.check().unwrap();

    let mut cloned: Session = session.clone();
    let mut cloned_rng = rng.clone();
    session.encrypt(&mut rng, b"attack at dawn").unwrap();
    checker.check().unwrap();
    cloned.encrypt(&mut cloned_rng, b"retreat at six").unwrap();
    assert!(
        checker.check().is_err(),
        "a reused key and nonce went unseen"
    );

    // A cloned state with its own randomness (what a restored engine has)
    // seals under the same key again, but never under the same nonce.
    audit::start();
    let mut checker = ReuseChecker::default();
    let mut fresh = ChaCha20Rng::seed_from_u64(4);
    let mut cloned = session.clone();
    session.encrypt(&mut rng, b"one").unwrap();
    cloned.encrypt(&mut fresh, b"two").unwrap();
    checker.check().unwrap();
    assert_eq!((checker.seals(), checker.keys()), (2, 1));
}

fn two_devices() -> (shoal_im::Device, PrekeyBundle, shoal_identity::PublicKey) {
    use shoal_identity::Keypair;
    let alice_user = Keypair::from_secret_bytes(&[1; 32]);
    let bob_user = Keypair::from_secret_bytes(&[2; 32]);
    let alice = shoal_im::Device::new(
        &alice_user,
        Keypair::from_secret_bytes(&[3; 32]),
        [4; 32],
        1_700_000_000,
    );
    let bob = shoal_im::Device::new(
        &bob_user,
        Keypair::from_secret_bytes(&[5; 32]),
        [6; 32],
        1_700_000_000,
    );
    let (prekey, _) = x3dh::signed_prekey(&bob, 1, [7; 32]);
    let bundle = PrekeyBundle {
        certificate: bob.certificate().clone(),
        prekey,
    };
    (alice, bundle, bob_user.public())
}
