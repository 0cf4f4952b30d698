//! The core fed bytes and time directly: one node under test, the other
//! side played by hand.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use shoal_identity::{Keypair, PeerId};
use shoal_kad::{
    Config, DecodeError, Error, Event, Kademlia, Key, Record, RecordError, SignedRecord,
    protocol::{Body, Message, StoreStatus},
    table::Contact,
};
use shoal_transport::Multiaddr;

const UNIX: u64 = 1_700_000_000;

fn addr(i: u32) -> Vec<Multiaddr> {
    vec![format!("/memory/{i}").parse().unwrap()]
}

fn node(config: Config) -> Kademlia {
    Kademlia::new(PeerId::from_bytes([0; 32]), config, 7)
}

fn send(core: &mut Kademlia, now: Instant, from: PeerId, body: Body) -> Result<(), Error> {
    let bytes = Message {
        request_id: 77,
        body,
    }
    .encode();
    core.handle_message(now, UNIX, from, &addr(9), &bytes)
}

fn answers(core: &mut Kademlia) -> Vec<(PeerId, Message)> {
    std::iter::from_fn(|| core.poll_transmit())
        .map(|t| (t.to, Message::decode(&t.bytes).unwrap()))
        .collect()
}

fn keypair(i: u8) -> Keypair {
    Keypair::from_secret_bytes(&[i; 32])
}

fn signed(kp: &Keypair, key: u8, seq: u64, expires: u64) -> SignedRecord {
    let record = Record {
        key: Key::from_bytes([key; 32]),
        kind: "t".into(),
        value: Bytes::from_static(b"v"),
        publisher: kp.peer_id(),
        seq,
        expires,
    };
    SignedRecord::sign(kp, record).unwrap()
}

/// Peers whose keys fall in bucket 255 of the core's local key.
fn far_peers(core: &Kademlia, n: usize) -> Vec<PeerId> {
    let local = Key::for_peer(&core.local_peer_id());
    (1u32..)
        .map(|i| {
            let mut b = [0u8; 32];
            b[..4].copy_from_slice(&i.to_be_bytes());
            PeerId::from_bytes(b)
        })
        .filter(|p| local.distance(&Key::for_peer(p)).bucket_index() == Some(255))
        .take(n)
        .collect()
}

#[test]
fn malformed_and_illegal_input_is_an_error() {
    let mut core = node(Config::default());
    let now = Instant::now();
    let peer = PeerId::from_bytes([1; 32]);
    assert!(matches!(
        core.handle_message(now, UNIX, peer, &addr(1), &[0xff, 0xff, 0xff]),
        Err(Error::Decode(DecodeError::Malformed(_)))
    ));
    assert!(matches!(
        core.handle_message(now, UNIX, peer, &addr(1), &[]),
        Err(Error::Decode(DecodeError::UnknownType))
    ));
    // A tampered record in a STORE.
    let kp = keypair(3);
    let record = signed(&kp, 1, 1, UNIX + 60);
    let mut bytes = Message {
        request_id: 1,
        body: Body::Store(record),
    }
    .encode()
    .to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    assert_eq!(
        core.handle_message(now, UNIX, peer, &addr(1), &bytes),
        Err(Error::Decode(DecodeError::Record(
            RecordError::BadSignature
        )))
    );
    // An answer of the wrong type to our request.
    core.add_address(now, peer, addr(1));
    core.find_node(now, Key::from_bytes([5; 32])).unwrap();
    let sent = answers(&mut core);
    assert_eq!(sent.len(), 1);
    let rid = sent[0].1.request_id;
    let pong = Message {
        request_id: rid,
        body: Body::Pong,
    };
    assert_eq!(
        core.handle_message(now, UNIX, peer, &addr(1), &pong.encode()),
        Err(Error::UnexpectedResponse(rid))
    );
    // Answers nobody waits for are ignored, not errors.
    assert_eq!(send(&mut core, now, peer, Body::Pong), Ok(()));
    // Nothing panicked and the lookup failed over cleanly.
    let finished =
        std::iter::from_fn(|| core.poll_event()).any(|e| matches!(e, Event::QueryFinished { .. }));
    assert!(finished);
}

