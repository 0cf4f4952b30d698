//! Deterministic simulator for Shoal's sans-IO protocol cores.
//!
//! The protocol cores (Kademlia, gossip) are state machines fed bytes and
//! time that return bytes and events. This crate runs thousands of them in
//! one process over a simulated network with latency, jitter, loss and
//! churn, on a virtual clock, so a test of 5,000 nodes finishes in seconds
//! and the same seed always gives the same run.
//!
//! # Tour
//! - [`shoal::Core`]: the trait the simulator drives, the same one the
//!   service's tokio driver ([`shoal::CoreDriver`]) runs: deliver a
//!   message, run its timers, hand over what it wants to send. Kademlia
//!   and gossip implement it in their own crates; the [`kad`] and
//!   [`gossip`] modules wrap them with what a test measures, so the
//!   simulator drives the very same cores and encoded messages as the real
//!   nodes.
//! - [`NetworkModel`]: per-link latency (stable per pair of nodes, plus
//!   jitter, so messages can overtake each other) and loss.
//! - [`Simulation`]: the event loop. Add nodes, crash them, act on one
//!   ([`Simulation::with_node`]), and advance virtual time
//!   ([`Simulation::run_for`], [`Simulation::run_until`]).
//! - [`kad::KadNetworkPlan`]: a network of Kademlia nodes (or of
//!   [`gossip::GossipNode`]s) that joined one by one through a single seed,
//!   and the lookup measurements the tests and the bench share.
//! - [`mailbox::MailboxWorld`]: offline delivery end to end: service nodes
//!   keeping mailboxes, users running the real messenger engine, lying
//!   replicas, users going offline and restarting.
//! - [`Simulation::revive`] brings a crashed node back with its state: a
//!   node that was offline, or restarted on durable state.
//! - [`Clock`]: the virtual time handed to cores: a monotonic [`Instant`](std::time::Instant)
//!   for timers and wall-clock seconds for signed expiries.
//!
//! # Example
//! ```
//! use std::time::{Duration, Instant};
//! use shoal::{BoxError, Bytes, Core, Now, Remote, Transmit};
//! use shoal_identity::Keypair;
//! use shoal_sim::{NetworkModel, Simulation};
//!
//! /// Answers every message with the same bytes, once.
//! #[derive(Default)]
//! struct Echo { out: Vec<Transmit>, heard: usize }
//!
//! impl Core for Echo {
//!     type Event = ();
//!     fn handle_message(&mut self, _: Now, from: &Remote, bytes: &[u8]) -> Result<(), BoxError> {
//!         self.heard += 1;
//!         if bytes == b"ping" {
//!             self.out.push(Transmit { peer: from.peer, bytes: Bytes::from_static(b"pong") });
//!         }
//!         Ok(())
//!     }
//!     fn handle_timeout(&mut self, _: Now) {}
//!     fn poll_timeout(&self) -> Option<Instant> { None }
//!     fn poll_transmit(&mut self) -> Option<Transmit> { self.out.pop() }
//!     fn poll_event(&mut self) -> Option<()> { None }
//! }
//!
//! let mut sim = Simulation::new(7, NetworkModel::default());
//! let a = sim.add_node(Keypair::generate().public().peer_id(), Echo::default());
//! let b = sim.add_node(Keypair::generate().public().peer_id(), Echo::default());
//! let b_id = sim.peer_id(b);
//! let ping = Transmit { peer: b_id, bytes: Bytes::from_static(b"ping") };
//! sim.with_node(a, |node, _now| node.out.push(ping));
//! sim.run_for(Duration::from_secs(1));
//! assert_eq!(sim.node(a).heard, 1); // the pong
//! assert_eq!(sim.stats().delivered, 2);
//! ```

#![forbid(unsafe_code)]

mod clock;
mod engine;
pub mod gossip;
pub mod kad;
pub mod mailbox;
mod network;

pub use clock::Clock;
pub use engine::{DEFAULT_UNIX_START, NodeIndex, SimStats, Simulation, now_of, sim_addr};
pub use network::NetworkModel;
