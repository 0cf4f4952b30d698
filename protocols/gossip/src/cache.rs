//! The two message caches: ids seen recently (duplicate suppression) and
//! the full messages of the last few heartbeats (answers to IWANT, ids for
//! IHAVE).
//!
//! Both are only looked up by id, never iterated through their hash maps,
//! so the hash maps' random order never reaches the output.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    time::Instant,
};

use shoal_identity::PeerId;

use crate::{MessageId, Topic, protocol::SignedMessage};

/// Ids seen within a time-to-live, at most `capacity` of them.
#[derive(Debug)]
pub(crate) struct SeenCache {
    ids: HashSet<MessageId>,
    /// Insertion order with expiry times (non-decreasing).
    order: VecDeque<(Instant, MessageId)>,
    capacity: usize,
}

impl SeenCache {
    pub(crate) fn new(capacity: usize) -> SeenCache {
        SeenCache {
            ids: HashSet::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    pub(crate) fn contains(&self, id: &MessageId) -> bool {
        self.ids.contains(id)
    }

    /// Records `id` until `expires`; `false` if it was already there. When
    /// full, the oldest id is forgotten early.
    pub(crate) fn insert(&mut self, id: MessageId, expires: Instant) -> bool {
        if !self.ids.insert(id) {
            return false;
        }
        self.order.push_back((expires, id));
        while self.order.len() > self.capacity {
            if let Some((_, old)) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
        true
    }

    /// Forgets ids whose time is up.
    pub(crate) fn expire(&mut self, now: Instant) {
        while let Some(&(expires, id)) = self.order.front() {
            if expires > now {
                break;
            }
            self.order.pop_front();
            self.ids.remove(&id);
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }
}

/// A cached message and its author.
#[derive(Debug)]
pub(crate) struct Cached {
    pub(crate) message: SignedMessage,
    pub(crate) author: PeerId,
}

/// Full messages of the last `history_length` heartbeats, in windows.
#[derive(Debug)]
pub(crate) struct MessageCache {
    messages: HashMap<MessageId, Cached>,
    /// Newest window first; each lists its ids in arrival order.
    windows: VecDeque<Vec<(MessageId, Topic)>>,
    history_length: usize,
}

impl MessageCache {
    pub(crate) fn new(history_length: usize) -> MessageCache {
        let mut windows = VecDeque::with_capacity(history_length);
        windows.push_front(Vec::new());
        MessageCache {
            messages: HashMap::new(),
            windows,
            history_length,
        }
    }

    /// Stores a message in the current window (once).
    pub(crate) fn put(
        &mut self,
        id: MessageId,
        topic: Topic,
        author: PeerId,
        message: SignedMessage,
    ) {
        if self.messages.contains_key(&id) {
            return;
        }
        self.messages.insert(id, Cached { message, author });
        if let Some(window) = self.windows.front_mut() {
            window.push((id, topic));
        }
    }

    pub(crate) fn get(&self, id: &MessageId) -> Option<&Cached> {
        self.messages.get(id)
    }

    pub(crate) fn contains(&self, id: &MessageId) -> bool {
        self.messages.contains_key(id)
    }

    /// Ids of `topic` in the newest `windows` windows, oldest first.
    pub(crate) fn gossip_ids(&self, topic: &Topic, windows: usize) -> Vec<MessageId> {
        let mut ids = Vec::new();
        for window in self.windows.iter().take(windows).rev() {
            ids.extend(window.iter().filter(|(_, t)| t == topic).map(|(id, _)| *id));
        }
        ids
    }

    /// Starts a new window, dropping the messages of the oldest.
    pub(crate) fn shift(&mut self) {
        self.windows.push_front(Vec::new());
        while self.windows.len() > self.history_length {
            if let Some(old) = self.windows.pop_back() {
                for (id, _) in old {
                    self.messages.remove(&id);
                }
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.messages.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn id(n: u8) -> MessageId {
        MessageId([n; 32])
    }

    #[test]
    fn seen_cache_expires_and_is_bounded() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(10);
        let mut seen = SeenCache::new(3);
        assert!(seen.insert(id(1), t0 + ttl));
        assert!(!seen.insert(id(1), t0 + ttl));
        seen.insert(id(2), t0 + ttl + Duration::from_secs(1));
        seen.expire(t0 + ttl);
        assert!(!seen.contains(&id(1)));
        assert!(seen.contains(&id(2)));
        for n in 3..10 {
            seen.insert(id(n), t0 + ttl * 2);
        }
        assert_eq!(seen.len(), 3);
        assert!(seen.contains(&id(9)) && !seen.contains(&id(2)));
    }

    #[test]
    fn message_cache_keeps_history_length_windows() {
        let topic = Topic::new("t").unwrap();
        let other = Topic::new("u").unwrap();
        let author = crate::tests::key(1).peer_id();
        let mut cache = MessageCache::new(2);
        cache.put(id(1), topic.clone(), author, SignedMessage::default());
        cache.put(id(2), other.clone(), author, SignedMessage::default());
        cache.shift();
        cache.put(id(3), topic.clone(), author, SignedMessage::default());
        assert_eq!(cache.gossip_ids(&topic, 2), vec![id(1), id(3)]);
        assert_eq!(cache.gossip_ids(&topic, 1), vec![id(3)]);
        cache.shift();
        assert!(cache.get(&id(1)).is_none());
        assert!(cache.get(&id(3)).is_some());
        assert_eq!(cache.len(), 1);
    }
}
