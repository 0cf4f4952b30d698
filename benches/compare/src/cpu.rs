//! Process CPU time, read from `/proc/self/stat` (Linux). The same reading
//! as `shoal_benches::cpu`, kept here so this project does not depend on
//! the bench crate and everything it pulls in.

use std::time::Duration;

/// Kernel clock ticks per second for `/proc` times (`getconf CLK_TCK`; 100 on
/// every mainstream Linux configuration).
const CLOCK_TICKS_PER_SEC: u64 = 100;

/// User plus system CPU time this process has used so far, or `None` where
/// `/proc/self/stat` is not available.
pub fn process_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may contain spaces; fields after its closing
    // parenthesis are space separated. utime and stime are fields 14 and 15.
    let after = &stat[stat.rfind(')')? + 2..];
    let mut fields = after.split(' ').skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis(
        (utime + stime) * 1000 / CLOCK_TICKS_PER_SEC,
    ))
}
