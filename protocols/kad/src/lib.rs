//! Shoal Kademlia DHT: routing table, iterative lookups and signed records.