#[test]
fn requests_are_answered() {
    let mut core = node(Config::default());
    let now = Instant::now();
    let peers: Vec<PeerId> = (1..=30u8).map(|i| PeerId::from_bytes([i; 32])).collect();
    for (i, p) in peers.iter().enumerate() {
        core.add_address(now, *p, addr(i as u32));
    }
    let asker = peers[0];
    send(&mut core, now, asker, Body::Ping).unwrap();
    send(
        &mut core,
        now,
        asker,
        Body::FindNode(Key::from_bytes([9; 32])),
    )
    .unwrap();
    let got = answers(&mut core);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].0, asker);
    assert_eq!(got[0].1.body, Body::Pong);
    assert_eq!(got[0].1.request_id, 77);
    let Body::Nodes(closer) = &got[1].1.body else {
        panic!("expected nodes");
    };
    assert_eq!(closer.len(), 20);
    assert!(closer.iter().all(|c| c.peer != asker));
    let target = Key::from_bytes([9; 32]);
    let d: Vec<_> = closer.iter().map(|c| c.key.distance(&target)).collect();
    assert!(d.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn answers_name_only_contacts_with_an_address() {
    // Peers that connected to us before identify told us where they listen
    // are in the table without an address; an asker could not dial them,
    // so answers leave them out and name the closest dialable contacts.
    let mut core = node(Config::default());
    let now = Instant::now();
    let peers: Vec<PeerId> = (1..=10u8).map(|i| PeerId::from_bytes([i; 32])).collect();
    for (i, p) in peers.iter().enumerate() {
        if i % 2 == 0 {
            core.add_address(now, *p, addr(i as u32));
        } else {
            core.peer_connected(now, *p, Vec::new());
        }
    }
    let asker = peers[0];
    for body in [
        Body::FindNode(Key::from_bytes([9; 32])),
        Body::FindValue(Key::from_bytes([9; 32])),
    ] {
        send(&mut core, now, asker, body).unwrap();
        let got = answers(&mut core);
        assert_eq!(got.len(), 1);
        let closer = match &got[0].1.body {
            Body::Nodes(closer) | Body::Value { closer, .. } => closer.clone(),
            other => panic!("expected contacts, got {other:?}"),
        };
        // 5 peers have an address; the asker is left out.
        assert_eq!(closer.len(), 4);
        assert!(
            closer
                .iter()
                .all(|c| c.peer != asker && !c.addrs.is_empty())
        );
    }
    // Once identify brings an address, the peer is named again.
    core.add_address(now, peers[1], addr(1));
    send(
        &mut core,
        now,
        asker,
        Body::FindNode(Key::from_bytes([9; 32])),
    )
    .unwrap();
    let got = answers(&mut core);
    let Body::Nodes(closer) = &got[0].1.body else {
        panic!("expected nodes");
    };
    assert!(closer.iter().any(|c| c.peer == peers[1]));
}

#[test]
fn full_bucket_pings_oldest_before_evicting() {
    let config = Config {
        k: 3,
        ..Config::default()
    };
    let mut core = node(config);
    let t0 = Instant::now();
    let p = far_peers(&core, 5);
    for (i, peer) in p.iter().take(3).enumerate() {
        core.add_address(t0, *peer, addr(i as u32));
    }
    assert!(answers(&mut core).is_empty());
    // A fourth contact: the oldest (p[0]) is pinged.
    send(&mut core, t0, p[3], Body::Ping).unwrap();
    let out = answers(&mut core);
    let ping = out
        .iter()
        .find(|(to, m)| *to == p[0] && m.body == Body::Ping)
        .unwrap();
    // It answers: it stays and p[3] waits in the replacement cache.
    let pong = Message {
        request_id: ping.1.request_id,
        body: Body::Pong,
    };
    core.handle_message(t0, UNIX, p[0], &addr(0), &pong.encode())
        .unwrap();
    let table = core.routing_table();
    assert!(table.contains(&p[0]) && !table.contains(&p[3]));
    // A fifth: now p[1] is the oldest; it stays silent and is evicted.
    send(&mut core, t0, p[4], Body::Ping).unwrap();
    let out = answers(&mut core);
    assert!(
        out.iter()
            .any(|(to, m)| *to == p[1] && m.body == Body::Ping)
    );
    while core.poll_event().is_some() {}
    // The ping is sent once more after one request timeout, then fails.
    let t_retry = t0 + Duration::from_secs(5);
    core.handle_timeout(t_retry, UNIX + 5);
    let again = answers(&mut core);
    assert!(
        again
            .iter()
            .any(|(to, m)| *to == p[1] && m.body == Body::Ping)
    );
    assert!(core.routing_table().contains(&p[1]), "not evicted yet");
    let t1 = t0 + Duration::from_secs(10);
    core.handle_timeout(t1, UNIX + 10);
    let table = core.routing_table();
    assert!(!table.contains(&p[1]));
    assert!(table.contains(&p[4]));
    let events: Vec<_> = std::iter::from_fn(|| core.poll_event()).collect();
    assert!(events.contains(&Event::PeerRemoved { peer: p[1] }));
    assert!(events.contains(&Event::RoutingUpdated {
        peer: p[4],
        bucket: 255
    }));
}

#[test]
fn stores_are_checked_and_bounded() {
    let config = Config {
        max_records: 3,
        max_records_per_publisher: 2,
        ..Config::default()
    };
    let mut core = node(config);
    let now = Instant::now();
    let from = PeerId::from_bytes([1; 32]);
    let (a, b) = (keypair(3), keypair(4));
    let store = |core: &mut Kademlia, r: SignedRecord| {
        send(core, now, from, Body::Store(r)).unwrap();
        let got = answers(core);
        match got.last().map(|(_, m)| &m.body) {
            Some(Body::StoreAck(s)) => *s,
            other => panic!("expected an ack, got {other:?}"),
        }
    };
    assert_eq!(
        store(&mut core, signed(&a, 1, 5, UNIX + 60)),
        StoreStatus::Stored
    );
    assert_eq!(
        store(&mut core, signed(&a, 1, 4, UNIX + 60)),
        StoreStatus::Unchanged
    );
    assert_eq!(
        store(&mut core, signed(&a, 2, 1, UNIX + 60)),
        StoreStatus::Stored
    );
    assert_eq!(
        store(&mut core, signed(&a, 3, 1, UNIX + 60)),
        StoreStatus::Full
    );
    assert_eq!(
        store(&mut core, signed(&b, 3, 1, UNIX + 60)),
        StoreStatus::Stored
    );
    assert_eq!(
        store(&mut core, signed(&b, 4, 1, UNIX + 60)),
        StoreStatus::Full
    );
    // Expired, or expiring beyond the allowed TTL: rejected.
    assert_eq!(
        store(&mut core, signed(&b, 5, 1, UNIX)),
        StoreStatus::Rejected
    );
    assert_eq!(
        store(&mut core, signed(&b, 5, 1, UNIX + 49 * 3600)),
        StoreStatus::Rejected
    );
    // A validator refusing everything of kind "t".
    core.set_validator("t", Box::new(|_: &Record| Err("no".to_string())));
    assert_eq!(
        store(&mut core, signed(&a, 1, 9, UNIX + 60)),
        StoreStatus::Rejected
    );
    // FIND_VALUE returns the record while it lives, never after.
    send(
        &mut core,
        now,
        from,
        Body::FindValue(Key::from_bytes([1; 32])),
    )
    .unwrap();
    let got = answers(&mut core);
    let Body::Value { record, .. } = &got[0].1.body else {
        panic!("expected a value");
    };
    assert_eq!(record.as_ref().unwrap().record().seq, 5);
    let later = UNIX + 60;
    let bytes = Message {
        request_id: 1,
        body: Body::FindValue(Key::from_bytes([1; 32])),
    }
    .encode();
    core.handle_message(now, later, from, &addr(1), &bytes)
        .unwrap();
    let got = answers(&mut core);
    assert!(matches!(&got[0].1.body, Body::Value { record: None, .. }));
    assert_eq!(core.record_store().len(), 3);
}

#[test]
fn lookup_timeouts_fail_over_and_finish() {
    let mut core = node(Config::default());
    let t0 = Instant::now();
    let peers: Vec<PeerId> = (1..=5u8).map(|i| PeerId::from_bytes([i; 32])).collect();
    for (i, p) in peers.iter().enumerate() {
        core.add_address(t0, *p, addr(i as u32));
    }
    let id = core.find_node(t0, Key::from_bytes([3; 32])).unwrap();
    let first = answers(&mut core);
    // Three paths, one request each (each path has one or two seeds).
    assert_eq!(first.len(), 5);
    // Nobody answers: at the stall timeout each request is sent once
    // more, unchanged ...
    let stall = Config::default().stall_timeout;
    assert_eq!(core.poll_timeout(), Some(t0 + stall));
    core.handle_timeout(t0 + stall, UNIX + 1);
    let retries = answers(&mut core);
    assert_eq!(retries.len(), 5);
    for ((to, m), (to0, m0)) in retries.iter().zip(&first) {
        assert_eq!((to, m.request_id), (to0, m0.request_id));
    }
    // ... they stall again, and with nobody else to ask the lookup waits ...
    core.handle_timeout(t0 + 2 * stall, UNIX + 1);
    assert!(answers(&mut core).is_empty());
    assert!(
        std::iter::from_fn(|| core.poll_event()).all(|e| !matches!(e, Event::QueryFinished { .. }))
    );
    // ... then every request has failed and the query ends empty.
    core.handle_timeout(t0 + stall + Duration::from_secs(5), UNIX + 10);
    let events: Vec<_> = std::iter::from_fn(|| core.poll_event()).collect();
    let Some(Event::QueryFinished {
        id: done, stats, ..
    }) = events
        .iter()
        .find(|e| matches!(e, Event::QueryFinished { .. }))
    else {
        panic!("no result: {events:?}");
    };
    assert_eq!(*done, id);
    assert_eq!(stats.failures, 5);
    assert_eq!(stats.responses, 0);
    assert_eq!(stats.closest_depth, None);
    // One failure is not enough to drop a contact (max_failures = 2).
    assert_eq!(core.routing_table().len(), 5);
    let _ = Contact::new(peers[0], vec![]);
}

#[test]
fn dial_failure_removes_the_contact_at_once() {
    let mut core = node(Config::default());
    let now = Instant::now();
    let peer = PeerId::from_bytes([1; 32]);
    core.add_address(now, peer, addr(1));
    core.find_node(now, Key::from_bytes([3; 32])).unwrap();
    assert_eq!(answers(&mut core).len(), 1);
    core.dial_failed(now, peer);
    assert!(core.routing_table().is_empty());
    let events: Vec<_> = std::iter::from_fn(|| core.poll_event()).collect();
    assert!(events.contains(&Event::PeerRemoved { peer }));
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::QueryFinished { .. }))
    );
}

