//! The secio frame decoder and a secure stream's read path on arbitrary bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| shoal_fuzz_targets::secio_frame(data));
