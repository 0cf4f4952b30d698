//! What strangers, replicas and replays cannot do to a mailbox, through
//! the public API of the replica and the quorum.

#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::*;
use shoal_mailbox::{
    Answer, EnvelopeHash, MemoryStore, Op, Quorum, Receipt, ReceiptError, Refusal, ReplicaConfig,
    Request,
};

#[test]
fn only_the_mailbox_key_fetches_acks_or_writes_an_owner_mailbox() {
    let mut r = replica(1);
    let (owner, stranger) = (key(10), key(11));
    let mailbox = owned(&owner);
    let from = addr("/ip4/10.0.0.1/tcp/1");
    let peer = key(20).peer_id();
    let stored = ask(
        &mut r,
        T0,
        peer,
        &from,
        &Request::signed(
            body(mailbox, T0, 1, store_op(b"for the owner", T0 / 1000 + 60)),
            &owner,
        ),
    );
    assert!(is_stored(&stored.answer));

    // A stranger's key over the owner's descriptor: every operation refused.
    let peer = key(21).peer_id();
    let ops = [
        store_op(b"spam", T0 / 1000 + 60),
        fetch_op(0),
        Op::Ack {
            hashes: vec![EnvelopeHash::of(b"for the owner")],
        },
    ];
    for (n, op) in ops.into_iter().enumerate() {
        let forged = Request::signed(body(mailbox, T0, 100 + n as u64, op.clone()), &stranger);
        let answer = ask(&mut r, T0, peer, &from, &forged).answer;
        assert_eq!(refusal(&answer), Some(Refusal::BadSignature), "{op:?}");
        // Unsigned, too.
        let bare = Request::unsigned(body(mailbox, T0, 200 + n as u64, op.clone()));
        let answer = ask(&mut r, T0, peer, &from, &bare).answer;
        assert_eq!(refusal(&answer), Some(Refusal::BadSignature), "{op:?}");
    }
    // The envelope is still there for the owner, and nothing else is.
    let fetched = ask(
        &mut r,
        T0,
        key(20).peer_id(),
        &from,
        &Request::signed(body(mailbox, T0, 2, fetch_op(0)), &owner),
    );
    assert_eq!(
        items(&fetched.answer),
        vec![Bytes::from_static(b"for the owner")]
    );
}

#[test]
fn an_open_inbox_takes_anyones_store_but_only_its_owner_reads_it() {
    let mut r = replica(1);
    let owner = key(10);
    let inbox = open(&owner);
    let from = addr("/ip4/10.0.0.1/tcp/1");
    let stranger = key(30).peer_id();
    let store = Request::unsigned(body(
        inbox,
        T0,
        1,
        store_op(b"hello, it's me", T0 / 1000 + 60),
    ));
    assert!(is_stored(&ask(&mut r, T0, stranger, &from, &store).answer));
    let peek = Request::unsigned(body(inbox, T0, 2, fetch_op(0)));
    assert_eq!(
        refusal(&ask(&mut r, T0, stranger, &from, &peek).answer),
        Some(Refusal::BadSignature)
    );
    let read = Request::signed(body(inbox, T0, 3, fetch_op(0)), &owner);
    assert_eq!(
        items(&ask(&mut r, T0, stranger, &from, &read).answer).len(),
        1
    );
}

