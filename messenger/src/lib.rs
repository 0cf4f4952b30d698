//! The Shoal messenger: the `shoal-im` engine on a live node.
//!
//! # Tour
//! - [`Messenger`]: start a node for a store ([`SqliteStore`] or
//!   [`shoal_im::MemoryStore`]) on a transport, then `add_contact`, `send`,
//!   `mark_read`, `history`, `contacts`, `peers`; [`Event`]s arrive on the
//!   returned channel.
//! - [`directory`]: presence and prekey records in the Kademlia DHT, and
//!   their validators.
//! - [`SqliteStore`]: the durable store (WAL, one transaction per engine step).
//! - [`FaultConfig`]: drops, duplicates and delays outgoing envelopes, to
//!   test and demonstrate the delivery guarantees.
//! - [`MessengerConfig`]: listen and bootstrap addresses, retry and
//!   republish intervals.
//!
//! # Data flow
//! ```text
//!  send ─▶ Engine (compose, commit, encrypt) ─▶ Transmit ─▶ /shoal/im frame ─▶ peer
//!  peer ─▶ /shoal/im frame ─▶ Engine (decrypt, order, commit) ─▶ Event + Ack ─▶ peer
//!  no session to the device ─▶ directory lookup (DHT) ─▶ dial ─▶ waiting envelopes
//! ```

#![forbid(unsafe_code)]

pub mod config;
pub mod directory;
mod faults;
mod service;
pub mod sqlite;

pub use config::MessengerConfig;
pub use faults::FaultConfig;
pub use service::{Event, IDENTIFY, IM, IM_PROTOCOL_NAME, KAD, Messenger, MessengerError};
pub use sqlite::SqliteStore;
