//! Replicas keep a mailbox whole: a newcomer is fed only once it says it
//! is a member, a leaving replica hands over and takes nothing, a replica
//! away during an ack loses the envelope on its return, and nothing is
//! taken without the owner's signature. Through the replica's public sync
//! API, with the messages passed by hand.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use common::*;
use shoal_identity::Keypair;
use shoal_mailbox::store::{AckProof, Handoff};
use shoal_mailbox::sync::{Role, SyncMessage};
use shoal_mailbox::{
    Answer, Descriptor, EnvelopeHash, MailboxId, MemoryStore, Op, Replica, ReplicaConfig, Request,
};

struct Node {
    replica: Replica<MemoryStore>,
    key: Keypair,
    members_of: HashSet<MailboxId>,
}

fn node(n: u8) -> Node {
    Node {
        replica: replica_on(n, MemoryStore::new(), ReplicaConfig::default()),
        key: key(n),
        members_of: HashSet::new(),
    }
}

/// Runs a session `a` opens with `b` about `mailboxes`; returns the
/// mailboxes `b` confirmed in its first answer and the messages exchanged.
fn session(
    nodes: &mut [Node],
    a: usize,
    b: usize,
    mailboxes: &[(MailboxId, Role)],
) -> (Vec<MailboxId>, usize) {
    let mut message = nodes[a].replica.sync_open(mailboxes).unwrap();
    let (mut from, mut to) = (a, b);
    let mut confirmed = Vec::new();
    for n in 1..=20 {
        let peer = nodes[from].key.peer_id();
        let at = addr(&format!("/ip4/10.0.{from}.1/tcp/1"));
        let node = &mut nodes[to];
        let members = node.members_of.clone();
        let handled = node
            .replica
            .sync_handle(T0, peer, &at, &message, &|m| members.contains(m))
            .unwrap();
        if n == 2 {
            confirmed.extend(handled.in_sync);
        }
        if handled.reply.is_empty() {
            return (confirmed, n);
        }
        message = handled.reply;
        std::mem::swap(&mut from, &mut to);
    }
    panic!("the session did not end");
}

/// Stores `n` envelopes signed by `owner` at `node`; returns them.
fn store_many(node: &mut Node, owner: &Keypair, descriptor: Descriptor, n: u8) -> Vec<Bytes> {
    static NONCE: AtomicU64 = AtomicU64::new(1 << 20);
    let from = addr("/ip4/10.9.0.1/tcp/1");
    let sender = key(99).peer_id();
    (0..n)
        .map(|i| {
            let envelope = Bytes::from(vec![i; 200]);
            let req = Request::signed(
                body_for(
                    node.key.peer_id(),
                    descriptor,
                    T0,
                    NONCE.fetch_add(1, Ordering::Relaxed),
                    store_op(&envelope, T0 / 1000 + 86_400),
                ),
                owner,
            );
            let answer = node.replica.handle(T0, sender, &from, 1, &req).answer;
            assert!(is_stored(&answer), "{answer:?}");
            envelope
        })
        .collect()
}

fn ack_at(node: &mut Node, owner: &Keypair, descriptor: Descriptor, envelopes: &[Bytes]) {
    let hashes = envelopes.iter().map(|e| EnvelopeHash::of(e)).collect();
    let req = Request::signed(
        body_for(node.key.peer_id(), descriptor, T0, 7, Op::Ack { hashes }),
        owner,
    );
    let answer = node
        .replica
        .handle(T0, key(98).peer_id(), &addr("/ip4/10.8.0.1/tcp/1"), 2, &req)
        .answer;
    assert!(matches!(answer, Answer::Acked { .. }), "{answer:?}");
}

fn held(node: &mut Node, owner: &Keypair, descriptor: Descriptor) -> Vec<Bytes> {
    static NONCE: AtomicU64 = AtomicU64::new(1 << 40);
    let nonce = NONCE.fetch_add(1, Ordering::Relaxed);
    let req = Request::signed(
        body_for(node.key.peer_id(), descriptor, T0, nonce, fetch_op(0)),
        owner,
    );
    let answer = node
        .replica
        .handle(T0, key(97).peer_id(), &addr("/ip4/10.7.0.1/tcp/1"), 3, &req)
        .answer;
    let mut got = items(&answer);
    got.sort();
    got
}

