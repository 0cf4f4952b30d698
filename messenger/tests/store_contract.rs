//! The [`Store`] contract, checked against [`MemoryStore`] and
//! [`SqliteStore`], and the SQLite store's own promises: persistence,
//! WAL mode, file permissions, schema versions, atomic commits.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;
use shoal_im::{
    Changes, MemoryStore, MessageFlags, MessageId, MessageMeta, ReceivedEnvelope, SealedRecord,
    Store, StoredMessage,
};
use shoal_messenger::SqliteStore;
use shoal_messenger::sqlite::SCHEMA_VERSION;

const ALICE: [u8; 32] = [0xa1; 32];
const BOB: [u8; 32] = [0xb0; 32];
const CAROL: [u8; 32] = [0x0c; 32];

fn flags(held: bool, delivered: bool, read: bool) -> MessageFlags {
    MessageFlags {
        held,
        delivered,
        read,
    }
}

/// A message with a pseudo-random id (the hash of its body), so ids of
/// equal height compare in every byte position.
fn msg(contact: [u8; 32], n: u64, height: u64, held: bool) -> StoredMessage {
    let encoded = format!("message {n} to {:02x}", contact[0]).into_bytes();
    StoredMessage {
        meta: MessageMeta {
            id: MessageId::of(&encoded),
            contact,
            outgoing: n.is_multiple_of(2),
            counter: n,
            height,
            timestamp_ms: 1_700_000_000_000 + n,
            flags: flags(held, n.is_multiple_of(3), n.is_multiple_of(5)),
        },
        encoded,
    }
}

fn commit_messages<S: Store>(store: &mut S, messages: &[StoredMessage]) {
    store
        .commit(&Changes {
            messages: messages.to_vec(),
            ..Changes::default()
        })
        .unwrap();
}

fn sorted_index<S: Store>(store: &mut S) -> Vec<MessageMeta> {
    let mut index = store.load_index().unwrap();
    index.sort_by_key(|m| m.id);
    index
}

/// Reads the whole shown history of `contact` in pages of `page`.
fn all_pages<S: Store>(store: &mut S, contact: &[u8; 32], page: usize) -> Vec<StoredMessage> {
    let mut out: Vec<StoredMessage> = Vec::new();
    let mut cursor = None;
    loop {
        let batch = store.history(contact, cursor, page).unwrap();
        assert!(batch.len() <= page);
        let Some(last) = batch.last() else { break };
        cursor = Some((last.meta.height, last.meta.id));
        let short = batch.len() < page;
        out.extend(batch);
        if short {
            break;
        }
    }
    out
}

/// What `history` must return: shown messages of `contact`, newest first.
fn expected_history(all: &[StoredMessage], contact: &[u8; 32]) -> Vec<StoredMessage> {
    let mut shown: Vec<StoredMessage> = all
        .iter()
        .filter(|m| &m.meta.contact == contact && !m.meta.flags.held)
        .cloned()
        .collect();
    shown.sort_by_key(|m| std::cmp::Reverse((m.meta.height, m.meta.id)));
    shown
}

