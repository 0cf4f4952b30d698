//! The sans-IO yamux connection fed an arbitrary byte stream in arbitrary chunks.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| shoal_fuzz_targets::yamux_session(data));
