//! Public hosts: each on its own /24, all reaching each other directly.

mod common;

use std::collections::HashSet;
use std::net::SocketAddrV4;

use common::{PORT, reach, serve};
use shoal_lab::Lab;

#[test]
fn public_hosts_reach_each_other_and_see_real_addresses() {
    let Some(mut lab) = Lab::new_or_skip() else {
        return;
    };
    let hosts: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|name| lab.add_public_host(name).expect("add public host"))
        .collect();
    let subnets: HashSet<_> = hosts
        .iter()
        .map(|h| h.ip().octets()[..3].to_vec())
        .collect();
    assert_eq!(subnets.len(), 3, "public hosts share a /24: {hosts:?}");
    for host in &hosts {
        assert!(
            host.ip().octets()[0] == 198 && (18..=19).contains(&host.ip().octets()[1]),
            "{host:?} is outside 198.18.0.0/15"
        );
    }
    let _servers: Vec<_> = hosts.iter().map(serve).collect();
    for from in &hosts {
        for to in hosts.iter().filter(|h| *h != from) {
            let seen = reach(from, SocketAddrV4::new(to.ip(), PORT), &[]);
            assert_eq!(
                *seen.addr.ip(),
                from.ip(),
                "{} -> {}",
                from.name(),
                to.name()
            );
        }
    }
}
