//! Shoal mailboxes: envelopes wait for offline recipients on nodes that
//! cannot read them, and a sender knows its message is stored only when W
//! replicas signed for it.
//!
//! # Tour
//! - [`id`]: a mailbox is named by its [`Descriptor`] (verification key,
//!   [`WritePolicy`], [`Retention`]); its [`MailboxId`] is the descriptor's
//!   hash and its DHT key. Envelopes are named by their [`EnvelopeHash`].
//! - [`wire`]: the protocol's frames: signed requests (store, fetch, ack)
//!   and answers (a receipt, "quota", "busy", a refusal, envelopes).
//! - [`receipt`]: the [`Receipt`] a replica signs after its commit (one
//!   signature over a hash tree of a batch's envelopes), and the [`Quorum`]
//!   that counts receipts only from distinct candidate replicas on distinct
//!   networks.
//! - [`replica`]: the [`Replica`]: checks, quotas, rates, disk budget,
//!   batches (one commit and one signature for the requests that arrive
//!   together), live subscriptions, expiry, over a [`ReplicaStore`]
//!   ([`store`]: [`MemoryStore`]; `SqliteStore` with the `sqlite` feature).
//! - [`wake`]: content-free wake-ups for recipients that sleep: a
//!   registered endpoint gets a fixed-size frame, batched and rate-limited,
//!   when envelopes wait.
//! - [`core`]: the sans-IO [`Mailbox`] core of one node (client and,
//!   optionally, replica), a [`shoal::Core`].
//! - [`new`]: the protocol on a Shoal service, with a [`Handle`] whose
//!   requests wait for their answers.
//!
//! Formats and test vectors: docs/PROTOCOL.md, section 12.
//!
//! # Example
//! A replica keeps an envelope for an owner-written mailbox and signs for
//! it; a stranger without the mailbox key can neither store nor fetch.
//! ```
//! use bytes::Bytes;
//! use shoal_identity::Keypair;
//! use shoal_mailbox::{
//!     Answer, Class, Descriptor, EnvelopeHash, MemoryStore, Op, Quorum, Replica,
//!     ReplicaConfig, Request, RequestBody, Retention, WritePolicy,
//! };
//!
//! let now_ms = 1_700_000_000_000;
//! let replica_key = Keypair::from_secret_bytes(&[1; 32]);
//! let mut replica =
//!     Replica::open(replica_key.clone(), MemoryStore::new(), ReplicaConfig::default(), now_ms)?;
//! let owner = Keypair::from_secret_bytes(&[2; 32]);
//! let descriptor = Descriptor { key: owner.public(), write: WritePolicy::Owner, retention: Retention::UntilAck };
//! let envelope = Bytes::from_static(b"ciphertext");
//! let expiry = now_ms / 1000 + 3600;
//! let body = RequestBody {
//!     descriptor,
//!     unix_ms: now_ms,
//!     nonce: [7; 16],
//!     op: Op::Store { envelope: envelope.clone(), expiry, class: Class::Normal },
//!     replica: replica.peer_id(),
//! };
//! let addr = "/ip4/10.0.0.1/tcp/4001".parse().unwrap();
//! let sender = Keypair::from_secret_bytes(&[3; 32]).peer_id();
//!
//! // Signed by the mailbox key: stored, with a receipt that counts.
//! let handled = replica.handle(now_ms, sender, &addr, 1, &Request::signed(body.clone(), &owner));
//! let Answer::Stored { signature, expiry: kept, proof } = handled.answer else { panic!() };
//! let mut quorum = Quorum::new(descriptor.id(), EnvelopeHash::of(&envelope), expiry, vec![replica.peer_id()], 1);
//! quorum.add(replica.peer_id(), &addr, signature, proof, kept).expect("a valid receipt");
//! assert!(quorum.is_met());
//!
//! // Signed by anyone else: refused.
//! let stranger = Keypair::from_secret_bytes(&[4; 32]);
//! let forged = Request::signed(RequestBody { nonce: [8; 16], ..body }, &stranger);
//! let handled = replica.handle(now_ms, stranger.peer_id(), &addr, 2, &forged);
//! assert!(matches!(handled.answer, Answer::Refused { .. }));
//! # Ok::<(), shoal_mailbox::StoreError>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod core;
mod handle;
pub mod id;
mod limits;
pub mod receipt;
pub mod replica;
#[cfg(feature = "sqlite")]
pub mod sqlite;
pub mod store;
pub mod sync;
pub mod wake;
pub mod wire;

pub use crate::core::{Config, DynReplica, Event, Mailbox, RequestError, RequestId};
pub use handle::{Handle, HandleError, QuorumOutcome, new};
pub use id::{Descriptor, EnvelopeHash, MailboxId, Retention, WritePolicy};
pub use receipt::{NetGroup, Proof, Quorum, Receipt, ReceiptError};
pub use replica::{Handled, Incoming, MAX_TTL, Replica, ReplicaConfig, ReplicaStats};
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;
pub use store::{MemoryStore, ReplicaStore, StoreError};
pub use wake::{WAKE_FRAME_LEN, WakeEndpoint, WakeToken};
pub use wire::{
    Answer, Class, DecodeError, Frame, Item, MAX_ENVELOPE_LEN, MAX_MESSAGE_SIZE, Op, Refusal,
    Request, RequestBody,
};

/// The protocol name negotiated on the substream.
pub const PROTOCOL_NAME: &str = "/shoal/mailbox";

/// Name of the Kademlia network of the nodes that keep mailboxes (see
/// `shoal_kad::new_named`): a mailbox's replicas are the [`REPLICAS`]
/// nodes of this DHT closest to its id, so only nodes that keep mailboxes
/// are ever chosen. Clients join it in client mode.
pub const DHT_PROTOCOL_NAME: &str = "/shoal/kad/mailbox";

/// The protocol versions spoken (negotiated per substream).
pub const VERSIONS: [u32; 1] = [1];

/// Replicas per mailbox (the R nodes closest to its id among nodes that
/// keep mailboxes).
pub const REPLICAS: usize = 5;

/// Receipts that make an envelope stored (W of R): any R - W + 1 replicas
/// (3 here) then hold at least one copy, which is what a recipient fetches
/// from. R = 5, W = 3 survives two replicas lying or leaving.
pub const WRITE_QUORUM: usize = 3;