/// The contract every [`Store`] keeps.
fn contract<S: Store>(mut store: S) {
    // Empty.
    assert_eq!(store.load_identity().unwrap(), None);
    assert!(store.load_contacts().unwrap().is_empty());
    assert!(store.load_index().unwrap().is_empty());
    assert!(store.history(&ALICE, None, 10).unwrap().is_empty());
    assert_eq!(store.message(&MessageId([7; 32])).unwrap(), None);
    store.commit(&Changes::default()).unwrap();

    // Identity round trip and replacement; a commit without one keeps it.
    store
        .commit(&Changes {
            identity: Some(b"identity one".to_vec()),
            ..Changes::default()
        })
        .unwrap();
    assert_eq!(
        store.load_identity().unwrap(),
        Some(b"identity one".to_vec())
    );
    store
        .commit(&Changes {
            identity: Some(b"identity two".to_vec()),
            ..Changes::default()
        })
        .unwrap();
    assert_eq!(
        store.load_identity().unwrap(),
        Some(b"identity two".to_vec())
    );
    store
        .commit(&Changes {
            contacts: vec![(CAROL, b"carol".to_vec())],
            ..Changes::default()
        })
        .unwrap();
    assert_eq!(
        store.load_identity().unwrap(),
        Some(b"identity two".to_vec())
    );

    // Contacts: insert, then upsert one while the others stay.
    store
        .commit(&Changes {
            contacts: vec![(ALICE, b"alice v1".to_vec()), (BOB, b"bob v1".to_vec())],
            ..Changes::default()
        })
        .unwrap();
    store
        .commit(&Changes {
            contacts: vec![(ALICE, b"alice v2".to_vec())],
            ..Changes::default()
        })
        .unwrap();
    let mut contacts = store.load_contacts().unwrap();
    contacts.sort();
    assert_eq!(
        contacts,
        vec![
            (CAROL, b"carol".to_vec()),
            (ALICE, b"alice v2".to_vec()),
            (BOB, b"bob v1".to_vec()),
        ]
    );
    // Upserting the same key twice in one commit: the last one wins.
    store
        .commit(&Changes {
            contacts: vec![(BOB, b"bob v2".to_vec()), (BOB, b"bob v3".to_vec())],
            ..Changes::default()
        })
        .unwrap();
    let contacts = store.load_contacts().unwrap();
    assert!(contacts.contains(&(BOB, b"bob v3".to_vec())));
    assert_eq!(contacts.len(), 3);

    // Messages: insert, then insert-or-ignore.
    let first = msg(ALICE, 1000, 0, false);
    commit_messages(&mut store, std::slice::from_ref(&first));
    assert_eq!(store.message(&first.meta.id).unwrap(), Some(first.clone()));
    let mut clash = msg(BOB, 1001, 9, true);
    clash.meta.id = first.meta.id;
    commit_messages(&mut store, &[clash.clone(), clash]);
    assert_eq!(store.message(&first.meta.id).unwrap(), Some(first.clone()));
    assert_eq!(store.load_index().unwrap(), vec![first.meta.clone()]);

    // Extreme values round-trip.
    let mut extreme = msg(CAROL, 1002, i64::MAX as u64, false);
    extreme.meta.counter = u64::MAX;
    extreme.meta.timestamp_ms = u64::MAX - 1;
    extreme.meta.id = MessageId([0xff; 32]);
    extreme.encoded = Vec::new();
    let mut zero = msg(CAROL, 1003, 0, false);
    zero.meta.id = MessageId([0; 32]);
    zero.meta.counter = 0;
    zero.meta.timestamp_ms = 0;
    zero.meta.outgoing = true;
    zero.meta.flags = flags(false, true, true);
    commit_messages(&mut store, &[extreme.clone(), zero.clone()]);
    assert_eq!(
        store.message(&extreme.meta.id).unwrap(),
        Some(extreme.clone())
    );
    assert_eq!(store.message(&zero.meta.id).unwrap(), Some(zero.clone()));
    assert_eq!(
        store.history(&CAROL, None, 10).unwrap(),
        vec![extreme.clone(), zero.clone()]
    );
    assert_eq!(
        store
            .history(&CAROL, Some((u64::MAX, MessageId([0; 32]))), 10)
            .unwrap(),
        vec![extreme.clone(), zero.clone()]
    );
    assert_eq!(
        store
            .history(&CAROL, Some((i64::MAX as u64, MessageId([0xff; 32]))), 10)
            .unwrap(),
        vec![zero.clone()]
    );

    // Updates set height and flags; an unknown id is ignored.
    let second = msg(ALICE, 1004, 1, true);
    commit_messages(&mut store, std::slice::from_ref(&second));
    assert!(store.history(&ALICE, None, 10).unwrap() == vec![first.clone()]);
    store
        .commit(&Changes {
            updates: vec![
                (second.meta.id, 5, flags(false, true, false)),
                (MessageId([0x42; 32]), 3, flags(false, true, true)),
            ],
            ..Changes::default()
        })
        .unwrap();
    let mut updated = second.clone();
    updated.meta.height = 5;
    updated.meta.flags = flags(false, true, false);
    assert_eq!(
        store.message(&second.meta.id).unwrap(),
        Some(updated.clone())
    );
    assert_eq!(store.message(&MessageId([0x42; 32])).unwrap(), None);
    assert_eq!(
        store.history(&ALICE, None, 10).unwrap(),
        vec![updated.clone(), first.clone()]
    );
    // A message inserted and updated in the same commit gets the update.
    let third = msg(ALICE, 1005, 0, true);
    store
        .commit(&Changes {
            messages: vec![third.clone()],
            updates: vec![(third.meta.id, 6, flags(false, true, true))],
            ..Changes::default()
        })
        .unwrap();
    let mut third_updated = third.clone();
    third_updated.meta.height = 6;
    third_updated.meta.flags = flags(false, true, true);
    assert_eq!(
        store.message(&third.meta.id).unwrap(),
        Some(third_updated.clone())
    );

    // Removal: gone from the message table, the index and the history,
    // applied before the commit's inserts; an unknown id is ignored.
    let doomed = msg(ALICE, 1006, 7, false);
    commit_messages(&mut store, std::slice::from_ref(&doomed));
    let successor = msg(ALICE, 1007, 8, false);
    let index_before = store.load_index().unwrap().len();
    store
        .commit(&Changes {
            removed: vec![doomed.meta.id, MessageId([0x43; 32])],
            messages: vec![successor.clone()],
            ..Changes::default()
        })
        .unwrap();
    assert_eq!(store.message(&doomed.meta.id).unwrap(), None);
    assert_eq!(
        store.message(&successor.meta.id).unwrap(),
        Some(successor.clone())
    );
    assert_eq!(store.load_index().unwrap().len(), index_before);
    assert!(
        !store
            .history(&ALICE, None, 100)
            .unwrap()
            .iter()
            .any(|m| m.meta.id == doomed.meta.id)
    );
    store
        .commit(&Changes {
            removed: vec![successor.meta.id],
            ..Changes::default()
        })
        .unwrap();
    assert_eq!(store.message(&successor.meta.id).unwrap(), None);

    // Removing a contact takes its blob and every message of its
    // conversation, nothing of anyone else's; a contact removed and written
    // again in one commit comes back empty.
    let dave = [0xd4; 32];
    let daves = [msg(dave, 2000, 0, false), msg(dave, 2001, 1, true)];
    store
        .commit(&Changes {
            contacts: vec![(dave, b"dave".to_vec())],
            messages: daves.to_vec(),
            ..Changes::default()
        })
        .unwrap();
    let index_before = store.load_index().unwrap().len();
    store
        .commit(&Changes {
            removed_contacts: vec![dave],
            ..Changes::default()
        })
        .unwrap();
    assert!(
        !store
            .load_contacts()
            .unwrap()
            .iter()
            .any(|(k, _)| *k == dave)
    );
    for m in &daves {
        assert_eq!(store.message(&m.meta.id).unwrap(), None);
    }
    assert!(store.history(&dave, None, 10).unwrap().is_empty());
    assert_eq!(
        store.load_index().unwrap().len(),
        index_before - daves.len()
    );
    store
        .commit(&Changes {
            removed_contacts: vec![dave],
            contacts: vec![(dave, b"dave again".to_vec())],
            ..Changes::default()
        })
        .unwrap();
    assert!(
        store
            .load_contacts()
            .unwrap()
            .contains(&(dave, b"dave again".to_vec()))
    );
    store
        .commit(&Changes {
            removed_contacts: vec![dave],
            ..Changes::default()
        })
        .unwrap();

    // History paging: many messages, ties on height, held ones and other
    // contacts mixed in.
    let mut all = vec![first, updated, third_updated, extreme, zero];
    let mut batch = Vec::new();
    for n in 0..60u64 {
        let contact = if n % 4 == 3 { BOB } else { ALICE };
        let m = msg(contact, n, n / 5 + 2, n % 7 == 0);
        batch.push(m.clone());
        all.push(m);
    }
    store
        .commit(&Changes {
            messages: batch,
            ..Changes::default()
        })
        .unwrap();
    for contact in [ALICE, BOB, CAROL] {
        let expected = expected_history(&all, &contact);
        assert!(!expected.is_empty());
        assert_eq!(store.history(&contact, None, 1000).unwrap(), expected);
        for page in [1, 2, 3, 7, 50] {
            assert_eq!(
                all_pages(&mut store, &contact, page),
                expected,
                "page {page}"
            );
        }
        assert!(store.history(&contact, None, 0).unwrap().is_empty());
    }
    // A cursor need not be a stored message: every (height, id) position
    // splits the history.
    let expected = expected_history(&all, &ALICE);
    for height in 0..16u64 {
        for id in [[0u8; 32], [0x80; 32], [0xff; 32]] {
            let cursor = (height, MessageId(id));
            let want: Vec<StoredMessage> = expected
                .iter()
                .filter(|m| (m.meta.height, m.meta.id) < cursor)
                .take(4)
                .cloned()
                .collect();
            assert_eq!(store.history(&ALICE, Some(cursor), 4).unwrap(), want);
        }
    }
    // Releasing a held message puts it into the history.
    let held = all
        .iter()
        .find(|m| m.meta.flags.held && m.meta.contact == ALICE)
        .unwrap()
        .clone();
    assert!(!store.history(&ALICE, None, 1000).unwrap().contains(&held));
    store
        .commit(&Changes {
            updates: vec![(held.meta.id, held.meta.height, flags(false, true, false))],
            ..Changes::default()
        })
        .unwrap();
    for m in &mut all {
        if m.meta.id == held.meta.id {
            m.meta.flags = flags(false, true, false);
        }
    }
    assert_eq!(
        store.history(&ALICE, None, 1000).unwrap(),
        expected_history(&all, &ALICE)
    );

    // The index has every message, held or not.
    let mut metas: Vec<MessageMeta> = all.iter().map(|m| m.meta.clone()).collect();
    metas.sort_by_key(|m| m.id);
    assert_eq!(sorted_index(&mut store), metas);
    for m in &all {
        assert_eq!(store.message(&m.meta.id).unwrap().as_ref(), Some(m));
    }
    sealed_contract(&mut store, &all);
}

