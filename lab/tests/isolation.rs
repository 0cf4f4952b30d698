//! The lab has no way out: nothing in it reaches the machine's own network.

mod common;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::process::Command;
use std::time::Duration;

use common::cannot_reach;
use shoal_lab::{Lab, NatKind, output_within};

const TIMEOUT: Duration = Duration::from_secs(10);

/// Output of a command that must succeed.
fn stdout(cmd: &mut Command) -> String {
    let output = output_within(cmd, TIMEOUT).expect("run command");
    assert!(output.status.success(), "{cmd:?}: {output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// IPv4 addresses of the root namespace, loopback excluded.
fn root_addresses() -> Vec<Ipv4Addr> {
    stdout(Command::new("ip").args(["-4", "-o", "addr", "show"]))
        .lines()
        .filter_map(|line| {
            let cidr = line
                .split_whitespace()
                .skip_while(|w| *w != "inet")
                .nth(1)?;
            cidr.split('/').next()?.parse().ok()
        })
        .filter(|ip: &Ipv4Addr| !ip.is_loopback())
        .collect()
}

fn root_interfaces() -> BTreeSet<String> {
    stdout(Command::new("ip").args(["-o", "link", "show"]))
        .lines()
        .filter_map(|line| Some(line.split(':').nth(1)?.trim().to_owned()))
        .collect()
}

#[test]
fn lab_hosts_cannot_reach_the_machine() {
    let before = root_interfaces();
    let Some(mut lab) = Lab::new_or_skip() else {
        return;
    };
    let public = lab.add_public_host("public").expect("public host");
    let nat = lab
        .add_nat("home", NatKind::EndpointIndependent)
        .expect("nat");
    let private = lab.add_host_behind(&nat, "private").expect("private host");

    // No cable into the root namespace.
    assert_eq!(
        root_interfaces(),
        before,
        "the lab added interfaces to the root namespace"
    );

    // The core has no default route: it cannot forward anywhere but the lab.
    let routes = stdout(lab.core_command("ip").args(["-4", "route", "show"]));
    assert!(!routes.contains("default"), "core routes:\n{routes}");

    // A listener in the root namespace, on every address, stays unreachable.
    let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("listen in root namespace");
    let port = listener.local_addr().expect("local addr").port();
    let targets = root_addresses();
    println!("root namespace addresses: {targets:?}, listening on port {port}");
    for ip in &targets {
        let route = output_within(
            lab.core_command("ip")
                .args(["route", "get", &ip.to_string()]),
            TIMEOUT,
        )
        .expect("ip route get");
        assert!(
            !route.status.success(),
            "the core has a route to {ip}: {route:?}"
        );
        for host in [&public, &private] {
            cannot_reach(host, SocketAddrV4::new(*ip, port));
        }
    }
}
