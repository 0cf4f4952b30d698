//! The engine end to end over a simulated lossy network: first contact,
//! acknowledgements, ordering under faults, restart from the store.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Instant;

use common::{history, net, open, pair, received};
use rand::Rng;
use shoal_im::engine::Event;

#[test]
fn first_contact_ack_and_reply() {
    let now = Instant::now();
    let mut peers = pair(now);
    let mut net = net(1, now, 0.0);
    let bob = peers[1].engine.user_id();
    let alice = peers[0].engine.user_id();
    let id = peers[0].engine.send(now, 1, bob, "hello bob").unwrap();
    net.pump(&mut peers, 20);
    assert_eq!(received(&peers[1].events), vec![id]);
    assert!(
        peers[0]
            .events
            .contains(&Event::Delivered { contact: bob, id })
    );
    let reply = peers[1].engine.send(net.now, 2, alice, "hi alice").unwrap();
    net.pump(&mut peers, 20);
    assert_eq!(received(&peers[0].events), vec![reply]);
    peers[0].engine.mark_read(bob, &[reply]).unwrap();
    net.pump(&mut peers, 20);
    assert!(peers[1].events.contains(&Event::Read {
        contact: alice,
        id: reply
    }));
    assert_eq!(
        history(&mut peers[0].engine, &bob),
        history(&mut peers[1].engine, &alice)
    );
}

#[test]
fn faults_keep_histories_identical_and_causal() {
    let now = Instant::now();
    let mut peers = pair(now);
    let mut net = net(7, now, 0.1);
    let users = [peers[0].engine.user_id(), peers[1].engine.user_id()];
    let mut sent = [Vec::new(), Vec::new()];
    for n in 0..300 {
        let i = net.rng.random_range(0..2);
        let id = peers[i]
            .engine
            .send(net.now, n, users[1 - i], &format!("m{n} from {i}"))
            .unwrap();
        sent[i].push(id);
        let rounds = net.rng.random_range(0..3);
        net.pump(&mut peers, rounds);
    }
    net.pump(&mut peers, 6000);
    for i in 0..2 {
        let got = received(&peers[i].events);
        let mut unique = got.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), got.len(), "a message shown twice");
        let mut want = sent[1 - i].clone();
        want.sort();
        assert_eq!(unique, want, "peer {i} misses messages");
        let delivered = peers[i]
            .events
            .iter()
            .filter(|e| matches!(e, Event::Delivered { .. }))
            .count();
        assert_eq!(delivered, sent[i].len());
    }
    let ha = history(&mut peers[0].engine, &users[1]);
    let hb = history(&mut peers[1].engine, &users[0]);
    assert_eq!(ha.len(), 300);
    assert_eq!(ha, hb);
}

#[test]
fn crash_and_reopen_loses_nothing_acknowledged() {
    let now = Instant::now();
    let mut peers = pair(now);
    let mut net = net(11, now, 0.05);
    let users = [peers[0].engine.user_id(), peers[1].engine.user_id()];
    let mut sent = [Vec::new(), Vec::new()];
    for n in 0..200u64 {
        let i = net.rng.random_range(0..2);
        let id = peers[i]
            .engine
            .send(net.now, n, users[1 - i], &format!("m{n}"))
            .unwrap();
        sent[i].push(id);
        let rounds = net.rng.random_range(0..3);
        net.pump(&mut peers, rounds);
        if n % 13 == 5 {
            // Crash: everything not committed is gone; reopen from the store.
            let victim = net.rng.random_range(0..2);
            let store = peers[victim].engine.store().clone();
            peers[victim].engine = open(store, 50 + n as u8, net.now);
        }
    }
    net.pump(&mut peers, 6000);
    let ha = history(&mut peers[0].engine, &users[1]);
    let hb = history(&mut peers[1].engine, &users[0]);
    assert_eq!(ha.len(), 200);
    assert_eq!(ha, hb);
    // No new handshake: each side still has exactly the sessions of first contact.
    for p in &peers {
        for c in p.engine.contacts() {
            assert!(c.has_session);
            assert_eq!(c.outbox, 0);
        }
    }
}

