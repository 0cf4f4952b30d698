//! Shoal gossip: topic publish/subscribe over a mesh with lazy gossip.
