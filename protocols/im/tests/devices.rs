//! Contacts' devices and certificates over time: a device change is
//! reported, a verified contact's change holds sending back until the user
//! acknowledges it, a renewal is not a change, expired certificates start
//! nothing, and our own certificate is renewed before it expires.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::open;
use shoal_identity::Keypair;
use shoal_im::account::{DEVICE_CERT_LIFETIME, DEVICE_CERT_RENEW_BEFORE};
use shoal_im::engine::{Engine, EngineConfig, EngineError, Event};
use shoal_im::{Device, MemoryStore, PrekeyBundle, UserId, x3dh};

/// The wall clock `common::open` gives the engine.
const OPENED: u64 = 1_700_000_000;

fn device(root: &Keypair, seed: u8, issued: u64) -> Device {
    Device::new(
        root,
        Keypair::from_secret_bytes(&[seed; 32]),
        [seed.wrapping_add(1); 32],
        issued,
    )
}

fn bundle(device: &Device) -> PrekeyBundle {
    let (prekey, _) = x3dh::signed_prekey(device, 1, [0x34; 32]);
    PrekeyBundle {
        certificate: device.certificate().clone(),
        prekey,
    }
}

/// Bob, with alice (whose root key is returned) as a contact.
fn bob_with_alice(now: Instant) -> (Engine<MemoryStore>, Keypair, UserId) {
    let mut bob = open(MemoryStore::new(), 2, now);
    let root = Keypair::from_secret_bytes(&[0x31; 32]);
    let alice = UserId::new(root.public());
    bob.add_contact(alice, "alice").unwrap();
    (bob, root, alice)
}

fn events(engine: &mut Engine<MemoryStore>) -> Vec<Event> {
    std::iter::from_fn(|| engine.poll_event()).collect()
}

#[test]
fn a_verified_contacts_new_device_holds_sending_until_acknowledged() {
    let now = Instant::now();
    let (mut bob, root, alice) = bob_with_alice(now);
    let first = device(&root, 0x50, OPENED);
    bob.set_bundle(now, alice, &bundle(&first)).unwrap();
    assert!(
        !events(&mut bob)
            .iter()
            .any(|e| matches!(e, Event::DeviceChanged { .. })),
        "the first device is no change"
    );
    bob.set_verified(alice, true).unwrap();
    bob.send(now, 1, alice, "before").unwrap();

    // A renewal of the same keys is no change.
    let mut renewed = device(&root, 0x50, OPENED);
    renewed.renew(&root, OPENED + 1_000);
    bob.set_bundle(now, alice, &bundle(&renewed)).unwrap();
    assert!(
        !events(&mut bob)
            .iter()
            .any(|e| matches!(e, Event::DeviceChanged { .. }))
    );
    bob.send(now, 2, alice, "still fine").unwrap();
    assert_eq!(
        bob.contacts()[0].device_expires,
        Some(renewed.certificate().expires())
    );

    // Another device of alice's root key: reported, and sending waits.
    let second = device(&root, 0x60, OPENED);
    bob.set_bundle(now, alice, &bundle(&second)).unwrap();
    let changed: Vec<Event> = events(&mut bob)
        .into_iter()
        .filter(|e| matches!(e, Event::DeviceChanged { .. }))
        .collect();
    assert_eq!(
        changed,
        vec![Event::DeviceChanged {
            contact: alice,
            device: second.certificate().device().peer_id(),
            verified: true,
        }]
    );
    assert!(bob.contacts()[0].device_changed);
    assert!(matches!(
        bob.send(now, 3, alice, "held back"),
        Err(EngineError::DeviceChanged(c)) if c == alice
    ));
    bob.acknowledge_device_change(alice).unwrap();
    bob.send(now, 4, alice, "after acknowledging").unwrap();
    let info = &bob.contacts()[0];
    assert!(info.verified && !info.device_changed);
}

#[test]
fn an_unverified_contacts_new_device_is_reported_and_sending_goes_on() {
    let now = Instant::now();
    let (mut bob, root, alice) = bob_with_alice(now);
    bob.set_bundle(now, alice, &bundle(&device(&root, 0x50, OPENED)))
        .unwrap();
    let second = device(&root, 0x60, OPENED);
    bob.set_bundle(now, alice, &bundle(&second)).unwrap();
    assert!(events(&mut bob).contains(&Event::DeviceChanged {
        contact: alice,
        device: second.certificate().device().peer_id(),
        verified: false,
    }));
    bob.send(now, 1, alice, "hi").unwrap();
}

#[test]
fn expired_certificates_start_no_session() {
    let now = Instant::now();
    let (mut bob, root, alice) = bob_with_alice(now);
    // Issued so long ago that it expired before bob's clock (plus skew).
    let old = device(&root, 0x50, OPENED - DEVICE_CERT_LIFETIME - 301);
    assert!(matches!(
        bob.set_bundle(now, alice, &bundle(&old)),
        Err(EngineError::Bundle(shoal_im::Error::Expired { .. }))
    ));
    assert!(!bob.has_session(&alice));

    // An initial envelope carrying an expired certificate is refused too.
    let mut stale = Engine::open(
        MemoryStore::new(),
        EngineConfig::default(),
        [7; 32],
        now,
        OPENED - DEVICE_CERT_LIFETIME - 301,
    )
    .unwrap();
    let b = bob.user_id();
    stale.add_contact(b, "bob").unwrap();
    stale.set_online(now, b, true).unwrap();
    stale.set_bundle(now, b, &bob.prekey_bundle()).unwrap();
    stale.send(now, 1, b, "from the past").unwrap();
    let envelope = stale.poll_transmit().unwrap().envelope;
    bob.handle_envelope(now, &envelope).unwrap();
    assert!(events(&mut bob).is_empty());
    assert_eq!(bob.refusals().count("key-agreement"), 1);
    assert!(bob.requests().is_empty());
}

