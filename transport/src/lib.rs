//! Listening and dialling for Shoal: the layer every connection starts in.
//!
//! A [`Transport`] turns a [`Multiaddr`] into byte streams: `dial` opens one,
//! `listen` yields a [`Listener`] that accepts them. Nothing here is secure or
//! multiplexed yet; `shoal-secio` and `shoal-yamux` stack on the streams this
//! crate returns.
//!
//! ```text
//!   Multiaddr ──dial──▶ Transport ──▶ Connection (AsyncRead + AsyncWrite)
//!   Multiaddr ──listen─▶ Listener ──accept──▶ Inbound { connection, remote_addr }
//! ```
//!
//! Two transports ship with the crate:
//! - [`TcpTransport`]: TCP over IPv4 and IPv6 on tokio, `TCP_NODELAY` on by
//!   default, every dial bounded by a timeout, `/dns*` names resolved on dial.
//! - [`MemoryTransport`]: connections inside one process through a
//!   [`MemoryNetwork`] object (no global state), for tests that run hundreds
//!   of nodes.
//!
//! Both can be erased into a [`BoxedTransport`] when the concrete type should
//! not leak into a caller's signature.
//!
//! ```
//! use shoal_transport::{Listener, ListenerExt, MemoryNetwork, MemoryTransport, Transport};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let network = MemoryNetwork::new();
//! let transport = MemoryTransport::new(&network);
//! let mut listener = transport.listen(&"/memory/0".parse()?).await?;
//! let addr = listener.local_addr().clone(); // the port actually assigned
//!
//! let mut client = transport.dial(&addr).await?;
//! let mut inbound = listener.accept().await?;
//! client.write_all(b"hi").await?;
//! let mut buf = [0u8; 2];
//! inbound.connection.read_exact(&mut buf).await?;
//! assert_eq!(&buf, b"hi");
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod boxed;
mod error;
mod interfaces;
mod memory;
mod multiaddr;
mod scope;
mod tcp;
mod traits;

pub use boxed::{BoxedConnection, BoxedListener, BoxedTransport, Io};
pub use error::TransportError;
pub use interfaces::{expand_unspecified, interface_ips, subnet_of};
pub use memory::{
    DEFAULT_MEMORY_BACKLOG, DEFAULT_MEMORY_BUFFER, DEFAULT_MEMORY_DIAL_TIMEOUT, MemoryConfig,
    MemoryConnection, MemoryListener, MemoryNetwork, MemoryTransport,
};
pub use multiaddr::{
    MAX_MULTIADDR_COMPONENTS, MAX_MULTIADDR_TEXT_LEN, Multiaddr, MultiaddrError, Protocol,
};
pub use scope::{AddressScope, IpRange, ScopePolicy};
pub use tcp::{
    DEFAULT_TCP_DIAL_TIMEOUT, DEFAULT_TCP_LISTEN_BACKLOG, TcpConfig, TcpListener, TcpTransport,
};
pub use traits::{Accept, Inbound, Listener, ListenerExt, Transport};

pub use shoal_identity::PeerId;
