//! Causal ordering of one conversation: which messages are shown, which
//! wait for what they follow, where the gaps are, and the order both sides
//! agree on.
//!
//! Every message names the sender's previous message (`prev`) and up to
//! [`MAX_DEPS`] of the latest messages its sender had seen (`deps`). A
//! received message is *shown* once everything it names is shown, else it
//! is *held*. Its causal height is one more than the highest height among
//! what it names (0 if it names nothing), so a message is always higher
//! than everything it follows. The history order is `(height, id)`:
//! causal, and for concurrent messages decided by the id bytes, the same
//! on both sides whatever order the messages arrived in.
//!
//! Pure logic: the engine persists what this module decides.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::message::{MAX_DEPS, MAX_RESEND_RANGE, Message, MessageId};
use crate::store::{MessageFlags, MessageMeta};

/// Most held (received, not yet showable) messages kept per conversation;
/// beyond it new ones are refused unacknowledged, so the sender retries.
pub const MAX_HELD: usize = 2_000;

/// What became of a received message.
#[derive(Debug)]
pub(crate) enum Received {
    /// Already known (shown or held): drop silently, acknowledge again.
    Duplicate,
    /// Stored, waiting for what it follows; `missing` is the range of the
    /// peer's counters to ask for, if any.
    Held {
        /// The stored metadata (held).
        meta: MessageMeta,
        /// Peer counters to request, `from..=to`.
        missing: Option<(u64, u64)>,
    },
    /// Stored and shown, with any held messages it released, in causal order.
    Shown {
        /// Metadata of the new message as shown.
        meta: MessageMeta,
        /// Held messages released (each now shown), in the order released;
        /// their bodies are in the store.
        released: Vec<MessageMeta>,
    },
}

/// What a held message names, kept in memory instead of its body (which
/// is in the store): enough to tell when it can be shown.
#[derive(Debug)]
struct Held {
    /// One of our own messages (recovered, or written after a restore).
    own: bool,
    /// Its sender's counter.
    counter: u64,
    /// Its previous message and dependencies.
    names: Vec<MessageId>,
}

impl Held {
    fn of(message: &Message, own: bool) -> Held {
        Held {
            own,
            counter: message.counter,
            names: message.prev.iter().chain(&message.deps).copied().collect(),
        }
    }

    /// Bytes this entry keeps in memory (with its key).
    fn footprint(&self) -> usize {
        std::mem::size_of::<(MessageId, Held)>()
            + self.names.len() * std::mem::size_of::<MessageId>()
    }
}

/// Why a received message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderingError {
    /// The sender already used this counter for another message.
    #[error("counter {0} reused for a different message")]
    Equivocation(u64),
    /// The previous-message hash contradicts the known previous message.
    #[error("message {0} does not follow the sender's previous message")]
    BrokenChain(u64),
    /// Too many messages are held already.
    #[error("too many held messages")]
    TooManyHeld,
}

/// The ordering state of one conversation.
#[derive(Debug, Default)]
pub(crate) struct Conversation {
    contact: [u8; 32],
    known: HashMap<MessageId, MessageMeta>,
    own: BTreeMap<u64, MessageId>,
    peer: BTreeMap<u64, MessageId>,
    /// Every peer counter below this one is known.
    floor: u64,
    /// Held messages, with what they name (their bodies stay in the store).
    held: HashMap<MessageId, Held>,
    /// Shown messages no shown message follows yet, by `(height, id)`.
    heads: BTreeSet<(u64, MessageId)>,
}

impl Conversation {
    /// An empty conversation with `contact`.
    pub(crate) fn new(contact: [u8; 32]) -> Conversation {
        Conversation {
            contact,
            ..Conversation::default()
        }
    }

    /// Restores a stored message (shown or held; a held one needs its
    /// decoded message, of which only what it names is kept).
    pub(crate) fn restore(&mut self, meta: MessageMeta, held: Option<&Message>) {
        if meta.outgoing {
            self.own.insert(meta.counter, meta.id);
        } else {
            self.peer.insert(meta.counter, meta.id);
            self.advance_floor();
        }
        if let Some(message) = held {
            self.held.insert(meta.id, Held::of(message, meta.outgoing));
        }
        self.known.insert(meta.id, meta);
    }

    /// Restores the heads saved with the contact.
    pub(crate) fn restore_heads(&mut self, heads: impl IntoIterator<Item = MessageId>) {
        for id in heads {
            if let Some(meta) = self.known.get(&id) {
                self.heads.insert((meta.height, id));
            }
        }
    }

