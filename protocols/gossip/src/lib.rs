//! Shoal gossip: topic publish/subscribe over a mesh with lazy gossip.
//!
//! # Tour
//! - [`Gossip`]: the sans-IO core (no tokio, no sockets, no clock). Feed it
//!   peers, frames and time; drain frames to send and [`Event`]s. The same
//!   core runs under the tokio driver and in the simulator (`shoal-sim`).
//! - [`Config`]: mesh degrees, heartbeat, caches and per-peer budgets; each
//!   default is a named `DEFAULT_*` constant in [`config`].
//! - [`protocol`]: the wire format (one protobuf `Rpc` per frame) and its
//!   bounded decoder; [`message`]: signing, checking and ids of messages.
//! - [`peer`]: the penalty points a misbehaving peer collects.
//! - The full specification with test vectors is section 9 of
//!   `docs/PROTOCOL.md`.
//!
//! # Behaviour
//! ```text
//!  publish ──sign──▶ all topic peers (flood publish) ──▶ each node: seen? drop
//!                                                         │ verify signature once
//!                                                         ├─▶ Event::Message
//!                                                         └─▶ forward to its mesh (D≈6)
//!  heartbeat: mesh kept within [D_low, D_high] with GRAFT/PRUNE;
//!             IHAVE(recent ids) ──▶ some non-mesh peers ──IWANT──▶ full message
//! ```
//! A message is identified by the hash of its signed body, remembered as
//! seen for [`Config::seen_ttl`], and never delivered or forwarded twice.
//! Everything a peer sends is budgeted per heartbeat; going over, or
//! sending invalid messages, costs penalty points, and a peer that collects
//! too many is dropped with [`Event::Disconnect`].
//!
//! # Example
//! Two cores wired by hand:
//! ```
//! use std::time::Instant;
//! use shoal_gossip::{Config, Event, Gossip, Topic};
//! use shoal_identity::Keypair;
//!
//! let (ka, kb) = (Keypair::generate(), Keypair::generate());
//! let (a_id, b_id) = (ka.peer_id(), kb.peer_id());
//! let mut a = Gossip::new(ka, Config::default(), 1);
//! let mut b = Gossip::new(kb, Config::default(), 2);
//! let topic = Topic::new("chat").unwrap();
//! let now = Instant::now();
//! a.subscribe(topic.clone()).unwrap();
//! b.subscribe(topic.clone()).unwrap();
//! a.peer_connected(now, b_id);
//! b.peer_connected(now, a_id);
//! // Deliver what each side sends (here: its subscriptions).
//! while let Some(t) = a.poll_transmit() { b.handle_message(now, a_id, &t.frame).unwrap(); }
//! while let Some(t) = b.poll_transmit() { a.handle_message(now, b_id, &t.frame).unwrap(); }
//!
//! let id = a.publish(now, topic, &b"hello"[..]).unwrap();
//! let frame = a.poll_transmit().unwrap();
//! assert_eq!(frame.peer, b_id);
//! b.handle_message(now, a_id, &frame.frame).unwrap();
//! let delivered = std::iter::from_fn(|| b.poll_event())
//!     .find(|e| matches!(e, Event::Message { .. }));
//! assert!(matches!(delivered, Some(Event::Message { id: i, .. }) if i == id));
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod cache;
pub mod config;
mod gossip;
mod heartbeat;
mod inbound;
pub mod message;
mod outbox;
pub mod peer;
pub mod protocol;

pub use config::Config;
pub use gossip::{Error, Event, Gossip, PublishError, Stats, SubscribeError};
pub use message::{MessageId, Topic, TopicError};
pub use outbox::Transmit;
pub use peer::Misbehaviour;
pub use protocol::{DecodeError, MAX_FRAME_SIZE};

/// The protocol name negotiated on the substream.
pub const PROTOCOL_NAME: &str = "/shoal/gossip";

/// The protocol versions spoken (negotiated per substream).
pub const VERSIONS: [u32; 1] = [1];

#[cfg(test)]
mod tests;