#[test]
fn simultaneous_first_contact_converges() {
    let now = Instant::now();
    let mut peers = pair(now);
    let mut net = net(3, now, 0.0);
    let users = [peers[0].engine.user_id(), peers[1].engine.user_id()];
    // Both start a session before either hears from the other.
    let a0 = peers[0].engine.send(now, 1, users[1], "hi from a").unwrap();
    let b0 = peers[1].engine.send(now, 1, users[0], "hi from b").unwrap();
    net.pump(&mut peers, 50);
    assert_eq!(received(&peers[1].events), vec![a0]);
    assert_eq!(received(&peers[0].events), vec![b0]);
    for n in 0..20 {
        peers[0].engine.send(net.now, n, users[1], "a").unwrap();
        peers[1].engine.send(net.now, n, users[0], "b").unwrap();
        net.pump(&mut peers, 2);
    }
    net.pump(&mut peers, 200);
    assert_eq!(received(&peers[0].events).len(), 21);
    assert_eq!(received(&peers[1].events).len(), 21);
    assert_eq!(
        history(&mut peers[0].engine, &users[1]),
        history(&mut peers[1].engine, &users[0])
    );
    for p in &peers {
        for c in p.engine.contacts() {
            assert_eq!(c.outbox, 0);
            assert_eq!(c.sessions, 2, "both sessions kept for late messages");
        }
    }
}

#[test]
fn offline_recipient_does_not_exhaust_the_window() {
    // Alice writes 1,500 messages (more than the ratchet's skip window)
    // while Bob is unreachable; retries must not burn message keys, so
    // when Bob comes back every message decrypts.
    let now = Instant::now();
    let mut peers = pair(now);
    let mut net = net(5, now, 0.0);
    let bob = peers[1].engine.user_id();
    net.link_up = false;
    let mut sent = Vec::new();
    for n in 0..1_500u64 {
        sent.push(
            peers[0]
                .engine
                .send(net.now, n, bob, &format!("m{n}"))
                .unwrap(),
        );
        if n % 100 == 0 {
            net.pump(&mut peers, 300); // 3 s of retries and route requests
        }
    }
    assert!(received(&peers[1].events).is_empty());
    // Route requests backed off while bob was away (up to a minute apart);
    // his return is news a driver passes on at once.
    assert!(peers[0].engine.poll_timeout().is_some());
    net.link_up = true;
    peers[0].engine.retry_now(net.now, bob).unwrap();
    net.pump(&mut peers, 500);
    let mut got = received(&peers[1].events);
    got.sort();
    sent.sort();
    assert_eq!(got, sent);
    assert_eq!(
        peers[1].engine.refusals().count("outside-window"),
        0,
        "no envelope was outside the window"
    );
}

#[test]
fn same_text_to_two_contacts_gets_two_ids() {
    // The same first message to two contacts in the same millisecond: ids
    // name the recipient, so both are stored, and both survive a restart in
    // the outbox.
    let now = Instant::now();
    let mut a = open(shoal_im::MemoryStore::new(), 1, now);
    let b = open(shoal_im::MemoryStore::new(), 2, now);
    let c = open(shoal_im::MemoryStore::new(), 3, now);
    a.add_contact(b.user_id(), "bob").unwrap();
    a.add_contact(c.user_id(), "carol").unwrap();
    let to_b = a.send(now, 1_000, b.user_id(), "hi").unwrap();
    let to_c = a.send(now, 1_000, c.user_id(), "hi").unwrap();
    assert_ne!(to_b, to_c);
    let mut reopened = open(a.store().clone(), 1, now);
    assert_eq!(reopened.outbox_len(&b.user_id()), 1);
    assert_eq!(reopened.outbox_len(&c.user_id()), 1);
    assert_eq!(history(&mut reopened, &c.user_id()), vec![to_c]);
}

