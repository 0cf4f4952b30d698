//! Small helpers shared by the example programs: each program compiles
//! this module on its own and uses a part of it.
#![allow(dead_code)]

pub(crate) mod input;
pub(crate) mod peers;

/// `HH:MM:SS` (UTC) of a Unix time in milliseconds.
pub(crate) fn clock(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    format!(
        "{:02}:{:02}:{:02}",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60
    )
}
