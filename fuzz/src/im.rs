//! The messenger target: every decoder of shoal-im that reads bytes from
//! the network or a peer, and a live engine fed genuine, tampered and
//! arbitrary envelopes.

use std::str::FromStr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use shoal_im::engine::{Engine, EngineConfig, Event};
use shoal_im::envelope::{Envelope, SessionRef, pad, unpad};
use shoal_im::message::{Message, MessageId, Payload};
use shoal_im::presence::PresenceRecord;
use shoal_im::reset::ResetRequest;
use shoal_im::x3dh::InitialHeader;
use shoal_im::{MemoryStore, UserId};

/// Wall clock of the scenario, in seconds.
const UNIX: u64 = 1_800_000_000;
/// Seed of every engine reopened for an input.
const REOPEN_SEED: [u8; 32] = [9; 32];

/// Sub-targets, picked by the first input byte (modulo their number).
const ENVELOPE: u8 = 0;
const UNPAD: u8 = 1;
const MESSAGE: u8 = 2;
const PAYLOAD: u8 = 3;
const PRESENCE: u8 = 4;
const INITIAL_HEADER: u8 = 5;
const USER_ID: u8 = 6;
const ENGINE_RAW: u8 = 7;
const ENGINE_SPLICE: u8 = 8;
const ENGINE_RAW_FRESH: u8 = 9;
const RESET_REQUEST: u8 = 10;
const ENGINE_RAW_RESTORED: u8 = 11;
const ENGINE_RAW_STRANGER: u8 = 12;
const SUB_TARGETS: u8 = 13;

/// Which of bob's stored states an envelope is meant for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bob {
    /// Before alice's first contact.
    Fresh,
    /// After first contact and three messages of his own.
    Established,
    /// Restored from a copy made before those three messages, after
    /// writing two others on the same counters.
    Restored,
    /// Never added alice: her first envelopes are a message request,
    /// which he then accepts.
    Stranger,
}

/// An envelope alice really sent to bob.
#[derive(Debug, Clone)]
pub struct Genuine {
    /// What it carries (used as the seed file name).
    pub name: &'static str,
    /// The encoded envelope.
    pub bytes: Vec<u8>,
    /// The bob it is meant for.
    pub to: Bob,
}

/// Alice and bob after a short conversation, built once per process.
#[derive(Debug)]
pub struct Fixture {
    /// Bob with alice as a contact, before any envelope arrived.
    pub bob_fresh: MemoryStore,
    /// Bob who never added alice.
    pub bob_stranger: MemoryStore,
    /// Bob after alice's first contact and three messages of his own.
    pub bob_established: MemoryStore,
    /// Bob restored from before his three messages, after writing two
    /// others under the same counters.
    pub bob_restored: MemoryStore,
    /// Alice's user id.
    pub alice: UserId,
    /// Bob's user id.
    pub bob: UserId,
    /// The envelopes alice sent bob, in order.
    pub genuine: Vec<Genuine>,
    /// Messages of the conversation, encoded.
    pub messages: Vec<Vec<u8>>,
    /// A presence record signed by alice's device.
    pub presence: Vec<u8>,
}

fn open(store: MemoryStore, seed: [u8; 32], now: Instant) -> Engine<MemoryStore> {
    Engine::open(store, EngineConfig::default(), seed, now, UNIX).expect("memory store")
}

fn drain(engine: &mut Engine<MemoryStore>) -> Vec<Vec<u8>> {
    while engine.poll_event().is_some() {}
    std::iter::from_fn(|| engine.poll_transmit().map(|t| t.envelope)).collect()
}