#[test]
fn a_newcomer_is_fed_once_it_says_it_is_a_member_and_takes_everything() {
    let owner = key(10);
    let descriptor = owned(&owner);
    let mailbox = descriptor.id();
    let mut nodes = vec![node(1), node(2), node(3)];
    nodes[0].members_of.insert(mailbox);
    nodes[1].members_of.insert(mailbox);
    let envelopes = store_many(&mut nodes[0], &owner, descriptor, 30);
    ack_at(&mut nodes[0], &owner, descriptor, &envelopes[..5]);

    // Node 3 is not a member: it refuses, and is handed nothing.
    let (_, messages) = session(&mut nodes, 0, 2, &[(mailbox, Role::Member)]);
    assert_eq!(messages, 2, "refused at once");
    assert_eq!(nodes[0].replica.stats().handed_out, 0);
    assert!(nodes[2].replica.mailboxes().unwrap().is_empty());

    // Node 2, a newcomer member, gets the 25 envelopes and 5 tombstones.
    session(&mut nodes, 0, 1, &[(mailbox, Role::Member)]);
    assert_eq!(
        held(&mut nodes[1], &owner, descriptor),
        envelopes[5..].to_vec()
    );
    assert_eq!(nodes[1].replica.stats().handed_in, 25);
    assert_eq!(nodes[1].replica.stats().tombstones_in, 5);
    assert_eq!(nodes[1].replica.store().tombstones(), 5);
    // What it took, it hands on with the owner's proof: equal sets now.
    let (confirmed, messages) = session(&mut nodes, 0, 1, &[(mailbox, Role::Member)]);
    assert_eq!((confirmed, messages), (vec![mailbox], 2));
}

#[test]
fn a_replica_away_during_an_ack_deletes_the_envelope_when_it_returns() {
    let owner = key(10);
    let descriptor = owned(&owner);
    let mailbox = descriptor.id();
    let mut nodes = vec![node(1), node(2)];
    for n in &mut nodes {
        n.members_of.insert(mailbox);
    }
    let first = store_many(&mut nodes[0], &owner, descriptor, 10);
    store_many(&mut nodes[1], &owner, descriptor, 10);
    // Node 1 was away when the owner acked at node 2.
    ack_at(&mut nodes[1], &owner, descriptor, &first);
    assert_eq!(held(&mut nodes[0], &owner, descriptor).len(), 10);
    session(&mut nodes, 0, 1, &[(mailbox, Role::Member)]);
    assert!(held(&mut nodes[0], &owner, descriptor).is_empty());
    assert_eq!(nodes[0].replica.usage(&mailbox).normal, 0);
    // Syncing the other way brings nothing back.
    session(&mut nodes, 1, 0, &[(mailbox, Role::Member)]);
    assert!(held(&mut nodes[1], &owner, descriptor).is_empty());
    // A late retry of an acked envelope gets a receipt and is not kept.
    store_many(&mut nodes[0], &owner, descriptor, 1);
    assert!(held(&mut nodes[0], &owner, descriptor).is_empty());
}

#[test]
fn a_leaving_replica_hands_over_and_takes_nothing() {
    let owner = key(10);
    let descriptor = owned(&owner);
    let mailbox = descriptor.id();
    let mut nodes = vec![node(1), node(2)];
    nodes[1].members_of.insert(mailbox);
    let old = store_many(&mut nodes[0], &owner, descriptor, 12);
    // The member holds one envelope the leaving node lacks.
    let extra = Bytes::from(vec![200u8; 50]);
    let req = Request::signed(
        body_for(
            nodes[1].key.peer_id(),
            descriptor,
            T0,
            1,
            store_op(&extra, T0 / 1000 + 600),
        ),
        &owner,
    );
    let from = addr("/ip4/10.9.0.1/tcp/1");
    assert!(is_stored(
        &nodes[1]
            .replica
            .handle(T0, key(99).peer_id(), &from, 1, &req)
            .answer
    ));
    let (_, _) = session(&mut nodes, 0, 1, &[(mailbox, Role::Leaving)]);
    let mut want = old.clone();
    want.push(extra);
    want.sort();
    assert_eq!(held(&mut nodes[1], &owner, descriptor), want);
    assert_eq!(
        nodes[0].replica.stats().handed_in,
        0,
        "a leaving node takes nothing"
    );
    // The next session confirms the member holds it all.
    let (confirmed, _) = session(&mut nodes, 0, 1, &[(mailbox, Role::Leaving)]);
    assert_eq!(confirmed, vec![mailbox]);
    nodes[0].replica.drop_mailbox(&mailbox).unwrap();
    assert!(nodes[0].replica.mailboxes().unwrap().is_empty());
    assert_eq!(nodes[0].replica.total_bytes(), 0);
}

