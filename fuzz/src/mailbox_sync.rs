//! The `mailbox_sync` target: what replicas send each other to keep a
//! mailbox whole. Range lists into the codec and into a set's answer;
//! sync frames into a live replica core that holds a mailbox of genuine
//! envelopes and tombstones.

use std::time::{Duration, Instant};

use bytes::Bytes;
use shoal::{Core, Now, Remote};
use shoal_identity::{Keypair, PeerId};
use shoal_mailbox::store::{AckProof, Handoff};
use shoal_mailbox::sync::{
    ItemSet, MailboxSync, Mode, Role, State, SyncItem, SyncKey, SyncMessage, check_order,
    decode_ranges, encode_ranges,
};
use shoal_mailbox::{
    Class, Config, EnvelopeHash, Frame, Mailbox, MemoryStore, Op, Replica, ReplicaConfig,
    ReplicaStore, Request, RequestBody,
};

use crate::length_prefixed;
use crate::mailbox::{UNIX_MS, descriptor, owner};

fn signed(n: u8, op: Op) -> Request {
    let body = RequestBody {
        descriptor: descriptor(),
        unix_ms: UNIX_MS,
        nonce: [n; 16],
        op,
        replica: Keypair::from_secret_bytes(&[1; 32]).peer_id(),
    };
    Request::signed(body, &owner())
}

fn store_request(n: u8) -> Request {
    signed(
        n,
        Op::Store {
            envelope: Bytes::from(vec![n; 40]),
            expiry: UNIX_MS / 1000 + 3600,
            class: Class::Normal,
        },
    )
}

/// The set the codec answers from: 40 items, some tombstones.
fn item_set() -> ItemSet {
    ItemSet::new(
        (0..40u8)
            .map(|i| SyncItem {
                key: SyncKey {
                    expiry: UNIX_MS / 1000 + u64::from(i % 7) * 60,
                    hash: EnvelopeHash::of(&[i]),
                },
                state: if i % 5 == 0 {
                    State::Tombstone
                } else {
                    State::Held
                },
            })
            .collect(),
    )
}

/// Genuine sync frames, by name, from a member of the mailbox: its first
/// message, a hand-off of two envelopes and a tombstone, and a request for
/// what the core holds.
pub fn genuine_frames() -> Vec<(&'static str, Bytes)> {
    let mailbox = descriptor().id();
    let peer_set = ItemSet::new(Vec::new());
    let ack = signed(
        30,
        Op::Ack {
            hashes: vec![EnvelopeHash::of(&[3u8; 40])],
        },
    );
    let handoff = |r: Request| Handoff::Envelope {
        body: r.body_bytes,
        signature: r.signature,
        expiry: UNIX_MS / 1000 + 3600,
    };
    let frame = |id: u64, sync: SyncMessage| Frame::Sync { id, sync }.encode();
    vec![
        (
            "open",
            frame(
                1,
                SyncMessage {
                    mailboxes: vec![MailboxSync {
                        mailbox,
                        role: Role::Member,
                        ranges: peer_set.initiate(),
                        need: Vec::new(),
                    }],
                    items: Vec::new(),
                },
            ),
        ),
        (
            "handoff",
            frame(
                2,
                SyncMessage {
                    mailboxes: Vec::new(),
                    items: vec![
                        (mailbox, handoff(store_request(20))),
                        (mailbox, handoff(store_request(21))),
                        (
                            mailbox,
                            Handoff::Tombstones {
                                ack: AckProof {
                                    body: ack.body_bytes.clone(),
                                    signature: ack.signature.unwrap_or([0; 64]),
                                },
                                entries: vec![(
                                    EnvelopeHash::of(&[3u8; 40]),
                                    UNIX_MS / 1000 + 3600,
                                )],
                            },
                        ),
                    ],
                },
            ),
        ),
        (
            "need",
            frame(
                3,
                SyncMessage {
                    mailboxes: vec![MailboxSync {
                        mailbox,
                        role: Role::Member,
                        ranges: Vec::new(),
                        need: vec![EnvelopeHash::of(&[1u8; 40])],
                    }],
                    items: Vec::new(),
                },
            ),
        ),
    ]
}

/// Runs `frames` from one peer through a replica core that holds the
/// target's mailbox (4 envelopes, one acked) and knows only that peer, so
/// it is a member of every mailbox; returns how many frames it answered
/// and items it took.
pub fn deliver(frames: &[&[u8]]) -> usize {
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
    core.peer_connected(now, &remote);
    // The core's own mailbox: stores and an ack from its owner.
    for n in 0..4u8 {
        let frame = Frame::Request {
            id: u64::from(n),
            request: store_request(n),
        };
        let _ = core.handle_message(now, &remote, &frame.encode());
    }
    let ack = Frame::Request {
        id: 9,
        request: signed(
            9,
            Op::Ack {
                hashes: vec![EnvelopeHash::of(&[0u8; 40])],
            },
        ),
    };
    let _ = core.handle_message(now, &remote, &ack.encode());
    core.set_neighbours([peer]);
    while core.poll_transmit().is_some() {}
    let mut answered = 0;
    for (i, frame) in frames.iter().enumerate() {
        let step = 500 * i as u64;
        let now = Now::at(start + Duration::from_millis(step), UNIX_MS + step);
        let _ = core.handle_message(now, &remote, frame);
        core.handle_timeout(now);
        while core.poll_transmit().is_some() {
            answered += 1;
        }
        while core.poll_event().is_some() {}
    }
    let taken = core
        .replica()
        .map_or(0, |r| r.stats().handed_in + r.stats().tombstones_in);
    answered + usize::try_from(taken).unwrap_or(usize::MAX)
}

/// `data[0]` picks what is fed: 0: range bytes into the decoder (what it
/// decodes must re-encode to something that decodes the same) and into a
/// set's answer (which must be in order and round-trip); 1: sync frames
/// (each preceded by a 2-byte length) from one peer into a replica core;
/// 2: one frame into the decoder, which must round-trip.
pub fn mailbox_sync(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 3 {
        0 => {
            let Ok(ranges) = decode_ranges(rest) else {
                return;
            };
            let again = decode_ranges(&encode_ranges(&ranges));
            let skipped = ranges.iter().all(|r| r.mode == Mode::Skip);
            match again {
                Ok(again) if skipped => assert!(again.is_empty(), "all skipped encodes empty"),
                Ok(again) => assert_eq!(again, ranges, "ranges round trip"),
                Err(e) => panic!("own encoding refused: {e}"),
            }
            let step = item_set().respond(&ranges);
            assert!(check_order(&step.ranges), "an answer out of order");
            let answer = decode_ranges(&encode_ranges(&step.ranges));
            assert!(answer.is_ok(), "an answer that does not decode");
        }
        1 => {
            let frames: Vec<&[u8]> = length_prefixed(rest).collect();
            deliver(&frames);
        }
        _ => {
            if let Ok(frame) = Frame::decode(rest) {
                let again = Frame::decode(&frame.encode());
                assert_eq!(again.as_ref(), Ok(&frame), "decode/encode round trip");
            }
        }
    }
}
