//! Double Ratchet behaviour through the public API: conversations, loss,
//! reordering, the window, tampering, replay, forward secrecy,
//! post-compromise security and persistence.
#![allow(clippy::unwrap_used)]

mod common;

use common::{devices, signed_bundle};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use shoal_im::ratchet::{HEADER_LEN, MAX_SKIP, MAX_SKIPPED_KEYS};
use shoal_im::{Error, Session, x3dh};

fn pair(seed: u64) -> (Session, Session, ChaCha20Rng) {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let (_, alice, bob_user, bob) = devices(1);
    let (bundle, secret) = signed_bundle(&bob, 9, [7; 32]);
    let (header, a) =
        x3dh::initiate_with_rng(&mut rng, &alice, &bob_user.public(), &bundle).unwrap();
    let b = x3dh::respond(&bob, &secret, &header).unwrap();
    (a, b, rng)
}

fn state(s: &Session) -> Vec<u8> {
    s.to_bytes().to_vec()
}

#[test]
fn conversation_both_ways_with_dh_steps() {
    let (mut a, mut b, mut rng) = pair(1);
    for round in 0..10u32 {
        for i in 0..=round % 3 {
            let text = format!("a{round}.{i}");
            let m = a.encrypt(&mut rng, text.as_bytes()).unwrap();
            assert_eq!(b.decrypt(&m).unwrap(), text.as_bytes());
        }
        for i in 0..=(round + 1) % 3 {
            let text = format!("b{round}.{i}");
            let m = b.encrypt(&mut rng, text.as_bytes()).unwrap();
            assert_eq!(a.decrypt(&m).unwrap(), text.as_bytes());
        }
    }
    assert_eq!(a.skipped_keys(), 0);
    assert_eq!(b.skipped_keys(), 0);
}

#[test]
fn responder_cannot_send_first() {
    let (_a, mut b, mut rng) = pair(2);
    assert_eq!(b.encrypt(&mut rng, b"x"), Err(Error::NotReady));
}

#[test]
fn out_of_order_and_lost_within_window() {
    let (mut a, mut b, mut rng) = pair(3);
    let first: Vec<_> = (0..5).map(|i| a.encrypt(&mut rng, &[i]).unwrap()).collect();
    // 4, 1, 3 arrive; 0 and 2 are late.
    assert_eq!(b.decrypt(&first[4]).unwrap(), [4]);
    assert_eq!(b.decrypt(&first[1]).unwrap(), [1]);
    assert_eq!(b.decrypt(&first[3]).unwrap(), [3]);
    assert_eq!(b.skipped_keys(), 2);
    // Bob answers (DH step), Alice sends in a new chain; old ones still arrive.
    let r = b.encrypt(&mut rng, b"r").unwrap();
    assert_eq!(a.decrypt(&r).unwrap(), b"r");
    let late_in_old_chain = a.encrypt(&mut rng, b"new").unwrap();
    assert_eq!(b.decrypt(&late_in_old_chain).unwrap(), b"new");
    assert_eq!(b.decrypt(&first[0]).unwrap(), [0]);
    assert_eq!(b.decrypt(&first[2]).unwrap(), [2]);
    assert_eq!(b.skipped_keys(), 0);

    // A message lost at the end of a chain: the next chain announces its length.
    let lost = b.encrypt(&mut rng, b"lost").unwrap();
    let _ = lost;
    let m = a.encrypt(&mut rng, b"a").unwrap();
    b.decrypt(&m).unwrap();
    let m = b.encrypt(&mut rng, b"after").unwrap();
    assert_eq!(a.decrypt(&m).unwrap(), b"after");
    assert_eq!(a.skipped_keys(), 1);
    assert_eq!(a.decrypt(&lost).unwrap(), b"lost");
}