fn sealed(id: MessageId, contact: [u8; 32], stored: bool) -> SealedRecord {
    SealedRecord {
        id,
        contact,
        session: [7; 16],
        envelope: id.0.to_vec(),
        stored,
        sealed_at: 1_700_000_000,
    }
}

/// Sealed envelopes: insert, replace, unseal, and deletion with their
/// message or contact.
fn sealed_contract<S: Store>(store: &mut S, all: &[StoredMessage]) {
    let alice: Vec<&StoredMessage> = all.iter().filter(|m| m.meta.contact == ALICE).collect();
    let (a0, a1, a2) = (alice[0].meta.id, alice[1].meta.id, alice[2].meta.id);
    let bob_extra = msg(BOB, 900, 0, false);
    commit_messages(store, std::slice::from_ref(&bob_extra));
    let records = vec![
        sealed(a0, ALICE, false),
        sealed(a1, ALICE, false),
        sealed(a2, ALICE, false),
        sealed(bob_extra.meta.id, BOB, false),
    ];
    store
        .commit(&Changes {
            sealed: records.clone(),
            ..Changes::default()
        })
        .unwrap();
    let mut loaded = store.load_sealed().unwrap();
    loaded.sort_by_key(|r| r.id);
    let mut expected = records.clone();
    expected.sort_by_key(|r| r.id);
    assert_eq!(loaded, expected);
    // Replaced (now stored), unsealed, and gone with its message.
    store
        .commit(&Changes {
            sealed: vec![sealed(a0, ALICE, true)],
            unsealed: vec![a1],
            removed: vec![a2],
            ..Changes::default()
        })
        .unwrap();
    let mut loaded = store.load_sealed().unwrap();
    loaded.sort_by_key(|r| r.id);
    let mut expected = vec![
        sealed(a0, ALICE, true),
        sealed(bob_extra.meta.id, BOB, false),
    ];
    expected.sort_by_key(|r| r.id);
    assert_eq!(loaded, expected);
    // Received envelopes: found by key, first entry kept.
    let received = |key: u8, id: MessageId, contact| ReceivedEnvelope {
        key: [key; 32],
        id,
        contact,
    };
    store
        .commit(&Changes {
            received: vec![
                received(1, a0, ALICE),
                received(2, bob_extra.meta.id, BOB),
                received(1, a1, ALICE),
            ],
            ..Changes::default()
        })
        .unwrap();
    assert_eq!(store.received(&[1; 32]).unwrap(), Some(a0));
    assert_eq!(store.received(&[3; 32]).unwrap(), None);
    // Gone with its contact.
    store
        .commit(&Changes {
            removed_contacts: vec![BOB],
            ..Changes::default()
        })
        .unwrap();
    assert_eq!(store.load_sealed().unwrap(), vec![sealed(a0, ALICE, true)]);
    assert_eq!(store.received(&[2; 32]).unwrap(), None);
    assert_eq!(store.received(&[1; 32]).unwrap(), Some(a0));
}

