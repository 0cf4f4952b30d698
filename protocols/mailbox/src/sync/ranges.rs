//! Range-based set reconciliation over one mailbox's items, sans-IO and
//! stateless: each side answers the other's ranges from its own set alone.
//!
//! Items are sorted by [`SyncKey`] (expiry, then hash). A message is a list
//! of ranges that tile the whole key space in order, each named by its
//! upper [`Bound`] and carrying one [`Mode`]:
//! - [`Mode::Skip`]: nothing more to do in this range;
//! - [`Mode::Fingerprint`]: the sender's fingerprint of its items there;
//!   the receiver answers [`Mode::Skip`] if its own matches, else its own
//!   items as a list (at most [`LIST_MAX`] of them) or [`BRANCHES`]
//!   sub-ranges with their fingerprints;
//! - [`Mode::List`]: every item the sender has there; the receiver now
//!   knows the difference in that range: it sends what the other lacks,
//!   asks for what it lacks, and answers [`Mode::Skip`].
//!
//! A differing range shrinks by [`BRANCHES`] per round trip until it is a
//! short list, so the cost grows with the number of differences and only
//! logarithmically with the set's size.

use std::collections::HashMap;

use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};

use crate::id::EnvelopeHash;

/// Bytes of a range fingerprint.
pub const FINGERPRINT_LEN: usize = 16;

/// Sub-ranges a differing range is split into.
pub const BRANCHES: usize = 16;

/// A differing range with at most this many items is answered with the
/// items themselves.
pub const LIST_MAX: usize = 8;

/// Where an item sorts: its expiry, then its hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SyncKey {
    /// Unix seconds when the replica deletes it.
    pub expiry: u64,
    /// The envelope's hash.
    pub hash: EnvelopeHash,
}

/// Whether a replica holds an envelope or its tombstone (the owner acked
/// it). A tombstone wins over a held copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// The envelope is held.
    Held,
    /// Acked: only its tombstone is left.
    Tombstone,
}

impl State {
    pub(crate) fn code(self) -> u8 {
        match self {
            State::Held => 0,
            State::Tombstone => 1,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<State> {
        match code {
            0 => Some(State::Held),
            1 => Some(State::Tombstone),
            _ => None,
        }
    }
}

/// One item of a mailbox's set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SyncItem {
    /// Where it sorts.
    pub key: SyncKey,
    /// Held or acked.
    pub state: State,
}

/// The upper end of a range: keys below it are in the range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bound {
    /// Below (expiry, prefix followed by zeros).
    Key {
        /// Unix seconds.
        expiry: u64,
        /// At most 32 bytes of hash.
        prefix: Vec<u8>,
    },
    /// The end of the key space.
    Infinity,
}

impl Bound {
    /// Whether `key` sorts below this bound.
    pub fn above(&self, key: &SyncKey) -> bool {
        match self {
            Bound::Infinity => true,
            Bound::Key { expiry, prefix } => {
                key.expiry < *expiry
                    || (key.expiry == *expiry && key.hash.as_bytes()[..prefix.len()] < prefix[..])
            }
        }
    }

    /// The shortest bound above `below` and not above `at` (`below < at`).
    fn between(below: &SyncKey, at: &SyncKey) -> Bound {
        if below.expiry < at.expiry {
            return Bound::Key {
                expiry: at.expiry,
                prefix: Vec::new(),
            };
        }
        let (a, b) = (below.hash.as_bytes(), at.hash.as_bytes());
        let shared = a.iter().zip(b).take_while(|(x, y)| x == y).count();
        Bound::Key {
            expiry: at.expiry,
            prefix: b[..(shared + 1).min(b.len())].to_vec(),
        }
    }
}

/// What a range carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Done with.
    Skip,
    /// The sender's fingerprint of its items in the range.
    Fingerprint([u8; FINGERPRINT_LEN]),
    /// Every item the sender has in the range.
    List(Vec<(EnvelopeHash, State)>),
}

/// A range of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// Its upper end (its lower end is the previous range's upper end).
    pub upper: Bound,
    /// What it carries.
    pub mode: Mode,
}