#[test]
fn beyond_the_window_is_outside_window() {
    let (mut a, mut b, mut rng) = pair(4);
    let msgs: Vec<_> = (0..=MAX_SKIP + 1)
        .map(|_| a.encrypt(&mut rng, b"m").unwrap())
        .collect();
    let before = state(&b);
    let err = b.decrypt(&msgs[MAX_SKIP as usize + 1]).unwrap_err();
    assert_eq!(
        err,
        Error::OutsideWindow {
            counter: MAX_SKIP + 1,
            next: 0,
            max_skip: MAX_SKIP
        }
    );
    assert_eq!(state(&b), before);
    // Exactly MAX_SKIP ahead is inside.
    assert_eq!(b.decrypt(&msgs[MAX_SKIP as usize]).unwrap(), b"m");
    assert_eq!(b.skipped_keys(), MAX_SKIP as usize);
    assert_eq!(b.decrypt(&msgs[MAX_SKIP as usize + 1]).unwrap(), b"m");
}

#[test]
fn skipped_keys_are_bounded_oldest_evicted() {
    let (mut a, mut b, mut rng) = pair(5);
    let mut all = Vec::new();
    // Three chains of MAX_SKIP + 1 messages; Bob reads only the last of each.
    for _ in 0..3 {
        let msgs: Vec<_> = (0..=MAX_SKIP)
            .map(|_| a.encrypt(&mut rng, b"m").unwrap())
            .collect();
        b.decrypt(msgs.last().unwrap()).unwrap();
        let r = b.encrypt(&mut rng, b"r").unwrap();
        a.decrypt(&r).unwrap();
        all.push(msgs);
    }
    assert_eq!(b.skipped_keys(), MAX_SKIPPED_KEYS);
    // The oldest chain's keys were evicted: a resend is needed, not silence.
    assert_eq!(
        b.decrypt(&all[0][0]).unwrap_err(),
        Error::AlreadyUsedOrEvicted { counter: 0 }
    );
    assert_eq!(b.decrypt(&all[2][0]).unwrap(), b"m");
}

#[test]
fn tampering_is_rejected_and_leaves_state_unchanged() {
    let (mut a, mut b, mut rng) = pair(6);
    let m0 = a.encrypt(&mut rng, b"zero").unwrap();
    b.decrypt(&m0).unwrap();
    let m1 = a.encrypt(&mut rng, b"one").unwrap();
    let before = state(&b);
    for i in 1..m1.len() {
        let mut bad = m1.clone();
        bad[i] ^= 0x40;
        assert!(b.decrypt(&bad).is_err(), "byte {i}");
        assert_eq!(state(&b), before, "byte {i}");
    }
    // Version 1 (a zero nonce) is refused like any unknown version.
    for version in [1, 3] {
        let mut bad = m1.clone();
        bad[0] = version;
        assert_eq!(
            b.decrypt(&bad),
            Err(Error::UnsupportedVersion {
                what: "ratchet header",
                found: version
            })
        );
    }
    assert!(b.decrypt(&m1[..HEADER_LEN + 3]).is_err());
    assert_eq!(state(&b), before);
    assert_eq!(b.decrypt(&m1).unwrap(), b"one");
    // A message from another session does not authenticate.
    let (mut other, _, mut rng2) = pair(60);
    let foreign = other.encrypt(&mut rng2, b"x").unwrap();
    let before = state(&b);
    assert!(b.decrypt(&foreign).is_err());
    assert_eq!(state(&b), before);
}

#[test]
fn replay_yields_no_second_plaintext() {
    let (mut a, mut b, mut rng) = pair(7);
    let m0 = a.encrypt(&mut rng, b"0").unwrap();
    let m1 = a.encrypt(&mut rng, b"1").unwrap();
    b.decrypt(&m1).unwrap();
    b.decrypt(&m0).unwrap();
    assert_eq!(
        b.decrypt(&m0),
        Err(Error::AlreadyUsedOrEvicted { counter: 0 })
    );
    assert_eq!(
        b.decrypt(&m1),
        Err(Error::AlreadyUsedOrEvicted { counter: 1 })
    );
    // After DH steps, a message of an old chain is still refused.
    let r = b.encrypt(&mut rng, b"r").unwrap();
    a.decrypt(&r).unwrap();
    let m2 = a.encrypt(&mut rng, b"2").unwrap();
    b.decrypt(&m2).unwrap();
    assert_eq!(
        b.decrypt(&m0),
        Err(Error::AlreadyUsedOrEvicted { counter: 0 })
    );
    assert_eq!(
        b.decrypt(&m2),
        Err(Error::AlreadyUsedOrEvicted { counter: 0 })
    );
}