/// A store whose commits fail once `fail` is set.
struct FlakyStore {
    inner: shoal_im::MemoryStore,
    fail: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl shoal_im::Store for FlakyStore {
    fn load_identity(&mut self) -> Result<Option<Vec<u8>>, shoal_im::StoreError> {
        self.inner.load_identity()
    }
    fn load_contacts(
        &mut self,
    ) -> Result<Vec<shoal_im::store::ContactRecord>, shoal_im::StoreError> {
        self.inner.load_contacts()
    }
    fn load_index(&mut self) -> Result<Vec<shoal_im::MessageMeta>, shoal_im::StoreError> {
        self.inner.load_index()
    }
    fn message(
        &mut self,
        id: &shoal_im::MessageId,
    ) -> Result<Option<shoal_im::StoredMessage>, shoal_im::StoreError> {
        self.inner.message(id)
    }
    fn load_sealed(&mut self) -> Result<Vec<shoal_im::SealedRecord>, shoal_im::StoreError> {
        self.inner.load_sealed()
    }
    fn received(
        &mut self,
        key: &[u8; 32],
    ) -> Result<Option<shoal_im::MessageId>, shoal_im::StoreError> {
        self.inner.received(key)
    }
    fn history(
        &mut self,
        contact: &[u8; 32],
        before: Option<shoal_im::store::HistoryCursor>,
        limit: usize,
    ) -> Result<Vec<shoal_im::StoredMessage>, shoal_im::StoreError> {
        self.inner.history(contact, before, limit)
    }
    fn commit(&mut self, changes: &shoal_im::Changes) -> Result<(), shoal_im::StoreError> {
        if self.fail.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(shoal_im::StoreError("disk full".into()));
        }
        self.inner.commit(changes)
    }
}

#[test]
fn a_full_disk_sends_nothing_uncommitted_and_the_engine_recovers() {
    // Alice's disk fills up mid-conversation: what she writes is refused,
    // what Bob sends stays unacknowledged (so Bob retries), nothing leaves
    // that was not committed, and once the disk has room again everything
    // flows, with nothing lost or shown twice.
    let now = Instant::now();
    let fail = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let store = FlakyStore {
        inner: shoal_im::MemoryStore::new(),
        fail: fail.clone(),
    };
    let mut a = shoal_im::engine::Engine::open(
        store,
        shoal_im::engine::EngineConfig::default(),
        [1; 32],
        now,
        1_700_000_000,
    )
    .unwrap();
    let mut b = open(shoal_im::MemoryStore::new(), 2, now);
    let (alice, bob) = (a.user_id(), b.user_id());
    a.add_contact(bob, "bob").unwrap();
    b.add_contact(alice, "alice").unwrap();
    a.set_bundle(now, bob, &b.prekey_bundle()).unwrap();
    a.set_online(now, bob, true).unwrap();
    b.set_online(now, alice, true).unwrap();
    let first = a.send(now, 1, bob, "before").unwrap();
    let mut t = now;
    exchange(&mut a, &mut b, t);
    assert_eq!(b.outbox_len(&alice), 0);

    fail.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(matches!(
        a.send(t, 2, bob, "refused"),
        Err(shoal_im::engine::EngineError::Store(_))
    ));
    assert!(a.poll_transmit().is_none(), "nothing uncommitted leaves");
    let from_bob = b.send(t, 3, alice, "while the disk is full").unwrap();
    // For a minute Bob's retries reach Alice, whose commits fail: no ack.
    for _ in 0..60 {
        t += std::time::Duration::from_secs(1);
        let _ = timers(&mut a, t);
        timers(&mut b, t).unwrap();
        while let Some(x) = b.poll_transmit() {
            assert!(a.handle_envelope(t, &x.envelope).is_err());
        }
        assert!(
            a.poll_transmit().is_none(),
            "no ack for what was not stored"
        );
        assert!(
            a.history(&bob, None, 10).is_ok(),
            "the engine keeps serving"
        );
    }
    assert_eq!(b.outbox_len(&alice), 1);
    assert_eq!(history(&mut a, &bob), vec![first], "nothing half-stored");

    // Room again: Bob's next retry is stored and acknowledged, and Alice
    // writes again.
    fail.store(false, std::sync::atomic::Ordering::Relaxed);
    let second = a.send(t, 4, bob, "after").unwrap();
    for _ in 0..60 {
        t += std::time::Duration::from_secs(1);
        timers(&mut a, t).unwrap();
        timers(&mut b, t).unwrap();
        exchange(&mut a, &mut b, t);
    }
    assert_eq!((a.outbox_len(&bob), b.outbox_len(&alice)), (0, 0));
    let on_alice = history(&mut a, &bob);
    assert_eq!(on_alice, history(&mut b, &alice));
    let mut expected = vec![first, from_bob, second];
    expected.sort();
    let mut got = on_alice.clone();
    got.sort();
    assert_eq!(got, expected, "each message once, the refused one never");
}