#[test]
fn memory_store_keeps_the_contract() {
    contract(MemoryStore::new());
}

#[test]
fn sqlite_in_memory_keeps_the_contract() {
    contract(SqliteStore::open_in_memory().unwrap());
}

#[test]
fn sqlite_file_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    contract(SqliteStore::open(dir.path().join("store.db")).unwrap());
}

fn db_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("messenger.db")
}

fn sample() -> (Changes, Vec<StoredMessage>) {
    let messages: Vec<StoredMessage> = (0..10).map(|n| msg(ALICE, n, n, n == 9)).collect();
    let changes = Changes {
        identity: Some(b"my identity".to_vec()),
        contacts: vec![(ALICE, b"alice".to_vec()), (BOB, b"bob".to_vec())],
        removed_contacts: Vec::new(),
        removed: Vec::new(),
        messages: messages.clone(),
        updates: vec![(messages[0].meta.id, 0, flags(false, true, true))],
        sealed: vec![sealed(messages[1].meta.id, ALICE, true)],
        unsealed: Vec::new(),
        received: vec![ReceivedEnvelope {
            key: [9; 32],
            id: messages[2].meta.id,
            contact: ALICE,
        }],
    };
    let mut stored = messages;
    stored[0].meta.flags = flags(false, true, true);
    (changes, stored)
}