/// Runs the scenario: alice makes first contact with two messages, bob
/// answers with three (the middle one lost on its way), alice acknowledges,
/// asks for a resend, marks one read and sends three more (one long
/// enough for a larger padding bucket).
fn build() -> Fixture {
    let now = Instant::now();
    let ms = UNIX * 1000;
    let mut alice = open(MemoryStore::new(), [1; 32], now);
    let mut bob = open(MemoryStore::new(), [2; 32], now);
    let (alice_id, bob_id) = (alice.user_id(), bob.user_id());
    alice.add_contact(bob_id, "bob").expect("store");
    let bob_stranger = bob.store().clone();
    bob.add_contact(alice_id, "alice").expect("store");
    let bob_fresh = bob.store().clone();

    let mut genuine = Vec::new();
    let mut keep = |name, bytes: Vec<Vec<u8>>, to| {
        for bytes in bytes {
            genuine.push(Genuine { name, bytes, to });
        }
    };

    alice.send(now, ms, bob_id, "hello bob").expect("store");
    alice
        .set_bundle(now, bob_id, &bob.prekey_bundle())
        .expect("bundle");
    alice.set_online(now, bob_id, true).expect("store");
    let first = drain(&mut alice);
    alice
        .send(now, ms + 1, bob_id, "still there?")
        .expect("store");
    let second = drain(&mut alice);
    keep("initial_chat", first.clone(), Bob::Fresh);
    keep("initial_chat_held", second.clone(), Bob::Fresh);
    keep("request_chat", first.clone(), Bob::Stranger);

    for e in first.iter().chain(&second) {
        bob.handle_envelope(now, e).expect("store");
    }
    let acks = drain(&mut bob);
    bob.set_online(now, alice_id, true).expect("store");
    let bob_copy = bob.store().clone();
    let mut from_bob = Vec::new();
    for text in ["hi alice", "this one gets lost", "and this one waits"] {
        bob.send(now, ms + 2, alice_id, text).expect("store");
        from_bob.extend(drain(&mut bob));
    }
    let bob_established = bob.store().clone();

    for e in acks.iter().chain([&from_bob[0], &from_bob[2]]) {
        alice.handle_envelope(now, e).expect("store");
    }
    keep("known_ack_and_resend", drain(&mut alice), Bob::Established);
    let read: Vec<MessageId> = alice
        .history(&bob_id, None, 50)
        .expect("store")
        .iter()
        .filter(|item| !item.meta.outgoing && !item.meta.flags.held)
        .map(|item| item.meta.id)
        .collect();
    alice.mark_read(bob_id, &read).expect("store");
    keep("known_read", drain(&mut alice), Bob::Established);
    alice.send(now, ms + 3, bob_id, "good").expect("store");
    keep("known_chat", drain(&mut alice), Bob::Established);
    alice
        .send(now, ms + 4, bob_id, &"long ".repeat(300))
        .expect("store");
    keep("known_chat_long_held", drain(&mut alice), Bob::Established);

    // Alice asks bob (as he was after his three messages) for a new
    // session: a genuine reset request naming their session.
    let session = match Envelope::decode(&first[0]).map(|e| e.session) {
        Ok(SessionRef::Initial(header)) => SessionRef::Initial(header).id(),
        _ => panic!("alice's first envelope is an initial one"),
    };
    let request = ResetRequest {
        recipient: bob.device().certificate().device().peer_id(),
        session,
        nonce: [0x42; 16],
        bundle: alice.prekey_bundle(),
    };
    keep(
        "reset_request",
        vec![request.sign(alice.device())],
        Bob::Established,
    );

    // Bob's disk goes back to before his three messages; he writes two
    // others on the same counters. The second reaches alice (the first
    // reuses a message number she took: dropped), who refuses it and
    // returns bob's own messages: echoes for the restored bob.
    let mut restored = open(bob_copy, [3; 32], now);
    restored.set_online(now, alice_id, true).expect("store");
    let mut forked = Vec::new();
    for text in ["written after the restore", "and again"] {
        restored.send(now, ms + 5, alice_id, text).expect("store");
        forked.extend(drain(&mut restored));
    }
    for e in &forked {
        alice.handle_envelope(now, e).expect("store");
    }
    keep("known_echo", drain(&mut alice), Bob::Restored);
    let bob_restored = restored.store().clone();

    let mut messages: Vec<Vec<u8>> = alice
        .history(&bob_id, None, 50)
        .expect("store")
        .into_iter()
        .map(|item| item.message.encode())
        .collect();
    messages.reverse();
    let presence = PresenceRecord::sign(
        alice.device(),
        &["/ip4/10.0.0.1/tcp/4001", "/ip6/::1/tcp/4001"],
        UNIX,
        UNIX + 3600,
    )
    .expect("presence");
    Fixture {
        bob_fresh,
        bob_stranger,
        bob_established,
        bob_restored,
        alice: alice_id,
        bob: bob_id,
        genuine,
        messages,
        presence,
    }
}

/// The scenario's state, built on first use.
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(build)
}

