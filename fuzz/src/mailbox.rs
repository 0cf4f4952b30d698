//! The `mailbox_messages` target: mailbox frames into the decoder and into
//! a live node core that keeps mailboxes, and descriptors into theirs.

use std::time::{Duration, Instant};

use bytes::Bytes;
use shoal::{Core, Now, Remote};
use shoal_identity::{Keypair, PeerId};
use shoal_mailbox::{
    Answer, Class, Config, Descriptor, EnvelopeHash, Frame, Item, Mailbox, MemoryStore, Op,
    Replica, ReplicaConfig, ReplicaStore, Request, RequestBody, Retention, WritePolicy,
};

/// The wall clock of the target's core.
pub(crate) const UNIX_MS: u64 = 1_800_000_000_000;

/// The key of the targets' mailbox.
pub(crate) fn owner() -> Keypair {
    Keypair::from_secret_bytes(&[9; 32])
}

/// The targets' mailbox: owner-written, until ack.
pub(crate) fn descriptor() -> Descriptor {
    Descriptor {
        key: owner().public(),
        write: WritePolicy::Owner,
        retention: Retention::UntilAck,
    }
}

fn request(n: u8, op: Op) -> Bytes {
    let body = RequestBody {
        descriptor: descriptor(),
        unix_ms: UNIX_MS,
        nonce: [n; 16],
        op,
        replica: Keypair::from_secret_bytes(&[1; 32]).peer_id(),
    };
    Frame::Request {
        id: u64::from(n),
        request: Request::signed(body, &owner()),
    }
    .encode()
}

/// Genuine frames, by name: signed store, fetch and ack requests of the
/// target's owner, and the answer and push its core's own fetch waits for.
pub fn genuine_frames() -> Vec<(&'static str, Bytes)> {
    let envelope = Bytes::from_static(b"sealed envelope");
    let item = Item {
        seq: 1,
        envelope: envelope.clone(),
        expiry: UNIX_MS / 1000 + 60,
    };
    vec![
        (
            "store",
            request(
                2,
                Op::Store {
                    envelope: envelope.clone(),
                    expiry: UNIX_MS / 1000 + 60,
                    class: Class::Normal,
                },
            ),
        ),
        (
            "fetch",
            request(
                3,
                Op::Fetch {
                    after: 0,
                    limit: 8,
                    subscribe: true,
                },
            ),
        ),
        (
            "ack",
            request(
                4,
                Op::Ack {
                    hashes: vec![EnvelopeHash::of(&envelope)],
                },
            ),
        ),
        (
            "answer",
            Frame::Answer {
                id: 1,
                answer: Answer::Items {
                    items: vec![item.clone()],
                    more: false,
                },
            }
            .encode(),
        ),
        ("push", Frame::Push { id: 1, item }.encode()),
        (
            "register",
            request(
                5,
                Op::Register {
                    endpoint: shoal_mailbox::WakeEndpoint {
                        peer: Keypair::from_secret_bytes(&[9; 32]).peer_id(),
                        addrs: vec!["/ip4/10.0.0.9/tcp/4001".parse().expect("a valid address")],
                        token: shoal_mailbox::WakeToken([0x5a; 16]),
                    },
                    until: UNIX_MS / 1000 + 3600,
                },
            ),
        ),
        (
            "wake",
            Frame::Wake {
                token: shoal_mailbox::WakeToken([0x5a; 16]),
            }
            .encode(),
        ),
    ]
}

/// Runs `frames` through a replica core as in the target (`subscribe`: its
/// own fetch subscribes); returns how many frames it answered or turned
/// into events.
pub fn deliver(frames: &[&[u8]], subscribe: bool) -> usize {
    let key = Keypair::from_secret_bytes(&[1; 32]);
    let store: Box<dyn ReplicaStore> = Box::new(MemoryStore::new());
    let Ok(replica) = Replica::open(key, store, ReplicaConfig::default(), UNIX_MS) else {
        return 0;
    };
    let mut core = Mailbox::new(Config::default(), Some(replica), [3; 32]);
    let peer = PeerId::from_bytes([7; 32]);
    let Ok(addr) = "/ip4/10.1.2.3/tcp/4001".parse() else {
        return 0;
    };
    let remote = Remote::dialled(peer, addr);
    let start = Instant::now();
    let now = Now::at(start, UNIX_MS);
    core.fetch(now, peer, descriptor(), &owner(), 0, 8, subscribe);
    core.peer_connected(now, &remote);
    while core.poll_transmit().is_some() {}
    let mut effects = 0;
    for (i, frame) in frames.iter().enumerate() {
        let step = 500 * i as u64;
        let now = Now::at(start + Duration::from_millis(step), UNIX_MS + step);
        let _ = core.handle_message(now, &remote, frame);
        core.handle_timeout(now);
        while core.poll_transmit().is_some() {
            effects += 1;
        }
        while core.poll_event().is_some() {
            effects += 1;
        }
    }
    core.peer_disconnected(Now::at(start, UNIX_MS), peer);
    while core.poll_event().is_some() {}
    effects
}

use crate::length_prefixed;

/// `data[0]` picks what is fed: 0, 1: frames (each preceded by a 2-byte
/// length) from one peer into a replica core, the first of them also a
/// request the core makes of that peer (so answers and pushes meet a
/// pending request); 2: one frame into the decoder, which must re-encode
/// what it decodes to something that decodes the same; 3: a descriptor.
pub fn mailbox_messages(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 4 {
        0 | 1 => {
            let frames: Vec<&[u8]> = length_prefixed(rest).collect();
            deliver(&frames, which % 4 == 1);
        }
        2 => {
            if let Ok(frame) = Frame::decode(rest) {
                let again = Frame::decode(&frame.encode());
                assert_eq!(again.as_ref(), Ok(&frame), "decode/encode round trip");
            }
        }
        _ => {
            if let Ok(d) = Descriptor::decode(rest) {
                assert_eq!(&d.encode()[..], rest, "descriptor round trip");
            }
        }
    }
}
