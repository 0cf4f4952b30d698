//! Relay hop and stop messages, exact reads, and the relay's ledger.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| shoal_fuzz_targets::relay_messages(data));