#[test]
fn our_certificate_is_renewed_before_it_expires() {
    let now = Instant::now();
    let store = MemoryStore::new();
    let mut engine = Engine::open(store, EngineConfig::default(), [5; 32], now, OPENED).unwrap();
    let first = engine.device().certificate().expires();
    assert_eq!(first, OPENED + DEVICE_CERT_LIFETIME);
    // Not yet due: nothing changes.
    let early = OPENED + DEVICE_CERT_LIFETIME - DEVICE_CERT_RENEW_BEFORE - 10;
    engine.rotate_prekey_if_due(early).unwrap();
    assert_eq!(engine.device().certificate().expires(), first);
    // Within the renewal window: renewed, same keys, stored.
    let due = OPENED + DEVICE_CERT_LIFETIME - DEVICE_CERT_RENEW_BEFORE + 10;
    assert!(engine.rotate_prekey_if_due(due).unwrap());
    let renewed = engine.device().certificate().clone();
    assert_eq!(renewed.expires(), due + DEVICE_CERT_LIFETIME);
    assert_eq!(renewed.device(), engine.device().signing_key().public());
    assert_eq!(engine.prekey_bundle().certificate, renewed);
    let store = engine.store().clone();
    drop(engine);
    let reopened = Engine::open(
        store,
        EngineConfig::default(),
        [6; 32],
        now + Duration::from_secs(1),
        due,
    )
    .unwrap();
    assert_eq!(reopened.device().certificate(), &renewed);
}

/// A sender that fetched our bundle before we renewed our certificate
/// still starts a session with us (the certificate is bound into X3DH).
#[test]
fn a_bundle_from_before_our_renewal_still_starts_a_session() {
    let now = Instant::now();
    let mut bob = Engine::open(
        MemoryStore::new(),
        EngineConfig::default(),
        [5; 32],
        now,
        OPENED,
    )
    .unwrap();
    let mut alice = open(MemoryStore::new(), 3, now);
    let (a, b) = (alice.user_id(), bob.user_id());
    bob.add_contact(a, "alice").unwrap();
    let old_bundle = bob.prekey_bundle();
    // Bob renews (and rotates his prekey; the old one is kept a while).
    let due = OPENED + DEVICE_CERT_LIFETIME - DEVICE_CERT_RENEW_BEFORE + 10;
    assert!(bob.rotate_prekey_if_due(due).unwrap());
    assert_ne!(bob.prekey_bundle().certificate, old_bundle.certificate);
    // Reopened, so the earlier certificate must come from the store.
    let store = bob.store().clone();
    drop(bob);
    let mut bob = Engine::open(store, EngineConfig::default(), [6; 32], now, OPENED).unwrap();

    alice.add_contact(b, "bob").unwrap();
    alice.set_online(now, b, true).unwrap();
    alice.set_bundle(now, b, &old_bundle).unwrap();
    alice.send(now, 1, b, "from the old bundle").unwrap();
    let envelope = alice.poll_transmit().unwrap().envelope;
    bob.handle_envelope(now, &envelope).unwrap();
    let got: Vec<String> = events(&mut bob)
        .into_iter()
        .filter_map(|e| match e {
            Event::Received { message, .. } => Some(message.text()),
            _ => None,
        })
        .collect();
    assert_eq!(
        got,
        vec!["from the old bundle".to_owned()],
        "{:?}",
        bob.refusals()
    );
}

/// Until the user acknowledges a verified contact's new device, nothing of
/// ours is sealed to it: not the waiting outbox either.
#[test]
fn a_verified_contacts_new_device_gets_no_retries_until_acknowledged() {
    let now = Instant::now();
    let (mut bob, root, alice) = bob_with_alice(now);
    bob.set_bundle(now, alice, &bundle(&device(&root, 0x50, OPENED)))
        .unwrap();
    bob.set_verified(alice, true).unwrap();
    bob.send(now, 1, alice, "written before the change")
        .unwrap();
    // Sealed at once, for the old device (a mailbox would hold it).
    let old = device(&root, 0x50, OPENED).certificate().device().peer_id();
    assert_eq!(bob.poll_transmit().unwrap().device, old);
    bob.set_bundle(now, alice, &bundle(&device(&root, 0x60, OPENED)))
        .unwrap();
    bob.set_online(now, alice, true).unwrap();
    bob.handle_timeout(now + Duration::from_secs(5)).unwrap();
    assert!(
        bob.poll_transmit().is_none(),
        "sealed to an unacknowledged device"
    );
    bob.acknowledge_device_change(alice).unwrap();
    assert!(bob.poll_transmit().is_some(), "sent once acknowledged");
}