/// Reopens bob in state `to`, gives him `bytes` as an envelope and lets
/// time pass; returns the number of effects (messages shown or recovered,
/// messages renumbered, sessions reset, message requests). The stranger
/// bob then accepts alice, which shows her request's messages (more
/// effects). Panics if the engine fails (its memory store cannot) or an
/// envelope that is not one alice sent has any effect.
pub fn deliver(to: Bob, bytes: &[u8]) -> usize {
    let f = fixture();
    let store = match to {
        Bob::Fresh => &f.bob_fresh,
        Bob::Established => &f.bob_established,
        Bob::Restored => &f.bob_restored,
        Bob::Stranger => &f.bob_stranger,
    };
    let now = Instant::now();
    let mut bob = open(store.clone(), REOPEN_SEED, now);
    bob.handle_envelope(now, bytes)
        .expect("handle_envelope fails only when the store does");
    bob.handle_timeout(now + Duration::from_secs(2))
        .expect("handle_timeout fails only when the store does");
    if to == Bob::Stranger {
        bob.add_contact(f.alice, "alice")
            .expect("add_contact fails only when the store does");
    }
    let mut effects = 0;
    while let Some(event) = bob.poll_event() {
        let contact = match event {
            Event::Received { contact, .. }
            | Event::Recovered { contact, .. }
            | Event::Renumbered { contact, .. }
            | Event::SessionReset { contact }
            | Event::MessageRequest { contact } => contact,
            _ => continue,
        };
        assert_eq!(contact, f.alice, "an effect from someone else");
        assert!(
            f.genuine.iter().any(|g| g.bytes == bytes),
            "a tampered envelope had an effect"
        );
        effects += 1;
    }
    while bob.poll_transmit().is_some() {}
    effects
}

/// `data[0]` picks a sub-target, which gets `data[1..]`: 0 envelope, 1
/// padding, 2 message, 3 payload, 4 presence record, 5 initial header (the
/// decoders, with their round trips), 6 a user id's text, 7 an envelope
/// for bob after first contact, 8 a genuine envelope with bytes spliced in
/// (`rest[0]` picks the envelope, bit 7 cuts it after the splice,
/// `rest[1..3]` is the offset, big-endian, and the rest is written there),
/// 9 an envelope for bob before first contact, 10 a reset request
/// (decoder), 11 an envelope for the restored bob, 12 an envelope for a
/// bob who never added alice (a message request, then accepted).
pub fn im_messages(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % SUB_TARGETS {
        ENVELOPE => {
            if let Ok(envelope) = Envelope::decode(rest) {
                assert_eq!(envelope.encode(), rest, "envelope round trip");
            }
        }
        UNPAD => {
            if let Ok(payload) = unpad(rest) {
                assert_eq!(
                    pad(payload).ok().as_deref(),
                    Some(rest),
                    "padding round trip"
                );
            }
        }
        MESSAGE => {
            if let Ok(message) = Message::decode(rest) {
                assert_eq!(message.encode(), rest, "message round trip");
                assert_eq!(message.id(), MessageId::of(rest), "message id");
                assert_eq!(message.id(), message.clone().id(), "stable message id");
            }
        }
        PAYLOAD => {
            if let Ok(payload) = Payload::decode(rest) {
                assert_eq!(payload.encode(), rest, "payload round trip");
            }
        }
        PRESENCE => {
            if let Ok(record) = PresenceRecord::decode(rest) {
                let _ = record.verify_for(&fixture().alice, UNIX);
                assert_eq!(record.user(), UserId::new(record.certificate().user()));
            }
        }
        INITIAL_HEADER => {
            if let Ok(header) = InitialHeader::decode(rest) {
                assert_eq!(header.encode(), rest, "initial header round trip");
            }
        }
        USER_ID => {
            if let Ok(text) = std::str::from_utf8(rest)
                && let Ok(user) = UserId::from_str(text)
            {
                let shown = user.to_string();
                assert_eq!(
                    UserId::from_str(&shown).ok(),
                    Some(user),
                    "user id round trip"
                );
                assert_eq!(UserId::from_bytes(&user.to_bytes()).ok(), Some(user));
            }
        }
        ENGINE_RAW => {
            deliver(Bob::Established, rest);
        }
        RESET_REQUEST => {
            if let Ok(request) = ResetRequest::decode(rest) {
                assert_eq!(
                    request.bundle.encode()[..],
                    rest[66..336],
                    "reset request fields"
                );
            }
        }
        ENGINE_RAW_RESTORED => {
            deliver(Bob::Restored, rest);
        }
        ENGINE_RAW_STRANGER => {
            deliver(Bob::Stranger, rest);
        }
        ENGINE_SPLICE => {
            let f = fixture();
            let Some((&pick, rest)) = rest.split_first() else {
                return;
            };
            let Some((offset, patch)) = rest.split_first_chunk::<2>() else {
                return;
            };
            let genuine = &f.genuine[usize::from(pick & 0x7f) % f.genuine.len()];
            let offset = usize::from(u16::from_be_bytes(*offset)) % (genuine.bytes.len() + 1);
            let mut bytes = genuine.bytes[..offset].to_vec();
            bytes.extend_from_slice(patch);
            if pick & 0x80 == 0 {
                bytes.extend(genuine.bytes.iter().skip(offset + patch.len()));
            }
            deliver(genuine.to, &bytes);
        }
        _ => {
            deliver(Bob::Fresh, rest);
        }
    }
}

