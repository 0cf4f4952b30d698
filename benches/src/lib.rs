//! Shared helpers for Shoal's benchmark programs: CPU accounting, one-way
//! bulk transfers over any byte stream, and the AEAD throughput bound.
//!
//! The programs live in `src/bin/`, the criterion benches in `benches/`;
//! docs/BENCHMARKS.md records their figures and the exact commands.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod aead;
pub mod cpu;
pub mod latency;
pub mod pump;
pub mod timed_store;

/// Mebibyte.
pub const MIB: usize = 1024 * 1024;
/// Gibibyte.
pub const GIB: f64 = (1024 * 1024 * 1024) as f64;