#[test]
fn replayed_requests_are_refused_also_after_a_restart() {
    let owner = key(10);
    let mailbox = owned(&owner);
    let from = addr("/ip4/10.0.0.1/tcp/1");
    let peer = key(20).peer_id();
    let mut r = replica(1);
    let requests = [
        Request::signed(
            body(mailbox, T0, 1, store_op(b"m", T0 / 1000 + 600)),
            &owner,
        ),
        Request::signed(body(mailbox, T0, 2, fetch_op(0)), &owner),
        Request::signed(
            body(
                mailbox,
                T0,
                3,
                Op::Ack {
                    hashes: vec![EnvelopeHash::of(b"m")],
                },
            ),
            &owner,
        ),
    ];
    for request in &requests {
        let first = ask(&mut r, T0 + 10, peer, &from, request).answer;
        assert!(refusal(&first).is_none(), "{first:?}");
        let again = ask(&mut r, T0 + 20, peer, &from, request).answer;
        assert_eq!(refusal(&again), Some(Refusal::Replay));
    }
    assert_eq!(r.stats().replays, 3);

    // A restarted replica has forgotten the nonces, but refuses anything
    // signed before it started, and tells the requester its clock.
    let store = r.into_store();
    let mut r =
        shoal_mailbox::Replica::open(key(1), store, ReplicaConfig::default(), T0 + 1000).unwrap();
    for request in &requests {
        let answer = ask(&mut r, T0 + 1100, peer, &from, request).answer;
        assert_eq!(
            answer,
            Answer::Refused {
                reason: Refusal::ClockSkew,
                replica_unix_ms: T0 + 1100
            }
        );
    }
    // Clocks too far apart either way are refused too.
    let late = Request::signed(
        body(mailbox, T0 + 1000 + 11 * 60_000, 9, fetch_op(0)),
        &owner,
    );
    assert_eq!(
        refusal(&ask(&mut r, T0 + 1100, peer, &from, &late).answer),
        Some(Refusal::ClockSkew)
    );
}

#[test]
fn a_replica_cannot_forge_receipts() {
    let owner = key(10);
    let mailbox = owned(&owner);
    let envelope = b"sealed message";
    let hash = EnvelopeHash::of(envelope);
    let expiry = T0 / 1000 + 3600;
    let honest: Vec<_> = (1..=3).map(key).collect();
    let liar = key(9);
    let candidates = honest.iter().map(|k| k.peer_id()).collect::<Vec<_>>();
    let mut quorum = Quorum::new(mailbox.id(), hash, expiry, candidates.clone(), 3);

    // A liar signing in an honest replica's name, for another envelope, or
    // for a shorter expiry gets nothing counted.
    let theirs = Receipt::sign(&liar, mailbox.id(), hash, expiry);
    assert_eq!(
        quorum
            .add(
                honest[0].peer_id(),
                &addr("/ip4/10.0.1.1/tcp/1"),
                theirs.signature,
                theirs.proof.clone(),
                expiry
            )
            .unwrap_err(),
        ReceiptError::BadSignature
    );
    let other = Receipt::sign(&honest[0], mailbox.id(), EnvelopeHash::of(b"other"), expiry);
    assert_eq!(
        quorum
            .add(
                honest[0].peer_id(),
                &addr("/ip4/10.0.1.1/tcp/1"),
                other.signature,
                other.proof.clone(),
                expiry
            )
            .unwrap_err(),
        ReceiptError::BadSignature
    );
    // Its own valid receipt does not count: it was not a candidate.
    assert_eq!(
        quorum
            .add(
                liar.peer_id(),
                &addr("/ip4/10.0.9.1/tcp/1"),
                theirs.signature,
                theirs.proof.clone(),
                expiry
            )
            .unwrap_err(),
        ReceiptError::NotCandidate
    );
    // Three honest replicas on three networks make the quorum.
    for (i, k) in honest.iter().enumerate() {
        let r = Receipt::sign(k, mailbox.id(), hash, expiry);
        let a = addr(&format!("/ip4/10.0.{}.1/tcp/1", i + 1));
        quorum
            .add(k.peer_id(), &a, r.signature, r.proof.clone(), expiry)
            .unwrap();
    }
    assert!(quorum.is_met());
}

