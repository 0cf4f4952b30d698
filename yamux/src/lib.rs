//! # shoal-yamux
//!
//! Stream multiplexing over one reliable, ordered byte stream, byte-exact to
//! the [yamux specification](https://github.com/hashicorp/yamux/blob/master/spec.md)
//! so it interoperates with other implementations (`yamux`, `tokio-yamux`,
//! Go's `hashicorp/yamux`). Shoal's profile of the protocol — defaults,
//! limits, auto-tuning — is written down in `docs/PROTOCOL.md` (section 5).
//!
//! ## Tour
//!
//! * [`frame`] — the 12-byte header: [`frame::decode_header`] / [`frame::Header::encode`].
//! * [`Connection`] — the sans-IO state machine: bytes and time in, bytes,
//!   events and a deadline out. No tokio inside. Flow control, auto-tuning,
//!   limits and keep-alive all live here.
//! * [`Driver`] / [`Control`] / [`Stream`] — the thin tokio layer: a future
//!   that moves bytes between a transport and the core, a cloneable handle to
//!   open and accept streams, and streams implementing `AsyncRead`/`AsyncWrite`.
//! * [`Config`] — every limit, each with a named default in [`config`].
//!
//! ## Data flow
//!
//! ```text
//!   Stream::poll_write ──► Connection::write ──► out buffer ─┐
//!                                                            │ poll_transmit
//!   Stream::poll_read ◄── Connection::read ◄── stream bufs   ▼
//!           ▲                                  ▲          Driver ──► io.write
//!           └── waker ◄── poll_event ◄─────────┴─ handle_input ◄── io.read
//! ```
//!
//! ## Example
//!
//! ```
//! use shoal_yamux::{Config, Driver, Mode};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let (a, b) = tokio::io::duplex(64 * 1024);
//! let (client_driver, client) = Driver::new(a, Config::default(), Mode::Client);
//! let (server_driver, server) = Driver::new(b, Config::default(), Mode::Server);
//! tokio::spawn(client_driver);
//! tokio::spawn(server_driver);
//!
//! tokio::spawn(async move {
//!     while let Ok(mut stream) = server.accept_stream().await {
//!         tokio::spawn(async move {
//!             let mut buf = Vec::new();
//!             stream.read_to_end(&mut buf).await?;
//!             stream.write_all(&buf).await?;
//!             stream.shutdown().await
//!         });
//!     }
//! });
//!
//! let mut stream = client.open_stream().await.expect("open");
//! stream.write_all(b"ping").await?;
//! stream.shutdown().await?;
//! let mut echo = Vec::new();
//! stream.read_to_end(&mut echo).await?;
//! assert_eq!(echo, b"ping");
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

pub mod config;
mod connection;
mod driver;
mod error;
pub mod frame;
mod id;
mod stream;

pub use config::Config;
pub use connection::{Connection, Event};
pub use driver::{Control, Driver};
pub use error::{Blame, ConnectionError, OpenError, ProtocolViolation, StreamError};
pub use frame::{FrameError, GoAwayCode};
pub use id::{Mode, StreamId};
pub use stream::Stream;
