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
        .ack(&a, &[e1.hash, EnvelopeHash::of(b"never")])
        .unwrap();
    assert_eq!(removed.len(), 1);
    assert_eq!((removed[0].len, removed[0].class), (3, Class::Normal));
    assert_eq!(
        store.find(&a, &e1.hash).unwrap(),
        Some(Existing::Tombstone { expiry: 100 })
    );
    assert!(
        store.ack(&b, &[e1.hash]).unwrap().is_empty(),
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
    assert_eq!(
        rows,
        vec![StoredEnvelope {
            mailbox: mailbox.id(),
            hash: EnvelopeHash::of(envelope),
            envelope: Bytes::from_static(envelope),
            expiry,
            class: Class::Normal,
            group: "10.9.8.0/24".into(),
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
}