/// Answers every outstanding `find_value` of `core`: nodes in `records`
/// return that record, the others none; nobody names further contacts.
/// Returns the other messages `core` sent.
fn answer_find_values(
    core: &mut Kademlia,
    now: Instant,
    records: &std::collections::BTreeMap<PeerId, SignedRecord>,
) -> Vec<(PeerId, Message)> {
    let mut others = Vec::new();
    for (to, m) in answers(core) {
        let Body::FindValue(_) = m.body else {
            others.push((to, m));
            continue;
        };
        let bytes = Message::encode_value(m.request_id, records.get(&to), &[]);
        core.handle_message(now, UNIX, to, &addr(1), &bytes)
            .unwrap();
    }
    others
}

#[test]
fn record_lookup_returns_the_owners_newest_not_the_first_or_largest_seq() {
    let mut core = node(Config::default());
    let t0 = Instant::now();
    let key = Key::from_bytes([5; 32]);
    let owner = keypair(1);
    let squatter = keypair(2);
    let old = signed(&owner, 5, 1, UNIX + 3600);
    let newest = signed(&owner, 5, 2, UNIX + 3600);
    let squat = signed(&squatter, 5, 1000, UNIX + 3600);
    // The 20 nodes closest to the key (the ones asked): 10 hold the newest
    // record, 5 replay the old one, 5 answer with another publisher's
    // record of a much larger seq. The owner's records win 15 to 5.
    let mut peers: Vec<PeerId> = (1..=20u8).map(|i| PeerId::from_bytes([i; 32])).collect();
    peers.sort_by_key(|p| Key::for_peer(p).distance(&key));
    let mut records = std::collections::BTreeMap::new();
    for (i, p) in peers.iter().enumerate() {
        core.add_address(t0, *p, addr(i as u32));
        let r = match i {
            0..10 => newest.clone(),
            10..15 => old.clone(),
            _ => squat.clone(),
        };
        records.insert(*p, r);
    }
    let id = core.get_record(t0, UNIX, key).unwrap();
    let mut sent = Vec::new();
    for _ in 0..10 {
        sent.extend(answer_find_values(&mut core, t0, &records));
    }
    let result = std::iter::from_fn(|| core.poll_event()).find_map(|e| match e {
        Event::QueryFinished {
            id: done, result, ..
        } if done == id => Some(result),
        _ => None,
    });
    let Some(shoal_kad::QueryResult::GetRecord { record, found }) = result else {
        panic!("no result");
    };
    assert_eq!(record, Some(newest.clone()));
    assert_eq!(found, 20, "the lookup ran to the end");
    // Holders of the old copy were sent the newest; the squatters not.
    let stores: Vec<PeerId> = sent
        .into_iter()
        .filter(|(_, m)| matches!(&m.body, Body::Store(r) if *r == newest))
        .map(|(to, _)| to)
        .collect();
    let old_holders: Vec<PeerId> = records
        .iter()
        .filter(|(_, r)| **r == old)
        .map(|(p, _)| *p)
        .collect();
    assert!(!stores.is_empty());
    assert!(stores.iter().all(|p| old_holders.contains(p)));
}

