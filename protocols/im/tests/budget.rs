//! The send budget covers every envelope: a contact away for two hours
//! while we hold its messages (asking for the missing one) and read what it
//! wrote gets no more envelopes sealed toward it than the budget, and when
//! it is back both directions decrypt and deliver everything.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Peer, history, net, pair, received};
use shoal_im::engine::{Event, SEND_BUDGET};
use shoal_im::{MessageId, UserId};

fn transmits(peer: &mut Peer) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(t) = peer.engine.poll_transmit() {
        out.push(t.envelope);
    }
    while let Some(e) = peer.engine.poll_event() {
        peer.events.push(e);
    }
    out
}

fn read_events(events: &[Event]) -> Vec<MessageId> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Read { id, .. } => Some(*id),
            _ => None,
        })
        .collect()
}

#[test]
fn two_hours_away_never_exceed_the_budget_and_everything_arrives() {
    let start = std::time::Instant::now();
    let mut peers = pair(start);
    let mut net = net(21, start, 0.0);
    let (alice, bob): (UserId, UserId) = (peers[0].engine.user_id(), peers[1].engine.user_id());

    // A conversation, with Bob's first messages shown on Alice's side.
    let mut bob_sent = Vec::new();
    peers[0].engine.send(net.now, 1, bob, "hi bob").unwrap();
    net.pump(&mut peers, 50);
    for text in ["one", "two", "three"] {
        bob_sent.push(peers[1].engine.send(net.now, 2, alice, text).unwrap());
        net.pump(&mut peers, 50);
    }
    assert_eq!(received(&peers[0].events), bob_sent);

    // Bob writes three more; the first is lost, the other two reach Alice,
    // who holds them and starts asking for the missing one. Then Bob is
    // gone: whatever Alice seals toward him is lost.
    let mut envelopes = Vec::new();
    for text in ["four (lost)", "five", "six"] {
        bob_sent.push(peers[1].engine.send(net.now, 3, alice, text).unwrap());
        envelopes.extend(transmits(&mut peers[1]));
    }
    assert_eq!(envelopes.len(), 3, "one envelope per message");
    for envelope in &envelopes[1..] {
        peers[0].engine.handle_envelope(net.now, envelope).unwrap();
    }
    let mut t = net.now;
    peers[0].engine.set_online(t, bob, false).unwrap();
    peers[1].engine.set_online(t, alice, false).unwrap();
    let mut sealed = transmits(&mut peers[0]).len();
    assert!(sealed > 0, "Alice acknowledged and asked for the gap");

    // Two hours: every second Alice's timers run; every ten minutes she
    // reads one of Bob's shown messages and writes one of her own.
    let mut alice_sent = Vec::new();
    let mut to_read = bob_sent[..3].to_vec();
    for second in 1..=2 * 3_600u64 {
        t += Duration::from_secs(1);
        if peers[0].engine.poll_timeout().is_some_and(|at| at <= t) {
            peers[0].engine.handle_timeout(t).unwrap();
        }
        if second % 600 == 0 {
            if let Some(id) = to_read.pop() {
                peers[0].engine.mark_read(bob, &[id]).unwrap();
            }
            alice_sent.push(
                peers[0]
                    .engine
                    .send(t, second, bob, &format!("while you were away {second}"))
                    .unwrap(),
            );
        }
        sealed += transmits(&mut peers[0]).len();
        assert!(
            sealed <= SEND_BUDGET as usize,
            "{sealed} envelopes sealed toward an absent contact after {second} s"
        );
    }
    assert!(to_read.is_empty());
    println!("sealed toward the absent contact in two hours: {sealed}");

    // Bob is back: both sides reconnect, the link is lossless.
    net.now = t;
    let refused_before = (
        peers[0].engine.refusals().total,
        peers[1].engine.refusals().total,
    );
    peers[0].engine.set_online(t, bob, true).unwrap();
    peers[1].engine.set_online(t, alice, true).unwrap();
    net.pump(&mut peers, 6_000); // one minute

    let shown_to_alice = received(&peers[0].events);
    for id in &bob_sent {
        assert!(shown_to_alice.contains(id), "Bob's {id} never shown");
    }
    let shown_to_bob = received(&peers[1].events);
    for id in &alice_sent {
        assert!(shown_to_bob.contains(id), "Alice's {id} never shown");
    }
    let mut read = read_events(&peers[1].events);
    read.sort();
    let mut expected_read = bob_sent[..3].to_vec();
    expected_read.sort();
    assert_eq!(read, expected_read, "every read receipt reached Bob");
    assert_eq!(
        (
            peers[0].engine.refusals().total,
            peers[1].engine.refusals().total
        ),
        refused_before,
        "nothing failed to decrypt after the return"
    );
    assert_eq!(peers[0].engine.outbox_len(&bob), 0);
    assert_eq!(peers[1].engine.outbox_len(&alice), 0);
    assert_eq!(
        history(&mut peers[0].engine, &bob),
        history(&mut peers[1].engine, &alice)
    );
}
