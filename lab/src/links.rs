//! Wiring namespaces together with veth pairs and bridges.

use std::net::Ipv4Addr;

use crate::LabError;
use crate::netns::batch;
use crate::plan::{cidr, link_core, link_far};

/// Name of a router's LAN bridge.
pub(crate) const LAN_BRIDGE: &str = "lan";
/// Name of a router's uplink interface.
pub(crate) const WAN: &str = "wan";
/// Name of a host's only interface.
pub(crate) const HOST_IF: &str = "eth0";

/// Links namespace `far` (interface `far_if`) to the core over link `k`:
/// the far end gets `198.18.k.2/24` and a default route via the core's
/// `198.18.k.1`. Returns the far end's address.
pub(crate) fn to_core(core: &str, k: u8, far: &str, far_if: &str) -> Result<Ipv4Addr, LabError> {
    let core_if = format!("h{k}");
    let (core_ip, far_ip) = (link_core(k), link_far(k));
    batch(
        core,
        &[
            format!("link add {core_if} type veth peer name {far_if} netns {far}"),
            format!("addr add {} dev {core_if}", cidr(core_ip)),
            format!("link set {core_if} up"),
        ],
    )?;
    configure_end(far, far_if, far_ip, core_ip)?;
    Ok(far_ip)
}

/// Gives `router` a LAN: a bridge holding the router's address `gateway`/24.
pub(crate) fn make_lan(router: &str, gateway: Ipv4Addr) -> Result<(), LabError> {
    batch(
        router,
        &[
            format!("link add {LAN_BRIDGE} type bridge"),
            format!("addr add {} dev {LAN_BRIDGE}", cidr(gateway)),
            format!("link set {LAN_BRIDGE} up"),
        ],
    )
}

/// Plugs namespace `member` (interface `member_if`, address `addr`/24) into
/// `router`'s LAN bridge on port `p<port>`, default route via `gateway`.
pub(crate) fn join_lan(
    router: &str,
    port: u8,
    member: &str,
    member_if: &str,
    addr: Ipv4Addr,
    gateway: Ipv4Addr,
) -> Result<(), LabError> {
    let port_if = format!("p{port}");
    batch(
        router,
        &[
            format!("link add {port_if} type veth peer name {member_if} netns {member}"),
            format!("link set {port_if} master {LAN_BRIDGE}"),
            format!("link set {port_if} up"),
        ],
    )?;
    configure_end(member, member_if, addr, gateway)
}

fn configure_end(
    ns: &str,
    ifname: &str,
    addr: Ipv4Addr,
    gateway: Ipv4Addr,
) -> Result<(), LabError> {
    batch(
        ns,
        &[
            format!("addr add {} dev {ifname}", cidr(addr)),
            format!("link set {ifname} up"),
            format!("route add default via {gateway}"),
        ],
    )
}
