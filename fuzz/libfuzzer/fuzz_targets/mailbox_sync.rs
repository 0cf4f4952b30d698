//! Replica sync: range lists into the codec and a set's answer, sync
//! frames into a live replica core.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| shoal_fuzz_targets::mailbox_sync(data));
