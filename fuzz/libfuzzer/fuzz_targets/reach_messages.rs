//! Reachability checks and results, alone and into a live core.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| shoal_fuzz_targets::reach_messages(data));
