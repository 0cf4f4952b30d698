//! The Shoal messenger: the `shoal-im` engine on a live node.
//!
//! # Tour
//! - [`Messenger`]: start a node for a store ([`SqliteStore`] or
//!   [`shoal_im::MemoryStore`]) on a transport ([`Messenger::start`]), or
//!   plug the envelope protocol into a node of your own beside other
//!   protocols ([`Messenger::protocol`]); then `add_contact`, `send`,
//!   `mark_read`, `history`, `contacts`, `peers`; [`Event`]s arrive on the
//!   returned channel.
//! - `im_core.rs`: the engine as a [`shoal::Core`] (run by the service's
//!   [`CoreDriver`](shoal::CoreDriver) like kad and gossip); `driver.rs`:
//!   the one task moving commands, events, lookups and publications.
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
//!  stranger ─▶ … ─▶ Engine (request: stored within quotas) ─▶ MessageRequest; Ack once accepted
//!  no session to the device ─▶ engine asks for a route (rate-limited) ─▶ directory
//!      lookup (DHT) ─▶ address book ─▶ the service dials ─▶ engine retries
//! ```

//!
//! # Example
//! ```
//! use std::time::Duration;
//! use shoal_im::MemoryStore;
//! use shoal_messenger::{Event, Messenger, MessengerConfig};
//! use shoal_transport::{MemoryNetwork, MemoryTransport};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let network = MemoryNetwork::new();
//! let listen = vec!["/memory/0".parse()?];
//! let (bob, mut bob_events) = Messenger::start(
//!     MemoryStore::new(), // or SqliteStore::open("bob.db")?
//!     MemoryTransport::new(&network),
//!     MessengerConfig { listen: listen.clone(), ..MessengerConfig::default() },
//! )
//! .await?;
//! let (alice, _alice_events) = Messenger::start(
//!     MemoryStore::new(),
//!     MemoryTransport::new(&network),
//!     MessengerConfig { listen, bootstrap: bob.listen_addrs(), ..MessengerConfig::default() },
//! )
//! .await?;
//!
//! // Bob shares the text form of his id; alice adds him and writes.
//! let bob_id = bob.user_id().to_string().parse()?;
//! alice.add_contact(bob_id, "bob").await?;
//! alice.send(bob_id, "hello bob").await?;
//!
//! // Alice is a stranger to bob: her first message is a request, shown
//! // (and acknowledged) once bob accepts it by adding her.
//! let received = tokio::time::timeout(Duration::from_secs(30), async {
//!     while let Some(event) = bob_events.recv().await {
//!         match event {
//!             Event::MessageRequest { contact } => bob.add_contact(contact, "alice").await.ok()?,
//!             Event::Received { message, .. } => return Some(message.text()),
//!             _ => {}
//!         }
//!     }
//!     None
//! })
//! .await?;
//! assert_eq!(received.as_deref(), Some("hello bob"));
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

pub mod config;
pub mod directory;
mod driver;
mod faults;
mod im_core;
mod join;
pub mod mailboxes;
mod messenger;
pub mod service_node;
pub mod sqlite;

pub use config::MessengerConfig;
pub use faults::FaultConfig;
pub use im_core::MAX_BACKLOG;
pub use messenger::{
    Event, IDENTIFY, IM, IM_PROTOCOL_NAME, KAD, MAILBOX, MAILBOX_KAD, Messenger, MessengerError,
    REACH, REACH_BACK, RELAY_HOP, RELAY_STOP, kad_config, open_engine,
};
pub use sqlite::SqliteStore;
