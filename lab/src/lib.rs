//! An internet in a box: real processes on real Linux network stacks, behind
//! real NAT routers, on one machine.
//!
//! The simulator (`shoal-sim`) runs protocol cores on a virtual network;
//! this crate is its counterpart for whole programs. Each host is a network
//! namespace with its own interfaces, routes and firewall; veth pairs are
//! the cables; iptables does NAT and filtering. Tests and benches start
//! Shoal nodes inside hosts and watch them find each other through NATs.
//!
//! # Topology
//! ```text
//!                       core router: "the internet"
//!               ip_forward on, no default route, optional shaper
//!        ┌────────────────┬──────────┴──────┬──────────────────────┐
//!   198.18.1.1/24    198.18.2.1/24     198.18.3.1/24          198.18.4.1/24
//!        │                │                 │                      │
//!   public host      public host      NAT router            carrier router
//!   198.18.1.2       198.18.2.2       wan 198.18.3.2        wan 198.18.4.2
//!                                     lan 10.0.1.1/24       lan 100.64.2.1/24
//!                                       │         │                │
//!                                   10.0.1.2   10.0.1.3       home router
//!                                                             wan 100.64.2.2
//!                                                             lan 10.0.2.1/24
//!                                                                  │
//!                                                              10.0.2.2
//! ```
//! Left to right: two public hosts, an endpoint-independent (or symmetric)
//! NAT with two hosts, and a double NAT with one. Every link to the core is
//! a /24 of its own (see the address plan below), so public hosts never
//! share a subnet. NAT routers masquerade out of their WAN and, like home
//! routers, drop unsolicited inbound packets; nothing is port-forwarded.
//! The core has no route out, and no cable leads to the machine's own
//! (root) namespace, so nothing in the lab can reach the machine or
//! anything beyond it.
//!
//! # Tour
//! - [`Lab`]: builds the core ([`Lab::new`], or [`Lab::new_or_skip`] in
//!   tests), public hosts ([`Lab::add_public_host`]), NAT networks
//!   ([`Lab::add_nat`], [`NatKind`]) and hosts behind them
//!   ([`Lab::add_host_behind`]). Dropping it removes everything.
//! - [`Host`]: a namespace with one address; [`Host::command`] runs a
//!   program inside it.
//! - [`Nat`]: a NAT network, with its public address; [`Place`] and
//!   [`Lab::add_host_at`] for a host that is public or alone behind a NAT.
//! - [`Lab::shape`] with [`Shaping`]: delay and loss on every packet the
//!   core forwards, done by a userspace NFQUEUE shaper (the kernel here has
//!   no netem). The [`shaper`] module explains how and why.
//! - [`Background`] and [`output_within`]: run programs in hosts, and type
//!   to interactive ones such as a chat, without ever waiting unboundedly.
//!
//! # Address plan
//! - Link `k` to the core: `198.18.k.0/24`, core `.1`, far end `.2`.
//! - NAT `n`'s LAN: `10.0.n.0/24`, router `.1`, hosts from `.2`.
//! - Double NAT `n`'s carrier LAN: `100.64.n.0/24`, carrier `.1`, home
//!   router `.2`.
//!
//! # Names and cleanup
//! Namespaces are named `shoal-lab-<pid>-<n>-<name>`, so labs of parallel
//! tests (threads or processes) never collide. Interfaces are created
//! inside lab namespaces only, never in the root namespace, so their short
//! names (`eth0`, `wan`, `lan`, `h3`, `p2`) need only be unique per
//! namespace. `Drop` kills every process left in the lab's namespaces and
//! deletes them; [`Lab::new`] also deletes namespaces of labs whose process
//! has died (a test killed with SIGKILL never runs `Drop`).
//!
//! # Requirements
//! Root (or CAP_NET_ADMIN and CAP_SYS_ADMIN), `ip` (iproute2), `iptables`
//! and `iptables-restore`, `sysctl`; for shaping, a kernel with NFQUEUE.
//! Tests call [`Lab::new_or_skip`], which skips where that is missing and
//! fails under `CI`.
//!
//! # Using it from other crates
//! Add `shoal-lab` as a dev-dependency and start tests with
//! `let Some(mut lab) = Lab::new_or_skip() else { return };`. Nothing else
//! is needed: the shaper is a thread of the test process (see [`shaper`]),
//! not a helper binary that would have to be found. Programs run inside
//! hosts are whatever the caller builds, for example its own binaries via
//! `env!("CARGO_BIN_EXE_<name>")`.
//!
//! # Example
//! ```no_run
//! use std::time::Duration;
//! use shoal_lab::{Lab, NatKind, Shaping};
//!
//! let mut lab = Lab::new()?;
//! let server = lab.add_public_host("server")?;
//! let home = lab.add_nat("home", NatKind::EndpointIndependent)?;
//! let alice = lab.add_host_behind(&home, "alice")?;
//! lab.shape(Shaping { one_way_delay: Duration::from_millis(20), loss: 0.0, seed: 7 })?;
//!
//! // alice (10.0.1.2) reaches the server; the server sees home's public address.
//! let status = alice
//!     .command("ping")
//!     .args(["-c", "1", &server.ip().to_string()])
//!     .status()?;
//! assert!(status.success());
//! println!("alice appears as {}", home.public_ip());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod error;
mod host;
mod lab;
mod links;
mod nat;
mod netns;
mod nfqueue;
mod plan;
mod process;
pub mod shaper;

pub use error::LabError;
pub use host::Host;
pub use lab::{CI_ENV, Lab};
pub use nat::{Nat, NatKind, Place};
pub use netns::MAX_NAME_LEN;
pub use plan::{MAX_HOSTS_PER_NAT, MAX_LINKS, MAX_NATS};
pub use process::{Background, output_within};
pub use shaper::{ShaperStats, Shaping};

/// Names of all network namespaces on the machine (what `ip netns list`
/// shows), lab or not; tests use it to check that a lab cleaned up.
pub fn machine_namespaces() -> Vec<String> {
    netns::list()
}