fn assert_holds_sample<S: Store>(store: &mut S, stored: &[StoredMessage]) {
    assert_eq!(store.received(&[9; 32]).unwrap(), Some(stored[2].meta.id));
    assert_eq!(
        store.load_sealed().unwrap(),
        vec![sealed(stored[1].meta.id, ALICE, true)]
    );
    assert_eq!(
        store.load_identity().unwrap(),
        Some(b"my identity".to_vec())
    );
    assert_eq!(
        store.load_contacts().unwrap(),
        vec![(ALICE, b"alice".to_vec()), (BOB, b"bob".to_vec())]
    );
    let mut metas: Vec<MessageMeta> = stored.iter().map(|m| m.meta.clone()).collect();
    metas.sort_by_key(|m| m.id);
    assert_eq!(sorted_index(store), metas);
    assert_eq!(
        store.history(&ALICE, None, 100).unwrap(),
        expected_history(stored, &ALICE)
    );
}

fn assert_empty<S: Store>(store: &mut S) {
    assert_eq!(store.load_identity().unwrap(), None);
    assert!(store.load_contacts().unwrap().is_empty());
    assert!(store.load_index().unwrap().is_empty());
    assert!(store.load_sealed().unwrap().is_empty());
}

#[test]
fn sqlite_reopen_finds_everything_committed() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let (changes, stored) = sample();
    {
        let mut store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.path(), Some(path.as_path()));
        store.commit(&changes).unwrap();
    }
    let mut store = SqliteStore::open(&path).unwrap();
    assert_holds_sample(&mut store, &stored);
    // And again, after more commits on the reopened store.
    let extra = msg(BOB, 77, 0, false);
    commit_messages(&mut store, std::slice::from_ref(&extra));
    drop(store);
    let mut store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.message(&extra.meta.id).unwrap(), Some(extra));
}

