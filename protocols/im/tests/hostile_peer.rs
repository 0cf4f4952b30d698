//! A contact that plays by the cipher's rules but not by the protocol's:
//! it writes its own payloads (dependencies on messages that never existed,
//! floods of resend requests) and strangers open conversations by the
//! dozen. The engine must stay bounded and quiet: no busy timer, no
//! amplification, no unbounded contact list, and a stranger's messages are
//! a request that costs a bounded amount and answers nothing.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::open;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use shoal_identity::Keypair;
use shoal_im::engine::{
    Engine, Event, MAX_REQUESTS, REQUEST_BYTES_PER_STRANGER, REQUEST_MESSAGES_PER_STRANGER,
    RejectReason,
};
use shoal_im::envelope::{Envelope, SessionRef, pad};
use shoal_im::message::{MessageKind, Payload};
use shoal_im::store::Store;
use shoal_im::{Device, MemoryStore, Message, MessageId, Session, UserId, x3dh};

/// A peer speaking the wire format directly: its own device, a session
/// with bob started from his bundle, and any payload it likes.
struct Raw {
    user: UserId,
    header: x3dh::InitialHeader,
    session: Session,
    rng: ChaCha20Rng,
    recipient: shoal_identity::PeerId,
}

impl Raw {
    fn new(seed: u8, bob: &Engine<MemoryStore>) -> Raw {
        let user = Keypair::from_secret_bytes(&[seed; 32]);
        let device = Device::new(
            &user,
            Keypair::from_secret_bytes(&[seed.wrapping_add(100); 32]),
            [seed.wrapping_add(50); 32],
            1_700_000_000,
        );
        let mut rng = ChaCha20Rng::seed_from_u64(u64::from(seed));
        let bundle = bob.prekey_bundle();
        let (header, session) =
            x3dh::initiate_with_rng(&mut rng, &device, &bob.user_id().public_key(), &bundle)
                .unwrap();
        Raw {
            user: UserId::new(user.public()),
            header,
            session,
            rng,
            recipient: bundle.certificate.device().peer_id(),
        }
    }

    fn envelope(&mut self, payload: &Payload) -> Vec<u8> {
        let ratchet = self
            .session
            .encrypt(&mut self.rng, &pad(&payload.encode()).unwrap())
            .unwrap();
        Envelope {
            recipient: self.recipient,
            session: SessionRef::Initial(Box::new(self.header.clone())),
            ratchet,
        }
        .encode()
    }

    fn message(
        &self,
        to: UserId,
        counter: u64,
        prev: Option<MessageId>,
        deps: Vec<MessageId>,
    ) -> Message {
        Message {
            kind: MessageKind::Text,
            sender: self.user,
            recipient: to,
            counter,
            timestamp_ms: 1,
            prev,
            deps,
            body: format!("m{counter}").into_bytes(),
        }
    }
}

fn drain(engine: &mut Engine<MemoryStore>) -> (Vec<Event>, usize) {
    let mut events = Vec::new();
    while let Some(e) = engine.poll_event() {
        events.push(e);
    }
    let mut sent = 0;
    while engine.poll_transmit().is_some() {
        sent += 1;
    }
    (events, sent)
}

#[test]
fn a_dependency_that_never_comes_does_not_spin_the_timer() {
    let now = Instant::now();
    let mut bob = open(MemoryStore::new(), 2, now);
    let mut mallory = Raw::new(9, &bob);
    bob.add_contact(mallory.user, "mallory").unwrap();
    let b = bob.user_id();
    // m0, then m1 naming a message that does not exist: held, and no
    // counter is missing, so there is nothing to ask for.
    let m0 = mallory.message(b, 0, None, vec![]);
    let m1 = mallory.message(b, 1, Some(m0.id()), vec![MessageId([7; 32])]);
    for m in [&m0, &m1] {
        let e = mallory.envelope(&Payload::Chat(m.encode()));
        bob.handle_envelope(now, &e).unwrap();
    }
    drain(&mut bob);
    let mut t = now;
    for _ in 0..5 {
        t += Duration::from_secs(2);
        bob.handle_timeout(t).unwrap();
        drain(&mut bob);
        let next = bob.poll_timeout();
        assert!(
            next.is_none_or(|n| n > t),
            "timer due again at once: {next:?} <= {t:?}"
        );
    }
}

