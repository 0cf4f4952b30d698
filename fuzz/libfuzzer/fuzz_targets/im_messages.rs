//! The messenger's decoders, and envelopes into a live engine.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| shoal_fuzz_targets::im_messages(data));
