//! A disk that goes back in time: a conversation on real `SqliteStore`s,
//! every snapshot of either side restored while the other keeps its state,
//! both engines run on for ten simulated minutes, and every seal of every
//! run checked: no (message key, nonce) pair ever seals two plaintexts.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use shoal_im::audit::{self, ReuseChecker};
use shoal_im::engine::{Engine, EngineConfig, Event};
use shoal_im::{PrekeyBundle, Session, UserId, x3dh};
use shoal_messenger::SqliteStore;

const FILES: [&str; 2] = ["", "-wal"];

/// One device: its data directory and, while open, its engine.
struct Side {
    dir: tempfile::TempDir,
    engine: Option<Engine<SqliteStore>>,
}

impl Side {
    fn db(&self) -> PathBuf {
        self.dir.path().join("shoal.db")
    }

    fn engine(&mut self) -> &mut Engine<SqliteStore> {
        self.engine.as_mut().unwrap()
    }

    /// Opens the engine with fresh randomness, as every start does.
    fn open(&mut self, rng: &mut ChaCha20Rng, now: Instant) {
        self.engine = None;
        let store = SqliteStore::open(self.db()).unwrap();
        let seed: [u8; 32] = rng.random();
        self.engine =
            Some(Engine::open(store, EngineConfig::default(), seed, now, 1_700_000_000).unwrap());
    }

    /// Copies the database files (the engine is idle: no write is half done).
    fn snapshot(&self, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for suffix in FILES {
            let from = sibling(&self.db(), suffix);
            let dest = to.join(format!("shoal.db{suffix}"));
            let _ = std::fs::remove_file(&dest);
            if from.exists() {
                std::fs::copy(&from, &dest).unwrap();
            }
        }
    }

    /// Closes the engine and puts the snapshot in `from` in place.
    fn restore(&mut self, from: &Path) {
        self.engine = None;
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(sibling(&self.db(), suffix));
        }
        for suffix in FILES {
            let src = from.join(format!("shoal.db{suffix}"));
            if src.exists() {
                std::fs::copy(&src, sibling(&self.db(), suffix)).unwrap();
            }
        }
    }
}

fn sibling(db: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}{suffix}", db.display()))
}

/// Answers one side's events (bundles and routes always available).
fn answer(sides: &mut [Side; 2], i: usize, now: Instant) {
    let bundle: PrekeyBundle = sides[1 - i].engine().prekey_bundle();
    let other = sides[1 - i].engine().user_id();
    while let Some(event) = sides[i].engine().poll_event() {
        match event {
            Event::NeedBundle { contact } if contact == other => {
                sides[i].engine().set_bundle(now, other, &bundle).unwrap();
            }
            Event::NeedRoute { contact, .. } => {
                sides[i].engine().set_online(now, contact, true).unwrap();
            }
            _ => {}
        }
    }
}

/// Delivers everything in flight until both sides are quiet; returns the
/// number of envelopes moved.
fn settle(sides: &mut [Side; 2], now: Instant) -> usize {
    let mut moved = 0;
    for _ in 0..10_000 {
        let mut any = false;
        for i in 0..2 {
            answer(sides, i, now);
            while let Some(t) = sides[i].engine().poll_transmit() {
                sides[1 - i]
                    .engine()
                    .handle_envelope(now, &t.envelope)
                    .unwrap();
                moved += 1;
                any = true;
            }
        }
        if !any {
            return moved;
        }
    }
    panic!("the two engines never went quiet");
}