/// What a side does after reading the other's ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Step {
    /// Its ranges for the other (all [`Mode::Skip`] once done: see
    /// [`Step::done`]).
    pub ranges: Vec<Range>,
    /// Items the other lacks (or holds where this side has a tombstone):
    /// send them.
    pub send: Vec<SyncItem>,
    /// Items this side lacks (or holds where the other has a tombstone):
    /// ask for them.
    pub need: Vec<EnvelopeHash>,
}

impl Step {
    /// Whether the ranges are all skipped: nothing is left to compare.
    pub fn done(&self) -> bool {
        self.ranges.iter().all(|r| r.mode == Mode::Skip)
    }
}

/// A side's items, sorted, with their digests: what it answers from.
#[derive(Debug, Clone, Default)]
pub struct ItemSet {
    items: Vec<SyncItem>,
    digests: Vec<[u8; 32]>,
    by_hash: HashMap<EnvelopeHash, State>,
}

fn digest(item: &SyncItem) -> [u8; 32] {
    let mut h = Blake2b::<U32>::new();
    h.update(b"shoal/mailbox/sync/item/1");
    h.update(item.key.expiry.to_be_bytes());
    h.update(item.key.hash.as_bytes());
    h.update([item.state.code()]);
    h.finalize().into()
}

impl ItemSet {
    /// The set of `items` (in any order; duplicates of a hash keep the
    /// tombstone).
    pub fn new(mut items: Vec<SyncItem>) -> ItemSet {
        items.sort_by_key(|i| i.key);
        items.dedup_by_key(|i| i.key);
        let digests = items.iter().map(digest).collect();
        let mut by_hash = HashMap::with_capacity(items.len());
        for item in &items {
            let state = by_hash.entry(item.key.hash).or_insert(item.state);
            if item.state == State::Tombstone {
                *state = State::Tombstone;
            }
        }
        ItemSet {
            items,
            digests,
            by_hash,
        }
    }

    /// Items in the set.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// What the set holds of `hash`.
    pub fn state_of(&self, hash: &EnvelopeHash) -> Option<State> {
        self.by_hash.get(hash).copied()
    }

    /// The fingerprint of items `from..to`: the sum of their digests
    /// (as 256-bit little-endian numbers, modulo 2^256) hashed with their
    /// count.
    pub fn fingerprint(&self, from: usize, to: usize) -> [u8; FINGERPRINT_LEN] {
        let mut sum = [0u8; 32];
        for d in &self.digests[from..to] {
            let mut carry = 0u16;
            for (s, b) in sum.iter_mut().zip(d) {
                let v = u16::from(*s) + u16::from(*b) + carry;
                *s = v as u8;
                carry = v >> 8;
            }
        }
        let mut h = Blake2b::<U32>::new();
        h.update(b"shoal/mailbox/sync/fingerprint/1");
        h.update(sum);
        h.update(((to - from) as u64).to_be_bytes());
        let full: [u8; 32] = h.finalize().into();
        let mut fp = [0u8; FINGERPRINT_LEN];
        fp.copy_from_slice(&full[..FINGERPRINT_LEN]);
        fp
    }

    /// The first index at or above `bound`.
    fn index_of(&self, bound: &Bound) -> usize {
        self.items.partition_point(|i| bound.above(&i.key))
    }

    /// The first message of a reconciliation.
    pub fn initiate(&self) -> Vec<Range> {
        let mut out = Vec::new();
        self.split(0, self.items.len(), Bound::Infinity, &mut out);
        out
    }

    /// A first message that lists every item (in lists of at most
    /// [`MAX_LIST`](super::MAX_LIST)): what a replica that is leaving a
    /// mailbox sends, so the member's first answer says whether it lacks
    /// anything (an answer of all skips and no needs: it lacks nothing).
    pub fn list_all(&self) -> Vec<Range> {
        let chunk = super::MAX_LIST;
        let mut out = Vec::new();
        let mut start = 0;
        loop {
            let end = (start + chunk).min(self.items.len());
            let upper = if end == self.items.len() {
                Bound::Infinity
            } else {
                Bound::between(&self.items[end - 1].key, &self.items[end].key)
            };
            out.push(self.list(start, end, upper));
            if end == self.items.len() {
                return out;
            }
            start = end;
        }
    }