#[test]
fn sqlite_commit_is_visible_without_a_clean_close() {
    // A store that is never closed (as after a crash: no final checkpoint)
    // still has its commits in the WAL for the next opener. The files are
    // copied as they are on disk while the store is open (the copy is the
    // crash image; the store's lock keeps a second opener off the original).
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let (changes, stored) = sample();
    let mut store = SqliteStore::open(&path).unwrap();
    store.commit(&changes).unwrap();
    let crashed = tempfile::tempdir().unwrap();
    let image = db_path(&crashed);
    let wal = |p: &std::path::Path| {
        let mut name = p.file_name().unwrap().to_os_string();
        name.push("-wal");
        p.with_file_name(name)
    };
    // The WAL first: pages a concurrent checkpoint moves into the database
    // file meanwhile are still in the copied WAL, which wins on replay.
    std::fs::copy(wal(&path), wal(&image)).unwrap();
    std::fs::copy(&path, &image).unwrap();
    let mut second = SqliteStore::open(&image).unwrap();
    assert_holds_sample(&mut second, &stored);
    drop(store);
}

#[test]
fn sqlite_wal_stays_bounded_under_a_flood_and_goes_with_the_store() {
    // 2,000 commits of 16 KiB each (32 MB) as fast as one thread can make
    // them: the WAL must be checkpointed and reused along the way, not grow
    // with the flood, and once the store is dropped (its checkpoint thread
    // joined) the WAL must be gone, not left for whoever reads the files.
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let wal = sibling(&path, "-wal");
    let mut store = SqliteStore::open(&path).unwrap();
    let mut largest = 0;
    for n in 0..2_000u64 {
        let mut m = msg(ALICE, n, n, false);
        m.encoded = vec![(n % 251) as u8; 16 * 1024];
        m.meta.id = MessageId::of(&n.to_be_bytes());
        commit_messages(&mut store, &[m]);
        largest = largest.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
    }
    assert!(
        largest < 16 * 1024 * 1024,
        "the WAL grew to {largest} bytes"
    );
    drop(store);
    let left = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    assert_eq!(left, 0, "a WAL of {left} bytes outlived the store");
    let mut store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.load_index().unwrap().len(), 2_000);
}

#[test]
fn sqlite_file_is_in_wal_mode_at_the_current_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let store = SqliteStore::open(&path).unwrap();
    let raw = Connection::open(&path).unwrap();
    let mode: String = raw
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let version: u32 = raw
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    drop(store);
}

#[cfg(unix)]
fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[cfg(unix)]
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

#[cfg(unix)]
#[test]
fn sqlite_files_are_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let mut store = SqliteStore::open(&path).unwrap();
    store.commit(&sample().0).unwrap();
    assert_eq!(mode_of(&path), 0o600);
    let mut siblings = 0;
    for suffix in ["-wal", "-shm"] {
        let sibling = sibling(&path, suffix);
        if sibling.exists() {
            siblings += 1;
            assert_eq!(mode_of(&sibling), 0o600, "{suffix}");
        }
    }
    assert_eq!(siblings, 2, "an open WAL database has -wal and -shm files");
}

#[cfg(unix)]
#[test]
fn sqlite_narrows_the_permissions_of_an_existing_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    {
        let raw = Connection::open(&path).unwrap();
        raw.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t (x);")
            .unwrap();
        std::mem::forget(raw); // keep the -wal and -shm files around
    }
    for file in [path.clone(), sibling(&path, "-wal"), sibling(&path, "-shm")] {
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let _store = SqliteStore::open(&path).unwrap();
    for file in [path.clone(), sibling(&path, "-wal"), sibling(&path, "-shm")] {
        assert_eq!(mode_of(&file), 0o600, "{}", file.display());
    }
}

