//! Queries: what a command asked for, how far it got, and what it reports.

use std::{
    fmt,
    time::{Duration, Instant},
};

use shoal_identity::PeerId;

use crate::{key::Key, lookup::Lookup, record::SignedRecord, table::Contact};

/// Names a query; echoed by its [`Event::QueryFinished`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueryId(pub u64);

impl fmt::Display for QueryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "q{}", self.0)
    }
}

/// What a finished query found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryResult {
    /// A bootstrap (self-lookup) ended: the closest nodes to our own key.
    Bootstrap {
        /// Up to k nodes that answered, closest first.
        closest: Vec<Contact>,
    },
    /// A node lookup ended.
    FindNode {
        /// Up to k nodes that answered, closest to the key first.
        closest: Vec<Contact>,
    },
    /// A record lookup ended.
    GetRecord {
        /// The newest valid record of the key's publisher (see
        /// [`Kademlia::get_record`](crate::Kademlia::get_record)), if any.
        record: Option<SignedRecord>,
        /// Distinct nodes that returned a valid record.
        found: usize,
    },
    /// A record publication ended.
    PutRecord {
        /// The record's key.
        key: Key,
        /// Nodes that confirmed holding the record (or a newer one).
        stored: usize,
        /// Nodes asked that did not (refused, full, silent).
        failed: usize,
    },
}

/// Counters of a query's lookup.
///
/// Depth counts hops: a contact from the routing table (or a bootstrap
/// seed) has depth 0; a contact learned from the answer of a node at depth
/// `d` has depth `d + 1`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueryStats {
    /// Lookup requests sent (FIND_NODE or FIND_VALUE).
    pub requests: u32,
    /// Lookup answers received.
    pub responses: u32,
    /// Lookup requests that failed (timeout, dial failure, bad answer).
    pub failures: u32,
    /// Depth of the closest node that answered; `None` if none did.
    pub closest_depth: Option<u32>,
    /// Largest depth of a node a request was sent to.
    pub max_depth: u32,
    /// For record lookups: depth of the first node that returned a valid
    /// record.
    pub record_depth: Option<u32>,
    /// STORE requests sent (record publication).
    pub stores: u32,
    /// Monotonic time from the command to the result.
    pub duration: Duration,
    /// Whether the query's deadline cut it short.
    pub timed_out: bool,
}

/// What the core reports through [`Kademlia::poll_event`](crate::Kademlia::poll_event).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A command's query ended.
    QueryFinished {
        /// The id the command returned.
        id: QueryId,
        /// What it found.
        result: QueryResult,
        /// How it went.
        stats: QueryStats,
    },
    /// A node answered the lookup of a query started with
    /// [`Kademlia::find_node_progress`](crate::Kademlia::find_node_progress),
    /// reported as it answers (before the query's [`Event::QueryFinished`]).
    /// Like routing events, dropped when the event queue is full: the
    /// final result does not depend on it.
    LookupResponded {
        /// The query.
        id: QueryId,
        /// The node that answered, with the addresses it was reached at.
        contact: Contact,
        /// The nodes its answer named as closer to the target, this node
        /// left out (not yet checked: any of them may have left). A caller that acts on
        /// the nodes near a key can ask the nearest of them at once,
        /// alongside the lookup's own request.
        named: Vec<Contact>,
    },
    /// A node entered the routing table.
    RoutingUpdated {
        /// The node.
        peer: PeerId,
        /// Its bucket.
        bucket: usize,
    },
    /// A node left the routing table (failures or eviction).
    PeerRemoved {
        /// The node.
        peer: PeerId,
    },
    /// A peer's STORE put a new or newer record in our store.
    RecordStored {
        /// The record's key.
        key: Key,
        /// Its publisher.
        publisher: PeerId,
        /// The node that sent it.
        from: PeerId,
    },
}

/// What a query is for, with its kind-specific progress.
#[derive(Debug)]
pub(crate) enum Kind {
    Bootstrap,
    /// `progress`: report each node that answers.
    FindNode {
        progress: bool,
    },
    /// Bucket refresh or periodic self-lookup: no event.
    Refresh,
    GetRecord {
        /// Valid records found, with the node that returned each.
        found: Vec<(Contact, SignedRecord)>,
        /// The node's own copy, if it held one.
        local: Option<SignedRecord>,
    },
    PutRecord {
        record: SignedRecord,
        /// `false` while looking up the closest nodes; `true` once STOREs
        /// are out.
        storing: bool,
        outstanding: usize,
        stored: usize,
        failed: usize,
        /// Republication: no event.
        internal: bool,
    },
}

/// A running query.
#[derive(Debug)]
pub(crate) struct Query {
    pub(crate) kind: Kind,
    pub(crate) lookup: Lookup,
    pub(crate) started: Instant,
    pub(crate) deadline: Instant,
    pub(crate) stats: QueryStats,
}

impl Query {
    /// Whether the query reports an event when it ends.
    pub(crate) fn reports(&self) -> bool {
        !matches!(
            self.kind,
            Kind::Refresh | Kind::PutRecord { internal: true, .. }
        )
    }
}
