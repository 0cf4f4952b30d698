//! Helpers shared by the mailbox tests: mailboxes, requests, replicas.

#![allow(dead_code, unreachable_pub)]

use bytes::Bytes;
use shoal_identity::{Keypair, PeerId};
use shoal_mailbox::{
    Answer, Class, Descriptor, Handled, MemoryStore, Op, Replica, ReplicaConfig, ReplicaStore,
    Request, RequestBody, Retention, WritePolicy,
};
use shoal_transport::Multiaddr;

pub mod service;

/// 2023-11-14, in milliseconds.
pub const T0: u64 = 1_700_000_000_000;

pub fn key(n: u8) -> Keypair {
    Keypair::from_secret_bytes(&[n; 32])
}

pub fn owned(owner: &Keypair) -> Descriptor {
    Descriptor {
        key: owner.public(),
        write: WritePolicy::Owner,
        retention: Retention::UntilAck,
    }
}

pub fn open(owner: &Keypair) -> Descriptor {
    Descriptor {
        write: WritePolicy::Open,
        ..owned(owner)
    }
}

pub fn addr(text: &str) -> Multiaddr {
    text.parse().unwrap()
}

pub fn replica(n: u8) -> Replica<MemoryStore> {
    Replica::open(key(n), MemoryStore::new(), ReplicaConfig::default(), T0).unwrap()
}

pub fn replica_on<S: ReplicaStore>(n: u8, store: S, config: ReplicaConfig) -> Replica<S> {
    Replica::open(key(n), store, config, T0).unwrap()
}

/// A request body for replica 1 at `unix_ms` with a nonce made from
/// `nonce`.
pub fn body(descriptor: Descriptor, unix_ms: u64, nonce: u64, op: Op) -> RequestBody {
    body_for(key(1).peer_id(), descriptor, unix_ms, nonce, op)
}

/// A request body for `replica`.
pub fn body_for(
    replica: PeerId,
    descriptor: Descriptor,
    unix_ms: u64,
    nonce: u64,
    op: Op,
) -> RequestBody {
    let mut n = [0u8; 16];
    n[..8].copy_from_slice(&nonce.to_be_bytes());
    RequestBody {
        descriptor,
        unix_ms,
        nonce: n,
        op,
        replica,
    }
}

pub fn store_op(envelope: &[u8], expiry_secs: u64) -> Op {
    Op::Store {
        envelope: Bytes::copy_from_slice(envelope),
        expiry: expiry_secs,
        class: Class::Normal,
    }
}

pub fn fetch_op(after: u64) -> Op {
    Op::Fetch {
        after,
        limit: 64,
        subscribe: false,
    }
}

/// Sends `request` to `replica` from `peer` at `from`, at `now_ms`.
pub fn ask<S: ReplicaStore>(
    replica: &mut Replica<S>,
    now_ms: u64,
    peer: PeerId,
    from: &Multiaddr,
    request: &Request,
) -> Handled {
    replica.handle(now_ms, peer, from, 1, request)
}

pub fn is_stored(answer: &Answer) -> bool {
    matches!(answer, Answer::Stored { .. })
}

pub fn refusal(answer: &Answer) -> Option<shoal_mailbox::Refusal> {
    match answer {
        Answer::Refused { reason, .. } => Some(*reason),
        _ => None,
    }
}

pub fn items(answer: &Answer) -> Vec<Bytes> {
    match answer {
        Answer::Items { items, .. } => items.iter().map(|i| i.envelope.clone()).collect(),
        other => panic!("expected items, got {other:?}"),
    }
}