#[test]
fn a_full_mailbox_answers_quota_keeps_a_control_reserve_and_never_evicts() {
    let config = ReplicaConfig {
        quota_envelopes: 3,
        control_reserve: 1,
        ..ReplicaConfig::default()
    };
    let mut r = replica_on(1, MemoryStore::new(), config);
    let owner = key(10);
    let mailbox = owned(&owner);
    let from = addr("/ip4/10.0.0.1/tcp/1");
    let peer = key(20).peer_id();
    let expiry = T0 / 1000 + 60;
    for n in 0..3u64 {
        let req = Request::signed(
            body(mailbox, T0, n, store_op(&[n as u8; 10], expiry)),
            &owner,
        );
        assert!(is_stored(&ask(&mut r, T0, peer, &from, &req).answer));
    }
    let req = Request::signed(body(mailbox, T0, 3, store_op(&[3; 10], expiry)), &owner);
    assert!(matches!(
        ask(&mut r, T0, peer, &from, &req).answer,
        Answer::Quota { .. }
    ));
    // A retry of an envelope already held still gets its receipt.
    let again = Request::signed(body(mailbox, T0, 4, store_op(&[0; 10], expiry)), &owner);
    assert!(is_stored(&ask(&mut r, T0, peer, &from, &again).answer));
    // A control message fits the reserve; a second one does not.
    let control = |n: u64, byte: u8| {
        Request::signed(
            body(
                mailbox,
                T0,
                n,
                Op::Store {
                    envelope: Bytes::from(vec![byte; 10]),
                    expiry,
                    class: shoal_mailbox::Class::Control,
                },
            ),
            &owner,
        )
    };
    assert!(is_stored(
        &ask(&mut r, T0, peer, &from, &control(5, 50)).answer
    ));
    assert!(matches!(
        ask(&mut r, T0, peer, &from, &control(6, 51)).answer,
        Answer::Quota { .. }
    ));
    // Everything stored is still there; an ack makes room.
    let fetch = Request::signed(body(mailbox, T0, 7, fetch_op(0)), &owner);
    assert_eq!(items(&ask(&mut r, T0, peer, &from, &fetch).answer).len(), 4);
    let ack = Request::signed(
        body(
            mailbox,
            T0,
            8,
            Op::Ack {
                hashes: vec![EnvelopeHash::of(&[0; 10])],
            },
        ),
        &owner,
    );
    assert_eq!(
        ask(&mut r, T0, peer, &from, &ack).answer,
        Answer::Acked { removed: 1 }
    );
    let req = Request::signed(body(mailbox, T0, 9, store_op(&[3; 10], expiry)), &owner);
    assert!(is_stored(&ask(&mut r, T0, peer, &from, &req).answer));
}

#[test]
fn a_session_that_proved_the_key_is_trusted_until_it_closes() {
    let mut r = replica(1);
    let owner = key(10);
    let mailbox = owned(&owner);
    let from = addr("/ip4/10.0.0.1/tcp/1");
    let (alice, mallory) = (key(20).peer_id(), key(21).peer_id());
    let signed = Request::signed(body(mailbox, T0, 1, fetch_op(0)), &owner);
    assert!(refusal(&ask(&mut r, T0, alice, &from, &signed).answer).is_none());
    // Alice's session proved the key: her next requests are not checked
    // again (her channel is authenticated); anyone else's still are.
    let unsigned = Request::unsigned(body(mailbox, T0, 2, fetch_op(0)));
    assert!(refusal(&ask(&mut r, T0, alice, &from, &unsigned).answer).is_none());
    let unsigned = Request::unsigned(body(mailbox, T0, 3, fetch_op(0)));
    assert_eq!(
        refusal(&ask(&mut r, T0, mallory, &from, &unsigned).answer),
        Some(Refusal::BadSignature)
    );
    assert_eq!(r.stats().preauthorized, 1);
    // Once her session closed, she proves it again.
    r.peer_gone(&alice);
    let unsigned = Request::unsigned(body(mailbox, T0, 4, fetch_op(0)));
    assert_eq!(
        refusal(&ask(&mut r, T0, alice, &from, &unsigned).answer),
        Some(Refusal::BadSignature)
    );
}

#[test]
fn a_request_signed_for_one_replica_is_refused_by_another() {
    // What the owner sent replica 2, replica 2 cannot replay at replica 1.
    let mut r = replica(1);
    let owner = key(10);
    let mailbox = owned(&owner);
    let for_two = Request::signed(
        body_for(key(2).peer_id(), mailbox, T0, 1, fetch_op(0)),
        &owner,
    );
    let answer = ask(
        &mut r,
        T0,
        key(2).peer_id(),
        &addr("/ip4/10.0.2.1/tcp/1"),
        &for_two,
    )
    .answer;
    assert_eq!(refusal(&answer), Some(Refusal::WrongReplica));
    // And it proved nothing for replica 2's session.
    let unsigned = Request::unsigned(body(mailbox, T0, 2, fetch_op(0)));
    let answer = ask(
        &mut r,
        T0,
        key(2).peer_id(),
        &addr("/ip4/10.0.2.1/tcp/1"),
        &unsigned,
    )
    .answer;
    assert_eq!(refusal(&answer), Some(Refusal::BadSignature));
}