#[test]
fn sqlite_refuses_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    drop(SqliteStore::open(&path).unwrap());
    let raw = Connection::open(&path).unwrap();
    raw.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    drop(raw);
    let err = SqliteStore::open(&path).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("newer"), "{text}");
    assert!(text.contains(&(SCHEMA_VERSION + 1).to_string()), "{text}");
}

#[test]
fn sqlite_refuses_a_file_that_is_not_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    std::fs::write(&path, vec![0x5a; 8192]).unwrap();
    let err = SqliteStore::open(&path).unwrap_err();
    assert!(err.to_string().contains("sqlite"), "{err}");
}

#[test]
fn sqlite_failed_commit_rolls_back_entirely() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let mut store = SqliteStore::open(&path).unwrap();
    let (changes, stored) = sample();

    // The last statement of the commit (an update) fails: identity,
    // contacts and messages written before it in the same transaction must
    // not land.
    let raw = Connection::open(&path).unwrap();
    raw.execute_batch(
        "CREATE TRIGGER fail_updates BEFORE UPDATE ON messages
         BEGIN SELECT RAISE(ABORT, 'forced failure'); END;",
    )
    .unwrap();
    let err = store.commit(&changes).unwrap_err();
    assert!(err.to_string().contains("forced failure"), "{err}");
    assert_empty(&mut store);
    drop(store);
    let mut reopened = SqliteStore::open(&path).unwrap();
    assert_empty(&mut reopened);

    // The messages table is missing (the statement cannot even be
    // prepared) after identity and contacts were written.
    raw.execute_batch("DROP TRIGGER fail_updates; ALTER TABLE messages RENAME TO parked;")
        .unwrap();
    let err = reopened.commit(&changes).unwrap_err();
    assert!(err.to_string().contains("messages"), "{err}");
    assert_eq!(reopened.load_identity().unwrap(), None);
    assert!(reopened.load_contacts().unwrap().is_empty());

    // Once the obstacle is gone the same commit goes through whole.
    raw.execute_batch("ALTER TABLE parked RENAME TO messages;")
        .unwrap();
    reopened.commit(&changes).unwrap();
    assert_holds_sample(&mut reopened, &stored);
}

#[test]
fn sqlite_commit_waits_for_another_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let mut store = SqliteStore::open(&path).unwrap();
    let raw = Connection::open(&path).unwrap();
    raw.execute_batch("BEGIN IMMEDIATE").unwrap();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        raw.execute_batch("COMMIT").unwrap();
    });
    let (changes, stored) = sample();
    store.commit(&changes).unwrap();
    writer.join().unwrap();
    assert_holds_sample(&mut store, &stored);
}

#[test]
fn sqlite_history_pages_from_the_index() {
    // The history queries walk the (contact, held, height, id) index
    // backwards: no full scan, no sort. Same SQL as SqliteStore::history.
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    drop(SqliteStore::open(&path).unwrap());
    let raw = Connection::open(&path).unwrap();
    use rusqlite::types::Value;
    let contact = Value::Blob(ALICE.to_vec());
    let id = Value::Blob(vec![0x80; 32]);
    for (sql, params) in [
        (
            "SELECT id, encoded FROM messages WHERE contact = ?1 AND held = 0
             ORDER BY height DESC, id DESC LIMIT ?2",
            vec![contact.clone(), Value::Integer(20)],
        ),
        (
            "SELECT id, encoded FROM messages
             WHERE contact = ?1 AND held = 0 AND (height, id) < (?2, ?3)
             ORDER BY height DESC, id DESC LIMIT ?4",
            vec![contact, Value::Integer(7), id, Value::Integer(20)],
        ),
    ] {
        let mut stmt = raw.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let plan: Vec<String> = stmt
            .query_map(rusqlite::params_from_iter(params), |row| row.get(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let plan = plan.join(" | ");
        assert!(plan.contains("messages_history"), "{plan}");
        assert!(!plan.contains("TEMP B-TREE"), "{plan}");
    }
}