#[test]
fn forward_secrecy_today_cannot_read_yesterday() {
    let (mut a, mut b, mut rng) = pair(8);
    let yesterday: Vec<_> = (0..3).map(|i| a.encrypt(&mut rng, &[i]).unwrap()).collect();
    for m in &yesterday {
        b.decrypt(m).unwrap();
    }
    // Same chain: today's snapshot has moved past those keys.
    let mut snapshot = Session::from_bytes(&b.to_bytes()).unwrap();
    for m in &yesterday {
        assert!(snapshot.decrypt(m).is_err());
    }
    // After DH steps both ways, Alice's state cannot read her own old ciphertexts either.
    let r = b.encrypt(&mut rng, b"r").unwrap();
    a.decrypt(&r).unwrap();
    let m = a.encrypt(&mut rng, b"t").unwrap();
    b.decrypt(&m).unwrap();
    let mut today_a = Session::from_bytes(&a.to_bytes()).unwrap();
    let mut today_b = Session::from_bytes(&b.to_bytes()).unwrap();
    for m in &yesterday {
        assert!(today_a.decrypt(m).is_err());
        assert!(today_b.decrypt(m).is_err());
    }
}

#[test]
fn post_compromise_security_after_a_dh_step() {
    let (mut a, mut b, mut rng) = pair(9);
    let m = a.encrypt(&mut rng, b"before").unwrap();
    b.decrypt(&m).unwrap();
    // The attacker copies Bob's whole state now.
    let stolen = b.to_bytes();
    // A round trip heals: Bob's reply makes Alice step, Alice's next chain is new.
    let r = b.encrypt(&mut rng, b"reply").unwrap();
    a.decrypt(&r).unwrap();
    let after = a.encrypt(&mut rng, b"after").unwrap();
    // With the stolen state (and without Bob's fresh ratchet secret) the
    // attacker cannot read it; Bob can.
    let mut attacker = Session::from_bytes(&stolen).unwrap();
    assert!(attacker.decrypt(&after).is_err());
    assert_eq!(b.decrypt(&after).unwrap(), b"after");
}

#[test]
fn serialise_and_restore_mid_conversation() {
    let (mut a, mut b, mut rng) = pair(10);
    let m0 = a.encrypt(&mut rng, b"0").unwrap();
    let m1 = a.encrypt(&mut rng, b"1").unwrap();
    b.decrypt(&m1).unwrap();
    let bytes = b.to_bytes();
    let mut b = Session::from_bytes(&bytes).unwrap();
    assert_eq!(&*b.to_bytes(), &*bytes);
    assert_eq!(b.skipped_keys(), 1);
    assert_eq!(b.decrypt(&m0).unwrap(), b"0");
    let r = b.encrypt(&mut rng, b"r").unwrap();
    let mut a = Session::from_bytes(&a.to_bytes()).unwrap();
    assert_eq!(a.decrypt(&r).unwrap(), b"r");
    let m2 = a.encrypt(&mut rng, b"2").unwrap();
    assert_eq!(b.decrypt(&m2).unwrap(), b"2");

    // Damaged state is refused, never misread.
    let mut bad = bytes.to_vec();
    bad[0] = 9;
    assert!(matches!(
        Session::from_bytes(&bad),
        Err(Error::UnsupportedVersion { found: 9, .. })
    ));
    assert!(Session::from_bytes(&bytes[..bytes.len() - 1]).is_err());
    let mut bad = bytes.to_vec();
    bad.push(0);
    assert!(Session::from_bytes(&bad).is_err());
}

