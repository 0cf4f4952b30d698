//! Shoal Kademlia DHT: routing table, iterative lookups and signed records.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod ip;
pub mod key;
pub mod lookup;
pub mod protocol;
pub mod record;
pub mod store;
pub mod table;
