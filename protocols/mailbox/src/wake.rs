//! Content-free wake-ups: a recipient whose device sleeps (or is off)
//! registers a wake-up endpoint with the replicas of its mailboxes, and a
//! replica that takes a new envelope for such a mailbox, with no live
//! subscriber to push it to, sends the endpoint a [`Frame::Wake`]: the
//! recipient's [`WakeToken`] and nothing else, always
//! [`WAKE_FRAME_LEN`] bytes.
//!
//! - **Registering** is a signed request ([`Op::Register`]) like a fetch:
//!   only the mailbox's owner can make one. It names the endpoint (a Shoal
//!   peer, with at most [`MAX_WAKE_ADDRS`] addresses to dial it at), the
//!   token, and how long it holds. A replica keeps at most
//!   [`MAX_WAKE_PER_MAILBOX`] registrations per mailbox (the newest by
//!   token), in memory: a restarted replica forgets them, and the
//!   recipient registers again whenever it reads its mailboxes.
//! - **Batching.** A replica waits [`ReplicaConfig::wake_batch`] after
//!   the first new envelope and sends one wake-up for everything that
//!   arrived meanwhile, in every mailbox registered with the same endpoint
//!   and token. It sends at most one per
//!   [`ReplicaConfig::wake_interval`] to an endpoint and token, and at
//!   most [`ReplicaConfig::wake_rate`] a second in all.
//! - **At the endpoint**, the core reports a token at most once per
//!   [`WAKE_COALESCE`] ([`Event::Woken`]), however many replicas woke it,
//!   so the application's callback (a hook command in the `node` example)
//!   runs once per batch.
//!
//! # What a wake-up service learns
//! The endpoint learns that *something* arrived, at the resolution of the
//! batching, for whoever it handed the token to; and which replicas sent
//! the wake-ups (their peer ids and addresses, which are near the
//! mailbox's id in the DHT). It does not learn the sender, the number or
//! size of the envelopes, the mailbox's id or its key. The replicas learn
//! the endpoint, and that every mailbox registered with one token belongs
//! to one recipient: a device that registers links its mailboxes for the
//! replicas that hold them, which a fresh token per session limits to
//! that session. A network observer sees frames of one size.
//!
//! [`Frame::Wake`]: crate::Frame::Wake
//! [`Op::Register`]: crate::Op::Register
//! [`ReplicaConfig::wake_batch`]: crate::ReplicaConfig::wake_batch
//! [`ReplicaConfig::wake_interval`]: crate::ReplicaConfig::wake_interval
//! [`ReplicaConfig::wake_rate`]: crate::ReplicaConfig::wake_rate
//! [`Event::Woken`]: crate::core::Event::Woken

use std::time::Duration;

use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};
use shoal::{Multiaddr, PeerId};
use shoal_identity::Keypair;

/// Length of a [`WakeToken`].
pub const WAKE_TOKEN_LEN: usize = 16;

/// Length of every wake-up frame on the wire.
pub const WAKE_FRAME_LEN: usize = 2 + 2 + WAKE_TOKEN_LEN;

/// Most addresses a registration may give for its endpoint.
pub const MAX_WAKE_ADDRS: usize = 4;

/// Longest endpoint address, in bytes of its text form.
pub const MAX_WAKE_ADDR_LEN: usize = 256;

/// Most registrations a replica keeps for one mailbox.
pub const MAX_WAKE_PER_MAILBOX: usize = 4;

/// How long an endpoint's core stays quiet about a token after reporting
/// it: the wake-ups of the other replicas of the same batch fold into the
/// first.
pub const WAKE_COALESCE: Duration = Duration::from_secs(10);

/// The opaque bytes a recipient chooses to recognise its wake-ups (random:
/// they say nothing about the recipient by themselves).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WakeToken(pub [u8; WAKE_TOKEN_LEN]);

impl WakeToken {
    /// The token of `bytes`, if there are exactly [`WAKE_TOKEN_LEN`].
    pub fn try_from_slice(bytes: &[u8]) -> Option<WakeToken> {
        bytes.try_into().ok().map(WakeToken)
    }

    /// Lower-case hex, as the `node` example hands it to its hook.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The token an endpoint with key pair `key` hands out: derived from
    /// its secret key (BLAKE2b-256 of `shoal/mailbox/wake-token/1` and the
    /// 32 secret bytes, first 16 bytes), so it stays the same across
    /// restarts and says nothing about the endpoint's peer id.
    pub fn of_endpoint(key: &Keypair) -> WakeToken {
        let mut h = Blake2b::<U32>::new();
        h.update(b"shoal/mailbox/wake-token/1");
        h.update(*key.secret_bytes());
        let digest: [u8; 32] = h.finalize().into();
        let mut token = [0u8; WAKE_TOKEN_LEN];
        token.copy_from_slice(&digest[..WAKE_TOKEN_LEN]);
        WakeToken(token)
    }
}

/// Where, and with what token, a replica wakes a recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WakeEndpoint {
    /// The endpoint's peer id (the secure handshake proves it).
    pub peer: PeerId,
    /// Addresses to dial it at (at most [`MAX_WAKE_ADDRS`]; may be empty
    /// if the replica can find it otherwise).
    pub addrs: Vec<Multiaddr>,
    /// What the wake-ups carry.
    pub token: WakeToken,
}
