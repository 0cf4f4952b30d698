//! The mailbox protocol on real services over TCP: five replicas on five
//! loopback /24s, a sender that stores to a quorum, and an owner that
//! subscribes, receives a push, acks and drains.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::service::{node, unix_now_ms};
use common::{T0, key, owned};
use shoal::address_book::AddressSource;
use shoal_mailbox::{Answer, Class, EnvelopeHash, Event, ReplicaConfig};

const STEP: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_to_a_quorum_then_subscribe_ack_and_drain() {
    let mut replicas = Vec::new();
    for i in 1..=5 {
        replicas.push(node(&format!("127.0.{i}.1"), Some(ReplicaConfig::default())).await);
    }
    let sender = node("127.0.10.1", None).await;
    let mut owner = node("127.0.11.1", None).await;
    for n in [&sender, &owner] {
        for r in &replicas {
            n.control.add_addresses(
                r.control.local_peer_id(),
                std::slice::from_ref(&r.addr),
                AddressSource::Application,
            );
        }
    }
    let candidates: Vec<_> = replicas.iter().map(|r| r.control.local_peer_id()).collect();
    let mailbox_key = key(42);
    let mailbox = owned(&mailbox_key);
    let expiry = unix_now_ms() / 1000 + 3600;
    let _ = T0;

    // Stored: three verified receipts from three networks, no more needed.
    let first = Bytes::from_static(b"first sealed envelope");
    let outcome = tokio::time::timeout(
        STEP,
        sender.handle.store_quorum(
            &candidates,
            3,
            mailbox,
            Some(&mailbox_key),
            first.clone(),
            expiry,
            Class::Normal,
        ),
    )
    .await
    .unwrap();
    assert!(outcome.is_met(3), "{outcome:?}");
    assert!(outcome.rejected.is_empty() && outcome.failed.is_empty());
    let signers: std::collections::BTreeSet<_> =
        outcome.receipts.iter().map(|r| r.replica).collect();
    assert_eq!(signers.len(), 3);

    // The owner subscribes on three replicas (R - W + 1) and finds it on
    // every one that signed.
    let mut subscriptions = Vec::new();
    for r in &candidates[..3] {
        let (id, answer) = owner
            .handle
            .fetch(*r, mailbox, &mailbox_key, 0, 64, true)
            .await
            .unwrap();
        let Answer::Items { items, .. } = answer else {
            panic!("{answer:?}")
        };
        assert!(items.len() <= 1);
        if signers.contains(r) {
            assert_eq!(items[0].envelope, first);
        }
        subscriptions.push(id);
    }

    // A second envelope arrives as a push, without asking.
    let second = Bytes::from_static(b"second sealed envelope");
    let outcome = sender
        .handle
        .store_quorum(
            &candidates,
            3,
            mailbox,
            Some(&mailbox_key),
            second.clone(),
            expiry,
            Class::Normal,
        )
        .await;
    assert!(outcome.is_met(3));
    let pushed = tokio::time::timeout(STEP, async {
        loop {
            if let Some(Event::Pushed {
                item, mailbox: m, ..
            }) = owner.events.recv().await
            {
                assert_eq!(m, mailbox.id());
                return item.envelope;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(pushed, second);

    // Every replica holds both before the owner acks: store_quorum
    // returned at 3 receipts, and an ack that reaches a replica before
    // its store deletes nothing there (the store lands after it; the
    // next read finds it again and the engine drops the copy).
    tokio::time::timeout(STEP, async {
        while replicas
            .iter()
            .any(|r| r.handle.replica_stats().is_none_or(|s| s.stored < 2))
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("every replica stores both envelopes");

    // Acks on every replica drain the mailbox.
    let hashes = vec![EnvelopeHash::of(&first), EnvelopeHash::of(&second)];
    let mut removed = 0;
    for r in &candidates {
        let answer = owner
            .handle
            .ack(*r, mailbox, &mailbox_key, hashes.clone())
            .await
            .unwrap();
        let Answer::Acked { removed: n } = answer else {
            panic!("{answer:?}")
        };
        removed += n;
    }
    assert!(
        removed >= 6,
        "at least the 3 + 3 signed copies were deleted"
    );
    for r in &candidates {
        let (_, answer) = owner
            .handle
            .fetch(*r, mailbox, &mailbox_key, 0, 64, false)
            .await
            .unwrap();
        assert_eq!(
            answer,
            Answer::Items {
                items: vec![],
                more: false
            }
        );
    }
    // A late retry of an acked envelope gets a receipt but is not stored
    // again (its tombstone), so it never comes back.
    let (_, answer) = sender
        .handle
        .store(
            candidates[0],
            mailbox,
            Some(&mailbox_key),
            first.clone(),
            expiry,
            Class::Normal,
        )
        .await
        .unwrap();
    assert!(matches!(answer, Answer::Stored { .. }));
    let (_, answer) = owner
        .handle
        .fetch(candidates[0], mailbox, &mailbox_key, 0, 64, false)
        .await
        .unwrap();
    assert_eq!(
        answer,
        Answer::Items {
            items: vec![],
            more: false
        }
    );
    let _ = subscriptions;
    for n in replicas.iter().chain([&sender, &owner]) {
        n.control.shutdown().await;
    }
}