/// Runs both engines, timers included, until `until`.
fn run_until(sides: &mut [Side; 2], now: &mut Instant, until: Instant) {
    for _ in 0..100_000 {
        settle(sides, *now);
        let next = sides
            .iter()
            .filter_map(|s| s.engine.as_ref().and_then(Engine::poll_timeout))
            .min();
        match next {
            Some(t) if t <= until => {
                *now = t.max(*now);
                for side in sides.iter_mut() {
                    side.engine().handle_timeout(*now).unwrap();
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

/// Who speaks at each step: runs of one side then the other, so the
/// conversation takes many DH ratchet steps.
const SCRIPT: [usize; 40] = [
    0, 0, 0, 1, 1, 0, 1, 1, 1, 0, 0, 1, 0, 1, 0, 0, 1, 1, 0, 1, //
    1, 0, 0, 0, 1, 0, 1, 1, 0, 1, 0, 0, 1, 0, 1, 1, 1, 0, 1, 0,
];

#[test]
fn no_key_is_reused_after_any_snapshot_is_restored() {
    audit::start();
    let mut checker = ReuseChecker::default();
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    let snapshots = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let mut now = start;
    let mut sides = [
        Side {
            dir: tempfile::tempdir().unwrap(),
            engine: None,
        },
        Side {
            dir: tempfile::tempdir().unwrap(),
            engine: None,
        },
    ];
    for side in &mut sides {
        side.open(&mut rng, now);
    }
    let users: [UserId; 2] = [sides[0].engine().user_id(), sides[1].engine().user_id()];
    sides[0].engine().add_contact(users[1], "bob").unwrap();
    sides[1].engine().add_contact(users[0], "alice").unwrap();
    let mut snaps = [0usize; 2];
    for (i, side) in sides.iter().enumerate() {
        side.snapshot(&snapshots.path().join(format!("{i}-0")));
        snaps[i] += 1;
    }

    // The conversation: each step one message, delivered and acknowledged;
    // every few steps the reader marks what it got as read.
    let mut direction_changes = 0;
    for (step, &from) in SCRIPT.iter().enumerate() {
        if step > 0 && SCRIPT[step - 1] != from {
            direction_changes += 1;
        }
        now += Duration::from_secs(5);
        let to = users[1 - from];
        sides[from]
            .engine()
            .send(now, 1_700_000_000_000, to, &format!("step {step}"))
            .unwrap();
        // A snapshot with the message stored and sealed but not delivered.
        sides[from].snapshot(&snapshots.path().join(format!("{from}-{}", snaps[from])));
        snaps[from] += 1;
        settle(&mut sides, now);
        if step % 4 == 3 {
            let reader = 1 - from;
            let unread: Vec<_> = sides[reader]
                .engine()
                .history(&users[from], None, 1_000)
                .unwrap()
                .into_iter()
                .filter(|h| !h.meta.outgoing && !h.meta.flags.read)
                .map(|h| h.meta.id)
                .collect();
            sides[reader]
                .engine()
                .mark_read(users[from], &unread)
                .unwrap();
            settle(&mut sides, now);
        }
        for (i, side) in sides.iter().enumerate() {
            side.snapshot(&snapshots.path().join(format!("{i}-{}", snaps[i])));
            snaps[i] += 1;
        }
    }
    checker.check().unwrap();
    assert!(direction_changes >= 3 * 2, "too few DH ratchet steps");
    let originals = checker.seals();

    // Every snapshot of either side, restored alone; then both users write
    // again, and both engines run on.
    for restored in 0..2 {
        for at in 0..snaps[restored] {
            let mut sides_now = sides.map(|s| Side {
                dir: s.dir,
                engine: None,
            });
            sides_now[restored].restore(&snapshots.path().join(format!("{restored}-{at}")));
            let other = 1 - restored;
            let last = snaps[other] - 1;
            sides_now[other].restore(&snapshots.path().join(format!("{other}-{last}")));
            let mut t = now;
            for side in &mut sides_now {
                side.open(&mut rng, t);
            }
            for (i, user) in users.iter().enumerate() {
                sides_now[1 - i]
                    .engine()
                    .send(t, 1_700_000_000_000, *user, "after the restore")
                    .unwrap();
            }
            let until = t + Duration::from_secs(600);
            run_until(&mut sides_now, &mut t, until);
            checker
                .check()
                .unwrap_or_else(|e| panic!("side {restored} restored at step {at}: {e}"));
            for side in &mut sides_now {
                side.engine = None;
            }
            sides = sides_now;
        }
    }
    assert!(
        checker.seals() > originals,
        "the restored runs sealed nothing"
    );
    println!(
        "{} seals checked, {} distinct message keys",
        checker.seals(),
        checker.keys()
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