    /// The current heads (saved with the contact).
    pub(crate) fn heads(&self) -> impl Iterator<Item = MessageId> + '_ {
        self.heads.iter().map(|(_, id)| *id)
    }

    /// The metadata of a known message.
    pub(crate) fn get(&self, id: &MessageId) -> Option<&MessageMeta> {
        self.known.get(id)
    }

    /// Mutable metadata of a known message.
    pub(crate) fn get_mut(&mut self, id: &MessageId) -> Option<&mut MessageMeta> {
        self.known.get_mut(id)
    }

    /// The id of our message with `counter`.
    pub(crate) fn own_at(&self, counter: u64) -> Option<MessageId> {
        self.own.get(&counter).copied()
    }

    /// Every peer counter below this one is known.
    pub(crate) fn floor(&self) -> u64 {
        self.floor
    }

    /// Number of held messages.
    pub(crate) fn held_len(&self) -> usize {
        self.held.len()
    }

    /// Ids of the held messages.
    pub(crate) fn held_ids(&self) -> impl Iterator<Item = MessageId> + '_ {
        self.held.keys().copied()
    }

    /// Bytes the held messages keep in memory (what they name; their
    /// bodies are in the store).
    pub(crate) fn held_bytes(&self) -> usize {
        self.held.values().map(Held::footprint).sum()
    }

    fn advance_floor(&mut self) {
        while self.peer.contains_key(&self.floor) {
            self.floor += 1;
        }
    }

    fn height_after<'a>(&self, names: impl IntoIterator<Item = &'a MessageId>) -> Option<u64> {
        let mut height = None::<u64>;
        for id in names {
            let meta = self.known.get(id).filter(|m| !m.flags.held)?;
            height = Some(height.map_or(meta.height, |h| h.max(meta.height)));
        }
        Some(height.map_or(0, |h| h + 1))
    }

    /// Composes our next message: counter, previous id, dependencies (the
    /// highest heads other than our previous message) and height; the
    /// message is shown at once (held if our previous one is).
    pub(crate) fn compose(
        &mut self,
        sender: crate::UserId,
        recipient: crate::UserId,
        body: Vec<u8>,
        timestamp_ms: u64,
    ) -> (Message, MessageMeta) {
        let (counter, prev) = match self.own.last_key_value() {
            Some((c, id)) => (c.saturating_add(1), Some(*id)),
            None => (0, None),
        };
        let deps: Vec<MessageId> = self
            .heads
            .iter()
            .rev()
            .map(|(_, id)| *id)
            .filter(|id| Some(*id) != prev)
            .take(MAX_DEPS)
            .collect();
        let message = Message {
            kind: crate::message::MessageKind::Text,
            sender,
            recipient,
            counter,
            timestamp_ms,
            prev,
            deps,
            body,
        };
        // Everything it names is shown, except right after a restore,
        // while our own previous message is still being recovered: then it
        // is held like a received one, and shown when that one is.
        let height = self.height_after(message.prev.iter().chain(&message.deps));
        let meta = MessageMeta {
            id: message.id(),
            contact: self.contact,
            outgoing: true,
            counter,
            height: height.unwrap_or(0),
            timestamp_ms,
            flags: MessageFlags {
                held: height.is_none(),
                ..MessageFlags::default()
            },
        };
        self.own.insert(counter, meta.id);
        if height.is_some() {
            self.show(message.prev.iter().chain(&message.deps), meta.clone());
        } else {
            self.known.insert(meta.id, meta.clone());
            self.held.insert(meta.id, Held::of(&message, true));
        }
        (message, meta)
    }

    fn show<'a>(&mut self, names: impl IntoIterator<Item = &'a MessageId>, meta: MessageMeta) {
        for id in names {
            if let Some(m) = self.known.get(id) {
                self.heads.remove(&(m.height, *id));
            }
        }
        self.heads.insert((meta.height, meta.id));
        // Keep the heads bounded: far more than MAX_DEPS never help.
        while self.heads.len() > 4 * MAX_DEPS {
            self.heads.pop_first();
        }
        self.known.insert(meta.id, meta);
    }

    /// Takes a decoded message from the peer.
    pub(crate) fn receive(&mut self, message: Message) -> Result<Received, OrderingError> {
        self.take(message, false)
    }

    /// Takes back one of our own messages that the peer returned because
    /// we lost it (our store went back in time). It is delivered (the peer
    /// has it) and ordered like a received one: held until what it follows
    /// is shown.
    pub(crate) fn receive_own(&mut self, message: Message) -> Result<Received, OrderingError> {
        self.take(message, true)
    }

    fn take(&mut self, message: Message, outgoing: bool) -> Result<Received, OrderingError> {
        let id = message.id();
        if self.known.contains_key(&id) {
            return Ok(Received::Duplicate);
        }
        let counters = if outgoing { &self.own } else { &self.peer };
        if counters.contains_key(&message.counter) {
            return Err(OrderingError::Equivocation(message.counter));
        }
        if let (Some(prev), Some(known)) = (
            message.prev,
            message
                .counter
                .checked_sub(1)
                .and_then(|c| counters.get(&c)),
        ) && prev != *known
        {
            return Err(OrderingError::BrokenChain(message.counter));
        }
        let mut meta = MessageMeta {
            id,
            contact: self.contact,
            outgoing,
            counter: message.counter,
            height: 0,
            timestamp_ms: message.timestamp_ms,
            flags: MessageFlags {
                held: true,
                delivered: true,
                read: false,
            },
        };
        let showable = self.height_after(message.prev.iter().chain(&message.deps));
        if showable.is_none() && self.held.len() >= MAX_HELD {
            return Err(OrderingError::TooManyHeld);
        }
        if outgoing {
            self.own.insert(message.counter, id);
        } else {
            self.peer.insert(message.counter, id);
            self.advance_floor();
        }
        match showable {
            Some(height) => {
                meta.height = height;
                meta.flags.held = false;
                self.show(message.prev.iter().chain(&message.deps), meta.clone());
                let released = self.release();
                Ok(Received::Shown { meta, released })
            }
            None => {
                self.known.insert(id, meta.clone());
                self.held.insert(id, Held::of(&message, outgoing));
                Ok(Received::Held {
                    meta,
                    missing: self.missing(),
                })
            }
        }
    }

    /// The id of the peer's message with `counter`.
    pub(crate) fn peer_at(&self, counter: u64) -> Option<MessageId> {
        self.peer.get(&counter).copied()
    }

    /// The highest of the peer's counters we hold.
    pub(crate) fn peer_last(&self) -> Option<u64> {
        self.peer.last_key_value().map(|(c, _)| *c)
    }

    /// The highest of our own counters we hold.
    pub(crate) fn own_last(&self) -> Option<u64> {
        self.own.last_key_value().map(|(c, _)| *c)
    }

    /// Whether one of our own messages is held (its predecessor is being
    /// recovered).
    pub(crate) fn own_held(&self) -> bool {
        self.held.values().any(|h| h.own)
    }

    /// The first of our own counters we do not hold (all below it we do).
    pub(crate) fn own_next(&self) -> u64 {
        let mut next = 0;
        for counter in self.own.keys() {
            if *counter != next {
                break;
            }
            next += 1;
        }
        next
    }

    /// Our messages from `counter` on, in counter order.
    pub(crate) fn own_from(&self, counter: u64) -> Vec<(u64, MessageId)> {
        self.own.range(counter..).map(|(c, id)| (*c, *id)).collect()
    }

    /// Forgets one of our messages (one written after a restore that
    /// reused a counter, to be written again under a new id); what it
    /// followed becomes a head again.
    pub(crate) fn remove_own(&mut self, message: &Message) {
        let id = message.id();
        let Some(meta) = self.known.remove(&id) else {
            return;
        };
        self.own.remove(&meta.counter);
        self.held.remove(&id);
        if self.heads.remove(&(meta.height, id)) {
            for named in message.prev.iter().chain(&message.deps) {
                if let Some(m) = self.known.get(named).filter(|m| !m.flags.held) {
                    self.heads.insert((m.height, *named));
                }
            }
        }
    }

    /// Shows every held message whose dependencies are now all shown,
    /// repeatedly, in the order they become showable.
    fn release(&mut self) -> Vec<MessageMeta> {
        let mut released = Vec::new();
        loop {
            let ready: Vec<(MessageId, u64)> = self
                .held
                .iter()
                .filter_map(|(id, h)| self.height_after(&h.names).map(|height| (*id, height)))
                .collect();
            if ready.is_empty() {
                return released;
            }
            let mut ready = ready;
            ready.sort_by_key(|(id, h)| (*h, *id));
            for (id, height) in ready {
                let Some(held) = self.held.remove(&id) else {
                    continue;
                };
                let Some(mut meta) = self.known.get(&id).cloned() else {
                    continue;
                };
                meta.height = height;
                meta.flags.held = false;
                self.show(&held.names, meta.clone());
                released.push(meta);
            }
        }
    }

    /// The first range of peer counters missing below the highest held
    /// message of the peer (at most [`MAX_RESEND_RANGE`] long), if any message is held.
    /// `None` when nothing is missing by counter (a held message then waits
    /// for a dependency its sender will resend with its own retries).
    pub(crate) fn missing(&self) -> Option<(u64, u64)> {
        let top = self
            .held
            .values()
            .filter(|h| !h.own)
            .map(|h| h.counter)
            .max()?;
        let from = self.floor;
        if from >= top {
            return None;
        }
        let mut to = from;
        while to + 1 < top && !self.peer.contains_key(&(to + 1)) && to + 1 - from < MAX_RESEND_RANGE
        {
            to += 1;
        }
        Some((from, to))
    }
}