/// Runs `e`'s timers if due.
fn timers<S: shoal_im::Store>(
    e: &mut shoal_im::engine::Engine<S>,
    t: Instant,
) -> Result<(), shoal_im::engine::EngineError> {
    if e.poll_timeout().is_some_and(|at| at <= t) {
        e.handle_timeout(t)?;
    }
    Ok(())
}

/// Moves envelopes both ways until none is left.
fn exchange<S: shoal_im::Store, T: shoal_im::Store>(
    a: &mut shoal_im::engine::Engine<S>,
    b: &mut shoal_im::engine::Engine<T>,
    now: Instant,
) {
    for _ in 0..100 {
        let mut moved = false;
        while let Some(x) = a.poll_transmit() {
            b.handle_envelope(now, &x.envelope).unwrap();
            moved = true;
        }
        while let Some(x) = b.poll_transmit() {
            a.handle_envelope(now, &x.envelope).unwrap();
            moved = true;
        }
        while a.poll_event().is_some() {}
        while b.poll_event().is_some() {}
        if !moved {
            return;
        }
    }
    panic!("envelopes kept flowing");
}

#[test]
fn a_black_hole_while_online_does_not_exhaust_the_window() {
    // The session looks open but every envelope is lost (a half-dead
    // connection, full queues): retries must stop spending keys well
    // before the recipient's skip window, and everything arrives once the
    // link works again.
    let now = Instant::now();
    let mut peers = pair(now);
    let mut net = net(8, now, 0.0);
    let bob = peers[1].engine.user_id();
    // First contact works, then the link turns into a black hole.
    let first = peers[0].engine.send(now, 0, bob, "hello").unwrap();
    net.pump(&mut peers, 20);
    assert_eq!(received(&peers[1].events), vec![first]);
    net.fault = 1.0;
    let mut sent = vec![first];
    for n in 0..1_200u64 {
        sent.push(
            peers[0]
                .engine
                .send(net.now, n, bob, &format!("m{n}"))
                .unwrap(),
        );
        if n % 100 == 0 {
            net.pump(&mut peers, 100);
        }
    }
    net.pump(&mut peers, 3_000); // 30 s of retries into the void
    net.fault = 0.0;
    net.pump(&mut peers, 12_000); // two minutes of a good link
    let mut got = received(&peers[1].events);
    got.sort();
    sent.sort();
    assert_eq!(got, sent);
    assert_eq!(
        peers[1].engine.refusals().count("outside-window"),
        0,
        "no envelope fell outside the window"
    );
}

#[test]
fn route_requests_back_off_while_no_route_is_found() {
    // Bob is unreachable for ten simulated minutes: alice's engine asks for
    // a route (one directory lookup or dial each) at 0.1, 0.2, 0.4 ... s,
    // then once a minute; a found route starts the waits over.
    let now = Instant::now();
    let mut peers = pair(now);
    let mut net = net(5, now, 0.0);
    let bob = peers[1].engine.user_id();
    net.link_up = false;
    peers[0].engine.send(net.now, 0, bob, "hello").unwrap();
    net.pump(&mut peers, 60_000); // 600 s in 10 ms rounds
    let asked = |p: &common::Peer| {
        p.events
            .iter()
            .filter(|e| matches!(e, Event::NeedRoute { .. } | Event::NeedBundle { .. }))
            .count()
    };
    let requests = asked(&peers[0]);
    // 0.1 s doubling to 60 s: 11 requests in the first 2 minutes, then one
    // a minute (a fixed one-second limit would have made 600).
    assert!((15..=25).contains(&requests), "{requests} route requests");
    net.link_up = true;
    peers[0].engine.retry_now(net.now, bob).unwrap();
    net.pump(&mut peers, 500);
    assert_eq!(received(&peers[1].events).len(), 1);
}