#[test]
fn random_schedule_with_reordering_loss_and_duplicates() {
    use rand::Rng;
    let (mut a, mut b, mut rng) = pair(11);
    let mut sched = ChaCha20Rng::seed_from_u64(99);
    // In flight: (to_bob, text, message).
    let mut flight: Vec<(bool, Vec<u8>, Vec<u8>)> = Vec::new();
    let mut delivered = 0;
    let mut b_can_send = false;
    for step in 0..3_000u32 {
        let roll: u32 = sched.random_range(0..10);
        if roll < 4 || flight.is_empty() {
            let to_bob = !b_can_send || sched.random_bool(0.5);
            let text = step.to_be_bytes().to_vec();
            let m = if to_bob {
                a.encrypt(&mut rng, &text).unwrap()
            } else {
                b.encrypt(&mut rng, &text).unwrap()
            };
            flight.push((to_bob, text, m));
        } else {
            let i = sched.random_range(0..flight.len());
            let (to_bob, text, m) = flight.swap_remove(i);
            if sched.random_range(0..10) == 0 {
                continue; // lost
            }
            let r = if to_bob { &mut b } else { &mut a };
            assert_eq!(r.decrypt(&m).unwrap(), text);
            delivered += 1;
            if to_bob {
                b_can_send = true;
            }
            // A duplicate never yields a second plaintext.
            if sched.random_range(0..5) == 0 {
                assert!(r.decrypt(&m).is_err());
            }
        }
    }
    assert!(delivered > 1_000);
}

/// A peer whose state went back in time sends on a chain it had already
/// left: numbers it had used are refused as used, numbers beyond the end
/// it announced are refused as beyond that end (the sign of a rollback the
/// engine acts on), and neither changes the state.
#[test]
fn a_rolled_back_sender_is_told_apart_from_a_duplicate() {
    let (mut a, mut b, mut rng) = pair(8);
    let m = a.encrypt(&mut rng, &[0]).unwrap();
    b.decrypt(&m).unwrap();
    // A copy of Alice's state after her first message.
    let rolled_back = a.clone();
    for i in 1..3u8 {
        let m = a.encrypt(&mut rng, &[i]).unwrap();
        b.decrypt(&m).unwrap();
    }
    // Bob answers, Alice moves to a new ratchet key: Bob learns her first
    // chain ended after 3 messages.
    let m = b.encrypt(&mut rng, b"b").unwrap();
    a.decrypt(&m).unwrap();
    let m = a.encrypt(&mut rng, b"a, new chain").unwrap();
    b.decrypt(&m).unwrap();

    let before = state(&b);
    let mut old = rolled_back;
    let reused = old.encrypt(&mut rng, b"again").unwrap();
    assert_eq!(
        b.decrypt(&reused),
        Err(Error::AlreadyUsedOrEvicted { counter: 1 })
    );
    old.encrypt(&mut rng, b"x").unwrap();
    let beyond = old.encrypt(&mut rng, b"fork").unwrap();
    assert_eq!(
        b.decrypt(&beyond),
        Err(Error::BeyondChainEnd { counter: 3, end: 3 })
    );
    assert_eq!(state(&b), before);

    // A state stored in version 1 (chain ends unknown) still loads; past
    // chains then count as used whatever the number.
    let v2 = state(&b);
    let past_at = v2.len() - 4 - 36;
    let mut v1 = v2[..past_at + 4].to_vec();
    v1[0] = 1;
    v1.extend_from_slice(&v2[past_at + 4..past_at + 4 + 32]);
    let mut restored = Session::from_bytes(&v1).unwrap();
    assert_eq!(
        restored.decrypt(&beyond),
        Err(Error::AlreadyUsedOrEvicted { counter: 3 })
    );
    let m = a.encrypt(&mut rng, b"still works").unwrap();
    assert_eq!(restored.decrypt(&m).unwrap(), b"still works");
}
