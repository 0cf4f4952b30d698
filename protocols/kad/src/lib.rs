//! Shoal Kademlia DHT: routing table, iterative lookups and signed records.
//!
//! # Tour
//! - [`Kademlia`]: the sans-IO node core. Feed it frames
//!   ([`Kademlia::handle_message`]), time ([`Kademlia::handle_timeout`]) and
//!   connection news; drain [`Transmit`]s, [`Event`]s and the next timeout.
//!   No sockets, no clocks, no tokio: the simulator (`shoal-sim`) and the
//!   service handler drive the same code.
//! - [`Config`]: k, alpha, disjoint paths, timeouts, caps, intervals; each
//!   default is a named `DEFAULT_*` constant in [`config`].
//! - [`key`]: 256-bit [`Key`]s (BLAKE2b-256 of what they name) and XOR
//!   [`Distance`].
//! - [`table`]: the k-bucket [`RoutingTable`] with ping-before-evict,
//!   replacement caches and per-IP-prefix caps ([`ip`]).
//! - [`lookup`]: the iterative [`Lookup`] over disjoint paths.
//! - [`record`]: [`SignedRecord`]s, their [`Validator`] hook; [`store`]: the
//!   bounded [`RecordStore`].
//! - [`protocol`]: the wire messages (also in `docs/PROTOCOL.md`,
//!   section 8).
//!
//! # Data flow
//! ```text
//!  driver ──frame──▶ handle_message ──▶ request? answer from table/store ──▶ poll_transmit
//!                                  └──▶ answer?  advance its query ──▶ more requests / Event
//!  driver ──now────▶ handle_timeout ──▶ failed requests, query deadlines, refresh,
//!                                       re-replication, republish, expiry
//!  commands (find_node, get_record, put_record, bootstrap) ──▶ QueryId … Event::QueryFinished
//! ```
//!
//! # Example
//! Two cores wired by hand: `b` learns of `a`, then looks `a` up.
//! ```
//! use std::time::Instant;
//! use shoal_identity::Keypair;
//! use shoal_kad::{Config, Event, Kademlia, Key, QueryResult};
//!
//! let (ka, kb) = (Keypair::generate(), Keypair::generate());
//! let mut a = Kademlia::new(ka.peer_id(), Config::default(), 1);
//! let mut b = Kademlia::new(kb.peer_id(), Config::default(), 2);
//! let now = Instant::now();
//! let unix = 1_700_000_000;
//! let addr_a = vec!["/memory/1".parse().unwrap()];
//! let addr_b = vec!["/memory/2".parse().unwrap()];
//! b.add_address(now, ka.peer_id(), addr_a.clone());
//! let id = b.find_node(now, Key::for_peer(&ka.peer_id())).unwrap();
//! // Deliver messages until both are idle.
//! loop {
//!     let mut idle = true;
//!     while let Some(t) = b.poll_transmit() {
//!         idle = false;
//!         a.handle_message(now, unix, kb.peer_id(), &addr_b, &t.bytes).unwrap();
//!     }
//!     while let Some(t) = a.poll_transmit() {
//!         idle = false;
//!         b.handle_message(now, unix, ka.peer_id(), &addr_a, &t.bytes).unwrap();
//!     }
//!     if idle { break; }
//! }
//! let finished = std::iter::from_fn(|| b.poll_event()).find_map(|e| match e {
//!     Event::QueryFinished { id: done, result: QueryResult::FindNode { closest }, stats }
//!         if done == id => Some((closest, stats)),
//!     _ => None,
//! });
//! let (closest, stats) = finished.unwrap();
//! assert_eq!(closest[0].peer, ka.peer_id());
//! assert_eq!(stats.closest_depth, Some(0));
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod commands;
pub mod config;
mod core;
pub mod ip;
pub mod key;
pub mod lookup;
mod maintenance;
pub mod protocol;
mod query;
pub mod record;
pub mod store;
pub mod table;

pub use crate::core::{Error, Kademlia, Transmit};
pub use config::Config;
pub use key::{Distance, Key};
pub use lookup::Lookup;
pub use protocol::{DecodeError, MAX_MESSAGE_SIZE};
pub use query::{Event, QueryId, QueryResult, QueryStats};
pub use record::{Record, RecordError, SignedRecord, Validator};
pub use store::RecordStore;
pub use table::{Contact, RoutingTable};

/// The protocol name negotiated on the substream.
pub const PROTOCOL_NAME: &str = "/shoal/kad";

/// The protocol versions spoken (negotiated per substream).
pub const VERSIONS: [u32; 1] = [1];
