//! The replica store contract, run on both stores; the SQLite store across
//! a reopen; and exactly what a replica keeps (the rows it holds).

#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::*;
use shoal_mailbox::sqlite::Durability;
use shoal_mailbox::store::{Existing, StoredEnvelope};
use shoal_mailbox::{
    Answer, Class, EnvelopeHash, MailboxId, MemoryStore, ReplicaConfig, ReplicaStore, Request,
    SqliteStore,
};

fn envelope(mailbox: MailboxId, bytes: &[u8], expiry: u64) -> StoredEnvelope {
    StoredEnvelope {
        mailbox,
        hash: EnvelopeHash::of(bytes),
        envelope: Bytes::copy_from_slice(bytes),
        expiry,
        class: Class::Normal,
        group: "10.0.0.0/24".into(),
        origin: None,
    }
}

fn contract(store: &mut dyn ReplicaStore) {
    let (a, b) = (
        MailboxId::from_bytes([1; 32]),
        MailboxId::from_bytes([2; 32]),
    );
    let e1 = envelope(a, b"one", 100);
    let e2 = envelope(a, b"two", 200);
    let e3 = envelope(b, b"three", 300);
    assert_eq!(store.find(&a, &e1.hash).unwrap(), None);
    let s1 = store.insert(std::slice::from_ref(&e1)).unwrap()[0];
    let seqs = store.insert(&[e2.clone(), e3.clone()]).unwrap();
    let (s2, s3) = (seqs[0], seqs[1]);
    assert!(s1 < s2 && s2 < s3, "sequence numbers grow");
    assert_eq!(
        store.find(&a, &e1.hash).unwrap(),
        Some(Existing::Held { expiry: 100 })
    );
    // Per mailbox, in order, after a cursor, within limits.
    let (items, more) = store.fetch(&a, 0, 10, 1 << 20).unwrap();
    assert_eq!(
        items.iter().map(|i| &i.envelope[..]).collect::<Vec<_>>(),
        [&b"one"[..], b"two"]
    );
    assert!(!more);
    let (items, more) = store.fetch(&a, 0, 1, 1 << 20).unwrap();
    assert_eq!(items.len(), 1);
    assert!(more);
    let (items, _) = store.fetch(&a, items[0].seq, 10, 1 << 20).unwrap();
    assert_eq!(&items[0].envelope[..], b"two");
    let (items, more) = store.fetch(&a, 0, 10, 1).unwrap();
    assert_eq!((items.len(), more), (1, true), "stops after the byte limit");
    assert_eq!(store.scan().unwrap().len(), 3);

    // An ack removes and leaves a tombstone until the expiry.
    let removed = store
        .ack(&a, &[e1.hash, EnvelopeHash::of(b"never")], None)
        .unwrap();
    assert_eq!(removed.len(), 1);
    assert_eq!((removed[0].len, removed[0].class), (3, Class::Normal));
    assert_eq!(
        store.find(&a, &e1.hash).unwrap(),
        Some(Existing::Tombstone { expiry: 100 })
    );
    assert!(
        store.ack(&b, &[e1.hash], None).unwrap().is_empty(),
        "acks are per mailbox"
    );
    // Expiry removes envelopes and tombstones.
    let gone = store.expire(200).unwrap();
    assert_eq!(gone.len(), 1);
    assert_eq!(store.find(&a, &e1.hash).unwrap(), None);
    assert_eq!(store.find(&a, &e2.hash).unwrap(), None);
    assert!(store.find(&b, &e3.hash).unwrap().is_some());
    // A number is never given twice.
    let s4 = store.insert(&[envelope(a, b"four", 400)]).unwrap()[0];
    assert!(s4 > s3);
}

#[test]
fn memory_store_keeps_the_contract() {
    contract(&mut MemoryStore::new());
}

#[test]
fn sqlite_store_keeps_the_contract() {
    contract(&mut SqliteStore::in_memory().unwrap());
    let dir = tempfile::tempdir().unwrap();
    contract(&mut SqliteStore::open(dir.path().join("m.db"), Durability::Power).unwrap());
}

