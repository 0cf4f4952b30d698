//! Small helpers shared by the example programs: each program compiles
//! this module on its own and uses a part of it.
#![allow(dead_code)]

pub(crate) mod input;

/// Creates the data directory (owner-only on Unix) if it is missing.
pub(crate) fn create_data_dir(dir: &std::path::Path) -> Result<(), String> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .map_err(|e| format!("--data-dir {}: {e}", dir.display()))
}
pub(crate) mod peers;
pub(crate) mod terminal;

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