#[test]
fn resend_requests_are_answered_once_an_interval() {
    let now = Instant::now();
    let mut bob = open(MemoryStore::new(), 2, now);
    let mut mallory = Raw::new(9, &bob);
    bob.add_contact(mallory.user, "mallory").unwrap();
    bob.set_online(now, mallory.user, true).unwrap();
    // Bob answers mallory's first message, then writes 20 more, which
    // mallory never acknowledges.
    let hello = mallory.message(bob.user_id(), 0, None, vec![]);
    bob.handle_envelope(now, &mallory.envelope(&Payload::Chat(hello.encode())))
        .unwrap();
    for i in 0..20 {
        bob.send(now, 1, mallory.user, &format!("b{i}")).unwrap();
    }
    drain(&mut bob);
    // A flood of requests for everything: one answer (20 messages) per
    // interval, not 20 per request.
    let mut sent = 0;
    for _ in 0..50 {
        let e = mallory.envelope(&Payload::Resend { from: 0, to: 255 });
        bob.handle_envelope(now, &e).unwrap();
        sent += drain(&mut bob).1;
    }
    assert!(
        sent <= 20 + 50,
        "50 requests made bob send {sent} envelopes"
    );
    let later = now + Duration::from_secs(2);
    let e = mallory.envelope(&Payload::Resend { from: 0, to: 255 });
    bob.handle_envelope(later, &e).unwrap();
    assert!(
        drain(&mut bob).1 >= 20,
        "a request after the interval is answered"
    );
}

#[test]
fn strangers_are_requests_that_answer_nothing_and_stay_bounded() {
    let now = Instant::now();
    let mut bob = open(MemoryStore::new(), 2, now);
    let b = bob.user_id();
    let extra = 6;
    let mut requests = 0;
    for seed in 0..(MAX_REQUESTS as u8 + extra) {
        let mut stranger = Raw::new(seed.wrapping_add(10), &bob);
        let hi = stranger.message(b, 0, None, vec![]);
        bob.handle_envelope(now, &stranger.envelope(&Payload::Chat(hi.encode())))
            .unwrap();
        let (events, sent) = drain(&mut bob);
        assert_eq!(sent, 0, "a request is never answered");
        for e in events {
            match e {
                Event::MessageRequest { contact } if contact == stranger.user => requests += 1,
                other => panic!("unexpected event {other:?}"),
            }
        }
    }
    assert_eq!(requests, MAX_REQUESTS + usize::from(extra));
    assert!(bob.contacts().is_empty(), "requests are not conversations");
    assert_eq!(bob.requests().len(), MAX_REQUESTS);
    let counters = bob.counters();
    assert_eq!(counters.unnamed_contacts, MAX_REQUESTS);
    assert_eq!(counters.requests_dropped, u64::from(extra));
    assert_eq!(counters.request_messages as usize, MAX_REQUESTS);
    // The oldest went first: the last stranger's request is there.
    let last = Raw::new(MAX_REQUESTS as u8 + extra - 1 + 10, &bob).user;
    assert!(bob.is_request(&last));
    assert!(!bob.is_request(&Raw::new(10, &bob).user));
}

