//! Mailbox frames into the decoder and into a live replica core.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| shoal_fuzz_targets::mailbox_messages(data));
