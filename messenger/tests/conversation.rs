//! Two users on a 20-node in-process network exchange 1,000 messages each
//! way while a fault layer under both messengers drops, duplicates and
//! delays 10% of the envelopes: both histories end identical, in causal
//! order, every message exactly once.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use shoal_im::MemoryStore;
use shoal_im::engine::EngineConfig;
use shoal_messenger::{FaultConfig, MessengerConfig};
use shoal_transport::MemoryNetwork;

const MESSAGES: usize = 1_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_messages_each_way_through_faults() {
    let t0 = std::time::Instant::now();
    let net = MemoryNetwork::new();
    let others = network(&net, 18).await;
    let config = |seed| MessengerConfig {
        listen: vec!["/memory/0".parse().unwrap()],
        bootstrap: vec![common::seed(&others)],
        faults: Some(FaultConfig::uniform(0.10, seed)),
        // Faster retries than the defaults (1 s doubling to 30 s), so the
        // few messages unlucky several times in a row do not dominate the
        // test's run time.
        engine: EngineConfig {
            retry_initial: Duration::from_millis(300),
            retry_max: Duration::from_secs(2),
            ..EngineConfig::default()
        },
        ..MessengerConfig::default()
    };
    let mut alice = start(&net, MemoryStore::new(), config(1)).await;
    let mut bob = start(&net, MemoryStore::new(), config(2)).await;
    let (a, b) = (alice.messenger.user_id(), bob.messenger.user_id());
    alice.messenger.add_contact(b, "bob").await.unwrap();
    bob.messenger.add_contact(a, "alice").await.unwrap();

    eprintln!("network up after {:?}", t0.elapsed());
    // Sent while the events are read: a messenger whose application does
    // not read its events stops taking commands (backpressure), so sending
    // 1,000 messages without reading could wait forever once deliveries
    // fill the event channel.
    let (am, bm) = (alice.messenger.clone(), bob.messenger.clone());
    let sender = tokio::spawn(async move {
        let (mut sent_a, mut sent_b) = (Vec::new(), Vec::new());
        for n in 0..MESSAGES {
            sent_a.push(am.send(b, &format!("a{n}")).await.unwrap());
            sent_b.push(bm.send(a, &format!("b{n}")).await.unwrap());
            if n % 25 == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        (sent_a, sent_b)
    });
    let (mut seen_a, mut seen_b) = (Vec::new(), Vec::new());
    let limit = Duration::from_secs(240);
    let done = |events: &[shoal_messenger::Event]| {
        received(events).len() >= MESSAGES && delivered(events) >= MESSAGES
    };
    let (ra, rb) = tokio::join!(
        collect_until(&mut alice.events, &mut seen_a, limit, done),
        collect_until(&mut bob.events, &mut seen_b, limit, done),
    );
    let _ = (ra, rb);
    let (sent_a, sent_b) = tokio::time::timeout(limit, sender)
        .await
        .expect("sending never finished")
        .unwrap();
    eprintln!("sent after {:?}", t0.elapsed());

    eprintln!("delivered after {:?}", t0.elapsed());
    for (seen, sent) in [(&seen_a, &sent_b), (&seen_b, &sent_a)] {
        let got = received(seen);
        let unique: HashSet<_> = got.iter().collect();
        assert_eq!(unique.len(), got.len(), "a message was shown twice");
        assert_eq!(unique, sent.iter().collect::<HashSet<_>>());
    }
    let ha: Vec<_> = full_history(&alice.messenger, b)
        .await
        .iter()
        .map(|i| i.meta.id)
        .collect();
    let hb: Vec<_> = full_history(&bob.messenger, a)
        .await
        .iter()
        .map(|i| i.meta.id)
        .collect();
    assert_eq!(ha.len(), 2 * MESSAGES);
    assert_eq!(ha, hb, "histories differ");
    // Concurrency really happened: some messages are not in send order.
    let errors = seen_a
        .iter()
        .chain(&seen_b)
        .filter(|e| matches!(e, shoal_messenger::Event::Error { .. }))
        .count();
    eprintln!("errors reported: {errors}");
}

/// The application reads its events only after a burst larger than the
/// event channel: the messenger waits for it instead of dropping events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_loses_no_events() {
    const BURST: usize = 2_500;
    let net = MemoryNetwork::new();
    let seed = network(&net, 1).await;
    let config = || MessengerConfig {
        listen: vec!["/memory/0".parse().unwrap()],
        bootstrap: vec![common::seed(&seed)],
        ..MessengerConfig::default()
    };
    let mut alice = start(&net, MemoryStore::new(), config()).await;
    let mut bob = start(&net, MemoryStore::new(), config()).await;
    // Alice's application reads its events (delivery receipts) all along.
    let mut alice_events = std::mem::replace(&mut alice.events, tokio::sync::mpsc::channel(1).1);
    tokio::spawn(async move { while alice_events.recv().await.is_some() {} });
    let b = bob.messenger.user_id();
    alice.messenger.add_contact(b, "bob").await.unwrap();
    bob.messenger
        .add_contact(alice.messenger.user_id(), "alice")
        .await
        .unwrap();
    for n in 0..BURST {
        alice
            .messenger
            .send(b, &format!("burst {n}"))
            .await
            .unwrap();
    }
    // Only now does bob's application start reading.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut seen = Vec::new();
    collect_until(&mut bob.events, &mut seen, Duration::from_secs(120), |e| {
        received(e).len() >= BURST
    })
    .await;
    assert_eq!(received(&seen).len(), BURST);
}
