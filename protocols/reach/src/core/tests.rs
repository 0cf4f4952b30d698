//! The core alone, fed messages and time.

use super::*;
use shoal::Direction;

fn peer(n: u8) -> PeerId {
    PeerId::from_bytes([n; 32])
}

fn remote(n: u8, addr: &str) -> Remote {
    Remote {
        peer: peer(n),
        addr: addr.parse().unwrap(),
        direction: Direction::Inbound,
    }
}

fn at(now: Instant) -> Now {
    Now::at(now, 1_000_000)
}

fn transmits(core: &mut ReachCore) -> Vec<(PeerId, ReachMessage)> {
    std::iter::from_fn(|| core.poll_transmit())
        .map(|t| (t.peer, ReachMessage::decode(&t.bytes).unwrap()))
        .collect()
}

fn outputs(core: &mut ReachCore) -> Vec<Output> {
    std::iter::from_fn(|| core.poll_event()).collect()
}

fn addr(s: &str) -> Multiaddr {
    s.parse().unwrap()
}

#[test]
fn a_checker_dials_back_only_the_requesters_own_ip() {
    let mut core = ReachCore::new(Config::default(), 1);
    let now = Instant::now();
    let from = remote(1, "/ip4/203.0.113.9/tcp/51000");
    // Another host: refused, and nothing is dialled.
    let other = ReachMessage::Check {
        nonce: 7,
        addr: addr("/ip4/198.51.100.1/tcp/22"),
    };
    core.handle_message(at(now), &from, &other.encode())
        .unwrap();
    assert_eq!(
        transmits(&mut core),
        vec![(
            peer(1),
            ReachMessage::Result {
                nonce: 7,
                code: ResultCode::Refused
            }
        )]
    );
    assert!(outputs(&mut core).is_empty());
    // Its own IP, any port: dialled.
    let own = ReachMessage::Check {
        nonce: 8,
        addr: addr("/ip4/203.0.113.9/tcp/4001"),
    };
    core.handle_message(at(now), &from, &own.encode()).unwrap();
    assert_eq!(
        outputs(&mut core),
        vec![Output::DialBack {
            requester: peer(1),
            addr: addr("/ip4/203.0.113.9/tcp/4001"),
            nonce: 8
        }]
    );
    // One at a time per requester.
    let again = ReachMessage::Check {
        nonce: 9,
        addr: addr("/ip4/203.0.113.9/tcp/4002"),
    };
    core.handle_message(at(now), &from, &again.encode())
        .unwrap();
    assert_eq!(
        transmits(&mut core),
        vec![(
            peer(1),
            ReachMessage::Result {
                nonce: 9,
                code: ResultCode::Busy
            }
        )]
    );
    core.dial_back_done(at(now), peer(1), 8, true);
    assert_eq!(
        transmits(&mut core),
        vec![(
            peer(1),
            ReachMessage::Result {
                nonce: 8,
                code: ResultCode::Reached
            }
        )]
    );
}

#[test]
fn a_relayed_requester_is_refused_and_a_silent_dial_back_is_reported_unreachable() {
    let mut core = ReachCore::new(Config::default(), 1);
    let now = Instant::now();
    let relayed = remote(
        2,
        &format!("/ip4/203.0.113.9/tcp/4001/p2p/{}/p2p-circuit", peer(9)),
    );
    let check = ReachMessage::Check {
        nonce: 1,
        addr: addr("/ip4/203.0.113.9/tcp/4001"),
    };
    core.handle_message(at(now), &relayed, &check.encode())
        .unwrap();
    assert!(matches!(
        transmits(&mut core)[..],
        [(
            _,
            ReachMessage::Result {
                code: ResultCode::Refused,
                ..
            }
        )]
    ));
    let direct = remote(3, "/ip4/203.0.113.9/tcp/50000");
    core.handle_message(at(now), &direct, &check.encode())
        .unwrap();
    assert_eq!(outputs(&mut core).len(), 1);
    let deadline = core.poll_timeout().unwrap();
    core.handle_timeout(at(deadline));
    assert!(matches!(
        transmits(&mut core)[..],
        [(
            _,
            ReachMessage::Result {
                code: ResultCode::Unreachable,
                ..
            }
        )]
    ));
}

#[test]
fn dial_backs_per_network_are_rate_limited() {
    let config = Config {
        dial_backs_per_network_per_minute: 2,
        ..Config::default()
    };
    let mut core = ReachCore::new(config, 1);
    let now = Instant::now();
    for n in 0..3u8 {
        let ip = format!("203.0.113.{}", 10 + n);
        let from = remote(10 + n, &format!("/ip4/{ip}/tcp/5000"));
        let check = ReachMessage::Check {
            nonce: u64::from(n),
            addr: addr(&format!("/ip4/{ip}/tcp/4001")),
        };
        core.handle_message(at(now), &from, &check.encode())
            .unwrap();
    }
    assert_eq!(outputs(&mut core).len(), 2, "two from one /24 per minute");
    assert!(matches!(
        transmits(&mut core)[..],
        [(
            _,
            ReachMessage::Result {
                code: ResultCode::Busy,
                ..
            }
        )]
    ));
}