#[test]
fn a_request_keeps_its_quota_and_is_shown_and_acknowledged_once_accepted() {
    let now = Instant::now();
    let mut bob = open(MemoryStore::new(), 2, now);
    let b = bob.user_id();
    let mut stranger = Raw::new(7, &bob);
    let mut prev = None;
    let over = 4;
    for n in 0..u64::from(REQUEST_MESSAGES_PER_STRANGER) + over {
        let m = stranger.message(b, n, prev, vec![]);
        prev = Some(m.id());
        bob.handle_envelope(now, &stranger.envelope(&Payload::Chat(m.encode())))
            .unwrap();
    }
    assert_eq!(drain(&mut bob).1, 0);
    assert_eq!(bob.refusals().count("request-quota"), over);
    let info = &bob.requests()[0];
    assert_eq!(info.messages, REQUEST_MESSAGES_PER_STRANGER);
    assert!(bob.history(&stranger.user, None, 100).unwrap().is_empty());
    assert!(matches!(
        bob.send(now, 1, stranger.user, "hi"),
        Err(shoal_im::engine::EngineError::NotAccepted(_))
    ));
    let preview = bob.request_messages(&stranger.user).unwrap();
    assert_eq!(preview.len(), REQUEST_MESSAGES_PER_STRANGER as usize);
    assert_eq!(preview[0].message.body, b"m0");

    // Accepted: every stored message is
    // reported in order and acknowledged.
    bob.set_online(now, stranger.user, true).unwrap();
    bob.add_contact(stranger.user, "new friend").unwrap();
    let (events, sent) = drain(&mut bob);
    let bodies: Vec<Vec<u8>> = events
        .iter()
        .filter_map(|e| match e {
            Event::Received { message, .. } => Some(message.body.clone()),
            _ => None,
        })
        .collect();
    let expected: Vec<Vec<u8>> = (0..u64::from(REQUEST_MESSAGES_PER_STRANGER))
        .map(|n| format!("m{n}").into_bytes())
        .collect();
    assert_eq!(bodies, expected);
    assert!(sent >= 1, "the acknowledgement goes out");
    assert!(bob.requests().is_empty());
    assert_eq!(bob.contacts().len(), 1);
    assert_eq!(bob.counters().request_bytes, 0);
    // The messages refused over the quota arrive with their sender's
    // retries now, and are acknowledged.
    let m = stranger.message(b, u64::from(REQUEST_MESSAGES_PER_STRANGER), prev, vec![]);
    let m = Message {
        prev: bob.history(&stranger.user, None, 1).unwrap()[0]
            .meta
            .id
            .into(),
        ..m
    };
    bob.handle_envelope(now, &stranger.envelope(&Payload::Chat(m.encode())))
        .unwrap();
    let (events, sent) = drain(&mut bob);
    assert!(events.iter().any(|e| matches!(e, Event::Received { .. })));
    assert_eq!(sent, 1);
}

#[test]
fn a_request_is_bounded_in_bytes_and_blocking_erases_it() {
    let now = Instant::now();
    let mut bob = open(MemoryStore::new(), 2, now);
    let b = bob.user_id();
    let mut stranger = Raw::new(8, &bob);
    let mut prev = None;
    for n in 0..4 {
        let mut m = stranger.message(b, n, prev, vec![]);
        m.body = vec![b'x'; 30_000];
        prev = Some(m.id());
        bob.handle_envelope(now, &stranger.envelope(&Payload::Chat(m.encode())))
            .unwrap();
    }
    let info = &bob.requests()[0];
    assert_eq!(info.messages, 2);
    assert!(info.bytes <= REQUEST_BYTES_PER_STRANGER);
    assert_eq!(bob.refusals().count("request-quota"), 2);
    drain(&mut bob);
    bob.block(stranger.user).unwrap();
    assert!(bob.requests().is_empty());
    assert_eq!(bob.counters().request_bytes, 0);
    assert!(bob.store().clone().load_index().unwrap().is_empty());
    let m = stranger.message(b, 9, None, vec![]);
    bob.handle_envelope(now, &stranger.envelope(&Payload::Chat(m.encode())))
        .unwrap();
    assert_eq!(drain(&mut bob), (vec![], 0));
    assert_eq!(
        bob.refusals().last,
        Some((Some(stranger.user), RejectReason::Blocked))
    );
}

/// A stranger with a pending request cannot make the node send anything,
/// not even a reset request: not by starting a second session, not by
/// sending garbage on its session over its own connection.
#[test]
fn a_pending_stranger_draws_no_reset_requests() {
    let now = Instant::now();
    let mut bob = open(MemoryStore::new(), 2, now);
    let b = bob.user_id();
    let mut stranger = Raw::new(30, &bob);
    let hi = stranger.message(b, 0, None, vec![]);
    bob.handle_envelope(now, &stranger.envelope(&Payload::Chat(hi.encode())))
        .unwrap();
    drain(&mut bob);
    // The same user from a second session (another Raw with its keys).
    let mut again = Raw::new(30, &bob);
    again.session = Raw::new(31, &bob).session;
    let m = again.message(b, 1, Some(hi.id()), vec![]);
    let device = shoal_identity::Keypair::from_secret_bytes(&[130; 32]).peer_id();
    bob.handle_envelope_from(now, device, &again.envelope(&Payload::Chat(m.encode())))
        .unwrap();
    assert_eq!(drain(&mut bob).1, 0, "nothing sent to a pending stranger");
    assert!(bob.is_request(&stranger.user));
}
