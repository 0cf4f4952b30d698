//! The service layer's negotiation frames and the protocol plugins' messages.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| shoal_fuzz_targets::protocol_messages(data));
