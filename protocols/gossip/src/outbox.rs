//! Batching of outgoing entries into frames, one peer at a time.
//!
//! During one call into the core, everything for a peer is gathered into
//! one [`Rpc`]; at the end of the call the rpcs become frames in peer-id
//! order. An rpc that would pass [`MAX_FRAME_SIZE`] or a per-frame count is
//! closed early and a new one started, so every frame we send is one our
//! own decoder accepts.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use prost::Message as _;
use shoal_identity::PeerId;

use crate::protocol::{
    self, Graft, IHave, IWant, MAX_FRAME_SIZE, MAX_IDS_PER_FRAME, MAX_IHAVE_PER_FRAME,
    MAX_MESSAGES_PER_FRAME, MAX_TOPICS_PER_FRAME, Prune, Rpc, SignedMessage, Subscription,
};

/// One frame for one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where it goes.
    pub peer: PeerId,
    /// One encoded frame (section 9 of docs/PROTOCOL.md).
    pub frame: Bytes,
}

/// An rpc being filled, with its exact encoded size so far.
#[derive(Debug, Default)]
struct Pending {
    rpc: Rpc,
    len: usize,
    ids: usize,
}

/// One entry of an rpc.
pub(crate) enum Entry {
    Subscription(Subscription),
    Message(SignedMessage),
    IHave(IHave),
    IWant(IWant),
    Graft(Graft),
    Prune(Prune),
}

impl Entry {
    fn encoded_len(&self) -> usize {
        use prost::encoding::message::encoded_len;
        match self {
            Entry::Subscription(m) => encoded_len(1, m),
            Entry::Message(m) => encoded_len(2, m),
            Entry::IHave(m) => encoded_len(3, m),
            Entry::IWant(m) => encoded_len(4, m),
            Entry::Graft(m) => encoded_len(5, m),
            Entry::Prune(m) => encoded_len(6, m),
        }
    }

    fn ids(&self) -> usize {
        match self {
            Entry::IHave(m) => m.ids.len(),
            Entry::IWant(m) => m.ids.len(),
            _ => 0,
        }
    }
}

impl Pending {
    /// Whether `entry` fits without breaking a frame limit.
    fn fits(&self, entry: &Entry, entry_len: usize) -> bool {
        let len = self.len + entry_len;
        let count_ok = match entry {
            Entry::Subscription(_) => self.rpc.subscriptions.len() < MAX_TOPICS_PER_FRAME,
            Entry::Message(_) => self.rpc.messages.len() < MAX_MESSAGES_PER_FRAME,
            Entry::IHave(_) => self.rpc.ihave.len() < MAX_IHAVE_PER_FRAME,
            Entry::IWant(_) => true,
            Entry::Graft(_) => self.rpc.graft.len() < MAX_TOPICS_PER_FRAME,
            Entry::Prune(_) => self.rpc.prune.len() < MAX_TOPICS_PER_FRAME,
        };
        count_ok
            && self.ids + entry.ids() <= MAX_IDS_PER_FRAME
            && len + protocol::frame_overhead(len) <= MAX_FRAME_SIZE
    }

    fn push(&mut self, entry: Entry, entry_len: usize) {
        self.len += entry_len;
        self.ids += entry.ids();
        match entry {
            Entry::Subscription(m) => self.rpc.subscriptions.push(m),
            Entry::Message(m) => self.rpc.messages.push(m),
            Entry::IHave(m) => self.rpc.ihave.push(m),
            Entry::IWant(m) => self.rpc.iwant.push(m),
            Entry::Graft(m) => self.rpc.graft.push(m),
            Entry::Prune(m) => self.rpc.prune.push(m),
        }
    }
}

/// Rpcs being filled, and finished frames waiting for `poll_transmit`.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    pending: BTreeMap<PeerId, Pending>,
    ready: VecDeque<Transmit>,
}

impl Outbox {
    /// Adds an entry for `peer`. The caller keeps entries within a frame
    /// (ids ≤ `MAX_IDS_PER_FRAME`, messages within the payload limit).
    pub(crate) fn push(&mut self, peer: PeerId, entry: Entry) {
        let entry_len = entry.encoded_len();
        let pending = self.pending.entry(peer).or_default();
        if !pending.fits(&entry, entry_len) && pending.len > 0 {
            let full = std::mem::take(pending);
            self.ready.push_back(Transmit {
                peer,
                frame: protocol::encode_frame(full.rpc),
            });
        }
        pending.push(entry, entry_len);
    }

    /// Turns every pending rpc into a frame, in peer-id order.
    pub(crate) fn flush(&mut self) {
        for (peer, pending) in std::mem::take(&mut self.pending) {
            debug_assert_eq!(pending.len, pending.rpc.encoded_len());
            self.ready.push_back(Transmit {
                peer,
                frame: protocol::encode_frame(pending.rpc),
            });
        }
    }

    /// Drops everything not yet sent to `peer`.
    pub(crate) fn forget(&mut self, peer: &PeerId) {
        self.pending.remove(peer);
        self.ready.retain(|t| t.peer != *peer);
    }

    pub(crate) fn pop(&mut self) -> Option<Transmit> {
        self.ready.pop_front()
    }
}