/// A peer on the internet cannot point this node at its own network: the
/// private and loopback addresses in its answer are not dialled (unless
/// the node runs on a test network that allows any scope).
#[test]
fn answers_cannot_point_at_narrower_scopes_than_their_source() {
    for (policy, expect_private) in [
        (shoal_transport::ScopePolicy::default(), false),
        (shoal_transport::ScopePolicy::Any, true),
    ] {
        let mut core = node(Config {
            address_scope: policy.clone(),
            ..Config::default()
        });
        let t0 = Instant::now();
        let seed = PeerId::from_bytes([1; 32]);
        let internet: Vec<Multiaddr> = vec!["/ip4/1.2.3.4/tcp/4001".parse().unwrap()];
        core.add_address(t0, seed, internet.clone());
        core.find_node(t0, Key::from_bytes([3; 32])).unwrap();
        let asked = answers(&mut core);
        let (to, request) = &asked[0];
        assert_eq!(*to, seed);
        let lan = PeerId::from_bytes([2; 32]);
        let mixed = PeerId::from_bytes([4; 32]);
        let closer = vec![
            Contact::new(lan, vec!["/ip4/192.168.1.1/tcp/22".parse().unwrap()]),
            Contact::new(
                mixed,
                vec![
                    "/ip4/127.0.0.1/tcp/22".parse().unwrap(),
                    "/ip4/5.6.7.8/tcp/4001".parse().unwrap(),
                ],
            ),
        ];
        let bytes = Message {
            request_id: request.request_id,
            body: Body::Nodes(closer),
        }
        .encode();
        core.handle_message(t0, UNIX, seed, &internet, &bytes)
            .unwrap();
        let mut dialled: Vec<Multiaddr> = Vec::new();
        while let Some(t) = core.poll_transmit() {
            dialled.extend(t.addrs);
        }
        let text: Vec<String> = dialled.iter().map(ToString::to_string).collect();
        assert!(
            text.contains(&"/ip4/5.6.7.8/tcp/4001".to_owned()),
            "{text:?}"
        );
        assert_eq!(
            text.iter()
                .any(|a| a.starts_with("/ip4/192.168.") || a.starts_with("/ip4/127.")),
            expect_private,
            "{policy:?}: {text:?}"
        );
    }
}

