//! Authenticated, encrypted channels for Shoal.
//!
//! A secio handshake turns any byte stream into a [`SecureStream`] whose
//! remote end is proven to hold the ed25519 key behind a [`PeerId`]. It runs
//! Noise XX (X25519, BLAKE2s, ChaChaPoly or AES-GCM) through `snow`; each
//! side's handshake payload carries its identity key and a signature over
//! its Noise static key, so the Noise session is bound to the identity.
//!
//! # Tour
//! - [`Config`]: the local identity, supported [`CipherSuite`]s in
//!   preference order, the handshake time limit and message size limit,
//!   and the [`ReceiveBudget`] bounding the receive-buffer memory of all
//!   streams that share it.
//! - [`handshake_outbound`] / [`handshake_inbound`]: the tokio driver. Runs
//!   the whole handshake under the time limit and returns a
//!   [`SecureStream`], which implements tokio's `AsyncRead + AsyncWrite`.
//! - [`handshake`]: the sans-IO core, consuming states per role
//!   ([`InitiatorHandshake`], [`ResponderHandshake`]), usable without tokio.
//! - [`frame`]: the `u16` length-prefix codec shared by handshake messages
//!   and transport frames (fuzzing entry point: [`frame::FrameDecoder`]).
//! - [`payload`]: the protobuf handshake payload.
//! - [`HandshakeError`] (with [`FailureClass`]: connection, malformed,
//!   misbehaved, incompatible, wrong peer) and [`StreamError`], the source
//!   of I/O errors after the handshake.
//!
//! The wire format is specified byte by byte, with test vectors, in
//! `docs/PROTOCOL.md (section 4)`.
//!
//! # Data flow
//! ```text
//!  initiator                                             responder
//!  ─────────                                             ─────────
//!  Hello(version, suite, e)   ───────────────────────▶  suite supported?
//!                             ◀── SuiteRefused(list) ─  no: list ours (once)
//!  Hello(version, suite', e)  ───────────────────────▶
//!                             ◀── Accept(e, ee, s, es, payload)
//!  check payload + expected PeerId
//!  Final(s, se, payload)      ───────────────────────▶  check payload
//!  ══════════ SecureStream: [len u16 | AEAD(plaintext) + tag] frames ══════════
//! ```
//!
//! # Example
//! ```
//! use shoal_identity::Keypair;
//! use shoal_secio::{Config, handshake_inbound, handshake_outbound};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let alice = Config::new(Keypair::generate());
//! let bob = Config::new(Keypair::generate());
//! let (a, b) = tokio::io::duplex(64 * 1024);
//!
//! // Alice dials Bob and insists on his peer id.
//! let (alice_side, bob_side) = tokio::join!(
//!     handshake_outbound(a, &alice, Some(bob.local_peer_id())),
//!     handshake_inbound(b, &bob),
//! );
//! let (mut alice_side, mut bob_side) = (alice_side?, bob_side?);
//! assert_eq!(bob_side.remote_peer(), alice.local_peer_id());
//!
//! alice_side.write_all(b"hello bob").await?;
//! alice_side.flush().await?;
//! let mut buf = [0u8; 9];
//! bob_side.read_exact(&mut buf).await?;
//! assert_eq!(&buf, b"hello bob");
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod budget;
mod config;
mod driver;
mod error;
pub mod frame;
pub mod handshake;
pub mod payload;
mod stream;
mod suite;

pub use budget::{
    DEFAULT_RECEIVE_BUDGET, MAX_RECEIVE_BUDGET_WAIT, MIN_RECEIVE_BUDGET, ReceiveBudget,
};
pub use config::{
    Config, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_HANDSHAKE_MESSAGE, MIN_MAX_HANDSHAKE_MESSAGE,
};
pub use driver::{handshake_inbound, handshake_inbound_expecting, handshake_outbound};
pub use error::{FailureClass, HandshakeError, StreamError};
pub use handshake::{HandshakeOutcome, InitiatorHandshake, ResponderHandshake};
pub use shoal_identity::{PeerId, PublicKey};
pub use stream::{RECEIVE_BUFFER_FLOOR, SecureStream};
pub use suite::CipherSuite;
