//! Two engines on real `SqliteStore`s in temporary data directories, moved
//! by hand in virtual time: envelopes go from one to the other through
//! `handle_envelope_from` (as over an authenticated transport session)
//! unless a filter drops them; data directories can be copied and put back
//! (a disk that goes back in time).
#![allow(clippy::unwrap_used, dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use shoal_im::engine::{Engine, EngineConfig, Event, Transmit};
use shoal_im::{MessageId, PrekeyBundle, UserId};
use shoal_messenger::SqliteStore;

/// Wall clock of the first open, Unix seconds.
pub(crate) const START_UNIX: u64 = 1_700_000_000;

const FILES: [&str; 2] = ["", "-wal"];

/// One device: its data directory and, while open, its engine.
pub(crate) struct Side {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) engine: Option<Engine<SqliteStore>>,
    pub(crate) config: EngineConfig,
}

impl Side {
    pub(crate) fn new(config: EngineConfig) -> Side {
        Side {
            dir: tempfile::tempdir().unwrap(),
            engine: None,
            config,
        }
    }

    pub(crate) fn db(&self) -> PathBuf {
        self.dir.path().join("shoal.db")
    }

    pub(crate) fn engine(&mut self) -> &mut Engine<SqliteStore> {
        self.engine.as_mut().unwrap()
    }

    /// Opens the engine with fresh randomness, as every start does.
    pub(crate) fn open(&mut self, rng: &mut ChaCha20Rng, now: Instant, unix: u64) {
        self.engine = None;
        let store = SqliteStore::open(self.db()).unwrap();
        let seed: [u8; 32] = rng.random();
        self.engine = Some(Engine::open(store, self.config.clone(), seed, now, unix).unwrap());
    }

    /// Copies the database files (the engine is idle: no write is half done).
    pub(crate) fn snapshot(&self, to: &Path) {
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
    pub(crate) fn restore(&mut self, from: &Path) {
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

    /// The whole conversation with `contact` in history order (ids).
    pub(crate) fn history_ids(&mut self, contact: UserId) -> Vec<MessageId> {
        let mut all: Vec<MessageId> = self
            .engine()
            .history(&contact, None, 100_000)
            .unwrap()
            .into_iter()
            .map(|h| h.meta.id)
            .collect();
        all.reverse();
        all
    }
}

fn sibling(db: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}{suffix}", db.display()))
}

/// Decides whether an envelope from side `from` is lost.
pub(crate) type DropFilter = Box<dyn FnMut(usize, &Transmit) -> bool>;

/// Two sides, the virtual clock and the wire between them.
pub(crate) struct Pair {
    pub(crate) sides: [Side; 2],
    pub(crate) now: Instant,
    pub(crate) rng: ChaCha20Rng,
    /// Envelopes for which this returns true are lost.
    pub(crate) drop: DropFilter,
    /// Every envelope put on the wire, with the side that sent it.
    pub(crate) wire: Vec<(usize, Vec<u8>)>,
    /// Events the sides reported, with the side.
    pub(crate) events: Vec<(usize, Event)>,
}

impl Pair {
    /// Two fresh devices that added each other.
    pub(crate) fn new(seed: u64, configs: [EngineConfig; 2]) -> Pair {
        let [a, b] = configs;
        let mut pair = Pair {
            sides: [Side::new(a), Side::new(b)],
            now: Instant::now(),
            rng: ChaCha20Rng::seed_from_u64(seed),
            drop: Box::new(|_, _| false),
            wire: Vec::new(),
            events: Vec::new(),
        };
        for i in 0..2 {
            pair.open(i);
        }
        let users = pair.users();
        pair.sides[0].engine().add_contact(users[1], "bob").unwrap();
        pair.sides[1]
            .engine()
            .add_contact(users[0], "alice")
            .unwrap();
        pair
    }

    /// Opens side `i`; if the other side is open too, the two are
    /// connected (as the messenger reports once a session is up).
    pub(crate) fn open(&mut self, i: usize) {
        let unix = self.unix();
        self.sides[i].open(&mut self.rng, self.now, unix);
        if self.sides[1 - i].engine.is_some() {
            let now = self.now;
            let users = self.users();
            for (side, other) in [(i, 1 - i), (1 - i, i)] {
                self.engine(side)
                    .set_online(now, users[other], true)
                    .unwrap();
            }
        }
    }

    /// The wall clock, moving with the virtual one.
    pub(crate) fn unix(&self) -> u64 {
        START_UNIX
    }

    pub(crate) fn users(&mut self) -> [UserId; 2] {
        [
            self.sides[0].engine().user_id(),
            self.sides[1].engine().user_id(),
        ]
    }

    pub(crate) fn engine(&mut self, i: usize) -> &mut Engine<SqliteStore> {
        self.sides[i].engine()
    }