#[test]
fn a_connected_peer_starts_a_path_of_its_own_and_answers_are_reported() {
    let mut core = node(Config::default());
    let t0 = Instant::now();
    // A days-old table: five contacts that will never answer.
    for i in 1..=5u8 {
        core.add_address(t0, PeerId::from_bytes([i; 32]), addr(u32::from(i)));
    }
    // A peer we just connected to, far from the target.
    let live = PeerId::from_bytes([0xf0; 32]);
    core.peer_connected(t0, live, addr(0xf0));
    let target = Key::from_bytes([3; 32]);
    let id = core.find_node_progress(t0, target).unwrap();
    let first = answers(&mut core);
    // The three table paths ask their seeds; the connected peer is asked
    // at once too, whatever its distance.
    assert_eq!(first.len(), 6);
    let (_, asked) = first.iter().find(|(to, _)| *to == live).unwrap();
    // It answers with a node near the target, which is asked at once
    // although the other paths' requests are all still waiting.
    let near = PeerId::from_bytes([0x33; 32]);
    let us = PeerId::from_bytes([0; 32]);
    let answer = Message {
        request_id: asked.request_id,
        body: Body::Nodes(vec![
            Contact::new(near, addr(0x33)),
            Contact::new(us, addr(0)),
        ]),
    };
    core.handle_message(t0, UNIX, live, &addr(0xf0), &answer.encode())
        .unwrap();
    let next = answers(&mut core);
    assert_eq!(next.iter().map(|(to, _)| *to).collect::<Vec<_>>(), [near]);
    // The answer was reported as it came, before any result.
    let events: Vec<_> = std::iter::from_fn(|| core.poll_event()).collect();
    let responded: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::LookupResponded {
                id: q,
                contact,
                named,
            } if *q == id => Some((contact.peer, named.iter().map(|c| c.peer).collect())),
            _ => None,
        })
        .collect();
    // With the node its answer named (ourselves left out), which may be
    // asked for what it holds before it answers the lookup.
    assert_eq!(responded, [(live, vec![near])]);
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::QueryFinished { .. }))
    );
    // A plain lookup reports no answers; once disconnected, the peer
    // seeds no path of its own (it stays in the table).
    core.find_node(t0, target).unwrap();
    core.peer_disconnected(t0, live);
    core.find_node(t0, target).unwrap();
    assert!(
        std::iter::from_fn(|| core.poll_event())
            .all(|e| !matches!(e, Event::LookupResponded { .. }))
    );
}
