//! Content-free wake-ups: a replica wakes a registered endpoint with one
//! fixed-size frame per batch, only while nobody subscribes, only for the
//! owner's registrations, within its bounds; and on real services, an
//! endpoint woken this way lets its recipient fetch everything.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{T0, addr, ask, body, is_stored, key, owned, refusal, replica, store_op};
use shoal_identity::Keypair;
use shoal_mailbox::wake::{MAX_WAKE_ADDRS, MAX_WAKE_PER_MAILBOX};
use shoal_mailbox::{
    Answer, Class, Event, Frame, MemoryStore, Op, Refusal, Replica, ReplicaConfig, Request,
    WAKE_FRAME_LEN, WakeEndpoint, WakeToken,
};

fn endpoint(n: u8, token: u8) -> WakeEndpoint {
    WakeEndpoint {
        peer: key(100 + n).peer_id(),
        addrs: vec![addr("/ip4/10.9.0.1/tcp/4001")],
        token: WakeToken([token; 16]),
    }
}

fn register(endpoint: WakeEndpoint, until: u64) -> Op {
    Op::Register { endpoint, until }
}

/// Stores `n` envelopes (owner-signed) at `now_ms`, nonces from `first`.
fn store_burst(r: &mut Replica<MemoryStore>, owner: &Keypair, now_ms: u64, first: u64, n: u64) {
    let sender = key(9).peer_id();
    let from = addr("/ip4/10.0.0.9/tcp/1");
    for i in first..first + n {
        let op = store_op(format!("envelope {i}").as_bytes(), now_ms / 1000 + 3600);
        let request = Request::signed(body(owned(owner), now_ms, i, op), owner);
        assert!(is_stored(&ask(r, now_ms, sender, &from, &request).answer));
    }
}

#[test]
fn one_fixed_size_wakeup_per_batch_and_none_while_subscribed() {
    let mut r = replica(1);
    let owner = key(2);
    let from = addr("/ip4/10.0.0.2/tcp/1");
    let until = T0 / 1000 + 3600;
    let request = Request::signed(
        body(owned(&owner), T0, 1, register(endpoint(1, 7), until)),
        &owner,
    );
    let answer = ask(&mut r, T0, owner.peer_id(), &from, &request).answer;
    assert_eq!(answer, Answer::Registered { until });
    assert_eq!(r.wake_registrations(), 1);
    assert!(r.wakeups(T0 + 60_000).is_empty(), "nothing arrived yet");

    // A burst of five: one wake-up, after the batching delay, never before.
    let batch = ReplicaConfig::default().wake_batch.as_millis() as u64;
    store_burst(&mut r, &owner, T0 + 1_000, 100, 5);
    assert_eq!(r.next_wakeup(), Some(T0 + 1_000 + batch));
    assert!(r.wakeups(T0 + 1_000 + batch - 1).is_empty());
    let woken = r.wakeups(T0 + 1_000 + batch);
    assert_eq!(woken.len(), 1);
    assert_eq!(woken[0].endpoint, endpoint(1, 7).peer);
    assert_eq!(woken[0].addrs, endpoint(1, 7).addrs);
    assert_eq!(woken[0].frame.len(), WAKE_FRAME_LEN);
    assert_eq!(
        Frame::decode(&woken[0].frame).unwrap(),
        Frame::Wake {
            token: WakeToken([7; 16])
        }
    );
    assert_eq!(r.next_wakeup(), None);

    // More soon after: the next waits for the interval since the last.
    let sent = T0 + 1_000 + batch;
    let gap = ReplicaConfig::default().wake_interval.as_millis() as u64;
    store_burst(&mut r, &owner, sent + 1_000, 200, 3);
    assert_eq!(r.next_wakeup(), Some(sent + gap));
    let later = r.wakeups(sent + gap);
    assert_eq!(later.len(), 1);
    assert_eq!(
        later[0].frame, woken[0].frame,
        "every wake-up is the same bytes"
    );

    // While the owner subscribes, new envelopes are pushed, not woken for.
    let sub = Op::Fetch {
        after: 0,
        limit: 64,
        subscribe: true,
    };
    let fetch = Request::signed(body(owned(&owner), sent + gap, 300, sub), &owner);
    ask(&mut r, sent + gap, owner.peer_id(), &from, &fetch);
    let now = sent + 3 * gap;
    store_burst(&mut r, &owner, now, 400, 2);
    assert_eq!(r.next_wakeup(), None);
    assert!(r.wakeups(now + 10 * gap).is_empty());

    // Once it leaves, they are woken for again; a cancelled registration is not.
    r.peer_gone(&owner.peer_id());
    store_burst(&mut r, &owner, now + 1_000, 500, 1);
    assert_eq!(r.wakeups(now + 1_000 + batch).len(), 1);
    let cancel = Request::signed(
        body(owned(&owner), now + 2_000, 600, register(endpoint(1, 7), 0)),
        &owner,
    );
    assert_eq!(
        ask(&mut r, now + 2_000, owner.peer_id(), &from, &cancel).answer,
        Answer::Registered { until: 0 }
    );
    assert_eq!(r.wake_registrations(), 0);
    store_burst(&mut r, &owner, now + 3_000, 700, 1);
    assert!(r.wakeups(now + 10 * gap).is_empty());
    assert_eq!(r.stats().wakeups, 3);
}

