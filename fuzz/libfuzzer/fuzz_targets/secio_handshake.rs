//! Both secio handshake roles fed arbitrary message bodies.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| shoal_fuzz_targets::secio_handshake(data));
