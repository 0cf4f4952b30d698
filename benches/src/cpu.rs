//! Process CPU time, read from `/proc/self/stat` (Linux).

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
    let fields: Vec<&str> = after.split(' ').collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis(
        (utime + stime) * 1000 / CLOCK_TICKS_PER_SEC,
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn cpu_time_grows_with_work() {
        let before = super::process_cpu_time().expect("linux /proc");
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_millis(200) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let after = super::process_cpu_time().expect("linux /proc");
        assert!(after > before, "{before:?} -> {after:?}");
    }
}
