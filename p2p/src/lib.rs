//! The Shoal service layer: sessions over secure multiplexed connections,
//! protocol negotiation per substream, and protocol handlers.
//!
//! # Tour
//! - [`ServiceBuilder`] → [`Service`]: identity key, [`ProtocolMeta`]s,
//!   transports, listen addresses, limits and timeouts ([`config`], each with
//!   a documented `DEFAULT_*`). The `Service` is a future: spawn it.
//! - [`ServiceControl`]: cloneable handle; `async` and `try_*` forms of
//!   listen, dial ([`DialOptions`]: expected peer, protocols to open),
//!   disconnect, open/close protocol, send, broadcast ([`TargetSessions`]),
//!   shutdown; plus [`ServiceControl::open_raw_stream`].
//! - [`ServiceHandle`]: receives [`ServiceEvent`]s and [`ServiceError`]s
//!   (or take them as a stream: [`ServiceBuilder::event_stream`]).
//! - Peer routing: the [`address_book`] and `*_peer` methods reach a peer
//!   by id ([`ServiceControl::dial_peer`], [`ServiceControl::try_send_to_peer`],
//!   which queues while dialling and reports failures to the protocol).
//! - [`Core`]: the trait of a sans-IO protocol core, and [`CoreDriver`],
//!   the one tokio driver that runs any of them as a protocol.
//! - Protocols, declared by [`ProtocolMeta::builder`], are consumed in one of
//!   four ways: a service-wide [`ServiceProtocol`], a per-session
//!   [`SessionProtocol`] (one instance per session), a [`ProtocolEvents`]
//!   stream, or — the simple path — [`RawStreams`] of unframed negotiated
//!   streams.
//! - [`negotiation`]: the wire format that opens every substream (also in
//!   `docs/PROTOCOL.md` (section 6)).
//! - One session per pair of peers: crossed and repeated dials collapse to
//!   one connection by a rule both ends apply alike, and a dial to a
//!   connected peer returns its session (`docs/PROTOCOL.md` 6.5).
//! - Admission: inbound handshakes have their own budget and are bounded per
//!   IP address, per /24 (/48) and in rate, before a byte is read; dials to
//!   one socket address are paced (`docs/PROTOCOL.md` 6.6).
//! - Addresses: [`ServiceControl::announce_addrs`] is what a node tells
//!   others (interface addresses instead of `0.0.0.0`, plus external ones).
//!
//! # Data flow
//! ```text
//!  Transport ─▶ secio handshake ─▶ yamux Driver (task) ─▶ session task
//!  (admitted at accept)    (timeout)                       │ accept_stream
//!                                                          ▼
//!          substream task per (session, protocol): negotiate, then
//!   yamux stream ─read frames─▶ bounded event queue ─▶ handler task / ProtocolEvents
//!   yamux stream ◀─write frames── bounded send queue ◀─ ServiceControl / ctx.send
//!                                  (bytes per session)
//!  every task ─reports─▶ bounded queue ─▶ Service future ─▶ ServiceHandle
//! ```
//! A slow consumer fills its event queue; then only the substreams feeding
//! it stop reading, and yamux flow control pushes back on those streams.
//! A peer that does not read fills its session's send queue: `send` waits,
//! `try_send` fails with [`SendError::QueueFull`].
//!
//! # Example
//! ```
//! use bytes::Bytes;
//! use shoal::{
//!     DialOptions, HandlerResult, ProtocolContextMut, ProtocolEvent, ProtocolId, ProtocolMeta,
//!     ServiceBuilder, ServiceProtocol,
//! };
//! use shoal_identity::Keypair;
//! use shoal_transport::{MemoryNetwork, MemoryTransport};
//!
//! /// Echoes every frame back.
//! struct Echo;
//! impl ServiceProtocol for Echo {
//!     fn received(&mut self, ctx: &mut ProtocolContextMut<'_>, data: Bytes) -> HandlerResult {
//!         ctx.reply(data)?;
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! const ECHO: ProtocolId = ProtocolId(1);
//! let network = MemoryNetwork::new();
//!
//! let server = ServiceBuilder::new(Keypair::generate())
//!     .transport(MemoryTransport::new(&network))
//!     .protocol(ProtocolMeta::builder(ECHO, "/echo").service_handle(Echo))
//!     .build()?;
//! let server_control = server.control();
//! tokio::spawn(server);
//! let addr = server_control.listen("/memory/0".parse()?).await?;
//!
//! let (meta, mut events) = ProtocolMeta::builder(ECHO, "/echo").event_stream();
//! let client = ServiceBuilder::new(Keypair::generate())
//!     .transport(MemoryTransport::new(&network))
//!     .protocol(meta)
//!     .build()?;
//! let control = client.control();
//! tokio::spawn(client);
//!
//! // `dial` returns once the protocols it opens are open (or refused).
//! let session = control.dial(addr, DialOptions::default()).await?;
//! assert_eq!(session.peer, server_control.local_peer_id());
//! assert!(session.refused.is_empty());
//! control.send(session.id, ECHO, "hello").await?;
//! while let Some(event) = events.recv().await {
//!     if let ProtocolEvent::Received { data, .. } = event {
//!         assert_eq!(data, "hello");
//!         break;
//!     }
//! }
//! control.shutdown().await;
//! server_control.shutdown().await;
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod address_book;
mod builder;
pub mod config;
mod control;
mod core_driver;
mod core_timer;
mod error;
mod ids;
pub mod negotiation;
mod peer_sessions;
mod protocol;
mod routing;
mod sans_io;
mod service;
mod session;

pub use builder::ServiceBuilder;
pub use control::{
    BroadcastResult, Connected, DialOptions, ServiceControl, TargetProtocols, TargetSessions,
};
pub use core_driver::{CoreDriver, CoreHandle};
pub use core_timer::{CoreTimer, Deadline};
pub use error::{
    BoxError, BuildError, CloseReason, ControlError, DialError, HandlerError, HandlerResult,
    ListenError, ProtocolError, SendError, ServiceError,
};
pub use ids::{DialId, Direction, ListenerId, ProtocolId, SessionId, SessionInfo};
pub use protocol::{
    ProtocolContext, ProtocolContextMut, ProtocolEvent, ProtocolEvents, ProtocolMeta,
    ProtocolMetaBuilder, RawStream, RawStreams, ServiceProtocol, SessionProtocol, TooManyTimers,
};
pub use sans_io::{Core, Now, Remote, Transmit};
pub use service::{
    Service, ServiceContext, ServiceEvent, ServiceEvents, ServiceHandle, ServiceReport,
};

pub use bytes::Bytes;
pub use shoal_identity::{Keypair, PeerId};
pub use shoal_secio::CipherSuite;
pub use shoal_transport::Multiaddr;

/// The README's code blocks, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