#[test]
fn registrations_need_the_owner_and_stay_in_bounds() {
    let mut r = replica(1);
    let owner = key(2);
    let from = addr("/ip4/10.0.0.2/tcp/1");
    let until = T0 / 1000 + 3600;

    // Signed by anyone but the mailbox key: refused.
    let stranger = key(3);
    let forged = Request::signed(
        body(owned(&owner), T0, 1, register(endpoint(1, 1), until)),
        &stranger,
    );
    assert_eq!(
        refusal(&ask(&mut r, T0, stranger.peer_id(), &from, &forged).answer),
        Some(Refusal::BadSignature)
    );
    assert_eq!(r.wake_registrations(), 0);

    // A mailbox keeps the newest few; the one running out first goes.
    for i in 0..=MAX_WAKE_PER_MAILBOX as u8 {
        let op = register(endpoint(i, i), until + u64::from(i));
        let request = Request::signed(body(owned(&owner), T0, 10 + u64::from(i), op), &owner);
        let answer = ask(&mut r, T0, owner.peer_id(), &from, &request).answer;
        assert_eq!(
            answer,
            Answer::Registered {
                until: until + u64::from(i)
            }
        );
    }
    assert_eq!(r.wake_registrations(), MAX_WAKE_PER_MAILBOX);
    store_burst(&mut r, &owner, T0 + 1_000, 100, 1);
    let woken = r.wakeups(T0 + 600_000);
    let mut tokens: Vec<_> = woken
        .iter()
        .map(|w| match Frame::decode(&w.frame).unwrap() {
            Frame::Wake { token } => token.0[0],
            other => panic!("{other:?}"),
        })
        .collect();
    tokens.sort_unstable();
    assert_eq!(tokens, (1..=MAX_WAKE_PER_MAILBOX as u8).collect::<Vec<_>>());

    // A registration lasts at most the longest expiry, and goes with it.
    let far = Request::signed(
        body(owned(&owner), T0, 50, register(endpoint(9, 9), u64::MAX)),
        &owner,
    );
    let Answer::Registered { until: kept } = ask(&mut r, T0, owner.peer_id(), &from, &far).answer
    else {
        panic!()
    };
    assert_eq!(kept, T0 / 1000 + ReplicaConfig::default().max_ttl.as_secs());
    r.expire(kept + 1).unwrap();
    assert_eq!(r.wake_registrations(), 0);

    // Malformed registrations do not parse: a short token, too many addresses.
    let mut long = endpoint(1, 1);
    long.addrs = vec![addr("/ip4/10.9.0.1/tcp/1"); MAX_WAKE_ADDRS + 1];
    let too_many = Request::signed(body(owned(&owner), T0, 60, register(long, until)), &owner);
    let frame = Frame::Request {
        id: 1,
        request: too_many,
    }
    .encode();
    assert!(Frame::decode(&frame).is_err());
    let good = Frame::Wake {
        token: WakeToken([1; 16]),
    }
    .encode();
    let mut short = good.to_vec();
    short[1] -= 1;
    short[3] -= 1;
    short.pop();
    assert!(Frame::decode(&short).is_err(), "a 15-byte token");
}