#[test]
fn a_restarted_replica_keeps_what_it_signed_for_and_its_accounting() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mailboxes.db");
    let owner = key(10);
    let mailbox = owned(&owner);
    let from = addr("/ip4/10.0.0.1/tcp/1");
    let peer = key(20).peer_id();
    let expiry = T0 / 1000 + 3600;
    {
        let store = SqliteStore::open(&path, Durability::Process).unwrap();
        let mut r = replica_on(1, store, ReplicaConfig::default());
        for n in 0..5u64 {
            let req = Request::signed(
                body(mailbox, T0, n, store_op(&[n as u8; 100], expiry)),
                &owner,
            );
            assert!(is_stored(&ask(&mut r, T0, peer, &from, &req).answer));
        }
        let ack = Request::signed(
            body(
                mailbox,
                T0,
                9,
                shoal_mailbox::Op::Ack {
                    hashes: vec![EnvelopeHash::of(&[0; 100])],
                },
            ),
            &owner,
        );
        assert_eq!(
            ask(&mut r, T0, peer, &from, &ack).answer,
            Answer::Acked { removed: 1 }
        );
    }
    let store = SqliteStore::open(&path, Durability::Process).unwrap();
    let mut r =
        shoal_mailbox::Replica::open(key(1), store, ReplicaConfig::default(), T0 + 5000).unwrap();
    assert_eq!(r.usage(&mailbox.id()).normal, 4);
    assert_eq!(r.total_bytes(), 400);
    let fetch = Request::signed(body(mailbox, T0 + 6000, 10, fetch_op(0)), &owner);
    let got = items(&ask(&mut r, T0 + 6000, peer, &from, &fetch).answer);
    assert_eq!(got.len(), 4);
    // The acked one stays acked: a late retry is answered but not kept.
    let retry = Request::signed(
        body(mailbox, T0 + 6000, 11, store_op(&[0; 100], expiry)),
        &owner,
    );
    assert!(is_stored(
        &ask(&mut r, T0 + 6000, peer, &from, &retry).answer
    ));
    assert_eq!(r.usage(&mailbox.id()).normal, 4);
}

#[test]
fn a_replica_keeps_ciphertext_an_id_an_expiry_and_a_network_nothing_more() {
    let mut r = replica_on(
        1,
        SqliteStore::in_memory().unwrap(),
        ReplicaConfig::default(),
    );
    let owner = key(10);
    let mailbox = owned(&owner);
    let sender = key(20);
    let from = addr("/ip4/10.9.8.7/tcp/4001");
    let envelope = b"\x01opaque ciphertext bytes";
    let expiry = T0 / 1000 + 3600;
    let req = Request::signed(body(mailbox, T0, 1, store_op(envelope, expiry)), &owner);
    assert!(is_stored(
        &ask(&mut r, T0, sender.peer_id(), &from, &req).answer
    ));
    let rows = r.store().rows().unwrap();
    // The origin is the owner's request as signed (so another replica can
    // check it): the mailbox's descriptor, a time, a nonce, this replica's
    // id, the envelope; nothing of the sender.
    let origin = rows[0].origin.clone().expect("kept with its origin");
    assert_eq!(origin.body(envelope), req.body_bytes);
    assert_eq!(origin.signature, req.signature);
    assert_eq!(
        rows,
        vec![StoredEnvelope {
            mailbox: mailbox.id(),
            hash: EnvelopeHash::of(envelope),
            envelope: Bytes::from_static(envelope),
            expiry,
            class: Class::Normal,
            group: "10.9.8.0/24".into(),
            origin: Some(origin.clone()),
        }]
    );
    // Neither the sender's peer id nor the owner's key is in any column.
    let text = format!("{rows:?}");
    assert!(!text.contains(&sender.peer_id().to_string()));
    let flat: Vec<u8> = rows
        .iter()
        .flat_map(|r| {
            [
                &r.mailbox.as_bytes()[..],
                &r.hash.as_bytes()[..],
                &r.envelope[..],
            ]
            .concat()
        })
        .collect();
    for secret in [sender.peer_id().as_bytes(), &owner.public().to_bytes()] {
        assert!(!flat.windows(32).any(|w| w == secret));
    }
    let kept = [&origin.head[..], &origin.tail[..]].concat();
    assert!(!kept.windows(32).any(|w| w == sender.peer_id().as_bytes()));
}

