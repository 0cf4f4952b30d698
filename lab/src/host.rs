//! A machine in the lab: one network namespace with one address.

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::process::Command;

use crate::process::in_namespace;

/// A host of a [`Lab`](crate::Lab): a network namespace with one interface,
/// `eth0`, one IPv4 address and a default route to its router (the core for
/// a public host, the NAT router otherwise).
///
/// A host is a plain description; it stays valid as long as its lab lives.
/// Programs run in it with [`Host::command`]; the lab kills whatever still
/// runs there when it is dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    pub(crate) name: String,
    pub(crate) namespace: String,
    pub(crate) ip: Ipv4Addr,
    pub(crate) gateway: Ipv4Addr,
}

impl Host {
    /// The name given when the host was added.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The network namespace (as `ip netns list` shows it).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The host's own address: public (198.18.k.2) or private (10.0.n.i).
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// The next hop of its default route.
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// A command that runs `program` inside this host
    /// (`ip netns exec <namespace> <program>`); add arguments and run it as
    /// any [`Command`]. The program sees only the lab's network; the file
    /// system and everything else are the machine's.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        in_namespace(&self.namespace, program)
    }
}
