//! A flood from 1,000 Sybil keys on a few networks, against the five
//! replicas of a contact's mailbox, in virtual time: the contact's stored
//! messages stay, and its new message still gets three receipts (W of R)
//! within 10 s.

#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::*;
use shoal_identity::Keypair;
use shoal_mailbox::{Answer, EnvelopeHash, MemoryStore, Quorum, Replica, ReplicaConfig, Request};

const SYBILS: usize = 1000;
const SYBIL_NETWORKS: usize = 4;
const REPLICAS: u8 = 5;
const W: usize = 3;
const STEP_MS: u64 = 100;

#[test]
fn a_sybil_flood_neither_evicts_nor_blocks_a_contact() {
    // A small disk, so an undefended replica would fill up in the flood.
    let config = ReplicaConfig {
        disk_budget: 8 * 1024 * 1024,
        ..ReplicaConfig::default()
    };
    let mut replicas: Vec<Replica<MemoryStore>> = (1..=REPLICAS)
        .map(|n| replica_on(n, MemoryStore::new(), config.clone()))
        .collect();
    let candidates: Vec<_> = replicas.iter().map(Replica::peer_id).collect();
    let contact_key = key(200);
    let mailbox = owned(&contact_key);
    let contact_peer = key(201).peer_id();
    let contact_addr = addr("/ip4/192.0.2.7/tcp/4001");
    let expiry = T0 / 1000 + 14 * 24 * 3600;

    // Before the flood: 20 messages stored on every replica.
    let earlier: Vec<Bytes> = (0..20u8).map(|i| Bytes::from(vec![i; 1024])).collect();
    for (n, e) in earlier.iter().enumerate() {
        for r in &mut replicas {
            let req = Request::signed(
                body_for(r.peer_id(), mailbox, T0, n as u64, store_op(e, expiry)),
                &contact_key,
            );
            assert!(is_stored(
                &ask(r, T0, contact_peer, &contact_addr, &req).answer
            ));
        }
    }

    // The flood: every Sybil stores 4 KiB envelopes into inboxes of its
    // own, twice per step, for 10 s; the contact's new message goes out at
    // 5 s and is retried on each replica as its answers say.
    let sybils: Vec<(Keypair, shoal_transport::Multiaddr)> = (0..SYBILS)
        .map(|i| {
            let k = Keypair::from_secret_bytes(&{
                let mut s = [0u8; 32];
                s[..8].copy_from_slice(&(i as u64 + 1000).to_be_bytes());
                s
            });
            let net = i % SYBIL_NETWORKS;
            (
                k,
                addr(&format!(
                    "/ip4/198.51.{net}.{}/tcp/1",
                    i / SYBIL_NETWORKS % 250 + 1
                )),
            )
        })
        .collect();
    let new_message = Bytes::from(vec![0xee; 1024]);
    let mut quorum = Quorum::new(
        mailbox.id(),
        EnvelopeHash::of(&new_message),
        expiry,
        candidates,
        W,
    );
    let mut retry_at = vec![T0 + 5_000; REPLICAS as usize];
    let mut stored_at = None;
    let (mut flood_stored, mut flood_refused) = (0u64, 0u64);
    let mut nonce = 1_000_000u64;
    for step in 0..(10_000 / STEP_MS) {
        let now = T0 + step * STEP_MS;
        for (s, (k, from)) in sybils.iter().enumerate() {
            let inbox = open(k);
            for j in 0..2u64 {
                let envelope = vec![(s % 251) as u8 ^ j as u8; 4096];
                let mut e = envelope;
                e[..8].copy_from_slice(&(step * 2 + j).to_be_bytes());
                let req = Request::unsigned(body(inbox, now, 0, store_op(&e, expiry)));
                for r in &mut replicas {
                    match ask(r, now, k.peer_id(), from, &req).answer {
                        Answer::Stored { .. } => flood_stored += 1,
                        _ => flood_refused += 1,
                    }
                }
            }
        }
        for (i, r) in replicas.iter_mut().enumerate() {
            if quorum.is_met() || now < retry_at[i] {
                continue;
            }
            nonce += 1;
            let req = Request::signed(
                body_for(
                    r.peer_id(),
                    mailbox,
                    now,
                    nonce,
                    store_op(&new_message, expiry),
                ),
                &contact_key,
            );
            match ask(r, now, contact_peer, &contact_addr, &req).answer {
                Answer::Stored {
                    signature,
                    expiry,
                    proof,
                } => {
                    // Each replica answers from its own network.
                    let a = addr(&format!("/ip4/203.0.{i}.1/tcp/1"));
                    quorum
                        .add(r.peer_id(), &a, signature, proof, expiry)
                        .unwrap();
                    retry_at[i] = u64::MAX;
                }
                Answer::Busy { retry_after_ms } | Answer::Quota { retry_after_ms } => {
                    retry_at[i] = now + retry_after_ms;
                }
                other => panic!("contact's store refused: {other:?}"),
            }
        }
        if quorum.is_met() && stored_at.is_none() {
            stored_at = Some(now - T0);
        }
    }
    println!(
        "flood: {flood_stored} stores accepted, {flood_refused} refused; contact stored at {stored_at:?} ms"
    );
    assert!(flood_refused > 0, "the flood was never held back");
    assert!(
        stored_at.is_some_and(|t| t <= 10_000),
        "the contact's message did not reach {W} receipts within 10 s"
    );
    // Nothing of the contact's was evicted.
    for r in &mut replicas {
        let fetch = Request::signed(
            body_for(r.peer_id(), mailbox, T0 + 10_000, 99, fetch_op(0)),
            &contact_key,
        );
        let got = items(&ask(r, T0 + 10_000, contact_peer, &contact_addr, &fetch).answer);
        assert_eq!(&got[..20], &earlier[..]);
        assert!(r.total_bytes() <= 8 * 1024 * 1024);
    }
}
