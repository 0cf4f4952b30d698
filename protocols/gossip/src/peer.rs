//! What we know about each connected peer, its per-heartbeat budgets and its
//! penalty points.
//!
//! Every peer-driven accumulation is counted in a window of one heartbeat;
//! going over a budget is ignored and costs penalty points, which decay by
//! [`PENALTY_DECAY`] per heartbeat. A peer reaching
//! [`Config::disconnect_threshold`](crate::Config::disconnect_threshold) is
//! dropped. A peer with at least [`GRAFT_PENALTY_LIMIT`] points is not
//! taken into a mesh, not sent IHAVE, and its GRAFTs are refused.
//!
//! In the other direction, we send a peer at most *half* of each budget per
//! heartbeat (messages, IHAVE ids, IWANT ids), so two honest nodes whose
//! heartbeats are out of step never push each other over a budget,
//! whatever the load: beyond it, a relayed message is not pushed eagerly
//! and must reach that peer another way (another mesh peer, or
//! IHAVE/IWANT), and one of our own waits for the next heartbeat. How the
//! message half is shared is in [`crate::send`].

use std::collections::BTreeSet;

use crate::{
    MessageId, Topic,
    send::{SendLimits, SendWindow},
};

/// Points for a message whose body or signature is invalid.
pub const PENALTY_INVALID_MESSAGE: u32 = 25;
/// Points for a frame that goes over one of the per-heartbeat budgets.
pub const PENALTY_OVER_LIMIT: u32 = 10;
/// Points for a message asked for with IWANT and not delivered in time
/// (counted once per heartbeat).
pub const PENALTY_BROKEN_PROMISE: u32 = 2;
/// Points for a malformed frame: a peer that cannot encode protobuf, or
/// will not, is dropped at once.
pub const PENALTY_MALFORMED: u32 = u32::MAX;
/// Points forgiven at each heartbeat.
pub const PENALTY_DECAY: u32 = 1;
/// From this many points on, a peer is kept out of meshes and gossip.
pub const GRAFT_PENALTY_LIMIT: u32 = PENALTY_OVER_LIMIT;

/// Why a peer is being dropped or was penalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Misbehaviour {
    /// A frame that is not valid protobuf for the schema, or breaks a
    /// per-frame limit.
    MalformedFrame,
    /// A message with a bad body or signature.
    InvalidMessage,
    /// More than a per-heartbeat budget (messages, IHAVE ids, IWANT ids,
    /// topics).
    OverLimit,
    /// Messages promised by IHAVE, asked for and never delivered.
    BrokenPromise,
}

impl Misbehaviour {
    /// The penalty points it costs.
    pub fn penalty(self) -> u32 {
        match self {
            Misbehaviour::MalformedFrame => PENALTY_MALFORMED,
            Misbehaviour::InvalidMessage => PENALTY_INVALID_MESSAGE,
            Misbehaviour::OverLimit => PENALTY_OVER_LIMIT,
            Misbehaviour::BrokenPromise => PENALTY_BROKEN_PROMISE,
        }
    }
}

/// State of one connected peer.
#[derive(Debug, Default)]
pub(crate) struct PeerState {
    /// Topics the peer announced, at most `max_peer_topics`.
    pub(crate) topics: BTreeSet<Topic>,
    /// Current penalty points.
    pub(crate) penalty: u32,
    /// Full messages received this heartbeat.
    pub(crate) messages: u32,
    /// IHAVE ids received this heartbeat.
    pub(crate) ihave_ids: u32,
    /// IWANT ids answered (or refused) this heartbeat.
    pub(crate) iwant_answered: u32,
    /// IWANT ids we sent this heartbeat.
    pub(crate) iwant_sent: u32,
    /// Full messages we sent this heartbeat, and our backlog for it.
    pub(crate) send: SendWindow,
    /// IHAVE ids we sent this heartbeat.
    pub(crate) ihave_sent: u32,
    /// Ids of cached messages we answered its IWANT with: never answered
    /// again while cached, nor advertised to it. At most
    /// `max_iwant_answers_per_heartbeat × history_length` ids (forgotten
    /// when the message leaves the cache).
    pub(crate) answered: BTreeSet<MessageId>,
}

impl PeerState {
    /// Starts a new heartbeat window.
    pub(crate) fn new_window(&mut self, limits: &SendLimits) {
        self.messages = 0;
        self.ihave_ids = 0;
        self.iwant_answered = 0;
        self.iwant_sent = 0;
        self.send.new_window(limits);
        self.ihave_sent = 0;
        self.penalty = self.penalty.saturating_sub(PENALTY_DECAY);
    }

    /// Whether the peer may be in a mesh or receive gossip.
    pub(crate) fn in_good_standing(&self) -> bool {
        self.penalty < GRAFT_PENALTY_LIMIT
    }
}