#[test]
fn nothing_is_taken_without_the_owners_signature() {
    let owner = key(10);
    let descriptor = owned(&owner);
    let mailbox = descriptor.id();
    let mut victim = node(2);
    victim.members_of.insert(mailbox);
    let mut honest = node(1);
    let kept = store_many(&mut honest, &owner, descriptor, 1);
    let kept_hash = EnvelopeHash::of(&kept[0]);
    store_many(&mut victim, &owner, descriptor, 1);

    let forger = key(66);
    let other = owned(&key(11));
    let signed_store = |signer: &Keypair, d: Descriptor, envelope: &[u8]| {
        let r = Request::signed(body(d, T0, 5, store_op(envelope, T0 / 1000 + 600)), signer);
        Handoff::Envelope {
            body: r.body_bytes,
            signature: r.signature,
            expiry: T0 / 1000 + 600,
        }
    };
    let signed_ack = |signer: &Keypair, d: Descriptor| {
        let r = Request::signed(
            body(
                d,
                T0,
                6,
                Op::Ack {
                    hashes: vec![kept_hash],
                },
            ),
            signer,
        );
        Handoff::Tombstones {
            ack: AckProof {
                body: r.body_bytes,
                signature: r.signature.unwrap(),
            },
            entries: vec![(kept_hash, T0 / 1000 + 600)],
        }
    };
    let mut tampered = signed_store(&owner, descriptor, b"genuine");
    if let Handoff::Envelope { body, .. } = &mut tampered {
        let mut b = body.to_vec();
        let last = b.len() - 1;
        b[last] ^= 1;
        *body = Bytes::from(b);
    }
    let forged = SyncMessage {
        mailboxes: Vec::new(),
        items: vec![
            // Signed by a stranger, for the victim's mailbox.
            (mailbox, signed_store(&forger, descriptor, b"junk")),
            // The owner's signature over other bytes.
            (mailbox, tampered),
            // Another mailbox's genuine store, named as this one.
            (mailbox, signed_store(&key(11), other, b"elsewhere")),
            // A tombstone signed by a stranger.
            (mailbox, signed_ack(&forger, descriptor)),
            // Another mailbox's genuine ack.
            (mailbox, signed_ack(&key(11), other)),
        ],
    };
    let members = victim.members_of.clone();
    victim
        .replica
        .sync_handle(
            T0,
            forger.peer_id(),
            &addr("/ip4/10.6.0.1/tcp/1"),
            &forged,
            &|m| members.contains(m),
        )
        .unwrap();
    assert_eq!(victim.replica.stats().handoffs_refused, 5);
    assert_eq!(victim.replica.stats().handed_in, 0);
    assert_eq!(held(&mut victim, &owner, descriptor), kept);
    // The owner's own, handed over by anyone, is taken.
    let genuine = SyncMessage {
        mailboxes: Vec::new(),
        items: vec![(mailbox, signed_ack(&owner, descriptor))],
    };
    victim
        .replica
        .sync_handle(
            T0,
            forger.peer_id(),
            &addr("/ip4/10.6.0.1/tcp/1"),
            &genuine,
            &|m| members.contains(m),
        )
        .unwrap();
    assert!(held(&mut victim, &owner, descriptor).is_empty());
}

#[test]
fn a_replica_restarted_over_its_store_syncs_without_being_spoken_to() {
    // A replica comes back with a mailbox on disk; no peer speaks the
    // mailbox protocol to it. Started by its host, it opens sync sessions
    // of its own: otherwise what it holds (acked elsewhere meanwhile)
    // would stay until expiry.
    use shoal::{Core, Now};
    use shoal_mailbox::{Config, DynReplica, Frame, Mailbox};
    let owner = key(40);
    let descriptor = owned(&owner);
    let store: Box<dyn shoal_mailbox::ReplicaStore> = Box::new(MemoryStore::new());
    let mut replica: DynReplica =
        Replica::open(key(1), store, ReplicaConfig::default(), T0).unwrap();
    let request = Request::signed(
        body(descriptor, T0, 1, store_op(b"waiting", T0 / 1000 + 3600)),
        &owner,
    );
    let from = addr("/ip4/10.0.0.9/tcp/1");
    assert!(is_stored(
        &replica
            .handle(T0, key(9).peer_id(), &from, 1, &request)
            .answer
    ));
    let mut core = Mailbox::new(Config::default(), Some(replica), [7; 32]);
    let t0 = std::time::Instant::now();
    let now = |secs: u64| Now {
        instant: t0 + std::time::Duration::from_secs(secs),
        unix_ms: T0 + secs * 1000,
    };
    core.set_neighbours([key(2).peer_id()]);
    assert_eq!(
        core.poll_timeout(),
        None,
        "nothing runs before it is started"
    );
    core.start(now(0));
    let due = core.poll_timeout().unwrap();
    core.handle_timeout(Now {
        instant: due + Config::default().sync_interval,
        unix_ms: T0 + 2 * Config::default().sync_interval.as_millis() as u64,
    });
    let sent: Vec<_> = std::iter::from_fn(|| core.poll_transmit()).collect();
    assert!(
        sent.iter().any(|t| t.peer == key(2).peer_id()
            && matches!(Frame::decode(&t.bytes), Ok(Frame::Sync { .. }))),
        "no sync session opened: {sent:?}"
    );
}