/// A requester with checkers on `nets` distinct networks (and one more
/// in its own /24) and one candidate address.
fn requester(nets: u8) -> (ReachCore, Instant, Vec<(PeerId, ReachMessage)>) {
    let mut core = ReachCore::new(Config::default(), 5);
    let now = Instant::now();
    for n in 0..nets {
        core.peer_connected(
            at(now),
            &remote(n + 1, &format!("/ip4/198.51.{n}.7/tcp/4001")),
        );
    }
    // Same /24 as the candidate: proves nothing about the internet.
    core.peer_connected(at(now), &remote(99, "/ip4/203.0.113.200/tcp/4001"));
    core.set_candidates(at(now), &[addr("/ip4/203.0.113.9/tcp/4001")]);
    let sent = transmits(&mut core);
    (core, now, sent)
}

#[test]
fn checkers_come_from_distinct_networks_and_two_nonces_make_an_address_reachable() {
    let (mut core, now, sent) = requester(4);
    assert_eq!(sent.len(), Config::default().checkers);
    assert!(sent.iter().all(|(p, _)| *p != peer(99)));
    let nonces: Vec<u64> = sent
        .iter()
        .map(|(_, m)| match m {
            ReachMessage::Check { nonce, .. } => *nonce,
            other => panic!("{other:?}"),
        })
        .collect();
    // A claim without the nonce counts for nothing.
    core.handle_message(
        at(now),
        &remote(1, "/ip4/198.51.0.7/tcp/4001"),
        &ReachMessage::Result {
            nonce: nonces[0],
            code: ResultCode::Reached,
        }
        .encode(),
    )
    .unwrap();
    assert!(!core.status().is_reachable());
    // An unknown nonce is not echoed.
    assert!(!core.nonce_received(at(now), 12345));
    assert!(core.nonce_received(at(now), nonces[1]));
    assert!(!core.status().is_reachable(), "one is not enough");
    assert!(core.nonce_received(at(now), nonces[2]));
    let status = core.status();
    assert_eq!(status.reachable, vec![addr("/ip4/203.0.113.9/tcp/4001")]);
    assert!(matches!(
        outputs(&mut core).last(),
        Some(Output::Changed(s)) if s.is_reachable()
    ));
}

#[test]
fn two_failures_make_an_address_unreachable_and_it_is_checked_again_later() {
    let (mut core, now, sent) = requester(3);
    for (checker, message) in &sent[..2] {
        let ReachMessage::Check { nonce, .. } = message else {
            panic!("{message:?}")
        };
        let from = Remote {
            peer: *checker,
            addr: addr("/ip4/198.51.0.7/tcp/4001"),
            direction: Direction::Outbound,
        };
        core.handle_message(
            at(now),
            &from,
            &ReachMessage::Result {
                nonce: *nonce,
                code: ResultCode::Unreachable,
            }
            .encode(),
        )
        .unwrap();
    }
    assert!(core.status().is_unreachable());
    // At the recheck, a new round asks again; the verdict stands meanwhile.
    let later = now + Config::default().recheck_interval;
    core.handle_timeout(at(later));
    assert!(core.status().is_unreachable());
    assert_eq!(transmits(&mut core).len(), Config::default().checkers);
}

#[test]
fn without_enough_networks_no_verdict_is_made() {
    let (mut core, now, sent) = requester(1);
    assert_eq!(sent.len(), 1);
    let ReachMessage::Check { nonce, .. } = sent[0].1 else {
        panic!()
    };
    assert!(core.nonce_received(at(now), nonce));
    assert_eq!(core.status().unknown.len(), 1);
}

#[test]
fn a_checker_gets_one_check_at_a_time_and_a_busy_one_is_asked_again() {
    let mut core = ReachCore::new(Config::default(), 5);
    let now = Instant::now();
    for n in 0..3u8 {
        core.peer_connected(
            at(now),
            &remote(n + 1, &format!("/ip4/198.51.{n}.7/tcp/4001")),
        );
    }
    core.set_candidates(
        at(now),
        &[
            addr("/ip4/203.0.113.9/tcp/4001"),
            addr("/ip4/203.0.113.9/tcp/4002"),
        ],
    );
    let sent = transmits(&mut core);
    let mut checkers: Vec<PeerId> = sent.iter().map(|(p, _)| *p).collect();
    checkers.dedup();
    assert_eq!(sent.len(), 3, "each of the three once: {sent:?}");
    // The first says busy: once its check is over it is asked again.
    let (busy, ReachMessage::Check { nonce, .. }) = &sent[0] else {
        panic!()
    };
    let from = remote(1, "/ip4/198.51.0.7/tcp/4001");
    assert_eq!(*busy, from.peer);
    core.handle_message(
        at(now),
        &from,
        &ReachMessage::Result {
            nonce: *nonce,
            code: ResultCode::Busy,
        }
        .encode(),
    )
    .unwrap();
    let again = transmits(&mut core);
    assert!(again.iter().any(|(p, _)| *p == from.peer), "{again:?}");
}
