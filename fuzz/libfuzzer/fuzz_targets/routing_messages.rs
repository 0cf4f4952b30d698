//! Kademlia and gossip frames, into their decoders and live cores.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| shoal_fuzz_targets::routing_messages(data));
