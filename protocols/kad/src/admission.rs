//! Admission of a peer's STORE, before the record's own checks: the record
//! must be near this node, and one peer may store only so many records a
//! minute.
//!
//! Nearness: a publisher stores a record on the `k` nodes its lookup found
//! closest to the key, so a node asked to store a key that
//! [`Config::store_nearness`] or more of its own contacts are closer to is
//! not among them: the request is refused. Only contacts not known to be
//! gone count: one whose connection closed and that has not been heard
//! from since may have left, and a publisher that could not reach it
//! would otherwise find its record refused everywhere (a table full of
//! departed peers refuses every STORE). Without the rule anyone could
//! fill any node's store with records for keys far from it (which lookups
//! never reach), pushing out records that lookups do need.
//!
//! Rate: [`Config::max_stores_per_peer`] accepted per peer per minute of
//! wall time; at most [`MAX_TRACKED_PEERS`] peers are tracked, and when that
//! many stored within the current minute a new one is refused until the
//! minute turns.
//!
//! [`Config::store_nearness`]: crate::Config::store_nearness
//! [`Config::max_stores_per_peer`]: crate::Config::max_stores_per_peer

use std::collections::HashMap;

use shoal_identity::PeerId;

use crate::key::Key;
use crate::table::RoutingTable;

/// Peers whose STORE counts are kept at once.
pub const MAX_TRACKED_PEERS: usize = 4096;

/// Why a STORE was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Enough of our contacts are closer to the key than we are.
    Far,
    /// The peer stored its share this minute.
    Rate,
}

/// Per-peer STORE counts in the current minute.
#[derive(Debug, Default)]
pub(crate) struct StoreAdmission {
    counts: HashMap<PeerId, (u64, u32)>,
}

impl StoreAdmission {
    /// Admits (and counts) a STORE of `key` from `from` at `unix` seconds.
    pub(crate) fn admit(
        &mut self,
        table: &RoutingTable,
        local: &Key,
        key: &Key,
        from: PeerId,
        unix: u64,
        (nearness, per_minute): (usize, u32),
    ) -> Result<(), Refused> {
        let ours = local.distance(key);
        let closer = table
            .closest_verified_where(key, nearness, |c| c.key.distance(key) < ours)
            .len();
        if closer >= nearness {
            return Err(Refused::Far);
        }
        let minute = unix / 60;
        if !self.counts.contains_key(&from) && self.counts.len() >= MAX_TRACKED_PEERS {
            self.counts.retain(|_, (m, _)| *m == minute);
            if self.counts.len() >= MAX_TRACKED_PEERS {
                return Err(Refused::Rate);
            }
        }
        let entry = self.counts.entry(from).or_insert((minute, 0));
        if entry.0 != minute {
            *entry = (minute, 0);
        }
        if entry.1 >= per_minute {
            return Err(Refused::Rate);
        }
        entry.1 += 1;
        Ok(())
    }
}
