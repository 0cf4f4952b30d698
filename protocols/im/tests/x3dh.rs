//! First contact: bundle and header checks, and agreement of both sides.
#![allow(clippy::unwrap_used)]

mod common;

use common::{devices, signed_bundle};
use shoal_im::x3dh::{self, BUNDLE_LEN, INITIAL_HEADER_LEN};
use shoal_im::{Error, InitialHeader, PrekeyBundle};

#[test]
fn bundle_and_header_roundtrip_and_reject_tampering() {
    let (_, alice, bob_user, bob) = devices(5);
    let (bundle, _) = signed_bundle(&bob, 3, [7; 32]);
    let bytes = bundle.encode();
    assert_eq!(bytes.len(), BUNDLE_LEN);
    assert_eq!(PrekeyBundle::decode(&bytes).unwrap(), bundle);
    for i in (0..BUNDLE_LEN).step_by(7) {
        let mut bad = bytes;
        bad[i] ^= 1;
        assert!(PrekeyBundle::decode(&bad).is_err(), "byte {i}");
    }
    assert!(PrekeyBundle::decode(&bytes[..BUNDLE_LEN - 1]).is_err());

    let (header, _) = x3dh::initiate(&alice, &bob_user.public(), &bundle, [8; 32]).unwrap();
    let hb = header.encode();
    assert_eq!(hb.len(), INITIAL_HEADER_LEN);
    assert_eq!(InitialHeader::decode(&hb).unwrap(), header);
    // Version 1 (certificates not bound into the secret) is refused.
    for version in [1, 3] {
        let mut bad = hb;
        bad[0] = version;
        assert!(matches!(
            InitialHeader::decode(&bad),
            Err(Error::UnsupportedVersion { found, .. }) if found == version
        ));
    }
    let mut bad = hb;
    bad[50] ^= 1; // inside the sender's certificate
    assert!(InitialHeader::decode(&bad).is_err());
}

#[test]
fn wrong_user_wrong_prekey_and_weak_keys_are_refused() {
    let (alice_user, alice, bob_user, bob) = devices(5);
    let (bundle, secret) = signed_bundle(&bob, 3, [7; 32]);
    // A bundle certified by someone else than the contact we asked for.
    assert_eq!(
        x3dh::initiate(&alice, &alice_user.public(), &bundle, [8; 32]).unwrap_err(),
        Error::WrongUser
    );
    let (mut header, _) = x3dh::initiate(&alice, &bob_user.public(), &bundle, [8; 32]).unwrap();
    let other = x3dh::PrekeySecret::from_bytes(4, [9; 32]);
    assert_eq!(
        x3dh::respond(&bob, &other, &header).unwrap_err(),
        Error::PrekeyMismatch {
            found: 3,
            expected: 4
        }
    );
    // A low-order ephemeral key gives an all-zero DH output.
    header.ephemeral = [0; 32];
    assert_eq!(
        x3dh::respond(&bob, &secret, &header).unwrap_err(),
        Error::WeakKey
    );
}

#[test]
fn both_sides_agree_and_a_different_prekey_disagrees() {
    let (_, alice, bob_user, bob) = devices(5);
    let (bundle, secret) = signed_bundle(&bob, 3, [7; 32]);
    let (header, a) = x3dh::initiate(&alice, &bob_user.public(), &bundle, [8; 32]).unwrap();
    let b = x3dh::respond(&bob, &secret, &header).unwrap();
    // Root key and associated data (bytes 1..97 of the state) agree.
    assert_eq!(a.to_bytes()[1..97], b.to_bytes()[1..97]);
    let wrong = x3dh::PrekeySecret::from_bytes(3, [10; 32]);
    let c = x3dh::respond(&bob, &wrong, &header).unwrap();
    assert_ne!(a.to_bytes()[1..33], c.to_bytes()[1..33]);
}
