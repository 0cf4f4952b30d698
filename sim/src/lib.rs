//! Deterministic simulator for Shoal's sans-IO protocol cores.
//!
//! The protocol cores (Kademlia, gossip) are state machines fed bytes and
//! time that return bytes and events. This crate runs thousands of them in
//! one process over a simulated network with latency, jitter, loss and
//! churn, on a virtual clock, so a test of 5,000 nodes finishes in seconds
//! and the same seed always gives the same run.
//!
//! # Tour
//! - [`SimNode`]: what the simulator needs from a core: deliver a message,
//!   run its timers, hand over what it wants to send. Each protocol crate's
//!   core is wrapped in a small adapter implementing it (the
//!   [`kad`] and [`gossip`] modules), so the simulator drives the very same
//!   cores and encoded messages as the real handlers.
//! - [`NetworkModel`]: per-link latency (stable per pair of nodes, plus
//!   jitter, so messages can overtake each other) and loss.
//! - [`Simulation`]: the event loop. Add nodes, crash them, act on one
//!   ([`Simulation::with_node`]), and advance virtual time
//!   ([`Simulation::run_for`], [`Simulation::run_until`]).
//! - [`kad::KadNetworkPlan`]: a network of Kademlia nodes (or of
//!   [`gossip::GossipNode`]s) that joined one by one through a single seed,
//!   and the lookup measurements the tests and the bench share.
//! - [`Clock`]: the virtual time handed to cores: a monotonic [`Instant`](std::time::Instant)
//!   for timers and wall-clock seconds for signed expiries.
//!
//! # Example
//! ```
//! use std::time::{Duration, Instant};
//! use shoal_identity::{Keypair, PeerId};
//! use shoal_sim::{Clock, NetworkModel, SimNode, Simulation, Transmit};
//!
//! /// Answers every message with the same bytes, once.
//! #[derive(Default)]
//! struct Echo { out: Vec<Transmit>, heard: usize }
//!
//! impl SimNode for Echo {
//!     fn deliver(&mut self, _now: Clock, from: PeerId, bytes: &[u8]) {
//!         self.heard += 1;
//!         if bytes == b"ping" {
//!             self.out.push(Transmit { to: from, bytes: b"pong".to_vec() });
//!         }
//!     }
//!     fn handle_timeout(&mut self, _now: Clock) {}
//!     fn poll_timeout(&self) -> Option<Instant> { None }
//!     fn poll_transmit(&mut self) -> Option<Transmit> { self.out.pop() }
//! }
//!
//! let mut sim = Simulation::new(7, NetworkModel::default());
//! let a = sim.add_node(Keypair::generate().public().peer_id(), Echo::default());
//! let b = sim.add_node(Keypair::generate().public().peer_id(), Echo::default());
//! let b_id = sim.peer_id(b);
//! sim.with_node(a, |node, _now| node.out.push(Transmit { to: b_id, bytes: b"ping".to_vec() }));
//! sim.run_for(Duration::from_secs(1));
//! assert_eq!(sim.node(a).heard, 1); // the pong
//! assert_eq!(sim.stats().delivered, 2);
//! ```

#![forbid(unsafe_code)]

mod clock;
mod engine;
pub mod gossip;
pub mod kad;
mod network;

pub use clock::Clock;
pub use engine::{DEFAULT_UNIX_START, NodeIndex, SimNode, SimStats, Simulation, Transmit};
pub use network::NetworkModel;
