//! Shoal gossip: topic publish/subscribe over a mesh with lazy gossip.
//!
//! # Tour
//! - [`new`] declares the protocol ([`PROTOCOL_NAME`], versions
//!   [`VERSIONS`]) for a [`ServiceBuilder`](shoal::ServiceBuilder): one
//!   service-wide handler runs the core; the [`Handle`] subscribes and
//!   publishes; [`Event`]s arrive on a bounded channel.
//! - [`Gossip`]: the sans-IO core (no tokio, no sockets, no clock). Feed it
//!   peers, frames and time; drain frames to send and [`Event`]s. The same
//!   core runs under the tokio driver and in the simulator (`shoal-sim`).
//! - [`Config`]: mesh degrees, heartbeat, caches and per-peer budgets; each
//!   default is a named `DEFAULT_*` constant in [`config`].
//! - [`protocol`]: the wire format (one protobuf `Rpc` per frame) and its
//!   bounded decoder; [`message`]: signing, checking and ids of messages.
//! - [`peer`]: the penalty points a misbehaving peer collects.
//! - [`send`]: how what we send each peer is shared: our own messages
//!   first, a fair share for each peer we relay for, and a backlog for our
//!   own messages that found no room.
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
//! too many is dropped with [`Event::Disconnect`]. We send each peer at
//! most half its budgets, our own messages first, so a flood of valid
//! messages relayed for others cannot keep them from our mesh; IWANT is
//! answered at most once per message and peer. [`Gossip::publish`] says
//! how many peers a message went to ([`Published`]).
//!
//! # Examples
//! On a service:
//! ```
//! use shoal::{ProtocolId, ServiceBuilder};
//! use shoal_gossip::{Config, Topic};
//! use shoal_identity::Keypair;
//!
//! let key = Keypair::generate();
//! let (meta, handle, mut events) = shoal_gossip::new(ProtocolId(2), Config::default(), key.clone());
//! let service = ServiceBuilder::new(key).protocol(meta).build().unwrap();
//! handle.subscribe(Topic::new("chat").unwrap()).unwrap();
//! // spawn `service`, dial peers, `handle.publish(topic, payload)`, then
//! // read `events`: Event::Message { topic, author, payload, .. }
//! # drop((service, events));
//! ```
//!
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
//! let published = a.publish(now, topic, &b"hello"[..]).unwrap();
//! assert_eq!(published.sent, 1); // b took it
//! let id = published.id;
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
mod handler;
mod heartbeat;
mod inbound;
pub mod message;
mod outbox;
pub mod peer;
pub mod protocol;
pub mod send;

use std::{
    collections::hash_map::RandomState,
    hash::{BuildHasher, Hasher},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use bytes::Bytes;
use shoal::{CoreDriver, CoreHandle, ProtocolId, ProtocolMeta};
use shoal_identity::{Keypair, PeerId};
use tokio::sync::mpsc;

pub use config::Config;
pub use gossip::{Error, Event, Gossip, PublishError, Published, Stats, SubscribeError};
pub use message::{MessageId, Topic, TopicError};
pub use outbox::Transmit;
pub use peer::Misbehaviour;
pub use protocol::{DecodeError, MAX_FRAME_SIZE};

/// The protocol name negotiated on the substream.
pub const PROTOCOL_NAME: &str = "/shoal/gossip";

/// The protocol versions spoken (negotiated per substream).
pub const VERSIONS: [u32; 1] = [1];

/// Why a [`Handle`] call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandleError {
    /// Publishing was refused.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// Subscribing was refused.
    #[error(transparent)]
    Subscribe(#[from] SubscribeError),
}

/// Application access to a running gossip protocol. Cheap to clone.
///
/// Calls made before the service runs are kept and sent once it starts.
#[derive(Debug, Clone)]
pub struct Handle {
    core: CoreHandle<Gossip>,
    dropped_events: Arc<AtomicU64>,
}

impl Handle {
    /// Joins `topic` (see [`Gossip::subscribe`]).
    pub fn subscribe(&self, topic: Topic) -> Result<bool, HandleError> {
        Ok(self.core.with(|core, _| core.subscribe(topic))?)
    }

    /// Leaves `topic` (see [`Gossip::unsubscribe`]).
    pub fn unsubscribe(&self, topic: &Topic) -> bool {
        self.core.with(|core, _| core.unsubscribe(topic))
    }

    /// Signs and sends a message (see [`Gossip::publish`]); the result
    /// holds its id and how many peers it went to.
    pub fn publish(
        &self,
        topic: Topic,
        payload: impl Into<Bytes>,
    ) -> Result<Published, HandleError> {
        let payload = payload.into();
        Ok(self
            .core
            .with(|core, now| core.publish(now.instant, topic, payload))?)
    }

    /// Our mesh peers of `topic`.
    pub fn mesh_peers(&self, topic: &Topic) -> Vec<PeerId> {
        self.core
            .read(|core| core.mesh_peers(topic).copied().collect())
    }

    /// Connected peers subscribed to `topic`.
    pub fn topic_peers(&self, topic: &Topic) -> Vec<PeerId> {
        self.core
            .read(|core| core.topic_peers(topic).copied().collect())
    }

    /// The core's counters.
    pub fn stats(&self) -> Stats {
        self.core.read(|core| core.stats().clone())
    }

    /// Events dropped because the event channel was full.
    pub fn dropped_events(&self) -> u64 {
        self.dropped_events.load(Ordering::Relaxed)
    }

    /// Frames dropped because a session's send queue was full or closed.
    pub fn dropped_frames(&self) -> u64 {
        self.core.dropped_transmits()
    }

    /// How often the core's timer woke up.
    pub fn timer_wakeups(&self) -> u64 {
        self.core.timer_wakeups()
    }
}

/// Declares the gossip protocol as `id` for the node `keypair` (the
/// service's own key: messages are signed with it): register the returned
/// [`ProtocolMeta`] with a [`ServiceBuilder`](shoal::ServiceBuilder), use
/// the [`Handle`] to subscribe and publish, and read the [`Event`]s.
pub fn new(
    id: ProtocolId,
    config: Config,
    keypair: Keypair,
) -> (ProtocolMeta, Handle, mpsc::Receiver<Event>) {
    let (tx, rx) = mpsc::channel(config.event_queue.max(1));
    // Only simulations need reproducible runs; a live node takes a seed
    // from the standard library's per-process random keys.
    let seed = RandomState::new().build_hasher().finish();
    let dropped_events = Arc::new(AtomicU64::new(0));
    let dropped = dropped_events.clone();
    let on_event = move |event: Event| {
        if let Err(mpsc::error::TrySendError::Full(event)) = tx.try_send(event) {
            dropped.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(?event, "gossip event queue full; event dropped");
        }
    };
    let (driver, core) = CoreDriver::new(Gossip::new(keypair, config, seed), on_event);
    let meta = ProtocolMeta::builder(id, PROTOCOL_NAME)
        .versions(VERSIONS)
        .max_frame_size(MAX_FRAME_SIZE)
        .service_handle(driver.connected_only());
    let handle = Handle {
        core,
        dropped_events,
    };
    (meta, handle, rx)
}

#[cfg(test)]
mod tests;
