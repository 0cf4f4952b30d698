//! What the engine erases leaves the files: `messenger.db`, its `-wal` and
//! `-shm`, searched byte by byte for the secret, which is found there
//! before it is erased (the control) and gone within the store's WAL
//! truncation interval after: a rotated prekey, a skipped message key once
//! used, a skipped message key once expired, a removed contact's history.
#![allow(clippy::unwrap_used)]

mod pair;

use std::path::Path;
use std::time::{Duration, Instant};

use pair::Pair;
use shoal_im::UserId;
use shoal_im::engine::{EngineConfig, PREKEY_ROTATION_SECS, PREKEYS_KEPT};
use shoal_messenger::sqlite::WAL_TRUNCATE_INTERVAL;

/// The parts of the engine's stored blobs this test reads (protobuf; the
/// engine's own definitions are private to it).
#[derive(Clone, PartialEq, prost::Message)]
struct IdentityBlob {
    #[prost(message, repeated, tag = "5")]
    prekeys: Vec<PrekeyBlob>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PrekeyBlob {
    #[prost(uint32, tag = "1")]
    id: u32,
    #[prost(bytes = "vec", tag = "2")]
    secret: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ContactBlob {
    #[prost(message, repeated, tag = "3")]
    sessions: Vec<SessionBlob>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SessionBlob {
    #[prost(bytes = "vec", tag = "2")]
    state: Vec<u8>,
}

/// Reads one blob with a connection of its own (SQLite lets it read
/// beside the engine's).
fn blob(db: &Path, sql: &str, key: Option<[u8; 32]>) -> Vec<u8> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    match key {
        Some(key) => conn.query_row(sql, [key], |row| row.get(0)),
        None => conn.query_row(sql, [], |row| row.get(0)),
    }
    .unwrap()
}

fn prekey_secrets(db: &Path) -> Vec<Vec<u8>> {
    let identity: IdentityBlob =
        prost::Message::decode(&blob(db, "SELECT blob FROM identity", None)[..]).unwrap();
    identity.prekeys.into_iter().map(|p| p.secret).collect()
}

/// The skipped message keys held in the sessions with `contact`, read from
/// the stored session state (layout: docs/PROTOCOL.md 10.5 and
/// `Session::to_bytes`: a 242-byte fixed part ending with the count, then
/// `ratchet key 32 | number 4 | key 32` per key).
fn skipped_keys(db: &Path, contact: UserId) -> Vec<Vec<u8>> {
    let stored = blob(
        db,
        "SELECT blob FROM contacts WHERE key = ?1",
        Some(contact.to_bytes()),
    );
    let contact: ContactBlob = prost::Message::decode(&stored[..]).unwrap();
    let mut keys = Vec::new();
    for session in contact.sessions {
        let state = session.state;
        let count = u32::from_be_bytes(state[238..242].try_into().unwrap()) as usize;
        for k in 0..count {
            let at = 242 + k * 68 + 36;
            keys.push(state[at..at + 32].to_vec());
        }
    }
    keys
}

/// Whether any of the database's files holds `secret`.
fn in_files(db: &Path, secret: &[u8]) -> bool {
    ["", "-wal", "-shm"].iter().any(|suffix| {
        let path = format!("{}{suffix}", db.display());
        std::fs::read(path).is_ok_and(|bytes| bytes.windows(secret.len()).any(|w| w == secret))
    })
}

/// Waits until no file holds `secret`, at most three truncation intervals
/// (the checkpoint thread runs in real time); returns how long it took.
fn gone_within(db: &Path, secret: &[u8], what: &str) -> Duration {
    let start = Instant::now();
    let limit = 3 * WAL_TRUNCATE_INTERVAL;
    while in_files(db, secret) {
        assert!(
            start.elapsed() < limit,
            "{what} still in the files after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    start.elapsed()
}

#[test]
fn erased_secrets_leave_the_files() {
    let bob_config = EngineConfig {
        skipped_key_lifetime: Duration::from_secs(3600),
        ..EngineConfig::default()
    };
    let mut pair = Pair::new(21, [EngineConfig::default(), bob_config]);
    let users = pair.users();
    let db = pair.sides[1].db();

    // A rotated prekey, once erased.
    let first = prekey_secrets(&db).remove(0);
    assert!(
        in_files(&db, &first),
        "control: the prekey secret is in the files"
    );
    for k in 1..=(PREKEYS_KEPT as u64 + 1) {
        let unix = pair.unix() + k * PREKEY_ROTATION_SECS;
        assert!(pair.engine(1).rotate_prekey_if_due(unix).unwrap());
    }
    assert!(!prekey_secrets(&db).contains(&first));
    let took = gone_within(&db, &first, "the erased prekey");
    println!("erased prekey gone from the files after {took:?}");

    // A skipped message key, once used: alice's first envelope is late.
    let late = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let held = late.clone();
    pair.drop = Box::new(move |from, t| {
        // Every copy of it: a retry sends the same envelope again.
        if from == 0 && held.borrow().is_empty() {
            held.borrow_mut().push(t.envelope.clone());
        }
        from == 0 && held.borrow().first() == Some(&t.envelope)
    });
    pair.send(0, "one");
    pair.send(0, "two");
    pair.settle();
    pair.drop = Box::new(|_, _| false);
    let skipped = skipped_keys(&db, users[0]);
    assert_eq!(skipped.len(), 1, "the late envelope's key is held");
    assert!(
        in_files(&db, &skipped[0]),
        "control: the skipped key is in the files"
    );
    let alice = pair.engine(0).device().certificate().device().peer_id();
    let now = pair.now;
    let envelope = late.borrow()[0].clone();
    pair.engine(1)
        .handle_envelope_from(now, alice, &envelope)
        .unwrap();
    pair.settle();
    assert!(skipped_keys(&db, users[0]).is_empty());
    let took = gone_within(&db, &skipped[0], "the used skipped key");
    println!("used skipped key gone from the files after {took:?}");

    // A skipped message key, once expired (bob keeps them an hour here).
    let lost = std::rc::Rc::new(std::cell::RefCell::new(false));
    let seen = lost.clone();
    pair.drop = Box::new(move |from, _| {
        let first = from == 0 && !*seen.borrow();
        *seen.borrow_mut() = true;
        first
    });
    pair.send(0, "three");
    pair.send(0, "four");
    pair.settle();
    pair.drop = Box::new(|_, _| false);
    let skipped = skipped_keys(&db, users[0]);
    assert_eq!(skipped.len(), 1);
    assert!(
        in_files(&db, &skipped[0]),
        "control: the skipped key is in the files"
    );
    pair.now += Duration::from_secs(3601);
    let now = pair.now;
    pair.engine(1).handle_timeout(now).unwrap();
    assert!(
        skipped_keys(&db, users[0]).is_empty(),
        "the key did not expire"
    );
    let took = gone_within(&db, &skipped[0], "the expired skipped key");
    println!("expired skipped key gone from the files after {took:?}");
    // Nothing is lost: alice's retry brings "three" under a fresh key.
    assert!(
        pair.run_until_identical(Duration::from_secs(120)).is_some(),
        "the message whose key expired never arrived"
    );

    // A removed contact's whole conversation.
    let marker = "a sentence that must not outlive its conversation";
    pair.send(0, marker);
    pair.settle();
    assert!(
        in_files(&db, marker.as_bytes()),
        "control: the text is in the files"
    );
    pair.engine(1).remove_contact(users[0]).unwrap();
    let left = pair.engine(1).contacts();
    assert_eq!(left.len(), 1, "a blocked record stays");
    assert!(left[0].blocked && !left[0].has_session && left[0].name.is_empty());
    let took = gone_within(&db, marker.as_bytes(), "the removed conversation");
    println!("removed conversation gone from the files after {took:?}");
}