/// What a store keeps to hand items on: origins, ack proofs, the items of
/// a mailbox, and dropping it.
fn handoff_contract(store: &mut dyn ReplicaStore) {
    use shoal_mailbox::store::{AckProof, Handoff, Origin};
    use shoal_mailbox::sync::State;
    let owner = key(10);
    let descriptor = owned(&owner);
    let mailbox = descriptor.id();
    let expiry = T0 / 1000 + 600;
    let request = |n: u64, bytes: &[u8]| {
        Request::signed(body(descriptor, T0, n, store_op(bytes, expiry)), &owner)
    };
    let (r1, r2) = (request(1, b"one"), request(2, b"two"));
    let with_origin = |r: &Request, bytes: &[u8]| StoredEnvelope {
        origin: Origin::of(r),
        ..envelope(mailbox, bytes, expiry)
    };
    store
        .insert(&[
            with_origin(&r1, b"one"),
            with_origin(&r2, b"two"),
            envelope(mailbox, b"no origin", expiry),
        ])
        .unwrap();
    let mut items = store.sync_items(&mailbox).unwrap();
    items.sort_by_key(|i| i.key);
    assert_eq!(items.len(), 2, "only items with their proof are handed on");
    assert!(items.iter().all(|i| i.state == State::Held));
    let (h1, h2) = (EnvelopeHash::of(b"one"), EnvelopeHash::of(b"two"));
    assert_eq!(
        store
            .handoffs(&mailbox, &[h1, EnvelopeHash::of(b"no origin")])
            .unwrap(),
        vec![Handoff::Envelope {
            body: r1.body_bytes.clone(),
            signature: r1.signature,
            expiry,
        }]
    );
    let ack = Request::signed(
        body(
            descriptor,
            T0,
            3,
            shoal_mailbox::Op::Ack { hashes: vec![h1] },
        ),
        &owner,
    );
    let proof = AckProof {
        body: ack.body_bytes.clone(),
        signature: ack.signature.unwrap(),
    };
    assert_eq!(store.ack(&mailbox, &[h1], Some(&proof)).unwrap().len(), 1);
    assert_eq!(
        store.handoffs(&mailbox, &[h1]).unwrap(),
        vec![Handoff::Tombstones {
            ack: proof.clone(),
            entries: vec![(h1, expiry)],
        }]
    );
    // A tombstone handed over deletes the held copy.
    assert_eq!(
        store
            .tombstone(&mailbox, &[(h2, expiry)], &proof)
            .unwrap()
            .len(),
        1
    );
    let states: Vec<State> = store
        .sync_items(&mailbox)
        .unwrap()
        .iter()
        .map(|i| i.state)
        .collect();
    assert_eq!(states, vec![State::Tombstone, State::Tombstone]);
    assert_eq!(store.mailboxes().unwrap(), vec![mailbox]);
    assert_eq!(store.drop_mailbox(&mailbox).unwrap().len(), 1);
    assert!(store.mailboxes().unwrap().is_empty());
    assert!(store.sync_items(&mailbox).unwrap().is_empty());
}

#[test]
fn both_stores_keep_what_a_handoff_needs() {
    handoff_contract(&mut MemoryStore::new());
    handoff_contract(&mut SqliteStore::in_memory().unwrap());
}

#[test]
fn a_version_1_database_is_migrated_and_its_envelopes_still_served() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(shoal_mailbox::sqlite::MIGRATIONS[0])
            .unwrap();
        conn.execute_batch("PRAGMA user_version = 1").unwrap();
        conn.execute(
            "INSERT INTO envelopes (mailbox, hash, envelope, expiry, class, grp)
             VALUES (?1, ?2, ?3, 100, 0, 'g')",
            rusqlite::params![
                &[7u8; 32][..],
                &EnvelopeHash::of(b"old").as_bytes()[..],
                &b"old"[..]
            ],
        )
        .unwrap();
    }
    let mut store = SqliteStore::open(&path, Durability::Process).unwrap();
    let mailbox = MailboxId::from_bytes([7; 32]);
    let (items, _) = store.fetch(&mailbox, 0, 10, 1 << 20).unwrap();
    assert_eq!(&items[0].envelope[..], b"old");
    assert_eq!(store.rows().unwrap()[0].origin, None);
    assert!(store.sync_items(&mailbox).unwrap().is_empty());
    assert_eq!(store.mailboxes().unwrap(), vec![mailbox]);
}