#[test]
fn the_replica_wake_rate_holds_back_the_rest() {
    let config = ReplicaConfig {
        wake_rate: 3,
        ..ReplicaConfig::default()
    };
    let mut r = Replica::open(key(1), MemoryStore::new(), config, T0).unwrap();
    let from = addr("/ip4/10.0.0.2/tcp/1");
    let until = T0 / 1000 + 3600;
    let owners: Vec<Keypair> = (20..30).map(key).collect();
    for (i, owner) in owners.iter().enumerate() {
        let op = register(endpoint(i as u8, i as u8), until);
        let request = Request::signed(body(owned(owner), T0, 1, op), owner);
        ask(&mut r, T0, owner.peer_id(), &from, &request);
        store_burst(&mut r, owner, T0, 10, 1);
    }
    let batch = ReplicaConfig::default().wake_batch.as_millis() as u64;
    let mut sent = Vec::new();
    for second in 0..5 {
        sent.push(r.wakeups(T0 + batch + second * 1000).len());
    }
    assert_eq!(sent, vec![3, 3, 3, 1, 0]);
}

mod network {
    //! Real services over TCP on loopback.

    use super::*;
    use crate::common::service::{node, unix_now_ms};
    use shoal::address_book::AddressSource;

    const STEP: Duration = Duration::from_secs(10);

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_woken_recipient_fetches_everything() {
        let config = ReplicaConfig {
            wake_batch: Duration::from_millis(300),
            ..ReplicaConfig::default()
        };
        let mut replicas = Vec::new();
        for i in 1..=3 {
            replicas.push(node(&format!("127.0.{i}.1"), Some(config.clone())).await);
        }
        let mut wake_service = node("127.0.20.1", None).await;
        let sender = node("127.0.21.1", None).await;
        let recipient = node("127.0.22.1", None).await;
        for n in [&sender, &recipient] {
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
        let token = WakeToken([0x5a; 16]);
        let endpoint = WakeEndpoint {
            peer: wake_service.control.local_peer_id(),
            addrs: vec![wake_service.addr.clone()],
            token,
        };

        // The recipient registers with every replica, then goes away.
        let until = unix_now_ms() / 1000 + 3600;
        for r in &candidates {
            let answer = tokio::time::timeout(
                STEP,
                recipient
                    .handle
                    .register_wake(*r, mailbox, &mailbox_key, endpoint.clone(), until),
            )
            .await
            .unwrap()
            .unwrap();
            assert_eq!(answer, Answer::Registered { until });
        }
        recipient.control.shutdown().await;

        // Ten envelopes, each stored on all three.
        let expiry = unix_now_ms() / 1000 + 3600;
        let sent: Vec<Bytes> = (0..10)
            .map(|i| Bytes::from(format!("sealed envelope {i}")))
            .collect();
        for envelope in &sent {
            let outcome = tokio::time::timeout(
                STEP,
                sender.handle.store_quorum(
                    &candidates,
                    3,
                    mailbox,
                    Some(&mailbox_key),
                    envelope.clone(),
                    expiry,
                    Class::Normal,
                ),
            )
            .await
            .unwrap();
            assert!(outcome.is_met(3), "{outcome:?}");
        }

        // The wake-up service hears the token, once for the burst, and
        // nothing else.
        let event = tokio::time::timeout(STEP, wake_service.events.recv())
            .await
            .unwrap()
            .unwrap();
        let Event::Woken { peer, token: heard } = event else {
            panic!("{event:?}")
        };
        assert_eq!(heard, token);
        assert!(candidates.contains(&peer));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            wake_service.events.try_recv().is_err(),
            "one event per burst"
        );
        let mut woke = 0;
        for r in &replicas {
            let stats = r.handle.replica_stats().unwrap();
            assert!(stats.wakeups <= 1, "{stats:?}");
            woke += stats.wakeups;
        }
        assert!(woke >= 1);

        // Woken, the recipient (a new process: a new node) fetches
        // everything from one replica.
        let recipient = node("127.0.23.1", None).await;
        recipient.control.add_addresses(
            candidates[0],
            std::slice::from_ref(&replicas[0].addr),
            AddressSource::Application,
        );
        let (_, answer) = tokio::time::timeout(
            STEP,
            recipient
                .handle
                .fetch(candidates[0], mailbox, &mailbox_key, 0, 64, false),
        )
        .await
        .unwrap()
        .unwrap();
        let Answer::Items { items, more } = answer else {
            panic!("{answer:?}")
        };
        assert!(!more);
        let got: Vec<Bytes> = items.into_iter().map(|i| i.envelope).collect();
        assert_eq!(got, sent);
    }
}
