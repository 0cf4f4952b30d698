//! NAT behaviour: mapping kinds, the public address seen, and inbound
//! filtering.

mod common;

use std::net::SocketAddrV4;

use common::{PORT, cannot_reach, reach, serve};
use shoal_lab::{Host, Lab, Nat, NatKind};

/// What [`ports_from`] built.
struct Setup {
    /// Public ports seen by the two servers, per attempt.
    ports: Vec<(u16, u16)>,
    nat: Nat,
    alice: Host,
    outsider: Host,
}

/// Connects twice from one local port of a host behind a `kind` NAT to two
/// servers, `attempts` times with different local ports.
fn ports_from(lab: &mut Lab, kind: NatKind, attempts: u16) -> Setup {
    let s1 = lab.add_public_host("s1").expect("s1");
    let s2 = lab.add_public_host("s2").expect("s2");
    let nat = lab.add_nat("home", kind).expect("nat");
    let alice = lab.add_host_behind(&nat, "alice").expect("alice");
    assert_eq!(
        alice.ip().octets()[0],
        10,
        "not a private address: {alice:?}"
    );
    let _servers = (serve(&s1), serve(&s2));
    let ports = (0..attempts)
        .map(|i| {
            let local = (41000 + i).to_string();
            let args = ["--local-port", local.as_str()];
            let a = reach(&alice, SocketAddrV4::new(s1.ip(), PORT), &args);
            let b = reach(&alice, SocketAddrV4::new(s2.ip(), PORT), &args);
            assert_eq!(*a.addr.ip(), nat.public_ip(), "s1 saw {a:?}");
            assert_eq!(*b.addr.ip(), nat.public_ip(), "s2 saw {b:?}");
            println!(
                "{kind:?} from local port {local}: {} and {}",
                a.addr, b.addr
            );
            (a.addr.port(), b.addr.port())
        })
        .collect();
    Setup {
        ports,
        nat,
        alice,
        outsider: s1,
    }
}

#[test]
fn endpoint_independent_nat_keeps_the_mapping_and_drops_inbound() {
    let Some(mut lab) = Lab::new_or_skip() else {
        return;
    };
    let Setup {
        ports,
        nat,
        alice,
        outsider,
    } = ports_from(&mut lab, NatKind::EndpointIndependent, 1);
    let (first, second) = ports[0];
    assert_eq!(first, second, "the mapping depends on the destination");

    // Alice listens, yet nobody outside gets to her: neither via the
    // router's public address (not even at her mapped port) nor directly.
    let _server = serve(&alice);
    cannot_reach(&outsider, SocketAddrV4::new(nat.public_ip(), PORT));
    cannot_reach(&outsider, SocketAddrV4::new(nat.public_ip(), first));
    cannot_reach(&outsider, SocketAddrV4::new(alice.ip(), PORT));
}

#[test]
fn symmetric_nat_maps_each_destination_to_a_new_port() {
    let Some(mut lab) = Lab::new_or_skip() else {
        return;
    };
    // A random port could repeat by chance (about 1 in 30,000); three
    // attempts make that practically impossible.
    let ports = ports_from(&mut lab, NatKind::Symmetric, 3).ports;
    assert!(
        ports.iter().any(|(a, b)| a != b),
        "same public port for different destinations: {ports:?}"
    );
}

#[test]
fn double_nat_shows_the_carrier_address_and_drops_inbound() {
    let Some(mut lab) = Lab::new_or_skip() else {
        return;
    };
    let server = lab.add_public_host("server").expect("server");
    let nat = lab.add_nat("home", NatKind::Double).expect("nat");
    let alice = lab.add_host_behind(&nat, "alice").expect("alice");
    let _servers = (serve(&server), serve(&alice));
    let seen = reach(&alice, SocketAddrV4::new(server.ip(), PORT), &[]);
    assert_eq!(*seen.addr.ip(), nat.public_ip());
    assert!(nat.carrier_namespace().is_some());
    cannot_reach(&server, SocketAddrV4::new(nat.public_ip(), PORT));
    cannot_reach(&server, SocketAddrV4::new(alice.ip(), PORT));
}

#[test]
fn hosts_behind_different_nats_cannot_connect_directly() {
    let Some(mut lab) = Lab::new_or_skip() else {
        return;
    };
    let nat_a = lab
        .add_nat("nat-a", NatKind::EndpointIndependent)
        .expect("nat a");
    let nat_b = lab.add_nat("nat-b", NatKind::Symmetric).expect("nat b");
    let alice = lab.add_host_behind(&nat_a, "alice").expect("alice");
    let bob = lab.add_host_behind(&nat_b, "bob").expect("bob");
    let _servers = (serve(&alice), serve(&bob));
    for (from, to, to_nat) in [(&alice, &bob, &nat_b), (&bob, &alice, &nat_a)] {
        cannot_reach(from, SocketAddrV4::new(to.ip(), PORT));
        cannot_reach(from, SocketAddrV4::new(to_nat.public_ip(), PORT));
    }
}