    /// `from` sends `text` to the other side.
    pub(crate) fn send(&mut self, from: usize, text: &str) -> MessageId {
        let to = self.users()[1 - from];
        let now = self.now;
        self.engine(from)
            .send(now, 1_700_000_000_000, to, text)
            .unwrap()
    }

    /// Answers one side's events: its contact's current bundle and a route
    /// are always available.
    fn answer(&mut self, i: usize) {
        let now = self.now;
        let bundle: PrekeyBundle = self.engine(1 - i).prekey_bundle();
        let other = self.engine(1 - i).user_id();
        while let Some(event) = self.engine(i).poll_event() {
            match &event {
                Event::NeedBundle { contact } if *contact == other => {
                    self.engine(i).set_bundle(now, other, &bundle).unwrap();
                }
                Event::NeedRoute { contact, .. } => {
                    let contact = *contact;
                    self.engine(i).set_online(now, contact, true).unwrap();
                }
                _ => {}
            }
            self.events.push((i, event));
        }
    }

    /// Delivers everything in flight until both sides are quiet; returns
    /// the number of envelopes delivered.
    pub(crate) fn settle(&mut self) -> usize {
        let mut moved = 0;
        let devices = [
            self.engine(0).device().certificate().device().peer_id(),
            self.engine(1).device().certificate().device().peer_id(),
        ];
        for _ in 0..100_000 {
            let mut any = false;
            for (i, from) in devices.into_iter().enumerate() {
                self.answer(i);
                while let Some(t) = self.engine(i).poll_transmit() {
                    any = true;
                    self.wire.push((i, t.envelope.clone()));
                    if (self.drop)(i, &t) {
                        continue;
                    }
                    let now = self.now;
                    self.engine(1 - i)
                        .handle_envelope_from(now, from, &t.envelope)
                        .unwrap();
                    moved += 1;
                }
            }
            if !any {
                return moved;
            }
        }
        panic!("the two engines never went quiet");
    }

    /// Runs both engines, timers included, until `until`.
    pub(crate) fn run_until(&mut self, until: Instant) {
        for _ in 0..100_000 {
            self.settle();
            let next = self
                .sides
                .iter()
                .filter_map(|s| s.engine.as_ref().and_then(Engine::poll_timeout))
                .min();
            match next {
                Some(t) if t <= until => {
                    self.now = t.max(self.now);
                    let now = self.now;
                    for side in self.sides.iter_mut() {
                        side.engine().handle_timeout(now).unwrap();
                    }
                }
                _ => {
                    self.now = until;
                    return;
                }
            }
        }
        panic!("timers never ran out");
    }

    /// Runs until both histories are identical and both outboxes empty,
    /// checking every simulated second, for at most `limit`; returns how
    /// long it took.
    pub(crate) fn run_until_identical(&mut self, limit: Duration) -> Option<Duration> {
        let start = self.now;
        for _ in 0..=limit.as_secs() {
            self.settle();
            if self.identical() {
                return Some(self.now - start);
            }
            let next = self.now + Duration::from_secs(1);
            self.run_until(next);
        }
        self.report();
        None
    }

    /// Prints both histories and the events seen (for a failing test).
    pub(crate) fn report(&mut self) {
        let users = self.users();
        for i in 0..2 {
            let items = self.engine(i).history(&users[1 - i], None, 1_000).unwrap();
            let outbox = self.engine(i).outbox_len(&users[1 - i]);
            eprintln!(
                "side {i}: outbox {outbox}, history (height, counter, outgoing, text), newest first:"
            );
            for item in items {
                let m = &item.meta;
                eprintln!(
                    "  {} {} {} {:?}",
                    m.height,
                    m.counter,
                    m.outgoing,
                    item.message.text()
                );
            }
        }
        let wire: Vec<String> = self
            .wire
            .iter()
            .rev()
            .take(30)
            .map(|(from, e)| format!("{from}:t{}:{}", e[1], e.len()))
            .collect();
        eprintln!(
            "last envelopes, newest first (side:type:length): {}",
            wire.join(" ")
        );
        for (side, event) in &self.events {
            let text = format!("{event:?}");
            eprintln!("event {side}: {}", &text[..text.len().min(160)]);
        }
    }

    /// Both histories hold the same messages in the same order, none
    /// twice, and nothing waits on either side: no outbox, no held
    /// message, no message waiting to be rewritten.
    pub(crate) fn identical(&mut self) -> bool {
        let users = self.users();
        let a = self.sides[0].history_ids(users[1]);
        let b = self.sides[1].history_ids(users[0]);
        let distinct: std::collections::HashSet<_> = a.iter().collect();
        let settled = |engine: &mut Engine<SqliteStore>| {
            engine
                .contacts()
                .iter()
                .all(|c| c.outbox == 0 && c.held == 0 && c.parked == 0)
        };
        a == b && distinct.len() == a.len() && settled(self.engine(0)) && settled(self.engine(1))
    }
}