    /// Items `from..to` as one list range closed by `upper`.
    fn list(&self, from: usize, to: usize, upper: Bound) -> Range {
        let list = self.items[from..to]
            .iter()
            .map(|i| (i.key.hash, i.state))
            .collect();
        Range {
            upper,
            mode: Mode::List(list),
        }
    }

    /// Ranges describing items `from..to` up to `upper`: the items if few,
    /// else [`BRANCHES`] fingerprints of equal counts.
    fn split(&self, from: usize, to: usize, upper: Bound, out: &mut Vec<Range>) {
        let n = to - from;
        if n <= LIST_MAX {
            out.push(self.list(from, to, upper));
            return;
        }
        let parts = BRANCHES.min(n);
        let mut start = from;
        for part in 1..=parts {
            let end = from + n * part / parts;
            let bound = if part == parts {
                upper.clone()
            } else {
                Bound::between(&self.items[end - 1].key, &self.items[end].key)
            };
            out.push(Range {
                upper: bound,
                mode: Mode::Fingerprint(self.fingerprint(start, end)),
            });
            start = end;
        }
    }

    /// Answers the other side's `ranges` (which must tile the key space in
    /// order: see [`check_order`]).
    pub fn respond(&self, ranges: &[Range]) -> Step {
        let mut step = Step::default();
        let mut from = 0;
        for range in ranges {
            let to = self.index_of(&range.upper).max(from);
            match &range.mode {
                Mode::Skip => push_skip(&mut step.ranges, range.upper.clone()),
                Mode::Fingerprint(theirs) => {
                    if self.fingerprint(from, to) == *theirs {
                        push_skip(&mut step.ranges, range.upper.clone());
                    } else {
                        self.split(from, to, range.upper.clone(), &mut step.ranges);
                    }
                }
                Mode::List(theirs) => {
                    self.compare(from, to, theirs, &mut step);
                    push_skip(&mut step.ranges, range.upper.clone());
                }
            }
            from = to;
        }
        step
    }

    /// The difference between items `from..to` and the other's `theirs`.
    fn compare(&self, from: usize, to: usize, theirs: &[(EnvelopeHash, State)], step: &mut Step) {
        let theirs_map: HashMap<EnvelopeHash, State> = theirs.iter().copied().collect();
        for item in &self.items[from..to] {
            let wanted = match theirs_map.get(&item.key.hash) {
                None => true,
                Some(State::Held) => item.state == State::Tombstone,
                Some(State::Tombstone) => false,
            };
            if wanted {
                step.send.push(*item);
            }
        }
        for (hash, state) in &theirs_map {
            // Looked up in the whole set: a copy kept with another expiry
            // is not needed again.
            let needed = match self.by_hash.get(hash) {
                None => true,
                Some(State::Held) => *state == State::Tombstone,
                Some(State::Tombstone) => false,
            };
            if needed {
                step.need.push(*hash);
            }
        }
        step.need.sort_unstable();
    }
}

fn push_skip(ranges: &mut Vec<Range>, upper: Bound) {
    if let Some(last) = ranges.last_mut()
        && last.mode == Mode::Skip
    {
        last.upper = upper;
        return;
    }
    ranges.push(Range {
        upper,
        mode: Mode::Skip,
    });
}

/// Whether `ranges` tile the key space: bounds strictly increasing, the
/// last one [`Bound::Infinity`] (or no ranges at all: nothing to say).
pub fn check_order(ranges: &[Range]) -> bool {
    let Some(last) = ranges.last() else {
        return true;
    };
    if last.upper != Bound::Infinity {
        return false;
    }
    ranges.windows(2).all(|w| match (&w[0].upper, &w[1].upper) {
        (Bound::Infinity, _) => false,
        (Bound::Key { .. }, Bound::Infinity) => true,
        (
            Bound::Key {
                expiry: e1,
                prefix: p1,
            },
            Bound::Key {
                expiry: e2,
                prefix: p2,
            },
        ) => (e1, padded(p1)) < (e2, padded(p2)),
    })
}

fn padded(prefix: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out[..prefix.len()].copy_from_slice(prefix);
    out
}
