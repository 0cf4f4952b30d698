//! Refusals are not events: a flood of garbage and of forged first
//! contacts gives the application nothing, is counted and logged at a
//! bounded rate, and an honest conversation goes on meanwhile.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{pair, received, settle};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use shoal_identity::Keypair;
use shoal_im::engine::{Event, REFUSAL_LOG_INTERVAL};
use shoal_im::envelope::{Envelope, SessionRef};
use shoal_im::ratchet::{HEADER_LEN, TAG_LEN};
use shoal_im::x3dh::InitialHeader;
use shoal_im::{Device, MessageId};

/// Envelopes that do not even parse or decrypt.
const GARBAGE: usize = 100_000;
/// Initial envelopes carrying a valid certificate of some stranger's
/// device, an ephemeral key and a ciphertext that cannot decrypt.
const FORGED: usize = 2_000;
/// The flood's rate: one envelope per millisecond of virtual time.
const GAP: Duration = Duration::from_millis(1);
/// Alice writes once per second of virtual time during the flood.
const MESSAGE_EVERY: usize = 1_000;

#[test]
fn a_flood_of_refusals_gives_no_events_and_the_conversation_goes_on() {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let start = std::time::Instant::now();
    let mut peers = pair(start);
    let (alice, bob) = (peers[0].engine.user_id(), peers[1].engine.user_id());
    peers[0].engine.send(start, 0, bob, "hello").unwrap();
    let sent = settle(&mut peers, start);
    let known = sent.iter().find(|e| e[1] == 2).cloned();
    // Alice heard back, so her next envelope names the session: garbage
    // with that id is the hardest kind to tell apart.
    peers[0].engine.send(start, 1, bob, "and again").unwrap();
    let known = known.or_else(|| settle(&mut peers, start).into_iter().find(|e| e[1] == 2));
    let known = known.unwrap();
    let bob_device = peers[1].engine.device().certificate().device().peer_id();
    let prekey_id = peers[1].engine.prekey_bundle().prekey.id();
    let strangers: Vec<Device> = (0..16u8)
        .map(|i| {
            Device::new(
                &Keypair::from_secret_bytes(&[i + 100; 32]),
                Keypair::from_secret_bytes(&[i + 120; 32]),
                [i + 140; 32],
                1_700_000_000,
            )
        })
        .collect();
    peers[1].events.clear();

    let mut now = start;
    let mut pending: Vec<(MessageId, std::time::Instant)> = Vec::new();
    let mut latencies = Vec::new();
    for n in 0..GARBAGE + FORGED {
        now += GAP;
        if n % MESSAGE_EVERY == 0 {
            let id = peers[0]
                .engine
                .send(now, n as u64, bob, &format!("during the flood {n}"))
                .unwrap();
            pending.push((id, now));
        }
        let bytes = if n % ((GARBAGE + FORGED) / FORGED) == 0 {
            let header = InitialHeader {
                sender: strangers[n % strangers.len()].certificate().clone(),
                ephemeral: random32(&mut rng),
                prekey_id,
            };
            let mut ratchet = vec![0u8; HEADER_LEN + 256 + TAG_LEN];
            rng.fill_bytes(&mut ratchet);
            // A well-formed header (version, message 0 of the first
            // chain): the forgery gets as far as the AEAD.
            ratchet[0] = shoal_im::ratchet::HEADER_VERSION;
            ratchet[33..41].fill(0);
            Envelope {
                recipient: bob_device,
                session: SessionRef::Initial(Box::new(header)),
                ratchet,
            }
            .encode()
        } else {
            let mut bytes = known.clone();
            if n % 2 == 0 {
                // Random everything after the session id but the header
                // version: it gets as far as the ratchet.
                rng.fill_bytes(&mut bytes[2 + 32 + 16..]);
                bytes[2 + 32 + 16] = shoal_im::ratchet::HEADER_VERSION;
            } else {
                let len = (rng.next_u32() % 600) as usize;
                bytes.truncate(len.min(bytes.len()));
                rng.fill_bytes(&mut bytes);
            }
            bytes
        };
        peers[1].engine.handle_envelope(now, &bytes).unwrap();
        // The honest traffic and both engines' timers run meanwhile.
        settle(&mut peers, now);
        for peer in peers.iter_mut() {
            if peer.engine.poll_timeout().is_some_and(|t| t <= now) {
                peer.engine.handle_timeout(now).unwrap();
            }
        }
        let shown = received(&peers[1].events);
        pending.retain(|(id, at)| {
            if shown.contains(id) {
                latencies.push(now - *at);
                false
            } else {
                true
            }
        });
    }
    settle(&mut peers, now);

    assert!(pending.is_empty(), "never shown: {pending:?}");
    let worst = latencies.iter().max().copied().unwrap_or_default();
    println!(
        "{} messages during the flood, slowest shown after {worst:?}",
        latencies.len()
    );
    assert_eq!(latencies.len(), (GARBAGE + FORGED).div_ceil(MESSAGE_EVERY));
    assert!(worst <= Duration::from_secs(5), "{worst:?}");

    // Bob's application saw the honest messages and nothing else.
    for event in &peers[1].events {
        match event {
            Event::Received { contact, .. } => assert_eq!(*contact, alice),
            Event::Delivered { .. } | Event::Read { .. } => {}
            other => panic!("an event for the flood: {other:?}"),
        }
    }
    assert_eq!(peers[1].engine.contacts().len(), 1, "a stranger was added");
    let refusals = peers[1].engine.refusals();
    assert_eq!(refusals.total, (GARBAGE + FORGED) as u64);
    let elapsed = now - start;
    let bound = elapsed.as_secs() / REFUSAL_LOG_INTERVAL.as_secs() + 1;
    assert!(
        refusals.reports <= bound,
        "{} log lines in {elapsed:?}",
        refusals.reports
    );
    println!("refusals by reason: {:?}", refusals.by_reason);
}

fn random32(rng: &mut ChaCha20Rng) -> [u8; 32] {
    let mut bytes = [0u8; 32];
    rng.fill_bytes(&mut bytes);
    bytes
}
