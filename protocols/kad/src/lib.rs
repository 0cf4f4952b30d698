//! Shoal Kademlia DHT: routing table, iterative lookups and signed records.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod ip;
pub mod key;
pub mod record;
pub mod table;