/// Hand-made seeds for [`im_messages`], named, each with its selector
/// byte: every genuine envelope (raw and as a no-op splice), the
/// conversation's messages and payloads of each type, a padded payload,
/// the presence record, an initial header and user id texts.
pub fn im_seeds() -> Vec<(String, Vec<u8>)> {
    let f = fixture();
    let mut seeds = Vec::new();
    let mut seed = |name: String, selector: u8, body: &[u8]| {
        let mut data = vec![selector];
        data.extend_from_slice(body);
        seeds.push((name, data));
    };
    for (i, g) in f.genuine.iter().enumerate() {
        let name = format!("{}_{i}", g.name);
        let selector = match g.to {
            Bob::Fresh => ENGINE_RAW_FRESH,
            Bob::Established => ENGINE_RAW,
            Bob::Restored => ENGINE_RAW_RESTORED,
            Bob::Stranger => ENGINE_RAW_STRANGER,
        };
        if g.name == "reset_request" {
            seed(format!("reset_decode_{name}"), RESET_REQUEST, &g.bytes);
        }
        seed(format!("engine_{name}"), selector, &g.bytes);
        seed(format!("decode_{name}"), ENVELOPE, &g.bytes);
        // Splice nothing at offset 0, and a flipped byte into the
        // ciphertext's end.
        seed(
            format!("splice_noop_{name}"),
            ENGINE_SPLICE,
            &[i as u8, 0, 0],
        );
        let end = (g.bytes.len() - 1) as u16;
        let mut flip = vec![i as u8];
        flip.extend_from_slice(&end.to_be_bytes());
        flip.push(g.bytes[usize::from(end)] ^ 1);
        seed(format!("splice_tag_{name}"), ENGINE_SPLICE, &flip);
        if let Ok(Envelope {
            session: shoal_im::envelope::SessionRef::Initial(header),
            ..
        }) = Envelope::decode(&g.bytes)
            && i == 0
        {
            seed("initial_header".into(), INITIAL_HEADER, &header.encode());
        }
    }
    let mut ids = Vec::new();
    for (i, m) in f.messages.iter().enumerate() {
        seed(format!("message_{i}"), MESSAGE, m);
        let chat = Payload::Chat(m.clone()).encode();
        seed(format!("payload_chat_{i}"), PAYLOAD, &chat);
        ids.push(MessageId::of(m));
    }
    seed(
        "payload_ack".into(),
        PAYLOAD,
        &Payload::Ack(ids.clone()).encode(),
    );
    seed(
        "payload_read".into(),
        PAYLOAD,
        &Payload::Read(ids[..1].to_vec()).encode(),
    );
    seed(
        "payload_resend".into(),
        PAYLOAD,
        &Payload::Resend { from: 1, to: 3 }.encode(),
    );
    seed(
        "payload_recover".into(),
        PAYLOAD,
        &Payload::Recover { from: 1 }.encode(),
    );
    seed(
        "payload_echo".into(),
        PAYLOAD,
        &Payload::Echo {
            last: 5,
            message: f.messages[0].clone(),
        }
        .encode(),
    );
    let padded = pad(&Payload::Ack(ids).encode()).expect("fits");
    seed("padded_ack".into(), UNPAD, &padded);
    seed("presence".into(), PRESENCE, &f.presence);
    seed("user_id".into(), USER_ID, f.alice.to_string().as_bytes());
    seed(
        "user_id_lowercase_spaces".into(),
        USER_ID,
        format!("  {}\n", f.bob.to_string().to_lowercase()).as_bytes(),
    );
    seeds
}
